/* store: the manager's persistent state -- nodes, their online/offline history, their agents and
 * their metrics -- behind one interface that SQLite implements now and PostgreSQL later. No
 * database type or SQL appears here; each driver keeps its SQL to itself.
 *
 * Owns: the database connections, the writer thread(s) and the queue. Every write is handed
 * to the writer and the caller blocks until that write is committed (or gets its error): the
 * writer takes everything queued and commits it in one transaction (group commit), each request
 * isolated by a savepoint so one failing request does not fail its neighbours. Reads run on a
 * pool of reader connections and never wait for the writer.
 *
 * Conventions: times are Unix seconds; ranges [from, to] include both ends. Input structs and
 * strings are borrowed for the duration of the call. Everything a read returns belongs to the
 * caller and is freed with the matching *_free function. Functions return 0 on success and -1
 * with a readable reason in err (e.g. "insert metrics: database or disk is full"); a failed
 * write changes nothing and the store stays usable. store_get_node() can also return
 * STORE_NOT_FOUND. A driver whose database server cannot be reached returns STORE_UNAVAILABLE
 * (negative, so `< 0` and `!= 0` checks still see a failure) at once instead of waiting: the
 * write was not done (or, lost during its commit, may have been: every write is safe to
 * repeat), and the caller answers UNAVAILABLE so that its client retries. All functions are
 * thread-safe. */
#ifndef OPS_MANAGER_STORE_H
#define OPS_MANAGER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/prom.h"

typedef struct store store;

enum { STORE_OK = 0, STORE_NOT_FOUND = 1, STORE_ERROR = -1, STORE_UNAVAILABLE = -2 };

typedef struct store_config {
    const char *driver;      /* "sqlite" (also when NULL or "") or "postgres" */
    const char *dsn;         /* sqlite: path of the database file (created if missing);
                                postgres: a libpq connection string or URI */
    int readers;             /* reader connections; 0 = 4 */
    uint64_t max_size_bytes; /* 0 = unlimited; past it writes fail as "disk full" would
                                (sqlite only) */
} store_config;

typedef enum {
    STORE_NODE_ANY = -1, /* filters only */
    STORE_NODE_OFFLINE = 0,
    STORE_NODE_ONLINE = 1,
} store_node_status;

/* "online" / "offline" (the words stored and shown). */
const char *store_node_status_name(store_node_status s);

/* ---- inputs (borrowed) ---------------------------------------------------------------- */

typedef struct store_kv {
    const char *key;
    const char *value;
} store_kv;

/* What RegisterNode carries. NULL strings are stored as "". */
typedef struct store_node_in {
    const char *node_id;
    const char *hostname, *ip, *os, *arch;
    const store_kv *labels;
    size_t n_labels;
    const char *daemon_version, *agent_version, *daemon_address;
} store_node_in;

/* One liveness update for store_touch_nodes(). */
typedef struct store_touch {
    const char *node_id;
    int64_t last_seen;
    store_node_status status; /* STORE_NODE_ANY: leave the status as it is (a follower replica
                                 reports when it heard a node; the leader decides the status) */
} store_touch;

/* One node event: event is "online", "offline" or "registered". */
typedef struct store_event_in {
    const char *node_id;
    const char *event;
    int64_t at;
} store_event_in;

/* One AgentState of SyncAgentStates. */
typedef struct store_agent_in {
    const char *agent_id;
    const char *type, *version, *status;
    int32_t pid;
    int64_t last_heartbeat;
} store_agent_in;

typedef struct store_metric_value {
    const char *key;
    double value;
} store_metric_value;

/* One MetricData of ReportMetrics. */
typedef struct store_metric_in {
    const char *type;
    int64_t ts;
    const store_metric_value *values;
    size_t n_values;
} store_metric_in;

/* ---- outputs (caller-owned) ------------------------------------------------------------ */

typedef struct store_label {
    char *key;
    char *value;
} store_label;

typedef struct store_node {
    char *node_id;
    char *hostname, *ip, *os, *arch;
    store_label *labels; /* sorted by key */
    size_t n_labels;
    char *daemon_version, *agent_version, *daemon_address;
    store_node_status status;
    int64_t registered_at, last_seen, updated_at;
} store_node;

typedef struct store_node_list {
    store_node *items; /* sorted by node_id */
    size_t n;
} store_node_list;

