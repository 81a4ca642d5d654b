/* prom: what a process needs to be scraped by Prometheus -- a writer of the text exposition
 * format 0.0.4 (HELP/TYPE lines, escaped label values, counters, gauges, cumulative
 * histograms) into a growable buffer, a plain histogram accumulator, and a small HTTP listener
 * (libmicrohttpd, one internal thread) that answers GET /metrics from a callback filling the
 * buffer: 404 for any other path, 405 for any other method, 500 when the callback fails.
 *
 * Owns: a prom_buf owns its text (prom_buf_free); a prom_http owns its libmicrohttpd daemon,
 * its socket and thread (prom_http_stop). Knows nothing of what it exports: names, labels and
 * values come from the caller, which is responsible for keeping label sets bounded. */
#ifndef OPS_BASE_PROM_H
#define OPS_BASE_PROM_H

#include <stddef.h>
#include <stdint.h>

/* ---- the writer --------------------------------------------------------------------------- */

/* The text being built. Out of memory is sticky: later writes do nothing and prom_buf_failed()
 * says so, so a writer checks once at the end instead of after every line. */
typedef struct prom_buf {
    char *data; /* NUL-terminated; NULL before the first write */
    size_t len, cap;
    int oom;
} prom_buf;

typedef enum { PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM } prom_type;

typedef struct prom_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*: the caller's constant, not checked */
    const char *value; /* any UTF-8: escaped here (backslash, double quote, newline) */
} prom_label;

void prom_buf_init(prom_buf *b);
void prom_buf_free(prom_buf *b);
/* 1 when a write ran out of memory (the text is then incomplete). */
int prom_buf_failed(const prom_buf *b);

/* "# HELP name help\n# TYPE name type\n": once per metric family, before its samples. */
void prom_family(prom_buf *b, const char *name, prom_type type, const char *help);
/* One sample line: name{l1="v1",...} value. Values are written so that they parse back to
 * the same double (integers without a fraction; NaN, +Inf, -Inf as the format spells them). */
void prom_sample(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels,
                 double value);

/* ---- histograms ---------------------------------------------------------------------------- */

#define PROM_HIST_MAX_BOUNDS 24

/* Counts per bucket (not cumulative: the writer accumulates), plain struct so that it can be
 * copied as a snapshot. Not thread-safe: the owner locks around observe and copy. */
typedef struct prom_hist {
    const double *bounds; /* ascending upper bounds (inclusive), borrowed: usually static */
    size_t n_bounds;      /* <= PROM_HIST_MAX_BOUNDS */
    uint64_t counts[PROM_HIST_MAX_BOUNDS + 1]; /* [n_bounds] counts values above every bound */
    double sum;
} prom_hist;

/* Returns 0, or -1 when n_bounds is too large or the bounds are not strictly ascending. */
int prom_hist_init(prom_hist *h, const double *bounds, size_t n_bounds);
void prom_hist_observe(prom_hist *h, double v);
/* name_bucket{...,le="b"} (cumulative, then le="+Inf"), name_sum, name_count. counts has
 * n_bounds + 1 entries as in prom_hist. The family line is the caller's (PROM_HISTOGRAM). */
void prom_histogram(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels,
                    const double *bounds, const uint64_t *counts, size_t n_bounds, double sum);
void prom_hist_write(prom_buf *b, const char *name, const prom_label *labels, size_t n_labels,
                     const prom_hist *h);

/* ---- the listener -------------------------------------------------------------------------- */

/* Splits "host:port" ("[::1]:9190" for IPv6) and checks the port (0..65535; 0 picks one).
 * Returns 0, or -1 with err saying what is wrong with it. */
int prom_parse_listen(const char *listen, char *host, size_t hostlen, int *port, char *err,
                      size_t errlen);

/* Fills b with the whole exposition for one scrape (called on the listener's thread, one
 * scrape at a time). Returns 0, or -1 to answer 500. */
typedef int (*prom_fill_fn)(void *user, prom_buf *b);

typedef struct prom_http prom_http;

/* Listens on listen ("host:port"). Returns 0 with *out, or -1 with err ("listen
 * 127.0.0.1:9190: Address already in use"...). */
int prom_http_start(const char *listen, prom_fill_fn fill, void *user, prom_http **out,
                    char *err, size_t errlen);
/* The port actually bound (the one picked when listen asked for port 0). */
int prom_http_port(const prom_http *h);
/* Stops the thread (a scrape in progress finishes first) and frees h. NULL is a no-op. */
void prom_http_stop(prom_http *h);

#endif
