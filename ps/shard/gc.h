/* gc.h: a shard drops the chunks it holds but no longer owns.
 *
 * Why it is built this way: a ring change copies keys to their new owners and leaves
 * the old copies where they were (a failover or a change still settling may need
 * them). Once the ring has stayed the same for a while with no change pending, a copy
 * the ring no longer gives this shard is garbage: it takes memory and counts in Health.
 * A pass finds such chunks with a point-in-time export (image.h, only keys kept) and
 * deletes them through the store (journaled, so a restart does not bring them back),
 * a bounded number per pass, so it can run from the heartbeat loop. Sparse rows the
 * same way, a slice of one table's index per pass from a cursor kept between passes
 * (row_store_remove: journaled, the quota and, once many are gone, the table's memory
 * given back); no export: it would copy every row, and a pass must stay short.
 */
#ifndef PS_SHARD_GC_H
#define PS_SHARD_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement.h"
#include "row_store.h"
#include "status.h"
#include "store.h"

#define GC_MAX_KEYS_PER_PASS 65536u

/* Deletes up to max chunks of `chunks` that placement says this shard owns under no
 * role (neither primary nor backup). *ret_dropped gets how many, *ret_lsn (may be NULL)
 * the delete's journal position (wait for it before relying on it: 0 when none).
 * *ret_more says a further pass may find more. NO_MEMORY; IO when the journal refuses. */
ps_status gc_pass(store *chunks, placement *placement, size_t max, uint64_t *ret_dropped,
                  uint64_t *ret_lsn, bool *ret_more);

/* Where a rows collection stands: a table (in the order tables were made), an index
 * slot in it, the rows dropped in this cycle and whether a table was busy. Starts
 * zeroed; gc_rows_pass moves it on and zeroes it when a cycle over every table is
 * complete. */
typedef struct gc_rows_cursor {
    uint32_t table;
    uint64_t slot;
    uint64_t dropped;
    bool busy; /* rows were left because an export read their table */
} gc_rows_cursor;

#define GC_ROWS_SLOTS_PER_PASS (1u << 20) /* index slots a rows pass looks at at most */

/* The same for sparse rows: looks at the next GC_ROWS_SLOTS_PER_PASS index slots from
 * *cur (one table) and removes up to max of the rows there whose keys (ps_key_row_in)
 * placement gives this shard under no role. *ret_more says to go on: false only when
 * a whole cycle over every table dropped nothing and left nothing (a removal shifts
 * index entries back, so a cycle may pass over a row; the next one finds it; a table
 * an export is reading keeps its rows until a later cycle). NO_MEMORY; IO when the
 * journal refuses. */
ps_status gc_rows_pass(row_store *rows, placement *placement, gc_rows_cursor *cur, size_t max,
                       uint64_t *ret_dropped, uint64_t *ret_lsn, bool *ret_more);

#endif
