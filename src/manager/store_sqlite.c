/* store_sqlite: the store on one SQLite file in WAL mode.
 *
 * One writer connection, used only by the writer thread: callers queue a request (a function
 * plus its arguments) and sleep until the writer has committed it. The writer drains the whole
 * queue into one transaction, each request inside its own savepoint, so a batch of 64 metric
 * reports costs one commit and one request's failure stays its own. WAL + synchronous=NORMAL:
 * a commit survives the process being killed (not necessarily a power cut), readers never block
 * the writer nor wait for it.
 *
 * Metrics: one row per (node, ts, type) holding that MetricData's values as a JSON object,
 * keyed (node_ref, ts, type) in a WITHOUT ROWID table, node_ref being a small integer for the
 * node id. Why: a report of 4 types x 10 values is 4 rows written next to each other (the tail
 * of that node's range) instead of 40 rows on 40 pages, which is what makes group commit cheap;
 * a retried report hits the same key and is ignored (INSERT OR IGNORE); a node's range query
 * and its retention delete are single index ranges. The JSON is built by the calling thread,
 * so the writer only binds and steps. The writer remembers node refs in a hash table, dropped
 * whenever a rollback could have undone one. */
#include "base/log.h"
#include "manager/store.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_READERS 4
#define RD_CACHE 16 /* prepared statements kept per reader connection */
#define DEFAULT_RETENTION_BATCH 5000
#define BUSY_TIMEOUT_MS 10000
#define SERIES_CACHE_MAX (1u << 21)
/* WAL size (pages) at which the checkpointer thread copies it into the database file, and at
 * which the writer does it itself: only a checkpoint by the writer, between its transactions,
 * is sure to catch up completely, which is what lets the WAL start over instead of growing. */
#define WAL_CKPT_FRAMES 4000
#define WAL_FORCE_FRAMES 32000

/* ---- schema ------------------------------------------------------------------------------ */

/* Migration i brings the schema from version i to i + 1. Append only; never edit a shipped one. */
static const char *const migrations[] = {
    "CREATE TABLE nodes ("
    "  node_id TEXT PRIMARY KEY,"
    "  hostname TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '',"
    "  os TEXT NOT NULL DEFAULT '', arch TEXT NOT NULL DEFAULT '',"
    "  labels TEXT NOT NULL DEFAULT '{}',"
    "  daemon_version TEXT NOT NULL DEFAULT '', agent_version TEXT NOT NULL DEFAULT '',"
    "  daemon_address TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT 'offline',"
    "  registered_at INTEGER NOT NULL, last_seen INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE INDEX nodes_by_status ON nodes(status);"
    "CREATE TABLE node_events ("
    "  id INTEGER PRIMARY KEY, node_id TEXT NOT NULL, event TEXT NOT NULL, at INTEGER NOT NULL);"
    "CREATE INDEX node_events_by_node ON node_events(node_id, at);"
    "CREATE TABLE agents ("
    "  node_id TEXT NOT NULL, agent_id TEXT NOT NULL,"
    "  type TEXT NOT NULL DEFAULT '', version TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,"
    "  last_heartbeat INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,"
    "  removed INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (node_id, agent_id)) WITHOUT ROWID;"
    "CREATE TABLE metric_nodes (id INTEGER PRIMARY KEY, node_id TEXT NOT NULL UNIQUE);"
    "CREATE TABLE metrics ("
    "  node_ref INTEGER NOT NULL, ts INTEGER NOT NULL, type TEXT NOT NULL, vals TEXT NOT NULL,"
    "  PRIMARY KEY (node_ref, ts, type)) WITHOUT ROWID;",
    /* pushed update events (updates.h). AUTOINCREMENT: an id is never reused after a
     * compaction, since daemons resume after the last id they saw. IF NOT EXISTS: this
     * migration may be renumbered when branches merge. */
    "CREATE TABLE IF NOT EXISTS update_events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT NOT NULL, kind TEXT NOT NULL,"
    "  component TEXT NOT NULL DEFAULT '', agent_id TEXT NOT NULL DEFAULT '',"
    "  version TEXT NOT NULL DEFAULT '', download_url TEXT NOT NULL DEFAULT '',"
    "  hash_sha256 TEXT NOT NULL DEFAULT '', operation TEXT NOT NULL DEFAULT '',"
    "  signature BLOB, payload BLOB, created_at INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '',"
    "  result_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS update_events_by_node ON update_events(node_id, id);"
    "CREATE INDEX IF NOT EXISTS update_events_by_key"
    "  ON update_events(node_id, kind, component, agent_id, id);",
    /* 3: AdminService's audit trail. */
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY, at INTEGER NOT NULL,"
    "  actor TEXT NOT NULL DEFAULT '', role TEXT NOT NULL DEFAULT '',"
    "  method TEXT NOT NULL DEFAULT '', target TEXT NOT NULL DEFAULT '',"
    "  result TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',"
    "  peer TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX audit_by_actor ON audit(actor, id);"
    "CREATE INDEX audit_by_target ON audit(target, id);",
    /* 4: node authentication (node_auth.mode token): hashes only. IF NOT EXISTS: this
     * migration may be renumbered when branches merge. */
    "CREATE TABLE IF NOT EXISTS node_secrets ("
    "  node_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, set_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS enrollment_tokens ("
    "  name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL DEFAULT 0,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* The writer's statements, prepared once and reused for the life of the store. */
enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_SAVEPOINT, ST_RELEASE, ST_ROLLBACK_TO,
    ST_NODE_UPSERT, ST_NODE_PLACEHOLDER, ST_NODE_TOUCH, ST_EVENT_ADD,
    ST_AGENT_UPSERT, ST_AGENT_REMOVE_MISSING,
    ST_MNODE_GET, ST_MNODE_ADD, ST_POINT_ADD,
    ST_RET_NEXT_SERIES, ST_RET_BOUNDARY, ST_RET_DELETE,
    ST_DEL_POINTS, ST_DEL_SERIES, ST_DEL_AGENTS, ST_DEL_EVENTS, ST_DEL_NODE,
    ST_AUDIT_ADD, ST_UPDATE_RESULT, ST_AGENT_LIST_LIVE,
    ST_COUNT
};

static const char *const writer_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT req",
    [ST_RELEASE] = "RELEASE req",
    [ST_ROLLBACK_TO] = "ROLLBACK TO req",
    [ST_NODE_UPSERT] =
        "INSERT INTO nodes (node_id, hostname, ip, os, arch, labels, daemon_version,"
        " agent_version, daemon_address, status, registered_at, last_seen, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'online', ?10, ?10, ?10)"
        " ON CONFLICT (node_id) DO UPDATE SET hostname = excluded.hostname, ip = excluded.ip,"
        " os = excluded.os, arch = excluded.arch, labels = excluded.labels,"
        " daemon_version = excluded.daemon_version, agent_version = excluded.agent_version,"
        " daemon_address = excluded.daemon_address, status = 'online',"
        " last_seen = max(last_seen, excluded.last_seen), updated_at = excluded.updated_at",
    [ST_NODE_PLACEHOLDER] =
        "INSERT INTO nodes (node_id, hostname, ip, os, arch, labels, daemon_version,"
        " agent_version, daemon_address, status, registered_at, last_seen, updated_at)"
        " VALUES (?1, 'unknown', 'unknown', 'unknown', 'unknown', '{}', 'unknown', 'unknown',"
        " '', 'online', ?2, ?2, ?2) ON CONFLICT (node_id) DO NOTHING",
    [ST_NODE_TOUCH] =
        "UPDATE nodes SET last_seen = max(last_seen, ?2), status = coalesce(?3, status), updated_at = ?4"
        " WHERE node_id = ?1",
    [ST_EVENT_ADD] = "INSERT INTO node_events (node_id, event, at) VALUES (?1, ?2, ?3)",
    [ST_AGENT_UPSERT] =
        "INSERT INTO agents (node_id, agent_id, type, version, status, pid, last_heartbeat,"
        " updated_at, removed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)"
        " ON CONFLICT (node_id, agent_id) DO UPDATE SET type = excluded.type,"
        " version = excluded.version, status = excluded.status, pid = excluded.pid,"
        " last_heartbeat = excluded.last_heartbeat, updated_at = excluded.updated_at, removed = 0",
    [ST_AGENT_REMOVE_MISSING] =
        "UPDATE agents SET status = 'removed', removed = 1, updated_at = ?3"
        " WHERE node_id = ?1 AND removed = 0"
        " AND agent_id NOT IN (SELECT value FROM json_each(?2))",
    [ST_MNODE_GET] = "SELECT id FROM metric_nodes WHERE node_id = ?1",
    [ST_MNODE_ADD] = "INSERT INTO metric_nodes (node_id) VALUES (?1)",
    [ST_POINT_ADD] =
        "INSERT OR IGNORE INTO metrics (node_ref, ts, type, vals) VALUES (?1, ?2, ?3, ?4)",
    [ST_RET_NEXT_SERIES] = "SELECT id FROM metric_nodes WHERE id > ?1 ORDER BY id LIMIT 1",
    [ST_RET_BOUNDARY] =
        "SELECT ts FROM metrics WHERE node_ref = ?1 AND ts < ?2 ORDER BY ts LIMIT 1 OFFSET ?3",
    [ST_RET_DELETE] = "DELETE FROM metrics WHERE node_ref = ?1 AND ts < ?2",
    [ST_DEL_POINTS] =
        "DELETE FROM metrics WHERE node_ref IN (SELECT id FROM metric_nodes WHERE node_id = ?1)",
    [ST_DEL_SERIES] = "DELETE FROM metric_nodes WHERE node_id = ?1",
    [ST_DEL_AGENTS] = "DELETE FROM agents WHERE node_id = ?1",
    [ST_DEL_EVENTS] = "DELETE FROM node_events WHERE node_id = ?1",
    [ST_DEL_NODE] = "DELETE FROM nodes WHERE node_id = ?1",
    [ST_AUDIT_ADD] =
        "INSERT INTO audit (at, actor, role, method, target, result, detail, peer)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_UPDATE_RESULT] =
        "UPDATE update_events SET outcome = ?3, message = ?4, result_at = ?5 WHERE id = ?1 AND node_id = ?2",
    [ST_AGENT_LIST_LIVE] =
        "SELECT agent_id, type, version, status, pid, last_heartbeat, updated_at"
        " FROM agents WHERE node_id = ?1 AND removed = 0 ORDER BY agent_id",
};

/* ---- node ref cache (writer thread only) ------------------------------------------------- */

typedef struct series_slot {
    char *key; /* node id; NULL = empty slot */
    size_t len;
    uint64_t hash;
    int64_t id;
} series_slot;

typedef struct series_cache {
    series_slot *slots;
    size_t cap, used; /* cap is a power of two */
} series_cache;

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void cache_clear(series_cache *c)
{
    for (size_t i = 0; i < c->cap; i++) free(c->slots[i].key);
    free(c->slots);
    c->slots = NULL;
    c->cap = c->used = 0;
}

static series_slot *cache_find(series_cache *c, const char *k, size_t len, uint64_t h)
{
    if (!c->cap) return NULL;
    for (size_t i = h & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        series_slot *s = &c->slots[i];
        if (!s->key) return NULL;
        if (s->hash == h && s->len == len && memcmp(s->key, k, len) == 0) return s;
    }
}

