/* liveness: which nodes are online, decided in memory so a heartbeat never waits for a disk.
 *
 * Owns: the table node_id -> (last_seen, online), sharded under 16 locks; the queue of
 * online/offline transitions not yet stored; one background thread that every flush_interval
 * writes changed entries to the store (store_touch_nodes) with the queued transitions
 * (store_add_node_events), and every sweep_interval marks offline the nodes silent for longer
 * than offline_after (logged as node.offline node=... last_seen=...). A heartbeat on an offline
 * node brings it back online (logged as node.online). Borrows the store, which must outlive it.
 *
 * Times are milliseconds since the Unix epoch, read from cfg.clock (injectable for tests). The
 * table is loaded from the store at start; nodes the store says are online get a fresh
 * offline_after from that moment, so restarting the manager does not flap the whole fleet.
 *
 * Replicas (store_is_shared): heartbeats also land on other managers, so every sweep interval
 * the table merges the store's nodes (the later last_seen wins) and only the leader
 * (store_is_leader) sweeps and decides transitions -- each logged, stored and published once
 * fleet-wide; followers take the status from the store and write last_seen only. The manual
 * liveness_sweep() below is the single-process sweep. */
#ifndef OPS_MANAGER_LIVENESS_H
#define OPS_MANAGER_LIVENESS_H

#include <stddef.h>
#include <stdint.h>

#include "manager/events.h"
#include "manager/store.h"

typedef struct liveness liveness;

typedef int64_t (*liveness_clock_fn)(void *ctx);

typedef struct liveness_config {
    int64_t offline_after_ms;  /* > 0 */
    int64_t flush_interval_ms; /* 0 = 2000 */
    int64_t sweep_interval_ms; /* 0 = 1000 */
    liveness_clock_fn clock;   /* NULL = the real time */
    void *clock_ctx;
    int manual;                /* 1: no background thread; the caller runs sweep and flush */
    evhub *hub;                /* may be NULL: where node.online / node.offline are published */
} liveness_config;

/* Loads every node of st and starts the background thread. NULL with err on failure. */
liveness *liveness_new(const liveness_config *cfg, store *st, char *err, size_t errlen);
/* Stops the thread and flushes what is pending (a failure is logged). NULL is a no-op. */
void liveness_free(liveness *l);

/* The configured clock's current time. */
int64_t liveness_now(const liveness *l);
/* Records a heartbeat. Returns 1 if the node is in the table (its last_seen is updated; an
 * offline node comes back online), 0 if it is unknown (nothing recorded: register it, or add a
 * placeholder to the store, then call liveness_register). */
int liveness_heartbeat(liveness *l, const char *node_id, int64_t now_ms);
/* After the node's row was written to the store (register or placeholder): adds it online, or
 * brings an existing entry online. Returns 0, or -1 when out of memory. */
int liveness_register(liveness *l, const char *node_id, int64_t now_ms);
/* After store_delete_node: forgets the node. */
void liveness_remove(liveness *l, const char *node_id);
/* 1 and *online / *last_seen_ms (either may be NULL) if known, else 0. */
int liveness_get(liveness *l, const char *node_id, int *online, int64_t *last_seen_ms);
void liveness_counts(liveness *l, size_t *online, size_t *offline);

/* Marks offline every online node silent for longer than offline_after as of now (the clock).
 * Returns how many went offline. The background thread calls it every sweep_interval. */
size_t liveness_sweep(liveness *l);
/* Writes changed entries and queued transitions to the store now. Returns 0, or -1 with err
 * (what failed stays pending for the next flush). */
int liveness_flush(liveness *l, char *err, size_t errlen);

#endif
