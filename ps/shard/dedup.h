/* dedup.h: which keys each recent request id applied on this shard, so that a push
 * sent again (a client retrying after a lost answer, a failover, or a ring change that
 * refused part of it) applies each key exactly once.
 *
 * Why it is built this way: a client gives every logical push one random 64-bit
 * request id and keeps it across retries; a retry may carry a different subset of the
 * keys than the first try (the ring moved and regrouped them), so what is remembered is
 * per key: the keys a request applied, with the journal position it applied them at (a
 * retry of an applied push answers only once that position is durable and replicated).
 * The shard records a push's keys when it journals the push (under its journal lock,
 * so two tries of one request can never both apply a key), backups record the copies
 * they get, and a restart's replay records them again, so the memory survives restarts
 * and failovers. It is bounded: past max_keys keys in all, the requests seen longest ago
 * are forgotten (retries come within seconds; the bound is in keys, 8 bytes each, each
 * request counting as DEDUP_REQUEST_KEYS more).
 *
 * Almost every call is a first try (a million-row push is 16 calls of 64 Ki keys, none
 * sent before), and looking each key up in a set of a million cost a sparse push half
 * its shard time. So recording only appends a request's keys to a list, and the set
 * that answers lookups is built from the list when a lookup first needs it; a call its
 * client marks as a first try is not looked up at all (dedup_check) unless a call of the
 * same request that was not a first try has come to this shard (a client that timed out
 * retrying while its first try is still on its way): from then on every call of that
 * request is looked up. Thread-safe (one mutex).
 */
#ifndef PS_SHARD_DEDUP_H
#define PS_SHARD_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define DEDUP_DEFAULT_MAX_KEYS (4u << 20) /* keys remembered in all: 32 MiB */
/* What one request costs toward the bound, in keys: its record (about 250 bytes with
 * malloc's share), so that a stream of one-key pushes is bounded like their keys. */
#define DEDUP_REQUEST_KEYS 32u
/* A request forgotten for the bound while younger than this is counted (and logged, at
 * most once a minute): retries come that late (a client's failover wait is 20 s), so the
 * bound is too small for the shard's push rate (ps-shard --dedup-mb). */
#define DEDUP_SHORT_WINDOW_MS 30000

typedef struct dedup dedup;

/* max_keys 0 = DEDUP_DEFAULT_MAX_KEYS. */
ps_status dedup_create(uint64_t max_keys, dedup **ret_dedup);
void dedup_destroy(dedup *dedup); /* accepts NULL */

/* Which of keys[0..n) request `id` applied: ret_applied[i] (may be NULL) for each, the
 * count as the result, and *ret_pos (may be NULL) the largest journal position among
 * them (0 when none). Request id 0 means none: nothing is ever found for it. */
size_t dedup_lookup(dedup *dedup, uint64_t id, size_t n, const uint64_t *keys, bool *ret_applied,
                    uint64_t *ret_pos);

/* The journal's check before it applies a call of request `id` (under the journal's
 * lock, before dedup_record): how many of keys[0..n) the request applied already. A
 * call that is not a first try marks its request as retried (NO_MEMORY for the mark
 * only loses the mark: the call itself is looked up); a first try is looked up only
 * when its request was marked, else 0 at once. Request id 0: 0. */
size_t dedup_check(dedup *dedup, uint64_t id, size_t n, const uint64_t *keys, bool first_try);

/* Remembers that request `id` applied keys[0..n) at journal position pos (id 0: does
 * nothing). A key recorded twice (a backup's copy and a sync's record of it) is kept
 * twice and found once. NO_MEMORY: not remembered (the caller refuses the push). */
ps_status dedup_record(dedup *dedup, uint64_t id, size_t n, const uint64_t *keys, uint64_t pos);

/* An image replaced the values of keys[0..n) (a sync from their primary, or its
 * replay): what requests applied to them before no longer counts, since the values may
 * not hold it; what the image's sender remembered of them is recorded after (its dedup
 * records). Without that, a backup whose value a restarted primary's image set back
 * would answer a retry of a push it had applied as done, and the push would be lost.
 * Keys are marked (and the marks applied to every request in one pass once they
 * outnumber the keys remembered); without memory for a mark, every request is
 * forgotten. */
void dedup_forget(dedup *dedup, size_t n, const uint64_t *keys);
/* (The marks take 16 bytes a key, past the bound's 8, at most a quarter as many as the
 * keys remembered before they are swept; a request is filtered by them, once, when a
 * lookup first needs it.) */

/* One remembered request, as dedup_export gives it. */
typedef struct dedup_entry {
    uint64_t id;
    uint64_t pos;         /* the largest journal position of these keys */
    size_t n;             /* keys */
    const uint64_t *keys; /* sorted, distinct */
} dedup_entry;

/* Copies the keys every remembered request applied at positions up to max_pos (0
 * counts: a replay's), one entry per request that has any, into one allocation:
 * *ret_entries (free() it; each entry's keys point into it) and *ret_n. What a backup
 * being synced must remember of the changes its images already hold
 * (replicator_sync.c): a request applied partly before the sync's point and partly
 * after gives the part before (the part after reaches the backup as changes). */
ps_status dedup_export(dedup *dedup, uint64_t max_pos, dedup_entry **ret_entries, size_t *ret_n);

typedef struct dedup_stats {
    uint64_t requests;        /* remembered */
    uint64_t keys;            /* in all (a key recorded twice counts twice) */
    uint64_t forgotten;       /* requests forgotten for the bound */
    uint64_t max_keys;        /* the bound */
    uint64_t forgotten_young; /* of them, forgotten younger than DEDUP_SHORT_WINDOW_MS */
    /* How far back the memory reaches: the age of the oldest request remembered (ms),
     * 0 when none. A retry later than this may find its request forgotten (only once
     * some were: forgotten > 0). */
    uint64_t window_ms;
} dedup_stats;

void dedup_get_stats(dedup *dedup, dedup_stats *ret_stats);

#endif
