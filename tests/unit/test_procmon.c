/* procmon: /proc readers against real processes, the CPU percentage of a busy child, ring
 * wrap-around and the duration filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/procmon.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void read_self(void **state)
{
    (void)state;
    pmon_proc p;
    assert_int_equal(pmon_read_proc(getpid(), &p), 0);
    assert_true(p.rss > 0);
    assert_true(p.vms >= p.rss);
    assert_true(p.open_files >= 3);
    assert_true(p.start_ticks > 0);
    assert_int_equal(p.ppid, getppid());
    assert_int_equal(p.pgrp, getpgrp());
    uint64_t t;
    assert_int_equal(pmon_start_ticks(getpid(), &t), 0);
    assert_true(t == p.start_ticks);
}

static pid_t spawn_in_group(const char *what)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        if (strcmp(what, "busy") == 0)
            for (volatile unsigned long i = 0;; i++) {}
        execl("/bin/sleep", "sleep", "100", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

static void dead_pid_and_groups(void **state)
{
    (void)state;
    pid_t pid = spawn_in_group("sleep");
    assert_int_equal(pmon_group_alive(pid), 1);
    kill(pid, SIGKILL);
    /* a killed but unreaped member is a zombie: the group counts as gone */
    for (int i = 0; i < 200; i++) {
        pmon_proc p;
        if (pmon_read_proc(pid, &p) == 0 && p.state == 'Z') break;
        usleep(10000);
    }
    assert_int_equal(pmon_group_alive(pid), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    pmon_proc p;
    assert_int_equal(pmon_read_proc(pid, &p), -1);
    uint64_t t;
    assert_int_equal(pmon_start_ticks(pid, &t), -1);
    assert_int_equal(pmon_group_alive(pid), 0);
}

static void busy_child_cpu(void **state)
{
    (void)state;
    char err[128];
    pmon *pm = pmon_new(100, err, sizeof err);
    assert_non_null(pm);
    pid_t pid = spawn_in_group("busy");
    pmon_point pt;
    double best = 0;
    for (int i = 0; i < 12; i++) {
        usleep(100000);
        assert_int_equal(pmon_sample(pm, "busy", pid, &pt), 0);
        if (i > 0 && pt.cpu > best) best = pt.cpu;
    }
    /* a spinning process on a shared 2-core box still gets well over a tenth of a core */
    assert_true(best > 10.0);
    assert_true(best < 250.0);
    pmon_point *pts;
    size_t n;
    assert_int_equal(pmon_query(pm, "busy", 0, &pts, &n), 0);
    assert_int_equal(n, 12);
    assert_true(pts[0].time_ms <= pts[11].time_ms);
    free(pts);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(pmon_sample(pm, "busy", pid, &pt), -1); /* gone: nothing appended */
    assert_int_equal(pmon_query(pm, "busy", 0, &pts, &n), 0);
    assert_int_equal(n, 12);
    free(pts);

    pmon_forget(pm, "busy");
    assert_int_equal(pmon_query(pm, "busy", 0, &pts, &n), 0);
    assert_int_equal(n, 0);
    assert_null(pts);
    assert_int_equal(pmon_query(pm, "never", 0, &pts, &n), 0);
    assert_int_equal(n, 0);
    pmon_free(pm);
}

static void ring_wraps_and_filters(void **state)
{
    (void)state;
    char err[128];
    /* 1 s interval: an hour is 3601 points */
    pmon *pm = pmon_new(1000, err, sizeof err);
    assert_non_null(pm);
    int64_t now = wall_ms();
    /* 5000 points one second apart, the newest half a second ahead (the query runs later) */
    for (int i = 0; i < 5000; i++) {
        pmon_point p = {.time_ms = now + 500 - (int64_t)(4999 - i) * 1000, .rss = (uint64_t)i};
        assert_int_equal(pmon_record(pm, "a", &p), 0);
    }
    pmon_point *pts;
    size_t n;
    assert_int_equal(pmon_query(pm, "a", 0, &pts, &n), 0);
    assert_int_equal(n, 3601); /* ring size, all within the hour */
    assert_int_equal(pts[0].rss, 5000 - 3601);
    assert_int_equal(pts[n - 1].rss, 4999);
    for (size_t i = 1; i < n; i++) assert_true(pts[i].rss == pts[i - 1].rss + 1);
    free(pts);
    assert_int_equal(pmon_query(pm, "a", 60, &pts, &n), 0);
    assert_true(n >= 60 && n <= 62);
    assert_int_equal(pts[n - 1].rss, 4999);
    free(pts);
    pmon_free(pm);

    /* tiny intervals are capped */
    pm = pmon_new(10, err, sizeof err);
    for (int i = 0; i < PMON_MAX_POINTS + 10; i++) {
        pmon_point p = {.time_ms = now, .rss = (uint64_t)i};
        assert_int_equal(pmon_record(pm, "b", &p), 0);
    }
    assert_int_equal(pmon_query(pm, "b", 0, &pts, &n), 0);
    assert_int_equal(n, PMON_MAX_POINTS);
    free(pts);
    pmon_free(pm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_self),
        cmocka_unit_test(dead_pid_and_groups),
        cmocka_unit_test(busy_child_cpu),
        cmocka_unit_test(ring_wraps_and_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
