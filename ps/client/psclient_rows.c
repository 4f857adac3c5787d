/* psclient_rows.c: sparse embedding rows by id (PullRows, PushRows): ids grouped by the
 * shard owning ps_key_row(model, table, id), in batches of about BATCH_BYTES of values,
 * through psclient_route_op: every shard's calls (of at most CALL_KEYS rows) in flight
 * at once, and rows refused after a ring change routed again (nothing applied twice). */
#include <stdlib.h>
#include <string.h>

#include "psclient_internal.h"
#include "train_wire.h"
#include "util.h"

typedef struct rows_arg {
    const ps_table_ref *ref;
    const uint64_t *ids;
    float *out;                /* pull: n * dim floats */
    const float *values;       /* push: n * dim floats */
    Ps__PushOp op;             /* push */
    ps_push_train *train;      /* push OPTIMIZE */
    uint64_t created, skipped; /* what the shards said */
    uint64_t request_id;       /* push: one per batch of rows, the same on every retry */
} rows_arg;

/* Starts a rows request (PullRows or PushRows: `req` with its ids field set here) to
 * shard s; values (may be NULL) go as field 15 and are freed whatever happens. */
static ps_status rows_start(ps_client *c, uint32_t s, const char *what, const char *method,
                            ProtobufCMessage *req, uint64_t **ids_field, size_t *n_ids_field,
                            const uint64_t *all_ids, const size_t *idx, size_t m, uint8_t *values,
                            size_t values_len, rpc_pending **ret_pending) {
    rpc_channel *ch = NULL;
    ps_status st = psclient_call_keys(c, s, all_ids, idx, m, &ch);
    if (st != PS_STATUS_OK) {
        free(values);
        return st;
    }
    *ids_field = c->req_keys;
    *n_ids_field = m;
    rpc_bytes_field vf = {
        .field_number = 15, .data = values, .len = values_len, .release = free, .arg = values};
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = c->call_timeout_ms};
    st = rpc_call_start(ch, method, req, values ? &vf : NULL, values ? 1 : 0, &opts, ret_pending,
                        &res);
    return st == PS_STATUS_OK ? st : psclient_call_failed(c, s, what, st, &res);
}

static ps_status pull_rows_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                                 rpc_pending **ret_pending) {
    rows_arg *a = p;
    Ps__TableSpec spec;
    train_wire_table_to_msg(a->ref->spec, &spec);
    Ps__PullRowsRequest req = PS__PULL_ROWS_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.model = (char *)a->ref->model;
    req.table = (char *)a->ref->table;
    req.spec = &spec;
    return rows_start(c, s, "pull rows", "/ps.ParameterServer/PullRows", &req.base, &req.ids,
                      &req.n_ids, a->ids, idx, m, NULL, 0, ret_pending);
}

static ps_status pull_rows_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                                  rpc_pending *pending) {
    rows_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_received *received = NULL;
    rpc_result res;
    ps_status st = rpc_pending_finish(pending, &ps__pull_rows_response__descriptor, 15, &resp,
                                      &received, &res);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "pull rows", st, &res);
    const rpc_bytes_pieces *fields = NULL;
    size_t n_fields = rpc_received_pieces(received, &fields);
    size_t row_bytes = (size_t)a->ref->spec->dim * 4;
    if (n_fields != 1 || fields[0].len != m * row_bytes) {
        st = psclient_fail(c, PS_STATUS_INTERNAL, "shard %s sent %zu value bytes for %zu rows",
                           ps_client_shard_id(c, s), n_fields ? fields[0].len : 0, m);
    } else {
        ps_bytes_cursor rd = rpc_bytes_cursor(&fields[0]);
        for (size_t i = 0; i < m; i++) /* one copy, from the payload into place */
            ps_bytes_take(&rd, (uint8_t *)a->out + idx[i] * row_bytes, row_bytes);
        a->created += ((Ps__PullRowsResponse *)resp)->created;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_received_free(received);
    return st;
}

