/* journal.h: what the chunk store writes to the shard's write-ahead log (wal.h), and
 * how a restart replays it: a record per push (its op, optimizer, flags, keys,
 * lengths, names and values, as received) and per delete (its keys).
 *
 * Why it is built this way: the store appends a push's record under its write lock,
 * after the push passed every check and before it changes anything, so records are in
 * the order pushes were applied, and a push the log refuses (a full disk) is refused
 * whole. The handler then waits until the record is durable before it answers, so an
 * acknowledged push is on disk. Replay runs each record through the same prepare and
 * apply as a live push (an optimizer step over the same state and gradient gives the
 * same result), with new sequence numbers: the restarted shard's sequence starts at the
 * wall clock, past every version it gave before, and it has a new incarnation, so
 * replicas re-pull what they hold. Sparse rows: a record per PushRows (model, table,
 * spec, op, optimizer, ids, values); pulls are not written (the rows they make are the
 * deterministic initial ones).
 *
 * Record payloads are little-endian; this code assumes a little-endian host (checked at
 * compile time).
 */
#ifndef PS_SHARD_JOURNAL_H
#define PS_SHARD_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "row_store.h"
#include "store.h"
#include "wal.h"

#define JOURNAL_TYPE_PUSH 1
#define JOURNAL_TYPE_DELETE 2
#define JOURNAL_TYPE_ROWS 3

/* What a replay writes into. */
typedef struct journal_target {
    store *chunks;
    row_store *rows;
} journal_target;

/* A store_journal (store.h) and a row_journal (row_store.h) that append to w. */
store_journal journal_for(wal *w);
row_journal journal_rows_for(wal *w);

/* A wal_replay_fn (wal.h): applies a record to the journal_target given as arg. PARSE for a
 * record that does not decode; the store's status for one it refuses (a replayed push
 * never should be: it passed the same checks when it was logged). */
ps_status journal_replay(void *store_arg, uint8_t type, uint64_t lsn, const void *payload,
                         size_t len);

#endif
