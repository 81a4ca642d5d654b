/* ops-manager: wires the parts together — store, liveness, retention, the gRPC services — and
 * handles signals synchronously (sigwait), so no part needs to be async-signal-safe. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/sdnotify.h"
#include "manager/liveness.h"
#include "manager/mconfig.h"
#include "manager/mservice.h"
#include "manager/pool.h"
#include "manager/retention.h"
#include "manager/store.h"

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
    pool *daemons = NULL;
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
    liveness_config lc = {.offline_after_ms = cfg->node.offline_after_ms};
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
    daemons = pool_new(&po, err, sizeof err);
    if (!daemons) {
        log_error("manager.pool_failed", "error=\"%s\"", err);
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
    svc = mservice_start(&mo, err, sizeof err);
    if (!svc) {
        log_error("manager.grpc_failed", "listen=%s error=\"%s\"", listen, err);
        goto out;
    }
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
            continue;
        }
        if (sig == SIGHUP) {
            if (log_reopen() != 0) log_warn("log.reopen_failed", "file=%s error=%s", cfg->log.file, strerror(errno));
            else log_info("log.reopened", "file=%s", cfg->log.file);
            sdn_status(sd, "%s (log reopened)", status);
            continue;
        }
        log_info("manager.stopping", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
        sdn_stopping(sd, "stopping: finishing calls, flushing the store");
        break;
    }
    rc = 0;
out:
    mservice_stop(svc, 10000);
    pool_free(daemons);
    retention_stop(ret);
    liveness_free(live); /* flushes last_seen of every node */
    store_close(st);     /* finishes queued writes */
    sdn_free(sd);
    log_info("manager.stopped", "rc=%d", rc);
    mconfig_free(cfg);
    log_close();
    return rc;
}
