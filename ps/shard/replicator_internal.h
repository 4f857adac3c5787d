/* replicator_internal.h: what replicator.c (targets, queues, senders, waits) and
 * replicator_entry.c (building an entry from a change) share. Private to ps/shard. */
#ifndef PS_SHARD_REPLICATOR_INTERNAL_H
#define PS_SHARD_REPLICATOR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "hashring.h"
#include "journal.h"
#include "push_subset.h"
#include "replicator.h"
#include "rpc.h"

#define REPL_LOST_RANGES 8 /* ranges of lost positions kept (merged past it) */

/* One framed record for one backup. */
typedef struct repl_entry {
    struct repl_entry *next;
    uint64_t pos; /* the change's journal position */
    uint64_t num; /* its number in the stream to this backup (set when queued) */
    uint8_t head[REPLICATOR_FRAME_HEAD];
    journal_encoded enc; /* the record's parts */
    /* what a subset owns (nothing when the entry is the whole change) */
    push_subset subset; /* a push's */
    uint64_t *keys;     /* a rows change's ids, a delete's keys */
    uint8_t *values;    /* a rows change's values */
    size_t bytes;       /* the frame's bytes, head included */
    uint64_t view;      /* the replicator's view when it was queued */
    uint64_t epoch;     /* the ring epoch it was routed under */
    bool in_batch;      /* a lane's call holds it: only that lane frees it */
    bool orphan;        /* dropped from the queue while in a batch: the lane frees it */
} repl_entry;

void repl_entry_free(repl_entry *entry); /* accepts NULL */

/* The entry of a push for the keys at idx (m of them, increasing), or for every key
 * when idx is NULL. NULL when out of memory. */
repl_entry *repl_entry_push(const store_push *push, const uint32_t *idx, size_t m);
repl_entry *repl_entry_rows(const row_push *push, const uint32_t *idx, size_t m);
repl_entry *repl_entry_delete(const uint64_t *keys, size_t n, const uint32_t *idx, size_t m);
/* The entry (of a record of `type`) made to own its bytes, one copy, and marked
 * look up (journal_mark_look_up): a copy from a peer sent on. NULL (e freed) when
 * out of memory; NULL in, NULL out. */
repl_entry *repl_entry_forwarded(repl_entry *e, uint8_t type);

struct repl_target;

/* Journal positions lo..hi (lo 0: none). */
typedef struct repl_range {
    uint64_t lo, hi;
} repl_range;

/* One of a target's sender threads. */
typedef struct repl_lane {
    struct repl_target *t;
    uint32_t index; /* lane 0 also runs the target's syncs */
    pthread_t thread;
} repl_lane;

/* One backup. */
typedef struct repl_target {
    struct repl_target *next; /* every target, also removed ones not yet joined */
    replicator *r;
    char id[HASHRING_ID_MAX + 1];
    char addr[HASHRING_ADDR_MAX + 1];
    rpc_channel *channel;
    repl_entry *head, *tail; /* queued, not yet acknowledged, in order */
    repl_entry *send_next;   /* the first entry no lane has taken yet (NULL: none) */
    uint64_t acked_num;      /* the backup applied every record numbered up to this */
    uint32_t in_flight;      /* lanes with a call out */
    uint64_t orphans;        /* dropped entries calls still hold (they point into
                                requests: the pushes wait for them too) */
    uint64_t orphan_min_pos; /* the lowest position among them (while orphans > 0) */
    bool rewind;             /* a call failed: lanes take nothing until none is out, then
                                start again from the first unanswered entry */
    uint64_t next_num;       /* the next entry's stream number */
    uint64_t queued, queued_bytes;
    bool removed;          /* off the ring: the sender ends and releases the queue */
    bool moved;            /* removed because its shard moved (still on a ring) */
    uint64_t removed_view; /* the view that took it off both rings (0: not so) */
    repl_range left;       /* changes left to its next sync (replicator_lost.c) */
    uint64_t left_view;    /* the view they were left under */
    repl_range covering;   /* of them, those the running sync's images carry */
    uint64_t covering_view;
    bool need_sync;      /* a sync must run before the queue is sent (until it starts,
                            changes to keys it did not hold are left to its images) */
    bool full;           /* that sync sends everything it should hold (it lost
                            changes, restarted, or is new) */
    bool redo_full;      /* the ring changed during the running sync: redo it whole */
    bool syncing;        /* a sync runs: changes after sync_pos are queued */
    uint64_t sync_pos;   /* the running sync's point */
    uint64_t synced_for; /* the pending epoch its last sync covered (0: none) */
    uint64_t sync_total; /* chunks the running sync sends, once exported (0: none) */
    uint64_t sync_done;  /* of them, sent */
    uint64_t sync_bytes_total, sync_bytes_done; /* the same in image_chunk_bytes */
    uint32_t slot;                              /* its index among the live targets */
    uint32_t idx_settled;  /* its index in the settled ring (UINT32_MAX: not on it) */
    uint64_t peer_inc;     /* the backup's incarnation, learned by the last sync */
    char why[256];         /* why it needs a sync or fails */
    int64_t failing_since; /* ps_now_ms of the first failure in a row; 0 = none */
    repl_lane lanes[REPLICATOR_LANES];
    uint32_t n_lanes;       /* started */
    uint32_t lanes_running; /* not yet ended */
} repl_target;