/* Remembers k -> id. Failing to remember (no memory) is harmless: the next lookup asks SQLite. */
static void cache_put(series_cache *c, const char *k, size_t len, uint64_t h, int64_t id)
{
    if (c->used >= SERIES_CACHE_MAX) cache_clear(c);
    if ((c->used + 1) * 10 >= c->cap * 7) {
        size_t ncap = c->cap ? c->cap * 2 : 1024;
        series_slot *ns = calloc(ncap, sizeof *ns);
        if (!ns) return;
        for (size_t i = 0; i < c->cap; i++) {
            if (!c->slots[i].key) continue;
            size_t j = c->slots[i].hash & (ncap - 1);
            while (ns[j].key) j = (j + 1) & (ncap - 1);
            ns[j] = c->slots[i];
        }
        free(c->slots);
        c->slots = ns;
        c->cap = ncap;
    }
    char *copy = malloc(len);
    if (!copy) return;
    memcpy(copy, k, len);
    size_t j = h & (c->cap - 1);
    while (c->slots[j].key) j = (j + 1) & (c->cap - 1);
    c->slots[j] = (series_slot){copy, len, h, id};
    c->used++;
}

/* ---- the handle --------------------------------------------------------------------------- */

typedef struct sqlstore sqlstore;
typedef int (*write_fn)(sqlstore *s, void *arg, char *err, size_t errlen);

enum { REQ_PENDING, REQ_IN_TXN, REQ_FINISHED };

/* A queued write. A blocking one lives on the submitting caller's stack, which waits until
 * done is set; an asynchronous one (cb set) is heap-allocated with its arguments and freed by
 * the writer after cb ran. */
typedef struct wreq {
    write_fn fn;
    void *arg;
    char *err;
    size_t errlen;
    int rc;
    int state;
    int done;
    pthread_cond_t cv; /* the caller sleeps on its own, so a commit wakes only its requests */
    struct wreq *next;
    void (*cb)(struct wreq *r); /* async: reports the outcome and frees r */
    /* fn runs one statement: a failure undoes only that statement (SQLite's own statement
     * rollback), so it needs no savepoint of its own. 20,000 results of a publish skip 40,000
     * SAVEPOINT/RELEASE runs on the writer that every other write waits for. */
    int one_statement;
} wreq;

struct sqlstore {
    store base;
    char *path;

    sqlite3 *wdb;
    sqlite3_stmt *st[ST_COUNT];
    series_cache series;
    char *keybuf; /* scratch for series keys */
    size_t keycap;

    pthread_t writer;
    int writer_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    wreq *head, *tail;
    int stopping;

    /* Copies the WAL into the database on the other core while the writer goes on. */
    sqlite3 *cdb;
    pthread_t ckpt;
    int ckpt_started, ckpt_wanted, ckpt_stopping;
    pthread_mutex_t cmu;
    pthread_cond_t ccv;

    sqlite3 **rdb;
    /* Each reader's prepared statements, RD_CACHE per reader (rstmts[idx * RD_CACHE + k]), kept
     * between reads: preparing anew on every read was a visible part of a registration ramp's
     * profile (every new stream's replay read, every SyncAgentStates' read of the agents). */
    sqlite3_stmt **rstmts;
    int n_readers;
    int *free_readers; /* stack of indexes into rdb */
    int n_free;
    pthread_mutex_t rmu;
    pthread_cond_t rcv;

    pthread_mutex_t smu; /* stats: written by the writer, read by scrapes */
    store_stats stats;
};

static const store_driver sqlite_driver;

static int db_fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(db));
    return -1;
}

/* Steps a write statement to completion and resets it. */
static int st_run(sqlstore *s, int which, const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *st = s->st[which];
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        db_fail(s->wdb, what, err, errlen);
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

static void bind_str(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

/* ---- writer thread ------------------------------------------------------------------------ */

/* Commit latency from 0.1 ms to 10 s; batch sizes in powers of two up to the writer's usual
 * ceiling of a few hundred queued requests. */
static const double commit_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

static void stats_batch(sqlstore *s, const struct timespec *t0, size_t committed, int failed)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
    pthread_mutex_lock(&s->smu);
    if (failed) {
        s->stats.failed_commits++;
    } else {
        s->stats.commits++;
        prom_hist_observe(&s->stats.commit_seconds, secs);
        prom_hist_observe(&s->stats.batch_size, (double)committed);
    }
    pthread_mutex_unlock(&s->smu);
}

static void sq_get_stats(store *st, store_stats *out)
{
    sqlstore *s = (sqlstore *)st;
    pthread_mutex_lock(&s->smu);
    *out = s->stats;
    pthread_mutex_unlock(&s->smu);
}

static void fail_pending(wreq *batch, const char *msg)
{
    for (wreq *r = batch; r; r = r->next) {
        if (r->state == REQ_FINISHED) continue;
        snprintf(r->err, r->errlen, "%s", msg);
        r->rc = -1;
        r->state = REQ_FINISHED;
    }
}

/* Runs one batch in as few transactions as possible: normally one. SQLite may roll back the
 * whole transaction on some errors (SQLITE_FULL, SQLITE_IOERR); then the failed request is
 * answered and the ones that had succeeded in that transaction are run again in a new one. */
static void run_batch(sqlstore *s, wreq *batch)
{
    char msg[512];
    struct timespec t0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (st_run(s, ST_BEGIN, "begin transaction", msg, sizeof msg) < 0) {
            fail_pending(batch, msg);
            stats_batch(s, &t0, 0, 1);
            return;
        }
        int restart = 0;
        for (wreq *r = batch; r && !restart; r = r->next) {
            if (r->state != REQ_PENDING) continue;
            int sp = !r->one_statement;
            if ((!sp || st_run(s, ST_SAVEPOINT, "savepoint", r->err, r->errlen) == 0) &&
                r->fn(s, r->arg, r->err, r->errlen) == 0 &&
                (!sp || st_run(s, ST_RELEASE, "release savepoint", r->err, r->errlen) == 0)) {
                r->state = REQ_IN_TXN;
                continue;
            }
            r->rc = -1;
            r->state = REQ_FINISHED;
            cache_clear(&s->series);
            if (sqlite3_get_autocommit(s->wdb)) {
                for (wreq *q = batch; q; q = q->next)
                    if (q->state == REQ_IN_TXN) q->state = REQ_PENDING;
                restart = 1;
            } else if (sp) {
                char ignored[128];
                st_run(s, ST_ROLLBACK_TO, "rollback to savepoint", ignored, sizeof ignored);
                st_run(s, ST_RELEASE, "release savepoint", ignored, sizeof ignored);
            }
        }
        if (restart) continue;
        if (st_run(s, ST_COMMIT, "commit", msg, sizeof msg) < 0) {
            if (!sqlite3_get_autocommit(s->wdb)) {
                char ignored[128];
                st_run(s, ST_ROLLBACK, "rollback", ignored, sizeof ignored);
            }
            cache_clear(&s->series);
            for (wreq *r = batch; r; r = r->next)
                if (r->state == REQ_IN_TXN) r->state = REQ_PENDING;
            fail_pending(batch, msg);
            stats_batch(s, &t0, 0, 1);
            return;
        }
        size_t committed = 0;
        for (wreq *r = batch; r; r = r->next) {
            if (r->state != REQ_IN_TXN) continue;
            r->rc = 0;
            r->state = REQ_FINISHED;
            committed++;
        }
        stats_batch(s, &t0, committed, 0);
        return;
    }
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sqlite-writer");
    sqlstore *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->work_cv, &s->mu);
        if (!s->head) break; /* stopping and drained */
        wreq *batch = s->head;
        s->head = s->tail = NULL;
        pthread_mutex_unlock(&s->mu);

        run_batch(s, batch);

        /* Asynchronous requests are answered outside the lock; they own themselves. */
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
            wreq *next = r->next; /* r may be gone as soon as done is seen */
            r->done = 1;
            pthread_cond_signal(&r->cv);
            r = next;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Called by SQLite on the writer thread after each commit with the WAL's size in pages. */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int frames)
{
    sqlstore *s = ctx;
    if (frames >= WAL_FORCE_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= WAL_CKPT_FRAMES) {
        pthread_mutex_lock(&s->cmu);
        s->ckpt_wanted = 1;
        pthread_cond_signal(&s->ccv);
        pthread_mutex_unlock(&s->cmu);
    }
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sqlite-ckpt");
    sqlstore *s = arg;
    pthread_mutex_lock(&s->cmu);
    for (;;) {
        while (!s->ckpt_wanted && !s->ckpt_stopping) pthread_cond_wait(&s->ccv, &s->cmu);
        if (s->ckpt_stopping) break;
        s->ckpt_wanted = 0;
        pthread_mutex_unlock(&s->cmu);
        /* PASSIVE never waits for the writer nor the readers; it copies what it can. */
        int log_frames = -1, done_frames = -1;
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done_frames);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_warn("store.checkpoint_failed", "file=%s error=\"%s\"", s->path, sqlite3_errmsg(s->cdb));
        else
            log_debug("store.checkpoint", "file=%s wal_frames=%d copied=%d", s->path, log_frames, done_frames);
        pthread_mutex_lock(&s->cmu);
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

/* Queues r without waiting. 0, or -1 when the store is closing (r was not queued). */
static int submit_async(sqlstore *s, wreq *r)
{
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    r->next = NULL;
    if (s->tail) s->tail->next = r;
    else s->head = r;
    s->tail = r;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int submit(sqlstore *s, write_fn fn, void *arg, char *err, size_t errlen)
{
    char local[256];
    if (!err || !errlen) { err = local; errlen = sizeof local; }
    err[0] = 0;
    wreq r = {.fn = fn, .arg = arg, .err = err, .errlen = errlen, .state = REQ_PENDING};
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        snprintf(err, errlen, "store is closing");
        return -1;
    }
    pthread_cond_init(&r.cv, NULL);
    if (s->tail) s->tail->next = &r;
    else s->head = &r;
    s->tail = &r;
    pthread_cond_signal(&s->work_cv);
    while (!r.done) pthread_cond_wait(&r.cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r.cv);
    return r.rc;
}

/* ---- write requests (run on the writer thread, inside a savepoint) ------------------------ */

struct node_args {
    const store_node_in *n;
    const char *labels_json;
    int64_t now;
};

static int w_upsert_node(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct node_args *a = arg;
    const store_node_in *n = a->n;
    sqlite3_stmt *st = s->st[ST_NODE_UPSERT];
    bind_str(st, 1, n->node_id);
    bind_str(st, 2, n->hostname);
    bind_str(st, 3, n->ip);
    bind_str(st, 4, n->os);
    bind_str(st, 5, n->arch);
    bind_str(st, 6, a->labels_json);
    bind_str(st, 7, n->daemon_version);
    bind_str(st, 8, n->agent_version);
    bind_str(st, 9, n->daemon_address);
    sqlite3_bind_int64(st, 10, a->now);
    if (st_run(s, ST_NODE_UPSERT, "register node", err, errlen) < 0) return -1;
    st = s->st[ST_EVENT_ADD];
    bind_str(st, 1, n->node_id);
    bind_str(st, 2, "registered");
    sqlite3_bind_int64(st, 3, a->now);
    return st_run(s, ST_EVENT_ADD, "record node event", err, errlen);
}

struct placeholder_args {
    const char *node_id;
    int64_t now;
    int created;
};

static int w_placeholder(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct placeholder_args *a = arg;
    sqlite3_stmt *st = s->st[ST_NODE_PLACEHOLDER];
    bind_str(st, 1, a->node_id);
    sqlite3_bind_int64(st, 2, a->now);
    if (st_run(s, ST_NODE_PLACEHOLDER, "add placeholder node", err, errlen) < 0) return -1;
    a->created = sqlite3_changes(s->wdb) > 0;
    return 0;
}

struct touch_args {
    const store_touch *t;
    size_t n;
};

static int w_touch(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct touch_args *a = arg;
    sqlite3_stmt *st = s->st[ST_NODE_TOUCH];
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < a->n; i++) {
        bind_str(st, 1, a->t[i].node_id);
        sqlite3_bind_int64(st, 2, a->t[i].last_seen);
        if (a->t[i].status == STORE_NODE_ANY) sqlite3_bind_null(st, 3);
        else bind_str(st, 3, store_node_status_name(a->t[i].status));
        sqlite3_bind_int64(st, 4, now);
        if (st_run(s, ST_NODE_TOUCH, "update node liveness", err, errlen) < 0) return -1;
    }
    return 0;
}

