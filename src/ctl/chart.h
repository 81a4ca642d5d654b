/* chart: time series drawn in the terminal, because people would rather look than read a
 * column of numbers. A braille plot (each cell holds 2x4 dots) with a labelled y axis (max,
 * mid, min) and a time axis (start, middle, end), and one-line sparklines (▁▂▃▄▅▆▇█) for
 * compact per-key rows.
 *
 * Owns nothing long-lived: chart_plot returns text the caller frees; the sparkline is written
 * into the caller's buffer. */
#ifndef OPS_CTL_CHART_H
#define OPS_CTL_CHART_H

#include <stddef.h>
#include <stdint.h>

/* Columns left of the plot: a right-aligned y label of CHART_LABEL_W cells, " ┤". */
#define CHART_LABEL_W 8
#define CHART_MARGIN (CHART_LABEL_W + 2)

typedef struct chart_point {
    int64_t t; /* Unix seconds */
    double v;
} chart_point;

typedef struct chart_opts {
    int width;        /* total columns, labels included; 0 = chart_term_width() */
    int height;       /* plot rows (4 dots each); 0 = 8 */
    int64_t from, to; /* the x axis' range; both 0 = the data's first and last time */
} chart_opts;

/* The terminal's width: $COLUMNS, else the tty's (ioctl on stdout), else 80; at least 30. */
int chart_term_width(void);
/* Plot cells across for a total width (what is left after the y labels); at least 10. Twice
 * this is the number of dot columns: ask the server for that many buckets. */
int chart_plot_columns(int width);

/* Draws points (oldest first) as lines of text ending in '\n': the plot rows, the x axis
 * line, and the time labels. Returns malloc'd text (the caller's), or NULL when n is 0. */
char *chart_plot(const chart_point *pts, size_t n, const chart_opts *o);

/* Writes a sparkline of width cells (fewer when n < width: one cell per value; more values
 * are averaged into width cells) into buf as UTF-8. Empty string when n is 0. Returns the
 * number of cells written. */
int chart_sparkline(const double *v, size_t n, int width, char *buf, size_t buflen);

#endif
