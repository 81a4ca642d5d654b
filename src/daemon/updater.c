/* updater: the SubscribeUpdates stream, applying events, and reporting their outcomes. */
#include "daemon/updater.h"
#include "daemon/link.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/nodesecret.h"
#include "daemon/verify.h"
#include "manager.pb-c.h"
#include "rpc/client.h"

#define SUBSCRIBE "/manager.ManagerService/SubscribeUpdates"
#define REPORT "/manager.ManagerService/ReportEventResult"
#define MAX_RESULTS_SCAN 256

typedef struct updr_agent {
    char *id, *config_file, *binary_path;
} updr_agent;

struct updr {
    char node_id[128];
    sup *sup;
    void (*on_self_update)(void *, const char *);
    void *user;
    char state_dir[PATH_MAX], results_dir[PATH_MAX], last_path[PATH_MAX], exe_path[PATH_MAX];
    char secret_path[PATH_MAX]; /* node_auth token mode: link.c keeps the node secret there */
    rpc_channel *ch;
    int64_t reconnect_ms, timeout_ms;
    unsigned rng;

    pthread_mutex_t apply_mu; /* one event or PushUpdate at a time */

    pthread_mutex_t mu;       /* everything below */
    pthread_cond_t cv;
    int stopping;
    int results_pending;      /* the reporter has something new */
    rpc_stream *stream;       /* open stream, cancelled by updr_stop */
    uint64_t last_id;
    updr_agent *agents;
    size_t n_agents;
    vfy_key *key;
    char key_err[256];
    int keep_versions;
    int64_t window_ms;

    pthread_t stream_thr, report_thr;
    int stream_started, report_started;
};

const char *updr_outcome_name(updr_outcome o)
{
    switch (o) {
    case UPDR_APPLIED: return "applied";
    case UPDR_ROLLED_BACK: return "rolled_back";
    case UPDR_REFUSED: return "refused";
    default: return "failed";
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits on cv up to ms unless stopping. Caller holds mu. */
static void wait_ms(updr *u, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&u->cv, &u->mu, &ts);
}

/* ---- files ----------------------------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Writes path through path.tmp + fsync + rename: readers see the old or the new file whole. */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %.300s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int read_all(const char *path, uint8_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) { free(buf); return -1; }
    *out = buf;
    *n = len;
    return 0;
}

static void save_last_id(updr *u, uint64_t id)
{
    char buf[32], err[300];
    int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", id);
    if (write_atomic(u->last_path, buf, (size_t)n, 0644, err, sizeof err) != 0)
        log_error("update.state_failed", "node=%s error=\"%s\"", u->node_id, err);
    pthread_mutex_lock(&u->mu);
    u->last_id = id;
    pthread_mutex_unlock(&u->mu);
}

