/* cmd_metrics: metrics NODE: braille charts per key, or a summary table with sparklines. */
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "ctl/chart.h"
#include "ctl/cmd.h"
#include "ctl/table.h"
#include "rpc/pbjson.h"

#define M(x) ((ProtobufCMessage *)(x))
#define MAX_RANGE_S (30 * 86400)

const char *cmd_fmt_metric(const char *type, const char *key, double v, char *buf, size_t n)
{
    if (strstr(key, "percent")) {
        snprintf(buf, n, "%.1f%%", v);
    } else if (strstr(key, "bytes") ||
               ((!strcmp(type, "memory") || !strcmp(type, "disk")) && v >= 0 && !strstr(key, "count"))) {
        table_fmt_size((uint64_t)(v < 0 ? 0 : v), buf, n);
    } else {
        table_fmt_num(v, buf, n);
    }
    return buf;
}

static int is_flag(const char *a) { return a[0] == '-' && a[1] != 0; }

static int query(cmd_ctx *x, conn *c, const char *node, const char *type, char **keys, size_t nkeys, int64_t from,
                 int64_t to, int buckets, Ops__Admin__V1__QueryMetricsResponse **resp)
{
    Ops__Admin__V1__QueryMetricsRequest req = OPS__ADMIN__V1__QUERY_METRICS_REQUEST__INIT;
    req.node_id = (char *)node;
    req.type = (char *)type;
    req.from = from;
    req.to = to;
    req.buckets = buckets;
    req.n_keys = nkeys;
    req.keys = keys;
    char err[1024];
    int rc = conn_call(c, "QueryMetrics", M(&req), &ops__admin__v1__query_metrics_response__descriptor,
                       (ProtobufCMessage **)resp, "read metrics", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) cmd_fail(x, rc, "%s", err);
    return rc;
}

static int charts(cmd_ctx *x, conn *c, const char *node, const char *type, char **keys, size_t nkeys,
                  const char *since, int64_t secs, int height)
{
    int width = chart_term_width();
    int cols = chart_plot_columns(width);
    int64_t to = x->now, from = to - secs;
    Ops__Admin__V1__QueryMetricsResponse *resp = NULL;
    /* Two dot columns per cell: one bucket per dot column. */
    int rc = query(x, c, node, type, keys, nkeys, from, to, cols * 2, &resp);
    if (rc != CTL_EXIT_OK) return rc;
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        return CTL_EXIT_OK;
    }
    if (resp->from) from = resp->from;
    if (resp->to) to = resp->to;
    size_t shown = 0;
    for (size_t s = 0; s < resp->n_series; s++) {
        const Ops__Admin__V1__Series *se = resp->series[s];
        if (!se->n_points) continue;
        chart_point *p = malloc(se->n_points * sizeof *p);
        if (!p) abort();
        double lo = se->points[0]->value, hi = lo, sum = 0;
        for (size_t i = 0; i < se->n_points; i++) {
            p[i].t = se->points[i]->timestamp;
            p[i].v = se->points[i]->value;
            if (p[i].v < lo) lo = p[i].v;
            if (p[i].v > hi) hi = p[i].v;
            sum += p[i].v;
        }
        char a[32], b[32], d[32], l[32];
        fprintf(x->out, "%s%s %s.%s  last %s  min %s  avg %s  max %s  latest %s\n", shown ? "\n" : "", node, type,
                se->key, since, cmd_fmt_metric(type, se->key, lo, a, sizeof a),
                cmd_fmt_metric(type, se->key, sum / (double)se->n_points, b, sizeof b),
                cmd_fmt_metric(type, se->key, hi, d, sizeof d),
                cmd_fmt_metric(type, se->key, p[se->n_points - 1].v, l, sizeof l));
        chart_opts o = {.width = width, .height = height, .from = from, .to = to};
        char *text = chart_plot(p, se->n_points, &o);
        if (text) fputs(text, x->out);
        free(text);
        free(p);
        shown++;
    }
    if (!shown) fprintf(x->err, "no %s metrics for node %s in the last %s\n", type, node, since);
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return CTL_EXIT_OK;
}

