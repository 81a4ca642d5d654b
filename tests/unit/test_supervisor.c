/* The agent supervisor with real child processes: the shell scripts in tests/agents/ and
 * build/bin/agent_memhog. Every wait polls with a generous timeout; nothing depends on tight
 * timing, since these run under ASan beside other tests on small machines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/procmon.h"
#include "daemon/supervisor.h"

#define SETTLE_MS 200

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) { usleep((useconds_t)ms * 1000); }

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    assert_true(vasprintf(&s, fmt, ap) >= 0);
    va_end(ap);
    return s;
}

static char *script(const char *name)
{
    const char *src = getenv("OPS_SOURCE_DIR");
    return xprintf("%s/tests/agents/%s", src ? src : ".", name);
}

/* A spec running /bin/sh <script> [args...] (NULL-terminated), in {root}/{id}. */
static agent_spec mkspec(const char *root, const char *id, const char *name, ...)
{
    agent_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.id = xstrdup(id);
    sp.type = xstrdup("test");
    sp.name = xstrdup(id);
    sp.version = xstrdup("1.0");
    sp.binary_path = xstrdup("/bin/sh");
    const char *extra[8];
    size_t n = 0;
    va_list ap;
    va_start(ap, name);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 8) extra[n++] = a;
    va_end(ap);
    sp.args = calloc(n + 2, sizeof *sp.args);
    assert_non_null(sp.args);
    sp.args[0] = script(name);
    for (size_t i = 0; i < n; i++) sp.args[i + 1] = xstrdup(extra[i]);
    sp.work_dir = xprintf("%s/agents/%s", root, id);
    sp.enabled = 1;
    sp.stop_grace_ms = 3000;
    sp.log_max_bytes = 1 << 20;
    sp.log_keep = 2;
    sp.health.interval_ms = 30000;
    sp.restart.policy = AGENT_RESTART_ON_FAILURE;
    sp.restart.max_retries = 5;
    sp.restart.backoff_base_ms = 100;
    sp.restart.backoff_max_ms = 1000;
    return sp;
}

/* on_change recorder */
typedef struct {
    pthread_mutex_t mu;
    char log[8192];
} changes;

static void on_change(void *user, const char *id, const char *status)
{
    changes *c = user;
    pthread_mutex_lock(&c->mu);
    size_t l = strlen(c->log);
    snprintf(c->log + l, sizeof c->log - l, "%s:%s,", id, status);
    pthread_mutex_unlock(&c->mu);
}

typedef struct {
    char dir[64];
    changes ch;
    sup *s;
} fixture;

static sup *new_sup(fixture *f, int64_t resource_ms)
{
    char err[256] = "";
    char *state = xprintf("%s/state", f->dir);
    sup_options o = {.state_dir = state, .settle_ms = SETTLE_MS,
                     .resource_interval_ms = resource_ms, .on_change = on_change, .user = &f->ch};
    sup *s = sup_new(&o, err, sizeof err);
    free(state);
    if (!s) fail_msg("sup_new: %s", err);
    return s;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ops-sup-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->ch.mu, NULL);
    f->s = new_sup(f, 100);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sup_free(f->s, 1);
    pthread_mutex_destroy(&f->ch.mu);
    char *cmd = xprintf("rm -rf '%s'", f->dir);
    int rc = system(cmd);
    (void)rc;
    free(cmd);
    free(f);
    return 0;
}

static void set_agents(sup *s, agent_spec *specs, size_t n)
{
    char err[256] = "";
    if (sup_set_agents(s, specs, n, err, sizeof err) != 0) fail_msg("sup_set_agents: %s", err);
}

static void free_specs(agent_spec *specs, size_t n)
{
    for (size_t i = 0; i < n; i++) agent_spec_free(&specs[i]);
}

static sup_agent_info get(sup *s, const char *id)
{
    sup_agent_info i;
    assert_int_equal(sup_get(s, id, &i), SUP_OK);
    return i;
}

/* Polls until agent id has status (and, when min_restarts >= 0, restart_count >= it). */
static int wait_for(sup *s, const char *id, const char *status, int min_restarts, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        sup_agent_info i = get(s, id);
        int ok = (!status || strcmp(i.status, status) == 0) &&
                 (min_restarts < 0 || i.restart_count >= min_restarts);
        sup_agent_info_clear(&i);
        if (ok) return 1;
        if (now_ms() > end) return 0;
        sleep_ms(20);
    }
}

