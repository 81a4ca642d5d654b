/* mvalidate: the manager's checks of what nodes send (RegisterNode, Heartbeat, ReportMetrics,
 * SyncAgentStates) before anything is looked up or stored: required fields, UTF-8 strings, and
 * the caps of manager.yaml's limits (mservice_limits). Pure functions of the decoded request,
 * so that mservice, the unit tests and the fuzzer (tests/fuzz/fuzz_requests.c) run the very
 * same checks.
 *
 * A refusal is a gRPC code and a message naming the field (and the limit, for a cap); the
 * messages are the ones clients and the integration tests see. Owns nothing. */
#ifndef OPS_MANAGER_MVALIDATE_H
#define OPS_MANAGER_MVALIDATE_H

#include <stdint.h>

#include "daemon.pb-c.h"
#include "manager.pb-c.h"
#include "manager/mservice.h"

typedef struct mval_result {
    int code;       /* RPC_OK, RPC_INVALID_ARGUMENT or RPC_RESOURCE_EXHAUSTED */
    int over_limit; /* refused by a limits.* cap: logged once per caller and kind (abuse.h) */
    char msg[512];  /* why, naming the field; "" when code is RPC_OK */
} mval_result;

/* Fills the limits left 0 with their defaults (mservice.h says which); the checks below take
 * filled limits. */
void mval_limits_defaults(mservice_limits *lim);
/* 1 when s is valid UTF-8 (proto3 strings must be; protobuf-c does not check). */
int mval_utf8(const char *s);

/* Each returns res->code. */
int mval_node_id(const char *node_id, const mservice_limits *lim, mval_result *res);
int mval_register_node(const Manager__RegisterNodeRequest *req, const mservice_limits *lim, mval_result *res);
int mval_heartbeat(const Manager__HeartbeatRequest *req, const mservice_limits *lim, mval_result *res);
/* now_s: the manager's clock, for timestamps too far in the future (MSVC_MAX_FUTURE_S). */
int mval_report_metrics(const Manager__ReportMetricsRequest *req, const mservice_limits *lim, int64_t now_s,
                        mval_result *res);
int mval_sync_agents(const Proto__SyncAgentStatesRequest *req, const mservice_limits *lim, mval_result *res);

#endif
