/* chart: braille plots and sparklines. */
#include "ctl/chart.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ctl/table.h"

int chart_term_width(void)
{
    int w = 0;
    const char *c = getenv("COLUMNS");
    if (c && *c) w = atoi(c);
    if (w <= 0) {
        struct winsize ws;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) w = ws.ws_col;
    }
    if (w <= 0) w = 80;
    return w < 30 ? 30 : w;
}

int chart_plot_columns(int width)
{
    int c = width - CHART_MARGIN;
    return c < 10 ? 10 : c;
}

/* A growing text buffer. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_spaces(struct sbuf *b, int n)
{
    for (int i = 0; i < n; i++) sb_put(b, " ", 1);
}

/* Braille dot bits by (column in cell, row in cell). */
static const unsigned char dot_bit[2][4] = {{0x01, 0x02, 0x04, 0x40}, {0x08, 0x10, 0x20, 0x80}};

static void set_dot(unsigned char *cells, int cols, int rows, int x, int y)
{
    if (x < 0 || y < 0 || x >= cols * 2 || y >= rows * 4) return;
    cells[(y / 4) * cols + x / 2] |= dot_bit[x % 2][y % 4];
}

static void line(unsigned char *cells, int cols, int rows, int x0, int y0, int x1, int y1)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (;;) {
        set_dot(cells, cols, rows, x0, y0);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}

static void put_braille(struct sbuf *b, unsigned char bits)
{
    if (!bits) {
        sb_put(b, " ", 1);
        return;
    }
    unsigned cp = 0x2800u + bits;
    char u[3] = {(char)(0xE0 | (cp >> 12)), (char)(0x80 | ((cp >> 6) & 0x3F)), (char)(0x80 | (cp & 0x3F))};
    sb_put(b, u, 3);
}

static void time_label(int64_t t, int long_range, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, n, long_range ? "%m-%d %H:%M" : "%H:%M", &tm);
}

char *chart_plot(const chart_point *pts, size_t n, const chart_opts *o)
{
    if (n == 0) return NULL;
    chart_opts dflt = {0};
    if (!o) o = &dflt;
    int width = o->width > 0 ? o->width : chart_term_width();
    int rows = o->height > 0 ? o->height : 8;
    int cols = chart_plot_columns(width);
    int64_t from = o->from, to = o->to;
    if (from == 0 && to == 0) {
        from = pts[0].t;
        to = pts[n - 1].t;
    }
    double lo = pts[0].v, hi = pts[0].v;
    for (size_t i = 1; i < n; i++) {
        if (pts[i].v < lo) lo = pts[i].v;
        if (pts[i].v > hi) hi = pts[i].v;
    }
    if (hi == lo) { /* a flat line sits in the middle of a range around it */
        double pad = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= pad;
        hi += pad;
    }
    unsigned char *cells = calloc((size_t)cols * (size_t)rows, 1);
    if (!cells) abort();
    int ydots = rows * 4 - 1, xdots = cols * 2 - 1;
    int px = -1, py = -1;
    for (size_t i = 0; i < n; i++) {
        int x = to > from ? (int)lround((double)(pts[i].t - from) / (double)(to - from) * xdots) : 0;
        int y = (int)lround((hi - pts[i].v) / (hi - lo) * ydots);
        if (px >= 0) line(cells, cols, rows, px, py, x, y);
        else set_dot(cells, cols, rows, x, y);
        px = x;
        py = y;
    }

    struct sbuf b = {0};
    int mid = rows / 2;
    char lab[64], num[32];
    for (int r = 0; r < rows; r++) {
        const char *l = "";
        if (r == 0) l = table_fmt_num(hi, num, sizeof num);
        else if (r == rows - 1) l = table_fmt_num(lo, num, sizeof num);
        else if (r == mid) l = table_fmt_num((hi + lo) / 2, num, sizeof num);
        snprintf(lab, sizeof lab, "%*s", CHART_LABEL_W, l);
        sb_str(&b, lab);
        sb_str(&b, *l ? " ┤" : " │");
        for (int c = 0; c < cols; c++) put_braille(&b, cells[r * cols + c]);
        while (b.len && b.p[b.len - 1] == ' ') b.p[--b.len] = 0; /* no trailing blanks */
        sb_str(&b, "\n");
    }
    free(cells);
    sb_spaces(&b, CHART_LABEL_W + 1);
    sb_str(&b, "└");
    for (int c = 0; c < cols; c++) sb_str(&b, "─");
    sb_str(&b, "\n");

    /* Time labels: start (left-aligned), middle (centred), end (right-aligned at the edge),
     * dropped when they would collide. */
    int long_range = to - from > 86400;
    char t0[32], t1[32], t2[32];
    time_label(from, long_range, t0, sizeof t0);
    time_label(from + (to - from) / 2, long_range, t1, sizeof t1);
    time_label(to, long_range, t2, sizeof t2);
    int l0 = (int)strlen(t0), l1 = (int)strlen(t1), l2 = (int)strlen(t2);
    int pos1 = cols / 2 - l1 / 2, pos2 = cols - l2;
    sb_spaces(&b, CHART_MARGIN);
    sb_str(&b, t0);
    int at = l0;
    if (pos1 >= at + 2 && pos1 + l1 + 2 <= pos2) {
        sb_spaces(&b, pos1 - at);
        sb_str(&b, t1);
        at = pos1 + l1;
    }
    if (pos2 >= at + 2) {
        sb_spaces(&b, pos2 - at);
        sb_str(&b, t2);
    }
    sb_str(&b, "\n");
    return b.p;
}

int chart_sparkline(const double *v, size_t n, int width, char *buf, size_t buflen)
{
    static const char *const lv[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    if (buflen) buf[0] = 0;
    if (n == 0 || width <= 0 || buflen == 0) return 0;
    size_t cells = n < (size_t)width ? n : (size_t)width;
    double *a = malloc(cells * sizeof *a);
    if (!a) abort();
    for (size_t i = 0; i < cells; i++) {
        size_t s = i * n / cells, e = (i + 1) * n / cells;
        double sum = 0;
        for (size_t k = s; k < e; k++) sum += v[k];
        a[i] = sum / (double)(e - s);
    }
    double lo = a[0], hi = a[0];
    for (size_t i = 1; i < cells; i++) {
        if (a[i] < lo) lo = a[i];
        if (a[i] > hi) hi = a[i];
    }
    size_t len = 0;
    int written = 0;
    for (size_t i = 0; i < cells; i++) {
        int l = hi > lo ? (int)lround((a[i] - lo) / (hi - lo) * 7) : (lo == 0 ? 0 : 3);
        if (len + 3 + 1 > buflen) break;
        memcpy(buf + len, lv[l], 3);
        len += 3;
        written++;
    }
    buf[len] = 0;
    free(a);
    return written;
}
