/* mservice: ManagerService and SyncAgentStates. Malformed requests get INVALID_ARGUMENT naming
 * the field; business failures (store errors, an unknown node) come back as success=false with
 * the reason, as the original does, and nothing of a rejected request is stored. */
#include "manager/mservice.h"

#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "manager.pb-c.h"
#include "manager/mvalidate.h"

#define NOT_REGISTERED "node not registered"

struct mservice {
    rpc_server *srv;
    store *st;
    liveness *live;
    int auto_register;
    int64_t hb_s, metrics_s;
    mmetrics *metrics;
    evhub *hub;
    nodeauth *auth;
    abuse *abuse;
    mservice_limits lim;
    int reg_async, sync_async; /* answered from the store's commit, on no thread of their own */
    rpc_method methods[12];
};

static int64_t now_ms(mservice *m) { return liveness_now(m->live); }

/* The database server is unreachable: a status the client retries on, not a business "no". */
static int store_unavailable(rpc_ctx *c, const char *err)
{
    log_warn("store.call_unavailable", "method=%s error=\"%s\" trace_id=%s", rpc_ctx_method(c), err, rpc_ctx_trace_id(c));
    return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "%s", err);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A request over a limit: the status names the field and the limit; the log gets one line per
 * peer and kind per interval (abuse.h), not one per call. */
__attribute__((format(printf, 4, 5)))
static int over_limit(mservice *m, rpc_ctx *c, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t held = 0;
    char kind[160]; /* one line per peer, method and code per interval */
    snprintf(kind, sizeof kind, "%s %s", rpc_ctx_method(c), rpc_code_name(code));
    rpc_ctx_quiet_log(c);
    if (!m->abuse || abuse_note(m->abuse, rpc_ctx_peer(c), kind, mono_ms(), &held)) {
        char q[700];
        log_warn("request.refused", "method=%s peer=%s code=%s held=%llu reason=%s trace_id=%s", rpc_ctx_method(c), rpc_ctx_peer(c),
                 rpc_code_name(code), (unsigned long long)held, log_quote(q, sizeof q, msg), rpc_ctx_trace_id(c));
    }
    return rpc_ctx_errorf(c, code, "%s", msg);
}

/* A refusal of mvalidate's as the call's status; one over a cap goes through over_limit. */
static int refuse(mservice *m, rpc_ctx *c, const mval_result *r)
{
    if (r->over_limit) return over_limit(m, c, r->code, "%s", r->msg);
    return rpc_ctx_errorf(c, r->code, "%s", r->msg);
}

static int check_node_id(mservice *m, rpc_ctx *c, const char *id)
{
    mval_result r;
    return mval_node_id(id, &m->lim, &r) == RPC_OK ? RPC_OK : refuse(m, c, &r);
}

#define CHECK(call) do { int rc_ = (call); if (rc_ != RPC_OK) return rc_; } while (0)

/* What finishing a RegisterNode call needs (lives in the call's arena). */
struct reg_done {
    mservice *m;
    rpc_ctx *c;
    const Manager__RegisterNodeRequest *req;
    Manager__RegisterNodeResponse *resp;
    const char *secret; /* token mode: stored once the node is */
};

/* The rest of RegisterNode once the store has the node (rc 0) or failed: the call's code. */
static int reg_finish(struct reg_done *rd, int rc, const char *err)
{
    mservice *m = rd->m;
    rpc_ctx *c = rd->c;
    const Manager__RegisterNodeRequest *req = rd->req;
    Manager__RegisterNodeResponse *resp = rd->resp;
    if (rc == STORE_UNAVAILABLE) return store_unavailable(c, err);
    if (rc != 0) {
        log_error("node.register_failed", "node=%s error=\"%s\" trace_id=%s", req->node_id, err, rpc_ctx_trace_id(c));
        resp->success = 0;
        resp->message = rpc_ctx_sprintf(c, "cannot store the node: %s", err);
        return RPC_OK;
    }
    char serr[512];
    if (rd->secret && nodeauth_commit(m->auth, req->node_id, rd->secret, serr, sizeof serr) != 0) {
        log_error("node.register_failed", "node=%s error=\"%s\" trace_id=%s", req->node_id, serr, rpc_ctx_trace_id(c));
        return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "cannot store the node secret: %s", serr);
    }
    liveness_register(m->live, req->node_id, now_ms(m));
    evhub_publish(m->hub, "node.registered", req->node_id, "", "online", "", req->daemon_address);
    log_info("node.registered", "node=%s hostname=%s ip=%s address=%s labels=%zu trace_id=%s", req->node_id, req->hostname, req->ip,
             req->daemon_address, req->n_labels, rpc_ctx_trace_id(c));
    resp->success = 1;
    resp->message = rpc_ctx_strdup(c, "registered");
    resp->heartbeat_interval_seconds = m->hb_s;
    resp->metrics_interval_seconds = m->metrics_s;
    if (rd->secret) resp->node_secret = (char *)rd->secret;
    return RPC_OK;
}

