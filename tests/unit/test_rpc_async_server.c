/* Asynchronous server streams (RPC_METHOD_ASYNC): messages pushed from another thread arrive
 * in order, on_end is told exactly once whatever ends the stream (our completion, the client
 * cancelling, the server stopping), open streams hold no thread, and a connection cannot open
 * more streams than max_streams_per_conn. Real server, real client, 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "base/log.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "testsvc.pb-c.h"

#define MAXS 600

typedef struct hub hub;

typedef struct entry {
    hub *h;
    rpc_ctx *c;
    int ends;        /* on_end calls: must end at exactly 1 */
    int completed;
    int push_after;  /* what rpc_ctx_push answered inside on_end (the stream is over: -1) */
} entry;

struct hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry e[MAXS];
    int n, ends;
    rpc_server *srv;
    int port;
    rpc_method m;
};

static void on_end(rpc_ctx *c, void *user)
{
    entry *e = user;
    hub *hb = e->h;
    Opstest__CountReply r = OPSTEST__COUNT_REPLY__INIT;
    r.i = -1;
    e->push_after = rpc_ctx_push(c, &r.base);
    pthread_mutex_lock(&hb->mu);
    e->ends++;
    hb->ends++;
    if (!e->completed) {
        e->completed = 1;
        rpc_ctx_complete(c, RPC_OK);
    }
    pthread_cond_broadcast(&hb->cv);
    pthread_mutex_unlock(&hb->mu);
}

static int count_async(rpc_ctx *c, const void *reqv, void *user)
{
    hub *h = user;
    const Opstest__CountRequest *req = reqv;
    if (req->n < 0) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "n must not be negative");
    pthread_mutex_lock(&h->mu);
    if (h->n == MAXS) {
        pthread_mutex_unlock(&h->mu);
        return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "test table full");
    }
    entry *e = &h->e[h->n++];
    e->h = h;
    e->c = c;
    rpc_ctx_on_end(c, on_end, e);
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return RPC_PENDING;
}

static void hub_start(hub *h, int per_conn)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    const char *listen[] = {"127.0.0.1:0", NULL};
    rpc_server_opts o = {.name = "async-test", .listen = listen, .workers = 2, .max_streams_per_conn = per_conn};
    char err[256];
    h->srv = rpc_server_new(&o, err, sizeof err);
    assert_non_null(h->srv);
    h->m = (rpc_method){"/opstest.Test/Count", &opstest__count_request__descriptor, &opstest__count_reply__descriptor, NULL,
                        count_async, h, RPC_METHOD_ASYNC};
    assert_int_equal(rpc_server_add_methods(h->srv, &h->m, 1, err, sizeof err), 0);
    assert_int_equal(rpc_server_start(h->srv, err, sizeof err), 0);
    h->port = rpc_server_port(h->srv, 0);
}

static void hub_stop(hub *h)
{
    rpc_server_free(h->srv);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
}

/* Waits (at most 10 s) until *field reaches want. */
static void wait_for(hub *h, const int *field, int want)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&h->mu);
    while (*field < want)
        if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0) break;
    int got = *field;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(got, want);
}

static rpc_channel *dial(int port, int conn)
{
    char target[64], err[256];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
    co.settings.window_bytes += conn; /* different channel arguments: a connection of its own */
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    assert_non_null(ch);
    return ch;
}

static rpc_stream *open_count(rpc_channel *ch, int n)
{
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    req.n = n;
    rpc_stream *st;
    rpc_result res;
    assert_int_equal(rpc_stream_open(ch, "/opstest.Test/Count", &req.base, NULL, &st, &res), 0);
    return st;
}

static void push_i(rpc_ctx *c, int i, int want)
{
    Opstest__CountReply r = OPSTEST__COUNT_REPLY__INIT;
    r.i = i;
    int w = rpc_ctx_push(c, &r.base);
    if (want >= 0) assert_true(w >= 0);
    else assert_int_equal(w, -1);
}

/* 1 and the value of the next message, or 0 with the final code in *code. */
static int next_i(rpc_stream *st, int *i, int *code)
{
    ProtobufCMessage *m;
    rpc_result res;
    if (rpc_stream_next(st, &opstest__count_reply__descriptor, &m, &res) == 1) {
        *i = ((Opstest__CountReply *)m)->i;
        protobuf_c_message_free_unpacked(m, NULL);
        return 1;
    }
    *code = res.code;
    return 0;
}

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

