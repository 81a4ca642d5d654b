/* nodeauth: certificate identities against node ids, and node secrets against their stored
 * hashes (through a small cache: a heartbeat must not cost a database read). */
#include "manager/nodeauth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"

#define NBUCKETS 4096
#define CACHE_MAX 200000

typedef struct cached {
    struct cached *next;
    char *node_id;
    char sha256[65]; /* "" = the store has no secret for it */
    int64_t fetched_ms;
} cached;

typedef struct allow_entry {
    char *identity;
    char **node_ids;
    size_t n;
} allow_entry;

struct nodeauth {
    nodeauth_mode mode;
    store *st;
    abuse *ab;
    int64_t cache_ms;
    allow_entry *allow;
    size_t n_allow;
    pthread_mutex_t mu;
    cached *b[NBUCKETS];
    size_t n_cached;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int nodeauth_parse_mode(const char *s, nodeauth_mode *out)
{
    if (!s) return -1;
    if (!strcmp(s, "none")) *out = NODEAUTH_NONE;
    else if (!strcmp(s, "mtls")) *out = NODEAUTH_MTLS;
    else if (!strcmp(s, "token")) *out = NODEAUTH_TOKEN;
    else return -1;
    return 0;
}

const char *nodeauth_mode_name(nodeauth_mode m)
{
    return m == NODEAUTH_MTLS ? "mtls" : m == NODEAUTH_TOKEN ? "token" : "none";
}

int nodeauth_sha256_hex(const char *s, char *out)
{
    unsigned char h[32];
    unsigned int hl = 0;
    out[0] = 0;
    if (!EVP_Digest(s, strlen(s), h, &hl, EVP_sha256(), NULL) || hl != 32) return -1;
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
    OPENSSL_cleanse(h, sizeof h);
    return 0;
}

int nodeauth_random_token(const char *prefix, char *out, size_t n)
{
    size_t pl = strlen(prefix);
    unsigned char r[32];
    if (n < pl + 65 || RAND_bytes(r, sizeof r) != 1) return -1;
    memcpy(out, prefix, pl);
    for (int i = 0; i < 32; i++) snprintf(out + pl + 2 * i, 3, "%02x", r[i]);
    OPENSSL_cleanse(r, sizeof r);
    return 0;
}

static void free_allow(nodeauth *na)
{
    for (size_t i = 0; i < na->n_allow; i++) {
        free(na->allow[i].identity);
        for (size_t k = 0; k < na->allow[i].n; k++) free(na->allow[i].node_ids[k]);
        free(na->allow[i].node_ids);
    }
    free(na->allow);
}

nodeauth *nodeauth_new(const nodeauth_opts *o, char *err, size_t errlen)
{
    if (o->mode == NODEAUTH_TOKEN && !o->store) {
        snprintf(err, errlen, "node_auth token mode needs the store");
        return NULL;
    }
    nodeauth *na = calloc(1, sizeof *na);
    if (!na) goto oom;
    na->mode = o->mode;
    na->st = o->store;
    na->ab = o->abuse;
    na->cache_ms = o->cache_ms > 0 ? o->cache_ms : 30000;
    pthread_mutex_init(&na->mu, NULL);
    if (o->n_allow && !(na->allow = calloc(o->n_allow, sizeof *na->allow))) goto oom;
    for (size_t i = 0; i < o->n_allow; i++) {
        allow_entry *e = &na->allow[na->n_allow++];
        if (!(e->identity = strdup(o->allow[i].identity ? o->allow[i].identity : ""))) goto oom;
        if (!(e->node_ids = calloc(o->allow[i].n_node_ids + 1, sizeof *e->node_ids))) goto oom;
        for (size_t k = 0; k < o->allow[i].n_node_ids; k++, e->n++)
            if (!(e->node_ids[k] = strdup(o->allow[i].node_ids[k]))) goto oom;
    }
    return na;
oom:
    snprintf(err, errlen, "out of memory");
    nodeauth_free(na);
    return NULL;
}

static void cache_clear(nodeauth *na)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        for (cached *c = na->b[i], *next; c; c = next) {
            next = c->next;
            free(c->node_id);
            OPENSSL_cleanse(c->sha256, sizeof c->sha256);
            free(c);
        }
        na->b[i] = NULL;
    }
    na->n_cached = 0;
}

