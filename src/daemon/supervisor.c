/* supervisor: the agent process supervisor (see supervisor.h for the contract).
 *
 * Shape: API threads never touch processes. They put a command on a queue, poke an eventfd
 * and wait on a condition variable; the one supervisor thread applies commands, drives every
 * agent's state machine from poll events and deadlines, and completes the waiting commands
 * when their agent reaches the state they wait for. One mutex guards everything; the thread
 * drops it only while it polls and while it runs on_change callbacks.
 *
 * State file ({state_dir}/agents.state), one line per agent with a live process:
 *   ops-agents-state 1
 *   <pid> <proc start ticks> <start_time unix s> <restart_count> <spec fingerprint hex> <id>
 * The id is last so it may hold anything but a newline. */
#include "daemon/supervisor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

extern char **environ;

#define HTTP_FAILS_TO_RESTART 3
#define HTTP_TIMEOUT_MAX_MS 2000
#define GROUP_POLL_MS 20
/* After SIGKILL the group is gone within milliseconds; members that still look alive then
 * are stuck in the kernel (D state) and waiting longer would only hang the stop. */
#define GROUP_GIVE_UP_MS 2000
#define STATE_MAGIC "ops-agents-state 1"

typedef enum { ST_STOPPED, ST_STARTING, ST_RUNNING, ST_STOPPING, ST_ERROR } ag_state;
static const char *const state_names[] = {SUP_STATUS_STOPPED, SUP_STATUS_STARTING,
                                          SUP_STATUS_RUNNING, SUP_STATUS_STOPPING,
                                          SUP_STATUS_ERROR};

typedef enum { CMD_START, CMD_STOP, CMD_RESTART, CMD_SET } cmd_op;
typedef enum { WAIT_RUNNING, WAIT_STOPPED } wait_kind;

/* Lives on the calling thread's stack until done is set. */
typedef struct sup_cmd {
    cmd_op op;
    const char *id;
    agent_spec *specs; /* CMD_SET: copies, consumed by the supervisor thread */
    size_t n;
    wait_kind wait;
    int done;
    sup_result res;
    char *err;
    size_t errlen;
    struct sup_cmd *next;
} sup_cmd;

typedef struct capture {
    int file_fd;    /* {work_dir}/logs/{id}.out|.err; -1 none */
    uint64_t size;
    char *path;
} capture;

enum { HTTP_IDLE, HTTP_CONNECTING, HTTP_READING };

typedef struct agent {
    agent_spec spec;
    agent_spec *next_spec; /* changed by a reload; installed once the process is gone */
    ag_state state;
    int target_run;        /* the operator/config wants it running */
    int restart_after_stop;
    int removed;
    /* process */
    pid_t pid;             /* main process, 0 once reaped or when none */
    pid_t pgid;            /* group we may signal as a whole; 0 when unsafe or none */
    int pidfd;
    int adopted;
    uint64_t start_ticks;
    int64_t spawn_mono;
    int64_t start_time;
    int64_t settle_at, retry_at, kill_at, group_check_at, stop_began;
    int kill_sent;
    capture cap[2];
    /* counters */
    int restart_count, failures;
    int last_code, last_signal;
    int64_t last_exit_time;
    int64_t last_hb, last_hb_mono;
    /* health */
    int64_t mem_since, cpu_since;
    int64_t next_health;
    int http_fails;
    int http_fd, http_phase;
    int64_t http_deadline;
    char http_buf[64];
    size_t http_len;
    int url_ok;
    struct sockaddr_storage url_addr;
    socklen_t url_alen;
    char url_hostport[128];
    char *url_path;
    sup_cmd *waiters;
} agent;

typedef struct state_entry {
    pid_t pid;
    uint64_t start_ticks;
    int64_t start_time;
    int restart_count;
    uint64_t fingerprint;
    char *id;
} state_entry;

typedef struct change_event {
    char *id;
    const char *status;
    struct change_event *next;
} change_event;

struct sup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int evfd;
    sup_options opt;
    char *state_dir;
    pmon *pm;
    agent **agents;
    size_t nagents;
    sup_cmd *queue, *queue_tail;
    change_event *events, *events_tail;
    state_entry *entries; /* from the state file, for the first sup_set_agents */
    size_t nentries;
    int loaded;           /* first sup_set_agents applied */
    int quit;             /* 1 leave agents, 2 stop them */
    int closing;          /* no new commands accepted */
    int state_dirty;
    int inflight;         /* API threads inside submit(); sup_free waits for them */
    int64_t next_sample;
};

/* ---------- small helpers ------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_s(void) { return (int64_t)time(NULL); }

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int sys_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static int sys_pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        seterr(err, errlen, "path too long: %s", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                seterr(err, errlen, "mkdir %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    return 0;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    if (s)
        for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* separator: ("ab","c") != ("a","bc") */
}

/* Same inputs as agent_spec_equal's process part: a re-adopted process must have been started
 * from the spec we now hold, or it is restarted. */
static uint64_t spec_fingerprint(const agent_spec *sp)
{
    uint64_t h = 1469598103934665603ULL;
    h = fnv(h, sp->binary_path);
    for (char **a = sp->args; a && *a; a++) h = fnv(h, *a);
    h = fnv(h, "\x01");
    for (char **e = sp->env; e && *e; e++) h = fnv(h, *e);
    h = fnv(h, "\x01");
    h = fnv(h, sp->config_file);
    h = fnv(h, sp->work_dir);
    return fnv(h, sp->version);
}

static agent *find_agent(sup *s, const char *id)
{
    for (size_t i = 0; i < s->nagents; i++)
        if (!s->agents[i]->removed && strcmp(s->agents[i]->spec.id, id) == 0) return s->agents[i];
    return NULL;
}

static int has_process(const agent *a) { return a->pid > 0 || a->state == ST_STOPPING; }

static void set_state(sup *s, agent *a, ag_state st)
{
    if (a->state == st) return;
    a->state = st;
    if (!s->opt.on_change) return;
    change_event *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->id = strdup(a->spec.id))) {
        free(ev);
        log_error("agent.change_lost", "agent=%s status=%s reason=oom", a->spec.id,
                  state_names[st]);
        return;
    }
    ev->status = state_names[st];
    if (s->events_tail) s->events_tail->next = ev;
    else s->events = ev;
    s->events_tail = ev;
}

/* ---------- command completion --------------------------------------------------------------- */

static void complete(sup *s, sup_cmd *c, sup_result res, const char *msg)
{
    c->res = res;
    if (msg) seterr(c->err, c->errlen, "%s", msg);
    c->done = 1;
    pthread_cond_broadcast(&s->cv);
}

/* Completes every waiter of agent a waiting for kind. */
static void complete_waiters(sup *s, agent *a, wait_kind kind, sup_result res, const char *msg)
{
    sup_cmd **pp = &a->waiters;
    while (*pp) {
        sup_cmd *c = *pp;
        if (c->wait == kind) {
            *pp = c->next;
            complete(s, c, res, msg);
        } else {
            pp = &c->next;
        }
    }
}

static void add_waiter(agent *a, sup_cmd *c, wait_kind kind)
{
    c->wait = kind;
    c->next = a->waiters;
    a->waiters = c;
}

/* ---------- log capture ---------------------------------------------------------------------- */

