/* handlers.h: the ps.ParameterServer handlers (handlers.c: Pull, Push, Stat, Delete, Health;
 * subscribe.c: Subscribe; rows_handlers.c: PullRows, PushRows) and the context they share (built by
 * shard_ctx.c).
 *
 * Why it is built this way: a handler checks every client-supplied count against a
 * named limit (shard_limits.h) before it sizes anything, checks placement, calls one
 * module (store, update_log), and turns the module's status and message into the
 * call's gRPC status. Business rules live in the modules, which have unit tests; the
 * handlers are tested through the network (tests/integration/test_shard_*.py).
 * Private to ps/shard.
 */
#ifndef PS_SHARD_HANDLERS_H
#define PS_SHARD_HANDLERS_H

#include <stdatomic.h>
#include <stdbool.h>

#include <pthread.h>

#include "acker.h"
#include "dedup.h"
#include "gc.h"
#include "image.h"
#include "push_subset.h"
#include "placement.h"
#include "repl_inbox.h"
#include "replicator.h"
#include "ps.pb-c.h"
#include "quota.h"
#include "row_store.h"
#include "rpc.h"
#include "shard_ctx.h"
#include "snapshot.h"
#include "store.h"
#include "update_log.h"

struct shard_ctx {
    char *id;                           /* this shard's id */
    uint64_t incarnation;               /* random, non-zero, drawn at start */
    update_log *log;                    /* applied updates, for Subscribe */
    quota *quota;                       /* --max-bytes, shared by chunks and rows */
    store *store;                       /* the chunks */
    wal *wal;                           /* the write-ahead log, or NULL (in memory only) */
    row_store *rows;                    /* the sparse tables' rows */
    placement *placement;               /* the ring held */
    uint32_t max_subscribers;           /* --max-subscribers */
    atomic_uint subscribers;            /* open Subscribe streams */
    int keepalive_ms;                   /* idle stream keepalive */
    shard_ring_refresh_fn ring_refresh; /* may be NULL */
    void *ring_refresh_arg;
    replicator *repl;             /* sends applied changes to the keys' backups */
    acker *acker;                 /* answers pushes once durable (shard_answer_durable) */
    repl_inbox *inbox;            /* the streams this shard receives as a backup */
    pthread_mutex_t journal_lock; /* orders the log and the backups' queues alike */
    bool journal_lock_made;
    bool replaying; /* a restart's replay runs: the journal only remembers */
    dedup *dedup;   /* the keys recent request ids applied */
    /* written by the ring watch, read by the heartbeat loop (gc.h) */
    atomic_llong ring_since_ms;       /* when the ring or its pending change last changed */
    atomic_ullong ring_pending_epoch; /* of the change pending (0: none) */
    atomic_bool gc_due;               /* a ring change left chunks to drop, maybe */
    int64_t gc_next_ms;               /* the next look without a ring change (heartbeat loop) */
    uint64_t gc_dropped;              /* chunks and rows dropped so far (heartbeat loop only) */
    gc_rows_cursor gc_rows;           /* where the rows collection stands (heartbeat loop) */
    uint64_t journal_pos;             /* positions without a log (shard_journal.c) */
    shard_ctx_opts opts;              /* as created (id: not owned, unused) */
    snapshot_taker *snapshots;        /* takes snapshots as the log grows, or NULL */
};

