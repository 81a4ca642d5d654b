/* units: duration and size strings, parsed strictly: a typo must be an error, never a zero. */
#include "base/units.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int units_parse_duration_ms(const char *s, int64_t *out_ms)
{
    if (!s || !*s) return -1;
    if (strcmp(s, "0") == 0) { *out_ms = 0; return 0; }
    int64_t total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p)) return -1;
        int64_t v = 0;
        while (isdigit((unsigned char)*p)) {
            if (v > (INT64_MAX - 9) / 10) return -1;
            v = v * 10 + (*p++ - '0');
        }
        int64_t mul;
        if (strncmp(p, "ms", 2) == 0) { mul = 1; p += 2; }
        else if (*p == 's') { mul = 1000; p++; }
        else if (*p == 'm') { mul = 60000; p++; }
        else if (*p == 'h') { mul = 3600000; p++; }
        else if (*p == 'd') { mul = 86400000; p++; }
        else return -1;
        if (v > INT64_MAX / mul || total > INT64_MAX - v * mul) return -1;
        total += v * mul;
    }
    *out_ms = total;
    return 0;
}

int units_parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    uint64_t v = 0;
    const char *p = s;
    while (isdigit((unsigned char)*p)) {
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    static const struct { const char *unit; uint64_t mul; } units[] = {
        {"", 1}, {"B", 1},
        {"K", 1000ULL}, {"KB", 1000ULL}, {"KiB", 1ULL << 10},
        {"M", 1000000ULL}, {"MB", 1000000ULL}, {"MiB", 1ULL << 20},
        {"G", 1000000000ULL}, {"GB", 1000000000ULL}, {"GiB", 1ULL << 30},
        {"T", 1000000000000ULL}, {"TB", 1000000000000ULL}, {"TiB", 1ULL << 40},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mul) return -1;
            *out = v * units[i].mul;
            return 0;
        }
    }
    return -1;
}

const char *units_format_duration(int64_t ms, char *buf, size_t n)
{
    if (ms <= 0) { snprintf(buf, n, "0s"); return buf; }
    if (ms % 1000) { snprintf(buf, n, "%lldms", (long long)ms); return buf; }
    int64_t s = ms / 1000;
    size_t o = 0;
    buf[0] = 0;
    if (s >= 3600) { o += (size_t)snprintf(buf + o, n - o, "%lldh", (long long)(s / 3600)); s %= 3600; }
    if (s >= 60 && o < n) { o += (size_t)snprintf(buf + o, n - o, "%lldm", (long long)(s / 60)); s %= 60; }
    if (s > 0 && o < n) snprintf(buf + o, n - o, "%llds", (long long)s);
    return buf;
}
