/* collectors: /proc parsers behind a plugin table. Counters are read fresh on every call;
 * only the cpu plugin keeps state, because percentages need the previous reading. */
#include "daemon/collectors.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "base/log.h"

struct coll_plugin {
    const char *name;
    int (*init)(coll *c, void **state, char *err, size_t errlen);   /* NULL: stateless */
    int (*read)(coll *c, void *state, coll_sample *out, char *err, size_t errlen);
    void (*shutdown)(void *state);
};

struct coll_slot {
    dconfig_collector cfg;
    int64_t next_ms;       /* INT64_MIN: never read, due at once */
    void *state;
    int initialised;
};

struct coll {
    char proc_root[PATH_MAX];
    int per_core;
    char **mount_points;   /* NULL-terminated copies of the filters */
    char **interfaces;
    struct coll_slot slot[COLL_COUNT];
};

/* ---- helpers ------------------------------------------------------------------------------ */

/* procfs files report size 0: read until EOF. Returns a NUL-terminated malloc'd buffer. */
static char *slurp(const coll *c, const char *rel, char *err, size_t errlen)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", c->proc_root, rel);
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t len = 0, cap = 8192;
    char *buf = malloc(cap);
    const char *problem = buf ? NULL : "out of memory";
    while (!problem) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) { problem = "out of memory"; break; }
        buf = nb;
    }
    if (!problem && ferror(f)) problem = "read error";
    fclose(f);
    if (problem) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path, problem);
        return NULL;
    }
    buf[len] = 0;
    return buf;
}

static int sample_add(coll_sample *s, const char *prefix, const char *key, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        coll_value *nv = realloc(s->values, cap * sizeof *nv);
        if (!nv) return -1;
        s->values = nv;
        s->cap = cap;
    }
    coll_value *e = &s->values[s->n];
    int n = prefix ? snprintf(e->key, sizeof e->key, "%s.%s", prefix, key)
                   : snprintf(e->key, sizeof e->key, "%s", key);
    if (n < 0 || (size_t)n >= sizeof e->key) return 0; /* callers check lengths first */
    e->value = v;
    s->n++;
    return 0;
}

static int add_all(coll_sample *s, const char *prefix, const char *const *keys, const double *vals,
                   size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (sample_add(s, prefix, keys[i], vals[i]) != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    return 0;
}

static double percent(double part, double whole)
{
    return whole > 0 ? part * 100.0 / whole : 0.0;
}

static int in_list(char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

/* ---- cpu: /proc/stat ---------------------------------------------------------------------- */

enum { T_USER, T_NICE, T_SYSTEM, T_IDLE, T_IOWAIT, T_IRQ, T_SOFTIRQ, T_STEAL, T_N };

struct cpu_times {
    unsigned long long t[T_N];
};

struct cpu_state {
    struct cpu_times all;
    struct cpu_times *core;
    size_t n_core;
};

/* Parses the "cpu" line and each "cpuN" line. *cores is malloc'd (caller frees). */
static int cpu_parse(const char *text, struct cpu_times *all, struct cpu_times **cores,
                     size_t *n_cores, char *err, size_t errlen)
{
    *cores = NULL;
    *n_cores = 0;
    size_t cap = 0;
    int have_all = 0;
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, "cpu", 3) != 0) continue;
        const char *p = line + 3;
        int is_all = (*p == ' ');
        char *end;
        if (!is_all) {
            errno = 0;
            unsigned long idx = strtoul(p, &end, 10);
            if (end == p || *end != ' ' || errno) continue;
            (void)idx;
            p = end;
        }
        struct cpu_times t = {{0}};
        int got = 0;
        for (int i = 0; i < T_N; i++) {
            while (*p == ' ') p++;
            if (*p < '0' || *p > '9') break;
            t.t[i] = strtoull(p, &end, 10);
            p = end;
            got++;
        }
        if (got < 4) continue; /* older kernels stop after idle; anything shorter is junk */
        if (is_all) { *all = t; have_all = 1; continue; }
        if (*n_cores == cap) {
            cap = cap ? cap * 2 : 8;
            struct cpu_times *nc = realloc(*cores, cap * sizeof *nc);
            if (!nc) { free(*cores); *cores = NULL; snprintf(err, errlen, "out of memory"); return -1; }
            *cores = nc;
        }
        (*cores)[(*n_cores)++] = t;
    }
    if (!have_all) {
        free(*cores);
        *cores = NULL;
        snprintf(err, errlen, "stat: no \"cpu\" line");
        return -1;
    }
    return 0;
}

