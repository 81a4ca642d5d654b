/* updates: publish, the SubscribeUpdates stream and ReportEventResult. Streams wait on a
 * condition variable of their node's notifier (a small struct that exists while a stream of that
 * node does), woken by upd_publish; the timed wait only lets them notice a client that went
 * away or a server that stops.
 *
 * Fan-out without the store: a publish also puts the event (one shared, reference-counted copy
 * for all its nodes) into a small ring of each subscribed node's notifier, so that 10,000
 * streams woken at once send from memory instead of running 10,000 queries. A stream reads the
 * store only to replay (at subscription) or when it fell more than UPD_RING events behind.
 * Publishes are serialised (pub_mu) so that ring entries go in id order: a stream that has
 * sent id N may skip any ring entry <= N without losing one. */
#include "manager/updates.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "manager.pb-c.h"

#define NBUCKETS 4096
#define REPLAY_BATCH 100
#define UPD_RING 16

/* One published event as every target node's stream sends it (node_id and event_id apart). */
typedef struct pubev {
    atomic_int refs;
    store_update u; /* node_id NULL, id 0: filled per node when sent */
} pubev;

typedef struct ring_item {
    uint64_t seq;   /* the notifier's seq when it went in */
    uint64_t id;    /* the event id for this node */
    pubev *ev;      /* a reference */
} ring_item;

/* One node's notifier: shared by its current stream and any older one still winding down. */
typedef struct notifier {
    char *node_id;
    uint64_t seq;       /* bumped by every publish to this node */
    uint64_t gen;       /* bumped by every new subscription: older streams end */
    int refs;           /* streams using it */
    ring_item ring[UPD_RING]; /* the last events published to this node, by seq % UPD_RING */
    pthread_cond_t cv;
    struct notifier *next;
} notifier;

