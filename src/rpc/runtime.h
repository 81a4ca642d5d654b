/* runtime: the gRPC runtime's process-wide setup. Everything in src/rpc/ that starts gRPC calls
 * rpc_runtime_init() where it would call grpc_init(), and grpc_shutdown() as before. Owns no
 * state of its own. */
#ifndef OPS_RPC_RUNTIME_H
#define OPS_RPC_RUNTIME_H

#ifdef __cplusplus
extern "C" {
#endif

/* grpc_init(), with the gRPC library's abseil mutexes in release mode (see runtime.cc). Cannot
 * fail; safe to call from several parts and threads. */
void rpc_runtime_init(void);

#ifdef __cplusplus
}
#endif

#endif
