/* admin_updates: the AdminService methods of pushed events -- PublishConfig and PublishUpdate
 * (operator, audited like OperateAgent), ListUpdateEvents and GetUpdateEvent (viewer) -- and
 * OperateAgent's way to a node the manager cannot dial: a command event on the node's
 * SubscribeUpdates stream, answered by the daemon's ReportEventResult.
 *
 * Targets: exactly one of a node_ids list (each must be known), a label selector (every pair
 * must match) or all; an empty match is FAILED_PRECONDITION. One publish is one store
 * transaction whatever the number of nodes (updates.h).
 *
 * Owns: its method table. Borrows the store, the update hub and auth, which must outlive it. */
#ifndef OPS_MANAGER_ADMIN_UPDATES_H
#define OPS_MANAGER_ADMIN_UPDATES_H

#include <stddef.h>

#include "manager/auth.h"
#include "manager/store.h"
#include "manager/updates.h"
#include "rpc/server.h"

typedef struct admin_upd admin_upd;

#define ADMIN_UPD_N_METHODS 4
#define ADMIN_UPD_LIST_MAX 1000
#define ADMIN_UPD_CONFIG_MAX (4u << 20)   /* config bytes in one PublishConfig */
#define ADMIN_UPD_PACKAGE_MAX (8u << 20)  /* inline package bytes (the message limit is 10 MiB) */
#define ADMIN_UPD_OPERATE_WAIT_MS 90000   /* stream fallback: longest wait for the result */

/* u may be NULL: the methods then answer UNAVAILABLE and admin_upd_operate cannot help. */
admin_upd *admin_upd_new(store *st, upd *u, const auth *a, char *err, size_t errlen);
void admin_upd_free(admin_upd *h);
/* "/ops.admin.v1.AdminService/Publish..." etc.; the table lives as long as h. */
const rpc_method *admin_upd_methods(admin_upd *h, size_t *n);
/* OperateAgent through node_id's stream: publishes a command event and waits for the daemon's
 * result until the call's deadline (at most ADMIN_UPD_OPERATE_WAIT_MS). Returns RPC_OK with
 * *success and msg (the daemon's message: same meaning as a pool answer), or an rpc code with
 * msg (DEADLINE_EXCEEDED when no result came in time: the event stays queued for the node). */
int admin_upd_operate(admin_upd *h, rpc_ctx *c, const char *node_id, const char *agent_id, const char *op,
                      int *success, char *msg, size_t msglen);

#endif
