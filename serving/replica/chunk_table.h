/* chunk_table.h: the chunks of one served model version, and the version each holds.
 *
 * A served model's parameters are cut into chunks, each stored on one shard under a
 * 64-bit key. This table maps a key to where the chunk lands in the model (tensor,
 * offset, length) and keeps, per chunk, the version the replica holds and whether it
 * must be pulled again. It decides how an update streamed from a shard applies, by
 * the protocol's rule (proto/ps.proto: versions are the shard's update sequence
 * numbers and never go backwards, even across shard restarts):
 *   - held >= version: already in, skip;
 *   - ASSIGN with held < version: copy the values;
 *   - ADD with held == prev_version: add the delta;
 *   - anything else (a gap, a length that does not match): stale, pull it again.
 * A chunk is stale when an update announced a version it could not apply, or when it
 * was marked for a re-pull (its shard restarted, its stream stalled or said resync).
 * Marks carry a generation, so a pull that started before a newer mark does not clear
 * it.
 *
 * Pure bookkeeping: no locks, no I/O (the served model holds the lock and copies the
 * values), so every rule is unit-tested directly.
 */
#ifndef PS_SERVING_REPLICA_CHUNK_TABLE_H
#define PS_SERVING_REPLICA_CHUNK_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Where a chunk lands in the model. */
typedef struct chunk_table_entry {
    uint64_t key;
    uint32_t param;  /* tensor index in the served model */
    uint32_t offset; /* first float of the chunk in that tensor */
    uint32_t len;    /* floats */
} chunk_table_entry;

/* What to do with one streamed update (chunk_table_decide). */
typedef enum chunk_table_action {
    CHUNK_TABLE_SKIP = 0, /* already held (held >= version) */
    CHUNK_TABLE_ASSIGN,   /* copy the update's values, then chunk_table_set_applied */
    CHUNK_TABLE_ADD,      /* add the update's values, then chunk_table_set_applied */
    CHUNK_TABLE_STALE,    /* cannot apply it: chunk_table_set_wanted, then pull again */
} chunk_table_action;

typedef struct chunk_table chunk_table;

/* A table for at most `capacity` chunks (INVALID_ARGUMENT for 0 or more than
 * UINT32_MAX - 1). */
ps_status chunk_table_create(size_t capacity, chunk_table **ret_table);
void chunk_table_destroy(chunk_table *t); /* accepts NULL */

/* Adds a chunk, not yet filled (held version 0). ALREADY_EXISTS for a key already in
 * the table, RESOURCE_EXHAUSTED past the capacity. */
ps_status chunk_table_add(chunk_table *t, const chunk_table_entry *entry);
size_t chunk_table_count(const chunk_table *t);
/* The i-th chunk added (i < count). */
const chunk_table_entry *chunk_table_at(const chunk_table *t, size_t i);
bool chunk_table_find(const chunk_table *t, uint64_t key, size_t *ret_index);
/* The version held of chunk i (0: not filled yet). */
uint64_t chunk_table_held(const chunk_table *t, size_t i);

/* The update rule above, for an update of chunk i carrying `value_floats` floats. */
chunk_table_action chunk_table_decide(const chunk_table *t, size_t i, bool add, uint64_t version,
                                      uint64_t prev_version, size_t value_floats);
/* An ASSIGN or ADD at `version` was applied to chunk i. */
void chunk_table_set_applied(chunk_table *t, size_t i, uint64_t version);
/* An update at `version` could not be applied: chunk i is stale until it holds it. */
void chunk_table_set_wanted(chunk_table *t, size_t i, uint64_t version);

/* Marks for a re-pull every chunk whose key `pred` accepts (pred NULL: every chunk).
 * Returns how many chunks were marked. */
size_t chunk_table_repull_mark(chunk_table *t, bool (*pred)(uint64_t key, void *arg), void *arg);
/* The mark generation now: pass it to chunk_table_set_pulled for a pull that starts. */
uint64_t chunk_table_generation(const chunk_table *t);
/* Values pulled at `version` for chunk i, read by a pull that started at mark
 * generation `generation`. Returns true when the caller must copy them in (they are
 * newer than what is held); clears the re-pull mark unless a newer mark came. */
bool chunk_table_set_pulled(chunk_table *t, size_t i, uint64_t version, uint64_t generation);

bool chunk_table_is_stale(const chunk_table *t, size_t i);
size_t chunk_table_stale_count(const chunk_table *t);
/* Writes the indices of up to `cap` stale chunks; returns how many. */
size_t chunk_table_stale_list(const chunk_table *t, size_t *ret_indices, size_t cap);
/* True when every chunk holds a version (was filled at least once). */
bool chunk_table_filled(const chunk_table *t);
/* The sum of the versions the chunks hold (mod 2^64): the model's param_version.
 * Versions are the shards' update sequence numbers, so replicas that hold the same
 * values report the same sum; every applied update raises it, and it never decreases
 * (a restarted shard's versions start above its old ones). It could wrap only past
 * about 10,000 chunks held at the maximum version. */
uint64_t chunk_table_version_sum(const chunk_table *t);

#endif
