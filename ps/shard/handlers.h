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

#include "placement.h"
#include "ps.pb-c.h"
#include "quota.h"
#include "row_store.h"
#include "rpc.h"
#include "shard_ctx.h"
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

/* With a write-ahead log: waits until record `lsn` is durable (lsn 0: nothing to wait
 * for); otherwise UNAVAILABLE set on rc ("not acknowledged"). */
ps_status shard_wait_durable(shard_ctx *ctx, rpc_ctx *rc, uint64_t lsn, const char *what);

/* OK when the shard owns every key (after asking the runtime for a newer ring when the
 * request was routed with one); otherwise the call's error, set on rc. */
ps_status shard_check_owner(shard_ctx *ctx, rpc_ctx *rc, uint64_t epoch, size_t n,
                            const uint64_t *keys);

#endif
