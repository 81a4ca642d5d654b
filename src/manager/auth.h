/* auth: who is calling AdminService, and may they. Callers present `authorization: Bearer
 * <token>`; manager.yaml lists each token's SHA-256 (never the token itself) with a name and a
 * role. The presented token is hashed and compared in constant time against every entry, with
 * no early exit, so neither the timing nor the position of a match tells anything.
 *
 * Roles are ordered: viewer (reads) < operator (also operates agents) < admin (everything).
 *
 * Owns: its copy of the token table. Immutable after auth_new(), so thread-safe. */
#ifndef OPS_MANAGER_AUTH_H
#define OPS_MANAGER_AUTH_H

#include <stddef.h>

typedef enum { AUTH_VIEWER = 1, AUTH_OPERATOR = 2, AUTH_ADMIN = 3 } auth_role;

typedef struct auth auth;

typedef struct auth_token {
    const char *name;   /* shown in audit records */
    auth_role role;
    const char *sha256; /* 64 hex characters, either case */
} auth_token;

/* The caller, as found by auth_check(). */
typedef struct auth_identity {
    char name[128]; /* the token's name; "" when not authenticated */
    auth_role role; /* 0 when not authenticated */
} auth_identity;

/* "viewer", "operator", "admin" ("none" for anything else). */
const char *auth_role_name(auth_role r);
/* 0 with *out, or -1 for an unknown word. */
int auth_parse_role(const char *s, auth_role *out);

/* Copies the table (n may be 0: then every check fails UNAUTHENTICATED). NULL with err naming
 * the entry on a bad hash or role, or when out of memory. */
auth *auth_new(const auth_token *tokens, size_t n, char *err, size_t errlen);
void auth_free(auth *a);
size_t auth_count(const auth *a);

/* Checks the value of the authorization header (NULL when absent) against need. Returns
 * RPC_OK with *who filled, RPC_UNAUTHENTICATED (missing, malformed or unknown token) or
 * RPC_PERMISSION_DENIED (known token, weaker role: *who is filled), with msg saying which. */
int auth_check(const auth *a, const char *authorization, auth_role need, auth_identity *who,
               char *msg, size_t msglen);

#endif
