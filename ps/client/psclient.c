/* psclient.c: see psclient.h. Routing: every operation keeps the set of key indices
 * not yet done; each round groups them by owner under the current ring and sends one
 * call per shard; keys a shard refuses because the ring moved stay pending, the ring
 * is fetched again and the next round routes them anew. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "psclient.h"
#include "util.h"

#define MAX_ROUNDS 5
#define CALL_TIMEOUT_MS 30000
#define BATCH_BYTES (16u << 20) /* values per message when cutting tensors */

struct ps_client {
    char coordinator[256];
    rpc_channel *coord;
    hashring *ring;
    rpc_channel **shards; /* by ring index; created on first use */
    uint32_t n_shards;
    char err[1024];
};

static ps_status fail(ps_client *c, ps_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ps_status fail(ps_client *c, ps_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return st;
}

static void drop_shards(ps_client *c) {
    for (uint32_t i = 0; i < c->n_shards; i++)
        rpc_channel_destroy(c->shards[i]);
    free(c->shards);
    c->shards = NULL;
    c->n_shards = 0;
}

ps_status ps_client_refresh(ps_client *c) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rpc_call(c->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &resp, &res);
    if (st != PS_STATUS_OK)
        return fail(c, st, "cannot get the ring from the coordinator at %s: %s %s", c->coordinator,
                    rpc_code_name(res.grpc_code), res.details);
    Ps__Ring *ring = (Ps__Ring *)resp;
    hashring *r = NULL;
    st = hashring_parse(ring->ring.data, ring->ring.len, &r);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (st != PS_STATUS_OK)
        return fail(c, st, "the coordinator sent a ring that does not parse");
    drop_shards(c);
    hashring_destroy(c->ring);
    c->ring = r;
    c->n_shards = hashring_node_count(r);
    c->shards = calloc(c->n_shards ? c->n_shards : 1, sizeof *c->shards);
    if (!c->shards)
        return fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    c->err[0] = '\0';
    return PS_STATUS_OK;
}

