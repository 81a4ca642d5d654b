/* manager/mmetrics over a real SQLite store and a liveness table on a fake clock: call
 * counters and histograms by method and code (with the method cap), latest host values (a late
 * report does not hide a newer one), agent up and restarts from pid changes across syncs,
 * node up / last-seen age, store stats, pruning of deleted nodes; and the prometheus sections
 * of manager.yaml and daemon.yaml (defaults, a bad listen address, the dumps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/dconfig.h"
#include "manager/liveness.h"
#include "manager/mconfig.h"
#include "manager/mmetrics.h"
#include "manager/store.h"

typedef struct fixture {
    char dir[64];
    store *s;
    liveness *live;
    mmetrics *m;
    int64_t now_ms;
    char err[512];
} fixture;

static int64_t fake_clock(void *ctx) { return ((fixture *)ctx)->now_ms; }

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_mmetrics.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/ops.db", f->dir);
    store_config cfg = {.driver = "sqlite", .dsn = path};
    if (!(f->s = store_open(&cfg, f->err, sizeof f->err))) return -1;
    f->now_ms = 1700000000000LL;
    liveness_config lc = {.offline_after_ms = 3000, .clock = fake_clock, .clock_ctx = f, .manual = 1};
    if (!(f->live = liveness_new(&lc, f->s, f->err, sizeof f->err))) return -1;
    mmetrics_opts mo = {.store = f->s, .live = f->live};
    if (!(f->m = mmetrics_new(&mo, f->err, sizeof f->err))) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    mmetrics_free(f->m);
    liveness_free(f->live);
    store_close(f->s);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

/* One scrape; the caller frees the text. */
static char *scrape(fixture *f)
{
    prom_buf b;
    prom_buf_init(&b);
    assert_int_equal(mmetrics_fill(f->m, &b), 0);
    assert_false(prom_buf_failed(&b));
    return b.data;
}

#define HAS(text, line) do { if (!strstr(text, line)) fail_msg("missing: %s\n--- in:\n%s", line, text); } while (0)
#define HASNT(text, line) do { if (strstr(text, line)) fail_msg("unexpected: %s\n--- in:\n%s", line, text); } while (0)

static void calls(void **state)
{
    fixture *f = *state;
    mmetrics_observe_rpc(f->m, "/manager.ManagerService/Heartbeat", 0, 50);
    mmetrics_observe_rpc(f->m, "/manager.ManagerService/Heartbeat", 0, 2000);
    mmetrics_observe_rpc(f->m, "/manager.ManagerService/Heartbeat", 3, 20000000);
    mmetrics_observe_rpc(f->m, "(unknown)", 12, 10);
    mmetrics_observe_rpc(f->m, "/x.Y/Z", 99 /* out of range: UNKNOWN */, -5);
    char *t = scrape(f);
    HAS(t, "ops_manager_rpc_calls_total{service=\"manager.ManagerService\",method=\"Heartbeat\",code=\"OK\"} 2\n");
    HAS(t, "ops_manager_rpc_calls_total{service=\"manager.ManagerService\",method=\"Heartbeat\",code=\"INVALID_ARGUMENT\"} 1\n");
    HAS(t, "ops_manager_rpc_calls_total{service=\"(unknown)\",method=\"(unknown)\",code=\"UNIMPLEMENTED\"} 1\n");
    HAS(t, "ops_manager_rpc_calls_total{service=\"x.Y\",method=\"Z\",code=\"UNKNOWN\"} 1\n");
    HAS(t, "ops_manager_rpc_duration_seconds_bucket{service=\"manager.ManagerService\",method=\"Heartbeat\",le=\"0.0001\"} 1\n");
    HAS(t, "ops_manager_rpc_duration_seconds_bucket{service=\"manager.ManagerService\",method=\"Heartbeat\",le=\"0.0025\"} 2\n");
    HAS(t, "ops_manager_rpc_duration_seconds_bucket{service=\"manager.ManagerService\",method=\"Heartbeat\",le=\"10\"} 2\n");
    HAS(t, "ops_manager_rpc_duration_seconds_bucket{service=\"manager.ManagerService\",method=\"Heartbeat\",le=\"+Inf\"} 3\n");
    HAS(t, "ops_manager_rpc_duration_seconds_sum{service=\"manager.ManagerService\",method=\"Heartbeat\"} 20.00205\n");
    HAS(t, "ops_manager_rpc_duration_seconds_count{service=\"manager.ManagerService\",method=\"Heartbeat\"} 3\n");
    HASNT(t, "code=\"DEADLINE_EXCEEDED\""); /* codes never seen are not shown */
    free(t);

    /* Past the cap, methods are counted together as "other". */
    char path[64];
    for (int i = 0; i < MMETRICS_MAX_METHODS + 10; i++) {
        snprintf(path, sizeof path, "/s.S/M%d", i);
        mmetrics_observe_rpc(f->m, path, 0, 1);
    }
    t = scrape(f);
    HAS(t, "method=\"M0\",code=\"OK\"} 1\n");
    HASNT(t, "method=\"M70\"");
    HAS(t, "ops_manager_rpc_calls_total{service=\"other\",method=\"other\",code=\"OK\"} 13\n");
    free(t);
}