static void reg_committed(void *user, int rc, const char *err, size_t unused)
{
    (void)unused;
    struct reg_done *rd = user;
    rpc_ctx_complete(rd->c, reg_finish(rd, rc, err));
}

static int register_node(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    mservice *m = user;
    const Manager__RegisterNodeRequest *req = reqv;
    Manager__RegisterNodeResponse *resp = respv;
    /* before anything that costs: the enrollment check reaches the store */
    if (m->abuse && !abuse_allow_register(m->abuse, rpc_ctx_peer(c), mono_ms()))
        return over_limit(m, c, RPC_RESOURCE_EXHAUSTED, "too many RegisterNode calls from this address (limits.register_per_minute)");
    mval_result vr;
    if (mval_register_node(req, &m->lim, &vr) != RPC_OK) return refuse(m, c, &vr);
    store_kv *kv = rpc_ctx_alloc(c, (req->n_labels ? req->n_labels : 1) * sizeof *kv);
    for (size_t i = 0; i < req->n_labels; i++) kv[i] = (store_kv){req->labels[i]->key, req->labels[i]->value};
    const char *secret = NULL;
    CHECK(nodeauth_register(m->auth, c, req->node_id, &secret));
    store_node_in n = {.node_id = req->node_id, .hostname = req->hostname, .ip = req->ip, .os = req->os, .arch = req->arch,
                       .labels = kv, .n_labels = req->n_labels, .daemon_version = req->daemon_version,
                       .agent_version = req->agent_version, .daemon_address = req->daemon_address};
    struct reg_done *rd = rpc_ctx_alloc(c, sizeof *rd);
    *rd = (struct reg_done){m, c, req, resp, secret};
    int64_t now_s = now_ms(m) / 1000;
    if (!m->reg_async) {
        /* On a thread of its own (RPC_METHOD_SLOW): in token mode the secret is written after
         * the node, and that write blocks; a store with no asynchronous path blocks anyway. */
        char err[512];
        int src = store_upsert_node(m->st, &n, now_s, err, sizeof err);
        return reg_finish(rd, src, err);
    }
    /* Answered from the store's writer once the node is committed: c may be gone on return. */
    store_upsert_node_async(m->st, &n, now_s, reg_committed, rd);
    return RPC_PENDING;
}

static int heartbeat(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    mservice *m = user;
    const Manager__HeartbeatRequest *req = reqv;
    Manager__HeartbeatResponse *resp = respv;
    CHECK(check_node_id(m, c, req->node_id));
    CHECK(nodeauth_check(m->auth, c, req->node_id));
    int64_t now = now_ms(m);
    if (liveness_heartbeat(m->live, req->node_id, now)) {
        resp->success = 1;
        resp->message = rpc_ctx_strdup(c, "ok");
        return RPC_OK;
    }
    if (!m->auto_register) {
        resp->success = 0;
        resp->message = rpc_ctx_strdup(c, NOT_REGISTERED);
        return RPC_OK;
    }
    /* As the original does: an unknown node that heartbeats gets a placeholder row (never
     * with node_auth on: auto_register is off then). */
    char err[512];
    int created = 0;
    int src = store_upsert_placeholder(m->st, req->node_id, now / 1000, &created, err, sizeof err);
    if (src == STORE_UNAVAILABLE) return store_unavailable(c, err);
    if (src != 0) {
        resp->success = 0;
        resp->message = rpc_ctx_sprintf(c, "cannot store the node: %s", err);
        return RPC_OK;
    }
    liveness_register(m->live, req->node_id, now);
    if (created) log_info("node.placeholder", "node=%s trace_id=%s msg=\"unknown node heartbeated; placeholder created\"", req->node_id, rpc_ctx_trace_id(c));
    resp->success = 1;
    /* Our daemons answer this by registering, so the placeholder gets its real fields back
     * (after a manager lost its database, say); other daemons just see success. */
    resp->message = rpc_ctx_strdup(c, MSVC_AUTO_REGISTERED);
    return RPC_OK;
}

