/* daemon.yaml's daemon.tls and daemon.auth: values, defaults, errors that name file, line and
 * field, and the exposure rule (no unauthenticated DaemonService on a non-loopback address
 * unless insecure: true); the dump loads back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/dconfig.h"

#define H64 "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"

static dconfig *load_ok(const char *yaml)
{
    dconfig *c = NULL;
    char err[1024] = "";
    int rc = dconfig_load_string("d.yaml", yaml, strlen(yaml), &c, err, sizeof err);
    if (rc != 0) fail_msg("unexpected error: %s", err);
    return c;
}

static void load_err(const char *yaml, const char *want)
{
    dconfig *c = NULL;
    char err[1024] = "";
    assert_int_equal(dconfig_load_string("d.yaml", yaml, strlen(yaml), &c, err, sizeof err), -1);
    if (!strstr(err, want)) fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void auth_values(void **state)
{
    (void)state;
    dconfig *c = load_ok("daemon:\n  grpc_host: 10.0.0.5\n  tls: {enabled: true, cert_file: /c.pem, key_file: /k.pem, "
                         "client_ca_file: /ca.pem}\n  auth:\n    allowed_identities: [ops-manager, backup-manager]\n"
                         "    manager_token_sha256: " H64 "\n");
    assert_int_equal(c->daemon.auth.n_allowed_identities, 2);
    assert_string_equal(c->daemon.auth.allowed_identities[1], "backup-manager");
    assert_null(c->daemon.auth.allowed_identities[2]);
    assert_string_equal(c->daemon.auth.manager_token_sha256,
                        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    assert_string_equal(c->daemon.tls.client_ca_file, "/ca.pem");
    char err[512];
    assert_int_equal(dconfig_check_exposure(c, err, sizeof err), 0);
    /* What is printed loads back to the same values. */
    char *y = NULL;
    assert_int_equal(dconfig_dump_yaml(c, &y), 0);
    dconfig *again = load_ok(y);
    assert_int_equal(again->daemon.auth.n_allowed_identities, 2);
    assert_string_equal(again->daemon.auth.manager_token_sha256, c->daemon.auth.manager_token_sha256);
    assert_int_equal(again->daemon.tls.enabled, 1);
    free(y);
    dconfig_free(again);
    dconfig_free(c);
}

static void auth_errors(void **state)
{
    (void)state;
    load_err("daemon:\n  auth:\n    manager_token_sha256: abc\n", "d.yaml: line 3: daemon.auth.manager_token_sha256: must be the SHA-256");
    load_err("daemon:\n  auth:\n    allowed_identities: [ops-manager]\n",
             "d.yaml: line 3: daemon.auth.allowed_identities: needs daemon.tls.enabled: true and daemon.tls.client_ca_file");
    load_err("daemon:\n  tls: {enabled: true, key_file: /k}\n", "daemon.tls.cert_file: required when daemon.tls.enabled is true");
    load_err("daemon:\n  tls: {enabled: true, cert_file: /c, key_file: /k, require_client_cert: true}\n",
             "daemon.tls.client_ca_file: required when require_client_cert is true");
    load_err("daemon:\n  auth: {insecure: maybe}\n", "d.yaml: line 2: daemon.auth.insecure: must be true or false (got \"maybe\")");
    load_err("daemon:\n  auth: {insecure: yes}\n", "daemon.auth.insecure: must be true or false");
    load_err("daemon:\n  auth: {tokens: x}\n", "d.yaml");
}

static void exposure(void **state)
{
    (void)state;
    char err[512];
    dconfig *c = load_ok("# comment\ndaemon:\n  work_dir: /tmp/x\n  grpc_host: 0.0.0.0\n");
    assert_int_equal(dconfig_check_exposure(c, err, sizeof err), -1);
    assert_non_null(strstr(err, "d.yaml: line 4: daemon.grpc_host: 0.0.0.0 is not a loopback address"));
    dconfig_free(c);
    c = load_ok("daemon: {}\n"); /* the default host is loopback: safe without auth */
    assert_int_equal(dconfig_check_exposure(c, err, sizeof err), 0);
    dconfig_free(c);
    static const char *const loopback[] = {"127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"};
    for (size_t i = 0; i < 5; i++) {
        char y[128];
        snprintf(y, sizeof y, "daemon: {grpc_host: \"%s\"}\n", loopback[i]);
        c = load_ok(y);
        assert_int_equal(dconfig_check_exposure(c, err, sizeof err), 0);
        dconfig_free(c);
    }
    c = load_ok("daemon:\n  grpc_host: 10.1.1.1\n  auth: {insecure: true}\n");
    assert_int_equal(dconfig_check_exposure(c, err, sizeof err), 1);
    assert_non_null(strstr(err, "without authentication"));
    dconfig_free(c);
    c = load_ok("daemon:\n  grpc_host: 10.1.1.1\n  auth: {manager_token_sha256: " H64 "}\n");
    assert_int_equal(dconfig_check_exposure(c, err, sizeof err), 0);
    dconfig_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_values),
        cmocka_unit_test(auth_errors),
        cmocka_unit_test(exposure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
