/* row_table.h: the storage of ONE sparse embedding table of a shard: an index from row
 * id to row number, and the rows themselves (weights, optimizer state, step count).
 *
 * Why it is built this way: a push of a million rows of dim 1 must run at tens of
 * millions of rows per second, so nothing is allocated per row and every pass over a
 * batch is a plain loop the CPU can overlap:
 *   - the index is open addressing with linear probing over 16-byte slots (id, row
 *     number), power-of-two capacity, load at most 1/2, doubled by a rehash when a
 *     reserve needs room. Ids are hashed by a strong 64-bit mixer over (id ^ salt):
 *     sequential ids spread over the whole index, and a salt the row store draws when
 *     it starts keeps a client from choosing ids that all land in one probe run. The
 *     batch lookups prefetch the slots of the ids a few places ahead;
 *   - rows live in slabs of up to ROW_TABLE_SLAB_MAX_ROWS rows (at most about
 *     ROW_TABLE_SLAB_BYTES each), never moved once allocated. A row is `stride` =
 *     dim * (1 + slots) floats: the weights, then the optimizer's state slots of dim
 *     floats each (slot s at row + dim * (1 + s), slots as in train_spec.h). Its step
 *     count (uint64) follows it in the same record (after a pad float when the stride
 *     is odd), so a push touches one record, not a row and a step array apart: for
 *     dim 1 with Adagrad a record is 16 bytes, one cache line miss per row, not two.
 * Rows removed (row_table_remove: a shard dropping the rows a ring change moved away)
 * leave their number for the next row added; the index takes them out by shifting
 * back the slots after them (no tombstones). Memory charged per row (row_table_row_bytes): the
 * record (stride floats rounded up to an even count, 4 bytes each, + 8 of step) + 32 of index
 * (two 16-byte slots: the index is at most half full;
 * right after a doubling it is a quarter full, so this is the least a row takes); the unused tail
 * of the last slab is not charged (its pages are not touched until rows are made there).
 *
 * Not thread-safe: the caller (row_store.c) holds the table's rwlock, shared for the
 * const functions, exclusive for row_table_reserve and row_table_add and scatter.
 */
#ifndef PS_SHARD_ROW_TABLE_H
#define PS_SHARD_ROW_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "train_spec.h"

#define ROW_TABLE_MAX_ROWS (1u << 31)         /* rows one table holds at most */
#define ROW_TABLE_SLAB_MAX_ROWS (64u * 1024u) /* rows per slab at most */
#define ROW_TABLE_SLAB_BYTES (4u << 20)       /* a slab's floats and steps, about at most */
#define ROW_TABLE_INDEX_BYTES_PER_ROW 32u     /* index memory charged per row */
#define ROW_TABLE_NONE UINT32_MAX             /* "no such row" in row number arrays */

typedef struct row_table row_table;

typedef struct row_table_opts {
    const table_spec *spec; /* checked with table_spec_check by the caller; copied */
    uint64_t salt;          /* mixed into every id's hash (row_table_hash); any value */
} row_table_opts;

/* NO_MEMORY or OK. */
ps_status row_table_create(const row_table_opts *opts, row_table **ret_table);
void row_table_destroy(row_table *t); /* accepts NULL */

const table_spec *row_table_spec(const row_table *t);
uint64_t row_table_count(const row_table *t);     /* rows held */
uint64_t row_table_free(const row_table *t);      /* numbers removed rows left, not reused */
uint32_t row_table_slots(const row_table *t);     /* state slots per weight */
uint64_t row_table_row_bytes(const row_table *t); /* memory charged per row (above) */

/* The index hash of `id` in a table made with `salt`, for row_table_find and
 * row_table_add (and for any other hash set over ids that must resist chosen ids):
 * SplitMix64's finalizer over id ^ salt, a bijection whose low bits depend on every bit
 * of the id. Inline: batches hash every id before taking a lock. */
