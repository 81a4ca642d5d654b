/* fleet: a whole fleet of virtual daemons against one ops-manager (issue 10), on our rpc
 * client's async loop: no thread per daemon or per stream.
 *
 *   fleet --target HOST:PORT [--nodes N] [--seconds S] [--channels C] [--threads L]
 *         [--pid PID | --pid-file FILE] [--samples FILE] [--label L] [--prefix P]
 *         [--hb S] [--metrics S] [--sync-every S] [--agents A] [--change-rate R]
 *         [--types T] [--values V] [--ramp S] [--reconnect S] [--warmup S]
 *         [--publish-cmd CMD [--publish-at S]] [--disrupt-cmd CMD --disrupt-at S] [--ready-file FILE]
 *
 * Each virtual daemon does what ops-daemon's link.c and updater.c do, with the same jittered
 * backoffs: RegisterNode (label bench=L), then one unary call at a time: Heartbeat every --hb
 * s (10), SyncAgentStates at registration and whenever its simulated agents change (a fraction
 * --change-rate of the daemons per minute, 0.02; --sync-every adds a periodic sync, as the real
 * daemon does every 60 s), ReportMetrics with --types metric types (4) of --values values every
 * --metrics s (60). Beside that it keeps one SubscribeUpdates stream open, resuming after its
 * last_event_id; every event is answered with ReportEventResult (outcome applied). A call that
 * finds the manager gone (UNAVAILABLE, DEADLINE_EXCEEDED, ...) makes the daemon register again
 * after a full-jitter pause of [0, 3 x --reconnect] doubling to at most 6 x --reconnect (link.c);
 * a stream that ends is reopened after [0, --reconnect / 10] doubling likewise (updater.c).
 * Start times are spread over --ramp s and every daemon's timers get a random phase, so the
 * steady state is smooth: N/hb heartbeats and N/metrics reports per second.
 *
 * Scenarios (bench/fleet.sh drives them):
 *   --publish-cmd: once all daemons are registered and their streams have been open for 2 s
 *     (and not before --publish-at seconds from the start: the registration ramp is over),
 *     the time is marked and CMD runs (sh -c; it publishes one event to label L); the run then
 *     ends when every daemon got an event (or at --seconds). Reported: pub_received and the
 *     delivery time from the mark to each daemon's receipt, p50/p99/max.
 *   --disrupt-cmd CMD --disrupt-at S: at S s after the start CMD runs (it restarts the manager;
 *     the mark is just before it). Calls that fail from the mark until every daemon is back are
 *     counted apart (down_failures), not as errors. A daemon is back when, after the mark, it
 *     had a heartbeat answered and its stream is open again (all_back_s: the last one's time,
 *     from the daemons' own marks); all are reporting once every daemon is back and none has
 *     a metrics report spooled or overdue (all_reporting_s, checked once a second). A daemon
 *     that had to register again sends its heartbeat and the report its spool holds at once,
 *     like the real daemon's spool flush. -1 = not reached. Per second after the mark: how
 *     many daemons
 *     registered again and how many reopened their stream (max fractions of N, and the
 *     histogram on stderr).
 *   --samples FILE with --warmup S: the manager samples go to FILE too, and the RSS and fd
 *     slopes (least squares over the samples after the warm-up) are reported, for the soak.
 *
 * Manager sampler: every 2 s, /proc/PID/stat (utime+stime -> CPU % of one core), VmRSS and
 * Threads from /proc/PID/status, and the entries of /proc/PID/fd; mean and max reported. With
 * --pid-file the pid is read at every sample (the restart scenario has a new manager).
 *
 * Connections: daemon i uses channel i % C (C = N/100 by default, at least 1); each channel has
 * a TCP connection of its own (mgr_load.c's window-size trick), so 20,000 daemons need 200
 * connections, far below the ~28,000 ephemeral ports of one loopback source address: no extra
 * source addresses are needed.
 *
 * Output: a key=value line every 10 s on stderr, and one summary line on stdout at the end:
 * per call type (reg hb rm sync res) count and p50/p99/p999/max latency in microseconds (of
 * answered calls), the same as steady_* for the calls started from 10 s after all daemons were
 * ready until the end or the scenario's mark (the registration ramp left out), the generator's
 * own CPU (% of one core over the run) and peak RSS, errors by code name, stream opens and
 * ends, the manager samples, the scenario's results.
 * Exit 0 when there was no error (and, with --publish-cmd, every daemon got the event), 1
 * otherwise, 2 on usage. */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "manager.pb-c.h"
#include "rpc/client.h"

#define M_REG "/manager.ManagerService/RegisterNode"
#define M_HB "/manager.ManagerService/Heartbeat"
#define M_RM "/manager.ManagerService/ReportMetrics"
#define M_SYNC "/proto.DaemonService/SyncAgentStates"
#define M_SUB "/manager.ManagerService/SubscribeUpdates"
#define M_RES "/manager.ManagerService/ReportEventResult"
#define N_CODES 17
#define MAX_AGENTS 16
#define RES_RING 8
#define TICK_S 0.025
/* After the last daemon registered and opened its stream, the manager still works off the ramp's
 * backlog (spooled syncs, first reports) for a few seconds; steady-state percentiles start after. */
#define STEADY_SETTLE_S 10.0

enum { K_REG, K_HB, K_RM, K_SYNC, K_RES, K_STREAM, K_COUNT };
static const char *const kind_name[K_COUNT] = {"reg", "hb", "rm", "sync", "res", "stream"};

typedef struct fleet fleet;

typedef struct lat_buf {
    float *v;
    size_t n, cap;
} lat_buf;

/* One virtual daemon. mu guards everything below it; calls start outside mu (a call that
 * cannot start runs its callback at once, which takes mu). */
typedef struct vd {
    fleet *f;
    int idx;
    char id[40];
    rpc_channel *ch;
    pthread_mutex_t mu;
    unsigned rng;
    double start_at;
    /* link.c */
    int registered, ever_registered, busy, lost, attempt, kind;
    double next_attempt, hb_due, rm_due, sync_due, next_change, t0;
    int agents_changed, rm_spooled;
    char agent_status[MAX_AGENTS];
    int agent_pid[MAX_AGENTS];
    /* updater.c */
    rpc_astream *stream;
    int stream_open, stream_attempt, res_busy, stream_established;
    double stream_next, stream_open_t, res_t0;
    uint64_t last_event_id;
    uint64_t res_ring[RES_RING];
    int res_n;
    /* scenario marks (0 = not yet) */
    double back_hb_t, rereg_t, event_t;
} vd;

