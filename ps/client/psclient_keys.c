/* psclient_keys.c: the keyed operations of the client library: Pull (values land in
 * the caller's buffers with one copy, read as views into the received payload), Push
 * (with a per-key outcome, going on past failing shards) and Stat. Each builds one
 * request per shard and runs through psclient_route. */
#include <stdlib.h>
#include <string.h>

#include "psclient_internal.h"
#include "train_wire.h"
#include "util.h"

/* ------------------------------------------------------------------ pull --- */

/* What every keyed call starts with: the shard's channel and the keys idx[0..m) picks,
 * in a malloc'd array (free it). On failure c's error says why. */
static ps_status call_keys(ps_client *c, uint32_t s, const uint64_t *all, const size_t *idx,
                           size_t m, rpc_channel **ret_ch, uint64_t **ret_keys) {
    rpc_channel *ch = psclient_shard_channel(c, s);
    if (!ch)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
                             ps_client_shard_addr(c, s));
    uint64_t *keys = malloc((m + 1) * sizeof *keys);
    if (!keys)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m; i++)
        keys[i] = all[idx[i]];
    *ret_ch = ch;
    *ret_keys = keys;
    return PS_STATUS_OK;
}

typedef struct pull_arg {
    const uint64_t *keys;
    float *const *dst;
    const uint32_t *lens;
    uint64_t *versions;
} pull_arg;

static ps_status pull_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    pull_arg *a = p;
    rpc_channel *ch = NULL;
    uint64_t *keys = NULL;
    ps_status st = call_keys(c, s, a->keys, idx, m, &ch, &keys);
    if (st != PS_STATUS_OK)
        return st;
    Ps__PullRequest req = PS__PULL_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    ProtobufCMessage *resp = NULL;
    rpc_received *received = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = CALL_TIMEOUT_MS};
    /* the values (field 15) stay in the received payload: one copy, into dst */
    st = rpc_call_split(ch, "/ps.ParameterServer/Pull", &req.base, NULL, 0,
                        &ps__pull_response__descriptor, 15, &opts, &resp, &received, &res);
    free(keys);
    if (st != PS_STATUS_OK)
        return psclient_call_failed(c, s, "pull", st, &res);
    Ps__PullResponse *r = (Ps__PullResponse *)resp;
    const rpc_bytes_view *vv = NULL;
    size_t n_views = rpc_received_views(received, &vv);
    const uint8_t *values = n_views ? vv[n_views - 1].data : NULL;
    size_t values_len = n_views ? vv[n_views - 1].len : 0;
    uint64_t total = 0;
    if (r->n_lengths != m || r->n_versions != m)
        st = psclient_fail(c, PS_STATUS_INTERNAL, "shard %s answered %zu of %zu keys",
                           ps_client_shard_id(c, s), r->n_lengths, m);
    for (size_t i = 0; st == PS_STATUS_OK && i < m; i++) {
        if (r->lengths[i] != a->lens[idx[i]])
            st = psclient_fail(c, PS_STATUS_FAILED_PRECONDITION,
                               "key %016llx holds %u floats on shard %s, expected %u",
                               (unsigned long long)a->keys[idx[i]], r->lengths[i],
                               ps_client_shard_id(c, s), a->lens[idx[i]]);
        total += r->lengths[i];
    }
    if (st == PS_STATUS_OK && total * 4 != values_len)
        st = psclient_fail(c, PS_STATUS_INTERNAL, "shard %s sent %zu value bytes for %llu floats",
                           ps_client_shard_id(c, s), values_len, (unsigned long long)total);
    uint64_t off = 0;
    for (size_t i = 0; st == PS_STATUS_OK && i < m; i++) {
        memcpy(a->dst[idx[i]], values + off * 4, r->lengths[i] * 4ull);
        off += r->lengths[i];
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
    c->err[0] = '\0';
    return psclient_route(c, n, keys, pull_call, &a, false);
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

static ps_status push_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    push_arg *a = p;
    rpc_channel *ch = psclient_shard_channel(c, s);
    if (!ch)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
                             ps_client_shard_addr(c, s));
    uint64_t total = 0;
    for (size_t i = 0; i < m; i++)
        total += a->lens[idx[i]];
    uint64_t *keys = malloc(m * sizeof *keys);
    uint32_t *lens = malloc(m * sizeof *lens);
    char **names = a->names ? malloc(m * sizeof *names) : NULL;
    float *values = malloc(total * 4 + 1);
    ps_status st = PS_STATUS_OK;
    if (!keys || !lens || !values || (a->names && !names)) {
        st = psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < m; i++) {
        keys[i] = a->keys[idx[i]];
        lens[i] = a->lens[idx[i]];
        if (names)
            names[i] = (char *)a->names[idx[i]];
        memcpy(values + off, a->src[idx[i]], lens[i] * 4ull);
        off += lens[i];
    }
    Ps__PushRequest req = PS__PUSH_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    req.n_lengths = m;
    req.lengths = lens;
    req.op = a->op;
    req.n_names = names ? m : 0;
    req.names = names;
    Ps__OptimizerSpec optimizer;
    if (a->train) {
        train_wire_optim_to_msg(a->train->optimizer, &optimizer);
        req.optimizer = &optimizer;
        req.skip_non_finite = a->train->skip_non_finite;
    }
    rpc_bytes_field vf = {.field_number = 15, .data = values, .len = total * 4};
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = CALL_TIMEOUT_MS};
    st = rpc_call_with_bytes(ch, "/ps.ParameterServer/Push", &req.base, &vf, 1,
                             &ps__push_response__descriptor, &opts, &resp, &res);
    for (size_t i = 0; a->outcome && i < m; i++)
        a->outcome[idx[i]] = (uint8_t)outcome_of(st);
    if (st != PS_STATUS_OK) {
        st = psclient_call_failed(c, s, "push", st, &res);
        goto out;
    }
    Ps__PushResponse *r = (Ps__PushResponse *)resp;
    for (size_t i = 0; a->versions && i < m && i < r->n_versions; i++)
        a->versions[idx[i]] = r->versions[i];
    if (a->train)
        a->train->skipped += r->skipped;
    protobuf_c_message_free_unpacked(resp, NULL);
