/* prom: exposition-format writer and the /metrics listener. The listener uses libmicrohttpd's
 * internal polling thread without a thread per connection, so scrapes are served one at a
 * time and the fill callback never runs concurrently with itself. */
#include "base/prom.h"

#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "base/log.h"

/* ---- buffer ------------------------------------------------------------------------------- */

void prom_buf_init(prom_buf *b) { memset(b, 0, sizeof *b); }

void prom_buf_free(prom_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

int prom_buf_failed(const prom_buf *b) { return b->oom; }

static int reserve(prom_buf *b, size_t more)
{
    if (b->oom) return -1;
    if (b->len + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static void put(prom_buf *b, const char *s, size_t n)
{
    if (reserve(b, n) != 0) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void puts_(prom_buf *b, const char *s) { put(b, s, strlen(s)); }

/* Escapes backslash and newline, and the double quote too inside label values. */
static void put_escaped(prom_buf *b, const char *s, int quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\') rep = "\\\\";
        else if (*s == '\n') rep = "\\n";
        else if (quote && *s == '"') rep = "\\\"";
        if (!rep) continue;
        put(b, run, (size_t)(s - run));
        puts_(b, rep);
        run = s + 1;
    }
    put(b, run, (size_t)(s - run));
}

/* The shortest text that reads back as v. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) snprintf(out, n, "NaN");
    else if (isinf(v)) snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(out, n, "%.0f", v);
    else {
        snprintf(out, n, "%.15g", v);
        if (strtod(out, NULL) != v) snprintf(out, n, "%.17g", v);
    }
}

static const char *type_name(prom_type t)
{
    return t == PROM_COUNTER ? "counter" : t == PROM_GAUGE ? "gauge" : "histogram";
}

void prom_family(prom_buf *b, const char *name, prom_type type, const char *help)
{
    puts_(b, "# HELP ");
    puts_(b, name);
    puts_(b, " ");
    put_escaped(b, help ? help : "", 0);
    puts_(b, "\n# TYPE ");
    puts_(b, name);
    puts_(b, " ");
    puts_(b, type_name(type));
    puts_(b, "\n");
}

/* name{labels[,le="x"]} value */
static void sample_le(prom_buf *b, const char *name, const char *suffix, const prom_label *l,
                      size_t n, const char *le, double value)
{
    puts_(b, name);
    if (suffix) puts_(b, suffix);
    if (n || le) {
        puts_(b, "{");
        for (size_t i = 0; i < n; i++) {
            if (i) puts_(b, ",");
            puts_(b, l[i].name);
            puts_(b, "=\"");
            put_escaped(b, l[i].value ? l[i].value : "", 1);
            puts_(b, "\"");
        }
        if (le) {
            if (n) puts_(b, ",");
            puts_(b, "le=\"");
            puts_(b, le);
            puts_(b, "\"");
        }
        puts_(b, "}");
    }
    char v[40];
    fmt_double(v, sizeof v, value);
    puts_(b, " ");
    puts_(b, v);
    puts_(b, "\n");
}

void prom_sample(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels, double value)
{
    sample_le(b, name, NULL, labels, n_labels, NULL, value);
}

/* ---- histograms ---------------------------------------------------------------------------- */

int prom_hist_init(prom_hist *h, const double *bounds, size_t n_bounds)
{
    memset(h, 0, sizeof *h);
    if (n_bounds > PROM_HIST_MAX_BOUNDS) return -1;
    for (size_t i = 1; i < n_bounds; i++)
        if (!(bounds[i] > bounds[i - 1])) return -1;
    h->bounds = bounds;
    h->n_bounds = n_bounds;
    return 0;
}

void prom_hist_observe(prom_hist *h, double v)
{
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++;
    h->counts[i]++;
    h->sum += v;
}

void prom_histogram(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels,
                    const double *bounds, const uint64_t *counts, size_t n_bounds, double sum)
{
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i < n_bounds; i++) {
        cum += counts[i];
        fmt_double(le, sizeof le, bounds[i]);
        sample_le(b, name, "_bucket", labels, n_labels, le, (double)cum);
    }
    cum += counts[n_bounds];
    sample_le(b, name, "_bucket", labels, n_labels, "+Inf", (double)cum);
    sample_le(b, name, "_sum", labels, n_labels, NULL, sum);
    sample_le(b, name, "_count", labels, n_labels, NULL, (double)cum);
}

void prom_hist_write(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels,
                     const prom_hist *h)
{
    prom_histogram(b, name, labels, n_labels, h->bounds, h->counts, h->n_bounds, h->sum);
}

/* ---- listener ------------------------------------------------------------------------------ */

int prom_parse_listen(const char *listen, char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
    const char *s = listen ? listen : "";
    const char *colon;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "'%s' is not host:port ([v6 address]:port for IPv6)", s);
            return -1;
        }
        hl = (size_t)(close - s - 1);
        s++;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon) {
            snprintf(err, errlen, "'%s' is not host:port (e.g. 127.0.0.1:9190)", s);
            return -1;
        }
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostlen) {
        snprintf(err, errlen, "'%s': the host is %s", listen, hl ? "too long" : "empty");
        return -1;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 0 || p > 65535) {
        snprintf(err, errlen, "'%s': the port must be a number from 0 to 65535", listen);
        return -1;
    }
    memcpy(host, s, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

struct prom_http {
    struct MHD_Daemon *mhd;
    prom_fill_fn fill;
    void *user;
    int port;
    /* While prom_http_start() runs, MHD's complaints (bind failures) go here for the caller. */
    pthread_t starter;
    char *start_err;
    size_t start_errlen;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct prom_http *h = cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    if (pthread_equal(pthread_self(), h->starter) && h->start_err) {
        snprintf(h->start_err, h->start_errlen, "%s", msg);
        return;
    }
    char q[300];
    log_warn("prom.mhd", "msg=%s", log_quote(q, sizeof q, msg));
}

/* The path is compared as sent: decoding it would let "/metrics%00junk" pass as "/metrics". */
static size_t no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls; (void)conn;
    return strlen(s);
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status, const char *text, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result route(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                             const char *version, const char *upload_data, size_t *upload_data_size,
                             void **con_cls)
{
    (void)version; (void)upload_data; (void)con_cls;
    struct prom_http *h = cls;
    if (strcmp(url, "/metrics") != 0) return answer(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: /metrics takes GET\n", "GET");
    *upload_data_size = 0; /* a GET body, if any, is ignored */
    prom_buf b;
    prom_buf_init(&b);
    if (h->fill(h->user, &b) != 0 || prom_buf_failed(&b) || !b.data) {
        prom_buf_free(&b);
        return answer(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot collect the metrics (see the log)\n", NULL);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        prom_buf_free(&b);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

int prom_http_start(const char *listen, prom_fill_fn fill, void *user, prom_http **out, char *err, size_t errlen)
{
    *out = NULL;
    char host[256];
    int port;
    if (prom_parse_listen(listen, host, sizeof host, &port, err, errlen) != 0) return -1;
    char ports[8];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai = NULL;
    int gai = getaddrinfo(host, ports, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "listen %s: %s", listen, gai_strerror(gai));
        return -1;
    }
    struct prom_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->fill = fill;
    h->user = user;
    h->starter = pthread_self();
    h->start_err = err;
    h->start_errlen = errlen;
    err[0] = 0;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, route, h,
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
                              /* Scrapers are few; an idle or stuck one must not pin a slot. */
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->mhd) {
        char why[256];
        snprintf(why, sizeof why, "%s", err[0] ? err : "cannot start the HTTP server");
        snprintf(err, errlen, "listen %s: %s", listen, why);
        free(h);
        return -1;
    }
    h->start_err = NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : port;
    log_info("prom.listen", "host=%s port=%d path=/metrics", host, h->port);
    *out = h;
    return 0;
}

int prom_http_port(const prom_http *h) { return h->port; }

void prom_http_stop(prom_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->mhd);
    free(h);
}