static unsigned long long cpu_total(const struct cpu_times *t)
{
    unsigned long long s = 0;
    for (int i = 0; i < T_N; i++) s += t->t[i];
    return s;
}

/* Differences against the previous reading. A counter that went backwards (CPU hot-unplug,
 * a wrapped fixture) counts as 0 rather than as a huge number. */
static void cpu_delta(const struct cpu_times *now, const struct cpu_times *prev, double d[T_N])
{
    for (int i = 0; i < T_N; i++)
        d[i] = now->t[i] >= prev->t[i] ? (double)(now->t[i] - prev->t[i]) : 0.0;
}

static int cpu_read_stat(coll *c, struct cpu_state *s, char *err, size_t errlen)
{
    char *text = slurp(c, "stat", err, errlen);
    if (!text) return -1;
    int rc = cpu_parse(text, &s->all, &s->core, &s->n_core, err, errlen);
    free(text);
    return rc;
}

static int cpu_init(coll *c, void **state, char *err, size_t errlen)
{
    struct cpu_state *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return -1; }
    if (cpu_read_stat(c, s, err, errlen) != 0) { free(s); return -1; }
    *state = s;
    return 0;
}

static void cpu_shutdown(void *state)
{
    struct cpu_state *s = state;
    if (!s) return;
    free(s->core);
    free(s);
}

static int cpu_read(coll *c, void *state, coll_sample *out, char *err, size_t errlen)
{
    struct cpu_state *prev = state, now = {{{0}}, NULL, 0};
    if (cpu_read_stat(c, &now, err, errlen) != 0) return -1;
    double d[T_N];
    cpu_delta(&now.all, &prev->all, d);
    double total = 0;
    for (int i = 0; i < T_N; i++) total += d[i];
    /* Two reads within one clock tick: fall back to the averages since boot. */
    if (total == 0) {
        static const struct cpu_times zero;
        cpu_delta(&now.all, &zero, d);
        total = (double)cpu_total(&now.all);
    }
    static const char *const keys[] = {"usage_percent", "user", "system", "idle", "iowait", "steal", "cores"};
    double vals[] = {
        percent(total - d[T_IDLE] - d[T_IOWAIT], total),
        percent(d[T_USER] + d[T_NICE], total),
        percent(d[T_SYSTEM] + d[T_IRQ] + d[T_SOFTIRQ], total),
        percent(d[T_IDLE], total),
        percent(d[T_IOWAIT], total),
        percent(d[T_STEAL], total),
        (double)now.n_core,
    };
    int rc = add_all(out, NULL, keys, vals, sizeof vals / sizeof vals[0], err, errlen);
    for (size_t i = 0; rc == 0 && c->per_core && i < now.n_core; i++) {
        static const struct cpu_times zero;
        double cd[T_N], ct = 0;
        cpu_delta(&now.core[i], i < prev->n_core ? &prev->core[i] : &zero, cd);
        for (int k = 0; k < T_N; k++) ct += cd[k];
        char prefix[32];
        snprintf(prefix, sizeof prefix, "cpu%zu", i);
        double v = percent(ct - cd[T_IDLE] - cd[T_IOWAIT], ct);
        rc = add_all(out, prefix, (const char *const[]){"usage_percent"}, &v, 1, err, errlen);
    }
    free(prev->core);
    *prev = now;
    return rc;
}

/* ---- memory: /proc/meminfo ---------------------------------------------------------------- */

