/* store_pg: the store on PostgreSQL through libpq, shaped like store_sqlite.
 *
 * Writer threads with a connection each: callers queue a request and sleep until a writer has
 * committed it. A writer drains the queue into one transaction, each request in its own
 * savepoint, so one request's failure stays its own. Writer 0 runs every kind of request in
 * queue order; WRITERS - 1 more take metric reports only, so that while one group waits for
 * its COMMIT the next is already on its way (round trips and the WAL flush, not the server's
 * CPU, are what a single writer waits on). A request is answered only after COMMIT returned,
 * so an acknowledged write is on the server.
 *
 * Metric reports, the bulk of the traffic: each caller encodes its report as elements of
 * PostgreSQL array literals; the writer concatenates a group's and sends, in one pipeline,
 * BEGIN, SAVEPOINT, the insert of unseen node ids and one
 * INSERT ... SELECT FROM unnest(arrays) ... ON CONFLICT DO NOTHING (idempotent: a retried
 * report is skipped); only if that fails is each report retried alone in its own savepoint.
 * Metrics are laid out as in SQLite: one row per (node, ts, type) with the values as a json
 * object, node ids interned in metric_nodes (joined in SQL, never cached, so that several
 * managers may share the database).
 *
 * The server going away: a batch that loses its connection before COMMIT is re-run once on a
 * fresh connection (its transaction was rolled back, so running it again is exact);
 * if that fails, or the connection was lost during COMMIT (outcome unknown), its requests
 * fail with STORE_UNAVAILABLE -- never silently dropped. The store is then "down": every call
 * fails at once with STORE_UNAVAILABLE while the writer reconnects with backoff (100 ms doubling
 * to 2 s). Readers are a small pool of their own connections (MVCC: they never wait for the
 * writer); a reader whose connection died reconnects on its next use, at most once per backoff.
 *
 * Schema migrations run in one transaction under a transaction-scoped advisory lock, so two
 * managers starting at once on one database migrate it once. Each connection prepares the
 * statements of its role when it is made. */
#include "base/log.h"
#include "manager/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_READERS 4
#define WRITERS 4
#define DEFAULT_RETENTION_BATCH 5000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* Arbitrary, fixed: the key of the advisory lock migrations take ("ops" "mig"). */
#define MIGRATION_LOCK_KEY 0x6f70736d6967LL
/* The leader lease ("ops" "lead"), a session lock on the coordination connection. */
#define LEADER_LOCK_KEY 0x6f70736c656164LL
/* Held by a transaction that adds update events until it commits ("ops" "upd"): ids are then
 * committed in the order they were drawn, so a stream that sent id n never later finds a
 * smaller id committed behind it and skips it. */
#define UPDATES_LOCK_KEY 0x6f7073757064LL
/* LISTEN/NOTIFY channel shared by every replica. */
#define NOTICE_CHANNEL "ops_events"
#define NOTICE_QUEUE_MAX 10000
#define COORD_TICK_MS 1000

/* ---- schema ------------------------------------------------------------------------------ */

/* Migration i brings the schema from version i to i + 1. Append only; never edit a shipped one.
 * Ids and keys are COLLATE "C" so that they sort by bytes, as SQLite's do. */
static const char *const migrations[] = {
    "CREATE TABLE nodes ("
    "  node_id text COLLATE \"C\" PRIMARY KEY,"
    "  hostname text NOT NULL DEFAULT '', ip text NOT NULL DEFAULT '',"
    "  os text NOT NULL DEFAULT '', arch text NOT NULL DEFAULT '',"
    "  labels jsonb NOT NULL DEFAULT '{}',"
    "  daemon_version text NOT NULL DEFAULT '', agent_version text NOT NULL DEFAULT '',"
    "  daemon_address text NOT NULL DEFAULT '',"
    "  status text NOT NULL DEFAULT 'offline',"
    "  registered_at bigint NOT NULL, last_seen bigint NOT NULL, updated_at bigint NOT NULL);"
    "CREATE INDEX nodes_by_status ON nodes(status);"
    "CREATE TABLE node_events ("
    "  id bigserial PRIMARY KEY, node_id text COLLATE \"C\" NOT NULL, event text NOT NULL,"
    "  at bigint NOT NULL);"
    "CREATE INDEX node_events_by_node ON node_events(node_id, at);"
    "CREATE TABLE agents ("
    "  node_id text COLLATE \"C\" NOT NULL, agent_id text COLLATE \"C\" NOT NULL,"
    "  type text NOT NULL DEFAULT '', version text NOT NULL DEFAULT '',"
    "  status text NOT NULL DEFAULT '', pid integer NOT NULL DEFAULT 0,"
    "  last_heartbeat bigint NOT NULL DEFAULT 0, updated_at bigint NOT NULL,"
    "  removed smallint NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (node_id, agent_id));"
    "CREATE TABLE metric_nodes (id serial PRIMARY KEY, node_id text COLLATE \"C\" NOT NULL UNIQUE);"
    "CREATE TABLE metrics ("
    "  node_ref integer NOT NULL, ts bigint NOT NULL, type text COLLATE \"C\" NOT NULL,"
    "  vals json NOT NULL, PRIMARY KEY (node_ref, ts, type));"
    "CREATE TABLE audit ("
    "  id bigserial PRIMARY KEY, at bigint NOT NULL,"
    "  actor text COLLATE \"C\" NOT NULL DEFAULT '', role text NOT NULL DEFAULT '',"
    "  method text NOT NULL DEFAULT '', target text COLLATE \"C\" NOT NULL DEFAULT '',"
    "  result text NOT NULL DEFAULT '', detail text NOT NULL DEFAULT '',"
    "  peer text NOT NULL DEFAULT '');"
    "CREATE INDEX audit_by_at ON audit(at);",
    /* 2: pushed update events (updates.h). bigserial: an id is never reused after a compaction,
     * since daemons resume after the last id they saw. */
    "CREATE TABLE update_events ("
    "  id bigserial PRIMARY KEY, node_id text COLLATE \"C\" NOT NULL, kind text NOT NULL,"
    "  component text NOT NULL DEFAULT '', agent_id text NOT NULL DEFAULT '',"
    "  version text NOT NULL DEFAULT '', download_url text NOT NULL DEFAULT '',"
    "  hash_sha256 text NOT NULL DEFAULT '', operation text NOT NULL DEFAULT '',"
    "  signature bytea NOT NULL DEFAULT '', payload bytea NOT NULL DEFAULT '',"
    "  created_at bigint NOT NULL, outcome text NOT NULL DEFAULT '',"
    "  message text NOT NULL DEFAULT '', result_at bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX update_events_by_node ON update_events(node_id, id);"
    "CREATE INDEX update_events_by_key ON update_events(node_id, kind, component, agent_id, id);",
    /* 3: node authentication (node_auth.mode token), as SQLite's version 4: hashes only. IF NOT
     * EXISTS: this migration may be renumbered when branches merge. */
    "CREATE TABLE IF NOT EXISTS node_secrets ("
    "  node_id text COLLATE \"C\" PRIMARY KEY, sha256 text NOT NULL, set_at bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS enrollment_tokens ("
    "  name text COLLATE \"C\" PRIMARY KEY, sha256 text NOT NULL UNIQUE,"
    "  created_at bigint NOT NULL, expires_at bigint NOT NULL, max_uses integer NOT NULL,"
    "  uses integer NOT NULL DEFAULT 0, revoked_at bigint NOT NULL DEFAULT 0);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

#define NODE_COLS                                                                             \
    "node_id, hostname, ip, os, arch, labels::text, daemon_version, agent_version,"            \
    " daemon_address, status, registered_at, last_seen, updated_at"

#define UPD_COLS                                                                              \
    "e.id, e.node_id, e.kind, e.component, e.agent_id, e.version, e.download_url,"              \
    " e.hash_sha256, e.operation, e.signature, e.payload, e.created_at, e.outcome, e.message,"  \
    " e.result_at"
/* An event is "superseded" when a later one exists for the same node and target. */
#define UPD_SUPERSEDED                                                                          \
    "EXISTS (SELECT 1 FROM update_events l WHERE l.node_id = e.node_id AND l.kind = e.kind"     \
    " AND l.component = e.component AND l.agent_id = e.agent_id AND l.id > e.id)"

enum {
    Q_NODE_UPSERT, Q_NODE_PLACEHOLDER, Q_NODE_TOUCH, Q_EVENTS_ADD,
    Q_AGENT_UPSERT, Q_AGENT_REMOVE_MISSING,
    Q_MNODES_ADD, Q_METRICS_MOVE, Q_METRICS_MOVE_COUNT,
    Q_RET_NEXT_SERIES, Q_RET_DELETE,
    Q_DEL_POINTS, Q_DEL_SERIES, Q_DEL_AGENTS, Q_DEL_EVENTS, Q_DEL_NODE,
    Q_AUDIT_ADD,
    /* reads */
    Q_LIST_NODES, Q_LIST_NODE_IDS, Q_GET_NODE, Q_LIST_AGENTS, Q_LIST_EVENTS, Q_QUERY_METRICS, Q_METRIC_STATS,
    Q_LIST_AUDIT, Q_METRIC_TYPES, Q_UPD_AFTER, Q_UPD_LIST, Q_SECRET_GET, Q_TOKENS_LIST,
    Q_COUNT
};

/* pg_list_nodes' filter (its parameters: status, wanted labels as jsonb, after, limit). */
#define LIST_NODES_WHERE \
    " WHERE ($1::text IS NULL OR status = $1) AND ($2::jsonb IS NULL OR labels @> $2::jsonb)" \
    " AND node_id > $3 ORDER BY node_id LIMIT $4::bigint"

static const char *const query_sql[Q_COUNT] = {
    [Q_NODE_UPSERT] =
        "INSERT INTO nodes (node_id, hostname, ip, os, arch, labels, daemon_version,"
        " agent_version, daemon_address, status, registered_at, last_seen, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, 'online', $10, $10, $10)"
        " ON CONFLICT (node_id) DO UPDATE SET hostname = excluded.hostname, ip = excluded.ip,"
        " os = excluded.os, arch = excluded.arch, labels = excluded.labels,"
        " daemon_version = excluded.daemon_version, agent_version = excluded.agent_version,"
        " daemon_address = excluded.daemon_address, status = 'online',"
        " last_seen = greatest(nodes.last_seen, excluded.last_seen),"
        " updated_at = excluded.updated_at",
    [Q_NODE_PLACEHOLDER] =
        "INSERT INTO nodes (node_id, hostname, ip, os, arch, labels, daemon_version,"
        " agent_version, daemon_address, status, registered_at, last_seen, updated_at)"
        " VALUES ($1, 'unknown', 'unknown', 'unknown', 'unknown', '{}', 'unknown', 'unknown',"
        " '', 'online', $2, $2, $2) ON CONFLICT (node_id) DO NOTHING",
    [Q_NODE_TOUCH] =
        "UPDATE nodes n SET last_seen = greatest(n.last_seen, t.ls),"
        " status = CASE WHEN t.st = '' THEN n.status ELSE t.st END,"
        " updated_at = $4 FROM unnest($1::text[], $2::bigint[], $3::text[]) AS t(id, ls, st)"
        " WHERE n.node_id = t.id",
    [Q_EVENTS_ADD] =
        "INSERT INTO node_events (node_id, event, at)"
        " SELECT n, e, a FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS"
        " t(n, e, a, o) ORDER BY o",
    [Q_AGENT_UPSERT] =
        "INSERT INTO agents (node_id, agent_id, type, version, status, pid, last_heartbeat,"
        " updated_at, removed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)"
        " ON CONFLICT (node_id, agent_id) DO UPDATE SET type = excluded.type,"
        " version = excluded.version, status = excluded.status, pid = excluded.pid,"
        " last_heartbeat = excluded.last_heartbeat, updated_at = excluded.updated_at, removed = 0",
    [Q_AGENT_REMOVE_MISSING] =
        "UPDATE agents SET status = 'removed', removed = 1, updated_at = $3"
        " WHERE node_id = $1 AND removed = 0 AND NOT (agent_id = ANY ($2::text[]))",
    /* NOT EXISTS first: ON CONFLICT alone would burn a sequence value per report. Sorted, so
     * that two writers adding the same new nodes wait for each other in one order, never in a
     * cycle. */
    [Q_MNODES_ADD] =
        "INSERT INTO metric_nodes (node_id) SELECT DISTINCT u FROM unnest($1::text[]) u"
        " WHERE NOT EXISTS (SELECT 1 FROM metric_nodes n WHERE n.node_id = u)"
        " ORDER BY u ON CONFLICT DO NOTHING",
    [Q_METRICS_MOVE] =
        "INSERT INTO metrics (node_ref, ts, type, vals)"
        " SELECT n.id, t.ts, t.type, t.vals"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::json[]) AS t(node_id, ts, type, vals)"
        " JOIN metric_nodes n ON n.node_id = t.node_id ON CONFLICT DO NOTHING",
    /* Only when some rows were already there: which ones (by position) were new. */
    [Q_METRICS_MOVE_COUNT] =
        "WITH t AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::json[])"
        "   WITH ORDINALITY AS t(node_id, ts, type, vals, o)),"
        " ins AS (INSERT INTO metrics (node_ref, ts, type, vals)"
        "   SELECT n.id, t.ts, t.type, t.vals FROM t JOIN metric_nodes n ON n.node_id = t.node_id"
        "   ON CONFLICT DO NOTHING RETURNING node_ref, ts, type)"
        " SELECT t.o FROM ins JOIN metric_nodes n ON n.id = ins.node_ref"
        " JOIN t ON t.node_id = n.node_id AND t.ts = ins.ts AND t.type = ins.type",
    [Q_RET_NEXT_SERIES] = "SELECT id FROM metric_nodes WHERE id > $1 ORDER BY id LIMIT 1",
    [Q_RET_DELETE] =
        "DELETE FROM metrics WHERE ctid = ANY (ARRAY (SELECT ctid FROM metrics"
        " WHERE node_ref = $1 AND ts < $2 ORDER BY ts LIMIT $3))",
    [Q_DEL_POINTS] =
        "DELETE FROM metrics WHERE node_ref IN (SELECT id FROM metric_nodes WHERE node_id = $1)",
    [Q_DEL_SERIES] = "DELETE FROM metric_nodes WHERE node_id = $1",
    [Q_DEL_AGENTS] = "DELETE FROM agents WHERE node_id = $1",
    [Q_DEL_EVENTS] = "DELETE FROM node_events WHERE node_id = $1",
    [Q_DEL_NODE] = "DELETE FROM nodes WHERE node_id = $1",
    [Q_AUDIT_ADD] =
        "INSERT INTO audit (at, actor, role, method, target, result, detail, peer)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    [Q_LIST_NODES] = "SELECT " NODE_COLS " FROM nodes" LIST_NODES_WHERE,
    /* The same selection, ids only: what a publish needs of 20,000 rows. */
    [Q_LIST_NODE_IDS] = "SELECT node_id FROM nodes" LIST_NODES_WHERE,
    [Q_GET_NODE] = "SELECT " NODE_COLS " FROM nodes WHERE node_id = $1",
    [Q_LIST_AGENTS] =
        "SELECT agent_id, type, version, status, pid, last_heartbeat, updated_at, removed"
        " FROM agents WHERE node_id = $1 AND ($2::boolean OR removed = 0) ORDER BY agent_id",
    [Q_LIST_EVENTS] =
        "SELECT node_id, event, at FROM node_events"
        " WHERE node_id = $1 AND at BETWEEN $2 AND $3 ORDER BY at, id",
    [Q_QUERY_METRICS] =
        "SELECT m.ts, j.key, (j.value #>> '{}')::float8 FROM metrics m, json_each(m.vals) j"
        " WHERE m.node_ref = (SELECT id FROM metric_nodes WHERE node_id = $1)"
        " AND m.type = $2 AND m.ts BETWEEN $3 AND $4"
        " ORDER BY m.ts, j.key COLLATE \"C\" LIMIT $5::bigint",
    [Q_METRIC_STATS] =
        "SELECT j.key, m.ts, (j.value #>> '{}')::float8 FROM metrics m, json_each(m.vals) j"
        " WHERE m.node_ref = (SELECT id FROM metric_nodes WHERE node_id = $1)"
        " AND m.type = $2 AND m.ts BETWEEN $3 AND $4"
        " ORDER BY j.key COLLATE \"C\", m.ts",
    [Q_LIST_AUDIT] =
        "SELECT id, at, actor, role, method, target, result, detail, peer FROM audit"
        " WHERE ($1 = '' OR actor = $1)"
        " AND ($2 = '' OR target = $2 OR starts_with(target, $2 || '/'))"
        " AND at >= $3 ORDER BY at DESC, id DESC LIMIT $4",
    [Q_METRIC_TYPES] =
        "SELECT DISTINCT type FROM metrics"
        " WHERE node_ref = (SELECT id FROM metric_nodes WHERE node_id = $1)"
        " AND ts BETWEEN $2 AND $3 ORDER BY type",
    [Q_UPD_AFTER] =
        "SELECT " UPD_COLS " FROM update_events e WHERE e.node_id = $1 AND e.id > $2"
        " AND (e.created_at >= $3 OR (e.kind <> 'command' AND NOT " UPD_SUPERSEDED "))"
        " ORDER BY e.id LIMIT $4",
    [Q_UPD_LIST] =
        "SELECT " UPD_COLS " FROM update_events e WHERE ($1 = '' OR e.node_id = $1)"
        " AND ($2 = 0 OR e.id = $2) AND (NOT $3::boolean OR e.outcome = '')"
        " AND ($4 = 0 OR e.id < $4) ORDER BY e.id DESC LIMIT $5",
    [Q_SECRET_GET] = "SELECT sha256 FROM node_secrets WHERE node_id = $1",
    [Q_TOKENS_LIST] =
        "SELECT name, created_at, expires_at, max_uses, uses, revoked_at FROM enrollment_tokens"
        " ORDER BY name",
};

