/* conn: settings resolution, the channel, and error explanations for opsctl. */
#include "ctl/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/cfg.h"
#include "health.pb-c.h"

#define ADMIN_PREFIX "/ops.admin.v1.AdminService/"

/* ---- settings ------------------------------------------------------------------------------ */

struct file_cfg {
    char *manager, *token, *ca, *cert, *key;
};

#define OPT (CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL)
static const cyaml_schema_field_t file_fields[] = {
    CYAML_FIELD_STRING_PTR("manager", OPT, struct file_cfg, manager, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("token", OPT, struct file_cfg, token, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("ca", OPT, struct file_cfg, ca, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("cert", OPT, struct file_cfg, cert, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("key", OPT, struct file_cfg, key, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};
static const cyaml_schema_value_t file_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct file_cfg, file_fields),
};

int conn_default_config_path(char *buf, size_t n)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && *xdg) {
        snprintf(buf, n, "%s/ops/opsctl.yaml", xdg);
        return 0;
    }
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(buf, n, "%s/.config/ops/opsctl.yaml", home);
        return 0;
    }
    return -1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* First non-empty of flag, env, file; records its origin. */
static void pick(char **dst, char **from, const char *flag, const char *flagname, const char *envname,
                 const char *file, const char *path)
{
    const char *env = getenv(envname);
    const char *v = NULL, *o = NULL;
    if (flag && *flag) { v = flag; o = flagname; }
    else if (env && *env) { v = env; o = envname; }
    else if (file && *file) { v = file; o = path; }
    *dst = v ? xstrdup(v) : NULL;
    if (from) *from = o ? xstrdup(o) : NULL;
}

int conn_resolve(conn_settings *out, const conn_flags *flags, const char *config_path, char *err,
                 size_t errlen)
{
    memset(out, 0, sizeof *out);
    conn_flags none = {0};
    if (!flags) flags = &none;
    char defpath[4096];
    if (!config_path && conn_default_config_path(defpath, sizeof defpath) == 0) config_path = defpath;

    struct file_cfg *fc = NULL;
    struct stat stt;
    if (config_path && stat(config_path, &stt) == 0) {
        if (cfg_load(config_path, &file_schema, (void **)&fc, err, errlen) != 0) return -1;
    } else if (config_path && errno != ENOENT && errno != ENOTDIR) {
        snprintf(err, errlen, "%s: %s", config_path, strerror(errno));
        return -1;
    }
    struct file_cfg empty = {0};
    const struct file_cfg *f = fc ? fc : &empty;

    pick(&out->manager, &out->manager_from, flags->manager, "--manager", "OPS_MANAGER", f->manager, config_path);
    pick(&out->token, &out->token_from, flags->token, "--token", "OPS_TOKEN", f->token, config_path);
    pick(&out->ca, &out->ca_from, flags->ca, "--ca", "OPS_CA", f->ca, config_path);
    pick(&out->cert, NULL, flags->cert, "--cert", "OPS_CERT", f->cert, config_path);
    pick(&out->key, NULL, flags->key, "--key", "OPS_KEY", f->key, config_path);
    if (fc) cfg_free(&file_schema, fc);
    if (!out->manager) {
        out->manager = xstrdup(CONN_DEFAULT_MANAGER);
        out->manager_from = xstrdup("default");
    }
    out->timeout_ms = CONN_DEFAULT_TIMEOUT_MS;
    size_t ml = strlen(out->manager);
    if (ml == 0 || out->manager[ml - 1] == ':' || out->manager[0] == ':') {
        snprintf(err, errlen, "manager address '%s' (from %s) is not HOST:PORT", out->manager, out->manager_from);
        conn_settings_free(out);
        return -1;
    }
    if ((out->cert == NULL) != (out->key == NULL)) {
        snprintf(err, errlen, "a client certificate needs both --cert and --key (OPS_CERT, OPS_KEY)");
        conn_settings_free(out);
        return -1;
    }
    if (out->cert && !out->ca) {
        snprintf(err, errlen, "--cert/--key need --ca (OPS_CA): the CA that signed the manager's certificate");
        conn_settings_free(out);
        return -1;
    }
    return 0;
}

void conn_settings_free(conn_settings *s)
{
    if (!s) return;
    free(s->manager);
    free(s->token);
    free(s->ca);
    free(s->cert);
    free(s->key);
    free(s->manager_from);
    free(s->token_from);
    free(s->ca_from);
    memset(s, 0, sizeof *s);
}

/* ---- channel and calls --------------------------------------------------------------------- */

struct conn {
    const conn_settings *s;
    rpc_channel *ch;
    char auth[4096];
};

conn *conn_open(const conn_settings *s, char *err, size_t errlen)
{
    rpc_client_opts o;
    memset(&o, 0, sizeof o);
    if (s->ca) {
        o.tls.enabled = 1;
        o.tls.ca_file = s->ca;
        o.tls.cert_file = s->cert;
        o.tls.key_file = s->key;
    }
    char e[512];
    rpc_channel *ch = rpc_channel_new(s->manager, &o, e, sizeof e);
    if (!ch) {
        snprintf(err, errlen, "cannot set up a channel to %s: %s", s->manager, e);
        return NULL;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->s = s;
    c->ch = ch;
    snprintf(c->auth, sizeof c->auth, "Bearer %s", s->token ? s->token : "");
    return c;
}

void conn_close(conn *c)
{
    if (!c) return;
    rpc_channel_free(c->ch);
    free(c);
}

const conn_settings *conn_get_settings(const conn *c) { return c->s; }

static void call_opts(const conn *c, rpc_call_opts *o, const char **md, int64_t timeout_ms)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = timeout_ms;
    o->max_attempts = 1;
    md[0] = "authorization";
    md[1] = c->auth;
    md[2] = NULL;
    /* An unset token sends no header at all: the manager then says "missing", not "unknown". */
    o->metadata = c->s->token ? md : NULL;
}

int conn_call(conn *c, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              const char *action, const char *role, char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, ADMIN_PREFIX "%s", method);
    rpc_call_opts o;
    const char *md[3];
    /* An agent stop waits out the agent's stop timeout (30 s by default) on the daemon: the
     * usual deadline would give up on an operation that is going fine. */
    int64_t t = c->s->timeout_ms;
    if (!c->s->timeout_explicit && !strcmp(method, "OperateAgent") && t < CONN_OPERATE_TIMEOUT_MS)
        t = CONN_OPERATE_TIMEOUT_MS;
    call_opts(c, &o, md, t);
    rpc_result res;
    *resp = NULL;
    if (rpc_call_unary(c->ch, full, req, resp_desc, resp, &o, &res) == RPC_OK) return CTL_EXIT_OK;
    return conn_explain(c, method, &res, action, role, err, errlen);
}

