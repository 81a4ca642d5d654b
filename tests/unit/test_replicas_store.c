/* Replicas on one PostgreSQL (OPS_TEST_STORE_DSN, set by tests/integration/test_replicas.sh):
 * two stores as two managers would open them -- one leader at a time and a quick takeover,
 * notices between them (never back to the sender), update events with ids in commit order and
 * their "update.published" notice, and the replicas bridge carrying hub events one way only.
 * Without a server: the SQLite store is not shared, always leader, and notices go nowhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "manager/events.h"
#include "manager/replicas.h"
#include "manager/store.h"

typedef struct inbox {
    pthread_mutex_t mu;
    char *items[64];
    size_t n;
} inbox;

static void on_notice(void *user, const char *json)
{
    inbox *b = user;
    pthread_mutex_lock(&b->mu);
    if (b->n < 64) b->items[b->n++] = strdup(json);
    pthread_mutex_unlock(&b->mu);
}

static size_t inbox_count(inbox *b, const char *needle)
{
    pthread_mutex_lock(&b->mu);
    size_t c = 0;
    for (size_t i = 0; i < b->n; i++) c += strstr(b->items[i], needle) != NULL;
    pthread_mutex_unlock(&b->mu);
    return c;
}

/* Notices holding both strings. */
static size_t inbox_count2(inbox *b, const char *n1, const char *n2)
{
    pthread_mutex_lock(&b->mu);
    size_t c = 0;
    for (size_t i = 0; i < b->n; i++) c += strstr(b->items[i], n1) && strstr(b->items[i], n2);
    pthread_mutex_unlock(&b->mu);
    return c;
}

