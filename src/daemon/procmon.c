/* procmon: /proc readers and the per-agent resource rings (see procmon.h). */
#include "daemon/procmon.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct pmon_series {
    char *id;
    pmon_point *ring;
    size_t cap;        /* allocated slots; grows until max_points, then the ring wraps */
    size_t head;       /* index of the oldest point */
    size_t count;
    /* previous CPU reading: valid only for the same process (pid and start time) */
    pid_t last_pid;
    uint64_t last_start_ticks;
    uint64_t last_cpu_ticks;
    int64_t last_mono_ms;
    struct pmon_series *next;
} pmon_series;

struct pmon {
    pthread_mutex_t mu;
    size_t max_points;
    pmon_series *series;
};

static int64_t clock_ms(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pmon *pmon_new(int64_t interval_ms, char *err, size_t errlen)
{
    pmon *pm = calloc(1, sizeof *pm);
    if (!pm) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (interval_ms <= 0) interval_ms = 10000;
    int64_t pts = (3600000 + interval_ms - 1) / interval_ms + 1;
    pm->max_points = pts > PMON_MAX_POINTS ? PMON_MAX_POINTS : (size_t)pts;
    pthread_mutex_init(&pm->mu, NULL);
    return pm;
}

static void series_free(pmon_series *s)
{
    free(s->id);
    free(s->ring);
    free(s);
}

void pmon_free(pmon *pm)
{
    if (!pm) return;
    for (pmon_series *s = pm->series, *nx; s; s = nx) {
        nx = s->next;
        series_free(s);
    }
    pthread_mutex_destroy(&pm->mu);
    free(pm);
}

/* Reads a small /proc file into buf (NUL-terminated). Returns bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* stat's second field (comm) may hold spaces and parentheses: parse from the LAST ')'. */
static int parse_stat(pid_t pid, pmon_proc *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ') return -1;
    p += 2;
    /* p now at field 3 (state) */
    out->state = *p;
    unsigned long long v[20] = {0}; /* fields 4..23 */
    char *q = p + 1;
    for (int i = 0; i < 20; i++) {
        while (*q == ' ') q++;
        char *end;
        errno = 0;
        long long x = strtoll(q, &end, 10);
        if (end == q || errno) return -1;
        v[i] = (unsigned long long)x;
        q = end;
    }
    out->ppid = (pid_t)v[4 - 4];
    out->pgrp = (pid_t)v[5 - 4];
    out->cpu_ticks = v[14 - 4] + v[15 - 4];
    out->start_ticks = v[22 - 4];
    return 0;
}

static uint64_t io_field(const char *buf, const char *key)
{
    const char *p = strstr(buf, key);
    if (!p) return 0;
    return strtoull(p + strlen(key), NULL, 10);
}

int pmon_read_proc(pid_t pid, pmon_proc *out)
{
    memset(out, 0, sizeof *out);
    if (pid <= 0 || parse_stat(pid, out) != 0) return -1;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    if (read_small(path, buf, sizeof buf) > 0) {
        unsigned long long size = 0, res = 0;
        if (sscanf(buf, "%llu %llu", &size, &res) == 2) {
            uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
            out->vms = size * page;
            out->rss = res * page;
        }
    }
    /* io needs ptrace-read rights over the process: our own children, not always adopted
     * ones after a privilege change; 0 then. */
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    if (read_small(path, buf, sizeof buf) > 0) {
        out->read_bytes = io_field(buf, "\nread_bytes: ");
        out->write_bytes = io_field(buf, "\nwrite_bytes: ");
    }
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        int32_t n = 0;
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.') n++;
        closedir(d);
        out->open_files = n;
    }
    return 0;
}

int pmon_start_ticks(pid_t pid, uint64_t *out)
{
    pmon_proc p;
    memset(&p, 0, sizeof p);
    if (pid <= 0 || parse_stat(pid, &p) != 0) return -1;
    *out = p.start_ticks;
    return 0;
}

int pmon_group_alive(pid_t pgid)
{
    if (pgid <= 1) return 0;
    if (kill(-pgid, 0) != 0 && errno == ESRCH) return 0;
    /* Members exist, but killed orphans stay zombies until init reaps them and some inits
     * (containers) never do: only a member that is not a zombie keeps the group alive. */
    DIR *d = opendir("/proc");
    if (!d) return 1;
    int alive = 0;
    struct dirent *de;
    while (!alive && (de = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)de->d_name[0])) continue;
        pmon_proc p;
        memset(&p, 0, sizeof p);
        if (parse_stat((pid_t)atoi(de->d_name), &p) == 0 && p.pgrp == pgid && p.state != 'Z' &&
            p.state != 'X')
            alive = 1;
    }
    closedir(d);
    return alive;
}

