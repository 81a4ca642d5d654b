/* mgr_load: load generator for ops-manager's ManagerService, on our rpc client's async loop.
 *
 *   mgr_load --target HOST:PORT [--nodes N] [--channels C] [--inflight K] [--seconds S]
 *            [--report-ratio R] [--types T] [--values V] [--threads L] [--rate CALLS_PER_S]
 *            [--node-prefix P] [--no-register | --register-only]
 *
 * First registers N virtual nodes ("vnode-<i>") with RegisterNode (K in flight). Then, for S
 * seconds, keeps K calls in flight over C channels: each call goes to the next node in turn and
 * is a ReportMetrics with probability R (T metric types of V values each), else a Heartbeat.
 * With --rate the calls are paced at that many per second instead (still at most K in flight),
 * which is how a fleet of N nodes at a given interval behaves; without it the load is closed
 * (the next call starts when one ends), which measures saturation.
 *
 * Timestamps never repeat for a (node, type): each node has a counter starting at now - 10^6 s
 * that every report of it takes the next value of; so every run should use a fresh database or
 * the manager skips points it already has (values_inserted says how many were really new).
 *
 * Distinct connections: separate grpc channels with equal arguments share one TCP connection
 * (the core's global subchannel pool), and rpc_client_opts has no field for an arbitrary channel
 * argument; channel i therefore gets a window size 1 MiB + i bytes, a real but harmless
 * difference in its arguments, which gives it a connection of its own.
 *
 * Prints one key=value line: calls, calls_per_s, per call type count and p50/p99/p999 latency in
 * microseconds, errors by kind (gRPC code names, and success_false), values_committed_per_s
 * (values of ReportMetrics answered success=true, per second) and values_inserted (what the
 * manager's answers say was new). Exit 0 when there was no error, 1 otherwise, 2 on usage. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "manager.pb-c.h"
#include "rpc/client.h"

#define HB_METHOD "/manager.ManagerService/Heartbeat"
#define RM_METHOD "/manager.ManagerService/ReportMetrics"
#define REG_METHOD "/manager.ManagerService/RegisterNode"
#define N_CODES 17 /* gRPC codes 0..16 */

enum { K_HB, K_RM, K_REG, K_COUNT };
static const char *const kind_name[K_COUNT] = {"hb", "rm", "reg"};

typedef struct lat_buf {
    float *v;
    size_t n, cap;
} lat_buf;

typedef struct vnode {
    char id[48];
    atomic_llong next_ts;
} vnode;

typedef struct gen gen;

/* One call slot: at most one call in flight, so its buffers are touched by one thread at a time. */
typedef struct slot {
    gen *g;
    int index;
    int kind;
    double t0;
    uint64_t rng;
    lat_buf lat[K_COUNT];
    long success_false[K_COUNT];
    long codes[K_COUNT][N_CODES];
    long values_ok, values_inserted;
    /* A ReportMetrics request built once, refilled per call. */
    Manager__ReportMetricsRequest rm;
    Manager__MetricData *md, **mdp;
    Manager__MetricData__ValuesEntry *ve, **vep;
    int free_next; /* rate mode: free-list link */
} slot;

struct gen {
    int n_nodes, n_channels, inflight, types, values, threads;
    double seconds, ratio, rate;
    const char *prefix;
    rpc_channel **ch;
    rpc_loop *loop;
    vnode *nodes;
    char **type_names, **value_keys;
    slot *slots;
    atomic_long next_node, next_reg, live;
    atomic_uint next_ch;
    double until;
    int phase; /* K_REG while registering, else load */
    /* rate mode */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int free_head;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void lat_push(lat_buf *b, float us)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16384;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        if (!b->v) abort();
    }
    b->v[b->n++] = us;
}

static rpc_channel *pick_channel(gen *g)
{
    return g->ch[atomic_fetch_add(&g->next_ch, 1) % (unsigned)g->n_channels];
}

static void on_done(void *user, ProtobufCMessage *m, const rpc_result *res);

