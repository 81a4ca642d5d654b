/* libFuzzer: a spool directory holding arbitrary report files (a damaged disk, a foreign
 * file). spool_open/peek/remove must skip or drop what they cannot use and never crash. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/spool.h"
#include "manager.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    if (!dir[0]) {
        log_open(LOGL_ERROR, NULL);
        snprintf(dir, sizeof dir, "/tmp/ops-fuzz-spool-%d", (int)getpid());
    }
    char err[512], path[128];
    snprintf(path, sizeof path, "%s/00000000000000000001.rpt", dir);
    spool *s = spool_open(dir, 1 << 20, err, sizeof err);
    if (!s) return 0;
    spool_close(s);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        if (write(fd, data, size) < 0) {}
        close(fd);
    }
    s = spool_open(dir, 1 << 20, err, sizeof err);
    if (!s) return 0;
    uint64_t seq;
    void *buf;
    size_t len;
    while (spool_peek(s, &seq, &buf, &len, err, sizeof err) == 1) {
        /* What the link does with a spooled report. */
        Manager__ReportMetricsRequest *r = manager__report_metrics_request__unpack(NULL, len, buf);
        if (r) manager__report_metrics_request__free_unpacked(r, NULL);
        free(buf);
        spool_remove(s, seq);
    }
    spool_close(s);
    return 0;
}