static pmon_series *find_series(pmon *pm, const char *id)
{
    for (pmon_series *s = pm->series; s; s = s->next)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

static int series_push(pmon *pm, pmon_series *s, const pmon_point *pt)
{
    if (s->count == s->cap && s->cap < pm->max_points) {
        /* Not wrapped yet (the ring only wraps at max_points), so head is 0 and realloc keeps
         * the order. Growing by doubling keeps short-lived agents cheap. */
        size_t nc = s->cap ? s->cap * 2 : 64;
        if (nc > pm->max_points) nc = pm->max_points;
        pmon_point *r = realloc(s->ring, nc * sizeof *r);
        if (!r) return -1;
        s->ring = r;
        s->cap = nc;
    }
    if (s->count < s->cap) {
        s->ring[(s->head + s->count) % s->cap] = *pt;
        s->count++;
    } else {
        s->ring[s->head] = *pt;
        s->head = (s->head + 1) % s->cap;
    }
    return 0;
}

static double uptime_s(void)
{
    char buf[128];
    if (read_small("/proc/uptime", buf, sizeof buf) <= 0) return 0;
    return strtod(buf, NULL);
}

static pmon_series *get_series(pmon *pm, const char *id)
{
    pmon_series *s = find_series(pm, id);
    if (s) return s;
    s = calloc(1, sizeof *s);
    if (!s || !(s->id = strdup(id))) {
        free(s);
        return NULL;
    }
    s->next = pm->series;
    pm->series = s;
    return s;
}

int pmon_record(pmon *pm, const char *agent_id, const pmon_point *pt)
{
    pthread_mutex_lock(&pm->mu);
    pmon_series *s = get_series(pm, agent_id);
    int rc = s ? series_push(pm, s, pt) : -1;
    pthread_mutex_unlock(&pm->mu);
    return rc;
}

int pmon_sample(pmon *pm, const char *agent_id, pid_t pid, pmon_point *out)
{
    pmon_proc p;
    if (pmon_read_proc(pid, &p) != 0) return -1;
    int64_t mono = clock_ms(CLOCK_MONOTONIC);
    double hz = (double)sysconf(_SC_CLK_TCK);
    pmon_point pt = {
        .time_ms = clock_ms(CLOCK_REALTIME),
        .rss = p.rss, .vms = p.vms,
        .read_bytes = p.read_bytes, .write_bytes = p.write_bytes,
        .open_files = p.open_files,
    };
    pthread_mutex_lock(&pm->mu);
    pmon_series *s = get_series(pm, agent_id);
    if (!s) {
        pthread_mutex_unlock(&pm->mu);
        return -1;
    }
    if (s->last_pid == pid && s->last_start_ticks == p.start_ticks && mono > s->last_mono_ms) {
        double used = (double)(p.cpu_ticks - s->last_cpu_ticks) / hz;
        pt.cpu = used * 100000.0 / (double)(mono - s->last_mono_ms);
    } else {
        /* A new process: average over its life so far rather than a meaningless 0. */
        double life = uptime_s() - (double)p.start_ticks / hz;
        pt.cpu = life > 0.01 ? (double)p.cpu_ticks / hz * 100.0 / life : 0.0;
    }
    if (pt.cpu < 0) pt.cpu = 0;
    s->last_pid = pid;
    s->last_start_ticks = p.start_ticks;
    s->last_cpu_ticks = p.cpu_ticks;
    s->last_mono_ms = mono;
    int rc = series_push(pm, s, &pt);
    pthread_mutex_unlock(&pm->mu);
    if (rc == 0 && out) *out = pt;
    return rc;
}

void pmon_forget(pmon *pm, const char *agent_id)
{
    pthread_mutex_lock(&pm->mu);
    for (pmon_series **pp = &pm->series; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, agent_id) == 0) {
            pmon_series *s = *pp;
            *pp = s->next;
            series_free(s);
            break;
        }
    }
    pthread_mutex_unlock(&pm->mu);
}

int pmon_query(pmon *pm, const char *agent_id, int64_t duration_s, pmon_point **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (duration_s <= 0) duration_s = 3600;
    int64_t since = clock_ms(CLOCK_REALTIME) - duration_s * 1000;
    int rc = 0;
    pthread_mutex_lock(&pm->mu);
    pmon_series *s = find_series(pm, agent_id);
    if (s && s->count) {
        size_t first = 0; /* points are in time order: skip the old ones */
        while (first < s->count && s->ring[(s->head + first) % s->cap].time_ms < since) first++;
        size_t k = s->count - first;
        if (k) {
            pmon_point *r = malloc(k * sizeof *r);
            if (!r) {
                rc = -1;
            } else {
                for (size_t i = 0; i < k; i++) r[i] = s->ring[(s->head + first + i) % s->cap];
                *out = r;
                *n = k;
            }
        }
    }
    pthread_mutex_unlock(&pm->mu);
    return rc;
}
