/* dmetrics: one snapshot of the supervisor per scrape (sup_list), then one family at a time
 * over it, since the format wants each family's samples together. */
#include "daemon/dmetrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dmetrics {
    sup *sup;
    link_t *link;
    hbhttp *hb;
    char *node_id;
    int64_t interval_ms;
};

dmetrics *dmetrics_new(const dmetrics_opts *o, char *err, size_t errlen)
{
    dmetrics *d = calloc(1, sizeof *d);
    if (!d || !(d->node_id = strdup(o->node_id ? o->node_id : ""))) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->sup = o->sup;
    d->link = o->link;
    d->hb = o->hb;
    d->interval_ms = o->resource_interval_ms > 0 ? o->resource_interval_ms : 10000;
    return d;
}

void dmetrics_free(dmetrics *d)
{
    if (!d) return;
    free(d->node_id);
    free(d);
}

/* The agent's latest resource sample, if it belongs to its current process. */
static int latest_point(dmetrics *d, const sup_agent_info *a, pmon_point *out)
{
    if (a->pid <= 0) return 0;
    int64_t window_s = 3 * d->interval_ms / 1000;
    if (window_s < 60) window_s = 60;
    pmon_point *pts = NULL;
    size_t n = 0;
    if (sup_agent_metrics(d->sup, a->id, window_s, &pts, &n) != SUP_OK || n == 0) {
        free(pts);
        return 0;
    }
    *out = pts[n - 1];
    free(pts);
    return out->time_ms / 1000 >= a->start_time;
}

static void gauge(prom_buf *b, const char *name, const char *help, double v)
{
    prom_family(b, name, PROM_GAUGE, help);
    prom_sample(b, name, NULL, 0, v);
}

static void counter(prom_buf *b, const char *name, const char *help, double v)
{
    prom_family(b, name, PROM_COUNTER, help);
    prom_sample(b, name, NULL, 0, v);
}

struct res_metric {
    const char *name, *help;
    prom_type type;
};

static double res_value(const pmon_point *p, int i)
{
    switch (i) {
    case 0: return p->cpu;
    case 1: return (double)p->rss;
    case 2: return (double)p->vms;
    case 3: return (double)p->open_files;
    case 4: return (double)p->read_bytes;
    default: return (double)p->write_bytes;
    }
}

