/* Asynchronous server streams on rpc_loop against our rpc server (opstest.Test/Count over
 * loopback): order of messages, the end status, cancel, rpc_loop_free() with streams open, and
 * hundreds of concurrent streams on a single loop thread. */
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

#include "base/log.h"
#include "rpc/client.h"
#include "testsvc.h"
#include "testsvc.pb-c.h"

#define COUNT "/opstest.Test/Count"

/* What one stream saw; the loop thread writes, the test thread waits under mu. */
typedef struct watch {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int received, out_of_order, ended, end_code;
    int *open_now, *open_max; /* shared by the streams of one test */
    char end_message[512];
} watch;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void on_msg(void *user, ProtobufCMessage *m)
{
    watch *w = user;
    Opstest__CountReply *r = (Opstest__CountReply *)m;
    pthread_mutex_lock(w->mu);
    if (r->i != w->received) w->out_of_order++;
    if (w->received == 0 && w->open_now && ++*w->open_now > *w->open_max) *w->open_max = *w->open_now;
    w->received++;
    pthread_cond_broadcast(w->cv);
    pthread_mutex_unlock(w->mu);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void on_end(void *user, const rpc_result *res)
{
    watch *w = user;
    pthread_mutex_lock(w->mu);
    w->ended++;
    w->end_code = res->code;
    snprintf(w->end_message, sizeof w->end_message, "%s", res->message);
    if (w->open_now && w->received > 0) --*w->open_now;
    pthread_cond_broadcast(w->cv);
    pthread_mutex_unlock(w->mu);
}

static void watch_init(watch *w)
{
    memset(w, 0, sizeof *w);
    w->mu = &mu;
    w->cv = &cv;
}

/* Waits (at most 30 s) until *field >= want; returns the last value seen. */
static int wait_for(const int *field, int want)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 30;
    pthread_mutex_lock(&mu);
    while (*field < want && pthread_cond_timedwait(&cv, &mu, &end) == 0) {}
    int v = *field;
    pthread_mutex_unlock(&mu);
    return v;
}

static rpc_channel *dial(int port)
{
    char target[64], err[256];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(target, NULL, err, sizeof err);
    assert_non_null(ch);
    return ch;
}

static void in_order_with_status(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    rpc_loop *l = rpc_loop_new(1, err, sizeof err);
    assert_non_null(l);

    watch w;
    watch_init(&w);
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    req.n = 5000;
    rpc_astream *h = NULL;
    assert_int_equal(rpc_stream_async_open(l, ch, COUNT, &req.base, &opstest__count_reply__descriptor, NULL, on_msg, on_end, &w, &h), 0);
    assert_non_null(h);
    assert_int_equal(wait_for(&w.ended, 1), 1);
    assert_int_equal(w.received, 5000);
    assert_int_equal(w.out_of_order, 0);
    assert_int_equal(w.end_code, RPC_OK);
    rpc_stream_async_cancel(h); /* after the end: a no-op, and the handle is still valid */
    rpc_stream_async_release(h);

    /* The server's status reaches on_end: an unknown method. */
    watch w2;
    watch_init(&w2);
    assert_int_equal(rpc_stream_async_open(l, ch, "/opstest.Test/Nope", &req.base, &opstest__count_reply__descriptor, NULL, on_msg,
                                           on_end, &w2, NULL),
                     0);
    assert_int_equal(wait_for(&w2.ended, 1), 1);
    assert_int_equal(w2.end_code, RPC_UNIMPLEMENTED);
    assert_int_equal(w2.received, 0);

    rpc_loop_free(l);
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000);
    /* on_end ran exactly once each */
    assert_int_equal(w.ended, 1);
    assert_int_equal(w2.ended, 1);
}

static void unreachable_server(void **state)
{
    (void)state;
    /* Bind a port and close it, so nothing listens there. */
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    int port = t.port;
    testsvc_stop(&t, 0);
    rpc_channel *ch = dial(port);
    rpc_loop *l = rpc_loop_new(1, err, sizeof err);
    assert_non_null(l);
    watch w;
    watch_init(&w);
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    req.n = 1;
    rpc_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(rpc_stream_async_open(l, ch, COUNT, &req.base, &opstest__count_reply__descriptor, &o, on_msg, on_end, &w, NULL), 0);
    assert_int_equal(wait_for(&w.ended, 1), 1);
    assert_int_equal(w.end_code, RPC_UNAVAILABLE);
    rpc_loop_free(l);
    rpc_channel_free(ch);
}

static void cancel_mid_stream(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    rpc_loop *l = rpc_loop_new(2, err, sizeof err);
    assert_non_null(l);
    watch w;
    watch_init(&w);
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    req.n = 1000000;
    req.sleep_ms = 5;
    rpc_astream *h;
    assert_int_equal(rpc_stream_async_open(l, ch, COUNT, &req.base, &opstest__count_reply__descriptor, NULL, on_msg, on_end, &w, &h), 0);
    assert_true(wait_for(&w.received, 3) >= 3);
    rpc_stream_async_cancel(h);
    assert_int_equal(wait_for(&w.ended, 1), 1);
    assert_int_equal(w.end_code, RPC_CANCELLED);
    assert_true(w.received < 1000000);
    assert_int_equal(w.out_of_order, 0);
    rpc_stream_async_release(h);

    /* rpc_loop_free() ends the streams still open (without it, it would wait for ever). */
    watch w2;
    watch_init(&w2);
    assert_int_equal(rpc_stream_async_open(l, ch, COUNT, &req.base, &opstest__count_reply__descriptor, NULL, on_msg, on_end, &w2, NULL),
                     0);
    assert_true(wait_for(&w2.received, 1) >= 1);
    rpc_loop_free(l);
    assert_int_equal(w2.ended, 1);
    assert_int_equal(w2.end_code, RPC_CANCELLED);
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000); /* returns only once the cancelled handlers have ended */
}

#define MANY 500

static void many_streams_one_thread(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    rpc_loop *l = rpc_loop_new(1, err, sizeof err);
    assert_non_null(l);
    watch *w = calloc(MANY, sizeof *w);
    assert_non_null(w);
    int open_now = 0, open_max = 0, ended = 0;
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    /* Each stream lasts ~2 s on the server, so they are all open at once. */
    req.n = 10;
    req.sleep_ms = 200;
    for (int i = 0; i < MANY; i++) {
        watch_init(&w[i]);
        w[i].open_now = &open_now;
        w[i].open_max = &open_max;
        assert_int_equal(
            rpc_stream_async_open(l, ch, COUNT, &req.base, &opstest__count_reply__descriptor, NULL, on_msg, on_end, &w[i], NULL), 0);
    }
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 45;
    pthread_mutex_lock(&mu);
    for (;;) {
        ended = 0;
        for (int i = 0; i < MANY; i++) ended += w[i].ended;
        if (ended == MANY || pthread_cond_timedwait(&cv, &mu, &end) != 0) break;
    }
    pthread_mutex_unlock(&mu);
    assert_int_equal(ended, MANY);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(w[i].end_code, RPC_OK);
        assert_int_equal(w[i].received, 10);
        assert_int_equal(w[i].out_of_order, 0);
    }
    /* One loop thread held most of them open together (not one after the other). */
    print_message("streams open at once: %d of %d\n", open_max, MANY);
    assert_true(open_max >= MANY / 2);
    rpc_loop_free(l);
    free(w);
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000);
}

int main(void)
{
    log_open(LOGL_ERROR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_order_with_status),
        cmocka_unit_test(unreachable_server),
        cmocka_unit_test(cancel_mid_stream),
        cmocka_unit_test(many_streams_one_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