/* Alive = exists and not a zombie (killed orphans may wait for an init that never reaps). */
static int proc_alive(pid_t pid)
{
    pmon_proc p;
    return pid > 0 && pmon_read_proc(pid, &p) == 0 && p.state != 'Z';
}

static int wait_gone(pid_t pid, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (proc_alive(pid)) {
        if (now_ms() > end) return 0;
        sleep_ms(20);
    }
    return 1;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return NULL;
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static int wait_file_has(const char *path, const char *needle, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        char *b = slurp(path);
        int ok = b && strstr(b, needle);
        free(b);
        if (ok) return 1;
        if (now_ms() > end) return 0;
        sleep_ms(20);
    }
}

/* ------------------------------------------------------------------------------------------ */

static void start_stop_restart(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "tick", "agent_tick.sh", NULL);
    sp.enabled = 0;
    set_agents(f->s, &sp, 1);
    char err[256];

    sup_agent_info i = get(f->s, "tick");
    assert_string_equal(i.status, "stopped");
    assert_int_equal(i.pid, 0);
    assert_string_equal(i.type, "test");
    assert_string_equal(i.version, "1.0");
    sup_agent_info_clear(&i);

    /* start blocks until the agent settled */
    int64_t t0 = now_ms();
    assert_int_equal(sup_start(f->s, "tick", err, sizeof err), SUP_OK);
    assert_true(now_ms() - t0 >= SETTLE_MS - 10);
    i = get(f->s, "tick");
    assert_string_equal(i.status, "running");
    pid_t p1 = i.pid;
    assert_true(p1 > 0);
    assert_true(i.start_time > 0);
    assert_int_equal(i.restart_count, 0);
    sup_agent_info_clear(&i);
    assert_true(proc_alive(p1));
    assert_int_equal(getpgid(p1), p1); /* its own process group */

    /* start on running: nothing happens */
    assert_int_equal(sup_start(f->s, "tick", err, sizeof err), SUP_OK);
    i = get(f->s, "tick");
    assert_int_equal(i.pid, p1);
    sup_agent_info_clear(&i);

    char *out = xprintf("%s/agents/tick/logs/tick.out", f->dir);
    assert_true(wait_file_has(out, "tick\ntick\n", 5000));

    assert_int_equal(sup_restart(f->s, "tick", err, sizeof err), SUP_OK);
    i = get(f->s, "tick");
    assert_string_equal(i.status, "running");
    pid_t p2 = i.pid;
    assert_true(p2 > 0 && p2 != p1);
    assert_int_equal(i.restart_count, 1);
    assert_int_equal(i.last_exit_signal, SIGTERM);
    sup_agent_info_clear(&i);
    assert_false(proc_alive(p1));

    assert_int_equal(sup_stop(f->s, "tick", err, sizeof err), SUP_OK);
    i = get(f->s, "tick");
    assert_string_equal(i.status, "stopped");
    assert_int_equal(i.pid, 0);
    sup_agent_info_clear(&i);
    assert_false(proc_alive(p2));
    /* stop on stopped: nothing happens */
    assert_int_equal(sup_stop(f->s, "tick", err, sizeof err), SUP_OK);

    assert_int_equal(sup_start(f->s, "nope", err, sizeof err), SUP_NOT_FOUND);
    assert_int_equal(sup_stop(f->s, "nope", err, sizeof err), SUP_NOT_FOUND);
    assert_int_equal(sup_restart(f->s, "nope", err, sizeof err), SUP_NOT_FOUND);
    assert_int_equal(sup_get(f->s, "nope", &i), SUP_NOT_FOUND);

    sup_agent_info *list;
    size_t n;
    assert_int_equal(sup_list(f->s, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "tick");
    sup_list_free(list, n);

    /* every transition reached the callback, in order */
    pthread_mutex_lock(&f->ch.mu);
    const char *want = "tick:starting,tick:running,tick:stopping,tick:starting,tick:running,"
                       "tick:stopping,tick:stopped,";
    if (strcmp(f->ch.log, want) != 0) fail_msg("changes: %s", f->ch.log);
    pthread_mutex_unlock(&f->ch.mu);
    free(out);
    agent_spec_free(&sp);
}

