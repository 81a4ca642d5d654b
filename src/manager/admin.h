/* admin: ops.admin.v1.AdminService, the operator's API on the manager. Every call is first
 * authenticated (auth.h: a Bearer token and its role) and validated; reads come from the store,
 * live agent calls go to the node's daemon through the client pool, WatchEvents streams the
 * event hub, and every call that changes something -- refused and failed attempts included --
 * leaves an audit record in the store.
 *
 * Roles: viewer for reads and WatchEvents, operator for OperateAgent, admin for DeleteNode and
 * ListAudit. The pushed-event methods (PublishConfig, PublishUpdate, ListUpdateEvents,
 * GetUpdateEvent) live in admin_updates.h. OperateAgent goes through the pool when the node's
 * daemon has an address and answers; when it has none or is UNAVAILABLE, through a command
 * event on the node's update stream (response.via "pool" or "stream").
 *
 * Owns: its method table and, when started with admin_listen(), its own rpc_server. Borrows
 * the store, liveness table, pool, hub and auth, which must outlive it. */
#ifndef OPS_MANAGER_ADMIN_H
#define OPS_MANAGER_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "manager/auth.h"
#include "manager/events.h"
#include "manager/liveness.h"
#include "manager/pool.h"
#include "manager/store.h"
#include "rpc/reflection.h"
#include "manager/updates.h"
#include "rpc/server.h"

typedef struct admin admin;

typedef struct admin_opts {
    store *store;
    liveness *live;  /* may be NULL (tests): DeleteNode then only deletes from the store */
    pool *pool;
    evhub *hub;      /* may be NULL: WatchEvents then answers UNAVAILABLE */
    const auth *auth;
    /* admin_listen()'s server answers server reflection from it too (borrowed; NULL: none). */
    const rpc_reflection *reflection;
    /* more AdminService rows served by other parts (admin_enroll.h), added to admin_listen()'s
     * server too; borrowed, must outlive a. admin_methods() does not include them. */
    const rpc_method *more_methods;
    size_t n_more_methods;
    upd *upd;        /* may be NULL: no PublishConfig/Update and event queries, and OperateAgent uses the
                      * pool only; else OperateAgent falls back to the node's update stream */
} admin_opts;

/* Request limits and defaults. */
#define ADMIN_PAGE_DEFAULT 100
#define ADMIN_PAGE_MAX 1000
#define ADMIN_RANGE_MAX_S (30LL * 24 * 3600)
#define ADMIN_RANGE_DEFAULT_S 3600
#define ADMIN_BUCKETS_MAX 10000
#define ADMIN_RAW_POINTS_MAX 200000   /* raw points in one answer (stays under 10 MiB) */
#define ADMIN_READ_POINTS_MAX 1000000 /* points read for one downsampled answer (memory) */
#define ADMIN_AUDIT_MAX 1000

admin *admin_new(const admin_opts *o, char *err, size_t errlen);
/* The method table ("/ops.admin.v1.AdminService/<Method>"), to add to a server before it
 * starts; it lives as long as a. */
const rpc_method *admin_methods(admin *a, size_t *n);
/* Serves AdminService on a server of its own (admin.listen), with health and, given
 * admin_opts.reflection, server reflection: 0, or -1 with err. opts->listen and the rest are
 * the caller's; the methods are added here. */
int admin_listen(admin *a, const rpc_server_opts *opts, char *err, size_t errlen);
/* The port of admin_listen()'s server, 0 without one. */
int admin_port(const admin *a);
/* Stops and frees admin_listen()'s server (grace for in-flight calls), if any. Idempotent. */
void admin_stop(admin *a, int64_t grace_ms);
/* Stops and frees. NULL is a no-op. */
void admin_free(admin *a);

#endif
