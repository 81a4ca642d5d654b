/* updates: publish, the SubscribeUpdates stream and ReportEventResult.
 *
 * A stream holds no thread. The handler (on an rpc worker) files a subscription in the node
 * table and returns RPC_PENDING; from then on messages are pushed onto the call's send queue
 * (rpc_ctx_push) by whoever has something for it:
 * - upd_publish, for a subscription that is live: it stores the events first, then pushes to
 *   each target's stream straight from memory, so one event to 10,000 streams is 10,000 small
 *   encodes and no store read. Each push may write to a socket (the core sends inline), so a
 *   big publish is shared between the publishing thread and pusher threads (two pushing threads per core).
 * - the replay thread, for a subscription that is replaying: it reads the store after the
 *   stream's last sent id in batches, pushes them, and turns the subscription live when the
 *   store has nothing newer. A publish meanwhile only marks it dirty (read again). A live
 *   stream whose client reads too slowly (UPD_MAX_QUEUED waiting) goes back to replaying, so
 *   memory per stream stays bounded: the store keeps what it has not sent.
 * Publishes are serialised (pub_mu) so that pushes go in id order; a subscription skips ids it
 * has already sent (after), so a replay and a publish that overlap never repeat an event.
 * When the store is shared with other managers (replicas), every live subscription is
 * replayed every poll_ms as well, in case a notice from another manager was lost. */
#include "manager/updates.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "manager.pb-c.h"

#define NBUCKETS 4096
#define REPLAY_BATCH 100
#define UPD_MAX_QUEUED 64   /* live events waiting on one stream before it falls back to the store */
#define REPLAY_RESUME 16    /* a replaying stream gets its next batch when fewer wait than this */
#define REPLAY_DELAY_MS 20  /* ... checked this often */
#define UPD_MAX_PUSHERS 8
#define PUSH_PARALLEL_MIN 256 /* smaller publishes are pushed by the publishing thread alone */

enum sub_state { SUB_REPLAY, SUB_LIVE };

/* One SubscribeUpdates stream. All fields under upd.mu. */
typedef struct sub {
    int refs;             /* the rpc call's (until its on_end) and the replay queue's */
    struct upd *u;
    rpc_ctx *ctx;
    char *node_id;
    uint64_t after;       /* the last event id pushed */
    uint64_t first;       /* the request's last_event_id, for the log */
    enum sub_state state;
    int dirty;            /* published or woken while replaying: read the store again */
    int queued;           /* in the replay queue */
    int done;             /* completed: out of the table, pushes no more */
    int64_t not_before_ms; /* replay waits for the client to drain its queue */
    struct sub *next;     /* hash chain: the node's current subscription */
    struct sub *qnext;    /* replay queue */
} sub;

struct upd {
    store *st;
    int max_streams;
    nodeauth *auth;
    abuse *abuse;
    int64_t retention_s, wake_ms;
    int64_t poll_ms; /* 0: only a wake re-reads the store (one process owns the database) */
    pthread_mutex_t mu;
    pthread_mutex_t pub_mu; /* one publish at a time: pushes in id order */
    sub *buckets[NBUCKETS];
    size_t streams;
    sub *q_head, *q_tail;   /* replay queue */
    pthread_cond_t q_cv;
    pthread_t replayer;
    int replayer_started, stop;
    uint64_t results;   /* bumped by every stored ReportEventResult */
    pthread_cond_t result_cv;
    rpc_method methods[3];
    /* pushers: help the publishing thread push a big publish (one publish at a time: pub_mu) */
    int n_pushers;
    pthread_t pushers[UPD_MAX_PUSHERS];
    pthread_mutex_t p_mu;
    pthread_cond_t p_cv, p_done;
    uint64_t p_gen;
    int p_busy, p_stop;
    struct push_job *p_jobs;
    size_t p_n;
    const store_update *p_ev;
};

