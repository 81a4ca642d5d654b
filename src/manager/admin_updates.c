/* admin_updates: publish, event queries and the stream fallback of OperateAgent. Store rows are
 * copied into the call's arena (the response is serialised after the handler returns). Like
 * admin.c, the handlers that change something keep the caller's error text in one buffer so that
 * the audit record says exactly what the caller was told. */
#include "manager/admin_updates.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "base/log.h"

#define SVC "/ops.admin.v1.AdminService/"

struct admin_upd {
    store *st;
    upd *u;
    const auth *auth;
    rpc_method methods[ADMIN_UPD_N_METHODS];
};

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

static int finish(rpc_ctx *c, const outcome *o)
{
    return o->code == RPC_OK ? RPC_OK : rpc_ctx_errorf(c, o->code, "%s", o->msg);
}

static int guard(admin_upd *h, rpc_ctx *c, auth_role need, auth_identity *who, outcome *o)
{
    o->code = auth_check(h->auth, rpc_ctx_metadata(c, "authorization"), need, who, o->msg, sizeof o->msg);
    if (o->code != RPC_OK) {
        char q[900];
        log_warn("admin.refused", "method=%s actor=%s code=%s peer=%s trace_id=%s reason=%s", rpc_ctx_method(c),
                 who->name[0] ? who->name : "-", rpc_code_name(o->code), rpc_ctx_peer(c), rpc_ctx_trace_id(c),
                 log_quote(q, sizeof q, o->msg));
    } else if (!h->u) {
        fail(o, RPC_UNAVAILABLE, "this manager does not serve pushed events");
    }
    return o->code;
}

static void audit(admin_upd *h, rpc_ctx *c, const auth_identity *who, const char *method, const char *target, int code,
                  const char *detail)
{
    store_audit_in r = {.at = (int64_t)time(NULL), .actor = who->name, .role = who->role ? auth_role_name(who->role) : "",
                        .method = method, .target = target, .result = rpc_code_name(code), .detail = detail,
                        .peer = rpc_ctx_peer(c)};
    char err[512];
    if (store_add_audit(h->st, &r, err, sizeof err) != 0) {
        char q[600];
        log_error("admin.audit_failed", "method=%s target=%s actor=%s result=%s error=%s trace_id=%s", method, target,
                  who->name[0] ? who->name : "-", r.result, log_quote(q, sizeof q, err), rpc_ctx_trace_id(c));
    }
}

