/* table: aligned text columns and formatters. */
#include "ctl/table.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/units.h"

struct table {
    int ncols;
    char **headers; /* NULL = no header line */
    char **cells;   /* rows * ncols */
    size_t rows, cap;
    unsigned char *right;
};

static char *dup_or_empty(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

table *table_new(int ncols, const char *const *headers)
{
    if (ncols <= 0) return NULL;
    table *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->ncols = ncols;
    t->right = calloc((size_t)ncols, 1);
    if (!t->right) abort();
    if (headers) {
        t->headers = calloc((size_t)ncols, sizeof *t->headers);
        if (!t->headers) abort();
        for (int i = 0; i < ncols; i++) t->headers[i] = dup_or_empty(headers[i]);
    }
    return t;
}

void table_free(table *t)
{
    if (!t) return;
    if (t->headers)
        for (int i = 0; i < t->ncols; i++) free(t->headers[i]);
    free(t->headers);
    for (size_t i = 0; i < t->rows * (size_t)t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
}

void table_align_right(table *t, int col)
{
    if (col >= 0 && col < t->ncols) t->right[col] = 1;
}

int table_add_row(table *t, const char *const *cells)
{
    if (t->rows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof *t->cells);
        if (!t->cells) abort();
    }
    char **row = t->cells + t->rows * (size_t)t->ncols;
    for (int i = 0; i < t->ncols; i++) row[i] = dup_or_empty(cells[i]);
    t->rows++;
    return 0;
}

int table_add(table *t, ...)
{
    const char *cells[64];
    int n = t->ncols < 64 ? t->ncols : 64;
    va_list ap;
    va_start(ap, t);
    for (int i = 0; i < n; i++) cells[i] = va_arg(ap, const char *);
    va_end(ap);
    return table_add_row(t, cells);
}

size_t table_rows(const table *t) { return t->rows; }

/* Cells of one code point: 0 for combining marks and zero-width ones, 2 for East Asian wide
 * and most emoji, else 1. Ranges are the common ones, not the full Unicode tables. */
static int cp_width(uint32_t c)
{
    if (c == 0) return 0;
    if ((c >= 0x0300 && c <= 0x036F) || (c >= 0x1AB0 && c <= 0x1AFF) || (c >= 0x1DC0 && c <= 0x1DFF) ||
        (c >= 0x20D0 && c <= 0x20FF) || (c >= 0xFE20 && c <= 0xFE2F) || c == 0x200B || c == 0x200C ||
        c == 0x200D || c == 0x2060 || (c >= 0xFE00 && c <= 0xFE0F))
        return 0;
    if ((c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0x303E) || (c >= 0x3041 && c <= 0x33FF) ||
        (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xA000 && c <= 0xA4CF) ||
        (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE30 && c <= 0xFE4F) ||
        (c >= 0xFF00 && c <= 0xFF60) || (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x1F300 && c <= 0x1F64F) ||
        (c >= 0x1F900 && c <= 0x1F9FF) || (c >= 0x20000 && c <= 0x3FFFD))
        return 2;
    return 1;
}

size_t table_text_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0;
    while (*p) {
        uint32_t c;
        int len;
        if (p[0] < 0x80) { c = p[0]; len = 1; }
        else if ((p[0] & 0xE0) == 0xC0) { c = p[0] & 0x1F; len = 2; }
        else if ((p[0] & 0xF0) == 0xE0) { c = p[0] & 0x0F; len = 3; }
        else if ((p[0] & 0xF8) == 0xF0) { c = p[0] & 0x07; len = 4; }
        else { w++; p++; continue; }
        int ok = 1;
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xC0) != 0x80) { ok = 0; break; }
            c = (c << 6) | (p[i] & 0x3F);
        }
        if (!ok) { w++; p++; continue; }
        w += (size_t)cp_width(c);
        p += len;
    }
    return w;
}

/* A growing line buffer, so trailing blanks can be cut before the line is written. */
struct line {
    char *p;
    size_t len, cap;
};

