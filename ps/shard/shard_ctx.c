/* shard_ctx.c: builds and tears down a shard's context, and the functions the process
 * runtime calls on it (see shard_ctx.h). */
#include "shard_ctx.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "handlers.h"
#include "journal.h"
#include "ps.pb-c.h"
#include "shard_limits.h"

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
    ctx->max_subscribers =
        opts->max_subscribers ? opts->max_subscribers : SHARD_DEFAULT_MAX_SUBSCRIBERS;
    atomic_init(&ctx->subscribers, 0);
    ctx->keepalive_ms = opts->keepalive_ms > 0 ? opts->keepalive_ms : SHARD_KEEPALIVE_MS;
    ctx->ring_refresh = opts->ring_refresh;
    ctx->ring_refresh_arg = opts->ring_refresh_arg;
    *ret_ctx = ctx;
    return PS_STATUS_OK;

fail:
    shard_ctx_destroy(ctx);
    return st;
}

ps_status shard_ctx_open_journal(shard_ctx *ctx, const char *dir, wal_fsync mode,
                                 wal_recovery *ret_rec, char *err, size_t err_len) {
    journal_target target = {.chunks = ctx->store, .rows = ctx->rows};
    wal_opts wo = {.dir = dir, .fsync = mode, .replay = journal_replay, .replay_arg = &target};
    ps_status st = wal_open(&wo, ret_rec, &ctx->wal, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    store_journal j = journal_for(ctx->wal);
    store_set_journal(ctx->store, &j);
    row_journal rj = journal_rows_for(ctx->wal);
    row_store_set_journal(ctx->rows, &rj);
    return PS_STATUS_OK;
}

void shard_ctx_destroy(shard_ctx *ctx) {
    if (!ctx)
        return;
    wal_close(ctx->wal); /* the server is gone: nothing appends any more */
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
}