static store_node_in node(const char *id)
{
    return (store_node_in){.node_id = id, .hostname = "host-1", .ip = "10.0.0.1", .daemon_version = "1.2"};
}

static void fleet(void **state)
{
    fixture *f = *state;
    store_node_in n1 = node("n1"), n2 = node("n2");
    assert_int_equal(store_upsert_node(f->s, &n1, f->now_ms / 1000, f->err, sizeof f->err), 0);
    assert_int_equal(store_upsert_node(f->s, &n2, f->now_ms / 1000, f->err, sizeof f->err), 0);
    liveness_register(f->live, "n1", f->now_ms);
    liveness_register(f->live, "n2", f->now_ms - 10000);
    liveness_sweep(f->live); /* n2 goes offline */

    store_metric_value v1[] = {{"usage_percent", 12.5}, {"cores", 4}};
    store_metric_value old[] = {{"usage_percent", 99}};
    store_metric_value mem[] = {{"used_percent", 40}};
    store_metric_in r1[] = {{"cpu", 200, v1, 2}, {"memory", 200, mem, 1}};
    store_metric_in r0[] = {{"cpu", 100, old, 1}}; /* a spooled report arriving late */
    mmetrics_host_report(f->m, "n1", r1, 2);
    mmetrics_host_report(f->m, "n1", r0, 1);

    store_agent_in a1[] = {{.agent_id = "web", .status = "running", .pid = 10}, {.agent_id = "db", .status = "stopped"}};
    mmetrics_agents_synced(f->m, "n1", a1, 2);
    store_agent_in a2[] = {{.agent_id = "web", .status = "starting", .pid = 0}, {.agent_id = "db", .status = "stopped"}};
    mmetrics_agents_synced(f->m, "n1", a2, 2);
    store_agent_in a3[] = {{.agent_id = "web", .status = "running", .pid = 11}, {.agent_id = "db", .status = "stopped"}};
    mmetrics_agents_synced(f->m, "n1", a3, 2);
    mmetrics_agents_synced(f->m, "n1", a3, 2); /* the same pid again is no restart */

    f->now_ms += 1500;
    char *t = scrape(f);
    HAS(t, "ops_nodes{status=\"online\"} 1\nops_nodes{status=\"offline\"} 1\n");
    HAS(t, "ops_node_info{node_id=\"n1\",hostname=\"host-1\",ip=\"10.0.0.1\",daemon_version=\"1.2\"} 1\n");
    HAS(t, "ops_node_up{node_id=\"n1\"} 1\nops_node_up{node_id=\"n2\"} 0\n");
    HAS(t, "ops_node_last_seen_age_seconds{node_id=\"n1\"} 1.5\n");
    HAS(t, "ops_node_metric{node_id=\"n1\",type=\"cpu\",key=\"usage_percent\"} 12.5\n");
    HAS(t, "ops_node_metric{node_id=\"n1\",type=\"cpu\",key=\"cores\"} 4\n");
    HAS(t, "ops_node_metric{node_id=\"n1\",type=\"memory\",key=\"used_percent\"} 40\n");
    HAS(t, "ops_node_metric_timestamp_seconds{node_id=\"n1\",type=\"cpu\"} 200\n");
    HAS(t, "ops_agent_up{node_id=\"n1\",agent_id=\"web\"} 1\n");
    HAS(t, "ops_agent_up{node_id=\"n1\",agent_id=\"db\"} 0\n");
    HAS(t, "ops_agent_restarts_total{node_id=\"n1\",agent_id=\"web\"} 1\n");
    HAS(t, "ops_agent_restarts_total{node_id=\"n1\",agent_id=\"db\"} 0\n");
    HAS(t, "ops_metrics_nodes_omitted 0\n");
    HAS(t, "ops_store_commits_total{driver=\"sqlite\"} ");
    HASNT(t, "ops_store_commits_total{driver=\"sqlite\"} 0\n");
    free(t);

    /* An agent no longer synced disappears; one more restart is counted. */
    store_agent_in a4[] = {{.agent_id = "web", .status = "running", .pid = 12}};
    mmetrics_agents_synced(f->m, "n1", a4, 1);
    t = scrape(f);
    HAS(t, "ops_agent_restarts_total{node_id=\"n1\",agent_id=\"web\"} 2\n");
    HASNT(t, "agent_id=\"db\"");
    free(t);

    /* A deleted node leaves /metrics, tables included. */
    int found = 0;
    assert_int_equal(store_delete_node(f->s, "n1", &found, f->err, sizeof f->err), 0);
    liveness_remove(f->live, "n1");
    t = scrape(f);
    HASNT(t, "node_id=\"n1\"");
    HAS(t, "ops_node_up{node_id=\"n2\"} 0\n");
    free(t);
    /* Reports for nodes beyond the per-node caps are ignored, not grown without bound. */
    store_metric_value many[MMETRICS_MAX_HOST_SERIES + 20];
    char keys[MMETRICS_MAX_HOST_SERIES + 20][16];
    for (int i = 0; i < MMETRICS_MAX_HOST_SERIES + 20; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        many[i] = (store_metric_value){keys[i], i};
    }
    store_metric_in rm[] = {{"disk", 300, many, MMETRICS_MAX_HOST_SERIES + 20}};
    mmetrics_host_report(f->m, "n2", rm, 1);
    t = scrape(f);
    HAS(t, "key=\"k0\"} 0\n");
    char last[64];
    snprintf(last, sizeof last, "key=\"k%d\"}", MMETRICS_MAX_HOST_SERIES);
    HASNT(t, last);
    free(t);
}

