/* admin: AdminService handlers. Store reads are copied into the call's arena (the response
 * is serialised after the handler returns); answers from daemons are re-decoded into the arena
 * for the same reason. Handlers that change something keep their error text in a local buffer
 * so that the audit record carries exactly what the caller was told. */
#include "manager/admin.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "base/log.h"
#include "manager/admin_updates.h"

#define N_METHODS 11
#define SVC "/ops.admin.v1.AdminService/"
#define TOKEN_PREFIX "n1."

struct admin {
    admin_opts o;
    rpc_method methods[N_METHODS + ADMIN_UPD_N_METHODS];
    size_t n_methods;
    admin_upd *au;
    rpc_server *srv;
};

/* An error being prepared: the code and the text the caller (and the audit record) gets. */
typedef struct outcome {
    int code;
    char msg[768];
} outcome;

__attribute__((format(printf, 3, 4)))
static int fail(outcome *o, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->msg, sizeof o->msg, fmt, ap);
    va_end(ap);
    return o->code = code;
}

static int64_t now_s(void) { return (int64_t)time(NULL); }

/* Authenticates and authorises; on refusal the status is set on c too. */
static int guard(admin *a, rpc_ctx *c, auth_role need, auth_identity *who, outcome *o)
{
    o->code = auth_check(a->o.auth, rpc_ctx_metadata(c, "authorization"), need, who, o->msg,
                         sizeof o->msg);
    if (o->code != RPC_OK) {
        char q[900];
        log_warn("admin.refused", "method=%s actor=%s code=%s peer=%s trace_id=%s reason=%s",
                 rpc_ctx_method(c), who->name[0] ? who->name : "-", rpc_code_name(o->code),
                 rpc_ctx_peer(c), rpc_ctx_trace_id(c), log_quote(q, sizeof q, o->msg));
    }
    return o->code;
}

static void audit(admin *a, rpc_ctx *c, const auth_identity *who, const char *method,
                  const char *target, int code, const char *detail)
{
    store_audit_in r = {.at = now_s(), .actor = who->name, .role = who->role ? auth_role_name(who->role) : "",
                        .method = method, .target = target, .result = rpc_code_name(code),
                        .detail = detail, .peer = rpc_ctx_peer(c)};
    char err[512];
    if (store_add_audit(a->o.store, &r, err, sizeof err) != 0) {
        char q[600];
        log_error("admin.audit_failed", "method=%s target=%s actor=%s result=%s error=%s trace_id=%s", method, target,
                  who->name[0] ? who->name : "-", r.result, log_quote(q, sizeof q, err), rpc_ctx_trace_id(c));
    }
}

/* ---- conversions --------------------------------------------------------------------------- */

static Ops__Admin__V1__Node *node_msg(rpc_ctx *c, const store_node *n)
{
    Ops__Admin__V1__Node *m = rpc_ctx_alloc(c, sizeof *m);
    ops__admin__v1__node__init(m);
    m->node_id = rpc_ctx_strdup(c, n->node_id);
    m->hostname = rpc_ctx_strdup(c, n->hostname);
    m->ip = rpc_ctx_strdup(c, n->ip);
    m->os = rpc_ctx_strdup(c, n->os);
    m->arch = rpc_ctx_strdup(c, n->arch);
    m->daemon_version = rpc_ctx_strdup(c, n->daemon_version);
    m->agent_version = rpc_ctx_strdup(c, n->agent_version);
    m->daemon_address = rpc_ctx_strdup(c, n->daemon_address);
    m->status = rpc_ctx_strdup(c, store_node_status_name(n->status));
    m->registered_at = n->registered_at;
    m->last_seen = n->last_seen;
    m->updated_at = n->updated_at;
    if (n->n_labels) {
        m->labels = rpc_ctx_alloc(c, n->n_labels * sizeof *m->labels);
        for (size_t i = 0; i < n->n_labels; i++) {
            Ops__Admin__V1__Node__LabelsEntry *e = rpc_ctx_alloc(c, sizeof *e);
            ops__admin__v1__node__labels_entry__init(e);
            e->key = rpc_ctx_strdup(c, n->labels[i].key);
            e->value = rpc_ctx_strdup(c, n->labels[i].value);
            m->labels[m->n_labels++] = e;
        }
    }
    return m;
}

static void *arena_alloc(void *data, size_t n) { return rpc_ctx_alloc(data, n ? n : 1); }
static void arena_free(void *data, void *p) { (void)data; (void)p; }

/* A copy of m (malloc'd, from the pool) in the call's arena, so m can be freed now. NULL only
 * when m cannot be re-encoded, which protobuf-c does not do for a message it decoded. */
static void *arena_copy(rpc_ctx *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = rpc_ctx_alloc(c, n ? n : 1);
    protobuf_c_message_pack(m, buf);
    ProtobufCAllocator al = {arena_alloc, arena_free, c};
    return protobuf_c_message_unpack(m->descriptor, &al, n, buf);
}

/* ---- checks shared by the handlers ----------------------------------------------------------- */

