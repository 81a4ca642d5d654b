/* The rpc layer over real loopback sockets: unary calls, bad input, deadlines, streams,
 * graceful shutdown, health, retries, round-robin lists, TLS and mutual TLS. */
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

#include "base/log.h"
#include "health.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "testsvc.h"
#include "testsvc.pb-c.h"

static char certdir[256];

static rpc_channel *dial(int port)
{
    char target[64], err[256];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(target, NULL, err, sizeof err);
    assert_non_null(ch);
    return ch;
}

static int echo(rpc_channel *ch, Opstest__EchoRequest *req, const rpc_call_opts *o,
                Opstest__EchoResponse **out, rpc_result *res)
{
    ProtobufCMessage *m = NULL;
    int code = rpc_call_unary(ch, "/opstest.Test/Echo", &req->base, &opstest__echo_response__descriptor, &m, o, res);
    *out = (Opstest__EchoResponse *)m;
    return code;
}

static void expect_echo_ok(rpc_channel *ch, const char *text)
{
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    Opstest__EchoResponse *resp;
    rpc_result res;
    assert_int_equal(echo(ch, &req, NULL, &resp, &res), RPC_OK);
    assert_string_equal(resp->text, text);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void unary_and_trace_id(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = "hello";
    rpc_call_opts o = {.trace_id = "trace-abc-1"};
    Opstest__EchoResponse *resp;
    rpc_result res;
    assert_int_equal(echo(ch, &req, &o, &resp, &res), RPC_OK);
    assert_string_equal(resp->text, "hello");
    assert_string_equal(resp->trace_id, "trace-abc-1");
    assert_string_equal(resp->peer_identity, "");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* Without a trace id the server makes one. */
    assert_int_equal(echo(ch, &req, NULL, &resp, &res), RPC_OK);
    assert_true(strlen(resp->trace_id) >= 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_channel_free(ch);
    testsvc_stop(&t, 1000);
}

static void error_status_and_bad_input(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    rpc_settings big;
    rpc_settings_defaults(&big, RPC_PROFILE_DAEMON_CLIENT);
    big.max_message_bytes = 64 << 20;
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", t.port);
    rpc_client_opts co = {.settings = big};
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    assert_non_null(ch);
    rpc_result res;
    Opstest__EchoResponse *resp;

    /* A handler's error status with its message. */
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.code = RPC_NOT_FOUND;
    req.message = "agent not found: x1";
    assert_int_equal(echo(ch, &req, NULL, &resp, &res), RPC_NOT_FOUND);
    assert_null(resp);
    assert_string_equal(res.message, "agent not found: x1");
    assert_int_equal(res.kind, RPC_ERR_AGENT_NOT_FOUND);
    expect_echo_ok(ch, "still serving 1");

    /* Bytes that are not an EchoRequest: field 1 arrives as a varint, not a string. */
    Opstest__CountRequest wrong = OPSTEST__COUNT_REQUEST__INIT;
    wrong.n = 7;
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_call_unary(ch, "/opstest.Test/Echo", &wrong.base, &opstest__echo_response__descriptor, &m, NULL, &res),
                     RPC_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "not a valid opstest.EchoRequest"));
    expect_echo_ok(ch, "still serving 2");

    /* Over the 10 MiB limit. */
    Opstest__EchoRequest huge = OPSTEST__ECHO_REQUEST__INIT;
    huge.payload.len = 11u << 20;
    huge.payload.data = calloc(1, huge.payload.len);
    assert_int_equal(echo(ch, &huge, NULL, &resp, &res), RPC_RESOURCE_EXHAUSTED);
    free(huge.payload.data);
    expect_echo_ok(ch, "still serving 3");

    /* A method nobody serves. */
    assert_int_equal(rpc_call_unary(ch, "/opstest.Test/Nope", &req.base, &opstest__echo_response__descriptor, &m, NULL, &res),
                     RPC_UNIMPLEMENTED);
    assert_non_null(strstr(res.message, "/opstest.Test/Nope"));
    expect_echo_ok(ch, "still serving 4");

    /* A 1 MiB payload comes back intact. */
    Opstest__EchoRequest big_req = OPSTEST__ECHO_REQUEST__INIT;
    big_req.payload.len = 1u << 20;
    big_req.payload.data = malloc(big_req.payload.len);
    for (size_t i = 0; i < big_req.payload.len; i++) big_req.payload.data[i] = (uint8_t)(i * 31);
    assert_int_equal(echo(ch, &big_req, NULL, &resp, &res), RPC_OK);
    assert_int_equal(resp->payload.len, big_req.payload.len);
    assert_memory_equal(resp->payload.data, big_req.payload.data, big_req.payload.len);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    free(big_req.payload.data);

    rpc_channel_free(ch);
    testsvc_stop(&t, 1000);
}

