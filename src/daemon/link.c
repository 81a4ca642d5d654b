/* link: register, heartbeat, report (through the spool) and sync, with jittered reconnects. */
#include "daemon/link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "daemon/collectors.h"
#include "daemon/spool.h"
#include "daemon/nodesecret.h"
#include "manager.pb-c.h"
#include "rpc/client.h"

#define SYNC_EVERY_MS 60000
#define NOT_REGISTERED "node not registered"
/* The manager made a placeholder for us (it had lost our row): register to fill it in. */
#define AUTO_REGISTERED "auto-registered: send RegisterNode"

struct link_s {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes the sender: stop, new report, agent change */
    pthread_cond_t collect_cv;
    int stop;
    int agents_changed, reregister;
    char node_id[128];
    sup *sup;
    rpc_channel *ch;
    rpc_channel *next_ch; /* made on reload (new certificate files); the sender swaps it in */
    coll *coll;
    spool *spool;
    pthread_t sender, collector;
    int have_sender, have_collector;
    /* what RegisterNode sends */
    char hostname[256], ip[64], os[32], arch[72], address[128];
    int stream_only; /* manager.stream_only: register without the address */
    dconfig_label *labels;
    size_t n_labels;
    int64_t timeout_ms, heartbeat_ms, reconnect_ms;
    unsigned rng;
    link_stats st;
    /* node_auth token mode; the sender thread's alone (daemon/nodesecret.h) */
    char secret[256], enroll_token[512], secret_path[4096];
    char bearer[600]; /* "Bearer <secret>" sent on every call; "" = none */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv until deadline (monotonic ms) or a signal. Caller holds l->mu. */
static void wait_until(link_t *l, pthread_cond_t *cv, int64_t deadline)
{
    int64_t now = mono_ms();
    if (deadline <= now) return;
    int64_t ms = deadline - now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(cv, &l->mu, &ts);
}

/* ---- host facts ---------------------------------------------------------------------------- */

/* The address other hosts reach us at: the source address of a route to the manager, else the
 * first non-loopback IPv4 address, else loopback. */
static void primary_ip(const char *manager, char *out, size_t n)
{
    snprintf(out, n, "127.0.0.1");
    char host[256] = "";
    const char *p = manager;
    if (!strncmp(p, "dns:///", 7)) p += 7;
    snprintf(host, sizeof host, "%s", p);
    char *comma = strchr(host, ',');
    if (comma) *comma = 0;
    char *colon = strrchr(host, ':');
    const char *port = "9090";
    if (colon) { *colon = 0; port = colon + 1; }
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_family = AF_INET}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) == 0) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in me;
        socklen_t len = sizeof me;
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 && getsockname(fd, (struct sockaddr *)&me, &len) == 0 &&
            me.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) {
            inet_ntop(AF_INET, &me.sin_addr, out, (socklen_t)n);
            close(fd);
            freeaddrinfo(ai);
            return;
        }
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
    }
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)) continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)n);
        break;
    }
    freeifaddrs(ifs);
}

/* Go's names for architectures, as the original daemon reports them. */
static const char *go_arch(const char *machine)
{
    if (!strcmp(machine, "x86_64")) return "amd64";
    if (!strcmp(machine, "aarch64")) return "arm64";
    if (!strncmp(machine, "armv", 4)) return "arm";
    if (!strcmp(machine, "i686") || !strcmp(machine, "i386")) return "386";
    return machine;
}

static void copy_labels(link_t *l, const dconfig *cfg)
{
    for (size_t i = 0; i < l->n_labels; i++) { free(l->labels[i].key); free(l->labels[i].value); }
    free(l->labels);
    l->labels = calloc(cfg->n_labels ? cfg->n_labels : 1, sizeof *l->labels);
    if (!l->labels) abort();
    for (size_t i = 0; i < cfg->n_labels; i++) {
        l->labels[i].key = strdup(cfg->labels[i].key);
        l->labels[i].value = strdup(cfg->labels[i].value);
    }
    l->n_labels = cfg->n_labels;
}

/* ---- calls ----------------------------------------------------------------------------------- */

typedef enum { CALL_OK, CALL_DOWN, CALL_UNREGISTERED, CALL_REFUSED } call_outcome;