struct fleet {
    int n, n_ch, threads, types, values, agents;
    double seconds, hb_s, rm_s, sync_every_s, change_rate, ramp_s, reconnect_s, warmup_s, publish_at;
    const char *label, *prefix, *pid_file, *samples_path, *publish_cmd, *disrupt_cmd, *ready_file;
    double disrupt_at;
    int pid;
    rpc_channel **ch;
    rpc_loop *loop;
    vd *vds;
    char **type_names, **value_keys;
    double t_start;
    atomic_int stopping;
    /* marks: written by the main thread, read by callbacks */
    _Atomic double mark_t;  /* publish or disruption */
    _Atomic double all_back_t; /* disruption: when the last daemon was back (0 = not yet) */
    _Atomic double steady_t;   /* STEADY_SETTLE_S after all were ready (0 = not yet) */
    double all_reporting_t;    /* ... and none had a report waiting (main thread only) */
    /* stats, under st_mu */
    pthread_mutex_t st_mu;
    lat_buf lat[K_COUNT];
    lat_buf steady[K_COUNT]; /* calls started after steady_t and before any mark */
    long codes[K_COUNT][N_CODES], success_false[K_COUNT], down_failures, dup_events, events;
    atomic_long calls_iv, stream_opens, stream_ends_error;
    /* sampler */
    pthread_t sampler;
    pthread_mutex_t smp_mu;
    pthread_cond_t smp_cv;
    double *s_t, *s_cpu, *s_rss, *s_thr, *s_fd;
    size_t s_n, s_cap;
    FILE *samples;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double frand(unsigned *rng) { return (double)rand_r(rng) / ((double)RAND_MAX + 1.0); }

static void lat_push(lat_buf *b, float us)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 65536;
        b->v = realloc(b->v, b->cap * sizeof *b->v);
        if (!b->v) abort();
    }
    b->v[b->n++] = us;
}

/* Full jitter, as the daemon's link_backoff_ms (link.c, also used by updater.c): before the
 * first success, [0, reconnect/10] doubling to 6 x reconnect; after losing an established
 * connection (lost) or update stream, always [0, 3 x reconnect]. */
static double backoff_s(fleet *f, unsigned *rng, int attempt, int lost)
{
    if (lost) return frand(rng) * f->reconnect_s * 3;
    double base = f->reconnect_s / 10, cap = f->reconnect_s * 6;
    if (base < 0.1) base = 0.1;
    double c = base;
    for (int i = 0; i < attempt && c < cap; i++) c *= 2;
    if (c > cap) c = cap;
    return frand(rng) * c;
}

/* The manager gone, or the call lost on the way (link.c's CALL_DOWN). */
static int is_down(int code)
{
    return code == RPC_UNAVAILABLE || code == RPC_DEADLINE_EXCEEDED || code == RPC_CANCELLED || code == RPC_UNKNOWN ||
           code == RPC_INTERNAL;
}

/* A failure while the manager is being restarted is expected, not an error. */
static int in_disruption(fleet *f, double t)
{
    double m = atomic_load(&f->mark_t);
    double b = atomic_load(&f->all_back_t);
    return f->disrupt_cmd && m > 0 && t >= m - 0.5 && (b == 0 || t <= b);
}

/* Records a finished call; returns 1 when it counts as a success. */
static int account(fleet *f, int k, double t0, int code, int success)
{
    double t = now_s();
    atomic_fetch_add(&f->calls_iv, 1);
    pthread_mutex_lock(&f->st_mu);
    int ok = code == RPC_OK && success;
    if (ok) {
        lat_push(&f->lat[k], (float)((t - t0) * 1e6));
        double st = atomic_load(&f->steady_t), m = atomic_load(&f->mark_t);
        if (st > 0 && t0 >= st && (m == 0 || t0 < m)) lat_push(&f->steady[k], (float)((t - t0) * 1e6));
    } else if (in_disruption(f, t)) {
        f->down_failures++;
    } else if (code != RPC_OK) {
        f->codes[k][code >= 0 && code < N_CODES ? code : RPC_UNKNOWN]++;
    } else {
        f->success_false[k]++;
    }
    pthread_mutex_unlock(&f->st_mu);
    return ok;
}

/* ---- unary calls ------------------------------------------------------------------------------ */

static void on_call(void *user, ProtobufCMessage *m, const rpc_result *res);

static void start_register(vd *d)
{
    fleet *f = d->f;
    Manager__RegisterNodeRequest req = MANAGER__REGISTER_NODE_REQUEST__INIT;
    Manager__RegisterNodeRequest__LabelsEntry le = MANAGER__REGISTER_NODE_REQUEST__LABELS_ENTRY__INIT, *lep = &le;
    le.key = "bench";
    le.value = (char *)f->label;
    char ip[32];
    snprintf(ip, sizeof ip, "10.%d.%d.%d", (d->idx >> 16) & 255, (d->idx >> 8) & 255, d->idx & 255);
    req.node_id = d->id;
    req.hostname = d->id;
    req.ip = ip;
    req.os = "linux";
    req.arch = "amd64";
    req.n_labels = 1;
    req.labels = &lep;
    req.daemon_version = "fleet-bench";
    req.agent_version = "fleet-bench";
    rpc_channel_reset_backoff(d->ch); /* as link.c: our own backoff, not the core's */
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "fleet"};
    rpc_call_unary_async(f->loop, d->ch, M_REG, &req.base, &manager__register_node_response__descriptor, &o, on_call, d);
}

static void start_heartbeat(vd *d)
{
    Manager__HeartbeatRequest req = MANAGER__HEARTBEAT_REQUEST__INIT;
    req.node_id = d->id;
    req.timestamp = (int64_t)time(NULL);
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "fleet"};
    rpc_call_unary_async(d->f->loop, d->ch, M_HB, &req.base, &manager__heartbeat_response__descriptor, &o, on_call, d);
}

