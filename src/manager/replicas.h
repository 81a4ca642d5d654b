/* replicas: makes several ops-manager processes on one shared database act as one manager, by
 * carrying what one of them notices to the others through the store's notices (PostgreSQL
 * LISTEN/NOTIFY, store.h):
 *   - every event published on this process's hub (node.registered/online/offline/deleted,
 *     agent.state/removed) is sent as a notice; a notice from another replica is published on
 *     this hub with evhub_publish_remote (so WatchEvents here sees it, and it is not sent back);
 *   - "update.published" notices (sent by store_add_updates at commit) wake this process's
 *     SubscribeUpdates stream of that node, which then replays from the store;
 *   - node.registered / node.deleted from elsewhere are applied to the liveness table.
 * Notices are best effort: streams and liveness also re-read the store now and then.
 * On a store that is not shared (SQLite) replicas_new installs nothing.
 *
 * Owns: the two hooks it installs (removed by replicas_free). Borrows the store, hub, updates and
 * liveness, which must outlive it. */
#ifndef OPS_MANAGER_REPLICAS_H
#define OPS_MANAGER_REPLICAS_H

#include <stddef.h>

#include "manager/events.h"
#include "manager/liveness.h"
#include "manager/store.h"
#include "manager/updates.h"

typedef struct replicas replicas;

typedef struct replicas_opts {
    store *store;
    evhub *hub;       /* may be NULL: hub events are then neither sent nor received */
    upd *updates;     /* may be NULL */
    liveness *live;   /* may be NULL */
} replicas_opts;

/* NULL with err when out of memory. */
replicas *replicas_new(const replicas_opts *o, char *err, size_t errlen);
/* Removes the hooks (no callback runs after it returns). NULL is a no-op. */
void replicas_free(replicas *r);

/* The notice for one hub event (JSON, at most STORE_NOTICE_MAX bytes: a long detail is cut).
 * Caller frees. NULL when out of memory. Exposed for tests. */
char *replicas_encode(const evhub_event *e);

#endif
