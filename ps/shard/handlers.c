/* handlers.c: the unary ps.ParameterServer handlers: Pull, Push, Stat, Delete, Health (see
 * handlers.h; Subscribe is in subscribe.c). Pull sends the chunks' value blocks as
 * they lie; Push hands the store the values as they arrived: one copy on the shard. */
#include "handlers.h"

#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "shard_limits.h"
#include "train_wire.h"

/* Bytes of a reply besides the values, per key (a version and a length, as varints
 * with their tags at most) and in all. */
#define REPLY_BYTES_PER_KEY 16u
#define REPLY_BYTES_FIXED 4096u

/* A Pull reply sends each chunk's values as they lie in the store (a slice each, no
 * copy) when the chunks average at least this many bytes; smaller ones are copied into
 * one buffer, which costs less than a slice per key. */
#define PULL_SHARE_MIN_BYTES (16u * 1024u)

ps_status shard_check_owner(shard_ctx *ctx, rpc_ctx *rc, bool any, uint64_t epoch, size_t n,
                            const uint64_t *keys, uint64_t *ret_checked) {
    placement_info info;
    placement_get_info(ctx->placement, &info);
    if (epoch > info.epoch && ctx->ring_refresh)
        ctx->ring_refresh(ctx->ring_refresh_arg); /* routed with a ring we have not seen */
    char err[RPC_DETAILS_MAX];
    ps_status st =
        any ? placement_check_any(ctx->placement, epoch, n, keys, ret_checked, err, sizeof err)
            : placement_check(ctx->placement, epoch, n, keys, ret_checked, err, sizeof err);
    return st == PS_STATUS_OK ? st : rpc_ctx_error(rc, st, "%s", err);
}

/* The named limit on keys per request, checked before anything is sized by n. */
static ps_status check_key_count(rpc_ctx *rc, const char *what, size_t n) {
    if (n <= SHARD_MAX_KEYS_PER_REQUEST)
        return PS_STATUS_OK;
    return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                         "%s of %zu keys: at most %u keys per request, send fewer at once", what, n,
                         SHARD_MAX_KEYS_PER_REQUEST);
}

/* What every keyed read (and Delete) checks first: the key count, then that this shard
 * owns every key under the request's epoch: as one of its owners for reads (`any`), as
 * its primary for changes. */
static ps_status check_keys(shard_ctx *ctx, rpc_ctx *rc, const char *what, bool any, uint64_t epoch,
                            size_t n, const uint64_t *keys) {
    ps_status st = check_key_count(rc, what, n);
    return st == PS_STATUS_OK ? shard_check_owner(ctx, rc, any, epoch, n, keys, NULL) : st;
}

/* The state half of a Pull with_state: per-key arrays, and the state bytes. */
typedef struct pull_state {
    store_state_info *info;
    Ps__OptimizerKind *kinds;
    uint64_t *steps;
    uint32_t *lengths;
    float *state;
    size_t state_len;
} pull_state;

static void pull_state_free(pull_state *ps) {
    free(ps->info);
    free(ps->kinds);
    free(ps->steps);
    free(ps->lengths);
    free(ps->state);
}

static bool pull_state_alloc(pull_state *ps, size_t n) {
    ps->info = calloc(n + 1, sizeof *ps->info);
    ps->kinds = calloc(n + 1, sizeof *ps->kinds);
    ps->steps = calloc(n + 1, sizeof *ps->steps);
    ps->lengths = calloc(n + 1, sizeof *ps->lengths);
    return ps->info && ps->kinds && ps->steps && ps->lengths;
}

/* Moves the state read into the response's fields (the arrays stay owned by ps). */
static void pull_state_fill(pull_state *ps, size_t n, Ps__PullResponse *resp) {
    for (size_t i = 0; i < n; i++) {
        ps->kinds[i] = (Ps__OptimizerKind)ps->info[i].kind;
        ps->steps[i] = ps->info[i].steps;
        ps->lengths[i] = ps->info[i].state_floats;
    }
    resp->n_state_kinds = resp->n_state_steps = resp->n_state_lengths = n;
    resp->state_kinds = ps->kinds;
    resp->state_steps = ps->steps;
    resp->state_lengths = ps->lengths;
}

