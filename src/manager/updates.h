/* updates: events the manager pushes to daemons over manager.ManagerService/SubscribeUpdates
 * (config changes, signed agent and daemon packages, agent commands), and the results daemons
 * send back with ReportEventResult. This is how the manager reaches a daemon it cannot dial:
 * the daemon keeps the stream open.
 *
 * Publishing stores one event per target node (ids increase and are never reused) and pushes
 * it onto that node's stream. A stream first replays the node's events after the request's
 * last_event_id from the store (events older than the retention window only as the latest state
 * per (kind, component, agent_id); old commands are dropped), then gets what is published next.
 * Streams hold no thread (RPC_METHOD_ASYNC): see updates.c. One stream per node: a new
 * subscription ends the older one (ABORTED). Idle streams are kept alive by the transport's
 * keepalive pings (rpc/settings.h: the server pings every 60 s, the daemon's channel every 30 s
 * even without calls), which also keeps NAT mappings open.
 *
 * Owns: the subscription table, the replay thread and the stream count. Borrows the store, which must
 * outlive it; upd_free must come after the rpc server that serves upd_methods() has stopped. */
#ifndef OPS_MANAGER_UPDATES_H
#define OPS_MANAGER_UPDATES_H

#include <stddef.h>
#include <stdint.h>

#include "manager/abuse.h"
#include "manager/nodeauth.h"
#include "manager/store.h"
#include "rpc/server.h"

typedef struct upd upd;

enum { UPD_OK = 0, UPD_INVALID = 1, UPD_TIMEOUT = 2, UPD_NOT_FOUND = 3, UPD_ERROR = -1 };

#define UPD_DEFAULT_MAX_STREAMS 10000

typedef struct upd_opts {
    store *store;
    int max_streams;          /* concurrent SubscribeUpdates streams; 0 = UPD_DEFAULT_MAX_STREAMS */
    int64_t retention_s;      /* older events replay only as the latest state; 0 = 7 days */
    int64_t wake_ms;          /* how often upd_wait_result checks for cancellation; 0 = 500 */
    nodeauth *auth;           /* may be NULL: a caller may speak for any node */
    abuse *abuse;             /* may be NULL: every refused stream is logged */
} upd_opts;

/* What an operator publishes (borrowed for the call). kind: version_update | config_change |
 * command. Required: config_change agent_id + payload (the config file's content, may be
 * empty); command agent_id + operation start|stop|restart; version_update component
 * agent|daemon (agent: agent_id), version, hash_sha256 (64 hex), signature (64 bytes), and
 * download_url or payload. */
typedef struct upd_event_in {
    const char *kind;
    const char *component;
    const char *agent_id;
    const char *version, *download_url, *hash_sha256, *operation;
    const uint8_t *signature;
    size_t signature_len;
    const uint8_t *payload;
    size_t payload_len;
} upd_event_in;

upd *upd_new(const upd_opts *o, char *err, size_t errlen);
void upd_free(upd *u);

/* Stores ev for each of the n nodes and wakes their streams. ids_out (may be NULL) gets the n
 * event ids. UPD_OK; UPD_INVALID with err naming the field; UPD_ERROR (store) with err. */
int upd_publish(upd *u, const upd_event_in *ev, const char *const *node_ids, size_t n,
                uint64_t *ids_out, char *err, size_t errlen);
/* Another replica stored events for node_id: its stream here (if any) re-reads the store. When
 * the store is shared, streams also re-read it every 5 s, so a lost notice only delays. */
void upd_wake(upd *u, const char *node_id);
/* Retention: deletes events that replay would skip (older than the window and superseded, or
 * old commands). Call it now and then (the manager's idle tick). */
int upd_compact(upd *u, int64_t now, uint64_t *deleted, char *err, size_t errlen);
/* Waits (bounded) for the daemon's ReportEventResult of node_id's event event_id: each result
 * wakes the waiters, which then read the store. deadline_ms is wall-clock ms since the epoch; c
 * (may be NULL) ends the wait early when its call is cancelled. UPD_OK with outcome/message
 * copied (truncated to their buffers), UPD_TIMEOUT when no result came in time, UPD_NOT_FOUND
 * when the event does not exist, UPD_ERROR with err. */
int upd_wait_result(upd *u, const char *node_id, uint64_t event_id, int64_t deadline_ms, const rpc_ctx *c,
                    char *outcome, size_t outcome_len, char *message, size_t message_len, char *err, size_t errlen);
/* 1 when a SubscribeUpdates stream of node_id is open now. */
int upd_node_streaming(upd *u, const char *node_id);
/* The content of the newest config_change published for (node_id, agent_id) (what the manager's
 * DaemonService.GetConfig answers): UPD_OK with *data (malloc'd, the caller's; NULL when empty)
 * and *len, UPD_NOT_FOUND when none was published (or retention dropped it), UPD_ERROR. */
int upd_latest_config(upd *u, const char *node_id, const char *agent_id, uint8_t **data, size_t *len, char *err,
                      size_t errlen);
/* The methods to add to the manager's server: SubscribeUpdates, ReportEventResult and
 * proto.DaemonService/GetConfig (a daemon pulling the config last published for it; the
 * manager's own table yields that name to this one). */
const rpc_method *upd_methods(upd *u, size_t *n);
/* Streams open now. */
size_t upd_stream_count(upd *u);

#endif
