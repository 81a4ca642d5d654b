/* The manager's client pool against daemons that we did not write (a grpc-js DaemonService),
 * one that is down, and one that hangs: error kinds, retries only where idempotent, channel
 * reuse, address changes, forgetting and idle eviction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "manager/pool.h"
#include "testsvc.h"

static struct {
    pid_t js_pid;
    int js_port;
    int down_port;
    char moved_addr[64];
} env;

static int resolve(void *user, const char *node, char *addr, size_t n)
{
    (void)user;
    if (!strcmp(node, "js") || !strcmp(node, "hang")) snprintf(addr, n, "127.0.0.1:%d", env.js_port);
    else if (!strcmp(node, "down")) snprintf(addr, n, "127.0.0.1:%d", env.down_port);
    else if (!strcmp(node, "moving")) snprintf(addr, n, "%s", env.moved_addr);
    else return -1;
    return 0;
}

static int start_js(void **state)
{
    (void)state;
    const char *src = getenv("OPS_SOURCE_DIR");
    if (!src) return -1;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    env.js_pid = fork();
    if (env.js_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        char peer[512];
        snprintf(peer, sizeof peer, "%s/tests/interop/peer.js", src);
        execlp("node", "node", peer, "server", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[128];
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "LISTENING %d", &env.js_port) != 1) return -1;
    /* Keep the pipe open: the peer exits when its stdin closes, not its stdout. */
    testsvc t;
    char err[256];
    if (testsvc_start(&t, NULL, NULL, NULL, 0, err, sizeof err) != 0) return -1;
    env.down_port = t.port; /* a port that was just closed: nobody listens */
    testsvc_stop(&t, 0);
    return 0;
}

static int stop_js(void **state)
{
    (void)state;
    if (env.js_pid > 0) {
        kill(env.js_pid, SIGTERM);
        waitpid(env.js_pid, NULL, 0);
    }
    return 0;
}

static pool *mkpool(int64_t op_timeout, int64_t idle)
{
    pool_opts o = {.resolve = resolve, .timeout_ms = 3000, .operate_timeout_ms = op_timeout, .idle_ms = idle};
    char err[256];
    pool *p = pool_new(&o, err, sizeof err);
    assert_non_null(p);
    return p;
}

static void against_grpc_js(void **state)
{
    (void)state;
    pool *p = mkpool(0, 0);
    Proto__ListAgentsResponse *la;
    pool_result r;
    assert_int_equal(pool_list_agents(p, "js", "trace-pool-1", &la, &r), RPC_OK);
    assert_int_equal(la->n_agents, 2);
    assert_string_equal(la->agents[0]->id, "a1");
    assert_string_equal(la->agents[0]->status, "running");
    protobuf_c_message_free_unpacked(&la->base, NULL);

    Proto__AgentOperationResponse *op;
    assert_int_equal(pool_operate_agent(p, "js", "a1", "restart", NULL, &op, &r), RPC_OK);
    assert_true(op->success);
    protobuf_c_message_free_unpacked(&op->base, NULL);
    assert_int_equal(pool_operate_agent(p, "js", "zz", "restart", NULL, &op, &r), RPC_NOT_FOUND);
    assert_int_equal(r.kind, RPC_ERR_AGENT_NOT_FOUND);
    assert_non_null(strstr(r.message, "node js"));
    assert_non_null(strstr(r.message, "agent zz"));
    /* The kind once, not "agent not found: agent not found: zz". */
    assert_string_equal(r.message, "OperateAgent: node js agent zz: agent not found");
    assert_int_equal(pool_operate_agent(p, "js", "a1", "explode", NULL, &op, &r), RPC_INVALID_ARGUMENT);
    assert_int_equal(r.kind, RPC_ERR_INVALID_ARGUMENT);
    const char *ia = strstr(r.message, "invalid argument");
    assert_non_null(ia);
    assert_null(strstr(ia + 1, "invalid argument"));

    Proto__AgentMetricsResponse *am;
    assert_int_equal(pool_agent_metrics(p, "js", "a1", 0, NULL, &am, &r), RPC_OK);
    assert_int_equal(am->n_data_points, 3);
    protobuf_c_message_free_unpacked(&am->base, NULL);
    Proto__ConfigResponse *cr;
    assert_int_equal(pool_get_config(p, "js", "daemon", NULL, NULL, &cr, &r), RPC_UNIMPLEMENTED);
    assert_int_equal(r.kind, RPC_ERR_OTHER);
    assert_int_equal(pool_size(p), 1); /* one channel, reused */

    assert_int_equal(pool_list_agents(p, "nobody", NULL, &la, &r), RPC_NOT_FOUND);
    assert_non_null(strstr(r.message, "unknown node"));
    pool_free(p);
}

static void daemon_down(void **state)
{
    (void)state;
    pool *p = mkpool(0, 0);
    Proto__ListAgentsResponse *la;
    Proto__AgentOperationResponse *op;
    pool_result r;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(pool_list_agents(p, "down", NULL, &la, &r), RPC_UNAVAILABLE);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_int_equal(r.kind, RPC_ERR_CONNECTION_FAILED);
    assert_int_equal(r.attempts, 3);          /* idempotent: retried */
    assert_true(b.tv_sec - a.tv_sec < 10);    /* within the deadline, not hanging */
    assert_non_null(strstr(r.message, "connection failed"));
    assert_int_equal(pool_operate_agent(p, "down", "a1", "stop", NULL, &op, &r), RPC_UNAVAILABLE);
    assert_int_equal(r.attempts, 1);          /* never retried */
    pool_free(p);
}

static void daemon_hangs(void **state)
{
    (void)state;
    pool *p = mkpool(500, 0); /* OperateAgent deadline 500 ms; the peer's "slow" takes 5 s */
    Proto__AgentOperationResponse *op;
    pool_result r;
    assert_int_equal(pool_operate_agent(p, "hang", "slow", "restart", NULL, &op, &r), RPC_DEADLINE_EXCEEDED);
    assert_int_equal(r.kind, RPC_ERR_TIMEOUT);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.message, "timeout"));
    pool_free(p);
}

static void address_change_forget_idle(void **state)
{
    (void)state;
    pool *p = mkpool(0, 200);
    Proto__ListAgentsResponse *la;
    pool_result r;
    snprintf(env.moved_addr, sizeof env.moved_addr, "127.0.0.1:%d", env.down_port);
    assert_int_equal(pool_list_agents(p, "moving", NULL, &la, &r), RPC_UNAVAILABLE);
    snprintf(env.moved_addr, sizeof env.moved_addr, "127.0.0.1:%d", env.js_port); /* re-registered elsewhere */
    assert_int_equal(pool_list_agents(p, "moving", NULL, &la, &r), RPC_OK);
    protobuf_c_message_free_unpacked(&la->base, NULL);
    assert_int_equal(pool_size(p), 1);
    assert_int_equal(pool_list_agents(p, "js", NULL, &la, &r), RPC_OK);
    protobuf_c_message_free_unpacked(&la->base, NULL);
    assert_int_equal(pool_size(p), 2);
    pool_forget(p, "moving");
    assert_int_equal(pool_size(p), 1);
    usleep(300000);
    assert_int_equal(pool_sweep_idle(p), 1);
    assert_int_equal(pool_size(p), 0);
    pool_free(p);
}

int main(void)
{
    log_open(LOGL_ERROR, NULL);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(against_grpc_js),
        cmocka_unit_test(daemon_down),
        cmocka_unit_test(daemon_hangs),
        cmocka_unit_test(address_change_forget_idle),
    };
    return cmocka_run_group_tests(tests, start_js, stop_js);
}
