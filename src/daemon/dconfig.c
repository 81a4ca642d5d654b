/* dconfig: daemon.yaml in two passes over the same text.
 *
 * libcyaml (through cfg.h) reads every fixed key into a "raw" tree whose optional values are
 * pointers left NULL when absent, so defaults and agent_defaults can be told apart from values
 * written in the file. libcyaml cannot read mappings whose keys are data (labels, env), so the
 * schema skips those and a second pass over the libyaml document picks them up. Then each
 * value is resolved (agent -> agent_defaults -> built-in default), parsed and checked. */
#include "daemon/dconfig.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/cfg.h"
#include "base/prom.h"
#include "base/units.h"

/* ---- raw tree (what libcyaml fills) ------------------------------------------------------ */

struct raw_health {
    char *interval;
    char *heartbeat_timeout;
    double *cpu_threshold;
    char *memory_threshold;
    char *threshold_duration;
    char *http_endpoint;
};

struct raw_restart {
    char *policy;
    int *max_retries;
    char *backoff_base;
    char *backoff_max;
};

struct raw_agent {
    char *id;
    char *type;
    char *name;
    char *version;
    char *binary_path;
    char **args;
    unsigned args_count;
    char *config_file;
    char *work_dir;
    bool *enabled;
    char *stop_grace;
    char *log_max_size;
    int *log_keep;
    struct raw_health *health;
    struct raw_restart *restart;
};

struct raw_collector {
    bool *enabled;
    char *interval;
    bool *per_core;
    char **mount_points;
    unsigned mount_points_count;
    char **interfaces;
    unsigned interfaces_count;
};

struct raw_collectors {
    struct raw_collector *cpu, *memory, *disk, *network;
};

struct raw_tls {
    bool *enabled;
    char *cert_file, *key_file, *ca_file, *server_name;
};

struct raw_server_tls {
    bool *enabled;
    char *cert_file, *key_file, *client_ca_file;
    bool *require_client_cert;
};

struct raw_auth {
    char **allowed_identities;
    unsigned allowed_identities_count;
    char *manager_token_sha256;
    char *insecure; /* a string: libcyaml reads any word but a few as true */
};

struct raw_daemon {
    char *id, *log_level, *log_file, *pid_file, *work_dir, *grpc_host;
    int *grpc_port;
    char *http_host;
    int *http_port;
    bool *stop_agents_on_exit;
    char *stop_grace, *resource_interval;
    struct raw_server_tls *tls;
    struct raw_auth *auth;
};

struct raw_manager {
    char *address;
    struct raw_tls *tls;
    char *heartbeat_interval, *reconnect_interval, *timeout, *metrics_interval;
    char *spool_dir, *spool_max;
    char *keepalive_time, *keepalive_timeout, *max_message_size, *window_size, *compression;
    char *enrollment_token, *enrollment_token_file, *secret_file;
    bool *stream_only;
};

struct raw_updates {
    int *enabled;
    char *public_key;
    int *keep_versions;
    char *rollback_window;
};

struct raw_prometheus {
    bool *enabled;
    char *listen;
};

struct raw_root {
    struct raw_prometheus *prometheus;
    struct raw_daemon *daemon;
    struct raw_manager *manager;
    struct raw_updates *updates;
    struct raw_collectors *collectors;
    struct raw_agent *agent_defaults;
    struct raw_agent *agents;
    unsigned agents_count;
};

#define OPT (CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER)
/* Sections and lists may also be present but empty ("agents:" with every entry commented
 * out): that reads as absent. */
#define OPTN (CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL)
#define STR(key, st, m) CYAML_FIELD_STRING_PTR(key, OPT, st, m, 0, CYAML_UNLIMITED)

static const cyaml_schema_value_t string_entry = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t health_fields[] = {
    STR("interval", struct raw_health, interval),
    STR("heartbeat_timeout", struct raw_health, heartbeat_timeout),
    CYAML_FIELD_FLOAT_PTR("cpu_threshold", OPT, struct raw_health, cpu_threshold),
    STR("memory_threshold", struct raw_health, memory_threshold),
    STR("threshold_duration", struct raw_health, threshold_duration),
    STR("http_endpoint", struct raw_health, http_endpoint),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t restart_fields[] = {
    STR("policy", struct raw_restart, policy),
    CYAML_FIELD_INT_PTR("max_retries", OPT, struct raw_restart, max_retries),
    STR("backoff_base", struct raw_restart, backoff_base),
    STR("backoff_max", struct raw_restart, backoff_max),
    CYAML_FIELD_END,
};

/* Every agent key but id: agent_defaults takes exactly these. */
#define AGENT_COMMON_FIELDS \
    STR("type", struct raw_agent, type), \
    STR("name", struct raw_agent, name), \
    STR("version", struct raw_agent, version), \
    STR("binary_path", struct raw_agent, binary_path), \
    CYAML_FIELD_SEQUENCE("args", OPTN, struct raw_agent, args, &string_entry, 0, CYAML_UNLIMITED), \
    CYAML_FIELD_IGNORE("env", CYAML_FLAG_OPTIONAL), \
    STR("config_file", struct raw_agent, config_file), \
    STR("work_dir", struct raw_agent, work_dir), \
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_agent, enabled), \
    STR("stop_grace", struct raw_agent, stop_grace), \
    STR("log_max_size", struct raw_agent, log_max_size), \
    CYAML_FIELD_INT_PTR("log_keep", OPT, struct raw_agent, log_keep), \
    CYAML_FIELD_MAPPING_PTR("health_check", OPTN, struct raw_agent, health, health_fields), \
    CYAML_FIELD_MAPPING_PTR("restart", OPTN, struct raw_agent, restart, restart_fields)

static const cyaml_schema_field_t agent_fields[] = {
    STR("id", struct raw_agent, id),
    AGENT_COMMON_FIELDS,
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t agent_defaults_fields[] = {
    AGENT_COMMON_FIELDS,
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t agent_entry = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_agent, agent_fields),
};