/* Agents write straight into their log files (no pipe through the daemon), so that an agent
 * keeps running, and logging, while the daemon restarts: a pipe would die with the daemon
 * and the agent's next write would kill it with SIGPIPE. Rotation is therefore "copytruncate"
 * (as logrotate calls it): when a file has grown past log_max_bytes, checked at every resource
 * sample, its content is copied to .1 (older generations shift up) and the file is truncated;
 * the agent's O_APPEND descriptor then writes at the new end. Lines written between the copy
 * and the truncation are lost, as with logrotate. */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out < 0) { close(in); return -1; }
    char buf[65536];
    ssize_t r;
    int rc = 0;
    while ((r = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t o = 0; o < r;) {
            ssize_t w = write(out, buf + o, (size_t)(r - o));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { rc = -1; break; }
            o += w;
        }
        if (rc) break;
    }
    if (r < 0) rc = -1;
    close(in);
    if (close(out) != 0) rc = -1;
    return rc;
}

static void capture_check(agent *a, capture *c)
{
    uint64_t max = a->spec.log_max_bytes;
    struct stat st;
    if (c->file_fd < 0 || !max || fstat(c->file_fd, &st) != 0 || (uint64_t)st.st_size < max) return;
    if (a->spec.log_keep > 0) {
        size_t n = strlen(c->path) + 16;
        char *from = malloc(n), *to = malloc(n);
        if (!from || !to) { free(from); free(to); return; }
        for (int k = a->spec.log_keep - 1; k >= 1; k--) {
            snprintf(from, n, "%s.%d", c->path, k);
            snprintf(to, n, "%s.%d", c->path, k + 1);
            rename(from, to); /* missing generations are fine */
        }
        snprintf(to, n, "%s.1", c->path);
        if (copy_file(c->path, to) != 0)
            log_warn("agent.log_rotate_failed", "agent=%s path=%s errno=%d", a->spec.id, to, errno);
        free(from);
        free(to);
    }
    if (ftruncate(c->file_fd, 0) != 0)
        log_warn("agent.log_truncate_failed", "agent=%s path=%s errno=%d", a->spec.id, c->path, errno);
    c->size = 0;
}

static void capture_close(capture *c)
{
    close_fd(&c->file_fd);
    free(c->path);
    c->path = NULL;
}

/* ---------- state file ----------------------------------------------------------------------- */

static void state_entries_free(sup *s)
{
    for (size_t i = 0; i < s->nentries; i++) free(s->entries[i].id);
    free(s->entries);
    s->entries = NULL;
    s->nentries = 0;
}

static char *state_path(const sup *s, const char *suffix)
{
    size_t n = strlen(s->state_dir) + 32;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/agents.state%s", s->state_dir, suffix);
    return p;
}

static void state_load(sup *s)
{
    char *path = state_path(s, "");
    FILE *f = path ? fopen(path, "re") : NULL;
    if (!f) {
        free(path);
        return;
    }
    char line[4096];
    if (!fgets(line, sizeof line, f) || strncmp(line, STATE_MAGIC, strlen(STATE_MAGIC)) != 0) {
        log_warn("agent.state_ignored", "path=%s reason=\"bad header\"", path);
        fclose(f);
        free(path);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        state_entry e = {0};
        int pid = 0, off = 0;
        unsigned long long ticks = 0, fp = 0;
        long long st = 0;
        if (sscanf(line, "%d %llu %lld %d %llx %n", &pid, &ticks, &st, &e.restart_count, &fp,
                   &off) != 5 || off <= 0 || line[off] == '\0' || pid <= 0)
            continue;
        e.pid = pid;
        e.start_ticks = ticks;
        e.start_time = st;
        e.fingerprint = fp;
        state_entry *ne = realloc(s->entries, (s->nentries + 1) * sizeof *ne);
        if (!ne || !(e.id = strdup(line + off))) {
            if (ne) s->entries = ne;
            break;
        }
        s->entries = ne;
        s->entries[s->nentries++] = e;
    }
    fclose(f);
    free(path);
}

static int state_write(sup *s)
{
    if (!s->state_dir) return 0;
    char *path = state_path(s, ""), *tmp = state_path(s, ".tmp");
    int rc = -1;
    FILE *f = NULL;
    if (!path || !tmp) goto out;
    f = fopen(tmp, "we");
    if (!f) goto out;
    fprintf(f, "%s\n", STATE_MAGIC);
    for (size_t i = 0; i < s->nagents; i++) {
        agent *a = s->agents[i];
        if (a->pid <= 0 || strchr(a->spec.id, '\n')) continue;
        fprintf(f, "%d %" PRIu64 " %" PRId64 " %d %" PRIx64 " %s\n", (int)a->pid, a->start_ticks,
                a->start_time, a->restart_count, spec_fingerprint(&a->spec), a->spec.id);
    }
    /* The rename is what makes the file appear whole: data must be on disk before it. */
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) goto out;
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) goto out;
    int dfd = open(s->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
out:
    if (f) fclose(f);
    if (rc != 0) log_error("agent.state_write_failed", "dir=%s errno=%d", s->state_dir, errno);
    free(path);
    free(tmp);
    return rc;
}

/* ---------- health endpoint URL -------------------------------------------------------------- */

/* Accepts http://HOST[:PORT][/PATH] with HOST an IPv4/IPv6 literal or "localhost": health
 * endpoints are local, and resolving names would block the supervisor loop. */
static void url_parse(agent *a)
{
    a->url_ok = 0;
    free(a->url_path);
    a->url_path = NULL;
    const char *u = a->spec.health.http_endpoint;
    if (!u || !*u) return;
    if (strncmp(u, "http://", 7) != 0) goto bad;
    const char *h = u + 7, *hend, *p;
    char host[64];
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend) goto bad;
        h++;
        p = hend + 1;
    } else {
        hend = h + strcspn(h, ":/");
        p = hend;
    }
    if (hend - h <= 0 || (size_t)(hend - h) >= sizeof host) goto bad;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    long port = 80;
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) goto bad;
        p = end;
    }
    if (*p != '\0' && *p != '/') goto bad;
    memset(&a->url_addr, 0, sizeof a->url_addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->url_addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->url_addr;
    if (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        if (strcmp(host, "localhost") == 0) v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a->url_alen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->url_alen = sizeof *v6;
    } else {
        goto bad;
    }
    a->url_path = strdup(*p ? p : "/");
    if (!a->url_path) goto bad;
    snprintf(a->url_hostport, sizeof a->url_hostport, "%.*s:%ld", (int)(hend - h), h, port);
    a->url_ok = 1;
    return;
bad:
    {
        char q[256];
        log_warn("agent.health_url_invalid", "agent=%s url=%s", a->spec.id,
                 log_quote(q, sizeof q, u));
    }
}

/* ---------- process control ------------------------------------------------------------------ */

static void signal_agent(agent *a, int sig)
{
    if (a->pgid > 1 && kill(-a->pgid, sig) == 0) return;
    if (a->pidfd >= 0) sys_pidfd_signal(a->pidfd, sig);
}

static void http_reset(agent *a)
{
    close_fd(&a->http_fd);
    a->http_phase = HTTP_IDLE;
    a->http_len = 0;
}

