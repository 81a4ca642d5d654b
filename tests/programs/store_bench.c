/* store_bench: how many metric values per second the store ingests, ReportMetrics-shaped.
 *
 * usage: store_bench [-t threads] [-r reports_per_thread] [-d dir] [-p postgres_dsn]
 * (-p: into PostgreSQL at that libpq DSN, whose tables must be empty, instead of SQLite)
 * Each thread plays one node sending reports of 4 types x 10 values with increasing timestamps,
 * each report submitted and committed like the handler does. Prints values/s and the
 * commit latency percentiles; exits non-zero if any write failed or a value went missing. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "manager/store.h"

static store *g_store;
static int g_reports = 2000;

typedef struct worker {
    pthread_t th;
    int idx;
    int failures;
    double *lat_us;
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    worker *w = arg;
    static const char *types[4] = {"cpu", "memory", "disk", "network"};
    char node[64];
    snprintf(node, sizeof node, "node-%04d-0123456789abcdef", w->idx);
    char keys[10][16];
    for (int k = 0; k < 10; k++) snprintf(keys[k], sizeof keys[k], "value_%d", k);
    store_metric_value vals[4][10];
    store_metric_in m[4];
    for (int r = 0; r < g_reports; r++) {
        int64_t ts = 1700000000 + r * 60;
        for (int t = 0; t < 4; t++) {
            for (int k = 0; k < 10; k++) vals[t][k] = (store_metric_value){keys[k], r * 0.5 + k};
            m[t] = (store_metric_in){types[t], ts, vals[t], 10};
        }
        char err[256];
        size_t ins;
        double t0 = now_s();
        if (store_insert_metrics(g_store, node, m, 4, &ins, err, sizeof err) < 0 || ins != 40) {
            fprintf(stderr, "write failed: %s (inserted %zu)\n", err, ins);
            w->failures++;
        }
        w->lat_us[r] = (now_s() - t0) * 1e6;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int threads = 64;
    const char *dir = NULL, *pg_dsn = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "t:r:d:p:")) != -1) {
        if (opt == 't') threads = atoi(optarg);
        else if (opt == 'p') pg_dsn = optarg;
        else if (opt == 'r') g_reports = atoi(optarg);
        else if (opt == 'd') dir = optarg;
        else {
            fprintf(stderr, "usage: store_bench [-t threads] [-r reports_per_thread] [-d dir] [-p postgres_dsn]\n");
            return 2;
        }
    }
    char tmpl[] = "/tmp/store_bench.XXXXXX";
    if (!dir && !(dir = mkdtemp(tmpl))) { perror("mkdtemp"); return 1; }
    char path[512];
    snprintf(path, sizeof path, "%s/bench.db", dir);
    char err[256];
    store_config cfg = {.driver = pg_dsn ? "postgres" : "sqlite", .dsn = pg_dsn ? pg_dsn : path};
    g_store = store_open(&cfg, err, sizeof err);
    if (!g_store) { fprintf(stderr, "open: %s\n", err); return 1; }

    worker *ws = calloc((size_t)threads, sizeof *ws);
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        ws[i].idx = i;
        ws[i].lat_us = calloc((size_t)g_reports, sizeof(double));
        pthread_create(&ws[i].th, NULL, run, &ws[i]);
    }
    int failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].th, NULL);
        failures += ws[i].failures;
    }
    double secs = now_s() - t0;
    size_t total = (size_t)threads * (size_t)g_reports;
    double *all = malloc(total * sizeof *all);
    for (int i = 0; i < threads; i++) {
        memcpy(all + (size_t)i * g_reports, ws[i].lat_us, (size_t)g_reports * sizeof(double));
        free(ws[i].lat_us);
    }
    qsort(all, total, sizeof *all, cmp_double);
    double values = (double)total * 40;
    printf("store_bench: %s, %d submitters x %d reports x 40 values = %.0f values in %.2f s\n",
           cfg.driver, threads, g_reports, values, secs);
    printf("values/s: %.0f  reports/s: %.0f  commit latency p50 %.0f us p99 %.0f us max %.0f us\n",
           values / secs, (double)total / secs, all[total / 2], all[total * 99 / 100],
           all[total - 1]);

    /* Every acknowledged value must be there: count one node's points. */
    store_point_list pl;
    if (store_query_metrics(g_store, "node-0000-0123456789abcdef", "cpu", 0, INT64_MAX, 0, &pl,
                            err, sizeof err) < 0) {
        fprintf(stderr, "query: %s\n", err);
        failures++;
    } else {
        if (pl.n != (size_t)g_reports * 10) {
            fprintf(stderr, "expected %d cpu points, found %zu\n", g_reports * 10, pl.n);
            failures++;
        }
        store_point_list_free(&pl);
    }
    store_close(g_store);
    free(all);
    free(ws);
    if (dir == tmpl) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    return failures ? 1 : 0;
}
