/* pool: the manager's client connections to its daemons' DaemonService, one channel per node,
 * as the original's client pool. A channel is created on first use to the address the node
 * registered (a resolver callback answers node_id -> "host:port"), reused while the address
 * stays the same, replaced when it changes, dropped on pool_forget (node deleted), and closed
 * when idle longer than idle_ms or when over max_channels (least recently used first).
 *
 * Deadlines: 30 s by default, 90 s for OperateAgent (a graceful stop may take 30 s). Retries
 * with backoff on UNAVAILABLE for ListAgents, GetAgentMetrics and GetConfig only — never for
 * OperateAgent, which is not idempotent. Failures come back as the contract's error kinds with
 * the node and agent in the message.
 *
 * Owns: the channels. Thread-safe: calls on different nodes, and on the same node, may run
 * at once (a channel is reference-counted while a call uses it). */
#ifndef OPS_MANAGER_POOL_H
#define OPS_MANAGER_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.pb-c.h"
#include "rpc/client.h"

typedef struct pool pool;

/* Writes the DaemonService address of node_id into addr. 0, or -1 when the node is unknown. */
typedef int (*pool_resolve_fn)(void *user, const char *node_id, char *addr, size_t addrlen);

typedef struct pool_opts {
    pool_resolve_fn resolve;
    void *user;
    rpc_tls tls;                 /* how to reach daemons (client certificate: their allow-list) */
    const char *token;           /* sent as authorization: Bearer on every call; NULL/"" none (copied) */
    int64_t timeout_ms;          /* 0 = 30 s */
    int64_t operate_timeout_ms;  /* 0 = 90 s */
    int64_t idle_ms;             /* 0 = 10 min */
    size_t max_channels;         /* 0 = 4096 */
} pool_opts;

/* The outcome of a pool call: the gRPC result plus a message that names node and agent. */
typedef struct pool_result {
    int code;                    /* rpc_code */
    rpc_error_kind kind;
    int attempts;
    char message[768];
} pool_result;

pool *pool_new(const pool_opts *o, char *err, size_t errlen);
void pool_free(pool *p);

/* Each returns res->code; on RPC_OK *out is the caller's (protobuf_c_message_free_unpacked).
 * trace_id (may be NULL) is sent as x-trace-id. */
int pool_list_agents(pool *p, const char *node_id, const char *trace_id, Proto__ListAgentsResponse **out,
                     pool_result *res);
int pool_operate_agent(pool *p, const char *node_id, const char *agent_id, const char *operation,
                       const char *trace_id, Proto__AgentOperationResponse **out, pool_result *res);
int pool_agent_metrics(pool *p, const char *node_id, const char *agent_id, int64_t duration_s,
                       const char *trace_id, Proto__AgentMetricsResponse **out, pool_result *res);
int pool_get_config(pool *p, const char *node_id, const char *config_type, const char *agent_id,
                    const char *trace_id, Proto__ConfigResponse **out, pool_result *res);
/* Replaces the token (a rotation read on SIGHUP); NULL or "" sends none. 0, or -1 out of memory. */
int pool_set_token(pool *p, const char *token);
/* Certificates were rotated: every channel is dropped (one in use goes when its calls end),
 * so that new ones read the files again. Returns how many were open. */
size_t pool_drop_channels(pool *p);
/* The node was deleted or re-registered elsewhere: drop its channel. */
void pool_forget(pool *p, const char *node_id);
/* Closes channels idle longer than idle_ms. Returns how many. Call it now and then. */
size_t pool_sweep_idle(pool *p);
size_t pool_size(pool *p);

#endif
