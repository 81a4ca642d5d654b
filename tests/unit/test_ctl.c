/* opsctl's parts: chart rendering and sparklines, table alignment with UTF-8, --since
 * durations and the other formatters, connection settings resolution (flags > env > file)
 * with real config files, and the error explanations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin.pb-c.h"
#include "ctl/chart.h"
#include "ctl/conn.h"
#include "ctl/table.h"

/* ---- sparklines ---------------------------------------------------------------------------- */

static void test_sparkline_levels(void **state)
{
    (void)state;
    double v[] = {0, 1, 2, 3, 4, 5, 6, 7};
    char buf[128];
    assert_int_equal(chart_sparkline(v, 8, 20, buf, sizeof buf), 8);
    assert_string_equal(buf, "▁▂▃▄▅▆▇█");
    double r[] = {7, 0, 7};
    assert_int_equal(chart_sparkline(r, 3, 20, buf, sizeof buf), 3);
    assert_string_equal(buf, "█▁█");
}

static void test_sparkline_flat_and_empty(void **state)
{
    (void)state;
    char buf[64];
    double z[] = {0, 0, 0};
    chart_sparkline(z, 3, 10, buf, sizeof buf);
    assert_string_equal(buf, "▁▁▁");
    double f[] = {5, 5};
    chart_sparkline(f, 2, 10, buf, sizeof buf);
    assert_string_equal(buf, "▄▄");
    assert_int_equal(chart_sparkline(f, 0, 10, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
}

static void test_sparkline_averages_into_width(void **state)
{
    (void)state;
    /* 16 values into 4 cells: pairs of four average to 0, 10, 20, 30 -> lowest..highest. */
    double v[16];
    for (int i = 0; i < 16; i++) v[i] = (i / 4) * 10 + (i % 2 ? 1 : -1);
    char buf[64];
    assert_int_equal(chart_sparkline(v, 16, 4, buf, sizeof buf), 4);
    assert_string_equal(buf, "▁▃▆█");
    /* A buffer too small for every cell stops early but stays a valid string. */
    char small[8];
    assert_int_equal(chart_sparkline(v, 16, 4, small, sizeof small), 2);
    assert_string_equal(small, "▁▃");
}

/* ---- braille plot -------------------------------------------------------------------------- */

/* The n-th line of text (0-based), copied into buf. */
static const char *line_of(const char *text, int n, char *buf, size_t len)
{
    const char *p = text;
    for (int i = 0; i < n && p; i++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    assert_non_null(p);
    size_t l = strcspn(p, "\n");
    assert_true(l < len);
    memcpy(buf, p, l);
    buf[l] = 0;
    return buf;
}

static int count_lines(const char *t)
{
    int n = 0;
    for (; *t; t++) n += *t == '\n';
    return n;
}

static void test_plot_step(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    /* 10 cells x 3 rows = 20 x 12 dots. A step from 1 (top dot row) to 0 (bottom dot row). */
    chart_point p[] = {{0, 1}, {9, 1}, {10, 0}, {19, 0}};
    chart_opts o = {.width = CHART_MARGIN + 10, .height = 3, .from = 0, .to = 19};
    char *text = chart_plot(p, 4, &o);
    assert_non_null(text);
    assert_int_equal(count_lines(text), 3 + 2);
    char l[512];
    /* Top row: y label = max; dots 1 and 4 (top of both columns) in cells 0..3 = U+2809. */
    line_of(text, 0, l, sizeof l);
    assert_true(strncmp(l, "       1 ┤⠉⠉⠉⠉", strlen("       1 ┤⠉⠉⠉⠉")) == 0);
    /* Middle row: the mid label, an unlabelled-looking plot part. */
    line_of(text, 1, l, sizeof l);
    assert_true(strncmp(l, "    0.50 ┤", strlen("    0.50 ┤")) == 0);
    /* Bottom row: min label, dots 7 and 8 (bottom of both columns) in cells 6..9 = U+28C0. */
    line_of(text, 2, l, sizeof l);
    assert_true(strncmp(l, "       0 ┤", strlen("       0 ┤")) == 0);
    const char *tail = "⣀⣀⣀⣀";
    assert_string_equal(l + strlen(l) - strlen(tail), tail);
    /* Nothing in the bottom row's first cells: they hold spaces. */
    assert_true(strncmp(l + strlen("       0 ┤"), "    ", 4) == 0);
    line_of(text, 3, l, sizeof l);
    assert_string_equal(l, "         └──────────");
    /* One label fits in 10 columns: the start. */
    line_of(text, 4, l, sizeof l);
    assert_string_equal(l, "          00:00");
    free(text);
}

static void test_plot_axis_labels(void **state)
{
    (void)state;
    setenv("TZ", "UTC", 1);
    tzset();
    /* 1700000000 = 2023-11-14 22:13:20 UTC; two hours of points. */
    chart_point p[3] = {{1700000000, 2}, {1700003600, 8}, {1700007200, 5}};
    chart_opts o = {.width = CHART_MARGIN + 30, .height = 4, .from = 1700000000, .to = 1700007200};
    char *text = chart_plot(p, 3, &o);
    assert_non_null(text);
    char l[512];
    line_of(text, 0, l, sizeof l);
    assert_true(strncmp(l, "       8 ┤", 10) == 0);
    line_of(text, 2, l, sizeof l); /* mid row = rows/2 */
    assert_true(strncmp(l, "       5 ┤", 10) == 0);
    line_of(text, 1, l, sizeof l);
    assert_true(strncmp(l, "         │", strlen("         │")) == 0);
    line_of(text, 3, l, sizeof l);
    assert_true(strncmp(l, "       2 ┤", 10) == 0);
    /* The peak at the middle is the highest dot: row 0 has a dot near column 15. */
    line_of(text, 0, l, sizeof l);
    assert_true(table_text_width(l) >= 10 + 15);
    line_of(text, 5, l, sizeof l);
    assert_string_equal(l, "          22:13        23:13       00:13");
    free(text);

    /* Ranges over a day carry the date. */
    chart_point q[2] = {{1700000000, 1}, {1700000000 + 3 * 86400, 2}};
    chart_opts o2 = {.width = CHART_MARGIN + 40, .height = 2, .from = q[0].t, .to = q[1].t};
    text = chart_plot(q, 2, &o2);
    line_of(text, 3, l, sizeof l);
    assert_true(strncmp(l, "          11-14 22:13", 21) == 0);
    assert_non_null(strstr(l, "11-17 22:13"));
    free(text);
    assert_null(chart_plot(q, 0, &o2));
}

static void test_plot_flat_and_width(void **state)
{
    (void)state;
    chart_point p[2] = {{100, 3}, {200, 3}};
    chart_opts o = {.width = 50, .height = 4};
    char *text = chart_plot(p, 2, &o);
    char l[512];
    /* A flat line is drawn inside a padded range: labels differ, the dots sit mid-way. */
    line_of(text, 0, l, sizeof l);
    assert_true(strncmp(l, "     3.3 ┤", 10) == 0);
    line_of(text, 3, l, sizeof l);
    assert_true(strncmp(l, "     2.7 ┤", 10) == 0);
    line_of(text, 4, l, sizeof l);
    assert_int_equal(table_text_width(l), 50);
    free(text);
    setenv("COLUMNS", "123", 1);
    assert_int_equal(chart_term_width(), 123);
    setenv("COLUMNS", "5", 1);
    assert_int_equal(chart_term_width(), 30);
    unsetenv("COLUMNS");
    assert_int_equal(chart_plot_columns(90), 80);
    assert_int_equal(chart_plot_columns(12), 10);
}

/* ---- tables and formatters ----------------------------------------------------------------- */

static char *print_to_string(const table *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(table_print(t, f), 0);
    fclose(f);
    return buf;
}

static void test_text_width(void **state)
{
    (void)state;
    assert_int_equal(table_text_width(""), 0);
    assert_int_equal(table_text_width("abc"), 3);
    assert_int_equal(table_text_width("bäckerei"), 8);
    assert_int_equal(table_text_width("日本"), 4);
    assert_int_equal(table_text_width("e\xcc\x81"), 1); /* e + combining acute */
    assert_int_equal(table_text_width("▁▂█"), 3);
    assert_int_equal(table_text_width("\xff" "a"), 2); /* an invalid byte counts one */
}

static void test_table_alignment_utf8(void **state)
{
    (void)state;
    const char *hdr[] = {"NAME", "HOST", "N"};
    table *t = table_new(3, hdr);
    table_align_right(t, 2);
    table_add(t, "a", "bäckerei", "7");
    table_add(t, "日本", "x", "1234");
    table_add(t, "node-10", NULL, "");
    assert_int_equal(table_rows(t), 3);
    char *s = print_to_string(t);
    assert_string_equal(s,
                        "NAME     HOST         N\n"
                        "a        bäckerei     7\n"
                        "日本     x         1234\n"
                        "node-10\n");
    free(s);
    table_free(t);

    /* Last column left-aligned: no trailing blanks; no header line. */
    table *k = table_new(2, NULL);
    table_add(k, "Node:", "n1");
    table_add(k, "Hostname:", "ü");
    s = print_to_string(k);
    assert_string_equal(s, "Node:      n1\nHostname:  ü\n");
    free(s);
    table_free(k);
}

static void test_formatters(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(table_fmt_ago(100, 112, b, sizeof b), "12s ago");
    assert_string_equal(table_fmt_ago(100, 100, b, sizeof b), "just now");
    assert_string_equal(table_fmt_ago(100, 100 + 300, b, sizeof b), "5m ago");
    assert_string_equal(table_fmt_ago(100, 100 + 7300, b, sizeof b), "2h ago");
    assert_string_equal(table_fmt_ago(100, 100 + 3 * 86400 + 5, b, sizeof b), "3d ago");
    assert_string_equal(table_fmt_ago(110, 100, b, sizeof b), "in 10s");
    assert_string_equal(table_fmt_ago(0, 100, b, sizeof b), "never");
    assert_string_equal(table_fmt_size(0, b, sizeof b), "0 B");
    assert_string_equal(table_fmt_size(1023, b, sizeof b), "1023 B");
    assert_string_equal(table_fmt_size(1536, b, sizeof b), "1.5 KiB");
    assert_string_equal(table_fmt_size(12ULL * 1048576, b, sizeof b), "12.0 MiB");
    assert_string_equal(table_fmt_size(5ULL << 40, b, sizeof b), "5.0 TiB");
    assert_string_equal(table_fmt_num(0, b, sizeof b), "0");
    assert_string_equal(table_fmt_num(12.34, b, sizeof b), "12.3");
    assert_string_equal(table_fmt_num(0.05, b, sizeof b), "0.05");
    assert_string_equal(table_fmt_num(1234, b, sizeof b), "1234");
    assert_string_equal(table_fmt_num(12345, b, sizeof b), "12.3k");
    assert_string_equal(table_fmt_num(4.5e6 * 10, b, sizeof b), "45.0M");
    assert_string_equal(table_fmt_num(-2, b, sizeof b), "-2");
    assert_string_equal(table_fmt_num(250, b, sizeof b), "250");
    assert_string_equal(table_fmt_time(0, b, sizeof b), "-");
}

static void test_parse_since(void **state)
{
    (void)state;
    int64_t s = -1;
    assert_int_equal(table_parse_since("1h", &s), 0);
    assert_int_equal(s, 3600);
    assert_int_equal(table_parse_since("90s", &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(table_parse_since("1h30m", &s), 0);
    assert_int_equal(s, 5400);
    assert_int_equal(table_parse_since("24h", &s), 0);
    assert_int_equal(s, 86400);
    assert_int_equal(table_parse_since("7d", &s), 0);
    assert_int_equal(s, 7 * 86400);
    assert_int_equal(table_parse_since("2w", &s), 0);
    assert_int_equal(s, 14 * 86400);
    const char *bad[] = {"", "abc", "-1h", "0", "10ms", "1x", "w", "1hw", "h", "3 h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = 42;
        assert_int_equal(table_parse_since(bad[i], &s), -1);
        assert_int_equal(s, 42);
    }
    assert_int_equal(table_parse_since(NULL, &s), -1);
}

/* ---- connection settings ------------------------------------------------------------------- */

static char tmpdir[256];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_ctl.XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    const char *vars[] = {"OPS_MANAGER", "OPS_TOKEN", "OPS_CA", "OPS_CERT", "OPS_KEY", "XDG_CONFIG_HOME"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
    return 0;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_resolve_order(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/opsctl.yaml", tmpdir);
    write_file(path, "# opsctl\nmanager: file-host:1\ntoken: file-token\nca: /file/ca.pem\n");
    conn_settings s;
    char err[512];

    /* The file alone. */
    assert_int_equal(conn_resolve(&s, NULL, path, err, sizeof err), 0);
    assert_string_equal(s.manager, "file-host:1");
    assert_string_equal(s.manager_from, path);
    assert_string_equal(s.token, "file-token");
    assert_string_equal(s.ca, "/file/ca.pem");
    assert_null(s.cert);
    assert_int_equal(s.timeout_ms, CONN_DEFAULT_TIMEOUT_MS);
    conn_settings_free(&s);

    /* The environment beats the file, key by key. */
    setenv("OPS_MANAGER", "env-host:2", 1);
    assert_int_equal(conn_resolve(&s, NULL, path, err, sizeof err), 0);
    assert_string_equal(s.manager, "env-host:2");
    assert_string_equal(s.manager_from, "OPS_MANAGER");
    assert_string_equal(s.token, "file-token");
    assert_string_equal(s.token_from, path);
    conn_settings_free(&s);

    /* Flags beat both; an empty env value counts as unset. */
    setenv("OPS_TOKEN", "", 1);
    conn_flags fl = {.manager = "flag-host:3", .token = "flag-token"};
    assert_int_equal(conn_resolve(&s, &fl, path, err, sizeof err), 0);
    assert_string_equal(s.manager, "flag-host:3");
    assert_string_equal(s.manager_from, "--manager");
    assert_string_equal(s.token, "flag-token");
    assert_string_equal(s.token_from, "--token");
    conn_settings_free(&s);
    conn_flags fl2 = {.ca = "/flag/ca"};
    assert_int_equal(conn_resolve(&s, &fl2, path, err, sizeof err), 0);
    assert_string_equal(s.token, "file-token");
    assert_string_equal(s.ca, "/flag/ca");
    conn_settings_free(&s);
    unsetenv("OPS_MANAGER");
    unsetenv("OPS_TOKEN");

    /* No file: defaults. */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope/opsctl.yaml", tmpdir);
    assert_int_equal(conn_resolve(&s, NULL, missing, err, sizeof err), 0);
    assert_string_equal(s.manager, CONN_DEFAULT_MANAGER);
    assert_string_equal(s.manager, "127.0.0.1:9090");
    assert_string_equal(s.manager_from, "default");
    assert_null(s.token);
    conn_settings_free(&s);
}

static void test_resolve_default_path(void **state)
{
    (void)state;
    char dir[512], path[600], want[600];
    snprintf(dir, sizeof dir, "%s/xdg/ops", tmpdir);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/opsctl.yaml", dir);
    write_file(path, "manager: xdg-host:4\n");
    char xdg[512];
    snprintf(xdg, sizeof xdg, "%s/xdg", tmpdir);
    setenv("XDG_CONFIG_HOME", xdg, 1);
    char got[600];
    assert_int_equal(conn_default_config_path(got, sizeof got), 0);
    assert_string_equal(got, path);
    conn_settings s;
    char err[512];
    assert_int_equal(conn_resolve(&s, NULL, NULL, err, sizeof err), 0);
    assert_string_equal(s.manager, "xdg-host:4");
    conn_settings_free(&s);
    unsetenv("XDG_CONFIG_HOME");
    setenv("HOME", tmpdir, 1);
    snprintf(want, sizeof want, "%s/.config/ops/opsctl.yaml", tmpdir);
    assert_int_equal(conn_default_config_path(got, sizeof got), 0);
    assert_string_equal(got, want);
}

static void test_resolve_broken_file(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/broken.yaml", tmpdir);
    conn_settings s;
    char err[1024];
    /* An unknown key. (libcyaml places it at the end of the event before it: line 2.) */
    write_file(path, "manager: h:1\ntoken: t\nmanagr: typo\n");
    assert_int_equal(conn_resolve(&s, NULL, path, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line: 2"));
    assert_non_null(strstr(err, "managr"));
    /* Not YAML at all. */
    write_file(path, "manager: h:1\ntoken: [unclosed\n");
    assert_int_equal(conn_resolve(&s, NULL, path, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line: 2"));
    assert_non_null(strstr(err, "token"));
    /* A mapping where a string belongs, naming the key. */
    write_file(path, "manager:\n  host: h\n");
    assert_int_equal(conn_resolve(&s, NULL, path, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "manager"));
    /* An address without a port, naming where it came from. */
    conn_flags bad = {.manager = "127.0.0.1:"};
    assert_int_equal(conn_resolve(&s, &bad, "/nonexistent/opsctl.yaml", err, sizeof err), -1);
    assert_non_null(strstr(err, "--manager"));
    /* Half a client certificate. */
    conn_flags fl = {.cert = "/c.pem", .ca = "/ca.pem"};
    assert_int_equal(conn_resolve(&s, &fl, "/nonexistent/opsctl.yaml", err, sizeof err), -1);
    assert_non_null(strstr(err, "--key"));
}

/* ---- error explanations -------------------------------------------------------------------- */

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd); /* nobody listens there now */
    return ntohs(a.sin_port);
}

static void test_explain(void **state)
{
    (void)state;
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", closed_port());
    conn_flags fl = {.manager = target, .token = "t0k"};
    conn_settings s;
    char err[1024];
    assert_int_equal(conn_resolve(&s, &fl, "/nonexistent/opsctl.yaml", err, sizeof err), 0);
    s.timeout_ms = 2000;
    conn *c = conn_open(&s, err, sizeof err);
    assert_non_null(c);

    /* Nobody listening: exit 3 with the address and what to try. */
    Ops__Admin__V1__ListNodesRequest req = OPS__ADMIN__V1__LIST_NODES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = conn_call(c, "ListNodes", &req.base, &ops__admin__v1__list_nodes_response__descriptor, &resp,
                       "list nodes", "viewer", err, sizeof err);
    assert_int_equal(rc, CTL_EXIT_CONN);
    assert_null(resp);
    assert_non_null(strstr(err, "cannot reach manager at"));
    assert_non_null(strstr(err, target));
    assert_non_null(strstr(err, "OPS_MANAGER"));
    assert_non_null(strstr(err, "(the address came from --manager)"));

    rpc_result r = {.code = RPC_UNAUTHENTICATED};
    snprintf(r.message, sizeof r.message, "unknown token");
    assert_int_equal(conn_explain(c, "ListNodes", &r, "list nodes", "viewer", err, sizeof err), CTL_EXIT_CONN);
    assert_non_null(strstr(err, "token refused"));
    assert_non_null(strstr(err, "--token"));

    r.code = RPC_PERMISSION_DENIED;
    assert_int_equal(conn_explain(c, "OperateAgent", &r, "operate agents", "operator", err, sizeof err),
                     CTL_EXIT_FAILED);
    assert_non_null(strstr(err, "permission denied: your token's role cannot operate agents; ask for an operator token"));
    assert_int_equal(conn_explain(c, "GetNode", &r, "read nodes", "viewer", err, sizeof err), CTL_EXIT_FAILED);
    assert_non_null(strstr(err, "ask for a viewer token"));

    r.code = RPC_NOT_FOUND;
    snprintf(r.message, sizeof r.message, "node n9 not found");
    assert_int_equal(conn_explain(c, "GetNode", &r, NULL, NULL, err, sizeof err), CTL_EXIT_FAILED);
    assert_string_equal(err, "not found: node n9 not found");

    r.code = RPC_INTERNAL;
    assert_int_equal(conn_explain(c, "GetNode", &r, NULL, NULL, err, sizeof err), CTL_EXIT_FAILED);
    assert_non_null(strstr(err, "INTERNAL"));
    conn_close(c);

    /* No token at all says so. */
    conn_settings s2;
    conn_flags fl2 = {.manager = target};
    assert_int_equal(conn_resolve(&s2, &fl2, "/nonexistent/opsctl.yaml", err, sizeof err), 0);
    c = conn_open(&s2, err, sizeof err);
    r.code = RPC_UNAUTHENTICATED;
    assert_int_equal(conn_explain(c, "ListNodes", &r, NULL, NULL, err, sizeof err), CTL_EXIT_CONN);
    assert_non_null(strstr(err, "no token"));
    conn_close(c);
    conn_settings_free(&s2);
    conn_settings_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparkline_levels),
        cmocka_unit_test(test_sparkline_flat_and_empty),
        cmocka_unit_test(test_sparkline_averages_into_width),
        cmocka_unit_test(test_plot_step),
        cmocka_unit_test(test_plot_axis_labels),
        cmocka_unit_test(test_plot_flat_and_width),
        cmocka_unit_test(test_text_width),
        cmocka_unit_test(test_table_alignment_utf8),
        cmocka_unit_test(test_formatters),
        cmocka_unit_test(test_parse_since),
        cmocka_unit_test_setup_teardown(test_resolve_order, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_resolve_default_path, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_resolve_broken_file, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_explain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
