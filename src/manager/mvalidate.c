/* mvalidate: see mvalidate.h. The order of the checks is part of the contract (the first
 * failing one is reported), so it follows the fields' order in the request. */
#include "manager/mvalidate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rpc/status.h"

int mval_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) { p++; continue; }
        int n;
        unsigned cp;
        if ((*p & 0xE0) == 0xC0) { n = 1; cp = *p & 0x1F; }
        else if ((*p & 0xF0) == 0xE0) { n = 2; cp = *p & 0x0F; }
        else if ((*p & 0xF8) == 0xF0) { n = 3; cp = *p & 0x07; }
        else return 0;
        p++;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (*p & 0x3F);
        }
        /* overlong forms, surrogates and beyond U+10FFFF are not UTF-8 */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
    }
    return 1;
}

void mval_limits_defaults(mservice_limits *lim)
{
    if (!lim->max_metrics) lim->max_metrics = 1000;
    if (!lim->max_values) lim->max_values = 1000;
    if (!lim->max_labels) lim->max_labels = MSVC_MAX_LABELS;
    if (!lim->max_string) lim->max_string = MSVC_MAX_LABEL_BYTES;
    if (!lim->max_agents) lim->max_agents = 1000;
}

static int ok(mval_result *res)
{
    res->code = RPC_OK;
    res->over_limit = 0;
    res->msg[0] = 0;
    return RPC_OK;
}

__attribute__((format(printf, 4, 5)))
static int refuse(mval_result *res, int code, int over_limit, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->msg, sizeof res->msg, fmt, ap);
    va_end(ap);
    res->code = code;
    res->over_limit = over_limit;
    return code;
}

/* A string field that may be empty but must be UTF-8. */
#define NEED_UTF8(res, field, value) \
    do { if (!mval_utf8(value)) return refuse(res, RPC_INVALID_ARGUMENT, 0, "%s is not valid UTF-8", field); } while (0)

int mval_node_id(const char *id, const mservice_limits *lim, mval_result *res)
{
    if (!id || !id[0]) return refuse(res, RPC_INVALID_ARGUMENT, 0, "node_id is required");
    if (strlen(id) > lim->max_string)
        return refuse(res, RPC_INVALID_ARGUMENT, 1, "node_id is longer than %zu bytes (limits.max_string_bytes)", lim->max_string);
    if (!mval_utf8(id)) return refuse(res, RPC_INVALID_ARGUMENT, 0, "node_id is not valid UTF-8");
    return ok(res);
}

int mval_register_node(const Manager__RegisterNodeRequest *req, const mservice_limits *lim, mval_result *res)
{
    if (mval_node_id(req->node_id, lim, res) != RPC_OK) return res->code;
    if (!req->hostname[0]) return refuse(res, RPC_INVALID_ARGUMENT, 0, "hostname is required");
    NEED_UTF8(res, "hostname", req->hostname);
    NEED_UTF8(res, "ip", req->ip);
    NEED_UTF8(res, "os", req->os);
    NEED_UTF8(res, "arch", req->arch);
    NEED_UTF8(res, "daemon_version", req->daemon_version);
    NEED_UTF8(res, "agent_version", req->agent_version);
    NEED_UTF8(res, "daemon_address", req->daemon_address);
    if (req->n_labels > lim->max_labels)
        return refuse(res, RPC_INVALID_ARGUMENT, 1, "labels: %zu labels, at most %zu allowed (limits.max_labels)", req->n_labels,
                      lim->max_labels);
    for (size_t i = 0; i < req->n_labels; i++) {
        const char *k = req->labels[i]->key, *v = req->labels[i]->value;
        if (!k[0]) return refuse(res, RPC_INVALID_ARGUMENT, 0, "labels: empty key");
        if (strlen(k) > lim->max_string || strlen(v) > lim->max_string)
            return refuse(res, RPC_INVALID_ARGUMENT, 1, "labels[%.64s]: keys and values are at most %zu bytes (limits.max_string_bytes)",
                          mval_utf8(k) ? k : "?", lim->max_string);
        if (!mval_utf8(k) || !mval_utf8(v)) return refuse(res, RPC_INVALID_ARGUMENT, 0, "labels: key or value is not valid UTF-8");
    }
    return ok(res);
}

