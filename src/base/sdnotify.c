/* sdnotify: sd_notify(3) messages and the watchdog thread. See sdnotify.h. */
#include "base/sdnotify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "base/log.h"

struct sdn {
    int active;
    uint64_t watchdog_usec;
    sdn_probe probe;
    void *user;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int quit;
};

static int send_msg(const sdn *n, const char *msg)
{
    if (!n || !n->active) return 0;
    /* unset_environment=0: the daemon's agents inherit NOTIFY_SOCKET, but systemd only takes
     * messages from the main pid (NotifyAccess=main), and we send more than once. */
    int r = sd_notify(0, msg);
    if (r >= 0) return 0;
    /* Reported here, once for every caller: a lost READY=1 makes systemd time the start out,
     * a lost WATCHDOG=1 makes it restart us, so the reason must be in the log. */
    char what[32];
    snprintf(what, sizeof what, "%.*s", (int)strcspn(msg, "=\n"), msg);
    log_warn("sdnotify.send_failed", "msg=%s error=\"%s\"", what, strerror(-r));
    return -1;
}

static void *watchdog_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sd-watchdog");
    sdn *n = arg;
    uint64_t half = n->watchdog_usec / 2;
    pthread_mutex_lock(&n->mu);
    while (!n->quit) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + (half % 1000000) * 1000;
        until.tv_sec += (time_t)(half / 1000000 + ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        int r = 0;
        while (!n->quit && r != ETIMEDOUT) r = pthread_cond_timedwait(&n->cv, &n->mu, &until);
        if (n->quit) break;
        pthread_mutex_unlock(&n->mu);
        if (!n->probe || n->probe(n->user) == 0) {
            (void)send_msg(n, "WATCHDOG=1"); /* logged there; the next ping may get through */
        } else {
            log_warn("sdnotify.watchdog_skipped", "reason=probe_failed");
        }
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

sdn *sdn_new(sdn_probe probe, void *user, char *err, size_t errlen)
{
    sdn *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *sock = getenv("NOTIFY_SOCKET");
    n->active = sock && *sock;
    n->probe = probe;
    n->user = user;
    pthread_mutex_init(&n->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if any) is us. */
    if (n->active && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        n->watchdog_usec = usec;
        int r = pthread_create(&n->thread, NULL, watchdog_main, n);
        if (r != 0) {
            snprintf(err, errlen, "cannot start the watchdog thread: %s", strerror(r));
            sdn_free(n);
            return NULL;
        }
        n->thread_started = 1;
    }
    return n;
}

void sdn_free(sdn *n)
{
    if (!n) return;
    if (n->thread_started) {
        pthread_mutex_lock(&n->mu);
        n->quit = 1;
        pthread_cond_signal(&n->cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->thread, NULL);
    }
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

int sdn_active(const sdn *n) { return n && n->active; }

uint64_t sdn_watchdog_usec(const sdn *n) { return n ? n->watchdog_usec : 0; }

/* STATUS= is one line: a newline would end it and start a bogus assignment. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r') *s = ' ';
}

int sdn_ready(sdn *n, const char *status)
{
    char msg[1100];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status ? status : "ready");
    one_line(msg + 8);
    return send_msg(n, msg);
}

int sdn_status(sdn *n, const char *fmt, ...)
{
    if (!sdn_active(n)) return 0;
    char msg[1100] = "STATUS=";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + 7, sizeof msg - 7, fmt, ap);
    va_end(ap);
    one_line(msg);
    return send_msg(n, msg);
}

int sdn_reloading(sdn *n)
{
    if (!sdn_active(n)) return 0;
    /* MONOTONIC_USEC lets systemd >= 253 tell this reload from an earlier one; older ones
     * ignore it. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[128];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    return send_msg(n, msg);
}

int sdn_stopping(sdn *n, const char *status)
{
    char msg[1100];
    snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=%s", status ? status : "stopping");
    one_line(msg + 11);
    return send_msg(n, msg);
}