static void line_put(struct line *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) {
        while (l->len + n + 1 > l->cap) l->cap = l->cap ? l->cap * 2 : 256;
        l->p = realloc(l->p, l->cap);
        if (!l->p) abort();
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void line_pad(struct line *l, size_t n)
{
    for (size_t i = 0; i < n; i++) line_put(l, " ", 1);
}

int table_print(const table *t, FILE *out)
{
    size_t *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w) abort();
    for (int c = 0; c < t->ncols; c++) {
        if (t->headers) w[c] = table_text_width(t->headers[c]);
        for (size_t r = 0; r < t->rows; r++) {
            size_t x = table_text_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (x > w[c]) w[c] = x;
        }
    }
    struct line l = {0};
    for (size_t r = 0; r < t->rows + (t->headers ? 1 : 0); r++) {
        char *const *row = t->headers ? (r == 0 ? t->headers : t->cells + (r - 1) * (size_t)t->ncols)
                                      : t->cells + r * (size_t)t->ncols;
        l.len = 0;
        for (int c = 0; c < t->ncols; c++) {
            if (c) line_put(&l, "  ", 2);
            size_t cw = table_text_width(row[c]);
            size_t pad = w[c] > cw ? w[c] - cw : 0;
            if (t->right[c]) line_pad(&l, pad);
            line_put(&l, row[c], strlen(row[c]));
            if (!t->right[c]) line_pad(&l, pad);
        }
        while (l.len && l.p[l.len - 1] == ' ') l.len--;
        line_put(&l, "\n", 1);
        fwrite(l.p, 1, l.len, out);
    }
    free(l.p);
    free(w);
    return ferror(out) ? -1 : 0;
}

const char *table_fmt_ago(int64_t t, int64_t now, char *buf, size_t n)
{
    if (t <= 0) {
        snprintf(buf, n, "never");
        return buf;
    }
    int64_t d = now - t;
    int future = d < 0;
    if (future) d = -d;
    if (d < 1 && !future) {
        snprintf(buf, n, "just now");
        return buf;
    }
    char amount[32];
    if (d < 60) snprintf(amount, sizeof amount, "%llds", (long long)d);
    else if (d < 3600) snprintf(amount, sizeof amount, "%lldm", (long long)(d / 60));
    else if (d < 86400) snprintf(amount, sizeof amount, "%lldh", (long long)(d / 3600));
    else snprintf(amount, sizeof amount, "%lldd", (long long)(d / 86400));
    snprintf(buf, n, future ? "in %s" : "%s ago", amount);
    return buf;
}

const char *table_fmt_size(uint64_t bytes, char *buf, size_t n)
{
    static const char *const u[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes / 1024.0;
    int i = 0;
    while (v >= 1024.0 && i < 4) {
        v /= 1024.0;
        i++;
    }
    snprintf(buf, n, "%.1f %s", v, u[i]);
    return buf;
}

const char *table_fmt_num(double v, char *buf, size_t n)
{
    if (isnan(v)) {
        snprintf(buf, n, "nan");
        return buf;
    }
    double a = fabs(v);
    static const struct { double f; const char *s; } sfx[] = {{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        if (a >= sfx[i].f * 10) { /* keep 1234 as is, 12345 as 12.3k */
            double x = v / sfx[i].f;
            snprintf(buf, n, fabs(x) >= 100 ? "%.0f%s" : "%.1f%s", x, sfx[i].s);
            return buf;
        }
    }
    if (a == 0 || a >= 100 || v == (double)(long long)v) snprintf(buf, n, "%.0f", v);
    else if (a >= 1) snprintf(buf, n, "%.1f", v);
    else if (a >= 0.01) snprintf(buf, n, "%.2f", v);
    else snprintf(buf, n, "%.2g", v);
    if (!strcmp(buf, "-0")) snprintf(buf, n, "0");
    return buf;
}

const char *table_fmt_time(int64_t t, char *buf, size_t n)
{
    if (t <= 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

int table_parse_since(const char *s, int64_t *out_seconds)
{
    if (!s || !*s) return -1;
    /* Weeks are not units.h's; accept "2w" (alone) here since "--since 2w" is natural. */
    size_t l = strlen(s);
    if (l >= 2 && s[l - 1] == 'w') {
        char *end;
        long long w = strtoll(s, &end, 10);
        if (end != s + l - 1 || w <= 0 || w > 5200) return -1;
        *out_seconds = w * 7 * 86400;
        return 0;
    }
    int64_t ms;
    if (units_parse_duration_ms(s, &ms) != 0 || ms < 1000) return -1;
    *out_seconds = ms / 1000;
    return 0;
}