ps_status ps_client_create(const char *coordinator, ps_client **ret_client, char *err,
                           size_t err_len) {
    ps_client *c = calloc(1, sizeof *c);
    if (!c) {
        if (err)
            snprintf(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(c->coordinator, sizeof c->coordinator, "%s", coordinator);
    ps_status st = rpc_channel_create(coordinator, NULL, &c->coord);
    if (st != PS_STATUS_OK)
        fail(c, st, "bad coordinator address '%s'", coordinator);
    else
        st = ps_client_refresh(c);
    if (st != PS_STATUS_OK) {
        if (err)
            snprintf(err, err_len, "%s", c->err);
        ps_client_destroy(c);
        return st;
    }
    *ret_client = c;
    return PS_STATUS_OK;
}

void ps_client_destroy(ps_client *c) {
    if (!c)
        return;
    drop_shards(c);
    hashring_destroy(c->ring);
    rpc_channel_destroy(c->coord);
    free(c);
}

const char *ps_client_error(const ps_client *c) {
    return c->err;
}

rpc_channel *ps_client_coordinator(ps_client *c) {
    return c->coord;
}

uint64_t ps_client_epoch(const ps_client *c) {
    return c->ring ? hashring_epoch(c->ring) : 0;
}

uint32_t ps_client_shard_count(const ps_client *c) {
    return c->n_shards;
}

const char *ps_client_shard_id(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.id : "";
}

const char *ps_client_shard_addr(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.addr : "";
}

uint32_t ps_client_owner(const ps_client *c, uint64_t key) {
    return hashring_primary(c->ring, key);
}

static rpc_channel *shard_channel(ps_client *c, uint32_t index) {
    if (!c->shards[index] &&
        rpc_channel_create(ps_client_shard_addr(c, index), NULL, &c->shards[index]) != PS_STATUS_OK)
        return NULL;
    return c->shards[index];
}

/* ------------------------------------------------------------------ routing --- */

/* One call to one shard with the keys idx[0..m). Returns OK, WRONG_EPOCH (re-route), or
 * a failure with c->err set. */
typedef ps_status (*shard_call)(ps_client *c, uint32_t shard, const size_t *idx, size_t m,
                                void *arg);

/* Sends each shard its keys; keys a shard refuses because the ring moved are routed
 * again on a fresh ring. Without keep_going the first other failure ends it; with it,
 * the other shards still get their keys and the first failure is returned at the end
 * (pushes: so that exactly the failing shards' keys are left unapplied). */
static ps_status route(ps_client *c, size_t n, const uint64_t *keys, shard_call call, void *arg,
                       bool keep_going) {
    char first_err[sizeof c->err];
    first_err[0] = '\0';
    size_t *pending = malloc((n + 1) * sizeof *pending);
    size_t *group = malloc((n + 1) * sizeof *group);
    size_t *retry = malloc((n + 1) * sizeof *retry);
    uint32_t *owner = malloc((n + 1) * sizeof *owner);
    ps_status st = PS_STATUS_OK;
    if (!pending || !group || !retry || !owner) {
        st = fail(c, PS_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    size_t n_pending = n;
    for (size_t i = 0; i < n; i++)
        pending[i] = i;
    for (int round = 0; n_pending > 0; round++) {
        if (round == MAX_ROUNDS) {
            st = fail(c, PS_STATUS_UNAVAILABLE,
                      "the ring kept moving: %zu keys still unplaced after %d tries", n_pending,
                      MAX_ROUNDS);
            goto out;
        }
        if (c->n_shards == 0) {
            st = fail(c, PS_STATUS_UNAVAILABLE, "no shards on the ring (epoch %llu)",
                      (unsigned long long)ps_client_epoch(c));
            goto out;
        }
        for (size_t i = 0; i < n_pending; i++)
            owner[i] = hashring_primary(c->ring, keys[pending[i]]);
        size_t kept = 0;
        bool moved = false;
        for (uint32_t s = 0; s < c->n_shards; s++) {
            size_t m = 0;
            for (size_t i = 0; i < n_pending; i++)
                if (owner[i] == s)
                    group[m++] = pending[i];
            if (m == 0)
                continue;
            ps_status cs = call(c, s, group, m, arg);
            if (cs == PS_STATUS_WRONG_EPOCH) {
                memcpy(retry + kept, group, m * sizeof *group);
                kept += m;
                moved = true;
            } else if (cs != PS_STATUS_OK) {
                if (st == PS_STATUS_OK) { /* the first failure is the one reported */
                    st = cs;
                    memcpy(first_err, c->err, sizeof first_err);
                }
                if (!keep_going)
                    goto out;
            }
        }
        memcpy(pending, retry, kept * sizeof *retry);
        n_pending = kept;
        if (moved) {
            ps_status rs = ps_client_refresh(c);
            if (rs != PS_STATUS_OK) {
                st = st == PS_STATUS_OK ? rs : st;
                goto out;
            }
        }
    }
out:
    if (first_err[0])
        memcpy(c->err, first_err, sizeof first_err);
    free(pending);
    free(group);
    free(retry);
    free(owner);
    return st;
}

static ps_status call_failed(ps_client *c, uint32_t s, const char *what, ps_status st,
                             const rpc_result *res) {
    if (st == PS_STATUS_WRONG_EPOCH)
        return st;
    return fail(c, st, "%s on shard %s (%s): %s: %s", what, ps_client_shard_id(c, s),
                ps_client_shard_addr(c, s), rpc_code_name(res->grpc_code), res->details);
}

/* ------------------------------------------------------------------ pull --- */

typedef struct pull_arg {
    const uint64_t *keys;
    float *const *dst;
    const uint32_t *lens;
    uint64_t *versions;
} pull_arg;

static ps_status pull_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    pull_arg *a = p;
    rpc_channel *ch = shard_channel(c, s);
    if (!ch)
        return fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
                    ps_client_shard_addr(c, s));
    uint64_t *keys = malloc(m * sizeof *keys);
    if (!keys)
        return fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m; i++)
        keys[i] = a->keys[idx[i]];
    Ps__PullRequest req = PS__PULL_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    ProtobufCMessage *resp = NULL;
    rpc_received *received = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = CALL_TIMEOUT_MS};
    /* the values (field 15) stay in the received payload: one copy, into dst */
    ps_status st =
        rpc_call_split(ch, "/ps.ParameterServer/Pull", &req.base, NULL, 0,
                       &ps__pull_response__descriptor, 15, &opts, &resp, &received, &res);
    free(keys);
    if (st != PS_STATUS_OK)
        return call_failed(c, s, "pull", st, &res);
    Ps__PullResponse *r = (Ps__PullResponse *)resp;
    const rpc_bytes_view *vv = NULL;
    size_t n_views = rpc_received_views(received, &vv);
    const uint8_t *values = n_views ? vv[n_views - 1].data : NULL;
    size_t values_len = n_views ? vv[n_views - 1].len : 0;
    uint64_t total = 0;
    if (r->n_lengths != m || r->n_versions != m)
        st = fail(c, PS_STATUS_INTERNAL, "shard %s answered %zu of %zu keys",
                  ps_client_shard_id(c, s), r->n_lengths, m);
    for (size_t i = 0; st == PS_STATUS_OK && i < m; i++) {
        if (r->lengths[i] != a->lens[idx[i]])
            st = fail(c, PS_STATUS_FAILED_PRECONDITION,
                      "key %016llx holds %u floats on shard %s, expected %u",
                      (unsigned long long)a->keys[idx[i]], r->lengths[i], ps_client_shard_id(c, s),
                      a->lens[idx[i]]);
        total += r->lengths[i];
    }
    if (st == PS_STATUS_OK && total * 4 != values_len)
        st = fail(c, PS_STATUS_INTERNAL, "shard %s sent %zu value bytes for %llu floats",
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
    return route(c, n, keys, pull_call, &a, false);
}

/* ------------------------------------------------------------------ push --- */

typedef struct push_arg {
    Ps__PushOp op;
    const uint64_t *keys;
    const float *const *src;
    const uint32_t *lens;
    const char *const *names;
    uint64_t *versions;
    uint8_t *outcome; /* per key, a ps_push_outcome; may be NULL */
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
    rpc_channel *ch = shard_channel(c, s);
    if (!ch)
        return fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
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
        st = fail(c, PS_STATUS_NO_MEMORY, "out of memory");
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
    rpc_bytes_field vf = {.field_number = 15, .data = values, .len = total * 4};
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = CALL_TIMEOUT_MS};
    st = rpc_call_with_bytes(ch, "/ps.ParameterServer/Push", &req.base, &vf, 1,
                             &ps__push_response__descriptor, &opts, &resp, &res);
    for (size_t i = 0; a->outcome && i < m; i++)
        a->outcome[idx[i]] = (uint8_t)outcome_of(st);
    if (st != PS_STATUS_OK) {
        st = call_failed(c, s, "push", st, &res);
        goto out;
    }
    Ps__PushResponse *r = (Ps__PushResponse *)resp;
    for (size_t i = 0; a->versions && i < m && i < r->n_versions; i++)
        a->versions[idx[i]] = r->versions[i];
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
    push_arg a = {op, keys, src, lens, names, ret_versions, ret_outcome};
    c->err[0] = '\0';
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, n);
    return route(c, n, keys, push_call, &a, true);
}