static void capture_env_workdir_rotation(void **state)
{
    fixture *f = *state;
    agent_spec sp[2];
    sp[0] = mkspec(f->dir, "env", "agent_env.sh", NULL);
    free(sp[0].work_dir);
    sp[0].work_dir = xprintf("%s/deep/er/env", f->dir); /* created on start */
    sp[0].env = calloc(2, sizeof *sp[0].env);
    sp[0].env[0] = xstrdup("OPS_TEST_VAR=hello world");
    sp[1] = mkspec(f->dir, "spew", "agent_spew.sh", "400", NULL); /* 400 x 50 bytes */
    sp[1].log_max_bytes = 4096;
    sp[1].log_keep = 2;
    set_agents(f->s, sp, 2);

    char *out = xprintf("%s/deep/er/env/logs/env.out", f->dir);
    char *errf = xprintf("%s/deep/er/env/logs/env.err", f->dir);
    char *want = xprintf("var=hello world pwd=%s/deep/er/env\n", f->dir);
    assert_true(wait_file_has(out, want, 5000));
    assert_true(wait_file_has(errf, "err-line\n", 5000));

    char *spew = xprintf("%s/agents/spew/logs/spew.out", f->dir);
    char *spew1 = xprintf("%s/agents/spew/logs/spew.out.1", f->dir);
    char *spew2 = xprintf("%s/agents/spew/logs/spew.out.2", f->dir);
    char *spew3 = xprintf("%s/agents/spew/logs/spew.out.3", f->dir);
    /* Rotation is checked at each resource sample (copytruncate): the 400 x 51 bytes land in
     * spew.out, move to spew.out.1 and spew.out is emptied. */
    assert_true(wait_file_has(spew1, "line 000399", 8000));
    struct stat st;
    assert_int_equal(stat(spew, &st), 0);
    assert_true(st.st_size <= 4096);
    assert_int_equal(stat(spew1, &st), 0);
    assert_int_equal(st.st_size, 400 * 51);
    assert_int_not_equal(stat(spew2, &st), 0); /* one rotation so far */
    assert_int_not_equal(stat(spew3, &st), 0); /* log_keep = 2 */
    free(out);
    free(errf);
    free(want);
    free(spew);
    free(spew1);
    free(spew2);
    free(spew3);
    free_specs(sp, 2);
}

static void crash_backoff_then_error(void **state)
{
    fixture *f = *state;
    char *starts = xprintf("%s/starts", f->dir);
    agent_spec sp = mkspec(f->dir, "crash", "agent_crash.sh", starts, NULL);
    sp.restart.max_retries = 4;
    sp.restart.backoff_base_ms = 200;
    sp.restart.backoff_max_ms = 5000;
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "crash", "error", -1, 20000));

    sup_agent_info i = get(f->s, "crash");
    assert_int_equal(i.failures, 4);
    assert_int_equal(i.restart_count, 3);
    assert_int_equal(i.last_exit_code, 1);
    assert_int_equal(i.pid, 0);
    sup_agent_info_clear(&i);

    /* 4 starts, gaps of at least 200, 400, 800 ms (start-up jitter allowed for) */
    FILE *fp = fopen(starts, "r");
    assert_non_null(fp);
    long long t[8];
    int n = 0;
    while (n < 8 && fscanf(fp, "%lld", &t[n]) == 1) n++;
    fclose(fp);
    assert_int_equal(n, 4);
    long long backoff = 200;
    for (int k = 1; k < n; k++, backoff *= 2) {
        long long gap = (t[k] - t[k - 1]) / 1000000;
        if (gap < backoff * 3 / 4) fail_msg("gap %d is %lld ms, backoff %lld", k, gap, backoff);
    }
    assert_true(t[3] - t[2] > t[1] - t[0]);

    /* it stays in error */
    sleep_ms(600);
    i = get(f->s, "crash");
    assert_string_equal(i.status, "error");
    assert_int_equal(i.restart_count, 3);
    sup_agent_info_clear(&i);

    /* an operator start resets the count and fails at once: the agent exits before settling */
    char err[256] = "";
    assert_int_equal(sup_start(f->s, "crash", err, sizeof err), SUP_FAILED);
    assert_non_null(strstr(err, "before it settled"));
    i = get(f->s, "crash");
    assert_int_equal(i.failures, 1);
    sup_agent_info_clear(&i);
    assert_int_equal(sup_stop(f->s, "crash", err, sizeof err), SUP_OK);
    i = get(f->s, "crash");
    assert_string_equal(i.status, "stopped");
    sup_agent_info_clear(&i);
    free(starts);
    agent_spec_free(&sp);
}

