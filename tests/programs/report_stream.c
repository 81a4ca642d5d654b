/* report_stream: sends ReportMetrics for one node as fast as THREADS threads can, each report a
 * new timestamp of type "load", and prints every acknowledged (success=true) timestamp on its
 * own line, flushed, until SECONDS pass or the manager goes away. For the kill -9 test: every
 * line printed is a point the manager promised to keep. With "keep", an unavailable manager does
 * not end the stream (for failover tests: the next call may reach another replica).
 *   report_stream TARGET NODE_ID FIRST_TS SECONDS [THREADS [keep]] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "manager.pb-c.h"
#include "rpc/client.h"

static rpc_channel *ch;
static const char *node;
static atomic_long next_ts;
static time_t until;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static int keep_going;

static void *run(void *arg)
{
    (void)arg;
    while (time(NULL) < until) {
        long ts = atomic_fetch_add(&next_ts, 1);
        Manager__MetricData__ValuesEntry v = MANAGER__METRIC_DATA__VALUES_ENTRY__INIT;
        v.key = "v";
        v.value = (double)ts;
        Manager__MetricData__ValuesEntry *vp = &v;
        Manager__MetricData md = MANAGER__METRIC_DATA__INIT;
        md.type = "load";
        md.timestamp = ts;
        md.n_values = 1;
        md.values = &vp;
        Manager__MetricData *mdp = &md;
        Manager__ReportMetricsRequest req = MANAGER__REPORT_METRICS_REQUEST__INIT;
        req.node_id = (char *)node;
        req.n_metrics = 1;
        req.metrics = &mdp;
        rpc_call_opts o = {.timeout_ms = 2000};
        rpc_result res;
        ProtobufCMessage *m = NULL;
        if (rpc_call_unary(ch, "/manager.ManagerService/ReportMetrics", &req.base, &manager__report_metrics_response__descriptor, &m, &o, &res) == RPC_OK &&
            ((Manager__ReportMetricsResponse *)m)->success) {
            pthread_mutex_lock(&out_mu);
            printf("%ld\n", ts);
            fflush(stdout);
            pthread_mutex_unlock(&out_mu);
        }
        if (m) protobuf_c_message_free_unpacked(m, NULL);
        if (res.code == RPC_UNAVAILABLE && !keep_going) break; /* the manager is gone */
        if (res.code == RPC_UNAVAILABLE) nanosleep(&(struct timespec){0, 50000000L}, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: report_stream TARGET NODE_ID FIRST_TS SECONDS [THREADS]\n");
        return 2;
    }
    log_open(LOGL_ERROR, NULL);
    char err[256];
    ch = rpc_channel_new(argv[1], NULL, err, sizeof err);
    if (!ch) { fprintf(stderr, "report_stream: %s\n", err); return 1; }
    node = argv[2];
    atomic_store(&next_ts, atol(argv[3]));
    until = time(NULL) + atoi(argv[4]);
    int n = argc > 5 ? atoi(argv[5]) : 8;
    keep_going = argc > 6 && !strcmp(argv[6], "keep");
    pthread_t th[64];
    if (n < 1 || n > 64) n = 8;
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, run, NULL);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    rpc_channel_free(ch);
    return 0;
}
