/* sync_dedup.h: the request ids a sync's images hold, sent batch by batch with the
 * images they are about.
 *
 * Why: a backup that installs an image forgets what requests applied to its keys (the
 * image replaced their values), and learns it again from the dedup records its primary
 * sends. Sent only at the sync's end, they never came when the primary died in the
 * middle: the backup, now primary, held the images' values but not the ids of the
 * pushes they contain, and a client's retry of one of them applied it twice (on every
 * imaged key). So the primary exports its request ids at the sync's point, indexes
 * them by key, and each batch carries, after its images, the records of the requests
 * that applied to those images' keys: the backup installs and learns in one call.
 *
 * Use: sync_dedup_export at the point (the stores held still: it only copies),
 * sync_dedup_index before the first image (keys the backup should hold: accept), then
 * per image: sync_dedup_stage its keys (the cost its records add to the batch),
 * sync_dedup_commit once the image is in the batch; sync_dedup_flush when the batch
 * goes (the records, one per request, JOURNAL_DEDUP_MAX_KEYS keys at most each).
 * Not thread-safe: one sync's thread.
 */
#ifndef PS_SHARD_SYNC_DEDUP_H
#define PS_SHARD_SYNC_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "status.h"

typedef struct sync_dedup sync_dedup;

/* What request memory `requests` holds at positions up to `point`, copied; each record
 * will be framed with frame_head bytes before its payload (what costs count). NO_MEMORY. */
ps_status sync_dedup_export(dedup *requests, uint64_t point, size_t frame_head, sync_dedup **ret);
void sync_dedup_destroy(sync_dedup *sd); /* accepts NULL */

/* Keeps the keys accept() takes (NULL: all) and sorts them for lookups. NO_MEMORY. */
ps_status sync_dedup_index(sync_dedup *sd, bool (*accept)(void *arg, uint64_t key), void *arg);

/* The records the keys of one image add to the batch: *ret_records more records and
 * *ret_bytes more bytes, frames included. Staged until sync_dedup_commit; a later stage
 * replaces it. NO_MEMORY. */
ps_status sync_dedup_stage(sync_dedup *sd, size_t n, const uint64_t *keys, size_t *ret_records,
                           size_t *ret_bytes);
/* The staged keys join the batch (after a flush, they start the next one). */
void sync_dedup_commit(sync_dedup *sd);
/* The batch's records so far: count and bytes (frames included). */
void sync_dedup_pending(const sync_dedup *sd, size_t *ret_records, size_t *ret_bytes);

/* The batch's records, each given to emit(arg, request id, n keys, keys); the batch is
 * then empty. The first emit failure is returned. */
ps_status sync_dedup_flush(sync_dedup *sd,
                           ps_status (*emit)(void *arg, uint64_t id, size_t n,
                                             const uint64_t *keys),
                           void *arg);

#endif
