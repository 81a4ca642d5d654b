// runtime: see runtime.h. C++ only because abseil's mutex settings have no C API.
//
// Debian builds abseil without NDEBUG, so every absl::Mutex that the gRPC core locks runs the
// deadlock detector: a lookup and update of a global lock graph on each acquisition. Upstream's
// release builds compile that out. Measured during a publish to 20,000 streams, the detector's
// graph code was 2-4% of the manager's CPU samples and 4-6% of the load generator's
// (bench/RESULTS.md). kIgnore gives the release behaviour; gRPC's own locking is unchanged.
#include "rpc/runtime.h"

#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>

extern "C" void rpc_runtime_init(void)
{
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    grpc_init();
}
