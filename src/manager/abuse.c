/* abuse: token buckets per peer and the refusal logger's memory. Both are small chained hash
 * tables keyed by a string; an entry idle for ten intervals is swept when the table is full. */
#include "manager/abuse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define NBUCKETS 1024
#define OVERFLOW_KEY "(too many peers)"

typedef struct entry {
    struct entry *next;
    char *key;
    int64_t used_ms;     /* last touched, for the sweep */
    abuse_bucket bucket; /* register table */
    int64_t logged_ms;   /* log table: when the last line went out; 0 = never */
    uint64_t held;       /* log table: refusals since that line */
} entry;

typedef struct table {
    entry *b[NBUCKETS];
    size_t n;
} table;

struct abuse {
    pthread_mutex_t mu;
    abuse_opts o;
    table reg, log;
};

void abuse_bucket_init(abuse_bucket *b, double burst, int64_t now_ms)
{
    b->tokens = burst;
    b->last_ms = now_ms;
}

int abuse_bucket_take(abuse_bucket *b, double rate, double burst, int64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += rate * (double)(now_ms - b->last_ms) / 1000.0;
        if (b->tokens > burst) b->tokens = burst;
    }
    /* Never move last_ms backwards, or a clock step would refill the bucket twice. */
    if (now_ms > b->last_ms) b->last_ms = now_ms;
    if (b->tokens < 1.0) return 0;
    b->tokens -= 1.0;
    return 1;
}

abuse *abuse_new(const abuse_opts *o, char *err, size_t errlen)
{
    abuse *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->o = *o;
    if (a->o.register_burst <= 0) a->o.register_burst = 10;
    if (a->o.log_interval_ms <= 0) a->o.log_interval_ms = 60000;
    if (!a->o.max_peers) a->o.max_peers = 10000;
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

static void table_clear(table *t)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (entry *e = t->b[i], *next; e; e = next) {
            next = e->next;
            free(e->key);
            free(e);
        }
        t->b[i] = NULL;
    }
    t->n = 0;
}

void abuse_free(abuse *a)
{
    if (!a) return;
    table_clear(&a->reg);
    table_clear(&a->log);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void abuse_peer_host(const char *peer, char *out, size_t n)
{
    if (!n) return;
    const char *p = peer ? peer : "";
    if (!strncmp(p, "ipv4:", 5) || !strncmp(p, "ipv6:", 5)) p += 5;
    size_t len = strlen(p);
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close) {
            p++;
            len = (size_t)(close - p);
        }
    } else {
        const char *colon = strrchr(p, ':');
        /* one colon: host:port; more: a bare IPv6 address without a port */
        if (colon && colon == strchr(p, ':')) len = (size_t)(colon - p);
    }
    if (len >= n) len = n - 1;
    memcpy(out, p, len);
    out[len] = 0;
}

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void sweep(table *t, int64_t idle_before)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        entry **p = &t->b[i];
        while (*p) {
            entry *e = *p;
            if (e->used_ms < idle_before && strcmp(e->key, OVERFLOW_KEY) != 0) {
                *p = e->next;
                free(e->key);
                free(e);
                t->n--;
            } else {
                p = &e->next;
            }
        }
    }
}

/* The entry for key, created when missing (*fresh = 1). Past max_peers after a sweep, every new
 * key shares one overflow entry, so that memory stays bounded whatever the callers send.
 * NULL only when out of memory. Caller holds the mutex. */
static entry *lookup(abuse *a, table *t, const char *key, int64_t now_ms, int *fresh)
{
    *fresh = 0;
    for (int round = 0; round < 2; round++) {
        entry **slot = &t->b[hash_str(key) % NBUCKETS];
        for (entry *e = *slot; e; e = e->next)
            if (!strcmp(e->key, key)) {
                e->used_ms = now_ms;
                return e;
            }
        if (t->n >= a->o.max_peers) {
            sweep(t, now_ms - 10 * a->o.log_interval_ms);
            if (t->n >= a->o.max_peers && round == 0) {
                key = OVERFLOW_KEY;
                continue;
            }
        }
        entry *e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            free(e);
            return NULL;
        }
        e->used_ms = now_ms;
        e->next = *slot;
        *slot = e;
        t->n++;
        *fresh = 1;
        return e;
    }
    return NULL;
}

int abuse_allow_register(abuse *a, const char *peer, int64_t now_ms)
{
    if (a->o.register_rate <= 0) return 1;
    char host[128];
    abuse_peer_host(peer, host, sizeof host);
    pthread_mutex_lock(&a->mu);
    int fresh, ok = 0;
    entry *e = lookup(a, &a->reg, host, now_ms, &fresh);
    if (e) {
        if (fresh) abuse_bucket_init(&e->bucket, a->o.register_burst, now_ms);
        ok = abuse_bucket_take(&e->bucket, a->o.register_rate, a->o.register_burst, now_ms);
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
}

int abuse_note(abuse *a, const char *peer, const char *kind, int64_t now_ms, uint64_t *held)
{
    char key[256], host[128];
    abuse_peer_host(peer, host, sizeof host);
    snprintf(key, sizeof key, "%s %s", host, kind);
    if (held) *held = 0;
    pthread_mutex_lock(&a->mu);
    int fresh, log_now = 0;
    entry *e = lookup(a, &a->log, key, now_ms, &fresh);
    if (!e) {
        log_now = 1; /* out of memory: better a line too many than a refusal unseen */
    } else if (fresh || now_ms - e->logged_ms >= a->o.log_interval_ms) {
        if (held) *held = e->held;
        e->held = 0;
        e->logged_ms = now_ms;
        log_now = 1;
    } else {
        e->held++;
    }
    pthread_mutex_unlock(&a->mu);
    return log_now;
}
