/* store: node secrets and enrollment tokens -- use counting (also under concurrent enrollments),
 * expiry, revocation, duplicate names, and a deleted node losing its secret; the migration adds
 * the tables to an existing database.
 *
 * On SQLite by default; on PostgreSQL when OPS_TEST_STORE_DRIVER=postgres and
 * OPS_TEST_STORE_DSN name a server (tests/integration/test_store_pg.sh), each test from an empty
 * schema; there the concurrent enrollments also come through a second store handle, as from a
 * second manager on the same database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "manager/store.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define H3 "3333333333333333333333333333333333333333333333333333333333333333"

typedef struct fixture {
    char dir[64], path[128], err[512];
    store *s;
    int pg;          /* running on PostgreSQL */
    const char *dsn; /* the file's path, or the server's DSN */
} fixture;

static store_config test_cfg(const fixture *f)
{
    return (store_config){.driver = f->pg ? "postgres" : "sqlite", .dsn = f->dsn};
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_secrets.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/ops.db", f->dir);
    const char *drv = getenv("OPS_TEST_STORE_DRIVER");
    f->pg = drv && strcmp(drv, "postgres") == 0;
    f->dsn = f->pg ? getenv("OPS_TEST_STORE_DSN") : f->path;
    if (f->pg) {
        if (!f->dsn) { fprintf(stderr, "OPS_TEST_STORE_DSN is not set\n"); return -1; }
        PGconn *c = PQconnectdb(f->dsn);
        PGresult *r = PQexec(c, "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) fprintf(stderr, "reset schema: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        if (!ok) return -1;
    }
    store_config cfg = test_cfg(f);
    if (!(f->s = store_open(&cfg, f->err, sizeof f->err))) { fprintf(stderr, "open: %s\n", f->err); return -1; }
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

static void secrets_set_get_replace_delete(void **state)
{
    fixture *f = *state;
    char h[65];
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_NOT_FOUND);
    store_node_in n = {.node_id = "n1", .hostname = "h"};
    assert_int_equal(store_upsert_node(f->s, &n, 100, f->err, sizeof f->err), 0);
    assert_int_equal(store_set_node_secret(f->s, "n1", H1, 100, f->err, sizeof f->err), 0);
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(h, H1);
    assert_int_equal(store_set_node_secret(f->s, "n1", H2, 101, f->err, sizeof f->err), 0);
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(h, H2);
    /* a re-registration keeps the secret; a deletion takes it away */
    assert_int_equal(store_upsert_node(f->s, &n, 102, f->err, sizeof f->err), 0);
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_OK);
    int found = 0;
    assert_int_equal(store_delete_node(f->s, "n1", &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 1);
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_NOT_FOUND);
    assert_int_equal(store_set_node_secret(f->s, "", H1, 100, f->err, sizeof f->err), -1);
}