static void deadline_expires(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.sleep_ms = 1500;
    rpc_call_opts o = {.timeout_ms = 150};
    Opstest__EchoResponse *resp;
    rpc_result res;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(echo(ch, &req, &o, &resp, &res), RPC_DEADLINE_EXCEEDED);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_int_equal(res.kind, RPC_ERR_TIMEOUT);
    assert_true(b.tv_sec - a.tv_sec < 2); /* did not wait for the handler */
    expect_echo_ok(ch, "after deadline");
    rpc_channel_free(ch);
    testsvc_stop(&t, 3000);
}

static void stream_ten_thousand(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
    req.n = 10000;
    rpc_stream *st;
    rpc_result res;
    assert_int_equal(rpc_stream_open(ch, "/opstest.Test/Count", &req.base, NULL, &st, &res), 0);
    int expect = 0;
    ProtobufCMessage *m;
    while (rpc_stream_next(st, &opstest__count_reply__descriptor, &m, &res) == 1) {
        Opstest__CountReply *r = (Opstest__CountReply *)m;
        assert_int_equal(r->i, expect);
        expect++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_int_equal(res.code, RPC_OK);
    assert_int_equal(expect, 10000);
    rpc_stream_close(st);

    /* A reader that walks away mid-stream frees the server's handler. */
    req.n = 1000000;
    assert_int_equal(rpc_stream_open(ch, "/opstest.Test/Count", &req.base, NULL, &st, &res), 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rpc_stream_next(st, &opstest__count_reply__descriptor, &m, &res), 1);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_stream_close(st);
    expect_echo_ok(ch, "after cancelled stream");
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000); /* returns only once the cancelled handler has ended */
}

/* A handler thread that finished waits for the next call instead of ending: ten streams one
 * after another run on one or two threads, not ten. */
static void handler_threads_reused(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    long tids[10];
    int distinct = 0;
    for (int k = 0; k < 10; k++) {
        Opstest__CountRequest req = OPSTEST__COUNT_REQUEST__INIT;
        req.n = 3;
        rpc_stream *st;
        rpc_result res;
        assert_int_equal(rpc_stream_open(ch, "/opstest.Test/Count", &req.base, NULL, &st, &res), 0);
        ProtobufCMessage *m;
        int got = 0;
        while (rpc_stream_next(st, &opstest__count_reply__descriptor, &m, &res) == 1) {
            got++;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        assert_int_equal(res.code, RPC_OK);
        assert_int_equal(got, 3);
        rpc_stream_close(st);
        tids[k] = atomic_load(&t.stream_tid);
        int seen = 0;
        for (int i = 0; i < k; i++) seen |= tids[i] == tids[k];
        if (!seen) distinct++;
        usleep(50 * 1000); /* the thread lists itself idle just after the status goes out */
    }
    assert_in_range(distinct, 1, 2);
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000); /* returns only once the idle thread has ended */
}

struct slow_call {
    int port;
    int sleep_ms;
    int code;
};

static void *slow_caller(void *arg)
{
    struct slow_call *sc = arg;
    rpc_channel *ch = dial(sc->port);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = "slow";
    req.sleep_ms = sc->sleep_ms;
    Opstest__EchoResponse *resp;
    rpc_result res;
    sc->code = echo(ch, &req, NULL, &resp, &res);
    if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_channel_free(ch);
    return NULL;
}

static void graceful_shutdown(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 8, err, sizeof err), 0);
    pthread_t th[4];
    struct slow_call sc[4];
    for (int i = 0; i < 4; i++) {
        sc[i] = (struct slow_call){t.port, 600, -1};
        pthread_create(&th[i], NULL, slow_caller, &sc[i]);
    }
    /* Wait until all four are inside the handler. */
    for (int i = 0; i < 200 && atomic_load(&t.echo_calls) < 4; i++) usleep(10000);
    assert_int_equal(atomic_load(&t.echo_calls), 4);
    int port = t.port;
    testsvc_stop(&t, 5000);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(sc[i].code, RPC_OK); /* in-flight calls finished within the grace */
    }
    /* And the port is closed now. */
    rpc_channel *ch = dial(port);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    Opstest__EchoResponse *resp;
    rpc_result res;
    rpc_call_opts o = {.timeout_ms = 2000};
    assert_int_equal(echo(ch, &req, &o, &resp, &res), RPC_UNAVAILABLE);
    rpc_channel_free(ch);

    /* A grace period that runs out cancels what is left. */
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 8, err, sizeof err), 0);
    struct slow_call late = {t.port, 1500, -1};
    pthread_t lt;
    pthread_create(&lt, NULL, slow_caller, &late);
    for (int i = 0; i < 200 && atomic_load(&t.echo_calls) < 1; i++) usleep(10000);
    testsvc_stop(&t, 100);
    pthread_join(lt, NULL);
    assert_int_not_equal(late.code, RPC_OK);
}

