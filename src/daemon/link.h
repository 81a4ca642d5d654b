/* link: the daemon's side of its conversation with the manager. Registers the node (at start
 * and after every reconnect or "node not registered"), heartbeats, reports the host collectors'
 * values, and syncs agent states when they change and at least every minute. Reports go
 * through the on-disk spool, so an outage or a restart loses nothing; reconnects back off
 * exponentially with full jitter so that a fleet does not return in one wave.
 *
 * Owns: the manager channel, the collectors, the spool, and two threads: one collects and
 * spools reports, one talks to the manager. Borrows the supervisor. */
#ifndef OPS_DAEMON_LINK_H
#define OPS_DAEMON_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/dconfig.h"
#include "daemon/supervisor.h"

typedef struct link_s link_t;

typedef struct link_opts {
    const dconfig *cfg;   /* read at start and by link_config_changed; not kept */
    const char *node_id;
    sup *sup;
    int daemon_port;      /* where our DaemonService listens (sent as daemon_address) */
} link_opts;

typedef struct link_stats {
    int registered;
    uint64_t registrations, heartbeats_ok, heartbeats_failed, reports_sent, reports_spooled;
    uint64_t syncs, spool_dropped;
    size_t spool_pending;
    uint64_t spool_bytes;
} link_stats;

link_t *link_start(const link_opts *o, char *err, size_t errlen);
/* An agent changed state: sync soon. Cheap; safe from any thread. */
void link_agents_changed(link_t *l);
/* Labels may have changed (SIGHUP): register again with them. */
void link_config_changed(link_t *l, const dconfig *cfg);
void link_get_stats(link_t *l, link_stats *out);
/* Stops both threads (a call in flight is waited for, at most its timeout). NULL is ignored. */
void link_stop(link_t *l);

/* The daemon's reconnect delay (full jitter, link.c explains the windows): attempt counts failed
 * tries since the last success; lost: an established connection (or update stream) was lost.
 * Shared by the update stream (updater.c) so both follow one policy. */
int64_t link_backoff_ms(int64_t reconnect_ms, int attempt, int lost, unsigned *rng);

#endif