/* Pushed from this thread (not the handler's), in order, then completed: all arrive, then OK;
 * on_end comes once, after the status went out. */
static void pushes_in_order_then_complete(void **state)
{
    (void)state;
    hub h;
    hub_start(&h, 0);
    rpc_channel *ch = dial(h.port, 0);
    rpc_stream *st = open_count(ch, 0);
    wait_for(&h, &h.n, 1);
    for (int i = 0; i < 2000; i++) push_i(h.e[0].c, i, 0);
    pthread_mutex_lock(&h.mu);
    h.e[0].completed = 1;
    rpc_ctx_complete(h.e[0].c, RPC_OK);
    pthread_mutex_unlock(&h.mu);
    int i, code = -1, expect = 0;
    while (next_i(st, &i, &code)) {
        assert_int_equal(i, expect);
        expect++;
    }
    assert_int_equal(expect, 2000);
    assert_int_equal(code, RPC_OK);
    wait_for(&h, &h.ends, 1);
    assert_int_equal(h.e[0].ends, 1);
    rpc_stream_close(st);
    rpc_channel_free(ch);
    hub_stop(&h);
    assert_int_equal(h.e[0].ends, 1);
}

/* A handler may refuse at once, like a unary one. */
static void handler_error_is_the_status(void **state)
{
    (void)state;
    hub h;
    hub_start(&h, 0);
    rpc_channel *ch = dial(h.port, 0);
    rpc_stream *st = open_count(ch, -1);
    int i, code = -1;
    assert_int_equal(next_i(st, &i, &code), 0);
    assert_int_equal(code, RPC_INVALID_ARGUMENT);
    rpc_stream_close(st);
    rpc_channel_free(ch);
    hub_stop(&h);
    assert_int_equal(h.n, 0);
}

/* The client goes away: on_end once, pushes refused from then on, the other stream unharmed. */
static void client_cancel_tells_owner_once(void **state)
{
    (void)state;
    hub h;
    hub_start(&h, 0);
    rpc_channel *ch = dial(h.port, 0);
    rpc_stream *a = open_count(ch, 0);
    rpc_stream *b = open_count(ch, 0);
    wait_for(&h, &h.n, 2);
    push_i(h.e[0].c, 7, 0);
    push_i(h.e[1].c, 8, 0);
    int i, code;
    assert_int_equal(next_i(a, &i, &code), 1);
    assert_int_equal(next_i(b, &i, &code), 1);
    /* which entry is a? the one whose message said 7 */
    entry *ea = &h.e[0], *eb = &h.e[1];
    (void)eb;
    rpc_stream_close(a); /* cancels */
    wait_for(&h, &h.ends, 1);
    pthread_mutex_lock(&h.mu);
    int which = h.e[0].ends ? 0 : 1;
    pthread_mutex_unlock(&h.mu);
    ea = &h.e[which];
    assert_int_equal(ea->ends, 1);
    assert_int_equal(ea->push_after, -1);
    /* the other stream still carries messages */
    entry *other = &h.e[1 - which];
    push_i(other->c, 99, 0);
    int got = -1;
    assert_int_equal(next_i(b, &got, &code), 1);
    assert_int_equal(got, 99);
    pthread_mutex_lock(&h.mu);
    other->completed = 1;
    rpc_ctx_complete(other->c, RPC_OK);
    pthread_mutex_unlock(&h.mu);
    assert_int_equal(next_i(b, &got, &code), 0);
    assert_int_equal(code, RPC_OK);
    wait_for(&h, &h.ends, 2);
    rpc_stream_close(b);
    rpc_channel_free(ch);
    hub_stop(&h);
    assert_int_equal(h.e[0].ends, 1);
    assert_int_equal(h.e[1].ends, 1);
}

/* Hundreds of open streams cost no threads; a shutdown ends them all UNAVAILABLE and tells
 * every owner once. */
