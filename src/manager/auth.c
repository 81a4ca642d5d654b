/* auth: bearer tokens checked against SHA-256 hashes with OpenSSL. */
#include "manager/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rpc/status.h"

#define HASH_LEN 32

typedef struct entry {
    char name[128];
    auth_role role;
    unsigned char hash[HASH_LEN];
} entry;

struct auth {
    entry *e;
    size_t n;
};

const char *auth_role_name(auth_role r)
{
    switch (r) {
    case AUTH_VIEWER: return "viewer";
    case AUTH_OPERATOR: return "operator";
    case AUTH_ADMIN: return "admin";
    }
    return "none";
}

int auth_parse_role(const char *s, auth_role *out)
{
    static const auth_role all[] = {AUTH_VIEWER, AUTH_OPERATOR, AUTH_ADMIN};
    for (size_t i = 0; s && i < 3; i++) {
        if (strcmp(s, auth_role_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_hash(const char *hex, unsigned char out[HASH_LEN])
{
    if (!hex || strlen(hex) != 2 * HASH_LEN) return -1;
    for (int i = 0; i < HASH_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

auth *auth_new(const auth_token *t, size_t n, char *err, size_t errlen)
{
    auth *a = calloc(1, sizeof *a);
    if (!a || (n && !(a->e = calloc(n, sizeof *a->e)))) {
        free(a);
        snprintf(err, errlen, "auth: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = t[i].name ? t[i].name : "";
        if (!*name || strlen(name) >= sizeof a->e[i].name) {
            snprintf(err, errlen, "token %zu: name must be 1 to %zu characters", i,
                     sizeof a->e[i].name - 1);
            goto fail;
        }
        if (t[i].role < AUTH_VIEWER || t[i].role > AUTH_ADMIN) {
            snprintf(err, errlen, "token %s: unknown role", name);
            goto fail;
        }
        if (parse_hash(t[i].sha256, a->e[i].hash) < 0) {
            snprintf(err, errlen, "token %s: sha256 must be 64 hex characters", name);
            goto fail;
        }
        snprintf(a->e[i].name, sizeof a->e[i].name, "%s", name);
        a->e[i].role = t[i].role;
        a->n++;
    }
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(auth *a)
{
    if (!a) return;
    if (a->e) OPENSSL_cleanse(a->e, a->n * sizeof *a->e);
    free(a->e);
    free(a);
}

size_t auth_count(const auth *a) { return a ? a->n : 0; }

int auth_check(const auth *a, const char *h, auth_role need, auth_identity *who, char *msg,
               size_t msglen)
{
    memset(who, 0, sizeof *who);
    if (!a || !a->n) {
        snprintf(msg, msglen, "no admin tokens are configured on this manager (admin.tokens in manager.yaml)");
        return RPC_UNAUTHENTICATED;
    }
    if (!h || !*h) {
        snprintf(msg, msglen, "missing authorization: Bearer token");
        return RPC_UNAUTHENTICATED;
    }
    /* RFC 6750: the scheme is case-insensitive, then one space, then the token. */
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        snprintf(msg, msglen, "missing authorization: Bearer token (the header does not start with 'Bearer ')");
        return RPC_UNAUTHENTICATED;
    }
    const char *tok = h + 7;
    while (*tok == ' ') tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t')) len--;
    if (!len || memchr(tok, ' ', len)) {
        snprintf(msg, msglen, "missing authorization: Bearer token (malformed token)");
        return RPC_UNAUTHENTICATED;
    }
    unsigned char hash[HASH_LEN];
    unsigned int hl = 0;
    if (!EVP_Digest(tok, len, hash, &hl, EVP_sha256(), NULL) || hl != HASH_LEN) {
        snprintf(msg, msglen, "cannot hash the token");
        return RPC_INTERNAL;
    }
    /* Every entry is compared, and the match is selected with a mask, not a branch. */
    size_t match = 0;
    size_t found = 0;
    for (size_t i = 0; i < a->n; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(hash, a->e[i].hash, HASH_LEN) == 0);
        size_t mask = (size_t)0 - eq;
        match = (match & ~mask) | (i & mask);
        found |= eq;
    }
    OPENSSL_cleanse(hash, sizeof hash);
    if (!found) {
        snprintf(msg, msglen, "unknown token");
        return RPC_UNAUTHENTICATED;
    }
    const entry *e = &a->e[match];
    snprintf(who->name, sizeof who->name, "%s", e->name);
    who->role = e->role;
    if (e->role < need) {
        snprintf(msg, msglen, "this call needs role %s; token '%s' has role %s", auth_role_name(need),
                 e->name, auth_role_name(e->role));
        return RPC_PERMISSION_DENIED;
    }
    msg[0] = 0;
    return RPC_OK;
}
