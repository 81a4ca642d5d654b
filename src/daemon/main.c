/* ops-daemon: wires the parts together. The supervisor runs the agents, dservice answers the
 * manager, hbhttp takes agents' heartbeats, link reports to the manager. Signals are handled
 * here only, synchronously (sigwait), so no part needs to be async-signal-safe. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/prom.h"
#include "base/sdnotify.h"
#include "daemon/dconfig.h"
#include "daemon/dmetrics.h"
#include "daemon/dservice.h"
#include "daemon/hbhttp.h"
#include "daemon/link.h"
#include "daemon/nodeid.h"
#include "daemon/supervisor.h"
#include "ops_descriptors.h"
#include "daemon/updater.h"

static const char usage[] =
    "usage: ops-daemon -c FILE [--stop-agents]\n"
    "       ops-daemon --check-config FILE\n"
    "\n"
    "Runs on every host: supervises the agents listed in FILE (start, stop, restart on crash\n"
    "with backoff, health checks), samples their resource use, reports the host to the\n"
    "manager named in FILE and answers its DaemonService calls.\n"
    "\n"
    "  -c, --config FILE      daemon.yaml to run with (see configs/daemon.yaml)\n"
    "      --check-config FILE  validate FILE, print the problem if any, and exit\n"
    "      --print-config FILE  print the effective configuration (defaults filled in)\n"
    "      --stop-agents      on SIGTERM stop the agents too (default: leave them running;\n"
    "                         the next ops-daemon re-adopts them)\n"
    "  -h, --help             this text\n"
    "  -V, --version          print the version\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop; SIGHUP reloads FILE (added agents start, removed ones\n"
    "stop, changed ones restart) and reopens the log file.\n"
    "Exit codes: 0 clean stop (or, with --check-config, a valid file), 1 runtime failure (or an\n"
    "invalid file with --check-config), 2 usage error or a config that does not load.\n";

struct daemon_state {
    const char *config_path;
    dconfig *cfg;
    sup *sup;
    hbhttp *hb;
    dservice *svc;
    rpc_reflection *refl; /* server reflection's index of the compiled-in descriptor set */
    link_t *link;
    /* The supervisor's thread tells the link about agent changes until the very end (stopping
     * agents at exit changes them): it must never see a link that is being stopped. */
    pthread_mutex_t link_mu;
    dmetrics *metrics;
    prom_http *scrape;
    sdn *sd;
    char node_id[128];
    updr *updr;
    char reexec_path[4096]; /* set by a daemon self-update: exec it after a clean stop */
};

/* A new daemon binary is in place (updater thread): stop like SIGTERM, agents left running,
 * then exec it; the new daemon re-adopts the agents from agents.state. */
static void on_self_update(void *user, const char *exe_path)
{
    struct daemon_state *d = user;
    snprintf(d->reexec_path, sizeof d->reexec_path, "%s", exe_path);
    kill(getpid(), SIGUSR2);
}

static int on_heartbeat(void *user, const hb_report *r)
{
    struct daemon_state *d = user;
    return sup_record_heartbeat(d->sup, r->agent_id, r->timestamp) == 0 ? 0 : HB_UNKNOWN_AGENT;
}

static void on_agent_change(void *user, const char *agent_id, const char *status)
{
    struct daemon_state *d = user;
    log_info("agent.status", "node=%s agent=%s status=%s", d->node_id, agent_id, status);
    pthread_mutex_lock(&d->link_mu);
    if (d->link) link_agents_changed(d->link);
    pthread_mutex_unlock(&d->link_mu);
}

static int write_pid_file(const char *path)
{
    if (!path || !*path) return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "%d\n", (int)getpid());
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

static void reload(struct daemon_state *d)
{
    char err[1024];
    dconfig *next;
    if (log_reopen() != 0) log_warn("log.reopen_failed", "error=%s", strerror(errno));
    if (dconfig_load(d->config_path, &next, err, sizeof err) != 0) {
        char q[1100];
        log_error("config.reload_failed", "file=%s error=%s", d->config_path, log_quote(q, sizeof q, err));
        return; /* keep running with what we have */
    }
    /* The listener stays where it is, so judge the new auth settings against it. */
    char *moved = next->daemon.grpc_host;
    next->daemon.grpc_host = d->cfg->daemon.grpc_host;
    int exposure = dconfig_check_exposure(next, err, sizeof err);
    next->daemon.grpc_host = moved;
    if (exposure < 0) {
        char q[1100];
        log_error("config.reload_failed", "file=%s error=%s", d->config_path, log_quote(q, sizeof q, err));
        dconfig_free(next);
        return;
    }
    if (exposure > 0) {
        char q[1100];
        log_warn("daemon.insecure", "error=%s", log_quote(q, sizeof q, err));
    }
    if (sup_set_agents(d->sup, next->agents, next->n_agents, err, sizeof err) != 0) {
        char q[1100];
        log_error("config.reload_failed", "file=%s error=%s", d->config_path, log_quote(q, sizeof q, err));
        dconfig_free(next);
        return;
    }
    dservice_swap_config(d->svc, next);
    dconfig_free(d->cfg);
    d->cfg = next;
    log_info("config.reloaded", "file=%s agents=%zu", d->config_path, next->n_agents);
}