/* ------------------------------------------------------------------ stat --- */

typedef struct stat_arg {
    const uint64_t *keys;
    uint32_t *lens;
    uint64_t *versions;
} stat_arg;

static ps_status stat_call(ps_client *c, uint32_t s, const size_t *idx, size_t m, void *p) {
    stat_arg *a = p;
    rpc_channel *ch = shard_channel(c, s);
    if (!ch)
        return fail(c, PS_STATUS_NO_MEMORY, "cannot open a channel to %s",
                    ps_client_shard_addr(c, s));
    uint64_t *keys = malloc((m + 1) * sizeof *keys);
    if (!keys)
        return fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m; i++)
        keys[i] = a->keys[idx[i]];
    Ps__StatRequest req = PS__STAT_REQUEST__INIT;
    req.epoch = ps_client_epoch(c);
    req.n_keys = m;
    req.keys = keys;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rpc_call(ch, "/ps.ParameterServer/Stat", &req.base,
                            &ps__stat_response__descriptor, &opts, &resp, &res);
    free(keys);
    if (st != PS_STATUS_OK)
        return call_failed(c, s, "stat", st, &res);
    const Ps__StatResponse *r = (const Ps__StatResponse *)resp;
    if (r->n_lengths != m || r->n_versions != m) {
        st = fail(c, PS_STATUS_INTERNAL, "shard %s answered %zu of %zu keys",
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
    return route(c, n, keys, stat_call, &a, true);
}

/* ------------------------------------------------------------------ models --- */

ps_status ps_client_get_model(ps_client *c, const char *name, uint64_t version,
                              Ps__ModelInfo **ret_model) {
    Ps__GetModelRequest req = PS__GET_MODEL_REQUEST__INIT;
    req.name = (char *)name;
    req.version = version;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rpc_call(c->coord, "/ps.Coordinator/GetModel", &req.base,
                            &ps__model_info__descriptor, &opts, &resp, &res);
    if (st != PS_STATUS_OK)
        return fail(c, st, "%s", res.details);
    *ret_model = (Ps__ModelInfo *)resp;
    return PS_STATUS_OK;
}

const Ps__TensorInfo *ps_client_find_tensor(const Ps__ModelInfo *m, const char *tensor) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i]->name, tensor) == 0)
            return m->tensors[i];
    return NULL;
}

uint64_t ps_tensor_count(const Ps__TensorInfo *t) {
    uint64_t n = 1;
    for (size_t i = 0; i < t->n_shape; i++)
        n *= t->shape[i] > 0 ? (uint64_t)t->shape[i] : 0;
    return n;
}

/* Runs push or pull over a tensor's chunks in batches of about BATCH_BYTES. A push
 * goes on past failures (see ps_client_push_report), takes only the chunks `only`
 * marks (NULL: all) and reports each chunk's outcome; a pull stops at the first. */
