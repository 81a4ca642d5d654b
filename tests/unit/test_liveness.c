/* The liveness table against a real SQLite store: loading, heartbeats, offline sweeps with a
 * fake clock, transitions stored and logged, write-behind, the real background thread, and
 * the heartbeat rate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "manager/liveness.h"
#include "manager/store.h"

typedef struct fixture {
    char dir[64];
    char logpath[128];
    store *s;
    int64_t now_ms; /* the fake clock */
    char err[512];
} fixture;

static int64_t fake_clock(void *ctx)
{
    return ((fixture *)ctx)->now_ms;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_liveness.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/ops.db", f->dir);
    snprintf(f->logpath, sizeof f->logpath, "%s/manager.log", f->dir);
    if (log_open(LOGL_INFO, f->logpath) < 0) return -1;
    store_config cfg = {.driver = "sqlite", .dsn = path};
    f->s = store_open(&cfg, f->err, sizeof f->err);
    if (!f->s) return -1;
    f->now_ms = 1700000000000LL;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    log_close();
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static void add_node(fixture *f, const char *id, int64_t now_s)
{
    store_node_in n = {.node_id = id, .hostname = "h"};
    if (store_upsert_node(f->s, &n, now_s, f->err, sizeof f->err) != 0) fail_msg("%s", f->err);
}

static store_node get(fixture *f, const char *id)
{
    store_node n;
    if (store_get_node(f->s, id, &n, f->err, sizeof f->err) != STORE_OK) fail_msg("get %s", id);
    return n;
}

static char *read_log(fixture *f)
{
    FILE *fp = fopen(f->logpath, "r");
    if (!fp) return strdup("");
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = 0;
    fclose(fp);
    return strdup(buf);
}

static liveness *make(fixture *f, int manual, int64_t offline_after_ms)
{
    liveness_config cfg = {.offline_after_ms = offline_after_ms, .manual = manual};
    if (manual) {
        cfg.clock = fake_clock;
        cfg.clock_ctx = f;
    } else {
        cfg.flush_interval_ms = 50;
        cfg.sweep_interval_ms = 20;
    }
    liveness *l = liveness_new(&cfg, f->s, f->err, sizeof f->err);
    if (!l) fail_msg("liveness_new: %s", f->err);
    return l;
}

static void offline_and_back_online(void **state)
{
    fixture *f = *state;
    int64_t t0 = f->now_ms / 1000;
    add_node(f, "a", t0);
    add_node(f, "b", t0);
    liveness *l = make(f, 1, 180000);
    int online = -1;
    int64_t seen = 0;
    assert_int_equal(liveness_get(l, "a", &online, &seen), 1);
    assert_int_equal(online, 1);
    assert_int_equal(seen, t0 * 1000);
    assert_int_equal(liveness_heartbeat(l, "stranger", f->now_ms), 0);
    assert_int_equal(liveness_get(l, "stranger", NULL, NULL), 0);

    /* a keeps beating, b goes silent. */
    for (int i = 1; i <= 3; i++) {
        f->now_ms += 60000;
        assert_int_equal(liveness_heartbeat(l, "a", f->now_ms), 1);
        assert_int_equal(liveness_sweep(l), 0); /* 180 s of silence is not more than 180 s */
    }
    f->now_ms += 60000;
    assert_int_equal(liveness_heartbeat(l, "a", f->now_ms), 1);
    assert_int_equal(liveness_sweep(l), 1);
    assert_int_equal(liveness_get(l, "b", &online, NULL), 1);
    assert_int_equal(online, 0);
    assert_int_equal(liveness_sweep(l), 0); /* a transition happens once */
    size_t on, off;
    liveness_counts(l, &on, &off);
    assert_int_equal(on, 1);
    assert_int_equal(off, 1);

    /* Nothing reaches the store before a flush... */
    store_node n = get(f, "b");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    store_node_free(&n);
    assert_int_equal(liveness_flush(l, f->err, sizeof f->err), 0);
    n = get(f, "b");
    assert_int_equal(n.status, STORE_NODE_OFFLINE);
    assert_int_equal(n.last_seen, t0);
    store_node_free(&n);
    n = get(f, "a");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    assert_int_equal(n.last_seen, t0 + 240);
    store_node_free(&n);
    store_event_list ev;
    assert_int_equal(store_list_node_events(f->s, "b", t0 + 1, INT64_MAX, &ev, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(ev.n, 1);
    assert_string_equal(ev.items[0].event, "offline");
    assert_int_equal(ev.items[0].at, t0 + 240);
    store_event_list_free(&ev);

    /* b comes back. */
    f->now_ms += 1000;
    assert_int_equal(liveness_heartbeat(l, "b", f->now_ms), 1);
    assert_int_equal(liveness_get(l, "b", &online, &seen), 1);
    assert_int_equal(online, 1);
    assert_int_equal(seen, f->now_ms);
    liveness_free(l); /* flushes */
    n = get(f, "b");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    assert_int_equal(n.last_seen, t0 + 241);
    store_node_free(&n);
    assert_int_equal(store_list_node_events(f->s, "b", t0 + 1, INT64_MAX, &ev, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.items[1].event, "online");
    assert_int_equal(ev.items[1].at, t0 + 241);
    store_event_list_free(&ev);

    char *log = read_log(f);
    char want[128];
    snprintf(want, sizeof want, "event=node.offline node=b last_seen=%lld", (long long)t0);
    assert_non_null(strstr(log, want));
    snprintf(want, sizeof want, "event=node.online node=b last_seen=%lld", (long long)t0);
    assert_non_null(strstr(log, want));
    assert_null(strstr(log, "node=a"));
    free(log);
}

static void loaded_nodes_get_a_grace_period(void **state)
{
    fixture *f = *state;
    int64_t t0 = f->now_ms / 1000;
    add_node(f, "old", t0 - 3600); /* online in the store, but an hour ago */
    store_touch t = {"gone", t0 - 3600, STORE_NODE_OFFLINE};
    add_node(f, "gone", t0 - 3600);
    assert_int_equal(store_touch_nodes(f->s, &t, 1, f->err, sizeof f->err), 0);
    liveness *l = make(f, 1, 180000);
    int online;
    assert_int_equal(liveness_get(l, "gone", &online, NULL), 1);
    assert_int_equal(online, 0);
    assert_int_equal(liveness_sweep(l), 0);
    f->now_ms += 180000;
    assert_int_equal(liveness_sweep(l), 0);
    f->now_ms += 1;
    assert_int_equal(liveness_sweep(l), 1);
    assert_int_equal(liveness_get(l, "old", &online, NULL), 1);
    assert_int_equal(online, 0);
    liveness_free(l);
}

static void register_and_remove(void **state)
{
    fixture *f = *state;
    liveness *l = make(f, 1, 10000);
    int64_t t0 = f->now_ms / 1000;
    /* What the handler does for an unknown heartbeating node. */
    assert_int_equal(liveness_heartbeat(l, "new", f->now_ms), 0);
    int created;
    assert_int_equal(store_upsert_placeholder(f->s, "new", t0, &created, f->err, sizeof f->err), 0);
    assert_int_equal(liveness_register(l, "new", f->now_ms), 0);
    assert_int_equal(liveness_heartbeat(l, "new", f->now_ms + 500), 1);
    f->now_ms += 20000;
    assert_int_equal(liveness_sweep(l), 1);
    /* Registering an offline node brings it back, as a transition. */
    assert_int_equal(liveness_register(l, "new", f->now_ms), 0);
    int online;
    assert_int_equal(liveness_get(l, "new", &online, NULL), 1);
    assert_int_equal(online, 1);
    assert_int_equal(liveness_flush(l, f->err, sizeof f->err), 0);
    store_event_list ev;
    assert_int_equal(store_list_node_events(f->s, "new", 0, INT64_MAX, &ev, f->err,
                                            sizeof f->err), 0);
    assert_int_equal(ev.n, 2);
    assert_string_equal(ev.items[0].event, "offline");
    assert_string_equal(ev.items[1].event, "online");
    store_event_list_free(&ev);

    liveness_remove(l, "new");
    assert_int_equal(liveness_get(l, "new", NULL, NULL), 0);
    assert_int_equal(liveness_heartbeat(l, "new", f->now_ms), 0);
    liveness_remove(l, "never-there");
    /* Odd ids are quoted in the log. */
    assert_int_equal(liveness_register(l, "x y", f->now_ms), 0);
    f->now_ms += 20000;
    assert_int_equal(liveness_sweep(l), 1);
    liveness_free(l);
    char *log = read_log(f);
    assert_non_null(strstr(log, "event=node.offline node=\"x y\" last_seen="));
    free(log);
}

static void background_thread_sweeps_and_flushes(void **state)
{
    fixture *f = *state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    add_node(f, "live", ts.tv_sec);
    add_node(f, "quiet", ts.tv_sec);
    liveness *l = make(f, 0, 300);
    /* "live" beats every 50 ms for 1 s; "quiet" must be offline in the store by then. */
    int quiet_offline = 0;
    for (int i = 0; i < 20; i++) {
        clock_gettime(CLOCK_REALTIME, &ts);
        assert_int_equal(liveness_heartbeat(l, "live", liveness_now(l)), 1);
        usleep(50000);
        store_node n = get(f, "quiet");
        if (n.status == STORE_NODE_OFFLINE) quiet_offline = 1;
        store_node_free(&n);
    }
    assert_true(quiet_offline);
    store_node n = get(f, "live");
    assert_int_equal(n.status, STORE_NODE_ONLINE);
    store_node_free(&n);
    liveness_free(l);
}

typedef struct hb_worker {
    liveness *l;
    int idx;
    long count;
    long unknown;
} hb_worker;

static void *hb_thread(void *arg)
{
    hb_worker *w = arg;
    char id[32];
    for (long i = 0; i < w->count; i++) {
        snprintf(id, sizeof id, "node-%ld", (i * 7 + w->idx) % 1000);
        if (liveness_heartbeat(w->l, id, liveness_now(w->l)) != 1) w->unknown++;
    }
    return NULL;
}

static void heartbeat_rate(void **state)
{
    fixture *f = *state;
    liveness *l = make(f, 0, 60000);
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "node-%d", i);
        assert_int_equal(liveness_register(l, id, liveness_now(l)), 0);
    }
    enum { T = 4, PER = 100000 };
    hb_worker w[T];
    pthread_t th[T];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < T; i++) {
        w[i] = (hb_worker){l, i, PER, 0};
        pthread_create(&th[i], NULL, hb_thread, &w[i]);
    }
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    double rate = T * PER / secs;
    print_message("liveness: %.0f heartbeats/s\n", rate);
    for (int i = 0; i < T; i++) assert_int_equal(w[i].unknown, 0);
    assert_true(rate > 60000);
    liveness_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(offline_and_back_online, setup, teardown),
        cmocka_unit_test_setup_teardown(loaded_nodes_get_a_grace_period, setup, teardown),
        cmocka_unit_test_setup_teardown(register_and_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(background_thread_sweeps_and_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(heartbeat_rate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
