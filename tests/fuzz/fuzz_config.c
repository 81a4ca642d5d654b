/* libFuzzer: arbitrary bytes as daemon.yaml and manager.yaml. The loaders must answer with a
 * config or an error message, never crash, leak or read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/dconfig.h"
#include "manager/mconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) { log_open(LOGL_ERROR, NULL); quiet = 1; }
    char err[1024];
    dconfig *d = NULL;
    if (dconfig_load_string("fuzz.yaml", (const char *)data, size, &d, err, sizeof err) == 0) {
        char *y = NULL;
        if (dconfig_dump_yaml(d, &y) == 0) {
            /* What we print must load back. */
            dconfig *again = NULL;
            if (dconfig_load_string("dump.yaml", y, strlen(y), &again, err, sizeof err) != 0) abort();
            dconfig_free(again);
        }
        free(y);
        dconfig_free(d);
    }
    mconfig *m = NULL;
    if (mconfig_load_string("fuzz.yaml", (const char *)data, size, &m, err, sizeof err) == 0) {
        char *y = mconfig_dump_yaml(m);
        if (y) {
            mconfig *again = NULL;
            if (mconfig_load_string("dump.yaml", y, strlen(y), &again, err, sizeof err) != 0) abort();
            mconfig_free(again);
        }
        free(y);
        mconfig_free(m);
    }
    return 0;
}
