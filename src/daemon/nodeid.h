/* nodeid: the daemon's stable identity towards the manager. The configured daemon.id wins;
 * otherwise the id lives in {work_dir}/node_id, generated once (a random UUID) and kept, so a
 * host stays the same node across restarts and upgrades.
 *
 * Owns: the node_id file in work_dir (written once, atomically). Nothing in memory. */
#ifndef OPS_DAEMON_NODEID_H
#define OPS_DAEMON_NODEID_H

#include <stddef.h>

/* Longest id accepted from the config or the file. */
#define NODEID_MAX 128

/* Resolves the id into out (outlen >= NODEID_MAX + 1 always suffices): configured_id when
 * non-empty, else the trimmed contents of {work_dir}/node_id, else a new UUID written there
 * (work_dir created if missing; an empty file is treated as missing). Returns 0, or -1 with
 * err set (unreadable or invalid file, cannot create or write, out too small). An id holds
 * no whitespace or control characters. */
int nodeid_resolve(const char *configured_id, const char *work_dir, char *out, size_t outlen,
                   char *err, size_t errlen);

#endif