static const cyaml_schema_field_t cpu_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_collector, enabled),
    STR("interval", struct raw_collector, interval),
    CYAML_FIELD_BOOL_PTR("per_core", OPT, struct raw_collector, per_core),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t memory_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_collector, enabled),
    STR("interval", struct raw_collector, interval),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t disk_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_collector, enabled),
    STR("interval", struct raw_collector, interval),
    CYAML_FIELD_SEQUENCE("mount_points", OPTN, struct raw_collector, mount_points, &string_entry,
                         0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t network_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_collector, enabled),
    STR("interval", struct raw_collector, interval),
    CYAML_FIELD_SEQUENCE("interfaces", OPTN, struct raw_collector, interfaces, &string_entry,
                         0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t collectors_fields[] = {
    CYAML_FIELD_MAPPING_PTR("cpu", OPTN, struct raw_collectors, cpu, cpu_fields),
    CYAML_FIELD_MAPPING_PTR("memory", OPTN, struct raw_collectors, memory, memory_fields),
    CYAML_FIELD_MAPPING_PTR("disk", OPTN, struct raw_collectors, disk, disk_fields),
    CYAML_FIELD_MAPPING_PTR("network", OPTN, struct raw_collectors, network, network_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t tls_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_tls, enabled),
    STR("cert_file", struct raw_tls, cert_file),
    STR("key_file", struct raw_tls, key_file),
    STR("ca_file", struct raw_tls, ca_file),
    STR("server_name", struct raw_tls, server_name),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t server_tls_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_server_tls, enabled),
    STR("cert_file", struct raw_server_tls, cert_file),
    STR("key_file", struct raw_server_tls, key_file),
    STR("client_ca_file", struct raw_server_tls, client_ca_file),
    CYAML_FIELD_BOOL_PTR("require_client_cert", OPT, struct raw_server_tls, require_client_cert),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t auth_fields[] = {
    CYAML_FIELD_SEQUENCE("allowed_identities", OPTN, struct raw_auth, allowed_identities, &string_entry, 0,
                         CYAML_UNLIMITED),
    STR("manager_token_sha256", struct raw_auth, manager_token_sha256),
    STR("insecure", struct raw_auth, insecure),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t daemon_fields[] = {
    CYAML_FIELD_MAPPING_PTR("tls", OPTN, struct raw_daemon, tls, server_tls_fields),
    CYAML_FIELD_MAPPING_PTR("auth", OPTN, struct raw_daemon, auth, auth_fields),
    STR("id", struct raw_daemon, id),
    STR("log_level", struct raw_daemon, log_level),
    STR("log_file", struct raw_daemon, log_file),
    STR("pid_file", struct raw_daemon, pid_file),
    STR("work_dir", struct raw_daemon, work_dir),
    STR("grpc_host", struct raw_daemon, grpc_host),
    CYAML_FIELD_INT_PTR("grpc_port", OPT, struct raw_daemon, grpc_port),
    STR("http_host", struct raw_daemon, http_host),
    CYAML_FIELD_INT_PTR("http_port", OPT, struct raw_daemon, http_port),
    CYAML_FIELD_BOOL_PTR("stop_agents_on_exit", OPT, struct raw_daemon, stop_agents_on_exit),
    STR("stop_grace", struct raw_daemon, stop_grace),
    STR("resource_interval", struct raw_daemon, resource_interval),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t manager_fields[] = {
    STR("address", struct raw_manager, address),
    CYAML_FIELD_MAPPING_PTR("tls", OPTN, struct raw_manager, tls, tls_fields),
    STR("heartbeat_interval", struct raw_manager, heartbeat_interval),
    STR("reconnect_interval", struct raw_manager, reconnect_interval),
    STR("timeout", struct raw_manager, timeout),
    STR("metrics_interval", struct raw_manager, metrics_interval),
    STR("spool_dir", struct raw_manager, spool_dir),
    STR("spool_max", struct raw_manager, spool_max),
    STR("keepalive_time", struct raw_manager, keepalive_time),
    STR("keepalive_timeout", struct raw_manager, keepalive_timeout),
    STR("max_message_size", struct raw_manager, max_message_size),
    STR("window_size", struct raw_manager, window_size),
    STR("compression", struct raw_manager, compression),
    STR("enrollment_token", struct raw_manager, enrollment_token),
    STR("enrollment_token_file", struct raw_manager, enrollment_token_file),
    STR("secret_file", struct raw_manager, secret_file),
    CYAML_FIELD_BOOL_PTR("stream_only", OPT, struct raw_manager, stream_only),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t updates_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_updates, enabled),
    STR("public_key", struct raw_updates, public_key),
    CYAML_FIELD_INT_PTR("keep_versions", OPT, struct raw_updates, keep_versions),
    STR("rollback_window", struct raw_updates, rollback_window),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t prometheus_fields[] = {
    CYAML_FIELD_BOOL_PTR("enabled", OPT, struct raw_prometheus, enabled),
    STR("listen", struct raw_prometheus, listen),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t root_fields[] = {
    CYAML_FIELD_MAPPING_PTR("updates", OPTN, struct raw_root, updates, updates_fields),
    CYAML_FIELD_MAPPING_PTR("prometheus", OPTN, struct raw_root, prometheus, prometheus_fields),
    CYAML_FIELD_MAPPING_PTR("daemon", OPTN, struct raw_root, daemon, daemon_fields),
    CYAML_FIELD_MAPPING_PTR("manager", OPTN, struct raw_root, manager, manager_fields),
    CYAML_FIELD_IGNORE("labels", CYAML_FLAG_OPTIONAL),
    CYAML_FIELD_MAPPING_PTR("collectors", OPTN, struct raw_root, collectors, collectors_fields),
    CYAML_FIELD_MAPPING_PTR("agent_defaults", OPTN, struct raw_root, agent_defaults,
                            agent_defaults_fields),
    CYAML_FIELD_SEQUENCE("agents", OPTN, struct raw_root, agents, &agent_entry, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t root_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_root, root_fields),
};

/* ---- errors ------------------------------------------------------------------------------ */

struct ctx {
    const char *name;      /* file name for messages */
    char *err;
    size_t errlen;
    yaml_document_t *doc;  /* second pass: labels and env */
};

/* "<file>: <where>: <key>: <problem>"; where may be "" for top-level sections. */
__attribute__((format(printf, 4, 5)))
static int fail(struct ctx *c, const char *where, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (where && *where)
        snprintf(c->err, c->errlen, "%s: %s: %s: %s", c->name, where, key, msg);
    else
        snprintf(c->err, c->errlen, "%s: %s: %s", c->name, key, msg);
    return -1;
}

static int oom(struct ctx *c)
{
    snprintf(c->err, c->errlen, "%s: out of memory", c->name);
    return -1;
}

/* ---- small resolvers: a value from the file or the default, parsed and checked ----------- */

static int take_str(struct ctx *c, const char *val, const char *def, char **out)
{
    *out = strdup(val ? val : def);
    return *out ? 0 : oom(c);
}

/* min_ms: the smallest value that makes sense (intervals must be positive). */
static int take_dur(struct ctx *c, const char *where, const char *key, const char *val,
                    const char *def, int64_t min_ms, int64_t *out)
{
    const char *s = val ? val : def;
    if (units_parse_duration_ms(s, out) != 0)
        return fail(c, where, key, "must be a duration such as \"30s\", \"1m30s\" or \"250ms\" (got \"%s\")", s);
    if (*out < min_ms)
        return fail(c, where, key, "must be greater than zero (got \"%s\")", s);
    return 0;
}

static int take_size(struct ctx *c, const char *where, const char *key, const char *val,
                     const char *def, uint64_t min, uint64_t *out)
{
    const char *s = val ? val : def;
    if (units_parse_size(s, out) != 0)
        return fail(c, where, key, "must be a size such as \"512MiB\", \"10MB\" or \"4096\" (got \"%s\")", s);
    if (*out < min)
        return fail(c, where, key, "must be greater than zero (got \"%s\")", s);
    return 0;
}

static int take_port(struct ctx *c, const char *key, const int *val, int def, int *out)
{
    *out = val ? *val : def;
    if (*out < 0 || *out > 65535)
        return fail(c, "", key, "must be a port number 0-65535 (got %d)", *out);
    return 0;
}

static char **strv_new(size_t n)
{
    return calloc(n + 1, sizeof(char *));
}

static void strv_free(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

static int take_strv(struct ctx *c, char *const *val, size_t n, char ***out)
{
    *out = strv_new(n);
    if (!*out) return oom(c);
    for (size_t i = 0; i < n; i++)
        if (!((*out)[i] = strdup(val[i]))) return oom(c);
    return 0;
}

/* ---- second pass: mappings keyed by data ------------------------------------------------- */

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strlen(key) == k->data.scalar.length &&
            memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

static yaml_node_t *seq_get(yaml_document_t *doc, yaml_node_t *seq, size_t i)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE) return NULL;
    yaml_node_item_t *it = seq->data.sequence.items.start + i;
    if (it >= seq->data.sequence.items.top) return NULL;
    return yaml_document_get_node(doc, *it);
}

static const char *scalar(yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* Calls fn(key, value) for each pair of a mapping of scalars. where/what name it in errors. */
static int walk_string_map(struct ctx *c, yaml_node_t *map, const char *where, const char *what,
                           int (*fn)(struct ctx *, void *, const char *, const char *), void *arg)
{
    if (map->type == YAML_SCALAR_NODE && map->data.scalar.length == 0) return 0; /* "env:" */
    if (map->type != YAML_MAPPING_NODE)
        return fail(c, where, what, "must be a mapping of NAME: value (line %zu)",
                    map->start_mark.line + 1);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
            return fail(c, where, what, "keys and values must be plain strings (line %zu)",
                        (k ? k->start_mark.line : map->start_mark.line) + 1);
        if (strlen(scalar(k)) != k->data.scalar.length || strlen(scalar(v)) != v->data.scalar.length)
            return fail(c, where, what, "NUL characters are not allowed (line %zu)", k->start_mark.line + 1);
        if (fn(c, arg, scalar(k), scalar(v)) != 0) return -1;
    }
    return 0;
}

struct env_acc {
    char **v;
    size_t n, cap;
    const char *where;
};

static int env_add(struct ctx *c, void *arg, const char *k, const char *v)
{
    struct env_acc *a = arg;
    if (!*k || strchr(k, '='))
        return fail(c, a->where, "env", "variable names must be non-empty and without '=' (got \"%s\")", k);
    for (size_t i = 0; i < a->n; i++) {
        size_t kl = strlen(k);
        if (strncmp(a->v[i], k, kl) == 0 && a->v[i][kl] == '=')
            return fail(c, a->where, "env", "variable %s is set twice", k);
    }
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        char **nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) return oom(c);
        a->v = nv;
        a->cap = cap;
    }
    char *s = malloc(strlen(k) + strlen(v) + 2);
    if (!s) return oom(c);
    sprintf(s, "%s=%s", k, v);
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
    return 0;
}

struct label_acc {
    dconfig *cfg;
    size_t cap;
};

static int label_add(struct ctx *c, void *arg, const char *k, const char *v)
{
    struct label_acc *a = arg;
    dconfig *cfg = a->cfg;
    if (!*k) return fail(c, "", "labels", "label names must be non-empty");
    for (size_t i = 0; i < cfg->n_labels; i++)
        if (strcmp(cfg->labels[i].key, k) == 0)
            return fail(c, "", "labels", "label %s is set twice", k);
    if (cfg->n_labels == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        dconfig_label *nl = realloc(cfg->labels, cap * sizeof *nl);
        if (!nl) return oom(c);
        cfg->labels = nl;
        a->cap = cap;
    }
    dconfig_label *l = &cfg->labels[cfg->n_labels];
    l->key = strdup(k);
    l->value = strdup(v);
    if (!l->key || !l->value) { free(l->key); free(l->value); return oom(c); }
    cfg->n_labels++;
    return 0;
}

/* ---- agents ------------------------------------------------------------------------------ */

/* Ids name directories ({work_dir}/agents/{id}) and appear in URLs and logs: keep them tame. */
static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64 || id[0] == '.') return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* The agent's own value if it has one, else agent_defaults'; *w names where it came from. */
#define PICK(field) (a->field ? a->field : d ? d->field : NULL)
#define FROM(field) (a->field || !d || !d->field ? aw : "agent_defaults")
#define PICK_IN(sub, field) ((a->sub && a->sub->field) ? a->sub->field : \
                             (d && d->sub && d->sub->field) ? d->sub->field : NULL)
