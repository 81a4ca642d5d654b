/* nodeid: configured id, else the file, else a new UUID written so it survives a crash. */
#include "daemon/nodeid.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "base/log.h"

static int valid_id(const char *s, size_t n)
{
    if (n == 0 || n > NODEID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) return 0;
    return 1;
}

static int put(const char *id, size_t n, char *out, size_t outlen, char *err, size_t errlen)
{
    if (n + 1 > outlen) {
        snprintf(err, errlen, "node id buffer too small (%zu bytes for a %zu-byte id)", outlen, n);
        return -1;
    }
    memcpy(out, id, n);
    out[n] = 0;
    return 0;
}

/* mkdir -p: the work dir of a fresh install does not exist yet. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "%s: cannot create directory: %s", p, strerror(errno));
            return -1;
        }
        *s = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a directory", dir);
        return -1;
    }
    return 0;
}

/* Reads the file into buf. Returns 1 when read, 0 when it does not exist, -1 on error. */
static int read_file(const char *path, char *buf, size_t cap, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0 || (n += (size_t)r) == cap) break;
    }
    close(fd);
    *len = n;
    return 1;
}

/* tmp file + fsync + rename + fsync(dir): after a crash the file is either absent or whole. */
static int write_atomic(const char *dir, const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s/.node_id.%ld.tmp", dir, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    const char *what = NULL;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) { what = "write"; break; }
        off += (size_t)w;
    }
    /* The umask must not make the id unreadable to tools running as other users. */
    if (!what && fchmod(fd, 0644) != 0) what = "chmod";
    if (!what && fsync(fd) != 0) what = "fsync";
    if (close(fd) != 0 && !what) what = "close";
    if (!what && rename(tmp, path) != 0) what = "rename";
    if (what) {
        snprintf(err, errlen, "%s: cannot %s: %s", what[0] == 'r' ? path : tmp, what, strerror(errno));
        unlink(tmp);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0) log_warn("nodeid.fsync_dir", "dir=%s errno=%d", dir, errno);
        close(dfd);
    }
    return 0;
}

int nodeid_resolve(const char *configured_id, const char *work_dir, char *out, size_t outlen,
                   char *err, size_t errlen)
{
    if (configured_id && *configured_id) {
        if (!valid_id(configured_id, strlen(configured_id))) {
            snprintf(err, errlen, "daemon.id: must be 1-%d characters without spaces or control characters",
                     NODEID_MAX);
            return -1;
        }
        return put(configured_id, strlen(configured_id), out, outlen, err, errlen);
    }
    if (!work_dir || !*work_dir) {
        snprintf(err, errlen, "no daemon.id configured and no work_dir to keep a node_id in");
        return -1;
    }
    if (make_dirs(work_dir, err, errlen) != 0) return -1;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/node_id", work_dir) >= (int)sizeof path) {
        snprintf(err, errlen, "%s: path too long", work_dir);
        return -1;
    }

    char buf[NODEID_MAX * 4];
    size_t len = 0;
    int have = read_file(path, buf, sizeof buf, &len, err, errlen);
    if (have < 0) return -1;
    if (have) {
        size_t a = 0, b = len;
        while (a < b && (buf[a] == ' ' || buf[a] == '\t' || buf[a] == '\n' || buf[a] == '\r')) a++;
        while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\n' || buf[b - 1] == '\r')) b--;
        if (b > a) {
            /* A damaged id is not silently replaced: the manager knows this node by it. */
            if (!valid_id(buf + a, b - a)) {
                snprintf(err, errlen, "%s: does not hold a valid node id (1-%d characters without "
                         "spaces); fix it or remove the file to get a new id", path, NODEID_MAX);
                return -1;
            }
            return put(buf + a, b - a, out, outlen, err, errlen);
        }
        log_warn("nodeid.empty_file", "path=%s action=regenerate", path);
    }

    uuid_t u;
    char id[40];
    uuid_generate(u);
    uuid_unparse_lower(u, id);
    if (put(id, strlen(id), out, outlen, err, errlen) != 0) return -1;
    char line[48];
    snprintf(line, sizeof line, "%s\n", id);
    if (write_atomic(work_dir, path, line, err, errlen) != 0) return -1;
    log_info("nodeid.generated", "node_id=%s path=%s", id, path);
    return 0;
}
