/* Durations, sizes, the status mapping table and config errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "base/cfg.h"
#include "base/log.h"
#include "base/units.h"
#include "rpc/status.h"

static void durations(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(units_parse_duration_ms("250ms", &ms), 0); assert_int_equal(ms, 250);
    assert_int_equal(units_parse_duration_ms("30s", &ms), 0); assert_int_equal(ms, 30000);
    assert_int_equal(units_parse_duration_ms("5m", &ms), 0); assert_int_equal(ms, 300000);
    assert_int_equal(units_parse_duration_ms("1h30m", &ms), 0); assert_int_equal(ms, 5400000);
    assert_int_equal(units_parse_duration_ms("2d", &ms), 0); assert_int_equal(ms, 172800000);
    assert_int_equal(units_parse_duration_ms("0", &ms), 0); assert_int_equal(ms, 0);
    const char *bad[] = {"", "s", "10", "-5s", "5x", "1.5s", "5 s", "99999999999999999999s", "10ms5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(units_parse_duration_ms(bad[i], &ms), -1);
    char buf[32];
    assert_string_equal(units_format_duration(5400000, buf, sizeof buf), "1h30m");
    assert_string_equal(units_format_duration(250, buf, sizeof buf), "250ms");
    assert_string_equal(units_format_duration(61000, buf, sizeof buf), "1m1s");
}

static void sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(units_parse_size("10MiB", &v), 0); assert_true(v == 10ULL << 20);
    assert_int_equal(units_parse_size("512KB", &v), 0); assert_true(v == 512000);
    assert_int_equal(units_parse_size("64", &v), 0); assert_true(v == 64);
    assert_int_equal(units_parse_size("1GiB", &v), 0); assert_true(v == 1ULL << 30);
    assert_int_equal(units_parse_size("10XB", &v), -1);
    assert_int_equal(units_parse_size("MiB", &v), -1);
    assert_int_equal(units_parse_size("99999999999TiB", &v), -1);
}

static void status_mapping(void **state)
{
    (void)state;
    assert_int_equal(rpc_error_kind_of(RPC_OK), RPC_ERR_NONE);
    assert_int_equal(rpc_error_kind_of(RPC_NOT_FOUND), RPC_ERR_AGENT_NOT_FOUND);
    assert_int_equal(rpc_error_kind_of(RPC_INVALID_ARGUMENT), RPC_ERR_INVALID_ARGUMENT);
    assert_int_equal(rpc_error_kind_of(RPC_DEADLINE_EXCEEDED), RPC_ERR_TIMEOUT);
    assert_int_equal(rpc_error_kind_of(RPC_UNAVAILABLE), RPC_ERR_CONNECTION_FAILED);
    assert_int_equal(rpc_error_kind_of(RPC_INTERNAL), RPC_ERR_OTHER);
    assert_int_equal(rpc_error_kind_of(RPC_PERMISSION_DENIED), RPC_ERR_OTHER);
    assert_string_equal(rpc_code_name(RPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
    assert_string_equal(rpc_code_name(99), "UNKNOWN");
    assert_string_equal(rpc_error_kind_name(RPC_ERR_CONNECTION_FAILED), "connection failed");
}

struct lvl { char *level; };
struct top { char *host; unsigned port; struct lvl log; };
static const cyaml_schema_field_t lvl_fields[] = {
    CYAML_FIELD_STRING_PTR("level", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct lvl, level, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END};
static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_STRING_PTR("host", CYAML_FLAG_POINTER, struct top, host, 0, CYAML_UNLIMITED),
    CYAML_FIELD_UINT("port", CYAML_FLAG_OPTIONAL, struct top, port),
    CYAML_FIELD_MAPPING("log", CYAML_FLAG_OPTIONAL, struct top, log, lvl_fields),
    CYAML_FIELD_END};
static const cyaml_schema_value_t top_schema = {CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct top, top_fields)};

static void config_errors(void **state)
{
    (void)state;
    char err[1024];
    void *out;
    const char *good = "host: a\nport: 12\nlog:\n  level: info\n";
    assert_int_equal(cfg_load_string("good.yaml", good, strlen(good), &top_schema, &out, err, sizeof err), 0);
    struct top *t = out;
    assert_string_equal(t->host, "a");
    assert_int_equal(t->port, 12);
    cfg_free(&top_schema, out);

    const char *unknown = "host: a\nlog:\n  lvl: x\n";
    assert_int_equal(cfg_load_string("m.yaml", unknown, strlen(unknown), &top_schema, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "m.yaml"));
    assert_non_null(strstr(err, "Unexpected key: lvl"));
    assert_non_null(strstr(err, "'log'"));
    assert_non_null(strstr(err, "line: 3"));

    const char *badtype = "host: a\nport: abc\n";
    assert_int_equal(cfg_load_string("m.yaml", badtype, strlen(badtype), &top_schema, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "'port'"));
    assert_non_null(strstr(err, "abc"));

    const char *missing = "port: 3\n";
    assert_int_equal(cfg_load_string("m.yaml", missing, strlen(missing), &top_schema, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "Missing required mapping field: host"));

    assert_int_equal(cfg_load("/nonexistent/x.yaml", &top_schema, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.yaml: cannot open"));
}

static void log_levels(void **state)
{
    (void)state;
    log_level l;
    assert_int_equal(log_parse_level("warning", &l), 0); assert_int_equal(l, LOGL_WARN);
    assert_int_equal(log_parse_level("DEBUG", &l), 0); assert_int_equal(l, LOGL_DEBUG);
    assert_int_equal(log_parse_level("loud", &l), -1);
    char q[32];
    assert_string_equal(log_quote(q, sizeof q, "a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations), cmocka_unit_test(sizes), cmocka_unit_test(status_mapping),
        cmocka_unit_test(config_errors), cmocka_unit_test(log_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
