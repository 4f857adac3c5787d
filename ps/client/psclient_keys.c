/* psclient_keys.c: the keyed operations of the client library: Pull (values land in
 * the caller's buffers with one copy, read from the pieces gRPC received), Push (one
 * copy into the buffer gRPC sends; a per-key outcome, going on past failing shards),
 * Stat and Delete. Each builds one request per shard and runs through
 * psclient_route_op, which has every shard's call in flight at once. */
#include <stdlib.h>
#include <string.h>

#include "psclient_internal.h"
#include "train_wire.h"
#include "util.h"

/* ------------------------------------------------------------------ pull --- */

ps_status psclient_call_keys(ps_client *c, uint32_t s, const uint64_t *all, const size_t *idx,
                             size_t m, rpc_channel **ret_ch) {
    rpc_channel *ch = psclient_shard_channel(c, s);
    if (!ch)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
                             ps_client_shard_addr(c, s));
    ps_status st = psclient_req_reserve(c, m);
    if (st != PS_STATUS_OK)
        return st;
    for (size_t i = 0; i < m; i++)
        c->req_keys[i] = all[idx[i]];
    *ret_ch = ch;
    return PS_STATUS_OK;
}

/* Starts a call whose request carries only keys (Pull, Stat, Delete share the layout:
 * epoch = 1, keys = 2), packed as `msg` after call_keys filled c->req_keys. */
static ps_status start_keyed(ps_client *c, uint32_t s, const uint64_t *all, const size_t *idx,
                             size_t m, const char *what, const char *method, ProtobufCMessage *msg,
                             uint64_t **msg_keys, size_t *msg_n, int64_t timeout_ms,
                             rpc_pending **ret_pending) {
    rpc_channel *ch = NULL;
    ps_status st = psclient_call_keys(c, s, all, idx, m, &ch);
    if (st != PS_STATUS_OK)
        return st;
    *msg_keys = c->req_keys;
    *msg_n = m;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = timeout_ms};
    st = rpc_call_start(ch, method, msg, NULL, 0, &opts, ret_pending, &res);
    return st == PS_STATUS_OK ? st : psclient_call_failed(c, s, what, st, &res);
}

typedef struct pull_arg {
    const uint64_t *keys;
    float *const *dst;
    const uint32_t *lens;
    uint64_t *versions;
} pull_arg;

static ps_status pull_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                            rpc_pending **ret_pending) {
    pull_arg *a = p;
    Ps__PullRequest req = PS__PULL_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    return start_keyed(c, s, a->keys, idx, m, "pull", "/ps.ParameterServer/Pull", &req.base,
                       &req.keys, &req.n_keys, c->call_timeout_ms, ret_pending);
}

/* Checks a Pull answer against what was asked; the values' length is checked too. */
static ps_status pull_check(ps_client *c, uint32_t s, const pull_arg *a, const size_t *idx,
                            size_t m, const Ps__PullResponse *r, size_t values_len) {
    if (r->n_lengths != m || r->n_versions != m)
        return psclient_fail(c, PS_STATUS_INTERNAL, "shard %s answered %zu of %zu keys",
                             ps_client_shard_id(c, s), r->n_lengths, m);
    uint64_t total = 0;
    for (size_t i = 0; i < m; i++) {
        if (r->lengths[i] != a->lens[idx[i]])
            return psclient_fail(c, PS_STATUS_FAILED_PRECONDITION,
                                 "key %016llx holds %u floats on shard %s, expected %u",
                                 (unsigned long long)a->keys[idx[i]], r->lengths[i],
                                 ps_client_shard_id(c, s), a->lens[idx[i]]);
        total += r->lengths[i];
    }
    if (total * 4 != values_len)
        return psclient_fail(c, PS_STATUS_INTERNAL, "shard %s sent %zu value bytes for %llu floats",
                             ps_client_shard_id(c, s), values_len, (unsigned long long)total);
    return PS_STATUS_OK;
}

static ps_status pull_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                             rpc_pending *pending) {
    pull_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_received *received = NULL;
    rpc_result res;
    /* the values (field 15) stay in the received payload: one copy, into dst */
    ps_status st =
        rpc_pending_finish(pending, &ps__pull_response__descriptor, 15, &resp, &received, &res);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "pull", st, &res);
    const Ps__PullResponse *r = (const Ps__PullResponse *)resp;
    const rpc_bytes_pieces *fields = NULL;
    size_t n_fields = rpc_received_pieces(received, &fields);
    rpc_bytes_pieces none = {NULL, 0, 0};
    const rpc_bytes_pieces *values = n_fields ? &fields[n_fields - 1] : &none; /* last wins */
    st = pull_check(c, s, a, idx, m, r, values->len);
    ps_bytes_cursor rd = rpc_bytes_cursor(values);
    for (size_t i = 0; st == PS_STATUS_OK && i < m; i++) {
        ps_bytes_take(&rd, a->dst[idx[i]], r->lengths[i] * 4ull); /* length checked */
        if (a->versions)
            a->versions[idx[i]] = r->versions[i];
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_received_free(received);
    return st;
}

