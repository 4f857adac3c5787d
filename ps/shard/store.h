/* store.h: the shard's chunk store: a hash table of float chunks by 64-bit key, with
 * a version per chunk, a value-memory quota, and pushes applied all or nothing.
 *
 * Why it is built this way: pushes come in two steps so the exclusive lock is held
 * only to validate against the state and publish. store_batch_prepare, without the
 * lock, checks everything that needs no state (lengths, their total, value bytes,
 * names, duplicate keys), copies each key's values once, straight from the received
 * message into a new value block (update_log.h), checks they are finite there, and
 * allocates everything else the push could need (new chunks, names, the log entries,
 * ADD's result blocks, optimizer state). store_batch_apply, under the write lock,
 * checks the push against the state (ADD: chunk present, same length, finite
 * results; ASSIGN: same length as an existing chunk; the quota), computes what needs
 * the state (ADD's sums, optimizer steps: into the prepared blocks), and then
 * publishes by swapping pointers, or, on any failure, changes nothing: past its
 * checks it cannot fail. A chunk's block is never written while anyone else holds
 * it, so the log's entries and Pull replies reference blocks instead of copying them
 * (every push logs the block the chunk now holds, as an ASSIGN: an ADD's sums go into
 * its prepared block, one pass over the old and pushed values, instead of being
 * checked in one pass and added in place in another).
 * Pulls and stats share a read lock; deletes take the write lock.
 *
 * Versions: each key of a push is one update with the next sequence number; a
 * chunk's version is the seq of the update that last wrote it. Applied updates are
 * appended to the update log (update_log.h) under the write lock, so the log holds
 * them in seq order. The store's seq starts at the log's start_seq.
 *
 * Fault injection for tests: store_fault_fail_alloc makes the Nth allocation that a
 * prepare or apply makes from then on fail, so tests can check that a failure at any
 * point leaves the store and the log as they were.
 */
#ifndef PS_SHARD_STORE_H
#define PS_SHARD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quota.h"
#include "bytes.h"
#include "status.h"
#include "train_spec.h"
#include "update_log.h"

typedef struct store store;
typedef struct store_batch store_batch;

typedef struct store_opts {
    update_log *log;    /* where applied updates go (not owned; outlives the store) */
    quota *quota;       /* the shard's memory quota, shared with the row store (not owned);
                           NULL: the store makes its own from max_bytes */
    uint64_t max_bytes; /* quota when `quota` is NULL; 0 = none */
    const char *name;   /* who holds the store, for messages ("shard-1"); NULL = "this shard" */
} store_opts;

ps_status store_create(const store_opts *opts, store **ret_store);
void store_destroy(store *store); /* accepts NULL */

/* One push as received. The arrays must stay valid until store_batch_apply returns. */
typedef struct store_push {
    update_log_op op;        /* ASSIGN, ADD or OPTIMIZE */
    size_t n;                /* keys */
    const uint64_t *keys;    /* n keys, no key twice */
    const uint32_t *lengths; /* n lengths, floats per key */
    const uint8_t *values;   /* little-endian float32, concatenated in key order; any
                                alignment */
    size_t values_len;       /* bytes in all (at values, or in pieces) */
    const ps_bytes *pieces;  /* or, when n_pieces > 0, the same bytes in pieces (as
                                   gRPC received them: a float may straddle two) */
    size_t n_pieces;
    const char *const *names;    /* NULL, or n names ("" = leave the chunk's name) */
    const optim_spec *optimizer; /* OPTIMIZE: the optimizer the gradients are for */
    bool skip_non_finite;        /* OPTIMIZE: skip (and count) keys whose gradients hold a
                                    NaN or infinity instead of refusing the push */
    bool from_peer;              /* a copy from the keys' primary (replication): the
                                    journal writes it but does not send it on... */
    bool forward;                /* ...unless this: it was routed under an older ring,
                                    and the keys this shard is the primary of now go on
                                    to their other owners (replicator_push; only with a
                                    request id: the old primary, one of those owners,
                                    could not tell it applied it already) */
    uint64_t *ret_forwarded;     /* with forward: set to the change's position when some
                                    of it went on (may be NULL) */
    uint64_t request_id;         /* the client's id of the push (dedup.h); 0: none */
    bool first_try;              /* the client sent none of these keys before under
                                    request_id: they are not looked up (dedup_check) */
    uint64_t checked_epoch;      /* the ring epoch this shard checked it is the keys'
                                    primary under (0: not checked: a copy, a replay) */
    uint64_t base_version;       /* key i gets version base + i + 1 (a skipped key leaves a
                                    gap): a copy from the primary (from_peer) brings the
                                    primary's; for others the store sets it (its clock)
                                    before journaling */
    const uint32_t *slots;       /* NULL, or n: key i gets base + slots[i] + 1 instead; a
                                    subset of a push (a backup's share) keeps its keys'
                                    places in the whole, so every owner gives a key the
                                    same version */
} store_push;

/* Where the store writes what it applies, so a restart can replay it (journal.h): each
 * call runs under the store's write lock, before the push or delete changes anything;
 * a failure refuses it whole. *ret_lsn gets the record's LSN (the caller waits for it
 * to be durable before answering). */
typedef struct store_journal {
    ps_status (*push)(void *arg, const store_push *push, uint64_t *ret_lsn, char *err,
                      size_t err_len);
    ps_status (*del)(void *arg, size_t n, const uint64_t *keys, uint64_t *ret_lsn, char *err,
                     size_t err_len);
    void *arg;
} store_journal;

/* Starts journaling (after a replay, which must not write). NULL functions: none. */
void store_set_journal(store *store, const store_journal *journal);

