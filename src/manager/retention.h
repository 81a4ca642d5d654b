/* retention: deletes metric points older than the retention window, every interval, in small
 * batches (store_delete_metrics_before) so ingestion never waits for more than one batch.
 *
 * With replicas (store_is_shared) only the leader (store_is_leader) deletes; the others check
 * every 2 s whether they have become it.
 *
 * Owns: one thread. Borrows the store. */
#ifndef OPS_MANAGER_RETENTION_H
#define OPS_MANAGER_RETENTION_H

#include <stddef.h>
#include <stdint.h>

#include "manager/store.h"

typedef struct retention retention;

/* Runs a first pass at once, then every interval_ms. NULL with err. */
retention *retention_start(store *st, int64_t keep_ms, int64_t interval_ms, char *err, size_t errlen);
void retention_stop(retention *r);

#endif
