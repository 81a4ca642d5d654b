/* events: one mutex over the subscriber list and every queue; each subscriber sleeps on its
 * own condition variable so a publish wakes only the ones it queued for. */
#include "manager/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_QUEUE 1024

/* An event and its strings in one allocation, shared by the queues it sits in. */
typedef struct ev {
    evhub_event pub; /* first: evhub_event_release() casts back */
    atomic_int refs;
    char text[];
} ev;

struct evhub_sub {
    evhub *hub;
    char **kinds; /* prefixes; n_kinds 0 = every kind */
    size_t n_kinds;
    char *node_id; /* "" = every node */
    ev **ring;
    size_t cap, head, count;
    int dropped;
    pthread_cond_t cv;
    struct evhub_sub *prev, *next;
};

struct evhub {
    evhub_opts o;
    pthread_mutex_t mu;
    uint64_t last_id;
    int closed;
    evhub_sub *subs;
    size_t n_subs;
    pthread_mutex_t fmu; /* the forward hook; held while it runs */
    evhub_forward_fn forward;
    void *forward_user;
};

static int64_t real_clock(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

evhub *evhub_new(const evhub_opts *o, char *err, size_t errlen)
{
    evhub *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "event hub: out of memory");
        return NULL;
    }
    if (o) h->o = *o;
    if (!h->o.queue_len) h->o.queue_len = DEFAULT_QUEUE;
    if (!h->o.clock) h->o.clock = real_clock;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->fmu, NULL);
    return h;
}

void evhub_close(evhub *h)
{
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->closed = 1;
    for (evhub_sub *s = h->subs; s; s = s->next) pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&h->mu);
}

void evhub_free(evhub *h)
{
    if (!h) return;
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->fmu);
    free(h);
}

void evhub_event_release(evhub_event *e)
{
    if (!e) return;
    ev *x = (ev *)e;
    if (atomic_fetch_sub(&x->refs, 1) == 1) free(x);
}

static int wants(const evhub_sub *s, const char *kind, const char *node_id)
{
    if (s->node_id[0] && strcmp(s->node_id, node_id) != 0) return 0;
    if (!s->n_kinds) return 1;
    for (size_t i = 0; i < s->n_kinds; i++)
        if (strncmp(kind, s->kinds[i], strlen(s->kinds[i])) == 0) return 1;
    return 0;
}

/* Copies the strings after the header: one malloc per event whatever its fields. */
static ev *ev_make(uint64_t id, int64_t ts, const char *const f[6])
{
    size_t len[6], total = 0;
    for (int i = 0; i < 6; i++) total += (len[i] = strlen(f[i])) + 1;
    ev *x = malloc(sizeof *x + total);
    if (!x) return NULL;
    const char **dst[6] = {&x->pub.kind, &x->pub.node_id, &x->pub.agent_id, &x->pub.status,
                           &x->pub.previous_status, &x->pub.detail};
    char *p = x->text;
    for (int i = 0; i < 6; i++) {
        memcpy(p, f[i], len[i] + 1);
        *dst[i] = p;
        p += len[i] + 1;
    }
    x->pub.id = id;
    x->pub.ts = ts;
    atomic_init(&x->refs, 0);
    return x;
}

static void publish(evhub *h, const char *kind, const char *node_id, const char *agent_id,
                    const char *status, const char *previous_status, const char *detail)
{
    const char *f[6] = {kind ? kind : "", node_id ? node_id : "", agent_id ? agent_id : "",
                        status ? status : "", previous_status ? previous_status : "",
                        detail ? detail : ""};
    int64_t ts = h->o.clock(h->o.clock_ctx);
    pthread_mutex_lock(&h->mu);
    uint64_t id = ++h->last_id;
    /* Built under the lock only when someone listens: most of the time nobody does. */
    ev *x = NULL;
    int made = 0;
    for (evhub_sub *s = h->subs; s; s = s->next) {
        if (s->dropped || !wants(s, f[0], f[1])) continue;
        if (!made) {
            x = ev_make(id, ts, f);
            made = 1;
        }
        if (!x || s->count == s->cap) {
            s->dropped = 1; /* fell behind (or would silently miss this one) */
        } else {
            atomic_fetch_add(&x->refs, 1);
            s->ring[(s->head + s->count++) % s->cap] = x;
        }
        pthread_cond_signal(&s->cv);
    }
    if (x && atomic_load(&x->refs) == 0) free(x);
    pthread_mutex_unlock(&h->mu);
}