/* The LSN of an applied batch's journal record (0 without a journal). */
uint64_t store_batch_lsn(const store_batch *batch);

/* Checks what needs no state and allocates everything the push needs. On failure
 * (INVALID_ARGUMENT, NO_MEMORY) err says why (naming key, index or limit) and nothing
 * is allocated. */
ps_status store_batch_prepare(store *store, const store_push *push, store_batch **ret_batch,
                              char *err, size_t err_len);

/* OPTIMIZE: each key is one optimizer step: the store reads the chunk's weights and
 * optimizer state (fresh when the chunk has none yet), computes the new weights and
 * state out of place, checks they are all finite, then publishes both; the update log
 * gets the new weights as an ASSIGN. The chunk must exist (NOT_FOUND), have the
 * push's length (INVALID_ARGUMENT), and have no state of another optimizer kind
 * (FAILED_PRECONDITION). A chunk's first step allocates its state, which counts
 * against the quota like values. An ASSIGN replaces the values and drops their
 * optimizer state (the next optimizer push starts afresh).
 *
 * Applies a prepared batch: everything or nothing. ret_versions (n entries, may be
 * NULL) gets the new version per key and *ret_seq (may be NULL) the seq of the last
 * update. NOT_FOUND (ADD to an absent chunk), INVALID_ARGUMENT (length differs from the
 * chunk's, or a result would not be finite), RESOURCE_EXHAUSTED (over the quota),
 * NO_MEMORY: the store and the log are unchanged and err says why. A batch is applied
 * at most once; destroy it in any case. */
ps_status store_batch_apply(store *store, store_batch *batch, uint64_t *ret_versions,
                            uint64_t *ret_seq, char *err, size_t err_len);

/* Keys an applied OPTIMIZE batch skipped for non-finite gradients (skip_non_finite);
 * their versions are 0 in ret_versions. */
uint64_t store_batch_skipped(const store_batch *batch);

/* Frees what the batch still holds (what apply replaced, or all of it when apply did
 * not run or failed). Accepts NULL. */
void store_batch_destroy(store_batch *batch);

/* Reads n chunks: ret_lengths and ret_versions (n entries each) get their lengths and
 * versions, *ret_values a malloc'd copy of their values concatenated (*ret_values_len
 * bytes; free it), *ret_seq (may be NULL) the store's seq. NOT_FOUND names the first
 * absent key; RESOURCE_EXHAUSTED when the values would pass max_value_bytes. */
ps_status store_read(store *store, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                     uint32_t *ret_lengths, uint64_t *ret_versions, float **ret_values,
                     size_t *ret_values_len, uint64_t *ret_seq, char *err, size_t err_len);

/* What store_read_state answers per key besides the values. */
typedef struct store_state_info {
    optim_kind kind;       /* the optimizer that made the state; OPTIM_NONE: none */
    uint64_t steps;        /* steps applied */
    uint32_t state_floats; /* slots * length, 0 when none */
} store_state_info;

/* store_read plus the chunks' optimizer state (checkpoints), read under one lock:
 * ret_info (n entries) and *ret_state, a malloc'd copy of every chunk's state
 * concatenated (*ret_state_len bytes; free it). Values and state together stay within
 * max_value_bytes (RESOURCE_EXHAUSTED otherwise). */
ps_status store_read_state(store *store, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                           uint32_t *ret_lengths, uint64_t *ret_versions, float **ret_values,
                           size_t *ret_values_len, store_state_info *ret_info, float **ret_state,
                           size_t *ret_state_len, uint64_t *ret_seq, char *err, size_t err_len);

/* store_read without copying: ret_blocks (n entries) gets a reference to each chunk's
 * value block (not written while shared: drop each with update_log_values_unref), read under one
 * lock, so a reply can send them as they lie. The same failures as store_read. */
ps_status store_read_blocks(store *store, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                            uint32_t *ret_lengths, uint64_t *ret_versions,
                            update_log_values **ret_blocks, uint64_t *ret_seq, char *err,
                            size_t err_len);

/* Length and version of n keys, 0 and 0 for a key the store does not hold. */
void store_stat(store *store, size_t n, const uint64_t *keys, uint32_t *ret_lengths,
                uint64_t *ret_versions);

/* Removes the chunks of n keys and frees their memory (write lock): the quota and
 * store_get_stats count them no more, and a removed key may be ASSIGNed again. Keys
 * the store does not hold (or that appear twice) are skipped, so a retry is harmless.
 * *ret_deleted (may be NULL) gets the chunks removed, *ret_bytes (may be NULL) their
 * value bytes. Cannot fail (without a journal). Deletes are not updates: the seq and the update log
 * stay as they are. */
void store_delete(store *store, size_t n, const uint64_t *keys, uint64_t *ret_deleted,
                  uint64_t *ret_bytes);
/* With a journal: store_delete's record LSN into *ret_lsn, and IO (nothing deleted,
 * err says why) when the journal refuses it. */
ps_status store_delete_journaled(store *store, size_t n, const uint64_t *keys,
                                 uint64_t *ret_deleted, uint64_t *ret_bytes, uint64_t *ret_lsn,
                                 char *err, size_t err_len);

typedef struct store_stats {
    uint64_t keys;      /* chunks held */
    uint64_t bytes;     /* bytes held: values and optimizer state */
    uint64_t seq;       /* last applied update */
    uint64_t max_bytes; /* the quota; 0 = none */
    uint64_t skipped;   /* keys skipped for non-finite gradients, ever */
} store_stats;

void store_get_stats(store *store, store_stats *ret_stats);

/* Tests only: the nth allocation made by prepare or apply from now on fails (1 = the
 * next one); 0 turns it off. */
void store_fault_fail_alloc(store *store, uint32_t nth);

#endif
