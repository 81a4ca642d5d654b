/* nodeauth: nodes prove who they are (manager.yaml node_auth). Every ManagerService call that
 * speaks for a node_id (RegisterNode, Heartbeat, ReportMetrics, SyncAgentStates,
 * SubscribeUpdates, ReportEventResult) asks nodeauth_check() first; RegisterNode asks
 * nodeauth_register().
 *
 *   none  -- anyone who reaches the port may speak for any node (the original's behaviour).
 *   mtls  -- the verified client certificate's identity (first DNS SAN, else CN) must be the
 *            node_id, or be allowed that node_id by the allow list; else PERMISSION_DENIED.
 *   token -- RegisterNode carries an enrollment token (`authorization: Bearer <token>`); the
 *            manager answers with a per-node secret that the node sends on every later call
 *            (and to register again). Only SHA-256 hashes of either are stored; the presented
 *            value is hashed and compared in constant time.
 *
 * Refusals are logged through abuse_note (one line per peer per interval).
 *
 * Owns: the allow list copy and a cache of node secret hashes (entries live cache_ms, so a
 * secret replaced or a node deleted elsewhere is seen within that time; RegisterNode always
 * reads the store). Borrows the store and the abuse table. Thread-safe. */
#ifndef OPS_MANAGER_NODEAUTH_H
#define OPS_MANAGER_NODEAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "manager/abuse.h"
#include "manager/store.h"
#include "rpc/server.h"

typedef enum { NODEAUTH_NONE = 0, NODEAUTH_MTLS = 1, NODEAUTH_TOKEN = 2 } nodeauth_mode;

/* Node secrets and enrollment tokens start with these, so that a refusal can say which of the
 * two it was given. */
#define NODEAUTH_SECRET_PREFIX "ns1."
#define NODEAUTH_ENROLL_PREFIX "et1."

/* mtls: a certificate identity that may speak for other node ids than its own. */
typedef struct nodeauth_allow {
    const char *identity;
    const char *const *node_ids;
    size_t n_node_ids;
} nodeauth_allow;

typedef struct nodeauth_opts {
    nodeauth_mode mode;
    const nodeauth_allow *allow; /* copied */
    size_t n_allow;
    store *store;                /* token mode: required */
    abuse *abuse;                /* may be NULL: every refusal is logged */
    int64_t cache_ms;            /* 0 = 30 s */
} nodeauth_opts;

typedef struct nodeauth nodeauth;

/* "none" | "mtls" | "token": 0, or -1 for another word. */
int nodeauth_parse_mode(const char *s, nodeauth_mode *out);
const char *nodeauth_mode_name(nodeauth_mode m);

nodeauth *nodeauth_new(const nodeauth_opts *o, char *err, size_t errlen);
void nodeauth_free(nodeauth *na);
/* NULL means none. */
nodeauth_mode nodeauth_get_mode(const nodeauth *na);

/* May this call speak for node_id? RPC_OK, or the code with the status set on c (and the
 * refusal logged): UNAUTHENTICATED (no or wrong credential), PERMISSION_DENIED (a valid
 * certificate for another node). na NULL: RPC_OK. */
int nodeauth_check(nodeauth *na, rpc_ctx *c, const char *node_id);
/* RegisterNode. mtls: as nodeauth_check. token: the bearer is the node's current secret, or an
 * enrollment token (one use is counted); then *new_secret is a fresh secret (arena-owned) that
 * the caller hands to nodeauth_commit() once the node is stored, and sends back. */
int nodeauth_register(nodeauth *na, rpc_ctx *c, const char *node_id, const char **new_secret);
/* Stores the hash of secret as node_id's. 0, or -1 with err. */
int nodeauth_commit(nodeauth *na, const char *node_id, const char *secret, char *err, size_t errlen);

/* SHA-256 of s as 64 lower-case hex characters (out: 65 bytes). 0 or -1. */
int nodeauth_sha256_hex(const char *s, char *out);
/* prefix + 64 random hex characters (n >= strlen(prefix) + 65). 0, or -1 (no randomness). */
int nodeauth_random_token(const char *prefix, char *out, size_t n);

#endif