typedef struct store_node_filter {
    store_node_status status; /* STORE_NODE_ANY for all */
    const char *label_key;    /* NULL: no label condition; else labels[label_key] == label_value */
    const char *label_value;
    const store_kv *labels;   /* further conditions: every labels[i] must match too */
    size_t n_labels;
    const char *after;        /* NULL/"": from the start; else only node_id > after (paging) */
    size_t limit;             /* 0 = no limit */
    int ids_only;             /* 1: only node_id is filled in, the rest left zero (a publish's
                               * targets: 20,000 rows without their labels parsed) */
} store_node_filter;

typedef struct store_event {
    char *node_id;
    char *event;
    int64_t at;
} store_event;

typedef struct store_event_list {
    store_event *items; /* in the order they happened */
    size_t n;
} store_event_list;

typedef struct store_agent {
    char *agent_id;
    char *type, *version;
    char *status; /* as the daemon reported it, or "removed" */
    int32_t pid;
    int64_t last_heartbeat, updated_at;
    int removed;  /* 1 when the daemon's last sync no longer listed it */
} store_agent;

typedef struct store_agent_list {
    store_agent *items; /* sorted by agent_id */
    size_t n;
} store_agent_list;

typedef struct store_point {
    int64_t ts;
    char *key;
    double value;
} store_point;

typedef struct store_point_list {
    store_point *items; /* sorted by (ts, key) */
    size_t n;
} store_point_list;

/* Per-key summary of one node's metric type over a range. */
typedef struct store_stat {
    char *key;
    double min, avg, max;
    double latest;       /* value at latest_ts */
    int64_t latest_ts;
    int64_t count;
} store_stat;

typedef struct store_stat_list {
    store_stat *items; /* sorted by key */
    size_t n;
} store_stat_list;

/* One audit record: who changed what through AdminService, and how it ended. */
typedef struct store_audit_in {
    int64_t at;
    const char *actor, *role, *method, *target, *result, *detail, *peer;
} store_audit_in;

typedef struct store_audit {
    int64_t id, at;
    char *actor, *role, *method, *target, *result, *detail, *peer;
} store_audit;

typedef struct store_audit_list {
    store_audit *items; /* newest first */
    size_t n;
} store_audit_list;

typedef struct store_audit_filter {
    const char *actor;  /* NULL/"": anyone */
    const char *target; /* NULL/"": anything; else target == it or starts with it + "/" */
    int64_t since;      /* 0: no lower bound */
    size_t limit;       /* 0 = 100 */
} store_audit_filter;

/* ---- pushed update events (SubscribeUpdates) ----------------------------------------------
 * One row per (event, target node), ids increasing and never reused, so a daemon resumes after
 * the last id it applied. kind is version_update | config_change | command. */
typedef struct store_update_in {
    const char *kind;
    const char *component;   /* agent | daemon ("" for config_change and command) */
    const char *agent_id;
    const char *version, *download_url, *hash_sha256, *operation;
    const uint8_t *signature;
    size_t signature_len;
    const uint8_t *payload;  /* config content or an inline package */
    size_t payload_len;
    int64_t created_at;
} store_update_in;

typedef struct store_update {
    uint64_t id;
    char *node_id, *kind, *component, *agent_id, *version, *download_url, *hash_sha256,
        *operation;
    uint8_t *signature;
    size_t signature_len;
    uint8_t *payload;
    size_t payload_len;
    int64_t created_at;
    char *outcome;           /* "" while no result came back; else applied | rolled_back | refused | failed */
    char *message;
    int64_t result_at;
} store_update;

typedef struct store_update_list {
    store_update *items;
    size_t n;
} store_update_list;

typedef struct store_update_filter {
    const char *node_id;     /* NULL/"": every node */
    uint64_t event_id;       /* 0: any; else just that event */
    int pending_only;        /* only events without a result */
    uint64_t before_id;      /* 0: from the newest; else only id < before_id (paging) */
    size_t limit;            /* 0 = 100 */
} store_update_filter;

typedef struct store_string_list {
    char **items;
    size_t n;
} store_string_list;

/* ---- lifecycle -------------------------------------------------------------------------- */