static int utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static int str_cmp(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* ---- targets --------------------------------------------------------------------------------- */

/* The target's node ids (in the arena, sorted, unique) and a short description for the audit
 * record ("node-1,node-2", "labels env=prod", "all"). */
static int resolve_target(admin_upd *h, rpc_ctx *c, const Ops__Admin__V1__PublishTarget *t, const char ***ids, size_t *n,
                          char *desc, size_t desclen, outcome *o)
{
    *ids = NULL;
    *n = 0;
    snprintf(desc, desclen, "-");
    if (!t) return fail(o, RPC_INVALID_ARGUMENT, "target is required (node_ids, labels or all)");
    int kinds = (t->n_node_ids > 0) + (t->n_labels > 0) + (t->all != 0);
    if (kinds == 0) return fail(o, RPC_INVALID_ARGUMENT, "target is empty: give node_ids, labels or all");
    if (kinds > 1) return fail(o, RPC_INVALID_ARGUMENT, "target: give exactly one of node_ids, labels or all");
    char err[512];
    if (t->n_node_ids) {
        const char **v = rpc_ctx_alloc(c, t->n_node_ids * sizeof *v);
        for (size_t i = 0; i < t->n_node_ids; i++) {
            if (!t->node_ids[i][0]) return fail(o, RPC_INVALID_ARGUMENT, "target.node_ids[%zu] is empty", i);
            v[i] = t->node_ids[i];
        }
        qsort(v, t->n_node_ids, sizeof *v, str_cmp);
        size_t m = 0;
        for (size_t i = 0; i < t->n_node_ids; i++)
            if (!m || strcmp(v[m - 1], v[i])) v[m++] = v[i];
        size_t off = 0;
        desc[0] = 0;
        for (size_t i = 0; i < m; i++) {
            store_node nd;
            int rc = store_get_node(h->st, v[i], &nd, err, sizeof err);
            if (rc == STORE_NOT_FOUND) return fail(o, RPC_NOT_FOUND, "target.node_ids: node not found: %s", v[i]);
            if (rc != STORE_OK) return fail(o, RPC_INTERNAL, "node %s: %s", v[i], err);
            store_node_free(&nd);
            if (off < desclen) off += snprintf(desc + off, desclen - off, "%s%s", i ? "," : "", v[i]);
        }
        *ids = v;
        *n = m;
        return RPC_OK;
    }
    store_node_filter f = {.status = STORE_NODE_ANY, .ids_only = 1};
    if (t->n_labels) {
        store_kv *kv = rpc_ctx_alloc(c, t->n_labels * sizeof *kv);
        size_t off = snprintf(desc, desclen, "labels");
        for (size_t i = 0; i < t->n_labels; i++) {
            if (!t->labels[i]->key[0]) return fail(o, RPC_INVALID_ARGUMENT, "target.labels: empty key");
            if (!utf8_ok(t->labels[i]->key) || !utf8_ok(t->labels[i]->value))
                return fail(o, RPC_INVALID_ARGUMENT, "target.labels: not UTF-8");
            kv[i].key = t->labels[i]->key;
            kv[i].value = t->labels[i]->value;
            if (off < desclen) off += snprintf(desc + off, desclen - off, " %s=%s", kv[i].key, kv[i].value);
        }
        f.labels = kv;
        f.n_labels = t->n_labels;
    } else {
        snprintf(desc, desclen, "all");
    }
    store_node_list l;
    if (store_list_nodes(h->st, &f, &l, err, sizeof err) != 0) return fail(o, RPC_INTERNAL, "listing nodes: %s", err);
    if (!l.n) {
        store_node_list_free(&l);
        return fail(o, RPC_FAILED_PRECONDITION, "target %s matches no node", desc);
    }
    const char **v = rpc_ctx_alloc(c, l.n * sizeof *v);
    for (size_t i = 0; i < l.n; i++) v[i] = rpc_ctx_strdup(c, l.items[i].node_id);
    *ids = v;
    *n = l.n;
    store_node_list_free(&l);
    return RPC_OK;
}

static int publish(admin_upd *h, rpc_ctx *c, const upd_event_in *ev, const char **ids, size_t n,
                   Ops__Admin__V1__PublishResponse *resp, outcome *o)
{
    uint64_t *out = rpc_ctx_alloc(c, n * sizeof *out);
    char err[512];
    int rc = upd_publish(h->u, ev, ids, n, out, err, sizeof err);
    if (rc == UPD_INVALID) return fail(o, RPC_INVALID_ARGUMENT, "%s", err);
    if (rc != UPD_OK) return fail(o, RPC_UNAVAILABLE, "storing the event: %s", err);
    resp->events = rpc_ctx_alloc(c, n * sizeof *resp->events);
    Ops__Admin__V1__PublishedEvent *evs = rpc_ctx_alloc(c, n * sizeof *evs);
    for (size_t i = 0; i < n; i++) {
        ops__admin__v1__published_event__init(&evs[i]);
        evs[i].node_id = (char *)ids[i];
        evs[i].event_id = out[i];
        resp->events[i] = &evs[i];
    }
    resp->n_events = n;
    if (n == 1) snprintf(o->msg, sizeof o->msg, "event %" PRIu64, out[0]);
    else snprintf(o->msg, sizeof o->msg, "%zu events %" PRIu64 "..%" PRIu64, n, out[0], out[n - 1]);
    return RPC_OK;
}

/* ---- PublishConfig / PublishUpdate (operator, audited) ------------------------------------- */

static int do_publish_config(admin_upd *h, rpc_ctx *c, const Ops__Admin__V1__PublishConfigRequest *req,
                             Ops__Admin__V1__PublishResponse *resp, char *desc, size_t desclen, outcome *o)
{
    if (!req->agent_id[0]) return fail(o, RPC_INVALID_ARGUMENT, "agent_id is required");
    if (req->config.len > ADMIN_UPD_CONFIG_MAX)
        return fail(o, RPC_INVALID_ARGUMENT, "config is %zu bytes: at most %u", req->config.len, ADMIN_UPD_CONFIG_MAX);
    const char **ids;
    size_t n;
    if (resolve_target(h, c, req->target, &ids, &n, desc, desclen, o) != RPC_OK) return o->code;
    upd_event_in ev = {.kind = "config_change", .agent_id = req->agent_id, .payload = req->config.data,
                       .payload_len = req->config.len};
    return publish(h, c, &ev, ids, n, resp, o);
}

static int publish_config(rpc_ctx *c, const void *reqv, void *resp, void *user)
{
    admin_upd *h = user;
    const Ops__Admin__V1__PublishConfigRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    char desc[300] = "-", target[600], detail[1100];
    if (guard(h, c, AUTH_OPERATOR, &who, &o) == RPC_OK) do_publish_config(h, c, req, resp, desc, sizeof desc, &o);
    snprintf(target, sizeof target, "%s/%s", desc, req->agent_id);
    snprintf(detail, sizeof detail, "config_change %zu bytes: %s", req->config.len, o.msg);
    audit(h, c, &who, "PublishConfig", target, o.code, detail);
    log_info("admin.publish_config", "target=\"%s\" agent=%s bytes=%zu actor=%s code=%s trace_id=%s", desc, req->agent_id,
             req->config.len, who.name[0] ? who.name : "-", rpc_code_name(o.code), rpc_ctx_trace_id(c));
    return finish(c, &o);
}

static int do_publish_update(admin_upd *h, rpc_ctx *c, const Ops__Admin__V1__PublishUpdateRequest *req,
                             Ops__Admin__V1__PublishResponse *resp, char *desc, size_t desclen, outcome *o)
{
    /* The checks upd_publish makes too, here first so that nothing is resolved for a bad
     * request and each names the request's own field. */
    if (strcmp(req->component, "agent") && strcmp(req->component, "daemon"))
        return fail(o, RPC_INVALID_ARGUMENT, "component \"%.40s\": must be agent or daemon", req->component);
    if (!strcmp(req->component, "agent") && !req->agent_id[0])
        return fail(o, RPC_INVALID_ARGUMENT, "agent_id is required for component agent");
    if (!req->version[0]) return fail(o, RPC_INVALID_ARGUMENT, "version is required");
    size_t hl = strlen(req->hash_sha256);
    int hex = hl == 64;
    for (size_t i = 0; hex && i < hl; i++) hex = strchr("0123456789abcdefABCDEF", req->hash_sha256[i]) != NULL;
    if (!hex) return fail(o, RPC_INVALID_ARGUMENT, "hash_sha256 must be 64 hex digits (got %zu characters)", hl);
    if (req->signature.len != 64)
        return fail(o, RPC_INVALID_ARGUMENT, "signature must be 64 bytes of Ed25519 (got %zu)", req->signature.len);
    if (!req->download_url[0] && !req->package_data.len)
        return fail(o, RPC_INVALID_ARGUMENT, "no package source: give download_url or package_data");
    if (req->download_url[0] && req->package_data.len)
        return fail(o, RPC_INVALID_ARGUMENT, "give download_url or package_data, not both");
    if (req->package_data.len > ADMIN_UPD_PACKAGE_MAX)
        return fail(o, RPC_INVALID_ARGUMENT, "package_data is %zu bytes: at most %u (use download_url)", req->package_data.len,
                    ADMIN_UPD_PACKAGE_MAX);
    if (req->download_url[0] && strncmp(req->download_url, "http://", 7) && strncmp(req->download_url, "https://", 8) &&
        strncmp(req->download_url, "file://", 7))
        return fail(o, RPC_INVALID_ARGUMENT, "download_url must be http://, https:// or file://");
    const char **ids;
    size_t n;
    if (resolve_target(h, c, req->target, &ids, &n, desc, desclen, o) != RPC_OK) return o->code;
    upd_event_in ev = {.kind = "version_update", .component = req->component, .agent_id = req->agent_id,
                       .version = req->version, .download_url = req->download_url, .hash_sha256 = req->hash_sha256,
                       .signature = req->signature.data, .signature_len = req->signature.len,
                       .payload = req->package_data.data, .payload_len = req->package_data.len};
    return publish(h, c, &ev, ids, n, resp, o);
}

static int publish_update(rpc_ctx *c, const void *reqv, void *resp, void *user)
{
    admin_upd *h = user;
    const Ops__Admin__V1__PublishUpdateRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    char desc[300] = "-", target[600], detail[1100];
    if (guard(h, c, AUTH_OPERATOR, &who, &o) == RPC_OK) do_publish_update(h, c, req, resp, desc, sizeof desc, &o);
    if (req->agent_id[0]) snprintf(target, sizeof target, "%s/%s", desc, req->agent_id);
    else snprintf(target, sizeof target, "%s", desc);
    snprintf(detail, sizeof detail, "version_update %.20s %.60s sha256=%.64s: %s", req->component, req->version,
             req->hash_sha256, o.msg);
    audit(h, c, &who, "PublishUpdate", target, o.code, detail);
    log_info("admin.publish_update", "target=\"%s\" component=%s agent=%s version=%s actor=%s code=%s trace_id=%s", desc,
             req->component, req->agent_id, req->version, who.name[0] ? who.name : "-", rpc_code_name(o.code),
             rpc_ctx_trace_id(c));
    return finish(c, &o);
}

/* ---- ListUpdateEvents / GetUpdateEvent (viewer) ------------------------------------------- */

static Ops__Admin__V1__UpdateEventRecord *record(rpc_ctx *c, const store_update *s)
{
    Ops__Admin__V1__UpdateEventRecord *r = rpc_ctx_alloc(c, sizeof *r);
    ops__admin__v1__update_event_record__init(r);
    r->event_id = s->id;
    r->node_id = rpc_ctx_strdup(c, s->node_id);
    r->kind = rpc_ctx_strdup(c, s->kind);
    r->component = rpc_ctx_strdup(c, s->component);
    r->agent_id = rpc_ctx_strdup(c, s->agent_id);
    r->version = rpc_ctx_strdup(c, s->version);
    r->operation = rpc_ctx_strdup(c, s->operation);
    r->download_url = rpc_ctx_strdup(c, s->download_url);
    r->hash_sha256 = rpc_ctx_strdup(c, s->hash_sha256);
    r->payload_size = (int64_t)s->payload_len;
    r->created_at = s->created_at;
    r->outcome = rpc_ctx_strdup(c, s->outcome);
    r->message = rpc_ctx_strdup(c, s->message);
    r->result_at = s->result_at;
    return r;
}

static int list_events(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    admin_upd *h = user;
    const Ops__Admin__V1__ListUpdateEventsRequest *req = reqv;
    Ops__Admin__V1__ListUpdateEventsResponse *resp = respv;
    auth_identity who;
    outcome o = {0};
    if (guard(h, c, AUTH_VIEWER, &who, &o) != RPC_OK) return finish(c, &o);
    if (req->limit < 0 || req->limit > ADMIN_UPD_LIST_MAX)
        return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "limit %d: must be 0..%d", req->limit, ADMIN_UPD_LIST_MAX);
    size_t limit = req->limit ? (size_t)req->limit : 100;
    /* One more than asked tells whether there is a next page. */
    store_update_filter f = {.node_id = req->node_id, .pending_only = req->pending_only, .before_id = req->before_id,
                             .limit = limit + 1};
    store_update_list l;
    char err[512];
    if (store_list_updates(h->st, &f, &l, err, sizeof err) != 0)
        return rpc_ctx_errorf(c, RPC_INTERNAL, "listing events: %s", err);
    size_t n = l.n > limit ? limit : l.n;
    if (n) resp->events = rpc_ctx_alloc(c, n * sizeof *resp->events);
    for (size_t i = 0; i < n; i++) resp->events[i] = record(c, &l.items[i]);
    resp->n_events = n;
    resp->next_before_id = l.n > limit ? l.items[limit - 1].id : 0;
    store_update_list_free(&l);
    return RPC_OK;
}