static const char *const query_name[Q_COUNT] = {
    "node_upsert", "node_placeholder", "node_touch", "events_add", "agent_upsert",
    "agent_remove_missing", "mnodes_add", "metrics_move", "metrics_move_count",
    "ret_next_series", "ret_delete", "del_points", "del_series", "del_agents", "del_events",
    "del_node", "audit_add", "list_nodes", "list_node_ids", "get_node", "list_agents", "list_events",
    "query_metrics", "metric_stats", "list_audit", "metric_types", "upd_after", "upd_list",
    "secret_get", "tokens_list",
};

/* ---- the handle --------------------------------------------------------------------------- */

typedef struct pgstore pgstore;
typedef int (*write_fn)(PGconn *w, void *arg, char *err, size_t errlen);

enum { REQ_PENDING, REQ_IN_TXN, REQ_FINISHED };

/* One report encoded by its caller as elements of PostgreSQL array literals (quoted and
 * escaped), so that the writer only concatenates them: the node id once, and per row the
 * timestamp, the type and the values as a JSON object. Spans are offsets into buf. */
typedef struct span {
    size_t off, len;
} span;

typedef struct enc_row {
    span ts, type, vals;
    int nv;
} enc_row;

typedef struct enc_report {
    char *buf;
    span node;
    enc_row *rows;
    size_t n_rows;
    size_t inserted; /* out */
} enc_report;

/* A queued write: a generic one (fn) or a metric report (rep). A blocking one lives on the
 * caller's stack; an asynchronous one (cb set) is freed by cb on the writer thread. */
typedef struct wreq {
    write_fn fn;
    void *arg;
    enc_report *rep;
    char *err;
    size_t errlen;
    int rc;
    int state;
    int done;
    pthread_cond_t cv;
    struct wreq *next;
    void (*cb)(struct wreq *r);
} wreq;

/* A writer thread and its connection. Writer 0 runs every kind of request; the others take
 * metric reports only, so that while one group waits for its COMMIT the next one is already
 * on its way (ordering between reports does not matter: they are idempotent). */
typedef struct writer {
    pgstore *s;
    int idx;
    PGconn *c;
    pthread_t th;
    int started;
} writer;

typedef struct reader {
    PGconn *c;
    int64_t retry_at_ms; /* when c is NULL: no reconnect before this */
    int backoff_ms;
} reader;

struct pgstore {
    store base;
    char *dsn;

    writer wr[WRITERS];

    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    wreq *head, *tail;   /* everything but metric reports: writer 0 only */
    wreq *mhead, *mtail; /* metric reports: any writer */
    int stopping;
    int down;           /* under mu: calls fail fast while the writer reconnects */
    char down_err[512]; /* under mu */

    reader *rd;
    int n_readers;
    int *free_readers;
    int n_free;
    pthread_mutex_t rmu;
    pthread_cond_t rcv;

    /* Replicas: the coordination thread and its connection (the leader lease, LISTEN, and
     * sending queued notices). */
    char origin[20];       /* "<16 hex> ": prefixes our notices so we skip our own */
    pthread_t coord_th;
    int coord_started;
    int wake[2];           /* pipe: a notice was queued, or we are closing */
    PGconn *cc;            /* coordination thread only */
    pthread_mutex_t cmu;   /* the outgoing queue, leader, coord_stop */
    char **outq;
    size_t n_out, cap_out;
    uint64_t out_dropped;
    int leader, coord_stop;
    pthread_mutex_t hmu;   /* the handler; held while it runs */
    store_notice_fn handler;
    void *handler_user;
};

static const store_driver pg_driver;

static pgstore *impl(store *s) { return (pgstore *)s; }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq's messages end with a newline (sometimes two lines); one line reads better in logs. */
static void clean_msg(char *m)
{
    size_t n = strlen(m);
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) m[--n] = 0;
    for (char *p = m; *p; p++)
        if (*p == '\n' || *p == '\t') *p = ' ';
}

/* Whether a failure means the connection is gone (rather than this statement being wrong). */
static int conn_lost(PGconn *c, const PGresult *r)
{
    if (!c || PQstatus(c) == CONNECTION_BAD) return 1;
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!st) return r == NULL;
    /* 08: connection exception; 57P01..03: admin/crash shutdown, cannot connect now. */
    return strncmp(st, "08", 2) == 0 || strncmp(st, "57P0", 4) == 0;
}

/* Fills err with "what: message" and returns STORE_UNAVAILABLE when the connection is gone,
 * STORE_ERROR otherwise. r may be NULL. */
static int pg_fail(PGconn *c, const PGresult *r, const char *what, char *err, size_t errlen)
{
    char msg[384];
    const char *m = r ? PQresultErrorMessage(r) : NULL;
    if (!m || !*m) m = c ? PQerrorMessage(c) : "no connection";
    snprintf(msg, sizeof msg, "%s", m && *m ? m : "unknown error");
    clean_msg(msg);
    int lost = conn_lost(c, r);
    if (lost) snprintf(err, errlen, "%s: database unavailable: %s", what, msg);
    else snprintf(err, errlen, "%s: %s", what, msg);
    return lost ? STORE_UNAVAILABLE : STORE_ERROR;
}

/* Runs a prepared statement that returns no rows (or rows that are ignored). *affected (may be
 * NULL) = rows changed. */
