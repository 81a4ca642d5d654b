/* ops-manager: wires the parts together — store, liveness, retention, the gRPC services — and
 * handles signals synchronously (sigwait), so no part needs to be async-signal-safe. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cfg.h"
#include "base/log.h"
#include "base/prom.h"
#include "manager/admin.h"
#include "manager/abuse.h"
#include "manager/admin_enroll.h"
#include "manager/auth.h"
#include "manager/nodeauth.h"
#include "manager/events.h"
#include "base/sdnotify.h"
#include "manager/liveness.h"
#include "manager/mconfig.h"
#include "manager/mmetrics.h"
#include "manager/mservice.h"
#include "manager/pool.h"
#include "manager/replicas.h"
#include "manager/retention.h"
#include "manager/store.h"
#include "ops_descriptors.h"
#include "manager/updates.h"

static const char usage[] =
    "usage: ops-manager -c FILE\n"
    "       ops-manager --check-config FILE\n"
    "\n"
    "The central server of an ops fleet: daemons register, heartbeat and report metrics and\n"
    "agent states to it; it keeps the fleet's state in its store (SQLite by default).\n"
    "\n"
    "  -c, --config FILE        manager.yaml to run with (see configs/manager.yaml)\n"
    "      --check-config FILE  validate FILE, print the problem if any, and exit\n"
    "      --print-config FILE  print the effective configuration (defaults filled in)\n"
    "  -h, --help               this text\n"
    "  -V, --version            print the version\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop (in-flight calls finish, liveness is flushed, the store is\n"
    "closed); SIGHUP reopens the log file.\n"
    "Exit codes: 0 clean stop (or, with --check-config, a valid file), 1 runtime failure (or an\n"
    "invalid file with --check-config), 2 usage error or a config that does not load.\n";

/* The pool's resolver: a node's DaemonService address as it registered it, else its IP on
 * the contract's default port. */
static int resolve_node(void *user, const char *node_id, char *addr, size_t n)
{
    store_node node;
    char err[256];
    if (store_get_node(user, node_id, &node, err, sizeof err) != STORE_OK) return -1;
    if (node.daemon_address && *node.daemon_address) snprintf(addr, n, "%s", node.daemon_address);
    else snprintf(addr, n, "%s:9091", node.ip && *node.ip ? node.ip : "127.0.0.1");
    store_node_free(&node);
    return 0;
}

/* The event hub and the admin token table. No tokens is allowed (AdminService then refuses
 * every call), but worth a warning. */
static int start_admin_parts(const mconfig *cfg, evhub **hub, auth **tokens)
{
    char err[512];
    if (!(*hub = evhub_new(NULL, err, sizeof err))) {
        log_error("manager.events_failed", "error=\"%s\"", err);
        return -1;
    }
    auth_token *t = calloc(cfg->admin.n_tokens ? cfg->admin.n_tokens : 1, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < cfg->admin.n_tokens; i++) {
        t[i] = (auth_token){.name = cfg->admin.tokens[i].name, .sha256 = cfg->admin.tokens[i].sha256};
        auth_parse_role(cfg->admin.tokens[i].role, &t[i].role); /* mconfig checked it */
    }
    *tokens = auth_new(t, cfg->admin.n_tokens, err, sizeof err);
    free(t);
    if (!*tokens) {
        log_error("manager.auth_failed", "error=\"%s\"", err);
        return -1;
    }
    if (!cfg->admin.n_tokens)
        log_warn("admin.no_tokens", "msg=\"no admin.tokens in the config: AdminService refuses every call (UNAUTHENTICATED)\"");
    return 0;
}

