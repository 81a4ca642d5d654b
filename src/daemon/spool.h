/* spool: metric reports waiting for the manager, on disk, in order. Every report is appended
 * here first and removed only after the manager acknowledged it, so a manager outage or a
 * daemon restart loses nothing; past max_bytes the oldest reports are dropped (counted and
 * logged), so a long outage cannot fill the disk.
 *
 * Owns: the directory's *.rpt files (one report each, named by a sequence number, written to a
 * temporary name, fsynced and renamed, so a crash leaves whole reports or none) and an index
 * of them in memory. Thread-safe. */
#ifndef OPS_DAEMON_SPOOL_H
#define OPS_DAEMON_SPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct spool spool;

/* Opens (creating dir) and indexes what an earlier run left. NULL with err. */
spool *spool_open(const char *dir, uint64_t max_bytes, char *err, size_t errlen);
void spool_close(spool *s);
/* Appends one report. 0, or -1 with err (disk full...: nothing was added). */
int spool_append(spool *s, const void *data, size_t len, char *err, size_t errlen);
/* The oldest report: 1 with *data (malloc'd, the caller's) and *seq, 0 when empty, -1 with err
 * when it cannot be read (it is then dropped so the queue moves on). */
int spool_peek(spool *s, uint64_t *seq, void **data, size_t *len, char *err, size_t errlen);
/* Removes a delivered report. 0 or -1. */
int spool_remove(spool *s, uint64_t seq);
size_t spool_count(spool *s);
uint64_t spool_bytes(spool *s);
uint64_t spool_dropped(spool *s);

#endif