static int get_event(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    admin_upd *h = user;
    const Ops__Admin__V1__GetUpdateEventRequest *req = reqv;
    Ops__Admin__V1__GetUpdateEventResponse *resp = respv;
    auth_identity who;
    outcome o = {0};
    if (guard(h, c, AUTH_VIEWER, &who, &o) != RPC_OK) return finish(c, &o);
    if (!req->event_id) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "event_id is required");
    store_update_filter f = {.event_id = req->event_id, .limit = 1};
    store_update_list l;
    char err[512];
    if (store_list_updates(h->st, &f, &l, err, sizeof err) != 0)
        return rpc_ctx_errorf(c, RPC_INTERNAL, "reading event: %s", err);
    if (!l.n) {
        store_update_list_free(&l);
        return rpc_ctx_errorf(c, RPC_NOT_FOUND, "event not found: %" PRIu64, req->event_id);
    }
    resp->event = record(c, &l.items[0]);
    store_update_list_free(&l);
    return RPC_OK;
}

/* ---- OperateAgent through the stream -------------------------------------------------------- */

int admin_upd_operate(admin_upd *h, rpc_ctx *c, const char *node_id, const char *agent_id, const char *op,
                      int *success, char *msg, size_t msglen)
{
    *success = 0;
    if (!h->u) {
        snprintf(msg, msglen, "node %s cannot be reached and this manager has no update streams", node_id);
        return RPC_UNAVAILABLE;
    }
    upd_event_in ev = {.kind = "command", .agent_id = agent_id, .operation = op};
    uint64_t id;
    char err[512];
    int rc = upd_publish(h->u, &ev, &node_id, 1, &id, err, sizeof err);
    if (rc == UPD_INVALID) {
        snprintf(msg, msglen, "%s", err);
        return RPC_INVALID_ARGUMENT;
    }
    if (rc != UPD_OK) {
        snprintf(msg, msglen, "node %s: storing the command event: %s", node_id, err);
        return RPC_UNAVAILABLE;
    }
    int streaming = upd_node_streaming(h->u, node_id);
    log_info("admin.operate_stream", "node=%s agent=%s operation=%s event_id=%" PRIu64 " streaming=%d trace_id=%s", node_id,
             agent_id, op, id, streaming, rpc_ctx_trace_id(c));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t deadline = rpc_ctx_deadline_ms(c);
    /* Answer a little before the caller's deadline so that the caller reads our status. */
    if (deadline != INT64_MAX) deadline -= 500;
    if (deadline > now + ADMIN_UPD_OPERATE_WAIT_MS) deadline = now + ADMIN_UPD_OPERATE_WAIT_MS;
    char outc[32], dmsg[1024];
    rc = upd_wait_result(h->u, node_id, id, deadline, c, outc, sizeof outc, dmsg, sizeof dmsg, err, sizeof err);
    if (rc == UPD_TIMEOUT) {
        snprintf(msg, msglen, "node %s agent %s: %s sent as event %" PRIu64 " on the node's update stream, no result yet%s",
                 node_id, agent_id, op, id,
                 streaming ? "" : " (the node has no stream open: its daemon applies it when it reconnects)");
        return RPC_DEADLINE_EXCEEDED;
    }
    if (rc != UPD_OK) {
        snprintf(msg, msglen, "node %s: waiting for event %" PRIu64 ": %s", node_id, id, err);
        return RPC_UNAVAILABLE;
    }
    /* The same kinds as the daemon's DaemonService.OperateAgent answers. */
    if (!strcmp(outc, "applied")) {
        *success = 1;
        snprintf(msg, msglen, "%s", dmsg);
        return RPC_OK;
    }
    snprintf(msg, msglen, "node %s agent %s: %s", node_id, agent_id, dmsg);
    if (!strncmp(dmsg, "unknown agent", 13)) return RPC_NOT_FOUND;
    if (!strcmp(outc, "refused")) return RPC_INVALID_ARGUMENT;
    return RPC_INTERNAL;
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

admin_upd *admin_upd_new(store *st, upd *u, const auth *a, char *err, size_t errlen)
{
    admin_upd *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->st = st;
    h->u = u;
    h->auth = a;
    /* Publishing waits for a commit: threads of their own. */
    const rpc_method t[ADMIN_UPD_N_METHODS] = {
        {SVC "PublishConfig", &ops__admin__v1__publish_config_request__descriptor, &ops__admin__v1__publish_response__descriptor, publish_config, NULL, h, RPC_METHOD_SLOW},
        {SVC "PublishUpdate", &ops__admin__v1__publish_update_request__descriptor, &ops__admin__v1__publish_response__descriptor, publish_update, NULL, h, RPC_METHOD_SLOW},
        {SVC "ListUpdateEvents", &ops__admin__v1__list_update_events_request__descriptor, &ops__admin__v1__list_update_events_response__descriptor, list_events, NULL, h, 0},
        {SVC "GetUpdateEvent", &ops__admin__v1__get_update_event_request__descriptor, &ops__admin__v1__get_update_event_response__descriptor, get_event, NULL, h, 0},
    };
    memcpy(h->methods, t, sizeof t);
    return h;
}

const rpc_method *admin_upd_methods(admin_upd *h, size_t *n)
{
    *n = ADMIN_UPD_N_METHODS;
    return h->methods;
}

void admin_upd_free(admin_upd *h) { free(h); }
