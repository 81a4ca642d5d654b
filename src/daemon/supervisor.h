/* supervisor: runs the configured agents as child processes and keeps them in the state the
 * configuration and the operator ask for: start, stop (SIGTERM to the agent's process group,
 * SIGKILL after stop_grace_ms), restart on crash with exponential backoff, "error" after
 * max_retries consecutive failures, health-driven restarts (RSS / CPU thresholds, HTTP
 * endpoint, heartbeat timeout), stdout/stderr capture into rotated files, and re-adoption of
 * agents left running by a previous daemon (state file).
 *
 * Owns: one thread with a poll loop (pidfds, the children's pipes, HTTP health sockets, an
 * eventfd for commands, timers), every agent's process state, a copy of every agent_spec, the
 * log capture files, {state_dir}/agents.state, and the procmon history (sampled on the same
 * loop). Children are watched through pidfds (pidfd_open, Linux >= 5.3) and reaped with
 * waitid(P_PIDFD): no signal handling and no SIGCHLD masking is needed, so sup_new may be
 * called at any time, from any thread. Nothing else in the process may waitpid(-1) or set
 * SIGCHLD to SIG_IGN (either steals the exit status: the exit then counts as a crash).
 *
 * Every sup_* function is thread-safe. sup_start/sup_stop/sup_restart block until the
 * operation is done (a graceful stop can take stop_grace_ms): call them off any thread pool
 * whose latency matters.
 *
 * Terms: a "failure" is an exit before the settle time, an exec failure, or an exit with a
 * non-zero code or a signal. The consecutive-failure count resets when an agent has stayed up
 * for max(settle, backoff_max_ms), and on a manual start/restart. restart_count counts every
 * process started after the first one of a start (crash, health, manual and reload restarts).
 * The error state is entered when the count reaches max_retries (0 = never). */
#ifndef OPS_DAEMON_SUPERVISOR_H
#define OPS_DAEMON_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/agent.h"
#include "daemon/procmon.h"

typedef enum { SUP_OK = 0, SUP_NOT_FOUND, SUP_FAILED } sup_result;

/* Wire status strings (AgentInfo.status). */
#define SUP_STATUS_STOPPED "stopped"
#define SUP_STATUS_STARTING "starting"
#define SUP_STATUS_RUNNING "running"
#define SUP_STATUS_STOPPING "stopping"
#define SUP_STATUS_ERROR "error"

typedef struct sup_options {
    const char *state_dir;          /* agents.state lives here; NULL = no persistence */
    int64_t settle_ms;              /* up this long -> "running"; <= 0 means 1000 */
    int64_t resource_interval_ms;   /* procmon sampling; <= 0 means 10000 */
    /* Called on the supervisor thread, with no lock held, after every status change. It may
     * call sup_list/sup_get/sup_agent_metrics but never the blocking start/stop/restart,
     * sup_set_agents or sup_free (they wait for this very thread). */
    void (*on_change)(void *user, const char *agent_id, const char *status);
    void *user;
} sup_options;

typedef struct sup_agent_info {
    char *id, *type, *name, *version;
    const char *status;      /* one of the SUP_STATUS_* strings (static) */
    int enabled;
    int pid;                 /* 0 when no process */
    int64_t start_time;      /* unix s of the current (or last) process start; 0 never */
    int restart_count;
    int failures;            /* consecutive failures */
    int64_t last_heartbeat;  /* unix s; 0 none */
    int last_exit_code;      /* -1 none or unknown (adopted process) */
    int last_exit_signal;    /* 0 none */
    int64_t last_exit_time;  /* unix s; 0 none */
    int adopted;             /* 1 when the process was started by an earlier daemon */
} sup_agent_info;

typedef struct sup sup;

/* Starts the supervisor thread and reads {state_dir}/agents.state if there is one (used by
 * the first sup_set_agents). NULL with err on failure (no pidfd support, thread, memory). */
sup *sup_new(const sup_options *opt, char *err, size_t errlen);
/* stop_agents = 1 stops every agent (waits for their grace); 0 leaves them running and writes
 * the state file so the next supervisor re-adopts them. Pending start/stop/restart calls
 * return SUP_FAILED. NULL is ignored. */
void sup_free(sup *s, int stop_agents);

/* Installs the configuration (the specs are copied). First call: each enabled agent is
 * re-adopted when the state file names a live process of it with the same process start
 * time and spec, else started. Later calls (reload): added agents start if enabled, removed
 * ones are stopped then forgotten, changed ones (agent_spec_equal false) restart with the new
 * spec (or stop when no longer enabled), unchanged ones are untouched except that their
 * health/restart/grace/log settings are updated in place. Returns once the change is applied
 * (processes may still be starting/stopping). 0, or -1 with err: a bad id (empty, '/' or
 * newline, duplicate) changes nothing; out of memory may leave some new agents out. */
int sup_set_agents(sup *s, const agent_spec *specs, size_t n, char *err, size_t errlen);

/* Block until done. start: -> running (a no-op on a running agent; clears the failure count
 * and skips any backoff). stop: -> stopped (a no-op on a stopped agent; an agent in error
 * becomes stopped). restart: stop then start. SUP_FAILED with err when the process could
 * not be started, exited before it settled, or the operation was overtaken (another stop,
 * agent removed, supervisor shutting down). */
sup_result sup_start(sup *s, const char *id, char *err, size_t errlen);
sup_result sup_stop(sup *s, const char *id, char *err, size_t errlen);
sup_result sup_restart(sup *s, const char *id, char *err, size_t errlen);

/* Snapshot of every agent in configuration order; free with sup_list_free. 0 or -1 (memory). */
int sup_list(sup *s, sup_agent_info **out, size_t *n);
void sup_list_free(sup_agent_info *list, size_t n);
/* One agent; free the strings with sup_agent_info_clear. SUP_NOT_FOUND / SUP_FAILED (memory). */
sup_result sup_get(sup *s, const char *id, sup_agent_info *out);
void sup_agent_info_clear(sup_agent_info *info);

/* Records a heartbeat from agent id at unix time ts_s (<= 0: now). The timeout check uses the
 * moment of this call, not ts_s, so an agent's clock cannot fool it. 0, or -1 unknown agent. */
int sup_record_heartbeat(sup *s, const char *id, int64_t ts_s);

/* Resource history of agent id over the last duration_s (<= 0: 3600), oldest first; *out is
 * the caller's to free (NULL when *n is 0). SUP_NOT_FOUND for an unknown agent. */
sup_result sup_agent_metrics(sup *s, const char *id, int64_t duration_s, pmon_point **out,
                             size_t *n);

#endif
