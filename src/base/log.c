/* log: one line per event, key=value. See log.h for why the sink is process-wide. */
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
    pthread_mutex_t mu; /* guards fd/path swaps only; writes are single write(2) calls */
    int fd;
    log_level level;
    char path[4096];
    int journal; /* stderr is journald's stream: no timestamp, a <N> priority prefix instead */
} sink = {PTHREAD_MUTEX_INITIALIZER, STDERR_FILENO, LOGL_INFO, "", 0};

/* systemd sets JOURNAL_STREAM=dev:ino for a service whose stderr goes to the journal. It is
 * inherited, so it only counts when our stderr is still that very stream (not redirected). */
static int stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2) return 0;
    if (fstat(STDERR_FILENO, &st) != 0) return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int log_to_journal(void) { return sink.journal && sink.fd == STDERR_FILENO; }

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *log_level_name(log_level level)
{
    return (level >= LOGL_DEBUG && level <= LOGL_ERROR) ? level_names[level] : "?";
}

int log_parse_level(const char *s, log_level *out)
{
    if (!s) return -1;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, level_names[i]) == 0) { *out = (log_level)i; return 0; }
    }
    if (strcasecmp(s, "warning") == 0) { *out = LOGL_WARN; return 0; }
    return -1;
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int log_open(log_level level, const char *path)
{
    pthread_mutex_lock(&sink.mu);
    sink.level = level;
    sink.journal = stderr_is_journal();
    int rc = 0;
    if (path && *path && strcmp(path, "stderr") != 0) {
        int fd = open_path(path);
        if (fd < 0) {
            rc = -1;
        } else {
            if (sink.fd != STDERR_FILENO) close(sink.fd);
            sink.fd = fd;
            snprintf(sink.path, sizeof sink.path, "%s", path);
        }
    }
    pthread_mutex_unlock(&sink.mu);
    return rc;
}

int log_reopen(void)
{
    pthread_mutex_lock(&sink.mu);
    int rc = 0;
    if (sink.path[0]) {
        int fd = open_path(sink.path);
        if (fd < 0) {
            rc = -1;
        } else {
            int old = sink.fd;
            sink.fd = fd;
            if (old != STDERR_FILENO) close(old);
        }
    }
    pthread_mutex_unlock(&sink.mu);
    return rc;
}

void log_close(void)
{
    pthread_mutex_lock(&sink.mu);
    if (sink.fd != STDERR_FILENO) close(sink.fd);
    sink.fd = STDERR_FILENO;
    sink.path[0] = 0;
    pthread_mutex_unlock(&sink.mu);
}

void log_set_level(log_level level) { sink.level = level; }

int log_enabled(log_level level) { return level >= sink.level; }

const char *log_quote(char *buf, unsigned long n, const char *s)
{
    if (n < 3) { if (n) buf[0] = 0; return buf; }
    unsigned long o = 0;
    buf[o++] = '"';
    for (; s && *s && o + 3 < n; s++) {
        char c = *s;
        if (c == '"' || c == '\\') { buf[o++] = '\\'; buf[o++] = c; }
        else if (c == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
        else buf[o++] = c;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

void log_eventv(log_level level, const char *event, const char *fmt, va_list ap)
{
    if (level < sink.level) return;
    char line[2048];
    int n;
    if (log_to_journal()) {
        /* journald stamps the time and the unit itself; the <N> prefix (sd-daemon(3)) gives
         * it the syslog priority, so `journalctl -p warning` works. */
        static const int prio[] = {7, 6, 4, 3};
        n = snprintf(line, sizeof line, "<%d>level=%s event=%s ", prio[level], log_level_name(level), event);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level), event);
    }
    if (n < 0) return;
    if ((size_t)n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        if (m > 0) n += m;
    }
    if ((size_t)n >= sizeof line - 1) n = sizeof line - 2; /* truncated: keep the newline */
    while (n > 0 && line[n - 1] == ' ') n--;
    line[n++] = '\n';
    ssize_t w = write(sink.fd, line, (size_t)n);
    (void)w; /* nowhere left to report a failing log write */
}

void log_event(log_level level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_eventv(level, event, fmt, ap);
    va_end(ap);
}