/* environ is read without a lock: the daemon sets its environment before threads start. */
static char **build_env(const agent_spec *sp)
{
    size_t n = 0, m = 0;
    for (char **e = environ; e && *e; e++) n++;
    for (char **e = sp->env; e && *e; e++) m++;
    char **out = calloc(n + m + 1, sizeof *out);
    if (!out) return NULL;
    size_t k = 0;
    for (char **e = environ; e && *e; e++) {
        size_t kl = strcspn(*e, "=");
        int overridden = 0;
        for (char **o = sp->env; o && *o && !overridden; o++)
            overridden = strncmp(*o, *e, kl) == 0 && (*o)[kl] == '=';
        if (!overridden) out[k++] = *e;
    }
    for (char **o = sp->env; o && *o; o++) out[k++] = *o;
    return out; /* the strings are borrowed: free only the array */
}

static int open_capture(agent *a, capture *c, const char *logdir, const char *ext, char *err,
                        size_t errlen)
{
    size_t n = strlen(logdir) + strlen(a->spec.id) + 8;
    c->path = malloc(n);
    if (!c->path) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    snprintf(c->path, n, "%s/%s.%s", logdir, a->spec.id, ext);
    c->file_fd = open(c->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (c->file_fd < 0) {
        seterr(err, errlen, "open %s: %s", c->path, strerror(errno));
        return -1;
    }
    struct stat st;
    c->size = fstat(c->file_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

/* Only async-signal-safe calls between fork and exec: the daemon is multi-threaded. */
static void child_exec(const agent_spec *sp, char **argv, char **envp, int in_fd, int out_fd,
                       int err_fd, int report_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL); /* undo inherited SIG_IGN */
    setpgid(0, 0);
    int e = 0;
    if (chdir(sp->work_dir) != 0 || dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 ||
        dup2(err_fd, 2) < 0) {
        e = errno;
    } else {
        /* Descriptors other threads opened without O_CLOEXEC must not leak into agents. */
        syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
        execve(sp->binary_path, argv, envp);
        e = errno;
    }
    ssize_t w = write(report_fd, &e, sizeof e);
    (void)w;
    _exit(127);
}

/* Forks and execs the agent; on success the agent is "starting". -1 with err otherwise (the
 * caller decides what the failure means). */
static int spawn(sup *s, agent *a, char *err, size_t errlen)
{
    agent_spec *sp = &a->spec;
    int rep[2] = {-1, -1}, devnull = -1;
    char **argv = NULL, **envp = NULL, *logdir = NULL;
    int rc = -1;

    for (int i = 0; i < 2; i++) capture_close(&a->cap[i]); /* a previous run's tail */
    if (!sp->binary_path || !*sp->binary_path || !sp->work_dir || !*sp->work_dir) {
        seterr(err, errlen, "binary_path and work_dir must be set");
        goto out;
    }
    if (mkdir_p(sp->work_dir, err, errlen) != 0) goto out;
    size_t ln = strlen(sp->work_dir) + 8;
    logdir = malloc(ln);
    if (!logdir) goto oom;
    snprintf(logdir, ln, "%s/logs", sp->work_dir);
    if (mkdir_p(logdir, err, errlen) != 0) goto out;
    if (open_capture(a, &a->cap[0], logdir, "out", err, errlen) != 0 ||
        open_capture(a, &a->cap[1], logdir, "err", err, errlen) != 0)
        goto out;

    size_t nargs = 0;
    for (char **p = sp->args; p && *p; p++) nargs++;
    argv = calloc(nargs + 2, sizeof *argv);
    envp = build_env(sp);
    if (!argv || !envp) goto oom;
    argv[0] = sp->binary_path;
    for (size_t i = 0; i < nargs; i++) argv[i + 1] = sp->args[i];

    if (pipe2(rep, O_CLOEXEC) != 0 ||
        (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        seterr(err, errlen, "pipe: %s", strerror(errno));
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        seterr(err, errlen, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) child_exec(sp, argv, envp, devnull, a->cap[0].file_fd, a->cap[1].file_fd, rep[1]);

    /* Both sides set the group so a signal sent right after fork already reaches it. */
    setpgid(pid, pid);
    close_fd(&rep[1]);
    int child_errno = 0;
    ssize_t r;
    do {
        r = read(rep[0], &child_errno, sizeof child_errno);
    } while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof child_errno) {
        /* exec failed: the child is exiting on its own; reap it here so no zombie stays */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        seterr(err, errlen, "exec %s: %s", sp->binary_path, strerror(child_errno));
        goto out;
    }
    a->pidfd = sys_pidfd_open(pid);
    if (a->pidfd < 0) {
        /* cannot watch it: do not leave it running unsupervised */
        kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        seterr(err, errlen, "pidfd_open: %s", strerror(errno));
        goto out;
    }
    a->pid = pid;
    a->pgid = pid;
    a->adopted = 0;
    if (pmon_start_ticks(pid, &a->start_ticks) != 0) a->start_ticks = 0;
    int64_t now = mono_ms();
    a->spawn_mono = now;
    a->start_time = wall_s();
    a->settle_at = now + s->opt.settle_ms;
    a->retry_at = 0;
    a->kill_sent = 0;
    a->mem_since = a->cpu_since = 0;
    a->http_fails = 0;
    http_reset(a);
    s->state_dirty = 1;
    set_state(s, a, ST_STARTING);
    log_info("agent.start", "agent=%s pid=%d restart_count=%d", sp->id, (int)pid, a->restart_count);
    rc = 0;
    goto out;
oom:
    seterr(err, errlen, "out of memory");
out:
    if (rc != 0) {
        for (int i = 0; i < 2; i++) capture_close(&a->cap[i]);
        char q[512];
        log_warn("agent.start_failed", "agent=%s error=%s", sp->id,
                 log_quote(q, sizeof q, err ? err : ""));
    }
    close_fd(&rep[0]);
    close_fd(&rep[1]);
    close_fd(&devnull);
    free(argv);
    free(envp);
    free(logdir);
    return rc;
}

static void begin_stop(sup *s, agent *a, const char *reason)
{
    if (a->state == ST_STOPPING) return;
    int64_t now = mono_ms();
    http_reset(a);
    set_state(s, a, ST_STOPPING);
    a->stop_began = now;
    a->kill_at = now + (a->spec.stop_grace_ms > 0 ? a->spec.stop_grace_ms : 0);
    a->kill_sent = 0;
    a->group_check_at = now;
    log_info("agent.stop", "agent=%s pid=%d reason=%s grace_ms=%" PRId64, a->spec.id, (int)a->pid,
             reason, a->spec.stop_grace_ms);
    signal_agent(a, SIGTERM);
}

static void start_or_fail(sup *s, agent *a, sup_cmd *c, int count_restart);
static void after_failure(sup *s, agent *a, int failure, const char *why);

static void install_spec(agent *a, agent_spec *sp)
{
    agent_spec_free(&a->spec);
    a->spec = *sp; /* moved: the caller frees only the container */
    memset(sp, 0, sizeof *sp);
    url_parse(a);
}

static void agent_destroy(agent *a)
{
    for (int i = 0; i < 2; i++) capture_close(&a->cap[i]);
    http_reset(a);
    close_fd(&a->pidfd);
    agent_spec_free(&a->spec);
    if (a->next_spec) {
        agent_spec_free(a->next_spec);
        free(a->next_spec);
    }
    free(a->url_path);
    free(a);
}

static void remove_agent(sup *s, agent *a)
{
    for (size_t i = 0; i < s->nagents; i++) {
        if (s->agents[i] == a) {
            memmove(&s->agents[i], &s->agents[i + 1], (s->nagents - i - 1) * sizeof *s->agents);
            s->nagents--;
            break;
        }
    }
    log_info("agent.removed", "agent=%s", a->spec.id);
    pmon_forget(s->pm, a->spec.id);
    complete_waiters(s, a, WAIT_STOPPED, SUP_OK, NULL);
    complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "agent removed from the configuration");
    agent_destroy(a);
    s->state_dirty = 1;
}

/* The process and its whole group are gone after a stop. */
static void finish_stop(sup *s, agent *a)
{
    for (int i = 0; i < 2; i++) capture_close(&a->cap[i]);
    a->pgid = 0;
    log_info("agent.stopped", "agent=%s", a->spec.id);
    if (a->removed) {
        remove_agent(s, a);
        return;
    }
    if (a->next_spec) {
        install_spec(a, a->next_spec);
        free(a->next_spec);
        a->next_spec = NULL;
    }
    complete_waiters(s, a, WAIT_STOPPED, SUP_OK, NULL);
    if (a->restart_after_stop && a->target_run) {
        a->restart_after_stop = 0;
        start_or_fail(s, a, NULL, 1);
    } else {
        a->restart_after_stop = 0;
        set_state(s, a, ST_STOPPED);
        complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "agent was stopped");
    }
}

/* The main process was reaped (or, adopted, vanished). */
static void handle_exit(sup *s, agent *a, int known, int code, int sig)
{
    int64_t now = mono_ms();
    close_fd(&a->pidfd);
    pid_t pid = a->pid;
    a->pid = 0;
    a->last_code = known ? code : -1;
    a->last_signal = known ? sig : 0;
    a->last_exit_time = wall_s();
    s->state_dirty = 1;
    http_reset(a);
    if (sig)
        log_info("agent.exit", "agent=%s pid=%d signal=%d", a->spec.id, (int)pid, sig);
    else if (known)
        log_info("agent.exit", "agent=%s pid=%d code=%d", a->spec.id, (int)pid, code);
    else
        log_info("agent.exit", "agent=%s pid=%d code=unknown adopted=1", a->spec.id, (int)pid);

    if (a->state == ST_STOPPING) {
        a->group_check_at = now; /* finish once the rest of the group is gone */
        return;
    }
    /* Unexpected: the leader is gone, so what is left of its group is killed at once; a
     * restart must never run beside the old instance's children. */
    if (a->pgid > 1) kill(-a->pgid, SIGKILL);
    a->pgid = 0;
    int settled = a->state == ST_RUNNING;
    int64_t stable = a->spec.restart.backoff_max_ms > s->opt.settle_ms
                         ? a->spec.restart.backoff_max_ms : s->opt.settle_ms;
    if (settled && now - a->spawn_mono >= stable) a->failures = 0;
    int failure = !settled || !known || code != 0 || sig != 0;
    char why[128];
    if (sig) snprintf(why, sizeof why, "agent exited on signal %d%s", sig,
                      settled ? "" : " before it settled");
    else if (known) snprintf(why, sizeof why, "agent exited with code %d%s", code,
                             settled ? "" : " before it settled");
    else snprintf(why, sizeof why, "agent exited");
    after_failure(s, a, failure, why);
}

/* Decides what follows an unexpected end (exit or failed exec): restart after backoff, stop, or
 * error. failure=0 only for a clean exit after settling. */
static void after_failure(sup *s, agent *a, int failure, const char *why)
{
    complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, why);
    if (failure) a->failures++;
    agent_restart_policy pol = a->spec.restart.policy;
    if (!a->target_run || pol == AGENT_RESTART_NEVER ||
        (pol == AGENT_RESTART_ON_FAILURE && !failure)) {
        set_state(s, a, failure ? ST_ERROR : ST_STOPPED);
        if (failure) log_warn("agent.error", "agent=%s failures=%d policy=%s", a->spec.id,
                              a->failures, agent_restart_policy_name(pol));
        return;
    }
    if (a->spec.restart.max_retries > 0 && a->failures >= a->spec.restart.max_retries) {
        set_state(s, a, ST_ERROR);
        log_warn("agent.error", "agent=%s failures=%d max_retries=%d", a->spec.id, a->failures,
                 a->spec.restart.max_retries);
        return;
    }
    int64_t base = a->spec.restart.backoff_base_ms > 0 ? a->spec.restart.backoff_base_ms : 0;
    int64_t max = a->spec.restart.backoff_max_ms > base ? a->spec.restart.backoff_max_ms : base;
    int64_t backoff = base;
    for (int i = 1; i < a->failures && backoff < max; i++) backoff *= 2;
    if (backoff > max) backoff = max;
    a->retry_at = mono_ms() + backoff;
    set_state(s, a, ST_STARTING);
    char q[200];
    log_info("agent.restart", "agent=%s reason=%s failures=%d backoff_ms=%" PRId64, a->spec.id,
             log_quote(q, sizeof q, why), a->failures, backoff);
}