int main(int argc, char **argv)
{
    struct daemon_state d;
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.link_mu, NULL);
    int check_only = 0, stop_agents = 0; /* check_only 2: --print-config */
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", required_argument, NULL, 'k'},
        {"stop-agents", no_argument, NULL, 's'},  {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {"print-config", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': d.config_path = optarg; break;
        case 'k': d.config_path = optarg; check_only = 1; break;
        case 'p': d.config_path = optarg; check_only = 2; break;
        case 's': stop_agents = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf("ops-daemon %s\n", OPS_VERSION); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!d.config_path || optind < argc) {
        fprintf(stderr, "ops-daemon: %s\n\n%s", d.config_path ? "unexpected argument" : "-c FILE is required", usage);
        return 2;
    }
    char err[1024];
    if (dconfig_load(d.config_path, &d.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ops-daemon: %s\n", err);
        return check_only ? 1 : 2; /* --check-config: 1 = the file is not valid */
    }
    if (check_only == 2) {
        char *y = NULL;
        int prc = dconfig_dump_yaml(d.cfg, &y);
        if (prc == 0 && y) fputs(y, stdout);
        free(y);
        dconfig_free(d.cfg);
        return prc == 0 && y ? 0 : 1;
    }
    int exposure = dconfig_check_exposure(d.cfg, err, sizeof err);
    if (exposure < 0) {
        fprintf(stderr, "ops-daemon: %s\n", err);
        dconfig_free(d.cfg);
        return check_only ? 1 : 2;
    }
    if (check_only) {
        if (exposure > 0) printf("warning: %s\n", err);
        printf("%s: ok (%zu agents)\n", d.config_path, d.cfg->n_agents);
        dconfig_free(d.cfg);
        return 0;
    }
    if (d.cfg->daemon.stop_agents_on_exit) stop_agents = 1;

    /* Before any thread exists, so that every thread inherits the mask and only sigwait
     * below ever sees these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2); /* self-update: re-exec */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (log_open(d.cfg->daemon.log_level, d.cfg->daemon.log_file) != 0)
        fprintf(stderr, "ops-daemon: cannot open log file %s: %s (logging to stderr)\n", d.cfg->daemon.log_file, strerror(errno));
    int rc = 1;
    d.sd = sdn_new(NULL, NULL, err, sizeof err); /* systemd: READY, STATUS, watchdog */
    if (!d.sd) {
        log_error("daemon.sdnotify_failed", "error=\"%s\"", err);
        goto out;
    }
    if (exposure > 0) {
        /* Said at every start: it must not go unnoticed. */
        char q[1100];
        log_warn("daemon.insecure", "error=%s", log_quote(q, sizeof q, err));
    }
    if (nodeid_resolve(d.cfg->daemon.id, d.cfg->daemon.work_dir, d.node_id, sizeof d.node_id, err, sizeof err) != 0) {
        log_error("daemon.node_id_failed", "error=\"%s\"", err);
        goto out;
    }
    if (write_pid_file(d.cfg->daemon.pid_file) != 0)
        log_warn("daemon.pid_file_failed", "file=%s error=\"%s\"", d.cfg->daemon.pid_file, strerror(errno));

    sup_options so = {.state_dir = d.cfg->daemon.work_dir, .resource_interval_ms = d.cfg->daemon.resource_interval_ms,
                      .on_change = on_agent_change, .user = &d};
    d.sup = sup_new(&so, err, sizeof err);
    if (!d.sup || sup_set_agents(d.sup, d.cfg->agents, d.cfg->n_agents, err, sizeof err) != 0) {
        log_error("daemon.supervisor_failed", "error=\"%s\"", err);
        goto out;
    }
    hbhttp_options ho = {.host = d.cfg->daemon.http_host, .port = d.cfg->daemon.http_port, .on_heartbeat = on_heartbeat, .user = &d};
    if (hbhttp_start(&ho, &d.hb, err, sizeof err) != 0) {
        log_error("daemon.http_failed", "error=\"%s\"", err);
        goto out;
    }
    char listen[300];
    snprintf(listen, sizeof listen, "%s:%d", d.cfg->daemon.grpc_host, d.cfg->daemon.grpc_port);
    const char *listen_list[] = {listen, NULL};
    d.refl = rpc_reflection_new(ops_descriptor_set, ops_descriptor_set_len, err, sizeof err);
    if (!d.refl) {
        log_error("daemon.reflection_failed", "error=\"%s\"", err);
        goto out;
    }
    updr_opts uo = {.cfg = d.cfg, .node_id = d.node_id, .sup = d.sup, .no_stream = !d.cfg->updates.enabled,
                    .on_self_update = on_self_update, .user = &d};
    d.updr = updr_start(&uo, err, sizeof err);
    if (!d.updr) {
        log_error("daemon.updater_failed", "error=\"%s\"", err);
        goto out;
    }
    const dconfig_server_tls *st = &d.cfg->daemon.tls;
    dservice_opts dopts = {.listen = listen_list, .sup = d.sup, .cfg = d.cfg, .reflection = d.refl, .updr = d.updr,
                           .tls = {.enabled = st->enabled, .cert_file = st->cert_file, .key_file = st->key_file,
                                   .ca_file = st->client_ca_file, .require_client_cert = st->require_client_cert,
                                   .request_client_cert = 1}};
    d.svc = dservice_start(&dopts, err, sizeof err);
    if (!d.svc) {
        log_error("daemon.grpc_failed", "listen=%s error=\"%s\"", listen, err);
        goto out;
    }
    link_opts lo = {.cfg = d.cfg, .node_id = d.node_id, .sup = d.sup, .daemon_port = dservice_port(d.svc)};
    link_t *started = link_start(&lo, err, sizeof err);
    pthread_mutex_lock(&d.link_mu);
    d.link = started;
    pthread_mutex_unlock(&d.link_mu);
    if (!d.link) {
        log_error("daemon.link_failed", "error=\"%s\"", err);
        goto out;
    }
    /* /metrics is for operators: a port already taken is logged and the daemon runs on. The
     * listen address is read once; a reload does not move it. */
    if (d.cfg->prometheus.enabled) {
        dmetrics_opts mo = {.sup = d.sup, .link = d.link, .hb = d.hb, .node_id = d.node_id,
                            .resource_interval_ms = d.cfg->daemon.resource_interval_ms};
        if (!(d.metrics = dmetrics_new(&mo, err, sizeof err)) ||
            prom_http_start(d.cfg->prometheus.listen, dmetrics_fill, d.metrics, &d.scrape, err, sizeof err) != 0)
            log_error("daemon.prometheus_failed", "listen=%s error=\"%s\"", d.cfg->prometheus.listen, err);
    }
    log_info("daemon.started", "node=%s grpc=%s http_port=%d agents=%zu manager=%s version=%s", d.node_id, listen,
             hbhttp_port(d.hb), d.cfg->n_agents, d.cfg->manager.address, OPS_VERSION);
    char status[400];
    snprintf(status, sizeof status, "node %s: %zu agents, manager %s", d.node_id, d.cfg->n_agents, d.cfg->manager.address);
    sdn_ready(d.sd, status); /* a failure is logged there; systemd would time the start out */

    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            sdn_reloading(d.sd);
            reload(&d);
            (void)dservice_reload_tls(d.svc); /* a refusal is logged; the old certificate stays */
            link_config_changed(d.link, d.cfg);
            updr_config_changed(d.updr, d.cfg);
            snprintf(status, sizeof status, "node %s: %zu agents, manager %s", d.node_id, d.cfg->n_agents, d.cfg->manager.address);
            sdn_ready(d.sd, status);
            continue;
        }
        if (sig == SIGUSR2) {
            if (!d.reexec_path[0]) continue;
            stop_agents = 0;
            log_info("daemon.reexec", "node=%s binary=%s", d.node_id, d.reexec_path);
            break;
        }
        log_info("daemon.stopping", "node=%s signal=%s stop_agents=%d", d.node_id, sig == SIGTERM ? "TERM" : "INT", stop_agents);
        sdn_stopping(d.sd, stop_agents ? "stopping with its agents" : "stopping; agents keep running");
        break;
    }
    rc = 0;
out:
    prom_http_stop(d.scrape);
    dmetrics_free(d.metrics);
    pthread_mutex_lock(&d.link_mu);
    link_t *stopping_link = d.link;
    d.link = NULL;
    pthread_mutex_unlock(&d.link_mu);
    link_stop(stopping_link);
    dservice_stop(d.svc, 5000);
    rpc_reflection_free(d.refl);
    updr_stop(d.updr);
    if (d.hb) hbhttp_stop(d.hb);
    sup_free(d.sup, stop_agents);
    sdn_free(d.sd);
    if (d.cfg->daemon.pid_file && *d.cfg->daemon.pid_file && rc == 0) unlink(d.cfg->daemon.pid_file);
    log_info("daemon.stopped", "node=%s rc=%d", d.node_id, rc);
    dconfig_free(d.cfg);
    log_close();
    if (rc == 0 && d.reexec_path[0]) {
        execv(d.reexec_path, argv);
        fprintf(stderr, "ops-daemon: exec %s: %s\n", d.reexec_path, strerror(errno));
        return 1;
    }
    return rc;
}