static void start_metrics(vd *d, unsigned seed)
{
    fleet *f = d->f;
    Manager__ReportMetricsRequest req = MANAGER__REPORT_METRICS_REQUEST__INIT;
    Manager__MetricData md[16], *mdp[16];
    Manager__MetricData__ValuesEntry ve[16 * 16], *vep[16 * 16];
    int64_t ts = (int64_t)time(NULL);
    for (int t = 0; t < f->types; t++) {
        manager__metric_data__init(&md[t]);
        md[t].type = f->type_names[t];
        md[t].timestamp = ts;
        md[t].n_values = (size_t)f->values;
        md[t].values = vep + t * f->values;
        for (int v = 0; v < f->values; v++) {
            Manager__MetricData__ValuesEntry *e = &ve[t * f->values + v];
            manager__metric_data__values_entry__init(e);
            e->key = f->value_keys[v];
            e->value = (double)(rand_r(&seed) % 10000) / 100.0;
            vep[t * f->values + v] = e;
        }
        mdp[t] = &md[t];
    }
    req.node_id = d->id;
    req.n_metrics = (size_t)f->types;
    req.metrics = mdp;
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "fleet"};
    rpc_call_unary_async(f->loop, d->ch, M_RM, &req.base, &manager__report_metrics_response__descriptor, &o, on_call, d);
}

static void start_sync(vd *d, const char *status, const int *pids)
{
    fleet *f = d->f;
    Proto__SyncAgentStatesRequest req = PROTO__SYNC_AGENT_STATES_REQUEST__INIT;
    Proto__AgentState st[MAX_AGENTS], *stp[MAX_AGENTS];
    char ids[MAX_AGENTS][24];
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < f->agents; i++) {
        proto__agent_state__init(&st[i]);
        snprintf(ids[i], sizeof ids[i], "agent-%d", i);
        st[i].agent_id = ids[i];
        st[i].status = status[i] ? "running" : "stopped";
        st[i].pid = status[i] ? pids[i] : 0;
        st[i].last_heartbeat = now;
        st[i].type = "process";
        st[i].version = "1.0.0";
        stp[i] = &st[i];
    }
    req.node_id = d->id;
    req.n_states = (size_t)f->agents;
    req.states = stp;
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "fleet"};
    rpc_call_unary_async(f->loop, d->ch, M_SYNC, &req.base, &proto__sync_agent_states_response__descriptor, &o, on_call, d);
}

static void on_result(void *user, ProtobufCMessage *m, const rpc_result *res);

static void start_result(vd *d, uint64_t event_id)
{
    Manager__EventResultRequest req = MANAGER__EVENT_RESULT_REQUEST__INIT;
    req.node_id = d->id;
    req.event_id = event_id;
    req.success = 1;
    req.outcome = "applied";
    req.message = "fleet bench";
    rpc_call_opts o = {.timeout_ms = 30000, .trace_id = "fleet"};
    rpc_call_unary_async(d->f->loop, d->ch, M_RES, &req.base, &manager__event_result_response__descriptor, &o, on_result, d);
}

/* Every ManagerService/DaemonService answer starts with success (1) and message (2). */
static void answer_of(int k, ProtobufCMessage *m, int *success, const char **msg)
{
    *success = 0;
    *msg = NULL;
    if (!m) return;
    switch (k) {
    case K_REG: *success = ((Manager__RegisterNodeResponse *)m)->success; *msg = ((Manager__RegisterNodeResponse *)m)->message; break;
    case K_HB: *success = ((Manager__HeartbeatResponse *)m)->success; *msg = ((Manager__HeartbeatResponse *)m)->message; break;
    case K_RM: *success = ((Manager__ReportMetricsResponse *)m)->success; *msg = ((Manager__ReportMetricsResponse *)m)->message; break;
    case K_SYNC: *success = ((Proto__SyncAgentStatesResponse *)m)->success; *msg = ((Proto__SyncAgentStatesResponse *)m)->message; break;
    default: *success = ((Manager__EventResultResponse *)m)->success; *msg = ((Manager__EventResultResponse *)m)->message; break;
    }
}

