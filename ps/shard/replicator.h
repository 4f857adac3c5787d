/* replicator.h: primary-backup replication of what a shard applies.
 *
 * A key's owners are the first R distinct shards clockwise from its hash on the ring;
 * the first is its primary, and only the primary takes pushes for it (placement.h). The
 * primary sends every change it applies to the key's other owners (its backups) and
 * acknowledges the push only once each of them has it durably: so with R = 2 an
 * acknowledged push survives the loss of any one shard.
 *
 * Why it is built this way: the shard's journal calls replicator_push (and _rows,
 * _delete) under the store's write lock, in the order changes are applied, with the
 * position the change got in the shard's journal (its WAL LSN, or a counter without a
 * log). Each backup has one ordered queue, and REPLICATOR_LANES sender threads send it
 * in batches of framed journal records (journal.h: the same records the WAL holds, so a
 * backup applies them through the same prepare and apply as a restart's replay): each
 * lane takes the next unsent run of the queue, so up to that many calls are in flight
 * and a backup's apply and log wait of one batch overlap the transfer of the next (one
 * call at a time made each push wait for the sum). The backup applies the batches of a
 * stream in their numbers' order (a batch that arrives early waits for the one before:
 * repl_inbox_begin_at), so it applies one primary's changes in the primary's order, and
 * non-commutative updates (ASSIGN, optimizer steps) come out the same on every owner. A
 * failed batch makes every lane stop taking, wait for the calls out, and start again
 * from the first unanswered record.
 * Entries do not copy the pushed values: they point into the request, and the push's
 * handler waits (replicator_wait) until no entry of its position still references it
 * before it returns; a backup that fails for give_up_ms has its queue dropped, so that
 * wait is bounded. Batches carry stream numbers, so a batch sent again after a lost
 * answer is applied once (the backup skips what it has).
 *
 * Syncs: before a backup gets a primary's changes it must hold what they apply to, so
 * each backup starts with a sync: the sender exports the images (image.h) of every
 * chunk and row this shard is primary for and the backup owns, at one point of the
 * journal (every store held still for a moment), drops the queued changes that point
 * covers, sends the images, and then the changes queued after it. A backup is synced
 * again whenever the ring changes (its share of the keys may have grown), when it
 * refuses a change, when it restarted (its incarnation changed: a batch names the
 * incarnation it expects), or when it was unreachable for give_up_ms (its queue is
 * dropped, so the waits of pushes stay bounded). A sync's calls name the ring epoch its
 * images were exported under, and a backup holding another ring refuses them (an image
 * is the whole key: from a shard that is no longer its primary, it would set back what
 * the primary applied since); the sender syncs again. A push is replicated once every
 * backup is synced past it and has acknowledged its changes.
 *
 * Thread-safe. The stores are only read (image_export); changes come from the journal.
 */
#ifndef PS_SHARD_REPLICATOR_H
#define PS_SHARD_REPLICATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "image.h"
#include "row_store.h"
#include "status.h"
#include "store.h"

#define REPLICATOR_CALL_TIMEOUT_MS 5000        /* one Replicate call */
#define REPLICATOR_GIVE_UP_MS 3000             /* a backup failing this long: synced anew */
#define REPLICATOR_MAX_BATCH_BYTES (16u << 20) /* records per call, bytes */
#define REPLICATOR_MAX_BATCH_RECORDS 4096u     /* records per call */
/* Records per sync call: its images stay within REPLICATOR_MAX_BATCH_RECORDS, but the
 * dedup records after them go in the same call whatever their number (an image of a hot
 * key carries one per request that touched it: split over calls, a primary dying
 * between them left the backup with the image and not the ids). A receiver checks
 * every record against the bytes sent before it sizes anything by the count. */
#define REPLICATOR_MAX_SYNC_RECORDS (1u << 20)
#define REPLICATOR_MAX_FRAME_BYTES (256u << 20) /* one record (a backup refuses more) */
#define REPLICATOR_FRAME_HEAD 8                 /* u8 type, 3 zero bytes, u32 length */
#define REPLICATOR_LANES 4           /* Replicate calls in flight to one backup at a time */
#define REPLICATE_ORDER_WAIT_MS 2000 /* a backup waits this long for an earlier batch */

typedef struct replicator replicator;

typedef struct replicator_opts {
    const char *self_id;  /* this shard's id on the ring (copied) */
    uint64_t incarnation; /* this shard's incarnation (a backup resets its stream on a new one) */
    int call_timeout_ms;  /* 0 = REPLICATOR_CALL_TIMEOUT_MS */
    int give_up_ms;       /* 0 = REPLICATOR_GIVE_UP_MS */
    uint64_t max_batch_bytes; /* 0 = REPLICATOR_MAX_BATCH_BYTES */
    store *chunks;            /* what syncs export (not owned) */
    row_store *rows;
    /* The journal position now (called with every store held still, so no change is
     * being journaled): a sync's point. */
    uint64_t (*position)(void *arg);
    void *position_arg;
    dedup *dedup; /* the request ids a sync sends with its images (not owned; may be NULL) */
} replicator_opts;

ps_status replicator_create(const replicator_opts *opts, replicator **ret_replicator);
/* Stops the senders and releases every queued entry. Accepts NULL. */
void replicator_destroy(replicator *replicator);

/* The stores syncs export from, when they were replaced after create (before any ring
 * is installed). */