struct events_args {
    const store_event_in *ev;
    size_t n;
};

static int w_events(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct events_args *a = arg;
    sqlite3_stmt *st = s->st[ST_EVENT_ADD];
    for (size_t i = 0; i < a->n; i++) {
        bind_str(st, 1, a->ev[i].node_id);
        bind_str(st, 2, a->ev[i].event);
        sqlite3_bind_int64(st, 3, a->ev[i].at);
        if (st_run(s, ST_EVENT_ADD, "record node event", err, errlen) < 0) return -1;
    }
    return 0;
}

struct agents_args {
    const char *node_id;
    const store_agent_in *a;
    size_t n;
    int64_t now;
    const char *ids_json;
};

static int w_sync_agents(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct agents_args *a = arg;
    sqlite3_stmt *st = s->st[ST_AGENT_UPSERT];
    for (size_t i = 0; i < a->n; i++) {
        const store_agent_in *g = &a->a[i];
        bind_str(st, 1, a->node_id);
        bind_str(st, 2, g->agent_id);
        bind_str(st, 3, g->type);
        bind_str(st, 4, g->version);
        bind_str(st, 5, g->status);
        sqlite3_bind_int(st, 6, g->pid);
        sqlite3_bind_int64(st, 7, g->last_heartbeat);
        sqlite3_bind_int64(st, 8, a->now);
        if (st_run(s, ST_AGENT_UPSERT, "store agent state", err, errlen) < 0) return -1;
    }
    st = s->st[ST_AGENT_REMOVE_MISSING];
    bind_str(st, 1, a->node_id);
    bind_str(st, 2, a->ids_json);
    sqlite3_bind_int64(st, 3, a->now);
    return st_run(s, ST_AGENT_REMOVE_MISSING, "mark removed agents", err, errlen);
}

/* The integer that stands for node_id in the metrics table, created on first sight. */
static int node_ref(sqlstore *s, const char *node, int64_t *id, char *err, size_t errlen)
{
    size_t len = strlen(node);
    uint64_t h = hash_bytes(node, len);
    series_slot *hit = cache_find(&s->series, node, len, h);
    if (hit) { *id = hit->id; return 0; }

    sqlite3_stmt *st = s->st[ST_MNODE_GET];
    bind_str(st, 1, node);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    } else {
        if (rc != SQLITE_DONE) {
            db_fail(s->wdb, "store metrics", err, errlen);
            sqlite3_reset(st);
            return -1;
        }
        sqlite3_reset(st);
        st = s->st[ST_MNODE_ADD];
        bind_str(st, 1, node);
        if (st_run(s, ST_MNODE_ADD, "store metrics", err, errlen) < 0) return -1;
        *id = sqlite3_last_insert_rowid(s->wdb);
    }
    cache_put(&s->series, node, len, h, *id);
    return 0;
}

/* One MetricData, encoded by the caller: vals is its JSON object, n its number of values. */
typedef struct enc_metric {
    const char *type;
    int64_t ts;
    char *vals;
    size_t n;
} enc_metric;

struct metrics_args {
    const char *node_id;
    const enc_metric *m;
    size_t n;
    size_t inserted;
};

static int w_metrics(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct metrics_args *a = arg;
    sqlite3_stmt *st = s->st[ST_POINT_ADD];
    a->inserted = 0; /* this may be a re-run after a rolled back transaction */
    int64_t ref;
    if (node_ref(s, a->node_id, &ref, err, errlen) < 0) return -1;
    for (size_t i = 0; i < a->n; i++) {
        sqlite3_bind_int64(st, 1, ref);
        sqlite3_bind_int64(st, 2, a->m[i].ts);
        bind_str(st, 3, a->m[i].type);
        bind_str(st, 4, a->m[i].vals);
        if (st_run(s, ST_POINT_ADD, "store metrics", err, errlen) < 0) return -1;
        if (sqlite3_changes(s->wdb) > 0) a->inserted += a->m[i].n;
    }
    return 0;
}

/* One retention batch: walks series in id order from after cursor, deleting points older than
 * before until limit rows are gone. Reads only its inputs, so a re-run repeats the same work. */
struct retention_args {
    int64_t before;
    int64_t limit;
    int64_t cursor;      /* in: continue with series ids > cursor */
    int64_t next_cursor; /* out */
    int64_t deleted;     /* out */
    int finished;        /* out: no series left */
};

static int w_retention(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct retention_args *a = arg;
    int64_t cursor = a->cursor, got = 0;
    a->finished = 0;
    for (int seen = 0; got < a->limit && seen < STORE_RETENTION_SERIES; seen++) {
        sqlite3_stmt *st = s->st[ST_RET_NEXT_SERIES];
        sqlite3_bind_int64(st, 1, cursor);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) { sqlite3_reset(st); a->finished = 1; break; }
        if (rc != SQLITE_ROW) {
            db_fail(s->wdb, "delete old metrics", err, errlen);
            sqlite3_reset(st);
            return -1;
        }
        int64_t sid = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);

        /* If this series has more old rows than the batch may take, delete only up to the
         * timestamp of the first row that has to stay for now. */
        int64_t room = a->limit - got, cut = a->before;
        int partial = 0;
        st = s->st[ST_RET_BOUNDARY];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_int64(st, 2, a->before);
        sqlite3_bind_int64(st, 3, room);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) { cut = sqlite3_column_int64(st, 0); partial = 1; }
        else if (rc != SQLITE_DONE) {
            db_fail(s->wdb, "delete old metrics", err, errlen);
            sqlite3_reset(st);
            return -1;
        }
        sqlite3_reset(st);

        st = s->st[ST_RET_DELETE];
        sqlite3_bind_int64(st, 1, sid);
        sqlite3_bind_int64(st, 2, cut);
        if (st_run(s, ST_RET_DELETE, "delete old metrics", err, errlen) < 0) return -1;
        int changed = sqlite3_changes(s->wdb);
        if (partial && changed == 0) {
            /* More rows share the oldest timestamp than the batch has room for: take that
             * timestamp whole (a few rows over the limit) rather than make no progress. */
            sqlite3_bind_int64(st, 1, sid);
            sqlite3_bind_int64(st, 2, cut + 1);
            if (st_run(s, ST_RET_DELETE, "delete old metrics", err, errlen) < 0) return -1;
            changed = sqlite3_changes(s->wdb);
        }
        got += changed;
        cursor = partial ? sid - 1 : sid;
    }
    a->next_cursor = cursor;
    a->deleted = got;
    return 0;
}

struct delete_node_args {
    const char *node_id;
    int found;
};

static int w_delete_secret(sqlstore *s, const char *node_id, char *err, size_t errlen);

static int w_delete_node(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct delete_node_args *a = arg;
    static const int steps[] = {ST_DEL_POINTS, ST_DEL_SERIES, ST_DEL_AGENTS, ST_DEL_EVENTS,
                                ST_DEL_NODE};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        bind_str(s->st[steps[i]], 1, a->node_id);
        if (st_run(s, steps[i], "delete node", err, errlen) < 0) return -1;
    }
    a->found = sqlite3_changes(s->wdb) > 0;
    cache_clear(&s->series); /* its series ids are gone */
    return w_delete_secret(s, a->node_id, err, errlen); /* a deleted node must enroll again */
}

/* ---- write API ---------------------------------------------------------------------------- */

static sqlstore *impl(store *s)
{
    return (sqlstore *)s;
}

static int need_id(const char *id, char *err, size_t errlen)
{
    if (id && *id) return 0;
    snprintf(err, errlen, "node_id is empty");
    return -1;
}

/* The node's labels as the JSON object the labels column holds (malloc'd), or NULL with err. */
static char *labels_json(const store_node_in *n, char *err, size_t errlen)
{
    json_t *obj = json_object();
    if (!obj) { snprintf(err, errlen, "register node: out of memory"); return NULL; }
    for (size_t i = 0; i < n->n_labels; i++) {
        const char *k = n->labels[i].key ? n->labels[i].key : "";
        json_t *v = json_string(n->labels[i].value ? n->labels[i].value : "");
        if (!v || json_object_set_new(obj, k, v) < 0) {
            json_decref(obj);
            snprintf(err, errlen, "register node: label '%.100s' is not valid UTF-8", k);
            return NULL;
        }
    }
    char *labels = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    if (!labels) snprintf(err, errlen, "register node: out of memory");
    return labels;
}

static int sq_upsert_node(store *st, const store_node_in *n, int64_t now, char *err,
                          size_t errlen)
{
    if (need_id(n->node_id, err, errlen) < 0) return -1;
    char *labels = labels_json(n, err, errlen);
    if (!labels) return -1;
    struct node_args a = {n, labels, now};
    int rc = submit(impl(st), w_upsert_node, &a, err, errlen);
    free(labels);
    return rc;
}

static int sq_upsert_placeholder(store *st, const char *node_id, int64_t now, int *created,
                                 char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct placeholder_args a = {node_id, now, 0};
    int rc = submit(impl(st), w_placeholder, &a, err, errlen);
    if (created) *created = rc == 0 && a.created;
    return rc;
}

static int sq_touch_nodes(store *st, const store_touch *t, size_t n, char *err, size_t errlen)
{
    if (!n) return 0;
    struct touch_args a = {t, n};
    return submit(impl(st), w_touch, &a, err, errlen);
}

static int sq_add_node_events(store *st, const store_event_in *ev, size_t n, char *err,
                              size_t errlen)
{
    if (!n) return 0;
    struct events_args a = {ev, n};
    return submit(impl(st), w_events, &a, err, errlen);
}

/* The listed agent ids as a JSON array (malloc'd), or NULL with err. */
static char *agent_ids_json(const store_agent_in *ag, size_t n, char *err, size_t errlen)
{
    json_t *ids = json_array();
    if (!ids) { snprintf(err, errlen, "sync agents: out of memory"); return NULL; }
    for (size_t i = 0; i < n; i++) {
        if (!ag[i].agent_id || !*ag[i].agent_id) {
            json_decref(ids);
            snprintf(err, errlen, "sync agents: agent_id is empty (state %zu)", i);
            return NULL;
        }
        json_t *v = json_string(ag[i].agent_id);
        if (!v || json_array_append_new(ids, v) < 0) {
            json_decref(ids);
            snprintf(err, errlen, "sync agents: agent_id '%.100s' is not valid UTF-8",
                     ag[i].agent_id);
            return NULL;
        }
    }
    char *ids_json = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    if (!ids_json) snprintf(err, errlen, "sync agents: out of memory");
    return ids_json;
}