int conn_stream_open(conn *c, const char *method, const ProtobufCMessage *req, rpc_stream **st,
                     char *err, size_t errlen)
{
    char full[256];
    snprintf(full, sizeof full, ADMIN_PREFIX "%s", method);
    rpc_call_opts o;
    const char *md[3];
    call_opts(c, &o, md, 0);
    rpc_result res;
    if (rpc_stream_open(c->ch, full, req, &o, st, &res) == 0) return CTL_EXIT_OK;
    return conn_explain(c, method, &res, "read", "viewer", err, errlen);
}

/* Does the manager answer at all? Its health service needs no token. */
static int manager_answers(conn *c)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts o;
    const char *md[3];
    int64_t t = c->s->timeout_ms < 3000 ? c->s->timeout_ms : 3000;
    call_opts(c, &o, md, t);
    rpc_result res;
    rpc_call_unary(c->ch, "/grpc.health.v1.Health/Check", &req.base,
                   &grpc__health__v1__health_check_response__descriptor, &resp, &o, &res);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return res.code != RPC_UNAVAILABLE && res.code != RPC_DEADLINE_EXCEEDED;
}

static int contains(const char *hay, const char *needle) { return strcasestr(hay, needle) != NULL; }

int conn_explain(conn *c, const char *method, const rpc_result *res, const char *action,
                 const char *role, char *err, size_t errlen)
{
    const conn_settings *s = c->s;
    const char *msg = res->message[0] ? res->message : "no details";
    switch (res->code) {
    case RPC_UNAVAILABLE:
    case RPC_DEADLINE_EXCEEDED:
        if (manager_answers(c)) break; /* the manager answered this itself: the operation failed */
        {
            const char *why = res->code == RPC_DEADLINE_EXCEEDED ? "no answer in time"
                              : contains(msg, "refused")          ? "connection refused"
                              : contains(msg, "resolv") || contains(msg, "DNS") ? "cannot resolve the name"
                                                                                : msg;
            int tls = contains(msg, "ssl") || contains(msg, "handshake") || contains(msg, "certificate") ||
                      contains(msg, "tls");
            if (tls)
                snprintf(err, errlen,
                         "cannot reach manager at %s (TLS failed: %s): check --ca/--cert/--key (OPS_CA, "
                         "OPS_CERT, OPS_KEY)%s",
                         s->manager, msg, s->ca ? "" : "; the manager may require TLS: set --ca");
            else {
                char from[300] = "";
                if (s->manager_from && strcmp(s->manager_from, "default") != 0)
                    snprintf(from, sizeof from, " (the address came from %s)", s->manager_from);
                snprintf(err, errlen,
                         "cannot reach manager at %s (%s): is ops-manager running? set --manager or "
                         "OPS_MANAGER%s",
                         s->manager, why, from);
            }
            return CTL_EXIT_CONN;
        }
    case RPC_UNAUTHENTICATED:
        if (!s->token)
            snprintf(err, errlen,
                     "no token: the manager needs one (%s); set --token, OPS_TOKEN or token: in "
                     "~/.config/ops/opsctl.yaml",
                     msg);
        else
            snprintf(err, errlen, "token refused by the manager at %s (%s): check %s", s->manager, msg,
                     s->token_from ? s->token_from : "OPS_TOKEN");
        return CTL_EXIT_CONN;
    case RPC_PERMISSION_DENIED: {
        const char *r = role ? role : "admin";
        snprintf(err, errlen, "permission denied: your token's role cannot %s; ask for %s %s token (%s)",
                 action ? action : "do this", strchr("aeiou", r[0]) ? "an" : "a", r, msg);
        return CTL_EXIT_FAILED;
    }
    case RPC_UNIMPLEMENTED:
        snprintf(err, errlen,
                 "the manager at %s does not offer %s (%s): is it an ops-manager with the admin API?",
                 s->manager, method, msg);
        return CTL_EXIT_FAILED;
    case RPC_NOT_FOUND:
        snprintf(err, errlen, "not found: %s", msg);
        return CTL_EXIT_FAILED;
    case RPC_INVALID_ARGUMENT:
        snprintf(err, errlen, "the manager refused the request: %s", msg);
        return CTL_EXIT_FAILED;
    default:
        break;
    }
    if (res->code == RPC_DEADLINE_EXCEEDED)
        snprintf(err, errlen, "%s got no answer in time (%s); the manager is up: raise --timeout", method, msg);
    else if (res->code == RPC_UNAVAILABLE)
        snprintf(err, errlen,
                 "%s failed: the manager could not reach the node's daemon (%s); 'opsctl node NODE' shows "
                 "what it last reported",
                 method, msg);
    else
        snprintf(err, errlen, "%s failed: %s: %s", method, rpc_code_name(res->code), msg);
    return CTL_EXIT_FAILED;
}