void replicator_set_stores(replicator *replicator, store *chunks, row_store *rows);

/* Installs a ring (hashring_serialize bytes), the pending ring of a membership change
 * (may be empty: none) with the epoch it will have, and the replication factor R (>= 1):
 * from now on the changes to keys this shard is primary for (on the current ring) go to
 * their other R - 1 owners and to every owner the pending ring gives them. Every target
 * is synced again (only the keys it did not hold on the settled ring: the pending ring
 * once it is committed, else the ring held before). Targets on neither ring stop and
 * release their queues. PARSE when a ring does not parse; a ring and pending not newer
 * than those held are ignored. */
ps_status replicator_set_ring(replicator *replicator, const void *ring, size_t len,
                              const void *pending, size_t pending_len, uint64_t pending_epoch,
                              uint32_t replication);

/* The pending epoch when every target has been synced for it (every key this shard is
 * primary for is on every owner the pending ring gives it, and changes flow to them);
 * else 0. What a shard's heartbeat reports (HeartbeatRequest.synced_epoch). */
uint64_t replicator_synced_epoch(replicator *replicator);

/* Queue a change for the backups of its keys (call under the store's or table's write
 * lock, in apply order, with strictly increasing positions). Never fails: when an entry
 * cannot be built (no memory) the backups concerned are synced again. The entries
 * reference the change's arrays and values until replicator_wait(pos) returns. Changes
 * marked from_peer are not sent on, unless also marked forward (routed under an older
 * ring, with a request id): then the keys this shard is the primary of now go on, in
 * entries that own their bytes, marked look up (journal_mark_look_up), and the
 * position is noted in ret_forwarded. A change checked under another ring than the
 * replicator's (checked_epoch), on which some key is not this shard's, is lost
 * (replicator_lost). Copies of retried pushes are marked look up. */
void replicator_push(replicator *replicator, uint64_t pos, const store_push *push);
void replicator_rows(replicator *replicator, uint64_t pos, const row_push *push);
void replicator_delete(replicator *replicator, uint64_t pos, size_t n, const uint64_t *keys);

/* Waits until no entry at or before pos references the caller's memory (always, however
 * long: bounded by the give-up time), then until every backup is synced past pos and
 * has acknowledged every change up to it, or deadline_ms (ps_now_ms clock; <= 0: wait
 * no longer) passes: UNAVAILABLE then, err naming a backup and why it lags. */
ps_status replicator_wait(replicator *replicator, uint64_t pos, int64_t deadline_ms, char *err,
                          size_t err_len);
/* Whether replicator_wait(pos) would return OK at once (nothing references the
 * caller's memory, every backup has it) and the change is not lost: replicator_lost(pos)
 * is false, or (not fresh: a retry answered from an earlier try's change) a whole
 * resync began after it (replicator_resync). */
bool replicator_done(replicator *replicator, uint64_t pos, bool fresh);
/* replicator_wait without the wait for entries referencing the caller's memory: for
 * the copies a backup sends on (replicator_push with forward), whose entries own their
 * bytes. */
ps_status replicator_wait_sent_on(replicator *replicator, uint64_t pos, int64_t deadline_ms,
                                  char *err, size_t err_len);
/* For a retry answered from an earlier try's change at pos that is lost (and whose keys
 * this shard is still the primary of: replicator_moved is false): unless a whole resync
 * began after pos, every backup is synced anew, whole (queues dropped), from `now` (the
 * journal's position); returns the position to wait for (replicator_wait) before the
 * change counts as on every owner. `why` is what status shows meanwhile. */
uint64_t replicator_resync(replicator *replicator, uint64_t pos, uint64_t now, const char *why);
/* Whether a change checked to be this shard's (as the keys' primary) under ring
 * checked_epoch may have moved since: the replicator holds another ring, on which this
 * shard is not the primary of some key (0: not checked: false). A retry answered from an
 * earlier try's change must then be refused (its client goes to the primary now). */
bool replicator_moved(replicator *replicator, uint64_t checked_epoch, size_t n,
                      const uint64_t *keys);
/* Whether the change at pos may be missing for good on one of its keys' owners: a ring
 * change came before a backup had it through its queue or a sync (say a joining shard,
 * now the keys' primary, restarted before it had it; this shard's syncs no longer carry
 * those keys). The push must not be acknowledged: its client sends it again (with its
 * request id) to the keys' primary now. Checked after replicator_wait(pos) returns OK,
 * for a change made by this call (not a retry's earlier one). */
bool replicator_lost(replicator *replicator, uint64_t pos);

typedef struct replicator_stats {
    uint32_t backups;          /* shards changes go to */
    uint32_t behind;           /* of them, not synced (waiting for or in a sync) */
    uint64_t syncs;            /* syncs completed */
    uint64_t sync_bytes;       /* image bytes those sent */
    uint64_t sync_chunks_left; /* chunks the running syncs have still to send */
    uint64_t sync_bytes_left;  /* their value and optimizer-state bytes */
    uint64_t queued;           /* entries not yet acknowledged */
    uint64_t queued_bytes;     /* their bytes */
    uint64_t sent_records;     /* acknowledged records, in all */
    uint64_t failed_calls;     /* Replicate calls that failed */
} replicator_stats;

void replicator_get_stats(replicator *replicator, replicator_stats *ret_stats);

#endif