/* One event to push to one live stream, outside upd.mu. */
typedef struct push_job {
    sub *x;          /* a reference (dropped under mu afterwards) */
    rpc_ctx *c;      /* held (rpc_ctx_hold): the stream may end meanwhile */
    const char *node_id;
    uint64_t id;
    unsigned part;   /* the pusher that sends it: a node's events stay on one, in order */
    int waiting;     /* what rpc_ctx_push answered */
} push_job;

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Caller holds mu. */
static sub *find(upd *u, const char *node_id, sub ***slot)
{
    sub **p = &u->buckets[hash_str(node_id) % NBUCKETS];
    while (*p && strcmp((*p)->node_id, node_id) != 0) p = &(*p)->next;
    if (slot) *slot = p;
    return *p;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* An UpdateEvent pointing into s (nothing copied: it is encoded at once by rpc_ctx_push). */
static void fill_event(const store_update *s, Manager__UpdateEvent *e)
{
    manager__update_event__init(e);
    e->event_type = s->kind ? s->kind : "";
    e->component = s->component ? s->component : "";
    e->version = s->version ? s->version : "";
    e->download_url = s->download_url ? s->download_url : "";
    e->hash_sha256 = s->hash_sha256 ? s->hash_sha256 : "";
    e->signature.data = s->signature;
    e->signature.len = s->signature_len;
    e->event_id = s->id;
    e->created_at = s->created_at;
    e->agent_id = s->agent_id ? s->agent_id : "";
    e->payload.data = s->payload;
    e->payload.len = s->payload_len;
    e->operation = s->operation ? s->operation : "";
    e->node_id = s->node_id ? s->node_id : "";
}

/* Caller holds mu. */
static void sub_unref(sub *x)
{
    if (--x->refs > 0) return;
    free(x->node_id);
    free(x);
}

/* Caller holds mu: puts x in the replay queue (once) and wakes the replay thread. */
static void enqueue(upd *u, sub *x, int64_t not_before_ms)
{
    x->state = SUB_REPLAY;
    if (x->queued || x->done) return;
    x->queued = 1;
    x->refs++;
    x->not_before_ms = not_before_ms;
    x->qnext = NULL;
    if (u->q_tail) u->q_tail->qnext = x;
    else u->q_head = x;
    u->q_tail = x;
    pthread_cond_signal(&u->q_cv);
}

/* Caller holds mu: ends x's stream with code (its message set by the caller) and takes it out of
 * the table; the rpc layer's on_end drops the last reference later. */
static void sub_finish(upd *u, sub *x, int code)
{
    if (x->done) return;
    x->done = 1;
    sub **slot;
    if (find(u, x->node_id, &slot) == x) *slot = x->next;
    u->streams--;
    rpc_ctx_complete(x->ctx, code);
}

/* Pushes the jobs of part k (all of them when k < 0). No lock held: a job's stream may end
 * meanwhile, and then its push just returns -1. */
static void run_part(upd *u, int k)
{
    store_update ev = *u->p_ev;
    for (size_t i = 0; i < u->p_n; i++) {
        push_job *j = &u->p_jobs[i];
        if (k >= 0 && j->part != (unsigned)k) continue;
        ev.id = j->id;
        ev.node_id = (char *)j->node_id;
        Manager__UpdateEvent m;
        fill_event(&ev, &m);
        j->waiting = rpc_ctx_push(j->c, &m.base);
    }
}

static void *pusher_main(void *arg)
{
    pthread_setname_np(pthread_self(), "upd-pusher");
    upd *u = ((void **)arg)[0];
    int k = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    uint64_t seen = 0;
    pthread_mutex_lock(&u->p_mu);
    for (;;) {
        while (u->p_gen == seen && !u->p_stop) pthread_cond_wait(&u->p_cv, &u->p_mu);
        if (u->p_stop) break;
        seen = u->p_gen;
        pthread_mutex_unlock(&u->p_mu);
        run_part(u, k);
        pthread_mutex_lock(&u->p_mu);
        if (--u->p_busy == 0) pthread_cond_signal(&u->p_done);
    }
    pthread_mutex_unlock(&u->p_mu);
    return NULL;
}

/* Caller holds pub_mu. Pushes ev to the live streams among the targets: claims each stream's
 * next id under mu (so the replay thread never sends it too), pushes without mu (each push may
 * write to a socket; a big publish is shared with the pusher threads, a node always on the same
 * one), then sends streams whose client fell behind back to replaying. */
static void push_published(upd *u, const store_update *ev, const char *const *node_ids, const uint64_t *ids, size_t n)
{
    push_job *jobs = calloc(n, sizeof *jobs);
    size_t nj = 0;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < n; i++) {
        sub *x = find(u, node_ids[i], NULL);
        if (!x || x->done || ids[i] <= x->after) continue;
        if (x->state != SUB_LIVE || !jobs) { /* replaying: it reads this from the store */
            x->dirty = 1;
            if (!jobs) enqueue(u, x, 0); /* out of memory: the store has it */
            continue;
        }
        x->after = ids[i];
        x->refs++;
        rpc_ctx_hold(x->ctx);
        unsigned parts = (unsigned)u->n_pushers + 1;
        jobs[nj++] = (push_job){x, x->ctx, node_ids[i], ids[i], hash_str(node_ids[i]) % parts, 0};
    }
    pthread_mutex_unlock(&u->mu);
    if (!nj) {
        free(jobs);
        return;
    }
    u->p_jobs = jobs;
    u->p_n = nj;
    u->p_ev = ev;
    if (nj < PUSH_PARALLEL_MIN || u->n_pushers == 0) {
        run_part(u, -1);
    } else {
        pthread_mutex_lock(&u->p_mu);
        u->p_busy = u->n_pushers;
        u->p_gen++;
        pthread_cond_broadcast(&u->p_cv);
        pthread_mutex_unlock(&u->p_mu);
        run_part(u, 0);
        pthread_mutex_lock(&u->p_mu);
        while (u->p_busy > 0) pthread_cond_wait(&u->p_done, &u->p_mu);
        pthread_mutex_unlock(&u->p_mu);
    }
    int64_t later = mono_ms() + REPLAY_DELAY_MS;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < nj; i++) {
        if (jobs[i].waiting + 1 >= UPD_MAX_QUEUED) enqueue(u, jobs[i].x, later);
        sub_unref(jobs[i].x);
    }
    pthread_mutex_unlock(&u->mu);
    for (size_t i = 0; i < nj; i++) rpc_ctx_release(jobs[i].c);
    u->p_jobs = NULL;
    u->p_n = 0;
    free(jobs);
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
    /* The pushed copy: the store's row for each node, built from what was stored. */
    store_update ev_out = {
        .kind = (char *)in.kind, .component = (char *)in.component, .agent_id = (char *)in.agent_id,
        .version = (char *)in.version, .download_url = (char *)in.download_url, .hash_sha256 = (char *)in.hash_sha256,
        .operation = (char *)in.operation, .signature = (uint8_t *)in.signature, .signature_len = in.signature_len,
        .payload = (uint8_t *)in.payload, .payload_len = in.payload_len, .created_at = in.created_at,
    };
    pthread_mutex_lock(&u->pub_mu);
    int rc = store_add_updates(u->st, &in, node_ids, n, ids, err, errlen);
    if (rc == 0) push_published(u, &ev_out, node_ids, ids, n);
    pthread_mutex_unlock(&u->pub_mu);
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
    sub *x = find(u, node_id, NULL);
    if (x) {
        x->dirty = 1;
        enqueue(u, x, 0);
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

/* ---- the replay thread ---------------------------------------------------------------------- */

/* One batch for x (popped from the queue, its queue reference held). Caller holds mu; it is
 * released around the store read. */
static void replay_one(upd *u, sub *x)
{
    if (x->done) return;
    int pending = rpc_ctx_pending(x->ctx);
    if (pending < 0) return; /* over: on_end is on its way */
    if (pending >= REPLAY_RESUME) { /* the client is still reading the last batch */
        enqueue(u, x, mono_ms() + REPLAY_DELAY_MS);
        return;
    }
    uint64_t from = x->after;
    x->dirty = 0;
    char node_id[257];
    snprintf(node_id, sizeof node_id, "%s", x->node_id);
    pthread_mutex_unlock(&u->mu);
    store_update_list l;
    char err[512];
    int rc = store_list_updates_after(u->st, node_id, from, (int64_t)time(NULL) - u->retention_s, REPLAY_BATCH, &l, err,
                                      sizeof err);
    pthread_mutex_lock(&u->mu);
    if (rc != 0) {
        char q[600];
        log_error("update.replay_failed", "node=%s error=%s", node_id, log_quote(q, sizeof q, err));
        if (!x->done) rpc_ctx_errorf(x->ctx, RPC_UNAVAILABLE, "reading events: %s", err);
        sub_finish(u, x, RPC_UNAVAILABLE);
        return;
    }
    int over = 0;
    for (size_t i = 0; i < l.n && !x->done && !over; i++) {
        if (l.items[i].id <= x->after) continue;
        Manager__UpdateEvent m;
        fill_event(&l.items[i], &m);
        if (rpc_ctx_push(x->ctx, &m.base) < 0) over = 1;
        else x->after = l.items[i].id;
    }
    size_t got = l.n;
    pthread_mutex_unlock(&u->mu);
    store_update_list_free(&l);
    pthread_mutex_lock(&u->mu);
    if (x->done || over) return;
    if (got == REPLAY_BATCH || x->dirty) enqueue(u, x, got == REPLAY_BATCH ? mono_ms() + REPLAY_DELAY_MS : 0);
    else x->state = SUB_LIVE; /* from now on publish pushes; nothing newer is in the store */
}

static void *replayer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "upd-replayer");
    upd *u = arg;
    int64_t next_poll = u->poll_ms ? mono_ms() + u->poll_ms : INT64_MAX;
    pthread_mutex_lock(&u->mu);
    while (!u->stop) {
        int64_t now = mono_ms();
        if (now >= next_poll) {
            /* Replicas: a notice from another manager may have been lost; the table has it. */
            for (size_t i = 0; i < NBUCKETS; i++)
                for (sub *x = u->buckets[i]; x; x = x->next)
                    if (x->state == SUB_LIVE) enqueue(u, x, 0);
            next_poll = now + u->poll_ms;
        }
        sub *x = u->q_head;
        if (x && x->not_before_ms <= now) {
            u->q_head = x->qnext;
            if (!u->q_head) u->q_tail = NULL;
            x->queued = 0;
            replay_one(u, x);
            sub_unref(x);
            continue;
        }
        int64_t until = next_poll;
        if (x && x->not_before_ms < until) until = x->not_before_ms;
        if (until == INT64_MAX) {
            pthread_cond_wait(&u->q_cv, &u->mu);
        } else {
            /* the condition variable runs on CLOCK_MONOTONIC (upd_new) */
            struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000L};
            pthread_cond_timedwait(&u->q_cv, &u->mu, &ts);
        }
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