/* Spawns now; a waiter c (optional) waits for "running". */
static void start_or_fail(sup *s, agent *a, sup_cmd *c, int count_restart)
{
    char err[256] = "";
    a->retry_at = 0;
    if (count_restart) a->restart_count++;
    if (spawn(s, a, err, sizeof err) == 0) {
        if (c) add_waiter(a, c, WAIT_RUNNING);
        return;
    }
    if (c) complete(s, c, SUP_FAILED, err);
    after_failure(s, a, 1, err);
}

static void health_restart(sup *s, agent *a, const char *reason, const char *detail)
{
    log_warn("agent.restart", "agent=%s reason=%s %s backoff_ms=0", a->spec.id, reason, detail);
    a->restart_after_stop = 1;
    begin_stop(s, a, reason);
}

/* ---------- re-adoption ---------------------------------------------------------------------- */

static int try_adopt(sup *s, agent *a, const state_entry *e)
{
    /* pidfd first, then the start-time check: if the ticks still match, the pidfd names the
     * process the state file meant, not a later holder of the same pid. */
    int fd = sys_pidfd_open(e->pid);
    if (fd < 0) return -1;
    pmon_proc p;
    if (pmon_read_proc(e->pid, &p) != 0 || p.start_ticks != e->start_ticks || p.state == 'Z') {
        close(fd);
        log_info("agent.adopt_rejected", "agent=%s pid=%d reason=start_time_mismatch",
                 a->spec.id, (int)e->pid);
        return -1;
    }
    a->pidfd = fd;
    a->pid = e->pid;
    a->pgid = getpgid(e->pid) == e->pid ? e->pid : 0;
    a->adopted = 1;
    if (a->spec.work_dir) {
        /* The agent still writes to these files; reopen them so rotation goes on. */
        char logdir[4200], e2[512];
        snprintf(logdir, sizeof logdir, "%s/logs", a->spec.work_dir);
        for (int k = 0; k < 2; k++) capture_close(&a->cap[k]);
        if (open_capture(a, &a->cap[0], logdir, "out", e2, sizeof e2) != 0 ||
            open_capture(a, &a->cap[1], logdir, "err", e2, sizeof e2) != 0)
            log_warn("agent.log_open_failed", "agent=%s error=\"%s\"", a->spec.id, e2);
    }
    a->start_ticks = e->start_ticks;
    a->start_time = e->start_time;
    a->restart_count = e->restart_count;
    a->spawn_mono = mono_ms();
    a->target_run = 1;
    set_state(s, a, ST_RUNNING);
    s->state_dirty = 1;
    log_info("agent.adopt", "agent=%s pid=%d", a->spec.id, (int)a->pid);
    if (e->fingerprint != spec_fingerprint(&a->spec)) {
        log_info("agent.restart", "agent=%s reason=spec_changed backoff_ms=0", a->spec.id);
        a->restart_after_stop = a->spec.enabled;
        a->target_run = a->spec.enabled;
        begin_stop(s, a, "spec_changed");
    } else if (!a->spec.enabled) {
        a->target_run = 0;
        begin_stop(s, a, "disabled");
    }
    return 0;
}

