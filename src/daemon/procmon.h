/* procmon: what /proc says about an agent's process, and the resource history of each agent.
 *
 * The supervisor samples each agent's MAIN pid once per resource interval (children the agent
 * forks are not summed in: their cost shows on the main pid only when they are threads) and
 * feeds the sample here; RPC threads read the history with pmon_query() at the same time.
 *
 * Owns: one ring of points per agent id (sized for an hour at the configured interval, capped
 * at PMON_MAX_POINTS, so intervals under 500 ms keep less than an hour) and the previous CPU
 * reading each ring needs to turn tick counters into a percentage. A mutex makes every
 * function safe to call from any thread. */
#ifndef OPS_DAEMON_PROCMON_H
#define OPS_DAEMON_PROCMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PMON_MAX_POINTS 7201

typedef struct pmon_point {
    int64_t time_ms;      /* unix time in milliseconds (the wire's timestamp is time_ms / 1000) */
    double cpu;           /* percent of one core since the previous point (or since the
                           * process started, for the first point of a process) */
    uint64_t rss;         /* bytes */
    uint64_t vms;         /* bytes */
    uint64_t read_bytes;  /* cumulative storage I/O from /proc/PID/io; 0 when unreadable */
    uint64_t write_bytes;
    int32_t open_files;   /* entries in /proc/PID/fd; 0 when unreadable */
} pmon_point;

/* One reading of /proc for a pid. */
typedef struct pmon_proc {
    char state;            /* R, S, D, Z, ... (field 3 of stat) */
    pid_t ppid;            /* field 4 */
    pid_t pgrp;            /* field 5 */
    uint64_t cpu_ticks;    /* utime + stime, clock ticks */
    uint64_t start_ticks;  /* field 22: start time after boot in clock ticks; with the pid it
                            * names a process uniquely, so a reused pid is told apart */
    uint64_t rss, vms;     /* bytes */
    uint64_t read_bytes, write_bytes;
    int32_t open_files;
} pmon_proc;

typedef struct pmon pmon;

/* interval_ms is the sampling period, used only to size each ring. NULL on allocation failure
 * (err says so). */
pmon *pmon_new(int64_t interval_ms, char *err, size_t errlen);
void pmon_free(pmon *pm);

/* Reads stat, statm, io and fd of pid. Returns 0, or -1 when the process is gone (or its stat
 * unreadable); io and fd count fall back to 0 when only they are unreadable. */
int pmon_read_proc(pid_t pid, pmon_proc *out);
/* Field 22 of /proc/PID/stat only. Returns 0, or -1 when there is no such process. */
int pmon_start_ticks(pid_t pid, uint64_t *out);
/* 1 when some process in group pgid is still alive (zombies waiting for a parent that never
 * reaps them do not count), 0 when none is. */
int pmon_group_alive(pid_t pgid);

/* Reads pid and appends a point to agent_id's ring (created on first use). *out (optional)
 * receives the point. Returns 0, -1 when the process could not be read (nothing appended) or
 * memory ran out. */
int pmon_sample(pmon *pm, const char *agent_id, pid_t pid, pmon_point *out);
/* Appends a point measured elsewhere (pmon_sample is pmon_read_proc + this). 0 or -1 (memory). */
int pmon_record(pmon *pm, const char *agent_id, const pmon_point *pt);
/* Drops agent_id's history (agent removed from the configuration). */
void pmon_forget(pmon *pm, const char *agent_id);
/* Copies the points of the last duration_s seconds (<= 0 means 3600), oldest first, into a new
 * array *out the caller frees (NULL when *n is 0). An agent never sampled has no points.
 * Returns 0, or -1 on allocation failure. */
int pmon_query(pmon *pm, const char *agent_id, int64_t duration_s, pmon_point **out, size_t *n);

#endif