/* ---- the stream ----------------------------------------------------------------------------- */

/* The rpc layer is done with the call (client gone, server stopping, or our status sent). */
static void on_end(rpc_ctx *c, void *user)
{
    sub *x = user;
    upd *u = x->u;
    pthread_mutex_lock(&u->mu);
    int was_done = x->done;
    sub_finish(u, x, RPC_OK); /* client gone or server stopping (the rpc layer says UNAVAILABLE) */
    log_info("update.unsubscribed", "node=%s last_event_id=%llu last_sent=%llu reason=%s", x->node_id,
             (unsigned long long)x->first, (unsigned long long)x->after,
             was_done ? "ended" : rpc_ctx_cancelled(c) ? "gone" : "send_failed");
    sub_unref(x);
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

    sub *x = calloc(1, sizeof *x);
    if (!x || !(x->node_id = strdup(req->node_id))) {
        free(x);
        return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    x->u = u;
    x->ctx = c;
    x->after = x->first = req->last_event_id;
    x->refs = 1; /* the call's, dropped by on_end */
    pthread_mutex_lock(&u->mu);
    if (u->streams >= (size_t)u->max_streams) {
        pthread_mutex_unlock(&u->mu);
        free(x->node_id);
        free(x);
        uint64_t held = 0;
        rpc_ctx_quiet_log(c);
        if (!u->abuse || abuse_note(u->abuse, rpc_ctx_peer(c), "update_streams", mono_ms(), &held))
            log_warn("update.stream_refused", "node=%s peer=%s limit=%d held=%llu reason=\"too many update streams (limits.max_update_streams)\"",
                     req->node_id, rpc_ctx_peer(c), u->max_streams, (unsigned long long)held);
        return rpc_ctx_errorf(c, RPC_RESOURCE_EXHAUSTED, "too many update streams (limit %d, limits.max_update_streams)", u->max_streams);
    }
    /* From here on another thread may end this call (a newer subscription of the node): the
     * handler touches neither c's arena nor x after unlocking. */
    rpc_ctx_on_end(c, on_end, x);
    sub **slot;
    sub *old = find(u, req->node_id, &slot);
    if (old) {
        rpc_ctx_errorf(old->ctx, RPC_ABORTED, "a newer subscription of node %s replaced this one", req->node_id);
        sub_finish(u, old, RPC_ABORTED);
        find(u, req->node_id, &slot);
    }
    x->next = *slot;
    *slot = x;
    u->streams++;
    enqueue(u, x, 0); /* replay what the node missed, then live */
    pthread_mutex_unlock(&u->mu);
    log_info("update.subscribed", "node=%s last_event_id=%llu peer=%s", req->node_id, (unsigned long long)req->last_event_id,
             rpc_ctx_peer(c));
    return RPC_PENDING;
}

/* A ReportEventResult waiting for its commit. In the call's arena; the request's strings live
 * as long as the call. */
typedef struct result_call {
    upd *u;
    rpc_ctx *c;
    Manager__EventResultResponse *resp;
    const char *node_id, *outcome, *message;
    uint64_t event_id;
} result_call;

/* On the store's writer thread (or this one when refused at once): answer the call. */
static void result_stored(void *user, int rc, const char *err, int found)
{
    result_call *r = user;
    rpc_ctx *c = r->c;
    if (rc != 0) {
        rpc_ctx_complete(c, rpc_ctx_errorf(c, RPC_UNAVAILABLE, "storing the result: %s", err));
        return;
    }
    if (!found) {
        rpc_ctx_complete(c, rpc_ctx_errorf(c, RPC_NOT_FOUND, "node %s has no event %llu", r->node_id,
                                           (unsigned long long)r->event_id));
        return;
    }
    upd *u = r->u;
    pthread_mutex_lock(&u->mu);
    u->results++;
    pthread_cond_broadcast(&u->result_cv);
    pthread_mutex_unlock(&u->mu);
    char q[4200];
    log_info("update.result", "node=%s event_id=%llu outcome=%s message=%s", r->node_id, (unsigned long long)r->event_id,
             r->outcome, log_quote(q, sizeof q, r->message));
    r->resp->success = 1;
    r->resp->message = rpc_ctx_strdup(c, "recorded");
    rpc_ctx_complete(c, RPC_OK);
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
    result_call *rc = rpc_ctx_alloc(c, sizeof *rc);
    rc->u = u;
    rc->c = c;
    rc->resp = resp;
    rc->node_id = req->node_id;
    rc->event_id = req->event_id;
    rc->outcome = req->outcome;
    rc->message = req->message;
    /* The write waits for a group commit: the call waits without a thread (RPC_PENDING). */
    store_set_update_result_async(u->st, req->node_id, req->event_id, req->outcome, req->message, (int64_t)time(NULL),
                                  result_stored, rc);
    return RPC_PENDING;
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&u->q_cv, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&u->replayer, NULL, replayer_main, u);
    if (e != 0) {
        snprintf(err, errlen, "cannot start the update replay thread: %s", strerror(e));
        pthread_cond_destroy(&u->q_cv);
        pthread_cond_destroy(&u->result_cv);
        pthread_mutex_destroy(&u->pub_mu);
        pthread_mutex_destroy(&u->mu);
        free(u);
        return NULL;
    }
    u->replayer_started = 1;
    pthread_mutex_init(&u->p_mu, NULL);
    pthread_cond_init(&u->p_cv, NULL);
    pthread_cond_init(&u->p_done, NULL);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* Two pushing threads per core, the publishing thread one of them. A publish is the one
     * burst whose latency the fleet sees as a whole, and on a busy manager the scheduler shares
     * the cores per thread: with one per core the pushers got ~25% of a core each among the
     * workers, the writer and the results the publish itself brings back (bench/RESULTS.md). */
    int want = ncpu > 0 ? (int)(2 * ncpu - 1) : 1;
    if (want > UPD_MAX_PUSHERS) want = UPD_MAX_PUSHERS;
    for (int k = 0; k < want; k++) {
        void **arg = malloc(2 * sizeof *arg);
        if (!arg) break;
        arg[0] = u;
        arg[1] = (void *)(intptr_t)(k + 1);
        if (pthread_create(&u->pushers[k], NULL, pusher_main, arg) != 0) {
            free(arg);
            break; /* fewer helpers: the publisher pushes more itself */
        }
        u->n_pushers++;
    }
    u->methods[0] = (rpc_method){"/manager.ManagerService/SubscribeUpdates", &manager__subscribe_updates_request__descriptor,
                                 &manager__update_event__descriptor, NULL, subscribe, u, RPC_METHOD_ASYNC};
    u->methods[1] = (rpc_method){"/manager.ManagerService/ReportEventResult", &manager__event_result_request__descriptor,
                                 &manager__event_result_response__descriptor, report_result, NULL, u, 0};
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
    pthread_mutex_lock(&u->mu);
    u->stop = 1;
    pthread_cond_signal(&u->q_cv);
    pthread_mutex_unlock(&u->mu);
    if (u->replayer_started) pthread_join(u->replayer, NULL);
    pthread_mutex_lock(&u->p_mu);
    u->p_stop = 1;
    pthread_cond_broadcast(&u->p_cv);
    pthread_mutex_unlock(&u->p_mu);
    for (int k = 0; k < u->n_pushers; k++) pthread_join(u->pushers[k], NULL);
    pthread_cond_destroy(&u->p_cv);
    pthread_cond_destroy(&u->p_done);
    pthread_mutex_destroy(&u->p_mu);
    /* The server has stopped, so every call's on_end has run: what is left is queue references. */
    pthread_mutex_lock(&u->mu);
    while (u->q_head) {
        sub *x = u->q_head;
        u->q_head = x->qnext;
        sub_unref(x);
    }
    pthread_mutex_unlock(&u->mu);
    pthread_cond_destroy(&u->q_cv);
    pthread_cond_destroy(&u->result_cv);
    pthread_mutex_destroy(&u->pub_mu);
    pthread_mutex_destroy(&u->mu);
    free(u);
}