static int q_exec(PGconn *c, int q, int n, const char *const *params, const char *what,
                  long *affected, char *err, size_t errlen)
{
    PGresult *r = PQexecPrepared(c, query_name[q], n, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_fail(c, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    if (affected) *affected = atol(PQcmdTuples(r));
    PQclear(r);
    return 0;
}

/* As q_exec for a rare statement that is not prepared (node secrets, enrollment tokens). */
static int param_exec(PGconn *c, const char *sql, int n, const char *const *params, const char *what,
                      long *affected, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_fail(c, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    if (affected) *affected = atol(PQcmdTuples(r));
    PQclear(r);
    return 0;
}

static int simple(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_fail(c, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    return 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static void notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* "relation already exists, skipping" and the like: not worth a log line */
}

/* A new connection with every statement prepared (and, for the writer, the temp table).
 * NULL with err on failure. */
static PGconn *pg_connect(const char *dsn, char *err, size_t errlen)
{
    /* The DSN comes last so that what it says wins over these defaults. */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "ops-manager", dsn, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[384];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        clean_msg(msg);
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    if (simple(c, "SET client_encoding = 'UTF8'", "set up connection", err, errlen) != 0) goto fail;
    return c;
fail:
    PQfinish(c);
    return NULL;
}

/* What a connection prepares, by role: statements [from, to). */
enum { ROLE_WRITER, ROLE_METRICS_WRITER, ROLE_READER };

/* Prepares the role's statements (after the migration: they name its tables), all in one
 * pipeline: a round trip each would make opening the store slow on a busy machine. */
static int pg_prepare_all(PGconn *c, int role, char *err, size_t errlen)
{
    int from = role == ROLE_READER ? Q_LIST_NODES : role == ROLE_METRICS_WRITER ? Q_MNODES_ADD : 0;
    int to = role == ROLE_READER ? Q_COUNT : role == ROLE_METRICS_WRITER ? Q_METRICS_MOVE_COUNT + 1
                                                                         : Q_LIST_NODES;
    if (PQenterPipelineMode(c) != 1) return pg_fail(c, NULL, "prepare statements", err, errlen);
    int sent = 1;
    for (int i = from; i < to; i++) sent &= PQsendPrepare(c, query_name[i], query_sql[i], 0, NULL);
    sent &= PQpipelineSync(c);
    int rc = sent ? 0 : pg_fail(c, NULL, "prepare statements", err, errlen);
    for (int i = from; sent && i < to; i++) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (rc == 0) rc = pg_fail(c, NULL, "prepare statements", err, errlen);
            break;
        }
        if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK) {
            char what[64];
            snprintf(what, sizeof what, "prepare %s", query_name[i]);
            rc = pg_fail(c, r, what, err, errlen);
        }
        PQclear(r);
        while ((r = PQgetResult(c))) PQclear(r);
    }
    PGresult *r = sent ? PQgetResult(c) : NULL; /* PGRES_PIPELINE_SYNC */
    PQclear(r);
    if (PQexitPipelineMode(c) != 1 && rc == 0) rc = pg_fail(c, NULL, "prepare statements", err, errlen);
    return rc ? (rc == STORE_ERROR && PQstatus(c) == CONNECTION_BAD ? STORE_UNAVAILABLE : rc) : 0;
}

static PGconn *pg_connect_ready(const char *dsn, int role, char *err, size_t errlen)
{
    PGconn *c = pg_connect(dsn, err, errlen);
    if (c && pg_prepare_all(c, role, err, errlen) != 0) {
        PQfinish(c);
        c = NULL;
    }
    return c;
}

/* ---- writer thread ------------------------------------------------------------------------ */

static void fail_pending(wreq *batch, int rc, const char *msg)
{
    for (wreq *r = batch; r; r = r->next) {
        if (r->state == REQ_FINISHED) continue;
        snprintf(r->err, r->errlen, "%s", msg);
        r->rc = rc;
        r->state = REQ_FINISHED;
    }
}

/* Appends src to the COPY buffer escaped for COPY's text format. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 1024;
        while (ncap < b->len + n + 1) ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Sends [BEGIN,] SAVEPOINT req, Q_MNODES_ADD(pn) and Q_METRICS_MOVE(p) in one pipeline and
 * reads their results. *moved = rows the last one inserted. The first failure is reported. */
static int pipeline(PGconn *c, int begin, const char *const *pn, const char *const *p,
                    long *moved, char *err, size_t errlen)
{
    static const char *what = "store metrics";
    if (PQenterPipelineMode(c) != 1) return pg_fail(c, NULL, what, err, errlen);
    int sent = 1;
    if (begin) sent &= PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    sent &= PQsendQueryParams(c, "SAVEPOINT req", 0, NULL, NULL, NULL, NULL, 0);
    sent &= PQsendQueryPrepared(c, query_name[Q_MNODES_ADD], 1, pn, NULL, NULL, 0);
    sent &= PQsendQueryPrepared(c, query_name[Q_METRICS_MOVE], 4, p, NULL, NULL, 0);
    sent &= PQpipelineSync(c);
    if (!sent) {
        int rc = pg_fail(c, NULL, what, err, errlen);
        PQexitPipelineMode(c);
        return rc == 0 ? STORE_UNAVAILABLE : rc;
    }
    int rc = 0, nq = begin ? 4 : 3;
    for (int q = 0; q < nq; q++) {
        PGresult *r = PQgetResult(c);
        if (!r) { /* the connection went away mid-pipeline */
            if (rc == 0) rc = pg_fail(c, NULL, what, err, errlen);
            if (rc == STORE_ERROR && PQstatus(c) == CONNECTION_BAD) rc = STORE_UNAVAILABLE;
            PQexitPipelineMode(c);
            return rc ? rc : STORE_UNAVAILABLE;
        }
        ExecStatusType st = PQresultStatus(r);
        if (rc == 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            rc = pg_fail(c, st == PGRES_PIPELINE_ABORTED ? NULL : r, what, err, errlen);
        if (rc == 0 && q == nq - 1) *moved = atol(PQcmdTuples(r));
        PQclear(r);
        while ((r = PQgetResult(c))) PQclear(r); /* the NULL that ends this query's results */
    }
    PGresult *r = PQgetResult(c); /* PGRES_PIPELINE_SYNC */
    if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        if (rc == 0) rc = pg_fail(c, r, what, err, errlen);
        if (rc == STORE_ERROR && PQstatus(c) == CONNECTION_BAD) rc = STORE_UNAVAILABLE;
    }
    PQclear(r);
    if (PQexitPipelineMode(c) != 1 && rc == 0) rc = pg_fail(c, NULL, what, err, errlen);
    return rc;
}

static int span_eq(const enc_report *a, span x, const enc_report *b, span y)
{
    return x.len == y.len && memcmp(a->buf + x.off, b->buf + y.off, x.len) == 0;
}

/* Stores the reports reqs[0..n) in the current transaction (the caller holds savepoint "req"
 * around it) with two statements whatever their number. A row that two reports of the batch
 * share goes to the first; counts per report land in rep->inserted. */
static int metrics_step(PGconn *w, wreq **reqs, size_t n, int begin, char *err, size_t errlen)
{
    static const char *what = "store metrics";
    size_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        reqs[i]->rep->inserted = 0;
        rows += reqs[i]->rep->n_rows;
    }
    size_t cap = 16;
    while (cap < rows * 2) cap *= 2;
    uint64_t *slots = calloc(cap, sizeof *slots); /* (report + 1) << 32 | row; 0 = empty */
    uint64_t *kept = calloc(rows ? rows : 1, sizeof *kept); /* array position -> same */
    sbuf nodes = {0}, a_node = {0}, a_ts = {0}, a_type = {0}, a_vals = {0};
    int rc = STORE_ERROR;
    size_t nkept = 0;
    PGresult *r = NULL;
    if (!slots || !kept) goto oom;
    sb_put(&nodes, "{", 1);
    sb_put(&a_node, "{", 1);
    sb_put(&a_ts, "{", 1);
    sb_put(&a_type, "{", 1);
    sb_put(&a_vals, "{", 1);
    for (size_t i = 0; i < n; i++) {
        const enc_report *rep = reqs[i]->rep;
        if (i) sb_put(&nodes, ",", 1);
        sb_put(&nodes, rep->buf + rep->node.off, rep->node.len);
        for (size_t j = 0; j < rep->n_rows; j++) {
            const enc_row *row = &rep->rows[j];
            uint64_t h = hash_bytes(rep->buf + rep->node.off, rep->node.len);
            h ^= hash_bytes(rep->buf + row->ts.off, row->ts.len) * 31;
            h ^= hash_bytes(rep->buf + row->type.off, row->type.len) * 17;
            size_t k = (size_t)h & (cap - 1);
            int dup = 0;
            for (; slots[k]; k = (k + 1) & (cap - 1)) {
                const enc_report *o = reqs[(slots[k] >> 32) - 1]->rep;
                const enc_row *orow = &o->rows[slots[k] & 0xffffffffu];
                if (span_eq(rep, row->ts, o, orow->ts) && span_eq(rep, row->type, o, orow->type) &&
                    span_eq(rep, rep->node, o, o->node)) {
                    dup = 1;
                    break;
                }
            }
            if (dup) continue;
            slots[k] = kept[nkept] = ((uint64_t)(i + 1) << 32) | j;
            const char *sep = nkept++ ? "," : "";
            sb_str(&a_node, sep);
            sb_put(&a_node, rep->buf + rep->node.off, rep->node.len);
            sb_str(&a_ts, sep);
            sb_put(&a_ts, rep->buf + row->ts.off, row->ts.len);
            sb_str(&a_type, sep);
            sb_put(&a_type, rep->buf + row->type.off, row->type.len);
            sb_str(&a_vals, sep);
            sb_put(&a_vals, rep->buf + row->vals.off, row->vals.len);
        }
    }
    sb_put(&nodes, "}", 1);
    sb_put(&a_node, "}", 1);
    sb_put(&a_ts, "}", 1);
    sb_put(&a_type, "}", 1);
    sb_put(&a_vals, "}", 1);
    if (nodes.oom || a_node.oom || a_ts.oom || a_type.oom || a_vals.oom) goto oom;
    const char *pn[1] = {nodes.p};
    const char *p[4] = {a_node.p, a_ts.p, a_type.p, a_vals.p};
    long moved = 0;
    /* One round trip for [BEGIN,] SAVEPOINT, the node ids and the rows: on a busy machine
     * each wait for the server costs more than the work. */
    if ((rc = pipeline(w, begin, pn, p, &moved, err, errlen)) != 0) goto out;
    if ((size_t)moved == nkept) { /* the usual case: every row was new */
        for (size_t x = 0; x < nkept; x++)
            reqs[(kept[x] >> 32) - 1]->rep->inserted +=
                (size_t)reqs[(kept[x] >> 32) - 1]->rep->rows[kept[x] & 0xffffffffu].nv;
        rc = 0;
        goto out;
    }
    /* Some were there already (a retried report): undo, and redo it learning which were new. */
    if ((rc = simple(w, "ROLLBACK TO SAVEPOINT req", what, err, errlen)) != 0) goto out;
    if ((rc = q_exec(w, Q_MNODES_ADD, 1, pn, what, NULL, err, errlen)) != 0) goto out;
    r = PQexecPrepared(w, query_name[Q_METRICS_MOVE_COUNT], 4, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(w, r, what, err, errlen);
        goto out;
    }
    for (int t = 0; t < PQntuples(r); t++) {
        size_t o = (size_t)strtoull(PQgetvalue(r, t, 0), NULL, 10);
        if (o < 1 || o > nkept) continue;
        enc_report *rep = reqs[(kept[o - 1] >> 32) - 1]->rep;
        rep->inserted += (size_t)rep->rows[kept[o - 1] & 0xffffffffu].nv;
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "%s: out of memory", what);
    rc = STORE_ERROR;
out:
    PQclear(r);
    free(slots);
    free(kept);
    free(nodes.p); free(a_node.p); free(a_ts.p); free(a_type.p); free(a_vals.p);
    return rc;
}

/* Runs one request in its savepoint. 0, STORE_ERROR (rolled back to the savepoint, the
 * transaction goes on) or STORE_UNAVAILABLE (connection gone). */
static int run_one(PGconn *w, wreq **reqs, size_t n, int begin, int release, char *err,
                   size_t errlen)
{
    int rc;
    if (reqs[0]->rep) {
        rc = metrics_step(w, reqs, n, begin, err, errlen); /* opens the savepoint itself */
    } else {
        rc = simple(w, begin ? "BEGIN; SAVEPOINT req" : "SAVEPOINT req", "savepoint", err,
                    errlen);
        if (rc == 0) rc = reqs[0]->fn(w, reqs[0]->arg, err, errlen);
    }
    if (rc == 0 && release)
        rc = simple(w, "RELEASE SAVEPOINT req", "release savepoint", err, errlen);
    if (rc == 0) return 0;
    if (rc == STORE_UNAVAILABLE || conn_lost(w, NULL)) return STORE_UNAVAILABLE;
    char ignored[256];
    if (simple(w, "ROLLBACK TO SAVEPOINT req; RELEASE SAVEPOINT req", "rollback to savepoint",
               ignored, sizeof ignored) != 0)
        return STORE_UNAVAILABLE;
    return STORE_ERROR;
}

/* Replaces the writer's connection. 0 or -1 with err. */
static int writer_reconnect(writer *wr, char *err, size_t errlen)
{
    PQfinish(wr->c);
    wr->c = pg_connect_ready(wr->s->dsn, wr->idx ? ROLE_METRICS_WRITER : ROLE_WRITER, err, errlen);
    return wr->c ? 0 : -1;
}

/* Any writer may find the server gone; writer 0 reconnects. It may be idle, and while down
 * nothing is queued that would wake it, so it is woken here (else the store stayed down for
 * good when a metrics writer saw the loss first: seen after a PostgreSQL restart under load). */
