/* agent: what the daemon knows about one agent from its configuration (the effective settings,
 * after agent_defaults are merged under the agent's own). Shared by the config loader, which
 * fills it, and the supervisor, which runs it. Plain data: owned by whoever holds the array
 * (the daemon config), freed with agent_spec_free(). Durations are milliseconds. */
#ifndef OPS_DAEMON_AGENT_H
#define OPS_DAEMON_AGENT_H

#include <stddef.h>
#include <stdint.h>

typedef enum { AGENT_RESTART_ALWAYS, AGENT_RESTART_ON_FAILURE, AGENT_RESTART_NEVER } agent_restart_policy;

typedef struct agent_health {
    int64_t interval_ms;          /* how often health is checked; default 30 s */
    int64_t heartbeat_timeout_ms; /* 0 turns heartbeat checking off */
    double cpu_threshold;         /* percent of one core; 0 = off */
    uint64_t memory_threshold;    /* bytes of RSS; 0 = off */
    int64_t threshold_duration_ms;/* how long above a threshold before a restart */
    char *http_endpoint;          /* URL polled each interval; NULL = off */
} agent_health;

typedef struct agent_restart {
    agent_restart_policy policy;  /* default on-failure */
    int max_retries;              /* consecutive failures before error; default 5; 0 = unlimited */
    int64_t backoff_base_ms;      /* default 1 s */
    int64_t backoff_max_ms;       /* default 60 s */
} agent_restart;

typedef struct agent_spec {
    char *id;
    char *type;
    char *name;
    char *version;        /* reported in AgentInfo.version; "" when unknown */
    char *binary_path;    /* absolute */
    char **args;          /* argv[1..], NULL-terminated */
    char **env;           /* "KEY=VALUE", NULL-terminated; added to the daemon's environment */
    char *config_file;    /* may be NULL */
    char *work_dir;       /* default {daemon.work_dir}/agents/{id} */
    int enabled;
    int64_t stop_grace_ms;     /* SIGTERM -> SIGKILL; default 30 s */
    uint64_t log_max_bytes;    /* rotate stdout/stderr capture at this size; default 10 MiB */
    int log_keep;              /* rotated files kept; default 3 */
    agent_health health;
    agent_restart restart;
} agent_spec;

/* Frees every string and array inside spec (not spec itself). */
void agent_spec_free(agent_spec *spec);
/* Deep copy into *dst. Returns 0, or -1 on allocation failure (dst then holds nothing). */
int agent_spec_copy(agent_spec *dst, const agent_spec *src);
/* 1 when the two would run the same process the same way (used by SIGHUP reload to decide
 * whether a changed agent must restart). */
int agent_spec_equal(const agent_spec *a, const agent_spec *b);
const char *agent_restart_policy_name(agent_restart_policy p);

#endif