/* The values of a Pull without state as a reply field: the chunks' blocks sent as they
 * lie (no copy; each released when gRPC is done with it) when they are large enough
 * for a slice each to pay, else copied into one buffer. Takes the references in
 * blocks (n); *parts (n entries) must outlive the reply's encoding. */
static void pull_values_field(update_log_values **blocks, size_t n, rpc_bytes_part *parts,
                              rpc_bytes_field *ret_field) {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (uint64_t)blocks[i]->len * sizeof(float);
    *ret_field = (rpc_bytes_field){.field_number = 15};
    float *copy = n > 0 && total / n < PULL_SHARE_MIN_BYTES ? malloc(total + 1) : NULL;
    if (copy) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(copy + off, blocks[i]->data, (size_t)blocks[i]->len * sizeof(float));
            off += blocks[i]->len;
            update_log_values_unref(blocks[i]);
        }
        *ret_field = (rpc_bytes_field){
            .field_number = 15, .data = copy, .len = total, .release = free, .arg = copy};
        return;
    }
    for (size_t i = 0; i < n; i++)
        parts[i] = (rpc_bytes_part){blocks[i]->data, (size_t)blocks[i]->len * sizeof(float),
                                    update_log_values_unref, blocks[i]};
    ret_field->parts = parts;
    ret_field->n_parts = n;
}

/* Pull without state: the values as the store holds them. */
static ps_status pull_values(shard_ctx *ctx, rpc_ctx *rc, const Ps__PullRequest *req, uint64_t room,
                             Ps__PullResponse *resp) {
    size_t n = req->n_keys;
    update_log_values **blocks = calloc(n + 1, sizeof *blocks);
    rpc_bytes_part *parts = calloc(n + 1, sizeof *parts);
    ps_status st = PS_STATUS_OK;
    char err[RPC_DETAILS_MAX];
    if (!blocks || !parts) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys", n);
        goto out;
    }
    st = store_read_blocks(ctx->store, n, req->keys, room, resp->lengths, resp->versions, blocks,
                           &resp->seq, err, sizeof err);
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(rc, st, "%s", err);
        goto out;
    }
    rpc_bytes_field vf;
    pull_values_field(blocks, n, parts, &vf); /* the reply owns the blocks now */
    st = rpc_ctx_reply_with_bytes(rc, &resp->base, &vf, 1);
out:
    free(blocks);
    free(parts);
    return st;
}

ps_status shard_handle_pull(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__PullRequest *req = (const Ps__PullRequest *)msg;
    ps_status st = check_keys(ctx, rc, "pull", true, req->epoch, req->n_keys, req->keys);
    if (st != PS_STATUS_OK)
        return st;
    uint64_t *versions = calloc(req->n_keys + 1, sizeof *versions);
    uint32_t *lengths = calloc(req->n_keys + 1, sizeof *lengths);
    pull_state ps = {0};
    float *values = NULL;
    size_t values_len = 0;
    if (!versions || !lengths || (req->with_state && !pull_state_alloc(&ps, req->n_keys))) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys",
                           req->n_keys);
        goto out;
    }
    uint64_t per_key = REPLY_BYTES_PER_KEY * (req->with_state ? 3 : 1);
    uint64_t room = SHARD_MAX_MESSAGE_BYTES - REPLY_BYTES_FIXED - (uint64_t)req->n_keys * per_key;
    char err[RPC_DETAILS_MAX];
    Ps__PullResponse resp = PS__PULL_RESPONSE__INIT;
    resp.n_versions = req->n_keys;
    resp.versions = versions;
    resp.n_lengths = req->n_keys;
    resp.lengths = lengths;
    resp.incarnation = ctx->incarnation;
    if (!req->with_state) {
        st = pull_values(ctx, rc, req, room, &resp);
        goto out;
    }
    st = store_read_state(ctx->store, req->n_keys, req->keys, room, lengths, versions, &values,
                          &values_len, ps.info, &ps.state, &ps.state_len, &resp.seq, err,
                          sizeof err);
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(rc, st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED : st, "%s",
                           err);
        goto out;
    }
    rpc_bytes_field vf[2] = {
        {.field_number = 15, .data = values, .len = values_len, .release = free, .arg = values},
        {.field_number = 14,
         .data = ps.state,
         .len = ps.state_len,
         .release = free,
         .arg = ps.state},
    };
    values = NULL; /* the reply owns them now, whatever happens */
    pull_state_fill(&ps, req->n_keys, &resp);
    ps.state = NULL;
    st = rpc_ctx_reply_with_bytes(rc, &resp.base, vf, 2);
