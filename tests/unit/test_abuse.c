/* abuse: the token bucket's arithmetic, per-peer RegisterNode limits, the once-per-interval
 * refusal logger, and the bounded tables; plus nodeauth's token helpers and mode words. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "manager/abuse.h"
#include "manager/nodeauth.h"

static void bucket_starts_full_and_refills(void **state)
{
    (void)state;
    abuse_bucket b;
    abuse_bucket_init(&b, 3, 1000);
    for (int i = 0; i < 3; i++) assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 1000), 1);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 1000), 0);
    /* 1 token per second: half a second is not enough, a full one is */
    assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 1500), 0);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 2000), 1);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 2000), 0);
    /* a long pause refills only up to the burst */
    for (int i = 0; i < 3; i++) assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 100000), 1);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 3, 100000), 0);
}

static void bucket_ignores_clock_going_back(void **state)
{
    (void)state;
    abuse_bucket b;
    abuse_bucket_init(&b, 1, 5000);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 1, 5000), 1);
    assert_int_equal(abuse_bucket_take(&b, 1.0, 1, 1000), 0); /* back in time: no refill */
    assert_int_equal(abuse_bucket_take(&b, 1.0, 1, 5500), 0); /* measured from 5000, not 1000 */
    assert_int_equal(abuse_bucket_take(&b, 1.0, 1, 6000), 1);
}

static void bucket_fractional_rate(void **state)
{
    (void)state;
    abuse_bucket b;
    abuse_bucket_init(&b, 1, 0);
    assert_int_equal(abuse_bucket_take(&b, 1.0 / 60, 1, 0), 1); /* 1 per minute */
    assert_int_equal(abuse_bucket_take(&b, 1.0 / 60, 1, 59000), 0);
    assert_int_equal(abuse_bucket_take(&b, 1.0 / 60, 1, 60000), 1);
}

static void peer_host_forms(void **state)
{
    (void)state;
    char h[64];
    abuse_peer_host("ipv4:10.0.0.5:40112", h, sizeof h);
    assert_string_equal(h, "10.0.0.5");
    abuse_peer_host("ipv6:[::1]:5555", h, sizeof h);
    assert_string_equal(h, "::1");
    abuse_peer_host("ipv6:fe80::1", h, sizeof h); /* no port: the whole address */
    assert_string_equal(h, "fe80::1");
    abuse_peer_host("unix:/tmp/sock", h, sizeof h);
    assert_string_equal(h, "unix");
    abuse_peer_host(NULL, h, sizeof h);
    assert_string_equal(h, "");
    abuse_peer_host("ipv4:1.2.3.4:1", h, 4); /* truncated, terminated */
    assert_string_equal(h, "1.2");
}

static void register_limit_is_per_address(void **state)
{
    (void)state;
    char err[128];
    abuse_opts o = {.register_rate = 1.0, .register_burst = 2};
    abuse *a = abuse_new(&o, err, sizeof err);
    assert_non_null(a);
    /* different ports of one address share the bucket */
    assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.1:1000", 0), 1);
    assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.1:1001", 0), 1);
    assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.1:1002", 0), 0);
    /* another address has its own */
    assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.2:1000", 0), 1);
    assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.1:1003", 1000), 1);
    abuse_free(a);
    /* rate 0: unlimited */
    abuse_opts u = {0};
    a = abuse_new(&u, err, sizeof err);
    for (int i = 0; i < 1000; i++) assert_int_equal(abuse_allow_register(a, "ipv4:10.0.0.1:1", 0), 1);
    abuse_free(a);
}

static void note_logs_once_per_interval(void **state)
{
    (void)state;
    char err[128];
    abuse_opts o = {.log_interval_ms = 60000};
    abuse *a = abuse_new(&o, err, sizeof err);
    uint64_t held = 99;
    assert_int_equal(abuse_note(a, "ipv4:10.0.0.1:1", "limit", 1000, &held), 1);
    assert_int_equal(held, 0);
    int logged = 0;
    for (int i = 0; i < 500; i++) logged += abuse_note(a, "ipv4:10.0.0.1:2", "limit", 1000 + i * 100, &held);
    assert_int_equal(logged, 0); /* 1000 .. 50900: still the same minute */
    /* another kind and another peer each get their own line */
    assert_int_equal(abuse_note(a, "ipv4:10.0.0.1:1", "node_auth", 2000, NULL), 1);
    assert_int_equal(abuse_note(a, "ipv4:10.0.0.9:1", "limit", 2000, NULL), 1);
    /* a minute later: one line that tells how many were held back */
    assert_int_equal(abuse_note(a, "ipv4:10.0.0.1:1", "limit", 61000, &held), 1);
    assert_int_equal(held, 500);
    assert_int_equal(abuse_note(a, "ipv4:10.0.0.1:1", "limit", 61001, &held), 0);
    abuse_free(a);
}

