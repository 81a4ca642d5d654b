/* spool: a directory of numbered report files with an in-memory index. */
#include "daemon/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

struct entry {
    uint64_t seq;
    uint64_t size;
};

struct spool {
    pthread_mutex_t mu;
    char *dir;
    uint64_t max_bytes, bytes, dropped, next_seq;
    struct entry *q; /* ring of entries, oldest at head */
    size_t head, n, cap;
    int dirfd;
};

static void path_of(const spool *s, uint64_t seq, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%020" PRIu64 ".rpt", s->dir, seq);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static int push(spool *s, uint64_t seq, uint64_t size)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct entry *q = malloc(cap * sizeof *q);
        if (!q) return -1;
        for (size_t i = 0; i < s->n; i++) q[i] = s->q[(s->head + i) % s->cap];
        free(s->q);
        s->q = q;
        s->cap = cap;
        s->head = 0;
    }
    s->q[(s->head + s->n) % s->cap] = (struct entry){seq, size};
    s->n++;
    s->bytes += size;
    return 0;
}

static void pop(spool *s)
{
    s->bytes -= s->q[s->head].size;
    s->head = (s->head + 1) % s->cap;
    s->n--;
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

spool *spool_open(const char *dir, uint64_t max_bytes, char *err, size_t errlen)
{
    if (mkdir_p(dir) != 0) {
        snprintf(err, errlen, "spool %s: cannot create: %s", dir, strerror(errno));
        return NULL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "spool %s: %s", dir, strerror(errno));
        return NULL;
    }
    spool *s = calloc(1, sizeof *s);
    if (!s) abort();
    pthread_mutex_init(&s->mu, NULL);
    s->dir = strdup(dir);
    s->max_bytes = max_bytes ? max_bytes : 64ull << 20;
    s->next_seq = 1;
    struct entry *found = NULL;
    size_t nf = 0, capf = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t seq;
        char tail[8];
        if (sscanf(de->d_name, "%20" SCNu64 ".%7s", &seq, tail) == 2 && !strcmp(tail, "rpt")) {
            struct stat st;
            char p[4200];
            path_of(s, seq, p, sizeof p);
            if (stat(p, &st) != 0) continue;
            if (nf == capf) {
                capf = capf ? capf * 2 : 64;
                found = realloc(found, capf * sizeof *found);
                if (!found) abort();
            }
            found[nf++] = (struct entry){seq, (uint64_t)st.st_size};
        } else if (strstr(de->d_name, ".tmp")) {
            /* A report whose write never finished: it was never acknowledged to anyone. */
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
    if (nf) qsort(found, nf, sizeof *found, cmp_entry);
    for (size_t i = 0; i < nf; i++) {
        if (push(s, found[i].seq, found[i].size) != 0) abort();
        if (found[i].seq >= s->next_seq) s->next_seq = found[i].seq + 1;
    }
    free(found);
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (nf) log_info("spool.recovered", "dir=%s reports=%zu bytes=%" PRIu64, dir, nf, s->bytes);
    return s;
}

void spool_close(spool *s)
{
    if (!s) return;
    if (s->dirfd >= 0) close(s->dirfd);
    free(s->q);
    free(s->dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int spool_append(spool *s, const void *data, size_t len, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    uint64_t seq = s->next_seq++;
    char path[4200], tmp[4300];
    path_of(s, seq, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int ok = fd >= 0;
    const char *what = "create";
    if (ok) {
        const char *p = data;
        size_t left = len;
        while (ok && left) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { ok = 0; what = "write"; break; }
            p += w;
            left -= (size_t)w;
        }
        if (ok && fsync(fd) != 0) { ok = 0; what = "fsync"; }
        int e = errno;
        close(fd);
        errno = e;
    }
    if (ok && rename(tmp, path) != 0) { ok = 0; what = "rename"; }
    if (!ok) {
        snprintf(err, errlen, "spool %s: %s %s: %s", s->dir, what, tmp, strerror(errno));
        unlink(tmp);
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    if (s->dirfd >= 0) fsync(s->dirfd);
    if (push(s, seq, len) != 0) abort();
    /* Over the bound: the oldest reports go first, and we say so. */
    while (s->bytes > s->max_bytes && s->n > 1) {
        char old[4200];
        path_of(s, s->q[s->head].seq, old, sizeof old);
        unlink(old);
        pop(s);
        s->dropped++;
        log_warn("spool.dropped", "dir=%s dropped_total=%" PRIu64 " max_bytes=%" PRIu64 " msg=\"spool full: oldest report dropped\"",
                 s->dir, s->dropped, s->max_bytes);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int spool_peek(spool *s, uint64_t *seq, void **data, size_t *len, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->mu);
    if (s->n == 0) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    struct entry e = s->q[s->head];
    char path[4200];
    path_of(s, e.seq, path, sizeof path);
    FILE *f = fopen(path, "rb");
    void *buf = f ? malloc(e.size ? e.size : 1) : NULL;
    size_t got = f && buf ? fread(buf, 1, e.size, f) : 0;
    if (f) fclose(f);
    if (!buf || got != e.size) {
        snprintf(err, errlen, "spool: cannot read %s: %s", path, f ? "short read" : strerror(errno));
        free(buf);
        unlink(path);
        pop(s);
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    pthread_mutex_unlock(&s->mu);
    *seq = e.seq;
    *data = buf;
    *len = e.size;
    return 1;
}

int spool_remove(spool *s, uint64_t seq)
{
    pthread_mutex_lock(&s->mu);
    int rc = -1;
    if (s->n && s->q[s->head].seq == seq) {
        char path[4200];
        path_of(s, seq, path, sizeof path);
        rc = unlink(path) == 0 || errno == ENOENT ? 0 : -1;
        pop(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

size_t spool_count(spool *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint64_t spool_bytes(spool *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->bytes;
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint64_t spool_dropped(spool *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->dropped;
    pthread_mutex_unlock(&s->mu);
    return n;
}