#define FROM_IN(sub, field) ((a->sub && a->sub->field) || !(d && d->sub && d->sub->field) ? \
                             aw : "agent_defaults")

static int resolve_agent(struct ctx *c, const dconfig *cfg, const struct raw_agent *a,
                         const struct raw_agent *d, yaml_node_t *anode, yaml_node_t *dnode,
                         const char *aw, agent_spec *s)
{
    s->id = strdup(a->id);
    if (!s->id) return oom(c);
    if (take_str(c, PICK(type), "", &s->type) || take_str(c, PICK(name), a->id, &s->name) ||
        take_str(c, PICK(version), "", &s->version))
        return -1;

    const char *bin = PICK(binary_path);
    if (!bin || !*bin) return fail(c, aw, "binary_path", "required");
    if (bin[0] != '/')
        return fail(c, FROM(binary_path), "binary_path", "must be an absolute path (got \"%s\")", bin);
    if (take_str(c, bin, NULL, &s->binary_path)) return -1;

    /* Lists and maps replace, never concatenate: the agent's args are the whole argv. */
    int own_args = map_get(c->doc, anode, "args") != NULL;
    if (own_args || !d)
        { if (take_strv(c, a->args, a->args_count, &s->args)) return -1; }
    else if (take_strv(c, d->args, d->args_count, &s->args)) return -1;

    yaml_node_t *env = map_get(c->doc, anode, "env");
    const char *env_where = aw;
    if (!env && dnode) { env = map_get(c->doc, dnode, "env"); env_where = "agent_defaults"; }
    struct env_acc acc = {.where = env_where};
    if (env && walk_string_map(c, env, env_where, "env", env_add, &acc) != 0) {
        strv_free(acc.v);
        return -1;
    }
    if (!acc.v && !(acc.v = strv_new(0))) return oom(c);
    s->env = acc.v;

    const char *cf = PICK(config_file);
    if (cf && *cf && !(s->config_file = strdup(cf))) return oom(c);

    const char *wd = PICK(work_dir);
    if (wd && *wd) {
        if (!(s->work_dir = strdup(wd))) return oom(c);
    } else {
        size_t n = strlen(cfg->daemon.work_dir) + strlen(a->id) + 9;
        if (!(s->work_dir = malloc(n))) return oom(c);
        snprintf(s->work_dir, n, "%s/agents/%s", cfg->daemon.work_dir, a->id);
    }

    const bool *en = PICK(enabled);
    s->enabled = en ? *en : 1;

    char grace[32];
    units_format_duration(cfg->daemon.stop_grace_ms, grace, sizeof grace);
    if (take_dur(c, FROM(stop_grace), "stop_grace", PICK(stop_grace), grace, 0, &s->stop_grace_ms) ||
        take_size(c, FROM(log_max_size), "log_max_size", PICK(log_max_size), "10MiB", 1, &s->log_max_bytes))
        return -1;
    const int *keep = PICK(log_keep);
    s->log_keep = keep ? *keep : 3;
    if (s->log_keep < 0) return fail(c, FROM(log_keep), "log_keep", "must be 0 or more (got %d)", s->log_keep);

    agent_health *h = &s->health;
    if (take_dur(c, FROM_IN(health, interval), "health_check.interval", PICK_IN(health, interval),
                 "30s", 1, &h->interval_ms) ||
        take_dur(c, FROM_IN(health, heartbeat_timeout), "health_check.heartbeat_timeout",
                 PICK_IN(health, heartbeat_timeout), "0", 0, &h->heartbeat_timeout_ms) ||
        take_size(c, FROM_IN(health, memory_threshold), "health_check.memory_threshold",
                  PICK_IN(health, memory_threshold), "0", 0, &h->memory_threshold) ||
        take_dur(c, FROM_IN(health, threshold_duration), "health_check.threshold_duration",
                 PICK_IN(health, threshold_duration), "60s", 0, &h->threshold_duration_ms))
        return -1;
    const double *cpu = PICK_IN(health, cpu_threshold);
    h->cpu_threshold = cpu ? *cpu : 0;
    if (!isfinite(h->cpu_threshold) || h->cpu_threshold < 0)
        return fail(c, FROM_IN(health, cpu_threshold), "health_check.cpu_threshold",
                    "must be a percentage of one core, 0 or more (got %g)", h->cpu_threshold);
    const char *ep = PICK_IN(health, http_endpoint);
    if (ep && *ep) {
        if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)
            return fail(c, FROM_IN(health, http_endpoint), "health_check.http_endpoint",
                        "must be an http:// or https:// URL (got \"%s\")", ep);
        if (!(h->http_endpoint = strdup(ep))) return oom(c);
    }

    agent_restart *r = &s->restart;
    const char *pol = PICK_IN(restart, policy);
    if (!pol || strcmp(pol, "on-failure") == 0) r->policy = AGENT_RESTART_ON_FAILURE;
    else if (strcmp(pol, "always") == 0) r->policy = AGENT_RESTART_ALWAYS;
    else if (strcmp(pol, "never") == 0) r->policy = AGENT_RESTART_NEVER;
    else
        return fail(c, FROM_IN(restart, policy), "restart.policy",
                    "must be always, on-failure or never (got \"%s\")", pol);
    const int *mr = PICK_IN(restart, max_retries);
    r->max_retries = mr ? *mr : 5;
    if (r->max_retries < 0)
        return fail(c, FROM_IN(restart, max_retries), "restart.max_retries",
                    "must be 0 (unlimited) or more (got %d)", r->max_retries);
    if (take_dur(c, FROM_IN(restart, backoff_base), "restart.backoff_base",
                 PICK_IN(restart, backoff_base), "1s", 1, &r->backoff_base_ms) ||
        take_dur(c, FROM_IN(restart, backoff_max), "restart.backoff_max",
                 PICK_IN(restart, backoff_max), "60s", 1, &r->backoff_max_ms))
        return -1;
    if (r->backoff_max_ms < r->backoff_base_ms)
        return fail(c, FROM_IN(restart, backoff_max), "restart.backoff_max",
                    "must not be shorter than restart.backoff_base");
    return 0;
}

