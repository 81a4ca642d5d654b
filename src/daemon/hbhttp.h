/* hbhttp: the local HTTP endpoint agents post their heartbeats to (POST /heartbeat, JSON),
 * plus GET /heartbeat/stats. Requests are checked here; what a heartbeat means is decided by
 * the callback (normally the supervisor's: known agent? record last_heartbeat).
 *
 * Owns: the libmicrohttpd daemon (one internal polling thread), its listening socket, the
 * per-request body buffers and the request counters. The callback runs on that internal
 * thread, so whatever it touches must be safe to use from there. */
#ifndef OPS_DAEMON_HBHTTP_H
#define OPS_DAEMON_HBHTTP_H

#include <stddef.h>
#include <stdint.h>

/* Largest accepted request body; bigger ones get 413. */
#define HBHTTP_MAX_BODY (64 * 1024)

/* Callback results besides 0 (accepted -> 200 {"status":"ok"}); anything else -> 500. */
#define HB_UNKNOWN_AGENT 1   /* -> 404 {"error":"unknown agent: <id>"} */

/* Which optional fields the request carried (absent ones are 0 / NULL in hb_report). */
enum { HB_HAS_PID = 1, HB_HAS_STATUS = 2, HB_HAS_CPU = 4, HB_HAS_MEMORY = 8, HB_HAS_TIMESTAMP = 16 };

typedef struct hb_report {
    const char *agent_id;   /* non-empty; valid during the callback only, like status */
    int pid;
    const char *status;
    double cpu;             /* as the agent reports them; not interpreted here */
    double memory;
    int64_t timestamp;
    unsigned fields;        /* HB_HAS_* */
} hb_report;

typedef int (*hbhttp_handler)(void *user, const hb_report *r);

typedef struct hbhttp_options {
    const char *host;       /* address or name to listen on, e.g. "127.0.0.1", "::1" */
    int port;               /* 0 = any free port; see hbhttp_port() */
    hbhttp_handler on_heartbeat;
    void *user;
} hbhttp_options;

typedef struct hbhttp_stats {
    uint64_t received;      /* POST /heartbeat requests */
    uint64_t processed;     /* ...accepted by the callback */
    uint64_t errors;        /* ...answered with an error (400, 404, 413, 500) */
} hbhttp_stats;

typedef struct hbhttp hbhttp;

/* Starts listening. Returns 0 with *out set, or -1 with err (e.g. the address is in use). */
int hbhttp_start(const hbhttp_options *opts, hbhttp **out, char *err, size_t errlen);
/* The port actually bound (useful when opts->port was 0). */
int hbhttp_port(const hbhttp *h);
void hbhttp_get_stats(const hbhttp *h, hbhttp_stats *out);
/* Stops the thread (in-flight requests finish first) and frees h. NULL is fine. */
void hbhttp_stop(hbhttp *h);

#endif
