/* mmetrics: the manager's Prometheus registry -- what /metrics on the manager shows.
 *
 * Counted as it happens: gRPC calls by method and status code with a latency histogram per
 * method (fed by the rpc server's observer), the latest host metric values of each node (fed
 * by ReportMetrics), the last agent states of each node and the restarts the manager saw
 * (fed by SyncAgentStates: a restart is the agent's pid changing from one non-zero value to
 * another between syncs). Computed at scrape time: nodes by status, per node up and seconds
 * since last seen (the liveness table, in memory; the node list is one store read), the store
 * writer's commit latency and batch sizes (store_get_stats), the client pool's size.
 *
 * Label cardinality is bounded, so that a misbehaving or huge fleet cannot blow up the scrape:
 * at most MMETRICS_MAX_METHODS methods (later ones are counted as method "other"), per-node
 * series for at most MMETRICS_MAX_NODES nodes (the first by node_id; ops_metrics_nodes_omitted
 * says how many were left out), at most MMETRICS_MAX_HOST_SERIES (type, key) pairs per node
 * and MMETRICS_MAX_AGENTS agents per node (later ones are ignored). Per-node entries of nodes
 * the liveness table no longer knows (deleted) are dropped at the next scrape. Restart counts
 * live in memory: they start from 0 when the manager starts (a counter reset, which PromQL's
 * rate() and increase() handle), and a node's agent and host series appear with its first
 * sync or report after that (within a minute).
 *
 * Owns: its tables. Borrows the store, the liveness table and the pool (any may be NULL),
 * which must outlive it. Thread-safe. */
#ifndef OPS_MANAGER_MMETRICS_H
#define OPS_MANAGER_MMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/prom.h"
#include "manager/liveness.h"
#include "manager/pool.h"
#include "manager/store.h"

#define MMETRICS_MAX_METHODS 64
#define MMETRICS_MAX_NODES 5000
#define MMETRICS_MAX_HOST_SERIES 128
#define MMETRICS_MAX_AGENTS 64

typedef struct mmetrics mmetrics;

typedef struct mmetrics_opts {
    store *store;
    liveness *live;
    pool *pool;
} mmetrics_opts;

/* NULL with err when out of memory. */
mmetrics *mmetrics_new(const mmetrics_opts *o, char *err, size_t errlen);
void mmetrics_free(mmetrics *m);

/* The rpc server's observer (rpc_server_opts.observe, user = the mmetrics). */
void mmetrics_observe_rpc(void *m, const char *method, int code, int64_t duration_us);
/* A validated ReportMetrics: remembers the newest value of each (type, key) of the node. */
void mmetrics_host_report(mmetrics *m, const char *node_id, const store_metric_in *metrics, size_t n);
/* A SyncAgentStates that was stored: the node's agents are now exactly these. */
void mmetrics_agents_synced(mmetrics *m, const char *node_id, const store_agent_in *agents, size_t n);

/* Writes the whole exposition (a prom_fill_fn: user = the mmetrics). 0, or -1 when the store
 * cannot list the nodes (the scrape then answers 500). */
int mmetrics_fill(void *m, prom_buf *b);

#endif