static void set_down(pgstore *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    if (!s->down) log_warn("store.unavailable", "driver=postgres error=\"%s\"", why);
    s->down = 1;
    snprintf(s->down_err, sizeof s->down_err, "%s", why);
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs a batch in one transaction: the generic requests in queue order, then all metric
 * reports together (each alone if together they fail). */
static void run_batch(writer *wr, wreq *batch)
{
    pgstore *s = wr->s;
    char msg[512];
    size_t nrep = 0;
    for (wreq *r = batch; r; r = r->next)
        if (r->rep) nrep++;
    wreq **reps = nrep ? calloc(nrep, sizeof *reps) : NULL;
    if (nrep && !reps) {
        fail_pending(batch, STORE_ERROR, "store metrics: out of memory");
        return;
    }
    int retried = 0;
    for (;;) {
        if (!wr->c) {
            snprintf(msg, sizeof msg, "database unavailable: not connected");
            goto lost;
        }
        /* BEGIN goes out with the first request's SAVEPOINT: one round trip fewer. */
        int begin = 1;
        nrep = 0;
        for (wreq *r = batch; r; r = r->next) {
            if (r->state != REQ_PENDING) continue;
            if (r->rep) { reps[nrep++] = r; continue; }
            int rc = run_one(wr->c, &r, 1, begin, 1, r->err, r->errlen);
            begin = 0;
            if (rc == STORE_UNAVAILABLE) { snprintf(msg, sizeof msg, "%s", r->err); goto lost; }
            if (rc == 0) { r->state = REQ_IN_TXN; continue; }
            r->rc = rc;
            r->state = REQ_FINISHED;
        }
        if (nrep) {
            /* The last step before COMMIT, which releases its savepoint. */
            int rc = run_one(wr->c, reps, nrep, begin, 0, msg, sizeof msg);
            begin = 0;
            if (rc == STORE_UNAVAILABLE) goto lost;
            if (rc == 0) {
                for (size_t i = 0; i < nrep; i++) reps[i]->state = REQ_IN_TXN;
            } else {
                for (size_t i = 0; i < nrep; i++) {
                    wreq *r = reps[i];
                    rc = run_one(wr->c, &r, 1, 0, 1, r->err, r->errlen);
                    if (rc == STORE_UNAVAILABLE) { snprintf(msg, sizeof msg, "%s", r->err); goto lost; }
                    if (rc == 0) { r->state = REQ_IN_TXN; continue; }
                    r->rc = rc;
                    r->state = REQ_FINISHED;
                }
            }
        }
        if (begin) break; /* nothing was pending (cannot happen: a batch is never empty) */
        if (simple(wr->c, "COMMIT", "commit", msg, sizeof msg) != 0) {
            /* Lost during COMMIT: it may or may not have happened. The callers hear
             * "unavailable" and retry; every write here is safe to repeat. */
            int lost = conn_lost(wr->c, NULL);
            if (!lost) {
                char ignored[128];
                simple(wr->c, "ROLLBACK", "rollback", ignored, sizeof ignored);
            }
            for (wreq *r = batch; r; r = r->next)
                if (r->state == REQ_IN_TXN) r->state = REQ_PENDING;
            fail_pending(batch, lost ? STORE_UNAVAILABLE : STORE_ERROR, msg);
            if (lost) set_down(s, msg);
            break;
        }
        for (wreq *r = batch; r; r = r->next) {
            if (r->state != REQ_IN_TXN) continue;
            r->rc = 0;
            r->state = REQ_FINISHED;
        }
        break;
    lost:
        /* Nothing of this transaction was committed: run it again on a new connection, once. */
        for (wreq *r = batch; r; r = r->next)
            if (r->state == REQ_IN_TXN) r->state = REQ_PENDING;
        if (!retried) {
            retried = 1;
            char cerr[256];
            if (writer_reconnect(wr, cerr, sizeof cerr) == 0) {
                log_info("store.reconnected", "driver=postgres after=\"%s\"", msg);
                continue;
            }
        }
        fail_pending(batch, STORE_UNAVAILABLE, msg);
        set_down(s, msg);
        break;
    }
    free(reps);
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pg-writer");
    writer *wr = arg;
    pgstore *s = wr->s;
    int backoff = BACKOFF_MIN_MS;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (wr->idx == 0 && s->down && !s->stopping) {
            /* Wait out the backoff (a close cuts it short), then try the server again. The
             * other writers find out about their own connections when they next use them. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += backoff / 1000;
            until.tv_nsec += (long)(backoff % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
            while (!s->stopping && !s->head && !s->mhead &&
                   pthread_cond_timedwait(&s->work_cv, &s->mu, &until) != ETIMEDOUT) {}
            if (!s->stopping && !s->head && !s->mhead) {
                pthread_mutex_unlock(&s->mu);
                char cerr[256];
                int ok = writer_reconnect(wr, cerr, sizeof cerr) == 0;
                pthread_mutex_lock(&s->mu);
                if (ok) {
                    s->down = 0;
                    backoff = BACKOFF_MIN_MS;
                    log_info("store.available", "driver=postgres");
                } else {
                    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                    log_debug("store.reconnect_failed", "driver=postgres error=\"%s\"", cerr);
                }
                continue;
            }
        }
        while (!s->mhead && !(wr->idx == 0 && (s->head || s->down)) && !s->stopping)
            pthread_cond_wait(&s->work_cv, &s->mu);
        if (wr->idx == 0 && s->down && !s->stopping && !s->head && !s->mhead) continue; /* reconnect */
        if (!s->mhead && !(wr->idx == 0 && s->head)) break; /* stopping and drained */
        /* Writer 0: the other requests first (in queue order), then the reports. */
        wreq *batch = NULL;
        if (wr->idx == 0 && s->head) {
            batch = s->head;
            s->tail->next = s->mhead;
            s->head = s->tail = NULL;
        } else {
            batch = s->mhead; /* the other requests stay for writer 0 */
        }
        s->mhead = s->mtail = NULL;
        int down = s->down;
        char why[512];
        snprintf(why, sizeof why, "%s", s->down_err);
        pthread_mutex_unlock(&s->mu);

        if (down) fail_pending(batch, STORE_UNAVAILABLE, why); /* queued just before the loss */
        else run_batch(wr, batch);

        wreq **link = &batch;
        while (*link) {
            wreq *r = *link;
            if (r->cb) {
                *link = r->next;
                r->cb(r);
            } else {
                link = &r->next;
            }
        }
        pthread_mutex_lock(&s->mu);
        for (wreq *r = batch; r;) {
            wreq *next = r->next;
            r->done = 1;
            pthread_cond_signal(&r->cv);
            r = next;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues r. 0, or a status (with r->err filled) when refused: closing, or the server is down. */
static int enqueue(pgstore *s, wreq *r)
{
    if (s->stopping) {
        snprintf(r->err, r->errlen, "store is closing");
        return STORE_ERROR;
    }
    if (s->down) {
        snprintf(r->err, r->errlen, "database unavailable: %s", s->down_err);
        return STORE_UNAVAILABLE;
    }
    r->next = NULL;
    wreq **head = r->rep ? &s->mhead : &s->head, **tail = r->rep ? &s->mtail : &s->tail;
    if (*tail) (*tail)->next = r;
    else *head = r;
    *tail = r;
    pthread_cond_broadcast(&s->work_cv); /* a report may go to any writer, the rest to 0 */
    return 0;
}

static int submit_req(pgstore *s, wreq *r)
{
    pthread_mutex_lock(&s->mu);
    int rc = enqueue(s, r);
    if (rc != 0) {
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    pthread_cond_init(&r->cv, NULL);
    while (!r->done) pthread_cond_wait(&r->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r->cv);
    return r->rc;
}

static int submit(pgstore *s, write_fn fn, void *arg, char *err, size_t errlen)
{
    char local[256];
    if (!err || !errlen) { err = local; errlen = sizeof local; }
    err[0] = 0;
    wreq r = {.fn = fn, .arg = arg, .err = err, .errlen = errlen, .state = REQ_PENDING};
    return submit_req(s, &r);
}

/* ---- write requests (writer thread, inside a savepoint) ------------------------------------ */

static const char *nz(const char *v) { return v ? v : ""; }

static void i64s(char *buf, size_t n, int64_t v) { snprintf(buf, n, "%" PRId64, v); }

/* A PostgreSQL array literal of text: {"a","b\"c"}. */
static void sb_text_array_item(sbuf *b, const char *v, int first)
{
    if (!first) sb_put(b, ",", 1);
    sb_put(b, "\"", 1);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\') sb_put(b, "\\", 1);
        sb_put(b, p, 1);
    }
    sb_put(b, "\"", 1);
}

struct node_args {
    const store_node_in *n;
    const char *labels_json;
    int64_t now;
};

static int w_upsert_node(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct node_args *a = arg;
    const store_node_in *n = a->n;
    char now[24];
    i64s(now, sizeof now, a->now);
    const char *p[10] = {n->node_id, nz(n->hostname), nz(n->ip), nz(n->os), nz(n->arch),
                         a->labels_json, nz(n->daemon_version), nz(n->agent_version),
                         nz(n->daemon_address), now};
    int rc = q_exec(w, Q_NODE_UPSERT, 10, p, "register node", NULL, err, errlen);
    if (rc != 0) return rc;
    char ats[32];
    sbuf b = {0};
    sb_put(&b, "{", 1);
    sb_text_array_item(&b, n->node_id, 1);
    sb_put(&b, "}", 1);
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "register node: out of memory");
        return STORE_ERROR;
    }
    snprintf(ats, sizeof ats, "{%s}", now);
    const char *pe[3] = {b.p, "{registered}", ats};
    rc = q_exec(w, Q_EVENTS_ADD, 3, pe, "record node event", NULL, err, errlen);
    free(b.p);
    return rc;
}

struct placeholder_args {
    const char *node_id;
    int64_t now;
    int created;
};

static int w_placeholder(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct placeholder_args *a = arg;
    char now[24];
    i64s(now, sizeof now, a->now);
    const char *p[2] = {a->node_id, now};
    long changed = 0;
    int rc = q_exec(w, Q_NODE_PLACEHOLDER, 2, p, "add placeholder node", &changed, err, errlen);
    a->created = rc == 0 && changed > 0;
    return rc;
}

/* Arrays built by the caller, so the writer only sends them. */
struct array_args {
    int q;
    const char *what;
    const char *p[4];
    int n;
};

static int w_arrays(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct array_args *a = arg;
    return q_exec(w, a->q, a->n, a->p, a->what, NULL, err, errlen);
}

struct agents_args {
    const char *node_id;
    const store_agent_in *a;
    size_t n;
    int64_t now;
    const char *ids;
};

static int w_sync_agents(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct agents_args *a = arg;
    char now[24], pid[16], hb[24];
    i64s(now, sizeof now, a->now);
    for (size_t i = 0; i < a->n; i++) {
        const store_agent_in *g = &a->a[i];
        snprintf(pid, sizeof pid, "%d", (int)g->pid);
        i64s(hb, sizeof hb, g->last_heartbeat);
        const char *p[8] = {a->node_id, g->agent_id, nz(g->type), nz(g->version), nz(g->status),
                            pid, hb, now};
        int rc = q_exec(w, Q_AGENT_UPSERT, 8, p, "store agent state", NULL, err, errlen);
        if (rc != 0) return rc;
    }
    const char *p[3] = {a->node_id, a->ids, now};
    return q_exec(w, Q_AGENT_REMOVE_MISSING, 3, p, "mark removed agents", NULL, err, errlen);
}

struct retention_args {
    int64_t before, limit, cursor, next_cursor, deleted;
    int finished;
};

static int w_retention(PGconn *w, void *arg, char *err, size_t errlen)
{
    static const char *what = "delete old metrics";
    struct retention_args *a = arg;
    int64_t cursor = a->cursor, got = 0;
    char cur[24], before[24], room[24];
    i64s(before, sizeof before, a->before);
    a->finished = 0;
    for (int seen = 0; got < a->limit && seen < STORE_RETENTION_SERIES; seen++) {
        i64s(cur, sizeof cur, cursor);
        const char *p1[1] = {cur};
        PGresult *r = PQexecPrepared(w, query_name[Q_RET_NEXT_SERIES], 1, p1, NULL, NULL, 0);
        if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
            int rc = pg_fail(w, r, what, err, errlen);
            PQclear(r);
            return rc;
        }
        if (PQntuples(r) == 0) { PQclear(r); a->finished = 1; break; }
        int64_t sid = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        i64s(cur, sizeof cur, sid);
        i64s(room, sizeof room, a->limit - got);
        const char *p[3] = {cur, before, room};
        long changed = 0;
        int rc = q_exec(w, Q_RET_DELETE, 3, p, what, &changed, err, errlen);
        if (rc != 0) return rc;
        got += changed;
        /* A series that filled the batch may have more: the next batch starts with it again. */
        cursor = changed >= a->limit - (got - changed) ? sid - 1 : sid;
    }
    a->next_cursor = cursor;
    a->deleted = got;
    return 0;
}

struct delete_node_args {
    const char *node_id;
    int found;
};

static int w_delete_node(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct delete_node_args *a = arg;
    static const int steps[] = {Q_DEL_POINTS, Q_DEL_SERIES, Q_DEL_AGENTS, Q_DEL_EVENTS,
                                Q_DEL_NODE};
    const char *p[1] = {a->node_id};
    long changed = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int rc = q_exec(w, steps[i], 1, p, "delete node", &changed, err, errlen);
        if (rc != 0) return rc;
    }
    a->found = changed > 0;
    /* a deleted node must enroll again */
    return param_exec(w, "DELETE FROM node_secrets WHERE node_id = $1", 1, p, "delete node secret", NULL, err,
                      errlen);
}

static int w_audit(PGconn *w, void *arg, char *err, size_t errlen)
{
    const store_audit_in *a = arg;
    char at[24];
    i64s(at, sizeof at, a->at);
    const char *p[8] = {at, nz(a->actor), nz(a->role), nz(a->method), nz(a->target),
                        nz(a->result), nz(a->detail), nz(a->peer)};
    return q_exec(w, Q_AUDIT_ADD, 8, p, "record audit", NULL, err, errlen);
}

/* ---- write API ---------------------------------------------------------------------------- */

static int need_id(const char *id, char *err, size_t errlen)
{
    if (id && *id) return 0;
    snprintf(err, errlen, "node_id is empty");
    return -1;
}

static int pg_upsert_node(store *st, const store_node_in *n, int64_t now, char *err,
                          size_t errlen)
{
    if (need_id(n->node_id, err, errlen) < 0) return -1;
    json_t *obj = json_object();
    if (!obj) { snprintf(err, errlen, "register node: out of memory"); return -1; }
    for (size_t i = 0; i < n->n_labels; i++) {
        const char *k = n->labels[i].key ? n->labels[i].key : "";
        json_t *v = json_string(n->labels[i].value ? n->labels[i].value : "");
        if (!v || json_object_set_new(obj, k, v) < 0) {
            json_decref(obj);
            snprintf(err, errlen, "register node: label '%.100s' is not valid UTF-8", k);
            return -1;
        }
    }
    char *labels = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    if (!labels) { snprintf(err, errlen, "register node: out of memory"); return -1; }
    struct node_args a = {n, labels, now};
    int rc = submit(impl(st), w_upsert_node, &a, err, errlen);
    free(labels);
    return rc;
}

static int pg_upsert_placeholder(store *st, const char *node_id, int64_t now, int *created,
                                 char *err, size_t errlen)
{
    if (created) *created = 0;
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct placeholder_args a = {node_id, now, 0};
    int rc = submit(impl(st), w_placeholder, &a, err, errlen);
    if (created) *created = rc == 0 && a.created;
    return rc;
}

static int pg_touch_nodes(store *st, const store_touch *t, size_t n, char *err, size_t errlen)
{
    if (!n) return 0;
    sbuf ids = {0}, seen = {0}, status = {0};
    sb_put(&ids, "{", 1);
    sb_put(&seen, "{", 1);
    sb_put(&status, "{", 1);
    for (size_t i = 0; i < n; i++) {
        char num[24];
        sb_text_array_item(&ids, nz(t[i].node_id), i == 0);
        snprintf(num, sizeof num, "%s%" PRId64, i ? "," : "", t[i].last_seen);
        sb_str(&seen, num);
        if (i) sb_put(&status, ",", 1);
        sb_str(&status, t[i].status == STORE_NODE_ANY ? "\"\"" : store_node_status_name(t[i].status));
    }
    sb_put(&ids, "}", 1);
    sb_put(&seen, "}", 1);
    sb_put(&status, "}", 1);
    char now[24];
    i64s(now, sizeof now, (int64_t)time(NULL));
    int rc = STORE_ERROR;
    if (ids.oom || seen.oom || status.oom) {
        snprintf(err, errlen, "update node liveness: out of memory");
    } else {
        struct array_args a = {Q_NODE_TOUCH, "update node liveness", {ids.p, seen.p, status.p, now}, 4};
        rc = submit(impl(st), w_arrays, &a, err, errlen);
    }
    free(ids.p); free(seen.p); free(status.p);
    return rc;
}

