/* cmd_agent: agents NODE, agent start|stop|restart|metrics. */
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ctl/chart.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))

static int is_flag(const char *a) { return a[0] == '-' && a[1] != 0; }

int cmd_agents(cmd_ctx *x, int argc, char **argv)
{
    const char *node = NULL;
    for (int i = 0; i < argc; i++) {
        if (is_flag(argv[i])) return cmd_usage_error(x, "agents", "unknown flag %s", argv[i]);
        if (node) return cmd_usage_error(x, "agents", "unexpected argument %s", argv[i]);
        node = argv[i];
    }
    if (!node) return cmd_usage_error(x, "agents", "missing NODE");
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__ListAgentsRequest req = OPS__ADMIN__V1__LIST_AGENTS_REQUEST__INIT;
    req.node_id = (char *)node;
    Ops__Admin__V1__ListAgentsResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "ListAgents", M(&req), &ops__admin__v1__list_agents_response__descriptor,
                       (ProtobufCMessage **)&resp, "list agents", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    } else {
        const char *hdr[] = {"AGENT", "TYPE", "VERSION", "STATUS", "PID", "RESTARTS", "STARTED", "LAST HEARTBEAT"};
        table *t = table_new(8, hdr);
        table_align_right(t, 4);
        table_align_right(t, 5);
        for (size_t i = 0; i < resp->n_agents; i++) {
            const Proto__AgentInfo *a = resp->agents[i];
            char pid[16], rs[16], st[32], hb[32];
            snprintf(pid, sizeof pid, "%d", a->pid);
            snprintf(rs, sizeof rs, "%d", a->restart_count);
            table_add(t, a->id, a->type, a->version, a->status, a->pid ? pid : "-", rs,
                      a->start_time > 0 ? table_fmt_ago(a->start_time, x->now, st, sizeof st) : "-",
                      table_fmt_ago(a->last_heartbeat, x->now, hb, sizeof hb));
        }
        table_print(t, x->out);
        if (!resp->n_agents) fprintf(x->err, "(node %s has no agents)\n", node);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

/* NODE AGENT positionals, plus --since for metrics. */
static int node_agent_args(cmd_ctx *x, const char *help, int argc, char **argv, const char **node,
                           const char **agent, const char **since)
{
    *node = *agent = NULL;
    for (int i = 0; i < argc; i++) {
        const char *v;
        int m = since ? cmd_flag(argc, argv, &i, "--since", &v) : 0;
        if (m < 0) return cmd_usage_error(x, help, "--since needs a duration, e.g. 1h");
        if (m > 0) *since = v;
        else if (is_flag(argv[i])) return cmd_usage_error(x, help, "unknown flag %s", argv[i]);
        else if (!*node) *node = argv[i];
        else if (!*agent) *agent = argv[i];
        else return cmd_usage_error(x, help, "unexpected argument %s", argv[i]);
    }
    if (!*node) return cmd_usage_error(x, help, "missing NODE and AGENT");
    if (!*agent) return cmd_usage_error(x, help, "missing AGENT");
    return 0;
}

static int operate(cmd_ctx *x, const char *op, int argc, char **argv)
{
    char help[32];
    snprintf(help, sizeof help, "agent %s", op);
    const char *node, *agent;
    if (node_agent_args(x, help, argc, argv, &node, &agent, NULL) != 0) return CTL_EXIT_USAGE;
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__OperateAgentRequest req = OPS__ADMIN__V1__OPERATE_AGENT_REQUEST__INIT;
    req.node_id = (char *)node;
    req.agent_id = (char *)agent;
    req.operation = (char *)op;
    Ops__Admin__V1__OperateAgentResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "OperateAgent", M(&req), &ops__admin__v1__operate_agent_response__descriptor,
                       (ProtobufCMessage **)&resp, "operate agents", "operator", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    int ok = resp->success;
    if (x->json) cmd_print_json(x, pbjson_from_message(M(resp)), 0);
    if (!ok)
        rc = cmd_fail(x, CTL_EXIT_FAILED, "%s of agent %s on node %s failed: %s", op, agent, node,
                      resp->error_message[0] ? resp->error_message : "the daemon gave no reason");
    else if (!x->json)
        fprintf(x->out, "%s agent %s on node %s%s\n",
                !strcmp(op, "start") ? "started" : !strcmp(op, "stop") ? "stopped" : "restarted", agent, node,
                !strcmp(resp->via, "stream") ? " (through its update stream)" : "");
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return rc;
}

enum { F_CPU, F_RSS, F_VMS, F_RD, F_WR, F_FILES, F_N };

static double field(const Proto__ResourceDataPoint *p, int f)
{
    switch (f) {
    case F_CPU: return p->cpu;
    case F_RSS: return (double)p->memory_rss;
    case F_VMS: return (double)p->memory_vms;
    case F_RD: return (double)p->disk_read_bytes;
    case F_WR: return (double)p->disk_write_bytes;
    default: return p->open_files;
    }
}

static const char *fmt_field(int f, double v, char *buf, size_t n)
{
    if (f == F_CPU) snprintf(buf, n, "%.1f%%", v);
    else if (f == F_FILES) table_fmt_num(v, buf, n);
    else table_fmt_size((uint64_t)(v < 0 ? 0 : v), buf, n);
    return buf;
}

static int agent_metrics(cmd_ctx *x, int argc, char **argv)
{
    const char *node, *agent, *since = NULL;
    if (node_agent_args(x, "agent metrics", argc, argv, &node, &agent, &since) != 0) return CTL_EXIT_USAGE;
    int64_t secs = 0;
    if (since && table_parse_since(since, &secs) != 0)
        return cmd_usage_error(x, "agent metrics", "--since %s: not a duration (e.g. 90s, 15m, 1h)", since);
    conn *c = cmd_conn(x);
    if (!c) return CTL_EXIT_CONN;
    Ops__Admin__V1__GetAgentMetricsRequest req = OPS__ADMIN__V1__GET_AGENT_METRICS_REQUEST__INIT;
    req.node_id = (char *)node;
    req.agent_id = (char *)agent;
    req.duration_seconds = secs;
    Ops__Admin__V1__GetAgentMetricsResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "GetAgentMetrics", M(&req), &ops__admin__v1__get_agent_metrics_response__descriptor,
                       (ProtobufCMessage **)&resp, "read agent metrics", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        return CTL_EXIT_OK;
    }
    size_t n = resp->n_data_points;
    if (!n) {
        fprintf(x->out, "agent %s on node %s: no samples\n", agent, node);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        return CTL_EXIT_OK;
    }
    char t0[64], t1[64];
    fprintf(x->out, "agent %s on node %s: %zu samples, %s .. %s\n", agent, node, n,
            table_fmt_time(resp->data_points[0]->timestamp, t0, sizeof t0),
            table_fmt_time(resp->data_points[n - 1]->timestamp, t1, sizeof t1));
    static const char *const names[F_N] = {"cpu", "memory_rss", "memory_vms", "disk_read", "disk_write", "open_files"};
    /* Leave room for the other columns (~55 cells). */
    int spark_w = chart_term_width() - 58;
    if (spark_w > 60) spark_w = 60;
    if (spark_w < 8) spark_w = 8;
    const char *hdr[] = {"MEASURE", "TREND", "MIN", "AVG", "MAX", "LATEST"};
    table *t = table_new(6, hdr);
    for (int k = 2; k < 6; k++) table_align_right(t, k);
    double *v = malloc(n * sizeof *v);
    if (!v) abort();
    for (int f = 0; f < F_N; f++) {
        double lo = 0, hi = 0, sum = 0;
        for (size_t i = 0; i < n; i++) {
            v[i] = field(resp->data_points[i], f);
            if (!i || v[i] < lo) lo = v[i];
            if (!i || v[i] > hi) hi = v[i];
            sum += v[i];
        }
        char spark[1024], a[32], b[32], c2[32], d[32];
        chart_sparkline(v, n, spark_w, spark, sizeof spark);
        table_add(t, names[f], spark, fmt_field(f, lo, a, sizeof a), fmt_field(f, sum / (double)n, b, sizeof b),
                  fmt_field(f, hi, c2, sizeof c2), fmt_field(f, v[n - 1], d, sizeof d));
    }
    free(v);
    table_print(t, x->out);
    table_free(t);
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

int cmd_agent(cmd_ctx *x, int argc, char **argv)
{
    if (argc < 1) return cmd_usage_error(x, "agent", "missing subcommand: start, stop, restart or metrics");
    const char *sub = argv[0];
    if (!strcmp(sub, "start") || !strcmp(sub, "stop") || !strcmp(sub, "restart"))
        return operate(x, sub, argc - 1, argv + 1);
    if (!strcmp(sub, "metrics")) return agent_metrics(x, argc - 1, argv + 1);
    return cmd_usage_error(x, "agent", "unknown agent subcommand %s", sub);
}