int dmetrics_fill(void *user, prom_buf *b)
{
    dmetrics *d = user;
    sup_agent_info *list = NULL;
    size_t n = 0;
    if (sup_list(d->sup, &list, &n) != 0) return -1;
    pmon_point *pts = calloc(n ? n : 1, sizeof *pts);
    int *have = calloc(n ? n : 1, sizeof *have);
    if (!pts || !have) {
        free(pts);
        free(have);
        sup_list_free(list, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) have[i] = latest_point(d, &list[i], &pts[i]);

    prom_family(b, "ops_daemon_build_info", PROM_GAUGE, "1, with the version and node id of ops-daemon.");
    prom_sample(b, "ops_daemon_build_info", (prom_label[]){{"version", OPS_VERSION}, {"node_id", d->node_id}}, 2, 1);

    static const char *const statuses[] = {SUP_STATUS_STOPPED, SUP_STATUS_STARTING, SUP_STATUS_RUNNING,
                                           SUP_STATUS_STOPPING, SUP_STATUS_ERROR};
    prom_family(b, "ops_daemon_agents", PROM_GAUGE, "Configured agents by status.");
    for (size_t s = 0; s < sizeof statuses / sizeof statuses[0]; s++) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++) c += strcmp(list[i].status, statuses[s]) == 0;
        prom_sample(b, "ops_daemon_agents", (prom_label[]){{"status", statuses[s]}}, 1, (double)c);
    }
    prom_family(b, "ops_daemon_agent_up", PROM_GAUGE, "1 when the agent is running.");
    for (size_t i = 0; i < n; i++)
        prom_sample(b, "ops_daemon_agent_up", (prom_label[]){{"agent_id", list[i].id}}, 1,
                    strcmp(list[i].status, SUP_STATUS_RUNNING) == 0);
    prom_family(b, "ops_daemon_agent_restarts_total", PROM_COUNTER,
                "Processes started after the first one since the agent was last started (crash, health, manual, reload).");
    for (size_t i = 0; i < n; i++)
        prom_sample(b, "ops_daemon_agent_restarts_total", (prom_label[]){{"agent_id", list[i].id}}, 1, list[i].restart_count);
    prom_family(b, "ops_daemon_agent_consecutive_failures", PROM_GAUGE, "Failures in a row (the error state comes at max_retries).");
    for (size_t i = 0; i < n; i++)
        prom_sample(b, "ops_daemon_agent_consecutive_failures", (prom_label[]){{"agent_id", list[i].id}}, 1, list[i].failures);

    static const struct res_metric res[] = {
        {"ops_daemon_agent_cpu_percent", "CPU use of the agent's main process, percent of one core, at the last sample.", PROM_GAUGE},
        {"ops_daemon_agent_rss_bytes", "Resident memory of the agent's main process at the last sample.", PROM_GAUGE},
        {"ops_daemon_agent_vms_bytes", "Virtual memory of the agent's main process at the last sample.", PROM_GAUGE},
        {"ops_daemon_agent_open_files", "Open file descriptors of the agent's main process at the last sample.", PROM_GAUGE},
        {"ops_daemon_agent_read_bytes_total", "Storage bytes read by the agent's current process.", PROM_COUNTER},
        {"ops_daemon_agent_write_bytes_total", "Storage bytes written by the agent's current process.", PROM_COUNTER},
    };
    for (size_t r = 0; r < sizeof res / sizeof res[0]; r++) {
        prom_family(b, res[r].name, res[r].type, res[r].help);
        for (size_t i = 0; i < n; i++)
            if (have[i]) prom_sample(b, res[r].name, (prom_label[]){{"agent_id", list[i].id}}, 1, res_value(&pts[i], (int)r));
    }
    free(pts);
    free(have);
    sup_list_free(list, n);

    if (d->link) {
        link_stats ls;
        link_get_stats(d->link, &ls);
        gauge(b, "ops_daemon_manager_connected", "1 while the node is registered with the manager.", ls.registered ? 1 : 0);
        counter(b, "ops_daemon_registrations_total", "Successful RegisterNode calls.", (double)ls.registrations);
        prom_family(b, "ops_daemon_heartbeats_total", PROM_COUNTER, "Heartbeats sent to the manager, by result.");
        prom_sample(b, "ops_daemon_heartbeats_total", (prom_label[]){{"result", "ok"}}, 1, (double)ls.heartbeats_ok);
        prom_sample(b, "ops_daemon_heartbeats_total", (prom_label[]){{"result", "failed"}}, 1, (double)ls.heartbeats_failed);
        counter(b, "ops_daemon_reports_sent_total", "Metric reports the manager acknowledged.", (double)ls.reports_sent);
        counter(b, "ops_daemon_reports_spooled_total", "Metric reports written to the spool.", (double)ls.reports_spooled);
        counter(b, "ops_daemon_agent_syncs_total", "SyncAgentStates calls the manager acknowledged.", (double)ls.syncs);
        gauge(b, "ops_daemon_spool_records", "Reports in the spool waiting for the manager.", (double)ls.spool_pending);
        gauge(b, "ops_daemon_spool_bytes", "Bytes of the reports in the spool.", (double)ls.spool_bytes);
        counter(b, "ops_daemon_spool_dropped_total", "Reports dropped because the spool was full (oldest first).", (double)ls.spool_dropped);
    }
    if (d->hb) {
        hbhttp_stats hs;
        hbhttp_get_stats(d->hb, &hs);
        prom_family(b, "ops_daemon_agent_heartbeats_total", PROM_COUNTER, "POST /heartbeat requests from agents, by result.");
        prom_sample(b, "ops_daemon_agent_heartbeats_total", (prom_label[]){{"result", "accepted"}}, 1, (double)hs.processed);
        prom_sample(b, "ops_daemon_agent_heartbeats_total", (prom_label[]){{"result", "error"}}, 1, (double)hs.errors);
    }
    return 0;
}
