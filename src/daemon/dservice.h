/* dservice: the daemon's side of proto.DaemonService (ListAgents, OperateAgent,
 * GetAgentMetrics, GetConfig) on an rpc server; every other method answers UNIMPLEMENTED.
 *
 * Only the manager may call it (daemon.auth): every DaemonService call, before anything
 * else, must carry a verified client certificate whose identity is allowed, or
 * `authorization: Bearer <token>` whose SHA-256 matches; otherwise UNAUTHENTICATED (nothing
 * or unknown credentials) or PERMISSION_DENIED (a verified certificate not on the list), and
 * the call does nothing. With neither configured every caller is let in (loopback, or
 * daemon.auth.insecure: main refuses the rest). Health and reflection stay open.
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
    rpc_tls tls;               /* daemon.tls; reloadable with dservice_reload_tls */
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
/* Re-reads the TLS certificate, key and client CA now (SIGHUP): new connections use them,
 * established ones keep theirs. 0 reloaded or unchanged, -1 refused (logged; the old ones
 * stay). The server also checks the files' mtimes by itself every minute. */
int dservice_reload_tls(dservice *d);

/* The authorization decision, apart from the server so that it can be tested and fuzzed:
 * authorization is the request's `authorization` header (or NULL), identity the verified
 * client certificate's (or NULL). Returns RPC_OK, RPC_UNAUTHENTICATED or
 * RPC_PERMISSION_DENIED with the reason in why. */
int dservice_authorize(const dconfig_auth *a, const char *authorization, const char *identity, char *why,
                       size_t whylen);
/* The checks a DaemonService request must pass before its handler acts (OperateAgent,
 * GetAgentMetrics, GetConfig, PushUpdate; other types pass). RPC_OK, or RPC_INVALID_ARGUMENT
 * with the field named in why. Pure: for the handlers, tests and the fuzzer. */
int dservice_validate(const ProtobufCMessage *req, char *why, size_t whylen);
/* Graceful stop (in-flight calls get grace_ms), then free. NULL is ignored. */
void dservice_stop(dservice *d, int64_t grace_ms);

#endif