ps_status shard_handle_pull(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_push(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_stat(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_delete(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_health(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_subscribe(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
/* rows_handlers.c */
ps_status shard_handle_pull_rows(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);
ps_status shard_handle_push_rows(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);

/* The op of a Push or PushRows: one of the three, an optimizer with PUSH_OPTIMIZE, and
 * skip_non_finite only with it; otherwise INVALID_ARGUMENT set on rc. */
ps_status shard_check_push_op(rpc_ctx *rc, Ps__PushOp op, bool has_optimizer, bool skip_non_finite);

/* shard_journal.c: the stores' journal (the log, then the backups) from now on, or none. */
void shard_journal_start(shard_ctx *ctx);
void shard_journal_stop(shard_ctx *ctx);
/* Where installs of images go (a backup's syncs), journaled in order with changes. */
image_target shard_image_target(shard_ctx *ctx);
/* An image_replaced_fn (arg: the shard_ctx): the request ids remembered for the keys go
 * (dedup_forget). */
void shard_images_replaced(void *ctx, size_t n, const uint64_t *keys);
/* A wal_replay_fn for the log records a snapshot already holds (a shard_ctx as arg):
 * their request ids are remembered (dedup.h) and the keys their images replaced are
 * forgotten, in the log's order, as when they were written; nothing is applied. */
ps_status shard_journal_remember(void *ctx, uint8_t type, uint64_t lsn, const void *payload,
                                 size_t len);
/* A backup's install of a sync's dedup record (journal.h, JOURNAL_TYPE_DEDUP): logged
 * (so a restart remembers it) and remembered at its position (*ret_lsn). PARSE for a
 * bad record, IO when the log refuses, NO_MEMORY. */
ps_status shard_journal_dedup(shard_ctx *ctx, const uint8_t *payload, size_t len,
                              uint64_t *ret_lsn);
/* The journal's position now (a shard_ctx as arg): what replicator syncs stand for. */
uint64_t shard_journal_position(void *ctx);
/* Returns once every journal record appended so far has its request remembered (the
 * journal lock taken and let go): snapshot_requests.settle (arg: the shard_ctx). */
void shard_journal_settle(void *ctx);

/* Waits until the change at journal position `pos` (0: nothing to wait for) is
 * acknowledged by every backup of its keys and durable in the write-ahead log (when
 * the shard has one); otherwise UNAVAILABLE set on rc ("not acknowledged"). fresh: the
 * change at pos was made by this call, so a ring change that may have kept it from an
 * owner (replicator_lost) also refuses it; a retry answered from an earlier try's
 * position passes false (that try's answer carried the refusal). */
ps_status shard_wait_durable(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, bool fresh,
                             const char *what);
/* The handler's last step once its reply is set: the call is answered when `pos` is
 * durable as shard_wait_durable says, by the shard's acker (acker.h), and this returns
 * OK at once; the handler returns what this returns and touches rc no more. The request
 * (and its raw views) stay with the call until then, as the replicator needs; memory
 * of the handler's own that a change references must not be handed over (wait
 * instead). Without the acker's memory it waits here. */
ps_status shard_answer_durable(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, bool fresh,
                               const char *what);
/* shard_wait_durable as an acker_wait_fn (arg: the shard_ctx). */
ps_status shard_ack_wait(void *arg, rpc_ctx *rc, uint64_t pos, bool fresh, const char *what);
/* The same without waiting for backups (a backup applying a primary's changes). */
ps_status shard_wait_logged(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, const char *what);

/* A push with a request id that this shard applied some keys of before (a retry):
 * *ret_done (0 for none or no id) of its keys were, the last at journal position
 * *ret_pos; when some but not all were, *rest is the push of the others. Otherwise
 * RESOURCE_EXHAUSTED set on rc. */
ps_status shard_dedup_push(shard_ctx *ctx, rpc_ctx *rc, const store_push *push, push_subset *rest,
                           size_t *ret_done, uint64_t *ret_pos);

/* repl_handler.c */
ps_status shard_handle_replicate(rpc_ctx *rc, const ProtobufCMessage *msg, void *user);

/* OK when the shard owns every key (after asking the runtime for a newer ring when the
 * request was routed with one): as any of its R owners (`any`: reads) or as its primary
 * (changes); otherwise the call's error, set on rc. *ret_checked (may be NULL) gets the
 * epoch of the ring it checked under (store_push.checked_epoch). */
ps_status shard_check_owner(shard_ctx *ctx, rpc_ctx *rc, bool any, uint64_t epoch, size_t n,
                            const uint64_t *keys, uint64_t *ret_checked);

#endif