/* Opens (creating and migrating the schema as needed) and starts the writer. NULL on error. */
store *store_open(const store_config *cfg, char *err, size_t errlen);
/* Finishes every queued write, stops the writer, closes everything. NULL is a no-op. */
void store_close(store *s);
/* The driver's name ("sqlite"). */
const char *store_driver_name(const store *s);

/* What the writer has done since the store was opened (for /metrics). */
typedef struct store_stats {
    uint64_t commits;         /* transactions committed */
    uint64_t failed_commits;  /* batches whose commit (or begin) failed */
    prom_hist commit_seconds; /* one batch, begin to commit done */
    prom_hist batch_size;     /* write requests per committed batch */
} store_stats;

/* Fills *out. Returns 0, or -1 when the driver keeps no statistics (out is then zeroed). */
int store_get_stats(store *s, store_stats *out);

/* ---- writes (block until committed) ------------------------------------------------------ */

/* RegisterNode: inserts the node or updates every field of an existing row (its agents, events
 * and metrics are kept; registered_at keeps its first value). Sets status online, last_seen and
 * updated_at to now, and records a "registered" event. */
int store_upsert_node(store *s, const store_node_in *n, int64_t now, char *err, size_t errlen);
/* A heartbeat from a node the store does not know: inserts a row whose fields are "unknown",
 * online, last_seen now. Leaves an existing row untouched. *created (may be NULL) says which. */
int store_upsert_placeholder(store *s, const char *node_id, int64_t now, int *created, char *err,
                             size_t errlen);
/* Liveness write-behind: sets last_seen (never backwards) and status of each known node; ids
 * the store does not have are skipped. */
int store_touch_nodes(store *s, const store_touch *t, size_t n, char *err, size_t errlen);
int store_add_node_events(store *s, const store_event_in *ev, size_t n, char *err, size_t errlen);
/* SyncAgentStates: upserts every listed agent (clearing its removed flag); agents of the node
 * that are not listed become status "removed", removed = 1. n = 0 removes them all. */
int store_sync_agents(store *s, const char *node_id, const store_agent_in *a, size_t n,
                      int64_t now, char *err, size_t errlen);
/* ReportMetrics: stores every value. Idempotent: a (node, type, ts, key) already stored is
 * skipped, so a retried report never counts twice. *inserted (may be NULL) = values new. */
int store_insert_metrics(store *s, const char *node_id, const store_metric_in *m, size_t n,
                         size_t *inserted, char *err, size_t errlen);
/* The same without blocking: cb runs exactly once, on the store's writer thread (or on the
 * caller's, when the request is refused before it is queued), after the commit. node_id and m
 * need only live until this call returns. cb must be quick and must not call the store. */
typedef void (*store_done_fn)(void *user, int rc, const char *err, size_t inserted);
void store_insert_metrics_async(store *s, const char *node_id, const store_metric_in *m, size_t n,
                                store_done_fn cb, void *user);
/* store_set_update_result without blocking: cb(user, rc, err, found) runs exactly once, on the
 * writer thread (or the caller's, when refused before it is queued, or when the driver has no
 * asynchronous path), after the commit. The strings need only live until this call returns; cb
 * must be quick and must not call the store. */
typedef void (*store_result_fn)(void *user, int rc, const char *err, int found);
void store_set_update_result_async(store *s, const char *node_id, uint64_t id, const char *outcome,
                                   const char *message, int64_t at, store_result_fn cb, void *user);
/* store_upsert_node without blocking: cb(user, rc, err, 0) runs exactly once, on the writer
 * thread (or the caller's: refused before it is queued, or a driver with no asynchronous path),
 * after the commit. n and what it points at need only live until this call returns; cb must be
 * quick and must not call the store. */
void store_upsert_node_async(store *s, const store_node_in *n, int64_t now, store_done_fn cb,
                             void *user);
/* store_sync_agents without blocking, as store_upsert_node_async. With want_before, before is
 * the node's agents that were not removed as the sync's own transaction found them (what a
 * caller needs to tell what the sync changed); it is NULL without want_before, when rc != 0, or
 * when the driver could not read them. It is freed when cb returns. */
typedef void (*store_sync_fn)(void *user, int rc, const char *err, const store_agent_list *before);
void store_sync_agents_async(store *s, const char *node_id, const store_agent_in *a, size_t n,
                             int64_t now, int want_before, store_sync_fn cb, void *user);
