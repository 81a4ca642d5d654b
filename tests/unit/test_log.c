/* test_log: the log sink's line formats (with a timestamp to a file or a plain stderr, with a
 * journald priority prefix and none when stderr is the journal's stream) and reopen after
 * a logrotate-style rename. Real files in a temp dir; stderr is redirected to one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

static char dir[64];

static void slurp(const char *path, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

/* Points fd 2 at path for the duration of fn; returns after restoring it. */
static void with_stderr_file(const char *path, const char *journal_stream_fmt, void (*fn)(void))
{
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    struct stat st;
    fstat(STDERR_FILENO, &st);
    char js[64];
    if (journal_stream_fmt) {
        snprintf(js, sizeof js, journal_stream_fmt, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
        setenv("JOURNAL_STREAM", js, 1);
    } else {
        unsetenv("JOURNAL_STREAM");
    }
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    unsetenv("JOURNAL_STREAM");
}

static int journal_seen;
static void log_three(void)
{
    assert_int_equal(log_open(LOGL_DEBUG, NULL), 0);
    journal_seen = log_to_journal();
    log_info("t.info", "a=%d", 1);
    log_warn("t.warn", "b=2");
    log_error("t.error", "c=3");
    log_debug("t.debug", "d=4");
    log_close();
}

static void test_journal_stream_gets_priorities_no_time(void **state)
{
    (void)state;
    char path[128], buf[1024];
    snprintf(path, sizeof path, "%s/journal", dir);
    with_stderr_file(path, "%llu:%llu", log_three);
    assert_int_equal(journal_seen, 1);
    slurp(path, buf, sizeof buf);
    assert_string_equal(buf, "<6>level=info event=t.info a=1\n"
                             "<4>level=warn event=t.warn b=2\n"
                             "<3>level=error event=t.error c=3\n"
                             "<7>level=debug event=t.debug d=4\n");
}

static void test_other_stream_keeps_timestamps(void **state)
{
    (void)state;
    char path[128], buf[1024];
    snprintf(path, sizeof path, "%s/plain", dir);
    /* JOURNAL_STREAM inherited from a parent whose stderr was the journal, ours is not */
    with_stderr_file(path, "%llu:1%llu", log_three);
    assert_int_equal(journal_seen, 0);
    slurp(path, buf, sizeof buf);
    assert_memory_equal(buf, "ts=", 3);
    assert_non_null(strstr(buf, "Z level=info event=t.info a=1\n"));
    assert_null(strchr(buf, '<'));
    with_stderr_file(path, NULL, log_three);
    assert_int_equal(journal_seen, 0);
}

static char logfile[128];
static void log_to_file(void)
{
    /* a configured file wins over the journal, and keeps its timestamps */
    assert_int_equal(log_open(LOGL_INFO, logfile), 0);
    assert_int_equal(log_to_journal(), 0);
    log_info("t.before", "n=1");
    char moved[160];
    snprintf(moved, sizeof moved, "%s.1", logfile);
    assert_int_equal(rename(logfile, moved), 0); /* what logrotate does */
    log_info("t.still_old", "n=2");
    assert_int_equal(log_reopen(), 0);
    log_info("t.after", "n=3");
    log_close();
}

static void test_file_and_reopen(void **state)
{
    (void)state;
    char path[128], buf[1024], moved[160];
    snprintf(path, sizeof path, "%s/stderr", dir);
    snprintf(logfile, sizeof logfile, "%s/ops.log", dir);
    with_stderr_file(path, "%llu:%llu", log_to_file);
    snprintf(moved, sizeof moved, "%s.1", logfile);
    slurp(moved, buf, sizeof buf);
    assert_non_null(strstr(buf, "event=t.before n=1"));
    assert_non_null(strstr(buf, "event=t.still_old n=2"));
    assert_null(strstr(buf, "t.after"));
    assert_memory_equal(buf, "ts=", 3);
    slurp(logfile, buf, sizeof buf);
    assert_memory_equal(buf, "ts=", 3);
    assert_non_null(strstr(buf, "event=t.after n=3"));
    assert_null(strstr(buf, "t.before"));
    slurp(path, buf, sizeof buf);
    assert_string_equal(buf, ""); /* nothing went to stderr */
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_log.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal_stream_gets_priorities_no_time),
        cmocka_unit_test(test_other_stream_keeps_timestamps),
        cmocka_unit_test(test_file_and_reopen),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