static call_outcome outcome(const rpc_result *res, int success, const char *message)
{
    /* our secret was refused (node deleted, secret replaced): register again, which tells
     * why and enrolls anew when we still have an enrollment token */
    if (res->code == RPC_UNAUTHENTICATED) return CALL_UNREGISTERED;
    if (res->code == RPC_UNAVAILABLE || res->code == RPC_DEADLINE_EXCEEDED || res->code == RPC_CANCELLED ||
        res->code == RPC_UNKNOWN || res->code == RPC_INTERNAL)
        return CALL_DOWN;
    if (res->code != RPC_OK) return CALL_REFUSED;
    if (!success) return message && !strcmp(message, NOT_REGISTERED) ? CALL_UNREGISTERED : CALL_REFUSED;
    return CALL_OK;
}

/* Metadata for a call: the bearer when we have one (md must hold 3 entries). */
static const char *const *auth_md(const link_t *l, const char *md[3])
{
    if (!l->bearer[0]) return NULL;
    md[0] = "authorization";
    md[1] = l->bearer;
    md[2] = NULL;
    return md;
}

static void set_secret(link_t *l, const char *secret)
{
    snprintf(l->secret, sizeof l->secret, "%s", secret);
    if (secret[0]) snprintf(l->bearer, sizeof l->bearer, "Bearer %s", secret);
    else l->bearer[0] = 0;
}

static call_outcome register_once(link_t *l, int *secret_refused);

static call_outcome do_register(link_t *l)
{
    int refused = 0;
    call_outcome oc = register_once(l, &refused);
    if (refused && l->enroll_token[0]) {
        log_info("link.reenroll", "node=%s msg=\"registering with the enrollment token again\"", l->node_id);
        oc = register_once(l, &refused);
    }
    return oc;
}

static call_outcome register_once(link_t *l, int *secret_refused)
{
    *secret_refused = 0;
    /* the secret when we have one, else the enrollment token (when configured) */
    int enrolling = !l->secret[0] && l->enroll_token[0];
    char enroll_bearer[600];
    const char *md[3];
    const char *const *mdp = auth_md(l, md);
    if (enrolling) {
        snprintf(enroll_bearer, sizeof enroll_bearer, "Bearer %s", l->enroll_token);
        md[0] = "authorization";
        md[1] = enroll_bearer;
        md[2] = NULL;
        mdp = md;
    }
    Manager__RegisterNodeRequest req = MANAGER__REGISTER_NODE_REQUEST__INIT;
    req.node_id = l->node_id;
    req.hostname = l->hostname;
    req.ip = l->ip;
    req.os = l->os;
    req.arch = l->arch;
    req.daemon_version = OPS_VERSION;
    req.agent_version = "";
    req.daemon_address = l->stream_only ? "" : l->address;
    pthread_mutex_lock(&l->mu);
    size_t n = l->n_labels;
    Manager__RegisterNodeRequest__LabelsEntry *ents = calloc(n ? n : 1, sizeof *ents);
    Manager__RegisterNodeRequest__LabelsEntry **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!ents || !ptrs) abort();
    for (size_t i = 0; i < n; i++) {
        manager__register_node_request__labels_entry__init(&ents[i]);
        ents[i].key = strdup(l->labels[i].key);
        ents[i].value = strdup(l->labels[i].value);
        ptrs[i] = &ents[i];
    }
    pthread_mutex_unlock(&l->mu);
    req.n_labels = n;
    req.labels = ptrs;
    rpc_call_opts o = {.timeout_ms = l->timeout_ms, .metadata = mdp};
    rpc_result res;
    ProtobufCMessage *m = NULL;
    rpc_call_unary(l->ch, "/manager.ManagerService/RegisterNode", &req.base, &manager__register_node_response__descriptor, &m, &o, &res);
    Manager__RegisterNodeResponse *r = (Manager__RegisterNodeResponse *)m;
    call_outcome oc = outcome(&res, r ? r->success : 0, r ? r->message : NULL);
    if (oc == CALL_OK && r->node_secret && r->node_secret[0]) {
        char err[512];
        if (nodesecret_save(l->secret_path, r->node_secret, err, sizeof err) != 0)
            log_error("link.secret_save_failed", "node=%s error=\"%s\" msg=\"the secret holds until the daemon stops\"", l->node_id, err);
        else
            log_info("link.enrolled", "node=%s secret_file=%s", l->node_id, l->secret_path);
        set_secret(l, r->node_secret);
    }
    if (res.code == RPC_UNAUTHENTICATED) {
        char q[600], err[512];
        if (l->secret[0]) {
            /* deleted or replaced on the manager: never send it again */
            *secret_refused = 1;
            log_warn("link.secret_refused", "node=%s manager=%s msg=%s action=%s", l->node_id, rpc_channel_target(l->ch),
                     log_quote(q, sizeof q, res.message), l->enroll_token[0] ? "re-enroll" : "none (no enrollment token configured)");
            set_secret(l, "");
            if (nodesecret_forget(l->secret_path, err, sizeof err) != 0) log_warn("link.secret_forget_failed", "error=\"%s\"", err);
        } else {
            log_error("link.enrollment_refused", "node=%s manager=%s msg=%s", l->node_id, rpc_channel_target(l->ch),
                      log_quote(q, sizeof q, res.message));
        }
    }
    if (oc == CALL_OK) {
        if (r->heartbeat_interval_seconds > 0) l->heartbeat_ms = r->heartbeat_interval_seconds * 1000;
        log_info("link.registered", "node=%s manager=%s heartbeat_ms=%lld", l->node_id, rpc_channel_target(l->ch), (long long)l->heartbeat_ms);
    } else {
        char q[600];
        log_warn("link.register_failed", "node=%s manager=%s code=%s msg=%s", l->node_id, rpc_channel_target(l->ch),
                 rpc_code_name(res.code), log_quote(q, sizeof q, r ? r->message : res.message));
    }
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    for (size_t i = 0; i < n; i++) { free(ents[i].key); free(ents[i].value); }
    free(ents);
    free(ptrs);
    return oc;
}