ps_status ps_client_pull(ps_client *c, size_t n, const uint64_t *keys, float *const *dst,
                         const uint32_t *lens, uint64_t *ret_versions) {
    pull_arg a = {keys, dst, lens, ret_versions};
    shard_op op = {pull_start, pull_finish, lens, CALL_FLOATS, true, PULL_WINDOW};
    c->err[0] = '\0';
    return psclient_route_op(c, n, keys, &op, &a, false);
}

/* ------------------------------------------------------------------ push --- */

typedef struct push_arg {
    Ps__PushOp op;
    const uint64_t *keys;
    const float *const *src;
    const uint32_t *lens;
    const char *const *names;
    uint64_t *versions;
    uint8_t *outcome;     /* per key, a ps_push_outcome; may be NULL */
    ps_push_train *train; /* PUSH_OPTIMIZE only */
    uint64_t request_id;  /* one per logical push, the same on every retry */
} push_arg;

/* What a failed push call means for its keys: a refusal changed nothing (the shard
 * validates a whole request before applying any of it); a lost call may have. */
static ps_push_outcome outcome_of(ps_status st) {
    switch (st) {
    case PS_STATUS_OK:
        return PS_PUSH_APPLIED;
    case PS_STATUS_INVALID_ARGUMENT:
    case PS_STATUS_NOT_FOUND:
    case PS_STATUS_ALREADY_EXISTS:
    case PS_STATUS_RESOURCE_EXHAUSTED:
    case PS_STATUS_FAILED_PRECONDITION:
    case PS_STATUS_OUT_OF_RANGE:
    case PS_STATUS_UNIMPLEMENTED:
    case PS_STATUS_WRONG_EPOCH:
    case PS_STATUS_NO_MEMORY: /* ours, before sending */
        return PS_PUSH_NOT_APPLIED;
    default:
        return PS_PUSH_UNKNOWN;
    }
}

/* Sends key idx[0..m)'s values without a copy: gRPC sends each from the caller's
 * array as it lies (lent: the push waits until gRPC has dropped them, push_lent). */
static ps_status push_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                            rpc_pending **ret_pending) {
    push_arg *a = p;
    rpc_channel *ch = NULL;
    ps_status st = psclient_call_keys(c, s, a->keys, idx, m, &ch);
    if (st != PS_STATUS_OK)
        return st;
    for (size_t i = 0; i < m; i++) {
        c->req_lens[i] = a->lens[idx[i]];
        c->parts[i] = rpc_loan_part(c->loan, a->src[idx[i]], c->req_lens[i] * 4ull);
        if (a->names)
            c->req_names[i] = (char *)a->names[idx[i]];
    }
    Ps__PushRequest req = PS__PUSH_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = c->req_keys;
    req.n_lengths = m;
    req.lengths = c->req_lens;
    req.op = a->op;
    req.n_names = a->names ? m : 0;
    req.names = a->names ? c->req_names : NULL;
    req.request_id = a->request_id;
    /* later rounds resend keys, and a caller's id may name a write sent before: the
     * shard checks them */
    req.first_try = c->route_round == 0 && !c->user_request_id;
    Ps__OptimizerSpec optimizer;
    if (a->train) {
        train_wire_optim_to_msg(a->train->optimizer, &optimizer);
        req.optimizer = &optimizer;
        req.skip_non_finite = a->train->skip_non_finite;
    }
    rpc_bytes_field vf = {.field_number = 15, .parts = c->parts, .n_parts = m};
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = c->call_timeout_ms};
    st =
        rpc_call_start(ch, "/ps.ParameterServer/Push", &req.base, &vf, 1, &opts, ret_pending, &res);
    if (st != PS_STATUS_OK) {
        for (size_t i = 0; a->outcome && i < m; i++)
            a->outcome[idx[i]] = (uint8_t)outcome_of(st);
        return psclient_call_failed(c, s, "push", st, &res);
    }
    return PS_STATUS_OK;
}

static ps_status push_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                             rpc_pending *pending) {
    push_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st =
        rpc_pending_finish(pending, &ps__push_response__descriptor, 0, &resp, NULL, &res);
    for (size_t i = 0; a->outcome && i < m; i++)
        a->outcome[idx[i]] = (uint8_t)outcome_of(st);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "push", st, &res);
    const Ps__PushResponse *r = (const Ps__PushResponse *)resp;
    for (size_t i = 0; a->versions && i < m && i < r->n_versions; i++)
        a->versions[idx[i]] = r->versions[i];
    if (a->train)
        a->train->skipped += r->skipped;
    protobuf_c_message_free_unpacked(resp, NULL);
    return PS_STATUS_OK;
}

/* A push's end: its calls are finished, but gRPC may still hold the caller's values it
 * lent (the writes' completions run apart): the caller may free them once this returns. */
static ps_status push_lent(ps_client *c, ps_status st) {
    rpc_loan_wait(c->loan);
    return st;
}