static int sq_sync_agents(store *st, const char *node_id, const store_agent_in *ag, size_t n,
                          int64_t now, char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    char *ids_json = agent_ids_json(ag, n, err, errlen);
    if (!ids_json) return -1;
    struct agents_args a = {node_id, ag, n, now, ids_json};
    int rc = submit(impl(st), w_sync_agents, &a, err, errlen);
    free(ids_json);
    return rc;
}

/* A growing text buffer for the JSON of a report. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 512;
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

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* The shortest of %.15g..%.17g that reads back as exactly v. */
static void sb_double(sbuf *b, double v)
{
    char num[40];
    if (v == 0 && signbit(v)) { /* "-0" would read back as the integer 0 */
        sb_put(b, "-0.0", 4);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    sb_put(b, num, strlen(num));
}

/* Encodes the values of each MetricData as one JSON object (the row's vals) into *b, on the
 * caller's thread, so the single writer only binds and steps. Values that are not finite have
 * no JSON form (nor meaning as a measurement) and are skipped. Returns the number of rows, or
 * -1 when out of memory. enc[i].vals point into b->p. */
static long encode_metrics(const store_metric_in *m, size_t n, enc_metric *enc, sbuf *b)
{
    size_t *offs = calloc(n ? n : 1, sizeof *offs);
    size_t ne = 0;
    if (!offs) return -1;
    for (size_t i = 0; i < n && !b->oom; i++) {
        size_t start = b->len, cnt = 0;
        sb_put(b, "{", 1);
        for (size_t j = 0; j < m[i].n_values; j++) {
            double v = m[i].values[j].value;
            if (!isfinite(v)) continue;
            if (cnt++) sb_put(b, ",", 1);
            sb_json_string(b, m[i].values[j].key ? m[i].values[j].key : "");
            sb_put(b, ":", 1);
            sb_double(b, v);
        }
        sb_put(b, "}", 1);
        sb_put(b, "", 1); /* the NUL that ends this object stays in the buffer */
        if (!cnt) { b->len = start; continue; }
        enc[ne] = (enc_metric){m[i].type ? m[i].type : "", m[i].ts, NULL, cnt};
        offs[ne++] = start;
    }
    if (!b->oom)
        for (size_t i = 0; i < ne; i++) enc[i].vals = b->p + offs[i];
    free(offs);
    return b->oom ? -1 : (long)ne;
}

static int sq_insert_metrics(store *st, const char *node_id, const store_metric_in *m, size_t n,
                             size_t *inserted, char *err, size_t errlen)
{
    if (inserted) *inserted = 0;
    if (need_id(node_id, err, errlen) < 0) return -1;
    if (!n) return 0;
    enc_metric *enc = calloc(n, sizeof *enc);
    sbuf b = {0};
    long ne = enc ? encode_metrics(m, n, enc, &b) : -1;
    int rc = -1;
    if (ne < 0) {
        snprintf(err, errlen, "store metrics: out of memory");
    } else {
        struct metrics_args a = {node_id, enc, (size_t)ne, 0};
        rc = ne ? submit(impl(st), w_metrics, &a, err, errlen) : 0;
        if (rc == 0 && inserted) *inserted = a.inserted;
    }
    free(b.p);
    free(enc);
    return rc;
}

/* An asynchronous insert: the request, its arguments and their copies in one allocation's
 * worth of ownership, freed by async_done. */
typedef struct async_metrics {
    wreq r;
    struct metrics_args a;
    enc_metric *enc;
    sbuf b;
    char *node_id;
    char *types; /* copies of the type strings the rows point at */
    store_done_fn cb;
    void *user;
    char err[512];
} async_metrics;

static void async_metrics_free(async_metrics *am)
{
    free(am->b.p);
    free(am->enc);
    free(am->types);
    free(am->node_id);
    free(am);
}

static void async_done(wreq *r)
{
    async_metrics *am = (async_metrics *)r; /* r is the first member */
    am->cb(am->user, r->rc, am->err, r->rc == 0 ? am->a.inserted : 0);
    async_metrics_free(am);
}

static void sq_insert_metrics_async(store *st, const char *node_id, const store_metric_in *m, size_t n,
                                    store_done_fn cb, void *user)
{
    char err[512];
    if (need_id(node_id, err, sizeof err) < 0) { cb(user, -1, err, 0); return; }
    if (!n) { cb(user, 0, "", 0); return; }
    async_metrics *am = calloc(1, sizeof *am);
    size_t tlen = 0;
    for (size_t i = 0; i < n; i++) tlen += strlen(m[i].type ? m[i].type : "") + 1;
    if (am) {
        am->enc = calloc(n, sizeof *am->enc);
        am->node_id = strdup(node_id);
        am->types = malloc(tlen ? tlen : 1);
    }
    long ne = am && am->enc && am->node_id && am->types ? encode_metrics(m, n, am->enc, &am->b) : -1;
    if (ne < 0) {
        if (am) async_metrics_free(am);
        cb(user, -1, "store metrics: out of memory", 0);
        return;
    }
    /* The rows point at the caller's type strings: repoint them at our copies. */
    char *t = am->types;
    for (long i = 0; i < ne; i++) {
        size_t l = strlen(am->enc[i].type) + 1;
        memcpy(t, am->enc[i].type, l);
        am->enc[i].type = t;
        t += l;
    }
    if (ne == 0) {
        async_metrics_free(am);
        cb(user, 0, "", 0);
        return;
    }
    am->a = (struct metrics_args){am->node_id, am->enc, (size_t)ne, 0};
    am->cb = cb;
    am->user = user;
    am->r = (wreq){.fn = w_metrics, .arg = &am->a, .err = am->err, .errlen = sizeof am->err,
                   .state = REQ_PENDING, .cb = async_done};
    if (submit_async(impl(st), &am->r) != 0) {
        async_metrics_free(am);
        cb(user, -1, "store is closing", 0);
    }
}

/* The strings an asynchronous request keeps, copied into one allocation (NULL becomes "", as
 * bind_str would bind it anyway). */
typedef struct strpack {
    char *buf, *at;
} strpack;

static size_t sp_len(const char *v) { return strlen(v ? v : "") + 1; }

static const char *sp_put(strpack *p, const char *v)
{
    size_t l = sp_len(v);
    memcpy(p->at, v ? v : "", l);
    const char *r = p->at;
    p->at += l;
    return r;
}

/* An asynchronous RegisterNode write and its copies, freed by async_node_done. */
typedef struct async_node {
    wreq r;
    struct node_args a;
    store_node_in n;
    char *labels;
    strpack sp;
    store_done_fn cb;
    void *user;
    char err[512];
} async_node;

static void async_node_free(async_node *an)
{
    free(an->labels);
    free(an->sp.buf);
    free(an);
}

static void async_node_done(wreq *r)
{
    async_node *an = (async_node *)r; /* r is the first member */
    an->cb(an->user, r->rc, an->err, 0);
    async_node_free(an);
}

static void sq_upsert_node_async(store *st, const store_node_in *n, int64_t now, store_done_fn cb, void *user)
{
    char err[512];
    if (need_id(n->node_id, err, sizeof err) < 0) { cb(user, -1, err, 0); return; }
    async_node *an = calloc(1, sizeof *an);
    if (!an) { cb(user, -1, "register node: out of memory", 0); return; }
    if (!(an->labels = labels_json(n, err, sizeof err))) {
        async_node_free(an);
        cb(user, -1, err, 0);
        return;
    }
    const char *const f[] = {n->node_id, n->hostname, n->ip, n->os, n->arch, n->daemon_version, n->agent_version,
                             n->daemon_address};
    size_t len = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) len += sp_len(f[i]);
    if (!(an->sp.buf = an->sp.at = malloc(len))) {
        async_node_free(an);
        cb(user, -1, "register node: out of memory", 0);
        return;
    }
    an->n = (store_node_in){.node_id = sp_put(&an->sp, f[0]), .hostname = sp_put(&an->sp, f[1]),
                            .ip = sp_put(&an->sp, f[2]), .os = sp_put(&an->sp, f[3]), .arch = sp_put(&an->sp, f[4]),
                            .daemon_version = sp_put(&an->sp, f[5]), .agent_version = sp_put(&an->sp, f[6]),
                            .daemon_address = sp_put(&an->sp, f[7])};
    an->a = (struct node_args){&an->n, an->labels, now};
    an->cb = cb;
    an->user = user;
    an->r = (wreq){.fn = w_upsert_node, .arg = &an->a, .err = an->err, .errlen = sizeof an->err,
                   .state = REQ_PENDING, .cb = async_node_done};
    if (submit_async(impl(st), &an->r) != 0) {
        async_node_free(an);
        cb(user, -1, "store is closing", 0);
    }
}

/* An asynchronous SyncAgentStates write and its copies, freed by async_sync_done. */
typedef struct async_sync {
    wreq r;
    struct agents_args a;
    store_agent_in *ag;
    char *ids_json;
    strpack sp;
    int want_before, have_before;
    store_agent_list before;
    store_sync_fn cb;
    void *user;
    char err[512];
} async_sync;

static void async_sync_free(async_sync *as)
{
    store_agent_list_free(&as->before);
    free(as->ids_json);
    free(as->ag);
    free(as->sp.buf);
    free(as);
}

static void async_sync_done(wreq *r)
{
    async_sync *as = (async_sync *)r;
    as->cb(as->user, r->rc, as->err, r->rc == 0 && as->have_before ? &as->before : NULL);
    async_sync_free(as);
}

/* The node's live agents as this transaction sees them (into as->before), then the sync. A read
 * that fails costs only the before list; a batch that is run again reads again. */
static int w_sync_agents_diff(sqlstore *s, void *arg, char *err, size_t errlen)
{
    async_sync *as = arg;
    store_agent_list_free(&as->before);
    as->have_before = 0;
    if (as->want_before) {
        sqlite3_stmt *st = s->st[ST_AGENT_LIST_LIVE];
        bind_str(st, 1, as->a.node_id);
        size_t cap = 0;
        int rc = SQLITE_ERROR, oom = 0;
        while (!oom && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (as->before.n == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                store_agent *ni = realloc(as->before.items, ncap * sizeof *ni);
                if (!ni) { oom = 1; break; }
                as->before.items = ni;
                cap = ncap;
            }
            store_agent *g = &as->before.items[as->before.n];
            const char *c[4];
            for (int i = 0; i < 4; i++) c[i] = (const char *)sqlite3_column_text(st, i);
            *g = (store_agent){.agent_id = strdup(c[0] ? c[0] : ""), .type = strdup(c[1] ? c[1] : ""),
                               .version = strdup(c[2] ? c[2] : ""), .status = strdup(c[3] ? c[3] : ""),
                               .pid = sqlite3_column_int(st, 4), .last_heartbeat = sqlite3_column_int64(st, 5),
                               .updated_at = sqlite3_column_int64(st, 6)};
            as->before.n++;
            oom = !g->agent_id || !g->type || !g->version || !g->status;
        }
        as->have_before = !oom && rc == SQLITE_DONE;
        sqlite3_reset(st);
        if (!as->have_before) store_agent_list_free(&as->before);
    }
    return w_sync_agents(s, &as->a, err, errlen);
}