int mval_heartbeat(const Manager__HeartbeatRequest *req, const mservice_limits *lim, mval_result *res)
{
    return mval_node_id(req->node_id, lim, res);
}

int mval_report_metrics(const Manager__ReportMetricsRequest *req, const mservice_limits *lim, int64_t now_s,
                        mval_result *res)
{
    if (mval_node_id(req->node_id, lim, res) != RPC_OK) return res->code;
    if (req->n_metrics > lim->max_metrics)
        return refuse(res, RPC_RESOURCE_EXHAUSTED, 1, "metrics: %zu MetricData in one report, at most %zu (limits.max_metrics_per_report)",
                      req->n_metrics, lim->max_metrics);
    for (size_t i = 0; i < req->n_metrics; i++) {
        const Manager__MetricData *d = req->metrics[i];
        if (!d->type[0]) return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].type is required", i);
        if (d->n_values > lim->max_values)
            return refuse(res, RPC_RESOURCE_EXHAUSTED, 1, "metrics[%zu].values: %zu values, at most %zu (limits.max_values_per_metric)", i,
                          d->n_values, lim->max_values);
        if (strlen(d->type) > lim->max_string)
            return refuse(res, RPC_INVALID_ARGUMENT, 1, "metrics[%zu].type is longer than %zu bytes (limits.max_string_bytes)", i,
                          lim->max_string);
        if (!mval_utf8(d->type)) return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].type is not valid UTF-8", i);
        if (d->timestamp <= 0) return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].timestamp is required", i);
        if (d->timestamp > now_s + MSVC_MAX_FUTURE_S)
            return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].timestamp %lld is more than 24h in the future", i,
                          (long long)d->timestamp);
        for (size_t k = 0; k < d->n_values; k++) {
            const char *key = d->values[k]->key;
            if (!isfinite(d->values[k]->value))
                return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].values[%s] is not a finite number", i,
                              mval_utf8(key) ? key : "?");
            if (!key[0] || !mval_utf8(key))
                return refuse(res, RPC_INVALID_ARGUMENT, 0, "metrics[%zu].values has an empty or invalid key", i);
            if (strlen(key) > lim->max_string)
                return refuse(res, RPC_INVALID_ARGUMENT, 1, "metrics[%zu].values: a key is longer than %zu bytes (limits.max_string_bytes)", i,
                              lim->max_string);
        }
    }
    return ok(res);
}

int mval_sync_agents(const Proto__SyncAgentStatesRequest *req, const mservice_limits *lim, mval_result *res)
{
    if (mval_node_id(req->node_id, lim, res) != RPC_OK) return res->code;
    if (req->n_states > lim->max_agents)
        return refuse(res, RPC_RESOURCE_EXHAUSTED, 1, "states: %zu agents in one sync, at most %zu (limits.max_agents_per_sync)",
                      req->n_states, lim->max_agents);
    for (size_t i = 0; i < req->n_states; i++) {
        const Proto__AgentState *s = req->states[i];
        if (!s->agent_id[0]) return refuse(res, RPC_INVALID_ARGUMENT, 0, "states[%zu].agent_id is required", i);
        if (!mval_utf8(s->agent_id) || !mval_utf8(s->status) || !mval_utf8(s->type) || !mval_utf8(s->version))
            return refuse(res, RPC_INVALID_ARGUMENT, 0, "states[%zu] has a string that is not valid UTF-8", i);
        if (strlen(s->agent_id) > lim->max_string || strlen(s->status) > lim->max_string || strlen(s->type) > lim->max_string ||
            strlen(s->version) > lim->max_string)
            return refuse(res, RPC_INVALID_ARGUMENT, 1,
                          "states[%zu]: agent_id, status, type and version are at most %zu bytes (limits.max_string_bytes)", i,
                          lim->max_string);
    }
    return ok(res);
}
