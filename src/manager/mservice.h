/* mservice: the manager's gRPC surface — manager.ManagerService (RegisterNode, Heartbeat,
 * ReportMetrics) and its part of proto.DaemonService (SyncAgentStates; the rest answer
 * UNIMPLEMENTED) — validating every request before anything is stored.
 *
 * Owns: its rpc_server. Borrows the store and the liveness table, which must outlive it. */
#ifndef OPS_MANAGER_MSERVICE_H
#define OPS_MANAGER_MSERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "manager/liveness.h"
#include "manager/mmetrics.h"
#include "manager/store.h"
#include "rpc/reflection.h"
#include "rpc/server.h"

typedef struct mservice mservice;

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
    const rpc_method *extra_methods; /* served too (updates.h's SubscribeUpdates...); must outlive it */
    size_t n_extra_methods;
    mmetrics *metrics;            /* NULL: none; else calls, reports and syncs are counted */
} mservice_opts;

mservice *mservice_start(const mservice_opts *o, char *err, size_t errlen);
int mservice_port(const mservice *m);
void mservice_stop(mservice *m, int64_t grace_ms);

/* Request limits (also the fuzzing and validation tests' reference). */
#define MSVC_MAX_LABELS 64
#define MSVC_MAX_LABEL_BYTES 256
#define MSVC_MAX_FUTURE_S (24 * 3600)
/* Heartbeat answer to an unknown node given a placeholder row: success, and please register. */
#define MSVC_AUTO_REGISTERED "auto-registered: send RegisterNode"

#endif