static void exit_policies_and_exec_failure(void **state)
{
    fixture *f = *state;
    agent_spec sp[3];
    sp[0] = mkspec(f->dir, "clean", "agent_exit0.sh", "0.5", NULL);  /* on-failure, exits 0 */
    sp[1] = mkspec(f->dir, "always", "agent_exit0.sh", "0.5", NULL);
    sp[1].restart.policy = AGENT_RESTART_ALWAYS;
    sp[2] = mkspec(f->dir, "missing", "agent_tick.sh", NULL);
    free(sp[2].binary_path);
    sp[2].binary_path = xstrdup("/nonexistent/agent");
    sp[2].enabled = 0;
    sp[2].restart.policy = AGENT_RESTART_NEVER;
    set_agents(f->s, sp, 3);

    assert_true(wait_for(f->s, "clean", "stopped", -1, 8000));
    sup_agent_info i = get(f->s, "clean");
    assert_int_equal(i.last_exit_code, 0);
    assert_int_equal(i.restart_count, 0);
    assert_int_equal(i.failures, 0);
    sup_agent_info_clear(&i);

    assert_true(wait_for(f->s, "always", NULL, 2, 10000)); /* restarted after clean exits */
    i = get(f->s, "always");
    assert_int_equal(i.failures, 0);
    sup_agent_info_clear(&i);

    char err[256] = "";
    assert_int_equal(sup_start(f->s, "missing", err, sizeof err), SUP_FAILED);
    assert_non_null(strstr(err, "exec"));
    i = get(f->s, "missing");
    assert_string_equal(i.status, "error");
    sup_agent_info_clear(&i);
    free_specs(sp, 3);
}

static void sigterm_ignored_gets_sigkill(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "stubborn", "agent_noterm.sh", NULL);
    sp.stop_grace_ms = 500;
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "stubborn", "running", -1, 5000));
    sup_agent_info i = get(f->s, "stubborn");
    pid_t pid = i.pid;
    sup_agent_info_clear(&i);

    char err[256];
    int64_t t0 = now_ms();
    assert_int_equal(sup_stop(f->s, "stubborn", err, sizeof err), SUP_OK);
    int64_t took = now_ms() - t0;
    assert_true(took >= 450);
    assert_true(took < 5000);
    i = get(f->s, "stubborn");
    assert_string_equal(i.status, "stopped");
    assert_int_equal(i.last_exit_signal, SIGKILL);
    sup_agent_info_clear(&i);
    assert_false(proc_alive(pid));
    agent_spec_free(&sp);
}

static void grandchild_dies_with_agent(void **state)
{
    fixture *f = *state;
    char *pidfile = xprintf("%s/grandchild.pid", f->dir);
    agent_spec sp = mkspec(f->dir, "family", "agent_grandchild.sh", pidfile, NULL);
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "family", "running", -1, 5000));
    assert_true(wait_file_has(pidfile, "\n", 5000));
    char *b = slurp(pidfile);
    pid_t g = (pid_t)atoi(b);
    free(b);
    assert_true(g > 0);
    assert_true(proc_alive(g));
    sup_agent_info i = get(f->s, "family");
    assert_int_equal(getpgid(g), i.pid);
    sup_agent_info_clear(&i);

    char err[256];
    assert_int_equal(sup_stop(f->s, "family", err, sizeof err), SUP_OK);
    assert_false(proc_alive(g));

    /* and on a crash of the leader, what is left of the group is killed too */
    unlink(pidfile);
    assert_int_equal(sup_start(f->s, "family", err, sizeof err), SUP_OK);
    assert_true(wait_file_has(pidfile, "\n", 5000));
    b = slurp(pidfile);
    g = (pid_t)atoi(b);
    free(b);
    i = get(f->s, "family");
    kill(i.pid, SIGKILL);
    sup_agent_info_clear(&i);
    assert_true(wait_gone(g, 5000));
    assert_true(wait_for(f->s, "family", "running", 1, 5000)); /* and it came back */
    free(pidfile);
    agent_spec_free(&sp);
}

