/* dservice: the daemon's side of proto.DaemonService (ListAgents, OperateAgent,
 * GetAgentMetrics, GetConfig) on an rpc server; every other method answers UNIMPLEMENTED.
 *
 * Owns: its rpc_server. Borrows the supervisor (which must outlive it) and the current
 * configuration, swapped in on reload under a lock that GetConfig holds while it reads. */
#ifndef OPS_DAEMON_DSERVICE_H
#define OPS_DAEMON_DSERVICE_H

#include <stddef.h>

#include "daemon/dconfig.h"
#include "daemon/supervisor.h"
#include "rpc/reflection.h"
#include "daemon/updater.h"
#include "rpc/server.h"

typedef struct dservice dservice;

typedef struct dservice_opts {
    const char *const *listen; /* NULL-terminated host:port list */
    rpc_tls tls;
    sup *sup;
    const dconfig *cfg;        /* borrowed; replace with dservice_swap_config */
    const rpc_reflection *reflection; /* serve server reflection from it (borrowed); NULL: none */
    updr *updr;                /* PushUpdate installs through it; NULL = UNIMPLEMENTED */
} dservice_opts;

/* Starts serving. NULL with err ("listen 0.0.0.0:9091: ..."). */
dservice *dservice_start(const dservice_opts *o, char *err, size_t errlen);
/* Installs a new configuration; returns the old one, which no handler uses any more. */
const dconfig *dservice_swap_config(dservice *d, const dconfig *cfg);
int dservice_port(const dservice *d);
/* Graceful stop (in-flight calls get grace_ms), then free. NULL is ignored. */
void dservice_stop(dservice *d, int64_t grace_ms);

#endif
