/* libFuzzer: duration and size strings. Parsing never crashes, and whatever parses as a
 * duration formats and parses back to the same value. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/units.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[128];
    if (size >= sizeof s) size = sizeof s - 1;
    memcpy(s, data, size);
    s[size] = 0;
    int64_t ms;
    if (units_parse_duration_ms(s, &ms) == 0) {
        char buf[64];
        int64_t back;
        units_format_duration(ms, buf, sizeof buf);
        if (units_parse_duration_ms(buf, &back) != 0 || back != ms) abort();
    }
    uint64_t v;
    (void)units_parse_size(s, &v);
    return 0;
}