static call_outcome do_heartbeat(link_t *l)
{
    Manager__HeartbeatRequest req = MANAGER__HEARTBEAT_REQUEST__INIT;
    req.node_id = l->node_id;
    req.timestamp = wall_ms() / 1000;
    const char *md[3];
    rpc_call_opts o = {.timeout_ms = l->timeout_ms, .metadata = auth_md(l, md)};
    rpc_result res;
    ProtobufCMessage *m = NULL;
    rpc_call_unary(l->ch, "/manager.ManagerService/Heartbeat", &req.base, &manager__heartbeat_response__descriptor, &m, &o, &res);
    Manager__HeartbeatResponse *r = (Manager__HeartbeatResponse *)m;
    call_outcome oc = outcome(&res, r ? r->success : 0, r ? r->message : NULL);
    if (oc == CALL_OK && r && !strcmp(r->message, AUTO_REGISTERED)) {
        log_info("link.reregister", "node=%s reason=\"manager had no record of this node\"", l->node_id);
        oc = CALL_UNREGISTERED;
    }
    if (oc != CALL_OK && oc != CALL_UNREGISTERED)
        log_warn("link.heartbeat_failed", "node=%s code=%s msg=\"%s\"", l->node_id, rpc_code_name(res.code), r ? r->message : res.message);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    return oc;
}

static call_outcome do_sync(link_t *l)
{
    sup_agent_info *list;
    size_t n;
    if (sup_list(l->sup, &list, &n) != 0) return CALL_REFUSED;
    Proto__SyncAgentStatesRequest req = PROTO__SYNC_AGENT_STATES_REQUEST__INIT;
    req.node_id = l->node_id;
    Proto__AgentState *states = calloc(n ? n : 1, sizeof *states);
    Proto__AgentState **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!states || !ptrs) abort();
    for (size_t i = 0; i < n; i++) {
        proto__agent_state__init(&states[i]);
        states[i].agent_id = list[i].id;
        states[i].status = (char *)list[i].status;
        states[i].pid = list[i].pid;
        states[i].last_heartbeat = list[i].last_heartbeat;
        states[i].type = list[i].type;
        states[i].version = list[i].version;
        ptrs[i] = &states[i];
    }
    req.n_states = n;
    req.states = ptrs;
    const char *md[3];
    rpc_call_opts o = {.timeout_ms = l->timeout_ms, .idempotent = 1, .metadata = auth_md(l, md)};
    rpc_result res;
    ProtobufCMessage *m = NULL;
    rpc_call_unary(l->ch, "/proto.DaemonService/SyncAgentStates", &req.base, &proto__sync_agent_states_response__descriptor, &m, &o, &res);
    Proto__SyncAgentStatesResponse *r = (Proto__SyncAgentStatesResponse *)m;
    call_outcome oc = outcome(&res, r ? r->success : 0, r ? r->message : NULL);
    if (oc != CALL_OK)
        log_warn("link.sync_failed", "node=%s code=%s msg=\"%s\"", l->node_id, rpc_code_name(res.code), r ? r->message : res.message);
    else
        log_debug("link.synced", "node=%s agents=%zu", l->node_id, n);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    free(states);
    free(ptrs);
    sup_list_free(list, n);
    return oc;
}