/* 1 when the driver answers store_upsert_node_async and store_sync_agents_async from its own
 * thread; 0 when they run the blocking calls on the caller's thread (a caller that must not
 * block then calls them from a thread of its own). */
int store_async_writes(store *s);
/* Retention: deletes metric points with ts < before, batch_limit rows per transaction (0 =
 * 5000) and at most STORE_RETENTION_SERIES series looked at per transaction, so ingestion
 * waits at most one small batch (a pass that found nothing old in 20,000 nodes' series used to
 * look at all of them in one write, while every registration and report waited). *deleted (may be NULL) = rows deleted,
 * also when it fails part way. */
#define STORE_RETENTION_SERIES 256
int store_delete_metrics_before(store *s, int64_t before, size_t batch_limit, uint64_t *deleted,
                                char *err, size_t errlen);
/* Deletes the node with its events, agents and metrics. *found (may be NULL) = 1 if it existed. */
int store_delete_node(store *s, const char *node_id, int *found, char *err, size_t errlen);

/* Appends one audit record. */
int store_add_audit(store *s, const store_audit_in *a, char *err, size_t errlen);

/* Stores ev once per node (n nodes, in one transaction); ids_out (may be NULL) gets the n new
 * ids, increasing in node order. */
int store_add_updates(store *s, const store_update_in *ev, const char *const *node_ids, size_t n,
                      uint64_t *ids_out, char *err, size_t errlen);
/* A daemon's result for one of its events. *found (may be NULL) = 0 when the node has no event
 * with that id (nothing is written). A second result for the same event replaces the first. */
int store_set_update_result(store *s, const char *node_id, uint64_t id, const char *outcome,
                            const char *message, int64_t at, int *found, char *err, size_t errlen);
/* Retention: deletes events created before `before` that a replay would skip anyway (see
 * store_list_updates_after). *deleted (may be NULL) = rows deleted. */
int store_compact_updates(store *s, int64_t before, uint64_t *deleted, char *err, size_t errlen);

/* ---- reads -------------------------------------------------------------------------------- */

/* filter NULL = all nodes. */
int store_list_nodes(store *s, const store_node_filter *filter, store_node_list *out, char *err,
                     size_t errlen);
/* STORE_OK with *out filled, STORE_NOT_FOUND, or STORE_ERROR. */
int store_get_node(store *s, const char *node_id, store_node *out, char *err, size_t errlen);
int store_list_agents(store *s, const char *node_id, int include_removed, store_agent_list *out,
                      char *err, size_t errlen);
int store_list_node_events(store *s, const char *node_id, int64_t from, int64_t to,
                           store_event_list *out, char *err, size_t errlen);
/* Points of one node and type in [from, to]; limit 0 = no limit (the earliest are kept). */
int store_query_metrics(store *s, const char *node_id, const char *type, int64_t from, int64_t to,
                        size_t limit, store_point_list *out, char *err, size_t errlen);
int store_metric_stats(store *s, const char *node_id, const char *type, int64_t from, int64_t to,
                       store_stat_list *out, char *err, size_t errlen);

int store_list_audit(store *s, const store_audit_filter *f, store_audit_list *out, char *err,
                     size_t errlen);
/* The metric types a node has points of in [from, to], sorted. */
int store_list_metric_types(store *s, const char *node_id, int64_t from, int64_t to,
                            store_string_list *out, char *err, size_t errlen);
/* Replay for a subscribing daemon: its events with id > after_id, oldest first, at most limit
 * (0 = 1000). Events created before stale_before are returned only as the latest state: a
 * command that old is dropped, and an older event is skipped when a later one exists for the
 * same (kind, component, agent_id). */
int store_list_updates_after(store *s, const char *node_id, uint64_t after_id, int64_t stale_before,
                             size_t limit, store_update_list *out, char *err, size_t errlen);
/* Events with their status for operators, newest first. */
int store_list_updates(store *s, const store_update_filter *f, store_update_list *out, char *err,
                       size_t errlen);

void store_node_free(store_node *n);          /* frees the fields, not n */
void store_node_list_free(store_node_list *l); /* frees the items; l is left empty */
void store_event_list_free(store_event_list *l);
void store_agent_list_free(store_agent_list *l);
void store_point_list_free(store_point_list *l);
void store_stat_list_free(store_stat_list *l);
void store_audit_list_free(store_audit_list *l);
void store_string_list_free(store_string_list *l);
void store_update_list_free(store_update_list *l);