/* Value of "Key:   123 kB" in bytes, or -1 when the key is absent. */
static double meminfo_get(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, kl) != 0 || line[kl] != ':') continue;
        char *end;
        unsigned long long v = strtoull(line + kl + 1, &end, 10);
        if (end == line + kl + 1) return -1;
        while (*end == ' ') end++;
        return strncmp(end, "kB", 2) == 0 ? (double)v * 1024.0 : (double)v;
    }
    return -1;
}

static int memory_read(coll *c, void *state, coll_sample *out, char *err, size_t errlen)
{
    (void)state;
    char *text = slurp(c, "meminfo", err, errlen);
    if (!text) return -1;
    double total = meminfo_get(text, "MemTotal"), free_ = meminfo_get(text, "MemFree");
    double buffers = meminfo_get(text, "Buffers"), cached = meminfo_get(text, "Cached");
    double sreclaim = meminfo_get(text, "SReclaimable"), avail = meminfo_get(text, "MemAvailable");
    double swap_total = meminfo_get(text, "SwapTotal"), swap_free = meminfo_get(text, "SwapFree");
    free(text);
    if (total <= 0 || free_ < 0) {
        snprintf(err, errlen, "%s/meminfo: no MemTotal/MemFree", c->proc_root);
        return -1;
    }
    if (buffers < 0) buffers = 0;
    if (cached < 0) cached = 0;
    if (sreclaim > 0) cached += sreclaim;
    if (avail < 0) avail = free_ + buffers + cached; /* kernels before 3.14 */
    if (avail > total) avail = total;
    if (swap_total < 0) swap_total = 0;
    if (swap_free < 0 || swap_free > swap_total) swap_free = swap_total;
    double used = total - avail;
    static const char *const keys[] = {"total", "available", "used", "used_percent", "free",
                                       "buffers", "cached", "swap_total", "swap_used", "swap_free"};
    double vals[] = {total, avail, used, percent(used, total), free_, buffers, cached,
                     swap_total, swap_total - swap_free, swap_free};
    return add_all(out, NULL, keys, vals, sizeof vals / sizeof vals[0], err, errlen);
}

/* ---- disk: statvfs per mount point -------------------------------------------------------- */

/* /proc/mounts escapes space, tab, newline and backslash as \ooo. In place. */
static void unescape_mount(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

/* Filesystem types the kernel lists as "nodev" (proc, tmpfs, cgroup, overlay...). */
static int is_nodev(const char *filesystems, const char *type)
{
    size_t tl = strlen(type);
    for (const char *line = filesystems; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, "nodev", 5) != 0) continue;
        const char *p = line + 5;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, type, tl) == 0 && (p[tl] == '\n' || p[tl] == 0)) return 1;
    }
    return 0;
}

static int disk_add_mount(coll_sample *out, const char *mnt, char *err, size_t errlen)
{
    if (strlen(mnt) + sizeof ".used_percent" > COLL_KEY_MAX) {
        log_debug("collect.disk.skip", "mount=%s reason=name_too_long", mnt);
        return 0;
    }
    struct statvfs st;
    if (statvfs(mnt, &st) != 0) {
        /* One unreadable mount (permissions, a vanished USB disk) must not hide the rest. */
        log_debug("collect.disk.skip", "mount=%s errno=%d", mnt, errno);
        return 0;
    }
    double bs = (double)st.f_frsize;
    double total = (double)st.f_blocks * bs;
    double avail = (double)st.f_bavail * bs;
    double used = ((double)st.f_blocks - (double)st.f_bfree) * bs;
    static const char *const keys[] = {"total", "free", "used", "used_percent"};
    /* Like df: the share of what users can have, so reserved blocks count as neither. */
    double vals[] = {total, avail, used, percent(used, used + avail)};
    return add_all(out, mnt, keys, vals, 4, err, errlen);
}