static int resolve_agents(struct ctx *c, dconfig *cfg, const struct raw_root *raw, yaml_node_t *root)
{
    if (raw->agents_count == 0) return 0;
    cfg->agents = calloc(raw->agents_count, sizeof *cfg->agents);
    if (!cfg->agents) return oom(c);
    yaml_node_t *seq = map_get(c->doc, root, "agents");
    yaml_node_t *dnode = map_get(c->doc, root, "agent_defaults");
    for (unsigned i = 0; i < raw->agents_count; i++) {
        const struct raw_agent *a = &raw->agents[i];
        char aw[128];
        if (!a->id || !*a->id) {
            snprintf(aw, sizeof aw, "agents[%u]", i);
            return fail(c, aw, "id", "required");
        }
        snprintf(aw, sizeof aw, "agents[%u] (id \"%.64s\")", i, a->id);
        if (!valid_id(a->id))
            return fail(c, aw, "id", "must be 1-64 letters, digits, '.', '_' or '-', not starting with '.'");
        for (unsigned j = 0; j < i; j++)
            if (strcmp(raw->agents[j].id, a->id) == 0)
                return fail(c, aw, "id", "duplicate of agents[%u]", j);
        int rc = resolve_agent(c, cfg, a, raw->agent_defaults, seq_get(c->doc, seq, i),
                               raw->agent_defaults ? dnode : NULL, aw, &cfg->agents[i]);
        cfg->n_agents = i + 1; /* so dconfig_free() releases what resolve_agent built */
        if (rc != 0) return -1;
    }
    return 0;
}

/* ---- the rest of the file ---------------------------------------------------------------- */

static int resolve_collector(struct ctx *c, const char *name, const struct raw_collector *r,
                             dconfig_collector *out)
{
    char key[32];
    snprintf(key, sizeof key, "collectors.%s.interval", name);
    out->enabled = r && r->enabled ? *r->enabled : 1;
    return take_dur(c, "", key, r ? r->interval : NULL, "60s", 1, &out->interval_ms);
}

/* "line N: daemon.SEC.KEY" when the key is in the file, else "daemon.SEC.KEY". */
static const char *daemon_key(struct ctx *c, yaml_node_t *dsec, const char *sec, const char *key, char *buf,
                              size_t len)
{
    yaml_node_t *v = map_get(c->doc, map_get(c->doc, dsec, sec), key);
    if (!v) v = map_get(c->doc, dsec, sec);
    if (v) snprintf(buf, len, "line %zu: daemon.%s.%s", v->start_mark.line + 1, sec, key);
    else snprintf(buf, len, "daemon.%s.%s", sec, key);
    return buf;
}

static int resolve_daemon_tls(struct ctx *c, dconfig_daemon *d, const struct raw_server_tls *t, yaml_node_t *dsec)
{
    static const struct raw_server_tls none;
    if (!t) t = &none;
    char k[128];
    d->tls.enabled = t->enabled ? *t->enabled : 0;
    d->tls.require_client_cert = t->require_client_cert ? *t->require_client_cert : 0;
    if (take_str(c, t->cert_file, "", &d->tls.cert_file) || take_str(c, t->key_file, "", &d->tls.key_file) ||
        take_str(c, t->client_ca_file, "", &d->tls.client_ca_file))
        return -1;
    if (!d->tls.enabled) return 0;
    if (!*d->tls.cert_file) return fail(c, "", daemon_key(c, dsec, "tls", "cert_file", k, sizeof k), "required when daemon.tls.enabled is true");
    if (!*d->tls.key_file) return fail(c, "", daemon_key(c, dsec, "tls", "key_file", k, sizeof k), "required when daemon.tls.enabled is true");
    if (d->tls.require_client_cert && !*d->tls.client_ca_file)
        return fail(c, "", daemon_key(c, dsec, "tls", "client_ca_file", k, sizeof k), "required when require_client_cert is true");
    return 0;
}

static int is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') || (s[n] >= 'A' && s[n] <= 'F'))) return 0;
    return n == 64;
}

