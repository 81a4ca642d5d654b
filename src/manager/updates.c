/* updates: publish, the SubscribeUpdates stream and ReportEventResult. Streams wait on a
 * condition variable of their node's notifier (a small struct that exists while a stream of that
 * node does), woken by upd_publish; the timed wait only lets them notice a client that went
 * away or a server that stops. */
#include "manager/updates.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "manager.pb-c.h"

#define NBUCKETS 4096
#define REPLAY_BATCH 100

/* One node's notifier: shared by its current stream and any older one still winding down. */
typedef struct notifier {
    char *node_id;
    uint64_t seq;       /* bumped by every publish to this node */
    uint64_t gen;       /* bumped by every new subscription: older streams end */
    int refs;           /* streams using it */
    pthread_cond_t cv;
    struct notifier *next;
} notifier;

struct upd {
    store *st;
    int max_streams;
    int64_t retention_s, wake_ms;
    int64_t poll_ms; /* 0: only a wake re-reads the store (one process owns the database) */
    pthread_mutex_t mu;
    notifier *buckets[NBUCKETS];
    size_t streams;
    rpc_method methods[2];
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Caller holds mu. */
static notifier *find(upd *u, const char *node_id, notifier ***slot)
{
    notifier **p = &u->buckets[hash_str(node_id) % NBUCKETS];
    while (*p && strcmp((*p)->node_id, node_id) != 0) p = &(*p)->next;
    if (slot) *slot = p;
    return *p;
}

static int is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') || (*s >= 'A' && *s <= 'F'))) return 0;
    return 1;
}

static int empty(const char *s) { return !s || !*s; }

/* The checks of upd_event_in's comment; err names the field. */
static int validate(const upd_event_in *ev, char *err, size_t errlen)
{
    if (empty(ev->kind)) { snprintf(err, errlen, "kind is required (version_update, config_change or command)"); return -1; }
    if (!strcmp(ev->kind, "config_change")) {
        if (empty(ev->agent_id)) { snprintf(err, errlen, "agent_id is required for config_change"); return -1; }
        return 0;
    }
    if (!strcmp(ev->kind, "command")) {
        if (empty(ev->agent_id)) { snprintf(err, errlen, "agent_id is required for command"); return -1; }
        if (empty(ev->operation) || (strcmp(ev->operation, "start") && strcmp(ev->operation, "stop") && strcmp(ev->operation, "restart"))) {
            snprintf(err, errlen, "operation must be start, stop or restart (got \"%.40s\")", ev->operation ? ev->operation : "");
            return -1;
        }
        return 0;
    }
    if (!strcmp(ev->kind, "version_update")) {
        if (empty(ev->component) || (strcmp(ev->component, "agent") && strcmp(ev->component, "daemon"))) {
            snprintf(err, errlen, "component must be agent or daemon (got \"%.40s\")", ev->component ? ev->component : "");
            return -1;
        }
        if (!strcmp(ev->component, "agent") && empty(ev->agent_id)) { snprintf(err, errlen, "agent_id is required for an agent update"); return -1; }
        if (empty(ev->version)) { snprintf(err, errlen, "version is required"); return -1; }
        if (!is_hex64(ev->hash_sha256)) { snprintf(err, errlen, "hash_sha256 must be 64 hex digits"); return -1; }
        if (ev->signature_len != 64) { snprintf(err, errlen, "signature must be 64 bytes of Ed25519 (got %zu)", ev->signature_len); return -1; }
        if (empty(ev->download_url) && !ev->payload_len) { snprintf(err, errlen, "download_url or payload is required"); return -1; }
        return 0;
    }
    snprintf(err, errlen, "kind must be version_update, config_change or command (got \"%.40s\")", ev->kind);
    return -1;
}

int upd_publish(upd *u, const upd_event_in *ev, const char *const *node_ids, size_t n,
                uint64_t *ids_out, char *err, size_t errlen)
{
    if (validate(ev, err, errlen) < 0) return UPD_INVALID;
    for (size_t i = 0; i < n; i++)
        if (empty(node_ids[i])) { snprintf(err, errlen, "node_ids[%zu] is empty", i); return UPD_INVALID; }
    if (!n) return UPD_OK;
    store_update_in in = {
        .kind = ev->kind, .component = ev->component, .agent_id = ev->agent_id, .version = ev->version,
        .download_url = ev->download_url, .hash_sha256 = ev->hash_sha256, .operation = ev->operation,
        .signature = ev->signature, .signature_len = ev->signature_len, .payload = ev->payload,
        .payload_len = ev->payload_len, .created_at = (int64_t)time(NULL),
    };
    uint64_t *ids = ids_out ? ids_out : calloc(n, sizeof *ids);
    if (!ids) { snprintf(err, errlen, "out of memory"); return UPD_ERROR; }
    int rc = store_add_updates(u->st, &in, node_ids, n, ids, err, errlen);
    if (rc == 0) {
        pthread_mutex_lock(&u->mu);
        for (size_t i = 0; i < n; i++) {
            notifier *nt = find(u, node_ids[i], NULL);
            if (!nt) continue;
            nt->seq++;
            pthread_cond_broadcast(&nt->cv);
        }
        pthread_mutex_unlock(&u->mu);
        for (size_t i = 0; i < n; i++)
            log_info("update.published", "node=%s event_id=%llu kind=%s agent=%s", node_ids[i], (unsigned long long)ids[i], ev->kind,
                     ev->agent_id ? ev->agent_id : "");
    }
    if (!ids_out) free(ids);
    return rc == 0 ? UPD_OK : UPD_ERROR;
}

