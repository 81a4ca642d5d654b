/* collectors: host metrics for ReportMetrics, as a small table of plugins (cpu, memory, disk,
 * network) with one interface each (init, read, shutdown), like collectd's. Each enabled
 * plugin runs on its own interval; the caller asks which are due and reads them.
 *
 * Owns: the coll handle, each plugin's state (e.g. the previous /proc/stat counters that CPU
 * percentages are computed against) and copies of the configured filters, so a config reload
 * can free the old dconfig while a coll built from it lives on. Samples belong to the caller.
 * Reads /proc (or a fixture directory laid out like it) and statvfs(); nothing is written.
 * Not thread-safe: one thread drives a coll. */
#ifndef OPS_DAEMON_COLLECTORS_H
#define OPS_DAEMON_COLLECTORS_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/dconfig.h"

typedef enum { COLL_CPU, COLL_MEMORY, COLL_DISK, COLL_NETWORK, COLL_COUNT } coll_kind;

#define COLL_KEY_MAX 96

typedef struct coll_value {
    char key[COLL_KEY_MAX];
    double value;
} coll_value;

/* One MetricData: type + timestamp (Unix seconds) + map<string, double>.
 * Keys (gopsutil-style names):
 *   cpu:     usage_percent, user, system, idle, iowait, steal (percent of all CPU time since
 *            the previous read), cores; with per_core also cpuN.usage_percent
 *   memory:  total, available, used (= total - available), used_percent, free, buffers,
 *            cached (page cache + reclaimable slab), swap_total, swap_used, swap_free (bytes)
 *   disk:    <mount>.total, <mount>.free (available to users), <mount>.used,
 *            <mount>.used_percent, e.g. "/.used_percent"
 *   network: <iface>.bytes_recv, bytes_sent, packets_recv, packets_sent, errin, errout,
 *            dropin, dropout (counters since boot), e.g. "eth0.bytes_recv" */
typedef struct coll_sample {
    char type[16];
    int64_t timestamp;
    size_t n;
    coll_value *values;
    size_t cap;            /* allocated entries; the array is reused across reads */
} coll_sample;

typedef struct coll coll;

/* Builds the collectors enabled in cfg. proc_root NULL means "/proc"; tests pass a directory
 * with stat, meminfo, mounts, filesystems and net/dev fixtures. Plugins with state (cpu) take
 * their first reading here. Returns 0, or -1 with err (e.g. /proc/stat unreadable). */
int coll_new(const dconfig_collectors *cfg, const char *proc_root, coll **out, char *err,
             size_t errlen);
void coll_free(coll *c);

/* Bit (1u << kind) set for each enabled collector whose time has come at now_ms (any
 * monotonic clock, the same for every call). Every enabled collector is due at the first call. */
unsigned coll_due(const coll *c, int64_t now_ms);
/* The earliest now_ms at which something is due; INT64_MAX when nothing is enabled. */
int64_t coll_next_due(const coll *c);
/* Reads one collector into out (its previous values are replaced) and schedules its next read
 * at now_ms + interval, even when the read fails. Returns 0, or -1 with err. Reading a
 * disabled collector is allowed (on-demand queries). */
int coll_read(coll *c, coll_kind kind, int64_t now_ms, coll_sample *out, char *err, size_t errlen);

/* Releases out's array (the struct itself is the caller's). */
void coll_sample_free(coll_sample *s);
/* Looks a key up in a sample. Returns 0 with *v set, or -1 when absent. */
int coll_sample_get(const coll_sample *s, const char *key, double *v);

const char *coll_kind_name(coll_kind kind);
/* "cpu" -> COLL_CPU ... Returns 0, or -1 for an unknown name. */
int coll_kind_from_name(const char *name, coll_kind *out);

#endif