/* results/<id>: "outcome\nmessage". Written before last_event_id moves past the event. */
static void save_result(updr *u, uint64_t id, updr_outcome o, const char *msg)
{
    char path[PATH_MAX + 32], err[300];
    snprintf(path, sizeof path, "%s/%" PRIu64, u->results_dir, id);
    size_t len = strlen(msg) + 32;
    char *body = malloc(len);
    if (!body) return;
    int n = snprintf(body, len, "%s\n%s", updr_outcome_name(o), msg);
    if (write_atomic(path, body, (size_t)n, 0644, err, sizeof err) != 0)
        log_error("update.state_failed", "node=%s error=\"%s\"", u->node_id, err);
    free(body);
    pthread_mutex_lock(&u->mu);
    u->results_pending = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

/* ---- agents ---------------------------------------------------------------------------------- */

static void free_agents(updr_agent *a, size_t n)
{
    for (size_t i = 0; i < n; i++) { free(a[i].id); free(a[i].config_file); free(a[i].binary_path); }
    free(a);
}

/* Copies of one agent's paths (NULL strings when unset). -1: unknown agent. */
static int agent_paths(updr *u, const char *id, char **config_file, char **binary_path)
{
    *config_file = *binary_path = NULL;
    int rc = -1;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < u->n_agents; i++) {
        if (strcmp(u->agents[i].id, id) != 0) continue;
        if (u->agents[i].config_file) *config_file = strdup(u->agents[i].config_file);
        if (u->agents[i].binary_path) *binary_path = strdup(u->agents[i].binary_path);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

/* Restarts the agent and checks it is running and stays up (same pid, no restart) for the
 * rollback window. 0, or -1 with msg. */
static int restart_and_watch(updr *u, const char *id, char *msg, size_t msglen)
{
    char err[256];
    if (sup_restart(u->sup, id, err, sizeof err) != SUP_OK) {
        snprintf(msg, msglen, "restart failed: %s", err);
        return -1;
    }
    sup_agent_info info;
    if (sup_get(u->sup, id, &info) != SUP_OK) {
        snprintf(msg, msglen, "agent vanished after restart");
        return -1;
    }
    int pid = info.pid, restarts = info.restart_count;
    sup_agent_info_clear(&info);
    pthread_mutex_lock(&u->mu);
    int64_t window = u->window_ms;
    pthread_mutex_unlock(&u->mu);
    int64_t end = mono_ms() + window;
    for (;;) {
        if (sup_get(u->sup, id, &info) != SUP_OK) {
            snprintf(msg, msglen, "agent vanished after restart");
            return -1;
        }
        int ok = !strcmp(info.status, SUP_STATUS_RUNNING) && info.pid == pid && info.restart_count == restarts;
        if (!ok)
            snprintf(msg, msglen, "did not stay running (status %s, pid %d -> %d, last exit code %d signal %d)", info.status, pid,
                     info.pid, info.last_exit_code, info.last_exit_signal);
        sup_agent_info_clear(&info);
        if (!ok) return -1;
        if (mono_ms() >= end) return 0;
        sleep_ms(100);
    }
}

static updr_outcome apply_config(updr *u, const char *agent_id, const uint8_t *data, size_t len, char *msg, size_t msglen)
{
    char *cfgf, *bin;
    if (agent_paths(u, agent_id, &cfgf, &bin) != 0) {
        snprintf(msg, msglen, "unknown agent %s", agent_id);
        return UPDR_FAILED;
    }
    free(bin);
    if (!cfgf || !*cfgf) {
        free(cfgf);
        snprintf(msg, msglen, "agent %s has no config_file in daemon.yaml", agent_id);
        return UPDR_FAILED;
    }
    char prev[PATH_MAX + 8], err[300];
    snprintf(prev, sizeof prev, "%s.prev", cfgf);
    uint8_t *old = NULL;
    size_t oldlen = 0;
    int had_old = read_all(cfgf, &old, &oldlen) == 0;
    struct stat sb;
    mode_t mode = stat(cfgf, &sb) == 0 ? (sb.st_mode & 07777) : 0644;
    updr_outcome out = UPDR_FAILED;
    if (had_old && write_atomic(prev, old, oldlen, mode, err, sizeof err) != 0) {
        snprintf(msg, msglen, "keeping the previous config: %s", err);
        goto done;
    }
    if (write_atomic(cfgf, data, len, mode, err, sizeof err) != 0) {
        snprintf(msg, msglen, "writing the config: %s", err);
        goto done;
    }
    char why[400];
    if (restart_and_watch(u, agent_id, why, sizeof why) == 0) {
        snprintf(msg, msglen, "config written to %s (%zu bytes), agent restarted and running", cfgf, len);
        out = UPDR_APPLIED;
        goto done;
    }
    /* Roll back: the previous file (or none), then run the agent as it was. */
    int restored = had_old ? write_atomic(cfgf, old, oldlen, mode, err, sizeof err) : unlink(cfgf);
    char why2[300] = "";
    restart_and_watch(u, agent_id, why2, sizeof why2);
    snprintf(msg, msglen, "new config: %s; rolled back to the previous config%s%s%s", why, restored == 0 ? "" : " (restore failed)",
             why2[0] ? "; after rollback: " : "", why2);
    out = UPDR_ROLLED_BACK;
    log_warn("update.config_rolled_back", "node=%s agent=%s reason=\"%s\"", u->node_id, agent_id, why);
done:
    free(old);
    free(cfgf);
    return out;
}

static int version_ok(const char *v)
{
    if (!v || !*v || strlen(v) > 64 || v[0] == '.') return 0;
    for (; *v; v++)
        if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') || *v == '.' || *v == '_' ||
              *v == '-' || *v == '+'))
            return 0;
    return 1;
}

