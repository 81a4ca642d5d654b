/* manager.yaml: the shipped file, defaults, the dump, and the exact message of each mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manager/mconfig.h"

static char g_dir[64];

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_mconfig.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to a file in the test directory and loads it. */
static int load_file(const char *name, const char *text, mconfig **out, char *err, size_t errlen,
                     char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return mconfig_load(path, out, err, errlen);
}

static void assert_defaults(const mconfig *c)
{
    assert_string_equal(c->grpc.host, "0.0.0.0");
    assert_int_equal(c->grpc.port, 9090);
    assert_int_equal(c->grpc.tls.enabled, 0);
    assert_string_equal(c->grpc.tls.cert_file, "");
    assert_int_equal(c->grpc.tls.require_client_cert, 0);
    assert_true(c->grpc.max_message_size == 10u << 20);
    assert_int_equal(c->grpc.keepalive_time_ms, 60000);
    assert_int_equal(c->grpc.keepalive_timeout_ms, 20000);
    assert_int_equal(c->grpc.min_ping_interval_ms, 20000);
    assert_string_equal(c->database.driver, "sqlite");
    assert_string_equal(c->database.dsn, "ops-manager.db");
    assert_int_equal(c->node.heartbeat_interval_ms, 60000);
    assert_int_equal(c->node.metrics_interval_ms, 60000);
    assert_int_equal(c->node.offline_after_ms, 180000);
    assert_int_equal(c->node.auto_register, 1);
    assert_int_equal(c->metrics.retention_ms, 720LL * 3600 * 1000);
    assert_int_equal(c->metrics.retention_interval_ms, 3600000);
    assert_int_equal(c->log.level, LOGL_INFO);
    assert_string_equal(c->log.file, "");
}

static void shipped_file_is_the_defaults(void **state)
{
    (void)state;
    const char *src = getenv("OPS_SOURCE_DIR");
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/configs/manager.yaml", src ? src : ".");
    mconfig *c;
    assert_int_equal(mconfig_load(path, &c, err, sizeof err), 0);
    assert_defaults(c);
    assert_string_equal(c->source, path);
    mconfig *d;
    assert_int_equal(mconfig_load(NULL, &d, err, sizeof err), 0);
    assert_defaults(d);
    assert_string_equal(d->source, "(defaults)");
    char *a = mconfig_dump_yaml(c), *b = mconfig_dump_yaml(d);
    assert_non_null(a);
    assert_string_equal(a, b);
    free(a);
    free(b);
    mconfig_free(c);
    mconfig_free(d);
}

static void partial_and_empty_files(void **state)
{
    (void)state;
    char err[512], path[256];
    mconfig *c;
    assert_int_equal(load_file("empty.yaml", "# nothing here\n\n---\n", &c, err, sizeof err, path,
                               sizeof path), 0);
    assert_defaults(c);
    mconfig_free(c);

    assert_int_equal(load_file("partial.yaml",
                               "node:\n  heartbeat_interval: 10s\n  auto_register: false\n"
                               "grpc:\n  port: 19090\n  tls:\n    enabled: true\n"
                               "    cert_file: /etc/ops/server.pem\n"
                               "    key_file: /etc/ops/server.key\n"
                               "  max_message_size: 4MB\n"
                               "database:\n  driver: postgres\n  dsn: postgres://ops@db/ops\n"
                               "metrics:\n  retention: \"0\"\n"
                               "log:\n  level: debug\n  file: /var/log/ops/manager.log\n",
                               &c, err, sizeof err, path, sizeof path), 0);
    assert_int_equal(c->node.heartbeat_interval_ms, 10000);
    assert_int_equal(c->node.offline_after_ms, 30000); /* 3 x heartbeat_interval */
    assert_int_equal(c->node.auto_register, 0);
    assert_int_equal(c->grpc.port, 19090);
    assert_int_equal(c->grpc.tls.enabled, 1);
    assert_string_equal(c->grpc.tls.key_file, "/etc/ops/server.key");
    assert_true(c->grpc.max_message_size == 4000000);
    assert_string_equal(c->database.driver, "postgres");
    assert_int_equal(c->metrics.retention_ms, 0);
    assert_int_equal(c->log.level, LOGL_DEBUG);
    assert_string_equal(c->log.file, "/var/log/ops/manager.log");

    /* The dump loads back to the same configuration. */
    char *yaml = mconfig_dump_yaml(c);
    assert_non_null(yaml);
    mconfig *again;
    assert_int_equal(mconfig_load_string("dump", yaml, strlen(yaml), &again, err, sizeof err), 0);
    char *yaml2 = mconfig_dump_yaml(again);
    assert_string_equal(yaml, yaml2);
    free(yaml);
    free(yaml2);
    mconfig_free(again);
    mconfig_free(c);
}

