/* updater: the daemon's side of pushed events. Keeps one manager.ManagerService/SubscribeUpdates
 * stream open all the time (re-subscribing with full-jitter backoff), applies each event, and
 * reports its outcome with ReportEventResult until the manager acknowledges it:
 *   config_change  write the agent's config_file atomically (previous kept as .prev), restart,
 *                  and roll back (old file, restart) if it does not stay running;
 *   version_update fetch, verify SHA-256 and the Ed25519 signature (verify.h), then install:
 *                  an agent's binary_path is replaced atomically (binary_path.v<version> kept,
 *                  the last keep_versions of them; the replaced one kept as .prev) and restarted,
 *                  rolled back if it does not stay running; the daemon's own binary is replaced
 *                  and the daemon re-executed (on_self_update), agents staying up;
 *   command        start | stop | restart through the supervisor, as OperateAgent does.
 * DaemonService.PushUpdate uses the same install path (updr_install).
 *
 * Delivery: {work_dir}/updates/last_event_id names the last event applied (written atomically
 * after each one; the stream resumes after it), and results/<id> holds each outcome until the
 * manager acknowledged it, so results of events applied while the manager was away, or before
 * a restart, are sent later. An event is applied at most once unless the daemon dies between
 * applying it and recording it (then once more after the restart).
 *
 * Owns: its manager channel, two threads (stream, reporter), the state files, a copy of the
 * agents' paths (refreshed by updr_config_changed), the public key. Borrows the supervisor. */
#ifndef OPS_DAEMON_UPDATER_H
#define OPS_DAEMON_UPDATER_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/dconfig.h"
#include "daemon/supervisor.h"

typedef struct updr updr;

typedef enum { UPDR_APPLIED, UPDR_ROLLED_BACK, UPDR_REFUSED, UPDR_FAILED } updr_outcome;

typedef struct updr_opts {
    const dconfig *cfg;     /* read at start and by updr_config_changed; not kept */
    const char *node_id;
    sup *sup;
    int no_stream;          /* 1: no subscription (updates.enabled false); PushUpdate still works */
    /* Called on the updater thread once a new daemon binary is in place at exe_path and its
     * result recorded: the daemon should stop (leaving its agents running) and exec exe_path.
     * NULL: daemon updates are refused. */
    void (*on_self_update)(void *user, const char *exe_path);
    void *user;
} updr_opts;

/* "applied", "rolled_back", "refused", "failed" (ReportEventResult.outcome). */
const char *updr_outcome_name(updr_outcome o);

updr *updr_start(const updr_opts *o, char *err, size_t errlen);
/* A reloaded configuration: new agent paths, key and settings. */
void updr_config_changed(updr *u, const dconfig *cfg);
/* The last event applied (0 = none). */
uint64_t updr_last_event_id(updr *u);
/* Verify and install one package (component "agent" with agent_id, or "daemon"); what a
 * version_update event does. msg gets the reason. Serialised with the stream's events. */
updr_outcome updr_install(updr *u, const char *component, const char *agent_id, const char *version,
                          const char *url, const uint8_t *data, size_t len, const char *hash_hex,
                          const uint8_t *sig, size_t siglen, char *msg, size_t msglen);
/* Stops both threads (an event being applied finishes first). NULL is ignored. */
void updr_stop(updr *u);

#endif
