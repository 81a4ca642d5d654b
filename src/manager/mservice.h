/* mservice: the manager's gRPC surface — manager.ManagerService (RegisterNode, Heartbeat,
 * ReportMetrics) and its part of proto.DaemonService (SyncAgentStates; the rest answer
 * UNIMPLEMENTED) — validating every request before anything is stored.
 *
 * Publishes node.registered, and agent.state / agent.removed for each agent whose status or pid
 * a sync changes, to the event hub.
 *
 * Owns: its rpc_server. Borrows the store, the liveness table, the hub and the extra methods,
 * which must outlive it. */
#ifndef OPS_MANAGER_MSERVICE_H
#define OPS_MANAGER_MSERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "manager/events.h"
#include "manager/liveness.h"
#include "manager/abuse.h"
#include "manager/mmetrics.h"
#include "manager/nodeauth.h"
#include "manager/store.h"
#include "rpc/reflection.h"
#include "rpc/server.h"

typedef struct mservice mservice;

/* Caps on one request (manager.yaml limits); 0 = the default in brackets. Too many items is
 * RESOURCE_EXHAUSTED (labels: INVALID_ARGUMENT, as before), too long a string INVALID_ARGUMENT;
 * the message names the field and the limit. */
typedef struct mservice_limits {
    size_t max_metrics;     /* MetricData per report [1000] */
    size_t max_values;      /* values per MetricData [1000] */
    size_t max_labels;      /* labels per node [MSVC_MAX_LABELS] */
    size_t max_string;      /* node_id, types, keys, label keys and values [MSVC_MAX_LABEL_BYTES] */
    size_t max_agents;      /* AgentStates per sync [1000] */
} mservice_limits;

typedef struct mservice_opts {
    const char *const *listen;
    rpc_tls tls;
    rpc_settings settings;        /* zeroed = contract defaults */
    store *store;
    liveness *live;
    int auto_register;            /* unknown heartbeating nodes get a placeholder row */
    int64_t heartbeat_interval_s; /* told to daemons in RegisterNodeResponse */
    int64_t metrics_interval_s;
    int quiet_access_log;
    const rpc_reflection *reflection; /* serve server reflection from it (borrowed); NULL: none */
    mmetrics *metrics;            /* NULL: none; else calls, reports and syncs are counted */
    evhub *hub;                   /* may be NULL: node.registered, agent.state, agent.removed */
    /* served on the same listener too (SubscribeUpdates, AdminService...); borrowed, must
     * outlive the service */
    const rpc_method *extra_methods;
    size_t n_extra_methods;
    nodeauth *auth;               /* NULL: node_auth none; else auto_register is off */
    abuse *abuse;                 /* NULL: no RegisterNode rate limit, every refusal logged */
    mservice_limits limits;
    int max_streams;              /* streaming and slow handler threads; 0 = 4096 */
    int max_streams_per_conn;     /* streams open at once on one client connection; 0 = 1000 */
} mservice_opts;

mservice *mservice_start(const mservice_opts *o, char *err, size_t errlen);
int mservice_port(const mservice *m);
/* SIGHUP: re-read the listener's TLS files (rpc_server_reload_tls). 0, or -1 refused (logged). */
int mservice_reload_tls(mservice *m);
void mservice_stop(mservice *m, int64_t grace_ms);

/* Request limits (also the fuzzing and validation tests' reference). */
#define MSVC_MAX_LABELS 64
#define MSVC_MAX_LABEL_BYTES 256
#define MSVC_MAX_FUTURE_S (24 * 3600)
/* Heartbeat answer to an unknown node given a placeholder row: success, and please register. */
#define MSVC_AUTO_REGISTERED "auto-registered: send RegisterNode"

#endif