/* Sends the oldest spooled report. CALL_OK also when the report was dropped as undeliverable. */
static call_outcome send_one(link_t *l, int *empty)
{
    uint64_t seq;
    void *data;
    size_t len;
    char err[512];
    int r = spool_peek(l->spool, &seq, &data, &len, err, sizeof err);
    *empty = r == 0;
    if (r == 0) return CALL_OK;
    if (r < 0) {
        log_error("link.spool_unreadable", "node=%s error=\"%s\"", l->node_id, err);
        return CALL_OK;
    }
    Manager__ReportMetricsRequest *req = manager__report_metrics_request__unpack(NULL, len, data);
    free(data);
    if (!req) {
        log_error("link.spool_corrupt", "node=%s seq=%llu msg=\"dropping a report that does not decode\"", l->node_id, (unsigned long long)seq);
        spool_remove(l->spool, seq);
        return CALL_OK;
    }
    const char *md[3];
    rpc_call_opts o = {.timeout_ms = l->timeout_ms, .metadata = auth_md(l, md)};
    rpc_result res;
    ProtobufCMessage *m = NULL;
    rpc_call_unary(l->ch, "/manager.ManagerService/ReportMetrics", &req->base, &manager__report_metrics_response__descriptor, &m, &o, &res);
    Manager__ReportMetricsResponse *resp = (Manager__ReportMetricsResponse *)m;
    call_outcome oc = outcome(&res, resp ? resp->success : 0, resp ? resp->message : NULL);
    if (oc == CALL_OK) {
        spool_remove(l->spool, seq);
        pthread_mutex_lock(&l->mu);
        l->st.reports_sent++;
        pthread_mutex_unlock(&l->mu);
    } else if (res.code == RPC_INVALID_ARGUMENT) {
        /* It will never be accepted; keeping it would block every report behind it. */
        log_error("link.report_rejected", "node=%s seq=%llu msg=\"%s\" action=dropped", l->node_id, (unsigned long long)seq, res.message);
        spool_remove(l->spool, seq);
        oc = CALL_OK;
    } else {
        log_warn("link.report_failed", "node=%s seq=%llu code=%s msg=\"%s\" pending=%zu", l->node_id, (unsigned long long)seq,
                 rpc_code_name(res.code), resp ? resp->message : res.message, spool_count(l->spool));
    }
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    manager__report_metrics_request__free_unpacked(req, NULL);
    return oc;
}

/* ---- threads ----------------------------------------------------------------------------------- */

/* Full jitter: uniform in [0, min(cap, base * 2^attempt)], cap = reconnect_interval x 6, base
 * reconnect_interval / 10, for a daemon that has not reached the manager yet. After an
 * established connection is lost, every window is [0, 3 x reconnect_interval] instead: the
 * whole fleet loses the manager within one heartbeat interval, and when it comes back a few
 * seconds later, short windows put a fifth of the fleet on it in a single second (measured with
 * 200 daemons and a 6 s restart: 17.5%, bench/RESULTS.md); 30 s windows spread the fleet to
 * about 3% a second. They do not grow: a daemon whose try fell in the outage must not wait a
 * doubled window on top (the fleet is back within 30 s of the manager, bench/RESULTS.md). */
int64_t link_backoff_ms(int64_t reconnect_ms, int attempt, int lost, unsigned *rng)
{
    if (lost) return (int64_t)((double)rand_r(rng) / RAND_MAX * (double)(reconnect_ms * 3));
    int64_t base = reconnect_ms / 10, cap = reconnect_ms * 6;
    if (base < 100) base = 100;
    int64_t ceil = base;
    for (int i = 0; i < attempt && ceil < cap; i++) ceil *= 2;
    if (ceil > cap) ceil = cap;
    return (int64_t)((double)rand_r(rng) / RAND_MAX * (double)ceil);
}

