/* units: durations ("250ms", "30s", "5m", "1h30m") and sizes ("10MiB", "512KB") as written
 * in config files and on command lines. Owns nothing. */
#ifndef OPS_BASE_UNITS_H
#define OPS_BASE_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* Parses a sequence of <number><unit> (units ms, s, m, h, d; a plain "0" is allowed) into
 * milliseconds. Returns 0, or -1 for an empty, malformed, negative or overflowing value. */
int units_parse_duration_ms(const char *s, int64_t *out_ms);
/* Parses <number>[unit], units B, K/KB (1000), KiB (1024), M/MB, MiB, G/GB, GiB, T/TB, TiB.
 * Returns 0, or -1 for malformed or overflowing values. */
int units_parse_size(const char *s, uint64_t *out);
/* Formats ms back as the shortest duration string ("1h30m", "250ms"). Returns buf. */
const char *units_format_duration(int64_t ms, char *buf, size_t n);

#endif