static void tables_stay_bounded(void **state)
{
    (void)state;
    char err[128];
    abuse_opts o = {.register_rate = 1.0, .register_burst = 1, .max_peers = 8, .log_interval_ms = 1000};
    abuse *a = abuse_new(&o, err, sizeof err);
    char peer[64];
    /* 8 peers fill the table; the rest share the overflow bucket: only its first is let in */
    int allowed = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(peer, sizeof peer, "ipv4:10.1.0.%d:1", i);
        allowed += abuse_allow_register(a, peer, 0);
    }
    assert_int_equal(allowed, 8 + 1);
    /* after ten idle intervals the entries are swept and new peers get buckets again */
    allowed = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(peer, sizeof peer, "ipv4:10.2.0.%d:1", i);
        allowed += abuse_allow_register(a, peer, 20000);
    }
    assert_int_equal(allowed, 5);
    abuse_free(a);
}

struct par {
    abuse *a;
    int allowed;
};

static void *hammer(void *arg)
{
    struct par *p = arg;
    for (int i = 0; i < 1000; i++) p->allowed += abuse_allow_register(p->a, "ipv4:10.3.0.1:9", 0);
    return NULL;
}

static void concurrent_takes_never_exceed_burst(void **state)
{
    (void)state;
    char err[128];
    abuse_opts o = {.register_rate = 0.001, .register_burst = 50};
    abuse *a = abuse_new(&o, err, sizeof err);
    pthread_t th[4];
    struct par p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct par){a, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &p[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += p[i].allowed;
    }
    assert_int_equal(total, 50);
    abuse_free(a);
}

static void nodeauth_helpers(void **state)
{
    (void)state;
    char h[65];
    assert_int_equal(nodeauth_sha256_hex("abc", h), 0);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char t1[128], t2[128];
    assert_int_equal(nodeauth_random_token(NODEAUTH_SECRET_PREFIX, t1, sizeof t1), 0);
    assert_int_equal(nodeauth_random_token(NODEAUTH_SECRET_PREFIX, t2, sizeof t2), 0);
    assert_int_equal(strlen(t1), 4 + 64);
    assert_memory_equal(t1, "ns1.", 4);
    assert_string_not_equal(t1, t2);
    assert_int_equal(nodeauth_random_token(NODEAUTH_ENROLL_PREFIX, t1, 60), -1); /* too small */
    nodeauth_mode m;
    assert_int_equal(nodeauth_parse_mode("mtls", &m), 0);
    assert_int_equal(m, NODEAUTH_MTLS);
    assert_int_equal(nodeauth_parse_mode("token", &m), 0);
    assert_int_equal(m, NODEAUTH_TOKEN);
    assert_int_equal(nodeauth_parse_mode("TOKEN", &m), -1);
    assert_string_equal(nodeauth_mode_name(NODEAUTH_NONE), "none");
    char err[128];
    nodeauth_opts no = {.mode = NODEAUTH_TOKEN};
    assert_null(nodeauth_new(&no, err, sizeof err)); /* token mode needs the store */
    assert_non_null(strstr(err, "store"));
    assert_int_equal(nodeauth_get_mode(NULL), NODEAUTH_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_starts_full_and_refills),
        cmocka_unit_test(bucket_ignores_clock_going_back),
        cmocka_unit_test(bucket_fractional_rate),
        cmocka_unit_test(peer_host_forms),
        cmocka_unit_test(register_limit_is_per_address),
        cmocka_unit_test(note_logs_once_per_interval),
        cmocka_unit_test(tables_stay_bounded),
        cmocka_unit_test(concurrent_takes_never_exceed_burst),
        cmocka_unit_test(nodeauth_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