static void memory_threshold_restarts(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "hog", "agent_tick.sh", NULL);
    const char *bd = getenv("OPS_BUILD_DIR");
    free(sp.binary_path);
    sp.binary_path = xprintf("%s/bin/agent_memhog", bd ? bd : ".");
    free(sp.args[0]);
    sp.args[0] = xstrdup("128");
    sp.health.memory_threshold = 64ULL << 20;
    sp.health.threshold_duration_ms = 300;
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "hog", NULL, 1, 20000));
    sup_agent_info i = get(f->s, "hog");
    assert_int_equal(i.failures, 0); /* a health restart is not a crash */
    sup_agent_info_clear(&i);

    pmon_point *pts;
    size_t n;
    assert_int_equal(sup_agent_metrics(f->s, "hog", 0, &pts, &n), SUP_OK);
    int over = 0;
    for (size_t k = 0; k < n; k++) over |= pts[k].rss > (64ULL << 20);
    free(pts);
    assert_true(over);
    agent_spec_free(&sp);
}

static void cpu_threshold_restarts(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "spin", "agent_spin.sh", NULL);
    /* low enough that a spinner on a busy 2-core box still exceeds it */
    sp.health.cpu_threshold = 15.0;
    sp.health.threshold_duration_ms = 400;
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "spin", NULL, 1, 15000));
    char err[256];
    assert_int_equal(sup_stop(f->s, "spin", err, sizeof err), SUP_OK);
    agent_spec_free(&sp);
}

static void metrics_history(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "tick", "agent_tick.sh", NULL);
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "tick", "running", -1, 5000));
    pmon_point *pts = NULL;
    size_t n = 0;
    int64_t end = now_ms() + 10000;
    do {
        free(pts);
        sleep_ms(100);
        assert_int_equal(sup_agent_metrics(f->s, "tick", 0, &pts, &n), SUP_OK);
    } while (n < 5 && now_ms() < end);
    assert_true(n >= 5);
    for (size_t k = 0; k < n; k++) {
        assert_true(pts[k].rss > 0);
        assert_true(pts[k].vms >= pts[k].rss);
        assert_true(pts[k].open_files >= 3);
        assert_true(pts[k].cpu >= 0 && pts[k].cpu < 400);
        if (k) assert_true(pts[k].time_ms >= pts[k - 1].time_ms);
    }
    assert_true(llabs(pts[n - 1].time_ms - (int64_t)time(NULL) * 1000) < 5000);
    free(pts);
    assert_int_equal(sup_agent_metrics(f->s, "nope", 0, &pts, &n), SUP_NOT_FOUND);
    agent_spec_free(&sp);
}

static void heartbeat_timeout_restarts(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "hb", "agent_quiet.sh", NULL);
    sp.health.heartbeat_timeout_ms = 800;
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "hb", "running", -1, 5000));
    assert_int_equal(sup_record_heartbeat(f->s, "nope", 1), -1);
    /* beating: never restarted */
    for (int k = 0; k < 15; k++) {
        assert_int_equal(sup_record_heartbeat(f->s, "hb", 1700000000 + k), 0);
        sleep_ms(100);
    }
    sup_agent_info i = get(f->s, "hb");
    assert_int_equal(i.restart_count, 0);
    assert_int_equal(i.last_heartbeat, 1700000014);
    sup_agent_info_clear(&i);
    /* silent: restarted */
    assert_true(wait_for(f->s, "hb", NULL, 1, 8000));
    agent_spec_free(&sp);
}

/* A one-connection-at-a-time HTTP responder on 127.0.0.1. */
typedef struct {
    int fd, port;
    volatile int code, stop, hits;
    pthread_t th;
} http_srv;

