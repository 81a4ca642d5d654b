/* pool: a small table of per-node channels with reference counts and LRU eviction. */
#include "manager/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"

typedef struct entry {
    char *node_id;
    char *address;
    rpc_channel *ch;
    int refs;       /* calls using ch right now */
    int doomed;     /* replaced or forgotten: free when the last call ends */
    int64_t last_used_ms;
} entry;

struct pool {
    pool_opts o;
    char *authz; /* "Bearer <token>" or NULL; under mu */
    pthread_mutex_t mu;
    entry **items;
    size_t n, cap;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void entry_free(entry *e)
{
    rpc_channel_free(e->ch);
    free(e->node_id);
    free(e->address);
    free(e);
}

static void detach(pool *p, size_t i);

pool *pool_new(const pool_opts *o, char *err, size_t errlen)
{
    if (!o->resolve) {
        snprintf(err, errlen, "pool: a resolver is required");
        return NULL;
    }
    pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->o = *o;
    if (!p->o.timeout_ms) p->o.timeout_ms = 30000;
    if (!p->o.operate_timeout_ms) p->o.operate_timeout_ms = 90000;
    if (!p->o.idle_ms) p->o.idle_ms = 600000;
    if (!p->o.max_channels) p->o.max_channels = 4096;
    p->o.token = NULL; /* not kept: authz holds our copy */
    pthread_mutex_init(&p->mu, NULL);
    if (pool_set_token(p, o->token) != 0) {
        pool_free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return p;
}

int pool_set_token(pool *p, const char *token)
{
    char *authz = NULL;
    if (token && *token) {
        size_t n = strlen(token) + 8;
        if (!(authz = malloc(n))) return -1;
        snprintf(authz, n, "Bearer %s", token);
    }
    pthread_mutex_lock(&p->mu);
    char *old = p->authz;
    p->authz = authz;
    pthread_mutex_unlock(&p->mu);
    free(old);
    return 0;
}

size_t pool_drop_channels(pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    while (p->n) detach(p, p->n - 1);
    pthread_mutex_unlock(&p->mu);
    return n;
}

void pool_free(pool *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) entry_free(p->items[i]);
    free(p->items);
    pthread_mutex_destroy(&p->mu);
    free(p->authz);
    free(p);
}

/* Takes the entry out of the table; frees it now if no call uses it. Caller holds mu. */
static void detach(pool *p, size_t i)
{
    entry *e = p->items[i];
    p->items[i] = p->items[--p->n];
    if (e->refs == 0) entry_free(e);
    else e->doomed = 1;
}

static void evict_lru(pool *p)
{
    size_t victim = p->n;
    for (size_t i = 0; i < p->n; i++)
        if (p->items[i]->refs == 0 && (victim == p->n || p->items[i]->last_used_ms < p->items[victim]->last_used_ms)) victim = i;
    if (victim < p->n) detach(p, victim);
}

/* The channel for node_id, referenced; NULL with res set. */
static entry *acquire(pool *p, const char *node_id, pool_result *res)
{
    char addr[300];
    if (p->o.resolve(p->o.user, node_id, addr, sizeof addr) != 0) {
        res->code = RPC_NOT_FOUND;
        res->kind = RPC_ERR_OTHER;
        snprintf(res->message, sizeof res->message, "node %s: unknown node", node_id);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    entry *e = NULL;
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->items[i]->node_id, node_id) != 0) continue;
        if (strcmp(p->items[i]->address, addr) == 0) e = p->items[i];
        else {
            log_info("pool.address_changed", "node=%s old=%s new=%s", node_id, p->items[i]->address, addr);
            detach(p, i);
        }
        break;
    }
    if (!e) {
        if (p->n >= p->o.max_channels) evict_lru(p);
        rpc_client_opts co;
        memset(&co, 0, sizeof co);
        co.tls = p->o.tls;
        rpc_settings_defaults(&co.settings, RPC_PROFILE_MANAGER_CLIENT);
        char err[300];
        rpc_channel *ch = rpc_channel_new(addr, &co, err, sizeof err);
        if (!ch) {
            pthread_mutex_unlock(&p->mu);
            res->code = RPC_UNAVAILABLE;
            res->kind = RPC_ERR_CONNECTION_FAILED;
            snprintf(res->message, sizeof res->message, "node %s (%s): %s", node_id, addr, err);
            return NULL;
        }
        e = calloc(1, sizeof *e);
        if (!e) abort();
        e->node_id = strdup(node_id);
        e->address = strdup(addr);
        e->ch = ch;
        if (p->n == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 64;
            p->items = realloc(p->items, p->cap * sizeof *p->items);
            if (!p->items) abort();
        }
        p->items[p->n++] = e;
    }
    e->refs++;
    e->last_used_ms = mono_ms();
    pthread_mutex_unlock(&p->mu);
    return e;
}

static void release(pool *p, entry *e)
{
    pthread_mutex_lock(&p->mu);
    e->refs--;
    e->last_used_ms = mono_ms();
    int gone = e->doomed && e->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (gone) entry_free(e);
}

/* The failure's kind and the peer's text, saying each thing once: a daemon's own message
 * often starts with the kind already ("agent not found: ghost"), and the agent is named by
 * the caller's prefix. */