static int disk_read(coll *c, void *state, coll_sample *out, char *err, size_t errlen)
{
    (void)state;
    char *mounts = slurp(c, "mounts", err, errlen);
    if (!mounts) return -1;
    char *fs = NULL;
    int all = !c->mount_points[0];
    if (all && !(fs = slurp(c, "filesystems", err, errlen))) { free(mounts); return -1; }

    int rc = 0;
    size_t seen_cap = 16, n_seen = 0;
    char **seen = malloc(seen_cap * sizeof *seen);
    if (!seen) { snprintf(err, errlen, "out of memory"); rc = -1; }
    char *save = NULL;
    for (char *line = strtok_r(mounts, "\n", &save); rc == 0 && line; line = strtok_r(NULL, "\n", &save)) {
        char *f_save = NULL;
        char *dev = strtok_r(line, " \t", &f_save);
        char *mnt = strtok_r(NULL, " \t", &f_save);
        char *type = strtok_r(NULL, " \t", &f_save);
        if (!dev || !mnt || !type) continue;
        unescape_mount(mnt);
        if (all ? strcmp(mnt, "/") != 0 && is_nodev(fs, type) : !in_list(c->mount_points, mnt)) continue;
        /* Over-mounts list the same point twice; report it once. */
        int dup = 0;
        for (size_t i = 0; i < n_seen && !dup; i++) dup = strcmp(seen[i], mnt) == 0;
        if (dup) continue;
        if (n_seen == seen_cap) {
            char **ns = realloc(seen, (seen_cap *= 2) * sizeof *ns);
            if (!ns) { snprintf(err, errlen, "out of memory"); rc = -1; break; }
            seen = ns;
        }
        seen[n_seen++] = mnt;
        rc = disk_add_mount(out, mnt, err, errlen);
    }
    free(seen);
    free(fs);
    free(mounts);
    return rc;
}

/* ---- network: /proc/net/dev --------------------------------------------------------------- */

static int network_read(coll *c, void *state, coll_sample *out, char *err, size_t errlen)
{
    (void)state;
    char *text = slurp(c, "net/dev", err, errlen);
    if (!text) return -1;
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); rc == 0 && line; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon) continue; /* the two header lines */
        *colon = 0;
        char *name = line;
        while (*name == ' ') name++;
        if (!*name || strchr(name, '|')) continue;
        if (c->interfaces[0] && !in_list(c->interfaces, name)) continue;
        if (strlen(name) + sizeof ".packets_recv" > COLL_KEY_MAX) continue;
        unsigned long long f[16];
        char *p = colon + 1, *end;
        int got = 0;
        for (; got < 16; got++) {
            f[got] = strtoull(p, &end, 10);
            if (end == p) break;
            p = end;
        }
        if (got < 16) {
            log_debug("collect.network.skip", "iface=%s reason=short_line fields=%d", name, got);
            continue;
        }
        /* receive: bytes packets errs drop fifo frame compressed multicast; then transmit */
        static const char *const keys[] = {"bytes_recv", "packets_recv", "errin", "dropin",
                                           "bytes_sent", "packets_sent", "errout", "dropout"};
        double vals[] = {(double)f[0], (double)f[1], (double)f[2], (double)f[3],
                         (double)f[8], (double)f[9], (double)f[10], (double)f[11]};
        rc = add_all(out, name, keys, vals, 8, err, errlen);
    }
    free(text);
    return rc;
}

/* ---- the table and the scheduler ---------------------------------------------------------- */

static const struct coll_plugin plugins[COLL_COUNT] = {
    [COLL_CPU] = {"cpu", cpu_init, cpu_read, cpu_shutdown},
    [COLL_MEMORY] = {"memory", NULL, memory_read, NULL},
    [COLL_DISK] = {"disk", NULL, disk_read, NULL},
    [COLL_NETWORK] = {"network", NULL, network_read, NULL},
};

const char *coll_kind_name(coll_kind kind)
{
    return kind < COLL_COUNT ? plugins[kind].name : "unknown";
}

int coll_kind_from_name(const char *name, coll_kind *out)
{
    for (int i = 0; i < COLL_COUNT; i++)
        if (strcmp(plugins[i].name, name) == 0) { *out = (coll_kind)i; return 0; }
    return -1;
}