/* What the commit callback needs to answer a ReportMetrics call (lives in the call's arena). */
struct report_done {
    rpc_ctx *c;
    Manager__ReportMetricsResponse *resp;
    const char *node_id;
    size_t values;
};

static void report_committed(void *user, int rc, const char *err, size_t inserted)
{
    struct report_done *rd = user;
    rpc_ctx *c = rd->c;
    if (rc == STORE_UNAVAILABLE) {
        rpc_ctx_complete(c, store_unavailable(c, err));
        return;
    }
    if (rc != 0) {
        log_error("metrics.store_failed", "node=%s values=%zu error=\"%s\" trace_id=%s", rd->node_id, rd->values, err,
                  rpc_ctx_trace_id(c));
        rd->resp->success = 0;
        rd->resp->message = rpc_ctx_sprintf(c, "cannot store the metrics: %s", err);
    } else {
        log_debug("metrics.stored", "node=%s values=%zu new=%zu trace_id=%s", rd->node_id, rd->values, inserted, rpc_ctx_trace_id(c));
        rd->resp->success = 1;
        rd->resp->message = rpc_ctx_sprintf(c, "stored %zu values", inserted);
    }
    rpc_ctx_complete(c, RPC_OK);
}

static int report_metrics(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    mservice *m = user;
    const Manager__ReportMetricsRequest *req = reqv;
    Manager__ReportMetricsResponse *resp = respv;
    CHECK(check_node_id(m, c, req->node_id));
    CHECK(nodeauth_check(m->auth, c, req->node_id));
    mval_result vr;
    if (mval_report_metrics(req, &m->lim, now_ms(m) / 1000, &vr) != RPC_OK) return refuse(m, c, &vr);
    size_t nv = 0;
    for (size_t i = 0; i < req->n_metrics; i++) nv += req->metrics[i]->n_values;
    if (!liveness_get(m->live, req->node_id, NULL, NULL)) {
        resp->success = 0;
        resp->message = rpc_ctx_strdup(c, NOT_REGISTERED);
        return RPC_OK;
    }
    store_metric_in *in = rpc_ctx_alloc(c, (req->n_metrics ? req->n_metrics : 1) * sizeof *in);
    store_metric_value *vals = rpc_ctx_alloc(c, (nv ? nv : 1) * sizeof *vals);
    size_t o = 0;
    for (size_t i = 0; i < req->n_metrics; i++) {
        const Manager__MetricData *d = req->metrics[i];
        in[i] = (store_metric_in){.type = d->type, .ts = d->timestamp, .values = vals + o, .n_values = d->n_values};
        for (size_t k = 0; k < d->n_values; k++) vals[o++] = (store_metric_value){d->values[k]->key, d->values[k]->value};
    }
    mmetrics_host_report(m->metrics, req->node_id, in, req->n_metrics);
    struct report_done *rd = rpc_ctx_alloc(c, sizeof *rd);
    *rd = (struct report_done){c, resp, req->node_id, nv};
    /* Answered from the store's writer thread once the commit is done: no thread waits. */
    store_insert_metrics_async(m->st, req->node_id, in, req->n_metrics, report_committed, rd);
    return RPC_PENDING;
}

static const store_agent *find_agent(const store_agent_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].agent_id, id)) return &l->items[i];
    return NULL;
}

/* agent.state for each agent that is new or whose status or pid changed (a crash and restart
 * keeps "running" but changes the pid); agent.removed for the ones the sync no longer lists. */
static void publish_agent_changes(mservice *m, const char *node_id, const store_agent_in *a, size_t n,
                                  const store_agent_list *before)
{
    for (size_t i = 0; i < n; i++) {
        const store_agent *old = find_agent(before, a[i].agent_id);
        if (old && !strcmp(old->status, a[i].status) && old->pid == a[i].pid) continue;
        char detail[64];
        snprintf(detail, sizeof detail, "pid=%d", (int)a[i].pid);
        if (old && old->pid != a[i].pid) snprintf(detail, sizeof detail, "pid=%d previous_pid=%d", (int)a[i].pid, (int)old->pid);
        evhub_publish(m->hub, "agent.state", node_id, a[i].agent_id, a[i].status, old ? old->status : "", detail);
    }
    for (size_t i = 0; i < before->n; i++) {
        int still = 0;
        for (size_t k = 0; k < n && !still; k++) still = !strcmp(a[k].agent_id, before->items[i].agent_id);
        if (!still)
            evhub_publish(m->hub, "agent.removed", node_id, before->items[i].agent_id, "removed", before->items[i].status,
                          "no longer listed by the daemon");
    }
}

