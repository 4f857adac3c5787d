/* rows_handlers.c: the sparse-table handlers of ps.ParameterServer, PullRows and
 * PushRows (see handlers.h): counts and the spec checked before anything is sized,
 * placement checked on each row's key (ps_key_row), then the row store. */
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "ps.pb-c.h"
#include "shard_limits.h"
#include "train_wire.h"
#include "util.h"

/* Bytes of a PullRows reply besides values and state (steps: a varint per row). */
#define ROWS_REPLY_BYTES_PER_ROW 10u

/* What both handlers check first: names, the spec, the row count, then that this
 * shard owns every row under the request's epoch (as any owner for reads). Fills *ret_spec
 * and *ret_keys, the rows' keys (malloc'd: the caller frees them, OK or not). */
static ps_status check_rows(shard_ctx *ctx, rpc_ctx *rc, const char *what, bool any, uint64_t epoch,
                            const char *model, const char *table, const Ps__TableSpec *msg,
                            size_t n, const uint64_t *ids, table_spec *ret_spec,
                            uint64_t **ret_keys, uint64_t *ret_checked) {
    *ret_keys = NULL;
    if (!model || !*model || !table || !*table)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT, "%s must name a model and a table",
                             what);
    if (n > SHARD_MAX_KEYS_PER_REQUEST)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "%s of %zu rows: at most %u rows per request, send fewer at once",
                             what, n, SHARD_MAX_KEYS_PER_REQUEST);
    char err[RPC_DETAILS_MAX];
    train_wire_table_from_msg(msg, ret_spec);
    if (table_spec_check(ret_spec, err, sizeof err) != PS_STATUS_OK)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT, "%s of table %s/%s: %s", what, model,
                             table, err);
    uint64_t *keys = malloc((n + 1) * sizeof *keys);
    if (!keys)
        return rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu rows", n);
    ps_keys_rows(ps_key_table(model, table), n, ids, keys);
    *ret_keys = keys;
    return shard_check_owner(ctx, rc, any, epoch, n, keys, ret_checked);
}

/* What is left of a rows push a request applied some rows of before (a retry). */
typedef struct rows_rest {
    row_subset sub; /* the rows not applied yet, when n > 0 */
    size_t n;
    bool all_done; /* every row was applied before */
} rows_rest;

/* Fills *rest when the push's request applied some of its rows before; *ret_pos gets the
 * journal position they were applied at. RESOURCE_EXHAUSTED set on rc. */
static ps_status dedup_rows(shard_ctx *ctx, rpc_ctx *rc, const row_push *p, rows_rest *rest,
                            uint64_t *ret_pos) {
    if (!p->request_id || p->n == 0 || p->first_try ||    /* the journal checks */
        p->values_len != p->n * (size_t)p->spec->dim * 4) /* the store refuses it whole */
        return PS_STATUS_OK;
    bool *applied = calloc(p->n + 1, sizeof *applied);
    ps_status st = PS_STATUS_OK;
    if (!applied) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu rows", p->n);
        goto out;
    }
    size_t done = dedup_lookup(ctx->dedup, p->request_id, p->n, p->keys, applied, ret_pos);
    if (done > 0 && ctx->repl && replicator_moved(ctx->repl, p->checked_epoch, p->n, p->keys)) {
        st = rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE,
                           "request %016llx: the ring changed while it was checked here; send "
                           "it again to the rows' primary now",
                           (unsigned long long)p->request_id);
        goto out;
    }
    rest->all_done = done == p->n;
    if (done == 0 || done == p->n)
        goto out;
    if (row_subset_make(p, applied, &rest->sub) != PS_STATUS_OK) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu rows", p->n);
        goto out;
    }
    rest->n = rest->sub.push.n;
out:
    free(applied);
    return st;
}

static ps_status store_error(rpc_ctx *rc, ps_status st, const char *err) {
    return rpc_ctx_error(rc, st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED : st, "%s",
                         err);
}