static void *http_main(void *arg)
{
    http_srv *h = arg;
    while (!h->stop) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) continue;
        char buf[1024];
        ssize_t r = recv(c, buf, sizeof buf - 1, 0);
        if (r > 0) {
            buf[r] = '\0';
            if (strncmp(buf, "GET /healthz HTTP/1.0\r\n", 23) == 0) h->hits++;
            char resp[128];
            int n = snprintf(resp, sizeof resp,
                             "HTTP/1.0 %d X\r\nContent-Length: 0\r\n\r\n", h->code);
            ssize_t w = send(c, resp, (size_t)n, MSG_NOSIGNAL);
            (void)w;
        }
        close(c);
    }
    return NULL;
}

static void http_health(void **state)
{
    fixture *f = *state;
    http_srv h = {.code = 200};
    h.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(h.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(h.fd, 8), 0);
    socklen_t al = sizeof a;
    getsockname(h.fd, (struct sockaddr *)&a, &al);
    h.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&h.th, NULL, http_main, &h), 0);

    agent_spec sp = mkspec(f->dir, "web", "agent_quiet.sh", NULL);
    sp.health.interval_ms = 150;
    sp.health.http_endpoint = xprintf("http://127.0.0.1:%d/healthz", h.port);
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "web", "running", -1, 5000));
    int64_t end = now_ms() + 10000;
    while (h.hits < 5 && now_ms() < end) sleep_ms(20);
    assert_true(h.hits >= 5);
    sup_agent_info i = get(f->s, "web");
    assert_int_equal(i.restart_count, 0);
    sup_agent_info_clear(&i);

    h.code = 503;
    assert_true(wait_for(f->s, "web", NULL, 1, 10000));
    h.stop = 1;
    pthread_join(h.th, NULL);
    close(h.fd);
    agent_spec_free(&sp);
}

static void reload_add_remove_change(void **state)
{
    fixture *f = *state;
    agent_spec v1[2] = {mkspec(f->dir, "a", "agent_quiet.sh", NULL),
                        mkspec(f->dir, "b", "agent_quiet.sh", NULL)};
    set_agents(f->s, v1, 2);
    assert_true(wait_for(f->s, "a", "running", -1, 5000));
    assert_true(wait_for(f->s, "b", "running", -1, 5000));
    sup_agent_info i = get(f->s, "a");
    pid_t a1 = i.pid;
    sup_agent_info_clear(&i);
    i = get(f->s, "b");
    pid_t b1 = i.pid;
    sup_agent_info_clear(&i);

    /* a: only a health setting changes (kept); b: new argument (restarted); c: added */
    agent_spec v2[3] = {mkspec(f->dir, "a", "agent_quiet.sh", NULL),
                        mkspec(f->dir, "b", "agent_quiet.sh", "x", NULL),
                        mkspec(f->dir, "c", "agent_quiet.sh", NULL)};
    v2[0].health.interval_ms = 5000;
    v2[0].stop_grace_ms = 1234;
    set_agents(f->s, v2, 3);
    assert_true(wait_for(f->s, "c", "running", -1, 5000));
    assert_true(wait_for(f->s, "b", "running", 1, 5000));
    i = get(f->s, "b");
    pid_t b2 = i.pid;
    sup_agent_info_clear(&i);
    assert_true(b2 != b1);
    assert_true(wait_gone(b1, 3000));
    i = get(f->s, "a");
    assert_int_equal(i.pid, a1);
    assert_string_equal(i.status, "running");
    assert_int_equal(i.restart_count, 0);
    sup_agent_info_clear(&i);
    i = get(f->s, "c");
    pid_t c1 = i.pid;
    sup_agent_info_clear(&i);

    /* a bad configuration changes nothing */
    agent_spec dup[2] = {mkspec(f->dir, "a", "agent_quiet.sh", NULL),
                         mkspec(f->dir, "a", "agent_quiet.sh", NULL)};
    char err[256] = "";
    assert_int_equal(sup_set_agents(f->s, dup, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));

    /* b and c removed: stopped and forgotten; a disabled: stopped */
    agent_spec v3[1] = {mkspec(f->dir, "a", "agent_quiet.sh", NULL)};
    v3[0].enabled = 0;
    set_agents(f->s, v3, 1);
    assert_true(wait_for(f->s, "a", "stopped", -1, 5000));
    int64_t end = now_ms() + 5000;
    sup_agent_info tmp;
    while ((sup_get(f->s, "b", &tmp) != SUP_NOT_FOUND || sup_get(f->s, "c", &tmp) != SUP_NOT_FOUND)
           && now_ms() < end) {
        sup_agent_info_clear(&tmp);
        sleep_ms(20);
    }
    assert_int_equal(sup_get(f->s, "b", &tmp), SUP_NOT_FOUND);
    assert_int_equal(sup_get(f->s, "c", &tmp), SUP_NOT_FOUND);
    assert_true(wait_gone(a1, 3000));
    assert_true(wait_gone(b2, 3000));
    assert_true(wait_gone(c1, 3000));
    sup_agent_info *list;
    size_t n;
    assert_int_equal(sup_list(f->s, &list, &n), 0);
    assert_int_equal(n, 1);
    sup_list_free(list, n);
    free_specs(v1, 2);
    free_specs(v2, 3);
    free_specs(dup, 2);
    free_specs(v3, 1);
}

