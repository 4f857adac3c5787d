/* model_seq.c: the executor's sequence layers (see model_config.h, "Sequence ops"):
 * embedding, position_embedding, attention, mean_pool and l2_normalize, each one op on
 * the backend's stream; model_infer.c's layer loop calls model_seq_run.
 *
 * Why it is built this way: token ids and masks are client input, so everything about
 * them is settled before any layer runs (model_seq_prepare): every id an embedding
 * reads is checked against its table's rows (the gather op would refuse too, but
 * without saying which input and id, and after earlier layers ran), and an INT64 mask
 * is turned into the FP32 mask the ops take (non-zero: 1) in a workspace slot planned
 * at create for max_batch_size, so a pass still allocates nothing. An FP32 mask is
 * passed to the ops as the caller gave it. A position embedding is a scale op with the
 * table's first S rows as the shift of a [batch, S * D] matrix: no new op needed.
 */
#include "model_internal.h"
#include "ops.h"
#include "util.h"

#include <stdio.h>

/* The config's limit on an attention's tokens is the op's: a config that parses runs. */
_Static_assert(MODEL_CONFIG_MAX_SEQ == KERNELS_ATTENTION_MAX_SEQ,
               "model_config.h and ops.h disagree on the longest attention sequence");

ps_status model_seq_plan(model *m, char *err, size_t err_len) {
    const size_t batch_cap = m->max_batch > 0 ? m->max_batch : 1;
    for (size_t l = 0; l < m->n_layers; l++) {
        const size_t v = m->layers[l].mask;
        if (v == MODEL_CONFIG_NONE || !m->values[v].ids || m->values[v].int_mask) {
            continue;
        }
        model_value *val = &m->values[v];
        const size_t padded =
            (val->per_sample + SLOT_ALIGN_FLOATS - 1) / SLOT_ALIGN_FLOATS * SLOT_ALIGN_FLOATS;
        size_t end;
        size_t bytes;
        if (__builtin_add_overflow(m->ws_per_batch, padded, &end) ||
            __builtin_mul_overflow(end, batch_cap * sizeof(float), &bytes)) {
            ps_set_err(err, err_len, "the workspace for max_batch_size %zu would overflow",
                       batch_cap);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
        val->int_mask = true;
        val->slot = m->ws_per_batch;
        m->ws_per_batch = end;
    }
    return PS_STATUS_OK;
}

/* Every id of an embedding layer's input is a row of its weight. */
static ps_status check_ids(const model *m, const model_workspace *ws, size_t l, size_t batch,
                           char *err, size_t err_len) {
    const model_config_layer *layer = &m->layers[l];
    const model_value *xv = &m->values[layer->inputs[0]];
    const int64_t rows = m->params[layer->weight].desc.dims[0];
    const int64_t *ids = ws->ids[layer->inputs[0]];
    const size_t n = batch * xv->per_sample;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= rows) {
            ps_set_err(err, err_len,
                       "input \"%s\": id %lld (sample %zu, token %zu) is not a row of the "
                       "embedding \"%s\" of layer \"%s\" (ids are 0..%lld)",
                       xv->desc.name, (long long)ids[i], i / xv->per_sample, i % xv->per_sample,
                       m->params[layer->weight].desc.name, layer->name, (long long)rows - 1);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

ps_status model_seq_prepare(const model *m, model_workspace *ws, size_t batch, char *err,
                            size_t err_len) {
    for (size_t l = 0; l < m->n_layers; l++) {
        if (m->layers[l].op == MODEL_CONFIG_OP_EMBEDDING) {
            ps_status st = check_ids(m, ws, l, batch, err, err_len);
            if (st != PS_STATUS_OK) {
                return st;
            }
        }
    }
    for (size_t v = 0; v < m->n_inputs; v++) {
        const model_value *val = &m->values[v];
        if (!val->int_mask) {
            continue;
        }
        const int64_t *ids = ws->ids[v];
        float *slot = ws->arena + ws->batch_cap * val->slot;
        /* a device's slot is filled from host staging */
        float *mask = m->device ? ws->host + ws->batch_cap * val->host_slot : slot;
        for (size_t i = 0; i < batch * val->per_sample; i++) {
            mask[i] = ids[i] != 0 ? 1.0f : 0.0f;
        }
        if (m->device) {
            ps_status st = kernels_buffer_upload(ws->stream, slot, mask,
                                                 batch * val->per_sample * sizeof(float));
            if (st != PS_STATUS_OK) {
                ps_set_err(err, err_len, "input \"%s\": cannot upload its mask to %s: %s",
                           val->desc.name, kernels_backend_name(m->backend), ps_status_str(st));
                return st;
            }
        }
    }
    return PS_STATUS_OK;
}

/* The FP32 mask of input value v for this pass; NULL for MODEL_CONFIG_NONE. */
static const float *mask_of(const model *m, const model_workspace *ws, size_t v) {
    if (v == MODEL_CONFIG_NONE) {
        return NULL;
    }
    if (m->values[v].int_mask) {
        return ws->arena + ws->batch_cap * m->values[v].slot;
    }
    return ws->ptrs[v];
}

ps_status model_seq_run(const model *m, const model_workspace *ws, const float *x, size_t l,
                        size_t batch, float *y) {
    const model_config_layer *layer = &m->layers[l];
    const model_value *xv = &m->values[layer->inputs[0]];
    kernels_stream *s = ws->stream;
    switch (layer->op) {
    case MODEL_CONFIG_OP_EMBEDDING: {
        const model_param_slot *w = &m->params[layer->weight];
        return kernels_op_embedding_gather(s, model_param_ptr(m, layer->weight),
                                           (size_t)w->desc.dims[0], (size_t)w->desc.dims[1],
                                           ws->ids[layer->inputs[0]], batch * xv->per_sample, y);
    }
    case MODEL_CONFIG_OP_POSITION_EMBEDDING:
        /* rows: samples; columns: S * D; shift: the table's first S rows */
        return kernels_op_scale(s, x, batch, xv->per_sample, NULL,
                                model_param_ptr(m, layer->weight), y);
    case MODEL_CONFIG_OP_ATTENTION: {
        const kernels_attention_shape shape = {
            .batch = batch,
            .seq = xv->rows,
            .heads = layer->heads,
            .head_dim = xv->cols / layer->heads, /* heads divide cols: the config's check */
            .ld = xv->cols,
        };
        return kernels_op_attention(s, &shape, x, ws->ptrs[layer->inputs[1]],
                                    ws->ptrs[layer->inputs[2]], mask_of(m, ws, layer->mask), y);
    }
    case MODEL_CONFIG_OP_MEAN_POOL:
        return kernels_op_mean_pool(s, x, batch, xv->rows, xv->cols, mask_of(m, ws, layer->mask),
                                    y);
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        return kernels_op_l2_normalize(s, x, batch * xv->rows, xv->cols, layer->eps, y);
    default:
        break;
    }
    return PS_STATUS_INTERNAL;
}
