/* conn: how opsctl reaches the manager's AdminService, and what it tells the operator when
 * that fails.
 *
 * Settings come from flags, then the environment (OPS_MANAGER, OPS_TOKEN, OPS_CA, OPS_CERT,
 * OPS_KEY), then the config file ($XDG_CONFIG_HOME/ops/opsctl.yaml or
 * ~/.config/ops/opsctl.yaml: keys manager, token, ca, cert, key), then defaults. Each setting
 * remembers where it came from so error hints name the right knob.
 *
 * Owns: the strings of a conn_settings (conn_settings_free), the channel of a conn
 * (conn_close). Answers returned by conn_call belong to the caller. */
#ifndef OPS_CTL_CONN_H
#define OPS_CTL_CONN_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/client.h"

/* opsctl's exit codes. */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAILED = 1, /* the manager answered, and the operation failed */
    CTL_EXIT_USAGE = 2,  /* bad command line (or config file) */
    CTL_EXIT_CONN = 3,   /* cannot reach or authenticate with the manager */
};

#define CONN_DEFAULT_MANAGER "127.0.0.1:9090" /* ops-manager's default grpc listener */
#define CONN_DEFAULT_TIMEOUT_MS 10000
#define CONN_OPERATE_TIMEOUT_MS 90000 /* OperateAgent without --timeout */

/* Values given on the command line; NULL = not given. Borrowed. */
typedef struct conn_flags {
    const char *manager, *token, *ca, *cert, *key;
} conn_flags;

typedef struct conn_settings {
    char *manager, *token, *ca, *cert, *key; /* malloc'd; NULL = unset (manager never NULL) */
    /* Where each came from: "--manager", "OPS_MANAGER", the config path, or "default". */
    char *manager_from, *token_from, *ca_from;
    int64_t timeout_ms;
    int timeout_explicit; /* --timeout given: used as is for every call */
} conn_settings;

/* The config file opsctl reads when none is named: $XDG_CONFIG_HOME/ops/opsctl.yaml, else
 * $HOME/.config/ops/opsctl.yaml. Returns 0, or -1 when neither variable is set. */
int conn_default_config_path(char *buf, size_t n);

/* Resolves flags > environment > config_path (NULL = conn_default_config_path(); a missing
 * file is fine, a broken one is an error naming file, line and key) > defaults. Returns 0,
 * or -1 with err (out is then empty). */
int conn_resolve(conn_settings *out, const conn_flags *flags, const char *config_path, char *err,
                 size_t errlen);
void conn_settings_free(conn_settings *s);

typedef struct conn conn;

/* Opens a channel (TLS when a CA is set, mutual TLS with cert and key). Does not connect
 * yet. NULL with err (bad TLS files). */
conn *conn_open(const conn_settings *s, char *err, size_t errlen);
void conn_close(conn *c);

/* Calls "/ops.admin.v1.AdminService/<method>" with the bearer token. On success returns
 * CTL_EXIT_OK with *resp (the caller's). Otherwise returns CTL_EXIT_FAILED or CTL_EXIT_CONN
 * with err explaining what went wrong and what to try; `action` completes "your token's
 * role cannot ..." (e.g. "operate agents") and `role` the role that can ("operator"). */
int conn_call(conn *c, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              const char *action, const char *role, char *err, size_t errlen);

/* Opens the server stream "/ops.admin.v1.AdminService/<method>" (no deadline). Returns
 * CTL_EXIT_OK with *st, or an exit code with err as conn_call. */
int conn_stream_open(conn *c, const char *method, const ProtobufCMessage *req, rpc_stream **st,
                     char *err, size_t errlen);

/* Turns a failed call's result into (exit code, message). A transport-level UNAVAILABLE or
 * DEADLINE_EXCEEDED is told apart from one the manager itself answered (its daemon being
 * unreachable) by asking the manager's health service: if that does not answer either, the
 * manager is unreachable (exit 3). */
int conn_explain(conn *c, const char *method, const rpc_result *res, const char *action,
                 const char *role, char *err, size_t errlen);

const conn_settings *conn_get_settings(const conn *c);

#endif
