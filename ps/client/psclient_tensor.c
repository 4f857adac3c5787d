/* psclient_tensor.c: models and whole tensors: the registry entry of a model, and
 * push/pull of a tensor cut into its chunks (keys ps_key_dense(model, version, tensor,
 * i)), in
 * batches of about TENSOR_BATCH_BYTES. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psclient_internal.h"
#include "util.h"

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
        return psclient_fail(c, st, "%s", res.details);
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

/* Runs push or pull over a tensor's chunks in batches of about TENSOR_BATCH_BYTES. A push
 * goes on past failures (see ps_client_push_report), takes only the chunks `only`
 * marks (NULL: all) and reports each chunk's outcome; a pull stops at the first. */
static ps_status tensor_op(ps_client *c, const char *model, uint64_t version,
                           const Ps__TensorInfo *t, bool push, Ps__PushOp op, float *data,
                           uint64_t count, uint64_t *ret_version_sum, const uint8_t *only,
                           uint8_t *ret_outcome, ps_push_train *train) {
    c->err[0] = '\0';
    if (count != ps_tensor_count(t))
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT,
                             "tensor %s/%s has %llu floats, not %llu", model, t->name,
                             (unsigned long long)ps_tensor_count(t), (unsigned long long)count);
    if (t->chunk_floats == 0)
        return psclient_fail(c, PS_STATUS_INVALID_ARGUMENT, "tensor %s/%s has chunk size 0", model,
                             t->name);
    uint32_t per_batch = TENSOR_BATCH_BYTES / 4 / t->chunk_floats;
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
        st = psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
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
            keys[i] = ps_key_dense(model, version, t->name, ch);
            ptrs[i] = data + start;
            lens[i] = (uint32_t)(count - start < t->chunk_floats ? count - start : t->chunk_floats);
            if (push && !train) {
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
            bs = train ? ps_client_push_optimize(c, train, m, keys, (const float *const *)ptrs,
                                                 lens, versions, outcome)
                       : ps_client_push_report(c, op, m, keys, (const float *const *)ptrs, lens,
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

ps_status ps_client_push_tensor(ps_client *c, const char *model, uint64_t version,
                                const Ps__TensorInfo *t, Ps__PushOp op, const float *data,
                                uint64_t count) {
    return tensor_op(c, model, version, t, true, op, (float *)data, count, NULL, NULL, NULL, NULL);
}

ps_status ps_client_push_tensor_report(ps_client *c, const char *model, uint64_t version,
                                       const Ps__TensorInfo *t, Ps__PushOp op, const float *data,
                                       uint64_t count, const uint8_t *only, uint8_t *ret_outcome) {
    return tensor_op(c, model, version, t, true, op, (float *)data, count, NULL, only, ret_outcome,
                     NULL);
}

ps_status ps_client_pull_tensor(ps_client *c, const char *model, uint64_t version,
                                const Ps__TensorInfo *t, float *dst, uint64_t count,
                                uint64_t *ret_version_sum) {
    return tensor_op(c, model, version, t, false, PS__PUSH_OP__PUSH_ASSIGN, dst, count,
                     ret_version_sum, NULL, NULL, NULL);
}

ps_status ps_client_push_tensor_optimize(ps_client *c, const char *model, uint64_t version,
                                         const Ps__TensorInfo *t, ps_push_train *train,
                                         const float *grad, uint64_t count) {
    return tensor_op(c, model, version, t, true, PS__PUSH_OP__PUSH_OPTIMIZE, (float *)grad, count,
                     NULL, NULL, NULL, train);
}
