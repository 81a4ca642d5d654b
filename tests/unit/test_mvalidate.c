/* mvalidate: each refusal of RegisterNode, Heartbeat, ReportMetrics and SyncAgentStates
 * requests (code, the message naming the field, whether it counts as over a limit), and the
 * edges that pass: exactly at every cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "manager/mvalidate.h"
#include "rpc/status.h"

#define NOW 1700000000
/* small caps; 8-byte strings are the longest allowed */
static const mservice_limits LIM = {.max_metrics = 2, .max_values = 2, .max_labels = 2, .max_string = 8, .max_agents = 2};
#define S8 "abcdefgh"
#define S9 "abcdefghi"

/* The refusal res holds: code, over_limit and the message. */
static void refused(const mval_result *r, int rc, int code, int over, const char *msg)
{
    assert_int_equal(rc, code);
    assert_int_equal(r->code, code);
    assert_int_equal(r->over_limit, over);
    assert_string_equal(r->msg, msg);
}

static void passed(const mval_result *r, int rc)
{
    assert_int_equal(rc, RPC_OK);
    assert_int_equal(r->code, RPC_OK);
    assert_string_equal(r->msg, "");
}

static void defaults(void **state)
{
    (void)state;
    mservice_limits l = {.max_values = 7};
    mval_limits_defaults(&l);
    assert_int_equal(l.max_metrics, 1000);
    assert_int_equal(l.max_values, 7); /* set ones are kept */
    assert_int_equal(l.max_labels, MSVC_MAX_LABELS);
    assert_int_equal(l.max_string, MSVC_MAX_LABEL_BYTES);
    assert_int_equal(l.max_agents, 1000);
}

static void utf8(void **state)
{
    (void)state;
    assert_true(mval_utf8(""));
    assert_true(mval_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
    assert_false(mval_utf8("\xff"));
    assert_false(mval_utf8("\xc3"));             /* truncated */
    assert_false(mval_utf8("\xc0\xaf"));         /* overlong */
    assert_false(mval_utf8("\xed\xa0\x80"));     /* surrogate */
    assert_false(mval_utf8("\xf4\x90\x80\x80")); /* beyond U+10FFFF */
}

static void node_id_and_heartbeat(void **state)
{
    (void)state;
    mval_result r;
    Manager__HeartbeatRequest hb = MANAGER__HEARTBEAT_REQUEST__INIT;
    refused(&r, mval_heartbeat(&hb, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "node_id is required");
    hb.node_id = S9;
    refused(&r, mval_heartbeat(&hb, &LIM, &r), RPC_INVALID_ARGUMENT, 1,
            "node_id is longer than 8 bytes (limits.max_string_bytes)");
    hb.node_id = "n\xff";
    refused(&r, mval_heartbeat(&hb, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "node_id is not valid UTF-8");
    hb.node_id = S8;
    passed(&r, mval_heartbeat(&hb, &LIM, &r));
    refused(&r, mval_node_id(NULL, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "node_id is required");
}

static void register_node(void **state)
{
    (void)state;
    mval_result r;
    Manager__RegisterNodeRequest q = MANAGER__REGISTER_NODE_REQUEST__INIT;
    Manager__RegisterNodeRequest__LabelsEntry l0 = MANAGER__REGISTER_NODE_REQUEST__LABELS_ENTRY__INIT,
                                              l1 = MANAGER__REGISTER_NODE_REQUEST__LABELS_ENTRY__INIT,
                                              l2 = MANAGER__REGISTER_NODE_REQUEST__LABELS_ENTRY__INIT;
    Manager__RegisterNodeRequest__LabelsEntry *labels[] = {&l0, &l1, &l2};
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "node_id is required");
    q.node_id = "n1";
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "hostname is required");
    q.hostname = "h";
    /* each optional string must be UTF-8, named in order */
    char **fields[] = {&q.hostname, &q.ip, &q.os, &q.arch, &q.daemon_version, &q.agent_version, &q.daemon_address};
    const char *names[] = {"hostname", "ip", "os", "arch", "daemon_version", "agent_version", "daemon_address"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *keep = *fields[i];
        *fields[i] = "x\xfe";
        char want[64];
        snprintf(want, sizeof want, "%s is not valid UTF-8", names[i]);
        refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, want);
        *fields[i] = keep;
    }
    q.labels = labels;
    l0.key = "env"; l0.value = S8;
    l1.key = S8; l1.value = "";
    l2.key = "x"; l2.value = "y";
    q.n_labels = 3;
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1, "labels: 3 labels, at most 2 allowed (limits.max_labels)");
    q.n_labels = 2; /* at the caps: 2 labels, 8-byte key and value, an empty value */
    passed(&r, mval_register_node(&q, &LIM, &r));
    l1.key = "";
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "labels: empty key");
    l1.key = S9;
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1,
            "labels[abcdefghi]: keys and values are at most 8 bytes (limits.max_string_bytes)");
    l1.key = "k"; l1.value = S9;
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1,
            "labels[k]: keys and values are at most 8 bytes (limits.max_string_bytes)");
    l1.key = "k\xff"; l1.value = "v";
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "labels: key or value is not valid UTF-8");
    l1.key = "k"; l1.value = "\xc3";
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "labels: key or value is not valid UTF-8");
    l1.key = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"; /* too long and invalid: the name is not echoed */
    refused(&r, mval_register_node(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1,
            "labels[?]: keys and values are at most 8 bytes (limits.max_string_bytes)");
}