static void readopt_after_daemon_restart(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "q", "agent_quiet.sh", NULL);
    set_agents(f->s, &sp, 1);
    assert_true(wait_for(f->s, "q", "running", -1, 5000));
    sup_agent_info i = get(f->s, "q");
    pid_t pid = i.pid;
    int64_t started = i.start_time;
    sup_agent_info_clear(&i);

    sup_free(f->s, 0); /* like a daemon SIGTERM: agents keep running */
    f->s = NULL;
    assert_true(proc_alive(pid));
    char *sf = xprintf("%s/state/agents.state", f->dir);
    char *b = slurp(sf);
    assert_non_null(b);
    char *pidstr = xprintf("\n%d ", (int)pid);
    assert_non_null(strstr(b, pidstr));
    free(pidstr);
    free(b);

    f->s = new_sup(f, 100);
    set_agents(f->s, &sp, 1);
    i = get(f->s, "q");
    assert_string_equal(i.status, "running");
    assert_int_equal(i.pid, pid);
    assert_int_equal(i.adopted, 1);
    assert_int_equal(i.start_time, started);
    assert_int_equal(i.restart_count, 0);
    sup_agent_info_clear(&i);
    sleep_ms(SETTLE_MS * 3);
    i = get(f->s, "q");
    assert_int_equal(i.pid, pid);
    assert_string_equal(i.status, "running");
    sup_agent_info_clear(&i);

    /* its death is seen (through the pidfd) and handled as a crash */
    kill(pid, SIGKILL);
    assert_true(wait_for(f->s, "q", "running", 1, 5000));
    i = get(f->s, "q");
    assert_true(i.pid != pid);
    pid_t pid2 = i.pid;
    assert_int_equal(i.adopted, 0);
    sup_agent_info_clear(&i);

    /* a new daemon whose configuration changed the agent restarts it instead */
    sup_free(f->s, 0);
    f->s = new_sup(f, 100);
    agent_spec changed = mkspec(f->dir, "q", "agent_quiet.sh", "new-arg", NULL);
    set_agents(f->s, &changed, 1);
    assert_true(wait_for(f->s, "q", "running", 2, 5000));
    i = get(f->s, "q");
    assert_true(i.pid != pid2);
    sup_agent_info_clear(&i);
    assert_true(wait_gone(pid2, 3000));

    /* stop_agents = 1 leaves nothing behind */
    i = get(f->s, "q");
    pid_t pid3 = i.pid;
    sup_agent_info_clear(&i);
    sup_free(f->s, 1);
    f->s = new_sup(f, 100);
    assert_false(proc_alive(pid3));
    free(sf);
    agent_spec_free(&sp);
    agent_spec_free(&changed);
}