ps_status ps_client_push(ps_client *c, Ps__PushOp op, size_t n, const uint64_t *keys,
                         const float *const *src, const uint32_t *lens, const char *const *names,
                         uint64_t *ret_versions) {
    return ps_client_push_report(c, op, n, keys, src, lens, names, ret_versions, NULL);
}

ps_status ps_client_push_report(ps_client *c, Ps__PushOp op, size_t n, const uint64_t *keys,
                                const float *const *src, const uint32_t *lens,
                                const char *const *names, uint64_t *ret_versions,
                                uint8_t *ret_outcome) {
    push_arg a = {
        op, keys, src, lens, names, ret_versions, ret_outcome, NULL, psclient_request_id(c)};
    c->err[0] = '\0';
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, n);
    shard_op ops = {push_start, push_finish, lens, CALL_FLOATS, true, 0};
    return push_lent(c, psclient_route_op(c, n, keys, &ops, &a, true));
}

ps_status ps_client_push_optimize(ps_client *c, ps_push_train *train, size_t n,
                                  const uint64_t *keys, const float *const *src,
                                  const uint32_t *lens, uint64_t *ret_versions,
                                  uint8_t *ret_outcome) {
    push_arg a = {
        PS__PUSH_OP__PUSH_OPTIMIZE, keys, src, lens, NULL, ret_versions, ret_outcome, train,
        psclient_request_id(c)};
    c->err[0] = '\0';
    if (!train || !train->optimizer)
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "an optimizer push needs an optimizer");
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, n);
    shard_op ops = {push_start, push_finish, lens, CALL_FLOATS, true, 0};
    return push_lent(c, psclient_route_op(c, n, keys, &ops, &a, true));
}

/* ------------------------------------------------------------------ stat --- */

typedef struct stat_arg {
    const uint64_t *keys;
    uint32_t *lens;
    uint64_t *versions;
} stat_arg;

static ps_status stat_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                            rpc_pending **ret_pending) {
    stat_arg *a = p;
    Ps__StatRequest req = PS__STAT_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    return start_keyed(c, s, a->keys, idx, m, "stat", "/ps.ParameterServer/Stat", &req.base,
                       &req.keys, &req.n_keys, 5000, ret_pending);
}

static ps_status stat_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                             rpc_pending *pending) {
    stat_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st =
        rpc_pending_finish(pending, &ps__stat_response__descriptor, 0, &resp, NULL, &res);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "stat", st, &res);
    const Ps__StatResponse *r = (const Ps__StatResponse *)resp;
    if (r->n_lengths != m || r->n_versions != m) {
        st = psclient_fail(c, PS_STATUS_INTERNAL, "shard %s answered %zu of %zu keys",
                           ps_client_shard_id(c, s), r->n_lengths, m);
    } else {
        for (size_t i = 0; i < m; i++) {
            a->lens[idx[i]] = r->lengths[i];
            if (a->versions)
                a->versions[idx[i]] = r->versions[i];
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}

ps_status ps_client_stat(ps_client *c, size_t n, const uint64_t *keys, uint32_t *ret_lens,
                         uint64_t *ret_versions) {
    stat_arg a = {keys, ret_lens, ret_versions};
    c->err[0] = '\0';
    memset(ret_lens, 0, n * sizeof *ret_lens);
    if (ret_versions)
        memset(ret_versions, 0, n * sizeof *ret_versions);
    shard_op op = {stat_start, stat_finish, NULL, 0, false, 0}; /* status: say at once */
    return psclient_route_op(c, n, keys, &op, &a, true);
}

/* ------------------------------------------------------------------ delete --- */

typedef struct delete_arg {
    const uint64_t *keys;
    uint64_t deleted, bytes;
} delete_arg;

static ps_status delete_start(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                              rpc_pending **ret_pending) {
    delete_arg *a = p;
    Ps__DeleteRequest req = PS__DELETE_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    return start_keyed(c, s, a->keys, idx, m, "delete", "/ps.ParameterServer/Delete", &req.base,
                       &req.keys, &req.n_keys, c->call_timeout_ms, ret_pending);
}

static ps_status delete_finish(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p,
                               rpc_pending *pending) {
    (void)idx, (void)m;
    delete_arg *a = p;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st =
        rpc_pending_finish(pending, &ps__delete_response__descriptor, 0, &resp, NULL, &res);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "delete", st, &res);
    a->deleted += ((const Ps__DeleteResponse *)resp)->deleted;
    a->bytes += ((const Ps__DeleteResponse *)resp)->bytes;
    protobuf_c_message_free_unpacked(resp, NULL);
    return PS_STATUS_OK;
}

ps_status ps_client_delete(ps_client *c, size_t n, const uint64_t *keys, ps_delete_counts *counts) {
    delete_arg a = {keys, 0, 0};
    c->err[0] = '\0';
    shard_op op = {delete_start, delete_finish, NULL, 0, true, 0};
    ps_status st = psclient_route_op(c, n, keys, &op, &a, true);
    if (counts)
        *counts = (ps_delete_counts){.chunks = a.deleted, .bytes = a.bytes};
    return st;
}
