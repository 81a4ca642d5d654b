/* dservice: DaemonService handlers over the supervisor. Status codes follow CONTRACT.md:
 * INVALID_ARGUMENT for an empty id or a bad operation, NOT_FOUND for an unknown agent, INTERNAL
 * with the reason when the operation itself failed. */
#include "daemon/dservice.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/log.h"
#include "daemon.pb-c.h"
#include "daemon/verify.h"

#define MAX_CONFIG_FILE (1 << 20)

struct dservice {
    rpc_server *srv;
    sup *sup;
    updr *updr;
    pthread_mutex_t cfg_mu;
    const dconfig *cfg;
    rpc_method methods[9];
};

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Constant time in the token's content: the digest is compared with CRYPTO_memcmp. */
static int token_matches(const char *hex, const char *token)
{
    unsigned char want[32], got[EVP_MAX_MD_SIZE];
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return 0;
        want[i] = (unsigned char)(hi << 4 | lo);
    }
    unsigned int gl = 0;
    if (!EVP_Digest(token, strlen(token), got, &gl, EVP_sha256(), NULL) || gl != 32) return 0;
    return CRYPTO_memcmp(want, got, 32) == 0;
}

int dservice_authorize(const dconfig_auth *a, const char *authorization, const char *identity, char *why,
                       size_t whylen)
{
    why[0] = 0;
    int have_token = a->manager_token_sha256 && a->manager_token_sha256[0];
    if (!have_token && a->n_allowed_identities == 0) return RPC_OK; /* open by configuration */
    if (identity && *identity)
        for (size_t i = 0; i < a->n_allowed_identities; i++)
            if (!strcmp(a->allowed_identities[i], identity)) return RPC_OK;
    if (authorization) {
        if (strncasecmp(authorization, "Bearer ", 7) != 0 || !authorization[7]) {
            snprintf(why, whylen, "authorization must be \"Bearer <token>\"");
            return RPC_UNAUTHENTICATED;
        }
        if (have_token && token_matches(a->manager_token_sha256, authorization + 7)) return RPC_OK;
        snprintf(why, whylen, "invalid token");
        return RPC_UNAUTHENTICATED;
    }
    if (identity && *identity) {
        snprintf(why, whylen, "certificate identity \"%.128s\" is not in daemon.auth.allowed_identities", identity);
        return RPC_PERMISSION_DENIED;
    }
    snprintf(why, whylen, "the manager's credentials are required (%s%s%s)",
             have_token ? "authorization: Bearer <token>" : "", have_token && a->n_allowed_identities ? " or " : "",
             a->n_allowed_identities ? "a client certificate" : "");
    return RPC_UNAUTHENTICATED;
}

/* Every DaemonService method starts here; the configuration can change on reload. */
static int authorize(rpc_ctx *c, dservice *d)
{
    const char *authz = rpc_ctx_metadata(c, "authorization");
    const char *ident = rpc_ctx_peer_identity(c);
    char why[300];
    pthread_mutex_lock(&d->cfg_mu);
    int code = dservice_authorize(&d->cfg->daemon.auth, authz, ident, why, sizeof why);
    pthread_mutex_unlock(&d->cfg_mu);
    if (code == RPC_OK) return RPC_OK;
    char q[400];
    log_warn("daemon.auth_refused", "method=%s peer=%s identity=%s code=%s reason=%s trace_id=%s", rpc_ctx_method(c),
             rpc_ctx_peer(c), ident ? ident : "-", rpc_code_name(code), log_quote(q, sizeof q, why), rpc_ctx_trace_id(c));
    return rpc_ctx_errorf(c, code, "%s", why);
}

#define AUTHORIZE(c, d)                                  \
    do {                                                 \
        int auth_code_ = authorize((c), (d));            \
        if (auth_code_ != RPC_OK) return auth_code_;     \
    } while (0)