static void unreachable_and_retries(void **state)
{
    (void)state;
    /* Find a port nobody listens on: start and stop a server. */
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    int port = t.port;
    testsvc_stop(&t, 0);
    rpc_channel *ch = dial(port);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    Opstest__EchoResponse *resp;
    rpc_result res;
    rpc_call_opts once = {.timeout_ms = 1000};
    assert_int_equal(echo(ch, &req, &once, &resp, &res), RPC_UNAVAILABLE);
    assert_int_equal(res.kind, RPC_ERR_CONNECTION_FAILED);
    assert_int_equal(res.attempts, 1);
    rpc_call_opts idem = {.timeout_ms = 1000, .idempotent = 1};
    assert_int_equal(echo(ch, &req, &idem, &resp, &res), RPC_UNAVAILABLE);
    assert_int_equal(res.attempts, 3);
    rpc_channel_free(ch);

    /* Deadline retries only when asked. */
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    ch = dial(t.port);
    req.sleep_ms = 300;
    rpc_call_opts d = {.timeout_ms = 50, .idempotent = 1};
    assert_int_equal(echo(ch, &req, &d, &resp, &res), RPC_DEADLINE_EXCEEDED);
    assert_int_equal(res.attempts, 1);
    d.retry_on_deadline = 1;
    assert_int_equal(echo(ch, &req, &d, &resp, &res), RPC_DEADLINE_EXCEEDED);
    assert_int_equal(res.attempts, 3);
    rpc_channel_free(ch);
    testsvc_stop(&t, 2000);
}

static void round_robin_list(void **state)
{
    (void)state;
    testsvc a, b;
    char err[256];
    assert_int_equal(testsvc_start(&a, NULL, NULL, NULL, 0, err, sizeof err), 0);
    assert_int_equal(testsvc_start(&b, NULL, NULL, NULL, 0, err, sizeof err), 0);
    char target[128];
    snprintf(target, sizeof target, "127.0.0.1:%d, localhost:%d", a.port, b.port);
    rpc_channel *ch = rpc_channel_new(target, NULL, err, sizeof err);
    assert_non_null(ch);
    for (int i = 0; i < 40; i++) expect_echo_ok(ch, "rr");
    assert_true(atomic_load(&a.echo_calls) >= 5);
    assert_true(atomic_load(&b.echo_calls) >= 5);
    rpc_channel_free(ch);
    assert_null(rpc_channel_new("127.0.0.1:1,nohost", NULL, err, sizeof err));
    assert_non_null(strstr(err, "not host:port"));
    testsvc_stop(&a, 1000);
    testsvc_stop(&b, 1000);
}