/* The node's row, or NOT_FOUND / INTERNAL in o. */
static int find_node(admin *a, const char *node_id, store_node *n, outcome *o)
{
    char err[512];
    int rc = store_get_node(a->o.store, node_id, n, err, sizeof err);
    if (rc == STORE_NOT_FOUND) return fail(o, RPC_NOT_FOUND, "node not found: %s", node_id);
    if (rc != STORE_OK) return fail(o, RPC_INTERNAL, "node %s: %s", node_id, err);
    return RPC_OK;
}

/* A node the pool can reach: known, and it told us its DaemonService address. */
static int reachable_node(admin *a, const char *node_id, outcome *o)
{
    store_node n;
    if (find_node(a, node_id, &n, o) != RPC_OK) return o->code;
    int has = n.daemon_address && n.daemon_address[0];
    store_node_free(&n);
    if (!has)
        return fail(o, RPC_FAILED_PRECONDITION,
                    "node %s registered no daemon_address: the manager cannot reach its daemon",
                    node_id);
    return RPC_OK;
}

/* The contract's mapping: the daemon's code stays what it is (NOT_FOUND for an unknown agent,
 * INVALID_ARGUMENT, DEADLINE_EXCEEDED, UNAVAILABLE when it cannot be reached, INTERNAL when
 * the operation failed), with the pool's message naming node and agent. */
static int from_pool(const pool_result *r, outcome *o)
{
    return fail(o, r->code, "%s", r->message);
}

#define REQUIRE(o, field, value) \
    do { if (!(value) || !(value)[0]) return fail(o, RPC_INVALID_ARGUMENT, "%s is required", field); } while (0)

static int finish(rpc_ctx *c, const outcome *o)
{
    return o->code == RPC_OK ? RPC_OK : rpc_ctx_errorf(c, o->code, "%s", o->msg);
}

/* from/to defaults and limits shared by QueryMetrics and MetricsSummary. */
static int time_range(int64_t *from, int64_t *to, outcome *o)
{
    if (*from < 0 || *to < 0) return fail(o, RPC_INVALID_ARGUMENT, "from and to must not be negative");
    if (!*to) *to = now_s();
    if (!*from) *from = *to - ADMIN_RANGE_DEFAULT_S;
    if (*from > *to)
        return fail(o, RPC_INVALID_ARGUMENT, "from (%" PRId64 ") is after to (%" PRId64 ")", *from, *to);
    if (*to - *from > ADMIN_RANGE_MAX_S)
        return fail(o, RPC_INVALID_ARGUMENT, "time range is %" PRId64 " s: at most 30 days (%lld s)", *to - *from,
                    ADMIN_RANGE_MAX_S);
    return RPC_OK;
}

/* proto3 strings must be UTF-8 and protobuf-c does not check; jansson does. */
static int utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* ---- ListNodes ------------------------------------------------------------------------------ */

static void token_encode(char *out, size_t n, const char *id)
{
    size_t o = snprintf(out, n, TOKEN_PREFIX);
    for (const unsigned char *p = (const unsigned char *)id; *p && o + 3 < n; p++) o += snprintf(out + o, n - o, "%02x", *p);
}

static int token_decode(rpc_ctx *c, const char *tok, char **out)
{
    size_t pl = strlen(TOKEN_PREFIX), len = strlen(tok);
    if (strncmp(tok, TOKEN_PREFIX, pl) != 0 || (len - pl) % 2 || len == pl) return -1;
    char *id = rpc_ctx_alloc(c, (len - pl) / 2 + 1);
    for (size_t i = 0; i < (len - pl) / 2; i++) {
        unsigned v;
        if (sscanf(tok + pl + 2 * i, "%2x", &v) != 1 || !v) return -1;
        id[i] = (char)v;
    }
    *out = id;
    return 0;
}

static int do_list_nodes(admin *a, rpc_ctx *c, const Ops__Admin__V1__ListNodesRequest *req,
                         Ops__Admin__V1__ListNodesResponse *resp, outcome *o)
{
    store_node_filter f = {.status = STORE_NODE_ANY};
    if (!strcmp(req->status, "online")) f.status = STORE_NODE_ONLINE;
    else if (!strcmp(req->status, "offline")) f.status = STORE_NODE_OFFLINE;
    else if (req->status[0])
        return fail(o, RPC_INVALID_ARGUMENT, "status \"%.64s\": must be online, offline or empty", req->status);
    if (req->page_size < 0) return fail(o, RPC_INVALID_ARGUMENT, "page_size must not be negative");
    size_t page = req->page_size ? (size_t)req->page_size : ADMIN_PAGE_DEFAULT;
    if (page > ADMIN_PAGE_MAX) page = ADMIN_PAGE_MAX;
    if (req->page_token[0] && token_decode(c, req->page_token, (char **)&f.after) < 0)
        return fail(o, RPC_INVALID_ARGUMENT, "page_token is not one this server gave out");
    store_kv *kv = rpc_ctx_alloc(c, (req->n_labels ? req->n_labels : 1) * sizeof *kv);
    for (size_t i = 0; i < req->n_labels; i++) {
        if (!req->labels[i]->key[0]) return fail(o, RPC_INVALID_ARGUMENT, "labels: empty key");
        if (!utf8_ok(req->labels[i]->key) || !utf8_ok(req->labels[i]->value))
            return fail(o, RPC_INVALID_ARGUMENT, "labels: a key or value is not valid UTF-8");
        kv[i] = (store_kv){req->labels[i]->key, req->labels[i]->value};
    }
    f.labels = kv;
    f.n_labels = req->n_labels;
    f.limit = page + 1; /* one more tells whether there is a next page */
    store_node_list l;
    char err[512];
    if (store_list_nodes(a->o.store, &f, &l, err, sizeof err) != 0) return fail(o, RPC_INTERNAL, "%s", err);
    size_t n = l.n > page ? page : l.n;
    resp->nodes = rpc_ctx_alloc(c, (n ? n : 1) * sizeof *resp->nodes);
    for (size_t i = 0; i < n; i++) resp->nodes[resp->n_nodes++] = node_msg(c, &l.items[i]);
    if (l.n > page) {
        char tok[600];
        token_encode(tok, sizeof tok, l.items[n - 1].node_id);
        resp->next_page_token = rpc_ctx_strdup(c, tok);
    }
    store_node_list_free(&l);
    return RPC_OK;
}