static void sq_sync_agents_async(store *st, const char *node_id, const store_agent_in *ag, size_t n, int64_t now,
                                 int want_before, store_sync_fn cb, void *user)
{
    char err[512];
    if (need_id(node_id, err, sizeof err) < 0) { cb(user, -1, err, NULL); return; }
    async_sync *as = calloc(1, sizeof *as);
    if (!as) { cb(user, -1, "sync agents: out of memory", NULL); return; }
    if (!(as->ids_json = agent_ids_json(ag, n, err, sizeof err))) {
        async_sync_free(as);
        cb(user, -1, err, NULL);
        return;
    }
    size_t len = sp_len(node_id);
    for (size_t i = 0; i < n; i++)
        len += sp_len(ag[i].agent_id) + sp_len(ag[i].type) + sp_len(ag[i].version) + sp_len(ag[i].status);
    as->ag = calloc(n ? n : 1, sizeof *as->ag);
    as->sp.buf = as->sp.at = malloc(len);
    if (!as->ag || !as->sp.buf) {
        async_sync_free(as);
        cb(user, -1, "sync agents: out of memory", NULL);
        return;
    }
    const char *id = sp_put(&as->sp, node_id);
    for (size_t i = 0; i < n; i++)
        as->ag[i] = (store_agent_in){.agent_id = sp_put(&as->sp, ag[i].agent_id), .type = sp_put(&as->sp, ag[i].type),
                                     .version = sp_put(&as->sp, ag[i].version), .status = sp_put(&as->sp, ag[i].status),
                                     .pid = ag[i].pid, .last_heartbeat = ag[i].last_heartbeat};
    as->a = (struct agents_args){id, as->ag, n, now, as->ids_json};
    as->want_before = want_before;
    as->cb = cb;
    as->user = user;
    as->r = (wreq){.fn = w_sync_agents_diff, .arg = as, .err = as->err, .errlen = sizeof as->err,
                   .state = REQ_PENDING, .cb = async_sync_done};
    if (submit_async(impl(st), &as->r) != 0) {
        async_sync_free(as);
        cb(user, -1, "store is closing", NULL);
    }
}

static int sq_delete_metrics_before(store *st, int64_t before, size_t batch_limit,
                                    uint64_t *deleted, char *err, size_t errlen)
{
    uint64_t total = 0;
    struct retention_args a = {.before = before, .cursor = 0};
    a.limit = batch_limit ? (int64_t)batch_limit : DEFAULT_RETENTION_BATCH;
    int rc = 0;
    for (;;) {
        if (submit(impl(st), w_retention, &a, err, errlen) < 0) { rc = -1; break; }
        total += (uint64_t)a.deleted;
        if (a.finished) break;
        a.cursor = a.next_cursor;
    }
    if (deleted) *deleted = total;
    return rc;
}

static int sq_delete_node(store *st, const char *node_id, int *found, char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct delete_node_args a = {node_id, 0};
    int rc = submit(impl(st), w_delete_node, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

static int w_add_audit(sqlstore *s, void *arg, char *err, size_t errlen)
{
    const store_audit_in *a = arg;
    sqlite3_stmt *st = s->st[ST_AUDIT_ADD];
    sqlite3_bind_int64(st, 1, a->at);
    const char *f[7] = {a->actor, a->role, a->method, a->target, a->result, a->detail, a->peer};
    for (int i = 0; i < 7; i++) bind_str(st, i + 2, f[i]);
    return st_run(s, ST_AUDIT_ADD, "add audit record", err, errlen);
}

static int sq_add_audit(store *st, const store_audit_in *a, char *err, size_t errlen)
{
    return submit(impl(st), w_add_audit, (void *)a, err, errlen);
}

/* ---- reads -------------------------------------------------------------------------------- */

static sqlite3 *reader_get(sqlstore *s, int *idx)
{
    pthread_mutex_lock(&s->rmu);
    while (!s->n_free) pthread_cond_wait(&s->rcv, &s->rmu);
    *idx = s->free_readers[--s->n_free];
    pthread_mutex_unlock(&s->rmu);
    return s->rdb[*idx];
}

static void reader_put(sqlstore *s, int idx)
{
    pthread_mutex_lock(&s->rmu);
    s->free_readers[s->n_free++] = idx;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

/* A read in progress: one statement on a borrowed connection. */
typedef struct rd {
    sqlstore *s;
    sqlite3 *db;
    sqlite3_stmt *st;
    sqlite3_stmt **slot; /* where st is kept for the next read of the same SQL; NULL: finalize */
    int idx;
    int oom;
} rd;

static int rd_begin(rd *r, sqlstore *s, const char *sql, const char *what, char *err,
                    size_t errlen)
{
    r->s = s;
    r->oom = 0;
    r->st = NULL;
    r->slot = NULL;
    r->db = reader_get(s, &r->idx);
    /* The SQL is compared, not its address: a caller may build it in a buffer. */
    sqlite3_stmt **c = s->rstmts + (size_t)r->idx * RD_CACHE, **empty = NULL;
    for (int k = 0; k < RD_CACHE && !r->st; k++) {
        if (!c[k]) { if (!empty) empty = &c[k]; continue; }
        if (strcmp(sqlite3_sql(c[k]), sql) == 0) {
            r->st = c[k];
            r->slot = &c[k];
        }
    }
    if (r->st) return 0;
    if (sqlite3_prepare_v2(r->db, sql, -1, &r->st, NULL) != SQLITE_OK) {
        db_fail(r->db, what, err, errlen);
        reader_put(s, r->idx);
        return -1;
    }
    if (empty) {
        *empty = r->st;
        r->slot = empty;
    }
    return 0;
}

/* Finishes the read; rc is the last sqlite3_step() result. Returns 0 or -1 with err. */
static int rd_end(rd *r, int rc, const char *what, char *err, size_t errlen)
{
    int ret = 0;
    if (r->oom) {
        snprintf(err, errlen, "%s: out of memory", what);
        ret = -1;
    } else if (rc != SQLITE_DONE) {
        db_fail(r->db, what, err, errlen);
        ret = -1;
    }
    if (r->slot) {
        /* Ends the read transaction (a checkpoint may pass it) and drops the bindings: the next
         * read binds only what it needs, and these point into this caller's memory. */
        sqlite3_reset(r->st);
        sqlite3_clear_bindings(r->st);
    } else {
        sqlite3_finalize(r->st);
    }
    reader_put(r->s, r->idx);
    return ret;
}

static char *col_str(rd *r, int i)
{
    const unsigned char *t = sqlite3_column_text(r->st, i);
    char *c = strdup(t ? (const char *)t : "");
    if (!c) r->oom = 1;
    return c;
}

/* Grows *items (of size sz) to hold n + 1. Returns 0 or -1 (r->oom set). */
static int grow(rd *r, void **items, size_t n, size_t *cap, size_t sz)
{
    if (n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *ni = realloc(*items, ncap * sz);
    if (!ni) { r->oom = 1; return -1; }
    *items = ni;
    *cap = ncap;
    return 0;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const store_label *)a)->key, ((const store_label *)b)->key);
}

static void parse_labels(rd *r, const char *text, store_node *n)
{
    json_t *obj = json_loads(text ? text : "{}", 0, NULL);
    if (!json_is_object(obj)) { json_decref(obj); return; }
    size_t cnt = json_object_size(obj);
    if (cnt) {
        n->labels = calloc(cnt, sizeof *n->labels);
        if (!n->labels) { r->oom = 1; json_decref(obj); return; }
    }
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        store_label *l = &n->labels[n->n_labels++];
        l->key = strdup(k);
        l->value = strdup(json_is_string(v) ? json_string_value(v) : "");
        if (!l->key || !l->value) r->oom = 1;
    }
    json_decref(obj);
    if (!r->oom && n->n_labels > 1) qsort(n->labels, n->n_labels, sizeof *n->labels, label_cmp);
}

#define NODE_COLS                                                                             \
    "node_id, hostname, ip, os, arch, labels, daemon_version, agent_version, daemon_address,"   \
    " status, registered_at, last_seen, updated_at"

static void read_node(rd *r, store_node *n)
{
    memset(n, 0, sizeof *n);
    n->node_id = col_str(r, 0);
    n->hostname = col_str(r, 1);
    n->ip = col_str(r, 2);
    n->os = col_str(r, 3);
    n->arch = col_str(r, 4);
    parse_labels(r, (const char *)sqlite3_column_text(r->st, 5), n);
    n->daemon_version = col_str(r, 6);
    n->agent_version = col_str(r, 7);
    n->daemon_address = col_str(r, 8);
    const unsigned char *status = sqlite3_column_text(r->st, 9);
    n->status = status && strcmp((const char *)status, "online") == 0 ? STORE_NODE_ONLINE
                                                                       : STORE_NODE_OFFLINE;
    n->registered_at = sqlite3_column_int64(r->st, 10);
    n->last_seen = sqlite3_column_int64(r->st, 11);
    n->updated_at = sqlite3_column_int64(r->st, 12);
}

/* The filter's conditions (see sq_list_nodes' binds). */
#define LIST_NODES_WHERE\
    " WHERE (?1 IS NULL OR status = ?1)"\
    " AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(nodes.labels) j"\
    "   WHERE j.key = ?2 AND j.value = ?3))"\
    /* every wanted pair (?4, a JSON object) has its match among the node's */\
    " AND (?4 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?4) w"\
    "   WHERE NOT EXISTS (SELECT 1 FROM json_each(nodes.labels) j"\
    "     WHERE j.key = w.key AND j.value = w.value)))"\
    " AND (?5 IS NULL OR node_id > ?5)"\
    " ORDER BY node_id LIMIT ?6"

static int sq_list_nodes(store *st, const store_node_filter *f, store_node_list *out, char *err,
                         size_t errlen)
{
    static const char *what = "list nodes";
    out->items = NULL;
    out->n = 0;
    char *want = NULL;
    if (f && f->n_labels) {
        json_t *obj = json_object();
        for (size_t i = 0; obj && i < f->n_labels; i++) {
            json_t *v = json_string(f->labels[i].value ? f->labels[i].value : "");
            if (!v || json_object_set_new(obj, f->labels[i].key ? f->labels[i].key : "", v) < 0) {
                json_decref(obj);
                snprintf(err, errlen, "%s: label filter '%.100s' is not valid UTF-8", what,
                         f->labels[i].key ? f->labels[i].key : "");
                return -1;
            }
        }
        want = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        json_decref(obj);
        if (!want) { snprintf(err, errlen, "%s: out of memory", what); return -1; }
    }
    rd r;
    int ids_only = f && f->ids_only;
    if (rd_begin(&r, impl(st),
                 ids_only ? "SELECT node_id FROM nodes" LIST_NODES_WHERE
                          : "SELECT " NODE_COLS " FROM nodes" LIST_NODES_WHERE,
                 what, err, errlen) < 0) {
        free(want);
        return -1;
    }
    if (f && f->status != STORE_NODE_ANY)
        sqlite3_bind_text(r.st, 1, store_node_status_name(f->status), -1, SQLITE_STATIC);
    if (f && f->label_key) {
        sqlite3_bind_text(r.st, 2, f->label_key, -1, SQLITE_STATIC);
        bind_str(r.st, 3, f->label_value);
    }
    if (want) sqlite3_bind_text(r.st, 4, want, -1, SQLITE_STATIC);
    if (f && f->after && *f->after) sqlite3_bind_text(r.st, 5, f->after, -1, SQLITE_STATIC);
    sqlite3_bind_int64(r.st, 6, f && f->limit ? (int64_t)f->limit : -1);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_node *n = &out->items[out->n++];
        if (ids_only) {
            memset(n, 0, sizeof *n);
            n->node_id = col_str(&r, 0);
        } else {
            read_node(&r, n);
        }
        if (r.oom) break;
    }
    free(want);
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_node_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_get_node(store *st, const char *node_id, store_node *out, char *err, size_t errlen)
{
    static const char *what = "get node";
    memset(out, 0, sizeof *out);
    rd r;
    if (rd_begin(&r, impl(st), "SELECT " NODE_COLS " FROM nodes WHERE node_id = ?1", what, err,
                 errlen) < 0)
        return STORE_ERROR;
    bind_str(r.st, 1, node_id);
    int rc = sqlite3_step(r.st), found = 0;
    if (rc == SQLITE_ROW) {
        read_node(&r, out);
        found = 1;
        rc = SQLITE_DONE;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_node_free(out);
        return STORE_ERROR;
    }
    return found ? STORE_OK : STORE_NOT_FOUND;
}