void nodeauth_free(nodeauth *na)
{
    if (!na) return;
    cache_clear(na);
    free_allow(na);
    pthread_mutex_destroy(&na->mu);
    free(na);
}

nodeauth_mode nodeauth_get_mode(const nodeauth *na) { return na ? na->mode : NODEAUTH_NONE; }

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Sets the status on c and logs the refusal (once per peer per interval). */
__attribute__((format(printf, 4, 5)))
static int refuse(nodeauth *na, rpc_ctx *c, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t held = 0;
    rpc_ctx_quiet_log(c);
    if (!na->ab || abuse_note(na->ab, rpc_ctx_peer(c), "node_auth", mono_ms(), &held)) {
        char q[700];
        log_warn("node.auth_refused", "method=%s peer=%s code=%s held=%llu reason=%s trace_id=%s", rpc_ctx_method(c),
                 rpc_ctx_peer(c), rpc_code_name(code), (unsigned long long)held, log_quote(q, sizeof q, msg),
                 rpc_ctx_trace_id(c));
    }
    return rpc_ctx_errorf(c, code, "%s", msg);
}

static int check_identity(nodeauth *na, rpc_ctx *c, const char *node_id)
{
    const char *id = rpc_ctx_peer_identity(c);
    if (!id || !*id)
        return refuse(na, c, RPC_UNAUTHENTICATED, "a client certificate is required (node_auth.mode is mtls)");
    if (!strcmp(id, node_id)) return RPC_OK;
    for (size_t i = 0; i < na->n_allow; i++) {
        if (strcmp(na->allow[i].identity, id) != 0) continue;
        for (size_t k = 0; k < na->allow[i].n; k++)
            if (!strcmp(na->allow[i].node_ids[k], node_id)) return RPC_OK;
    }
    return refuse(na, c, RPC_PERMISSION_DENIED, "certificate identity '%.128s' may not speak for node '%.128s'", id, node_id);
}

/* The presented bearer token, or NULL. */
static const char *bearer(rpc_ctx *c)
{
    const char *h = rpc_ctx_metadata(c, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ') h++;
    return *h ? h : NULL;
}

/* The stored hash of node_id's secret into out ("" when it has none): from the cache when
 * fresh, else from the store (refresh = 1 always reads the store). 0, or -1 on a store error. */
static int secret_hash(nodeauth *na, const char *node_id, int refresh, char *out)
{
    int64_t now = mono_ms();
    size_t h = hash_str(node_id) % NBUCKETS;
    pthread_mutex_lock(&na->mu);
    cached *e = na->b[h];
    while (e && strcmp(e->node_id, node_id) != 0) e = e->next;
    if (e && !refresh && now - e->fetched_ms < na->cache_ms) {
        memcpy(out, e->sha256, 65);
        pthread_mutex_unlock(&na->mu);
        return 0;
    }
    pthread_mutex_unlock(&na->mu);
    char err[256];
    int rc = store_get_node_secret(na->st, node_id, out, err, sizeof err);
    if (rc == STORE_ERROR) {
        log_error("node.auth_store_failed", "node=%s error=\"%s\"", node_id, err);
        return -1;
    }
    if (rc == STORE_NOT_FOUND) out[0] = 0;
    pthread_mutex_lock(&na->mu);
    for (e = na->b[h]; e && strcmp(e->node_id, node_id) != 0;) e = e->next;
    if (!e) {
        /* Unknown ids are cached too (a flood of them must not reach the store); the whole
         * cache goes when it grows past its bound. */
        if (na->n_cached >= CACHE_MAX) cache_clear(na);
        e = calloc(1, sizeof *e);
        if (e && !(e->node_id = strdup(node_id))) { free(e); e = NULL; }
        if (e) {
            e->next = na->b[h];
            na->b[h] = e;
            na->n_cached++;
        }
    }
    if (e) {
        memcpy(e->sha256, out, 65);
        e->fetched_ms = now;
    }
    pthread_mutex_unlock(&na->mu);
    return 0;
}

static int check_secret(nodeauth *na, rpc_ctx *c, const char *node_id, int refresh)
{
    const char *tok = bearer(c);
    if (!tok)
        return refuse(na, c, RPC_UNAUTHENTICATED,
                      "node '%.128s': missing authorization: Bearer <node secret> (node_auth.mode is token)", node_id);
    char want[65], got[65];
    if (secret_hash(na, node_id, refresh, want) != 0) return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "cannot read node secrets");
    if (nodeauth_sha256_hex(tok, got) != 0) return rpc_ctx_errorf(c, RPC_INTERNAL, "cannot hash the secret");
    /* compared even when there is no secret, so that timing says nothing about which */
    int same = CRYPTO_memcmp(want[0] ? want : "0000000000000000000000000000000000000000000000000000000000000000", got, 64) == 0;
    OPENSSL_cleanse(got, sizeof got);
    if (!want[0]) return refuse(na, c, RPC_UNAUTHENTICATED, "node '%.128s' has not enrolled (register with an enrollment token)", node_id);
    if (!same) return refuse(na, c, RPC_UNAUTHENTICATED, "the secret presented is not node '%.128s''s", node_id);
    return RPC_OK;
}

