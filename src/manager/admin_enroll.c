/* admin_enroll: the three enrollment-token methods; the same guard and audit rules as admin.c. */
#include "manager/admin_enroll.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.pb-c.h"
#include "base/log.h"
#include "manager/nodeauth.h"

#define SVC "/ops.admin.v1.AdminService/"
#define N_METHODS 3

struct admin_enroll {
    store *st;
    const auth *auth;
    rpc_method methods[N_METHODS];
};

typedef struct outcome {
    int code;
    char msg[512];
} outcome;

/* Authenticates (admin role); a refusal is logged and set on o. */
static int guard(admin_enroll *e, rpc_ctx *c, auth_identity *who, outcome *o)
{
    o->code = auth_check(e->auth, rpc_ctx_metadata(c, "authorization"), AUTH_ADMIN, who, o->msg, sizeof o->msg);
    if (o->code != RPC_OK) {
        char q[700];
        log_warn("admin.refused", "method=%s actor=%s code=%s peer=%s trace_id=%s reason=%s", rpc_ctx_method(c),
                 who->name[0] ? who->name : "-", rpc_code_name(o->code), rpc_ctx_peer(c), rpc_ctx_trace_id(c),
                 log_quote(q, sizeof q, o->msg));
    }
    return o->code;
}

static void audit(admin_enroll *e, rpc_ctx *c, const auth_identity *who, const char *method, const char *target,
                  const outcome *o)
{
    store_audit_in r = {.at = (int64_t)time(NULL), .actor = who->name, .role = who->role ? auth_role_name(who->role) : "",
                        .method = method, .target = target, .result = rpc_code_name(o->code), .detail = o->msg,
                        .peer = rpc_ctx_peer(c)};
    char err[512];
    if (store_add_audit(e->st, &r, err, sizeof err) != 0)
        log_error("admin.audit_failed", "method=%s target=%s error=\"%s\" trace_id=%s", method, target, err, rpc_ctx_trace_id(c));
}

static int finish(rpc_ctx *c, const outcome *o)
{
    return o->code == RPC_OK ? RPC_OK : rpc_ctx_errorf(c, o->code, "%s", o->msg);
}

static int name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
              ch == '-'))
            return 0;
    }
    return n > 0 && n <= ENROLL_NAME_MAX;
}

const char *admin_enroll_state(const store_enroll_token *t, int64_t now)
{
    if (t->revoked_at) return "revoked";
    if (t->expires_at <= now) return "expired";
    if (t->uses >= t->max_uses) return "used";
    return "active";
}

static Ops__Admin__V1__EnrollmentToken *to_pb(rpc_ctx *c, const store_enroll_token *t, int64_t now)
{
    Ops__Admin__V1__EnrollmentToken *p = rpc_ctx_alloc(c, sizeof *p);
    ops__admin__v1__enrollment_token__init(p);
    p->name = rpc_ctx_strdup(c, t->name);
    p->created_at = t->created_at;
    p->expires_at = t->expires_at;
    p->max_uses = t->max_uses;
    p->uses = t->uses;
    p->revoked_at = t->revoked_at;
    p->state = rpc_ctx_strdup(c, admin_enroll_state(t, now));
    return p;
}

static int do_create(admin_enroll *e, rpc_ctx *c, const Ops__Admin__V1__CreateEnrollmentTokenRequest *req,
                     Ops__Admin__V1__CreateEnrollmentTokenResponse *resp, outcome *o)
{
    if (!name_ok(req->name)) {
        snprintf(o->msg, sizeof o->msg, "name must be 1 to %d characters of A-Z a-z 0-9 . _ -", ENROLL_NAME_MAX);
        return o->code = RPC_INVALID_ARGUMENT;
    }
    if (req->ttl_seconds < 0 || req->ttl_seconds > ENROLL_TTL_MAX_S) {
        snprintf(o->msg, sizeof o->msg, "ttl_seconds must be from 0 (24 h) to %lld (365 days)", (long long)ENROLL_TTL_MAX_S);
        return o->code = RPC_INVALID_ARGUMENT;
    }
    if (req->max_uses < 0 || req->max_uses > ENROLL_USES_MAX) {
        snprintf(o->msg, sizeof o->msg, "max_uses must be from 0 (1) to %d", ENROLL_USES_MAX);
        return o->code = RPC_INVALID_ARGUMENT;
    }
    char tok[128], h[65], err[512];
    if (nodeauth_random_token(NODEAUTH_ENROLL_PREFIX, tok, sizeof tok) != 0 || nodeauth_sha256_hex(tok, h) != 0) {
        snprintf(o->msg, sizeof o->msg, "cannot make a token");
        return o->code = RPC_INTERNAL;
    }
    int64_t now = (int64_t)time(NULL);
    store_enroll_token t = {.name = req->name, .created_at = now,
                            .expires_at = now + (req->ttl_seconds ? req->ttl_seconds : ENROLL_TTL_DEFAULT_S),
                            .max_uses = req->max_uses ? req->max_uses : 1};
    int rc = store_add_enroll_token(e->st, t.name, h, t.created_at, t.expires_at, t.max_uses, err, sizeof err);
    if (rc == STORE_EXISTS) {
        snprintf(o->msg, sizeof o->msg, "an enrollment token named '%s' exists (revoked ones too: pick another name)", req->name);
        return o->code = RPC_ALREADY_EXISTS;
    }
    if (rc != 0) {
        snprintf(o->msg, sizeof o->msg, "%s", err);
        return o->code = RPC_INTERNAL;
    }
    resp->token = to_pb(c, &t, now);
    resp->secret = rpc_ctx_strdup(c, tok);
    OPENSSL_cleanse(tok, sizeof tok);
    snprintf(o->msg, sizeof o->msg, "expires_at=%lld max_uses=%d", (long long)t.expires_at, (int)t.max_uses);
    log_info("enroll.token_created", "name=%s expires_at=%lld max_uses=%d trace_id=%s", t.name, (long long)t.expires_at,
             (int)t.max_uses, rpc_ctx_trace_id(c));
    return o->code = RPC_OK;
}