static void on_call(void *user, ProtobufCMessage *m, const rpc_result *res)
{
    vd *d = user;
    fleet *f = d->f;
    pthread_mutex_lock(&d->mu);
    int k = d->kind;
    double t0 = d->t0;
    pthread_mutex_unlock(&d->mu);
    int success;
    const char *msg;
    answer_of(k, m, &success, &msg);
    int unregistered = res->code == RPC_UNAUTHENTICATED || (res->code == RPC_OK && !success && msg && !strcmp(msg, "node not registered"));
    int ok = account(f, k, t0, res->code, success);
    double t = now_s();
    double mark = atomic_load(&f->mark_t);
    pthread_mutex_lock(&d->mu);
    d->busy = 0;
    if (ok) {
        switch (k) {
        case K_REG:
            d->registered = 1;
            d->attempt = 0;
            if (mark > 0 && t >= mark && d->ever_registered && !d->rereg_t) d->rereg_t = t;
            if (!d->ever_registered) {
                /* Random phases: the fleet's calls spread evenly over the intervals. */
                d->hb_due = t + frand(&d->rng) * f->hb_s;
                d->rm_due = t + frand(&d->rng) * f->rm_s;
                d->sync_due = t;
            } else if (d->lost) {
                /* Back after losing the manager: heartbeat and the spooled report at once. */
                d->hb_due = t;
                d->rm_spooled = 1;
                d->sync_due = t;
            }
            d->ever_registered = 1;
            d->lost = 0;
            break;
        case K_HB:
            if (mark > 0 && t >= mark && !d->back_hb_t) d->back_hb_t = t;
            break;
        case K_RM:
            d->rm_spooled = 0;
            break;
        case K_SYNC:
            d->sync_due = f->sync_every_s > 0 ? t + f->sync_every_s : 1e300;
            break;
        default: break;
        }
    } else if (k == K_REG) {
        d->next_attempt = t + backoff_s(f, &d->rng, d->attempt++, d->lost);
    } else if (unregistered) {
        d->registered = 0;
        d->next_attempt = t;
    } else if (is_down(res->code)) {
        d->registered = 0;
        d->lost = 1;
        if (k == K_RM) d->rm_spooled = 1;
        d->next_attempt = t + backoff_s(f, &d->rng, d->attempt++, 1);
    } else if (k == K_SYNC) {
        d->sync_due = t + f->reconnect_s / 10;
    } else if (k == K_RM) {
        d->rm_spooled = 1;
    }
    pthread_mutex_unlock(&d->mu);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static void on_result(void *user, ProtobufCMessage *m, const rpc_result *res)
{
    vd *d = user;
    int success;
    const char *msg;
    answer_of(K_RES, m, &success, &msg);
    pthread_mutex_lock(&d->mu);
    double t0 = d->res_t0;
    pthread_mutex_unlock(&d->mu);
    int ok = account(d->f, K_RES, t0, res->code, success);
    pthread_mutex_lock(&d->mu);
    d->res_busy = 0;
    /* Sent (or refused for good): drop it; lost on the way: keep it for the next try. */
    if ((ok || !is_down(res->code)) && d->res_n > 0) {
        memmove(d->res_ring, d->res_ring + 1, (size_t)(d->res_n - 1) * sizeof *d->res_ring);
        d->res_n--;
    }
    pthread_mutex_unlock(&d->mu);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- the update stream ------------------------------------------------------------------------- */

static void on_event(void *user, ProtobufCMessage *m)
{
    vd *d = user;
    fleet *f = d->f;
    Manager__UpdateEvent *ev = (Manager__UpdateEvent *)m;
    double t = now_s();
    int dup = 0;
    pthread_mutex_lock(&d->mu);
    d->stream_attempt = 0;
    if (ev->event_id > d->last_event_id) {
        d->last_event_id = ev->event_id;
        double mark = atomic_load(&f->mark_t);
        if (!d->event_t && f->publish_cmd && mark > 0) d->event_t = t;
        if (d->res_n < RES_RING) d->res_ring[d->res_n++] = ev->event_id;
    } else {
        dup = 1;
    }
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_lock(&f->st_mu);
    f->events++;
    f->dup_events += dup;
    pthread_mutex_unlock(&f->st_mu);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void on_stream_end(void *user, const rpc_result *res)
{
    vd *d = user;
    fleet *f = d->f;
    double t = now_s();
    int stopping = atomic_load(&f->stopping);
    if (!stopping) {
        if (in_disruption(f, t)) {
            pthread_mutex_lock(&f->st_mu);
            f->down_failures++;
            pthread_mutex_unlock(&f->st_mu);
        } else {
            /* An update stream has no end in normal operation: any end is an error. */
            atomic_fetch_add(&f->stream_ends_error, 1);
            pthread_mutex_lock(&f->st_mu);
            f->codes[K_STREAM][res->code >= 0 && res->code < N_CODES ? res->code : RPC_UNKNOWN]++;
            pthread_mutex_unlock(&f->st_mu);
        }
    }
    pthread_mutex_lock(&d->mu);
    rpc_astream *h = d->stream;
    d->stream = NULL;
    d->stream_open = 0;
    if (t - d->stream_open_t >= 1.0) { /* it was up: a loss (updater.c) */
        d->stream_established = 1;
        d->stream_attempt = 0;
    }
    d->stream_next = t + backoff_s(f, &d->rng, d->stream_attempt++, d->stream_established);
    pthread_mutex_unlock(&d->mu);
    rpc_stream_async_release(h);
}

static void open_stream(vd *d, uint64_t after)
{
    fleet *f = d->f;
    Manager__SubscribeUpdatesRequest req = MANAGER__SUBSCRIBE_UPDATES_REQUEST__INIT;
    req.node_id = d->id;
    req.last_event_id = after;
    rpc_call_opts o = {.timeout_ms = 0, .trace_id = "fleet"};
    rpc_channel_reset_backoff(d->ch);
    rpc_astream *h = NULL;
    atomic_fetch_add(&f->stream_opens, 1);
    /* d->stream is set under mu before on_stream_end can clear it: open holds no lock, so the
     * end may already have run (stream_open is back to 0); then the handle is ours to drop. */
    rpc_stream_async_open(f->loop, d->ch, M_SUB, &req.base, &manager__update_event__descriptor, &o, on_event, on_stream_end, d, &h);
    pthread_mutex_lock(&d->mu);
    if (d->stream_open == 2) {
        d->stream = h;
        d->stream_open = 1;
        h = NULL;
    }
    pthread_mutex_unlock(&d->mu);
    rpc_stream_async_release(h);
}

/* ---- the driver ----------------------------------------------------------------------------------- */

/* One pass over a daemon: starts what is due. */
static void drive(vd *d, double t)
{
    fleet *f = d->f;
    enum { NONE, REG, HB, RM, SYNC } act = NONE;
    int res = 0, stream = 0;
    uint64_t res_id = 0, after = 0;
    char status[MAX_AGENTS];
    int pids[MAX_AGENTS];
    unsigned seed = 0;
    pthread_mutex_lock(&d->mu);
    if (t < d->start_at) { pthread_mutex_unlock(&d->mu); return; }
    if (f->change_rate > 0 && t >= d->next_change) {
        int a = rand_r(&d->rng) % f->agents;
        d->agent_status[a] = !d->agent_status[a];
        if (d->agent_status[a]) d->agent_pid[a] = 1000 + rand_r(&d->rng) % 60000;
        d->agents_changed = 1;
        d->next_change = t - log(1.0 - frand(&d->rng)) * 60.0 / f->change_rate;
    }
    if (!d->busy) {
        if (!d->registered) {
            if (t >= d->next_attempt) act = REG;
        } else if (t >= d->hb_due) {
            act = HB;
            d->hb_due = t + f->hb_s;
        } else if (d->agents_changed || t >= d->sync_due) {
            act = SYNC;
            d->agents_changed = 0;
            memcpy(status, d->agent_status, sizeof status);
            memcpy(pids, d->agent_pid, sizeof pids);
        } else if (t >= d->rm_due || d->rm_spooled) {
            act = RM;
            if (t >= d->rm_due) d->rm_due += f->rm_s;
            if (d->rm_due < t) d->rm_due = t + f->rm_s;
            d->rm_spooled = 0;
            seed = (unsigned)rand_r(&d->rng);
        }
        if (act != NONE) {
            d->busy = 1;
            d->kind = act == REG ? K_REG : act == HB ? K_HB : act == RM ? K_RM : K_SYNC;
            d->t0 = now_s(); /* not the pass's t: a pass over 20,000 daemons takes a while */
        }
    }
    if (d->ever_registered && !d->res_busy && d->res_n > 0) {
        res = 1;
        res_id = d->res_ring[0];
        d->res_busy = 1;
        d->res_t0 = now_s();
    }
    if (d->ever_registered && !d->stream_open && !d->stream && t >= d->stream_next) {
        stream = 1;
        after = d->last_event_id;
        d->stream_open = 2; /* opening */
        d->stream_open_t = t;
    }
    pthread_mutex_unlock(&d->mu);
    switch (act) {
    case REG: start_register(d); break;
    case HB: start_heartbeat(d); break;
    case RM: start_metrics(d, seed); break;
    case SYNC: start_sync(d, status, pids); break;
    default: break;
    }
    if (res) start_result(d, res_id);
    if (stream) open_stream(d, after);
}

/* ---- manager sampler ------------------------------------------------------------------------------ */

static int read_pid(fleet *f)
{
    if (!f->pid_file) return f->pid;
    FILE *fp = fopen(f->pid_file, "r");
    int p = 0;
    if (fp) {
        if (fscanf(fp, "%d", &p) != 1) p = 0;
        fclose(fp);
    }
    return p;
}

static int sample_once(int pid, double *ticks, double *rss_mib, double *threads, double *fds)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ") ": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    *ticks = (double)(ut + st);
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    fp = fopen(path, "r");
    if (!fp) return -1;
    *rss_mib = *threads = 0;
    while (fgets(buf, sizeof buf, fp)) {
        long v;
        if (sscanf(buf, "VmRSS: %ld", &v) == 1) *rss_mib = (double)v / 1024.0;
        if (sscanf(buf, "Threads: %ld", &v) == 1) *threads = (double)v;
    }
    fclose(fp);
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    long c = 0;
    struct dirent *e;
    while ((e = readdir(dir))) if (e->d_name[0] != '.') c++;
    closedir(dir);
    *fds = (double)c;
    return 0;
}

static void push_sample(fleet *f, double t, double cpu, double rss, double thr, double fds)
{
    if (f->s_n == f->s_cap) {
        f->s_cap = f->s_cap ? f->s_cap * 2 : 1024;
        f->s_t = realloc(f->s_t, f->s_cap * sizeof(double));
        f->s_cpu = realloc(f->s_cpu, f->s_cap * sizeof(double));
        f->s_rss = realloc(f->s_rss, f->s_cap * sizeof(double));
        f->s_thr = realloc(f->s_thr, f->s_cap * sizeof(double));
        f->s_fd = realloc(f->s_fd, f->s_cap * sizeof(double));
        if (!f->s_t || !f->s_cpu || !f->s_rss || !f->s_thr || !f->s_fd) abort();
    }
    f->s_t[f->s_n] = t;
    f->s_cpu[f->s_n] = cpu;
    f->s_rss[f->s_n] = rss;
    f->s_thr[f->s_n] = thr;
    f->s_fd[f->s_n] = fds;
    f->s_n++;
}

static void *sampler_main(void *arg)
{
    fleet *f = arg;
    double tck = (double)sysconf(_SC_CLK_TCK);
    int last_pid = 0;
    double last_ticks = 0, last_t = 0;
    pthread_mutex_lock(&f->smp_mu);
    while (!atomic_load(&f->stopping)) {
        pthread_mutex_unlock(&f->smp_mu);
        int pid = read_pid(f);
        double ticks, rss, thr, fds, t = now_s();
        if (pid > 0 && sample_once(pid, &ticks, &rss, &thr, &fds) == 0) {
            if (pid == last_pid) {
                double cpu = 100.0 * (ticks - last_ticks) / tck / (t - last_t);
                pthread_mutex_lock(&f->smp_mu);
                push_sample(f, t - f->t_start, cpu, rss, thr, fds);
                pthread_mutex_unlock(&f->smp_mu);
                if (f->samples) {
                    fprintf(f->samples, "t=%.1f pid=%d cpu_pct=%.1f rss_mib=%.1f threads=%.0f fds=%.0f\n", t - f->t_start, pid, cpu, rss,
                            thr, fds);
                    fflush(f->samples);
                }
            }
            last_pid = pid;
            last_ticks = ticks;
            last_t = t;
        }
        pthread_mutex_lock(&f->smp_mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        if (!atomic_load(&f->stopping)) pthread_cond_timedwait(&f->smp_cv, &f->smp_mu, &until);
    }
    pthread_mutex_unlock(&f->smp_mu);
    return NULL;
}

/* ---- report ------------------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_lat(lat_buf *b, const char *prefix, const char *kind)
{
    if (b->n) qsort(b->v, b->n, sizeof *b->v, cmp_float);
#define PCT(p) (b->n ? b->v[(size_t)((double)(b->n - 1) * (p))] : 0)
    printf(" %s%s_calls=%zu %s%s_p50_us=%.0f %s%s_p99_us=%.0f %s%s_p999_us=%.0f %s%s_max_us=%.0f", prefix, kind, b->n, prefix, kind,
           PCT(0.5), prefix, kind, PCT(0.99), prefix, kind, PCT(0.999), prefix, kind, b->n ? b->v[b->n - 1] : 0);
#undef PCT
}

static void mean_max(const double *v, size_t from, size_t n, double *mean, double *max)
{
    double s = 0, m = 0;
    for (size_t i = from; i < n; i++) { s += v[i]; if (v[i] > m) m = v[i]; }
    *mean = n > from ? s / (double)(n - from) : 0;
    *max = m;
}

/* Least-squares slope of v over t (per hour) for samples with t >= from_t. */
static double slope_per_h(const double *t, const double *v, size_t n, double from_t)
{
    double st = 0, sv = 0, stt = 0, stv = 0;
    long c = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < from_t) continue;
        st += t[i]; sv += v[i]; stt += t[i] * t[i]; stv += t[i] * v[i];
        c++;
    }
    double den = (double)c * stt - st * st;
    return c >= 3 && den > 0 ? ((double)c * stv - st * sv) / den * 3600.0 : 0;
}

static long count_errors(fleet *f, int print)
{
    long total = 0;
    for (int c = 1; c < N_CODES; c++) {
        long n = 0;
        for (int k = 0; k < K_COUNT; k++) n += f->codes[k][c];
        if (n && print) {
            printf(" errors_%s=%ld", rpc_code_name(c), n);
            for (int k = 0; k < K_COUNT; k++)
                if (f->codes[k][c]) printf(" errors_%s_%s=%ld", kind_name[k], rpc_code_name(c), f->codes[k][c]);
        }
        total += n;
    }
    for (int k = 0; k < K_COUNT; k++) {
        if (f->success_false[k] && print) printf(" errors_%s_success_false=%ld", kind_name[k], f->success_false[k]);
        total += f->success_false[k];
    }
    return total;
}

static void run_cmd(const char *what, const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "fleet: %s command exited with %d\n", what, rc);
}