static void start_register(slot *s, long i)
{
    gen *g = s->g;
    Manager__RegisterNodeRequest req = MANAGER__REGISTER_NODE_REQUEST__INIT;
    char host[64];
    snprintf(host, sizeof host, "host-%ld", i);
    Manager__RegisterNodeRequest__LabelsEntry le = MANAGER__REGISTER_NODE_REQUEST__LABELS_ENTRY__INIT, *lep = &le;
    le.key = "bench";
    le.value = "mgr_load";
    req.node_id = g->nodes[i].id;
    req.hostname = host;
    req.ip = "10.0.0.1";
    req.os = "linux";
    req.arch = "amd64";
    req.n_labels = 1;
    req.labels = &lep;
    req.daemon_version = "bench";
    req.agent_version = "bench";
    s->kind = K_REG;
    s->t0 = now_s();
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "mgr-load"};
    rpc_call_unary_async(g->loop, pick_channel(g), REG_METHOD, &req.base, &manager__register_node_response__descriptor, &o,
                         on_done, s);
}

static void start_load_call(slot *s)
{
    gen *g = s->g;
    long ni = atomic_fetch_add(&g->next_node, 1) % g->n_nodes;
    vnode *n = &g->nodes[ni];
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "mgr-load"};
    int rm = g->ratio > 0 && (double)(xorshift(&s->rng) >> 11) / 9007199254740992.0 < g->ratio;
    s->t0 = now_s();
    if (rm) {
        s->kind = K_RM;
        int64_t ts = atomic_fetch_add(&n->next_ts, 1);
        s->rm.node_id = n->id;
        for (int t = 0; t < g->types; t++) {
            s->md[t].timestamp = ts;
            for (int v = 0; v < g->values; v++) s->ve[t * g->values + v].value = (double)(xorshift(&s->rng) % 10000) / 100.0;
        }
        rpc_call_unary_async(g->loop, pick_channel(g), RM_METHOD, &s->rm.base, &manager__report_metrics_response__descriptor, &o,
                             on_done, s);
    } else {
        s->kind = K_HB;
        Manager__HeartbeatRequest req = MANAGER__HEARTBEAT_REQUEST__INIT;
        req.node_id = n->id;
        req.timestamp = (int64_t)time(NULL);
        rpc_call_unary_async(g->loop, pick_channel(g), HB_METHOD, &req.base, &manager__heartbeat_response__descriptor, &o, on_done,
                             s);
    }
}

/* Closed mode: start the slot's next call, or retire the slot when the phase is over. */
static void next_call(slot *s)
{
    gen *g = s->g;
    if (g->phase == K_REG) {
        long i = atomic_fetch_add(&g->next_reg, 1);
        if (i < g->n_nodes) { start_register(s, i); return; }
    } else if (now_s() < g->until) {
        start_load_call(s);
        return;
    }
    atomic_fetch_sub(&g->live, 1);
}

