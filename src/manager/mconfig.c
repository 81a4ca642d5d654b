/* mconfig: manager.yaml -> struct mconfig. libcyaml reads the file into a "raw" tree in which
 * every field is optional (a NULL pointer when absent, so a default can be told apart from an
 * explicit value); then each value is defaulted, parsed (durations, sizes) and checked here. */
#include "manager/mconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/cfg.h"
#include "base/prom.h"
#include "base/units.h"

/* Booleans are read as text: libcyaml takes any word but a few for true. */
struct raw_tls {
    char *enabled;
    char *cert_file, *key_file, *ca_file;
    char *require_client_cert;
};

struct raw_grpc {
    char *host;
    int *port;
    struct raw_tls *tls;
    char *max_message_size, *keepalive_time, *keepalive_timeout, *min_ping_interval;
    char *window_size, *compression;
};

struct raw_database {
    char *driver, *dsn;
};

struct raw_node {
    char *heartbeat_interval, *metrics_interval, *offline_after;
    char *auto_register;
};

struct raw_metrics {
    char *retention, *retention_interval;
};

struct raw_log {
    char *level, *file;
};

struct raw_prometheus {
    char *enabled, *listen;
};

struct raw_token {
    char *name, *role, *sha256;
};

struct raw_admin {
    char *listen;
    struct raw_token *tokens;
    unsigned tokens_count;
};

struct raw_daemons {
    char *token, *token_file;
};

struct raw_node_auth;
struct raw_limits;

struct raw {
    struct raw_node_auth *node_auth;
    struct raw_limits *limits;
    struct raw_daemons *daemons;
    struct raw_prometheus *prometheus;
    struct raw_grpc *grpc;
    struct raw_database *database;
    struct raw_node *node;
    struct raw_metrics *metrics;
    struct raw_log *log;
    struct raw_admin *admin;
};

#define OPT (CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL)
#define STR(key, type, member) CYAML_FIELD_STRING_PTR(key, OPT, type, member, 0, CYAML_UNLIMITED)