static void *cmd_thread(void *arg)
{
    fleet *f = arg;
    if (f->publish_cmd) run_cmd("publish", f->publish_cmd);
    else run_cmd("disrupt", f->disrupt_cmd);
    return NULL;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --target HOST:PORT [--nodes N] [--seconds S] [--channels C] [--threads L]\n"
            "       [--pid PID | --pid-file FILE] [--samples FILE] [--label L] [--prefix P] [--hb S] [--metrics S]\n"
            "       [--sync-every S] [--agents A] [--change-rate R] [--types T] [--values V] [--ramp S] [--reconnect S]\n"
            "       [--warmup S] [--publish-cmd CMD] [--disrupt-cmd CMD --disrupt-at S] [--ready-file FILE]\n",
            argv0);
}

int main(int argc, char **argv)
{
    fleet *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->n = 2000;
    f->seconds = 60;
    f->threads = 2;
    f->types = 4;
    f->values = 8;
    f->agents = 3;
    f->hb_s = 10;
    f->rm_s = 60;
    f->change_rate = 0.02;
    f->ramp_s = -1;
    f->reconnect_s = 10;
    f->warmup_s = 300;
    f->label = "fleet";
    f->prefix = "fleet-";
    const char *target = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { usage(argv[0]); return 2; }
        i++;
        if (!strcmp(a, "--target")) target = v;
        else if (!strcmp(a, "--nodes")) f->n = atoi(v);
        else if (!strcmp(a, "--seconds")) f->seconds = atof(v);
        else if (!strcmp(a, "--channels")) f->n_ch = atoi(v);
        else if (!strcmp(a, "--threads")) f->threads = atoi(v);
        else if (!strcmp(a, "--pid")) f->pid = atoi(v);
        else if (!strcmp(a, "--pid-file")) f->pid_file = v;
        else if (!strcmp(a, "--samples")) f->samples_path = v;
        else if (!strcmp(a, "--label")) f->label = v;
        else if (!strcmp(a, "--prefix")) f->prefix = v;
        else if (!strcmp(a, "--hb")) f->hb_s = atof(v);
        else if (!strcmp(a, "--metrics")) f->rm_s = atof(v);
        else if (!strcmp(a, "--sync-every")) f->sync_every_s = atof(v);
        else if (!strcmp(a, "--agents")) f->agents = atoi(v);
        else if (!strcmp(a, "--change-rate")) f->change_rate = atof(v);
        else if (!strcmp(a, "--types")) f->types = atoi(v);
        else if (!strcmp(a, "--values")) f->values = atoi(v);
        else if (!strcmp(a, "--ramp")) f->ramp_s = atof(v);
        else if (!strcmp(a, "--reconnect")) f->reconnect_s = atof(v);
        else if (!strcmp(a, "--warmup")) f->warmup_s = atof(v);
        else if (!strcmp(a, "--publish-cmd")) f->publish_cmd = v;
        else if (!strcmp(a, "--publish-at")) f->publish_at = atof(v);
        else if (!strcmp(a, "--disrupt-cmd")) f->disrupt_cmd = v;
        else if (!strcmp(a, "--disrupt-at")) f->disrupt_at = atof(v);
        else if (!strcmp(a, "--ready-file")) f->ready_file = v;
        else { usage(argv[0]); return 2; }
    }
    if (f->n_ch <= 0) f->n_ch = f->n / 100 > 0 ? f->n / 100 : 1;
    if (f->ramp_s < 0) f->ramp_s = f->hb_s;
    if (!target || f->n < 1 || f->seconds <= 0 || f->threads < 1 || f->types < 1 || f->types > 16 || f->values < 1 || f->values > 16 ||
        f->agents < 1 || f->agents > MAX_AGENTS || f->hb_s <= 0 || f->rm_s <= 0 || f->reconnect_s <= 0 ||
        (f->publish_cmd && f->disrupt_cmd) || (f->disrupt_cmd && f->disrupt_at <= 0)) {
        usage(argv[0]);
        return 2;
    }
    log_open(LOGL_ERROR, NULL);
    char err[256];
    if (f->samples_path && !(f->samples = fopen(f->samples_path, "w"))) {
        fprintf(stderr, "fleet: cannot write %s\n", f->samples_path);
        return 1;
    }
    f->ch = calloc((size_t)f->n_ch, sizeof *f->ch);
    if (!f->ch) abort();
    for (int i = 0; i < f->n_ch; i++) {
        rpc_client_opts co;
        memset(&co, 0, sizeof co);
        rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
        co.settings.window_bytes += i; /* distinct args: a connection of its own (mgr_load.c) */
        f->ch[i] = rpc_channel_new(target, &co, err, sizeof err);
        if (!f->ch[i]) { fprintf(stderr, "fleet: %s\n", err); return 1; }
    }
    f->loop = rpc_loop_new(f->threads, err, sizeof err);
    if (!f->loop) { fprintf(stderr, "fleet: %s\n", err); return 1; }
    static const char *const std_types[] = {"cpu", "memory", "disk", "network"};
    f->type_names = calloc((size_t)f->types, sizeof *f->type_names);
    f->value_keys = calloc((size_t)f->values, sizeof *f->value_keys);
    if (!f->type_names || !f->value_keys) abort();
    for (int t = 0; t < f->types; t++) {
        char b[32];
        if (t < 4) snprintf(b, sizeof b, "%s", std_types[t]);
        else snprintf(b, sizeof b, "type%d", t);
        f->type_names[t] = strdup(b);
    }
    for (int v = 0; v < f->values; v++) {
        char b[32];
        snprintf(b, sizeof b, "value_%d", v);
        f->value_keys[v] = strdup(b);
    }
    pthread_mutex_init(&f->st_mu, NULL);
    pthread_mutex_init(&f->smp_mu, NULL);
    pthread_cond_init(&f->smp_cv, NULL);
    f->t_start = now_s();
    f->vds = calloc((size_t)f->n, sizeof *f->vds);
    if (!f->vds) abort();
    for (int i = 0; i < f->n; i++) {
        vd *d = &f->vds[i];
        d->f = f;
        d->idx = i;
        snprintf(d->id, sizeof d->id, "%s%05d", f->prefix, i);
        d->ch = f->ch[i % f->n_ch];
        pthread_mutex_init(&d->mu, NULL);
        d->rng = (unsigned)(i * 2654435761u) ^ (unsigned)getpid();
        d->start_at = f->t_start + frand(&d->rng) * f->ramp_s;
        for (int a = 0; a < f->agents; a++) { d->agent_status[a] = 1; d->agent_pid[a] = 1000 + a; }
        d->next_change = f->change_rate > 0 ? d->start_at - log(1.0 - frand(&d->rng)) * 60.0 / f->change_rate : 1e300;
        d->sync_due = 1e300;
    }
    if (pthread_create(&f->sampler, NULL, sampler_main, f) != 0) { fprintf(stderr, "fleet: cannot start the sampler\n"); return 1; }

    double end = f->t_start + f->seconds, next_iv = f->t_start + 10, ready_t = 0, next_check = 0;
    int cmd_started = 0, all_delivered = 0;
    pthread_t cmd_th;
    long last_calls_total = 0;
    for (;;) {
        double t = now_s();
        if (t >= end || all_delivered) break;
        for (int i = 0; i < f->n; i++) drive(&f->vds[i], t);
        /* Once a second: readiness, scenario marks, progress. */
        if (t >= next_check) {
            next_check = t + 1;
            int reg = 0, open_long = 0, back = 0, reporting = 0, delivered = 0;
            for (int i = 0; i < f->n; i++) {
                vd *d = &f->vds[i];
                pthread_mutex_lock(&d->mu);
                reg += d->registered;
                open_long += d->stream_open == 1 && t - d->stream_open_t >= 2;
                int b = d->back_hb_t > 0 && d->stream_open == 1;
                back += b;
                /* reporting: nothing spooled, no report overdue (by more than a second) */
                reporting += b && !d->rm_spooled && t < d->rm_due + 1;
                delivered += d->event_t > 0;
                pthread_mutex_unlock(&d->mu);
            }
            if (!ready_t && reg == f->n && open_long == f->n) {
                ready_t = t;
                atomic_store(&f->steady_t, t + STEADY_SETTLE_S);
                fprintf(stderr, "fleet: ready after %.1f s (all %d registered, streams open)\n", t - f->t_start, f->n);
                if (f->ready_file) {
                    FILE *fp = fopen(f->ready_file, "w");
                    if (fp) { fprintf(fp, "ready t=%.1f\n", t - f->t_start); fclose(fp); }
                }
            }
            if (!cmd_started && ((f->publish_cmd && ready_t && t - f->t_start >= f->publish_at) || (f->disrupt_cmd && t - f->t_start >= f->disrupt_at))) {
                if (f->disrupt_cmd && !ready_t) fprintf(stderr, "fleet: warning: disrupting before all daemons were ready\n");
                atomic_store(&f->mark_t, now_s());
                if (pthread_create(&cmd_th, NULL, cmd_thread, f) == 0) cmd_started = 1;
                else { fprintf(stderr, "fleet: cannot start the command thread\n"); break; }
            }
            double mark = atomic_load(&f->mark_t);
            if (f->disrupt_cmd && mark > 0 && !atomic_load(&f->all_back_t) && back == f->n) {
                /* A daemon counts as back only with a heartbeat after the mark, so every one
                 * has seen the restarted manager. */
                atomic_store(&f->all_back_t, t);
                fprintf(stderr, "fleet: all %d back %.1f s after the restart began\n", f->n, t - mark);
            }
            if (f->disrupt_cmd && atomic_load(&f->all_back_t) > 0 && !f->all_reporting_t && reporting == f->n) {
                f->all_reporting_t = t;
                fprintf(stderr, "fleet: all %d reporting %.1f s after the restart began\n", f->n, t - mark);
            }
            if (f->publish_cmd && mark > 0 && delivered == f->n) all_delivered = 1;
            if (t >= next_iv) {
                next_iv += 10;
                long calls = atomic_load(&f->calls_iv);
                pthread_mutex_lock(&f->st_mu);
                long errs = count_errors(f, 0), down = f->down_failures;
                pthread_mutex_unlock(&f->st_mu);
                pthread_mutex_lock(&f->smp_mu);
                double rss = f->s_n ? f->s_rss[f->s_n - 1] : 0, cpu = f->s_n ? f->s_cpu[f->s_n - 1] : 0;
                pthread_mutex_unlock(&f->smp_mu);
                fprintf(stderr, "t=%.0f registered=%d streams=%d calls_per_s=%.0f errors=%ld down_failures=%ld mgr_cpu_pct=%.0f mgr_rss_mib=%.0f\n",
                        t - f->t_start, reg, open_long, (double)(calls - last_calls_total) / 10.0, errs, down, cpu, rss);
                last_calls_total = calls;
            }
        }
        struct timespec ts = {0, (long)(TICK_S * 1e9)};
        nanosleep(&ts, NULL);
    }
    double t_end = now_s();
    atomic_store(&f->stopping, 1);
    pthread_mutex_lock(&f->smp_mu);
    pthread_cond_signal(&f->smp_cv);
    pthread_mutex_unlock(&f->smp_mu);
    pthread_join(f->sampler, NULL);
    if (cmd_started) pthread_join(cmd_th, NULL);
    /* Snapshot the scenario results before the streams are torn down. */
    double mark = atomic_load(&f->mark_t);
    int nsec = (int)(t_end - (mark > 0 ? mark : t_end)) + 2;
    int *h_reg = calloc((size_t)nsec, sizeof *h_reg), *h_stream = calloc((size_t)nsec, sizeof *h_stream);
    double *deliv = calloc((size_t)f->n, sizeof *deliv);
    if (!h_reg || !h_stream || !deliv) abort();
    int n_deliv = 0, n_back = 0, streams_open = 0;
    double last_back = 0;
    for (int i = 0; i < f->n; i++) {
        vd *d = &f->vds[i];
        pthread_mutex_lock(&d->mu);
        streams_open += d->stream_open == 1;
        if (mark > 0) {
            if (d->rereg_t >= mark) h_reg[(int)(d->rereg_t - mark)]++;
            int stream_back = d->stream_open == 1 && d->stream_open_t >= mark;
            if (stream_back) h_stream[(int)(d->stream_open_t - mark)]++;
            if (d->back_hb_t > 0 && stream_back) {
                n_back++;
                double b = d->back_hb_t > d->stream_open_t ? d->back_hb_t : d->stream_open_t;
                if (b > last_back) last_back = b;
            }
            if (d->event_t > 0) deliv[n_deliv++] = d->event_t - mark;
        }
        pthread_mutex_unlock(&d->mu);
    }
    for (int i = 0; i < f->n; i++) {
        vd *d = &f->vds[i];
        pthread_mutex_lock(&d->mu);
        if (d->stream) rpc_stream_async_cancel(d->stream);
        pthread_mutex_unlock(&d->mu);
    }
    rpc_loop_free(f->loop); /* waits for the calls in flight and the cancelled streams */

    double el = t_end - f->t_start;
    long calls = 0;
    for (int k = 0; k < K_COUNT; k++) calls += (long)f->lat[k].n;
    printf("nodes=%d channels=%d threads=%d seconds=%.1f hb_s=%.0f metrics_s=%.0f ready_s=%.1f calls=%ld calls_per_s=%.0f", f->n, f->n_ch,
           f->threads, el, f->hb_s, f->rm_s, ready_t ? ready_t - f->t_start : -1.0, calls, (double)calls / el);
    for (int k = 0; k < K_STREAM; k++) print_lat(&f->lat[k], "", kind_name[k]);
    double st = atomic_load(&f->steady_t);
    printf(" steady_from_s=%.1f", st > 0 ? st - f->t_start : -1.0);
    for (int k = 0; k < K_STREAM; k++) print_lat(&f->steady[k], "steady_", kind_name[k]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double self_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                      (double)ru.ru_stime.tv_usec / 1e6;
    printf(" gen_cpu_pct=%.1f gen_rss_mib=%.0f", 100.0 * self_cpu / el, (double)ru.ru_maxrss / 1024.0);
    long errors = count_errors(f, 0);
    printf(" errors=%ld", errors);
    count_errors(f, 1);
    printf(" stream_opens=%ld streams_open_at_end=%d events=%ld dup_events=%ld", atomic_load(&f->stream_opens), streams_open, f->events,
           f->dup_events);
    if (f->s_n) {
        double m, x;
        /* CPU and memory over the part of the run after the start-up ramp. */
        size_t from = 0;
        while (from + 1 < f->s_n && f->s_t[from] < f->ramp_s + 5) from++;
        mean_max(f->s_cpu, from, f->s_n, &m, &x);
        printf(" mgr_samples=%zu mgr_cpu_pct_mean=%.1f mgr_cpu_pct_max=%.1f", f->s_n - from, m, x);
        mean_max(f->s_rss, from, f->s_n, &m, &x);
        printf(" mgr_rss_mib_mean=%.0f mgr_rss_mib_max=%.0f", m, x);
        mean_max(f->s_thr, from, f->s_n, &m, &x);
        printf(" mgr_threads_mean=%.0f mgr_threads_max=%.0f", m, x);
        mean_max(f->s_fd, from, f->s_n, &m, &x);
        printf(" mgr_fds_mean=%.0f mgr_fds_max=%.0f", m, x);
        if (f->samples_path)
            printf(" warmup_s=%.0f rss_slope_mib_per_h=%.2f fds_slope_per_h=%.2f", f->warmup_s,
                   slope_per_h(f->s_t, f->s_rss, f->s_n, f->warmup_s), slope_per_h(f->s_t, f->s_fd, f->s_n, f->warmup_s));
    }
    int ok = errors == 0;
    if (f->publish_cmd) {
        qsort(deliv, (size_t)n_deliv, sizeof *deliv, cmp_double);
#define DP(p) (n_deliv ? deliv[(size_t)((double)(n_deliv - 1) * (p))] * 1000 : -1)
        printf(" pub_received=%d pub_p50_ms=%.1f pub_p99_ms=%.1f pub_max_ms=%.1f", n_deliv, DP(0.5), DP(0.99),
               n_deliv ? deliv[n_deliv - 1] * 1000 : -1);
#undef DP
        if (n_deliv != f->n) ok = 0;
    }
    if (f->disrupt_cmd) {
        int max_reg = 0, max_stream = 0;
        fprintf(stderr, "# seconds after the restart began: re-registered, streams reopened\n");
        for (int s = 0; s < nsec; s++) {
            if (h_reg[s] > max_reg) max_reg = h_reg[s];
            if (h_stream[s] > max_stream) max_stream = h_stream[s];
            if (h_reg[s] || h_stream[s]) fprintf(stderr, "reconnect_s=%d reg=%d stream=%d\n", s, h_reg[s], h_stream[s]);
        }
        printf(" down_failures=%ld back=%d all_back_s=%.1f all_reporting_s=%.1f max_rereg_per_s=%d max_rereg_frac=%.3f"
               " max_stream_per_s=%d max_stream_frac=%.3f",
               f->down_failures, n_back, n_back == f->n ? last_back - mark : -1.0,
               f->all_reporting_t > 0 ? f->all_reporting_t - mark : -1.0, max_reg, (double)max_reg / f->n, max_stream,
               (double)max_stream / f->n);
    }
    printf("\n");
    fflush(stdout);

    free(h_reg);
    free(h_stream);
    free(deliv);
    for (int i = 0; i < f->n_ch; i++) rpc_channel_free(f->ch[i]);
    free(f->ch);
    for (int i = 0; i < f->n; i++) pthread_mutex_destroy(&f->vds[i].mu);
    free(f->vds);
    for (int k = 0; k < K_COUNT; k++) {
        free(f->lat[k].v);
        free(f->steady[k].v);
    }
    for (int t = 0; t < f->types; t++) free(f->type_names[t]);
    for (int v = 0; v < f->values; v++) free(f->value_keys[v]);
    free(f->type_names);
    free(f->value_keys);
    free(f->s_t);
    free(f->s_cpu);
    free(f->s_rss);
    free(f->s_thr);
    free(f->s_fd);
    if (f->samples) fclose(f->samples);
    pthread_mutex_destroy(&f->st_mu);
    pthread_mutex_destroy(&f->smp_mu);
    pthread_cond_destroy(&f->smp_cv);
    free(f);
    return ok ? 0 : 1;
}