static void token_uses_expiry_revocation(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_add_enroll_token(f->s, "two", H1, 100, 1000, 2, f->err, sizeof f->err), 0);
    assert_int_equal(store_add_enroll_token(f->s, "two", H3, 100, 1000, 2, f->err, sizeof f->err), STORE_EXISTS);
    assert_non_null(strstr(f->err, "two"));
    assert_int_not_equal(store_add_enroll_token(f->s, "other", H1, 100, 1000, 2, f->err, sizeof f->err), 0); /* same hash */
    store_enroll_use u;
    char name[64];
    assert_int_equal(store_use_enroll_token(f->s, H3, 200, &u, name, sizeof name, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_UNKNOWN);
    assert_int_equal(store_use_enroll_token(f->s, H1, 200, &u, name, sizeof name, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_OK);
    assert_string_equal(name, "two");
    assert_int_equal(store_use_enroll_token(f->s, H1, 999, &u, name, sizeof name, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_OK);
    assert_int_equal(store_use_enroll_token(f->s, H1, 999, &u, name, sizeof name, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_USED_UP);
    /* expiry: valid until expires_at, not at it */
    assert_int_equal(store_add_enroll_token(f->s, "exp", H2, 100, 500, 5, f->err, sizeof f->err), 0);
    assert_int_equal(store_use_enroll_token(f->s, H2, 500, &u, NULL, 0, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_EXPIRED);
    assert_int_equal(store_use_enroll_token(f->s, H2, 499, &u, NULL, 0, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_OK);
    int found = 0;
    assert_int_equal(store_revoke_enroll_token(f->s, "exp", 300, &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 1);
    assert_int_equal(store_revoke_enroll_token(f->s, "exp", 301, &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 0); /* already revoked */
    assert_int_equal(store_revoke_enroll_token(f->s, "nope", 301, &found, f->err, sizeof f->err), 0);
    assert_int_equal(found, 0);
    assert_int_equal(store_use_enroll_token(f->s, H2, 400, &u, NULL, 0, f->err, sizeof f->err), 0);
    assert_int_equal(u, STORE_ENROLL_REVOKED);
    store_enroll_token_list l;
    assert_int_equal(store_list_enroll_tokens(f->s, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].name, "exp");
    assert_int_equal(l.items[0].uses, 1);
    assert_int_equal(l.items[0].revoked_at, 300);
    assert_string_equal(l.items[1].name, "two");
    assert_int_equal(l.items[1].uses, 2);
    assert_int_equal(l.items[1].max_uses, 2);
    assert_int_equal(l.items[1].expires_at, 1000);
    store_enroll_token_list_free(&l);
}

struct racer {
    store *s;
    int ok;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    char err[256];
    for (int i = 0; i < 20; i++) {
        store_enroll_use u;
        if (store_use_enroll_token(r->s, H3, 200, &u, NULL, 0, err, sizeof err) == 0 && u == STORE_ENROLL_OK) r->ok++;
    }
    return NULL;
}

static void concurrent_uses_never_exceed_max(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_add_enroll_token(f->s, "race", H3, 100, 1000, 7, f->err, sizeof f->err), 0);
    /* PostgreSQL: half the racers go through a second handle (other connections, as a second
     * manager would), so the count must hold in the database, not just in one writer queue. */
    store *other = f->s;
    if (f->pg) {
        store_config cfg = test_cfg(f);
        other = store_open(&cfg, f->err, sizeof f->err);
        assert_non_null(other);
    }
    pthread_t th[4];
    struct racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){i % 2 ? other : f->s, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += r[i].ok;
    }
    if (other != f->s) store_close(other);
    assert_int_equal(total, 7);
}

static void survives_reopen(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_add_enroll_token(f->s, "keep", H1, 100, 1000, 1, f->err, sizeof f->err), 0);
    assert_int_equal(store_set_node_secret(f->s, "n9", H2, 100, f->err, sizeof f->err), 0);
    store_close(f->s);
    store_config cfg = test_cfg(f);
    f->s = store_open(&cfg, f->err, sizeof f->err);
    assert_non_null(f->s);
    char h[65];
    assert_int_equal(store_get_node_secret(f->s, "n9", h, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(h, H2);
    store_enroll_token_list l;
    assert_int_equal(store_list_enroll_tokens(f->s, &l, f->err, sizeof f->err), 0);
    assert_int_equal(l.n, 1);
    store_enroll_token_list_free(&l);
}

/* A database from before node authentication (SQLite 3, PostgreSQL 2) gains the tables. */
static void migration_adds_tables(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    f->s = NULL;
    const char *sql = f->pg ? "DROP TABLE node_secrets; DROP TABLE enrollment_tokens; UPDATE schema_version SET version = 2"
                            : "DROP TABLE node_secrets; DROP TABLE enrollment_tokens; UPDATE schema_version SET version = 3";
    if (f->pg) {
        PGconn *c = PQconnectdb(f->dsn);
        PGresult *r = PQexec(c, sql);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        PQfinish(c);
    } else {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
    }
    store_config cfg = test_cfg(f);
    f->s = store_open(&cfg, f->err, sizeof f->err);
    assert_non_null(f->s);
    char h[65];
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_NOT_FOUND);
    assert_int_equal(store_set_node_secret(f->s, "n1", H1, 100, f->err, sizeof f->err), 0);
    assert_int_equal(store_add_enroll_token(f->s, "t", H2, 100, 1000, 1, f->err, sizeof f->err), 0);
    assert_int_equal(store_get_node_secret(f->s, "n1", h, f->err, sizeof f->err), STORE_OK);
    assert_string_equal(h, H1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(secrets_set_get_replace_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(token_uses_expiry_revocation, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_uses_never_exceed_max, setup, teardown),
        cmocka_unit_test_setup_teardown(survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_adds_tables, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