static int pg_add_node_events(store *st, const store_event_in *ev, size_t n, char *err,
                              size_t errlen)
{
    if (!n) return 0;
    sbuf ids = {0}, evs = {0}, at = {0};
    sb_put(&ids, "{", 1);
    sb_put(&evs, "{", 1);
    sb_put(&at, "{", 1);
    for (size_t i = 0; i < n; i++) {
        char num[24];
        sb_text_array_item(&ids, nz(ev[i].node_id), i == 0);
        sb_text_array_item(&evs, nz(ev[i].event), i == 0);
        snprintf(num, sizeof num, "%s%" PRId64, i ? "," : "", ev[i].at);
        sb_str(&at, num);
    }
    sb_put(&ids, "}", 1);
    sb_put(&evs, "}", 1);
    sb_put(&at, "}", 1);
    int rc = STORE_ERROR;
    if (ids.oom || evs.oom || at.oom) {
        snprintf(err, errlen, "record node event: out of memory");
    } else {
        struct array_args a = {Q_EVENTS_ADD, "record node event", {ids.p, evs.p, at.p, NULL}, 3};
        rc = submit(impl(st), w_arrays, &a, err, errlen);
    }
    free(ids.p); free(evs.p); free(at.p);
    return rc;
}

static int pg_sync_agents(store *st, const char *node_id, const store_agent_in *ag, size_t n,
                          int64_t now, char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    sbuf ids = {0};
    sb_put(&ids, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (!ag[i].agent_id || !*ag[i].agent_id) {
            free(ids.p);
            snprintf(err, errlen, "sync agents: agent_id is empty (state %zu)", i);
            return -1;
        }
        sb_text_array_item(&ids, ag[i].agent_id, i == 0);
    }
    sb_put(&ids, "}", 1);
    if (ids.oom) {
        free(ids.p);
        snprintf(err, errlen, "sync agents: out of memory");
        return -1;
    }
    struct agents_args a = {node_id, ag, n, now, ids.p};
    int rc = submit(impl(st), w_sync_agents, &a, err, errlen);
    free(ids.p);
    return rc;
}

/* An element of an array literal: in double quotes, with " and \ escaped. */
static void sb_arr_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    const char *run = s;
    for (const char *p = s;; p++) {
        if (*p && *p != '"' && *p != '\\') continue;
        sb_put(b, run, (size_t)(p - run));
        if (!*p) break;
        sb_put(b, "\\", 1);
        run = p;
    }
    sb_put(b, "\"", 1);
}

/* A JSON string inside an array element: JSON's own escapes, then the element's (every " and
 * \ of the JSON gets a backslash). */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\\\"", 2);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[12];
        if (*c == '"') sb_put(b, "\\\\\\\"", 4);
        else if (*c == '\\') sb_put(b, "\\\\\\\\", 4);
        else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\\\u%04x", *c);
            sb_put(b, esc, 7);
        } else sb_put(b, (const char *)c, 1);
    }
    sb_put(b, "\\\"", 2);
}

/* The shortest of %.15g..%.17g that reads back as exactly v. */
static void sb_double(sbuf *b, double v)
{
    char num[40];
    /* jsonb numbers are numeric, which has no negative zero: -0 goes in as the string "-0",
     * which the reads' (value #>> '{}')::float8 turns back into -0.0. */
    if (v == 0 && signbit(v)) { sb_put(b, "\\\"-0\\\"", 6); return; }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    sb_str(b, num);
}

/* Encodes a report on the caller's thread. Values that are not finite have no JSON form (nor
 * meaning as a measurement) and are skipped, as SQLite's driver does. */
static int encode_report(const char *node_id, const store_metric_in *m, size_t n,
                         enc_report *rep)
{
    sbuf b = {0};
    rep->rows = calloc(n ? n : 1, sizeof *rep->rows);
    if (!rep->rows) return -1;
    sb_arr_str(&b, node_id);
    rep->node = (span){0, b.len};
    for (size_t i = 0; i < n && !b.oom; i++) {
        size_t start = b.len;
        enc_row row = {0};
        char num[32];
        int nl = snprintf(num, sizeof num, "%" PRId64, m[i].ts);
        row.ts = (span){b.len, (size_t)nl};
        sb_put(&b, num, (size_t)nl);
        size_t t0 = b.len;
        sb_arr_str(&b, nz(m[i].type));
        row.type = (span){t0, b.len - t0};
        size_t v0 = b.len;
        sb_put(&b, "\"{", 2);
        for (size_t j = 0; j < m[i].n_values; j++) {
            double v = m[i].values[j].value;
            if (!isfinite(v)) continue;
            if (row.nv++) sb_put(&b, ",", 1);
            sb_json_string(&b, nz(m[i].values[j].key));
            sb_put(&b, ":", 1);
            sb_double(&b, v);
        }
        sb_put(&b, "}\"", 2);
        row.vals = (span){v0, b.len - v0};
        if (!row.nv) { b.len = start; continue; }
        rep->rows[rep->n_rows++] = row;
    }
    if (b.oom) { free(b.p); free(rep->rows); rep->rows = NULL; return -1; }
    rep->buf = b.p;
    return 0;
}

static int pg_insert_metrics(store *st, const char *node_id, const store_metric_in *m, size_t n,
                             size_t *inserted, char *err, size_t errlen)
{
    if (inserted) *inserted = 0;
    if (need_id(node_id, err, errlen) < 0) return -1;
    if (!n) return 0;
    enc_report rep = {0};
    if (encode_report(node_id, m, n, &rep) < 0) {
        snprintf(err, errlen, "store metrics: out of memory");
        return -1;
    }
    int rc = 0;
    if (rep.n_rows) {
        char local[256];
        if (!err || !errlen) { err = local; errlen = sizeof local; }
        err[0] = 0;
        wreq r = {.rep = &rep, .err = err, .errlen = errlen, .state = REQ_PENDING};
        rc = submit_req(impl(st), &r);
        if (rc == 0 && inserted) *inserted = rep.inserted;
    }
    free(rep.buf);
    free(rep.rows);
    return rc;
}

typedef struct async_metrics {
    wreq r;
    enc_report rep;
    store_done_fn cb;
    void *user;
    char err[512];
} async_metrics;

static void async_free(async_metrics *am)
{
    free(am->rep.buf);
    free(am->rep.rows);
    free(am);
}

static void async_done(wreq *r)
{
    async_metrics *am = (async_metrics *)r; /* r is the first member */
    am->cb(am->user, r->rc, am->err, r->rc == 0 ? am->rep.inserted : 0);
    async_free(am);
}

static void pg_insert_metrics_async(store *st, const char *node_id, const store_metric_in *m,
                                    size_t n, store_done_fn cb, void *user)
{
    char err[512];
    if (need_id(node_id, err, sizeof err) < 0) { cb(user, -1, err, 0); return; }
    if (!n) { cb(user, 0, "", 0); return; }
    async_metrics *am = calloc(1, sizeof *am);
    if (!am || encode_report(node_id, m, n, &am->rep) < 0) {
        free(am);
        cb(user, -1, "store metrics: out of memory", 0);
        return;
    }
    if (!am->rep.n_rows) { async_free(am); cb(user, 0, "", 0); return; }
    am->cb = cb;
    am->user = user;
    am->r = (wreq){.rep = &am->rep, .err = am->err, .errlen = sizeof am->err,
                   .state = REQ_PENDING, .cb = async_done};
    pgstore *s = impl(st);
    pthread_mutex_lock(&s->mu);
    int rc = enqueue(s, &am->r);
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        snprintf(err, sizeof err, "%s", am->err);
        async_free(am);
        cb(user, rc, err, 0);
    }
}

static int pg_delete_metrics_before(store *st, int64_t before, size_t batch_limit,
                                    uint64_t *deleted, char *err, size_t errlen)
{
    uint64_t total = 0;
    struct retention_args a = {.before = before, .cursor = 0};
    a.limit = batch_limit ? (int64_t)batch_limit : DEFAULT_RETENTION_BATCH;
    int rc = 0;
    for (;;) {
        if ((rc = submit(impl(st), w_retention, &a, err, errlen)) != 0) break;
        total += (uint64_t)a.deleted;
        if (a.finished) break;
        a.cursor = a.next_cursor;
    }
    if (deleted) *deleted = total;
    return rc;
}

static int pg_delete_node(store *st, const char *node_id, int *found, char *err, size_t errlen)
{
    if (found) *found = 0;
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct delete_node_args a = {node_id, 0};
    int rc = submit(impl(st), w_delete_node, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

static int pg_add_audit(store *st, const store_audit_in *a, char *err, size_t errlen)
{
    return submit(impl(st), w_audit, (void *)a, err, errlen);
}

/* ---- reads -------------------------------------------------------------------------------- */

/* Runs a read statement on a pooled connection, reconnecting it first if it died (at most
 * once per backoff period, so that an outage costs callers no waiting). *out is the result
 * (PGRES_TUPLES_OK) for the caller to PQclear. */
static int rd_query(pgstore *s, int q, int n, const char *const *params, const char *what,
                    PGresult **out, char *err, size_t errlen)
{
    *out = NULL;
    pthread_mutex_lock(&s->rmu);
    while (!s->n_free) pthread_cond_wait(&s->rcv, &s->rmu);
    int idx = s->free_readers[--s->n_free];
    pthread_mutex_unlock(&s->rmu);
    reader *rd = &s->rd[idx];
    int rc = 0;
    if (!rd->c) {
        int64_t now = mono_ms();
        if (now < rd->retry_at_ms) {
            snprintf(err, errlen, "%s: database unavailable (reconnecting)", what);
            rc = STORE_UNAVAILABLE;
        } else {
            char cerr[256];
            rd->c = pg_connect_ready(s->dsn, ROLE_READER, cerr, sizeof cerr);
            if (!rd->c) {
                rd->backoff_ms = rd->backoff_ms ? rd->backoff_ms * 2 : BACKOFF_MIN_MS;
                if (rd->backoff_ms > BACKOFF_MAX_MS) rd->backoff_ms = BACKOFF_MAX_MS;
                rd->retry_at_ms = now + rd->backoff_ms;
                snprintf(err, errlen, "%s: database unavailable: %s", what, cerr);
                rc = STORE_UNAVAILABLE;
            } else {
                rd->backoff_ms = 0;
            }
        }
    }
    /* A connection that died while idle (the server restarted) fails on its next query:
     * one new connection and one more try then, as a read is safe to repeat. */
    for (int attempt = 0; rc == 0; attempt++) {
        PGresult *r = PQexecPrepared(rd->c, query_name[q], n, params, NULL, NULL, 0);
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
            *out = r;
            break;
        }
        rc = pg_fail(rd->c, r, what, err, errlen);
        PQclear(r);
        if (rc != STORE_UNAVAILABLE) break;
        PQfinish(rd->c);
        rd->c = NULL;
        if (attempt > 0) break;
        char cerr[256];
        rd->c = pg_connect_ready(s->dsn, ROLE_READER, cerr, sizeof cerr);
        if (!rd->c) {
            rd->backoff_ms = BACKOFF_MIN_MS;
            rd->retry_at_ms = mono_ms() + rd->backoff_ms;
            break;
        }
        rc = 0;
    }
    pthread_mutex_lock(&s->rmu);
    s->free_readers[s->n_free++] = idx;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
    return rc;
}

static char *dupv(PGresult *r, int row, int col, int *oom)
{
    char *c = strdup(PQgetvalue(r, row, col));
    if (!c) *oom = 1;
    return c;
}

static int64_t i64v(PGresult *r, int row, int col) { return strtoll(PQgetvalue(r, row, col), NULL, 10); }

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const store_label *)a)->key, ((const store_label *)b)->key);
}

static void parse_labels(const char *text, store_node *n, int *oom)
{
    json_t *obj = json_loads(text ? text : "{}", 0, NULL);
    if (!json_is_object(obj)) { json_decref(obj); return; }
    size_t cnt = json_object_size(obj);
    if (cnt) {
        n->labels = calloc(cnt, sizeof *n->labels);
        if (!n->labels) { *oom = 1; json_decref(obj); return; }
    }
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        store_label *l = &n->labels[n->n_labels++];
        l->key = strdup(k);
        l->value = strdup(json_is_string(v) ? json_string_value(v) : "");
        if (!l->key || !l->value) *oom = 1;
    }
    json_decref(obj);
    if (!*oom && n->n_labels > 1) qsort(n->labels, n->n_labels, sizeof *n->labels, label_cmp);
}