static void report_metrics(void **state)
{
    (void)state;
    mval_result r;
    Manager__MetricData__ValuesEntry v[3] = {MANAGER__METRIC_DATA__VALUES_ENTRY__INIT, MANAGER__METRIC_DATA__VALUES_ENTRY__INIT,
                                             MANAGER__METRIC_DATA__VALUES_ENTRY__INIT};
    Manager__MetricData__ValuesEntry *vp[] = {&v[0], &v[1], &v[2]};
    v[0].key = S8; v[0].value = 1.5;
    v[1].key = "b"; v[1].value = -2;
    v[2].key = "c";
    Manager__MetricData d0 = MANAGER__METRIC_DATA__INIT, d1 = MANAGER__METRIC_DATA__INIT, d2 = MANAGER__METRIC_DATA__INIT;
    Manager__MetricData *dp[] = {&d0, &d1, &d2};
    d0.type = S8; d0.timestamp = NOW + MSVC_MAX_FUTURE_S; d0.values = vp; d0.n_values = 2;
    d1.type = "mem"; d1.timestamp = 1;
    d2.type = "x"; d2.timestamp = NOW;
    Manager__ReportMetricsRequest q = MANAGER__REPORT_METRICS_REQUEST__INIT;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "node_id is required");
    q.node_id = "n1";
    passed(&r, mval_report_metrics(&q, &LIM, NOW, &r)); /* an empty report is fine */
    q.metrics = dp;
    q.n_metrics = 3;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_RESOURCE_EXHAUSTED, 1,
            "metrics: 3 MetricData in one report, at most 2 (limits.max_metrics_per_report)");
    /* at every cap: 2 MetricData, 2 values, 8-byte type and key, the latest timestamp allowed */
    q.n_metrics = 2;
    passed(&r, mval_report_metrics(&q, &LIM, NOW, &r));
    d1.type = "";
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[1].type is required");
    d1.type = "mem";
    d0.n_values = 3;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_RESOURCE_EXHAUSTED, 1,
            "metrics[0].values: 3 values, at most 2 (limits.max_values_per_metric)");
    d0.n_values = 2;
    d1.type = S9;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 1,
            "metrics[1].type is longer than 8 bytes (limits.max_string_bytes)");
    d1.type = "m\xff";
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[1].type is not valid UTF-8");
    d1.type = "mem";
    d1.timestamp = 0;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[1].timestamp is required");
    d1.timestamp = -5;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[1].timestamp is required");
    d1.timestamp = 1;
    d0.timestamp = NOW + MSVC_MAX_FUTURE_S + 1;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0,
            "metrics[0].timestamp 1700086401 is more than 24h in the future");
    d0.timestamp = NOW;
    v[1].value = NAN;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[0].values[b] is not a finite number");
    v[1].value = -INFINITY;
    v[1].key = "\xff";
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[0].values[?] is not a finite number");
    v[1].value = 0;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[0].values has an empty or invalid key");
    v[1].key = "";
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 0, "metrics[0].values has an empty or invalid key");
    v[1].key = S9;
    refused(&r, mval_report_metrics(&q, &LIM, NOW, &r), RPC_INVALID_ARGUMENT, 1,
            "metrics[0].values: a key is longer than 8 bytes (limits.max_string_bytes)");
    v[1].key = "b";
    passed(&r, mval_report_metrics(&q, &LIM, NOW, &r));
}

static void sync_agents(void **state)
{
    (void)state;
    mval_result r;
    Proto__AgentState a0 = PROTO__AGENT_STATE__INIT, a1 = PROTO__AGENT_STATE__INIT, a2 = PROTO__AGENT_STATE__INIT;
    Proto__AgentState *ap[] = {&a0, &a1, &a2};
    a0.agent_id = S8; a0.status = S8; a0.type = S8; a0.version = S8;
    a1.agent_id = "b";
    a2.agent_id = "c";
    Proto__SyncAgentStatesRequest q = PROTO__SYNC_AGENT_STATES_REQUEST__INIT;
    q.node_id = S9;
    refused(&r, mval_sync_agents(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1, "node_id is longer than 8 bytes (limits.max_string_bytes)");
    q.node_id = "n1";
    passed(&r, mval_sync_agents(&q, &LIM, &r)); /* no agents: fine */
    q.states = ap;
    q.n_states = 3;
    refused(&r, mval_sync_agents(&q, &LIM, &r), RPC_RESOURCE_EXHAUSTED, 1,
            "states: 3 agents in one sync, at most 2 (limits.max_agents_per_sync)");
    q.n_states = 2; /* at the caps: 2 agents, 8-byte strings, empty optional ones */
    passed(&r, mval_sync_agents(&q, &LIM, &r));
    a1.agent_id = "";
    refused(&r, mval_sync_agents(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "states[1].agent_id is required");
    a1.agent_id = "b";
    char **fields[] = {&a1.agent_id, &a1.status, &a1.type, &a1.version};
    for (size_t i = 0; i < 4; i++) {
        char *keep = *fields[i];
        *fields[i] = "\xe2\x82";
        refused(&r, mval_sync_agents(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 0, "states[1] has a string that is not valid UTF-8");
        *fields[i] = S9;
        refused(&r, mval_sync_agents(&q, &LIM, &r), RPC_INVALID_ARGUMENT, 1,
                "states[1]: agent_id, status, type and version are at most 8 bytes (limits.max_string_bytes)");
        *fields[i] = keep;
    }
    passed(&r, mval_sync_agents(&q, &LIM, &r));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(utf8),
        cmocka_unit_test(node_id_and_heartbeat),
        cmocka_unit_test(register_node),
        cmocka_unit_test(report_metrics),
        cmocka_unit_test(sync_agents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