struct upd {
    store *st;
    int max_streams;
    nodeauth *auth;
    abuse *abuse;
    int64_t retention_s, wake_ms;
    int64_t poll_ms; /* 0: only a wake re-reads the store (one process owns the database) */
    pthread_mutex_t mu;
    pthread_mutex_t pub_mu; /* one publish at a time: ring entries in id order */
    notifier *buckets[NBUCKETS];
    size_t streams;
    uint64_t results;   /* bumped by every stored ReportEventResult */
    pthread_cond_t result_cv;
    rpc_method methods[3];
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

static void pubev_unref(pubev *e)
{
    if (!e || atomic_fetch_sub(&e->refs, 1) != 1) return;
    store_update *x = &e->u;
    free(x->kind);
    free(x->component);
    free(x->agent_id);
    free(x->version);
    free(x->download_url);
    free(x->hash_sha256);
    free(x->operation);
    free(x->signature);
    free(x->payload);
    free(x->outcome);
    free(x->message);
    free(e);
}

static char *dup0(const char *s) { return strdup(s ? s : ""); }

/* NULL when out of memory (the streams then read the store). */
static pubev *pubev_new(const store_update_in *in)
{
    pubev *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    atomic_init(&e->refs, 1);
    store_update *x = &e->u;
    x->kind = dup0(in->kind);
    x->component = dup0(in->component);
    x->agent_id = dup0(in->agent_id);
    x->version = dup0(in->version);
    x->download_url = dup0(in->download_url);
    x->hash_sha256 = dup0(in->hash_sha256);
    x->operation = dup0(in->operation);
    x->outcome = dup0("");
    x->message = dup0("");
    x->created_at = in->created_at;
    int bad = !x->kind || !x->component || !x->agent_id || !x->version || !x->download_url || !x->hash_sha256 ||
              !x->operation || !x->outcome || !x->message;
    if (in->signature_len && (x->signature = malloc(in->signature_len))) {
        memcpy(x->signature, in->signature, in->signature_len);
        x->signature_len = in->signature_len;
    }
    if (in->payload_len && (x->payload = malloc(in->payload_len))) {
        memcpy(x->payload, in->payload, in->payload_len);
        x->payload_len = in->payload_len;
    }
    if (bad || x->signature_len != in->signature_len || x->payload_len != in->payload_len) {
        pubev_unref(e);
        return NULL;
    }
    return e;
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
    pubev *pe = pubev_new(&in);
    pthread_mutex_lock(&u->pub_mu);
    int rc = store_add_updates(u->st, &in, node_ids, n, ids, err, errlen);
    if (rc == 0) {
        pthread_mutex_lock(&u->mu);
        for (size_t i = 0; i < n; i++) {
            notifier *nt = find(u, node_ids[i], NULL);
            if (!nt) continue;
            nt->seq++;
            ring_item *it = &nt->ring[nt->seq % UPD_RING];
            pubev_unref(it->ev);
            it->seq = nt->seq;
            it->id = ids[i];
            it->ev = pe;
            if (pe) atomic_fetch_add(&pe->refs, 1);
            pthread_cond_broadcast(&nt->cv);
        }
        pthread_mutex_unlock(&u->mu);
    }
    pthread_mutex_unlock(&u->pub_mu);
    pubev_unref(pe);
    if (rc == 0) {
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

static void notifier_free(notifier *nt)
{
    for (size_t i = 0; i < UPD_RING; i++) pubev_unref(nt->ring[i].ev);
    pthread_cond_destroy(&nt->cv);
    free(nt->node_id);
    free(nt);
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
        notifier_free(nt);
    }
    pthread_mutex_unlock(&u->mu);
}

static int subscribe(rpc_ctx *c, const void *reqv, void *user)
{
    upd *u = user;
    const Manager__SubscribeUpdatesRequest *req = reqv;
    if (!req->node_id[0]) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is required");
    if (strlen(req->node_id) > 256) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is longer than 256 bytes");
    int arc = nodeauth_check(u->auth, c, req->node_id);
    if (arc != RPC_OK) return arc;

    pthread_mutex_lock(&u->mu);
    if (u->streams >= (size_t)u->max_streams) {
        pthread_mutex_unlock(&u->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t held = 0;
        rpc_ctx_quiet_log(c);
        if (!u->abuse || abuse_note(u->abuse, rpc_ctx_peer(c), "update_streams", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &held))
            log_warn("update.stream_refused", "node=%s peer=%s limit=%d held=%llu reason=\"too many update streams (limits.max_update_streams)\"",
                     req->node_id, rpc_ctx_peer(c), u->max_streams, (unsigned long long)held);
        return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "too many update streams (limit %d, limits.max_update_streams)", u->max_streams);
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
    uint64_t seen = 0;  /* the notifier's seq this stream has dealt with */
    int from_store = 1; /* replay, or fell more than UPD_RING behind */
    int code = RPC_OK;
    ring_item take[UPD_RING];
    for (;;) {
        pthread_mutex_lock(&u->mu);
        int superseded = nt->gen != gen;
        if (from_store) seen = nt->seq; /* what is published from now on is in the ring too */
        pthread_mutex_unlock(&u->mu);
        if (superseded) {
            code = rpc_ctx_errorf(c, RPC_ABORTED, "a newer subscription of node %s replaced this one", req->node_id);
            break;
        }
        if (rpc_ctx_cancelled(c)) break;

        int failed = 0;
        if (from_store) {
            store_update_list l;
            char err[512];
            if (store_list_updates_after(u->st, req->node_id, after, (int64_t)time(NULL) - u->retention_s, REPLAY_BATCH, &l, err,
                                         sizeof err) != 0) {
                char q[600];
                log_error("update.replay_failed", "node=%s error=%s", req->node_id, log_quote(q, sizeof q, err));
                code = rpc_ctx_errorf(c, RPC_UNAVAILABLE, "reading events: %s", err);
                break;
            }
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
            from_store = 0;
        }

        size_t n_take = 0;
        pthread_mutex_lock(&u->mu);
        int64_t waited = 0; /* replicas: re-read now and then, in case a notice was lost */
        while (nt->seq == seen && nt->gen == gen && !rpc_ctx_cancelled(c) && (!u->poll_ms || waited < u->poll_ms)) {
            waited += u->wake_ms;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (u->wake_ms % 1000) * 1000000L;
            ts.tv_sec += u->wake_ms / 1000 + ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&nt->cv, &u->mu, &ts);
        }
        if (nt->seq == seen && u->poll_ms && waited >= u->poll_ms) {
            from_store = 1; /* replicas: a notice may have been lost; the table has everything */
        } else if (nt->seq - seen > UPD_RING) {
            from_store = 1;
        } else {
            for (uint64_t q = seen + 1; q <= nt->seq && !from_store; q++) {
                ring_item *it = &nt->ring[q % UPD_RING];
                if (it->seq != q || !it->ev) {
                    from_store = 1; /* its copy could not be made: the store has it */
                    break;
                }
                take[n_take] = *it;
                atomic_fetch_add(&it->ev->refs, 1);
                n_take++;
            }
            if (!from_store) seen = nt->seq;
        }
        pthread_mutex_unlock(&u->mu);
        for (size_t i = 0; i < n_take; i++) {
            /* Ids go up in ring order; one at or below `after` was replayed from the store. */
            if (!from_store && !failed && take[i].id > after) {
                store_update x = take[i].ev->u;
                x.id = take[i].id;
                x.node_id = req->node_id;
                Manager__UpdateEvent ev;
                to_event(c, &x, &ev);
                if (rpc_ctx_send(c, &ev.base) != 0) failed = 1;
                else after = x.id;
            }
            pubev_unref(take[i].ev);
        }
        if (failed) break;
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
    if (strlen(req->node_id) > 256) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is longer than 256 bytes");
    int arc = nodeauth_check(u->auth, c, req->node_id);
    if (arc != RPC_OK) return arc;
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
    pthread_mutex_lock(&u->mu);
    u->results++;
    pthread_cond_broadcast(&u->result_cv);
    pthread_mutex_unlock(&u->mu);
    char q[4200];
    log_info("update.result", "node=%s event_id=%llu outcome=%s message=%s", req->node_id, (unsigned long long)req->event_id,
             req->outcome, log_quote(q, sizeof q, req->message));
    resp->success = 1;
    resp->message = rpc_ctx_strdup(c, "recorded");
    return RPC_OK;
}

/* ---- results, config pulls ------------------------------------------------------------------ */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 with the result copied, 0 while pending, UPD_NOT_FOUND, UPD_ERROR. */
static int read_result(upd *u, const char *node_id, uint64_t id, char *outcome, size_t ol, char *message, size_t ml,
                       char *err, size_t errlen)
{
    store_update_filter f = {.node_id = node_id, .event_id = id, .limit = 1};
    store_update_list l;
    if (store_list_updates(u->st, &f, &l, err, errlen) != 0) return UPD_ERROR;
    int rc = UPD_NOT_FOUND;
    if (l.n) {
        rc = l.items[0].outcome && l.items[0].outcome[0];
        if (rc) {
            snprintf(outcome, ol, "%s", l.items[0].outcome);
            snprintf(message, ml, "%s", l.items[0].message ? l.items[0].message : "");
        }
    }
    store_update_list_free(&l);
    return rc;
}

int upd_wait_result(upd *u, const char *node_id, uint64_t event_id, int64_t deadline_ms, const rpc_ctx *c,
                    char *outcome, size_t outcome_len, char *message, size_t message_len, char *err, size_t errlen)
{
    for (;;) {
        pthread_mutex_lock(&u->mu);
        uint64_t seen = u->results; /* a result stored after this point wakes the wait below */
        pthread_mutex_unlock(&u->mu);
        int rc = read_result(u, node_id, event_id, outcome, outcome_len, message, message_len, err, errlen);
        if (rc == 1) return UPD_OK;
        if (rc != 0) {
            if (rc == UPD_NOT_FOUND) snprintf(err, errlen, "node %s has no event %llu", node_id, (unsigned long long)event_id);
            return rc;
        }
        int64_t now = wall_ms();
        if (now >= deadline_ms || (c && rpc_ctx_cancelled(c))) {
            snprintf(err, errlen, "no result for event %llu of node %s yet", (unsigned long long)event_id, node_id);
            return UPD_TIMEOUT;
        }
        int64_t until = deadline_ms < now + u->wake_ms ? deadline_ms : now + u->wake_ms;
        struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000L};
        pthread_mutex_lock(&u->mu);
        while (u->results == seen && wall_ms() < until)
            if (pthread_cond_timedwait(&u->result_cv, &u->mu, &ts) == ETIMEDOUT) break;
        pthread_mutex_unlock(&u->mu);
    }
}

int upd_node_streaming(upd *u, const char *node_id)
{
    pthread_mutex_lock(&u->mu);
    int yes = find(u, node_id, NULL) != NULL;
    pthread_mutex_unlock(&u->mu);
    return yes;
}

#define CONFIG_SCAN_MAX 10000 /* events looked at for one pull (retention keeps few) */

int upd_latest_config(upd *u, const char *node_id, const char *agent_id, uint8_t **data, size_t *len, char *err,
                      size_t errlen)
{
    *data = NULL;
    *len = 0;
    store_update_filter f = {.node_id = node_id, .limit = 100};
    for (size_t seen = 0; seen < CONFIG_SCAN_MAX;) {
        store_update_list l;
        if (store_list_updates(u->st, &f, &l, err, errlen) != 0) return UPD_ERROR;
        int rc = UPD_NOT_FOUND;
        for (size_t i = 0; i < l.n && rc == UPD_NOT_FOUND; i++) {
            const store_update *e = &l.items[i];
            if (strcmp(e->kind, "config_change") || strcmp(e->agent_id, agent_id)) continue;
            rc = UPD_OK;
            if (e->payload_len) {
                if (!(*data = malloc(e->payload_len))) {
                    snprintf(err, errlen, "out of memory");
                    rc = UPD_ERROR;
                } else {
                    memcpy(*data, e->payload, e->payload_len);
                    *len = e->payload_len;
                }
            }
        }
        size_t got = l.n;
        if (got) f.before_id = l.items[got - 1].id;
        store_update_list_free(&l);
        if (rc != UPD_NOT_FOUND) return rc;
        if (got < f.limit) break;
        seen += got;
    }
    snprintf(err, errlen, "no config published for agent %s of node %s", agent_id, node_id);
    return UPD_NOT_FOUND;
}

/* proto.DaemonService/GetConfig on the manager: a daemon pulls what was published for it. */
static int get_config(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    upd *u = user;
    const Proto__ConfigRequest *req = reqv;
    Proto__ConfigResponse *resp = respv;
    if (!req->node_id[0]) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "node_id is required");
    if (strcmp(req->config_type, "agent"))
        return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "config_type must be \"agent\" (got \"%.40s\"): the manager keeps agent configs only",
                              req->config_type);
    if (!req->agent_id[0]) return rpc_ctx_errorf(c, RPC_INVALID_ARGUMENT, "agent_id is required for config_type agent");
    uint8_t *data;
    size_t len;
    char err[512];
    int rc = upd_latest_config(u, req->node_id, req->agent_id, &data, &len, err, sizeof err);
    if (rc == UPD_NOT_FOUND) return rpc_ctx_errorf(c, RPC_NOT_FOUND, "%s", err);
    if (rc != UPD_OK) return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "reading events: %s", err);
    if (len) {
        resp->config_data.data = rpc_ctx_alloc(c, len);
        memcpy(resp->config_data.data, data, len);
        resp->config_data.len = len;
    }
    free(data);
    resp->success = 1;
    resp->message = rpc_ctx_strdup(c, "ok");
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
    u->max_streams = o->max_streams > 0 ? o->max_streams : UPD_DEFAULT_MAX_STREAMS;
    u->auth = o->auth;
    u->abuse = o->abuse;
    u->retention_s = o->retention_s > 0 ? o->retention_s : 7 * 24 * 3600;
    u->wake_ms = o->wake_ms > 0 ? o->wake_ms : 500;
    u->poll_ms = store_is_shared(u->st) ? 5000 : 0;
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->pub_mu, NULL);
    pthread_cond_init(&u->result_cv, NULL);
    /* Result writes wait for a commit: off the workers (RPC_METHOD_SLOW). */
    u->methods[0] = (rpc_method){"/manager.ManagerService/SubscribeUpdates", &manager__subscribe_updates_request__descriptor,
                                 &manager__update_event__descriptor, NULL, subscribe, u, 0};
    u->methods[1] = (rpc_method){"/manager.ManagerService/ReportEventResult", &manager__event_result_request__descriptor,
                                 &manager__event_result_response__descriptor, report_result, NULL, u, RPC_METHOD_SLOW};
    u->methods[2] = (rpc_method){"/proto.DaemonService/GetConfig", &proto__config_request__descriptor,
                                 &proto__config_response__descriptor, get_config, NULL, u, RPC_METHOD_SLOW};
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
            notifier_free(nt);
            nt = next;
        }
    }
    pthread_cond_destroy(&u->result_cv);
    pthread_mutex_destroy(&u->pub_mu);
    pthread_mutex_destroy(&u->mu);
    free(u);
}