static void describe_failure(rpc_error_kind kind, const char *msg, const char *agent_id, char *buf, size_t n)
{
    const char *k = rpc_error_kind_name(kind);
    size_t kl = strlen(k);
    if (!msg || !*msg) {
        snprintf(buf, n, "%s", k);
        return;
    }
    if (strncasecmp(msg, k, kl) != 0 || (msg[kl] != 0 && msg[kl] != ':')) {
        snprintf(buf, n, "%s: %.300s", k, msg);
        return;
    }
    const char *rest = msg + kl;
    while (*rest == ':' || *rest == ' ') rest++;
    if (!*rest || (agent_id && !strcmp(rest, agent_id))) snprintf(buf, n, "%s", k);
    else snprintf(buf, n, "%.300s", msg);
}

static int call(pool *p, const char *node_id, const char *agent_id, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, int idempotent, int64_t timeout,
                const char *trace_id, pool_result *res)
{
    memset(res, 0, sizeof *res);
    *out = NULL;
    entry *e = acquire(p, node_id, res);
    if (!e) return res->code;
    rpc_call_opts o = {.timeout_ms = timeout, .idempotent = idempotent, .trace_id = trace_id};
    /* The daemon's daemon.auth: our token on every call (a copy: SIGHUP may replace it). */
    char *authz = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->authz && !(authz = strdup(p->authz))) abort();
    pthread_mutex_unlock(&p->mu);
    const char *md[] = {"authorization", authz, NULL};
    if (authz) o.metadata = md;
    rpc_result r;
    rpc_call_unary(e->ch, method, req, rd, out, &o, &r);
    free(authz);
    res->code = r.code;
    res->kind = r.kind;
    res->attempts = r.attempts;
    const char *what = strrchr(method, '/') + 1;
    if (r.code != RPC_OK) {
        char detail[384];
        describe_failure(r.kind, r.message, agent_id, detail, sizeof detail);
        if (agent_id && *agent_id)
            snprintf(res->message, sizeof res->message, "%s: node %s agent %s: %s", what, node_id, agent_id, detail);
        else
            snprintf(res->message, sizeof res->message, "%s: node %s: %s", what, node_id, detail);
        log_warn("pool.call_failed", "node=%s agent=%s method=%s address=%s code=%s attempts=%d trace_id=%s", node_id,
                 agent_id && *agent_id ? agent_id : "-", what, e->address, rpc_code_name(r.code), r.attempts, trace_id ? trace_id : "-");
    }
    release(p, e);
    return res->code;
}

int pool_list_agents(pool *p, const char *node_id, const char *trace_id, Proto__ListAgentsResponse **out, pool_result *res)
{
    Proto__ListAgentsRequest req = PROTO__LIST_AGENTS_REQUEST__INIT;
    return call(p, node_id, NULL, "/proto.DaemonService/ListAgents", &req.base, &proto__list_agents_response__descriptor,
                (ProtobufCMessage **)out, 1, p->o.timeout_ms, trace_id, res);
}

int pool_operate_agent(pool *p, const char *node_id, const char *agent_id, const char *operation, const char *trace_id,
                       Proto__AgentOperationResponse **out, pool_result *res)
{
    Proto__AgentOperationRequest req = PROTO__AGENT_OPERATION_REQUEST__INIT;
    req.agent_id = (char *)agent_id;
    req.operation = (char *)operation;
    return call(p, node_id, agent_id, "/proto.DaemonService/OperateAgent", &req.base, &proto__agent_operation_response__descriptor,
                (ProtobufCMessage **)out, 0, p->o.operate_timeout_ms, trace_id, res);
}

int pool_agent_metrics(pool *p, const char *node_id, const char *agent_id, int64_t duration_s, const char *trace_id,
                       Proto__AgentMetricsResponse **out, pool_result *res)
{
    Proto__AgentMetricsRequest req = PROTO__AGENT_METRICS_REQUEST__INIT;
    req.agent_id = (char *)agent_id;
    req.duration_seconds = duration_s;
    return call(p, node_id, agent_id, "/proto.DaemonService/GetAgentMetrics", &req.base, &proto__agent_metrics_response__descriptor,
                (ProtobufCMessage **)out, 1, p->o.timeout_ms, trace_id, res);
}

int pool_get_config(pool *p, const char *node_id, const char *config_type, const char *agent_id, const char *trace_id,
                    Proto__ConfigResponse **out, pool_result *res)
{
    Proto__ConfigRequest req = PROTO__CONFIG_REQUEST__INIT;
    req.node_id = (char *)node_id;
    req.config_type = (char *)config_type;
    req.agent_id = (char *)(agent_id ? agent_id : "");
    return call(p, node_id, agent_id, "/proto.DaemonService/GetConfig", &req.base, &proto__config_response__descriptor,
                (ProtobufCMessage **)out, 1, p->o.timeout_ms, trace_id, res);
}

void pool_forget(pool *p, const char *node_id)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++) {
        if (!strcmp(p->items[i]->node_id, node_id)) {
            detach(p, i);
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

size_t pool_sweep_idle(pool *p)
{
    size_t closed = 0;
    int64_t now = mono_ms();
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n;) {
        entry *e = p->items[i];
        if (e->refs == 0 && now - e->last_used_ms > p->o.idle_ms) {
            detach(p, i);
            closed++;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return closed;
}

size_t pool_size(pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}