typedef struct kept {
    char name[NAME_MAX + 1];
    struct timespec mtime;
} kept;

static int kept_cmp(const void *a, const void *b)
{
    const kept *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec) return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
    return strcmp(y->name, x->name);
}

/* Keeps the newest `keep` files named <base>.v* next to path, deleting older ones. */
static void prune_versions(const char *path, int keep)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    const char *base = path + (slash - dir) + 1;
    *slash = 0;
    if (!dir[0]) snprintf(dir, sizeof dir, "/");
    char prefix[NAME_MAX + 4];
    snprintf(prefix, sizeof prefix, "%s.v", base);
    DIR *d = opendir(dir);
    if (!d) return;
    kept *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        size_t nl = strlen(e->d_name);
        if (nl > 4 && !strcmp(e->d_name + nl - 4, ".tmp")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            kept *nlst = realloc(list, cap * sizeof *list);
            if (!nlst) break;
            list = nlst;
        }
        char full[PATH_MAX + NAME_MAX + 2];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(full, &sb) != 0) continue;
        snprintf(list[n].name, sizeof list[n].name, "%s", e->d_name);
        list[n].mtime = sb.st_mtim;
        n++;
    }
    closedir(d);
    if (n > (size_t)keep) {
        qsort(list, n, sizeof *list, kept_cmp);
        for (size_t i = (size_t)keep; i < n; i++) {
            char full[PATH_MAX + NAME_MAX + 2];
            snprintf(full, sizeof full, "%s/%s", dir, list[i].name);
            unlink(full);
        }
    }
    free(list);
}

/* Puts the verified package at target: target.v<version> keeps it, the replaced binary becomes
 * target.prev, and target itself changes in one rename. */
static int place_binary(updr *u, const char *target, const char *version, const uint8_t *pkg, size_t n, char *err, size_t errlen)
{
    char vpath[PATH_MAX + 80], prev[PATH_MAX + 8], tmp[PATH_MAX + 8];
    snprintf(vpath, sizeof vpath, "%s.v%s", target, version);
    snprintf(prev, sizeof prev, "%s.prev", target);
    snprintf(tmp, sizeof tmp, "%s.new", target);
    if (write_atomic(vpath, pkg, n, 0755, err, errlen) != 0) return -1;
    unlink(prev);
    if (link(target, prev) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "keeping %.300s as .prev: %s", target, strerror(errno));
        return -1;
    }
    unlink(tmp);
    if (link(vpath, tmp) != 0 || rename(tmp, target) != 0) {
        snprintf(err, errlen, "installing %.300s: %s", target, strerror(errno));
        unlink(tmp);
        return -1;
    }
    pthread_mutex_lock(&u->mu);
    int keep = u->keep_versions;
    pthread_mutex_unlock(&u->mu);
    prune_versions(target, keep);
    return 0;
}