void upd_wake(upd *u, const char *node_id)
{
    pthread_mutex_lock(&u->mu);
    notifier *nt = find(u, node_id, NULL);
    if (nt) {
        nt->seq++;
        pthread_cond_broadcast(&nt->cv);
    }
    pthread_mutex_unlock(&u->mu);
}

int upd_compact(upd *u, int64_t now, uint64_t *deleted, char *err, size_t errlen)
{
    return store_compact_updates(u->st, now - u->retention_s, deleted, err, errlen);
}

size_t upd_stream_count(upd *u)
{
    pthread_mutex_lock(&u->mu);
    size_t n = u->streams;
    pthread_mutex_unlock(&u->mu);
    return n;
}

static void to_event(rpc_ctx *c, const store_update *s, Manager__UpdateEvent *e)
{
    manager__update_event__init(e);
    e->event_type = rpc_ctx_strdup(c, s->kind);
    e->component = rpc_ctx_strdup(c, s->component);
    e->version = rpc_ctx_strdup(c, s->version);
    e->download_url = rpc_ctx_strdup(c, s->download_url);
    e->hash_sha256 = rpc_ctx_strdup(c, s->hash_sha256);
    e->signature.data = s->signature;
    e->signature.len = s->signature_len;
    e->event_id = s->id;
    e->created_at = s->created_at;
    e->agent_id = rpc_ctx_strdup(c, s->agent_id);
    e->payload.data = s->payload;
    e->payload.len = s->payload_len;
    e->operation = rpc_ctx_strdup(c, s->operation);
    e->node_id = rpc_ctx_strdup(c, s->node_id);
}

/* Leaves the stream: the last one out frees the notifier. */
static void release(upd *u, notifier *nt)
{
    pthread_mutex_lock(&u->mu);
    u->streams--;
    if (--nt->refs == 0) {
        notifier **slot;
        find(u, nt->node_id, &slot);
        *slot = nt->next;
        pthread_cond_destroy(&nt->cv);
        free(nt->node_id);
        free(nt);
    }
    pthread_mutex_unlock(&u->mu);
}

static int subscribe(rpc_ctx *c, const void *reqv, void *user)
{
    upd *u = user;
    const Manager__SubscribeUpdatesRequest *req = reqv;
    if (!req->node_id[0]) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is required");
    if (strlen(req->node_id) > 256) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is longer than 256 bytes");

    pthread_mutex_lock(&u->mu);
    if (u->streams >= (size_t)u->max_streams) {
        pthread_mutex_unlock(&u->mu);
        return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "too many update streams (limit %d)", u->max_streams);
    }
    notifier **slot;
    notifier *nt = find(u, req->node_id, &slot);
    if (!nt) {
        nt = calloc(1, sizeof *nt);
        char *id = strdup(req->node_id);
        if (!nt || !id) {
            free(nt);
            free(id);
            pthread_mutex_unlock(&u->mu);
            return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "out of memory");
        }
        nt->node_id = id;
        pthread_cond_init(&nt->cv, NULL);
        *slot = nt;
    }
    nt->refs++;
    u->streams++;
    uint64_t gen = ++nt->gen;
    pthread_cond_broadcast(&nt->cv); /* an older stream of this node ends */
    pthread_mutex_unlock(&u->mu);

    log_info("update.subscribed", "node=%s last_event_id=%llu peer=%s", req->node_id, (unsigned long long)req->last_event_id,
             rpc_ctx_peer(c));
    uint64_t after = req->last_event_id;
    int code = RPC_OK;
    for (;;) {
        pthread_mutex_lock(&u->mu);
        uint64_t seq = nt->seq; /* a publish after this point wakes the wait below */
        int superseded = nt->gen != gen;
        pthread_mutex_unlock(&u->mu);
        if (superseded) {
            code = rpc_ctx_errorf(c, RPC_ABORTED, "a newer subscription of node %s replaced this one", req->node_id);
            break;
        }
        if (rpc_ctx_cancelled(c)) break;

        store_update_list l;
        char err[512];
        if (store_list_updates_after(u->st, req->node_id, after, (int64_t)time(NULL) - u->retention_s, REPLAY_BATCH, &l, err,
                                     sizeof err) != 0) {
            char q[600];
            log_error("update.replay_failed", "node=%s error=%s", req->node_id, log_quote(q, sizeof q, err));
            code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "reading events: %s", err);
            break;
        }
        int failed = 0;
        for (size_t i = 0; i < l.n && !failed; i++) {
            Manager__UpdateEvent ev;
            to_event(c, &l.items[i], &ev);
            if (rpc_ctx_send(c, &ev.base) != 0) failed = 1;
            else after = l.items[i].id;
        }
        size_t got = l.n;
        store_update_list_free(&l);
        if (failed) break;
        if (got == REPLAY_BATCH) continue; /* more to replay */

        pthread_mutex_lock(&u->mu);
        int64_t waited = 0; /* replicas: re-read now and then, in case a notice was lost */
        while (nt->seq == seq && nt->gen == gen && !rpc_ctx_cancelled(c) && (!u->poll_ms || waited < u->poll_ms)) {
            waited += u->wake_ms;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (u->wake_ms % 1000) * 1000000L;
            ts.tv_sec += u->wake_ms / 1000 + ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&nt->cv, &u->mu, &ts);
        }
        pthread_mutex_unlock(&u->mu);
    }
    log_info("update.unsubscribed", "node=%s last_sent=%llu code=%d", req->node_id, (unsigned long long)after, code);
    release(u, nt);
    return code;
}