static char **copy_list(char *const *v, size_t n)
{
    char **c = calloc(n + 1, sizeof *c);
    if (!c) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(c[i] = strdup(v[i]))) {
            for (size_t j = 0; j < i; j++) free(c[j]);
            free(c);
            return NULL;
        }
    return c;
}

static void free_list(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

int coll_new(const dconfig_collectors *cfg, const char *proc_root, coll **out, char *err,
             size_t errlen)
{
    *out = NULL;
    coll *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return -1; }
    snprintf(c->proc_root, sizeof c->proc_root, "%s", proc_root ? proc_root : "/proc");
    c->per_core = cfg->cpu_per_core;
    c->mount_points = copy_list(cfg->mount_points, cfg->n_mount_points);
    c->interfaces = copy_list(cfg->interfaces, cfg->n_interfaces);
    if (!c->mount_points || !c->interfaces) {
        coll_free(c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const dconfig_collector *conf[COLL_COUNT] = {&cfg->cpu, &cfg->memory, &cfg->disk, &cfg->network};
    for (int i = 0; i < COLL_COUNT; i++) {
        struct coll_slot *s = &c->slot[i];
        s->cfg = *conf[i];
        s->next_ms = INT64_MIN;
        if (!s->cfg.enabled) continue;
        char perr[256];
        if (plugins[i].init && plugins[i].init(c, &s->state, perr, sizeof perr) != 0) {
            snprintf(err, errlen, "collector %s: %s", plugins[i].name, perr);
            coll_free(c);
            return -1;
        }
        s->initialised = 1;
    }
    *out = c;
    return 0;
}

void coll_free(coll *c)
{
    if (!c) return;
    for (int i = 0; i < COLL_COUNT; i++)
        if (c->slot[i].initialised && plugins[i].shutdown) plugins[i].shutdown(c->slot[i].state);
    free_list(c->mount_points);
    free_list(c->interfaces);
    free(c);
}

unsigned coll_due(const coll *c, int64_t now_ms)
{
    unsigned due = 0;
    for (int i = 0; i < COLL_COUNT; i++)
        if (c->slot[i].cfg.enabled && c->slot[i].next_ms <= now_ms) due |= 1u << i;
    return due;
}

int64_t coll_next_due(const coll *c)
{
    int64_t next = INT64_MAX;
    for (int i = 0; i < COLL_COUNT; i++)
        if (c->slot[i].cfg.enabled && c->slot[i].next_ms < next) next = c->slot[i].next_ms;
    return next;
}

int coll_read(coll *c, coll_kind kind, int64_t now_ms, coll_sample *out, char *err, size_t errlen)
{
    if (kind >= COLL_COUNT) {
        snprintf(err, errlen, "unknown collector %d", (int)kind);
        return -1;
    }
    struct coll_slot *s = &c->slot[kind];
    const struct coll_plugin *p = &plugins[kind];
    if (s->cfg.enabled) s->next_ms = now_ms + s->cfg.interval_ms;
    /* A disabled stateful plugin (cpu) gets its state on first demand. */
    if (!s->initialised && p->init) {
        char perr[256];
        if (p->init(c, &s->state, perr, sizeof perr) != 0) {
            snprintf(err, errlen, "collector %s: %s", p->name, perr);
            return -1;
        }
        s->initialised = 1;
    }
    snprintf(out->type, sizeof out->type, "%s", p->name);
    out->timestamp = (int64_t)time(NULL);
    out->n = 0;
    char perr[256];
    if (p->read(c, s->state, out, perr, sizeof perr) != 0) {
        snprintf(err, errlen, "collector %s: %s", p->name, perr);
        out->n = 0;
        return -1;
    }
    return 0;
}

void coll_sample_free(coll_sample *s)
{
    if (!s) return;
    free(s->values);
    s->values = NULL;
    s->n = s->cap = 0;
}

int coll_sample_get(const coll_sample *s, const char *key, double *v)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->values[i].key, key) == 0) { *v = s->values[i].value; return 0; }
    return -1;
}