static int summary(cmd_ctx *x, conn *c, const char *node, const char *type, int64_t secs)
{
    int64_t to = x->now, from = to - secs;
    Ops__Admin__V1__MetricsSummaryRequest req = OPS__ADMIN__V1__METRICS_SUMMARY_REQUEST__INIT;
    req.node_id = (char *)node;
    req.type = (char *)(type ? type : "");
    req.from = from;
    req.to = to;
    Ops__Admin__V1__MetricsSummaryResponse *resp = NULL;
    char err[1024];
    int rc = conn_call(c, "MetricsSummary", M(&req), &ops__admin__v1__metrics_summary_response__descriptor,
                       (ProtobufCMessage **)&resp, "read metrics", "viewer", err, sizeof err);
    if (rc != CTL_EXIT_OK) return cmd_fail(x, rc, "%s", err);
    if (x->json) {
        cmd_print_json(x, pbjson_from_message(M(resp)), 0);
        protobuf_c_message_free_unpacked(M(resp), NULL);
        return CTL_EXIT_OK;
    }
    int spark_w = chart_term_width() - 62;
    if (spark_w > 40) spark_w = 40;
    if (spark_w < 8) spark_w = 8;
    const char *hdr[] = {"TYPE", "KEY", "MIN", "AVG", "MAX", "LATEST", "AGE", "TREND"};
    table *t = table_new(8, hdr);
    for (int k = 2; k < 6; k++) table_align_right(t, k);
    /* Keys come sorted by (type, key): one downsampled query per type gives the trends. */
    Ops__Admin__V1__QueryMetricsResponse *q = NULL;
    for (size_t i = 0; i < resp->n_keys && rc == CTL_EXIT_OK; i++) {
        const Ops__Admin__V1__KeySummary *k = resp->keys[i];
        if (!q || strcmp(q->type, k->type) != 0) {
            if (q) protobuf_c_message_free_unpacked(M(q), NULL);
            q = NULL;
            rc = query(x, c, node, k->type, NULL, 0, from, to, spark_w, &q);
            if (rc != CTL_EXIT_OK) break;
        }
        char spark[512] = "";
        for (size_t s = 0; s < q->n_series; s++) {
            const Ops__Admin__V1__Series *se = q->series[s];
            if (strcmp(se->key, k->key) != 0 || !se->n_points) continue;
            double *v = malloc(se->n_points * sizeof *v);
            if (!v) abort();
            for (size_t j = 0; j < se->n_points; j++) v[j] = se->points[j]->value;
            chart_sparkline(v, se->n_points, spark_w, spark, sizeof spark);
            free(v);
        }
        char a[32], b[32], d[32], l[32], age[32];
        table_add(t, k->type, k->key, cmd_fmt_metric(k->type, k->key, k->min, a, sizeof a),
                  cmd_fmt_metric(k->type, k->key, k->avg, b, sizeof b), cmd_fmt_metric(k->type, k->key, k->max, d, sizeof d),
                  cmd_fmt_metric(k->type, k->key, k->latest, l, sizeof l),
                  table_fmt_ago(k->latest_timestamp, x->now, age, sizeof age), spark);
    }
    if (q) protobuf_c_message_free_unpacked(M(q), NULL);
    if (rc == CTL_EXIT_OK) {
        table_print(t, x->out);
        if (!resp->n_keys) fprintf(x->err, "no metrics for node %s in that range\n", node);
    }
    table_free(t);
    protobuf_c_message_free_unpacked(M(resp), NULL);
    return rc;
}

int cmd_metrics(cmd_ctx *x, int argc, char **argv)
{
    const char *node = NULL, *type = NULL, *since = "1h";
    int want_summary = 0, height = 8;
    char **keys = calloc((size_t)argc + 1, sizeof *keys);
    if (!keys) abort();
    size_t nk = 0;
    int rc = CTL_EXIT_OK;
    for (int i = 0; i < argc && rc == CTL_EXIT_OK; i++) {
        const char *v;
        int m;
        if (!strcmp(argv[i], "--summary")) want_summary = 1;
        else if ((m = cmd_flag(argc, argv, &i, "--type", &v)) != 0) {
            if (m < 0 || !*v) rc = cmd_usage_error(x, "metrics", "--type needs a type, e.g. cpu");
            else type = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--series", &v)) != 0) {
            if (m < 0 || !*v) rc = cmd_usage_error(x, "metrics", "--series needs a key, e.g. usage_percent");
            else keys[nk++] = (char *)v;
        } else if ((m = cmd_flag(argc, argv, &i, "--since", &v)) != 0) {
            if (m < 0) rc = cmd_usage_error(x, "metrics", "--since needs a duration, e.g. 24h");
            else since = v;
        } else if ((m = cmd_flag(argc, argv, &i, "--height", &v)) != 0) {
            height = m > 0 ? atoi(v) : 0;
            if (height < 2 || height > 100) rc = cmd_usage_error(x, "metrics", "--height takes 2..100 rows");
        } else if (is_flag(argv[i])) {
            rc = cmd_usage_error(x, "metrics", "unknown flag %s", argv[i]);
        } else if (node) {
            rc = cmd_usage_error(x, "metrics", "unexpected argument %s", argv[i]);
        } else {
            node = argv[i];
        }
    }
    int64_t secs = 0;
    if (rc == CTL_EXIT_OK && !node) rc = cmd_usage_error(x, "metrics", "missing NODE");
    if (rc == CTL_EXIT_OK && table_parse_since(since, &secs) != 0)
        rc = cmd_usage_error(x, "metrics", "--since %s: not a duration (e.g. 15m, 24h, 7d)", since);
    if (rc == CTL_EXIT_OK && secs > MAX_RANGE_S)
        rc = cmd_usage_error(x, "metrics", "--since %s: the manager keeps ranges of at most 30d", since);
    if (rc == CTL_EXIT_OK && want_summary && nk)
        rc = cmd_usage_error(x, "metrics", "--series does not apply to --summary");
    if (rc == CTL_EXIT_OK) {
        conn *c = cmd_conn(x);
        if (!c) rc = CTL_EXIT_CONN;
        else if (want_summary) rc = summary(x, c, node, type, secs);
        else rc = charts(x, c, node, type ? type : "cpu", keys, nk, since, secs, height);
    }
    free(keys);
    return rc;
}