static int resolve_auth(struct ctx *c, dconfig_daemon *d, const struct raw_auth *a, yaml_node_t *dsec)
{
    static const struct raw_auth none;
    if (!a) a = &none;
    char k[128];
    /* Opening the agents to anyone must be said in so many words. */
    if (a->insecure && strcmp(a->insecure, "true") && strcmp(a->insecure, "false"))
        return fail(c, "", daemon_key(c, dsec, "auth", "insecure", k, sizeof k), "must be true or false (got \"%.40s\")", a->insecure);
    d->auth.insecure = a->insecure && !strcmp(a->insecure, "true");
    if (take_str(c, a->manager_token_sha256, "", &d->auth.manager_token_sha256) ||
        take_strv(c, a->allowed_identities, a->allowed_identities_count, &d->auth.allowed_identities))
        return -1;
    d->auth.n_allowed_identities = a->allowed_identities_count;
    char *h = d->auth.manager_token_sha256;
    if (*h && !is_hex64(h))
        return fail(c, "", daemon_key(c, dsec, "auth", "manager_token_sha256", k, sizeof k),
                    "must be the SHA-256 of the token as 64 hex digits (printf %%s TOKEN | sha256sum)");
    for (char *p = h; *p; p++)
        if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    for (size_t i = 0; i < d->auth.n_allowed_identities; i++)
        if (!d->auth.allowed_identities[i][0])
            return fail(c, "", daemon_key(c, dsec, "auth", "allowed_identities", k, sizeof k), "entry %zu is empty", i);
    if (d->auth.n_allowed_identities && (!d->tls.enabled || !*d->tls.client_ca_file))
        return fail(c, "", daemon_key(c, dsec, "auth", "allowed_identities", k, sizeof k),
                    "needs daemon.tls.enabled: true and daemon.tls.client_ca_file (the CA of the manager's certificate)");
    return 0;
}