static void gzip_compression(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    rpc_settings s;
    rpc_settings_defaults(&s, RPC_PROFILE_SERVER);
    s.gzip = 1;
    assert_int_equal(testsvc_start(&t, NULL, NULL, &s, 0, err, sizeof err), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", t.port);
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
    co.settings.gzip = 1;
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    expect_echo_ok(ch, "compressed compressed compressed compressed");
    rpc_channel_free(ch);
    testsvc_stop(&t, 1000);
}

static void health_service(void **state)
{
    (void)state;
    testsvc t;
    char err[256];
    assert_int_equal(testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = dial(t.port);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *m;
    rpc_result res;
    assert_int_equal(rpc_call_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                    &grpc__health__v1__health_check_response__descriptor, &m, NULL, &res), RPC_OK);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
    req.service = "no.such.Service";
    assert_int_equal(rpc_call_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                    &grpc__health__v1__health_check_response__descriptor, &m, NULL, &res), RPC_NOT_FOUND);

    rpc_server_set_health(t.srv, "opstest.Test", 1);
    req.service = "opstest.Test";
    rpc_stream *st;
    assert_int_equal(rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", &req.base, NULL, &st, &res), 0);
    assert_int_equal(rpc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, &m, &res), 1);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_server_set_health(t.srv, "opstest.Test", 0);
    assert_int_equal(rpc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, &m, &res), 1);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
    /* Shutting down ends the watch. */
    testsvc_stop(&t, 2000);
    while (rpc_stream_next(st, &grpc__health__v1__health_check_response__descriptor, &m, &res) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    assert_int_not_equal(res.code, RPC_OK);
    rpc_stream_close(st);
    rpc_channel_free(ch);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static const char *cert(const char *name)
{
    static char buf[8][512];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", certdir, name);
    return buf[i];
}

static int tls_call(int port, rpc_tls ctls, char *identity, size_t idlen)
{
    char target[64], err[256];
    snprintf(target, sizeof target, "localhost:%d", port);
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    co.tls = ctls;
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    assert_non_null(ch);
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = "secure";
    Opstest__EchoResponse *resp;
    rpc_result res;
    rpc_call_opts o = {.timeout_ms = 3000};
    int code = echo(ch, &req, &o, &resp, &res);
    if (code == RPC_OK) {
        if (identity) snprintf(identity, idlen, "%s", resp->peer_identity);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    rpc_channel_free(ch);
    return code;
}

static void tls_and_mtls(void **state)
{
    (void)state;
    if (!certdir[0]) skip();
    testsvc t;
    char err[256], id[128];
    rpc_tls stls = {.enabled = 1, .cert_file = cert("server.pem"), .key_file = cert("server.key")};
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &stls, NULL, 0, err, sizeof err), 0);
    rpc_tls ctls = {.enabled = 1, .ca_file = cert("ca.pem")};
    assert_int_equal(tls_call(t.port, ctls, id, sizeof id), RPC_OK);
    assert_string_equal(id, "");
    /* A client that trusts another CA refuses the server. */
    rpc_tls wrong = {.enabled = 1, .ca_file = cert("other-ca.pem")};
    assert_int_equal(tls_call(t.port, wrong, NULL, 0), RPC_UNAVAILABLE);
    testsvc_stop(&t, 1000);

    /* Mutual TLS: the client must present a certificate from our CA. */
    rpc_tls mtls = stls;
    mtls.ca_file = cert("ca.pem");
    mtls.require_client_cert = 1;
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &mtls, NULL, 0, err, sizeof err), 0);
    rpc_tls client = {.enabled = 1, .ca_file = cert("ca.pem"), .cert_file = cert("client.pem"), .key_file = cert("client.key")};
    assert_int_equal(tls_call(t.port, client, id, sizeof id), RPC_OK);
    assert_string_equal(id, "node-1");
    assert_int_equal(tls_call(t.port, ctls, NULL, 0), RPC_UNAVAILABLE); /* no client cert */
    rpc_tls foreign = {.enabled = 1, .ca_file = cert("ca.pem"), .cert_file = cert("other-client.pem"), .key_file = cert("other-client.key")};
    assert_int_equal(tls_call(t.port, foreign, NULL, 0), RPC_UNAVAILABLE); /* cert from another CA */
    testsvc_stop(&t, 1000);

    /* Broken TLS settings are refused with the file named. */
    rpc_tls missing = {.enabled = 1, .cert_file = "/nonexistent/server.pem", .key_file = cert("server.key")};
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &missing, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/server.pem"));
}

static int setup_certs(void **state)
{
    (void)state;
    const char *src = getenv("OPS_SOURCE_DIR");
    if (!src) return 0;
    snprintf(certdir, sizeof certdir, "/tmp/ops-test-certs-%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/tests/support/gen-certs.sh %s >/dev/null 2>&1", src, certdir);
    /* Under CTest the certificates must be made: a failure fails the run, never skips TLS. */
    if (system(cmd) != 0) {
        fprintf(stderr, "gen-certs.sh failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static int teardown_certs(void **state)
{
    (void)state;
    if (certdir[0]) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf %s", certdir);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

int main(void)
{
    log_open(getenv("OPS_TEST_DEBUG") ? LOGL_DEBUG : LOGL_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unary_and_trace_id),
        cmocka_unit_test(error_status_and_bad_input),
        cmocka_unit_test(deadline_expires),
        cmocka_unit_test(stream_ten_thousand),
        cmocka_unit_test(handler_threads_reused),
        cmocka_unit_test(graceful_shutdown),
        cmocka_unit_test(unreachable_and_retries),
        cmocka_unit_test(round_robin_list),
        cmocka_unit_test(gzip_compression),
        cmocka_unit_test(health_service),
        cmocka_unit_test(tls_and_mtls),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
