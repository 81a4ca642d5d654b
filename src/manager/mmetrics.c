/* mmetrics: counters updated with atomics on the rpc workers (no lock on the call path once a
 * method has its slot), per-node tables under one mutex (reports and syncs are per node per
 * interval, far rarer than calls), and a scrape that reads everything else at the moment. */
#include "manager/mmetrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "rpc/status.h"

#define N_CODES (RPC_UNAUTHENTICATED + 1)
#define NODE_BUCKETS 1024

/* Call latency from 0.1 ms to 10 s, in microseconds for the hot path and seconds for output. */
static const int64_t lat_us[] = {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                                 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const double lat_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                               0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_LAT (sizeof lat_us / sizeof lat_us[0])

struct method_slot {
    char path[160];
    char service[128], method[96];
    atomic_uint_fast64_t codes[N_CODES];
    atomic_uint_fast64_t buckets[N_LAT + 1];
    atomic_uint_fast64_t sum_us;
};

struct host_series {
    char *type, *key;
    double value;
    int64_t ts;
};

struct magent {
    char *id;
    int running;      /* last synced status is "running" */
    int32_t last_pid; /* the last non-zero pid seen */
    uint64_t restarts;
};

struct mnode {
    struct mnode *next;
    char *id;
    struct host_series *series;
    size_t n_series;
    struct magent *agents;
    size_t n_agents;
};

struct mmetrics {
    store *st;
    liveness *live;
    pool *pool;
    /* Slots are filled once and never move: readers scan [0, n_methods) without a lock. */
    struct method_slot methods[MMETRICS_MAX_METHODS + 1]; /* the last one is "other" */
    atomic_size_t n_methods;
    pthread_mutex_t method_mu; /* adding a slot */
    pthread_mutex_t mu;        /* the node table */
    struct mnode *nodes[NODE_BUCKETS];
    size_t n_nodes;
};

static void split_path(struct method_slot *s, const char *path)
{
    snprintf(s->path, sizeof s->path, "%s", path);
    const char *slash = path[0] == '/' ? strrchr(path, '/') : NULL;
    if (!slash || slash == path) {
        snprintf(s->service, sizeof s->service, "%s", path);
        snprintf(s->method, sizeof s->method, "%s", path);
        return;
    }
    snprintf(s->service, sizeof s->service, "%.*s", (int)(slash - path - 1), path + 1);
    snprintf(s->method, sizeof s->method, "%s", slash + 1);
}

mmetrics *mmetrics_new(const mmetrics_opts *o, char *err, size_t errlen)
{
    mmetrics *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->st = o->store;
    m->live = o->live;
    m->pool = o->pool;
    pthread_mutex_init(&m->method_mu, NULL);
    pthread_mutex_init(&m->mu, NULL);
    split_path(&m->methods[MMETRICS_MAX_METHODS], "other");
    return m;
}

static void node_free(struct mnode *n)
{
    for (size_t i = 0; i < n->n_series; i++) {
        free(n->series[i].type);
        free(n->series[i].key);
    }
    free(n->series);
    for (size_t i = 0; i < n->n_agents; i++) free(n->agents[i].id);
    free(n->agents);
    free(n->id);
    free(n);
}

void mmetrics_free(mmetrics *m)
{
    if (!m) return;
    for (size_t b = 0; b < NODE_BUCKETS; b++) {
        for (struct mnode *n = m->nodes[b], *next; n; n = next) {
            next = n->next;
            node_free(n);
        }
    }
    pthread_mutex_destroy(&m->method_mu);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- calls -------------------------------------------------------------------------------- */

static struct method_slot *slot_for(mmetrics *m, const char *path)
{
    size_t n = atomic_load_explicit(&m->n_methods, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m->methods[i].path, path) == 0) return &m->methods[i];
    pthread_mutex_lock(&m->method_mu);
    n = atomic_load_explicit(&m->n_methods, memory_order_relaxed);
    struct method_slot *s = NULL;
    for (size_t i = 0; i < n && !s; i++)
        if (strcmp(m->methods[i].path, path) == 0) s = &m->methods[i];
    if (!s && n < MMETRICS_MAX_METHODS) {
        s = &m->methods[n];
        split_path(s, path);
        atomic_store_explicit(&m->n_methods, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->method_mu);
    return s ? s : &m->methods[MMETRICS_MAX_METHODS];
}

void mmetrics_observe_rpc(void *user, const char *method, int code, int64_t duration_us)
{
    mmetrics *m = user;
    struct method_slot *s = slot_for(m, method ? method : "(unknown)");
    if (code < 0 || code >= N_CODES) code = RPC_UNKNOWN;
    if (duration_us < 0) duration_us = 0;
    size_t b = 0;
    while (b < N_LAT && duration_us > lat_us[b]) b++;
    atomic_fetch_add_explicit(&s->codes[code], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (uint_fast64_t)duration_us, memory_order_relaxed);
}

/* ---- per-node tables ---------------------------------------------------------------------- */

static size_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)(h % NODE_BUCKETS);
}