static int sq_list_agents(store *st, const char *node_id, int include_removed,
                          store_agent_list *out, char *err, size_t errlen)
{
    static const char *what = "list agents";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT agent_id, type, version, status, pid, last_heartbeat, updated_at, removed"
                 " FROM agents WHERE node_id = ?1 AND (?2 OR removed = 0) ORDER BY agent_id",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    sqlite3_bind_int(r.st, 2, include_removed ? 1 : 0);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_agent *a = &out->items[out->n++];
        a->agent_id = col_str(&r, 0);
        a->type = col_str(&r, 1);
        a->version = col_str(&r, 2);
        a->status = col_str(&r, 3);
        a->pid = sqlite3_column_int(r.st, 4);
        a->last_heartbeat = sqlite3_column_int64(r.st, 5);
        a->updated_at = sqlite3_column_int64(r.st, 6);
        a->removed = sqlite3_column_int(r.st, 7);
        if (r.oom) break;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_agent_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_list_node_events(store *st, const char *node_id, int64_t from, int64_t to,
                               store_event_list *out, char *err, size_t errlen)
{
    static const char *what = "list node events";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT node_id, event, at FROM node_events"
                 " WHERE node_id = ?1 AND at BETWEEN ?2 AND ?3 ORDER BY at, id",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    sqlite3_bind_int64(r.st, 2, from);
    sqlite3_bind_int64(r.st, 3, to);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_event *e = &out->items[out->n++];
        e->node_id = col_str(&r, 0);
        e->event = col_str(&r, 1);
        e->at = sqlite3_column_int64(r.st, 2);
        if (r.oom) break;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_event_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_query_metrics(store *st, const char *node_id, const char *type, int64_t from,
                            int64_t to, size_t limit, store_point_list *out, char *err,
                            size_t errlen)
{
    static const char *what = "query metrics";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT m.ts, j.key, j.value FROM metrics m, json_each(m.vals) j"
                 " WHERE m.node_ref = (SELECT id FROM metric_nodes WHERE node_id = ?1)"
                 " AND m.type = ?2 AND m.ts BETWEEN ?3 AND ?4"
                 " ORDER BY m.ts, j.key LIMIT ?5",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    bind_str(r.st, 2, type);
    sqlite3_bind_int64(r.st, 3, from);
    sqlite3_bind_int64(r.st, 4, to);
    sqlite3_bind_int64(r.st, 5, limit ? (int64_t)limit : -1);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_point *p = &out->items[out->n++];
        p->ts = sqlite3_column_int64(r.st, 0);
        p->key = col_str(&r, 1);
        p->value = sqlite3_column_double(r.st, 2);
        if (r.oom) break;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_point_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_metric_stats(store *st, const char *node_id, const char *type, int64_t from,
                           int64_t to, store_stat_list *out, char *err, size_t errlen)
{
    static const char *what = "metric statistics";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT j.key, m.ts, j.value FROM metrics m, json_each(m.vals) j"
                 " WHERE m.node_ref = (SELECT id FROM metric_nodes WHERE node_id = ?1)"
                 " AND m.type = ?2 AND m.ts BETWEEN ?3 AND ?4"
                 " ORDER BY j.key, m.ts",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    bind_str(r.st, 2, type);
    sqlite3_bind_int64(r.st, 3, from);
    sqlite3_bind_int64(r.st, 4, to);
    size_t cap = 0;
    double sum = 0;
    int rc;
    /* Rows come by key then time: one store_stat per run of a key, its last row the latest. */
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(r.st, 0);
        int64_t ts = sqlite3_column_int64(r.st, 1);
        double v = sqlite3_column_double(r.st, 2);
        store_stat *x = out->n ? &out->items[out->n - 1] : NULL;
        if (!x || strcmp(x->key, key ? key : "") != 0) {
            if (x) x->avg = sum / (double)x->count;
            if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
            x = &out->items[out->n++];
            memset(x, 0, sizeof *x);
            x->key = col_str(&r, 0);
            if (r.oom) break;
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
    if (out->n && !r.oom) out->items[out->n - 1].avg = sum / (double)out->items[out->n - 1].count;
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_stat_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_list_audit(store *st, const store_audit_filter *f, store_audit_list *out,
                         char *err, size_t errlen)
{
    static const char *what = "list audit";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT id, at, actor, role, method, target, result, detail, peer FROM audit"
                 " WHERE (?1 IS NULL OR actor = ?1)"
                 " AND (?2 IS NULL OR target = ?2 OR substr(target, 1, length(?2) + 1) = ?2 || '/')"
                 " AND at >= ?3 ORDER BY id DESC LIMIT ?4",
                 what, err, errlen) < 0)
        return -1;
    if (f && f->actor && *f->actor) sqlite3_bind_text(r.st, 1, f->actor, -1, SQLITE_STATIC);
    if (f && f->target && *f->target) sqlite3_bind_text(r.st, 2, f->target, -1, SQLITE_STATIC);
    sqlite3_bind_int64(r.st, 3, f ? f->since : 0);
    sqlite3_bind_int64(r.st, 4, f && f->limit ? (int64_t)f->limit : 100);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_audit *a = &out->items[out->n++];
        a->id = sqlite3_column_int64(r.st, 0);
        a->at = sqlite3_column_int64(r.st, 1);
        a->actor = col_str(&r, 2);
        a->role = col_str(&r, 3);
        a->method = col_str(&r, 4);
        a->target = col_str(&r, 5);
        a->result = col_str(&r, 6);
        a->detail = col_str(&r, 7);
        a->peer = col_str(&r, 8);
        if (r.oom) break;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_audit_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_list_metric_types(store *st, const char *node_id, int64_t from, int64_t to,
                                store_string_list *out, char *err, size_t errlen)
{
    static const char *what = "list metric types";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT DISTINCT type FROM metrics"
                 " WHERE node_ref = (SELECT id FROM metric_nodes WHERE node_id = ?1)"
                 " AND ts BETWEEN ?2 AND ?3 ORDER BY type",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    sqlite3_bind_int64(r.st, 2, from);
    sqlite3_bind_int64(r.st, 3, to);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        out->items[out->n++] = col_str(&r, 0);
        if (r.oom) break;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_string_list_free(out);
        return -1;
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------------------------- */

static int exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    snprintf(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    if (exec(db, "BEGIN IMMEDIATE", "migrate schema", err, errlen) < 0) return -1;
    int64_t version = 0;
    if (exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
             "migrate schema", err, errlen) < 0)
        goto fail;
    if (pragma_int(db, "SELECT max(version) FROM schema_version", &version) < 0) version = 0;
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s: database schema version %lld is newer than this program's (%d): "
                 "use a newer ops-manager",
                 path, (long long)version, SCHEMA_VERSION);
        goto fail;
    }
    for (int v = (int)version; v < SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migrate schema to version %d", v + 1);
        if (exec(db, migrations[v], what, err, errlen) < 0) goto fail;
    }
    if (version < SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof sql,
                 "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
                 SCHEMA_VERSION);
        if (exec(db, sql, "migrate schema", err, errlen) < 0) goto fail;
    }
    return exec(db, "COMMIT", "migrate schema", err, errlen);
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void sq_close(store *st)
{
    sqlstore *s = impl(st);
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_signal(&s->work_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
    }
    if (s->ckpt_started) {
        pthread_mutex_lock(&s->cmu);
        s->ckpt_stopping = 1;
        pthread_cond_signal(&s->ccv);
        pthread_mutex_unlock(&s->cmu);
        pthread_join(s->ckpt, NULL);
    }
    if (s->cdb) sqlite3_close(s->cdb);
    for (int i = 0; i < s->n_readers; i++) {
        for (int k = 0; s->rstmts && k < RD_CACHE; k++) sqlite3_finalize(s->rstmts[(size_t)i * RD_CACHE + k]);
        sqlite3_close(s->rdb[i]);
    }
    free(s->rstmts);
    free(s->rdb);
    free(s->free_readers);
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->st[i]);
    /* The last connection to close checkpoints the WAL into the database file. */
    if (s->wdb) sqlite3_close(s->wdb);
    cache_clear(&s->series);
    free(s->keybuf);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    pthread_mutex_destroy(&s->smu);
    free(s->path);
    free(s);
}

static int open_writer(sqlstore *s, const store_config *cfg, char *err, size_t errlen)
{
    if (sqlite3_open_v2(s->path, &s->wdb,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open database: %s", s->path,
                 s->wdb ? sqlite3_errmsg(s->wdb) : "out of memory");
        return -1;
    }
    sqlite3_extended_result_codes(s->wdb, 0);
    sqlite3_busy_timeout(s->wdb, BUSY_TIMEOUT_MS);
    char what[600];
    snprintf(what, sizeof what, "%s: set up database", s->path);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return db_fail(s->wdb, what, err, errlen);
    int rc = sqlite3_step(st);
    const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    int wal = mode && strcmp((const char *)mode, "wal") == 0;
    if (!wal) {
        if (rc == SQLITE_ROW) snprintf(err, errlen, "%s: database cannot use WAL mode", s->path);
        else db_fail(s->wdb, what, err, errlen);
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    /* NORMAL in WAL mode syncs at checkpoints only: a commit is in the WAL file (the OS's
     * page cache) before it is acknowledged, which a killed process cannot lose. */
    if (exec(s->wdb,
             "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-32768; PRAGMA temp_store=MEMORY;"
             " PRAGMA journal_size_limit=67108864;",
             what, err, errlen) < 0)
        return -1;
    if (cfg->max_size_bytes) {
        int64_t page = 4096;
        pragma_int(s->wdb, "PRAGMA page_size", &page);
        char sql[80];
        uint64_t pages = cfg->max_size_bytes / (uint64_t)(page > 0 ? page : 4096);
        snprintf(sql, sizeof sql, "PRAGMA max_page_count=%llu",
                 (unsigned long long)(pages ? pages : 1));
        if (exec(s->wdb, sql, what, err, errlen) < 0) return -1;
    }
    if (migrate(s->wdb, s->path, err, errlen) < 0) return -1;
    /* Replaces SQLite's own auto-checkpoint, which would run on the writer thread. */
    sqlite3_wal_hook(s->wdb, wal_hook, s);
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->wdb, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK)
            return db_fail(s->wdb, what, err, errlen);
    }
    return 0;
}