/* node_auth and the abuse limits (RegisterNode rate, refusal log). */
static int start_node_auth(const mconfig *cfg, store *st, abuse **ab, nodeauth **na)
{
    char err[512];
    abuse_opts ao = {.register_rate = (double)cfg->limits.register_per_minute / 60.0,
                     .register_burst = (double)cfg->limits.register_burst,
                     .log_interval_ms = cfg->limits.refusal_log_interval_ms};
    if (!(*ab = abuse_new(&ao, err, sizeof err))) return -1;
    nodeauth_opts no = {.store = st, .abuse = *ab};
    nodeauth_parse_mode(cfg->node_auth.mode, &no.mode); /* mconfig checked it */
    nodeauth_allow *al = calloc(cfg->node_auth.n_allow ? cfg->node_auth.n_allow : 1, sizeof *al);
    if (!al) return -1;
    for (size_t i = 0; i < cfg->node_auth.n_allow; i++)
        al[i] = (nodeauth_allow){cfg->node_auth.allow[i].identity, (const char *const *)cfg->node_auth.allow[i].node_ids,
                                 cfg->node_auth.allow[i].n_node_ids};
    no.allow = al;
    no.n_allow = cfg->node_auth.n_allow;
    *na = nodeauth_new(&no, err, sizeof err);
    free(al);
    if (!*na) {
        log_error("manager.node_auth_failed", "error=\"%s\"", err);
        return -1;
    }
    if (no.mode == NODEAUTH_NONE)
        log_warn("node_auth.none", "msg=\"node_auth.mode is none: anyone who reaches the port may speak for any node\"");
    else
        log_info("node_auth.mode", "mode=%s allow=%zu", nodeauth_mode_name(no.mode), no.n_allow);
    return 0;
}

/* AdminService on admin.listen, with the grpc listener's TLS and transport settings. */
/* The token the manager shows daemons (daemons.token_file wins over daemons.token), trailing
 * white space dropped. 0 with *out malloc'd (NULL when none), or -1 with err. */