static int create(rpc_ctx *c, const void *reqv, void *resp, void *user)
{
    admin_enroll *e = user;
    const Ops__Admin__V1__CreateEnrollmentTokenRequest *req = reqv;
    auth_identity who;
    outcome o = {0};
    if (guard(e, c, &who, &o) == RPC_OK) do_create(e, c, req, resp, &o);
    audit(e, c, &who, "CreateEnrollmentToken", req->name, &o);
    return finish(c, &o);
}

static int list(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    (void)reqv;
    admin_enroll *e = user;
    Ops__Admin__V1__ListEnrollmentTokensResponse *resp = respv;
    auth_identity who;
    outcome o = {0};
    if (guard(e, c, &who, &o) != RPC_OK) return finish(c, &o);
    store_enroll_token_list l;
    char err[512];
    if (store_list_enroll_tokens(e->st, &l, err, sizeof err) != 0) return rpc_ctx_errorf(c, RPC_INTERNAL, "%s", err);
    int64_t now = (int64_t)time(NULL);
    resp->tokens = rpc_ctx_alloc(c, (l.n ? l.n : 1) * sizeof *resp->tokens);
    for (size_t i = 0; i < l.n; i++) resp->tokens[i] = to_pb(c, &l.items[i], now);
    resp->n_tokens = l.n;
    store_enroll_token_list_free(&l);
    return RPC_OK;
}

static int revoke(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    admin_enroll *e = user;
    const Ops__Admin__V1__RevokeEnrollmentTokenRequest *req = reqv;
    Ops__Admin__V1__RevokeEnrollmentTokenResponse *resp = respv;
    auth_identity who;
    outcome o = {0};
    if (guard(e, c, &who, &o) == RPC_OK) {
        int found = 0;
        char err[512];
        if (!req->name[0]) {
            o.code = RPC_INVALID_ARGUMENT;
            snprintf(o.msg, sizeof o.msg, "name is required");
        } else if (store_revoke_enroll_token(e->st, req->name, (int64_t)time(NULL), &found, err, sizeof err) != 0) {
            o.code = RPC_INTERNAL;
            snprintf(o.msg, sizeof o.msg, "%s", err);
        } else if (!found) {
            o.code = RPC_NOT_FOUND;
            snprintf(o.msg, sizeof o.msg, "no enrollment token named '%.100s' that is not already revoked", req->name);
        } else {
            resp->revoked = 1;
            snprintf(o.msg, sizeof o.msg, "revoked");
            log_info("enroll.token_revoked", "name=%s trace_id=%s", req->name, rpc_ctx_trace_id(c));
        }
    }
    audit(e, c, &who, "RevokeEnrollmentToken", req->name, &o);
    return finish(c, &o);
}

admin_enroll *admin_enroll_new(store *st, const auth *tokens, char *err, size_t errlen)
{
    admin_enroll *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->st = st;
    e->auth = tokens;
    /* the writes wait for a commit: threads of their own */
    const rpc_method t[N_METHODS] = {
        {SVC "CreateEnrollmentToken", &ops__admin__v1__create_enrollment_token_request__descriptor,
         &ops__admin__v1__create_enrollment_token_response__descriptor, create, NULL, e, RPC_METHOD_SLOW},
        {SVC "ListEnrollmentTokens", &ops__admin__v1__list_enrollment_tokens_request__descriptor,
         &ops__admin__v1__list_enrollment_tokens_response__descriptor, list, NULL, e, 0},
        {SVC "RevokeEnrollmentToken", &ops__admin__v1__revoke_enrollment_token_request__descriptor,
         &ops__admin__v1__revoke_enrollment_token_response__descriptor, revoke, NULL, e, RPC_METHOD_SLOW},
    };
    memcpy(e->methods, t, sizeof t);
    return e;
}

void admin_enroll_free(admin_enroll *e) { free(e); }

const rpc_method *admin_enroll_methods(admin_enroll *e, size_t *n)
{
    *n = N_METHODS;
    return e->methods;
}