out:
    free(keys);
    free(lens);
    free(names);
    free(values);
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
    push_arg a = {op, keys, src, lens, names, ret_versions, ret_outcome, NULL};
    c->err[0] = '\0';
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, n);
    return psclient_route(c, n, keys, push_call, &a, true);
}

ps_status ps_client_push_optimize(ps_client *c, ps_push_train *train, size_t n,
                                  const uint64_t *keys, const float *const *src,
                                  const uint32_t *lens, uint64_t *ret_versions,
                                  uint8_t *ret_outcome) {
    push_arg a = {
        PS__PUSH_OP__PUSH_OPTIMIZE, keys, src, lens, NULL, ret_versions, ret_outcome, train};
    c->err[0] = '\0';
    if (!train || !train->optimizer)
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "an optimizer push needs an optimizer");
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, n);
    return psclient_route(c, n, keys, push_call, &a, true);
}

/* ------------------------------------------------------------------ stat --- */

typedef struct stat_arg {
    const uint64_t *keys;
    uint32_t *lens;
    uint64_t *versions;
} stat_arg;

static ps_status stat_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    stat_arg *a = p;
    rpc_channel *ch = NULL;
    uint64_t *keys = NULL;
    ps_status st = call_keys(c, s, a->keys, idx, m, &ch, &keys);
    if (st != PS_STATUS_OK)
        return st;
    Ps__StatRequest req = PS__STAT_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    st = rpc_call(ch, "/ps.ParameterServer/Stat", &req.base, &ps__stat_response__descriptor, &opts,
                  &resp, &res);
    free(keys);
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
    return psclient_route(c, n, keys, stat_call, &a, true);
}

/* ------------------------------------------------------------------ delete --- */

typedef struct delete_arg {
    const uint64_t *keys;
    uint64_t deleted, bytes;
} delete_arg;

static ps_status delete_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    delete_arg *a = p;
    rpc_channel *ch = NULL;
    uint64_t *keys = NULL;
    ps_status st = call_keys(c, s, a->keys, idx, m, &ch, &keys);
    if (st != PS_STATUS_OK)
        return st;
    Ps__DeleteRequest req = PS__DELETE_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = CALL_TIMEOUT_MS};
    st = rpc_call(ch, "/ps.ParameterServer/Delete", &req.base, &ps__delete_response__descriptor,
                  &opts, &resp, &res);
    free(keys);
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
    ps_status st = psclient_route(c, n, keys, delete_call, &a, true);
    if (counts)
        *counts = (ps_delete_counts){.chunks = a.deleted, .bytes = a.bytes};
    return st;
}