static int daemon_token(const mconfig *cfg, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (cfg->daemons.token_file[0]) {
        char *t;
        if (cfg_read_file(cfg->daemons.token_file, &t, NULL, err, errlen) != 0) return -1;
        size_t n = strlen(t);
        while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t')) t[--n] = 0;
        if (!n) {
            free(t);
            snprintf(err, errlen, "%s: daemons.token_file is empty", cfg->daemons.token_file);
            return -1;
        }
        *out = t;
        return 0;
    }
    if (cfg->daemons.token[0] && !(*out = strdup(cfg->daemons.token))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int admin_start_listener(admin *adm, const mconfig *cfg, const mservice_opts *mo, mmetrics *metrics)
{
    const char *listen[] = {cfg->admin.listen, NULL};
    rpc_server_opts so;
    memset(&so, 0, sizeof so);
    so.name = "admin";
    so.listen = listen;
    so.tls = mo->tls;
    so.settings = mo->settings;
    so.quiet_access_log = mo->quiet_access_log;
    if (metrics) {
        so.observe = mmetrics_observe_rpc;
        so.observe_user = metrics;
    }
    char err[512];
    if (admin_listen(adm, &so, err, sizeof err) != 0) {
        log_error("manager.admin_failed", "listen=%s error=\"%s\"", cfg->admin.listen, err);
        return -1;
    }
    log_info("admin.listening", "listen=%s port=%d", cfg->admin.listen, admin_port(adm));
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int mode = 0; /* 0 run, 1 check, 2 print */
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},       {"check-config", required_argument, NULL, 'k'},
        {"print-config", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},            {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'k': path = optarg; mode = 1; break;
        case 'p': path = optarg; mode = 2; break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf("ops-manager %s\n", OPS_VERSION); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!path || optind < argc) {
        fprintf(stderr, "ops-manager: %s\n\n%s", path ? "unexpected argument" : "-c FILE is required", usage);
        return 2;
    }
    char err[1024];
    mconfig *cfg;
    if (mconfig_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ops-manager: %s\n", err);
        return mode == 1 ? 1 : 2; /* --check-config: 1 = the file is not valid */
    }
    if (mode == 1) {
        printf("%s: ok\n", path);
        mconfig_free(cfg);
        return 0;
    }
    if (mode == 2) {
        char *y = mconfig_dump_yaml(cfg);
        if (y) fputs(y, stdout);
        free(y);
        mconfig_free(cfg);
        return y ? 0 : 1;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread: all inherit it */
    signal(SIGPIPE, SIG_IGN);
    if (log_open(cfg->log.level, cfg->log.file) != 0)
        fprintf(stderr, "ops-manager: cannot open log file %s: %s (logging to stderr)\n", cfg->log.file, strerror(errno));

    int rc = 1;
    store *st = NULL;
    liveness *live = NULL;
    retention *ret = NULL;
    mservice *svc = NULL;
    rpc_reflection *refl = NULL;
    pool *daemons = NULL;
    upd *updates = NULL;
    replicas *repl = NULL;
    mmetrics *metrics = NULL;
    prom_http *scrape = NULL;
    evhub *hub = NULL;
    auth *tokens = NULL;
    admin *adm = NULL;
    rpc_method *extra = NULL;
    abuse *ab = NULL;
    nodeauth *nauth = NULL;
    admin_enroll *enroll = NULL;
    sdn *sd = sdn_new(NULL, NULL, err, sizeof err); /* systemd: READY, STATUS, watchdog */
    if (!sd) {
        log_error("manager.sdnotify_failed", "error=\"%s\"", err);
        goto out;
    }
    store_config sc = {.driver = cfg->database.driver, .dsn = cfg->database.dsn};
    st = store_open(&sc, err, sizeof err);
    if (!st) {
        log_error("manager.store_failed", "driver=%s dsn=%s error=\"%s\"", cfg->database.driver, cfg->database.dsn, err);
        goto out;
    }
    if (start_admin_parts(cfg, &hub, &tokens) != 0) goto out;
    liveness_config lc = {.offline_after_ms = cfg->node.offline_after_ms, .hub = hub};
    live = liveness_new(&lc, st, err, sizeof err);
    if (!live) {
        log_error("manager.liveness_failed", "error=\"%s\"", err);
        goto out;
    }
    if (cfg->metrics.retention_ms > 0) {
        ret = retention_start(st, cfg->metrics.retention_ms, cfg->metrics.retention_interval_ms, err, sizeof err);
        if (!ret) {
            log_error("manager.retention_failed", "error=\"%s\"", err);
            goto out;
        }
    }
    /* Daemons are reached with the manager's own certificate when TLS is on. */
    pool_opts po = {.resolve = resolve_node, .user = st};
    if (cfg->grpc.tls.enabled)
        po.tls = (rpc_tls){.enabled = 1, .cert_file = cfg->grpc.tls.cert_file, .key_file = cfg->grpc.tls.key_file, .ca_file = cfg->grpc.tls.ca_file};
    char *dtoken = NULL;
    if (daemon_token(cfg, &dtoken, err, sizeof err) != 0) {
        log_error("manager.daemon_token_failed", "error=\"%s\"", err);
        goto out;
    }
    po.token = dtoken;
    daemons = pool_new(&po, err, sizeof err);
    free(dtoken);
    if (!daemons) {
        log_error("manager.pool_failed", "error=\"%s\"", err);
        goto out;
    }
    mmetrics_opts mmo = {.store = st, .live = live, .pool = daemons};
    if (cfg->prometheus.enabled && !(metrics = mmetrics_new(&mmo, err, sizeof err))) {
        log_error("manager.metrics_failed", "error=\"%s\"", err);
        goto out;
    }
    char listen[300];
    snprintf(listen, sizeof listen, "%s:%d", cfg->grpc.host, cfg->grpc.port);
    const char *listen_list[] = {listen, NULL};
    mservice_opts mo;
    memset(&mo, 0, sizeof mo);
    mo.listen = listen_list;
    mo.tls = (rpc_tls){.enabled = cfg->grpc.tls.enabled, .cert_file = cfg->grpc.tls.cert_file, .key_file = cfg->grpc.tls.key_file,
                       .ca_file = cfg->grpc.tls.ca_file, .require_client_cert = cfg->grpc.tls.require_client_cert};
    rpc_settings_defaults(&mo.settings, RPC_PROFILE_SERVER);
    mo.settings.max_message_bytes = (int)cfg->grpc.max_message_size;
    mo.settings.keepalive_time_ms = cfg->grpc.keepalive_time_ms;
    mo.settings.keepalive_timeout_ms = cfg->grpc.keepalive_timeout_ms;
    mo.settings.min_ping_interval_ms = cfg->grpc.min_ping_interval_ms;
    mo.settings.window_bytes = (int)cfg->grpc.window_size;
    mo.settings.gzip = cfg->grpc.gzip;
    mo.store = st;
    mo.live = live;
    mo.auto_register = cfg->node.auto_register;
    mo.heartbeat_interval_s = cfg->node.heartbeat_interval_ms / 1000;
    mo.metrics_interval_s = cfg->node.metrics_interval_ms / 1000;
    mo.quiet_access_log = cfg->log.level > LOGL_INFO;
    /* server reflection, from the descriptor set compiled in at build time */
    refl = rpc_reflection_new(ops_descriptor_set, ops_descriptor_set_len, err, sizeof err);
    if (!refl) {
        log_error("manager.reflection_failed", "error=\"%s\"", err);
        goto out;
    }
    mo.reflection = refl;
    if (start_node_auth(cfg, st, &ab, &nauth) != 0) goto out;
    mo.auth = nauth;
    mo.abuse = ab;
    mo.limits = (mservice_limits){.max_metrics = (size_t)cfg->limits.max_metrics_per_report,
                                  .max_values = (size_t)cfg->limits.max_values_per_metric,
                                  .max_labels = (size_t)cfg->limits.max_labels,
                                  .max_string = (size_t)cfg->limits.max_string_bytes,
                                  .max_agents = (size_t)cfg->limits.max_agents_per_sync};
    /* threads for WatchEvents streams and slow calls (update streams hold none) */
    mo.max_streams = 4096;
    mo.max_streams_per_conn = (int)cfg->limits.max_streams_per_connection;
    upd_opts uo = {.store = st, .auth = nauth, .abuse = ab, .max_streams = (int)cfg->limits.max_update_streams};
    updates = upd_new(&uo, err, sizeof err);
    if (!updates) {
        log_error("manager.updates_failed", "error=\"%s\"", err);
        goto out;
    }
    /* Several managers on one PostgreSQL: events cross between them (no-op on SQLite). */
    replicas_opts ro = {.store = st, .hub = hub, .updates = updates, .live = live};
    if (!(repl = replicas_new(&ro, err, sizeof err))) {
        log_error("manager.replicas_failed", "error=\"%s\"", err);
        goto out;
    }
    mo.metrics = metrics;
    mo.hub = hub;
    if (!(enroll = admin_enroll_new(st, tokens, err, sizeof err))) goto out;
    size_t n_enr = 0;
    const rpc_method *enr_m = admin_enroll_methods(enroll, &n_enr);
    admin_opts ao = {.store = st, .live = live, .pool = daemons, .hub = hub, .auth = tokens,
                     .reflection = refl, .upd = updates, .more_methods = enr_m, .n_more_methods = n_enr};
    if (!(adm = admin_new(&ao, err, sizeof err))) {
        log_error("manager.admin_failed", "error=\"%s\"", err);
        goto out;
    }
    /* One listener serves the fleet's methods, the pushed-event stream and (unless it has an
     * address of its own) AdminService. */
    size_t n_upd = 0, n_adm = 0;
    const rpc_method *upd_m = upd_methods(updates, &n_upd);
    const rpc_method *adm_m = cfg->admin.listen[0] ? NULL : admin_methods(adm, &n_adm);
    if (!n_adm) n_enr = 0; /* served on admin.listen with the rest of AdminService */
    if (!(extra = calloc(n_upd + n_adm + n_enr, sizeof *extra))) goto out;
    memcpy(extra, upd_m, n_upd * sizeof *extra);
    if (n_adm) memcpy(extra + n_upd, adm_m, n_adm * sizeof *extra);
    if (n_enr) memcpy(extra + n_upd + n_adm, enr_m, n_enr * sizeof *extra);
    mo.extra_methods = extra;
    mo.n_extra_methods = n_upd + n_adm + n_enr;
    if (cfg->admin.listen[0] && admin_start_listener(adm, cfg, &mo, metrics) != 0) goto out;
    svc = mservice_start(&mo, err, sizeof err);
    if (!svc) {
        log_error("manager.grpc_failed", "listen=%s error=\"%s\"", listen, err);
        goto out;
    }
    /* /metrics is for operators, not for the fleet: a port already taken is logged and the
     * manager serves on without it. */
    if (metrics && prom_http_start(cfg->prometheus.listen, mmetrics_fill, metrics, &scrape, err, sizeof err) != 0)
        log_error("manager.prometheus_failed", "listen=%s error=\"%s\"", cfg->prometheus.listen, err);
    log_info("manager.started", "listen=%s port=%d store=%s dsn=%s offline_after_ms=%lld version=%s", listen, mservice_port(svc),
             store_driver_name(st), cfg->database.dsn, (long long)cfg->node.offline_after_ms, OPS_VERSION);
    char status[400];
    snprintf(status, sizeof status, "serving on %s:%d, store %s", cfg->grpc.host, mservice_port(svc), store_driver_name(st));
    sdn_ready(sd, status);
    for (;;) {
        struct timespec tick = {60, 0};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig < 0) {
            size_t closed = pool_sweep_idle(daemons);
            if (closed) log_info("pool.idle_closed", "channels=%zu open=%zu", closed, pool_size(daemons));
            uint64_t compacted = 0;
            if (!store_is_leader(st)) continue; /* replicas: the leader compacts */
            if (upd_compact(updates, (int64_t)time(NULL), &compacted, err, sizeof err) != 0)
                log_warn("update.compact_failed", "error=\"%s\"", err);
            else if (compacted)
                log_info("update.compacted", "events=%llu", (unsigned long long)compacted);
            continue;
        }
        if (sig == SIGHUP) {
            if (log_reopen() != 0) log_warn("log.reopen_failed", "file=%s error=%s", cfg->log.file, strerror(errno));
            else log_info("log.reopened", "file=%s", cfg->log.file);
            sdn_status(sd, "%s (log reopened)", status);
            /* Rotation: new certificates for new connections, a new token for new calls. */
            (void)mservice_reload_tls(svc);
            char *tok = NULL;
            if (daemon_token(cfg, &tok, err, sizeof err) != 0) log_error("manager.daemon_token_failed", "error=\"%s\" (the old token stays)", err);
            else if (pool_set_token(daemons, tok) != 0) log_error("manager.daemon_token_failed", "error=\"out of memory\"");
            free(tok);
            size_t dropped = pool_drop_channels(daemons);
            log_info("manager.reloaded", "daemon_channels_dropped=%zu", dropped);
            continue;
        }
        log_info("manager.stopping", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
        sdn_stopping(sd, "stopping: finishing calls, flushing the store");
        break;
    }
    rc = 0;
out:
    prom_http_stop(scrape);
    evhub_close(hub); /* ends WatchEvents streams before the servers wait for them */
    admin_stop(adm, 10000);
    mservice_stop(svc, 10000);
    rpc_reflection_free(refl);
    replicas_free(repl); /* before what its hooks touch */
    upd_free(updates); /* after the server: no stream uses it any more */
    mmetrics_free(metrics); /* after the servers: their observers count until the end */
    free(extra);
    admin_free(adm);
    admin_enroll_free(enroll);
    auth_free(tokens);
    nodeauth_free(nauth);
    abuse_free(ab);
    pool_free(daemons);
    retention_stop(ret);
    liveness_free(live); /* flushes last_seen of every node */
    evhub_free(hub);     /* after the last publisher */
    store_close(st);     /* finishes queued writes */
    sdn_free(sd);
    log_info("manager.stopped", "rc=%d", rc);
    mconfig_free(cfg);
    log_close();
    return rc;
}