int dservice_validate(const ProtobufCMessage *req, char *why, size_t whylen)
{
    why[0] = 0;
    const ProtobufCMessageDescriptor *d = req->descriptor;
    if (d == &proto__agent_operation_request__descriptor) {
        const Proto__AgentOperationRequest *r = (const void *)req;
        if (!r->agent_id[0]) return snprintf(why, whylen, "agent_id is required"), RPC_INVALID_ARGUMENT;
        if (strcmp(r->operation, "start") && strcmp(r->operation, "stop") && strcmp(r->operation, "restart"))
            return snprintf(why, whylen, "invalid operation \"%.60s\": must be start, stop or restart", r->operation),
                   RPC_INVALID_ARGUMENT;
    } else if (d == &proto__agent_metrics_request__descriptor) {
        const Proto__AgentMetricsRequest *r = (const void *)req;
        if (!r->agent_id[0]) return snprintf(why, whylen, "agent_id is required"), RPC_INVALID_ARGUMENT;
    } else if (d == &proto__config_request__descriptor) {
        const Proto__ConfigRequest *r = (const void *)req;
        int is_agent = !strcmp(r->config_type, "agent");
        if (!is_agent && strcmp(r->config_type, "daemon"))
            return snprintf(why, whylen, "invalid config_type \"%.60s\": must be daemon or agent", r->config_type),
                   RPC_INVALID_ARGUMENT;
        if (is_agent && !r->agent_id[0])
            return snprintf(why, whylen, "agent_id is required when config_type is agent"), RPC_INVALID_ARGUMENT;
    } else if (d == &proto__update_request__descriptor) {
        const Proto__UpdateRequest *r = (const void *)req;
        if (!strncmp(r->component, "agent:", 6)) {
            if (!r->component[6]) return snprintf(why, whylen, "component: agent id is empty"), RPC_INVALID_ARGUMENT;
        } else if (strcmp(r->component, "daemon") != 0) {
            return snprintf(why, whylen, "component must be \"daemon\" or \"agent:<agent id>\" (got \"%.60s\")", r->component),
                   RPC_INVALID_ARGUMENT;
        }
        uint8_t sig[64];
        if (vfy_decode_signature(r->signature, sig) != 0)
            return snprintf(why, whylen, "signature must be 128 hex digits or base64 of 64 bytes"), RPC_INVALID_ARGUMENT;
    }
    return RPC_OK;
}

/* The request's checks, answered INVALID_ARGUMENT with the field named. */
static int validate(rpc_ctx *c, const void *req)
{
    char why[300];
    int code = dservice_validate(req, why, sizeof why);
    return code == RPC_OK ? RPC_OK : rpc_ctx_errorf(c, code, "%s", why);
}

#define VALIDATE(c, req)                                 \
    do {                                                 \
        int valid_code_ = validate((c), (req));          \
        if (valid_code_ != RPC_OK) return valid_code_;   \
    } while (0)

static int list_agents(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    (void)reqv;
    dservice *d = user;
    AUTHORIZE(c, d);
    Proto__ListAgentsResponse *resp = respv;
    sup_agent_info *list;
    size_t n;
    if (sup_list(d->sup, &list, &n) != 0) return rpc_ctx_errorf(c, RPC_INTERNAL, "out of memory listing agents");
    resp->n_agents = n;
    resp->agents = rpc_ctx_alloc(c, (n ? n : 1) * sizeof *resp->agents);
    for (size_t i = 0; i < n; i++) {
        Proto__AgentInfo *a = rpc_ctx_alloc(c, sizeof *a);
        proto__agent_info__init(a);
        a->id = rpc_ctx_strdup(c, list[i].id);
        a->type = rpc_ctx_strdup(c, list[i].type);
        a->version = rpc_ctx_strdup(c, list[i].version);
        a->status = rpc_ctx_strdup(c, list[i].status);
        a->pid = list[i].pid;
        a->start_time = list[i].start_time;
        a->restart_count = list[i].restart_count;
        a->last_heartbeat = list[i].last_heartbeat;
        resp->agents[i] = a;
    }
    sup_list_free(list, n);
    return RPC_OK;
}

static int operate_agent(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    dservice *d = user;
    AUTHORIZE(c, d);
    const Proto__AgentOperationRequest *req = reqv;
    Proto__AgentOperationResponse *resp = respv;
    VALIDATE(c, req);
    sup_result (*op)(sup *, const char *, char *, size_t) =
        !strcmp(req->operation, "start") ? sup_start : !strcmp(req->operation, "stop") ? sup_stop : sup_restart;
    char err[512] = "";
    sup_result r = op(d->sup, req->agent_id, err, sizeof err);
    char q[600];
    log_info("agent.operate", "agent=%s operation=%s result=%s trace_id=%s%s%s", req->agent_id, req->operation,
             r == SUP_OK ? "ok" : r == SUP_NOT_FOUND ? "not_found" : "failed", rpc_ctx_trace_id(c),
             err[0] ? " error=" : "", err[0] ? log_quote(q, sizeof q, err) : "");
    if (r == SUP_NOT_FOUND) return rpc_ctx_errorf(c, RPC_NOT_FOUND, "agent not found: %s", req->agent_id);
    if (r != SUP_OK) return rpc_ctx_errorf(c, RPC_INTERNAL, "%s %s failed: %s", req->operation, req->agent_id, err);
    resp->success = 1;
    return RPC_OK;
}