static void read_node(PGresult *r, int i, store_node *n, int *oom)
{
    memset(n, 0, sizeof *n);
    n->node_id = dupv(r, i, 0, oom);
    n->hostname = dupv(r, i, 1, oom);
    n->ip = dupv(r, i, 2, oom);
    n->os = dupv(r, i, 3, oom);
    n->arch = dupv(r, i, 4, oom);
    parse_labels(PQgetvalue(r, i, 5), n, oom);
    n->daemon_version = dupv(r, i, 6, oom);
    n->agent_version = dupv(r, i, 7, oom);
    n->daemon_address = dupv(r, i, 8, oom);
    n->status = strcmp(PQgetvalue(r, i, 9), "online") == 0 ? STORE_NODE_ONLINE : STORE_NODE_OFFLINE;
    n->registered_at = i64v(r, i, 10);
    n->last_seen = i64v(r, i, 11);
    n->updated_at = i64v(r, i, 12);
}

static int oom_fail(const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: out of memory", what);
    return STORE_ERROR;
}

static int pg_list_nodes(store *st, const store_node_filter *f, store_node_list *out, char *err,
                         size_t errlen)
{
    static const char *what = "list nodes";
    out->items = NULL;
    out->n = 0;
    /* Every label condition as one jsonb object the node's labels must contain. */
    json_t *want = json_object();
    if (!want) return oom_fail(what, err, errlen);
    int impossible = 0;
    size_t nconds = 0;
    for (size_t i = 0; f && i <= f->n_labels; i++) {
        const char *k = i == 0 ? f->label_key : f->labels[i - 1].key;
        const char *v = i == 0 ? f->label_value : f->labels[i - 1].value;
        if (!k) continue;
        v = nz(v);
        json_t *have = json_object_get(want, k);
        if (have) {
            if (strcmp(json_string_value(have), v) != 0) impossible = 1;
            continue;
        }
        json_t *js = json_string(v);
        if (!js || json_object_set_new(want, k, js) < 0) { impossible = 1; continue; }
        nconds++;
    }
    char *want_s = nconds ? json_dumps(want, JSON_COMPACT) : NULL;
    json_decref(want);
    if (impossible) { free(want_s); return 0; } /* two different values for one key */
    if (nconds && !want_s) return oom_fail(what, err, errlen);
    char limit[24];
    if (f && f->limit) snprintf(limit, sizeof limit, "%zu", f->limit);
    const char *p[4] = {f && f->status != STORE_NODE_ANY ? store_node_status_name(f->status) : NULL,
                        want_s, f && f->after ? f->after : "", f && f->limit ? limit : NULL};
    PGresult *r;
    int ids_only = f && f->ids_only;
    int rc = rd_query(impl(st), ids_only ? Q_LIST_NODE_IDS : Q_LIST_NODES, 4, p, what, &r, err, errlen);
    free(want_s);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt) {
        out->items = calloc((size_t)nt, sizeof *out->items);
        if (!out->items) oom = 1;
    }
    for (int i = 0; i < nt && !oom; i++) {
        store_node *n = &out->items[out->n++];
        if (ids_only) {
            if (!(n->node_id = strdup(PQgetvalue(r, i, 0)))) oom = 1;
        } else {
            read_node(r, i, n, &oom);
        }
    }
    PQclear(r);
    if (oom) { store_node_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_get_node(store *st, const char *node_id, store_node *out, char *err, size_t errlen)
{
    static const char *what = "get node";
    memset(out, 0, sizeof *out);
    const char *p[1] = {nz(node_id)};
    PGresult *r;
    int rc = rd_query(impl(st), Q_GET_NODE, 1, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    if (PQntuples(r) == 0) { PQclear(r); return STORE_NOT_FOUND; }
    int oom = 0;
    read_node(r, 0, out, &oom);
    PQclear(r);
    if (oom) { store_node_free(out); return oom_fail(what, err, errlen); }
    return STORE_OK;
}

static int pg_list_agents(store *st, const char *node_id, int include_removed,
                          store_agent_list *out, char *err, size_t errlen)
{
    static const char *what = "list agents";
    out->items = NULL;
    out->n = 0;
    const char *p[2] = {nz(node_id), include_removed ? "true" : "false"};
    PGresult *r;
    int rc = rd_query(impl(st), Q_LIST_AGENTS, 2, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) {
        store_agent *a = &out->items[out->n++];
        a->agent_id = dupv(r, i, 0, &oom);
        a->type = dupv(r, i, 1, &oom);
        a->version = dupv(r, i, 2, &oom);
        a->status = dupv(r, i, 3, &oom);
        a->pid = (int32_t)i64v(r, i, 4);
        a->last_heartbeat = i64v(r, i, 5);
        a->updated_at = i64v(r, i, 6);
        a->removed = (int)i64v(r, i, 7);
    }
    PQclear(r);
    if (oom) { store_agent_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_list_node_events(store *st, const char *node_id, int64_t from, int64_t to,
                               store_event_list *out, char *err, size_t errlen)
{
    static const char *what = "list node events";
    out->items = NULL;
    out->n = 0;
    char a[24], b[24];
    i64s(a, sizeof a, from);
    i64s(b, sizeof b, to);
    const char *p[3] = {nz(node_id), a, b};
    PGresult *r;
    int rc = rd_query(impl(st), Q_LIST_EVENTS, 3, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) {
        store_event *e = &out->items[out->n++];
        e->node_id = dupv(r, i, 0, &oom);
        e->event = dupv(r, i, 1, &oom);
        e->at = i64v(r, i, 2);
    }
    PQclear(r);
    if (oom) { store_event_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_query_metrics(store *st, const char *node_id, const char *type, int64_t from,
                            int64_t to, size_t limit, store_point_list *out, char *err,
                            size_t errlen)
{
    static const char *what = "query metrics";
    out->items = NULL;
    out->n = 0;
    char a[24], b[24], l[24];
    i64s(a, sizeof a, from);
    i64s(b, sizeof b, to);
    snprintf(l, sizeof l, "%zu", limit);
    const char *p[5] = {nz(node_id), nz(type), a, b, limit ? l : NULL};
    PGresult *r;
    int rc = rd_query(impl(st), Q_QUERY_METRICS, 5, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) {
        store_point *pt = &out->items[out->n++];
        pt->ts = i64v(r, i, 0);
        pt->key = dupv(r, i, 1, &oom);
        pt->value = strtod(PQgetvalue(r, i, 2), NULL);
    }
    PQclear(r);
    if (oom) { store_point_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_metric_stats(store *st, const char *node_id, const char *type, int64_t from,
                           int64_t to, store_stat_list *out, char *err, size_t errlen)
{
    static const char *what = "metric statistics";
    out->items = NULL;
    out->n = 0;
    char a[24], b[24];
    i64s(a, sizeof a, from);
    i64s(b, sizeof b, to);
    const char *p[4] = {nz(node_id), nz(type), a, b};
    PGresult *r;
    int rc = rd_query(impl(st), Q_METRIC_STATS, 4, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    double sum = 0;
    /* Rows come by key then time: one store_stat per run of a key, its last row the latest.
     * The average is summed here in row order, as SQLite's driver does, so both agree. */
    for (int i = 0; i < nt && !oom; i++) {
        const char *key = PQgetvalue(r, i, 0);
        int64_t ts = i64v(r, i, 1);
        double v = strtod(PQgetvalue(r, i, 2), NULL);
        store_stat *x = out->n ? &out->items[out->n - 1] : NULL;
        if (!x || strcmp(x->key, key) != 0) {
            if (x) x->avg = sum / (double)x->count;
            x = &out->items[out->n++];
            x->key = dupv(r, i, 0, &oom);
            x->min = x->max = v;
            sum = 0;
        }
        if (v < x->min) x->min = v;
        if (v > x->max) x->max = v;
        sum += v;
        x->count++;
        x->latest = v;
        x->latest_ts = ts;
    }
    if (out->n && !oom) out->items[out->n - 1].avg = sum / (double)out->items[out->n - 1].count;
    PQclear(r);
    if (oom) { store_stat_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_list_audit(store *st, const store_audit_filter *f, store_audit_list *out,
                         char *err, size_t errlen)
{
    static const char *what = "list audit";
    out->items = NULL;
    out->n = 0;
    char since[24], limit[24];
    i64s(since, sizeof since, f ? f->since : 0);
    snprintf(limit, sizeof limit, "%zu", f && f->limit ? f->limit : (size_t)100);
    const char *p[4] = {f ? nz(f->actor) : "", f ? nz(f->target) : "", since, limit};
    PGresult *r;
    int rc = rd_query(impl(st), Q_LIST_AUDIT, 4, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) {
        store_audit *a = &out->items[out->n++];
        a->id = i64v(r, i, 0);
        a->at = i64v(r, i, 1);
        a->actor = dupv(r, i, 2, &oom);
        a->role = dupv(r, i, 3, &oom);
        a->method = dupv(r, i, 4, &oom);
        a->target = dupv(r, i, 5, &oom);
        a->result = dupv(r, i, 6, &oom);
        a->detail = dupv(r, i, 7, &oom);
        a->peer = dupv(r, i, 8, &oom);
    }
    PQclear(r);
    if (oom) { store_audit_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_list_metric_types(store *st, const char *node_id, int64_t from, int64_t to,
                                store_string_list *out, char *err, size_t errlen)
{
    static const char *what = "list metric types";
    out->items = NULL;
    out->n = 0;
    char a[24], b[24];
    i64s(a, sizeof a, from);
    i64s(b, sizeof b, to);
    const char *p[3] = {nz(node_id), a, b};
    PGresult *r;
    int rc = rd_query(impl(st), Q_METRIC_TYPES, 3, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) out->items[out->n++] = dupv(r, i, 0, &oom);
    PQclear(r);
    if (oom) { store_string_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}


/* ---- pushed update events ------------------------------------------------------------------
 * Rare writes (an operator's publish, a daemon's result): unprepared statements on the writer. */

struct add_updates_args {
    const store_update_in *ev;
    const char *nodes; /* text[] literal */
    size_t n;
    uint64_t *ids;
    const char *origin;
};

static int w_add_updates(PGconn *w, void *arg, char *err, size_t errlen)
{
    static const char *what = "store update event";
    struct add_updates_args *a = arg;
    const store_update_in *e = a->ev;
    char lock[96], created[24];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)", (long long)UPDATES_LOCK_KEY);
    int rc = simple(w, lock, what, err, errlen);
    if (rc != 0) return rc;
    i64s(created, sizeof created, e->created_at);
    /* Rows go in node order, so ids increase in node order; every replica's streams of these
     * nodes hear of them at COMMIT (NOTIFY is transactional). */
    const char *sql =
        "WITH ins AS (INSERT INTO update_events (node_id, kind, component, agent_id, version,"
        " download_url, hash_sha256, operation, signature, payload, created_at)"
        " SELECT n, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11"
        " FROM unnest($1::text[]) WITH ORDINALITY AS t(n, o) ORDER BY o RETURNING id, node_id)"
        " SELECT id, pg_notify('" NOTICE_CHANNEL "', $12 || json_build_object('kind',"
        " 'update.published', 'node_id', node_id, 'detail', id::text)::text) FROM ins ORDER BY id";
    const char *p[12] = {a->nodes, e->kind, nz(e->component), nz(e->agent_id), nz(e->version),
                         nz(e->download_url), nz(e->hash_sha256), nz(e->operation),
                         e->signature ? (const char *)e->signature : "",
                         e->payload ? (const char *)e->payload : "", created, a->origin};
    int len[12] = {0}, fmt[12] = {0};
    len[8] = (int)e->signature_len;
    len[9] = (int)e->payload_len;
    fmt[8] = fmt[9] = 1;
    PGresult *r = PQexecParams(w, sql, 12, NULL, p, len, fmt, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_fail(w, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    if ((size_t)PQntuples(r) != a->n) {
        snprintf(err, errlen, "%s: %d rows inserted for %zu nodes", what, PQntuples(r), a->n);
        PQclear(r);
        return STORE_ERROR;
    }
    for (size_t i = 0; a->ids && i < a->n; i++) a->ids[i] = strtoull(PQgetvalue(r, (int)i, 0), NULL, 10);
    PQclear(r);
    return 0;
}

static int pg_add_updates(store *st, const store_update_in *ev, const char *const *node_ids,
                          size_t n, uint64_t *ids_out, char *err, size_t errlen)
{
    if (!n) return 0;
    if (!ev->kind || !*ev->kind) { snprintf(err, errlen, "store update event: kind is empty"); return -1; }
    if (ev->payload_len > INT32_MAX || ev->signature_len > INT32_MAX) {
        snprintf(err, errlen, "store update event: payload too large");
        return -1;
    }
    sbuf b = {0};
    sb_put(&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (need_id(node_ids[i], err, errlen) < 0) { free(b.p); return -1; }
        sb_text_array_item(&b, node_ids[i], i == 0);
    }
    sb_put(&b, "}", 1);
    if (b.oom) { free(b.p); snprintf(err, errlen, "store update event: out of memory"); return -1; }
    struct add_updates_args a = {ev, b.p, n, ids_out, impl(st)->origin};
    int rc = submit(impl(st), w_add_updates, &a, err, errlen);
    free(b.p);
    return rc;
}

struct update_result_args {
    const char *node_id, *outcome, *message;
    uint64_t id;
    int64_t at;
    int found;
};

static int w_update_result(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct update_result_args *a = arg;
    char id[24], at[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)a->id);
    i64s(at, sizeof at, a->at);
    const char *p[5] = {id, a->node_id, nz(a->outcome), nz(a->message), at};
    PGresult *r = PQexecParams(w,
        "UPDATE update_events SET outcome = $3, message = $4, result_at = $5"
        " WHERE id = $1 AND node_id = $2", 5, NULL, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = pg_fail(w, r, "record update result", err, errlen);
        PQclear(r);
        return rc;
    }
    a->found = atol(PQcmdTuples(r)) > 0;
    PQclear(r);
    return 0;
}

static int pg_set_update_result(store *st, const char *node_id, uint64_t id, const char *outcome,
                                const char *message, int64_t at, int *found, char *err,
                                size_t errlen)
{
    if (found) *found = 0;
    if (need_id(node_id, err, errlen) < 0) return -1;
    if (id > INT64_MAX) return 0; /* no such id */
    struct update_result_args a = {node_id, outcome, message, id, at, 0};
    int rc = submit(impl(st), w_update_result, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

struct compact_args {
    int64_t before;
    uint64_t deleted;
};

static int w_compact_updates(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct compact_args *a = arg;
    char before[24];
    i64s(before, sizeof before, a->before);
    const char *p[1] = {before};
    PGresult *r = PQexecParams(w,
        "DELETE FROM update_events e WHERE e.created_at < $1"
        " AND (e.kind = 'command' OR " UPD_SUPERSEDED ")", 1, NULL, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = pg_fail(w, r, "compact update events", err, errlen);
        PQclear(r);
        return rc;
    }
    a->deleted = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

static int pg_compact_updates(store *st, int64_t before, uint64_t *deleted, char *err,
                              size_t errlen)
{
    struct compact_args a = {before, 0};
    int rc = submit(impl(st), w_compact_updates, &a, err, errlen);
    if (deleted) *deleted = rc == 0 ? a.deleted : 0;
    return rc;
}

static uint8_t *dup_bytea(PGresult *r, int row, int col, size_t *len, int *oom)
{
    size_t n = 0;
    unsigned char *u = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    uint8_t *c = malloc(n ? n : 1);
    if (!u || !c) {
        *oom = 1;
        PQfreemem(u);
        free(c);
        *len = 0;
        return NULL;
    }
    memcpy(c, u, n);
    PQfreemem(u);
    *len = n;
    return c;
}

static int read_updates(PGresult *r, store_update_list *out, const char *what, char *err,
                        size_t errlen)
{
    int nt = PQntuples(r), oom = 0;
    if (nt && !(out->items = calloc((size_t)nt, sizeof *out->items))) oom = 1;
    for (int i = 0; i < nt && !oom; i++) {
        store_update *u = &out->items[out->n++];
        u->id = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        u->node_id = dupv(r, i, 1, &oom);
        u->kind = dupv(r, i, 2, &oom);
        u->component = dupv(r, i, 3, &oom);
        u->agent_id = dupv(r, i, 4, &oom);
        u->version = dupv(r, i, 5, &oom);
        u->download_url = dupv(r, i, 6, &oom);
        u->hash_sha256 = dupv(r, i, 7, &oom);
        u->operation = dupv(r, i, 8, &oom);
        u->signature = dup_bytea(r, i, 9, &u->signature_len, &oom);
        u->payload = dup_bytea(r, i, 10, &u->payload_len, &oom);
        u->created_at = i64v(r, i, 11);
        u->outcome = dupv(r, i, 12, &oom);
        u->message = dupv(r, i, 13, &oom);
        u->result_at = i64v(r, i, 14);
    }
    PQclear(r);
    if (oom) { store_update_list_free(out); return oom_fail(what, err, errlen); }
    return 0;
}

static int pg_list_updates_after(store *st, const char *node_id, uint64_t after_id,
                                 int64_t stale_before, size_t limit, store_update_list *out,
                                 char *err, size_t errlen)
{
    static const char *what = "list update events";
    out->items = NULL;
    out->n = 0;
    char after[24], stale[24], lim[24];
    snprintf(after, sizeof after, "%llu", (unsigned long long)(after_id > INT64_MAX ? INT64_MAX : after_id));
    i64s(stale, sizeof stale, stale_before);
    snprintf(lim, sizeof lim, "%zu", limit ? limit : 1000);
    const char *p[4] = {nz(node_id), after, stale, lim};
    PGresult *r;
    int rc = rd_query(impl(st), Q_UPD_AFTER, 4, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    return read_updates(r, out, what, err, errlen);
}

static int pg_list_updates(store *st, const store_update_filter *f, store_update_list *out,
                           char *err, size_t errlen)
{
    static const char *what = "list update events";
    out->items = NULL;
    out->n = 0;
    char id[24], before[24], lim[24];
    uint64_t eid = f ? f->event_id : 0, bid = f ? f->before_id : 0;
    snprintf(id, sizeof id, "%llu", (unsigned long long)(eid > INT64_MAX ? INT64_MAX : eid));
    snprintf(before, sizeof before, "%llu", (unsigned long long)(bid > INT64_MAX ? INT64_MAX : bid));
    snprintf(lim, sizeof lim, "%zu", f && f->limit ? f->limit : 100);
    const char *p[5] = {f ? nz(f->node_id) : "", id, f && f->pending_only ? "true" : "false",
                        before, lim};
    PGresult *r;
    int rc = rd_query(impl(st), Q_UPD_LIST, 5, p, what, &r, err, errlen);
    if (rc != 0) return rc;
    return read_updates(r, out, what, err, errlen);
}

/* ---- node authentication (node_auth.mode token) --------------------------------------------
 * Rare writes (an enrollment, an operator's token): plain parameterised statements through
 * writer 0. Counting a use is one conditional UPDATE: row locks make concurrent enrollments,
 * also from other managers on this database, re-check the condition, so max_uses holds. */

struct secret_args {
    const char *node_id, *sha256;
    int64_t now;
};

static int w_set_secret(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct secret_args *a = arg;
    char now[24];
    i64s(now, sizeof now, a->now);
    const char *p[3] = {a->node_id, a->sha256, now};
    return param_exec(w,
        "INSERT INTO node_secrets (node_id, sha256, set_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (node_id) DO UPDATE SET sha256 = excluded.sha256, set_at = excluded.set_at",
        3, p, "store node secret", NULL, err, errlen);
}

static int pg_set_node_secret(store *st, const char *node_id, const char *sha256, int64_t now,
                              char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct secret_args a = {node_id, nz(sha256), now};
    return submit(impl(st), w_set_secret, &a, err, errlen);
}

static int pg_get_node_secret(store *st, const char *node_id, char *out, char *err, size_t errlen)
{
    out[0] = 0;
    const char *p[1] = {nz(node_id)};
    PGresult *r;
    int rc = rd_query(impl(st), Q_SECRET_GET, 1, p, "read node secret", &r, err, errlen);
    if (rc != 0) return rc;
    int found = PQntuples(r) > 0;
    if (found) snprintf(out, 65, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return found ? STORE_OK : STORE_NOT_FOUND;
}

struct add_token_args {
    const char *name, *sha256;
    int64_t created_at, expires_at;
    int32_t max_uses;
    int exists;
};

static int w_add_token(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct add_token_args *a = arg;
    char created[24], expires[24], max_uses[16];
    i64s(created, sizeof created, a->created_at);
    i64s(expires, sizeof expires, a->expires_at);
    snprintf(max_uses, sizeof max_uses, "%" PRId32, a->max_uses);
    const char *p[5] = {a->name, a->sha256, created, expires, max_uses};
    long added = 0;
    /* no conflict target: a taken name or a taken hash both leave the table as it was */
    int rc = param_exec(w,
        "INSERT INTO enrollment_tokens (name, sha256, created_at, expires_at, max_uses)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        5, p, "add enrollment token", &added, err, errlen);
    if (rc == 0) a->exists = added == 0;
    return rc;
}

static int pg_add_enroll_token(store *st, const char *name, const char *sha256, int64_t created_at,
                               int64_t expires_at, int32_t max_uses, char *err, size_t errlen)
{
    if (!name || !*name || !sha256 || strlen(sha256) != 64) {
        snprintf(err, errlen, "add enrollment token: name and a 64-character sha256 are required");
        return -1;
    }
    struct add_token_args a = {name, sha256, created_at, expires_at, max_uses, 0};
    int rc = submit(impl(st), w_add_token, &a, err, errlen);
    if (rc == 0 && a.exists) {
        snprintf(err, errlen, "an enrollment token named '%s' exists", name);
        return STORE_EXISTS;
    }
    return rc;
}

struct use_token_args {
    const char *sha256;
    int64_t now;
    store_enroll_use use;
    char name[128];
};

static int w_use_token(PGconn *w, void *arg, char *err, size_t errlen)
{
    static const char *what = "use enrollment token";
    struct use_token_args *a = arg;
    char now[24];
    i64s(now, sizeof now, a->now);
    const char *p[2] = {a->sha256, now};
    PGresult *r = PQexecParams(w,
        "UPDATE enrollment_tokens SET uses = uses + 1 WHERE sha256 = $1 AND revoked_at = 0"
        " AND expires_at > $2 AND uses < max_uses RETURNING name",
        2, NULL, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_fail(w, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) > 0) {
        a->use = STORE_ENROLL_OK;
        snprintf(a->name, sizeof a->name, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        return 0;
    }
    PQclear(r);
    /* Refused: only the reason is left to find, and nothing is counted. */
    r = PQexecParams(w,
        "SELECT name, revoked_at <> 0, expires_at <= $2, uses >= max_uses FROM enrollment_tokens"
        " WHERE sha256 = $1", 2, NULL, p, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_fail(w, r, what, err, errlen);
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0) {
        a->use = STORE_ENROLL_UNKNOWN;
    } else {
        snprintf(a->name, sizeof a->name, "%s", PQgetvalue(r, 0, 0));
        if (PQgetvalue(r, 0, 1)[0] == 't') a->use = STORE_ENROLL_REVOKED;
        else if (PQgetvalue(r, 0, 2)[0] == 't') a->use = STORE_ENROLL_EXPIRED;
        else a->use = STORE_ENROLL_USED_UP;
    }
    PQclear(r);
    return 0;
}

static int pg_use_enroll_token(store *st, const char *sha256, int64_t now, store_enroll_use *use,
                               char *name, size_t namelen, char *err, size_t errlen)
{
    struct use_token_args a = {.sha256 = nz(sha256), .now = now, .use = STORE_ENROLL_UNKNOWN};
    int rc = submit(impl(st), w_use_token, &a, err, errlen);
    *use = a.use;
    if (name && namelen) snprintf(name, namelen, "%s", rc == 0 ? a.name : "");
    return rc;
}

static int pg_list_enroll_tokens(store *st, store_enroll_token_list *out, char *err, size_t errlen)
{
    static const char *what = "list enrollment tokens";
    out->items = NULL;
    out->n = 0;
    PGresult *r;
    int rc = rd_query(impl(st), Q_TOKENS_LIST, 0, NULL, what, &r, err, errlen);
    if (rc != 0) return rc;
    int n = PQntuples(r), oom = 0;
    if (n > 0 && !(out->items = calloc((size_t)n, sizeof *out->items))) oom = 1;
    for (int i = 0; i < n && !oom; i++) {
        store_enroll_token *t = &out->items[out->n++];
        t->name = dupv(r, i, 0, &oom);
        t->created_at = i64v(r, i, 1);
        t->expires_at = i64v(r, i, 2);
        t->max_uses = (int32_t)i64v(r, i, 3);
        t->uses = (int32_t)i64v(r, i, 4);
        t->revoked_at = i64v(r, i, 5);
    }
    PQclear(r);
    if (oom) {
        store_enroll_token_list_free(out);
        return oom_fail(what, err, errlen);
    }
    return 0;
}

struct revoke_args {
    const char *name;
    int64_t now;
    int found;
};

static int w_revoke_token(PGconn *w, void *arg, char *err, size_t errlen)
{
    struct revoke_args *a = arg;
    char now[24];
    i64s(now, sizeof now, a->now > 0 ? a->now : 1); /* 0 would read "not revoked" */
    const char *p[2] = {a->name, now};
    long changed = 0;
    int rc = param_exec(w, "UPDATE enrollment_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at = 0",
                        2, p, "revoke enrollment token", &changed, err, errlen);
    if (rc == 0) a->found = changed > 0;
    return rc;
}

static int pg_revoke_enroll_token(store *st, const char *name, int64_t now, int *found, char *err,
                                  size_t errlen)
{
    struct revoke_args a = {nz(name), now, 0};
    int rc = submit(impl(st), w_revoke_token, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

/* ---- replicas: the coordination thread -----------------------------------------------------
 * One connection of its own holds the leader lease (a session advisory lock, so it goes with
 * the session: a replica that dies or loses the server loses it at once, and the server hands
 * it to whoever asks next), LISTENs for the other replicas' notices and sends ours. */

static int pg_is_leader(store *st)
{
    pgstore *s = impl(st);
    pthread_mutex_lock(&s->cmu);
    int l = s->leader;
    pthread_mutex_unlock(&s->cmu);
    return l;
}

static void pg_notify_send(store *st, const char *json)
{
    pgstore *s = impl(st);
    size_t n = strlen(json);
    if (n > STORE_NOTICE_MAX) {
        log_warn("store.notice_too_long", "bytes=%zu max=%d", n, STORE_NOTICE_MAX);
        return;
    }
    char *m = malloc(strlen(s->origin) + n + 1);
    if (!m) return;
    memcpy(m, s->origin, strlen(s->origin));
    memcpy(m + strlen(s->origin), json, n + 1);
    pthread_mutex_lock(&s->cmu);
    if (s->n_out == s->cap_out) {
        size_t nc = s->cap_out ? s->cap_out * 2 : 64;
        char **q = s->n_out < NOTICE_QUEUE_MAX ? realloc(s->outq, nc * sizeof *q) : NULL;
        if (!q) { /* out of room: the oldest goes; receivers re-read the store anyway */
            if (!s->n_out) { pthread_mutex_unlock(&s->cmu); free(m); return; }
            free(s->outq[0]);
            memmove(s->outq, s->outq + 1, (s->n_out - 1) * sizeof *s->outq);
            s->n_out--;
            s->out_dropped++;
        } else {
            s->outq = q;
            s->cap_out = nc;
        }
    }
    s->outq[s->n_out++] = m;
    pthread_mutex_unlock(&s->cmu);
    ssize_t w = write(s->wake[1], "n", 1);
    (void)w; /* a full pipe already means "wake up" */
}

static void pg_set_notice_handler(store *st, store_notice_fn fn, void *user)
{
    pgstore *s = impl(st);
    pthread_mutex_lock(&s->hmu);
    s->handler = fn;
    s->handler_user = user;
    pthread_mutex_unlock(&s->hmu);
}

static void coord_set_leader(pgstore *s, int l, const char *why)
{
    pthread_mutex_lock(&s->cmu);
    int was = s->leader;
    s->leader = l;
    pthread_mutex_unlock(&s->cmu);
    if (was != l) log_info("store.leader", "driver=postgres role=%s reason=\"%s\"", l ? "leader" : "follower", why);
}

static void coord_lost(pgstore *s, const char *why)
{
    char msg[384];
    snprintf(msg, sizeof msg, "%s", why);
    clean_msg(msg);
    coord_set_leader(s, 0, "coordination connection lost");
    log_warn("store.coord_lost", "driver=postgres error=\"%s\"", msg);
    PQfinish(s->cc);
    s->cc = NULL;
}

static PGconn *coord_connect(pgstore *s, char *err, size_t errlen)
{
    /* Keepalives: a server that vanished without closing the socket is noticed within about
     * ten seconds, and the lease is given up. */
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "dbname", NULL};
    const char *vals[] = {"5", "ops-manager-coord", "5", "2", "3", s->dsn, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
        clean_msg(msg);
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_quiet, NULL);
    if (simple(c, "LISTEN " NOTICE_CHANNEL, "listen", err, errlen) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int coord_stopping(pgstore *s)
{
    pthread_mutex_lock(&s->cmu);
    int st = s->coord_stop;
    pthread_mutex_unlock(&s->cmu);
    return st;
}

/* Waits up to ms for the socket (or -1: none), or the wake pipe. 1 if the socket is readable. */
static int coord_wait(pgstore *s, int sock, int ms)
{
    struct pollfd p[2] = {{.fd = s->wake[0], .events = POLLIN}, {.fd = sock, .events = POLLIN}};
    int n = poll(p, sock >= 0 ? 2 : 1, ms);
    if (n > 0 && (p[0].revents & POLLIN)) {
        char buf[256];
        while (read(s->wake[0], buf, sizeof buf) > 0) {}
    }
    return n > 0 && sock >= 0 && (p[1].revents & (POLLIN | POLLERR | POLLHUP));
}

static void coord_deliver(pgstore *s)
{
    PGnotify *n;
    size_t olen = strlen(s->origin);
    while ((n = PQnotifies(s->cc))) {
        if (strncmp(n->extra, s->origin, olen) != 0) { /* not one of ours */
            const char *json = strchr(n->extra, ' ');
            pthread_mutex_lock(&s->hmu);
            if (json && s->handler) s->handler(s->handler_user, json + 1);
            pthread_mutex_unlock(&s->hmu);
        }
        PQfreemem(n);
    }
}

static void *coord_main(void *arg)
{
    pthread_setname_np(pthread_self(), "pg-coord");
    pgstore *s = arg;
    int backoff = BACKOFF_MIN_MS;
    int64_t next_try = 0;
    uint64_t dropped_logged = 0;
    char err[384];
    while (!coord_stopping(s)) {
        if (!s->cc) {
            if (!(s->cc = coord_connect(s, err, sizeof err))) {
                log_debug("store.coord_connect_failed", "driver=postgres error=\"%s\"", err);
                coord_wait(s, -1, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            next_try = 0;
        }
        int64_t now = mono_ms();
        if (now >= next_try) {
            /* Followers ask for the lease every tick; the leader checks the session is alive. */
            int lead = pg_is_leader(&s->base);
            char sql[96];
            if (lead) snprintf(sql, sizeof sql, "SELECT true");
            else snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", (long long)LEADER_LOCK_KEY);
            PGresult *r = PQexec(s->cc, sql);
            if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
                pg_fail(s->cc, r, "leader lease", err, sizeof err);
                PQclear(r);
                coord_lost(s, err);
                continue;
            }
            if (!lead && PQgetvalue(r, 0, 0)[0] == 't') coord_set_leader(s, 1, "lease acquired");
            PQclear(r);
            next_try = now + COORD_TICK_MS;
            coord_deliver(s); /* a query reads notices that arrived meanwhile */
        }
        /* Send what was queued, one at a time so the lock is not held across a round trip. */
        for (;;) {
            pthread_mutex_lock(&s->cmu);
            char *m = NULL;
            if (s->n_out) {
                m = s->outq[0];
                memmove(s->outq, s->outq + 1, (s->n_out - 1) * sizeof *s->outq);
                s->n_out--;
            }
            uint64_t dropped = s->out_dropped;
            pthread_mutex_unlock(&s->cmu);
            if (dropped != dropped_logged) {
                log_warn("store.notices_dropped", "driver=postgres total=%llu", (unsigned long long)dropped);
                dropped_logged = dropped;
            }
            if (!m) break;
            const char *p[1] = {m};
            PGresult *r = PQexecParams(s->cc, "SELECT pg_notify('" NOTICE_CHANNEL "', $1)", 1, NULL, p, NULL, NULL, 0);
            free(m);
            if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
                int rc = pg_fail(s->cc, r, "send notice", err, sizeof err);
                PQclear(r);
                if (rc == STORE_UNAVAILABLE) { coord_lost(s, err); break; }
                log_warn("store.notice_failed", "driver=postgres error=\"%s\"", err);
                continue;
            }
            PQclear(r);
        }
        if (!s->cc) continue;
        coord_deliver(s);
        int64_t wait = next_try - mono_ms();
        if (coord_wait(s, PQsocket(s->cc), wait < 0 ? 0 : (int)wait)) {
            if (PQconsumeInput(s->cc) != 1) {
                snprintf(err, sizeof err, "%s", PQerrorMessage(s->cc));
                coord_lost(s, err);
                continue;
            }
            coord_deliver(s);
        }
    }
    if (s->cc) {
        /* Closing the session gives the lease up at once. */
        coord_set_leader(s, 0, "closing");
        PQfinish(s->cc);
        s->cc = NULL;
    }
    return NULL;
}

/* ---- open / close ------------------------------------------------------------------------- */

static int migrate(PGconn *c, char *err, size_t errlen)
{
    static const char *what = "migrate schema";
    char sql[160];
    if (simple(c, "BEGIN", what, err, errlen) != 0) return -1;
    /* Held to the end of the transaction: a second manager starting now waits here, then
     * finds the schema current. */
    snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%lld)", (long long)MIGRATION_LOCK_KEY);
    if (simple(c, sql, what, err, errlen) != 0) goto fail;
    if (simple(c, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)", what,
               err, errlen) != 0)
        goto fail;
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_version");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        pg_fail(c, r, what, err, errlen);
        PQclear(r);
        goto fail;
    }
    int version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this program's (%d): "
                 "use a newer ops-manager",
                 version, SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char w[64];
        snprintf(w, sizeof w, "migrate schema to version %d", v + 1);
        if (simple(c, migrations[v], w, err, errlen) != 0) goto fail;
    }
    if (version < SCHEMA_VERSION) {
        snprintf(sql, sizeof sql, "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
                 SCHEMA_VERSION);
        if (simple(c, sql, what, err, errlen) != 0) goto fail;
        log_info("store.migrated", "driver=postgres from=%d to=%d", version, SCHEMA_VERSION);
    }
    return simple(c, "COMMIT", what, err, errlen) != 0 ? -1 : 0;
fail:
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

static void pg_close(store *st)
{
    pgstore *s = impl(st);
    if (s->coord_started) {
        pthread_mutex_lock(&s->cmu);
        s->coord_stop = 1;
        pthread_mutex_unlock(&s->cmu);
        ssize_t w = write(s->wake[1], "q", 1);
        (void)w;
        pthread_join(s->coord_th, NULL);
    }
    for (size_t i = 0; i < s->n_out; i++) free(s->outq[i]);
    free(s->outq);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_mutex_destroy(&s->cmu);
    pthread_mutex_destroy(&s->hmu);
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < WRITERS; i++)
        if (s->wr[i].started) pthread_join(s->wr[i].th, NULL);
    for (int i = 0; i < s->n_readers; i++) PQfinish(s->rd[i].c);
    free(s->rd);
    free(s->free_readers);
    for (int i = 0; i < WRITERS; i++) PQfinish(s->wr[i].c);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    free(s->dsn);
    free(s);
}

store *store_pg_open(const store_config *cfg, char *err, size_t errlen)
{
    if (!cfg->dsn || !*cfg->dsn) {
        snprintf(err, errlen,
                 "database.dsn is empty (expected a libpq connection string such as "
                 "'host=db.example port=5432 dbname=ops user=ops')");
        return NULL;
    }
    pgstore *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->base.drv = &pg_driver;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    s->wake[0] = s->wake[1] = -1;
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
        goto fail;
    }
    {
        /* Random enough to tell this process's notices from another's. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = hash_bytes((const char *)&ts, sizeof ts) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
        snprintf(s->origin, sizeof s->origin, "%016llx ", (unsigned long long)x);
    }
    s->dsn = strdup(cfg->dsn);
    if (!s->dsn) { snprintf(err, errlen, "out of memory"); goto fail; }
    for (int i = 0; i < WRITERS; i++) s->wr[i] = (writer){.s = s, .idx = i};
    s->wr[0].c = pg_connect(s->dsn, err, errlen);
    if (!s->wr[0].c) goto fail;
    if (migrate(s->wr[0].c, err, errlen) < 0) goto fail;
    /* The statements are prepared after the migration: they name its tables. */
    if (pg_prepare_all(s->wr[0].c, ROLE_WRITER, err, errlen) != 0) goto fail;
    for (int i = 1; i < WRITERS; i++)
        if (!(s->wr[i].c = pg_connect_ready(s->dsn, ROLE_METRICS_WRITER, err, errlen))) goto fail;

    int n = cfg->readers > 0 ? cfg->readers : DEFAULT_READERS;
    s->rd = calloc((size_t)n, sizeof *s->rd);
    s->free_readers = calloc((size_t)n, sizeof *s->free_readers);
    if (!s->rd || !s->free_readers) { snprintf(err, errlen, "out of memory"); goto fail; }
    for (int i = 0; i < n; i++) {
        s->rd[i].c = pg_connect_ready(s->dsn, ROLE_READER, err, errlen);
        s->n_readers++;
        if (!s->rd[i].c) goto fail;
        s->free_readers[s->n_free++] = i;
    }
    for (int i = 0; i < WRITERS; i++) {
        int perr = pthread_create(&s->wr[i].th, NULL, writer_main, &s->wr[i]);
        if (perr != 0) {
            snprintf(err, errlen, "cannot start a store writer thread: %s", strerror(perr));
            goto fail;
        }
        s->wr[i].started = 1;
    }
    int perr = pthread_create(&s->coord_th, NULL, coord_main, s);
    if (perr != 0) {
        snprintf(err, errlen, "cannot start the store's coordination thread: %s", strerror(perr));
        goto fail;
    }
    s->coord_started = 1;
    return &s->base;
fail:
    pg_close(&s->base);
    return NULL;
}

static const store_driver pg_driver = {
    .name = "postgres",
    .close = pg_close,
    .upsert_node = pg_upsert_node,
    .upsert_placeholder = pg_upsert_placeholder,
    .touch_nodes = pg_touch_nodes,
    .add_node_events = pg_add_node_events,
    .sync_agents = pg_sync_agents,
    .insert_metrics = pg_insert_metrics,
    .insert_metrics_async = pg_insert_metrics_async,
    .delete_metrics_before = pg_delete_metrics_before,
    .delete_node = pg_delete_node,
    .list_nodes = pg_list_nodes,
    .get_node = pg_get_node,
    .list_agents = pg_list_agents,
    .list_node_events = pg_list_node_events,
    .query_metrics = pg_query_metrics,
    .metric_stats = pg_metric_stats,
    .add_audit = pg_add_audit,
    .list_audit = pg_list_audit,
    .list_metric_types = pg_list_metric_types,
    .add_updates = pg_add_updates,
    .set_update_result = pg_set_update_result,
    .compact_updates = pg_compact_updates,
    .list_updates_after = pg_list_updates_after,
    .list_updates = pg_list_updates,
    .is_leader = pg_is_leader,
    .notify = pg_notify_send,
    .set_notice_handler = pg_set_notice_handler,
    .set_node_secret = pg_set_node_secret,
    .get_node_secret = pg_get_node_secret,
    .add_enroll_token = pg_add_enroll_token,
    .use_enroll_token = pg_use_enroll_token,
    .list_enroll_tokens = pg_list_enroll_tokens,
    .revoke_enroll_token = pg_revoke_enroll_token,
};
