/* dmetrics: what /metrics on ops-daemon shows -- every configured agent's state (up, status
 * counts), restarts and consecutive failures as the supervisor counts them, its latest
 * resource sample (CPU, RSS, VMS, open files, I/O bytes; only while it has a process), the
 * report spool (records, bytes, dropped) and the link to the manager (registered, heartbeats,
 * reports, syncs), and the agents' heartbeat endpoint counters. Everything is read at scrape
 * time from the parts that own it; nothing is kept here.
 *
 * Cardinality: one series per configured agent and metric, so bounded by the configuration.
 *
 * Owns: nothing but its handle. Borrows the supervisor, the link and the heartbeat endpoint
 * (link and hb may be NULL), which must outlive it (stop the listener serving dmetrics_fill
 * first). Thread-safe as far as the borrowed parts are (they are). */
#ifndef OPS_DAEMON_DMETRICS_H
#define OPS_DAEMON_DMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/prom.h"
#include "daemon/hbhttp.h"
#include "daemon/link.h"
#include "daemon/supervisor.h"

typedef struct dmetrics dmetrics;

typedef struct dmetrics_opts {
    sup *sup;
    link_t *link;
    hbhttp *hb;
    const char *node_id;          /* copied */
    int64_t resource_interval_ms; /* how old a resource sample may be and still be shown */
} dmetrics_opts;

/* NULL with err when out of memory. */
dmetrics *dmetrics_new(const dmetrics_opts *o, char *err, size_t errlen);
void dmetrics_free(dmetrics *d);
/* A prom_fill_fn (user = the dmetrics). 0, or -1 when the supervisor cannot list (memory). */
int dmetrics_fill(void *d, prom_buf *b);

#endif