static int resolve_daemon(struct ctx *c, dconfig *cfg, const struct raw_daemon *r)
{
    static const struct raw_daemon none;
    if (!r) r = &none;
    dconfig_daemon *d = &cfg->daemon;
    const char *lvl = r->log_level ? r->log_level : "info";
    if (log_parse_level(lvl, &d->log_level) != 0)
        return fail(c, "", "daemon.log_level", "must be debug, info, warn or error (got \"%s\")", lvl);
    if (take_str(c, r->id, "", &d->id) || take_str(c, r->log_file, "", &d->log_file) ||
        take_str(c, r->pid_file, "", &d->pid_file) ||
        take_str(c, r->work_dir, "/var/lib/ops-daemon", &d->work_dir) ||
        take_str(c, r->grpc_host, "127.0.0.1", &d->grpc_host) ||
        take_str(c, r->http_host, "127.0.0.1", &d->http_host))
        return -1;
    if (!*d->work_dir) return fail(c, "", "daemon.work_dir", "must not be empty");
    for (const char *p = d->id; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return fail(c, "", "daemon.id", "must not contain spaces or control characters");
    if (take_port(c, "daemon.grpc_port", r->grpc_port, 9091, &d->grpc_port) ||
        take_port(c, "daemon.http_port", r->http_port, 8084, &d->http_port))
        return -1;
    d->stop_agents_on_exit = r->stop_agents_on_exit ? *r->stop_agents_on_exit : 0;
    yaml_node_t *dsec = map_get(c->doc, yaml_document_get_root_node(c->doc), "daemon");
    yaml_node_t *hn = map_get(c->doc, dsec, "grpc_host");
    d->grpc_host_line = hn ? (int)hn->start_mark.line + 1 : 0;
    if (take_dur(c, "", "daemon.stop_grace", r->stop_grace, "30s", 0, &d->stop_grace_ms) ||
        take_dur(c, "", "daemon.resource_interval", r->resource_interval, "10s", 1, &d->resource_interval_ms))
        return -1;
    return resolve_daemon_tls(c, d, r->tls, dsec) || resolve_auth(c, d, r->auth, dsec) ? -1 : 0;
}

static int take_compression(struct ctx *c, const char *val, int *gzip)
{
    *gzip = 0;
    if (!val || !*val || !strcmp(val, "none")) return 0;
    if (!strcmp(val, "gzip")) { *gzip = 1; return 0; }
    return fail(c, "", "manager.compression", "must be none or gzip (got \"%.100s\")", val);
}

/* node_auth token mode: the enrollment token (inline or a file) and the secret's file. */
static int take_enrollment(struct ctx *c, dconfig *cfg, const struct raw_manager *r)
{
    dconfig_manager *m = &cfg->manager;
    size_t n = strlen(cfg->daemon.work_dir) + 14;
    char *def = malloc(n);
    if (!def) return oom(c);
    snprintf(def, n, "%s/node_secret", cfg->daemon.work_dir);
    int rc = take_str(c, r->enrollment_token, "", &m->enrollment_token) ||
             take_str(c, r->enrollment_token_file, "", &m->enrollment_token_file) ||
             take_str(c, r->secret_file && *r->secret_file ? r->secret_file : NULL, def, &m->secret_file);
    free(def);
    if (rc) return -1;
    if (*m->enrollment_token && *m->enrollment_token_file)
        return fail(c, "", "manager.enrollment_token_file", "enrollment_token and enrollment_token_file exclude each other: set one");
    return 0;
}

static int resolve_manager(struct ctx *c, dconfig *cfg, const struct raw_manager *r)
{
    static const struct raw_manager none;
    static const struct raw_tls no_tls;
    if (!r) r = &none;
    const struct raw_tls *t = r->tls ? r->tls : &no_tls;
    dconfig_manager *m = &cfg->manager;
    if (take_str(c, r->address, "127.0.0.1:9090", &m->address)) return -1;
    if (!*m->address) return fail(c, "", "manager.address", "must not be empty");
    m->stream_only = r->stream_only ? *r->stream_only : 0;
    m->tls.enabled = t->enabled ? *t->enabled : 0;
    if (take_str(c, t->cert_file, "", &m->tls.cert_file) || take_str(c, t->key_file, "", &m->tls.key_file) ||
        take_str(c, t->ca_file, "", &m->tls.ca_file) || take_str(c, t->server_name, "", &m->tls.server_name))
        return -1;
    if (!*m->tls.cert_file != !*m->tls.key_file)
        return fail(c, "", *m->tls.cert_file ? "manager.tls.key_file" : "manager.tls.cert_file",
                    "cert_file and key_file go together: set both or neither");
    size_t n = strlen(cfg->daemon.work_dir) + 7;
    char *spool = malloc(n);
    if (!spool) return oom(c);
    snprintf(spool, n, "%s/spool", cfg->daemon.work_dir);
    int rc = take_str(c, r->spool_dir && *r->spool_dir ? r->spool_dir : NULL, spool, &m->spool_dir);
    free(spool);
    if (rc) return -1;
    if (take_enrollment(c, cfg, r) != 0) return -1;
    return take_dur(c, "", "manager.heartbeat_interval", r->heartbeat_interval, "60s", 1, &m->heartbeat_interval_ms) ||
           take_dur(c, "", "manager.reconnect_interval", r->reconnect_interval, "10s", 1, &m->reconnect_interval_ms) ||
           take_dur(c, "", "manager.timeout", r->timeout, "30s", 1, &m->timeout_ms) ||
           take_dur(c, "", "manager.metrics_interval", r->metrics_interval, "60s", 1, &m->metrics_interval_ms) ||
           take_size(c, "", "manager.spool_max", r->spool_max, "64MiB", 1, &m->spool_max_bytes) ||
           take_dur(c, "", "manager.keepalive_time", r->keepalive_time, "30s", 1, &m->keepalive_time_ms) ||
           take_dur(c, "", "manager.keepalive_timeout", r->keepalive_timeout, "10s", 1, &m->keepalive_timeout_ms) ||
           take_size(c, "", "manager.max_message_size", r->max_message_size, "10MiB", 1, &m->max_message_bytes) ||
           take_size(c, "", "manager.window_size", r->window_size, "1MiB", 1, &m->window_bytes) ||
           take_compression(c, r->compression, &m->gzip) ? -1 : 0;
}

static int resolve_collectors(struct ctx *c, dconfig *cfg, const struct raw_collectors *r)
{
    static const struct raw_collectors none;
    if (!r) r = &none;
    dconfig_collectors *o = &cfg->collectors;
    if (resolve_collector(c, "cpu", r->cpu, &o->cpu) || resolve_collector(c, "memory", r->memory, &o->memory) ||
        resolve_collector(c, "disk", r->disk, &o->disk) || resolve_collector(c, "network", r->network, &o->network))
        return -1;
    o->cpu_per_core = r->cpu && r->cpu->per_core ? *r->cpu->per_core : 0;
    if (take_strv(c, r->disk ? r->disk->mount_points : NULL, r->disk ? r->disk->mount_points_count : 0,
                  &o->mount_points) ||
        take_strv(c, r->network ? r->network->interfaces : NULL, r->network ? r->network->interfaces_count : 0,
                  &o->interfaces))
        return -1;
    o->n_mount_points = r->disk ? r->disk->mount_points_count : 0;
    o->n_interfaces = r->network ? r->network->interfaces_count : 0;
    for (size_t i = 0; i < o->n_mount_points; i++)
        if (o->mount_points[i][0] != '/')
            return fail(c, "", "collectors.disk.mount_points", "must be absolute paths (got \"%s\")",
                        o->mount_points[i]);
    return 0;
}

/* "updates.KEY (line N)": where the key is in the file, for checks libcyaml cannot make. */
static const char *updates_key(struct ctx *c, const char *key, char *buf, size_t len)
{
    yaml_node_t *sec = map_get(c->doc, yaml_document_get_root_node(c->doc), "updates");
    yaml_node_t *v = map_get(c->doc, sec, key);
    if (v) snprintf(buf, len, "line %zu: updates.%s", v->start_mark.line + 1, key);
    else snprintf(buf, len, "updates.%s", key);
    return buf;
}

static int resolve_updates(struct ctx *c, dconfig *cfg, const struct raw_updates *r)
{
    static const struct raw_updates none;
    if (!r) r = &none;
    dconfig_updates *u = &cfg->updates;
    char where[96];
    u->enabled = r->enabled ? *r->enabled : 1;
    if (take_str(c, r->public_key, "", &u->public_key)) return -1;
    if (*u->public_key && u->public_key[0] != '/')
        return fail(c, "", updates_key(c, "public_key", where, sizeof where), "must be an absolute path (got \"%s\")",
                    u->public_key);
    u->keep_versions = r->keep_versions ? *r->keep_versions : 3;
    if (u->keep_versions < 1 || u->keep_versions > 100)
        return fail(c, "", updates_key(c, "keep_versions", where, sizeof where), "must be 1-100 (got %d)", u->keep_versions);
    return take_dur(c, "", updates_key(c, "rollback_window", where, sizeof where), r->rollback_window, "5s", 1,
                    &u->rollback_window_ms);
}

static int resolve_prometheus(struct ctx *c, dconfig *cfg, const struct raw_prometheus *r)
{
    static const struct raw_prometheus none;
    if (!r) r = &none;
    cfg->prometheus.enabled = r->enabled ? *r->enabled : 1;
    if (take_str(c, r->listen, "127.0.0.1:9191", &cfg->prometheus.listen)) return -1;
    char host[256], why[300];
    int port;
    if (prom_parse_listen(cfg->prometheus.listen, host, sizeof host, &port, why, sizeof why) != 0)
        return fail(c, "", "prometheus.listen", "%s", why);
    return 0;
}

static int resolve(struct ctx *c, dconfig *cfg, const struct raw_root *raw)
{
    if (resolve_prometheus(c, cfg, raw->prometheus) || resolve_daemon(c, cfg, raw->daemon) ||
        resolve_manager(c, cfg, raw->manager) || resolve_collectors(c, cfg, raw->collectors) ||
        resolve_updates(c, cfg, raw->updates))
        return -1;
    yaml_node_t *root = yaml_document_get_root_node(c->doc);
    yaml_node_t *labels = map_get(c->doc, root, "labels");
    struct label_acc la = {.cfg = cfg};
    if (labels && walk_string_map(c, labels, "", "labels", label_add, &la) != 0) return -1;
    return resolve_agents(c, cfg, raw, root);
}

int dconfig_load_string(const char *name, const char *yaml, size_t len, dconfig **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    struct raw_root *raw = NULL;
    static const struct raw_root empty;
    /* libcyaml refuses an empty document; an empty file simply means "all defaults". */
    int blank = 1;
    for (size_t i = 0; i < len && blank; i++) {
        if (yaml[i] == '#') while (i < len && yaml[i] != '\n') i++;
        else if (yaml[i] != ' ' && yaml[i] != '\t' && yaml[i] != '\n' && yaml[i] != '\r') blank = 0;
    }
    if (!blank && cfg_load_string(name, yaml, len, &root_schema, (void **)&raw, err, errlen) != 0)
        return -1;

    struct ctx c = {.name = name, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_doc = 0, rc = -1;
    dconfig *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->path = strdup(name))) { oom(&c); goto done; }
    if (!yaml_parser_initialize(&parser)) { oom(&c); goto done; }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    have_doc = yaml_parser_load(&parser, &doc);
    if (!have_doc)
        snprintf(err, errlen, "%s: line %zu: %s", name, parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "cannot parse");
    yaml_parser_delete(&parser);
    if (!have_doc) goto done;
    c.doc = &doc;
    rc = resolve(&c, cfg, raw ? raw : &empty);
done:
    if (have_doc) yaml_document_delete(&doc);
    cfg_free(&root_schema, raw);
    if (rc != 0) { dconfig_free(cfg); return -1; }
    *out = cfg;
    return 0;
}