updr_outcome updr_install(updr *u, const char *component, const char *agent_id, const char *version,
                          const char *url, const uint8_t *data, size_t len, const char *hash_hex,
                          const uint8_t *sig, size_t siglen, char *msg, size_t msglen)
{
    int is_daemon = component && !strcmp(component, "daemon");
    if (!is_daemon && (!component || strcmp(component, "agent") != 0)) {
        snprintf(msg, msglen, "component must be agent or daemon (got \"%.40s\")", component ? component : "");
        return UPDR_REFUSED;
    }
    if (!version_ok(version)) {
        snprintf(msg, msglen, "version must be 1-64 letters, digits, '.', '_', '-' or '+' (got \"%.64s\")", version ? version : "");
        return UPDR_REFUSED;
    }
    char *cfgf = NULL, *target = NULL;
    if (!is_daemon) {
        if (!agent_id || agent_paths(u, agent_id, &cfgf, &target) != 0) {
            snprintf(msg, msglen, "unknown agent %s", agent_id ? agent_id : "");
            return UPDR_FAILED;
        }
        free(cfgf);
    } else {
        if (!u->on_self_update || !u->exe_path[0]) {
            snprintf(msg, msglen, "daemon self-update is not available here");
            return UPDR_REFUSED;
        }
        target = strdup(u->exe_path);
    }
    if (!target) {
        snprintf(msg, msglen, "out of memory");
        return UPDR_FAILED;
    }
    pthread_mutex_lock(&u->apply_mu);
    uint8_t *pkg = NULL;
    size_t n = 0;
    char err[512];
    updr_outcome out = UPDR_FAILED;
    if (vfy_fetch(url, data, len, 0, &pkg, &n, err, sizeof err) != 0) {
        snprintf(msg, msglen, "fetch: %s", err);
        goto done;
    }
    pthread_mutex_lock(&u->mu);
    vfy_result vr = u->key ? vfy_check(u->key, pkg, n, hash_hex, sig, siglen, err, sizeof err) : VFY_ERROR;
    if (!u->key) snprintf(err, sizeof err, "%s", u->key_err);
    pthread_mutex_unlock(&u->mu);
    if (vr != VFY_OK) {
        snprintf(msg, msglen, "refused, nothing changed: %s", err);
        out = UPDR_REFUSED;
        log_warn("update.refused", "node=%s component=%s agent=%s version=%s reason=\"%s\"", u->node_id, component,
                 agent_id ? agent_id : "", version, err);
        goto done;
    }
    if (place_binary(u, target, version, pkg, n, err, sizeof err) != 0) {
        snprintf(msg, msglen, "install: %s", err);
        goto done;
    }
    if (is_daemon) {
        snprintf(msg, msglen, "daemon binary %s replaced by version %s; re-executing", target, version);
        out = UPDR_APPLIED;
        goto done;
    }
    char why[400];
    if (restart_and_watch(u, agent_id, why, sizeof why) == 0) {
        snprintf(msg, msglen, "agent %s now runs version %s (%s)", agent_id, version, target);
        out = UPDR_APPLIED;
        goto done;
    }
    char prev[PATH_MAX + 8];
    snprintf(prev, sizeof prev, "%s.prev", target);
    int restored = rename(prev, target);
    char why2[300] = "";
    restart_and_watch(u, agent_id, why2, sizeof why2);
    snprintf(msg, msglen, "version %s: %s; rolled back to the previous binary%s%s", version, why,
             restored == 0 ? "" : " (restore failed)", why2[0] ? " (and it did not come back)" : "");
    out = UPDR_ROLLED_BACK;
    log_warn("update.agent_rolled_back", "node=%s agent=%s version=%s reason=\"%s\"", u->node_id, agent_id, version, why);
done:
    pthread_mutex_unlock(&u->apply_mu);
    free(pkg);
    free(target);
    return out;
}