out:
    free(values);
    free(versions);
    free(lengths);
    pull_state_free(&ps);
    return st;
}

/* The counts of a push, before anything is sized by them. */
static ps_status check_push_counts(rpc_ctx *rc, const Ps__PushRequest *req) {
    ps_status st = check_key_count(rc, "push", req->n_keys);
    if (st != PS_STATUS_OK)
        return st;
    if (req->n_lengths != req->n_keys)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT, "push has %zu keys but %zu lengths",
                             req->n_keys, req->n_lengths);
    if (req->n_names != 0 && req->n_names != req->n_keys)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT, "push has %zu keys but %zu names",
                             req->n_keys, req->n_names);
    return shard_check_push_op(rc, req->op, req->optimizer != NULL, req->skip_non_finite);
}

ps_status shard_check_push_op(rpc_ctx *rc, Ps__PushOp op, bool has_optimizer,
                              bool skip_non_finite) {
    if (op != PS__PUSH_OP__PUSH_ASSIGN && op != PS__PUSH_OP__PUSH_ADD &&
        op != PS__PUSH_OP__PUSH_OPTIMIZE)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT, "unknown push op %d", (int)op);
    if (op == PS__PUSH_OP__PUSH_OPTIMIZE && !has_optimizer)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "an optimizer push (PUSH_OPTIMIZE) must carry its optimizer");
    if (op != PS__PUSH_OP__PUSH_OPTIMIZE && skip_non_finite)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "skip_non_finite is for optimizer pushes: ASSIGN and ADD always "
                             "refuse non-finite values");
    return PS_STATUS_OK;
}

