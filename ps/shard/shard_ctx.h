/* shard_ctx.h: one ps-shard's state as its RPC handlers and its process runtime see
 * it: the chunk store, the update log, the placement, the incarnation and the limits.
 *
 * Why it is built this way: handlers get this context through the rpc_method `user`
 * pointer (no globals), and the process runtime (register, heartbeats, ring watch:
 * main.c today, ps/runtime later) talks to the shard only through the functions
 * below, so that neither knows the other's insides. The shard never calls the
 * coordinator itself: when a request was routed with a newer ring epoch than the shard
 * knows, it asks the runtime through the ring_refresh hook.
 */
#ifndef PS_SHARD_CTX_H
#define PS_SHARD_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "rpc.h"
#include "snapshot.h"
#include "status.h"
#include "wal.h"

typedef struct shard_ctx shard_ctx;

/* Fetches the ring from the coordinator now and installs it (shard_ring_install). */
typedef void (*shard_ring_refresh_fn)(void *arg);

typedef struct shard_ctx_opts {
    const char *id;           /* this shard's id on the ring (copied) */
    uint64_t max_bytes;       /* value-memory quota (--max-bytes); 0 = none */
    uint64_t log_bytes;       /* update log budget (--log-mb); 0 = 64 MiB */
    uint64_t dedup_keys;      /* request-id memory, keys (--dedup-mb); 0 = DEDUP_DEFAULT_MAX_KEYS */
    uint32_t max_subscribers; /* open Subscribe streams; 0 = SHARD_DEFAULT_MAX_SUBSCRIBERS */
    uint64_t incarnation;     /* 0 = draw a random non-zero one (tests may fix it) */
    uint64_t start_seq;       /* last seq before the first update; 0 = wall clock in us */
    int keepalive_ms;         /* idle stream keepalive; 0 = SHARD_KEEPALIVE_MS */
    shard_ring_refresh_fn ring_refresh; /* may be NULL */
    void *ring_refresh_arg;
    uint64_t snapshot_log_bytes;   /* with a data dir: a snapshot each time the log grew this
                                      much (--snapshot-log-mb); 0 = 256 MiB */
    snapshot_event_fn on_snapshot; /* after each snapshot, on its thread (may be NULL) */
    void *on_snapshot_arg;
    int gc_settle_ms; /* drop chunks no longer owned once the ring stayed this long with no
                         change pending (gc.h); 0 = SHARD_GC_SETTLE_MS, < 0 = never */
} shard_ctx_opts;

#define SHARD_GC_SETTLE_MS 60000

ps_status shard_ctx_create(const shard_ctx_opts *opts, shard_ctx **ret_ctx);
/* Makes the stores durable in `dir`: loads the newest snapshot (snapshot.h; the seqs
 * start past its largest version), opens the write-ahead log (wal.h) and replays the
 * records after the snapshot (journal.h), then journals every push and delete (the
 * handlers answer only once their record is durable per `mode`) and starts the thread
 * that takes a snapshot each time the log grew by opts.snapshot_log_bytes;
 * shard_ctx_destroy takes a last one. Call once, before serving. ret_rec (may be NULL)
 * says what recovery found (the snapshot; a torn tail cut: log it). On failure
 * (corruption of the log or the snapshot: PARSE naming file and offset; a log that does
 * not continue from the snapshot; IO; a record the store refuses) err says why and the
 * shard must not serve. Chunks and sparse-row pushes are journaled. */
ps_status shard_ctx_open_journal(shard_ctx *ctx, const char *dir, wal_fsync mode,
                                 snapshot_recovery *ret_rec, char *err, size_t err_len);

/* Call after the rpc server that serves the context is destroyed. Accepts NULL. */
void shard_ctx_destroy(shard_ctx *ctx);

/* The shard's methods (Pull, Push, Subscribe, Health, Stat, Delete, PullRows, PushRows,
 * Replicate) with ctx as
 * their user pointer, for rpc_server_serve. */
#define SHARD_METHOD_COUNT 9
void shard_ctx_methods(shard_ctx *ctx, rpc_method ret_methods[SHARD_METHOD_COUNT]);

/* Ends every Subscribe stream (shutdown: call before destroying the server). */
void shard_ctx_stop(shard_ctx *ctx);

uint64_t shard_incarnation(const shard_ctx *ctx);
const char *shard_id(const shard_ctx *ctx);

/* For the runtime's loops. */
typedef struct shard_ring_change {
    bool installed; /* the ring was newer than the one held */
    uint64_t epoch; /* of the ring held now */
    uint32_t nodes; /* shards on it */
    bool member;    /* this shard is one of them */
} shard_ring_change;

/* Installs a ring message from the coordinator when it is newer. PARSE when its ring
 * bytes do not parse. ret_change (may be NULL) says what happened, for logging. */
ps_status shard_ring_install(shard_ctx *ctx, const Ps__Ring *ring, shard_ring_change *ret_change);
/* The epoch of the ring held (0 before the first). */
uint64_t shard_ring_epoch(shard_ctx *ctx);
/* True once the write-ahead log failed (a full disk, an I/O error); why says how. */
bool shard_journal_failed(shard_ctx *ctx, char *why, size_t why_len);
/* Fills what a heartbeat reports (id, keys held, last seq); the strings point into ctx. */
void shard_heartbeat_fill(shard_ctx *ctx, Ps__HeartbeatRequest *req);

#endif