static void *sender_main(void *arg)
{
    pthread_setname_np(pthread_self(), "link-sender");
    link_t *l = arg;
    int registered = 0, attempt = 0, lost = 0;
    int64_t next_attempt = 0, hb_due = 0, sync_due = 0, report_retry = 0;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        int64_t now = mono_ms();
        if (l->next_ch) {
            /* Only the sender calls on ch, so it alone may swap and free it. */
            rpc_channel *old = l->ch;
            l->ch = l->next_ch;
            l->next_ch = NULL;
            pthread_mutex_unlock(&l->mu);
            rpc_channel_free(old);
            pthread_mutex_lock(&l->mu);
        }
        if (l->reregister) { l->reregister = 0; registered = 0; next_attempt = now; }
        if (!registered) {
            if (now < next_attempt) { wait_until(l, &l->cv, next_attempt); continue; }
            pthread_mutex_unlock(&l->mu);
            rpc_channel_reset_backoff(l->ch);
            call_outcome oc = do_register(l);
            pthread_mutex_lock(&l->mu);
            if (oc == CALL_OK) {
                registered = 1;
                attempt = 0;
                lost = 0;
                l->st.registered = 1;
                l->st.registrations++;
                hb_due = mono_ms() + l->heartbeat_ms;
                sync_due = 0;
                report_retry = 0;
            } else {
                int64_t d = link_backoff_ms(l->reconnect_ms, attempt++, lost, &l->rng);
                next_attempt = mono_ms() + d;
                log_info("link.reconnect_scheduled", "node=%s attempt=%d delay_ms=%lld", l->node_id, attempt, (long long)d);
            }
            continue;
        }
        call_outcome oc = CALL_OK;
        if (now >= hb_due) {
            pthread_mutex_unlock(&l->mu);
            oc = do_heartbeat(l);
            pthread_mutex_lock(&l->mu);
            hb_due = mono_ms() + l->heartbeat_ms;
            if (oc == CALL_OK) l->st.heartbeats_ok++;
            else l->st.heartbeats_failed++;
        } else if (l->agents_changed || now >= sync_due) {
            l->agents_changed = 0;
            pthread_mutex_unlock(&l->mu);
            oc = do_sync(l);
            pthread_mutex_lock(&l->mu);
            if (oc == CALL_OK) { l->st.syncs++; sync_due = mono_ms() + SYNC_EVERY_MS; }
            else sync_due = mono_ms() + l->reconnect_ms / 10;
        } else if (now >= report_retry && spool_count(l->spool) > 0) {
            int empty;
            pthread_mutex_unlock(&l->mu);
            oc = send_one(l, &empty);
            pthread_mutex_lock(&l->mu);
            if (oc == CALL_REFUSED) report_retry = mono_ms() + l->reconnect_ms / 10;
        } else {
            int64_t next = hb_due < sync_due ? hb_due : sync_due;
            if (spool_count(l->spool) > 0 && report_retry < next) next = report_retry;
            wait_until(l, &l->cv, next);
            continue;
        }
        if (oc == CALL_DOWN || oc == CALL_UNREGISTERED) {
            registered = 0;
            l->st.registered = 0;
            /* Told to register: at once. Lost the manager: after a jittered pause. */
            lost = oc == CALL_DOWN;
            next_attempt = oc == CALL_UNREGISTERED ? mono_ms() : mono_ms() + link_backoff_ms(l->reconnect_ms, attempt++, lost, &l->rng);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Turns due collector samples into one ReportMetricsRequest and spools it. */
static void collect_due(link_t *l, unsigned due)
{
    coll_sample samples[COLL_COUNT];
    memset(samples, 0, sizeof samples);
    Manager__MetricData md[COLL_COUNT];
    Manager__MetricData *mdp[COLL_COUNT];
    Manager__MetricData__ValuesEntry *ents_of[COLL_COUNT];
    size_t nmd = 0;
    int64_t now = wall_ms();
    char err[512];
    for (int k = 0; k < COLL_COUNT; k++) {
        if (!(due & (1u << k))) continue;
        if (coll_read(l->coll, (coll_kind)k, mono_ms(), &samples[k], err, sizeof err) != 0) {
            log_warn("collector.read_failed", "node=%s collector=%s error=\"%s\"", l->node_id, coll_kind_name((coll_kind)k), err);
            continue;
        }
        manager__metric_data__init(&md[nmd]);
        md[nmd].type = samples[k].type;
        md[nmd].timestamp = samples[k].timestamp ? samples[k].timestamp : now / 1000;
        md[nmd].n_values = samples[k].n;
        md[nmd].values = calloc(samples[k].n ? samples[k].n : 1, sizeof *md[nmd].values);
        Manager__MetricData__ValuesEntry *ents = calloc(samples[k].n ? samples[k].n : 1, sizeof *ents);
        if (!md[nmd].values || !ents) abort();
        for (size_t i = 0; i < samples[k].n; i++) {
            manager__metric_data__values_entry__init(&ents[i]);
            ents[i].key = samples[k].values[i].key;
            ents[i].value = samples[k].values[i].value;
            md[nmd].values[i] = &ents[i];
        }
        mdp[nmd] = &md[nmd];
        ents_of[nmd] = ents;
        nmd++;
    }
    if (nmd) {
        Manager__ReportMetricsRequest req = MANAGER__REPORT_METRICS_REQUEST__INIT;
        req.node_id = l->node_id;
        req.n_metrics = nmd;
        req.metrics = mdp;
        size_t len = manager__report_metrics_request__get_packed_size(&req);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) abort();
        manager__report_metrics_request__pack(&req, buf);
        if (spool_append(l->spool, buf, len, err, sizeof err) != 0) {
            log_error("link.spool_failed", "node=%s error=\"%s\" msg=\"report lost: cannot write the spool\"", l->node_id, err);
        } else {
            pthread_mutex_lock(&l->mu);
            l->st.reports_spooled++;
            pthread_cond_signal(&l->cv);
            pthread_mutex_unlock(&l->mu);
        }
        free(buf);
    }
    for (size_t i = 0; i < nmd; i++) {
        free(ents_of[i]);
        free(md[i].values);
    }
    for (int k = 0; k < COLL_COUNT; k++) coll_sample_free(&samples[k]);
}

static void *collector_main(void *arg)
{
    pthread_setname_np(pthread_self(), "link-collector");
    link_t *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        int64_t now = mono_ms();
        unsigned due = coll_due(l->coll, now);
        if (!due) {
            int64_t next = coll_next_due(l->coll);
            if (next == INT64_MAX) next = now + 3600000;
            wait_until(l, &l->collect_cv, next);
            continue;
        }
        pthread_mutex_unlock(&l->mu);
        collect_due(l, due);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- lifetime ---------------------------------------------------------------------------------- */

/* A channel to the manager as cfg says; the TLS files are read now. */
static rpc_channel *manager_channel(const dconfig *cfg, char *err, size_t errlen)
{
    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
    co.settings.keepalive_time_ms = cfg->manager.keepalive_time_ms;
    co.settings.keepalive_timeout_ms = cfg->manager.keepalive_timeout_ms;
    co.settings.max_message_bytes = (int)(cfg->manager.max_message_bytes > 0x7fffffff ? 0x7fffffff : cfg->manager.max_message_bytes);
    co.settings.window_bytes = (int)(cfg->manager.window_bytes > 0x7fffffff ? 0x7fffffff : cfg->manager.window_bytes);
    co.settings.gzip = cfg->manager.gzip;
    const dconfig_tls *t = &cfg->manager.tls;
    co.tls = (rpc_tls){.enabled = t->enabled, .cert_file = t->cert_file, .key_file = t->key_file,
                       .ca_file = t->ca_file, .server_name = t->server_name && *t->server_name ? t->server_name : NULL};
    return rpc_channel_new(cfg->manager.address, &co, err, errlen);
}

link_t *link_start(const link_opts *o, char *err, size_t errlen)
{
    const dconfig *cfg = o->cfg;
    link_t *l = calloc(1, sizeof *l);
    if (!l) abort();
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->collect_cv, NULL);
    snprintf(l->node_id, sizeof l->node_id, "%s", o->node_id);
    l->sup = o->sup;
    l->timeout_ms = cfg->manager.timeout_ms;
    l->heartbeat_ms = cfg->manager.heartbeat_interval_ms;
    l->reconnect_ms = cfg->manager.reconnect_interval_ms;
    if (getrandom(&l->rng, sizeof l->rng, 0) != sizeof l->rng) l->rng = (unsigned)getpid() ^ (unsigned)time(NULL);
    if (gethostname(l->hostname, sizeof l->hostname) != 0) snprintf(l->hostname, sizeof l->hostname, "unknown");
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(l->os, sizeof l->os, "linux");
        snprintf(l->arch, sizeof l->arch, "%s", go_arch(u.machine));
    }
    primary_ip(cfg->manager.address, l->ip, sizeof l->ip);
    const char *gh = cfg->daemon.grpc_host;
    int any = !gh || !*gh || !strcmp(gh, "0.0.0.0") || !strcmp(gh, "::") || !strcmp(gh, "[::]");
    snprintf(l->address, sizeof l->address, "%s:%d", any ? l->ip : gh, o->daemon_port);
    l->stream_only = cfg->manager.stream_only;
    copy_labels(l, cfg);
    snprintf(l->secret_path, sizeof l->secret_path, "%s", cfg->manager.secret_file ? cfg->manager.secret_file : "");
    if (nodesecret_enrollment_token(&cfg->manager, l->enroll_token, sizeof l->enroll_token, err, errlen) < 0) goto fail;
    char secret[256], serr[512];
    int have = l->secret_path[0] ? nodesecret_load(l->secret_path, secret, sizeof secret, serr, sizeof serr) : 0;
    if (have < 0) log_warn("link.secret_unreadable", "node=%s error=\"%s\"", l->node_id, serr);
    if (have > 0) set_secret(l, secret);

    const dconfig_tls *t = &cfg->manager.tls;
    l->ch = manager_channel(cfg, err, errlen);
    if (!l->ch) goto fail;
    if (!t->enabled) log_warn("link.plaintext", "node=%s manager=%s msg=\"talking to the manager without TLS\"", l->node_id, cfg->manager.address);
    if (coll_new(&cfg->collectors, NULL, &l->coll, err, errlen) != 0) goto fail;
    l->spool = spool_open(cfg->manager.spool_dir, cfg->manager.spool_max_bytes, err, errlen);
    if (!l->spool) goto fail;
    if (pthread_create(&l->sender, NULL, sender_main, l) != 0) { snprintf(err, errlen, "cannot start the sender thread"); goto fail; }
    l->have_sender = 1;
    if (pthread_create(&l->collector, NULL, collector_main, l) != 0) { snprintf(err, errlen, "cannot start the collector thread"); goto fail; }
    l->have_collector = 1;
    log_info("link.started", "node=%s manager=%s ip=%s daemon_address=%s spool=%s", l->node_id, cfg->manager.address, l->ip, l->address,
             cfg->manager.spool_dir);
    return l;
fail:
    link_stop(l);
    return NULL;
}

