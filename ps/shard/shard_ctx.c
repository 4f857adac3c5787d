/* shard_ctx.c: builds and tears down a shard's context, and the functions the process
 * runtime calls on it (see shard_ctx.h). */
#include "shard_ctx.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gc.h"
#include "handlers.h"
#include "log.h"
#include "journal.h"
#include "util.h"
#include "ps.pb-c.h"
#include "shard_limits.h"
#include "util.h"

/* A random non-zero 64-bit incarnation. */
static ps_status draw_incarnation(uint64_t *ret) {
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
            return PS_STATUS_IO;
    }
    *ret = v;
    return PS_STATUS_OK;
}

static uint64_t wall_clock_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

ps_status shard_ctx_create(const shard_ctx_opts *opts, shard_ctx **ret_ctx) {
    if (!opts || !opts->id || !opts->id[0])
        return PS_STATUS_INVALID_ARGUMENT;
    ps_status st = PS_STATUS_NO_MEMORY;
    shard_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return PS_STATUS_NO_MEMORY;
    ctx->id = strdup(opts->id);
    if (!ctx->id)
        goto fail;
    ctx->incarnation = opts->incarnation;
    if (!ctx->incarnation && (st = draw_incarnation(&ctx->incarnation)) != PS_STATUS_OK)
        goto fail;
    update_log_opts lo = {.max_bytes = opts->log_bytes,
                          .start_seq = opts->start_seq ? opts->start_seq : wall_clock_us()};
    if ((st = update_log_create(&lo, &ctx->log)) != PS_STATUS_OK)
        goto fail;
    if ((st = quota_create(opts->max_bytes, &ctx->quota)) != PS_STATUS_OK)
        goto fail;
    store_opts so = {.log = ctx->log, .quota = ctx->quota, .name = opts->id};
    if ((st = store_create(&so, &ctx->store)) != PS_STATUS_OK)
        goto fail;
    row_store_opts ro = {.quota = ctx->quota, .name = opts->id};
    if ((st = row_store_create(&ro, &ctx->rows)) != PS_STATUS_OK)
        goto fail;
    placement_opts po = {.self_id = opts->id};
    if ((st = placement_create(&po, &ctx->placement)) != PS_STATUS_OK)
        goto fail;
    if ((st = dedup_create(opts->dedup_keys, &ctx->dedup)) != PS_STATUS_OK)
        goto fail;
    replicator_opts rpo = {.self_id = opts->id,
                           .incarnation = ctx->incarnation,
                           .chunks = ctx->store,
                           .rows = ctx->rows,
                           .position = shard_journal_position,
                           .position_arg = ctx,
                           .dedup = ctx->dedup};
    if ((st = replicator_create(&rpo, &ctx->repl)) != PS_STATUS_OK)
        goto fail;
    if ((st = repl_inbox_create(&ctx->inbox)) != PS_STATUS_OK)
        goto fail;
    if (pthread_mutex_init(&ctx->journal_lock, NULL) != 0) {
        st = PS_STATUS_NO_MEMORY;
        goto fail;
    }
    ctx->journal_lock_made = true;
    if ((st = acker_create(shard_ack_wait, ctx, &ctx->acker)) != PS_STATUS_OK)
        goto fail;
    shard_journal_start(ctx); /* positions order the backups' queues even without a log */
    ctx->max_subscribers =
        opts->max_subscribers ? opts->max_subscribers : SHARD_DEFAULT_MAX_SUBSCRIBERS;
    atomic_init(&ctx->subscribers, 0);
    ctx->keepalive_ms = opts->keepalive_ms > 0 ? opts->keepalive_ms : SHARD_KEEPALIVE_MS;
    ctx->ring_refresh = opts->ring_refresh;
    ctx->ring_refresh_arg = opts->ring_refresh_arg;
    ctx->opts = *opts;
    ctx->opts.id = NULL; /* not owned: ctx->id is the copy */
    *ret_ctx = ctx;
    return PS_STATUS_OK;

fail:
    shard_ctx_destroy(ctx);
    return st;
}

/* Makes the update log and the chunk store again, empty, with seqs after `seq`, so that
 * the versions a snapshot brings stay older than every new one (before serving: nothing
 * holds them yet). */
static ps_status restart_seq(shard_ctx *ctx, uint64_t seq) {
    update_log *log = NULL;
    store *s = NULL;
    update_log_opts lo = {.max_bytes = ctx->opts.log_bytes, .start_seq = seq};
    store_opts so = {.quota = ctx->quota, .name = ctx->id};
    ps_status st = update_log_create(&lo, &log);
    so.log = log;
    if (st == PS_STATUS_OK && (st = store_create(&so, &s)) != PS_STATUS_OK)
        update_log_destroy(log);
    if (st != PS_STATUS_OK)
        return st;
    store_destroy(ctx->store);
    update_log_destroy(ctx->log);
    ctx->store = s;
    ctx->log = log;
    return PS_STATUS_OK;
}