static store *sq_open(const store_config *cfg, char *err, size_t errlen)
{
    if (!cfg->dsn || !*cfg->dsn) {
        snprintf(err, errlen, "database.dsn is empty (expected the path of the SQLite file)");
        return NULL;
    }
    sqlstore *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->base.drv = &sqlite_driver;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->ccv, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    pthread_mutex_init(&s->smu, NULL);
    prom_hist_init(&s->stats.commit_seconds, commit_bounds, sizeof commit_bounds / sizeof commit_bounds[0]);
    prom_hist_init(&s->stats.batch_size, batch_bounds, sizeof batch_bounds / sizeof batch_bounds[0]);
    s->path = strdup(cfg->dsn);
    if (!s->path) { snprintf(err, errlen, "out of memory"); goto fail; }
    if (open_writer(s, cfg, err, errlen) < 0) goto fail;

    int n = cfg->readers > 0 ? cfg->readers : DEFAULT_READERS;
    s->rdb = calloc((size_t)n, sizeof *s->rdb);
    s->rstmts = calloc((size_t)n * RD_CACHE, sizeof *s->rstmts);
    s->free_readers = calloc((size_t)n, sizeof *s->free_readers);
    if (!s->rdb || !s->rstmts || !s->free_readers) { snprintf(err, errlen, "out of memory"); goto fail; }
    for (int i = 0; i < n; i++) {
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
        s->rdb[s->n_readers++] = db;
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot open reader: %s", s->path,
                     db ? sqlite3_errmsg(db) : "out of memory");
            goto fail;
        }
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
        s->free_readers[s->n_free++] = i;
    }
    int perr = pthread_create(&s->writer, NULL, writer_main, s);
    if (perr != 0) {
        snprintf(err, errlen, "cannot start the store writer thread: %s", strerror(perr));
        goto fail;
    }
    s->writer_started = 1;
    if (sqlite3_open_v2(s->path, &s->cdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open checkpoint connection: %s", s->path,
                 s->cdb ? sqlite3_errmsg(s->cdb) : "out of memory");
        goto fail;
    }
    /* A connection that has not read the database yet has no WAL index open, and
     * sqlite3_wal_checkpoint_v2 then returns SQLITE_OK having done nothing (seen on 3.40.1:
     * the WAL grew to the writer's forced-checkpoint limit while ops.db stayed empty). One
     * read attaches it to the WAL. */
    if (sqlite3_exec(s->cdb, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: checkpoint connection cannot read: %s", s->path, sqlite3_errmsg(s->cdb));
        goto fail;
    }
    perr = pthread_create(&s->ckpt, NULL, ckpt_main, s);
    if (perr != 0) {
        snprintf(err, errlen, "cannot start the store checkpoint thread: %s", strerror(perr));
        goto fail;
    }
    s->ckpt_started = 1;
    return &s->base;
fail:
    sq_close(&s->base);
    return NULL;
}

/* ---- pushed update events ------------------------------------------------------------------
 * An operator's publish is rare: its statements are prepared per request on the writer
 * connection. A daemon's result is not (a publish to 20,000 nodes brings 20,000 within seconds):
 * its UPDATE is kept in the writer's table. */

/* Prepares sql on the writer connection (writer thread only). */
static sqlite3_stmt *w_prepare(sqlstore *s, const char *sql, const char *what, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->wdb, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(s->wdb, what, err, errlen);
        return NULL;
    }
    return st;
}

static int w_step_done(sqlstore *s, sqlite3_stmt *st, const char *what, char *err, size_t errlen)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        db_fail(s->wdb, what, err, errlen);
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

struct add_updates_args {
    const store_update_in *ev;
    const char *const *nodes;
    size_t n;
    uint64_t *ids;
};

static int w_add_updates(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "store update event";
    struct add_updates_args *a = arg;
    const store_update_in *e = a->ev;
    sqlite3_stmt *st = w_prepare(s,
        "INSERT INTO update_events (node_id, kind, component, agent_id, version, download_url,"
        " hash_sha256, operation, signature, payload, created_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", what, err, errlen);
    if (!st) return -1;
    int rc = 0;
    for (size_t i = 0; i < a->n && rc == 0; i++) {
        bind_str(st, 1, a->nodes[i]);
        bind_str(st, 2, e->kind);
        bind_str(st, 3, e->component);
        bind_str(st, 4, e->agent_id);
        bind_str(st, 5, e->version);
        bind_str(st, 6, e->download_url);
        bind_str(st, 7, e->hash_sha256);
        bind_str(st, 8, e->operation);
        sqlite3_bind_blob(st, 9, e->signature ? (const void *)e->signature : "", (int)e->signature_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 10, e->payload ? (const void *)e->payload : "", (int)e->payload_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 11, e->created_at);
        rc = w_step_done(s, st, what, err, errlen);
        if (rc == 0 && a->ids) a->ids[i] = (uint64_t)sqlite3_last_insert_rowid(s->wdb);
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_add_updates(store *st, const store_update_in *ev, const char *const *node_ids, size_t n,
                          uint64_t *ids_out, char *err, size_t errlen)
{
    if (!n) return 0;
    if (!ev->kind || !*ev->kind) { snprintf(err, errlen, "store update event: kind is empty"); return -1; }
    if (ev->payload_len > INT32_MAX || ev->signature_len > INT32_MAX) {
        snprintf(err, errlen, "store update event: payload too large");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (need_id(node_ids[i], err, errlen) < 0) return -1;
    struct add_updates_args a = {ev, node_ids, n, ids_out};
    return submit(impl(st), w_add_updates, &a, err, errlen);
}

struct update_result_args {
    const char *node_id, *outcome, *message;
    uint64_t id;
    int64_t at;
    int found;
};

static int w_update_result(sqlstore *s, void *arg, char *err, size_t errlen)
{
    struct update_result_args *a = arg;
    sqlite3_stmt *st = s->st[ST_UPDATE_RESULT];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)a->id);
    bind_str(st, 2, a->node_id);
    bind_str(st, 3, a->outcome);
    bind_str(st, 4, a->message);
    sqlite3_bind_int64(st, 5, a->at);
    if (st_run(s, ST_UPDATE_RESULT, "record update result", err, errlen) < 0) return -1;
    a->found = sqlite3_changes(s->wdb) > 0;
    return 0;
}

static int sq_set_update_result(store *st, const char *node_id, uint64_t id, const char *outcome,
                                const char *message, int64_t at, int *found, char *err, size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct update_result_args a = {node_id, outcome, message, id, at, 0};
    int rc = submit(impl(st), w_update_result, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

/* ReportEventResult's write without a waiting thread: the writer's commit calls back. */
typedef struct async_result {
    wreq r; /* first: async_result_done gets &r */
    struct update_result_args a;
    char *node_id, *outcome, *message;
    store_result_fn cb;
    void *user;
    char err[512];
} async_result;

static void async_result_free(async_result *ar)
{
    free(ar->node_id);
    free(ar->outcome);
    free(ar->message);
    free(ar);
}

static void async_result_done(wreq *r)
{
    async_result *ar = (async_result *)r;
    ar->cb(ar->user, r->rc, ar->err, r->rc == 0 && ar->a.found);
    async_result_free(ar);
}

static void sq_set_update_result_async(store *st, const char *node_id, uint64_t id, const char *outcome,
                                       const char *message, int64_t at, store_result_fn cb, void *user)
{
    char err[512];
    if (need_id(node_id, err, sizeof err) < 0) { cb(user, -1, err, 0); return; }
    async_result *ar = calloc(1, sizeof *ar);
    if (ar) {
        ar->node_id = strdup(node_id);
        ar->outcome = strdup(outcome ? outcome : "");
        ar->message = strdup(message ? message : "");
    }
    if (!ar || !ar->node_id || !ar->outcome || !ar->message) {
        if (ar) async_result_free(ar);
        cb(user, -1, "record update result: out of memory", 0);
        return;
    }
    ar->a = (struct update_result_args){ar->node_id, ar->outcome, ar->message, id, at, 0};
    ar->cb = cb;
    ar->user = user;
    ar->r = (wreq){.fn = w_update_result, .arg = &ar->a, .err = ar->err, .errlen = sizeof ar->err, .one_statement = 1,
                   .state = REQ_PENDING, .cb = async_result_done};
    if (submit_async(impl(st), &ar->r) != 0) {
        async_result_free(ar);
        cb(user, -1, "store is closing", 0);
    }
}

/* An event is "superseded" when a later one exists for the same node and target. */
#define UPD_SUPERSEDED                                                                          \
    "EXISTS (SELECT 1 FROM update_events l WHERE l.node_id = e.node_id AND l.kind = e.kind"     \
    " AND l.component = e.component AND l.agent_id = e.agent_id AND l.id > e.id)"

struct compact_args {
    int64_t before;
    uint64_t deleted;
};

static int w_compact_updates(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "compact update events";
    struct compact_args *a = arg;
    sqlite3_stmt *st = w_prepare(s,
        "DELETE FROM update_events AS e WHERE e.created_at < ?1"
        " AND (e.kind = 'command' OR " UPD_SUPERSEDED ")", what, err, errlen);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, a->before);
    int rc = w_step_done(s, st, what, err, errlen);
    if (rc == 0) a->deleted = (uint64_t)sqlite3_changes(s->wdb);
    sqlite3_finalize(st);
    return rc;
}

static int sq_compact_updates(store *st, int64_t before, uint64_t *deleted, char *err, size_t errlen)
{
    struct compact_args a = {before, 0};
    int rc = submit(impl(st), w_compact_updates, &a, err, errlen);
    if (deleted) *deleted = rc == 0 ? a.deleted : 0;
    return rc;
}

#define UPD_COLUMNS                                                                             \
    "e.id, e.node_id, e.kind, e.component, e.agent_id, e.version, e.download_url,"              \
    " e.hash_sha256, e.operation, e.signature, e.payload, e.created_at, e.outcome, e.message,"  \
    " e.result_at"

static uint8_t *col_blob(rd *r, int i, size_t *len)
{
    const void *b = sqlite3_column_blob(r->st, i);
    int n = sqlite3_column_bytes(r->st, i);
    *len = 0;
    uint8_t *c = malloc(n > 0 ? (size_t)n : 1);
    if (!c) { r->oom = 1; return NULL; }
    if (n > 0 && b) memcpy(c, b, (size_t)n);
    *len = n > 0 ? (size_t)n : 0;
    return c;
}

static int read_updates(rd *r, store_update_list *out, const char *what, char *err, size_t errlen)
{
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r->st)) == SQLITE_ROW) {
        if (grow(r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_update *u = &out->items[out->n++];
        memset(u, 0, sizeof *u);
        u->id = (uint64_t)sqlite3_column_int64(r->st, 0);
        u->node_id = col_str(r, 1);
        u->kind = col_str(r, 2);
        u->component = col_str(r, 3);
        u->agent_id = col_str(r, 4);
        u->version = col_str(r, 5);
        u->download_url = col_str(r, 6);
        u->hash_sha256 = col_str(r, 7);
        u->operation = col_str(r, 8);
        u->signature = col_blob(r, 9, &u->signature_len);
        u->payload = col_blob(r, 10, &u->payload_len);
        u->created_at = sqlite3_column_int64(r->st, 11);
        u->outcome = col_str(r, 12);
        u->message = col_str(r, 13);
        u->result_at = sqlite3_column_int64(r->st, 14);
        if (r->oom) break;
    }
    if (rd_end(r, rc, what, err, errlen) < 0) {
        store_update_list_free(out);
        return -1;
    }
    return 0;
}

static int sq_list_updates_after(store *st, const char *node_id, uint64_t after_id, int64_t stale_before,
                                 size_t limit, store_update_list *out, char *err, size_t errlen)
{
    static const char *what = "list update events";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT " UPD_COLUMNS " FROM update_events AS e WHERE e.node_id = ?1 AND e.id > ?2"
                 " AND (e.created_at >= ?3 OR (e.kind <> 'command' AND NOT " UPD_SUPERSEDED "))"
                 " ORDER BY e.id LIMIT ?4",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, node_id);
    sqlite3_bind_int64(r.st, 2, (sqlite3_int64)after_id);
    sqlite3_bind_int64(r.st, 3, stale_before);
    sqlite3_bind_int64(r.st, 4, (sqlite3_int64)(limit ? limit : 1000));
    return read_updates(&r, out, what, err, errlen);
}