static const cyaml_schema_field_t tls_fields[] = {
    STR("enabled", struct raw_tls, enabled),
    STR("cert_file", struct raw_tls, cert_file),
    STR("key_file", struct raw_tls, key_file),
    STR("ca_file", struct raw_tls, ca_file),
    STR("require_client_cert", struct raw_tls, require_client_cert),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t grpc_fields[] = {
    STR("host", struct raw_grpc, host),
    CYAML_FIELD_INT_PTR("port", OPT, struct raw_grpc, port),
    CYAML_FIELD_MAPPING_PTR("tls", OPT, struct raw_grpc, tls, tls_fields),
    STR("max_message_size", struct raw_grpc, max_message_size),
    STR("keepalive_time", struct raw_grpc, keepalive_time),
    STR("keepalive_timeout", struct raw_grpc, keepalive_timeout),
    STR("min_ping_interval", struct raw_grpc, min_ping_interval),
    STR("window_size", struct raw_grpc, window_size),
    STR("compression", struct raw_grpc, compression),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t database_fields[] = {
    STR("driver", struct raw_database, driver),
    STR("dsn", struct raw_database, dsn),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t node_fields[] = {
    STR("heartbeat_interval", struct raw_node, heartbeat_interval),
    STR("metrics_interval", struct raw_node, metrics_interval),
    STR("offline_after", struct raw_node, offline_after),
    STR("auto_register", struct raw_node, auto_register),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t metrics_fields[] = {
    STR("retention", struct raw_metrics, retention),
    STR("retention_interval", struct raw_metrics, retention_interval),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t log_fields[] = {
    STR("level", struct raw_log, level),
    STR("file", struct raw_log, file),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t prometheus_fields[] = {
    STR("enabled", struct raw_prometheus, enabled),
    STR("listen", struct raw_prometheus, listen),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t token_fields[] = {
    STR("name", struct raw_token, name),
    STR("role", struct raw_token, role),
    STR("sha256", struct raw_token, sha256),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t token_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_token, token_fields),
};

static const cyaml_schema_field_t admin_fields[] = {
    STR("listen", struct raw_admin, listen),
    CYAML_FIELD_SEQUENCE("tokens", OPT, struct raw_admin, tokens, &token_schema, 0,
                         CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

/* node_auth and limits */
struct raw_allow {
    char *identity;
    char **nodes;
    unsigned nodes_count;
};

struct raw_node_auth {
    char *mode;
    struct raw_allow *allow;
    unsigned allow_count;
};

struct raw_limits {
    char *max_metrics_per_report, *max_values_per_metric, *max_labels, *max_string_bytes;
    char *max_agents_per_sync, *max_update_streams, *register_per_minute, *register_burst;
    char *max_streams_per_connection;
    char *refusal_log_interval;
};

static const cyaml_schema_value_t node_id_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t allow_fields[] = {
    STR("identity", struct raw_allow, identity),
    CYAML_FIELD_SEQUENCE("nodes", OPT, struct raw_allow, nodes, &node_id_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t allow_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_allow, allow_fields),
};

static const cyaml_schema_field_t node_auth_fields[] = {
    STR("mode", struct raw_node_auth, mode),
    CYAML_FIELD_SEQUENCE("allow", OPT, struct raw_node_auth, allow, &allow_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t limits_fields[] = {
    STR("max_metrics_per_report", struct raw_limits, max_metrics_per_report),
    STR("max_values_per_metric", struct raw_limits, max_values_per_metric),
    STR("max_labels", struct raw_limits, max_labels),
    STR("max_string_bytes", struct raw_limits, max_string_bytes),
    STR("max_agents_per_sync", struct raw_limits, max_agents_per_sync),
    STR("max_update_streams", struct raw_limits, max_update_streams),
    STR("max_streams_per_connection", struct raw_limits, max_streams_per_connection),
    STR("register_per_minute", struct raw_limits, register_per_minute),
    STR("register_burst", struct raw_limits, register_burst),
    STR("refusal_log_interval", struct raw_limits, refusal_log_interval),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t daemons_fields[] = {
    STR("token", struct raw_daemons, token),
    STR("token_file", struct raw_daemons, token_file),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t top_fields[] = {
    CYAML_FIELD_MAPPING_PTR("node_auth", OPT, struct raw, node_auth, node_auth_fields),
    CYAML_FIELD_MAPPING_PTR("limits", OPT, struct raw, limits, limits_fields),
    CYAML_FIELD_MAPPING_PTR("daemons", OPT, struct raw, daemons, daemons_fields),
    CYAML_FIELD_MAPPING_PTR("prometheus", OPT, struct raw, prometheus, prometheus_fields),
    CYAML_FIELD_MAPPING_PTR("grpc", OPT, struct raw, grpc, grpc_fields),
    CYAML_FIELD_MAPPING_PTR("database", OPT, struct raw, database, database_fields),
    CYAML_FIELD_MAPPING_PTR("node", OPT, struct raw, node, node_fields),
    CYAML_FIELD_MAPPING_PTR("metrics", OPT, struct raw, metrics, metrics_fields),
    CYAML_FIELD_MAPPING_PTR("log", OPT, struct raw, log, log_fields),
    CYAML_FIELD_MAPPING_PTR("admin", OPT, struct raw, admin, admin_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t top_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw, top_fields),
};

/* ---- checking ------------------------------------------------------------------------------ */

typedef struct checker {
    const char *name;
    char *err;
    size_t errlen;
    int failed;
    const char *text; /* the YAML, to find a value's line; NULL when there is none */
    size_t len;
} checker;

/* The line of the first occurrence of value after the first occurrence of anchor, or 0:
 * libcyaml keeps no positions once loaded, and a token entry is easier to find by its line. */
static int line_of(const checker *ck, const char *anchor, const char *value)
{
    if (!ck->text || !value || !*value) return 0;
    const char *end = ck->text + ck->len, *p = ck->text;
    const char *a = memmem(p, ck->len, anchor, strlen(anchor));
    if (a) p = a;
    const char *v = memmem(p, (size_t)(end - p), value, strlen(value));
    if (!v) return 0;
    int line = 1;
    for (const char *c = ck->text; c < v; c++) line += *c == '\n';
    return line;
}

/* Records the first problem as "FILE: key: problem (got 'x', expected ...)". */
__attribute__((format(printf, 5, 6)))
static void bad(checker *ck, const char *key, const char *got, const char *problem,
                const char *expected_fmt, ...)
{
    if (ck->failed) return;
    ck->failed = 1;
    char expected[256];
    va_list ap;
    va_start(ap, expected_fmt);
    vsnprintf(expected, sizeof expected, expected_fmt, ap);
    va_end(ap);
    snprintf(ck->err, ck->errlen, "%s: %s: %s (got '%s', expected %s)", ck->name, key, problem,
             got, expected);
}

static void duration(checker *ck, const char *key, const char *v, int64_t def, int positive,
                     int64_t *out)
{
    *out = def;
    if (!v) return;
    if (units_parse_duration_ms(v, out) < 0) {
        bad(ck, key, v, "not a duration", "e.g. 30s, 5m, 1h30m, 7d");
        *out = def;
    } else if (positive && *out <= 0) {
        bad(ck, key, v, "must be positive", "a duration above 0, e.g. 60s");
    }
}

static int boolean(checker *ck, const char *key, const char *v, int def)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    if (!v) return def;
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(v, yes[i]) == 0) return 1;
        if (strcasecmp(v, no[i]) == 0) return 0;
    }
    bad(ck, key, v, "not a boolean", "true or false");
    return def;
}

static char *dup_or(checker *ck, const char *v, const char *def)
{
    char *d = strdup(v ? v : def);
    if (!d && !ck->failed) {
        ck->failed = 1;
        snprintf(ck->err, ck->errlen, "%s: out of memory", ck->name);
    }
    return d;
}

/* Like bad(), with the line of got in the file when it can be found. */
static void bad_token(checker *ck, size_t i, const char *field, const char *got,
                      const char *problem, const char *expected)
{
    if (ck->failed) return;
    char key[64];
    snprintf(key, sizeof key, "admin.tokens[%zu].%s", i, field);
    int line = line_of(ck, "tokens", got);
    if (!line) {
        bad(ck, key, got ? got : "", problem, "%s", expected);
        return;
    }
    ck->failed = 1;
    snprintf(ck->err, ck->errlen, "%s: line %d: %s: %s (got '%s', expected %s)", ck->name, line,
             key, problem, got, expected);
}

static int is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') ||
              (s[n] >= 'A' && s[n] <= 'F')))
            return 0;
    return n == 64;
}

static void admin_section(checker *ck, const struct raw_admin *a, mconfig *c)
{
    c->admin.listen = dup_or(ck, a ? a->listen : NULL, "");
    if (c->admin.listen && *c->admin.listen) {
        const char *colon = strrchr(c->admin.listen, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == c->admin.listen || !end || *end || port < 0 || port > 65535)
            bad(ck, "admin.listen", c->admin.listen, "not an address",
                "\"\" (the grpc listener) or host:port, e.g. 127.0.0.1:9093");
    }
    size_t n = a ? a->tokens_count : 0;
    if (!n) return;
    c->admin.tokens = calloc(n, sizeof *c->admin.tokens);
    if (!c->admin.tokens) {
        if (!ck->failed) snprintf(ck->err, ck->errlen, "%s: out of memory", ck->name);
        ck->failed = 1;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct raw_token *t = &a->tokens[i];
        mconfig_token *o = &c->admin.tokens[c->admin.n_tokens++];
        o->name = dup_or(ck, t->name, "");
        o->role = dup_or(ck, t->role, "");
        o->sha256 = dup_or(ck, t->sha256, "");
        if (!o->name || !o->role || !o->sha256) return;
        if (!*o->name) bad_token(ck, i, "name", "", "is required", "a name for audit records, e.g. alice");
        for (size_t k = 0; k < i; k++)
            if (!strcmp(c->admin.tokens[k].name, o->name))
                bad_token(ck, i, "name", o->name, "duplicate token name", "a name no other token has");
        if (strcmp(o->role, "viewer") && strcmp(o->role, "operator") && strcmp(o->role, "admin"))
            bad_token(ck, i, "role", o->role, "unknown role", "viewer, operator or admin");
        if (!is_hex64(o->sha256))
            bad_token(ck, i, "sha256", o->sha256, "not a SHA-256",
                      "64 hex characters: printf %s \"$TOKEN\" | sha256sum");
        for (char *p = o->sha256; *p; p++)
            if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    }
}

/* "FILE: line N: key: problem (got ...)" when the value is found after anchor, else bad(). */
static void bad_at(checker *ck, const char *anchor, const char *key, const char *got,
                   const char *problem, const char *expected)
{
    if (ck->failed) return;
    int line = line_of(ck, anchor, got);
    if (!line) {
        bad(ck, key, got ? got : "", problem, "%s", expected);
        return;
    }
    ck->failed = 1;
    snprintf(ck->err, ck->errlen, "%s: line %d: %s: %s (got '%s', expected %s)", ck->name, line,
             key, problem, got, expected);
}

static void count(checker *ck, const char *key, const char *v, int64_t def, int64_t max,
                  int64_t *out)
{
    *out = def;
    if (!v) return;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    char expected[64];
    snprintf(expected, sizeof expected, "a whole number from 1 to %lld", (long long)max);
    if (errno || end == v || *end || n < 1 || n > max) bad_at(ck, "limits:", key, v, "out of range", expected);
    else *out = n;
}

static void security_sections(checker *ck, const struct raw_node_auth *na,
                              const struct raw_limits *l, mconfig *c)
{
    c->node_auth.mode = dup_or(ck, na ? na->mode : NULL, "none");
    if (!c->node_auth.mode) return;
    int mtls = !strcmp(c->node_auth.mode, "mtls");
    if (strcmp(c->node_auth.mode, "none") && !mtls && strcmp(c->node_auth.mode, "token"))
        bad_at(ck, "node_auth:", "node_auth.mode", c->node_auth.mode, "unknown mode", "none, mtls or token");
    if (mtls && !(c->grpc.tls.enabled && c->grpc.tls.require_client_cert))
        bad_at(ck, "node_auth:", "node_auth.mode", "mtls", "needs client certificates",
               "grpc.tls.enabled and grpc.tls.require_client_cert true");
    size_t n = na ? na->allow_count : 0;
    if (n && !mtls)
        bad_at(ck, "node_auth:", "node_auth.allow", na->allow[0].identity, "only used with mode mtls",
               "no allow list, or node_auth.mode: mtls");
    if (n && !(c->node_auth.allow = calloc(n, sizeof *c->node_auth.allow))) n = 0;
    for (size_t i = 0; i < n; i++) {
        const struct raw_allow *a = &na->allow[i];
        mconfig_node_allow *o = &c->node_auth.allow[c->node_auth.n_allow++];
        o->identity = dup_or(ck, a->identity, "");
        char key[64];
        snprintf(key, sizeof key, "node_auth.allow[%zu].identity", i);
        if (o->identity && !*o->identity) bad(ck, key, "", "is required", "%s", "a certificate identity (its DNS SAN or CN)");
        if (!a->nodes_count) {
            snprintf(key, sizeof key, "node_auth.allow[%zu].nodes", i);
            bad_at(ck, "allow:", key, o->identity, "is empty", "the node ids this identity may speak for");
        }
        if (a->nodes_count && !(o->node_ids = calloc(a->nodes_count, sizeof *o->node_ids))) continue;
        for (unsigned k = 0; k < a->nodes_count; k++) {
            o->node_ids[o->n_node_ids] = dup_or(ck, a->nodes[k], "");
            if (o->node_ids[o->n_node_ids]) o->n_node_ids++;
        }
    }
    static const struct raw_limits no_limits;
    if (!l) l = &no_limits;
    mconfig_limits *m = &c->limits;
    count(ck, "limits.max_metrics_per_report", l->max_metrics_per_report, 1000, 1000000, &m->max_metrics_per_report);
    count(ck, "limits.max_values_per_metric", l->max_values_per_metric, 1000, 1000000, &m->max_values_per_metric);
    count(ck, "limits.max_labels", l->max_labels, 64, 10000, &m->max_labels);
    count(ck, "limits.max_string_bytes", l->max_string_bytes, 256, 65536, &m->max_string_bytes);
    count(ck, "limits.max_agents_per_sync", l->max_agents_per_sync, 1000, 1000000, &m->max_agents_per_sync);
    count(ck, "limits.max_update_streams", l->max_update_streams, 50000, 1000000, &m->max_update_streams);
    count(ck, "limits.max_streams_per_connection", l->max_streams_per_connection, 1000, 1000000, &m->max_streams_per_connection);
    count(ck, "limits.register_per_minute", l->register_per_minute, 60, 6000000, &m->register_per_minute);
    count(ck, "limits.register_burst", l->register_burst, 20, 1000000, &m->register_burst);
    duration(ck, "limits.refusal_log_interval", l->refusal_log_interval, 60000, 1, &m->refusal_log_interval_ms);
}

static void security_free(mconfig *c)
{
    free(c->node_auth.mode);
    for (size_t i = 0; i < c->node_auth.n_allow; i++) {
        free(c->node_auth.allow[i].identity);
        for (size_t k = 0; k < c->node_auth.allow[i].n_node_ids; k++) free(c->node_auth.allow[i].node_ids[k]);
        free(c->node_auth.allow[i].node_ids);
    }
    free(c->node_auth.allow);
}

static void put_str(FILE *f, const char *s);
static const char *dur(int64_t ms, char *buf, size_t n);

static void security_dump(FILE *f, const mconfig *c)
{
    fprintf(f, "node_auth:\n  mode: %s\n  allow:%s\n", c->node_auth.mode, c->node_auth.n_allow ? "" : " []");
    for (size_t i = 0; i < c->node_auth.n_allow; i++) {
        fprintf(f, "    - identity: ");
        put_str(f, c->node_auth.allow[i].identity);
        fprintf(f, "\n      nodes:\n");
        for (size_t k = 0; k < c->node_auth.allow[i].n_node_ids; k++) {
            fprintf(f, "        - ");
            put_str(f, c->node_auth.allow[i].node_ids[k]);
            fputc('\n', f);
        }
    }
    const mconfig_limits *m = &c->limits;
    char b[32];
    fprintf(f, "limits:\n  max_metrics_per_report: %lld\n  max_values_per_metric: %lld\n  max_labels: %lld\n"
               "  max_string_bytes: %lld\n  max_agents_per_sync: %lld\n  max_update_streams: %lld\n  max_streams_per_connection: %lld\n"
               "  register_per_minute: %lld\n  register_burst: %lld\n  refusal_log_interval: %s\n",
            (long long)m->max_metrics_per_report, (long long)m->max_values_per_metric, (long long)m->max_labels,
            (long long)m->max_string_bytes, (long long)m->max_agents_per_sync, (long long)m->max_update_streams, (long long)m->max_streams_per_connection,
            (long long)m->register_per_minute, (long long)m->register_burst, dur(m->refusal_log_interval_ms, b, sizeof b));
}

static void apply(checker *ck, const struct raw *r, mconfig *c)
{
    static const struct raw_grpc no_grpc;
    static const struct raw_tls no_tls;
    static const struct raw_database no_db;
    static const struct raw_node no_node;
    static const struct raw_metrics no_metrics;
    static const struct raw_log no_log;
    const struct raw_grpc *g = r && r->grpc ? r->grpc : &no_grpc;
    const struct raw_tls *t = g->tls ? g->tls : &no_tls;
    const struct raw_database *d = r && r->database ? r->database : &no_db;
    const struct raw_node *n = r && r->node ? r->node : &no_node;
    const struct raw_metrics *m = r && r->metrics ? r->metrics : &no_metrics;
    const struct raw_log *lg = r && r->log ? r->log : &no_log;
    char got[64];

    c->grpc.host = dup_or(ck, g->host, "0.0.0.0");
    if (c->grpc.host && !*c->grpc.host)
        bad(ck, "grpc.host", "", "is empty", "an address to listen on, e.g. 0.0.0.0");
    c->grpc.port = g->port ? *g->port : 9090;
    if (c->grpc.port < 1 || c->grpc.port > 65535) {
        snprintf(got, sizeof got, "%d", c->grpc.port);
        bad(ck, "grpc.port", got, "out of range", "a port from 1 to 65535");
    }
    c->grpc.tls.enabled = boolean(ck, "grpc.tls.enabled", t->enabled, 0);
    c->grpc.tls.require_client_cert =
        boolean(ck, "grpc.tls.require_client_cert", t->require_client_cert, 0);
    c->grpc.tls.cert_file = dup_or(ck, t->cert_file, "");
    c->grpc.tls.key_file = dup_or(ck, t->key_file, "");
    c->grpc.tls.ca_file = dup_or(ck, t->ca_file, "");
    if (c->grpc.tls.enabled && c->grpc.tls.cert_file && !*c->grpc.tls.cert_file)
        bad(ck, "grpc.tls.cert_file", "", "required when grpc.tls.enabled is true",
            "the path of the server's PEM certificate");
    if (c->grpc.tls.enabled && c->grpc.tls.key_file && !*c->grpc.tls.key_file)
        bad(ck, "grpc.tls.key_file", "", "required when grpc.tls.enabled is true",
            "the path of the server's PEM private key");
    if (c->grpc.tls.enabled && c->grpc.tls.require_client_cert && c->grpc.tls.ca_file &&
        !*c->grpc.tls.ca_file)
        bad(ck, "grpc.tls.ca_file", "", "required when grpc.tls.require_client_cert is true",
            "the path of the PEM CA that signs client certificates");
    c->grpc.max_message_size = 10u << 20;
    if (g->max_message_size) {
        if (units_parse_size(g->max_message_size, &c->grpc.max_message_size) < 0)
            bad(ck, "grpc.max_message_size", g->max_message_size, "not a size",
                "e.g. 10MiB, 4MB, 65536");
        else if (c->grpc.max_message_size < 1024 || c->grpc.max_message_size > 0x7fffffffu)
            bad(ck, "grpc.max_message_size", g->max_message_size, "out of range",
                "from 1KiB to 2GiB - 1");
    }
    duration(ck, "grpc.keepalive_time", g->keepalive_time, 60000, 1, &c->grpc.keepalive_time_ms);
    duration(ck, "grpc.keepalive_timeout", g->keepalive_timeout, 20000, 1,
             &c->grpc.keepalive_timeout_ms);
    duration(ck, "grpc.min_ping_interval", g->min_ping_interval, 20000, 0,
             &c->grpc.min_ping_interval_ms);
    c->grpc.window_size = 1u << 20;
    if (g->window_size) {
        if (units_parse_size(g->window_size, &c->grpc.window_size) < 0)
            bad(ck, "grpc.window_size", g->window_size, "not a size", "e.g. 1MiB, 65536");
        else if (c->grpc.window_size < 65535 || c->grpc.window_size > 0x7fffffffu)
            bad(ck, "grpc.window_size", g->window_size, "out of range", "from 64KiB to 2GiB - 1");
    }
    c->grpc.gzip = 0;
    if (g->compression) {
        if (!strcmp(g->compression, "gzip")) c->grpc.gzip = 1;
        else if (strcmp(g->compression, "none") != 0)
            bad(ck, "grpc.compression", g->compression, "unknown compression", "none or gzip");
    }

    c->database.driver = dup_or(ck, d->driver, "sqlite");
    if (c->database.driver && strcmp(c->database.driver, "sqlite") != 0 &&
        strcmp(c->database.driver, "postgres") != 0)
        bad(ck, "database.driver", c->database.driver, "unknown driver", "sqlite or postgres");
    c->database.dsn = dup_or(ck, d->dsn, "ops-manager.db");
    if (c->database.dsn && !*c->database.dsn)
        bad(ck, "database.dsn", "", "is empty",
            "a file path (sqlite) or a connection string (postgres)");

    duration(ck, "node.heartbeat_interval", n->heartbeat_interval, 60000, 1,
             &c->node.heartbeat_interval_ms);
    duration(ck, "node.metrics_interval", n->metrics_interval, 60000, 1,
             &c->node.metrics_interval_ms);
    duration(ck, "node.offline_after", n->offline_after, 3 * c->node.heartbeat_interval_ms, 1,
             &c->node.offline_after_ms);
    if (n->offline_after && c->node.offline_after_ms <= c->node.heartbeat_interval_ms) {
        char hb[32];
        units_format_duration(c->node.heartbeat_interval_ms, hb, sizeof hb);
        bad(ck, "node.offline_after", n->offline_after,
            "must be longer than node.heartbeat_interval", "more than %s", hb);
    }
    c->node.auto_register = boolean(ck, "node.auto_register", n->auto_register, 1);

    duration(ck, "metrics.retention", m->retention, 30LL * 24 * 3600 * 1000, 0,
             &c->metrics.retention_ms);
    duration(ck, "metrics.retention_interval", m->retention_interval, 3600000, 1,
             &c->metrics.retention_interval_ms);

    c->log.level = LOGL_INFO;
    if (lg->level && log_parse_level(lg->level, &c->log.level) < 0)
        bad(ck, "log.level", lg->level, "unknown level", "debug, info, warn or error");
    c->log.file = dup_or(ck, lg->file, "");

    static const struct raw_prometheus no_prom;
    const struct raw_prometheus *pr = r && r->prometheus ? r->prometheus : &no_prom;
    c->prometheus.enabled = boolean(ck, "prometheus.enabled", pr->enabled, 1);
    c->prometheus.listen = dup_or(ck, pr->listen, "127.0.0.1:9190");
    char host[256], why[300];
    int port;
    if (c->prometheus.listen &&
        prom_parse_listen(c->prometheus.listen, host, sizeof host, &port, why, sizeof why) != 0)
        bad(ck, "prometheus.listen", c->prometheus.listen, "not host:port", "e.g. 127.0.0.1:9190 or [::1]:9190");
    admin_section(ck, r ? r->admin : NULL, c);
    security_sections(ck, r ? r->node_auth : NULL, r ? r->limits : NULL, c);
    c->daemons.token = dup_or(ck, r && r->daemons ? r->daemons->token : NULL, "");
    c->daemons.token_file = dup_or(ck, r && r->daemons ? r->daemons->token_file : NULL, "");
    if (c->daemons.token_file && *c->daemons.token_file && c->daemons.token_file[0] != '/')
        bad(ck, "daemons.token_file", c->daemons.token_file, "not an absolute path", "e.g. /etc/ops/daemon-token");
}

/* An empty file (or only comments) is a valid config made of defaults; libcyaml refuses it. */
static int blank_yaml(const char *s, size_t len)
{
    int line_start = 1, in_comment = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\n') { line_start = 1; in_comment = 0; continue; }
        if (in_comment || c == ' ' || c == '\t' || c == '\r') continue;
        if (c == '#') { in_comment = 1; continue; }
        if (line_start && c == '-' && i + 2 < len && s[i + 1] == '-' && s[i + 2] == '-') {
            i += 2;
            continue;
        }
        return 0;
    }
    return 1;
}

static int build(const char *name, const struct raw *r, const char *text, size_t len,
                 mconfig **out, char *err, size_t errlen)
{
    *out = NULL;
    mconfig *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "%s: out of memory", name); return -1; }
    checker ck = {name, err, errlen, 0, text, len};
    c->source = dup_or(&ck, name, "");
    apply(&ck, r, c);
    if (ck.failed) {
        mconfig_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

int mconfig_load_string(const char *name, const char *yaml, size_t len, mconfig **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (blank_yaml(yaml, len)) return build(name, NULL, NULL, 0, out, err, errlen);
    void *raw = NULL;
    if (cfg_load_string(name, yaml, len, &top_schema, &raw, err, errlen) < 0) return -1;
    int rc = build(name, raw, yaml, len, out, err, errlen);
    cfg_free(&top_schema, raw);
    return rc;
}

int mconfig_load(const char *path, mconfig **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path) return build("(defaults)", NULL, NULL, 0, out, err, errlen);
    char *buf;
    size_t len;
    if (cfg_read_file(path, &buf, &len, err, errlen) != 0) return -1;
    int rc = mconfig_load_string(path, buf, len, out, err, errlen);
    free(buf);
    return rc;
}

void mconfig_free(mconfig *c)
{
    if (!c) return;
    free(c->source);
    free(c->grpc.host);
    free(c->grpc.tls.cert_file);
    free(c->grpc.tls.key_file);
    free(c->grpc.tls.ca_file);
    free(c->database.driver);
    free(c->database.dsn);
    free(c->log.file);
    free(c->prometheus.listen);
    free(c->admin.listen);
    free(c->daemons.token);
    free(c->daemons.token_file);
    for (size_t i = 0; i < c->admin.n_tokens; i++) {
        free(c->admin.tokens[i].name);
        free(c->admin.tokens[i].role);
        free(c->admin.tokens[i].sha256);
    }
    free(c->admin.tokens);
    security_free(c);
    free(c);
}

/* A YAML double-quoted scalar. */
static void put_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static const char *dur(int64_t ms, char *buf, size_t n)
{
    return ms == 0 ? "0" : units_format_duration(ms, buf, n);
}

char *mconfig_dump_yaml(const mconfig *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    char b[32];
    fprintf(f, "grpc:\n  host: ");
    put_str(f, c->grpc.host);
    fprintf(f, "\n  port: %d\n  tls:\n    enabled: %s\n    cert_file: ", c->grpc.port,
            c->grpc.tls.enabled ? "true" : "false");
    put_str(f, c->grpc.tls.cert_file);
    fprintf(f, "\n    key_file: ");
    put_str(f, c->grpc.tls.key_file);
    fprintf(f, "\n    ca_file: ");
    put_str(f, c->grpc.tls.ca_file);
    fprintf(f, "\n    require_client_cert: %s\n",
            c->grpc.tls.require_client_cert ? "true" : "false");
    fprintf(f, "  max_message_size: \"%llu\"\n", (unsigned long long)c->grpc.max_message_size);
    fprintf(f, "  keepalive_time: %s\n", dur(c->grpc.keepalive_time_ms, b, sizeof b));
    fprintf(f, "  keepalive_timeout: %s\n", dur(c->grpc.keepalive_timeout_ms, b, sizeof b));
    fprintf(f, "  min_ping_interval: %s\n", dur(c->grpc.min_ping_interval_ms, b, sizeof b));
    fprintf(f, "  window_size: \"%llu\"\n", (unsigned long long)c->grpc.window_size);
    fprintf(f, "  compression: %s\n", c->grpc.gzip ? "gzip" : "none");
    fprintf(f, "database:\n  driver: ");
    put_str(f, c->database.driver);
    fprintf(f, "\n  dsn: ");
    put_str(f, c->database.dsn);
    fprintf(f, "\nnode:\n  heartbeat_interval: %s\n",
            dur(c->node.heartbeat_interval_ms, b, sizeof b));
    fprintf(f, "  metrics_interval: %s\n", dur(c->node.metrics_interval_ms, b, sizeof b));
    fprintf(f, "  offline_after: %s\n", dur(c->node.offline_after_ms, b, sizeof b));
    fprintf(f, "  auto_register: %s\n", c->node.auto_register ? "true" : "false");
    fprintf(f, "metrics:\n  retention: %s\n", dur(c->metrics.retention_ms, b, sizeof b));
    fprintf(f, "  retention_interval: %s\n", dur(c->metrics.retention_interval_ms, b, sizeof b));
    fprintf(f, "log:\n  level: %s\n  file: ", log_level_name(c->log.level));
    put_str(f, c->log.file);
    fprintf(f, "\nprometheus:\n  enabled: %s\n  listen: ", c->prometheus.enabled ? "true" : "false");
    put_str(f, c->prometheus.listen);
    fputc('\n', f);
    fprintf(f, "admin:\n  listen: ");
    put_str(f, c->admin.listen);
    fprintf(f, "\n  tokens:%s\n", c->admin.n_tokens ? "" : " []");
    for (size_t i = 0; i < c->admin.n_tokens; i++) {
        fprintf(f, "    - name: ");
        put_str(f, c->admin.tokens[i].name);
        fprintf(f, "\n      role: %s\n      sha256: %s\n", c->admin.tokens[i].role,
                c->admin.tokens[i].sha256);
    }
    security_dump(f, c);
    /* The token itself is a secret: never printed. */
    fprintf(f, "daemons:\n  token_file: ");
    put_str(f, c->daemons.token_file);
    fprintf(f, "\n%s", c->daemons.token && *c->daemons.token ? "  # token: set in the file, not shown\n" : "");
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