ps_status shard_ctx_open_journal(shard_ctx *ctx, const char *dir, wal_fsync mode,
                                 snapshot_recovery *ret_rec, char *err, size_t err_len) {
    ctx->replaying = true; /* a replay writes nothing; the journal only remembers requests */
    snapshot_info head;
    bool found = false;
    store_stats ss;
    store_get_stats(ctx->store, &ss);
    ps_status st = snapshot_newest(dir, &found, &head, err, err_len);
    if (st == PS_STATUS_OK && found && head.max_version >= ss.seq &&
        (st = restart_seq(ctx, head.max_version)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "out of memory restarting the sequence numbers");
    journal_target target = {.chunks = ctx->store, .rows = ctx->rows, .dedup = ctx->dedup};
    uint64_t seg = snapshot_segment_bytes(ctx->opts.snapshot_log_bytes);
    snapshot_recover_opts ro = {.wal = {.dir = dir, .fsync = mode, .segment_bytes = seg},
                                .target = {.chunks = ctx->store,
                                           .rows = ctx->rows,
                                           .replaced = shard_images_replaced,
                                           .replaced_arg = ctx},
                                .requests = ctx->dedup,
                                .replay = journal_replay,
                                .replay_arg = &target,
                                .skipped = shard_journal_remember, /* request ids only */
                                .skipped_arg = ctx};
    snapshot_recovery rec = {0};
    shard_journal_start(ctx); /* on the stores as they are now */
    replicator_set_stores(ctx->repl, ctx->store, ctx->rows);
    if (st == PS_STATUS_OK)
        st = snapshot_recover(&ro, &rec, &ctx->wal, err, err_len);
    snapshot_taker_opts to = {
        .dir = dir,
        .chunks = ctx->store,
        .rows = ctx->rows,
        .requests = {.dedup = ctx->dedup, .settle = shard_journal_settle, .settle_arg = ctx},
        .wal = ctx->wal,
        .log_bytes = ctx->opts.snapshot_log_bytes,
        .log_since = rec.log_bytes,
        .last_lsn = rec.loaded ? rec.snap.lsn : 0,
        .on_event = ctx->opts.on_snapshot,
        .on_event_arg = ctx->opts.on_snapshot_arg};
    if (st == PS_STATUS_OK && (st = snapshot_taker_create(&to, &ctx->snapshots)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "cannot start the snapshot thread");
    if (st == PS_STATUS_OK && ret_rec)
        *ret_rec = rec;
    ctx->replaying = false;
    return st;
}

void shard_ctx_destroy(shard_ctx *ctx) {
    if (!ctx)
        return;
    acker_destroy(ctx->acker);     /* the server is gone: every deferred call was answered */
    replicator_destroy(ctx->repl); /* the server is gone: no handler waits on it */
    if (ctx->snapshots) {          /* a clean shutdown: a last snapshot, so a start is quick */
        char err[512] = "";
        snapshot_taker_take_now(ctx->snapshots, NULL, err, sizeof err);
        snapshot_taker_destroy(ctx->snapshots);
    }
    wal_close(ctx->wal); /* nothing appends any more */
    repl_inbox_destroy(ctx->inbox);
    dedup_destroy(ctx->dedup);
    if (ctx->journal_lock_made)
        pthread_mutex_destroy(&ctx->journal_lock);
    placement_destroy(ctx->placement);
    store_destroy(ctx->store);
    row_store_destroy(ctx->rows);
    quota_destroy(ctx->quota);
    update_log_destroy(ctx->log);
    free(ctx->id);
    free(ctx);
}

void shard_ctx_methods(shard_ctx *ctx, rpc_method ret_methods[SHARD_METHOD_COUNT]) {
    const rpc_method methods[SHARD_METHOD_COUNT] = {
        {"/ps.ParameterServer/Pull", RPC_METHOD_UNARY, &ps__pull_request__descriptor,
         shard_handle_pull, ctx, 0},
        /* push values arrive as a view into the payload (field 15), not unpacked */
        {"/ps.ParameterServer/Push", RPC_METHOD_UNARY, &ps__push_request__descriptor,
         shard_handle_push, ctx, 15},
        {"/ps.ParameterServer/Subscribe", RPC_METHOD_SERVER_STREAM,
         &ps__subscribe_request__descriptor, shard_handle_subscribe, ctx, 0},
        {"/ps.ParameterServer/Health", RPC_METHOD_UNARY, &ps__health_request__descriptor,
         shard_handle_health, ctx, 0},
        {"/ps.ParameterServer/Stat", RPC_METHOD_UNARY, &ps__stat_request__descriptor,
         shard_handle_stat, ctx, 0},
        {"/ps.ParameterServer/Delete", RPC_METHOD_UNARY, &ps__delete_request__descriptor,
         shard_handle_delete, ctx, 0},
        {"/ps.ParameterServer/PullRows", RPC_METHOD_UNARY, &ps__pull_rows_request__descriptor,
         shard_handle_pull_rows, ctx, 0},
        /* row gradients arrive as a view into the payload (field 15), like Push's */
        {"/ps.ParameterServer/PushRows", RPC_METHOD_UNARY, &ps__push_rows_request__descriptor,
         shard_handle_push_rows, ctx, 15},
        /* a primary's changes, on a thread of its own: the primary's handlers wait on it */
        {"/ps.ParameterServer/Replicate", RPC_METHOD_UNARY_OWN_THREAD,
         &ps__replicate_request__descriptor, shard_handle_replicate, ctx, 15},
    };
    memcpy(ret_methods, methods, sizeof methods);
}

void shard_ctx_stop(shard_ctx *ctx) {
    update_log_stop(ctx->log);
}

uint64_t shard_incarnation(const shard_ctx *ctx) {
    return ctx->incarnation;
}

const char *shard_id(const shard_ctx *ctx) {
    return ctx->id;
}

ps_status shard_ring_install(shard_ctx *ctx, const Ps__Ring *ring, shard_ring_change *ret_change) {
    placement_info info;
    bool installed = false;
    placement_set_replication(ctx->placement, ring->replication);
    if (ring->epoch != shard_ring_epoch(ctx) ||
        ring->pending_epoch != atomic_load(&ctx->ring_pending_epoch)) {
        atomic_store(&ctx->ring_since_ms, ps_now_ms());
        atomic_store(&ctx->ring_pending_epoch, ring->pending_epoch);
        atomic_store(&ctx->gc_due, true);
    }
    /* the replicator first: a push checked under the new ring (placement) is then routed
       under it too; one checked under the old ring and routed under the new one is found
       by the replicator (store_push.checked_epoch) and not acknowledged */
    (void)replicator_set_ring(ctx->repl, ring->ring.data, ring->ring.len, ring->pending.data,
                              ring->pending.len, ring->pending_epoch, ring->replication);
    ps_status st =
        placement_ring_install(ctx->placement, ring->ring.data, ring->ring.len, &installed, &info);
    if (st == PS_STATUS_OK && ret_change) {
        ret_change->installed = installed;
        ret_change->epoch = info.epoch;
        ret_change->nodes = info.nodes;
        ret_change->member = info.member;
    }
    return st;
}

bool shard_journal_failed(shard_ctx *ctx, char *why, size_t why_len) {
    return ctx->wal && wal_failed(ctx->wal, why, why_len);
}

uint64_t shard_ring_epoch(shard_ctx *ctx) {
    placement_info info;
    placement_get_info(ctx->placement, &info);
    return info.epoch;
}

void shard_heartbeat_fill(shard_ctx *ctx, Ps__HeartbeatRequest *req) {
    /* once a heartbeat: memory that requests and replaced values freed goes back to the
     * system instead of staying in malloc's arenas (the shard's RSS follows its data) */
    malloc_trim(0);
    store_stats ss;
    store_get_stats(ctx->store, &ss);
    uint64_t rows = 0;
    row_store_totals(ctx->rows, &rows, NULL);
    req->id = ctx->id;
    req->keys = ss.keys + rows;
    req->seq = ss.seq;
    req->synced_epoch = replicator_synced_epoch(ctx->repl);
    int settle = ctx->opts.gc_settle_ms ? ctx->opts.gc_settle_ms : SHARD_GC_SETTLE_MS;
    /* besides after each ring change, a look every `settle`: data a slow sync installed
     * after the last look (a copy for an owner that the ring then changed) goes too */
    if (settle > 0 && ps_now_ms() >= ctx->gc_next_ms) {
        ctx->gc_next_ms = ps_now_ms() + settle;
        atomic_store(&ctx->gc_due, true);
    }
    placement_info pi;
    placement_get_info(ctx->placement, &pi);
    /* never without a ring this shard is on: with none (a restart that has not reached
     * the coordinator yet) or off it, it owns nothing, and everything would go */
    if (pi.epoch > 0 && pi.member && atomic_load(&ctx->gc_due) && settle > 0 &&
        !atomic_load(&ctx->ring_pending_epoch) &&
        ps_now_ms() - atomic_load(&ctx->ring_since_ms) >= settle) { /* a bounded pass */
        uint64_t chunks = 0, rows = 0;
        bool more = false;
        atomic_store(&ctx->gc_due, false); /* a ring change meanwhile sets it again */
        ps_status st =
            gc_pass(ctx->store, ctx->placement, GC_MAX_KEYS_PER_PASS, &chunks, NULL, &more);
        if (st == PS_STATUS_OK && !more) /* the chunks are done: then the rows */
            st = gc_rows_pass(ctx->rows, ctx->placement, &ctx->gc_rows, GC_MAX_KEYS_PER_PASS, &rows,
                              NULL, &more);
        if (st != PS_STATUS_OK || more)
            atomic_store(&ctx->gc_due, true);
        if (st != PS_STATUS_OK)
            PS_WARN("dropping the data this shard no longer owns: %s (tried again later)",
                    ps_status_str(st));
        if (chunks || rows)
            PS_INFO("dropped %llu chunks and %llu rows this shard no longer owns",
                    (unsigned long long)chunks, (unsigned long long)rows);
        ctx->gc_dropped += chunks + rows;
    }
}
