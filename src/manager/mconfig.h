/* mconfig: the manager's configuration file (configs/manager.yaml), loaded, defaulted and
 * checked, so the rest of the manager only sees valid values in plain units.
 *
 * Owns: the mconfig it returns (strings included), freed with mconfig_free(). The YAML is read
 * through libcyaml (base/cfg.h): a syntax error, a wrong type or an unknown key is reported as
 * "FILE: line N: ..."; then every value is checked and a problem is reported as
 * "FILE: key.path: problem (got 'x', expected ...)". Keys follow the Go original's. Durations
 * are milliseconds, sizes bytes. */
#ifndef OPS_MANAGER_MCONFIG_H
#define OPS_MANAGER_MCONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

typedef struct mconfig_tls {
    int enabled;              /* default 0: plaintext (main should warn) */
    char *cert_file;          /* required when enabled */
    char *key_file;           /* required when enabled */
    char *ca_file;            /* required when require_client_cert */
    int require_client_cert;  /* mutual TLS; default 0 */
} mconfig_tls;

typedef struct mconfig_grpc {
    char *host;                   /* default "0.0.0.0" */
    int port;                     /* default 9090 */
    mconfig_tls tls;
    uint64_t max_message_size;    /* default 10 MiB; at most 2 GiB - 1 */
    int64_t keepalive_time_ms;    /* default 60 s */
    int64_t keepalive_timeout_ms; /* default 20 s */
    int64_t min_ping_interval_ms; /* default 20 s */
    uint64_t window_size;         /* HTTP/2 stream and connection window; default 1 MiB */
    int gzip;                     /* compression: none (default) or gzip for what we send */
} mconfig_grpc;

typedef struct mconfig_database {
    char *driver; /* "sqlite" (default) or "postgres" */
    char *dsn;    /* default "ops-manager.db" */
} mconfig_database;

typedef struct mconfig_node {
    int64_t heartbeat_interval_ms; /* default 60 s; told to daemons on register */
    int64_t metrics_interval_ms;   /* default 60 s; told to daemons on register */
    int64_t offline_after_ms;      /* default 3 x heartbeat_interval; must exceed it */
    int auto_register;             /* default 1: unknown heartbeating nodes get a placeholder */
} mconfig_node;

typedef struct mconfig_metrics {
    int64_t retention_ms;          /* default 30 days; 0 keeps metrics forever */
    int64_t retention_interval_ms; /* default 1 h: how often old metrics are deleted */
} mconfig_metrics;

typedef struct mconfig_log {
    log_level level; /* default info */
    char *file;      /* default "" = standard error */
} mconfig_log;

typedef struct mconfig_prometheus {
    int enabled;  /* default 1 */
    char *listen; /* "host:port" of GET /metrics; default "127.0.0.1:9190" */
} mconfig_prometheus;
/* One AdminService token: its SHA-256, never the token itself. */
typedef struct mconfig_token {
    char *name;   /* required, unique: shown in audit records */
    char *role;   /* "viewer", "operator" or "admin" */
    char *sha256; /* 64 hex characters (lower-cased here) */
} mconfig_token;

typedef struct mconfig_admin {
    char *listen;          /* default "": AdminService on the grpc listener; else "host:port" */
    mconfig_token *tokens; /* none: AdminService refuses every call (main warns) */
    size_t n_tokens;
} mconfig_admin;

/* node_auth: how nodes prove who they are (manager/nodeauth.h). */
typedef struct mconfig_node_allow {
    char *identity;  /* a client certificate identity (first DNS SAN, else CN) */
    char **node_ids; /* the node ids it may speak for besides its own */
    size_t n_node_ids;
} mconfig_node_allow;

typedef struct mconfig_node_auth {
    char *mode;                 /* "none" (default), "mtls" (needs grpc.tls.require_client_cert) or "token" */
    mconfig_node_allow *allow;  /* mtls only */
    size_t n_allow;
} mconfig_node_auth;

/* limits: caps against abusive or broken callers (every one > 0). */
typedef struct mconfig_limits {
    int64_t max_metrics_per_report;  /* MetricData in one ReportMetrics; default 1000 */
    int64_t max_values_per_metric;   /* values in one MetricData; default 1000 */
    int64_t max_labels;              /* labels of one node; default 64 */
    int64_t max_string_bytes;        /* node_id, metric types and keys, label keys and values; default 256 */
    int64_t max_agents_per_sync;     /* AgentStates in one SyncAgentStates; default 1000 */
    int64_t max_update_streams;      /* concurrent SubscribeUpdates streams; default 50000 */
    int64_t max_streams_per_connection; /* streams open at once on one client connection; default 1000 */
    int64_t register_per_minute;     /* RegisterNode calls per peer address per minute; default 60 */
    int64_t register_burst;          /* RegisterNode calls a peer may make at once; default 20 */
    int64_t refusal_log_interval_ms; /* one refusal line per peer and kind per interval; default 1m */
} mconfig_limits;
/* daemons: how the manager proves itself to daemons (their daemon.auth). The token goes as
 * `authorization: Bearer` on every DaemonService call; the certificate is grpc.tls's. */
typedef struct mconfig_daemons {
    char *token;      /* default "": none */
    char *token_file; /* default "": read at start and on SIGHUP (wins over token) */
} mconfig_daemons;

typedef struct mconfig {
    char *source; /* the file it came from, or "(defaults)" */
    mconfig_grpc grpc;
    mconfig_database database;
    mconfig_node node;
    mconfig_metrics metrics;
    mconfig_log log;
    mconfig_prometheus prometheus;
    mconfig_admin admin;
    mconfig_node_auth node_auth;
    mconfig_limits limits;
    mconfig_daemons daemons;
} mconfig;

/* Loads path; path NULL gives the defaults. Returns 0 with *out, or -1 with err. */
int mconfig_load(const char *path, mconfig **out, char *err, size_t errlen);
/* Same from text in memory; name stands for the file name in messages. */
int mconfig_load_string(const char *name, const char *yaml, size_t len, mconfig **out, char *err,
                        size_t errlen);
void mconfig_free(mconfig *c);
/* The effective configuration as YAML (loadable again). Returns a malloc'd string or NULL. */
char *mconfig_dump_yaml(const mconfig *c);

#endif