/* With m->mu held. create: add the node if missing (NULL when full or out of memory). */
static struct mnode *node_get(mmetrics *m, const char *id, int create)
{
    size_t b = hash(id);
    for (struct mnode *n = m->nodes[b]; n; n = n->next)
        if (strcmp(n->id, id) == 0) return n;
    if (!create || m->n_nodes >= MMETRICS_MAX_NODES) return NULL;
    struct mnode *n = calloc(1, sizeof *n);
    if (!n || !(n->id = strdup(id))) {
        free(n);
        return NULL;
    }
    n->next = m->nodes[b];
    m->nodes[b] = n;
    m->n_nodes++;
    return n;
}

static void note_value(struct mnode *n, const char *type, const char *key, double v, int64_t ts)
{
    for (size_t i = 0; i < n->n_series; i++) {
        struct host_series *s = &n->series[i];
        if (strcmp(s->key, key) != 0 || strcmp(s->type, type) != 0) continue;
        /* A spooled report delivered late must not hide a newer value. */
        if (ts >= s->ts) {
            s->value = v;
            s->ts = ts;
        }
        return;
    }
    if (n->n_series >= MMETRICS_MAX_HOST_SERIES) return;
    if (!n->series) {
        n->series = calloc(MMETRICS_MAX_HOST_SERIES, sizeof *n->series);
        if (!n->series) return;
    }
    struct host_series *s = &n->series[n->n_series];
    s->type = strdup(type);
    s->key = strdup(key);
    if (!s->type || !s->key) {
        free(s->type);
        free(s->key);
        return;
    }
    s->value = v;
    s->ts = ts;
    n->n_series++;
}

void mmetrics_host_report(mmetrics *m, const char *node_id, const store_metric_in *metrics, size_t n)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    struct mnode *node = node_get(m, node_id, 1);
    for (size_t i = 0; node && i < n; i++)
        for (size_t k = 0; k < metrics[i].n_values; k++)
            note_value(node, metrics[i].type, metrics[i].values[k].key, metrics[i].values[k].value, metrics[i].ts);
    pthread_mutex_unlock(&m->mu);
}

void mmetrics_agents_synced(mmetrics *m, const char *node_id, const store_agent_in *a, size_t n)
{
    if (!m) return;
    if (n > MMETRICS_MAX_AGENTS) n = MMETRICS_MAX_AGENTS;
    struct magent *next = calloc(n ? n : 1, sizeof *next);
    if (!next) return;
    pthread_mutex_lock(&m->mu);
    struct mnode *node = node_get(m, node_id, 1);
    if (!node) {
        pthread_mutex_unlock(&m->mu);
        free(next);
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        struct magent *old = NULL;
        for (size_t j = 0; j < node->n_agents && !old; j++)
            if (node->agents[j].id && strcmp(node->agents[j].id, a[i].agent_id) == 0) old = &node->agents[j];
        struct magent *g = &next[kept];
        if (old) {
            /* Take the old entry's id over; its slot is left empty for the free below. */
            *g = *old;
            old->id = NULL;
            if (a[i].pid > 0 && g->last_pid > 0 && a[i].pid != g->last_pid) g->restarts++;
        } else if (!(g->id = strdup(a[i].agent_id))) {
            continue;
        }
        if (a[i].pid > 0) g->last_pid = a[i].pid;
        g->running = a[i].status && strcmp(a[i].status, "running") == 0;
        kept++;
    }
    for (size_t j = 0; j < node->n_agents; j++) free(node->agents[j].id);
    free(node->agents);
    node->agents = next;
    node->n_agents = kept;
    pthread_mutex_unlock(&m->mu);
}

/* With m->mu held: forgets nodes the liveness table no longer has (deleted). */
static void prune(mmetrics *m)
{
    if (!m->live) return;
    for (size_t b = 0; b < NODE_BUCKETS; b++) {
        struct mnode **link = &m->nodes[b];
        while (*link) {
            struct mnode *n = *link;
            if (liveness_get(m->live, n->id, NULL, NULL)) {
                link = &n->next;
                continue;
            }
            *link = n->next;
            node_free(n);
            m->n_nodes--;
        }
    }
}

/* ---- the scrape --------------------------------------------------------------------------- */

