/* events: ids and timestamps, filters, the blocking wait, a slow subscriber dropped without
 * holding publishers up, close, and concurrent publishers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "manager/events.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t fake_clock(void *ctx) { return *(int64_t *)ctx; }

static evhub *hub(size_t qlen, int64_t *clock)
{
    evhub_opts o = {.queue_len = qlen, .clock = clock ? fake_clock : NULL, .clock_ctx = clock};
    char err[128];
    evhub *h = evhub_new(&o, err, sizeof err);
    assert_non_null(h);
    return h;
}

static evhub_sub *sub(evhub *h, const char *const *kinds, size_t n, const char *node)
{
    char err[128];
    evhub_sub *s = evhub_subscribe(h, kinds, n, node, err, sizeof err);
    assert_non_null(s);
    return s;
}

static void fields_ids_and_order(void **state)
{
    (void)state;
    int64_t now = 1700000000;
    evhub *h = hub(0, &now);
    evhub_publish(h, "node.online", "n0", NULL, "online", "offline", NULL); /* nobody listens */
    assert_int_equal(evhub_last_id(h), 1);
    evhub_sub *s = sub(h, NULL, 0, NULL);
    assert_int_equal(evhub_subscribers(h), 1);
    evhub_publish(h, "agent.state", "n1", "a1", "running", "starting", "pid=42");
    now++;
    evhub_publish(h, "node.offline", "n1", NULL, "offline", "online", NULL);
    evhub_event *e;
    assert_int_equal(evhub_next(s, 0, &e), EVHUB_EVENT);
    assert_int_equal(e->id, 2);
    assert_int_equal(e->ts, 1700000000);
    assert_string_equal(e->kind, "agent.state");
    assert_string_equal(e->node_id, "n1");
    assert_string_equal(e->agent_id, "a1");
    assert_string_equal(e->status, "running");
    assert_string_equal(e->previous_status, "starting");
    assert_string_equal(e->detail, "pid=42");
    evhub_event_release(e);
    assert_int_equal(evhub_next(s, 0, &e), EVHUB_EVENT);
    assert_int_equal(e->id, 3);
    assert_int_equal(e->ts, 1700000001);
    assert_string_equal(e->agent_id, ""); /* NULL becomes "" */
    assert_string_equal(e->detail, "");
    evhub_event_release(e);
    int64_t t0 = mono_ms();
    assert_int_equal(evhub_next(s, 100, &e), EVHUB_TIMEOUT);
    assert_null(e);
    int64_t waited = mono_ms() - t0;
    assert_true(waited >= 90 && waited < 2000);
    evhub_unsubscribe(s);
    assert_int_equal(evhub_subscribers(h), 0);
    evhub_publish(NULL, "node.online", "x", NULL, NULL, NULL, NULL); /* a no-op */
    evhub_free(h);
}

static void kind_and_node_filters(void **state)
{
    (void)state;
    evhub *h = hub(0, NULL);
    const char *agents[] = {"agent."};
    const char *two[] = {"node.offline", "node.deleted"};
    const char *all[] = {"node.", ""}; /* an empty kind means every kind */
    evhub_sub *sa = sub(h, agents, 1, NULL), *s2 = sub(h, two, 2, NULL), *sn = sub(h, NULL, 0, "n2"),
              *sall = sub(h, all, 2, "");
    evhub_publish(h, "node.online", "n1", NULL, "online", "offline", NULL);
    evhub_publish(h, "agent.state", "n1", "a", "running", "", NULL);
    evhub_publish(h, "node.offline", "n2", NULL, "offline", "online", NULL);
    evhub_publish(h, "agent.removed", "n2", "b", "removed", "running", NULL);
    evhub_publish(h, "node.deleted", "n3", NULL, "deleted", "", NULL);
    struct { evhub_sub *s; const char *want; } c[] = {
        {sa, "agent.state/n1,agent.removed/n2,"},
        {s2, "node.offline/n2,node.deleted/n3,"},
        {sn, "node.offline/n2,agent.removed/n2,"},
        {sall, "node.online/n1,agent.state/n1,node.offline/n2,agent.removed/n2,node.deleted/n3,"},
    };
    for (size_t i = 0; i < 4; i++) {
        char got[256] = "";
        evhub_event *e;
        while (evhub_next(c[i].s, 0, &e) == EVHUB_EVENT) {
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s/%s,", e->kind, e->node_id);
            evhub_event_release(e);
        }
        assert_string_equal(got, c[i].want);
        evhub_unsubscribe(c[i].s);
    }
    evhub_free(h);
}

struct later {
    evhub *h;
    int delay_ms;
};

static void *publish_later(void *arg)
{
    struct later *l = arg;
    usleep((useconds_t)l->delay_ms * 1000);
    evhub_publish(l->h, "node.online", "n1", NULL, "online", "offline", NULL);
    return NULL;
}

