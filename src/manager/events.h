/* events: the manager's in-process event hub -- node registered/online/offline/deleted and
 * agent state changes, fanned out to whoever watches (AdminService.WatchEvents).
 *
 * evhub_publish() is the single way in for what this process notices; it also hands each event
 * to the forward hook (replicas.h sends it to the other replicas). Events that other replicas
 * noticed come in through evhub_publish_remote(), which is not forwarded again. Publishing
 * never blocks on a subscriber: each subscriber has a bounded queue, and one that falls behind
 * is dropped (evhub_next says EVHUB_DROPPED) rather than slowing the publishers down.
 *
 * Owns: the subscriber list, each subscriber's queue, the events (immutable, shared between
 * queues by reference count). Thread-safe. A subscriber belongs to whoever subscribed and must
 * be released with evhub_unsubscribe() before evhub_free(). */
#ifndef OPS_MANAGER_EVENTS_H
#define OPS_MANAGER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct evhub evhub;
typedef struct evhub_sub evhub_sub;

/* One event. Read-only for receivers; released with evhub_event_release(). */
typedef struct evhub_event {
    uint64_t id;       /* increasing within one hub, from 1 */
    int64_t ts;        /* Unix seconds */
    const char *kind;  /* node.registered, node.online, node.offline, node.deleted, agent.state, agent.removed */
    const char *node_id, *agent_id, *status, *previous_status, *detail; /* never NULL */
} evhub_event;

typedef int64_t (*evhub_clock_fn)(void *ctx); /* Unix seconds */

typedef struct evhub_opts {
    size_t queue_len;     /* per subscriber; 0 = 1024 */
    evhub_clock_fn clock; /* NULL = the real time */
    void *clock_ctx;
} evhub_opts;

/* What evhub_next() found. */
typedef enum {
    EVHUB_EVENT = 1,    /* *out is an event */
    EVHUB_TIMEOUT = 0,  /* nothing within the timeout */
    EVHUB_DROPPED = -1, /* the subscriber fell behind and was dropped; unsubscribe */
    EVHUB_CLOSED = -2,  /* the hub is closing; unsubscribe */
} evhub_wait;

/* o may be NULL (defaults). NULL with err when out of memory. */
evhub *evhub_new(const evhub_opts *o, char *err, size_t errlen);
/* Wakes every waiting subscriber with EVHUB_CLOSED; later subscribes fail. Idempotent. */
void evhub_close(evhub *h);
/* Frees the hub; every subscriber must have been unsubscribed. NULL is a no-op. */
void evhub_free(evhub *h);

/* Publishes one event (NULL strings are ""). Never blocks on subscribers. h NULL is a no-op,
 * so parts can publish whether or not a hub was wired in. An event that cannot be allocated
 * drops every subscriber that should have got it (they would otherwise miss it silently). */
void evhub_publish(evhub *h, const char *kind, const char *node_id, const char *agent_id,
                   const char *status, const char *previous_status, const char *detail);

/* An event another replica published: delivered like evhub_publish, not forwarded. */
void evhub_publish_remote(evhub *h, const char *kind, const char *node_id, const char *agent_id,
                          const char *status, const char *previous_status, const char *detail);

/* Called for every evhub_publish (after local delivery, on the publisher's thread; must be
 * quick and must not publish). e lives for the call only. */
typedef void (*evhub_forward_fn)(void *user, const evhub_event *e);
/* fn NULL: none. When this returns, the previous fn is no longer running. */
void evhub_set_forward(evhub *h, evhub_forward_fn fn, void *user);

/* Subscribes to events published from now on whose kind starts with one of kinds (n_kinds 0,
 * or an empty string among them, = every kind) and, when node_id is non-empty, that concern
 * that node. NULL with err when out of memory or closed. */
evhub_sub *evhub_subscribe(evhub *h, const char *const *kinds, size_t n_kinds,
                           const char *node_id, char *err, size_t errlen);
/* Waits up to timeout_ms (0 = just look) for the next event. */
evhub_wait evhub_next(evhub_sub *s, int64_t timeout_ms, evhub_event **out);
void evhub_event_release(evhub_event *e);
/* Releases the subscriber and whatever is still queued for it. NULL is a no-op. */
void evhub_unsubscribe(evhub_sub *s);

/* The id the next event will get minus one (the last assigned), and the subscriber count. */
uint64_t evhub_last_id(evhub *h);
size_t evhub_subscribers(evhub *h);

#endif
