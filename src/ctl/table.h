/* table: opsctl's text output: aligned columns measured in terminal cells (UTF-8 aware: wide
 * CJK/emoji count 2, combining marks 0), and the small formatters that fill them (relative
 * times, sizes, numbers, durations given on the command line).
 *
 * Owns: a table's copies of its headers and cells (table_free). Formatters write into the
 * caller's buffer and return it. */
#ifndef OPS_CTL_TABLE_H
#define OPS_CTL_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct table table;

/* A table with ncols columns; headers (ncols strings) may be NULL for none. */
table *table_new(int ncols, const char *const *headers);
void table_free(table *t);
/* Right-aligns column col (numbers). */
void table_align_right(table *t, int col);
/* Appends a row of ncols cells (copied; NULL prints as ""). Returns 0. */
int table_add_row(table *t, const char *const *cells);
/* Appends a row given as ncols const char * arguments. Returns 0. */
int table_add(table *t, ...);
size_t table_rows(const table *t);
/* Writes the table: columns separated by two spaces, no trailing blanks. Returns 0 or -1
 * (write error). */
int table_print(const table *t, FILE *out);

/* Terminal cells taken by the UTF-8 string s (invalid bytes count 1 each). */
size_t table_text_width(const char *s);

/* "12s ago", "5m ago", "3h ago", "2d ago", "just now", "in 5s"; "never" for t <= 0. */
const char *table_fmt_ago(int64_t t, int64_t now, char *buf, size_t n);
/* "512 B", "1.5 KiB", "12.0 MiB"... */
const char *table_fmt_size(uint64_t bytes, char *buf, size_t n);
/* A number in at most ~7 characters: "12.3", "0.05", "1.23k", "4.5M", "-2". */
const char *table_fmt_num(double v, char *buf, size_t n);
/* Local time "2026-11-25 16:20:01"; "-" for t <= 0. */
const char *table_fmt_time(int64_t t, char *buf, size_t n);

/* --since values: a duration ("90s", "15m", "1h30m", "7d", "2w") into seconds. Returns 0, or
 * -1 for anything else (empty, negative, zero, trailing junk). */
int table_parse_since(const char *s, int64_t *out_seconds);

#endif