int nodeauth_check(nodeauth *na, rpc_ctx *c, const char *node_id)
{
    if (!na || na->mode == NODEAUTH_NONE) return RPC_OK;
    if (na->mode == NODEAUTH_MTLS) return check_identity(na, c, node_id);
    return check_secret(na, c, node_id, 0);
}

static const char *use_word(store_enroll_use u)
{
    switch (u) {
    case STORE_ENROLL_REVOKED: return "was revoked";
    case STORE_ENROLL_EXPIRED: return "has expired";
    case STORE_ENROLL_USED_UP: return "has no uses left";
    default: return "is not known";
    }
}

int nodeauth_register(nodeauth *na, rpc_ctx *c, const char *node_id, const char **new_secret)
{
    *new_secret = NULL;
    if (!na || na->mode == NODEAUTH_NONE) return RPC_OK;
    if (na->mode == NODEAUTH_MTLS) return check_identity(na, c, node_id);
    const char *tok = bearer(c);
    if (!tok)
        return refuse(na, c, RPC_UNAUTHENTICATED,
                      "node '%.128s': RegisterNode needs authorization: Bearer <enrollment token or node secret>", node_id);
    if (!strncmp(tok, NODEAUTH_SECRET_PREFIX, strlen(NODEAUTH_SECRET_PREFIX))) return check_secret(na, c, node_id, 1);
    char h[65], name[128], err[256];
    if (nodeauth_sha256_hex(tok, h) != 0) return rpc_ctx_errorf(c, RPC_INTERNAL, "cannot hash the token");
    store_enroll_use use;
    if (store_use_enroll_token(na->st, h, (int64_t)time(NULL), &use, name, sizeof name, err, sizeof err) != 0) {
        log_error("node.auth_store_failed", "node=%s error=\"%s\"", node_id, err);
        return rpc_ctx_errorf(c, RPC_UNAVAILABLE, "cannot check the enrollment token: %s", err);
    }
    if (use != STORE_ENROLL_OK) {
        if (use == STORE_ENROLL_UNKNOWN) return refuse(na, c, RPC_UNAUTHENTICATED, "node '%.128s': the enrollment token is not known", node_id);
        return refuse(na, c, RPC_UNAUTHENTICATED, "node '%.128s': enrollment token '%s' %s", node_id, name, use_word(use));
    }
    char secret[128];
    if (nodeauth_random_token(NODEAUTH_SECRET_PREFIX, secret, sizeof secret) != 0)
        return rpc_ctx_errorf(c, RPC_INTERNAL, "cannot make a node secret");
    *new_secret = rpc_ctx_strdup(c, secret);
    OPENSSL_cleanse(secret, sizeof secret);
    log_info("node.enrolled", "node=%s token=%s peer=%s trace_id=%s", node_id, name, rpc_ctx_peer(c), rpc_ctx_trace_id(c));
    return RPC_OK;
}

int nodeauth_commit(nodeauth *na, const char *node_id, const char *secret, char *err, size_t errlen)
{
    char h[65];
    if (nodeauth_sha256_hex(secret, h) != 0) {
        snprintf(err, errlen, "cannot hash the secret");
        return -1;
    }
    if (store_set_node_secret(na->st, node_id, h, (int64_t)time(NULL), err, errlen) != 0) return -1;
    size_t b = hash_str(node_id) % NBUCKETS;
    pthread_mutex_lock(&na->mu);
    for (cached *e = na->b[b]; e; e = e->next)
        if (!strcmp(e->node_id, node_id)) {
            memcpy(e->sha256, h, 65);
            e->fetched_ms = mono_ms();
        }
    pthread_mutex_unlock(&na->mu);
    return 0;
}