/* ---- node authentication (node_auth.mode token) ------------------------------------------ *
 * Only SHA-256 hashes (64 lower-case hex characters) are stored, never a secret or a token.
 * Drivers without these answer -1 "not supported by this driver". */

#define STORE_EXISTS 2 /* store_add_enroll_token: the name is taken */

typedef struct store_enroll_token {
    char *name;
    int64_t created_at, expires_at, revoked_at; /* revoked_at 0 = not revoked */
    int32_t max_uses, uses;
} store_enroll_token;

typedef struct store_enroll_token_list {
    store_enroll_token *items;
    size_t n;
} store_enroll_token_list;

/* What store_use_enroll_token found. */
typedef enum {
    STORE_ENROLL_OK = 0,  /* valid: one use was counted */
    STORE_ENROLL_UNKNOWN, /* no token has this hash */
    STORE_ENROLL_REVOKED,
    STORE_ENROLL_EXPIRED,
    STORE_ENROLL_USED_UP,
} store_enroll_use;

/* Sets (or replaces) the hash of a node's secret. */
int store_set_node_secret(store *s, const char *node_id, const char *sha256, int64_t now, char *err,
                          size_t errlen);
/* STORE_OK with out (65 bytes) filled, STORE_NOT_FOUND (no secret), or STORE_ERROR. */
int store_get_node_secret(store *s, const char *node_id, char *out, char *err, size_t errlen);
/* 0, STORE_EXISTS (name taken, nothing written) or -1. */
int store_add_enroll_token(store *s, const char *name, const char *sha256, int64_t created_at,
                           int64_t expires_at, int32_t max_uses, char *err, size_t errlen);
/* Checks the token with this hash and, when valid at now, counts one use -- atomically, so
 * that concurrent enrollments never exceed max_uses. *use says what was found; name (may be
 * NULL) gets the token's name when one matched. 0, or -1 on a store error. */
int store_use_enroll_token(store *s, const char *sha256, int64_t now, store_enroll_use *use,
                           char *name, size_t namelen, char *err, size_t errlen);
/* Every token, by name. */
int store_list_enroll_tokens(store *s, store_enroll_token_list *out, char *err, size_t errlen);
/* Marks the token revoked (kept for the record). *found (may be NULL) = 0 when no token has
 * this name or it was already revoked. */
int store_revoke_enroll_token(store *s, const char *name, int64_t now, int *found, char *err,
                              size_t errlen);
void store_enroll_token_list_free(store_enroll_token_list *l);
/* ---- several managers on one database (replicas) -----------------------------------------
 * A driver whose database other processes can share (PostgreSQL) elects one leader among them
 * and carries notices between them; the SQLite driver is never shared, always leader, and its
 * notices go nowhere. */

/* 1 when other processes may be using the same database (so in-memory state can be stale). */
int store_is_shared(store *s);
/* 1 while this process holds the leader lease: it alone runs the offline sweep, retention and
 * compaction. PostgreSQL: a session advisory lock on a connection of its own, tried every
 * second; losing that connection loses the lease (the server releases the lock when the session
 * ends, so another process takes it within a few seconds). */
int store_is_leader(store *s);

/* A notice is a JSON object of at most STORE_NOTICE_MAX bytes with a string "kind". Besides what
 * callers send, store_add_updates sends one per target node, in its transaction:
 * {"kind":"update.published","node_id":"...","detail":"<event id>"}. */
#define STORE_NOTICE_MAX 7000
typedef void (*store_notice_fn)(void *user, const char *json);
/* Sends json to every other process sharing the database. Never blocks: it is queued and sent
 * by the store's own thread; dropped (and counted in the log) while the database is out of
 * reach, so receivers must not depend on every notice: they re-read the store now and then. */
void store_notify(store *s, const char *json);
/* fn (NULL: none) gets every notice another process sent, on the store's thread; it must be
 * quick. When this returns, the previous fn is no longer running and will not be called. */
void store_set_notice_handler(store *s, store_notice_fn fn, void *user);

/* ---- driver interface: what an implementation provides (store.c dispatches to it) -------- */