/* ---------- commands ------------------------------------------------------------------------- */

static void cmd_start(sup *s, agent *a, sup_cmd *c)
{
    a->target_run = 1;
    a->failures = 0;
    switch (a->state) {
    case ST_RUNNING:
        complete(s, c, SUP_OK, NULL);
        return;
    case ST_STOPPING:
        a->restart_after_stop = 1;
        add_waiter(a, c, WAIT_RUNNING);
        return;
    case ST_STARTING:
        if (a->pid > 0) {
            add_waiter(a, c, WAIT_RUNNING);
            return;
        }
        /* waiting out a backoff: a manual start skips it */
        start_or_fail(s, a, c, 0);
        return;
    case ST_STOPPED:
    case ST_ERROR:
        start_or_fail(s, a, c, 0);
        return;
    }
}

static void cmd_stop(sup *s, agent *a, sup_cmd *c)
{
    a->target_run = 0;
    a->restart_after_stop = 0;
    a->retry_at = 0;
    complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "agent was stopped");
    if (has_process(a)) {
        begin_stop(s, a, "operator");
        add_waiter(a, c, WAIT_STOPPED);
        return;
    }
    set_state(s, a, ST_STOPPED);
    complete(s, c, SUP_OK, NULL);
}

static void cmd_restart(sup *s, agent *a, sup_cmd *c)
{
    a->target_run = 1;
    a->failures = 0;
    if (has_process(a)) {
        if (a->state != ST_STOPPING)
            log_info("agent.restart", "agent=%s reason=operator backoff_ms=0", a->spec.id);
        a->restart_after_stop = 1;
        begin_stop(s, a, "restart");
        add_waiter(a, c, WAIT_RUNNING);
        return;
    }
    start_or_fail(s, a, c, 0);
}

static agent *agent_new(agent_spec *sp)
{
    agent *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->pidfd = a->http_fd = -1;
    for (int i = 0; i < 2; i++) a->cap[i].file_fd = -1;
    a->last_code = -1;
    a->state = ST_STOPPED;
    install_spec(a, sp);
    return a;
}

static void apply_changed(sup *s, agent *a, agent_spec *sp)
{
    log_info("agent.reload", "agent=%s change=spec enabled=%d", sp->id, sp->enabled);
    a->target_run = sp->enabled;
    a->failures = 0;
    a->retry_at = 0;
    if (has_process(a)) {
        if (a->next_spec) {
            agent_spec_free(a->next_spec);
            free(a->next_spec);
            a->next_spec = NULL;
        }
        agent_spec *ns = malloc(sizeof *ns);
        if (ns) {
            *ns = *sp;
            memset(sp, 0, sizeof *sp);
            a->next_spec = ns;
        } else {
            install_spec(a, sp); /* no memory for a pending copy: switch now */
        }
        a->restart_after_stop = a->target_run;
        if (a->target_run) complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "agent reconfigured");
        begin_stop(s, a, "reload");
        return;
    }
    install_spec(a, sp);
    if (a->target_run) start_or_fail(s, a, NULL, 0);
    else set_state(s, a, ST_STOPPED);
}

static agent *find_any(sup *s, const char *id)
{
    for (size_t i = 0; i < s->nagents; i++)
        if (strcmp(s->agents[i]->spec.id, id) == 0) return s->agents[i];
    return NULL;
}

static void cmd_set(sup *s, sup_cmd *c)
{
    agent **list = calloc(c->n + s->nagents + 1, sizeof *list);
    if (!list) {
        complete(s, c, SUP_FAILED, "out of memory");
        return;
    }
    size_t nl = 0;
    int lost = 0;
    for (size_t i = 0; i < c->n; i++) {
        agent_spec *sp = &c->specs[i];
        agent *a = find_any(s, sp->id);
        if (a && a->removed) {
            /* removed by an earlier reload and still stopping: it comes back changed */
            a->removed = 0;
            apply_changed(s, a, sp);
            list[nl++] = a;
            continue;
        }
        if (a) {
            if (agent_spec_equal(&a->spec, sp) && !a->next_spec) install_spec(a, sp);
            else apply_changed(s, a, sp);
            list[nl++] = a;
            continue;
        }
        a = agent_new(sp);
        if (!a) {
            log_error("agent.add_failed", "agent=%s reason=oom", sp->id);
            lost = 1;
            continue;
        }
        list[nl++] = a;
        log_info("agent.added", "agent=%s enabled=%d", a->spec.id, a->spec.enabled);
        int adopted = 0;
        for (size_t k = 0; !s->loaded && k < s->nentries; k++) {
            if (s->entries[k].id && strcmp(s->entries[k].id, a->spec.id) == 0) {
                adopted = try_adopt(s, a, &s->entries[k]) == 0;
                free(s->entries[k].id);
                s->entries[k].id = NULL;
                break;
            }
        }
        if (!adopted && a->spec.enabled) {
            a->target_run = 1;
            start_or_fail(s, a, NULL, 0);
        }
    }
    /* Agents that left the configuration stop, then disappear. */
    for (size_t i = 0; i < s->nagents; i++) {
        agent *a = s->agents[i];
        int kept = 0;
        for (size_t k = 0; k < nl && !kept; k++) kept = list[k] == a;
        if (kept) continue;
        list[nl++] = a;
        if (a->removed) continue;
        a->removed = 1;
        a->target_run = 0;
        a->restart_after_stop = 0;
        log_info("agent.reload", "agent=%s change=removed", a->spec.id);
        complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "agent removed from the configuration");
        if (has_process(a)) begin_stop(s, a, "removed");
    }
    free(s->agents);
    s->agents = list;
    s->nagents = nl;
    for (size_t i = 0; i < s->nagents;) {
        agent *a = s->agents[i];
        if (a->removed && !has_process(a)) remove_agent(s, a); /* shifts the array */
        else i++;
    }
    if (!s->loaded) {
        for (size_t k = 0; k < s->nentries; k++)
            if (s->entries[k].id)
                log_warn("agent.orphan", "agent=%s pid=%d reason=\"not in configuration; left "
                         "running\"", s->entries[k].id, (int)s->entries[k].pid);
        state_entries_free(s);
        s->loaded = 1;
    }
    s->state_dirty = 1;
    if (lost) complete(s, c, SUP_FAILED, "out of memory: some agents were not added");
    else complete(s, c, SUP_OK, NULL);
}

