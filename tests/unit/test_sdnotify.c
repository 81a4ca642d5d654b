/* test_sdnotify: the messages systemd gets, read from a real AF_UNIX datagram socket named by
 * NOTIFY_SOCKET as systemd would set it, and the watchdog thread's pings and their probe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/sdnotify.h"

struct fixture {
    char dir[40];
    char path[96]; /* fits sun_path */
    int fd;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_sdnotify.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/notify", f->dir);
    f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
    setenv("NOTIFY_SOCKET", f->path, 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    free(f);
    return 0;
}

/* One datagram within timeout_ms into buf; returns its length or -1 when none came. */
static int recv_msg(struct fixture *f, char *buf, size_t n, int timeout_ms)
{
    struct pollfd p = {.fd = f->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    ssize_t r = recv(f->fd, buf, n - 1, 0);
    if (r < 0) return -1;
    buf[r] = 0;
    return (int)r;
}

static void test_outside_systemd_is_noop(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    char err[128];
    sdn *n = sdn_new(NULL, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(sdn_active(n), 0);
    assert_int_equal(sdn_watchdog_usec(n), 0);
    assert_int_equal(sdn_ready(n, "x"), 0);
    assert_int_equal(sdn_status(n, "y %d", 1), 0);
    assert_int_equal(sdn_stopping(n, "z"), 0);
    sdn_free(n);
    sdn_free(NULL);
}

static void test_ready_status_stopping(void **state)
{
    struct fixture *f = *state;
    char err[128], buf[2048];
    sdn *n = sdn_new(NULL, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(sdn_active(n), 1);
    assert_int_equal(sdn_watchdog_usec(n), 0);

    assert_int_equal(sdn_ready(n, "serving on 0.0.0.0:9090"), 0);
    assert_true(recv_msg(f, buf, sizeof buf, 2000) > 0);
    assert_string_equal(buf, "READY=1\nSTATUS=serving on 0.0.0.0:9090");

    /* a newline in the text must not start a second assignment */
    assert_int_equal(sdn_status(n, "%d agents\nREADY=1", 3), 0);
    assert_true(recv_msg(f, buf, sizeof buf, 2000) > 0);
    assert_string_equal(buf, "STATUS=3 agents READY=1");

    assert_int_equal(sdn_reloading(n), 0);
    assert_true(recv_msg(f, buf, sizeof buf, 2000) > 0);
    assert_memory_equal(buf, "RELOADING=1\nMONOTONIC_USEC=", 26);

    assert_int_equal(sdn_stopping(n, "bye"), 0);
    assert_true(recv_msg(f, buf, sizeof buf, 2000) > 0);
    assert_string_equal(buf, "STOPPING=1\nSTATUS=bye");
    sdn_free(n);
}

static void test_send_failure_reported(void **state)
{
    (void)state;
    setenv("NOTIFY_SOCKET", "/nonexistent/dir/notify", 1);
    char err[128];
    sdn *n = sdn_new(NULL, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(sdn_ready(n, "x"), -1);
    sdn_free(n);
}

static void test_watchdog_pings_at_half_interval(void **state)
{
    struct fixture *f = *state;
    setenv("WATCHDOG_USEC", "200000", 1); /* 200 ms: pings every 100 ms */
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    char err[128], buf[256];
    sdn *n = sdn_new(NULL, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(sdn_watchdog_usec(n), 200000);
    int pings = 0;
    for (int i = 0; i < 3; i++) {
        assert_true(recv_msg(f, buf, sizeof buf, 2000) > 0);
        assert_string_equal(buf, "WATCHDOG=1");
        pings++;
    }
    assert_int_equal(pings, 3);
    sdn_free(n); /* joins the thread promptly */
    while (recv_msg(f, buf, sizeof buf, 0) > 0) {}
    assert_int_equal(recv_msg(f, buf, sizeof buf, 300), -1); /* no pings after free */
}

static int probe_calls;
static int failing_probe(void *user)
{
    (void)user;
    __atomic_add_fetch(&probe_calls, 1, __ATOMIC_SEQ_CST);
    return -1;
}

static void test_failing_probe_suppresses_pings(void **state)
{
    struct fixture *f = *state;
    setenv("WATCHDOG_USEC", "100000", 1);
    unsetenv("WATCHDOG_PID");
    char err[128], buf[256];
    probe_calls = 0;
    sdn *n = sdn_new(failing_probe, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(recv_msg(f, buf, sizeof buf, 400), -1);
    assert_true(__atomic_load_n(&probe_calls, __ATOMIC_SEQ_CST) >= 2);
    sdn_free(n);
}

static void test_watchdog_for_another_pid_is_ignored(void **state)
{
    (void)state;
    setenv("WATCHDOG_USEC", "100000", 1);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1); /* set for our parent, say */
    setenv("WATCHDOG_PID", pid, 1);
    char err[128];
    sdn *n = sdn_new(NULL, NULL, err, sizeof err);
    assert_non_null(n);
    assert_int_equal(sdn_watchdog_usec(n), 0);
    sdn_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_outside_systemd_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_status_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_failure_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pings_at_half_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_probe_suppresses_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_for_another_pid_is_ignored, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