static ps_status push_rows_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                                 rpc_pending **ret_pending) {
    rows_arg *a = p;
    size_t row_bytes = (size_t)a->ref->spec->dim * 4;
    uint8_t *values = malloc(m * row_bytes + 1);
    if (!values)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory for %zu rows", m);
    for (size_t i = 0; i < m; i++)
        memcpy(values + i * row_bytes, (const uint8_t *)a->values + idx[i] * row_bytes, row_bytes);
    Ps__TableSpec spec;
    train_wire_table_to_msg(a->ref->spec, &spec);
    Ps__OptimizerSpec optimizer;
    Ps__PushRowsRequest req = PS__PUSH_ROWS_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.model = (char *)a->ref->model;
    req.table = (char *)a->ref->table;
    req.spec = &spec;
    req.op = a->op;
    req.request_id = a->request_id;
    /* later rounds resend rows, and a caller's id may name a write sent before: the
     * shard checks them */
    req.first_try = c->route_round == 0 && !c->user_request_id;
    if (a->train) {
        train_wire_optim_to_msg(a->train->optimizer, &optimizer);
        req.optimizer = &optimizer;
        req.skip_non_finite = a->train->skip_non_finite;
    }
    return rows_start(c, s, "push rows", "/ps.ParameterServer/PushRows", &req.base, &req.ids,
                      &req.n_ids, a->ids, idx, m, values, m * row_bytes, ret_pending);
}

static ps_status push_rows_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                                  rpc_pending *pending) {
    (void)idx;
    (void)m;
    rows_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st =
        rpc_pending_finish(pending, &ps__push_rows_response__descriptor, 0, &resp, NULL, &res);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "push rows", st, &res);
    a->created += ((Ps__PushRowsResponse *)resp)->created;
    a->skipped += ((Ps__PushRowsResponse *)resp)->skipped;
    protobuf_c_message_free_unpacked(resp, NULL);
    return PS_STATUS_OK;
}

/* Runs a rows call over n ids in batches of about BATCH_BYTES of values. */
static ps_status rows_op(ps_client *c, rows_arg *a, size_t n, bool push) {
    c->err[0] = '\0';
    char why[256];
    if (!a->ref || !a->ref->model || !a->ref->table || !a->ref->spec)
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "say which model and table");
    if (table_spec_check(a->ref->spec, why, sizeof why) != PS_STATUS_OK)
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "table %s/%s: %s", a->ref->model,
                             a->ref->table, why);
    size_t per_batch = BATCH_BYTES / ((size_t)a->ref->spec->dim * 4);
    uint64_t *keys = malloc((per_batch < n ? per_batch : n) * sizeof *keys + 1);
    if (!keys)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    ps_status st = PS_STATUS_OK;
    uint64_t table_key = ps_key_table(a->ref->model, a->ref->table);
    for (size_t first = 0; first < n && st == PS_STATUS_OK; first += per_batch) {
        size_t m = n - first < per_batch ? n - first : per_batch;
        for (size_t i = 0; i < m; i++)
            keys[i] = ps_key_row_in(table_key, a->ids[first + i]);
        rows_arg b = *a;
        b.ids += first;
        if (push)
            b.values += first * a->ref->spec->dim;
        else
            b.out += first * a->ref->spec->dim;
        b.created = b.skipped = 0;
        b.request_id = push ? psclient_request_id(c) : 0;
        shard_op op = {push ? push_rows_start : pull_rows_start,
                       push ? push_rows_finish : pull_rows_finish,
                       NULL,
                       0,
                       true,
                       0};
        st = psclient_route_op(c, m, keys, &op, &b, push);
        a->created += b.created;
        a->skipped += b.skipped;
    }
    free(keys);
    return st;
}

ps_status ps_client_pull_rows(ps_client *c, const ps_table_ref *ref, size_t n, const uint64_t *ids,
                              float *out, uint64_t *ret_created) {
    rows_arg a = {.ref = ref, .ids = ids, .out = out};
    ps_status st = rows_op(c, &a, n, false);
    if (ret_created)
        *ret_created = a.created;
    return st;
}

ps_status ps_client_push_rows(ps_client *c, const ps_table_ref *ref, Ps__PushOp op,
                              ps_push_train *train, size_t n, const uint64_t *ids,
                              const float *values, uint64_t *ret_created) {
    if (op == PS__PUSH_OP__PUSH_OPTIMIZE && (!train || !train->optimizer))
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "an optimizer push needs an optimizer");
    rows_arg a = {.ref = ref,
                  .ids = ids,
                  .values = values,
                  .op = op,
                  .train = op == PS__PUSH_OP__PUSH_OPTIMIZE ? train : NULL};
    ps_status st = rows_op(c, &a, n, true);
    if (a.train)
        a.train->skipped += a.skipped;
    if (ret_created)
        *ret_created = a.created;
    return st;
}