static void run_cmd(sup *s, sup_cmd *c)
{
    if (s->quit) {
        complete(s, c, SUP_FAILED, "supervisor is shutting down");
        return;
    }
    if (c->op == CMD_SET) {
        cmd_set(s, c);
        return;
    }
    agent *a = find_agent(s, c->id);
    if (!a) {
        complete(s, c, SUP_NOT_FOUND, "no such agent");
        return;
    }
    switch (c->op) {
    case CMD_START: cmd_start(s, a, c); break;
    case CMD_STOP: cmd_stop(s, a, c); break;
    case CMD_RESTART: cmd_restart(s, a, c); break;
    case CMD_SET: break;
    }
}

/* ---------- HTTP health check (non-blocking, on the loop) ------------------------------------ */

static void http_done(sup *s, agent *a, int ok, const char *why)
{
    http_reset(a);
    if (ok) {
        a->http_fails = 0;
        return;
    }
    a->http_fails++;
    log_warn("agent.health_failed", "agent=%s check=http failures=%d reason=%s", a->spec.id,
             a->http_fails, why);
    if (a->http_fails >= HTTP_FAILS_TO_RESTART && a->state == ST_RUNNING) {
        char d[64];
        snprintf(d, sizeof d, "failures=%d", a->http_fails);
        health_restart(s, a, "http", d);
    }
}

static int64_t health_interval(const agent *a)
{
    return a->spec.health.interval_ms > 0 ? a->spec.health.interval_ms : 30000;
}

static void http_begin(sup *s, agent *a, int64_t now)
{
    a->next_health = now + health_interval(a);
    a->http_fd = socket(a->url_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->http_fd < 0) {
        http_done(s, a, 0, "socket");
        return;
    }
    int64_t t = health_interval(a);
    a->http_deadline = now + (t < HTTP_TIMEOUT_MAX_MS ? t : HTTP_TIMEOUT_MAX_MS);
    a->http_len = 0;
    if (connect(a->http_fd, (struct sockaddr *)&a->url_addr, a->url_alen) != 0 &&
        errno != EINPROGRESS) {
        http_done(s, a, 0, "connect");
        return;
    }
    a->http_phase = HTTP_CONNECTING;
}

static void http_io(sup *s, agent *a, short rev)
{
    if (a->http_phase == HTTP_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(a->http_fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            http_done(s, a, 0, "connect");
            return;
        }
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: ops-daemon\r\n"
                         "Connection: close\r\n\r\n", a->url_path, a->url_hostport);
        /* a request this small fits any fresh socket buffer in one send */
        if (n <= 0 || n >= (int)sizeof req ||
            send(a->http_fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
            http_done(s, a, 0, "send");
            return;
        }
        a->http_phase = HTTP_READING;
        return;
    }
    (void)rev;
    ssize_t r = recv(a->http_fd, a->http_buf + a->http_len,
                     sizeof a->http_buf - 1 - a->http_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r > 0) a->http_len += (size_t)r;
    a->http_buf[a->http_len] = '\0';
    /* "HTTP/1.x NNN" is all we need */
    if (a->http_len >= 12 || r <= 0) {
        int code = 0;
        if (strncmp(a->http_buf, "HTTP/", 5) == 0) {
            const char *sp = strchr(a->http_buf, ' ');
            if (sp) code = atoi(sp + 1);
        }
        if (code >= 200 && code < 300) http_done(s, a, 1, NULL);
        else http_done(s, a, 0, code ? "status" : "bad_response");
    }
}

/* ---------- timers --------------------------------------------------------------------------- */

static void sample_all(sup *s)
{
    for (size_t i = 0; i < s->nagents; i++) {
        agent *a = s->agents[i];
        for (int k = 0; k < 2; k++) capture_check(a, &a->cap[k]);
        if (a->pid <= 0) continue;
        pmon_point pt;
        if (pmon_sample(s->pm, a->spec.id, a->pid, &pt) != 0) continue;
        if (a->state != ST_RUNNING) continue;
        int64_t now = mono_ms(), dur = a->spec.health.threshold_duration_ms;
        uint64_t mth = a->spec.health.memory_threshold;
        double cth = a->spec.health.cpu_threshold;
        if (mth && pt.rss > mth) {
            if (!a->mem_since) a->mem_since = now;
        } else {
            a->mem_since = 0;
        }
        if (cth > 0 && pt.cpu > cth) {
            if (!a->cpu_since) a->cpu_since = now;
        } else {
            a->cpu_since = 0;
        }
        char d[128];
        if (a->mem_since && now - a->mem_since >= dur) {
            snprintf(d, sizeof d, "rss=%" PRIu64 " threshold=%" PRIu64, pt.rss, mth);
            health_restart(s, a, "memory", d);
        } else if (a->cpu_since && now - a->cpu_since >= dur) {
            snprintf(d, sizeof d, "cpu=%.1f threshold=%.1f", pt.cpu, cth);
            health_restart(s, a, "cpu", d);
        }
    }
}

static void tick_agent(sup *s, agent *a, int64_t now)
{
    switch (a->state) {
    case ST_STARTING:
        if (a->pid > 0 && now >= a->settle_at) {
            set_state(s, a, ST_RUNNING);
            a->next_health = now + health_interval(a);
            log_info("agent.running", "agent=%s pid=%d", a->spec.id, (int)a->pid);
            complete_waiters(s, a, WAIT_RUNNING, SUP_OK, NULL);
        } else if (a->pid <= 0 && a->retry_at && now >= a->retry_at) {
            start_or_fail(s, a, NULL, 1);
        }
        break;
    case ST_RUNNING:
        if (a->spec.health.heartbeat_timeout_ms > 0) {
            int64_t ref = a->last_hb_mono > a->spawn_mono ? a->last_hb_mono : a->spawn_mono;
            if (now - ref > a->spec.health.heartbeat_timeout_ms) {
                char d[64];
                snprintf(d, sizeof d, "silent_ms=%" PRId64, now - ref);
                health_restart(s, a, "heartbeat", d);
                break;
            }
        }
        if (a->http_phase != HTTP_IDLE && now >= a->http_deadline) http_done(s, a, 0, "timeout");
        else if (a->url_ok && a->http_phase == HTTP_IDLE && now >= a->next_health)
            http_begin(s, a, now);
        break;
    case ST_STOPPING:
        if (!a->kill_sent && now >= a->kill_at) {
            a->kill_sent = 1;
            log_warn("agent.kill", "agent=%s pid=%d reason=grace_expired", a->spec.id, (int)a->pid);
            signal_agent(a, SIGKILL);
        }
        if (a->pid <= 0 && now >= a->group_check_at) {
            if (a->pgid <= 1 || !pmon_group_alive(a->pgid) ||
                (a->kill_sent && now >= a->kill_at + GROUP_GIVE_UP_MS))
                finish_stop(s, a);
            else /* each check scans /proc: look often at first, then calmly */
                a->group_check_at = now + (now - a->stop_began < 1000 ? GROUP_POLL_MS : 250);
        }
        break;
    default:
        break;
    }
}

static int64_t agent_deadline(const agent *a)
{
    int64_t d = INT64_MAX;
#define AT(x) do { if ((x) < d) d = (x); } while (0)
    switch (a->state) {
    case ST_STARTING:
        if (a->pid > 0) AT(a->settle_at);
        else if (a->retry_at) AT(a->retry_at);
        break;
    case ST_RUNNING:
        if (a->spec.health.heartbeat_timeout_ms > 0) {
            int64_t ref = a->last_hb_mono > a->spawn_mono ? a->last_hb_mono : a->spawn_mono;
            AT(ref + a->spec.health.heartbeat_timeout_ms + 1);
        }
        if (a->http_phase != HTTP_IDLE) AT(a->http_deadline);
        else if (a->url_ok) AT(a->next_health);
        break;
    case ST_STOPPING:
        if (!a->kill_sent) AT(a->kill_at);
        if (a->pid <= 0) AT(a->group_check_at);
        break;
    default:
        break;
    }
#undef AT
    return d;
}

