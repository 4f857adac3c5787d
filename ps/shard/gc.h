/* gc.h: a shard drops the chunks it holds but no longer owns.
 *
 * Why it is built this way: a ring change copies keys to their new owners and leaves
 * the old copies where they were (a failover or a change still settling may need
 * them). Once the ring has stayed the same for a while with no change pending, a copy
 * the ring no longer gives this shard is garbage: it takes memory and counts in Health.
 * A pass finds such chunks with a point-in-time export (image.h, only keys kept) and
 * deletes them through the store (journaled, so a restart does not bring them back),
 * a bounded number per pass, so it can run from the heartbeat loop. Sparse rows are not
 * collected yet.
 */
#ifndef PS_SHARD_GC_H
#define PS_SHARD_GC_H

#include <stddef.h>
#include <stdint.h>

#include "placement.h"
#include "status.h"
#include "store.h"

#define GC_MAX_KEYS_PER_PASS 65536u

/* Deletes up to max chunks of `chunks` that placement says this shard owns under no
 * role (neither primary nor backup). *ret_dropped gets how many, *ret_lsn (may be NULL)
 * the delete's journal position (wait for it before relying on it: 0 when none).
 * *ret_more says a further pass may find more. NO_MEMORY; IO when the journal refuses. */
ps_status gc_pass(store *chunks, placement *placement, size_t max, uint64_t *ret_dropped,
                  uint64_t *ret_lsn, bool *ret_more);

#endif