static void write_rpc(mmetrics *m, prom_buf *b)
{
    size_t n = atomic_load_explicit(&m->n_methods, memory_order_acquire);
    prom_family(b, "ops_manager_rpc_calls_total", PROM_COUNTER, "gRPC calls finished, by method and status code.");
    for (size_t i = 0; i <= MMETRICS_MAX_METHODS; i++) {
        if (i >= n && i < MMETRICS_MAX_METHODS) continue;
        struct method_slot *s = &m->methods[i];
        for (int c = 0; c < N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&s->codes[c], memory_order_relaxed);
            if (!v) continue;
            prom_label l[] = {{"service", s->service}, {"method", s->method}, {"code", rpc_code_name(c)}};
            prom_sample(b, "ops_manager_rpc_calls_total", l, 3, (double)v);
        }
    }
    prom_family(b, "ops_manager_rpc_duration_seconds", PROM_HISTOGRAM,
                "Time from a call's arrival to its final status, by method.");
    for (size_t i = 0; i <= MMETRICS_MAX_METHODS; i++) {
        if (i >= n && i < MMETRICS_MAX_METHODS) continue;
        struct method_slot *s = &m->methods[i];
        uint64_t counts[N_LAT + 1], total = 0;
        for (size_t k = 0; k <= N_LAT; k++) total += counts[k] = atomic_load_explicit(&s->buckets[k], memory_order_relaxed);
        if (!total) continue;
        double sum = (double)atomic_load_explicit(&s->sum_us, memory_order_relaxed) / 1e6;
        prom_label l[] = {{"service", s->service}, {"method", s->method}};
        prom_histogram(b, "ops_manager_rpc_duration_seconds", l, 2, lat_s, counts, N_LAT, sum);
    }
}

static void write_store(mmetrics *m, prom_buf *b)
{
    store_stats ss;
    if (!m->st || store_get_stats(m->st, &ss) != 0) return;
    prom_label drv[] = {{"driver", store_driver_name(m->st)}};
    prom_family(b, "ops_store_commits_total", PROM_COUNTER, "Write transactions the store committed.");
    prom_sample(b, "ops_store_commits_total", drv, 1, (double)ss.commits);
    prom_family(b, "ops_store_commit_failures_total", PROM_COUNTER, "Write batches whose transaction failed.");
    prom_sample(b, "ops_store_commit_failures_total", drv, 1, (double)ss.failed_commits);
    prom_family(b, "ops_store_commit_duration_seconds", PROM_HISTOGRAM,
                "Time of one write batch, from begin to commit done.");
    prom_hist_write(b, "ops_store_commit_duration_seconds", drv, 1, &ss.commit_seconds);
    prom_family(b, "ops_store_commit_batch_size", PROM_HISTOGRAM, "Write requests committed together in one transaction.");
    prom_hist_write(b, "ops_store_commit_batch_size", drv, 1, &ss.batch_size);
}