static int sq_list_updates(store *st, const store_update_filter *f, store_update_list *out, char *err,
                           size_t errlen)
{
    static const char *what = "list update events";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT " UPD_COLUMNS " FROM update_events AS e WHERE (?1 = '' OR e.node_id = ?1)"
                 " AND (?2 = 0 OR e.id = ?2) AND (?3 = 0 OR e.outcome = '') AND (?4 = 0 OR e.id < ?4)"
                 " ORDER BY e.id DESC LIMIT ?5",
                 what, err, errlen) < 0)
        return -1;
    bind_str(r.st, 1, f ? f->node_id : NULL);
    sqlite3_bind_int64(r.st, 2, f ? (sqlite3_int64)f->event_id : 0);
    sqlite3_bind_int(r.st, 3, f ? f->pending_only : 0);
    sqlite3_bind_int64(r.st, 4, f ? (sqlite3_int64)f->before_id : 0);
    sqlite3_bind_int64(r.st, 5, (sqlite3_int64)(f && f->limit ? f->limit : 100));
    return read_updates(&r, out, what, err, errlen);
}

/* ---- node authentication -------------------------------------------------------------------
 * Rare writes too (an enrollment, an operator's token): statements prepared per request. */

static int w_delete_secret(sqlstore *s, const char *node_id, char *err, size_t errlen)
{
    sqlite3_stmt *st = w_prepare(s, "DELETE FROM node_secrets WHERE node_id = ?1", "delete node secret", err, errlen);
    if (!st) return -1;
    bind_str(st, 1, node_id);
    int rc = w_step_done(s, st, "delete node secret", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

struct secret_args {
    const char *node_id, *sha256;
    int64_t now;
};

static int w_set_secret(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "store node secret";
    struct secret_args *a = arg;
    sqlite3_stmt *st = w_prepare(s,
        "INSERT INTO node_secrets (node_id, sha256, set_at) VALUES (?1, ?2, ?3)"
        " ON CONFLICT(node_id) DO UPDATE SET sha256 = excluded.sha256, set_at = excluded.set_at",
        what, err, errlen);
    if (!st) return -1;
    bind_str(st, 1, a->node_id);
    bind_str(st, 2, a->sha256);
    sqlite3_bind_int64(st, 3, a->now);
    int rc = w_step_done(s, st, what, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static int sq_set_node_secret(store *st, const char *node_id, const char *sha256, int64_t now, char *err,
                              size_t errlen)
{
    if (need_id(node_id, err, errlen) < 0) return -1;
    struct secret_args a = {node_id, sha256, now};
    return submit(impl(st), w_set_secret, &a, err, errlen);
}

static int sq_get_node_secret(store *st, const char *node_id, char *out, char *err, size_t errlen)
{
    static const char *what = "read node secret";
    out[0] = 0;
    rd r;
    if (rd_begin(&r, impl(st), "SELECT sha256 FROM node_secrets WHERE node_id = ?1", what, err, errlen) < 0)
        return STORE_ERROR;
    bind_str(r.st, 1, node_id);
    int rc = sqlite3_step(r.st), found = 0;
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(r.st, 0);
        snprintf(out, 65, "%s", t ? (const char *)t : "");
        found = 1;
        rc = SQLITE_DONE;
    }
    if (rd_end(&r, rc, what, err, errlen) < 0) return STORE_ERROR;
    return found ? STORE_OK : STORE_NOT_FOUND;
}

struct add_token_args {
    const char *name, *sha256;
    int64_t created_at, expires_at;
    int32_t max_uses;
    int exists;
};

static int w_add_token(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "add enrollment token";
    struct add_token_args *a = arg;
    sqlite3_stmt *st = w_prepare(s,
        "INSERT INTO enrollment_tokens (name, sha256, created_at, expires_at, max_uses)"
        " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING", what, err, errlen);
    if (!st) return -1;
    bind_str(st, 1, a->name);
    bind_str(st, 2, a->sha256);
    sqlite3_bind_int64(st, 3, a->created_at);
    sqlite3_bind_int64(st, 4, a->expires_at);
    sqlite3_bind_int(st, 5, a->max_uses);
    int rc = w_step_done(s, st, what, err, errlen);
    if (rc == 0) a->exists = sqlite3_changes(s->wdb) == 0;
    sqlite3_finalize(st);
    return rc;
}

static int sq_add_enroll_token(store *st, const char *name, const char *sha256, int64_t created_at,
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

/* On the writer thread, so that checking and counting are one step for concurrent callers. */
static int w_use_token(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "use enrollment token";
    struct use_token_args *a = arg;
    sqlite3_stmt *st = w_prepare(s,
        "SELECT name, expires_at, max_uses, uses, revoked_at FROM enrollment_tokens WHERE sha256 = ?1",
        what, err, errlen);
    if (!st) return -1;
    bind_str(st, 1, a->sha256);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_fail(s->wdb, what, err, errlen);
        sqlite3_finalize(st);
        return -1;
    }
    if (rc == SQLITE_DONE) {
        a->use = STORE_ENROLL_UNKNOWN;
        sqlite3_finalize(st);
        return 0;
    }
    const unsigned char *nm = sqlite3_column_text(st, 0);
    snprintf(a->name, sizeof a->name, "%s", nm ? (const char *)nm : "");
    int64_t expires = sqlite3_column_int64(st, 1), revoked = sqlite3_column_int64(st, 4);
    int max_uses = sqlite3_column_int(st, 2), uses = sqlite3_column_int(st, 3);
    sqlite3_finalize(st);
    if (revoked) a->use = STORE_ENROLL_REVOKED;
    else if (expires <= a->now) a->use = STORE_ENROLL_EXPIRED;
    else if (uses >= max_uses) a->use = STORE_ENROLL_USED_UP;
    else a->use = STORE_ENROLL_OK;
    if (a->use != STORE_ENROLL_OK) return 0;
    st = w_prepare(s, "UPDATE enrollment_tokens SET uses = uses + 1 WHERE sha256 = ?1", what, err, errlen);
    if (!st) return -1;
    bind_str(st, 1, a->sha256);
    rc = w_step_done(s, st, what, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

static int sq_use_enroll_token(store *st, const char *sha256, int64_t now, store_enroll_use *use, char *name,
                               size_t namelen, char *err, size_t errlen)
{
    struct use_token_args a = {.sha256 = sha256, .now = now, .use = STORE_ENROLL_UNKNOWN};
    int rc = submit(impl(st), w_use_token, &a, err, errlen);
    *use = a.use;
    if (name && namelen) snprintf(name, namelen, "%s", rc == 0 ? a.name : "");
    return rc;
}

static int sq_list_enroll_tokens(store *st, store_enroll_token_list *out, char *err, size_t errlen)
{
    static const char *what = "list enrollment tokens";
    out->items = NULL;
    out->n = 0;
    rd r;
    if (rd_begin(&r, impl(st),
                 "SELECT name, created_at, expires_at, max_uses, uses, revoked_at FROM enrollment_tokens ORDER BY name",
                 what, err, errlen) < 0)
        return -1;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
        if (grow(&r, (void **)&out->items, out->n, &cap, sizeof *out->items) < 0) break;
        store_enroll_token *t = &out->items[out->n++];
        t->name = col_str(&r, 0);
        t->created_at = sqlite3_column_int64(r.st, 1);
        t->expires_at = sqlite3_column_int64(r.st, 2);
        t->max_uses = sqlite3_column_int(r.st, 3);
        t->uses = sqlite3_column_int(r.st, 4);
        t->revoked_at = sqlite3_column_int64(r.st, 5);
    }
    if (r.oom) rc = SQLITE_DONE;
    if (rd_end(&r, rc, what, err, errlen) < 0) {
        store_enroll_token_list_free(out);
        return -1;
    }
    return 0;
}

struct revoke_args {
    const char *name;
    int64_t now;
    int found;
};

static int w_revoke_token(sqlstore *s, void *arg, char *err, size_t errlen)
{
    static const char *what = "revoke enrollment token";
    struct revoke_args *a = arg;
    sqlite3_stmt *st = w_prepare(s, "UPDATE enrollment_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at = 0",
                                 what, err, errlen);
    if (!st) return -1;
    bind_str(st, 1, a->name);
    sqlite3_bind_int64(st, 2, a->now > 0 ? a->now : 1);
    int rc = w_step_done(s, st, what, err, errlen);
    if (rc == 0) a->found = sqlite3_changes(s->wdb) > 0;
    sqlite3_finalize(st);
    return rc;
}

static int sq_revoke_enroll_token(store *st, const char *name, int64_t now, int *found, char *err, size_t errlen)
{
    struct revoke_args a = {name, now, 0};
    int rc = submit(impl(st), w_revoke_token, &a, err, errlen);
    if (found) *found = rc == 0 && a.found;
    return rc;
}

store *store_sqlite_open(const store_config *cfg, char *err, size_t errlen)
{
    return sq_open(cfg, err, errlen);
}

static const store_driver sqlite_driver = {
    .name = "sqlite",
    .close = sq_close,
    .get_stats = sq_get_stats,
    .upsert_node = sq_upsert_node,
    .upsert_placeholder = sq_upsert_placeholder,
    .touch_nodes = sq_touch_nodes,
    .add_node_events = sq_add_node_events,
    .sync_agents = sq_sync_agents,
    .insert_metrics = sq_insert_metrics,
    .insert_metrics_async = sq_insert_metrics_async,
    .upsert_node_async = sq_upsert_node_async,
    .sync_agents_async = sq_sync_agents_async,
    .delete_metrics_before = sq_delete_metrics_before,
    .delete_node = sq_delete_node,
    .list_nodes = sq_list_nodes,
    .get_node = sq_get_node,
    .list_agents = sq_list_agents,
    .list_node_events = sq_list_node_events,
    .query_metrics = sq_query_metrics,
    .metric_stats = sq_metric_stats,
    .add_updates = sq_add_updates,
    .set_update_result = sq_set_update_result,
    .set_update_result_async = sq_set_update_result_async,
    .compact_updates = sq_compact_updates,
    .list_updates_after = sq_list_updates_after,
    .list_updates = sq_list_updates,
    .add_audit = sq_add_audit,
    .list_audit = sq_list_audit,
    .list_metric_types = sq_list_metric_types,
    .set_node_secret = sq_set_node_secret,
    .get_node_secret = sq_get_node_secret,
    .add_enroll_token = sq_add_enroll_token,
    .use_enroll_token = sq_use_enroll_token,
    .list_enroll_tokens = sq_list_enroll_tokens,
    .revoke_enroll_token = sq_revoke_enroll_token,
};