static int list_nodes(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_list_nodes(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- GetNode -------------------------------------------------------------------------------- */

/* The newest sample of each type: per key the latest value, keeping the keys of the newest
 * timestamp. Looks back an hour first, then the retention window, so the usual case reads
 * little. */
static void latest_samples(admin *a, rpc_ctx *c, const char *node_id, Ops__Admin__V1__GetNodeResponse *resp)
{
    int64_t now = now_s();
    char err[512];
    store_string_list types;
    if (store_list_metric_types(a->o.store, node_id, now - ADMIN_RANGE_MAX_S, now + 86400, &types, err, sizeof err) != 0) {
        log_warn("admin.latest_failed", "node=%s error=\"%s\"", node_id, err);
        return;
    }
    resp->latest_metrics = rpc_ctx_alloc(c, (types.n ? types.n : 1) * sizeof *resp->latest_metrics);
    for (size_t t = 0; t < types.n; t++) {
        store_stat_list s = {0};
        int rc = store_metric_stats(a->o.store, node_id, types.items[t], now - 3600, now + 86400, &s, err, sizeof err);
        if (rc == 0 && !s.n)
            rc = store_metric_stats(a->o.store, node_id, types.items[t], now - ADMIN_RANGE_MAX_S, now + 86400, &s, err,
                                    sizeof err);
        if (rc != 0 || !s.n) {
            if (rc != 0) log_warn("admin.latest_failed", "node=%s type=%s error=\"%s\"", node_id, types.items[t], err);
            continue;
        }
        int64_t newest = 0;
        for (size_t i = 0; i < s.n; i++)
            if (s.items[i].latest_ts > newest) newest = s.items[i].latest_ts;
        Ops__Admin__V1__MetricSample *m = rpc_ctx_alloc(c, sizeof *m);
        ops__admin__v1__metric_sample__init(m);
        m->type = rpc_ctx_strdup(c, types.items[t]);
        m->timestamp = newest;
        m->values = rpc_ctx_alloc(c, s.n * sizeof *m->values);
        for (size_t i = 0; i < s.n; i++) {
            if (s.items[i].latest_ts != newest) continue;
            Ops__Admin__V1__MetricSample__ValuesEntry *e = rpc_ctx_alloc(c, sizeof *e);
            ops__admin__v1__metric_sample__values_entry__init(e);
            e->key = rpc_ctx_strdup(c, s.items[i].key);
            e->value = s.items[i].latest;
            m->values[m->n_values++] = e;
        }
        resp->latest_metrics[resp->n_latest_metrics++] = m;
        store_stat_list_free(&s);
    }
    store_string_list_free(&types);
}

static int do_get_node(admin *a, rpc_ctx *c, const Ops__Admin__V1__GetNodeRequest *req,
                       Ops__Admin__V1__GetNodeResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    store_node n;
    if (find_node(a, req->node_id, &n, o) != RPC_OK) return o->code;
    resp->node = node_msg(c, &n);
    store_node_free(&n);
    store_agent_list al;
    char err[512];
    if (store_list_agents(a->o.store, req->node_id, 1, &al, err, sizeof err) != 0)
        return fail(o, RPC_INTERNAL, "node %s: %s", req->node_id, err);
    resp->agents = rpc_ctx_alloc(c, (al.n ? al.n : 1) * sizeof *resp->agents);
    for (size_t i = 0; i < al.n; i++) {
        Ops__Admin__V1__AgentRecord *r = rpc_ctx_alloc(c, sizeof *r);
        ops__admin__v1__agent_record__init(r);
        r->agent_id = rpc_ctx_strdup(c, al.items[i].agent_id);
        r->type = rpc_ctx_strdup(c, al.items[i].type);
        r->version = rpc_ctx_strdup(c, al.items[i].version);
        r->status = rpc_ctx_strdup(c, al.items[i].status);
        r->pid = al.items[i].pid;
        r->last_heartbeat = al.items[i].last_heartbeat;
        r->updated_at = al.items[i].updated_at;
        resp->agents[resp->n_agents++] = r;
    }
    store_agent_list_free(&al);
    latest_samples(a, c, req->node_id, resp);
    return RPC_OK;
}

static int get_node(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_get_node(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- DeleteNode (admin, audited) -------------------------------------------------------------- */

static int do_delete_node(admin *a, rpc_ctx *c, const Ops__Admin__V1__DeleteNodeRequest *req,
                          Ops__Admin__V1__DeleteNodeResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    int found = 0;
    char err[512];
    if (store_delete_node(a->o.store, req->node_id, &found, err, sizeof err) != 0)
        return fail(o, RPC_INTERNAL, "delete node %s: %s", req->node_id, err);
    if (!found) return fail(o, RPC_NOT_FOUND, "node not found: %s", req->node_id);
    if (a->o.live) liveness_remove(a->o.live, req->node_id);
    if (a->o.pool) pool_forget(a->o.pool, req->node_id);
    evhub_publish(a->o.hub, "node.deleted", req->node_id, "", "deleted", "", "deleted through AdminService");
    resp->deleted = 1;
    snprintf(o->msg, sizeof o->msg, "deleted");
    log_info("node.deleted", "node=%s trace_id=%s", req->node_id, rpc_ctx_trace_id(c));
    return RPC_OK;
}

static int delete_node(rpc_ctx *c, const void *reqv, void *resp, void *user)
{
    admin *a = user;
    const Ops__Admin__V1__DeleteNodeRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_ADMIN, &who, &o) == RPC_OK) do_delete_node(a, c, req, resp, &o);
    audit(a, c, &who, "DeleteNode", req->node_id, o.code, o.msg);
    return finish(c, &o);
}

/* ---- through the pool -------------------------------------------------------------------------- */

static int do_list_agents(admin *a, rpc_ctx *c, const Ops__Admin__V1__ListAgentsRequest *req,
                          Ops__Admin__V1__ListAgentsResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    if (reachable_node(a, req->node_id, o) != RPC_OK) return o->code;
    Proto__ListAgentsResponse *r = NULL;
    pool_result pr;
    if (pool_list_agents(a->o.pool, req->node_id, rpc_ctx_trace_id(c), &r, &pr) != RPC_OK) return from_pool(&pr, o);
    Proto__ListAgentsResponse *copy = arena_copy(c, &r->base);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (!copy) return fail(o, RPC_INTERNAL, "node %s: cannot copy the daemon's answer", req->node_id);
    resp->node_id = rpc_ctx_strdup(c, req->node_id);
    resp->agents = copy->agents;
    resp->n_agents = copy->n_agents;
    return RPC_OK;
}

static int list_agents(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_list_agents(a, c, req, resp, &o);
    return finish(c, &o);
}

static int do_agent_metrics(admin *a, rpc_ctx *c, const Ops__Admin__V1__GetAgentMetricsRequest *req,
                            Ops__Admin__V1__GetAgentMetricsResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    REQUIRE(o, "agent_id", req->agent_id);
    if (req->duration_seconds < 0) return fail(o, RPC_INVALID_ARGUMENT, "duration_seconds must not be negative");
    if (reachable_node(a, req->node_id, o) != RPC_OK) return o->code;
    Proto__AgentMetricsResponse *r = NULL;
    pool_result pr;
    if (pool_agent_metrics(a->o.pool, req->node_id, req->agent_id, req->duration_seconds, rpc_ctx_trace_id(c), &r, &pr) !=
        RPC_OK)
        return from_pool(&pr, o);
    Proto__AgentMetricsResponse *copy = arena_copy(c, &r->base);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (!copy) return fail(o, RPC_INTERNAL, "node %s: cannot copy the daemon's answer", req->node_id);
    resp->node_id = rpc_ctx_strdup(c, req->node_id);
    resp->agent_id = rpc_ctx_strdup(c, req->agent_id);
    resp->data_points = copy->data_points;
    resp->n_data_points = copy->n_data_points;
    return RPC_OK;
}

static int agent_metrics(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_agent_metrics(a, c, req, resp, &o);
    return finish(c, &o);
}

static int do_daemon_config(admin *a, rpc_ctx *c, const Ops__Admin__V1__GetDaemonConfigRequest *req,
                            Ops__Admin__V1__GetDaemonConfigResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    const char *type = req->config_type[0] ? req->config_type : "daemon";
    if (strcmp(type, "daemon") && strcmp(type, "agent"))
        return fail(o, RPC_INVALID_ARGUMENT, "config_type \"%.64s\": must be daemon, agent or empty", req->config_type);
    if (!strcmp(type, "agent")) REQUIRE(o, "agent_id (with config_type agent)", req->agent_id);
    if (reachable_node(a, req->node_id, o) != RPC_OK) return o->code;
    Proto__ConfigResponse *r = NULL;
    pool_result pr;
    if (pool_get_config(a->o.pool, req->node_id, type, req->agent_id, rpc_ctx_trace_id(c), &r, &pr) != RPC_OK)
        return from_pool(&pr, o);
    int ok = r->success;
    if (ok) {
        uint8_t *d = rpc_ctx_alloc(c, r->config_data.len ? r->config_data.len : 1);
        if (r->config_data.len) memcpy(d, r->config_data.data, r->config_data.len);
        resp->config_data.data = d;
        resp->config_data.len = r->config_data.len;
        resp->node_id = rpc_ctx_strdup(c, req->node_id);
    } else {
        fail(o, RPC_INTERNAL, "GetConfig: node %s: %s", req->node_id, r->message);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return o->code;
}

static int daemon_config(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_daemon_config(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- OperateAgent (operator, audited) ------------------------------------------------------------ */

static int do_operate(admin *a, rpc_ctx *c, const Ops__Admin__V1__OperateAgentRequest *req,
                      Ops__Admin__V1__OperateAgentResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    REQUIRE(o, "agent_id", req->agent_id);
    if (strcmp(req->operation, "start") && strcmp(req->operation, "stop") && strcmp(req->operation, "restart"))
        return fail(o, RPC_INVALID_ARGUMENT, "operation \"%.64s\": must be start, stop or restart", req->operation);
    if (reachable_node(a, req->node_id, o) != RPC_OK && (o->code != RPC_FAILED_PRECONDITION || !a->o.upd))
        return o->code;
    Proto__AgentOperationResponse *r = NULL;
    pool_result pr = {.code = RPC_UNAVAILABLE};
    if (o->code != RPC_OK ||
        pool_operate_agent(a->o.pool, req->node_id, req->agent_id, req->operation, rpc_ctx_trace_id(c), &r, &pr) != RPC_OK) {
        if (pr.code != RPC_UNAVAILABLE || !a->o.upd) return from_pool(&pr, o);
        /* Stream-only node, or a daemon we cannot dial (NAT, firewall): through its stream. */
        int ok;
        o->code = admin_upd_operate(a->au, c, req->node_id, req->agent_id, req->operation, &ok, o->msg, sizeof o->msg);
        if (o->code != RPC_OK) return o->code;
        resp->success = ok;
        resp->via = rpc_ctx_strdup(c, "stream");
        snprintf(o->msg, sizeof o->msg, "%s (via stream)", req->operation);
        return RPC_OK;
    }
    resp->success = r->success;
    resp->via = rpc_ctx_strdup(c, "pool");
    if (!r->success) {
        /* The contract's daemons answer failures with a status; a success=false answer is
         * passed on as it came, and audited as a failure. */
        resp->error_message = rpc_ctx_sprintf(c, "%s", r->error_message);
        snprintf(o->msg, sizeof o->msg, "%s: daemon answered success=false: %s", req->operation, r->error_message);
    } else {
        snprintf(o->msg, sizeof o->msg, "%s", req->operation);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return RPC_OK;
}

static int operate(rpc_ctx *c, const void *reqv, void *resp, void *user)
{
    admin *a = user;
    const Ops__Admin__V1__OperateAgentRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_OPERATOR, &who, &o) == RPC_OK) do_operate(a, c, req, resp, &o);
    char target[600], detail[900];
    snprintf(target, sizeof target, "%s/%s", req->node_id, req->agent_id);
    if (o.code == RPC_OK || !strncmp(o.msg, req->operation, strlen(req->operation)))
        snprintf(detail, sizeof detail, "%s", o.msg);
    else
        snprintf(detail, sizeof detail, "%s: %s", req->operation[0] ? req->operation : "(no operation)", o.msg);
    audit(a, c, &who, "OperateAgent", target, o.code, detail);
    log_info("admin.operate", "node=%s agent=%s operation=%s actor=%s code=%s trace_id=%s", req->node_id, req->agent_id,
             req->operation, who.name[0] ? who.name : "-", rpc_code_name(o.code), rpc_ctx_trace_id(c));
    return finish(c, &o);
}

/* ---- QueryMetrics ------------------------------------------------------------------------------ */

static int str_cmp(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

static int wanted_key(const Ops__Admin__V1__QueryMetricsRequest *req, const char *key)
{
    if (!req->n_keys) return 1;
    for (size_t i = 0; i < req->n_keys; i++)
        if (!strcmp(req->keys[i], key)) return 1;
    return 0;
}

static int do_query(admin *a, rpc_ctx *c, const Ops__Admin__V1__QueryMetricsRequest *req,
                    Ops__Admin__V1__QueryMetricsResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    REQUIRE(o, "type", req->type);
    if (req->buckets < 0 || req->buckets > ADMIN_BUCKETS_MAX)
        return fail(o, RPC_INVALID_ARGUMENT, "buckets %d: must be 0 (raw points) to %d", req->buckets, ADMIN_BUCKETS_MAX);
    int64_t from = req->from, to = req->to;
    if (time_range(&from, &to, o) != RPC_OK) return o->code;
    store_node n;
    if (find_node(a, req->node_id, &n, o) != RPC_OK) return o->code;
    store_node_free(&n);
    store_point_list pl;
    char err[512];
    size_t max = req->buckets ? ADMIN_READ_POINTS_MAX : ADMIN_RAW_POINTS_MAX;
    if (store_query_metrics(a->o.store, req->node_id, req->type, from, to, max + 1, &pl, err, sizeof err) != 0)
        return fail(o, RPC_INTERNAL, "node %s: %s", req->node_id, err);
    /* Refused rather than cut: a downsampled answer over a truncated read would look complete. */
    if (pl.n > max) {
        store_point_list_free(&pl);
        return fail(o, RPC_OUT_OF_RANGE, "more than %zu points in [%" PRId64 ", %" PRId64 "]: narrow the range%s", max, from, to,
                    req->buckets ? "" : " or ask for buckets");
    }
    resp->node_id = rpc_ctx_strdup(c, req->node_id);
    resp->type = rpc_ctx_strdup(c, req->type);
    resp->from = from;
    resp->to = to;
    /* Distinct keys, sorted: each point then finds its series by binary search. */
    char **keys = rpc_ctx_alloc(c, (pl.n ? pl.n : 1) * sizeof *keys);
    size_t nk = 0;
    for (size_t i = 0; i < pl.n; i++)
        if (wanted_key(req, pl.items[i].key)) keys[nk++] = pl.items[i].key;
    qsort(keys, nk, sizeof *keys, str_cmp);
    size_t u = 0;
    for (size_t i = 0; i < nk; i++)
        if (!u || strcmp(keys[u - 1], keys[i])) keys[u++] = keys[i];
    nk = u;
    size_t *count = rpc_ctx_alloc(c, (nk ? nk : 1) * sizeof *count);
    for (size_t i = 0; i < pl.n; i++) {
        char **k = bsearch(&pl.items[i].key, keys, nk, sizeof *keys, str_cmp);
        if (k) count[k - keys]++;
    }
    int64_t width = 1;
    size_t nb = 0;
    if (req->buckets) {
        nb = (size_t)req->buckets;
        width = (to - from + 1 + (int64_t)nb - 1) / (int64_t)nb;
        if (width < 1) width = 1;
    }
    resp->series = rpc_ctx_alloc(c, (nk ? nk : 1) * sizeof *resp->series);
    for (size_t k = 0; k < nk; k++) {
        Ops__Admin__V1__Series *s = rpc_ctx_alloc(c, sizeof *s);
        ops__admin__v1__series__init(s);
        s->key = rpc_ctx_strdup(c, keys[k]);
        size_t cap = nb ? (nb < count[k] ? nb : count[k]) : count[k];
        s->points = rpc_ctx_alloc(c, (cap ? cap : 1) * sizeof *s->points);
        resp->series[resp->n_series++] = s;
    }
    /* Points arrive by time, so each series' current point (or bucket) is its last one. */
    int64_t *bucket_of = rpc_ctx_alloc(c, (nk ? nk : 1) * sizeof *bucket_of);
    for (size_t k = 0; k < nk; k++) bucket_of[k] = -1;
    for (size_t i = 0; i < pl.n; i++) {
        char **kp = bsearch(&pl.items[i].key, keys, nk, sizeof *keys, str_cmp);
        if (!kp) continue;
        size_t k = (size_t)(kp - keys);
        Ops__Admin__V1__Series *s = resp->series[k];
        double v = pl.items[i].value;
        int64_t b = nb ? (pl.items[i].ts - from) / width : -2;
        if (nb && b == bucket_of[k]) {
            Ops__Admin__V1__Point *p = s->points[s->n_points - 1];
            p->value += v; /* a sum until the end */
            if (v < p->min) p->min = v;
            if (v > p->max) p->max = v;
            p->count++;
            continue;
        }
        Ops__Admin__V1__Point *p = rpc_ctx_alloc(c, sizeof *p);
        ops__admin__v1__point__init(p);
        p->timestamp = nb ? from + b * width : pl.items[i].ts;
        p->value = p->min = p->max = v;
        p->count = 1;
        s->points[s->n_points++] = p;
        bucket_of[k] = b;
    }
    if (nb)
        for (size_t k = 0; k < nk; k++)
            for (size_t i = 0; i < resp->series[k]->n_points; i++) {
                Ops__Admin__V1__Point *p = resp->series[k]->points[i];
                p->value /= (double)p->count;
            }
    store_point_list_free(&pl);
    return RPC_OK;
}

static int query_metrics(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_query(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- MetricsSummary ----------------------------------------------------------------------------- */

static int do_summary(admin *a, rpc_ctx *c, const Ops__Admin__V1__MetricsSummaryRequest *req,
                      Ops__Admin__V1__MetricsSummaryResponse *resp, outcome *o)
{
    REQUIRE(o, "node_id", req->node_id);
    int64_t from = req->from, to = req->to;
    if (time_range(&from, &to, o) != RPC_OK) return o->code;
    store_node n;
    if (find_node(a, req->node_id, &n, o) != RPC_OK) return o->code;
    store_node_free(&n);
    char err[512];
    store_string_list types = {0};
    if (req->type[0]) {
        types.items = malloc(sizeof *types.items);
        if (types.items && (types.items[0] = strdup(req->type))) types.n = 1;
        if (!types.n) {
            store_string_list_free(&types);
            return fail(o, RPC_RESOURCE_EXHAUSTED, "out of memory");
        }
    } else if (store_list_metric_types(a->o.store, req->node_id, from, to, &types, err, sizeof err) != 0) {
        return fail(o, RPC_INTERNAL, "node %s: %s", req->node_id, err);
    }
    resp->node_id = rpc_ctx_strdup(c, req->node_id);
    resp->from = from;
    resp->to = to;
    size_t cap = 0;
    for (size_t t = 0; t < types.n; t++) {
        store_stat_list s;
        if (store_metric_stats(a->o.store, req->node_id, types.items[t], from, to, &s, err, sizeof err) != 0) {
            fail(o, RPC_INTERNAL, "node %s type %s: %s", req->node_id, types.items[t], err);
            break;
        }
        if (resp->n_keys + s.n > cap) {
            size_t ncap = (resp->n_keys + s.n) * 2;
            Ops__Admin__V1__KeySummary **nk = rpc_ctx_alloc(c, ncap * sizeof *nk);
            if (resp->n_keys) memcpy(nk, resp->keys, resp->n_keys * sizeof *nk);
            resp->keys = nk;
            cap = ncap;
        }
        for (size_t i = 0; i < s.n; i++) {
            Ops__Admin__V1__KeySummary *k = rpc_ctx_alloc(c, sizeof *k);
            ops__admin__v1__key_summary__init(k);
            k->type = rpc_ctx_strdup(c, types.items[t]);
            k->key = rpc_ctx_strdup(c, s.items[i].key);
            k->min = s.items[i].min;
            k->avg = s.items[i].avg;
            k->max = s.items[i].max;
            k->latest = s.items[i].latest;
            k->latest_timestamp = s.items[i].latest_ts;
            k->count = s.items[i].count;
            resp->keys[resp->n_keys++] = k;
        }
        store_stat_list_free(&s);
    }
    store_string_list_free(&types);
    return o->code;
}

static int metrics_summary(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) == RPC_OK) do_summary(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- ListAudit (admin) ------------------------------------------------------------------------- */

static int do_list_audit(admin *a, rpc_ctx *c, const Ops__Admin__V1__ListAuditRequest *req,
                         Ops__Admin__V1__ListAuditResponse *resp, outcome *o)
{
    if (req->limit < 0) return fail(o, RPC_INVALID_ARGUMENT, "limit must not be negative");
    if (req->since < 0) return fail(o, RPC_INVALID_ARGUMENT, "since must not be negative");
    store_audit_filter f = {.actor = req->actor, .target = req->target, .since = req->since,
                            .limit = req->limit ? (size_t)req->limit : 100};
    if (f.limit > ADMIN_AUDIT_MAX) f.limit = ADMIN_AUDIT_MAX;
    store_audit_list l;
    char err[512];
    if (store_list_audit(a->o.store, &f, &l, err, sizeof err) != 0) return fail(o, RPC_INTERNAL, "%s", err);
    resp->records = rpc_ctx_alloc(c, (l.n ? l.n : 1) * sizeof *resp->records);
    for (size_t i = 0; i < l.n; i++) {
        const store_audit *s = &l.items[i];
        Ops__Admin__V1__AuditRecord *r = rpc_ctx_alloc(c, sizeof *r);
        ops__admin__v1__audit_record__init(r);
        r->id = s->id;
        r->timestamp = s->at;
        r->actor = rpc_ctx_strdup(c, s->actor);
        r->role = rpc_ctx_strdup(c, s->role);
        r->method = rpc_ctx_strdup(c, s->method);
        r->target = rpc_ctx_strdup(c, s->target);
        r->result = rpc_ctx_strdup(c, s->result);
        r->detail = rpc_ctx_strdup(c, s->detail);
        r->peer = rpc_ctx_strdup(c, s->peer);
        resp->records[resp->n_records++] = r;
    }
    store_audit_list_free(&l);
    return RPC_OK;
}

static int list_audit(rpc_ctx *c, const void *req, void *resp, void *user)
{
    admin *a = user;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_ADMIN, &who, &o) == RPC_OK) do_list_audit(a, c, req, resp, &o);
    return finish(c, &o);
}

/* ---- WatchEvents (viewer, server stream) ---------------------------------------------------------- */

#define WATCH_POLL_MS 250

static int watch_events(rpc_ctx *c, const void *reqv, void *user)
{
    admin *a = user;
    const Ops__Admin__V1__WatchEventsRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    if (guard(a, c, AUTH_VIEWER, &who, &o) != RPC_OK) return finish(c, &o);
    if (!a->o.hub) return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "events are not available on this manager");
    char err[256];
    evhub_sub *sub = evhub_subscribe(a->o.hub, (const char *const *)req->kinds, req->n_kinds, req->node_id, err, sizeof err);
    if (!sub) return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "%s", err);
    log_info("admin.watch_started", "actor=%s node=%s kinds=%zu peer=%s trace_id=%s", who.name, req->node_id[0] ? req->node_id : "-",
             req->n_kinds, rpc_ctx_peer(c), rpc_ctx_trace_id(c));
    int code = RPC_OK;
    size_t sent = 0;
    /* The wait is short so that a client's cancel or a server stop is noticed quickly. */
    for (;;) {
        evhub_event *e = NULL;
        evhub_wait w = evhub_next(sub, WATCH_POLL_MS, &e);
        if (w == EVHUB_EVENT) {
            Ops__Admin__V1__Event m = OPS__ADMIN__V1__EVENT__INIT;
            m.id = e->id;
            m.timestamp = e->ts;
            m.kind = (char *)e->kind;
            m.node_id = (char *)e->node_id;
            m.agent_id = (char *)e->agent_id;
            m.status = (char *)e->status;
            m.previous_status = (char *)e->previous_status;
            m.detail = (char *)e->detail;
            int rc = rpc_ctx_send(c, &m.base);
            evhub_event_release(e);
            if (rc != 0) break; /* the client went away, or the server is stopping */
            sent++;
            continue;
        }
        if (w == EVHUB_DROPPED) {
            code = rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "watcher fell behind: events were dropped; watch again");
            break;
        }
        if (w == EVHUB_CLOSED) {
            code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "server shutting down");
            break;
        }
        if (rpc_ctx_cancelled(c)) break;
    }
    evhub_unsubscribe(sub);
    log_info("admin.watch_ended", "actor=%s sent=%zu code=%s trace_id=%s", who.name, sent, rpc_code_name(code), rpc_ctx_trace_id(c));
    return code;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

admin *admin_new(const admin_opts *o, char *err, size_t errlen)
{
    if (!o->store || !o->pool || !o->auth) {
        snprintf(err, errlen, "admin: store, pool and auth are required");
        return NULL;
    }
    admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->o = *o;
    /* OperateAgent may wait for a graceful stop (up to 90 s): a thread of its own. So do
     * DeleteNode and the pool calls, which wait on a commit or on a daemon. */
    const rpc_method t[N_METHODS] = {
        {SVC "ListNodes", &ops__admin__v1__list_nodes_request__descriptor, &ops__admin__v1__list_nodes_response__descriptor, list_nodes, NULL, a, 0},
        {SVC "GetNode", &ops__admin__v1__get_node_request__descriptor, &ops__admin__v1__get_node_response__descriptor, get_node, NULL, a, 0},
        {SVC "ListAgents", &ops__admin__v1__list_agents_request__descriptor, &ops__admin__v1__list_agents_response__descriptor, list_agents, NULL, a, RPC_METHOD_SLOW},
        {SVC "GetAgentMetrics", &ops__admin__v1__get_agent_metrics_request__descriptor, &ops__admin__v1__get_agent_metrics_response__descriptor, agent_metrics, NULL, a, RPC_METHOD_SLOW},
        {SVC "QueryMetrics", &ops__admin__v1__query_metrics_request__descriptor, &ops__admin__v1__query_metrics_response__descriptor, query_metrics, NULL, a, RPC_METHOD_SLOW},
        {SVC "MetricsSummary", &ops__admin__v1__metrics_summary_request__descriptor, &ops__admin__v1__metrics_summary_response__descriptor, metrics_summary, NULL, a, RPC_METHOD_SLOW},
        {SVC "GetDaemonConfig", &ops__admin__v1__get_daemon_config_request__descriptor, &ops__admin__v1__get_daemon_config_response__descriptor, daemon_config, NULL, a, RPC_METHOD_SLOW},
        {SVC "WatchEvents", &ops__admin__v1__watch_events_request__descriptor, &ops__admin__v1__event__descriptor, NULL, watch_events, a, 0},
        {SVC "OperateAgent", &ops__admin__v1__operate_agent_request__descriptor, &ops__admin__v1__operate_agent_response__descriptor, operate, NULL, a, RPC_METHOD_SLOW},
        {SVC "DeleteNode", &ops__admin__v1__delete_node_request__descriptor, &ops__admin__v1__delete_node_response__descriptor, delete_node, NULL, a, RPC_METHOD_SLOW},
        {SVC "ListAudit", &ops__admin__v1__list_audit_request__descriptor, &ops__admin__v1__list_audit_response__descriptor, list_audit, NULL, a, 0},
    };
    memcpy(a->methods, t, sizeof t);
    a->n_methods = N_METHODS;
    if (!(a->au = admin_upd_new(o->store, o->upd, o->auth, err, errlen))) {
        free(a);
        return NULL;
    }
    if (o->upd) {
        size_t n;
        const rpc_method *m = admin_upd_methods(a->au, &n);
        memcpy(a->methods + a->n_methods, m, n * sizeof *m);
        a->n_methods += n;
    }
    return a;
}

const rpc_method *admin_methods(admin *a, size_t *n)
{
    *n = a->n_methods;
    return a->methods;
}

int admin_listen(admin *a, const rpc_server_opts *opts, char *err, size_t errlen)
{
    rpc_server *s = rpc_server_new(opts, err, errlen);
    if (!s) return -1;
    if (rpc_server_add_methods(s, a->methods, a->n_methods, err, errlen) != 0 ||
        (a->o.reflection && rpc_reflection_register(s, a->o.reflection, err, errlen) != 0) ||
        (a->o.n_more_methods && rpc_server_add_methods(s, a->o.more_methods, a->o.n_more_methods, err, errlen) != 0) ||
        rpc_server_start(s, err, errlen) != 0) {
        rpc_server_free(s);
        return -1;
    }
    rpc_server_set_health(s, "ops.admin.v1.AdminService", 1);
    a->srv = s;
    return 0;
}

int admin_port(const admin *a) { return a && a->srv ? rpc_server_port(a->srv, 0) : 0; }

void admin_stop(admin *a, int64_t grace_ms)
{
    if (!a || !a->srv) return;
    rpc_server_shutdown(a->srv, grace_ms);
    /* Freed here, not in admin_free: the reflection index it borrows may go right after. */
    rpc_server_free(a->srv);
    a->srv = NULL;
}

void admin_free(admin *a)
{
    if (!a) return;
    if (a->srv) rpc_server_free(a->srv);
    admin_upd_free(a->au);
    free(a);
}