void link_agents_changed(link_t *l)
{
    pthread_mutex_lock(&l->mu);
    l->agents_changed = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void link_config_changed(link_t *l, const dconfig *cfg)
{
    /* Rotated certificates: the next calls go on a channel that read the files again (the
     * same goes for manager.address). A file refused (expired...) keeps the current channel. */
    char err[512];
    rpc_channel *ch = manager_channel(cfg, err, sizeof err);
    if (!ch) {
        char q[600];
        log_error("link.channel_reload_failed", "node=%s error=%s (the current channel stays)", l->node_id, log_quote(q, sizeof q, err));
    }
    pthread_mutex_lock(&l->mu);
    if (ch) {
        if (l->next_ch) rpc_channel_free(l->next_ch);
        l->next_ch = ch;
    }
    copy_labels(l, cfg);
    l->reregister = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void link_get_stats(link_t *l, link_stats *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->st;
    pthread_mutex_unlock(&l->mu);
    out->spool_pending = l->spool ? spool_count(l->spool) : 0;
    out->spool_dropped = l->spool ? spool_dropped(l->spool) : 0;
    out->spool_bytes = l->spool ? spool_bytes(l->spool) : 0;
}

void link_stop(link_t *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->collect_cv);
    pthread_mutex_unlock(&l->mu);
    if (l->have_sender) pthread_join(l->sender, NULL);
    if (l->have_collector) pthread_join(l->collector, NULL);
    spool_close(l->spool);
    coll_free(l->coll);
    rpc_channel_free(l->ch);
    if (l->next_ch) rpc_channel_free(l->next_ch);
    for (size_t i = 0; i < l->n_labels; i++) { free(l->labels[i].key); free(l->labels[i].value); }
    free(l->labels);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->collect_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