typedef struct store_driver {
    const char *name;
    void (*close)(store *s);
    int (*upsert_node)(store *, const store_node_in *, int64_t, char *, size_t);
    int (*upsert_placeholder)(store *, const char *, int64_t, int *, char *, size_t);
    int (*touch_nodes)(store *, const store_touch *, size_t, char *, size_t);
    int (*add_node_events)(store *, const store_event_in *, size_t, char *, size_t);
    int (*sync_agents)(store *, const char *, const store_agent_in *, size_t, int64_t, char *,
                       size_t);
    int (*insert_metrics)(store *, const char *, const store_metric_in *, size_t, size_t *,
                          char *, size_t);
    /* optional: NULL makes store_insert_metrics_async call insert_metrics and then cb */
    void (*insert_metrics_async)(store *, const char *, const store_metric_in *, size_t, store_done_fn,
                                 void *);
    /* optional: NULL makes store_set_update_result_async call set_update_result and then cb */
    void (*set_update_result_async)(store *, const char *, uint64_t, const char *, const char *, int64_t,
                                    store_result_fn, void *);
    /* optional, both or neither: NULL makes store_upsert_node_async / store_sync_agents_async
     * call the blocking functions and then cb */
    void (*upsert_node_async)(store *, const store_node_in *, int64_t, store_done_fn, void *);
    void (*sync_agents_async)(store *, const char *, const store_agent_in *, size_t, int64_t, int,
                              store_sync_fn, void *);
    int (*delete_metrics_before)(store *, int64_t, size_t, uint64_t *, char *, size_t);
    int (*delete_node)(store *, const char *, int *, char *, size_t);
    int (*list_nodes)(store *, const store_node_filter *, store_node_list *, char *, size_t);
    int (*get_node)(store *, const char *, store_node *, char *, size_t);
    int (*list_agents)(store *, const char *, int, store_agent_list *, char *, size_t);
    int (*list_node_events)(store *, const char *, int64_t, int64_t, store_event_list *, char *,
                            size_t);
    int (*query_metrics)(store *, const char *, const char *, int64_t, int64_t, size_t,
                         store_point_list *, char *, size_t);
    int (*metric_stats)(store *, const char *, const char *, int64_t, int64_t, store_stat_list *,
                        char *, size_t);
    int (*add_audit)(store *, const store_audit_in *, char *, size_t);
    int (*list_audit)(store *, const store_audit_filter *, store_audit_list *, char *, size_t);
    int (*list_metric_types)(store *, const char *, int64_t, int64_t, store_string_list *, char *,
                             size_t);
    /* pushed update events (NULL: the driver does not have them yet) */
    int (*add_updates)(store *, const store_update_in *, const char *const *, size_t, uint64_t *,
                       char *, size_t);
    int (*set_update_result)(store *, const char *, uint64_t, const char *, const char *, int64_t,
                             int *, char *, size_t);
    int (*compact_updates)(store *, int64_t, uint64_t *, char *, size_t);
    int (*list_updates_after)(store *, const char *, uint64_t, int64_t, size_t, store_update_list *,
                              char *, size_t);
    int (*list_updates)(store *, const store_update_filter *, store_update_list *, char *, size_t);
    /* optional: NULL makes store_get_stats return -1 */
    void (*get_stats)(store *, store_stats *);
    /* node authentication (NULL: not supported by the driver) */
    int (*set_node_secret)(store *, const char *, const char *, int64_t, char *, size_t);
    int (*get_node_secret)(store *, const char *, char *, char *, size_t);
    int (*add_enroll_token)(store *, const char *, const char *, int64_t, int64_t, int32_t, char *,
                            size_t);
    int (*use_enroll_token)(store *, const char *, int64_t, store_enroll_use *, char *, size_t,
                            char *, size_t);
    int (*list_enroll_tokens)(store *, store_enroll_token_list *, char *, size_t);
    int (*revoke_enroll_token)(store *, const char *, int64_t, int *, char *, size_t);
    /* optional, replicas: NULL means not shared, always leader, notices go nowhere */
    int (*is_leader)(store *);
    void (*notify)(store *, const char *);
    void (*set_notice_handler)(store *, store_notice_fn, void *);
} store_driver;

/* Every driver's handle starts with this. */
struct store {
    const store_driver *drv;
};

/* store_sqlite.c */
store *store_sqlite_open(const store_config *cfg, char *err, size_t errlen);
/* store_pg.c */
store *store_pg_open(const store_config *cfg, char *err, size_t errlen);

#endif