static ps_status tensor_op(ps_client *c, const char *model, const Ps__TensorInfo *t, bool push,
                           Ps__PushOp op, float *data, uint64_t count, uint64_t *ret_version_sum,
                           const uint8_t *only, uint8_t *ret_outcome) {
    c->err[0] = '\0';
    if (count != ps_tensor_count(t))
        return fail(c, PS_STATUS_INVALID_ARGUMENT, "tensor %s/%s has %llu floats, not %llu", model,
                    t->name, (unsigned long long)ps_tensor_count(t), (unsigned long long)count);
    if (t->chunk_floats == 0)
        return fail(c, PS_STATUS_INVALID_ARGUMENT, "tensor %s/%s has chunk size 0", model, t->name);
    uint32_t per_batch = BATCH_BYTES / 4 / t->chunk_floats;
    if (per_batch == 0)
        per_batch = 1;
    uint64_t *keys = malloc(per_batch * sizeof *keys),
             *versions = malloc(per_batch * sizeof *versions);
    float **ptrs = malloc(per_batch * sizeof *ptrs);
    uint32_t *lens = malloc(per_batch * sizeof *lens);
    uint32_t *chunk_of = malloc(per_batch * sizeof *chunk_of);
    uint8_t *outcome = malloc(per_batch);
    char **names = calloc(per_batch, sizeof *names);
    ps_status st = PS_STATUS_OK;
    uint64_t sum = 0;
    if (!keys || !versions || !ptrs || !lens || !chunk_of || !outcome || !names) {
        st = fail(c, PS_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    if (ret_outcome)
        memset(ret_outcome, PS_PUSH_NOT_APPLIED, t->chunks);
    uint32_t next = 0; /* the next chunk to consider */
    while (next < t->chunks && (push || st == PS_STATUS_OK)) {
        uint32_t m = 0;
        for (; next < t->chunks && m < per_batch; next++)
            if (!only || only[next])
                chunk_of[m++] = next;
        if (m == 0)
            break;
        for (uint32_t i = 0; i < m; i++) {
            uint32_t ch = chunk_of[i];
            uint64_t start = (uint64_t)ch * t->chunk_floats;
            keys[i] = ps_key_dense(model, t->name, ch);
            ptrs[i] = data + start;
            lens[i] = (uint32_t)(count - start < t->chunk_floats ? count - start : t->chunk_floats);
            if (push) {
                free(names[i]);
                size_t need = strlen(model) + strlen(t->name) + 16;
                names[i] = malloc(need);
                if (names[i])
                    snprintf(names[i], need, "%s/%s#%u", model, t->name, ch);
            }
        }
        ps_status bs;
        if (push) {
            char first_err[sizeof c->err];
            memcpy(first_err, c->err, sizeof first_err);
            bs = ps_client_push_report(c, op, m, keys, (const float *const *)ptrs, lens,
                                       (const char *const *)names, versions, outcome);
            if (first_err[0]) /* keep the first batch failure's message */
                memcpy(c->err, first_err, sizeof first_err);
            for (uint32_t i = 0; ret_outcome && i < m; i++)
                ret_outcome[chunk_of[i]] = outcome[i];
        } else {
            bs = ps_client_pull(c, m, keys, ptrs, lens, versions);
        }
        for (uint32_t i = 0; bs == PS_STATUS_OK && i < m; i++)
            sum += versions[i];
        if (st == PS_STATUS_OK)
            st = bs;
    }
    if (ret_version_sum && st == PS_STATUS_OK)
        *ret_version_sum = sum;
out:
    for (uint32_t i = 0; names && i < per_batch; i++)
        free(names[i]);
    free(names);
    free(keys);
    free(versions);
    free(ptrs);
    free(lens);
    free(chunk_of);
    free(outcome);
    return st;
}

ps_status ps_client_push_tensor(ps_client *c, const char *model, const Ps__TensorInfo *t,
                                Ps__PushOp op, const float *data, uint64_t count) {
    return tensor_op(c, model, t, true, op, (float *)data, count, NULL, NULL, NULL);
}

ps_status ps_client_push_tensor_report(ps_client *c, const char *model, const Ps__TensorInfo *t,
                                       Ps__PushOp op, const float *data, uint64_t count,
                                       const uint8_t *only, uint8_t *ret_outcome) {
    return tensor_op(c, model, t, true, op, (float *)data, count, NULL, only, ret_outcome);
}

ps_status ps_client_pull_tensor(ps_client *c, const char *model, const Ps__TensorInfo *t,
                                float *dst, uint64_t count, uint64_t *ret_version_sum) {
    return tensor_op(c, model, t, false, PS__PUSH_OP__PUSH_ASSIGN, dst, count, ret_version_sum,
                     NULL, NULL);
}
