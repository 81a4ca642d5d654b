/* testsvc: Echo and Count over the rpc layer. */
#include "testsvc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testsvc.pb-c.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int echo(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    const Opstest__EchoRequest *req = reqv;
    Opstest__EchoResponse *resp = respv;
    testsvc *t = user;
    atomic_fetch_add(&t->echo_calls, 1);
    if (req->sleep_ms > 0) sleep_ms(req->sleep_ms);
    if (req->code != 0) return rpc_ctx_errorf(c, req->code, "%s", req->message);
    resp->text = rpc_ctx_strdup(c, req->text);
    resp->trace_id = rpc_ctx_strdup(c, rpc_ctx_trace_id(c));
    const char *id = rpc_ctx_peer_identity(c);
    resp->peer_identity = rpc_ctx_strdup(c, id ? id : "");
    resp->payload = req->payload; /* both live in the call's arena */
    return RPC_OK;
}

static int count(rpc_ctx *c, const void *reqv, void *user)
{
    testsvc *t = user;
    const Opstest__CountRequest *req = reqv;
    atomic_store(&t->stream_tid, (long)syscall(SYS_gettid));
    for (int i = 0; i < req->n; i++) {
        Opstest__CountReply r = OPSTEST__COUNT_REPLY__INIT;
        r.i = i;
        if (rpc_ctx_send(c, &r.base) != 0) return RPC_CANCELLED;
        if (req->sleep_ms > 0) sleep_ms(req->sleep_ms);
    }
    return RPC_OK;
}

int testsvc_start(testsvc *t, const char *addr, const rpc_tls *tls, const rpc_settings *settings,
                  int workers, char *err, size_t errlen)
{
    static const char *const dflt[] = {"127.0.0.1:0", NULL};
    const char *one[] = {addr, NULL};
    memset(t, 0, sizeof *t);
    rpc_server_opts o;
    memset(&o, 0, sizeof o);
    o.name = "test";
    o.listen = addr ? one : dflt;
    if (tls) o.tls = *tls;
    if (settings) o.settings = *settings;
    o.workers = workers;
    /* The table is read-only, but its user pointer is this service. */
    rpc_method *m = calloc(2, sizeof *m);
    if (!m) return -1;
    m[0] = (rpc_method){"/opstest.Test/Echo", &opstest__echo_request__descriptor,
                        &opstest__echo_response__descriptor, echo, NULL, t, 0};
    m[1] = (rpc_method){"/opstest.Test/Count", &opstest__count_request__descriptor,
                        &opstest__count_reply__descriptor, NULL, count, t, 0};
    t->srv = rpc_server_new(&o, err, errlen);
    if (!t->srv || rpc_server_add_methods(t->srv, m, 2, err, errlen) || rpc_server_start(t->srv, err, errlen)) {
        if (t->srv) rpc_server_free(t->srv);
        t->srv = NULL;
        free(m);
        return -1;
    }
    t->port = rpc_server_port(t->srv, 0);
    t->methods = m;
    return 0;
}

void testsvc_stop(testsvc *t, int64_t grace_ms)
{
    if (!t->srv) return;
    rpc_server_shutdown(t->srv, grace_ms);
    rpc_server_free(t->srv);
    t->srv = NULL;
    free(t->methods);
    t->methods = NULL;
}
