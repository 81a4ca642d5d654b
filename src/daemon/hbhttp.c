/* hbhttp: libmicrohttpd with one internal thread; bodies buffered per request (bounded),
 * parsed with jansson once complete, answered with small JSON documents. */
#include "daemon/hbhttp.h"

#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "base/log.h"

struct hbhttp {
    struct MHD_Daemon *mhd;
    hbhttp_handler on_heartbeat;
    void *user;
    int port;
    atomic_uint_fast64_t received, processed, errors;
    /* While hbhttp_start() runs, MHD's complaints (bind failures) go here for the caller. */
    pthread_t starter;
    char *start_err;
    size_t start_errlen;
};

struct req {
    char *buf;
    size_t len, cap;
    int too_large;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct hbhttp *h = cls;
    char msg[256];
    /* Only the starting thread reads start_err: MHD's own thread never touches it. */
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    if (pthread_equal(pthread_self(), h->starter) && h->start_err) {
        snprintf(h->start_err, h->start_errlen, "%s", msg);
        return;
    }
    char q[300];
    log_warn("hbhttp.mhd", "msg=%s", log_quote(q, sizeof q, msg));
}

static void request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls; (void)conn; (void)toe;
    struct req *r = *con_cls;
    if (r) {
        free(r->buf);
        free(r);
        *con_cls = NULL;
    }
}

/* Sends doc (stolen) as the JSON body. */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, json_t *doc,
                             const char *allow)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) return MHD_NO; /* out of memory: MHD drops the connection */
    size_t len = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(text); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_error(struct hbhttp *h, struct MHD_Connection *conn, unsigned status,
                                   const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result reply_error(struct hbhttp *h, struct MHD_Connection *conn, unsigned status,
                                   const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&h->errors, 1);
    json_t *doc = json_pack("{s:s}", "error", msg);
    if (doc && field) json_object_set_new(doc, "field", json_string(field));
    return reply(conn, status, doc, NULL);
}

/* Checks one optional field. Returns 1 present and well-typed, 0 absent (or null), -1 wrong. */
static int field(json_t *obj, const char *name, int (*is)(const json_t *), json_t **out)
{
    *out = json_object_get(obj, name);
    if (!*out || json_is_null(*out)) return 0;
    return is(*out) ? 1 : -1;
}

static int is_string(const json_t *j) { return json_is_string(j); }
static int is_integer(const json_t *j) { return json_is_integer(j); }
static int is_number(const json_t *j) { return json_is_number(j); }

static enum MHD_Result heartbeat(struct hbhttp *h, struct MHD_Connection *conn, struct req *r)
{
    if (r->too_large)
        return reply_error(h, conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                           "body larger than %d bytes", HBHTTP_MAX_BODY);
    json_error_t jerr;
    json_t *doc = json_loadb(r->buf ? r->buf : "", r->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return reply_error(h, conn, MHD_HTTP_BAD_REQUEST, NULL, "invalid JSON: %s (line %d, column %d)",
                           jerr.text, jerr.line, jerr.column);
    enum MHD_Result rc;
    hb_report rep = {0};
    json_t *v;
    if (!json_is_object(doc)) {
        rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, NULL, "body must be a JSON object");
        goto out;
    }
    int got = field(doc, "agent_id", is_string, &v);
    if (got <= 0 || json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v)) {
        rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "agent_id",
                         got == 0 ? "agent_id: required" : "agent_id: must be a non-empty string");
        goto out;
    }
    rep.agent_id = json_string_value(v);
    if ((got = field(doc, "pid", is_integer, &v)) != 0) {
        if (got < 0 || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX) {
            rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "pid", "pid: must be a non-negative integer");
            goto out;
        }
        rep.pid = (int)json_integer_value(v);
        rep.fields |= HB_HAS_PID;
    }
    if ((got = field(doc, "status", is_string, &v)) != 0) {
        if (got < 0) { rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "status", "status: must be a string"); goto out; }
        rep.status = json_string_value(v);
        rep.fields |= HB_HAS_STATUS;
    }
    if ((got = field(doc, "cpu", is_number, &v)) != 0) {
        if (got < 0) { rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "cpu", "cpu: must be a number"); goto out; }
        rep.cpu = json_number_value(v);
        rep.fields |= HB_HAS_CPU;
    }
    if ((got = field(doc, "memory", is_number, &v)) != 0) {
        if (got < 0) { rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "memory", "memory: must be a number"); goto out; }
        rep.memory = json_number_value(v);
        rep.fields |= HB_HAS_MEMORY;
    }
    if ((got = field(doc, "timestamp", is_integer, &v)) != 0) {
        if (got < 0) {
            rc = reply_error(h, conn, MHD_HTTP_BAD_REQUEST, "timestamp", "timestamp: must be an integer (Unix seconds)");
            goto out;
        }
        rep.timestamp = (int64_t)json_integer_value(v);
        rep.fields |= HB_HAS_TIMESTAMP;
    }

    int cb = h->on_heartbeat ? h->on_heartbeat(h->user, &rep) : 0;
    if (cb == 0) {
        atomic_fetch_add(&h->processed, 1);
        rc = reply(conn, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL);
    } else if (cb == HB_UNKNOWN_AGENT) {
        rc = reply_error(h, conn, MHD_HTTP_NOT_FOUND, "agent_id", "unknown agent: %s", rep.agent_id);
    } else {
        rc = reply_error(h, conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "heartbeat not recorded");
    }