static updr_outcome apply_command(updr *u, const char *agent_id, const char *op, char *msg, size_t msglen)
{
    sup_result (*fn)(sup *, const char *, char *, size_t);
    if (!strcmp(op, "start")) fn = sup_start;
    else if (!strcmp(op, "stop")) fn = sup_stop;
    else if (!strcmp(op, "restart")) fn = sup_restart;
    else {
        snprintf(msg, msglen, "operation must be start, stop or restart (got \"%.40s\")", op);
        return UPDR_REFUSED;
    }
    char err[400];
    sup_result r = fn(u->sup, agent_id, err, sizeof err);
    if (r == SUP_NOT_FOUND) {
        snprintf(msg, msglen, "unknown agent %s", agent_id);
        return UPDR_FAILED;
    }
    if (r != SUP_OK) {
        snprintf(msg, msglen, "%s %s: %s", op, agent_id, err);
        return UPDR_FAILED;
    }
    snprintf(msg, msglen, "%s %s: done", op, agent_id);
    return UPDR_APPLIED;
}

/* Applies one event, records its result, then moves last_event_id past it. */
static void apply_event(updr *u, const Manager__UpdateEvent *ev)
{
    char msg[1024] = "";
    updr_outcome o;
    const char *kind = ev->event_type;
    log_info("update.received", "node=%s event_id=%" PRIu64 " kind=%s agent=%s", u->node_id, ev->event_id, kind, ev->agent_id);
    if (!strcmp(kind, "config_change")) {
        pthread_mutex_lock(&u->apply_mu);
        o = apply_config(u, ev->agent_id, ev->payload.data, ev->payload.len, msg, sizeof msg);
        pthread_mutex_unlock(&u->apply_mu);
    } else if (!strcmp(kind, "command")) {
        pthread_mutex_lock(&u->apply_mu);
        o = apply_command(u, ev->agent_id, ev->operation, msg, sizeof msg);
        pthread_mutex_unlock(&u->apply_mu);
    } else if (!strcmp(kind, "version_update")) {
        o = updr_install(u, ev->component, ev->agent_id, ev->version, ev->download_url, ev->payload.data, ev->payload.len,
                         ev->hash_sha256, ev->signature.data, ev->signature.len, msg, sizeof msg);
    } else {
        o = UPDR_REFUSED;
        snprintf(msg, sizeof msg, "unknown event_type \"%.40s\"", kind);
    }
    char q[1200];
    log_info("update.applied", "node=%s event_id=%" PRIu64 " outcome=%s message=%s", u->node_id, ev->event_id, updr_outcome_name(o),
             log_quote(q, sizeof q, msg));
    save_result(u, ev->event_id, o, msg);
    save_last_id(u, ev->event_id);
    if (o == UPDR_APPLIED && !strcmp(kind, "version_update") && !strcmp(ev->component, "daemon"))
        u->on_self_update(u->user, u->exe_path);
}

/* ---- threads --------------------------------------------------------------------------------- */

/* link.c's policy (link_backoff_ms). established: a subscription of ours has been up before
 * (open for a second or more), so this is a fleet-wide loss such as a manager restart, and the
 * reopen waits in the long windows that spread the fleet out. */
static int64_t backoff_ms(updr *u, int attempt, int established)
{
    return link_backoff_ms(u->reconnect_ms, attempt, established, &u->rng);
}

/* "authorization: Bearer <node secret>" metadata when link.c has enrolled us (read each time:
 * the secret changes when the node enrolls again); NULL otherwise. */
static const char *const *secret_md(updr *u, char *bearer, size_t n, const char *md[3])
{
    char secret[256], err[256];
    if (!u->secret_path[0] || nodesecret_load(u->secret_path, secret, sizeof secret, err, sizeof err) != 1) return NULL;
    snprintf(bearer, n, "Bearer %s", secret);
    md[0] = "authorization";
    md[1] = bearer;
    md[2] = NULL;
    return md;
}

