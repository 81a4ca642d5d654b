/* The store on real files: schema and migrations, nodes, events, agents, metrics
 * (idempotence, exact values, statistics, retention), deletes, concurrent writers and readers,
 * a full database, and a writer process killed with SIGKILL.
 *
 * The same suite runs on PostgreSQL when OPS_TEST_STORE_DRIVER=postgres and
 * OPS_TEST_STORE_DSN name a server (tests/integration/test_store_pg.sh); each test then starts
 * from an empty schema. SQLite-only tests (the file size limit) skip there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "manager/store.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
    char err[512];
    int pg;          /* running on PostgreSQL */
    const char *dsn; /* what store_open gets: the file's path, or the server's DSN */
} fixture;

/* The one place the store's configuration is chosen. */
static store_config test_cfg(const fixture *f, uint64_t max_size)
{
    return (store_config){.driver = f->pg ? "postgres" : "sqlite", .dsn = f->dsn,
                          .max_size_bytes = max_size};
}

/* Runs SQL on the test's database behind the store's back. */
static void exec_sql(fixture *f, const char *sql)
{
    if (f->pg) {
        PGconn *c = PQconnectdb(f->dsn);
        PGresult *r = PQexec(c, sql);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok) fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        assert_true(ok);
        return;
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_store.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/ops.db", f->dir);
    const char *drv = getenv("OPS_TEST_STORE_DRIVER");
    f->pg = drv && strcmp(drv, "postgres") == 0;
    f->dsn = f->pg ? getenv("OPS_TEST_STORE_DSN") : f->path;
    if (f->pg) {
        if (!f->dsn) { fprintf(stderr, "OPS_TEST_STORE_DSN is not set\n"); return -1; }
        exec_sql(f, "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    }
    store_config cfg = test_cfg(f, 0);
    f->s = store_open(&cfg, f->err, sizeof f->err);
    if (!f->s) { fprintf(stderr, "open: %s\n", f->err); return -1; }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static void reopen(fixture *f, uint64_t max_size)
{
    store_close(f->s);
    store_config cfg = test_cfg(f, max_size);
    f->s = store_open(&cfg, f->err, sizeof f->err);
    if (!f->s) fail_msg("reopen: %s", f->err);
}

static void register_node(fixture *f, const char *id, const char *host, const char *env,
                          int64_t now)
{
    store_kv labels[] = {{"env", env}, {"role", "web"}};
    store_node_in n = {.node_id = id, .hostname = host, .ip = "10.0.0.1", .os = "linux",
                       .arch = "amd64", .labels = labels, .n_labels = 2,
                       .daemon_version = "1.2.0", .agent_version = "1.0.0",
                       .daemon_address = "10.0.0.1:9091"};
    if (store_upsert_node(f->s, &n, now, f->err, sizeof f->err) != 0)
        fail_msg("upsert_node: %s", f->err);
}

/* One report like a daemon sends: 4 types x 10 values, value = base + key index. */
static size_t report(fixture *f, const char *node, int64_t ts, double base, int *rc)
{
    static const char *types[4] = {"cpu", "memory", "disk", "network"};
    static const char *keys[10] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"};
    store_metric_value v[4][10];
    store_metric_in m[4];
    for (int t = 0; t < 4; t++) {
        for (int k = 0; k < 10; k++) v[t][k] = (store_metric_value){keys[k], base + k};
        m[t] = (store_metric_in){types[t], ts, v[t], 10};
    }
    size_t ins = 0;
    *rc = store_insert_metrics(f->s, node, m, 4, &ins, f->err, sizeof f->err);
    return ins;
}

static size_t count_points(fixture *f, const char *node, const char *type)
{
    store_point_list pl;
    if (store_query_metrics(f->s, node, type, 0, INT64_MAX, 0, &pl, f->err, sizeof f->err) != 0)
        fail_msg("query: %s", f->err);
    size_t n = pl.n;
    store_point_list_free(&pl);
    return n;
}

static void schema_created_and_versioned(void **state)
{
    fixture *f = *state;
    register_node(f, "n1", "host-1", "prod", 1000);
    reopen(f, 0);
    store_node n;
    assert_int_equal(store_get_node(f->s, "n1", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.hostname, "host-1");
    store_node_free(&n);
    assert_string_equal(store_driver_name(f->s), f->pg ? "postgres" : "sqlite");

    /* A database written by a newer program is refused with a message saying so. */
    store_close(f->s);
    f->s = NULL;
    if (!f->pg) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 4); /* 2: update_events, 3: audit, 4: node secrets */
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    exec_sql(f, "UPDATE schema_version SET version = 99");
    store_config cfg = test_cfg(f, 0);
    assert_null(store_open(&cfg, f->err, sizeof f->err));
    assert_non_null(strstr(f->err, f->pg ? "database schema version 99 is newer than this program's (3)"
                                         : "database schema version 99 is newer than this program's (4)"));
    if (!f->pg) assert_non_null(strstr(f->err, f->path));

    cfg.driver = "mysql";
    assert_null(store_open(&cfg, f->err, sizeof f->err));
    assert_string_equal(f->err, "unknown database driver 'mysql' (expected sqlite or postgres)");
    cfg = test_cfg(f, 0);
    if (f->pg) {
        /* An unreachable server is a clear error at once. */
        cfg.dsn = "host=127.0.0.1 port=1 dbname=x connect_timeout=2";
        assert_null(store_open(&cfg, f->err, sizeof f->err));
        assert_non_null(strstr(f->err, "cannot connect to PostgreSQL"));
    } else {
        cfg.dsn = "/nonexistent-dir/x/ops.db";
        assert_null(store_open(&cfg, f->err, sizeof f->err));
        assert_non_null(strstr(f->err, "/nonexistent-dir/x/ops.db: cannot open database"));
    }
    /* A version-1 database (SQLite: no audit table; PostgreSQL: no update_events) is migrated
     * and keeps its rows. */
    exec_sql(f, f->pg ? "DROP TABLE update_events; UPDATE schema_version SET version = 1"
                      : "DROP TABLE audit; UPDATE schema_version SET version = 1");
    reopen(f, 0);
    assert_int_equal(store_get_node(f->s, "n1", &n, f->err, sizeof f->err), STORE_OK);
    store_node_free(&n);
    store_audit_in a = {.at = 1, .actor = "x", .method = "DeleteNode", .target = "n1", .result = "OK"};
    assert_int_equal(store_add_audit(f->s, &a, f->err, sizeof f->err), 0);
}

static void register_and_reregister(void **state)
{
    fixture *f = *state;
    register_node(f, "n1", "host-1", "prod", 1000);
    int rc;
    assert_int_equal(report(f, "n1", 1000, 1, &rc), 40);
    assert_int_equal(rc, 0);
    register_node(f, "n1", "host-1b", "staging", 2000);

    store_node n;
    assert_int_equal(store_get_node(f->s, "n1", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.node_id, "n1");
    assert_string_equal(n.hostname, "host-1b");
    assert_string_equal(n.ip, "10.0.0.1");
    assert_string_equal(n.os, "linux");
    assert_string_equal(n.arch, "amd64");
    assert_string_equal(n.daemon_version, "1.2.0");
    assert_string_equal(n.agent_version, "1.0.0");
    assert_string_equal(n.daemon_address, "10.0.0.1:9091");
    assert_int_equal(n.n_labels, 2);
    assert_string_equal(n.labels[0].key, "env");
    assert_string_equal(n.labels[0].value, "staging");
    assert_string_equal(n.labels[1].key, "role");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    assert_int_equal(n.registered_at, 1000); /* the first registration */
    assert_int_equal(n.last_seen, 2000);
    assert_int_equal(n.updated_at, 2000);
    store_node_free(&n);
    /* History survives a re-register. */
    assert_int_equal(count_points(f, "n1", "cpu"), 10);
    store_event_list ev;
    assert_int_equal(store_list_node_events(f->s, "n1", 0, INT64_MAX, &ev, f->err, sizeof f->err), 0);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.items[0].event, "registered");
    assert_int_equal(ev.items[0].at, 1000);
    assert_int_equal(ev.items[1].at, 2000);
    store_event_list_free(&ev);

    assert_int_equal(store_get_node(f->s, "nope", &n, f->err, sizeof f->err), STORE_NOT_FOUND);
    store_node_in empty = {.node_id = ""};
    assert_int_equal(store_upsert_node(f->s, &empty, 1, f->err, sizeof f->err), -1);
    assert_string_equal(f->err, "node_id is empty");
    /* Labels are stored as JSON: quotes and backslashes must survive. */
    store_kv odd[] = {{"a\"b", "c\\d"}};
    store_node_in o = {.node_id = "n2", .labels = odd, .n_labels = 1};
    assert_int_equal(store_upsert_node(f->s, &o, 5, f->err, sizeof f->err), 0);
    assert_int_equal(store_get_node(f->s, "n2", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.labels[0].key, "a\"b");
    assert_string_equal(n.labels[0].value, "c\\d");
    assert_string_equal(n.hostname, "");
    store_node_free(&n);
}

static void placeholder_never_overwrites(void **state)
{
    fixture *f = *state;
    int created = -1;
    assert_int_equal(store_upsert_placeholder(f->s, "ghost", 500, &created, f->err, sizeof f->err), 0);
    assert_int_equal(created, 1);
    store_node n;
    assert_int_equal(store_get_node(f->s, "ghost", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.hostname, "unknown");
    assert_string_equal(n.os, "unknown");
    assert_string_equal(n.daemon_version, "unknown");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    assert_int_equal(n.last_seen, 500);
    store_node_free(&n);

    register_node(f, "real", "host-r", "prod", 600);
    assert_int_equal(store_upsert_placeholder(f->s, "real", 700, &created, f->err, sizeof f->err), 0);
    assert_int_equal(created, 0);
    assert_int_equal(store_get_node(f->s, "real", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.hostname, "host-r");
    assert_int_equal(n.last_seen, 600);
    store_node_free(&n);

    /* A placeholder is replaced by the node's real registration. */
    register_node(f, "ghost", "host-g", "dev", 800);
    assert_int_equal(store_get_node(f->s, "ghost", &n, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(n.hostname, "host-g");
    assert_int_equal(n.registered_at, 500);
    store_node_free(&n);
}

static void list_filters_touch_and_events(void **state)
{
    fixture *f = *state;
    register_node(f, "a", "ha", "prod", 100);
    register_node(f, "b", "hb", "dev", 100);
    register_node(f, "c", "hc", "prod", 100);
    store_touch t[] = {{"b", 150, STORE_NODE_OFFLINE},
                       {"c", 200, STORE_NODE_ONLINE},
                       {"unknown-id", 200, STORE_NODE_ONLINE},
                       {"a", 50, STORE_NODE_ONLINE}}; /* older than what is stored */
    assert_int_equal(store_touch_nodes(f->s, t, 4, f->err, sizeof f->err), 0);

    store_node_list l;
    assert_int_equal(store_list_nodes(f->s, NULL, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.items[0].node_id, "a");
    assert_int_equal(l.items[0].last_seen, 100); /* never backwards */
    assert_string_equal(l.items[1].node_id, "b");
    assert_int_equal(l.items[1].status, STORE_NODE_OFFLINE);
    assert_int_equal(l.items[1].last_seen, 150);
    assert_int_equal(l.items[2].last_seen, 200);
    store_node_list_free(&l);
    assert_null(l.items);

    store_node_filter byst = {.status = STORE_NODE_ONLINE};
    assert_int_equal(store_list_nodes(f->s, &byst, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    store_node_list_free(&l);
    byst.status = STORE_NODE_OFFLINE;
    assert_int_equal(store_list_nodes(f->s, &byst, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].node_id, "b");
    store_node_list_free(&l);
    store_node_filter bylabel = {.status = STORE_NODE_ANY, .label_key = "env", .label_value = "prod"};
    assert_int_equal(store_list_nodes(f->s, &bylabel, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].node_id, "a");
    assert_string_equal(l.items[1].node_id, "c");
    store_node_list_free(&l);
    bylabel.status = STORE_NODE_ONLINE;
    bylabel.label_value = "dev";
    assert_int_equal(store_list_nodes(f->s, &bylabel, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 0);
    store_node_list_free(&l);

    store_event_in ev[] = {{"b", "offline", 150}, {"b", "online", 300}};
    assert_int_equal(store_add_node_events(f->s, ev, 2, f->err, sizeof f->err), 0);
    store_event_list el;
    assert_int_equal(store_list_node_events(f->s, "b", 120, 400, &el, f->err, sizeof f->err), 0);
    assert_int_equal(el.n, 2);
    assert_string_equal(el.items[0].event, "offline");
    assert_int_equal(el.items[0].at, 150);
    assert_string_equal(el.items[1].event, "online");
    assert_string_equal(el.items[1].node_id, "b");
    store_event_list_free(&el);
}

static void agents_sync(void **state)
{
    fixture *f = *state;
    register_node(f, "n1", "h", "prod", 100);
    store_agent_in a[] = {{"fb", "filebeat", "8.1", "running", 42, 99},
                          {"ne", "node_exporter", "1.6", "stopped", 0, 98}};
    assert_int_equal(store_sync_agents(f->s, "n1", a, 2, 100, f->err, sizeof f->err), 0);
    store_agent_list l;
    assert_int_equal(store_list_agents(f->s, "n1", 0, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].agent_id, "fb");
    assert_string_equal(l.items[0].type, "filebeat");
    assert_string_equal(l.items[0].version, "8.1");
    assert_string_equal(l.items[0].status, "running");
    assert_int_equal(l.items[0].pid, 42);
    assert_int_equal(l.items[0].last_heartbeat, 99);
    assert_int_equal(l.items[0].updated_at, 100);
    assert_int_equal(l.items[0].removed, 0);
    store_agent_list_free(&l);

    /* ne disappears from the daemon's list: removed, still visible with include_removed. */
    store_agent_in b[] = {{"fb", "filebeat", "8.2", "running", 43, 120}};
    assert_int_equal(store_sync_agents(f->s, "n1", b, 1, 130, f->err, sizeof f->err), 0);
    assert_int_equal(store_list_agents(f->s, "n1", 0, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].version, "8.2");
    store_agent_list_free(&l);
    assert_int_equal(store_list_agents(f->s, "n1", 1, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[1].agent_id, "ne");
    assert_string_equal(l.items[1].status, "removed");
    assert_int_equal(l.items[1].removed, 1);
    store_agent_list_free(&l);

    /* It comes back; and an empty list removes everything. */
    assert_int_equal(store_sync_agents(f->s, "n1", a, 2, 140, f->err, sizeof f->err), 0);
    assert_int_equal(store_list_agents(f->s, "n1", 0, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[1].status, "stopped");
    store_agent_list_free(&l);
    assert_int_equal(store_sync_agents(f->s, "n1", NULL, 0, 150, f->err, sizeof f->err), 0);
    assert_int_equal(store_list_agents(f->s, "n1", 0, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 0);
    store_agent_list_free(&l);
    /* Another node's agents are its own. */
    assert_int_equal(store_sync_agents(f->s, "n2", a, 1, 150, f->err, sizeof f->err), 0);
    assert_int_equal(store_list_agents(f->s, "n1", 1, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    store_agent_list_free(&l);

    store_agent_in bad[] = {{"", "t", "v", "running", 1, 1}};
    assert_int_equal(store_sync_agents(f->s, "n1", bad, 1, 150, f->err, sizeof f->err), -1);
    assert_string_equal(f->err, "sync agents: agent_id is empty (state 0)");
}

/* What an asynchronous write's callback saw; the test waits for it. */
typedef struct async_seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls, rc, had_before;
    char err[512];
    char before[256]; /* "id:status:pid " for each agent before the sync */
} async_seen;

static void seen_reset(async_seen *a)
{
    pthread_mutex_lock(&a->mu);
    a->calls = 0;
    a->rc = 99;
    a->had_before = 0;
    a->err[0] = a->before[0] = 0;
    pthread_mutex_unlock(&a->mu);
}

static void seen_wait(async_seen *a)
{
    pthread_mutex_lock(&a->mu);
    while (!a->calls) pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static void on_node_done(void *user, int rc, const char *err, size_t unused)
{
    (void)unused;
    async_seen *a = user;
    pthread_mutex_lock(&a->mu);
    a->calls++;
    a->rc = rc;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void on_sync_done(void *user, int rc, const char *err, const store_agent_list *before)
{
    async_seen *a = user;
    pthread_mutex_lock(&a->mu);
    a->calls++;
    a->rc = rc;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
    a->had_before = before != NULL;
    for (size_t i = 0; before && i < before->n; i++) {
        size_t l = strlen(a->before);
        snprintf(a->before + l, sizeof a->before - l, "%s:%s:%d ", before->items[i].agent_id, before->items[i].status,
                 (int)before->items[i].pid);
    }
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* RegisterNode's and SyncAgentStates' writes without a waiting thread: the callback runs once,
 * after the commit; the caller's strings may be gone as soon as the call returns; a sync says
 * what the node had before it. On PostgreSQL the same calls block and then call back. */
static void async_register_and_sync(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_async_writes(f->s), f->pg ? 0 : 1);
    async_seen a = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    char id[16] = "n1", host[16] = "host-a";
    store_kv labels[] = {{"env", "prod"}};
    store_node_in n = {.node_id = id, .hostname = host, .ip = "10.0.0.9", .os = "linux", .arch = "arm64",
                       .labels = labels, .n_labels = 1, .daemon_version = "2.0", .agent_version = "1.0",
                       .daemon_address = "10.0.0.9:9091"};
    seen_reset(&a);
    store_upsert_node_async(f->s, &n, 200, on_node_done, &a);
    memset(host, 'x', sizeof host - 1); /* the store must have copied it */
    seen_wait(&a);
    assert_int_equal(a.rc, 0);
    store_node got;
    assert_int_equal(store_get_node(f->s, "n1", &got, f->err, sizeof f->err), 0);
    assert_string_equal(got.hostname, "host-a");
    assert_string_equal(got.arch, "arm64");
    assert_string_equal(got.daemon_address, "10.0.0.9:9091");
    assert_int_equal(got.last_seen, 200);
    store_node_free(&got);

    char aid[16] = "fb";
    store_agent_in ag[] = {{aid, "filebeat", "8.1", "running", 42, 199}, {"ne", "node_exporter", "1.6", "stopped", 0, 198}};
    seen_reset(&a);
    store_sync_agents_async(f->s, id, ag, 2, 200, 1, on_sync_done, &a);
    strcpy(aid, "zz");
    strcpy(id, "n9");
    seen_wait(&a);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.had_before, 1);
    assert_string_equal(a.before, ""); /* a new node had none */
    store_agent_list l;
    assert_int_equal(store_list_agents(f->s, "n1", 0, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].agent_id, "fb");
    store_agent_list_free(&l);

    /* fb restarted (new pid), ne gone: before is the state the sync replaced. */
    store_agent_in b[] = {{"fb", "filebeat", "8.1", "running", 77, 210}};
    seen_reset(&a);
    store_sync_agents_async(f->s, "n1", b, 1, 210, 1, on_sync_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.before, "fb:running:42 ne:stopped:0 ");
    /* The removed agent is not "before" any more; without want_before there is no list. */
    seen_reset(&a);
    store_sync_agents_async(f->s, "n1", b, 1, 220, 1, on_sync_done, &a);
    seen_wait(&a);
    assert_string_equal(a.before, "fb:running:77 ");
    seen_reset(&a);
    store_sync_agents_async(f->s, "n1", b, 1, 230, 0, on_sync_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.had_before, 0);

    /* Refusals call back once, with the reason, and store nothing. */
    store_agent_in bad[] = {{"", "t", "v", "running", 1, 1}};
    seen_reset(&a);
    store_sync_agents_async(f->s, "n1", bad, 1, 240, 1, on_sync_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, -1);
    assert_int_equal(a.had_before, 0);
    assert_string_equal(a.err, "sync agents: agent_id is empty (state 0)");
    seen_reset(&a);
    store_sync_agents_async(f->s, "", b, 1, 240, 1, on_sync_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, -1);
    assert_string_equal(a.err, "node_id is empty");
    n.node_id = "";
    seen_reset(&a);
    store_upsert_node_async(f->s, &n, 240, on_node_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, -1);
    assert_string_equal(a.err, "node_id is empty");
    store_kv bad_label[] = {{"env", "\xff\xfe"}};
    n = (store_node_in){.node_id = "n2", .labels = bad_label, .n_labels = 1};
    seen_reset(&a);
    store_upsert_node_async(f->s, &n, 240, on_node_done, &a);
    seen_wait(&a);
    assert_int_equal(a.rc, -1);
    assert_string_equal(a.err, "register node: label 'env' is not valid UTF-8");
    assert_int_equal(store_get_node(f->s, "n2", &got, f->err, sizeof f->err), STORE_NOT_FOUND);
    usleep(50 * 1000);
    assert_int_equal(a.calls, 1);
}

static void metrics_idempotent_exact_and_stats(void **state)
{
    fixture *f = *state;
    int rc;
    assert_int_equal(report(f, "n1", 1000, 10, &rc), 40);
    assert_int_equal(rc, 0);
    /* The retried report: nothing new. */
    assert_int_equal(report(f, "n1", 1000, 10, &rc), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(report(f, "n1", 1060, 20, &rc), 40);
    assert_int_equal(report(f, "n1", 1120, 5, &rc), 40);
    assert_int_equal(report(f, "n2", 1000, 99, &rc), 40);
    assert_int_equal(count_points(f, "n1", "cpu"), 30);
    assert_int_equal(count_points(f, "n1", "disk"), 30);
    assert_int_equal(count_points(f, "n1", "gpu"), 0);

    store_point_list pl;
    assert_int_equal(store_query_metrics(f->s, "n1", "memory", 1060, 1120, 0, &pl, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(pl.n, 20);
    assert_int_equal(pl.items[0].ts, 1060);
    assert_string_equal(pl.items[0].key, "k0");
    assert_true(pl.items[0].value == 20.0);
    assert_string_equal(pl.items[9].key, "k9");
    assert_true(pl.items[9].value == 29.0);
    assert_int_equal(pl.items[10].ts, 1120);
    store_point_list_free(&pl);
    assert_int_equal(store_query_metrics(f->s, "n1", "memory", 0, INT64_MAX, 5, &pl, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(pl.n, 5);
    assert_int_equal(pl.items[4].ts, 1000);
    store_point_list_free(&pl);

    /* Values come back bit for bit; non-finite ones are skipped. */
    double exact[] = {0.1, 1.0 / 3.0, 1e-300, -2.5e300, 123456789.123456789, -0.0};
    store_metric_value v[] = {{"a", exact[0]}, {"b", exact[1]}, {"c", exact[2]},
                              {"d", exact[3]}, {"e", exact[4]}, {"f", exact[5]},
                              {"nan", NAN}, {"inf", INFINITY}, {"q\"uo\\te\n", 7}};
    store_metric_in m = {"precise", 5000, v, 9};
    size_t ins;
    assert_int_equal(store_insert_metrics(f->s, "n1", &m, 1, &ins, f->err, sizeof f->err), 0);
    assert_int_equal(ins, 7);
    assert_int_equal(store_query_metrics(f->s, "n1", "precise", 0, INT64_MAX, 0, &pl, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(pl.n, 7);
    for (int i = 0; i < 6; i++) {
        char key[2] = {(char)('a' + i), 0};
        assert_string_equal(pl.items[i].key, key);
        assert_memory_equal(&pl.items[i].value, &exact[i], sizeof(double));
    }
    assert_string_equal(pl.items[6].key, "q\"uo\\te\n");
    store_point_list_free(&pl);

    store_stat_list sl;
    assert_int_equal(store_metric_stats(f->s, "n1", "cpu", 1000, 1120, &sl, f->err,
                                        sizeof f->err), 0);
    assert_int_equal(sl.n, 10);
    assert_string_equal(sl.items[3].key, "k3");
    assert_true(sl.items[3].min == 8.0);            /* 13, 23, 8 */
    assert_true(sl.items[3].max == 23.0);
    assert_true(fabs(sl.items[3].avg - 44.0 / 3.0) < 1e-9);
    assert_true(sl.items[3].latest == 8.0);
    assert_int_equal(sl.items[3].latest_ts, 1120);
    assert_int_equal(sl.items[3].count, 3);
    store_stat_list_free(&sl);
    assert_int_equal(store_metric_stats(f->s, "n1", "cpu", 1000, 1060, &sl, f->err,
                                        sizeof f->err), 0);
    assert_true(sl.items[0].latest == 20.0);
    assert_int_equal(sl.items[0].count, 2);
    store_stat_list_free(&sl);
    assert_int_equal(store_metric_stats(f->s, "n9", "cpu", 0, INT64_MAX, &sl, f->err,
                                        sizeof f->err), 0);
    assert_int_equal(sl.n, 0);
    store_stat_list_free(&sl);
}

static void retention_in_batches(void **state)
{
    fixture *f = *state;
    int rc;
    for (int i = 0; i < 50; i++) {
        report(f, "n1", 1000 + i, i, &rc);
        assert_int_equal(rc, 0);
        report(f, "n2", 1000 + i, i, &rc);
        assert_int_equal(rc, 0);
    }
    uint64_t deleted = 0;
    /* ts < 1030: 30 timestamps x 4 types x 2 nodes = 240 rows, 7 per transaction; a batch of
     * 3 is smaller than the 4 rows sharing a timestamp, which must still make progress. */
    assert_int_equal(store_delete_metrics_before(f->s, 1030, 7, &deleted, f->err, sizeof f->err), 0);
    assert_int_equal(deleted, 240);
    assert_int_equal(count_points(f, "n1", "cpu"), 200);
    assert_int_equal(count_points(f, "n2", "network"), 200);
    store_point_list pl;
    assert_int_equal(store_query_metrics(f->s, "n1", "cpu", 0, INT64_MAX, 1, &pl, f->err,
                                         sizeof f->err), 0);
    assert_int_equal(pl.items[0].ts, 1030);
    store_point_list_free(&pl);
    assert_int_equal(store_delete_metrics_before(f->s, 1040, 3, &deleted, f->err, sizeof f->err), 0);
    assert_int_equal(deleted, 80);
    assert_int_equal(store_delete_metrics_before(f->s, 1040, 0, &deleted, f->err, sizeof f->err), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(count_points(f, "n1", "cpu"), 100);
}

/* A retention pass over many nodes' series looks at a bounded number per transaction, so the
 * writes queued meanwhile wait for one small transaction; old points in the last series are
 * still found. */
static void retention_bounded_per_transaction(void **state)
{
    fixture *f = *state;
    enum { N = 600 };
    int rc;
    char node[32];
    for (int i = 0; i < N; i++) {
        snprintf(node, sizeof node, "r%04d", i);
        report(f, node, 2000, i, &rc);
        assert_int_equal(rc, 0);
    }
    report(f, "r0599", 1000, 1, &rc); /* the only old points: 4 rows, in the last series */
    assert_int_equal(rc, 0);
    store_stats before, after;
    int have_stats = store_get_stats(f->s, &before) == 0;
    assert_int_equal(have_stats, !f->pg);
    uint64_t deleted = 0;
    assert_int_equal(store_delete_metrics_before(f->s, 1500, 0, &deleted, f->err, sizeof f->err), 0);
    assert_int_equal(deleted, 4);
    assert_int_equal(count_points(f, "r0599", "cpu"), 10); /* the ts 2000 report's 10 values */
    assert_int_equal(count_points(f, "r0000", "cpu"), 10);
    if (have_stats) {
        assert_int_equal(store_get_stats(f->s, &after), 0);
        /* 600 series, at most STORE_RETENTION_SERIES per transaction: more than one */
        assert_true(STORE_RETENTION_SERIES < N);
        assert_true(after.commits - before.commits >= (N + STORE_RETENTION_SERIES - 1) / STORE_RETENTION_SERIES);
    }
}

static void delete_node_everything(void **state)
{
    fixture *f = *state;
    register_node(f, "n1", "h1", "prod", 100);
    register_node(f, "n2", "h2", "prod", 100);
    store_agent_in a[] = {{"fb", "filebeat", "8.1", "running", 42, 99}};
    assert_int_equal(store_sync_agents(f->s, "n1", a, 1, 100, f->err, sizeof f->err), 0);
    assert_int_equal(store_sync_agents(f->s, "n2", a, 1, 100, f->err, sizeof f->err), 0);
    int rc, found = -1;
    report(f, "n1", 100, 1, &rc);
    report(f, "n2", 100, 1, &rc);
    assert_int_equal(store_delete_node(f->s, "n1", &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 1);
    store_node n;
    assert_int_equal(store_get_node(f->s, "n1", &n, f->err, sizeof f->err), STORE_NOT_FOUND);
    assert_int_equal(count_points(f, "n1", "cpu"), 0);
    store_agent_list al;
    assert_int_equal(store_list_agents(f->s, "n1", 1, &al, f->err, sizeof f->err), 0);
    assert_int_equal(al.n, 0);
    store_agent_list_free(&al);
    store_event_list el;
    assert_int_equal(store_list_node_events(f->s, "n1", 0, INT64_MAX, &el, f->err, sizeof f->err), 0);
    assert_int_equal(el.n, 0);
    store_event_list_free(&el);
    /* The other node is untouched, and n1 can come back with fresh metrics. */
    assert_int_equal(count_points(f, "n2", "cpu"), 10);
    assert_int_equal(store_delete_node(f->s, "n1", &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 0);
    assert_int_equal(report(f, "n1", 100, 1, &rc), 40);
    assert_int_equal(count_points(f, "n1", "cpu"), 10);
}

/* ---- concurrency -------------------------------------------------------------------------- */

typedef struct worker {
    fixture *f;
    int idx;
    int reports;
    int failures;
    size_t acked;
} worker;

static void *writer_thread(void *arg)
{
    worker *w = arg;
    char node[32];
    snprintf(node, sizeof node, "node-%d", w->idx);
    static const char *keys[10] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"};
    for (int r = 0; r < w->reports; r++) {
        store_metric_value v[10];
        for (int k = 0; k < 10; k++) v[k] = (store_metric_value){keys[k], r};
        store_metric_in m[2] = {{"cpu", 1000 + r, v, 10}, {"memory", 1000 + r, v, 10}};
        char err[256];
        size_t ins;
        if (store_insert_metrics(w->f->s, node, m, 2, &ins, err, sizeof err) != 0) w->failures++;
        else w->acked += ins;
    }
    return NULL;
}

static void *reader_thread(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < w->reports; i++) {
        store_point_list pl;
        char err[256];
        if (store_query_metrics(w->f->s, "node-0", "cpu", 0, INT64_MAX, 100, &pl, err,
                                sizeof err) != 0)
            w->failures++;
        else
            store_point_list_free(&pl);
        store_node_list nl;
        if (store_list_nodes(w->f->s, NULL, &nl, err, sizeof err) != 0) w->failures++;
        else store_node_list_free(&nl);
    }
    return NULL;
}

static void concurrent_writers_and_readers(void **state)
{
    fixture *f = *state;
    enum { W = 16, R = 4 };
    worker ws[W + R];
    pthread_t th[W + R];
    for (int i = 0; i < W + R; i++) {
        ws[i] = (worker){.f = f, .idx = i, .reports = 200};
        pthread_create(&th[i], NULL, i < W ? writer_thread : reader_thread, &ws[i]);
    }
    for (int i = 0; i < W + R; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < W + R; i++) assert_int_equal(ws[i].failures, 0);
    for (int i = 0; i < W; i++) {
        assert_int_equal(ws[i].acked, 200 * 20);
        char node[32];
        snprintf(node, sizeof node, "node-%d", i);
        assert_int_equal(count_points(f, node, "cpu"), 2000);
        assert_int_equal(count_points(f, node, "memory"), 2000);
    }
}

static void disk_full_reported_and_recovered(void **state)
{
    fixture *f = *state;
    if (f->pg) skip(); /* a size limit is SQLite's */
    reopen(f, 256 * 1024);
    int rc = 0;
    size_t acked = 0;
    int r;
    for (r = 0; r < 100000; r++) {
        size_t ins = report(f, "n1", 1000 + r, r, &rc);
        if (rc != 0) break;
        acked += ins;
    }
    assert_int_equal(rc, -1);
    assert_true(acked > 0);
    assert_string_equal(f->err, "store metrics: database or disk is full");
    /* Nothing acknowledged is lost; reads and other writes go on. */
    assert_int_equal(count_points(f, "n1", "cpu") * 4, acked);
    store_node_list l;
    assert_int_equal(store_list_nodes(f->s, NULL, &l, f->err, sizeof f->err), 0);
    store_node_list_free(&l);
    /* Freeing space (retention) makes room again without a restart. */
    uint64_t deleted;
    assert_int_equal(store_delete_metrics_before(f->s, 1000 + r / 2, 0, &deleted, f->err,
                                                 sizeof f->err), 0);
    assert_true(deleted > 0);
    size_t ins = report(f, "n1", 1000 + r, r, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(ins, 40);
    /* And after a restart without the limit everything acknowledged is there. */
    size_t before = count_points(f, "n1", "disk");
    reopen(f, 0);
    assert_int_equal(count_points(f, "n1", "disk"), before);
}

static void disk_full_in_a_group_spares_the_others(void **state)
{
    fixture *f = *state;
    if (f->pg) skip();
    reopen(f, 192 * 1024);
    enum { W = 8 };
    worker ws[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        ws[i] = (worker){.f = f, .idx = i, .reports = 300};
        pthread_create(&th[i], NULL, writer_thread, &ws[i]);
    }
    int failures = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        failures += ws[i].failures;
    }
    assert_true(failures > 0);
    /* Every acknowledged value is stored, and nothing that was refused is. */
    for (int i = 0; i < W; i++) {
        char node[32];
        snprintf(node, sizeof node, "node-%d", i);
        assert_int_equal(count_points(f, node, "cpu") + count_points(f, node, "memory"),
                         ws[i].acked);
    }
}

/* A child process writes and reports each acknowledged report on a pipe; we kill it with
 * SIGKILL mid-stream and check that every acknowledged report is in the file. */
static void acknowledged_survives_kill9(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        store_config cfg = test_cfg(f, 0);
        f->s = store_open(&cfg, f->err, sizeof f->err);
        if (!f->s) _exit(3);
        for (int r = 0;; r++) {
            int rc;
            report(f, "n1", 1000 + r, r, &rc);
            if (rc != 0) _exit(4);
            if (write(p[1], &r, sizeof r) != sizeof r) _exit(5);
        }
    }
    close(p[1]);
    int last = -1, r;
    while (last < 300 && read(p[0], &r, sizeof r) == sizeof r) last = r;
    kill(pid, SIGKILL);
    while (read(p[0], &r, sizeof r) == sizeof r) last = r;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    reopen(f, 0);
    assert_true(count_points(f, "n1", "cpu") >= (size_t)(last + 1) * 10);
}

/* ---- AdminService's store functions: audit trail, node paging and label sets, metric types.
 * Public store API only, so that the block runs against every driver. ---------------------- */

static void add_audit(fixture *f, int64_t at, const char *actor, const char *target, const char *result)
{
    store_audit_in a = {.at = at, .actor = actor, .role = "operator", .method = "OperateAgent", .target = target,
                        .result = result, .detail = "restart", .peer = "ipv4:127.0.0.1:1"};
    if (store_add_audit(f->s, &a, f->err, sizeof f->err) != 0) fail_msg("add_audit: %s", f->err);
}

static void audit_trail_filters(void **state)
{
    fixture *f = *state;
    add_audit(f, 100, "otto", "node-1/agent-a", "OK");
    add_audit(f, 110, "vera", "node-1/agent-a", "PERMISSION_DENIED");
    add_audit(f, 120, "", "node-10/agent-a", "UNAUTHENTICATED");
    add_audit(f, 130, "ada", "node-1", "OK");
    add_audit(f, 140, "otto", "node-2/x", "NOT_FOUND");

    store_audit_list l;
    assert_int_equal(store_list_audit(f->s, NULL, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.items[0].at, 140); /* newest first */
    assert_int_equal(l.items[4].at, 100);
    assert_true(l.items[0].id > l.items[4].id);
    assert_string_equal(l.items[4].actor, "otto");
    assert_string_equal(l.items[4].role, "operator");
    assert_string_equal(l.items[4].method, "OperateAgent");
    assert_string_equal(l.items[4].target, "node-1/agent-a");
    assert_string_equal(l.items[4].result, "OK");
    assert_string_equal(l.items[4].detail, "restart");
    assert_string_equal(l.items[4].peer, "ipv4:127.0.0.1:1");
    assert_string_equal(l.items[2].actor, "");
    store_audit_list_free(&l);
    assert_int_equal(l.n, 0);

    store_audit_filter by_actor = {.actor = "otto"};
    assert_int_equal(store_list_audit(f->s, &by_actor, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].target, "node-2/x");
    store_audit_list_free(&l);

    /* A node's target matches itself and its agents, never another node sharing the prefix. */
    store_audit_filter by_target = {.target = "node-1"};
    assert_int_equal(store_list_audit(f->s, &by_target, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 3);
    for (size_t i = 0; i < l.n; i++) assert_null(strstr(l.items[i].target, "node-10"));
    store_audit_list_free(&l);

    store_audit_filter since_limit = {.since = 110, .limit = 2};
    assert_int_equal(store_list_audit(f->s, &since_limit, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].at, 140);
    assert_int_equal(l.items[1].at, 130);
    store_audit_list_free(&l);

    store_audit_filter none = {.actor = "nobody"};
    assert_int_equal(store_list_audit(f->s, &none, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 0);
    store_audit_list_free(&l);

    /* Records survive a reopen, and the default limit is 100. */
    for (int i = 0; i < 120; i++) add_audit(f, 200 + i, "bulk", "node-3", "OK");
    reopen(f, 0);
    assert_int_equal(store_list_audit(f->s, NULL, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 100);
    assert_int_equal(l.items[0].at, 319);
    store_audit_list_free(&l);
}

static void upsert_labeled(fixture *f, const char *id, const store_kv *labels, size_t n)
{
    store_node_in in = {.node_id = id, .hostname = id, .labels = labels, .n_labels = n};
    if (store_upsert_node(f->s, &in, 1000, f->err, sizeof f->err) != 0) fail_msg("upsert: %s", f->err);
}

static char *ids(const store_node_list *l)
{
    static char buf[256];
    buf[0] = 0;
    for (size_t i = 0; i < l->n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? "," : "", l->items[i].node_id);
    return buf;
}

static void node_filter_labels_and_paging(void **state)
{
    fixture *f = *state;
    store_kv a[] = {{"env", "prod"}, {"team", "ops"}};
    store_kv b[] = {{"env", "prod"}, {"team", "web"}};
    store_kv c[] = {{"env", "dev"}, {"team", "ops"}};
    upsert_labeled(f, "n3", a, 2);
    upsert_labeled(f, "n1", b, 2);
    upsert_labeled(f, "n2", c, 2);
    upsert_labeled(f, "n4", a, 1);
    store_touch off = {"n4", 1000, STORE_NODE_OFFLINE};
    assert_int_equal(store_touch_nodes(f->s, &off, 1, f->err, sizeof f->err), 0);

    store_node_list l;
    store_kv want[] = {{"env", "prod"}, {"team", "ops"}};
    store_node_filter both = {.status = STORE_NODE_ANY, .labels = want, .n_labels = 2};
    assert_int_equal(store_list_nodes(f->s, &both, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n3");
    store_node_list_free(&l);

    store_node_filter prod = {.status = STORE_NODE_ANY, .labels = want, .n_labels = 1};
    assert_int_equal(store_list_nodes(f->s, &prod, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n1,n3,n4");
    store_node_list_free(&l);

    prod.status = STORE_NODE_ONLINE;
    assert_int_equal(store_list_nodes(f->s, &prod, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n1,n3");
    store_node_list_free(&l);

    /* A publish's targets: the same nodes, only their ids read. */
    prod.ids_only = 1;
    assert_int_equal(store_list_nodes(f->s, &prod, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n1,n3");
    assert_null(l.items[0].hostname);
    assert_int_equal(l.items[1].n_labels, 0);
    store_node_list_free(&l);
    prod.ids_only = 0;

    /* The older single-label condition and the set combine. */
    store_kv ops[] = {{"team", "ops"}};
    store_node_filter mixed = {.status = STORE_NODE_ANY, .label_key = "env", .label_value = "dev", .labels = ops, .n_labels = 1};
    assert_int_equal(store_list_nodes(f->s, &mixed, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n2");
    store_node_list_free(&l);

    store_kv nomatch[] = {{"env", "prod"}, {"team", "none"}};
    store_node_filter empty = {.status = STORE_NODE_ANY, .labels = nomatch, .n_labels = 2};
    assert_int_equal(store_list_nodes(f->s, &empty, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 0);
    store_node_list_free(&l);

    /* Paging: after + limit walk the ids in order, each exactly once. */
    char seen[64] = "";
    store_node_filter page = {.status = STORE_NODE_ANY, .limit = 3};
    char after[32] = "";
    for (int round = 0; round < 5; round++) {
        page.after = after;
        assert_int_equal(store_list_nodes(f->s, &page, &l, f->err, sizeof f->err), 0);
        assert_true(l.n <= 3);
        if (!l.n) { store_node_list_free(&l); break; }
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s%s", seen[0] ? "," : "", ids(&l));
        snprintf(after, sizeof after, "%s", l.items[l.n - 1].node_id);
        store_node_list_free(&l);
    }
    assert_string_equal(seen, "n1,n2,n3,n4");
    store_node_filter tail = {.status = STORE_NODE_ANY, .after = "n2", .limit = 1};
    assert_int_equal(store_list_nodes(f->s, &tail, &l, f->err, sizeof f->err), 0);
    assert_string_equal(ids(&l), "n3");
    store_node_list_free(&l);
}

static void metric_types_in_range(void **state)
{
    fixture *f = *state;
    register_node(f, "n1", "host-1", "prod", 1000);
    register_node(f, "n2", "host-2", "prod", 1000);
    store_metric_value v[] = {{"usage", 1.5}};
    store_metric_in m[] = {{"cpu", 1000, v, 1}, {"memory", 1000, v, 1}, {"gpu", 2000, v, 1}};
    assert_int_equal(store_insert_metrics(f->s, "n1", m, 3, NULL, f->err, sizeof f->err), 0);
    assert_int_equal(store_insert_metrics(f->s, "n2", m, 1, NULL, f->err, sizeof f->err), 0);

    store_string_list t;
    assert_int_equal(store_list_metric_types(f->s, "n1", 0, 5000, &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.n, 3);
    assert_string_equal(t.items[0], "cpu"); /* sorted */
    assert_string_equal(t.items[1], "gpu");
    assert_string_equal(t.items[2], "memory");
    store_string_list_free(&t);
    assert_int_equal(t.n, 0);

    assert_int_equal(store_list_metric_types(f->s, "n1", 1500, 2000, &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.items[0], "gpu");
    store_string_list_free(&t);

    assert_int_equal(store_list_metric_types(f->s, "n2", 0, 5000, &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.n, 1);
    store_string_list_free(&t);

    assert_int_equal(store_list_metric_types(f->s, "nobody", 0, 5000, &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.n, 0);
    store_string_list_free(&t);

    /* Deleting a node takes its types with it. */
    assert_int_equal(store_delete_node(f->s, "n1", NULL, f->err, sizeof f->err), 0);
    assert_int_equal(store_list_metric_types(f->s, "n1", 0, 5000, &t, f->err, sizeof f->err), 0);
    assert_int_equal(t.n, 0);
    store_string_list_free(&t);
}

/* Audit records, node paging with several label conditions, metric types. */
static void audit_paging_and_types(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        register_node(f, id, "h", i % 2 ? "dev" : "prod", 1000 + i);
    }
    store_kv more[] = {{"role", "web"}};
    store_node_filter fl = {.status = STORE_NODE_ANY, .label_key = "env", .label_value = "prod",
                            .labels = more, .n_labels = 1, .limit = 2};
    store_node_list l;
    assert_int_equal(store_list_nodes(f->s, &fl, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].node_id, "n0");
    assert_string_equal(l.items[1].node_id, "n2");
    store_node_list_free(&l);
    fl.after = "n2";
    assert_int_equal(store_list_nodes(f->s, &fl, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].node_id, "n4");
    store_node_list_free(&l);
    store_kv clash[] = {{"env", "dev"}};
    fl = (store_node_filter){.status = STORE_NODE_ANY, .label_key = "env", .label_value = "prod",
                             .labels = clash, .n_labels = 1};
    assert_int_equal(store_list_nodes(f->s, &fl, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 0);

    store_audit_in a1 = {100, "alice", "admin", "DeleteNode", "node/n1", "ok", "", "ipv4:1"};
    store_audit_in a2 = {200, "bob", "operator", "StopAgent", "node/n1/agent/a", "ok", "", "ipv4:2"};
    store_audit_in a3 = {300, "alice", "admin", "StopAgent", "node/n10", "denied", "x", "ipv4:1"};
    assert_int_equal(store_add_audit(f->s, &a1, f->err, sizeof f->err), 0);
    assert_int_equal(store_add_audit(f->s, &a2, f->err, sizeof f->err), 0);
    assert_int_equal(store_add_audit(f->s, &a3, f->err, sizeof f->err), 0);
    store_audit_list al;
    store_audit_filter af = {.target = "node/n1"};
    assert_int_equal(store_list_audit(f->s, &af, &al, f->err, sizeof f->err), 0);
    assert_int_equal(al.n, 2);
    assert_int_equal(al.items[0].at, 200); /* newest first; node/n10 is not under node/n1 */
    assert_string_equal(al.items[1].actor, "alice");
    store_audit_list_free(&al);
    af = (store_audit_filter){.actor = "alice", .since = 150};
    assert_int_equal(store_list_audit(f->s, &af, &al, f->err, sizeof f->err), 0);
    assert_int_equal(al.n, 1);
    assert_string_equal(al.items[0].result, "denied");
    store_audit_list_free(&al);

    int rc;
    report(f, "n1", 1000, 1, &rc);
    assert_int_equal(rc, 0);
    store_string_list tl;
    assert_int_equal(store_list_metric_types(f->s, "n1", 0, 2000, &tl, f->err, sizeof f->err), 0);
    assert_int_equal(tl.n, 4);
    assert_string_equal(tl.items[0], "cpu");
    assert_string_equal(tl.items[3], "network");
    store_string_list_free(&tl);
    assert_int_equal(store_list_metric_types(f->s, "n1", 1001, 2000, &tl, f->err, sizeof f->err), 0);
    assert_int_equal(tl.n, 0);
}

/* PostgreSQL restarted (the command in OPS_TEST_PG_RESTART) while threads ingest: calls during
 * the outage fail quickly, ingestion resumes, and every acknowledged point is stored. */
typedef struct ingester {
    fixture *f;
    int idx;
    volatile int *stop;
    int acked, attempts, unavailable, other;
    double slowest_s;
} ingester;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *ingest_thread(void *arg)
{
    ingester *w = arg;
    char node[32];
    snprintf(node, sizeof node, "ing-%d", w->idx);
    for (int r = 0; !*w->stop; r++) {
        int rc;
        double t0 = mono_s();
        w->attempts++;
        report(w->f, node, 1000 + r, r, &rc);
        double d = mono_s() - t0;
        if (d > w->slowest_s) w->slowest_s = d;
        if (rc == 0) w->acked++;
        else if (rc == STORE_UNAVAILABLE) { w->unavailable++; usleep(20000); }
        else w->other++;
    }
    return NULL;
}

static void pg_restart_under_load(void **state)
{
    fixture *f = *state;
    const char *restart = getenv("OPS_TEST_PG_RESTART");
    if (!f->pg || !restart) skip();
    enum { W = 6 };
    volatile int stop = 0;
    ingester ws[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        ws[i] = (ingester){.f = f, .idx = i, .stop = &stop};
        pthread_create(&th[i], NULL, ingest_thread, &ws[i]);
    }
    usleep(500000);
    assert_int_equal(system(restart), 0);
    /* Ingestion resumes: every thread gets more acknowledged after the restart. */
    int before[W];
    for (int i = 0; i < W; i++) before[i] = ws[i].acked;
    double end = mono_s() + 20;
    int resumed = 0;
    while (!resumed && mono_s() < end) {
        usleep(100000);
        resumed = 1;
        for (int i = 0; i < W; i++) if (ws[i].acked < before[i] + 5) resumed = 0;
    }
    stop = 1;
    int unavailable = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        unavailable += ws[i].unavailable;
    }
    assert_true(resumed);
    assert_true(unavailable > 0); /* the outage was seen, as UNAVAILABLE */
    for (int i = 0; i < W; i++) {
        char node[32];
        snprintf(node, sizeof node, "ing-%d", i);
        assert_int_equal(ws[i].other, 0);
        assert_true(ws[i].slowest_s < 10); /* failed fast, never hung */
        size_t n = count_points(f, node, "cpu");
        /* Every acknowledged report is there; at most the unanswered ones besides. */
        assert_true(n >= (size_t)ws[i].acked * 10);
        assert_true(n <= (size_t)ws[i].attempts * 10);
        fprintf(stderr, "ingester %d: %d acknowledged, %d unavailable, %zu cpu points, slowest %.2fs\n",
                i, ws[i].acked, ws[i].unavailable, n, ws[i].slowest_s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(schema_created_and_versioned, setup, teardown),
        cmocka_unit_test_setup_teardown(register_and_reregister, setup, teardown),
        cmocka_unit_test_setup_teardown(placeholder_never_overwrites, setup, teardown),
        cmocka_unit_test_setup_teardown(list_filters_touch_and_events, setup, teardown),
        cmocka_unit_test_setup_teardown(agents_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(async_register_and_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_idempotent_exact_and_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_in_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_bounded_per_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_node_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_writers_and_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_full_reported_and_recovered, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_full_in_a_group_spares_the_others, setup, teardown),
        cmocka_unit_test_setup_teardown(acknowledged_survives_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_trail_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(node_filter_labels_and_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(metric_types_in_range, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_paging_and_types, setup, teardown),
        cmocka_unit_test_setup_teardown(pg_restart_under_load, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