out:
    json_decref(doc);
    return rc;
}

static enum MHD_Result stats(struct hbhttp *h, struct MHD_Connection *conn)
{
    hbhttp_stats s;
    hbhttp_get_stats(h, &s);
    return reply(conn, MHD_HTTP_OK,
                 json_pack("{s:I,s:I,s:I}", "received", (json_int_t)s.received,
                           "processed", (json_int_t)s.processed, "errors", (json_int_t)s.errors),
                 NULL);
}

static enum MHD_Result route(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct hbhttp *h = cls;
    struct req *r = *con_cls;
    if (!r) {
        /* First call: headers only. Anything not a heartbeat upload is answered right here. */
        if (strcmp(url, "/heartbeat/stats") == 0) {
            if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
                return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                             json_pack("{s:s}", "error", "method not allowed"), "GET");
            return stats(h, conn);
        }
        if (strcmp(url, "/heartbeat") != 0)
            return reply(conn, MHD_HTTP_NOT_FOUND, json_pack("{s:s}", "error", "not found"), NULL);
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                         json_pack("{s:s}", "error", "method not allowed"), "POST");
        atomic_fetch_add(&h->received, 1);
        /* Refuse a declared oversize body before it is sent (the client may wait for
         * "100 Continue"). */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > HBHTTP_MAX_BODY)
            return reply_error(h, conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL, "body larger than %d bytes",
                               HBHTTP_MAX_BODY);
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* Chunked bodies have no length up front: keep reading, drop the excess, answer 413. */
        if (r->too_large || r->len + n > HBHTTP_MAX_BODY) {
            r->too_large = 1;
            return MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t cap = r->cap ? r->cap : 1024;
            while (cap < r->len + n) cap *= 2;
            char *nb = realloc(r->buf, cap);
            if (!nb) return MHD_NO;
            r->buf = nb;
            r->cap = cap;
        }
        memcpy(r->buf + r->len, upload_data, n);
        r->len += n;
        return MHD_YES;
    }
    return heartbeat(h, conn, r);
}

int hbhttp_start(const hbhttp_options *o, hbhttp **out, char *err, size_t errlen)
{
    *out = NULL;
    if (o->port < 0 || o->port > 65535) {
        snprintf(err, errlen, "http port %d out of range", o->port);
        return -1;
    }
    const char *host = o->host && *o->host ? o->host : "127.0.0.1";
    char port[8];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "http host %s: %s", host, gai_strerror(gai));
        return -1;
    }
    struct hbhttp *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->on_heartbeat = o->on_heartbeat;
    h->user = o->user;
    h->starter = pthread_self();
    h->start_err = err;
    h->start_errlen = errlen;
    err[0] = 0;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, route, h,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_NOTIFY_COMPLETED, request_done, h,
                              /* Agents are local and few; a stuck client must not pin a slot. */
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->mhd) {
        char why[256];
        snprintf(why, sizeof why, "%s", err[0] ? err : "cannot start the HTTP server");
        snprintf(err, errlen, "http %s:%d: %s", host, o->port, why);
        free(h);
        return -1;
    }
    h->start_err = NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : o->port;
    log_info("hbhttp.listen", "host=%s port=%d", host, h->port);
    *out = h;
    return 0;
}

int hbhttp_port(const hbhttp *h)
{
    return h->port;
}

void hbhttp_get_stats(const hbhttp *h, hbhttp_stats *s)
{
    s->received = atomic_load(&h->received);
    s->processed = atomic_load(&h->processed);
    s->errors = atomic_load(&h->errors);
}

void hbhttp_stop(hbhttp *h)
{
    if (!h) return;
    MHD_stop_daemon(h->mhd);
    free(h);
}