int dconfig_load(const char *path, dconfig **out, char *err, size_t errlen)
{
    *out = NULL;
    char *buf;
    size_t len;
    if (cfg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = dconfig_load_string(path, buf, len, out, err, errlen);
    free(buf);
    return rc;
}

void dconfig_free(dconfig *cfg)
{
    if (!cfg) return;
    free(cfg->path);
    free(cfg->prometheus.listen);
    dconfig_daemon *d = &cfg->daemon;
    free(d->id); free(d->log_file); free(d->pid_file); free(d->work_dir);
    free(d->grpc_host); free(d->http_host);
    free(d->tls.cert_file); free(d->tls.key_file); free(d->tls.client_ca_file);
    strv_free(d->auth.allowed_identities); free(d->auth.manager_token_sha256);
    dconfig_manager *m = &cfg->manager;
    free(m->address); free(m->spool_dir);
    free(m->enrollment_token); free(m->enrollment_token_file); free(m->secret_file);
    free(m->tls.cert_file); free(m->tls.key_file); free(m->tls.ca_file); free(m->tls.server_name);
    free(cfg->updates.public_key);
    for (size_t i = 0; i < cfg->n_labels; i++) { free(cfg->labels[i].key); free(cfg->labels[i].value); }
    free(cfg->labels);
    strv_free(cfg->collectors.mount_points);
    strv_free(cfg->collectors.interfaces);
    for (size_t i = 0; i < cfg->n_agents; i++) agent_spec_free(&cfg->agents[i]);
    free(cfg->agents);
    free(cfg);
}

static int is_loopback_host(const char *h)
{
    return !strcmp(h, "localhost") || !strcmp(h, "::1") || !strcmp(h, "[::1]") || !strncmp(h, "127.", 4);
}

int dconfig_check_exposure(const dconfig *cfg, char *err, size_t errlen)
{
    const dconfig_daemon *d = &cfg->daemon;
    if (is_loopback_host(d->grpc_host) || d->auth.n_allowed_identities || d->auth.manager_token_sha256[0]) return 0;
    char line[32] = "";
    if (d->grpc_host_line) snprintf(line, sizeof line, "line %d: ", d->grpc_host_line);
    if (d->auth.insecure) {
        snprintf(err, errlen, "%s: %sdaemon.grpc_host: DaemonService on %s without authentication "
                 "(daemon.auth.insecure: true): anyone who can reach port %d can start and stop agents on this host",
                 cfg->path, line, d->grpc_host, d->grpc_port);
        return 1;
    }
    snprintf(err, errlen, "%s: %sdaemon.grpc_host: %s is not a loopback address and daemon.auth has neither "
             "manager_token_sha256 nor allowed_identities: set one of them (or daemon.auth.insecure: true to let "
             "anyone who reaches the port drive the agents)", cfg->path, line, d->grpc_host);
    return -1;
}

const agent_spec *dconfig_find_agent(const dconfig *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->n_agents; i++)
        if (strcmp(cfg->agents[i].id, id) == 0) return &cfg->agents[i];
    return NULL;
}

/* ---- writing YAML back ------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = 1; return; }
        if (b->p && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) { b->failed = 1; return; }
        b->p = np;
        b->cap = cap;
    }
}

/* A YAML double-quoted scalar: safe for any string, whatever YAML would otherwise make of it
 * ("yes", "1e3", ": ", leading spaces...). */