/* ---------- the loop ------------------------------------------------------------------------- */

enum { K_EVENT, K_PID, K_HTTP };

static void reap(sup *s, agent *a)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    /* waitid on the pidfd cannot pick up anybody else's status. An adopted process is usually
     * not our child (ECHILD): its status is lost and its exit counts as a crash. */
    int r = waitid((idtype_t)P_PIDFD, (id_t)a->pidfd, &si, WEXITED | WNOHANG);
    if (r == 0 && si.si_pid == 0) return; /* not exited yet (spurious wakeup) */
    if (r == 0 && si.si_code == CLD_EXITED) handle_exit(s, a, 1, si.si_status, 0);
    else if (r == 0) handle_exit(s, a, 1, 0, si.si_status);
    else handle_exit(s, a, 0, 0, 0);
}

static void emit_events(sup *s)
{
    change_event *ev = s->events;
    s->events = s->events_tail = NULL;
    if (!ev) return;
    pthread_mutex_unlock(&s->mu);
    while (ev) {
        change_event *nx = ev->next;
        s->opt.on_change(s->opt.user, ev->id, ev->status);
        free(ev->id);
        free(ev);
        ev = nx;
    }
    pthread_mutex_lock(&s->mu);
}

static void stop_everything(sup *s)
{
    for (size_t i = 0; i < s->nagents; i++) {
        agent *a = s->agents[i];
        a->target_run = 0;
        a->restart_after_stop = 0;
        a->retry_at = 0;
        complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "supervisor is shutting down");
        if (has_process(a)) begin_stop(s, a, "shutdown");
        else set_state(s, a, ST_STOPPED);
    }
}

static int any_process(const sup *s)
{
    for (size_t i = 0; i < s->nagents; i++)
        if (has_process(s->agents[i])) return 1;
    return 0;
}

static void *sup_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "supervisor");
    sup *s = arg;
    struct pollfd *pfd = NULL;
    agent **owner = NULL;
    int *kind = NULL;
    size_t cap = 0;
    int stopping_all = 0;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->queue) {
            sup_cmd *c = s->queue;
            s->queue = c->next;
            if (!s->queue) s->queue_tail = NULL;
            c->next = NULL;
            run_cmd(s, c);
        }
        if (s->quit == 2 && !stopping_all) {
            stopping_all = 1;
            stop_everything(s);
        }
        int64_t now = mono_ms();
        if (now >= s->next_sample) {
            sample_all(s);
            s->next_sample = now + s->opt.resource_interval_ms;
        }
        /* tick_agent may remove the agent it is given: walk a copy-safe way */
        for (size_t i = 0; i < s->nagents;) {
            agent *a = s->agents[i];
            size_t before = s->nagents;
            tick_agent(s, a, now);
            if (s->nagents == before) i++;
        }
        if (s->state_dirty && !(s->quit == 1)) {
            s->state_dirty = 0;
            state_write(s);
        }
        if (s->quit == 1 || (s->quit == 2 && !any_process(s))) break;

        size_t need = 1 + s->nagents * 4;
        if (need > cap) {
            struct pollfd *np = realloc(pfd, need * sizeof *np);
            if (np) pfd = np;
            agent **no = realloc(owner, need * sizeof *no);
            if (no) owner = no;
            int *nk = realloc(kind, need * sizeof *nk);
            if (nk) kind = nk;
            if (!np || !no || !nk) {
                /* cannot watch everything this round: retry shortly */
                log_error("sup.oom", "where=poll_set");
                pthread_mutex_unlock(&s->mu);
                usleep(100000);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            cap = need;
        }
        size_t np = 0;
        pfd[np] = (struct pollfd){.fd = s->evfd, .events = POLLIN};
        owner[np] = NULL;
        kind[np++] = K_EVENT;
        int64_t deadline = s->next_sample;
        for (size_t i = 0; i < s->nagents; i++) {
            agent *a = s->agents[i];
            int64_t d = agent_deadline(a);
            if (d < deadline) deadline = d;
            if (a->pid > 0 && a->pidfd >= 0) {
                pfd[np] = (struct pollfd){.fd = a->pidfd, .events = POLLIN};
                owner[np] = a;
                kind[np++] = K_PID;
            }
            if (a->http_phase != HTTP_IDLE) {
                pfd[np] = (struct pollfd){.fd = a->http_fd,
                                          .events = a->http_phase == HTTP_CONNECTING ? POLLOUT
                                                                                     : POLLIN};
                owner[np] = a;
                kind[np++] = K_HTTP;
            }
        }
        int64_t wait = deadline - mono_ms();
        if (wait < 0) wait = 0;
        if (wait > 1000) wait = 1000;

        emit_events(s);
        if (s->queue) continue; /* arrived while the callbacks ran */
        pthread_mutex_unlock(&s->mu);
        int n = poll(pfd, np, (int)wait);
        pthread_mutex_lock(&s->mu);
        if (n <= 0) continue;
        for (size_t i = 0; i < np; i++) {
            if (!pfd[i].revents) continue;
            agent *a = owner[i];
            switch (kind[i]) {
            case K_EVENT: {
                uint64_t v;
                ssize_t r = read(s->evfd, &v, sizeof v);
                (void)r;
                break;
            }
            case K_PID:
                if (a->pidfd == pfd[i].fd && a->pid > 0) reap(s, a);
                break;
            case K_HTTP:
                if (a->http_fd == pfd[i].fd && a->http_phase != HTTP_IDLE)
                    http_io(s, a, pfd[i].revents);
                break;
            }
        }
    }
    /* Leaving: with quit == 1 the agents keep running and the next daemon re-adopts them. */
    state_write(s);
    emit_events(s);
    pthread_mutex_unlock(&s->mu);
    free(pfd);
    free(owner);
    free(kind);
    return NULL;
}

/* ---------- public API ----------------------------------------------------------------------- */