static int agent_metrics(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    dservice *d = user;
    AUTHORIZE(c, d);
    const Proto__AgentMetricsRequest *req = reqv;
    Proto__AgentMetricsResponse *resp = respv;
    VALIDATE(c, req);
    pmon_point *pts = NULL;
    size_t n = 0;
    int64_t dur = req->duration_seconds > 0 ? req->duration_seconds : 3600;
    sup_result r = sup_agent_metrics(d->sup, req->agent_id, dur, &pts, &n);
    if (r == SUP_NOT_FOUND) return rpc_ctx_errorf(c, RPC_NOT_FOUND, "agent not found: %s", req->agent_id);
    if (r != SUP_OK) return rpc_ctx_errorf(c, RPC_INTERNAL, "reading metrics of %s failed", req->agent_id);
    resp->agent_id = rpc_ctx_strdup(c, req->agent_id);
    resp->n_data_points = n;
    resp->data_points = rpc_ctx_alloc(c, (n ? n : 1) * sizeof *resp->data_points);
    for (size_t i = 0; i < n; i++) {
        Proto__ResourceDataPoint *p = rpc_ctx_alloc(c, sizeof *p);
        proto__resource_data_point__init(p);
        p->timestamp = pts[i].time_ms / 1000;
        p->cpu = pts[i].cpu;
        p->memory_rss = pts[i].rss;
        p->memory_vms = pts[i].vms;
        p->disk_read_bytes = pts[i].read_bytes;
        p->disk_write_bytes = pts[i].write_bytes;
        p->open_files = pts[i].open_files;
        resp->data_points[i] = p;
    }
    free(pts);
    return RPC_OK;
}

/* Reads an agent's config file for GetConfig, at most MAX_CONFIG_FILE bytes. */
static char *read_small_file(rpc_ctx *c, const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = rpc_ctx_alloc(c, MAX_CONFIG_FILE + 1);
    *len = fread(buf, 1, MAX_CONFIG_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        return NULL;
    }
    if (*len > MAX_CONFIG_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, MAX_CONFIG_FILE);
        return NULL;
    }
    return buf;
}

static int get_config(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    dservice *d = user;
    AUTHORIZE(c, d);
    const Proto__ConfigRequest *req = reqv;
    Proto__ConfigResponse *resp = respv;
    VALIDATE(c, req);
    int is_daemon = !strcmp(req->config_type, "daemon");
    int code = RPC_OK;
    char *yaml = NULL;
    char path[4096] = "";
    pthread_mutex_lock(&d->cfg_mu);
    if (is_daemon) {
        if (dconfig_dump_yaml(d->cfg, &yaml) != 0) code = rpc_ctx_errorf(c, RPC_INTERNAL, "cannot render the configuration");
    } else {
        const agent_spec *a = dconfig_find_agent(d->cfg, req->agent_id);
        if (!a) code = rpc_ctx_errorf(c, RPC_NOT_FOUND, "agent not found: %s", req->agent_id);
        else if (dconfig_agent_yaml(a, &yaml) != 0) code = rpc_ctx_errorf(c, RPC_INTERNAL, "cannot render the configuration");
        else if (a->config_file && a->config_file[0]) snprintf(path, sizeof path, "%s", a->config_file);
    }
    pthread_mutex_unlock(&d->cfg_mu);
    if (code != RPC_OK) {
        free(yaml);
        return code;
    }
    size_t ylen = strlen(yaml);
    size_t flen = 0;
    const char *file = NULL;
    char ferr[600] = "";
    if (path[0]) file = read_small_file(c, path, &flen, ferr, sizeof ferr);
    /* The agent's effective settings, then its config file as a second YAML document. */
    static const char sep_fmt[] = "---\n# config_file: %s\n";
    char sep[4200] = "";
    if (path[0]) {
        if (file) snprintf(sep, sizeof sep, sep_fmt, path);
        else snprintf(sep, sizeof sep, "---\n# config_file unreadable: %s\n", ferr);
    }
    size_t slen = strlen(sep);
    uint8_t *out = rpc_ctx_alloc(c, ylen + slen + flen + 1);
    memcpy(out, yaml, ylen);
    memcpy(out + ylen, sep, slen);
    if (file) memcpy(out + ylen + slen, file, flen);
    free(yaml);
    resp->config_data.data = out;
    resp->config_data.len = ylen + slen + flen;
    resp->success = 1;
    resp->message = rpc_ctx_strdup(c, "ok");
    return RPC_OK;
}

/* PushUpdate: the manager calling in directly; the same verify-and-install path as a pushed
 * version_update. component is "daemon", or "agent" with the agent named as "agent:<id>" (the
 * contract's UpdateRequest has no agent field). Outcomes other than applied answer
 * success=false with the reason; a malformed request is INVALID_ARGUMENT. */
