/* Bidirectional streams over real loopback sockets: ping-pong of many messages, the end of the
 * client's stream, a message that does not decode, a client that cancels, and a server that
 * shuts down while a handler waits for the next message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "testsvc.pb-c.h"

#define CHAT "/opstest.Test/Chat"

struct chat_state {
    atomic_int received;
    atomic_int last_rc;   /* what rpc_ctx_recv() returned last: 1 end, -1 over */
    atomic_int returned;  /* the handler has returned */
};

/* Answers each EchoRequest with its text and the count so far; returns when the client is
 * done or gone. */
static int chat(rpc_ctx *c, void *user)
{
    struct chat_state *st = user;
    for (;;) {
        ProtobufCMessage *m;
        int rc = rpc_ctx_recv(c, &opstest__echo_request__descriptor, &m);
        atomic_store(&st->last_rc, rc);
        if (rc != 0) {
            atomic_store(&st->returned, 1);
            return rc == 1 ? RPC_OK : RPC_CANCELLED;
        }
        const Opstest__EchoRequest *req = (const Opstest__EchoRequest *)m;
        int n = atomic_fetch_add(&st->received, 1) + 1;
        char text[128];
        snprintf(text, sizeof text, "%s#%d", req->text, n);
        Opstest__EchoResponse resp = OPSTEST__ECHO_RESPONSE__INIT;
        resp.text = text;
        if (rpc_ctx_send(c, &resp.base) != 0) {
            atomic_store(&st->returned, 1);
            return RPC_CANCELLED;
        }
    }
}

struct fixture {
    rpc_server *srv;
    rpc_channel *ch;
    struct chat_state st;
    rpc_bidi_method m;
};

static void start(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    char err[256];
    const char *listen[] = {"127.0.0.1:0", NULL};
    rpc_server_opts o = {.name = "bidi-test", .listen = listen, .quiet_access_log = 1};
    f->srv = rpc_server_new(&o, err, sizeof err);
    assert_non_null(f->srv);
    f->m = (rpc_bidi_method){CHAT, &opstest__echo_request__descriptor, &opstest__echo_response__descriptor, chat, &f->st};
    assert_int_equal(rpc_server_add_bidi_methods(f->srv, &f->m, 1, err, sizeof err), 0);
    assert_int_equal(rpc_server_start(f->srv, err, sizeof err), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(f->srv, 0));
    f->ch = rpc_channel_new(target, NULL, err, sizeof err);
    assert_non_null(f->ch);
}

static void stop(struct fixture *f)
{
    rpc_channel_free(f->ch);
    rpc_server_free(f->srv);
}

static int send_text(rpc_stream *s, const char *text)
{
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    return rpc_stream_send(s, &req.base);
}

static int wait_flag(atomic_int *flag, int ms)
{
    for (int i = 0; i < ms / 10 && !atomic_load(flag); i++) usleep(10000);
    return atomic_load(flag);
}

static void ping_pong_and_end(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    rpc_stream *s;
    rpc_result res;
    assert_int_equal(rpc_bidi_open(f.ch, CHAT, NULL, &s, &res), 0);
    for (int i = 1; i <= 2000; i++) {
        assert_int_equal(send_text(s, "hi"), 0);
        ProtobufCMessage *m;
        assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 1);
        char want[32];
        snprintf(want, sizeof want, "hi#%d", i);
        assert_string_equal(((Opstest__EchoResponse *)m)->text, want);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* half-close: the handler sees the end and the call ends OK */
    assert_int_equal(rpc_stream_close_send(s), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 0);
    assert_int_equal(res.code, RPC_OK);
    assert_int_equal(atomic_load(&f.st.last_rc), 1);
    rpc_stream_close(s);
    stop(&f);
}

static void bad_message(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    rpc_stream *s;
    rpc_result res;
    assert_int_equal(rpc_bidi_open(f.ch, CHAT, NULL, &s, &res), 0);
    /* field 1 as a varint where EchoRequest has a string: does not decode */
    Opstest__CountRequest wrong = OPSTEST__COUNT_REQUEST__INIT;
    wrong.n = 7;
    assert_int_equal(rpc_stream_send(s, &wrong.base), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 0);
    assert_int_equal(res.code, RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "opstest.EchoRequest"));
    rpc_stream_close(s);
    /* the server keeps serving */
    assert_int_equal(rpc_bidi_open(f.ch, CHAT, NULL, &s, &res), 0);
    assert_int_equal(send_text(s, "again"), 0);
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 1);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_stream_close(s);
    stop(&f);
}

static void client_cancels(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    rpc_stream *s;
    rpc_result res;
    assert_int_equal(rpc_bidi_open(f.ch, CHAT, NULL, &s, &res), 0);
    assert_int_equal(send_text(s, "one"), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 1);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_stream_close(s); /* cancels while the handler waits in rpc_ctx_recv */
    assert_true(wait_flag(&f.st.returned, 5000));
    /* the handler is let go at once; the core may report the cancel as the stream's end */
    assert_int_not_equal(atomic_load(&f.st.last_rc), 0);
    stop(&f);
}

static void shutdown_ends_waiting_stream(void **state)
{
    (void)state;
    struct fixture f;
    start(&f);
    rpc_stream *s;
    rpc_result res;
    assert_int_equal(rpc_bidi_open(f.ch, CHAT, NULL, &s, &res), 0);
    assert_int_equal(send_text(s, "one"), 0);
    ProtobufCMessage *m;
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 1);
    protobuf_c_message_free_unpacked(m, NULL);
    /* The handler now waits for a message that never comes: a 20 s grace must not be spent. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rpc_server_shutdown(f.srv, 20000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 3.0);
    assert_int_equal(rpc_stream_next(s, &opstest__echo_response__descriptor, &m, &res), 0);
    assert_int_equal(res.code, RPC_UNAVAILABLE);
    assert_int_equal(atomic_load(&f.st.last_rc), -1);
    rpc_stream_close(s);
    stop(&f);
}

static void table_checks(void **state)
{
    (void)state;
    char err[256];
    const char *listen[] = {"127.0.0.1:0", NULL};
    rpc_server_opts o = {.name = "bidi-test", .listen = listen, .quiet_access_log = 1};
    rpc_server *srv = rpc_server_new(&o, err, sizeof err);
    assert_non_null(srv);
    rpc_bidi_method none = {CHAT, &opstest__echo_request__descriptor, &opstest__echo_response__descriptor, NULL, NULL};
    assert_int_equal(rpc_server_add_bidi_methods(srv, &none, 1, err, sizeof err), -1);
    rpc_bidi_method ok = {CHAT, &opstest__echo_request__descriptor, &opstest__echo_response__descriptor, chat, NULL};
    assert_int_equal(rpc_server_add_bidi_methods(srv, &ok, 1, err, sizeof err), 0);
    assert_int_equal(rpc_server_add_bidi_methods(srv, &ok, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
    /* the method table lists health and the bidi method */
    int seen = 0;
    const char *p;
    for (size_t i = 0; (p = rpc_server_method_path(srv, i)) != NULL; i++) seen |= strcmp(p, CHAT) == 0;
    assert_true(seen);
    assert_int_equal(rpc_server_start(srv, err, sizeof err), 0);
    rpc_server_free(srv);
}

int main(void)
{
    log_open(getenv("OPS_TEST_DEBUG") ? LOGL_DEBUG : LOGL_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ping_pong_and_end),
        cmocka_unit_test(bad_message),
        cmocka_unit_test(client_cancels),
        cmocka_unit_test(shutdown_ends_waiting_stream),
        cmocka_unit_test(table_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