static void wait_is_woken_by_publish(void **state)
{
    (void)state;
    evhub *h = hub(0, NULL);
    evhub_sub *s = sub(h, NULL, 0, NULL);
    struct later l = {h, 100};
    pthread_t th;
    int64_t t0 = mono_ms();
    assert_int_equal(pthread_create(&th, NULL, publish_later, &l), 0);
    evhub_event *e;
    assert_int_equal(evhub_next(s, 10000, &e), EVHUB_EVENT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 90 && took < 3000);
    evhub_event_release(e);
    pthread_join(th, NULL);
    evhub_unsubscribe(s);
    evhub_free(h);
}

static void slow_subscriber_dropped(void **state)
{
    (void)state;
    evhub *h = hub(4, NULL);
    evhub_sub *slow = sub(h, NULL, 0, NULL);
    evhub_sub *quick = sub(h, NULL, 0, NULL);
    evhub_event *e;
    int64_t t0 = mono_ms();
    for (int i = 0; i < 10; i++) {
        evhub_publish(h, "agent.state", "n1", "a", "running", "", NULL);
        /* quick keeps up */
        assert_int_equal(evhub_next(quick, 0, &e), EVHUB_EVENT);
        assert_int_equal(e->id, (uint64_t)i + 1);
        evhub_event_release(e);
    }
    assert_true(mono_ms() - t0 < 1000); /* nothing waited for slow */
    /* slow took 4 and then overflowed: it is told at once, not after draining. */
    assert_int_equal(evhub_next(slow, 1000, &e), EVHUB_DROPPED);
    assert_null(e);
    assert_int_equal(evhub_next(slow, 0, &e), EVHUB_DROPPED);
    evhub_unsubscribe(slow); /* frees the 4 it still held */
    evhub_publish(h, "agent.state", "n1", "a", "running", "", NULL);
    assert_int_equal(evhub_next(quick, 0, &e), EVHUB_EVENT);
    evhub_event_release(e);
    evhub_unsubscribe(quick);
    evhub_free(h);
}

struct waiter {
    evhub_sub *s;
    evhub_wait got;
};

static void *wait_long(void *arg)
{
    struct waiter *w = arg;
    evhub_event *e;
    w->got = evhub_next(w->s, 30000, &e);
    return NULL;
}

static void close_wakes_waiters(void **state)
{
    (void)state;
    evhub *h = hub(0, NULL);
    struct waiter w = {sub(h, NULL, 0, NULL), EVHUB_EVENT};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_long, &w), 0);
    usleep(50000);
    int64_t t0 = mono_ms();
    evhub_close(h);
    pthread_join(th, NULL);
    assert_true(mono_ms() - t0 < 2000);
    assert_int_equal(w.got, EVHUB_CLOSED);
    char err[128];
    assert_null(evhub_subscribe(h, NULL, 0, NULL, err, sizeof err));
    assert_string_equal(err, "event hub is closing");
    evhub_close(h); /* idempotent */
    evhub_unsubscribe(w.s);
    evhub_free(h);
}

#define PUBLISHERS 4
#define PER_PUBLISHER 2000

static void *publisher(void *arg)
{
    for (int i = 0; i < PER_PUBLISHER; i++) evhub_publish(arg, "agent.state", "n", "a", "running", "", NULL);
    return NULL;
}

static void concurrent_publishers(void **state)
{
    (void)state;
    evhub *h = hub(PUBLISHERS * PER_PUBLISHER, NULL);
    evhub_sub *s = sub(h, NULL, 0, NULL);
    pthread_t th[PUBLISHERS];
    for (int i = 0; i < PUBLISHERS; i++) assert_int_equal(pthread_create(&th[i], NULL, publisher, h), 0);
    uint64_t last = 0;
    size_t n = 0;
    evhub_event *e;
    while (n < PUBLISHERS * PER_PUBLISHER && evhub_next(s, 5000, &e) == EVHUB_EVENT) {
        assert_true(e->id > last); /* each subscriber sees ids in increasing order */
        last = e->id;
        n++;
        evhub_event_release(e);
    }
    for (int i = 0; i < PUBLISHERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(n, PUBLISHERS * PER_PUBLISHER);
    assert_int_equal(evhub_last_id(h), PUBLISHERS * PER_PUBLISHER);
    evhub_unsubscribe(s);
    evhub_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_ids_and_order),
        cmocka_unit_test(kind_and_node_filters),
        cmocka_unit_test(wait_is_woken_by_publish),
        cmocka_unit_test(slow_subscriber_dropped),
        cmocka_unit_test(close_wakes_waiters),
        cmocka_unit_test(concurrent_publishers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