static void many_streams_no_threads_then_shutdown(void **state)
{
    (void)state;
    enum { N = 500 };
    hub h;
    hub_start(&h, 0);
    rpc_channel *ch[5];
    for (int k = 0; k < 5; k++) ch[k] = dial(h.port, k);
    int before = thread_count();
    rpc_stream **st = calloc(N, sizeof *st);
    for (int i = 0; i < N; i++) st[i] = open_count(ch[i % 5], 0);
    wait_for(&h, &h.n, N);
    int after = thread_count();
    /* The client may start a few threads of its own; one per stream would be hundreds. */
    assert_true(after - before < 20);
    for (int i = 0; i < N; i++) push_i(h.e[i].c, i, 0);
    int seen = 0;
    for (int i = 0; i < N; i++) {
        int v, code;
        assert_int_equal(next_i(st[i], &v, &code), 1);
        seen++;
    }
    assert_int_equal(seen, N);
    rpc_server_shutdown(h.srv, 2000);
    assert_int_equal(h.ends, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(h.e[i].ends, 1);
        int v, code = -1;
        assert_int_equal(next_i(st[i], &v, &code), 0);
        assert_int_equal(code, RPC_UNAVAILABLE);
        rpc_stream_close(st[i]);
    }
    free(st);
    for (int k = 0; k < 5; k++) rpc_channel_free(ch[k]);
    hub_stop(&h);
}

/* One connection may hold max_streams_per_conn streams; another connection is not affected, and
 * a freed slot can be used again. */
static void streams_per_connection_capped(void **state)
{
    (void)state;
    hub h;
    hub_start(&h, 3);
    rpc_channel *c1 = dial(h.port, 0), *c2 = dial(h.port, 1);
    rpc_stream *s[3];
    for (int i = 0; i < 3; i++) s[i] = open_count(c1, 0);
    wait_for(&h, &h.n, 3);
    for (int k = 0; k < 5; k++) {
        rpc_stream *x = open_count(c1, 0);
        int v, code = -1;
        assert_int_equal(next_i(x, &v, &code), 0);
        assert_int_equal(code, RPC_RESOURCE_EXHAUSTED);
        rpc_stream_close(x);
    }
    rpc_stream *y = open_count(c2, 0);
    wait_for(&h, &h.n, 4);
    rpc_stream_close(s[0]);
    wait_for(&h, &h.ends, 1);
    rpc_stream *z = open_count(c1, 0);
    wait_for(&h, &h.n, 5);
    rpc_stream_close(z);
    rpc_stream_close(y);
    for (int i = 1; i < 3; i++) rpc_stream_close(s[i]);
    wait_for(&h, &h.ends, 5);
    rpc_channel_free(c1);
    rpc_channel_free(c2);
    hub_stop(&h);
}

/* An accepted stream answers with its response headers at once, before any message: the
 * client knows it is subscribed, and the first push is a DATA frame alone. Raw core calls, so
 * the initial metadata is observed on its own. */
static void headers_sent_when_accepted(void **state)
{
    (void)state;
    hub h;
    hub_start(&h, 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", h.port);
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string("/opstest.Test/Count"), NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = opstest__count_request__pack(&req, buf);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)buf, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    assert_int_equal(grpc_call_start_batch(call, ops, 4, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN)),
                                               NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE); /* a timeout here: no headers without a message */
    assert_true(ev.success);
    wait_for(&h, &h.n, 1);
    pthread_mutex_lock(&h.mu);
    int completed = h.e[0].completed; /* the test pushes nothing: not completed, the headers came alone */
    pthread_mutex_unlock(&h.mu);
    assert_int_equal(completed, 0);

    grpc_status_code status;
    grpc_slice details;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[0].data.recv_status_on_client.status = &status;
    ops[0].data.recv_status_on_client.status_details = &details;
    assert_int_equal(grpc_call_start_batch(call, ops, 1, (void *)2, NULL), GRPC_CALL_OK);
    grpc_call_cancel(call, NULL);
    ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    assert_int_equal(status, GRPC_STATUS_CANCELLED);
    wait_for(&h, &h.ends, 1);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_byte_buffer_destroy(bb);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    hub_stop(&h);
}

int main(void)
{
    log_set_level(LOGL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pushes_in_order_then_complete),
        cmocka_unit_test(handler_error_is_the_status),
        cmocka_unit_test(client_cancel_tells_owner_once),
        cmocka_unit_test(many_streams_no_threads_then_shutdown),
        cmocka_unit_test(streams_per_connection_capped),
        cmocka_unit_test(headers_sent_when_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