typedef struct broken {
    const char *yaml;
    const char *message; /* after "NAME: " */
} broken;

static void semantic_errors_name_key_and_value(void **state)
{
    (void)state;
    static const broken cases[] = {
        {"node:\n  heartbeat_interval: 5x\n",
         "node.heartbeat_interval: not a duration (got '5x', expected e.g. 30s, 5m, 1h30m, 7d)"},
        {"node:\n  metrics_interval: \"0\"\n",
         "node.metrics_interval: must be positive (got '0', expected a duration above 0, e.g. 60s)"},
        {"node:\n  heartbeat_interval: 1m\n  offline_after: 30s\n",
         "node.offline_after: must be longer than node.heartbeat_interval (got '30s', expected "
         "more than 1m)"},
        {"database:\n  driver: mysql\n",
         "database.driver: unknown driver (got 'mysql', expected sqlite or postgres)"},
        {"database:\n  dsn: \"\"\n",
         "database.dsn: is empty (got '', expected a file path (sqlite) or a connection string "
         "(postgres))"},
        {"grpc:\n  port: 70000\n",
         "grpc.port: out of range (got '70000', expected a port from 1 to 65535)"},
        {"grpc:\n  port: 0\n", "grpc.port: out of range (got '0', expected a port from 1 to 65535)"},
        {"grpc:\n  tls:\n    enabled: true\n    key_file: k.pem\n",
         "grpc.tls.cert_file: required when grpc.tls.enabled is true (got '', expected the path "
         "of the server's PEM certificate)"},
        {"grpc:\n  tls:\n    enabled: true\n    cert_file: c.pem\n",
         "grpc.tls.key_file: required when grpc.tls.enabled is true (got '', expected the path "
         "of the server's PEM private key)"},
        {"grpc:\n  tls:\n    enabled: true\n    cert_file: c.pem\n    key_file: k.pem\n"
         "    require_client_cert: true\n",
         "grpc.tls.ca_file: required when grpc.tls.require_client_cert is true (got '', expected "
         "the path of the PEM CA that signs client certificates)"},
        {"grpc:\n  max_message_size: 10XB\n",
         "grpc.max_message_size: not a size (got '10XB', expected e.g. 10MiB, 4MB, 65536)"},
        {"grpc:\n  max_message_size: 4GiB\n",
         "grpc.max_message_size: out of range (got '4GiB', expected from 1KiB to 2GiB - 1)"},
        {"grpc:\n  keepalive_time: soon\n",
         "grpc.keepalive_time: not a duration (got 'soon', expected e.g. 30s, 5m, 1h30m, 7d)"},
        {"metrics:\n  retention_interval: 60\n",
         "metrics.retention_interval: not a duration (got '60', expected e.g. 30s, 5m, 1h30m, 7d)"},
        {"log:\n  level: loud\n",
         "log.level: unknown level (got 'loud', expected debug, info, warn or error)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512], path[256], want[768], name[32];
        snprintf(name, sizeof name, "broken%zu.yaml", i);
        mconfig *c = (mconfig *)1;
        assert_int_equal(load_file(name, cases[i].yaml, &c, err, sizeof err, path, sizeof path), -1);
        assert_null(c);
        snprintf(want, sizeof want, "%s: %s", path, cases[i].message);
        assert_string_equal(err, want);
    }
}

static void syntax_errors_from_libcyaml(void **state)
{
    (void)state;
    char err[512], path[256];
    mconfig *c;
    /* Unknown keys are refused, with the line of the mapping that holds them. */
    char want[512];
    assert_int_equal(load_file("unknown.yaml", "grpc:\n  port: 9090\n  prot: 9091\n", &c, err,
                               sizeof err, path, sizeof path), -1);
    snprintf(want, sizeof want, "%s: Unexpected key: prot; in mapping (line: 2, column: 9); "
             "in mapping field 'grpc' (line: 2, column: 3)", path);
    assert_string_equal(err, want);
    /* Values of the wrong type. */
    assert_int_equal(load_file("port.yaml", "grpc:\n  port: ninety\n", &c, err, sizeof err, path,
                               sizeof path), -1);
    snprintf(want, sizeof want, "%s: Invalid INT value: 'ninety'; in mapping field 'port' "
             "(line: 2, column: 9); in mapping field 'grpc' (line: 2, column: 3)", path);
    assert_string_equal(err, want);
    assert_int_equal(load_file("seq.yaml", "grpc: [1]\n", &c, err, sizeof err, path,
                               sizeof path), -1);
    snprintf(want, sizeof want, "%s: Expecting MAPPING, got event: SEQUENCE_START; in mapping "
             "field 'grpc' (line: 1, column: 7)", path);
    assert_string_equal(err, want);
    assert_int_equal(load_file("bool.yaml", "node:\n  auto_register: maybe\n", &c, err,
                               sizeof err, path, sizeof path), -1);
    snprintf(want, sizeof want, "%s: node.auto_register: not a boolean (got 'maybe', expected "
             "true or false)", path);
    assert_string_equal(err, want);
    assert_int_equal(load_file("bool2.yaml", "grpc:\n  tls:\n    enabled: yes\n    cert_file: c\n"
                               "    key_file: k\n", &c, err, sizeof err, path, sizeof path), 0);
    assert_int_equal(c->grpc.tls.enabled, 1);
    mconfig_free(c);
    /* A missing file. */
    assert_int_equal(mconfig_load("/nonexistent/manager.yaml", &c, err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/manager.yaml: cannot open: No such file or directory");
}

/* ---- admin: listen and tokens ------------------------------------------------------------- */

#define H64 "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"

static void admin_section(void **state)
{
    (void)state;
    char err[512];
    mconfig *c;
    const char *ok = "admin:\n"
                     "  listen: 127.0.0.1:9093\n"
                     "  tokens:\n"
                     "    - {name: vera, role: viewer, sha256: " H64 "}\n"
                     "    - name: ada\n"
                     "      role: admin\n"
                     "      sha256: " H64 "\n";
    assert_int_equal(mconfig_load_string("m.yaml", ok, strlen(ok), &c, err, sizeof err), 0);
    assert_string_equal(c->admin.listen, "127.0.0.1:9093");
    assert_int_equal(c->admin.n_tokens, 2);
    assert_string_equal(c->admin.tokens[0].name, "vera");
    assert_string_equal(c->admin.tokens[0].role, "viewer");
    assert_string_equal(c->admin.tokens[1].sha256, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    char *y = mconfig_dump_yaml(c);
    mconfig *again;
    assert_int_equal(mconfig_load_string("dump", y, strlen(y), &again, err, sizeof err), 0);
    assert_int_equal(again->admin.n_tokens, 2);
    assert_string_equal(again->admin.tokens[1].role, "admin");
    free(y);
    mconfig_free(again);
    mconfig_free(c);

    assert_int_equal(mconfig_load_string("m.yaml", "log: {level: info}\n", 19, &c, err, sizeof err), 0);
    assert_string_equal(c->admin.listen, "");
    assert_int_equal(c->admin.n_tokens, 0);
    mconfig_free(c);

    struct { const char *yaml, *want; } bad[] = {
        {"admin:\n  tokens:\n    - {name: a, role: viewer, sha256: " H64 "}\n    - {name: b, role: root, sha256: " H64 "}\n",
         "m.yaml: line 4: admin.tokens[1].role: unknown role (got 'root', expected viewer, operator or admin)"},
        {"admin:\n  tokens:\n    - {name: a, role: viewer, sha256: abc123}\n",
         "m.yaml: line 3: admin.tokens[0].sha256: not a SHA-256 (got 'abc123', expected 64 hex characters: printf %s \"$TOKEN\" | sha256sum)"},
        {"admin:\n  tokens:\n    - {name: a, role: viewer, sha256: " H64 "}\n    - {name: a, role: admin, sha256: " H64 "}\n",
         "admin.tokens[1].name: duplicate token name"},
        {"admin:\n  tokens:\n    - {role: viewer, sha256: " H64 "}\n", "admin.tokens[0].name: is required"},
        {"admin:\n  tokens:\n    - {name: a, role: viewer}\n", "admin.tokens[0].sha256: not a SHA-256"},
        {"admin:\n  listen: nowhere\n", "m.yaml: admin.listen: not an address (got 'nowhere'"},
        {"admin:\n  tokens:\n    - {name: a, role: viewer, sha256: " H64 ", password: x}\n", "Unexpected key: password"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(mconfig_load_string("m.yaml", bad[i].yaml, strlen(bad[i].yaml), &c, err, sizeof err), -1);
        if (!strstr(err, bad[i].want)) fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shipped_file_is_the_defaults),
        cmocka_unit_test(partial_and_empty_files),
        cmocka_unit_test(semantic_errors_name_key_and_value),
        cmocka_unit_test(syntax_errors_from_libcyaml),
        cmocka_unit_test(admin_section),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