static void stale_state_not_adopted(void **state)
{
    fixture *f = *state;
    sup_free(f->s, 1);
    f->s = NULL;

    /* a live process holding a pid the file names, but started at another time (a reused pid) */
    pid_t other = fork();
    assert_true(other >= 0);
    if (other == 0) {
        execl("/bin/sleep", "sleep", "100", (char *)NULL);
        _exit(127);
    }
    /* and a pid that is dead */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    sleep_ms(50);
    uint64_t ticks = 0;
    assert_int_equal(pmon_start_ticks(other, &ticks), 0);

    char *sf = xprintf("%s/state/agents.state", f->dir);
    FILE *fp = fopen(sf, "w");
    assert_non_null(fp);
    fprintf(fp, "ops-agents-state 1\n%d %llu 1700000000 7 0 reused\n%d 1 1700000000 3 0 dead\n",
            (int)other, (unsigned long long)ticks + 1, (int)dead);
    fclose(fp);

    f->s = new_sup(f, 100);
    agent_spec sp[2] = {mkspec(f->dir, "reused", "agent_quiet.sh", NULL),
                        mkspec(f->dir, "dead", "agent_quiet.sh", NULL)};
    set_agents(f->s, sp, 2);
    assert_true(wait_for(f->s, "reused", "running", -1, 5000));
    assert_true(wait_for(f->s, "dead", "running", -1, 5000));
    sup_agent_info i = get(f->s, "reused");
    assert_true(i.pid != other);
    assert_int_equal(i.adopted, 0);
    assert_int_equal(i.restart_count, 0);
    sup_agent_info_clear(&i);
    i = get(f->s, "dead");
    assert_true(i.pid != dead);
    assert_int_equal(i.adopted, 0);
    sup_agent_info_clear(&i);
    assert_true(proc_alive(other)); /* the innocent holder of the pid was left alone */

    kill(other, SIGKILL);
    assert_int_equal(waitpid(other, NULL, 0), other);
    free(sf);
    free_specs(sp, 2);
}

typedef struct {
    sup *s;
    int k;
    int bad;
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
    char err[256];
    for (int r = 0; r < 4; r++) {
        sup_result res;
        switch ((c->k + r) % 3) {
        case 0: res = sup_start(c->s, "busy", err, sizeof err); break;
        case 1: res = sup_stop(c->s, "busy", err, sizeof err); break;
        default: res = sup_restart(c->s, "busy", err, sizeof err); break;
        }
        /* overtaken operations may fail; an unknown agent never */
        if (res == SUP_NOT_FOUND) c->bad++;
        sup_agent_info *l;
        size_t n;
        if (sup_list(c->s, &l, &n) != 0 || n != 1) c->bad++;
        else sup_list_free(l, n);
    }
    return NULL;
}

static void concurrent_callers(void **state)
{
    fixture *f = *state;
    agent_spec sp = mkspec(f->dir, "busy", "agent_quiet.sh", NULL);
    sp.enabled = 0;
    set_agents(f->s, &sp, 1);
    enum { T = 4 };
    pthread_t th[T];
    caller c[T];
    for (int k = 0; k < T; k++) {
        c[k] = (caller){.s = f->s, .k = k};
        assert_int_equal(pthread_create(&th[k], NULL, caller_main, &c[k]), 0);
    }
    for (int k = 0; k < T; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(c[k].bad, 0);
    }
    char err[256];
    assert_int_equal(sup_stop(f->s, "busy", err, sizeof err), SUP_OK);
    sup_agent_info i = get(f->s, "busy");
    assert_string_equal(i.status, "stopped");
    assert_int_equal(i.pid, 0);
    sup_agent_info_clear(&i);
    agent_spec_free(&sp);
}

/* Runs last: every child the tests made was reaped. */
static void no_zombies(void **state)
{
    (void)state;
    sleep_ms(100);
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *de;
    int zombies = 0;
    while ((de = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(de->d_name);
        pmon_proc p;
        if (pid > 0 && pmon_read_proc(pid, &p) == 0 && p.ppid == getpid() && p.state == 'Z') {
            fprintf(stderr, "zombie child %d\n", (int)pid);
            zombies++;
        }
    }
    closedir(d);
    assert_int_equal(zombies, 0);
}

int main(void)
{
    log_open(LOGL_WARN, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(start_stop_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(capture_env_workdir_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_backoff_then_error, setup, teardown),
        cmocka_unit_test_setup_teardown(exit_policies_and_exec_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(sigterm_ignored_gets_sigkill, setup, teardown),
        cmocka_unit_test_setup_teardown(grandchild_dies_with_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(memory_threshold_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(cpu_threshold_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_history, setup, teardown),
        cmocka_unit_test_setup_teardown(heartbeat_timeout_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(http_health, setup, teardown),
        cmocka_unit_test_setup_teardown(reload_add_remove_change, setup, teardown),
        cmocka_unit_test_setup_teardown(readopt_after_daemon_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_state_not_adopted, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_callers, setup, teardown),
        cmocka_unit_test(no_zombies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