static void sb_quoted(struct sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') sb_printf(b, "\\%c", *p);
        else if (*p == '\n') sb_printf(b, "\\n");
        else if (*p == '\t') sb_printf(b, "\\t");
        else if (*p < 0x20 || *p == 0x7f) sb_printf(b, "\\x%02x", *p);
        else sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

static void sb_kv_str(struct sbuf *b, const char *ind, const char *key, const char *val)
{
    sb_printf(b, "%s%s: ", ind, key);
    sb_quoted(b, val);
    sb_printf(b, "\n");
}

static void sb_kv_dur(struct sbuf *b, const char *ind, const char *key, int64_t ms)
{
    char buf[48];
    sb_printf(b, "%s%s: \"%s\"\n", ind, key, units_format_duration(ms, buf, sizeof buf));
}

static void sb_kv_size(struct sbuf *b, const char *ind, const char *key, uint64_t v)
{
    static const struct { const char *unit; int shift; } u[] = {
        {"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10},
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (v && v % (1ULL << u[i].shift) == 0) {
            sb_printf(b, "%s%s: \"%llu%s\"\n", ind, key, (unsigned long long)(v >> u[i].shift), u[i].unit);
            return;
        }
    sb_printf(b, "%s%s: \"%llu\"\n", ind, key, (unsigned long long)v);
}

static void sb_kv_bool(struct sbuf *b, const char *ind, const char *key, int v)
{
    sb_printf(b, "%s%s: %s\n", ind, key, v ? "true" : "false");
}

static void sb_list(struct sbuf *b, const char *ind, const char *key, char *const *v)
{
    sb_printf(b, "%s%s: [", ind, key);
    for (size_t i = 0; v && v[i]; i++) {
        if (i) sb_printf(b, ", ");
        sb_quoted(b, v[i]);
    }
    sb_printf(b, "]\n");
}

static void sb_double(struct sbuf *b, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    sb_printf(b, "%s", buf);
}

/* first: prefix of the first line ("  - " in a list); ind: prefix of the others. */
static void emit_agent(struct sbuf *b, const agent_spec *s, const char *first, const char *ind)
{
    sb_kv_str(b, first, "id", s->id);
    sb_kv_str(b, ind, "type", s->type);
    sb_kv_str(b, ind, "name", s->name);
    sb_kv_str(b, ind, "version", s->version);
    sb_kv_str(b, ind, "binary_path", s->binary_path);
    sb_list(b, ind, "args", s->args);
    if (s->env && s->env[0]) {
        sb_printf(b, "%senv:\n", ind);
        for (char **e = s->env; *e; e++) {
            const char *eq = strchr(*e, '=');
            size_t kl = eq ? (size_t)(eq - *e) : strlen(*e);
            char *k = strndup(*e, kl);
            if (!k) { b->failed = 1; return; }
            sb_printf(b, "%s  ", ind);
            sb_quoted(b, k);
            sb_printf(b, ": ");
            sb_quoted(b, eq ? eq + 1 : "");
            sb_printf(b, "\n");
            free(k);
        }
    } else {
        sb_printf(b, "%senv: {}\n", ind);
    }
    if (s->config_file) sb_kv_str(b, ind, "config_file", s->config_file);
    sb_kv_str(b, ind, "work_dir", s->work_dir);
    sb_kv_bool(b, ind, "enabled", s->enabled);
    sb_kv_dur(b, ind, "stop_grace", s->stop_grace_ms);
    sb_kv_size(b, ind, "log_max_size", s->log_max_bytes);
    sb_printf(b, "%slog_keep: %d\n", ind, s->log_keep);

    char sub[64];
    snprintf(sub, sizeof sub, "%s  ", ind);
    sb_printf(b, "%shealth_check:\n", ind);
    sb_kv_dur(b, sub, "interval", s->health.interval_ms);
    sb_kv_dur(b, sub, "heartbeat_timeout", s->health.heartbeat_timeout_ms);
    sb_printf(b, "%scpu_threshold: ", sub);
    sb_double(b, s->health.cpu_threshold);
    sb_printf(b, "\n");
    sb_kv_size(b, sub, "memory_threshold", s->health.memory_threshold);
    sb_kv_dur(b, sub, "threshold_duration", s->health.threshold_duration_ms);
    if (s->health.http_endpoint) sb_kv_str(b, sub, "http_endpoint", s->health.http_endpoint);
    sb_printf(b, "%srestart:\n", ind);
    sb_printf(b, "%spolicy: %s\n", sub, agent_restart_policy_name(s->restart.policy));
    sb_printf(b, "%smax_retries: %d\n", sub, s->restart.max_retries);
    sb_kv_dur(b, sub, "backoff_base", s->restart.backoff_base_ms);
    sb_kv_dur(b, sub, "backoff_max", s->restart.backoff_max_ms);
}

static int finish(struct sbuf *b, char **out)
{
    if (b->failed || !b->p) { free(b->p); *out = NULL; return -1; }
    *out = b->p;
    return 0;
}

int dconfig_agent_yaml(const agent_spec *spec, char **out)
{
    struct sbuf b = {0};
    emit_agent(&b, spec, "", "");
    return finish(&b, out);
}

static void emit_collector(struct sbuf *b, const char *name, const dconfig_collector *c)
{
    sb_printf(b, "  %s:\n", name);
    sb_kv_bool(b, "    ", "enabled", c->enabled);
    sb_kv_dur(b, "    ", "interval", c->interval_ms);
}

int dconfig_dump_yaml(const dconfig *cfg, char **out)
{
    struct sbuf b = {0};
    const dconfig_daemon *d = &cfg->daemon;
    const dconfig_manager *m = &cfg->manager;
    const dconfig_collectors *co = &cfg->collectors;

    sb_printf(&b, "# effective configuration of ops-daemon, defaults filled in\n");
    sb_printf(&b, "daemon:\n");
    sb_kv_str(&b, "  ", "id", d->id);
    sb_printf(&b, "  log_level: %s\n", log_level_name(d->log_level));
    sb_kv_str(&b, "  ", "log_file", d->log_file);
    sb_kv_str(&b, "  ", "pid_file", d->pid_file);
    sb_kv_str(&b, "  ", "work_dir", d->work_dir);
    sb_kv_str(&b, "  ", "grpc_host", d->grpc_host);
    sb_printf(&b, "  grpc_port: %d\n", d->grpc_port);
    sb_kv_str(&b, "  ", "http_host", d->http_host);
    sb_printf(&b, "  http_port: %d\n", d->http_port);
    sb_kv_bool(&b, "  ", "stop_agents_on_exit", d->stop_agents_on_exit);
    sb_kv_dur(&b, "  ", "stop_grace", d->stop_grace_ms);
    sb_kv_dur(&b, "  ", "resource_interval", d->resource_interval_ms);
    sb_printf(&b, "  tls:\n");
    sb_kv_bool(&b, "    ", "enabled", d->tls.enabled);
    sb_kv_str(&b, "    ", "cert_file", d->tls.cert_file);
    sb_kv_str(&b, "    ", "key_file", d->tls.key_file);
    sb_kv_str(&b, "    ", "client_ca_file", d->tls.client_ca_file);
    sb_kv_bool(&b, "    ", "require_client_cert", d->tls.require_client_cert);
    sb_printf(&b, "  auth:\n");
    sb_list(&b, "    ", "allowed_identities", d->auth.allowed_identities);
    sb_kv_str(&b, "    ", "manager_token_sha256", d->auth.manager_token_sha256);
    sb_kv_bool(&b, "    ", "insecure", d->auth.insecure);

    sb_printf(&b, "manager:\n");
    sb_kv_str(&b, "  ", "address", m->address);
    sb_printf(&b, "  tls:\n");
    sb_kv_bool(&b, "    ", "enabled", m->tls.enabled);
    sb_kv_str(&b, "    ", "cert_file", m->tls.cert_file);
    sb_kv_str(&b, "    ", "key_file", m->tls.key_file);
    sb_kv_str(&b, "    ", "ca_file", m->tls.ca_file);
    sb_kv_str(&b, "    ", "server_name", m->tls.server_name);
    sb_kv_dur(&b, "  ", "heartbeat_interval", m->heartbeat_interval_ms);
    sb_kv_dur(&b, "  ", "reconnect_interval", m->reconnect_interval_ms);
    sb_kv_dur(&b, "  ", "timeout", m->timeout_ms);
    sb_kv_dur(&b, "  ", "metrics_interval", m->metrics_interval_ms);
    sb_kv_str(&b, "  ", "spool_dir", m->spool_dir);
    /* the token itself never goes into a dump */
    sb_kv_str(&b, "  ", "enrollment_token", *m->enrollment_token ? "(set, not shown)" : "");
    sb_kv_str(&b, "  ", "enrollment_token_file", m->enrollment_token_file);
    sb_kv_str(&b, "  ", "secret_file", m->secret_file);
    sb_kv_size(&b, "  ", "spool_max", m->spool_max_bytes);
    sb_kv_dur(&b, "  ", "keepalive_time", m->keepalive_time_ms);
    sb_kv_dur(&b, "  ", "keepalive_timeout", m->keepalive_timeout_ms);
    sb_kv_size(&b, "  ", "max_message_size", m->max_message_bytes);
    sb_kv_size(&b, "  ", "window_size", m->window_bytes);
    sb_kv_bool(&b, "  ", "stream_only", m->stream_only);
    sb_kv_str(&b, "  ", "compression", m->gzip ? "gzip" : "none");

    sb_printf(&b, "updates:\n");
    sb_kv_bool(&b, "  ", "enabled", cfg->updates.enabled);
    sb_kv_str(&b, "  ", "public_key", cfg->updates.public_key);
    sb_printf(&b, "  keep_versions: %d\n", cfg->updates.keep_versions);
    sb_kv_dur(&b, "  ", "rollback_window", cfg->updates.rollback_window_ms);

    if (cfg->n_labels) {
        sb_printf(&b, "labels:\n");
        for (size_t i = 0; i < cfg->n_labels; i++) {
            sb_printf(&b, "  ");
            sb_quoted(&b, cfg->labels[i].key);
            sb_printf(&b, ": ");
            sb_quoted(&b, cfg->labels[i].value);
            sb_printf(&b, "\n");
        }
    } else {
        sb_printf(&b, "labels: {}\n");
    }

    sb_printf(&b, "collectors:\n");
    emit_collector(&b, "cpu", &co->cpu);
    sb_kv_bool(&b, "    ", "per_core", co->cpu_per_core);
    emit_collector(&b, "memory", &co->memory);
    emit_collector(&b, "disk", &co->disk);
    sb_list(&b, "    ", "mount_points", co->mount_points);
    emit_collector(&b, "network", &co->network);
    sb_list(&b, "    ", "interfaces", co->interfaces);

    sb_printf(&b, "prometheus:\n");
    sb_kv_bool(&b, "  ", "enabled", cfg->prometheus.enabled);
    sb_kv_str(&b, "  ", "listen", cfg->prometheus.listen);

    if (cfg->n_agents) {
        sb_printf(&b, "agents:\n");
        for (size_t i = 0; i < cfg->n_agents; i++) emit_agent(&b, &cfg->agents[i], "  - ", "    ");
    } else {
        sb_printf(&b, "agents: []\n");
    }
    return finish(&b, out);
}
