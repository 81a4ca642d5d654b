/* liveness: the in-memory online/offline table, written behind to the store. */
#include "manager/liveness.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

#define SHARDS 16
#define DEFAULT_FLUSH_MS 2000
#define DEFAULT_SWEEP_MS 1000

typedef struct entry {
    char *id;
    int64_t last_seen_ms;
    int64_t grace_ms; /* silence is counted from max(last_seen, grace): see liveness.h */
    int online;
    int dirty;        /* differs from what the store has */
    struct entry *next;
} entry;

typedef struct shard {
    pthread_mutex_t mu;
    entry **buckets;
    size_t nbuckets, count;
} shard;

typedef struct pending_event {
    char *node_id;
    const char *event; /* "online" / "offline" */
    int64_t at;        /* Unix seconds */
} pending_event;

struct liveness {
    liveness_config cfg;
    store *st;
    int shared;     /* other replicas share the store: see sync_from_store */
    int was_leader; /* liveness thread only */
    shard shards[SHARDS];

    pthread_mutex_t ev_mu;
    pending_event *events;
    size_t n_events, cap_events;

    pthread_mutex_t flush_mu; /* one flush at a time */

    pthread_t thread;
    int thread_started, stopping;
    pthread_mutex_t th_mu;
    pthread_cond_t th_cv;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static shard *shard_of(liveness *l, const char *id, uint64_t *h)
{
    *h = hash_str(id);
    return &l->shards[*h % SHARDS];
}

static entry *find(shard *sh, const char *id, uint64_t h)
{
    if (!sh->nbuckets) return NULL;
    for (entry *e = sh->buckets[(h / SHARDS) % sh->nbuckets]; e; e = e->next)
        if (strcmp(e->id, id) == 0) return e;
    return NULL;
}

/* Adds a new entry for id (which must not be present). NULL when out of memory. */
static entry *insert(shard *sh, const char *id, uint64_t h)
{
    if (sh->count + 1 > sh->nbuckets * 2) {
        size_t nb = sh->nbuckets ? sh->nbuckets * 2 : 64;
        entry **b = calloc(nb, sizeof *b);
        if (!b) return NULL;
        for (size_t i = 0; i < sh->nbuckets; i++) {
            for (entry *e = sh->buckets[i], *next; e; e = next) {
                next = e->next;
                size_t j = (hash_str(e->id) / SHARDS) % nb;
                e->next = b[j];
                b[j] = e;
            }
        }
        free(sh->buckets);
        sh->buckets = b;
        sh->nbuckets = nb;
    }
    entry *e = calloc(1, sizeof *e);
    if (!e || !(e->id = strdup(id))) {
        free(e);
        return NULL;
    }
    size_t j = (h / SHARDS) % sh->nbuckets;
    e->next = sh->buckets[j];
    sh->buckets[j] = e;
    sh->count++;
    return e;
}

static int64_t real_clock(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t liveness_now(const liveness *l)
{
    return l->cfg.clock(l->cfg.clock_ctx);
}

/* Node ids come from the network: quote them in log lines unless they are plain words. */
static const char *log_id(char *buf, size_t n, const char *id)
{
    for (const char *c = id; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.' || *c == ':'))
            return log_quote(buf, n, id);
    }
    return *id ? id : log_quote(buf, n, id);
}

/* Queues a transition for the store. Losing one to a failed allocation only loses history. */
static void queue_event(liveness *l, const char *id, const char *event, int64_t at_ms)
{
    char *copy = strdup(id);
    if (!copy) return;
    pthread_mutex_lock(&l->ev_mu);
    if (l->n_events == l->cap_events) {
        size_t nc = l->cap_events ? l->cap_events * 2 : 64;
        pending_event *ne = realloc(l->events, nc * sizeof *ne);
        if (!ne) {
            pthread_mutex_unlock(&l->ev_mu);
            free(copy);
            return;
        }
        l->events = ne;
        l->cap_events = nc;
    }
    l->events[l->n_events++] = (pending_event){copy, event, at_ms / 1000};
    pthread_mutex_unlock(&l->ev_mu);
}

/* Whether this process decides transitions. With replicas only the leader does, so that each
 * is published and stored once fleet-wide; a follower only records when it heard a node. */
static int leading(liveness *l)
{
    return !l->shared || store_is_leader(l->st);
}

/* Called with the entry's shard locked. */
static void come_online(liveness *l, entry *e, int64_t now_ms)
{
    int64_t prev = e->last_seen_ms;
    e->online = 1;
    e->dirty = 1;
    if (!leading(l)) return; /* the leader sees the new last_seen in the store and says so */
    char b[160];
    log_info("node.online", "node=%s last_seen=%lld", log_id(b, sizeof b, e->id),
             (long long)(prev / 1000));
    queue_event(l, e->id, "online", now_ms);
    evhub_publish(l->cfg.hub, "node.online", e->id, "", "online", "offline", "heartbeat after silence");
}

int liveness_heartbeat(liveness *l, const char *node_id, int64_t now_ms)
{
    uint64_t h;
    shard *sh = shard_of(l, node_id, &h);
    pthread_mutex_lock(&sh->mu);
    entry *e = find(sh, node_id, h);
    if (e) {
        if (!e->online) come_online(l, e, now_ms);
        if (now_ms > e->last_seen_ms) e->last_seen_ms = now_ms;
        e->dirty = 1;
    }
    pthread_mutex_unlock(&sh->mu);
    return e != NULL;
}

int liveness_register(liveness *l, const char *node_id, int64_t now_ms)
{
    uint64_t h;
    shard *sh = shard_of(l, node_id, &h);
    pthread_mutex_lock(&sh->mu);
    entry *e = find(sh, node_id, h);
    int rc = 0;
    if (!e) {
        /* The store row was just written online with last_seen = now: nothing to flush. */
        e = insert(sh, node_id, h);
        if (e) {
            e->online = 1;
            e->last_seen_ms = now_ms;
        } else {
            rc = -1;
        }
    } else {
        if (!e->online) come_online(l, e, now_ms);
        if (now_ms > e->last_seen_ms) e->last_seen_ms = now_ms;
        e->dirty = 1;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

void liveness_remove(liveness *l, const char *node_id)
{
    uint64_t h;
    shard *sh = shard_of(l, node_id, &h);
    pthread_mutex_lock(&sh->mu);
    if (sh->nbuckets) {
        entry **pp = &sh->buckets[(h / SHARDS) % sh->nbuckets];
        for (; *pp; pp = &(*pp)->next) {
            if (strcmp((*pp)->id, node_id) != 0) continue;
            entry *e = *pp;
            *pp = e->next;
            free(e->id);
            free(e);
            sh->count--;
            break;
        }
    }
    pthread_mutex_unlock(&sh->mu);
}

int liveness_get(liveness *l, const char *node_id, int *online, int64_t *last_seen_ms)
{
    uint64_t h;
    shard *sh = shard_of(l, node_id, &h);
    pthread_mutex_lock(&sh->mu);
    entry *e = find(sh, node_id, h);
    if (e) {
        if (online) *online = e->online;
        if (last_seen_ms) *last_seen_ms = e->last_seen_ms;
    }
    pthread_mutex_unlock(&sh->mu);
    return e != NULL;
}

void liveness_counts(liveness *l, size_t *online, size_t *offline)
{
    size_t on = 0, off = 0;
    for (int i = 0; i < SHARDS; i++) {
        shard *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        for (size_t b = 0; b < sh->nbuckets; b++)
            for (entry *e = sh->buckets[b]; e; e = e->next) *(e->online ? &on : &off) += 1;
        pthread_mutex_unlock(&sh->mu);
    }
    if (online) *online = on;
    if (offline) *offline = off;
}

size_t liveness_sweep(liveness *l)
{
    int64_t now = liveness_now(l);
    size_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        shard *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        for (size_t b = 0; b < sh->nbuckets; b++) {
            for (entry *e = sh->buckets[b]; e; e = e->next) {
                if (!e->online) continue;
                int64_t since = e->last_seen_ms > e->grace_ms ? e->last_seen_ms : e->grace_ms;
                if (now - since <= l->cfg.offline_after_ms) continue;
                e->online = 0;
                e->dirty = 1;
                char buf[160];
                log_info("node.offline", "node=%s last_seen=%lld", log_id(buf, sizeof buf, e->id),
                         (long long)(e->last_seen_ms / 1000));
                queue_event(l, e->id, "offline", now);
                char why[64];
                snprintf(why, sizeof why, "silent for %lld ms", (long long)(now - since));
                evhub_publish(l->cfg.hub, "node.offline", e->id, "", "offline", "online", why);
                n++;
            }
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return n;
}

static void mark_dirty(liveness *l, const char *id)
{
    uint64_t h;
    shard *sh = shard_of(l, id, &h);
    pthread_mutex_lock(&sh->mu);
    entry *e = find(sh, id, h);
    if (e) e->dirty = 1;
    pthread_mutex_unlock(&sh->mu);
}

/* Snapshot of the dirty entries (their flags cleared): a heartbeat during the write sets the
 * flag again, so nothing newer is lost. */
static int collect_dirty(liveness *l, store_touch **out, size_t *n)
{
    int lead = leading(l);
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    int rc = 0;
    for (int i = 0; i < SHARDS && rc == 0; i++) {
        shard *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        for (size_t b = 0; b < sh->nbuckets && rc == 0; b++) {
            for (entry *e = sh->buckets[b]; e; e = e->next) {
                if (!e->dirty) continue;
                if (*n == cap) {
                    size_t nc = cap ? cap * 2 : 256;
                    store_touch *nt = realloc(*out, nc * sizeof *nt);
                    if (!nt) { rc = -1; break; }
                    *out = nt;
                    cap = nc;
                }
                char *id = strdup(e->id);
                if (!id) { rc = -1; break; }
                (*out)[(*n)++] = (store_touch){id, e->last_seen_ms / 1000,
                                                !lead ? STORE_NODE_ANY
                                                : e->online ? STORE_NODE_ONLINE : STORE_NODE_OFFLINE};
                e->dirty = 0;
            }
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return rc;
}

int liveness_flush(liveness *l, char *err, size_t errlen)
{
    char local[256];
    if (!err || !errlen) { err = local; errlen = sizeof local; }
    pthread_mutex_lock(&l->flush_mu);
    store_touch *t;
    size_t n;
    int rc = 0;
    if (collect_dirty(l, &t, &n) < 0) {
        snprintf(err, errlen, "liveness flush: out of memory");
        rc = -1;
    }
    if (rc == 0 && n && store_touch_nodes(l->st, t, n, err, errlen) < 0) rc = -1;
    if (rc < 0)
        for (size_t i = 0; i < n; i++) mark_dirty(l, t[i].node_id);
    for (size_t i = 0; i < n; i++) free((char *)t[i].node_id);
    free(t);

    pthread_mutex_lock(&l->ev_mu);
    pending_event *ev = l->events;
    size_t nev = l->n_events;
    l->events = NULL;
    l->n_events = l->cap_events = 0;
    pthread_mutex_unlock(&l->ev_mu);
    if (nev) {
        store_event_in *in = calloc(nev, sizeof *in);
        int erc = -1;
        char eerr[256];
        if (in) {
            for (size_t i = 0; i < nev; i++)
                in[i] = (store_event_in){ev[i].node_id, ev[i].event, ev[i].at};
            erc = store_add_node_events(l->st, in, nev, eerr, sizeof eerr);
            free(in);
        } else {
            snprintf(eerr, sizeof eerr, "liveness flush: out of memory");
        }
        if (erc == 0) {
            for (size_t i = 0; i < nev; i++) free(ev[i].node_id);
            free(ev);
        } else {
            if (rc == 0) snprintf(err, errlen, "%s", eerr);
            rc = -1;
            /* Put them back in front of anything queued meanwhile, keeping their order. */
            pthread_mutex_lock(&l->ev_mu);
            pending_event *merged = realloc(ev, (nev + l->n_events) * sizeof *merged);
            if (merged) {
                if (l->n_events) memcpy(merged + nev, l->events, l->n_events * sizeof *merged);
                free(l->events);
                l->events = merged;
                l->n_events += nev;
                l->cap_events = l->n_events;
            } else {
                for (size_t i = 0; i < nev; i++) free(ev[i].node_id);
                free(ev);
            }
            pthread_mutex_unlock(&l->ev_mu);
        }
    }
    pthread_mutex_unlock(&l->flush_mu);
    return rc;
}

/* Replicas: merges what the store knows, since heartbeats also land on other replicas and the
 * leader decides the status. Every node's last_seen becomes the later of ours and the store's
 * (which other replicas write behind every flush_interval). A follower, and a replica that has
 * just become leader, take the status from the store (the latter with a fresh offline_after, as
 * at start); the leader brings online an offline node heard from within offline_after. Nodes
 * registered elsewhere are added; deleted ones go when the node.deleted notice arrives
 * (liveness_remove). -1 when the store cannot be read: the caller skips the sweep then, as it
 * would judge by stale times. */
static int sync_from_store(liveness *l)
{
    int lead = leading(l);
    int fresh = lead && !l->was_leader;
    store_node_list nodes;
    char err[256];
    if (store_list_nodes(l->st, NULL, &nodes, err, sizeof err) != 0) {
        log_debug("liveness.sync_failed", "error=\"%s\"", err);
        return -1;
    }
    l->was_leader = lead;
    int64_t now = liveness_now(l);
    for (size_t i = 0; i < nodes.n; i++) {
        const store_node *n = &nodes.items[i];
        int store_online = n->status == STORE_NODE_ONLINE;
        uint64_t h;
        shard *sh = shard_of(l, n->node_id, &h);
        pthread_mutex_lock(&sh->mu);
        entry *e = find(sh, n->node_id, h);
        if (!e) {
            if ((e = insert(sh, n->node_id, h))) {
                e->online = store_online;
                e->last_seen_ms = n->last_seen * 1000;
                e->grace_ms = now;
            }
        } else {
            if (n->last_seen * 1000 > e->last_seen_ms) e->last_seen_ms = n->last_seen * 1000;
            if (!lead || fresh) {
                e->online = store_online;
                if (fresh) e->grace_ms = now;
            } else if (!e->online && now - e->last_seen_ms <= l->cfg.offline_after_ms) {
                come_online(l, e, now);
            }
        }
        pthread_mutex_unlock(&sh->mu);
    }
    store_node_list_free(&nodes);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *thread_main(void *arg)
{
    pthread_setname_np(pthread_self(), "liveness");
    liveness *l = arg;
    int64_t next_flush = mono_ms() + l->cfg.flush_interval_ms;
    int64_t next_sweep = mono_ms() + l->cfg.sweep_interval_ms;
    pthread_mutex_lock(&l->th_mu);
    while (!l->stopping) {
        int64_t wake = next_flush < next_sweep ? next_flush : next_sweep;
        struct timespec ts = {.tv_sec = wake / 1000, .tv_nsec = (wake % 1000) * 1000000};
        int w = pthread_cond_timedwait(&l->th_cv, &l->th_mu, &ts);
        if (l->stopping) break;
        if (w != ETIMEDOUT && w != 0) continue;
        pthread_mutex_unlock(&l->th_mu);
        int64_t now = mono_ms();
        if (now >= next_sweep) {
            if (!l->shared) liveness_sweep(l);
            else if (sync_from_store(l) == 0 && l->was_leader) liveness_sweep(l);
            next_sweep = now + l->cfg.sweep_interval_ms;
        }
        if (now >= next_flush) {
            char err[256];
            if (liveness_flush(l, err, sizeof err) < 0) {
                char q[300];
                log_warn("liveness.flush_failed", "error=%s", log_quote(q, sizeof q, err));
            }
            next_flush = now + l->cfg.flush_interval_ms;
        }
        pthread_mutex_lock(&l->th_mu);
    }
    pthread_mutex_unlock(&l->th_mu);
    return NULL;
}

static void destroy(liveness *l)
{
    for (int i = 0; i < SHARDS; i++) {
        shard *sh = &l->shards[i];
        for (size_t b = 0; b < sh->nbuckets; b++) {
            for (entry *e = sh->buckets[b], *next; e; e = next) {
                next = e->next;
                free(e->id);
                free(e);
            }
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->mu);
    }
    for (size_t i = 0; i < l->n_events; i++) free(l->events[i].node_id);
    free(l->events);
    pthread_mutex_destroy(&l->ev_mu);
    pthread_mutex_destroy(&l->flush_mu);
    pthread_mutex_destroy(&l->th_mu);
    pthread_cond_destroy(&l->th_cv);
    free(l);
}

liveness *liveness_new(const liveness_config *cfg, store *st, char *err, size_t errlen)
{
    if (cfg->offline_after_ms <= 0) {
        snprintf(err, errlen, "liveness: offline_after must be positive");
        return NULL;
    }
    liveness *l = calloc(1, sizeof *l);
    if (!l) { snprintf(err, errlen, "liveness: out of memory"); return NULL; }
    l->cfg = *cfg;
    if (!l->cfg.flush_interval_ms) l->cfg.flush_interval_ms = DEFAULT_FLUSH_MS;
    if (!l->cfg.sweep_interval_ms) l->cfg.sweep_interval_ms = DEFAULT_SWEEP_MS;
    if (!l->cfg.clock) l->cfg.clock = real_clock;
    l->st = st;
    l->shared = store_is_shared(st);
    for (int i = 0; i < SHARDS; i++) pthread_mutex_init(&l->shards[i].mu, NULL);
    pthread_mutex_init(&l->ev_mu, NULL);
    pthread_mutex_init(&l->flush_mu, NULL);
    pthread_mutex_init(&l->th_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->th_cv, &ca);
    pthread_condattr_destroy(&ca);

    store_node_list nodes;
    if (store_list_nodes(st, NULL, &nodes, err, errlen) < 0) {
        destroy(l);
        return NULL;
    }
    int64_t now = liveness_now(l);
    for (size_t i = 0; i < nodes.n; i++) {
        const store_node *n = &nodes.items[i];
        uint64_t h;
        shard *sh = shard_of(l, n->node_id, &h);
        entry *e = insert(sh, n->node_id, h);
        if (!e) {
            snprintf(err, errlen, "liveness: out of memory");
            store_node_list_free(&nodes);
            destroy(l);
            return NULL;
        }
        e->last_seen_ms = n->last_seen * 1000;
        e->online = n->status == STORE_NODE_ONLINE;
        e->grace_ms = now;
    }
    store_node_list_free(&nodes);

    if (!cfg->manual) {
        int perr = pthread_create(&l->thread, NULL, thread_main, l);
        if (perr != 0) {
            snprintf(err, errlen, "liveness: cannot start thread: %s", strerror(perr));
            destroy(l);
            return NULL;
        }
        l->thread_started = 1;
    }
    return l;
}

void liveness_free(liveness *l)
{
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->th_mu);
        l->stopping = 1;
        pthread_cond_signal(&l->th_cv);
        pthread_mutex_unlock(&l->th_mu);
        pthread_join(l->thread, NULL);
    }
    char err[256];
    if (liveness_flush(l, err, sizeof err) < 0) {
        char q[300];
        log_warn("liveness.flush_failed", "error=%s", log_quote(q, sizeof q, err));
    }
    destroy(l);
}