ps_status shard_handle_pull_rows(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__PullRowsRequest *req = (const Ps__PullRowsRequest *)msg;
    table_spec spec;
    uint64_t *keys = NULL;
    ps_status st = check_rows(ctx, rc, "pull", true, req->epoch, req->model, req->table, req->spec,
                              req->n_ids, req->ids, &spec, &keys, NULL);
    free(keys);
    if (st != PS_STATUS_OK)
        return st;
    uint64_t n = req->n_ids, slots = req->with_state ? optim_spec_slots(spec.optimizer) : 0;
    uint64_t bytes = n * spec.dim * 4 * (1 + slots) + n * ROWS_REPLY_BYTES_PER_ROW;
    if (bytes > SHARD_MAX_VALUE_BYTES)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "%llu rows of %u floats%s take %llu bytes, more than one answer may "
                             "carry (%u): pull fewer rows at once",
                             (unsigned long long)n, spec.dim,
                             slots ? " with their optimizer state" : "", (unsigned long long)bytes,
                             SHARD_MAX_VALUE_BYTES);
    float *values = malloc(n * spec.dim * 4 + 1);
    float *state = slots ? malloc(n * spec.dim * slots * 4 + 1) : NULL;
    uint64_t *steps = req->with_state ? calloc(n + 1, sizeof *steps) : NULL;
    if (!values || (slots && !state) || (req->with_state && !steps)) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %llu rows",
                           (unsigned long long)n);
        goto out;
    }
    char err[RPC_DETAILS_MAX];
    Ps__PullRowsResponse resp = PS__PULL_ROWS_RESPONSE__INIT;
    st = row_store_pull(ctx->rows, req->model, req->table, &spec, n, req->ids, values, state, steps,
                        &resp.created, err, sizeof err);
    if (st != PS_STATUS_OK) {
        st = store_error(rc, st, err);
        goto out;
    }
    resp.incarnation = ctx->incarnation;
    resp.n_state_steps = req->with_state ? n : 0;
    resp.state_steps = steps;
    rpc_bytes_field vf[2] = {
        {.field_number = 15,
         .data = values,
         .len = n * spec.dim * 4,
         .release = free,
         .arg = values},
        {.field_number = 14,
         .data = state,
         .len = n * spec.dim * slots * 4,
         .release = free,
         .arg = state},
    };
    values = state = NULL; /* the reply owns them now, whatever happens */
    st = rpc_ctx_reply_with_bytes(rc, &resp.base, vf, slots ? 2 : 1);
out:
    free(values);
    free(state);
    free(steps);
    return st;
}

ps_status shard_handle_push_rows(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__PushRowsRequest *req = (const Ps__PushRowsRequest *)msg;
    ps_status st = shard_check_push_op(rc, req->op, req->optimizer != NULL, req->skip_non_finite);
    if (st != PS_STATUS_OK)
        return st;
    const rpc_bytes_pieces *vf = NULL;
    size_t n_values = rpc_ctx_raw_pieces(rc, &vf);
    if (n_values > 1)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "push carries its values field %zu times: send it once", n_values);
    table_spec spec;
    uint64_t *keys = NULL, checked = 0;
    st = check_rows(ctx, rc, "push", false, req->epoch, req->model, req->table, req->spec,
                    req->n_ids, req->ids, &spec, &keys, &checked);
    if (st != PS_STATUS_OK) {
        free(keys);
        return st;
    }
    optim_spec optimizer;
    train_wire_optim_from_msg(req->optimizer, &optimizer);
    row_push push = {
        .model = req->model,
        .table = req->table,
        .spec = &spec,
        .op = (row_op)req->op, /* numbered alike; checked above */
        .optimizer = &optimizer,
        .n = req->n_ids,
        .ids = req->ids,
        .keys = keys,
        .values_len = n_values ? vf[0].len : 0,
        .pieces = n_values ? vf[0].pieces : NULL, /* as they arrived: copied once */
        .n_pieces = n_values ? vf[0].n_pieces : 0,
        .skip_non_finite = req->skip_non_finite,
        .request_id = req->request_id,
        .first_try = req->first_try,
        .checked_epoch = checked,
    };
    char err[RPC_DETAILS_MAX];
    uint64_t lsn = 0, done_pos = 0;
    push.ret_lsn = &lsn;
    rows_rest rest = {0};
    Ps__PushRowsResponse resp = PS__PUSH_ROWS_RESPONSE__INIT;
    if ((st = dedup_rows(ctx, rc, &push, &rest, &done_pos)) != PS_STATUS_OK)
        goto out;
    if (rest.n || !rest.all_done) {
        st = row_store_push(ctx->rows, rest.n ? &rest.sub.push : &push, &resp.created,
                            &resp.skipped, err, sizeof err);
        if (st != PS_STATUS_OK) {
            st = store_error(rc, st == PS_STATUS_IO ? PS_STATUS_UNAVAILABLE : st, err);
            goto out;
        }
    }
    if (rest.n) { /* the backups reference `rest`, ours: wait here */
        if ((st = shard_wait_durable(ctx, rc, lsn > done_pos ? lsn : done_pos, lsn > done_pos,
                                     "rows push")) != PS_STATUS_OK)
            goto out;
        lsn = done_pos = 0;
    }
    resp.incarnation = ctx->incarnation;
    st = rpc_ctx_reply(rc, &resp.base);
    if (st == PS_STATUS_OK) /* answered once durable; rc is not ours after this */
        st = shard_answer_durable(ctx, rc, lsn > done_pos ? lsn : done_pos, lsn > done_pos,
                                  "rows push");
out:
    row_subset_free(&rest.sub);
    free(keys);
    return st;
}