ps_status shard_handle_push(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__PushRequest *req = (const Ps__PushRequest *)msg;
    ps_status st = check_push_counts(rc, req);
    if (st != PS_STATUS_OK)
        return st;
    const rpc_bytes_pieces *vf = NULL;
    size_t n_values = rpc_ctx_raw_pieces(rc, &vf);
    if (n_values > 1)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "push carries its values field %zu times: send it once", n_values);
    /* the values as they arrived: the store copies each key's values once, from there
     * into its new block */
    size_t n_pieces = n_values ? vf[0].n_pieces : 0;
    const ps_bytes *pieces = n_values ? vf[0].pieces : NULL;
    optim_spec optimizer;
    train_wire_optim_from_msg(req->optimizer, &optimizer);
    store_push push = {
        .op = (update_log_op)req->op, /* numbered alike; checked above */
        .optimizer = &optimizer,
        .skip_non_finite = req->skip_non_finite,
        .n = req->n_keys,
        .keys = req->keys,
        .lengths = req->lengths,
        .values_len = n_values ? vf[0].len : 0,
        .pieces = pieces,
        .n_pieces = n_pieces,
        .names = req->n_names ? (const char *const *)req->names : NULL,
        .request_id = req->request_id,
        .first_try = req->first_try,
    };
    char err[RPC_DETAILS_MAX];
    store_batch *batch = NULL;
    uint64_t *versions = NULL, done_pos = 0;
    push_subset rest = {0};
    size_t done = 0;
    st = shard_check_owner(ctx, rc, false, req->epoch, req->n_keys, req->keys, &push.checked_epoch);
    if (st != PS_STATUS_OK)
        goto out;
    /* a retry: only the keys this request has not applied yet */
    if ((st = shard_dedup_push(ctx, rc, &push, &rest, &done, &done_pos)) != PS_STATUS_OK)
        goto out;
    Ps__PushResponse resp = PS__PUSH_RESPONSE__INIT;
    versions = calloc(req->n_keys + 1, sizeof *versions);
    if (!versions) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys",
                           req->n_keys);
        goto out;
    }
    uint64_t pos = 0;
    if (done == req->n_keys) /* all applied before: answer once that is durable */
        goto reply;
    st = store_batch_prepare(ctx->store, done ? &rest.push : &push, &batch, err, sizeof err);
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(rc, st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED : st, "%s",
                           err);
        goto out;
    }
    st = store_batch_apply(ctx->store, batch, versions, &resp.seq, err, sizeof err);
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(rc,
                           st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED
                           : st == PS_STATUS_IO      ? PS_STATUS_UNAVAILABLE /* the log refused */
                                                     : st,
                           "%s", err);
        goto out;
    }
    pos = store_batch_lsn(batch);
    if (done) { /* the backups reference `rest`, ours: wait here */
        if ((st = shard_wait_durable(ctx, rc, pos > done_pos ? pos : done_pos, pos > done_pos,
                                     "push")) != PS_STATUS_OK)
            goto out;
        pos = done_pos = 0;
    }
    resp.skipped = store_batch_skipped(batch);
reply:
    if (done) { /* the versions of every key, applied now or before */
        uint32_t *lengths = calloc(req->n_keys + 1, sizeof *lengths);
        if (lengths)
            store_stat(ctx->store, req->n_keys, req->keys, lengths, versions);
        free(lengths);
    }
    resp.n_versions = req->n_keys;
    resp.versions = versions;
    resp.incarnation = ctx->incarnation;
    st = rpc_ctx_reply(rc, &resp.base);
    if (st == PS_STATUS_OK) /* answered once durable; rc is not ours after this */
        st = shard_answer_durable(ctx, rc, pos > done_pos ? pos : done_pos, pos > done_pos, "push");
out:
    store_batch_destroy(batch);
    push_subset_free(&rest);
    free(versions);
    return st;
}

ps_status shard_handle_stat(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__StatRequest *req = (const Ps__StatRequest *)msg;
    ps_status st = check_keys(ctx, rc, "stat", true, req->epoch, req->n_keys, req->keys);
    if (st != PS_STATUS_OK)
        return st;
    uint32_t *lengths = calloc(req->n_keys + 1, sizeof *lengths);
    uint64_t *versions = calloc(req->n_keys + 1, sizeof *versions);
    if (!lengths || !versions) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys",
                           req->n_keys);
        goto out;
    }
    store_stat(ctx->store, req->n_keys, req->keys, lengths, versions);
    Ps__StatResponse resp = PS__STAT_RESPONSE__INIT;
    resp.n_lengths = req->n_keys;
    resp.lengths = lengths;
    resp.n_versions = req->n_keys;
    resp.versions = versions;
    resp.incarnation = ctx->incarnation;
    st = rpc_ctx_reply(rc, &resp.base);
out:
    free(lengths);
    free(versions);
    return st;
}

ps_status shard_handle_delete(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__DeleteRequest *req = (const Ps__DeleteRequest *)msg;
    ps_status st = check_keys(ctx, rc, "delete", false, req->epoch, req->n_keys, req->keys);
    if (st != PS_STATUS_OK)
        return st;
    Ps__DeleteResponse resp = PS__DELETE_RESPONSE__INIT;
    uint64_t lsn = 0;
    char err[RPC_DETAILS_MAX];
    st = store_delete_journaled(ctx->store, req->n_keys, req->keys, &resp.deleted, &resp.bytes,
                                &lsn, err, sizeof err);
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE, "%s", err);
    if ((st = shard_wait_durable(ctx, rc, lsn, true, "delete")) != PS_STATUS_OK)
        return st;
    resp.incarnation = ctx->incarnation;
    return rpc_ctx_reply(rc, &resp.base);
}

