/* Certificate rotation in the rpc layer over real loopback sockets: the files' mtimes are
 * noticed by new handshakes (no signal), an established channel keeps working, a new channel
 * gets the new certificate; rpc_server_reload_tls refuses an expired certificate or a key that
 * does not match and keeps the old; an expired certificate at start is refused naming the file
 * and the dates; request_client_cert lets callers without a certificate in and refuses one from
 * another CA. Also dservice_authorize, the daemon's decision on who may call it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/dservice.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "testsvc.h"
#include "testsvc.pb-c.h"

static char certdir[256], livedir[300];

static const char *cert(const char *name)
{
    static char buf[8][600];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", certdir, name);
    return buf[i];
}

static const char *live(const char *name)
{
    static char buf[4][600];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", livedir, name);
    return buf[i];
}

/* Copies src over dst through a rename, as a deploy would. */
static void put(const char *src, const char *dst)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s %s.new && mv -f %s.new %s", src, dst, dst, dst);
    assert_int_equal(system(cmd), 0);
}

static rpc_channel *channel(int port, const char *ca, const char *cert_file, const char *key_file)
{
    char target[64], err[512];
    snprintf(target, sizeof target, "localhost:%d", port);
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    co.tls = (rpc_tls){.enabled = 1, .ca_file = ca, .cert_file = cert_file, .key_file = key_file};
    rpc_channel *ch = rpc_channel_new(target, &co, err, sizeof err);
    assert_non_null(ch);
    return ch;
}

static int echo(rpc_channel *ch, char *identity, size_t idlen)
{
    Opstest__EchoRequest req = OPSTEST__ECHO_REQUEST__INIT;
    req.text = "x";
    ProtobufCMessage *m = NULL;
    rpc_result res;
    rpc_call_opts o = {.timeout_ms = 3000};
    int code = rpc_call_unary(ch, "/opstest.Test/Echo", &req.base, &opstest__echo_response__descriptor, &m, &o, &res);
    if (code == RPC_OK) {
        if (identity) snprintf(identity, idlen, "%s", ((Opstest__EchoResponse *)m)->peer_identity);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return code;
}

static int fresh_call(int port, const char *ca)
{
    rpc_channel *ch = channel(port, ca, NULL, NULL);
    int code = echo(ch, NULL, 0);
    rpc_channel_free(ch);
    return code;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void rotation_by_mtime(void **state)
{
    (void)state;
    if (!certdir[0]) skip();
    put(cert("server.pem"), live("tls.pem"));
    put(cert("server.key"), live("tls.key"));
    testsvc t;
    char err[512];
    rpc_tls stls = {.enabled = 1, .cert_file = live("tls.pem"), .key_file = live("tls.key"), .reload_check_ms = 100};
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &stls, NULL, 0, err, sizeof err), 0);
    rpc_channel *kept = channel(t.port, cert("ca.pem"), NULL, NULL);
    assert_int_equal(echo(kept, NULL, 0), RPC_OK);

    /* A certificate from another CA replaces ours on disk; no signal. */
    put(cert("other-server.key"), live("tls.key"));
    put(cert("other-server.pem"), live("tls.pem"));
    int seen = 0;
    for (int i = 0; i < 100 && !seen; i++) {
        sleep_ms(50);
        seen = fresh_call(t.port, cert("other-ca.pem")) == RPC_OK;
    }
    assert_true(seen);
    assert_int_equal(fresh_call(t.port, cert("ca.pem")), RPC_UNAVAILABLE); /* new connections: new cert */
    assert_int_equal(echo(kept, NULL, 0), RPC_OK);                        /* the old connection goes on */

    /* An expired certificate is refused; the current one stays. */
    put(cert("expired-server.key"), live("tls.key"));
    put(cert("expired-server.pem"), live("tls.pem"));
    assert_int_equal(rpc_server_reload_tls(t.srv), -1);
    sleep_ms(250);
    assert_int_equal(fresh_call(t.port, cert("other-ca.pem")), RPC_OK);
    /* A key that does not belong to the certificate (half-done deploy): refused too. */
    put(cert("server.pem"), live("tls.pem"));
    put(cert("client.key"), live("tls.key"));
    assert_int_equal(rpc_server_reload_tls(t.srv), -1);
    assert_int_equal(fresh_call(t.port, cert("other-ca.pem")), RPC_OK);
    /* The deploy completes: a forced reload takes it. */
    put(cert("server.key"), live("tls.key"));
    assert_int_equal(rpc_server_reload_tls(t.srv), 0);
    assert_int_equal(fresh_call(t.port, cert("ca.pem")), RPC_OK);
    assert_int_equal(echo(kept, NULL, 0), RPC_OK);
    rpc_channel_free(kept);
    testsvc_stop(&t, 1000);
}