static int report_result(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    upd *u = user;
    const Manager__EventResultRequest *req = reqv;
    Manager__EventResultResponse *resp = respv;
    if (!req->node_id[0]) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is required");
    if (!req->event_id) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "event_id is required");
    static const char *const outcomes[] = {"applied", "rolled_back", "refused", "failed"};
    int ok = 0;
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) ok |= !strcmp(req->outcome, outcomes[i]);
    if (!ok)
        return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "outcome must be applied, rolled_back, refused or failed (got \"%.40s\")",
                              req->outcome);
    if (strlen(req->message) > 4096) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "message is longer than 4096 bytes");
    char err[512];
    int found = 0;
    if (store_set_update_result(u->st, req->node_id, req->event_id, req->outcome, req->message, (int64_t)time(NULL), &found, err,
                                sizeof err) != 0)
        return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "storing the result: %s", err);
    if (!found)
        return rpc_ctx_errorf(c, RPC_NOT_FOUND, "node %s has no event %llu", req->node_id, (unsigned long long)req->event_id);
    char q[4200];
    log_info("update.result", "node=%s event_id=%llu outcome=%s message=%s", req->node_id, (unsigned long long)req->event_id,
             req->outcome, log_quote(q, sizeof q, req->message));
    resp->success = 1;
    resp->message = rpc_ctx_strdup(c, "recorded");
    return RPC_OK;
}

upd *upd_new(const upd_opts *o, char *err, size_t errlen)
{
    if (!o->store) {
        snprintf(err, errlen, "updates: no store");
        return NULL;
    }
    upd *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->st = o->store;
    u->max_streams = o->max_streams > 0 ? o->max_streams : 10000;
    u->retention_s = o->retention_s > 0 ? o->retention_s : 7 * 24 * 3600;
    u->wake_ms = o->wake_ms > 0 ? o->wake_ms : 500;
    u->poll_ms = store_is_shared(u->st) ? 5000 : 0;
    pthread_mutex_init(&u->mu, NULL);
    /* Result writes wait for a commit: off the workers (RPC_METHOD_SLOW). */
    u->methods[0] = (rpc_method){"/manager.ManagerService/SubscribeUpdates", &manager__subscribe_updates_request__descriptor,
                                 &manager__update_event__descriptor, NULL, subscribe, u, 0};
    u->methods[1] = (rpc_method){"/manager.ManagerService/ReportEventResult", &manager__event_result_request__descriptor,
                                 &manager__event_result_response__descriptor, report_result, NULL, u, RPC_METHOD_SLOW};
    return u;
}

const rpc_method *upd_methods(upd *u, size_t *n)
{
    *n = sizeof u->methods / sizeof u->methods[0];
    return u->methods;
}

void upd_free(upd *u)
{
    if (!u) return;
    /* The server is stopped: no stream holds a notifier any more. */
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (notifier *nt = u->buckets[i]; nt;) {
            notifier *next = nt->next;
            pthread_cond_destroy(&nt->cv);
            free(nt->node_id);
            free(nt);
            nt = next;
        }
    }
    pthread_mutex_destroy(&u->mu);
    free(u);
}