void evhub_publish(evhub *h, const char *kind, const char *node_id, const char *agent_id,
                   const char *status, const char *previous_status, const char *detail)
{
    if (!h) return;
    publish(h, kind, node_id, agent_id, status, previous_status, detail);
    pthread_mutex_lock(&h->fmu);
    if (h->forward) {
        evhub_event e = {.id = 0, .ts = h->o.clock(h->o.clock_ctx), .kind = kind ? kind : "",
                         .node_id = node_id ? node_id : "", .agent_id = agent_id ? agent_id : "",
                         .status = status ? status : "",
                         .previous_status = previous_status ? previous_status : "",
                         .detail = detail ? detail : ""};
        h->forward(h->forward_user, &e);
    }
    pthread_mutex_unlock(&h->fmu);
}

void evhub_publish_remote(evhub *h, const char *kind, const char *node_id, const char *agent_id,
                          const char *status, const char *previous_status, const char *detail)
{
    if (h) publish(h, kind, node_id, agent_id, status, previous_status, detail);
}

void evhub_set_forward(evhub *h, evhub_forward_fn fn, void *user)
{
    if (!h) return;
    pthread_mutex_lock(&h->fmu);
    h->forward = fn;
    h->forward_user = user;
    pthread_mutex_unlock(&h->fmu);
}

static void sub_free(evhub_sub *s)
{
    for (size_t i = 0; i < s->count; i++) evhub_event_release(&s->ring[(s->head + i) % s->cap]->pub);
    for (size_t i = 0; i < s->n_kinds; i++) free(s->kinds[i]);
    free(s->kinds);
    free(s->node_id);
    free(s->ring);
    pthread_cond_destroy(&s->cv);
    free(s);
}

evhub_sub *evhub_subscribe(evhub *h, const char *const *kinds, size_t n_kinds,
                           const char *node_id, char *err, size_t errlen)
{
    evhub_sub *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    pthread_cond_init(&s->cv, NULL);
    s->hub = h;
    s->cap = h->o.queue_len;
    s->ring = calloc(s->cap, sizeof *s->ring);
    s->node_id = strdup(node_id ? node_id : "");
    if (!s->ring || !s->node_id) goto oom;
    int all = n_kinds == 0;
    for (size_t i = 0; i < n_kinds; i++)
        if (!kinds[i] || !kinds[i][0]) all = 1;
    if (!all) {
        s->kinds = calloc(n_kinds, sizeof *s->kinds);
        if (!s->kinds) goto oom;
        for (size_t i = 0; i < n_kinds; i++) {
            if (!(s->kinds[i] = strdup(kinds[i]))) goto oom;
            s->n_kinds++;
        }
    }
    pthread_mutex_lock(&h->mu);
    if (h->closed) {
        pthread_mutex_unlock(&h->mu);
        snprintf(err, errlen, "event hub is closing");
        sub_free(s);
        return NULL;
    }
    s->next = h->subs;
    if (h->subs) h->subs->prev = s;
    h->subs = s;
    h->n_subs++;
    pthread_mutex_unlock(&h->mu);
    return s;
oom:
    snprintf(err, errlen, "event hub: out of memory");
    if (s) sub_free(s);
    return NULL;
}

evhub_wait evhub_next(evhub_sub *s, int64_t timeout_ms, evhub_event **out)
{
    evhub *h = s->hub;
    *out = NULL;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms < 0) timeout_ms = 0;
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    evhub_wait rc;
    for (;;) {
        /* A dropped subscriber is told at once, not after draining: what it still holds has a
         * gap after it, and a watcher would rather start over than act on a partial story. */
        if (s->dropped) { rc = EVHUB_DROPPED; break; }
        if (s->count) {
            *out = &s->ring[s->head]->pub;
            s->head = (s->head + 1) % s->cap;
            s->count--;
            rc = EVHUB_EVENT;
            break;
        }
        if (h->closed) { rc = EVHUB_CLOSED; break; }
        if (pthread_cond_timedwait(&s->cv, &h->mu, &until) == ETIMEDOUT && !s->count &&
            !s->dropped && !h->closed) {
            rc = EVHUB_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void evhub_unsubscribe(evhub_sub *s)
{
    if (!s) return;
    evhub *h = s->hub;
    pthread_mutex_lock(&h->mu);
    if (s->prev) s->prev->next = s->next;
    else h->subs = s->next;
    if (s->next) s->next->prev = s->prev;
    h->n_subs--;
    pthread_mutex_unlock(&h->mu);
    sub_free(s);
}

uint64_t evhub_last_id(evhub *h)
{
    pthread_mutex_lock(&h->mu);
    uint64_t id = h->last_id;
    pthread_mutex_unlock(&h->mu);
    return id;
}

size_t evhub_subscribers(evhub *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->n_subs;
    pthread_mutex_unlock(&h->mu);
    return n;
}
