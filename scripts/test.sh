#!/usr/bin/env bash
# The whole test suite: installs what is missing, runs the libFuzzer harnesses for a while,
# then builds twice (plain, and with AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# every CTest test in both builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# gRPC's own start-up allocations are process-lifetime; keep leak reports to ours.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

rc=0
# Fuzzing first, so that the last lines printed are CTest's summary.
echo "=== fuzz (libFuzzer, ${OPS_FUZZ_SECONDS:-10}s per harness)"
bash scripts/fuzz.sh "${OPS_FUZZ_SECONDS:-10}" || rc=1
for variant in plain sanitize; do
  # Most tests wait on sockets and child processes, not the CPU: run more at once than cores.
  dir=build; extra=(); jobs=4
  if [ "$variant" = sanitize ]; then dir=build-asan; extra=(-DOPS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug); jobs=3; fi
  echo "=== build ($variant) in $dir"
  bash scripts/build.sh "$dir" "${extra[@]}"
  echo "=== ctest ($variant)"
  if ! (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600); then rc=1; fi
done
exit $rc