static void *stream_main(void *arg)
{
    pthread_setname_np(pthread_self(), "upd-stream");
    updr *u = arg;
    int attempt = 0, established = 0;
    for (;;) {
        pthread_mutex_lock(&u->mu);
        int stop = u->stopping;
        uint64_t after = u->last_id;
        pthread_mutex_unlock(&u->mu);
        if (stop) break;
        rpc_channel_reset_backoff(u->ch);
        Manager__SubscribeUpdatesRequest req = MANAGER__SUBSCRIBE_UPDATES_REQUEST__INIT;
        req.node_id = u->node_id;
        req.last_event_id = after;
        rpc_stream *st = NULL;
        rpc_result res;
        char bearer[300];
        const char *md[3];
        rpc_call_opts co = {.timeout_ms = 0, .metadata = secret_md(u, bearer, sizeof bearer, md)};
        int got = 0;
        int64_t opened = mono_ms();
        if (rpc_stream_open(u->ch, SUBSCRIBE, &req.base, &co, &st, &res) == 0) {
            pthread_mutex_lock(&u->mu);
            if (u->stopping) rpc_stream_cancel(st);
            u->stream = st;
            pthread_mutex_unlock(&u->mu);
            ProtobufCMessage *m;
            while (rpc_stream_next(st, &manager__update_event__descriptor, &m, &res) == 1) {
                Manager__UpdateEvent *ev = (Manager__UpdateEvent *)m;
                got = 1;
                attempt = 0;
                if (ev->event_id > after) {
                    apply_event(u, ev);
                    after = ev->event_id;
                } else {
                    log_warn("update.duplicate", "node=%s event_id=%" PRIu64 " last=%" PRIu64, u->node_id, ev->event_id, after);
                }
                protobuf_c_message_free_unpacked(m, NULL);
            }
            pthread_mutex_lock(&u->mu);
            u->stream = NULL;
            pthread_mutex_unlock(&u->mu);
            rpc_stream_close(st);
            if (mono_ms() - opened >= 1000) { /* it was up: a loss, not a failed try */
                established = 1;
                attempt = 0;
            }
        }
        pthread_mutex_lock(&u->mu);
        if (!u->stopping) {
            int64_t d = backoff_ms(u, attempt++, established);
            log_info("update.stream_ended", "node=%s code=%s message=\"%s\" events=%d retry_ms=%lld", u->node_id, rpc_code_name(res.code),
                     res.message, got, (long long)d);
            int64_t end = mono_ms() + d;
            while (!u->stopping && mono_ms() < end) wait_ms(u, end - mono_ms());
        }
        pthread_mutex_unlock(&u->mu);
    }
    return NULL;
}

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sends every stored result once. 1 when all went (or there were none), 0 if one failed. */
static int send_results(updr *u)
{
    DIR *d = opendir(u->results_dir);
    if (!d) return 1;
    uint64_t ids[MAX_RESULTS_SCAN];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_RESULTS_SCAN) {
        char *end;
        unsigned long long v = strtoull(e->d_name, &end, 10);
        if (*end || !v) continue;
        ids[n++] = v;
    }
    closedir(d);
    qsort(ids, n, sizeof ids[0], id_cmp);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%" PRIu64, u->results_dir, ids[i]);
        uint8_t *body;
        size_t len;
        if (read_all(path, &body, &len) != 0) continue;
        char *text = realloc(body, len + 1);
        if (!text) { free(body); return 0; }
        text[len] = 0;
        char *nl = strchr(text, '\n');
        if (nl) *nl = 0;
        Manager__EventResultRequest req = MANAGER__EVENT_RESULT_REQUEST__INIT;
        req.node_id = u->node_id;
        req.event_id = ids[i];
        req.outcome = text;
        req.success = !strcmp(text, "applied");
        req.message = nl ? nl + 1 : "";
        ProtobufCMessage *resp = NULL;
        rpc_result res;
        char bearer[300];
        const char *md[3];
        rpc_call_opts co = {.timeout_ms = u->timeout_ms, .idempotent = 1, .metadata = secret_md(u, bearer, sizeof bearer, md)};
        int code = rpc_call_unary(u->ch, REPORT, &req.base, &manager__event_result_response__descriptor, &resp, &co, &res);
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        if (code == RPC_OK || code == RPC_NOT_FOUND || code == RPC_INVALID_ARGUMENT) {
            /* NOT_FOUND: the manager no longer has the event (compacted): nothing to retry. */
            if (code != RPC_OK)
                log_warn("update.result_dropped", "node=%s event_id=%" PRIu64 " code=%s message=\"%s\"", u->node_id, ids[i],
                         rpc_code_name(code), res.message);
            else
                log_info("update.result_sent", "node=%s event_id=%" PRIu64 " outcome=%s", u->node_id, ids[i], text);
            unlink(path);
            free(text);
            continue;
        }
        log_info("update.result_pending", "node=%s event_id=%" PRIu64 " code=%s", u->node_id, ids[i], rpc_code_name(code));
        free(text);
        return 0;
    }
    return n < MAX_RESULTS_SCAN;
}