static int push_update(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    dservice *d = user;
    AUTHORIZE(c, d);
    const Proto__UpdateRequest *req = reqv;
    Proto__UpdateResponse *resp = respv;
    if (!d->updr) return rpc_ctx_errorf(c, RPC_UNIMPLEMENTED, "updates are not enabled on this daemon");
    VALIDATE(c, req);
    const char *comp = req->component, *agent = NULL;
    if (!strncmp(comp, "agent:", 6)) {
        agent = comp + 6;
        comp = "agent";
    }
    uint8_t sig[64];
    if (vfy_decode_signature(req->signature, sig) != 0) return rpc_ctx_errorf(c, RPC_INTERNAL, "signature");
    char msg[1024];
    updr_outcome o = updr_install(d->updr, comp, agent, req->version, req->download_url, req->update_data.data,
                                  req->update_data.len, req->hash, sig, sizeof sig, msg, sizeof msg);
    resp->success = o == UPDR_APPLIED;
    resp->message = rpc_ctx_sprintf(c, "%s: %s", updr_outcome_name(o), msg);
    return RPC_OK;
}

static int not_here(rpc_ctx *c, const void *reqv, void *respv, void *user)
{
    (void)reqv; (void)respv;
    AUTHORIZE(c, (dservice *)user);
    return rpc_ctx_errorf(c, RPC_UNIMPLEMENTED, "%s is not served by ops-daemon", rpc_ctx_method(c));
}

dservice *dservice_start(const dservice_opts *o, char *err, size_t errlen)
{
    dservice *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return NULL; }
    d->sup = o->sup;
    d->updr = o->updr;
    d->cfg = o->cfg;
    pthread_mutex_init(&d->cfg_mu, NULL);
    rpc_method m[] = {
        {"/proto.DaemonService/ListAgents", &proto__list_agents_request__descriptor, &proto__list_agents_response__descriptor, list_agents, NULL, d, 0},
        {"/proto.DaemonService/OperateAgent", &proto__agent_operation_request__descriptor, &proto__agent_operation_response__descriptor, operate_agent, NULL, d, RPC_METHOD_SLOW},
        {"/proto.DaemonService/GetAgentMetrics", &proto__agent_metrics_request__descriptor, &proto__agent_metrics_response__descriptor, agent_metrics, NULL, d, 0},
        {"/proto.DaemonService/GetConfig", &proto__config_request__descriptor, &proto__config_response__descriptor, get_config, NULL, d, 0},
        {"/proto.DaemonService/Register", &proto__register_request__descriptor, &proto__register_response__descriptor, not_here, NULL, d, 0},
        {"/proto.DaemonService/Heartbeat", &proto__heartbeat_request__descriptor, &proto__heartbeat_response__descriptor, not_here, NULL, d, 0},
        {"/proto.DaemonService/ReportMetrics", &proto__metrics_request__descriptor, &proto__metrics_response__descriptor, not_here, NULL, d, 0},
        {"/proto.DaemonService/PushUpdate", &proto__update_request__descriptor, &proto__update_response__descriptor, push_update, NULL, d, RPC_METHOD_SLOW},
        {"/proto.DaemonService/SyncAgentStates", &proto__sync_agent_states_request__descriptor, &proto__sync_agent_states_response__descriptor, not_here, NULL, d, 0},
    };
    memcpy(d->methods, m, sizeof m);
    rpc_server_opts so;
    memset(&so, 0, sizeof so);
    so.name = "daemon";
    so.listen = o->listen;
    so.tls = o->tls;
    d->srv = rpc_server_new(&so, err, errlen);
    if (!d->srv || rpc_server_add_methods(d->srv, d->methods, 9, err, errlen) != 0 ||
        (o->reflection && rpc_reflection_register(d->srv, o->reflection, err, errlen) != 0) ||
        rpc_server_start(d->srv, err, errlen) != 0) {
        if (d->srv) rpc_server_free(d->srv);
        pthread_mutex_destroy(&d->cfg_mu);
        free(d);
        return NULL;
    }
    rpc_server_set_health(d->srv, "proto.DaemonService", 1);
    return d;
}

const dconfig *dservice_swap_config(dservice *d, const dconfig *cfg)
{
    pthread_mutex_lock(&d->cfg_mu);
    const dconfig *old = d->cfg;
    d->cfg = cfg;
    pthread_mutex_unlock(&d->cfg_mu);
    return old;
}

int dservice_port(const dservice *d) { return rpc_server_port(d->srv, 0); }

int dservice_reload_tls(dservice *d) { return rpc_server_reload_tls(d->srv); }

void dservice_stop(dservice *d, int64_t grace_ms)
{
    if (!d) return;
    rpc_server_shutdown(d->srv, grace_ms);
    rpc_server_free(d->srv);
    pthread_mutex_destroy(&d->cfg_mu);
    free(d);
}