/* What the commit callback needs to answer a SyncAgentStates call (in the call's arena). */
struct sync_done {
    mservice *m;
    rpc_ctx *c;
    const Proto__SyncAgentStatesRequest *req;
    Proto__SyncAgentStatesResponse *resp;
    const store_agent_in *a;
};

static void sync_committed(void *user, int rc, const char *err, const store_agent_list *before)
{
    struct sync_done *sd = user;
    mservice *m = sd->m;
    rpc_ctx *c = sd->c;
    const Proto__SyncAgentStatesRequest *req = sd->req;
    if (rc == STORE_UNAVAILABLE) {
        rpc_ctx_complete(c, store_unavailable(c, err));
        return;
    }
    if (rc != 0) {
        log_error("agents.sync_failed", "node=%s error=\"%s\" trace_id=%s", req->node_id, err, rpc_ctx_trace_id(c));
        sd->resp->success = 0;
        sd->resp->message = rpc_ctx_sprintf(c, "cannot store the agent states: %s", err);
        rpc_ctx_complete(c, RPC_OK);
        return;
    }
    mmetrics_agents_synced(m->metrics, req->node_id, sd->a, req->n_states);
    if (before) publish_agent_changes(m, req->node_id, sd->a, req->n_states, before);
    log_info("agents.synced", "node=%s agents=%zu trace_id=%s", req->node_id, req->n_states, rpc_ctx_trace_id(c));
    sd->resp->success = 1;
    sd->resp->message = rpc_ctx_strdup(c, "ok");
    rpc_ctx_complete(c, RPC_OK);
}

static int sync_agents(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    mservice *m = user;
    const Proto__SyncAgentStatesRequest *req = reqv;
    Proto__SyncAgentStatesResponse *resp = respv;
    CHECK(check_node_id(m, c, req->node_id));
    CHECK(nodeauth_check(m->auth, c, req->node_id));
    mval_result vr;
    if (mval_sync_agents(req, &m->lim, &vr) != RPC_OK) return refuse(m, c, &vr);
    store_agent_in *a = rpc_ctx_alloc(c, (req->n_states ? req->n_states : 1) * sizeof *a);
    for (size_t i = 0; i < req->n_states; i++) {
        const Proto__AgentState *s = req->states[i];
        a[i] = (store_agent_in){.agent_id = s->agent_id, .type = s->type, .version = s->version, .status = s->status,
                                .pid = s->pid, .last_heartbeat = s->last_heartbeat};
    }
    if (!liveness_get(m->live, req->node_id, NULL, NULL)) {
        resp->success = 0;
        resp->message = rpc_ctx_strdup(c, NOT_REGISTERED);
        return RPC_OK;
    }
    struct sync_done *sd = rpc_ctx_alloc(c, sizeof *sd);
    *sd = (struct sync_done){m, c, req, resp, a};
    /* The store reads what the node had inside the sync's own transaction, so that only what
     * this sync changes is published; answered once committed (c may be gone on return). */
    store_sync_agents_async(m->st, req->node_id, a, req->n_states, now_ms(m) / 1000, m->hub != NULL, sync_committed, sd);
    return RPC_PENDING;
}

static int not_here(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    (void)reqv; (void)respv; (void)user;
    return rpc_ctx_errorf(c, RPC_UNIMPLEMENTED, "%s is served by ops-daemon, not by the manager", rpc_ctx_method(c));
}

