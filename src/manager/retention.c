/* retention: one thread, one timer, one store call per pass. */
#include "manager/retention.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"

#define FOLLOWER_CHECK_MS 2000

struct retention {
    store *st;
    int64_t keep_ms, interval_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    pthread_t th;
};

static void pass(retention *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec - r->keep_ms / 1000;
    uint64_t deleted = 0;
    char err[512];
    if (store_delete_metrics_before(r->st, before, 5000, &deleted, err, sizeof err) != 0)
        log_error("retention.failed", "before=%lld deleted=%llu error=\"%s\"", (long long)before, (unsigned long long)deleted, err);
    else if (deleted)
        log_info("retention.deleted", "before=%lld points=%llu", (long long)before, (unsigned long long)deleted);
}

static void *main_loop(void *arg)
{
    pthread_setname_np(pthread_self(), "retention");
    retention *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        /* Replicas: only the leader deletes; a follower looks again soon, to take over quickly. */
        int lead = store_is_leader(r->st);
        if (lead) pass(r);
        int64_t wait = lead || r->interval_ms < FOLLOWER_CHECK_MS ? r->interval_ms : FOLLOWER_CHECK_MS;
        pthread_mutex_lock(&r->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0) {}
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

retention *retention_start(store *st, int64_t keep_ms, int64_t interval_ms, char *err, size_t errlen)
{
    retention *r = calloc(1, sizeof *r);
    if (!r) { snprintf(err, errlen, "out of memory"); return NULL; }
    r->st = st;
    r->keep_ms = keep_ms;
    r->interval_ms = interval_ms > 0 ? interval_ms : 3600000;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->th, NULL, main_loop, r) != 0) {
        snprintf(err, errlen, "cannot start the retention thread");
        free(r);
        return NULL;
    }
    return r;
}

void retention_stop(retention *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