/* The tables' figures into resp->tables (malloc'd arrays in *ret_stats, *ret_msgs and
 * *ret_ptrs: free them after the reply). */
static bool health_tables(shard_ctx *ctx, Ps__HealthResponse *resp, row_table_stats **ret_stats,
                          Ps__TableStats **ret_msgs, Ps__TableStats ***ret_ptrs) {
    size_t n = row_store_stats(ctx->rows, NULL, 0);
    row_table_stats *stats = calloc(n + 1, sizeof *stats);
    Ps__TableStats *msgs = calloc(n + 1, sizeof *msgs);
    Ps__TableStats **ptrs = calloc(n + 1, sizeof *ptrs);
    *ret_stats = stats;
    *ret_msgs = msgs;
    *ret_ptrs = ptrs;
    if (!stats || !msgs || !ptrs)
        return false;
    size_t got = row_store_stats(ctx->rows, stats, n);
    if (got > n) /* tables made meanwhile: the next Health shows them */
        got = n;
    for (size_t i = 0; i < got; i++) {
        ps__table_stats__init(&msgs[i]);
        msgs[i].model = stats[i].model;
        msgs[i].table = stats[i].table;
        msgs[i].dim = stats[i].spec.dim;
        msgs[i].rows = stats[i].rows;
        msgs[i].bytes = stats[i].bytes;
        ptrs[i] = &msgs[i];
    }
    resp->n_tables = got;
    resp->tables = ptrs;
    return true;
}

ps_status shard_handle_health(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    shard_ctx *ctx = user;
    store_stats ss;
    store_get_stats(ctx->store, &ss);
    uint64_t rows = 0, row_bytes = 0;
    row_store_totals(ctx->rows, &rows, &row_bytes);
    Ps__HealthResponse resp = PS__HEALTH_RESPONSE__INIT;
    resp.id = ctx->id;
    resp.epoch = shard_ring_epoch(ctx);
    resp.keys = ss.keys + rows;
    resp.bytes = ss.bytes + row_bytes;
    resp.seq = ss.seq;
    resp.incarnation = ctx->incarnation;
    resp.subscribers = atomic_load(&ctx->subscribers);
    resp.max_bytes = ss.max_bytes;
    resp.skipped_non_finite = ss.skipped + row_store_skipped(ctx->rows);
    replicator_stats rs;
    replicator_get_stats(ctx->repl, &rs);
    resp.repl_targets = rs.backups;
    resp.repl_syncing = rs.behind;
    resp.repl_queued_bytes = rs.queued_bytes;
    resp.repl_sync_bytes = rs.sync_bytes;
    resp.repl_syncs = rs.syncs;
    resp.repl_sync_chunks_left = rs.sync_chunks_left;
    resp.repl_sync_bytes_left = rs.sync_bytes_left;
    dedup_stats ds;
    dedup_get_stats(ctx->dedup, &ds);
    resp.dedup_keys = ds.keys;
    resp.dedup_max_keys = ds.max_keys;
    resp.dedup_window_ms = ds.window_ms;
    resp.dedup_forgotten = ds.forgotten;
    resp.dedup_forgotten_young = ds.forgotten_young;
    row_table_stats *stats = NULL;
    Ps__TableStats *msgs = NULL, **ptrs = NULL;
    ps_status st = health_tables(ctx, &resp, &stats, &msgs, &ptrs)
                       ? rpc_ctx_reply(rc, &resp.base)
                       : rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    free(stats);
    free(msgs);
    free(ptrs);
    return st;
}