mservice *mservice_start(const mservice_opts *o, char *err, size_t errlen)
{
    mservice *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "out of memory"); return NULL; }
    m->st = o->store;
    m->live = o->live;
    m->auth = o->auth;
    m->abuse = o->abuse;
    /* an unauthenticated heartbeat must never create a node */
    m->auto_register = o->auto_register && nodeauth_get_mode(o->auth) == NODEAUTH_NONE;
    m->lim = o->limits;
    mval_limits_defaults(&m->lim);
    m->hb_s = o->heartbeat_interval_s;
    m->metrics_s = o->metrics_interval_s;
    m->metrics = o->metrics;
    m->hub = o->hub;
    /* The writes return RPC_PENDING and are answered by the store's commit callback, so no
     * thread waits for a commit. Where the store would block the caller instead (a driver
     * with no asynchronous path), or RegisterNode must read and write the store itself (node
     * secrets, token mode), the call runs on a thread of its own (RPC_METHOD_SLOW) and the
     * workers keep answering heartbeats meanwhile. A fleet registering at 2,000/s spent ~10% of
     * the manager's CPU handing each RegisterNode and SyncAgentStates to such a thread and back. */
    m->sync_async = store_async_writes(o->store);
    m->reg_async = m->sync_async && nodeauth_get_mode(o->auth) != NODEAUTH_TOKEN;
    int reg_flags = m->reg_async ? 0 : RPC_METHOD_SLOW, sync_flags = m->sync_async ? 0 : RPC_METHOD_SLOW;
    rpc_method t[] = {
        {"/manager.ManagerService/RegisterNode", &manager__register_node_request__descriptor, &manager__register_node_response__descriptor, register_node, NULL, m, reg_flags},
        {"/manager.ManagerService/Heartbeat", &manager__heartbeat_request__descriptor, &manager__heartbeat_response__descriptor, heartbeat, NULL, m, 0},
        {"/manager.ManagerService/ReportMetrics", &manager__report_metrics_request__descriptor, &manager__report_metrics_response__descriptor, report_metrics, NULL, m, 0},
        {"/proto.DaemonService/SyncAgentStates", &proto__sync_agent_states_request__descriptor, &proto__sync_agent_states_response__descriptor, sync_agents, NULL, m, sync_flags},
        {"/proto.DaemonService/Register", &proto__register_request__descriptor, &proto__register_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/Heartbeat", &proto__heartbeat_request__descriptor, &proto__heartbeat_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/ReportMetrics", &proto__metrics_request__descriptor, &proto__metrics_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/GetConfig", &proto__config_request__descriptor, &proto__config_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/PushUpdate", &proto__update_request__descriptor, &proto__update_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/ListAgents", &proto__list_agents_request__descriptor, &proto__list_agents_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/OperateAgent", &proto__agent_operation_request__descriptor, &proto__agent_operation_response__descriptor, not_here, NULL, m, 0},
        {"/proto.DaemonService/GetAgentMetrics", &proto__agent_metrics_request__descriptor, &proto__agent_metrics_response__descriptor, not_here, NULL, m, 0},
    };
    /* An extra method of the same name replaces ours (updates.c serves GetConfig). */
    size_t n_own = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int dup = 0;
        for (size_t j = 0; j < o->n_extra_methods; j++) dup |= !strcmp(t[i].path, o->extra_methods[j].path);
        if (!dup) m->methods[n_own++] = t[i];
    }
    rpc_server_opts so;
    memset(&so, 0, sizeof so);
    so.name = "manager";
    so.listen = o->listen;
    so.tls = o->tls;
    so.settings = o->settings;
    so.quiet_access_log = o->quiet_access_log;
    so.max_streams = o->max_streams > 0 ? o->max_streams : 4096;
    so.max_streams_per_conn = o->max_streams_per_conn;
    if (o->metrics) {
        so.observe = mmetrics_observe_rpc;
        so.observe_user = o->metrics;
    }
    m->srv = rpc_server_new(&so, err, errlen);
    if (!m->srv || rpc_server_add_methods(m->srv, m->methods, n_own, err, errlen) != 0 ||
        (o->reflection && rpc_reflection_register(m->srv, o->reflection, err, errlen) != 0) ||
        (o->n_extra_methods && rpc_server_add_methods(m->srv, o->extra_methods, o->n_extra_methods, err, errlen) != 0) ||
        rpc_server_start(m->srv, err, errlen) != 0) {
        if (m->srv) rpc_server_free(m->srv);
        free(m);
        return NULL;
    }
    rpc_server_set_health(m->srv, "manager.ManagerService", 1);
    return m;
}

int mservice_port(const mservice *m) { return rpc_server_port(m->srv, 0); }

int mservice_reload_tls(mservice *m) { return rpc_server_reload_tls(m->srv); }

void mservice_stop(mservice *m, int64_t grace_ms)
{
    if (!m) return;
    rpc_server_shutdown(m->srv, grace_ms);
    rpc_server_free(m->srv);
    free(m);
}