static inline uint64_t row_table_hash(uint64_t salt, uint64_t id) {
    uint64_t x = (id ^ salt) + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* rows[i] = the row number of ids[i] (hashes[i] its row_table_hash), ROW_TABLE_NONE for
 * an id the table lacks. Returns how many were ROW_TABLE_NONE. */
size_t row_table_find(const row_table *t, size_t n, const uint64_t *ids, const uint64_t *hashes,
                      uint32_t *rows);

/* row_table_find for only the ids whose rows[i] is ROW_TABLE_NONE (the others are kept
 * as they are): after a find under the read lock, the write lock looks again only for
 * the ids that were missing then, while the generation says the found rows still hold.
 * Returns how many are still missing. */
size_t row_table_find_missing(const row_table *t, size_t n, const uint64_t *ids,
                              const uint64_t *hashes, uint32_t *rows);

/* A count that changes whenever an id the table holds loses or changes its row number
 * (row_table_remove, row_table_compact); adding rows and growing the index keep it. So
 * row numbers found under the read lock still name the same rows under the write lock
 * taken after it when the generation is unchanged (ids found missing may have been
 * added meanwhile: find those again). */
uint64_t row_table_generation(const row_table *t);

/* Makes room for `extra` more rows: the index grows (rehash to a doubled capacity) and
 * slabs are allocated so that row_table_add cannot fail. RESOURCE_EXHAUSTED past
 * ROW_TABLE_MAX_ROWS, NO_MEMORY when an allocation fails; the rows held and the index
 * are unchanged either way (slabs allocated on the way are kept as room for later). */
ps_status row_table_reserve(row_table *t, uint64_t extra);

/* Removes the rows of ids[0..n) (hashes[i] their row_table_hash) that the table holds;
 * returns how many. FAILED_PRECONDITION (nothing removed) while the table is pinned: an
 * export reads the index as it is. NO_MEMORY (nothing removed): no room to remember
 * the free row numbers. */
ps_status row_table_remove(row_table *t, size_t n, const uint64_t *ids, const uint64_t *hashes,
                           uint64_t *ret_removed);

/* Looks at index slots *slot.. (at most max_slots of them) and puts into ids (at most
 * max_ids) the ids held there for which accept(arg, id) is true; *slot moves past the
 * slots looked at. Returns how many ids; the scan is done when *slot passes the last
 * slot (row_table_slots_total). The index may change between calls (a scan resumed
 * after a change may miss or repeat rows: fine for collecting garbage). */
size_t row_table_scan(const row_table *t, uint64_t *slot, uint64_t max_slots,
                      bool (*accept)(void *arg, uint64_t id), void *arg, uint64_t *ids,
                      size_t max_ids);
uint64_t row_table_slots_total(const row_table *t); /* the index's slots */

/* Moves the rows numbered at or past the count into the numbers removed rows left
 * below it and frees the slabs no row needs any more: after removals the memory goes
 * back. One pass over the index. FAILED_PRECONDITION while pinned (nothing moves);
 * NO_MEMORY (nothing moves). *ret_freed (may be NULL): bytes of slabs freed. */
ps_status row_table_compact(row_table *t, uint64_t *ret_freed);

/* Adds `id` (absent from the table; room reserved): its initial weights
 * (table_spec_init_row), the state of the optimizer kind's defaults
 * (optimizer_state_init of optim_spec_defaults), step 0. Returns its row number. */
uint32_t row_table_add(row_table *t, uint64_t id, uint64_t hash);

/* Reads n rows in request order: out gets dim floats each; state_out (may be NULL)
 * slots * dim floats each (the row's slots one after the other); steps_out (may be
 * NULL) one step count each. */
void row_table_read(const row_table *t, size_t n, const uint32_t *rows, float *out,
                    float *state_out, uint64_t *steps_out);

/* steps_out[i] = the step count of rows[i]. */
void row_table_steps(const row_table *t, size_t n, const uint32_t *rows, uint64_t *steps_out);

/* Copies n rows into `out` plane after plane, as optimizer_step takes them: plane 0 the
 * weights of every row (n * dim floats), then, when `planes` > 1, state slot p - 1 of
 * every row (n * dim floats each); planes is 1 or 1 + slots. A row whose step count is
 * 0 takes its state from `fresh` (slots * dim floats, as optimizer_state_init fills it)
 * when fresh is not NULL. */
void row_table_gather(const row_table *t, size_t n, const uint32_t *rows, uint32_t planes,
                      const float *fresh, float *out);

/* The reverse of row_table_gather: writes the planes of `in` back into the n rows, and
 * adds 1 to each row's step count when bump_steps. */
void row_table_scatter(row_table *t, size_t n, const uint32_t *rows, uint32_t planes,
                       const float *in, bool bump_steps);

/* ---- pins: an export's point-in-time view (image.h), and whole-row writes ----------
 * A pin remembers the rows held, the index and the slabs at one moment. While a table is
 * pinned, whoever writes rows in place (row_table_scatter, row_table_write) first calls
 * row_table_unshare on them: a pinned slab is then copied aside once, before its first
 * write, and the pin reads the copy (copy on write); an index that grows is kept for the
 * pin; rows added meanwhile lie past the pinned count and are not read. So the pin
 * reads the rows as they were when it was taken, while pushes go on. One pin at a time.
 * Locks as for the rest: the table's write lock for pin, unpin, unshare and write, its
 * read lock (at least) for the reads. */

/* Pins the table. FAILED_PRECONDITION when it is pinned already, NO_MEMORY. */
ps_status row_table_pin(row_table *t);
/* Drops the pin and the copies it holds (none: does nothing). */
void row_table_unpin(row_table *t);
/* Rows the pin holds (0 without a pin). */
uint64_t row_table_pin_count(const row_table *t);
/* Copies aside each pinned slab that rows[0..n) fall in and that is not copied yet.
 * NO_MEMORY: a copy could not be made (the copies made stay; write nothing then). */
ps_status row_table_unshare(row_table *t, size_t n, const uint32_t *rows);
/* Reads the pinned rows met from index slot *cursor on, at most `max` of them: ids,
 * steps, weights (dim floats each) and state (slots * dim each; may be NULL when slots is
 * 0). *cursor moves past the slots looked at; returns the rows read. Done when *cursor
 * reaches row_table_pin_slots. */
size_t row_table_pin_read(const row_table *t, uint64_t *cursor, size_t max, uint64_t *ids,
                          uint64_t *steps, float *values, float *state);
/* Index slots the pin's index has (0 without a pin). */
uint64_t row_table_pin_slots(const row_table *t);

/* Writes whole rows: n rows' weights (dim floats each), state (slots * dim each; NULL
 * when slots is 0) and step counts. Call row_table_unshare on them first. */
void row_table_write(row_table *t, size_t n, const uint32_t *rows, const float *values,
                     const float *state, const uint64_t *steps);

#endif
