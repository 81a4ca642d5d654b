/* nodesecret: small files read whole; the secret is never logged. */
#include "daemon/nodesecret.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads the first line of path (trimmed) into out. 1, 0 (no file), -1. */
static int read_line(const char *path, int private_only, char *out, size_t n, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (private_only && (st.st_mode & 077))) {
        snprintf(err, errlen, "%s: readable by others (mode %03o): not used; make it 0600", path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return -1;
    }
    char buf[1024];
    ssize_t got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    buf[got] = 0;
    size_t len = strcspn(buf, "\r\n");
    while (len && (buf[len - 1] == ' ' || buf[len - 1] == '\t')) len--;
    size_t start = 0;
    while (start < len && (buf[start] == ' ' || buf[start] == '\t')) start++;
    if (start == len) {
        snprintf(err, errlen, "%s: empty", path);
        return -1;
    }
    if (len - start >= n) {
        snprintf(err, errlen, "%s: too long", path);
        return -1;
    }
    memcpy(out, buf + start, len - start);
    out[len - start] = 0;
    return 1;
}

int nodesecret_load(const char *path, char *out, size_t n, char *err, size_t errlen)
{
    out[0] = 0;
    return read_line(path, 1, out, n, err, errlen);
}

int nodesecret_save(const char *path, const char *secret, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(secret);
    /* umask may have narrowed it further, never widened; an old file keeps its mode: set it */
    int ok = fchmod(fd, 0600) == 0 && write(fd, secret, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) { ok = 0; e = errno; }
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int nodesecret_forget(const char *path, char *err, size_t errlen)
{
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int nodesecret_enrollment_token(const dconfig_manager *m, char *out, size_t n, char *err, size_t errlen)
{
    out[0] = 0;
    if (m->enrollment_token && *m->enrollment_token) {
        if (strlen(m->enrollment_token) >= n) {
            snprintf(err, errlen, "manager.enrollment_token: too long");
            return -1;
        }
        snprintf(out, n, "%s", m->enrollment_token);
        return 1;
    }
    if (!m->enrollment_token_file || !*m->enrollment_token_file) return 0;
    int rc = read_line(m->enrollment_token_file, 0, out, n, err, errlen);
    if (rc == 0) {
        snprintf(err, errlen, "%s: no such file (manager.enrollment_token_file)", m->enrollment_token_file);
        return -1;
    }
    return rc;
}