static void on_done(void *user, ProtobufCMessage *m, const rpc_result *res)
{
    slot *s = user;
    gen *g = s->g;
    int k = s->kind;
    lat_push(&s->lat[k], (float)((now_s() - s->t0) * 1e6));
    int code = res->code >= 0 && res->code < N_CODES ? res->code : RPC_UNKNOWN;
    s->codes[k][code]++;
    if (m) {
        /* Every response of ManagerService starts with success (1) and message (2). */
        protobuf_c_boolean ok;
        const char *msg;
        if (k == K_HB) { ok = ((Manager__HeartbeatResponse *)m)->success; msg = ((Manager__HeartbeatResponse *)m)->message; }
        else if (k == K_RM) { ok = ((Manager__ReportMetricsResponse *)m)->success; msg = ((Manager__ReportMetricsResponse *)m)->message; }
        else { ok = ((Manager__RegisterNodeResponse *)m)->success; msg = ((Manager__RegisterNodeResponse *)m)->message; }
        if (!ok) {
            s->success_false[k]++;
        } else if (k == K_RM) {
            s->values_ok += (long)g->types * g->values;
            long ins;
            if (msg && sscanf(msg, "stored %ld values", &ins) == 1) s->values_inserted += ins;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (g->rate > 0 && g->phase != K_REG) {
        pthread_mutex_lock(&g->mu);
        s->free_next = g->free_head;
        g->free_head = s->index;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
        atomic_fetch_sub(&g->live, 1);
        return;
    }
    next_call(s);
}

static void wait_idle(gen *g)
{
    while (atomic_load(&g->live) > 0) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

/* Rate mode: this thread starts calls on schedule, each on a free slot; late_starts counts
 * calls that had to wait for a slot (the manager could not keep up with the rate). */
static long run_paced(gen *g, double t0)
{
    long late = 0;
    pthread_mutex_lock(&g->mu);
    g->free_head = -1;
    for (int i = g->inflight - 1; i >= 0; i--) { g->slots[i].free_next = g->free_head; g->free_head = i; }
    pthread_mutex_unlock(&g->mu);
    for (long n = 0;; n++) {
        double due = t0 + (double)n / g->rate;
        if (due >= g->until) break;
        double now = now_s();
        if (due > now) {
            double d = due - now;
            struct timespec ts = {(time_t)d, (long)((d - floor(d)) * 1e9)};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&g->mu);
        if (g->free_head < 0) late++;
        while (g->free_head < 0) pthread_cond_wait(&g->cv, &g->mu);
        slot *s = &g->slots[g->free_head];
        g->free_head = s->free_next;
        pthread_mutex_unlock(&g->mu);
        atomic_fetch_add(&g->live, 1);
        start_load_call(s);
    }
    wait_idle(g);
    return late;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void print_lat(gen *g, int k)
{
    size_t total = 0;
    for (int i = 0; i < g->inflight; i++) total += g->slots[i].lat[k].n;
    float *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) abort();
    size_t o = 0;
    for (int i = 0; i < g->inflight; i++) {
        if (g->slots[i].lat[k].n) memcpy(all + o, g->slots[i].lat[k].v, g->slots[i].lat[k].n * sizeof *all);
        o += g->slots[i].lat[k].n;
    }
    qsort(all, total, sizeof *all, cmp_float);
#define PCT(p) (total ? all[(size_t)((double)(total - 1) * (p))] : 0)
    printf(" %s_calls=%zu %s_p50_us=%.0f %s_p99_us=%.0f %s_p999_us=%.0f %s_max_us=%.0f", kind_name[k], total, kind_name[k], PCT(0.50),
           kind_name[k], PCT(0.99), kind_name[k], PCT(0.999), kind_name[k], total ? all[total - 1] : 0);
#undef PCT
    free(all);
}

/* Errors of one phase's kinds; prints them when print is set. Returns the count. */
static long count_errors(gen *g, const int *kinds, int nk, int print)
{
    long total = 0;
    for (int c = 1; c < N_CODES; c++) {
        long n = 0;
        for (int i = 0; i < g->inflight; i++)
            for (int j = 0; j < nk; j++) n += g->slots[i].codes[kinds[j]][c];
        if (n && print) printf(" errors_%s=%ld", rpc_code_name(c), n);
        total += n;
    }
    long f = 0;
    for (int i = 0; i < g->inflight; i++)
        for (int j = 0; j < nk; j++) f += g->slots[i].success_false[kinds[j]];
    if (f && print) printf(" errors_success_false=%ld", f);
    return total + f;
}

/* The timed phase: runs it, prints the result line, returns the number of errors. */
static long run_load(gen *g, int registered, double reg_s)
{
    g->phase = K_HB;
    double t0 = now_s();
    g->until = t0 + g->seconds;
    long late = 0;
    if (g->rate > 0) {
        late = run_paced(g, t0);
    } else {
        atomic_store(&g->live, g->inflight);
        for (int i = 0; i < g->inflight; i++) next_call(&g->slots[i]);
        wait_idle(g);
    }
    double el = now_s() - t0;
    long calls = 0, values_ok = 0, values_ins = 0;
    for (int i = 0; i < g->inflight; i++) {
        calls += (long)(g->slots[i].lat[K_HB].n + g->slots[i].lat[K_RM].n);
        values_ok += g->slots[i].values_ok;
        values_ins += g->slots[i].values_inserted;
    }
    printf("nodes=%d channels=%d inflight=%d threads=%d report_ratio=%.3f types=%d values=%d", g->n_nodes, g->n_channels, g->inflight,
           g->threads, g->ratio, g->types, g->values);
    if (g->rate > 0) printf(" rate=%.0f late_starts=%ld", g->rate, late);
    if (registered) printf(" register_s=%.2f", reg_s);
    printf(" seconds=%.2f calls=%ld calls_per_s=%.0f", el, calls, (double)calls / el);
    print_lat(g, K_HB);
    print_lat(g, K_RM);
    int kl[] = {K_HB, K_RM};
    long errors = count_errors(g, kl, 2, 0);
    printf(" errors=%ld", errors);
    count_errors(g, kl, 2, 1);
    printf(" values_committed=%ld values_committed_per_s=%.0f values_inserted=%ld\n", values_ok, (double)values_ok / el, values_ins);
    fflush(stdout);
    return errors;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --target HOST:PORT [--nodes N] [--channels C] [--inflight K] [--seconds S]\n"
            "          [--report-ratio R] [--types T] [--values V] [--threads L] [--rate CALLS_PER_S]\n"
            "          [--node-prefix P] [--no-register | --register-only]\n",
            argv0);
}

int main(int argc, char **argv)
{
    gen g;
    memset(&g, 0, sizeof g);
    g.n_nodes = 1000;
    g.n_channels = 4;
    g.inflight = 64;
    g.seconds = 10;
    g.ratio = 0.1;
    g.types = 4;
    g.values = 10;
    g.threads = 2;
    g.prefix = "vnode-";
    const char *target = NULL;
    int do_register = 1, register_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-register")) { do_register = 0; continue; }
        if (!strcmp(a, "--register-only")) { register_only = 1; continue; }
        if (!v) { usage(argv[0]); return 2; }
        i++;
        if (!strcmp(a, "--target")) target = v;
        else if (!strcmp(a, "--nodes")) g.n_nodes = atoi(v);
        else if (!strcmp(a, "--channels")) g.n_channels = atoi(v);
        else if (!strcmp(a, "--inflight")) g.inflight = atoi(v);
        else if (!strcmp(a, "--seconds")) g.seconds = atof(v);
        else if (!strcmp(a, "--report-ratio")) g.ratio = atof(v);
        else if (!strcmp(a, "--types")) g.types = atoi(v);
        else if (!strcmp(a, "--values")) g.values = atoi(v);
        else if (!strcmp(a, "--threads")) g.threads = atoi(v);
        else if (!strcmp(a, "--rate")) g.rate = atof(v);
        else if (!strcmp(a, "--node-prefix")) g.prefix = v;
        else { usage(argv[0]); return 2; }
    }
    if (!target || g.n_nodes < 1 || g.n_channels < 1 || g.inflight < 1 || g.types < 1 || g.values < 1 || g.threads < 1 ||
        g.ratio < 0 || g.ratio > 1 || g.seconds <= 0) {
        usage(argv[0]);
        return 2;
    }
    log_open(LOGL_WARN, NULL);
    char err[256];
    g.ch = calloc((size_t)g.n_channels, sizeof *g.ch);
    if (!g.ch) abort();
    for (int i = 0; i < g.n_channels; i++) {
        rpc_client_opts co;
        memset(&co, 0, sizeof co);
        rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
        co.settings.window_bytes += i; /* distinct args: a connection of its own (see top) */
        g.ch[i] = rpc_channel_new(target, &co, err, sizeof err);
        if (!g.ch[i]) { fprintf(stderr, "mgr_load: %s\n", err); return 1; }
    }
    g.loop = rpc_loop_new(g.threads, err, sizeof err);
    if (!g.loop) { fprintf(stderr, "mgr_load: %s\n", err); return 1; }
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);

    int64_t ts0 = (int64_t)time(NULL) - 1000000;
    g.nodes = calloc((size_t)g.n_nodes, sizeof *g.nodes);
    if (!g.nodes) abort();
    for (int i = 0; i < g.n_nodes; i++) {
        snprintf(g.nodes[i].id, sizeof g.nodes[i].id, "%s%d", g.prefix, i);
        atomic_init(&g.nodes[i].next_ts, ts0);
    }
    static const char *const std_types[] = {"cpu", "memory", "disk", "network"};
    g.type_names = calloc((size_t)g.types, sizeof *g.type_names);
    g.value_keys = calloc((size_t)g.values, sizeof *g.value_keys);
    if (!g.type_names || !g.value_keys) abort();
    for (int t = 0; t < g.types; t++) {
        char b[32];
        if (t < 4) snprintf(b, sizeof b, "%s", std_types[t]);
        else snprintf(b, sizeof b, "type%d", t);
        g.type_names[t] = strdup(b);
    }
    for (int v = 0; v < g.values; v++) {
        char b[32];
        snprintf(b, sizeof b, "value_%d", v);
        g.value_keys[v] = strdup(b);
    }
    g.slots = calloc((size_t)g.inflight, sizeof *g.slots);
    if (!g.slots) abort();
    for (int i = 0; i < g.inflight; i++) {
        slot *s = &g.slots[i];
        s->g = &g;
        s->index = i;
        s->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(i + 1) * 0xBF58476D1CE4E5B9ull);
        manager__report_metrics_request__init(&s->rm);
        s->md = calloc((size_t)g.types, sizeof *s->md);
        s->mdp = calloc((size_t)g.types, sizeof *s->mdp);
        s->ve = calloc((size_t)g.types * (size_t)g.values, sizeof *s->ve);
        s->vep = calloc((size_t)g.types * (size_t)g.values, sizeof *s->vep);
        if (!s->md || !s->mdp || !s->ve || !s->vep) abort();
        for (int t = 0; t < g.types; t++) {
            manager__metric_data__init(&s->md[t]);
            s->md[t].type = g.type_names[t];
            s->md[t].n_values = (size_t)g.values;
            s->md[t].values = s->vep + t * g.values;
            for (int v = 0; v < g.values; v++) {
                Manager__MetricData__ValuesEntry *e = &s->ve[t * g.values + v];
                manager__metric_data__values_entry__init(e);
                e->key = g.value_keys[v];
                s->vep[t * g.values + v] = e;
            }
            s->mdp[t] = &s->md[t];
        }
        s->rm.n_metrics = (size_t)g.types;
        s->rm.metrics = s->mdp;
    }

    double reg_s = 0;
    if (do_register) {
        g.phase = K_REG;
        double r0 = now_s();
        atomic_store(&g.live, g.inflight);
        for (int i = 0; i < g.inflight; i++) next_call(&g.slots[i]);
        wait_idle(&g);
        reg_s = now_s() - r0;
        int kr[] = {K_REG};
        long reg_err = count_errors(&g, kr, 1, 0);
        if (reg_err) {
            fprintf(stderr, "mgr_load: %ld of %d registrations failed:", reg_err, g.n_nodes);
            fflush(stderr);
            count_errors(&g, kr, 1, 1);
            printf("\n");
            return 1;
        }
    }
    long errors = 0;
    if (register_only) printf("nodes=%d register_s=%.2f registers_per_s=%.0f\n", g.n_nodes, reg_s, (double)g.n_nodes / reg_s);
    else errors = run_load(&g, do_register, reg_s);

    rpc_loop_free(g.loop);
    for (int i = 0; i < g.n_channels; i++) rpc_channel_free(g.ch[i]);
    free(g.ch);
    for (int i = 0; i < g.inflight; i++) {
        slot *s = &g.slots[i];
        for (int k = 0; k < K_COUNT; k++) free(s->lat[k].v);
        free(s->md);
        free(s->mdp);
        free(s->ve);
        free(s->vep);
    }
    free(g.slots);
    for (int t = 0; t < g.types; t++) free(g.type_names[t]);
    for (int v = 0; v < g.values; v++) free(g.value_keys[v]);
    free(g.type_names);
    free(g.value_keys);
    free(g.nodes);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return errors ? 1 : 0;
}
