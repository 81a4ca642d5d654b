/* nodesecret: the daemon's credentials for node_auth token mode -- the enrollment token it
 * registers with the first time (manager.enrollment_token or the first line of
 * manager.enrollment_token_file), and the per-node secret the manager answers with, kept in
 * manager.secret_file (mode 0600, written atomically: a temp file, fsync, rename, fsync of the
 * directory) and sent as `authorization: Bearer <secret>` on every later call.
 *
 * Owns nothing: plain functions over files and caller buffers. */
#ifndef OPS_DAEMON_NODESECRET_H
#define OPS_DAEMON_NODESECRET_H

#include <stddef.h>

#include "daemon/dconfig.h"

/* 1 with the secret in out, 0 when there is no file, -1 with err (unreadable, empty, too
 * long, or readable by others than the owner: then it is not used). */
int nodesecret_load(const char *path, char *out, size_t n, char *err, size_t errlen);
/* Writes secret to path with mode 0600. 0, or -1 with err. */
int nodesecret_save(const char *path, const char *secret, char *err, size_t errlen);
/* Removes a refused secret (a missing file is fine). 0 or -1 with err. */
int nodesecret_forget(const char *path, char *err, size_t errlen);
/* The enrollment token from m: 1 with it in out, 0 when none is configured, -1 with err. */
int nodesecret_enrollment_token(const dconfig_manager *m, char *out, size_t n, char *err, size_t errlen);

#endif
