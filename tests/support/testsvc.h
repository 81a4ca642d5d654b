/* testsvc: the opstest.Test service (tests/proto/testsvc.proto) on our rpc server, for the
 * rpc layer's tests, the interop tests and the benchmark. Owns its rpc_server. */
#ifndef OPS_TESTS_TESTSVC_H
#define OPS_TESTS_TESTSVC_H

#include <stdatomic.h>
#include <stddef.h>

#include "rpc/server.h"

typedef struct testsvc {
    rpc_server *srv;
    int port;
    atomic_long echo_calls;
    atomic_long stream_tid; /* the kernel thread id that ran the last Count stream */
    struct rpc_method *methods; /* owned: the table the server serves */
} testsvc;

/* Starts a server on 127.0.0.1:0 (or addr) with tls (may be NULL). Returns 0 or -1 with err. */
int testsvc_start(testsvc *t, const char *addr, const rpc_tls *tls, const rpc_settings *settings,
                  int workers, char *err, size_t errlen);
void testsvc_stop(testsvc *t, int64_t grace_ms);

#endif
