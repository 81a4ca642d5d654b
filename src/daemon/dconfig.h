/* dconfig: ops-daemon's configuration file (daemon.yaml, the keys of the Go original), loaded,
 * checked and resolved into typed values: durations in milliseconds, sizes in bytes, every
 * default filled in and agent_defaults merged under each agent.
 *
 * Owns: the dconfig tree returned by dconfig_load(), including the agent_spec array and all of
 * its strings; everything is released by dconfig_free(). The loader keeps nothing else. Errors
 * name the file, the place (agents[1] (id "web"), agent_defaults, ...), the key and the
 * problem, so an operator can fix the file without reading code. */
#ifndef OPS_DAEMON_DCONFIG_H
#define OPS_DAEMON_DCONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "daemon/agent.h"

typedef struct dconfig_label {
    char *key;
    char *value;
} dconfig_label;

typedef struct dconfig_collector {
    int enabled;
    int64_t interval_ms;
} dconfig_collector;

typedef struct dconfig_collectors {
    dconfig_collector cpu, memory, disk, network;
    int cpu_per_core;       /* also report cpuN.usage_percent; default off */
    char **mount_points;    /* disk: NULL-terminated; empty = every local filesystem and / */
    size_t n_mount_points;
    char **interfaces;      /* network: NULL-terminated; empty = every interface */
    size_t n_interfaces;
} dconfig_collectors;

typedef struct dconfig_tls {
    int enabled;
    char *cert_file;        /* "" when not set; cert and key come together or not at all */
    char *key_file;
    char *ca_file;
    char *server_name;
} dconfig_tls;

/* daemon.tls: TLS on the DaemonService listener. With client_ca_file the daemon asks callers
 * for a certificate and verifies any they present (a certificate from another CA fails the
 * handshake); require_client_cert refuses callers without one. */
typedef struct dconfig_server_tls {
    int enabled;
    char *cert_file;        /* required when enabled */
    char *key_file;
    char *client_ca_file;   /* "" = client certificates are not asked for */
    int require_client_cert;
} dconfig_server_tls;

/* daemon.auth: who may call DaemonService (the manager only). */
typedef struct dconfig_auth {
    char **allowed_identities;   /* NULL-terminated: certificate identities (DNS SAN or CN) */
    size_t n_allowed_identities; /* needs daemon.tls with client_ca_file */
    char *manager_token_sha256;  /* 64 lower-case hex digits, or "" */
    int insecure;                /* serve a non-loopback address without either (warned) */
} dconfig_auth;

typedef struct dconfig_daemon {
    char *id;               /* "" = take node_id from work_dir (see nodeid.h) */
    log_level log_level;
    char *log_file;         /* "" = stderr */
    char *pid_file;         /* "" = none */
    char *work_dir;
    char *grpc_host;
    int grpc_port;
    char *http_host;
    int http_port;
    int stop_agents_on_exit;
    int64_t stop_grace_ms;
    int64_t resource_interval_ms;
    int grpc_host_line;     /* where grpc_host was written (0 = the default), for messages */
    dconfig_server_tls tls;
    dconfig_auth auth;
} dconfig_daemon;

typedef struct dconfig_manager {
    char *address;          /* host:port, a comma list of them, or dns:///name */
    dconfig_tls tls;
    int64_t heartbeat_interval_ms;
    int64_t reconnect_interval_ms;
    int64_t timeout_ms;
    int64_t metrics_interval_ms;
    char *spool_dir;
    uint64_t spool_max_bytes;
    /* transport to the manager (defaults: CONTRACT.md's daemon -> manager settings) */
    int64_t keepalive_time_ms;
    int64_t keepalive_timeout_ms;
    uint64_t max_message_bytes;
    uint64_t window_bytes;
    int gzip;
    /* node_auth token mode (daemon/nodesecret.h): the enrollment token, given inline or in a
     * file (not both; "" = none), and where the node secret the manager answers is kept */
    char *enrollment_token;
    char *enrollment_token_file;
    char *secret_file;      /* default {work_dir}/node_secret */
    /* register with an empty daemon_address: the manager reaches this node only through its
     * update stream (NAT, firewall); default false */
    int stream_only;
} dconfig_manager;

/* updates: events pushed by the manager (daemon/updater.h). */
typedef struct dconfig_updates {
    int enabled;            /* keep a SubscribeUpdates stream open; default true */
    char *public_key;       /* Ed25519 public key (PEM) that packages must be signed with; "" =
                             * every package is refused (config changes and commands still work) */
    int keep_versions;      /* previous agent binaries kept for rollback; default 3 */
    int64_t rollback_window_ms; /* an updated agent must stay running this long; default 5 s */
} dconfig_updates;
typedef struct dconfig_prometheus {
    int enabled;            /* default 1 */
    char *listen;           /* "host:port" of GET /metrics; default "127.0.0.1:9191" */
} dconfig_prometheus;

typedef struct dconfig {
    char *path;             /* the file it came from */
    dconfig_prometheus prometheus;
    dconfig_daemon daemon;
    dconfig_manager manager;
    dconfig_updates updates;
    dconfig_label *labels;
    size_t n_labels;
    dconfig_collectors collectors;
    agent_spec *agents;     /* effective settings, in file order */
    size_t n_agents;
} dconfig;

/* Reads and checks path. Returns 0 with *out set (free with dconfig_free), or -1 with err
 * holding one message such as
 *   daemon.yaml: agents[1] (id "web"): restart.policy: must be always, on-failure or never
 *   (got "sometimes")
 * Syntax errors and unknown keys come back with the line number libcyaml reported. */
int dconfig_load(const char *path, dconfig **out, char *err, size_t errlen);
/* Same, from text in memory; name stands for the file name in messages. */
int dconfig_load_string(const char *name, const char *yaml, size_t len, dconfig **out,
                        char *err, size_t errlen);
void dconfig_free(dconfig *cfg);

/* The effective configuration as YAML that dconfig_load() reads back to the same values
 * (GetConfig "daemon"). Only file paths of TLS material appear, never their contents.
 * Returns 0 with *out malloc'd (caller frees), or -1 on allocation failure. */
int dconfig_dump_yaml(const dconfig *cfg, char **out);
/* One agent's effective settings as a YAML mapping (GetConfig "agent"). Same ownership. */
int dconfig_agent_yaml(const agent_spec *spec, char **out);

/* Whether DaemonService may be opened as configured: 0 when it is loopback-only or callers
 * must authenticate, 1 when it is exposed without authentication but daemon.auth.insecure
 * says so (err then holds the warning), -1 when it must not start (err names file, line and
 * field). */
int dconfig_check_exposure(const dconfig *cfg, char *err, size_t errlen);

/* The agent with this id, or NULL. */
const agent_spec *dconfig_find_agent(const dconfig *cfg, const char *id);

#endif