static void expired_at_start(void **state)
{
    (void)state;
    if (!certdir[0]) skip();
    testsvc t;
    char err[512] = "";
    rpc_tls stls = {.enabled = 1, .cert_file = cert("expired-server.pem"), .key_file = cert("expired-server.key")};
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &stls, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "expired-server.pem: certificate expired on Feb  1 00:00:00 2020 GMT"));
    assert_non_null(strstr(err, "valid from Jan  1 00:00:00 2020 GMT"));
    /* A client certificate that expired is refused when the channel is made. */
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    co.tls = (rpc_tls){.enabled = 1, .ca_file = cert("ca.pem"), .cert_file = cert("expired-client.pem"),
                       .key_file = cert("expired-client.key")};
    assert_null(rpc_channel_new("localhost:1", &co, err, sizeof err));
    assert_non_null(strstr(err, "expired-client.pem: certificate expired on"));
}

static void optional_client_certificates(void **state)
{
    (void)state;
    if (!certdir[0]) skip();
    testsvc t;
    char err[512], id[128];
    rpc_tls stls = {.enabled = 1, .cert_file = cert("server.pem"), .key_file = cert("server.key"), .ca_file = cert("ca.pem"),
                    .request_client_cert = 1};
    assert_int_equal(testsvc_start(&t, "127.0.0.1:0", &stls, NULL, 0, err, sizeof err), 0);
    rpc_channel *ch = channel(t.port, cert("ca.pem"), NULL, NULL);
    assert_int_equal(echo(ch, id, sizeof id), RPC_OK);
    assert_string_equal(id, "");
    rpc_channel_free(ch);
    ch = channel(t.port, cert("ca.pem"), cert("client.pem"), cert("client.key"));
    assert_int_equal(echo(ch, id, sizeof id), RPC_OK);
    assert_string_equal(id, "node-1");
    rpc_channel_free(ch);
    ch = channel(t.port, cert("ca.pem"), cert("other-client.pem"), cert("other-client.key"));
    assert_int_equal(echo(ch, NULL, 0), RPC_UNAVAILABLE);
    rpc_channel_free(ch);
    testsvc_stop(&t, 1000);
}

static void authorize_decisions(void **state)
{
    (void)state;
    char why[300];
    /* sha256("s3cret") */
    char hash[] = "ba9cfca5b6b6b1ad5e4b9e2fa2ba8e0a6dc50e1f72d3d3ac1bd0ce5a0ff0e2c0";
    FILE *p = popen("printf %s s3cret | sha256sum", "r");
    assert_non_null(p);
    assert_non_null(fgets(hash, sizeof hash, p));
    pclose(p);
    char *ids[] = {"ops-manager", NULL};
    dconfig_auth open = {.allowed_identities = NULL, .manager_token_sha256 = ""};
    assert_int_equal(dservice_authorize(&open, NULL, NULL, why, sizeof why), RPC_OK);
    dconfig_auth a = {.allowed_identities = ids, .n_allowed_identities = 1, .manager_token_sha256 = hash};
    assert_int_equal(dservice_authorize(&a, NULL, NULL, why, sizeof why), RPC_UNAUTHENTICATED);
    assert_int_equal(dservice_authorize(&a, "Bearer s3cret", NULL, why, sizeof why), RPC_OK);
    assert_int_equal(dservice_authorize(&a, "bearer s3cret", NULL, why, sizeof why), RPC_OK);
    assert_int_equal(dservice_authorize(&a, "Bearer s3cret2", NULL, why, sizeof why), RPC_UNAUTHENTICATED);
    assert_int_equal(dservice_authorize(&a, "Bearer ", NULL, why, sizeof why), RPC_UNAUTHENTICATED);
    assert_int_equal(dservice_authorize(&a, "Basic s3cret", NULL, why, sizeof why), RPC_UNAUTHENTICATED);
    assert_int_equal(dservice_authorize(&a, NULL, "ops-manager", why, sizeof why), RPC_OK);
    assert_int_equal(dservice_authorize(&a, NULL, "node-1", why, sizeof why), RPC_PERMISSION_DENIED);
    assert_non_null(strstr(why, "node-1"));
    assert_int_equal(dservice_authorize(&a, "Bearer s3cret", "node-1", why, sizeof why), RPC_OK);
    assert_int_equal(dservice_authorize(&a, "Bearer nope", "node-1", why, sizeof why), RPC_UNAUTHENTICATED);
    /* Identities only: a token means nothing. */
    dconfig_auth c = {.allowed_identities = ids, .n_allowed_identities = 1, .manager_token_sha256 = ""};
    assert_int_equal(dservice_authorize(&c, "Bearer s3cret", NULL, why, sizeof why), RPC_UNAUTHENTICATED);
    assert_int_equal(dservice_authorize(&c, NULL, "OPS-MANAGER", why, sizeof why), RPC_PERMISSION_DENIED);
}

static int setup_certs(void **state)
{
    (void)state;
    const char *src = getenv("OPS_SOURCE_DIR");
    if (!src) return 0;
    snprintf(certdir, sizeof certdir, "/tmp/ops-test-tlsreload-%d", (int)getpid());
    snprintf(livedir, sizeof livedir, "%s/live", certdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/tests/support/gen-certs.sh %s >/dev/null 2>&1 && mkdir -p %s", src, certdir, livedir);
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
    log_open(getenv("OPS_TEST_DEBUG") ? LOGL_DEBUG : LOGL_ERROR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(authorize_decisions),
        cmocka_unit_test(rotation_by_mtime),
        cmocka_unit_test(expired_at_start),
        cmocka_unit_test(optional_client_certificates),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