static void config_sections(void **state)
{
    (void)state;
    char err[512];
    mconfig *mc;
    assert_int_equal(mconfig_load_string("m.yaml", "", 0, &mc, err, sizeof err), 0);
    assert_int_equal(mc->prometheus.enabled, 1);
    assert_string_equal(mc->prometheus.listen, "127.0.0.1:9190");
    char *dump = mconfig_dump_yaml(mc);
    assert_non_null(strstr(dump, "prometheus:\n  enabled: true\n  listen: \"127.0.0.1:9190\"\n"));
    free(dump);
    mconfig_free(mc);
    const char *y = "prometheus: {enabled: false, listen: \"[::]:0\"}\n";
    assert_int_equal(mconfig_load_string("m.yaml", y, strlen(y), &mc, err, sizeof err), 0);
    assert_int_equal(mc->prometheus.enabled, 0);
    assert_string_equal(mc->prometheus.listen, "[::]:0");
    mconfig_free(mc);
    y = "prometheus: {listen: \"9190\"}\n";
    assert_int_equal(mconfig_load_string("m.yaml", y, strlen(y), &mc, err, sizeof err), -1);
    assert_non_null(strstr(err, "m.yaml: prometheus.listen"));
    y = "prometheus: {enabled: maybe}\n";
    assert_int_equal(mconfig_load_string("m.yaml", y, strlen(y), &mc, err, sizeof err), -1);
    assert_non_null(strstr(err, "prometheus.enabled"));

    dconfig *dc;
    assert_int_equal(dconfig_load_string("d.yaml", "", 0, &dc, err, sizeof err), 0);
    assert_int_equal(dc->prometheus.enabled, 1);
    assert_string_equal(dc->prometheus.listen, "127.0.0.1:9191");
    char *dd = NULL;
    assert_int_equal(dconfig_dump_yaml(dc, &dd), 0);
    assert_non_null(strstr(dd, "prometheus:\n  enabled: true\n  listen: \"127.0.0.1:9191\"\n"));
    dconfig *again;
    assert_int_equal(dconfig_load_string("dump", dd, strlen(dd), &again, err, sizeof err), 0);
    assert_string_equal(again->prometheus.listen, "127.0.0.1:9191");
    dconfig_free(again);
    free(dd);
    dconfig_free(dc);
    y = "prometheus:\n  listen: \"localhost:70000\"\n";
    assert_int_equal(dconfig_load_string("d.yaml", y, strlen(y), &dc, err, sizeof err), -1);
    assert_non_null(strstr(err, "d.yaml: prometheus.listen: "));
    y = "prometheus:\n  enabled: false\n";
    assert_int_equal(dconfig_load_string("d.yaml", y, strlen(y), &dc, err, sizeof err), 0);
    assert_int_equal(dc->prometheus.enabled, 0);
    dconfig_free(dc);
}

int main(void)
{
    log_open(LOGL_ERROR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(calls, setup, teardown),
        cmocka_unit_test_setup_teardown(fleet, setup, teardown),
        cmocka_unit_test(config_sections),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    log_close();
    return rc;
}