static void inbox_clear(inbox *b)
{
    for (size_t i = 0; i < b->n; i++) free(b->items[i]);
    b->n = 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls cond for up to ms. */
#define WAIT_FOR(ms, cond)                                                                   \
    do {                                                                                     \
        for (int w_ = 0; w_ < (ms) / 20 && !(cond); w_++) sleep_ms(20);                      \
    } while (0)

static const char *dsn(void) { return getenv("OPS_TEST_STORE_DSN"); }

static store *open_pg(void)
{
    char err[512];
    store_config c = {.driver = "postgres", .dsn = dsn(), .readers = 1};
    store *s = store_open(&c, err, sizeof err);
    if (!s) fail_msg("open: %s", err);
    return s;
}

static void reset_db(void)
{
    PGconn *c = PQconnectdb(dsn());
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public"));
    PQfinish(c);
}

static void sqlite_is_alone(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_replicas.XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ops.db", dir);
    store_config c = {.dsn = path};
    store *s = store_open(&c, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(store_is_shared(s), 0);
    assert_int_equal(store_is_leader(s), 1);
    store_notify(s, "{\"kind\":\"x\"}"); /* goes nowhere, harmlessly */
    evhub *h = evhub_new(NULL, err, sizeof err);
    replicas_opts ro = {.store = s, .hub = h};
    replicas *r = replicas_new(&ro, err, sizeof err);
    assert_non_null(r);
    evhub_publish(h, "node.online", "n1", "", "online", "offline", "");
    replicas_free(r);
    evhub_free(h);
    store_close(s);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

static void one_leader_and_takeover(void **state)
{
    (void)state;
    if (!dsn()) skip();
    reset_db();
    store *a = open_pg();
    WAIT_FOR(5000, store_is_leader(a));
    assert_int_equal(store_is_leader(a), 1);
    store *b = open_pg();
    assert_int_equal(store_is_shared(b), 1);
    sleep_ms(2500); /* b asked at least twice */
    assert_int_equal(store_is_leader(b), 0);
    assert_int_equal(store_is_leader(a), 1);
    store_close(a); /* the session ends: the lock is free */
    WAIT_FOR(5000, store_is_leader(b));
    assert_int_equal(store_is_leader(b), 1);
    store_close(b);
}

static void notices_cross_but_do_not_return(void **state)
{
    (void)state;
    if (!dsn()) skip();
    reset_db();
    store *a = open_pg(), *b = open_pg();
    inbox ia = {.mu = PTHREAD_MUTEX_INITIALIZER}, ib = {.mu = PTHREAD_MUTEX_INITIALIZER};
    store_set_notice_handler(a, on_notice, &ia);
    store_set_notice_handler(b, on_notice, &ib);
    sleep_ms(300); /* both LISTEN */
    store_notify(a, "{\"kind\":\"t\",\"node_id\":\"from-a\"}");
    WAIT_FOR(5000, inbox_count(&ib, "from-a") == 1);
    assert_int_equal(inbox_count(&ib, "from-a"), 1);
    sleep_ms(300);
    assert_int_equal(inbox_count(&ia, "from-a"), 0);

    /* Update events: ids increase in node order, each node's notice names the node. */
    const char *nodes[] = {"n1", "n2"};
    uint8_t sig[64] = {1, 2, 0, 3}, pl[5] = {'a', 0, 'b', '\\', 'c'};
    store_update_in ev = {.kind = "config_change", .agent_id = "web", .payload = pl, .payload_len = 5,
                          .signature = sig, .signature_len = 64, .created_at = 1000};
    uint64_t ids[2];
    char err[512];
    assert_int_equal(store_add_updates(b, &ev, nodes, 2, ids, err, sizeof err), 0);
    assert_true(ids[1] > ids[0]);
    char want[80];
    snprintf(want, sizeof want, "\"%llu\"", (unsigned long long)ids[1]);
    WAIT_FOR(5000, inbox_count(&ia, "update.published") == 2);
    assert_int_equal(inbox_count(&ia, "update.published"), 2);
    assert_int_equal(inbox_count2(&ia, "\"n2\"", want), 1);
    assert_int_equal(inbox_count(&ib, "update.published"), 0);

    store_update_list l;
    assert_int_equal(store_list_updates_after(a, "n2", 0, 0, 0, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].id, ids[1]);
    assert_int_equal(l.items[0].payload_len, 5);
    assert_memory_equal(l.items[0].payload, pl, 5);
    assert_int_equal(l.items[0].signature_len, 64);
    assert_memory_equal(l.items[0].signature, sig, 64);
    assert_string_equal(l.items[0].outcome, "");
    store_update_list_free(&l);
    int found = 0;
    assert_int_equal(store_set_update_result(a, "n2", ids[1], "applied", "ok", 1001, &found, err, sizeof err), 0);
    assert_int_equal(found, 1);
    assert_int_equal(store_set_update_result(a, "n1", ids[1], "applied", "ok", 1001, &found, err, sizeof err), 0);
    assert_int_equal(found, 0);
    store_update_filter f = {.node_id = "n2"};
    assert_int_equal(store_list_updates(b, &f, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].outcome, "applied");
    store_update_list_free(&l);
    f = (store_update_filter){.pending_only = 1};
    assert_int_equal(store_list_updates(b, &f, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].node_id, "n1");
    store_update_list_free(&l);
    /* A later event for the same target supersedes n1's: compaction removes the old one. */
    const char *n1[] = {"n1"};
    ev.created_at = 2000;
    assert_int_equal(store_add_updates(a, &ev, n1, 1, NULL, err, sizeof err), 0);
    uint64_t deleted = 0;
    assert_int_equal(store_compact_updates(b, 1500, &deleted, err, sizeof err), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(store_list_updates_after(a, "n1", 0, 0, 0, &l, err, sizeof err), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].created_at, 2000);
    store_update_list_free(&l);

    store_set_notice_handler(a, NULL, NULL);
    store_set_notice_handler(b, NULL, NULL);
    store_close(a);
    store_close(b);
    inbox_clear(&ia);
    inbox_clear(&ib);
}

static void hub_events_cross_once(void **state)
{
    (void)state;
    if (!dsn()) skip();
    reset_db();
    char err[256];
    store *sa = open_pg(), *sb = open_pg();
    evhub *ha = evhub_new(NULL, err, sizeof err), *hb = evhub_new(NULL, err, sizeof err);
    replicas_opts oa = {.store = sa, .hub = ha}, ob = {.store = sb, .hub = hb};
    replicas *ra = replicas_new(&oa, err, sizeof err), *rb = replicas_new(&ob, err, sizeof err);
    evhub_sub *wa = evhub_subscribe(ha, NULL, 0, "", err, sizeof err);
    evhub_sub *wb = evhub_subscribe(hb, NULL, 0, "", err, sizeof err);
    sleep_ms(300);
    char detail[3000];
    memset(detail, 'x', sizeof detail - 1);
    detail[sizeof detail - 1] = 0;
    evhub_publish(ha, "agent.state", "n1", "web", "running", "stopped", detail);
    evhub_event *e = NULL;
    assert_int_equal(evhub_next(wb, 5000, &e), EVHUB_EVENT);
    assert_string_equal(e->kind, "agent.state");
    assert_string_equal(e->node_id, "n1");
    assert_string_equal(e->agent_id, "web");
    assert_string_equal(e->status, "running");
    assert_string_equal(e->previous_status, "stopped");
    assert_int_equal(strlen(e->detail), 2000); /* cut to keep the notice small */
    evhub_event_release(e);
    assert_int_equal(evhub_next(wa, 0, &e), EVHUB_EVENT); /* the local one */
    evhub_event_release(e);
    /* Neither side sends it around again. */
    assert_int_equal(evhub_next(wa, 700, &e), EVHUB_TIMEOUT);
    assert_int_equal(evhub_next(wb, 0, &e), EVHUB_TIMEOUT);
    evhub_unsubscribe(wa);
    evhub_unsubscribe(wb);
    replicas_free(ra);
    replicas_free(rb);
    evhub_free(ha);
    evhub_free(hb);
    store_close(sa);
    store_close(sb);
}

int main(void)
{
    log_open(LOGL_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sqlite_is_alone),
        cmocka_unit_test(one_leader_and_takeover),
        cmocka_unit_test(notices_cross_but_do_not_return),
        cmocka_unit_test(hub_events_cross_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
