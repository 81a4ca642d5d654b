/* admin_enroll: AdminService's enrollment-token methods (node_auth.mode token) --
 * CreateEnrollmentToken, ListEnrollmentTokens, RevokeEnrollmentToken. Admin role only; every
 * attempt of Create and Revoke, refused ones included, leaves an audit record. A token is
 * made here from 32 random bytes, its plaintext returned once and only its SHA-256 stored.
 *
 * Owns: its method table. Borrows the store and auth, which must outlive it. */
#ifndef OPS_MANAGER_ADMIN_ENROLL_H
#define OPS_MANAGER_ADMIN_ENROLL_H

#include <stddef.h>

#include "manager/auth.h"
#include "manager/store.h"
#include "rpc/server.h"

typedef struct admin_enroll admin_enroll;

#define ENROLL_TTL_DEFAULT_S (24 * 3600)
#define ENROLL_TTL_MAX_S (365LL * 24 * 3600)
#define ENROLL_USES_MAX 100000
#define ENROLL_NAME_MAX 64

admin_enroll *admin_enroll_new(store *st, const auth *tokens, char *err, size_t errlen);
void admin_enroll_free(admin_enroll *e);
/* "/ops.admin.v1.AdminService/<Method>" rows to serve beside admin_methods(); they live as
 * long as e. */
const rpc_method *admin_enroll_methods(admin_enroll *e, size_t *n);
/* "active", "revoked", "expired" or "used" at now. */
const char *admin_enroll_state(const store_enroll_token *t, int64_t now);

#endif