static int write_fleet(mmetrics *m, prom_buf *b)
{
    size_t online = 0, offline = 0;
    liveness_counts(m->live, &online, &offline);
    prom_family(b, "ops_nodes", PROM_GAUGE, "Known nodes by status.");
    prom_sample(b, "ops_nodes", (prom_label[]){{"status", "online"}}, 1, (double)online);
    prom_sample(b, "ops_nodes", (prom_label[]){{"status", "offline"}}, 1, (double)offline);
    if (!m->st) return 0;

    store_node_filter f = {.status = STORE_NODE_ANY, .limit = MMETRICS_MAX_NODES};
    store_node_list nodes = {0};
    char err[256];
    if (store_list_nodes(m->st, &f, &nodes, err, sizeof err) != 0) {
        char q[300];
        log_error("metrics.scrape_failed", "error=%s", log_quote(q, sizeof q, err));
        return -1;
    }
    size_t total = online + offline;
    prom_family(b, "ops_metrics_nodes_omitted", PROM_GAUGE,
                "Nodes left out of the per-node series (only the first nodes by node_id are shown).");
    prom_sample(b, "ops_metrics_nodes_omitted", NULL, 0, total > nodes.n ? (double)(total - nodes.n) : 0);

    int64_t now = liveness_now(m->live);
    int *up = calloc(nodes.n ? nodes.n : 1, sizeof *up);
    int64_t *seen = calloc(nodes.n ? nodes.n : 1, sizeof *seen);
    int *known = calloc(nodes.n ? nodes.n : 1, sizeof *known);
    if (!up || !seen || !known) {
        free(up); free(seen); free(known);
        store_node_list_free(&nodes);
        return -1;
    }
    for (size_t i = 0; i < nodes.n; i++) known[i] = liveness_get(m->live, nodes.items[i].node_id, &up[i], &seen[i]);

    prom_family(b, "ops_node_info", PROM_GAUGE, "One per node, 1, carrying its descriptive labels.");
    for (size_t i = 0; i < nodes.n; i++) {
        if (!known[i]) continue;
        const store_node *n = &nodes.items[i];
        prom_label l[] = {{"node_id", n->node_id}, {"hostname", n->hostname}, {"ip", n->ip},
                          {"daemon_version", n->daemon_version}};
        prom_sample(b, "ops_node_info", l, 4, 1);
    }
    prom_family(b, "ops_node_up", PROM_GAUGE, "1 when the node is online, 0 when offline.");
    for (size_t i = 0; i < nodes.n; i++)
        if (known[i]) prom_sample(b, "ops_node_up", (prom_label[]){{"node_id", nodes.items[i].node_id}}, 1, up[i] ? 1 : 0);
    prom_family(b, "ops_node_last_seen_age_seconds", PROM_GAUGE, "Seconds since the node's last heartbeat.");
    for (size_t i = 0; i < nodes.n; i++) {
        if (!known[i]) continue;
        double age = seen[i] > 0 && now > seen[i] ? (double)(now - seen[i]) / 1000.0 : 0;
        prom_sample(b, "ops_node_last_seen_age_seconds", (prom_label[]){{"node_id", nodes.items[i].node_id}}, 1, age);
    }

    pthread_mutex_lock(&m->mu);
    prune(m);
    prom_family(b, "ops_node_metric", PROM_GAUGE, "Latest value the node reported, by metric type and key.");
    for (size_t i = 0; i < nodes.n; i++) {
        struct mnode *n = known[i] ? node_get(m, nodes.items[i].node_id, 0) : NULL;
        for (size_t k = 0; n && k < n->n_series; k++) {
            prom_label l[] = {{"node_id", n->id}, {"type", n->series[k].type}, {"key", n->series[k].key}};
            prom_sample(b, "ops_node_metric", l, 3, n->series[k].value);
        }
    }
    prom_family(b, "ops_node_metric_timestamp_seconds", PROM_GAUGE, "Unix time of the node's latest report, by metric type.");
    for (size_t i = 0; i < nodes.n; i++) {
        struct mnode *n = known[i] ? node_get(m, nodes.items[i].node_id, 0) : NULL;
        for (size_t k = 0; n && k < n->n_series; k++) {
            int first = 1; /* one sample per type: the newest of its keys */
            int64_t ts = n->series[k].ts;
            for (size_t j = 0; j < n->n_series && first; j++) {
                if (strcmp(n->series[j].type, n->series[k].type) != 0) continue;
                if (j < k) first = 0;
                else if (n->series[j].ts > ts) ts = n->series[j].ts;
            }
            if (!first) continue;
            prom_label l[] = {{"node_id", n->id}, {"type", n->series[k].type}};
            prom_sample(b, "ops_node_metric_timestamp_seconds", l, 2, (double)ts);
        }
    }
    prom_family(b, "ops_agent_up", PROM_GAUGE, "1 when the agent's last synced status is running.");
    for (size_t i = 0; i < nodes.n; i++) {
        struct mnode *n = known[i] ? node_get(m, nodes.items[i].node_id, 0) : NULL;
        for (size_t k = 0; n && k < n->n_agents; k++) {
            prom_label l[] = {{"node_id", n->id}, {"agent_id", n->agents[k].id}};
            prom_sample(b, "ops_agent_up", l, 2, n->agents[k].running);
        }
    }
    prom_family(b, "ops_agent_restarts_total", PROM_COUNTER,
                "Agent restarts the manager saw (pid changes between syncs) since it started.");
    for (size_t i = 0; i < nodes.n; i++) {
        struct mnode *n = known[i] ? node_get(m, nodes.items[i].node_id, 0) : NULL;
        for (size_t k = 0; n && k < n->n_agents; k++) {
            prom_label l[] = {{"node_id", n->id}, {"agent_id", n->agents[k].id}};
            prom_sample(b, "ops_agent_restarts_total", l, 2, (double)n->agents[k].restarts);
        }
    }
    pthread_mutex_unlock(&m->mu);
    free(up);
    free(seen);
    free(known);
    store_node_list_free(&nodes);
    return 0;
}

int mmetrics_fill(void *user, prom_buf *b)
{
    mmetrics *m = user;
    prom_family(b, "ops_manager_build_info", PROM_GAUGE, "1, with the version of ops-manager.");
    prom_sample(b, "ops_manager_build_info", (prom_label[]){{"version", OPS_VERSION}}, 1, 1);
    write_rpc(m, b);
    write_store(m, b);
    if (m->pool) {
        prom_family(b, "ops_manager_pool_channels", PROM_GAUGE, "Open client channels to daemons.");
        prom_sample(b, "ops_manager_pool_channels", NULL, 0, (double)pool_size(m->pool));
    }
    if (m->live && write_fleet(m, b) != 0) return -1;
    return 0;
}