static void *report_main(void *arg)
{
    pthread_setname_np(pthread_self(), "upd-report");
    updr *u = arg;
    int attempt = 0;
    pthread_mutex_lock(&u->mu);
    u->results_pending = 1; /* results left by an earlier run */
    for (;;) {
        if (u->stopping) break;
        if (!u->results_pending) {
            wait_ms(u, 60000);
            continue;
        }
        u->results_pending = 0;
        pthread_mutex_unlock(&u->mu);
        int ok = send_results(u);
        pthread_mutex_lock(&u->mu);
        if (ok) {
            attempt = 0;
            continue;
        }
        u->results_pending = 1;
        int64_t end = mono_ms() + backoff_ms(u, attempt++, 0);
        while (!u->stopping && mono_ms() < end) wait_ms(u, end - mono_ms());
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void take_config(updr *u, const dconfig *cfg)
{
    updr_agent *a = calloc(cfg->n_agents ? cfg->n_agents : 1, sizeof *a);
    size_t n = 0;
    for (size_t i = 0; a && i < cfg->n_agents; i++) {
        const agent_spec *s = &cfg->agents[i];
        a[n].id = strdup(s->id);
        a[n].config_file = s->config_file ? strdup(s->config_file) : NULL;
        a[n].binary_path = s->binary_path ? strdup(s->binary_path) : NULL;
        n++;
    }
    char kerr[256] = "";
    vfy_key *key = NULL;
    if (cfg->updates.public_key && *cfg->updates.public_key) {
        key = vfy_key_load(cfg->updates.public_key, kerr, sizeof kerr);
        if (!key) log_error("update.key_failed", "node=%s error=\"%s\" (every package will be refused)", u->node_id, kerr);
    } else {
        snprintf(kerr, sizeof kerr, "no public key configured (updates.public_key): refusing every package");
    }
    pthread_mutex_lock(&u->mu);
    free_agents(u->agents, u->n_agents);
    u->agents = a;
    u->n_agents = a ? n : 0;
    vfy_key_free(u->key);
    u->key = key;
    snprintf(u->key_err, sizeof u->key_err, "%s", kerr);
    u->keep_versions = cfg->updates.keep_versions > 0 ? cfg->updates.keep_versions : 3;
    u->window_ms = cfg->updates.rollback_window_ms > 0 ? cfg->updates.rollback_window_ms : 5000;
    pthread_mutex_unlock(&u->mu);
}

void updr_config_changed(updr *u, const dconfig *cfg)
{
    if (u) take_config(u, cfg);
}

uint64_t updr_last_event_id(updr *u)
{
    pthread_mutex_lock(&u->mu);
    uint64_t v = u->last_id;
    pthread_mutex_unlock(&u->mu);
    return v;
}

updr *updr_start(const updr_opts *o, char *err, size_t errlen)
{
    const dconfig *cfg = o->cfg;
    updr *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(u->node_id, sizeof u->node_id, "%s", o->node_id);
    u->sup = o->sup;
    u->on_self_update = o->on_self_update;
    u->user = o->user;
    u->reconnect_ms = cfg->manager.reconnect_interval_ms > 0 ? cfg->manager.reconnect_interval_ms : 10000;
    u->timeout_ms = cfg->manager.timeout_ms > 0 ? cfg->manager.timeout_ms : 30000;
    if (getrandom(&u->rng, sizeof u->rng, 0) != sizeof u->rng) u->rng = (unsigned)getpid() ^ (unsigned)time(NULL);
    pthread_mutex_init(&u->apply_mu, NULL);
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    ssize_t el = readlink("/proc/self/exe", u->exe_path, sizeof u->exe_path - 1);
    u->exe_path[el > 0 ? el : 0] = 0;
    snprintf(u->state_dir, sizeof u->state_dir, "%.3800s/updates", cfg->daemon.work_dir);
    snprintf(u->results_dir, sizeof u->results_dir, "%.3900s/results", u->state_dir);
    snprintf(u->last_path, sizeof u->last_path, "%.3900s/last_event_id", u->state_dir);
    if (mkdir_p(u->results_dir) != 0) {
        snprintf(err, errlen, "%s: %s", u->results_dir, strerror(errno));
        goto fail;
    }
    uint8_t *body;
    size_t len;
    if (read_all(u->last_path, &body, &len) == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < 31 ? len : 31), (const char *)body);
        free(body);
        u->last_id = strtoull(buf, NULL, 10);
    }
    take_config(u, cfg);
    snprintf(u->secret_path, sizeof u->secret_path, "%s", cfg->manager.secret_file ? cfg->manager.secret_file : "");
    if (o->no_stream) return u;

    rpc_client_opts co;
    memset(&co, 0, sizeof co);
    rpc_settings_defaults(&co.settings, RPC_PROFILE_DAEMON_CLIENT);
    co.settings.keepalive_time_ms = cfg->manager.keepalive_time_ms;
    co.settings.keepalive_timeout_ms = cfg->manager.keepalive_timeout_ms;
    co.settings.max_message_bytes = (int)(cfg->manager.max_message_bytes > 0x7fffffff ? 0x7fffffff : cfg->manager.max_message_bytes);
    co.settings.window_bytes = (int)(cfg->manager.window_bytes > 0x7fffffff ? 0x7fffffff : cfg->manager.window_bytes);
    const dconfig_tls *t = &cfg->manager.tls;
    co.tls = (rpc_tls){.enabled = t->enabled, .cert_file = t->cert_file, .key_file = t->key_file, .ca_file = t->ca_file,
                       .server_name = t->server_name && *t->server_name ? t->server_name : NULL};
    u->ch = rpc_channel_new(cfg->manager.address, &co, err, errlen);
    if (!u->ch) goto fail;
    if (pthread_create(&u->report_thr, NULL, report_main, u) != 0) {
        snprintf(err, errlen, "cannot start the update reporter thread");
        goto fail;
    }
    u->report_started = 1;
    if (pthread_create(&u->stream_thr, NULL, stream_main, u) != 0) {
        snprintf(err, errlen, "cannot start the update stream thread");
        goto fail;
    }
    u->stream_started = 1;
    log_info("update.started", "node=%s last_event_id=%" PRIu64 " state=%s", u->node_id, u->last_id, u->state_dir);
    return u;
fail:
    updr_stop(u);
    return NULL;
}

void updr_stop(updr *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    u->stopping = 1;
    if (u->stream) rpc_stream_cancel(u->stream);
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    if (u->stream_started) pthread_join(u->stream_thr, NULL);
    if (u->report_started) pthread_join(u->report_thr, NULL);
    if (u->ch) rpc_channel_free(u->ch);
    free_agents(u->agents, u->n_agents);
    vfy_key_free(u->key);
    pthread_mutex_destroy(&u->apply_mu);
    pthread_mutex_destroy(&u->mu);
    pthread_cond_destroy(&u->cv);
    free(u);
}