sup *sup_new(const sup_options *opt, char *err, size_t errlen)
{
    int probe = sys_pidfd_open(getpid());
    if (probe < 0) {
        seterr(err, errlen, "pidfd_open unsupported (Linux >= 5.3 needed): %s", strerror(errno));
        return NULL;
    }
    close(probe);
    sup *s = calloc(1, sizeof *s);
    if (!s) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    if (opt) s->opt = *opt;
    if (s->opt.settle_ms <= 0) s->opt.settle_ms = 1000;
    if (s->opt.resource_interval_ms <= 0) s->opt.resource_interval_ms = 10000;
    s->evfd = -1;
    if (opt && opt->state_dir && *opt->state_dir) {
        if (mkdir_p(opt->state_dir, err, errlen) != 0) goto fail;
        if (!(s->state_dir = strdup(opt->state_dir))) goto oom;
    }
    s->opt.state_dir = s->state_dir;
    s->pm = pmon_new(s->opt.resource_interval_ms, err, errlen);
    if (!s->pm) goto fail;
    s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->evfd < 0) {
        seterr(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (s->state_dir) state_load(s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->next_sample = mono_ms() + s->opt.resource_interval_ms;
    int rc = pthread_create(&s->thread, NULL, sup_thread, s);
    if (rc != 0) {
        seterr(err, errlen, "pthread_create: %s", strerror(rc));
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        goto fail;
    }
    return s;
oom:
    seterr(err, errlen, "out of memory");
fail:
    state_entries_free(s);
    if (s->evfd >= 0) close(s->evfd);
    pmon_free(s->pm);
    free(s->state_dir);
    free(s);
    return NULL;
}

static void wake(sup *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->evfd, &one, sizeof one);
    (void)r; /* EAGAIN means a wakeup is already pending */
}

void sup_free(sup *s, int stop_agents)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    s->quit = stop_agents ? 2 : 1;
    wake(s);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);

    pthread_mutex_lock(&s->mu);
    for (sup_cmd *c = s->queue; c; c = c->next)
        complete(s, c, SUP_FAILED, "supervisor is shutting down");
    s->queue = NULL;
    for (size_t i = 0; i < s->nagents; i++) {
        agent *a = s->agents[i];
        complete_waiters(s, a, WAIT_RUNNING, SUP_FAILED, "supervisor is shutting down");
        complete_waiters(s, a, WAIT_STOPPED, SUP_FAILED, "supervisor is shutting down");
        agent_destroy(a);
    }
    free(s->agents);
    for (change_event *ev = s->events, *nx; ev; ev = nx) {
        nx = ev->next;
        free(ev->id);
        free(ev);
    }
    /* Callers whose commands were just failed are still returning from their wait. */
    while (s->inflight) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    state_entries_free(s);
    pmon_free(s->pm);
    close(s->evfd);
    free(s->state_dir);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static sup_result submit(sup *s, sup_cmd *c)
{
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        seterr(c->err, c->errlen, "supervisor is shutting down");
        return SUP_FAILED;
    }
    if (s->queue_tail) s->queue_tail->next = c;
    else s->queue = c;
    s->queue_tail = c;
    s->inflight++;
    wake(s);
    while (!c->done) pthread_cond_wait(&s->cv, &s->mu);
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return c->res;
}

static sup_result op(sup *s, cmd_op o, const char *id, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!id || !*id) {
        seterr(err, errlen, "no such agent");
        return SUP_NOT_FOUND;
    }
    sup_cmd c = {.op = o, .id = id, .err = err, .errlen = errlen};
    return submit(s, &c);
}

sup_result sup_start(sup *s, const char *id, char *err, size_t errlen)
{
    return op(s, CMD_START, id, err, errlen);
}

sup_result sup_stop(sup *s, const char *id, char *err, size_t errlen)
{
    return op(s, CMD_STOP, id, err, errlen);
}

sup_result sup_restart(sup *s, const char *id, char *err, size_t errlen)
{
    return op(s, CMD_RESTART, id, err, errlen);
}

int sup_set_agents(sup *s, const agent_spec *specs, size_t n, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!specs[i].id || !*specs[i].id || strchr(specs[i].id, '\n') ||
            strchr(specs[i].id, '/')) {
            seterr(err, errlen, "agent %zu: id must be non-empty, without '/' or newline", i);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(specs[i].id, specs[j].id) == 0) {
                seterr(err, errlen, "duplicate agent id %s", specs[i].id);
                return -1;
            }
    }
    agent_spec *copies = calloc(n + 1, sizeof *copies);
    if (!copies) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (agent_spec_copy(&copies[i], &specs[i]) != 0) {
            for (size_t j = 0; j < i; j++) agent_spec_free(&copies[j]);
            free(copies);
            seterr(err, errlen, "out of memory");
            return -1;
        }
    }
    sup_cmd c = {.op = CMD_SET, .specs = copies, .n = n, .err = err, .errlen = errlen};
    sup_result r = submit(s, &c);
    /* applied specs were moved out (zeroed); freeing the rest is a no-op for them */
    for (size_t i = 0; i < n; i++) agent_spec_free(&copies[i]);
    free(copies);
    return r == SUP_OK ? 0 : -1;
}

static int info_fill(const agent *a, sup_agent_info *o)
{
    memset(o, 0, sizeof *o);
    o->id = strdup(a->spec.id);
    o->type = strdup(a->spec.type ? a->spec.type : "");
    o->name = strdup(a->spec.name ? a->spec.name : "");
    o->version = strdup(a->spec.version ? a->spec.version : "");
    o->status = state_names[a->state];
    o->enabled = a->spec.enabled;
    o->pid = a->pid;
    o->start_time = a->start_time;
    o->restart_count = a->restart_count;
    o->failures = a->failures;
    o->last_heartbeat = a->last_hb;
    o->last_exit_code = a->last_code;
    o->last_exit_signal = a->last_signal;
    o->last_exit_time = a->last_exit_time;
    o->adopted = a->adopted;
    if (!o->id || !o->type || !o->name || !o->version) {
        sup_agent_info_clear(o);
        return -1;
    }
    return 0;
}

void sup_agent_info_clear(sup_agent_info *info)
{
    if (!info) return;
    free(info->id);
    free(info->type);
    free(info->name);
    free(info->version);
    memset(info, 0, sizeof *info);
}

void sup_list_free(sup_agent_info *list, size_t n)
{
    if (!list) return;
    for (size_t i = 0; i < n; i++) sup_agent_info_clear(&list[i]);
    free(list);
}

int sup_list(sup *s, sup_agent_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    size_t k = 0;
    for (size_t i = 0; i < s->nagents; i++) k += !s->agents[i]->removed;
    sup_agent_info *l = calloc(k + 1, sizeof *l);
    int rc = l ? 0 : -1;
    size_t j = 0;
    for (size_t i = 0; rc == 0 && i < s->nagents; i++) {
        if (s->agents[i]->removed) continue;
        if (info_fill(s->agents[i], &l[j]) != 0) rc = -1;
        else j++;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        sup_list_free(l, j);
        return -1;
    }
    *out = l;
    *n = j;
    return 0;
}

sup_result sup_get(sup *s, const char *id, sup_agent_info *out)
{
    memset(out, 0, sizeof *out);
    if (!id) return SUP_NOT_FOUND;
    pthread_mutex_lock(&s->mu);
    agent *a = find_agent(s, id);
    sup_result r = !a ? SUP_NOT_FOUND : info_fill(a, out) == 0 ? SUP_OK : SUP_FAILED;
    pthread_mutex_unlock(&s->mu);
    return r;
}

int sup_record_heartbeat(sup *s, const char *id, int64_t ts_s)
{
    if (!id) return -1;
    pthread_mutex_lock(&s->mu);
    agent *a = find_agent(s, id);
    if (a) {
        a->last_hb = ts_s > 0 ? ts_s : wall_s();
        a->last_hb_mono = mono_ms();
    }
    pthread_mutex_unlock(&s->mu);
    return a ? 0 : -1;
}

sup_result sup_agent_metrics(sup *s, const char *id, int64_t duration_s, pmon_point **out,
                             size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!id) return SUP_NOT_FOUND;
    pthread_mutex_lock(&s->mu);
    int found = find_agent(s, id) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (!found) return SUP_NOT_FOUND;
    return pmon_query(s->pm, id, duration_s, out, n) == 0 ? SUP_OK : SUP_FAILED;
}