struct replicator {
    replicator_opts opts;
    char self[HASHRING_ID_MAX + 1];
    pthread_mutex_t lock;
    pthread_cond_t changed; /* queues, acks, removals, stop */
    bool stopping;
    hashring *ring;         /* the current ring (NULL before the first) */
    hashring *pending;      /* the ring a membership change moves to, or NULL */
    uint64_t pending_epoch; /* its epoch (0: none) */
    hashring *settled;      /* the last ring every owner fully holds its keys under, or NULL */
    uint32_t replication;   /* R */
    uint32_t self_cur;      /* this shard's index in ring; UINT32_MAX when not on it */
    repl_target **cur_t;    /* ring index -> target (NULL for self) */
    uint32_t n_cur;
    repl_target **pend_t; /* pending ring index -> target (NULL for self) */
    uint32_t n_pend;
    repl_target **live; /* the targets on either ring, by slot */
    uint32_t n_live;
    repl_target *targets;
    /* The next stream number no target of this incarnation has used: a target made
     * anew for a backup this replicator sent to before (taken off the ring and added
     * back, without a restart of either) numbers on from it. The backup keeps the last
     * number it applied per (primary, incarnation); numbering again from 1, the new
     * stream's records were taken for ones sent again and skipped: acknowledged changes
     * never reached the backup. */
    uint64_t next_stream_num;
    /* The view: bumped by every ring (or pending ring) set_ring takes; and the changes
     * a view change may have kept from an owner for good (replicator_lost.c). */
    uint64_t view;
    repl_range lost[REPL_LOST_RANGES];
    uint32_t n_lost;
    uint64_t resync_pos; /* every backup was resynced whole from this position on
                            (replicator_resync): lost changes before it are on them */
    uint64_t sent_records, failed_calls, syncs, sync_bytes;
    uint64_t syncs_begun; /* the last sync's number (its calls' `first`: a backup installs
                             only the newest sync of this incarnation) */
};

/* replicator_lost.c (lock held for each): changes at lo..hi may lack an owner for
 * good; the change at pos was left to t's next sync under view; the view changed
 * (t's left changes are lost unless t is off both rings); t's sync starts under view
 * (it takes over what was left under that view; the rest is lost); t's sync ended. */
void repl_lost_add_locked(replicator *r, uint64_t lo, uint64_t hi);
bool repl_lost_locked(const replicator *r, uint64_t pos);
void repl_left_add_locked(repl_target *t, uint64_t pos, uint64_t view);
void repl_left_view_changed_locked(repl_target *t);
/* Whether t, removed, owned nothing since `view`: the view right after took it off both
 * rings (what it lacked from then is lost to nobody). */
bool repl_owned_nothing_since(const repl_target *t, uint64_t view);
void repl_left_sync_start_locked(repl_target *t, uint64_t view);
void repl_left_sync_end_locked(repl_target *t, bool ok);

/* Sends a batch of `count` framed records (the pieces in parts) to the target (lock NOT
 * held). sync, resume and routed_epoch as in ReplicateRequest; epoch is the ring epoch a
 * sync's images were exported under (0: the ring held now). *ret_inc gets the backup's
 * incarnation. */
ps_status repl_send(repl_target *t, const rpc_bytes_part *parts, size_t n_parts, uint32_t count,
                    uint64_t first, bool sync, uint64_t resume, uint64_t routed_epoch,
                    uint64_t epoch, uint64_t *ret_applied, uint64_t *ret_inc, char *err,
                    size_t err_len);

/* replicator_sync.c: syncs the target (lock NOT held; its sender runs it). */
ps_status repl_sync(repl_target *t, char *err, size_t err_len);

/* Drops the target's queue (lock held); entries a call holds become orphans its lane
 * frees. */
void repl_drop_queue_locked(repl_target *t);
/* The target lost changes (or may have): it must be synced whole, and its queue goes
 * (lock held). */
void repl_need_sync_locked(repl_target *t, const char *why);
/* replicator_lanes.c: one sender lane's thread (arg: its repl_lane). */
void *repl_lane_main(void *arg);

/* The targets a change to key must go to: none unless self is the key's primary on cur;
 * else its other owners there and every owner pend (may be NULL) gives it, as targets
 * (cur_t, pend_t: by ring index, NULL for self). Writes at most 2 * HASHRING_MAX_REPLICAS
 * into out; returns how many. */
uint32_t repl_targets_of(const hashring *cur, const hashring *pend, uint32_t self,
                         repl_target *const *cur_t, repl_target *const *pend_t,
                         uint32_t replication, uint64_t key, repl_target **out);
/* Whether target t (at idx_settled of settled) holds key already: one of its owners on
 * the settled ring, and not to be sent everything (full). */
bool repl_held(const hashring *settled, uint32_t idx_settled, bool full, uint32_t replication,
               uint64_t key);

#endif
