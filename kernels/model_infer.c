/* model_infer.c: the forward pass (see model.h): inputs and outputs checked against
 * the plan, the inputs uploaded on a device backend (model_device.c), the token ids
 * checked and the masks converted (model_seq.c), the table rows read (model_bag.c), one
 * op per layer on the workspace's stream, the outputs copied (or downloaded) out. With
 * a workspace nothing is allocated. */
#include "model_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kernels_activation model_activation_to_backend(model_config_activation a) {
    switch (a) {
    case MODEL_CONFIG_ACTIVATION_RELU:
        return KERNELS_ACTIVATION_RELU;
    case MODEL_CONFIG_ACTIVATION_SIGMOID:
        return KERNELS_ACTIVATION_SIGMOID;
    case MODEL_CONFIG_ACTIVATION_TANH:
        return KERNELS_ACTIVATION_TANH;
    case MODEL_CONFIG_ACTIVATION_GELU:
        return KERNELS_ACTIVATION_GELU;
    case MODEL_CONFIG_ACTIVATION_NONE:
        break;
    }
    return KERNELS_ACTIVATION_NONE;
}

/* Checks the inputs; *ret_batch gets the batch size (1 without a batch dim),
 * ptrs[0..m->n_inputs) the FP32 inputs' data and ids[0..m->n_inputs) the INT64 inputs'
 * ids (NULL for the others). */
static ps_status check_inputs(const model *m, const model_input *inputs, size_t n_inputs,
                              size_t *ret_batch, const float **ptrs, const int64_t **ids, char *err,
                              size_t err_len) {
    char got_s[160];
    char want_s[160];
    for (size_t i = 0; i < m->n_inputs; i++) {
        ptrs[i] = NULL;
        ids[i] = NULL;
    }
    size_t batch = 0;
    size_t batch_from = 0;
    for (size_t k = 0; k < n_inputs; k++) {
        const model_input *in = &inputs[k];
        size_t v;
        if (in->name == NULL || !model_config_value_find(m->cfg, in->name, &v) ||
            v >= m->n_inputs) {
            char list[256] = "";
            size_t used = 0;
            for (size_t i = 0; i < m->n_inputs && used < sizeof(list); i++) {
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                         i > 0 ? ", " : "", m->values[i].desc.name);
            }
            ps_set_err(err, err_len, "unknown input \"%s\"; the model's inputs are: %s",
                       in->name != NULL ? in->name : "(null)", list);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        const model_value *val = &m->values[v];
        if (ptrs[v] != NULL || ids[v] != NULL) {
            ps_set_err(err, err_len, "input \"%s\" is given twice", in->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (val->ids ? in->ids == NULL : in->data == NULL) {
            ps_set_err(err, err_len, "input \"%s\" has no data; it is %s, so give %s", in->name,
                       val->ids ? "INT64" : "FP32", val->ids ? "its ids" : "its floats");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        bool ok = in->ndims == val->desc.ndims;
        for (uint32_t d = (m->max_batch > 0 ? 1 : 0); ok && d < in->ndims; d++) {
            ok = in->dims[d] == val->desc.dims[d];
        }
        if (!ok) {
            ps_set_err(err, err_len, "input \"%s\": shape %s does not match the model's %s%s",
                       in->name, model_dims_str(in->dims, in->ndims, got_s, sizeof(got_s)),
                       model_dims_str(val->desc.dims, val->desc.ndims, want_s, sizeof(want_s)),
                       m->max_batch > 0 ? " (-1: the batch size)" : "");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (m->max_batch > 0) {
            if (in->dims[0] < 1 || in->dims[0] > (int64_t)m->max_batch) {
                ps_set_err(err, err_len,
                           "input \"%s\": batch size %lld is outside 1..%u (max_batch_size)",
                           in->name, (long long)in->dims[0], m->max_batch);
                return PS_STATUS_INVALID_ARGUMENT;
            }
            if (batch == 0) {
                batch = (size_t)in->dims[0];
                batch_from = k;
            } else if (batch != (size_t)in->dims[0]) {
                ps_set_err(err, err_len,
                           "inputs \"%s\" and \"%s\" have different batch sizes (%zu and %lld)",
                           inputs[batch_from].name, in->name, batch, (long long)in->dims[0]);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
        if (val->ids) {
            ids[v] = in->ids;
        } else {
            ptrs[v] = in->data;
        }
    }
    for (size_t i = 0; i < m->n_inputs; i++) {
        if (ptrs[i] == NULL && ids[i] == NULL) {
            ps_set_err(err, err_len, "input \"%s\" is missing", m->values[i].desc.name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    *ret_batch = m->max_batch > 0 ? batch : 1;
    return PS_STATUS_OK;
}

/* Value index of a declared output; SIZE_MAX for anything else. */
static size_t output_value(const model *m, const char *name) {
    for (size_t i = 0; name != NULL && i < m->n_outputs; i++) {
        if (strcmp(m->output_names[i], name) == 0) {
            return m->output_values[i];
        }
    }
    return SIZE_MAX;
}

/* Checks the requested outputs: declared, and a buffer that fits. */
static ps_status check_outputs(const model *m, const model_output *outputs, size_t n_outputs,
                               size_t batch, bool have_ws, char *err, size_t err_len) {
    for (size_t k = 0; k < n_outputs; k++) {
        const model_output *out = &outputs[k];
        const size_t v = output_value(m, out->name);
        if (v == SIZE_MAX) {
            char list[256] = "";
            size_t used = 0;
            for (size_t i = 0; i < m->n_outputs && used < sizeof(list); i++) {
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                         i > 0 ? ", " : "", m->output_names[i]);
            }
            ps_set_err(err, err_len, "unknown output \"%s\"; the model's outputs are: %s",
                       out->name != NULL ? out->name : "(null)", list);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        const size_t need = batch * m->values[v].per_sample;
        if (out->buffer == NULL && !have_ws) {
            ps_set_err(err, err_len,
                       "output \"%s\" has no buffer; without a workspace every output needs one",
                       out->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (out->buffer != NULL && out->capacity < need) {
            ps_set_err(err, err_len,
                       "output \"%s\": the buffer holds %zu floats, but batch %zu needs %zu",
                       out->name, out->capacity, batch, need);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

static ps_status run_layer(const model *m, const model_workspace *ws, size_t l, size_t batch,
                           float *y, char *err, size_t err_len) {
    const model_config_layer *layer = &m->layers[l];
    const float **ptrs = ws->ptrs;
    const model_value *xv = &m->values[layer->inputs[0]];
    const model_value *yv = &m->values[layer->output];
    const float *x = ptrs[layer->inputs[0]];
    const size_t rows = batch * xv->rows;
    kernels_stream *s = ws->stream;
    ps_status st = PS_STATUS_INTERNAL;
    switch (layer->op) {
    case MODEL_CONFIG_OP_DENSE:
        st = kernels_op_dense(s, x, rows, xv->cols, model_param_ptr(m, layer->weight),
                              layer->bias != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->bias)
                                                               : NULL,
                              yv->cols, model_activation_to_backend(layer->activation), y);
        break;
    case MODEL_CONFIG_OP_RELU:
        st = kernels_op_activation(s, KERNELS_ACTIVATION_RELU, x, rows * xv->cols, y);
        break;
    case MODEL_CONFIG_OP_SOFTMAX:
        st = kernels_op_softmax(s, x, rows, xv->cols, y);
        break;
    case MODEL_CONFIG_OP_ADD:
        st = kernels_op_add(s, x, ptrs[layer->inputs[1]], rows * xv->cols, y);
        break;
    case MODEL_CONFIG_OP_SCALE:
        st = kernels_op_scale(
            s, x, rows, xv->cols,
            layer->scale != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->scale) : NULL,
            layer->shift != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->shift) : NULL, y);
        break;
    case MODEL_CONFIG_OP_EMBEDDING_BAG:
        st = model_bag_run(m, ws, l, batch, y);
        break;
    case MODEL_CONFIG_OP_CONCAT:
        st = kernels_op_concat(s, x, xv->cols, ptrs[layer->inputs[1]],
                               m->values[layer->inputs[1]].cols, rows, y);
        break;
    case MODEL_CONFIG_OP_CONV2D:
    case MODEL_CONFIG_OP_MAXPOOL2D:
    case MODEL_CONFIG_OP_AVGPOOL2D:
    case MODEL_CONFIG_OP_FLATTEN:
    case MODEL_CONFIG_OP_RESHAPE:
    case MODEL_CONFIG_OP_GELU:
    case MODEL_CONFIG_OP_TANH:
    case MODEL_CONFIG_OP_SIGMOID:
    case MODEL_CONFIG_OP_LAYERNORM:
        st = model_image_run(m, ws, x, l, batch, y);
        break;
    case MODEL_CONFIG_OP_EMBEDDING:
    case MODEL_CONFIG_OP_POSITION_EMBEDDING:
    case MODEL_CONFIG_OP_ATTENTION:
    case MODEL_CONFIG_OP_MEAN_POOL:
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        st = model_seq_run(m, ws, x, l, batch, y);
        break;
    }
    if (st == PS_STATUS_UNIMPLEMENTED) {
        ps_set_err(err, err_len, "layer \"%s\": backend \"%s\" has no %s op", layer->name,
                   kernels_backend_name(m->backend), model_config_op_name(layer->op));
    } else if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "layer \"%s\" (%s) failed on backend \"%s\": %s %s", layer->name,
                   model_config_op_name(layer->op), kernels_backend_name(m->backend),
                   ps_status_str(st), kernels_stream_last_error(ws->stream));
    }
    return st;
}

ps_status model_layers_run(const model *m, model_workspace *ws, size_t batch, char *err,
                           size_t err_len) {
    for (size_t l = 0; l < m->n_layers; l++) {
        const model_config_layer *layer = &m->layers[l];
        float *y = ws->arena + ws->batch_cap * m->values[layer->output].slot;
        ps_status st = run_layer(m, ws, l, batch, y, err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        ws->ptrs[layer->output] = y;
    }
    return PS_STATUS_OK;
}

ps_status model_infer_rows(const model *m, model_workspace *ws, const model_input *inputs,
                           size_t n_inputs, char *err, size_t err_len) {
    if (m == NULL || ws == NULL || (inputs == NULL && n_inputs > 0)) {
        ps_set_err(err, err_len, "infer: no model, workspace or inputs");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (ws->m != m) {
        ps_set_err(err, err_len, "infer: the workspace belongs to another model");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ws->rows_for = NULL;
    size_t batch = 0;
    ps_status st = check_inputs(m, inputs, n_inputs, &batch, ws->ptrs, ws->ids, err, err_len);
    if (st == PS_STATUS_OK) {
        st = model_bag_fetch(m, ws, batch, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        ws->rows_for = inputs;
        ws->rows_for_n = n_inputs;
    }
    return st;
}

ps_status model_infer(const model *m, model_workspace *ws, const model_input *inputs,
                      size_t n_inputs, model_output *outputs, size_t n_outputs, char *err,
                      size_t err_len) {
    if (m == NULL || (inputs == NULL && n_inputs > 0) || (outputs == NULL && n_outputs > 0)) {
        ps_set_err(err, err_len, "infer: no model, inputs or outputs");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (ws != NULL && ws->m != m) {
        ps_set_err(err, err_len, "infer: the workspace belongs to another model");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    /* Rows model_infer_rows read for these very inputs are used, once. */
    const bool rows_held =
        ws != NULL && inputs != NULL && ws->rows_for == inputs && ws->rows_for_n == n_inputs;
    if (ws != NULL) {
        ws->rows_for = NULL;
    }
    /* With a workspace nothing is allocated: the input pointers go straight into it. */
    ps_status st = PS_STATUS_OK;
    model_workspace *tmp = NULL;
    const float **in_ptrs = NULL;
    const int64_t **in_ids = NULL;
    if (ws == NULL) {
        in_ptrs = calloc(m->n_inputs, sizeof(*in_ptrs));
        in_ids = calloc(m->n_inputs, sizeof(*in_ids));
        if (in_ptrs == NULL || in_ids == NULL) {
            st = PS_STATUS_NO_MEMORY;
            goto out_scratch;
        }
    }
    size_t batch = 0;
    st = check_inputs(m, inputs, n_inputs, &batch, ws != NULL ? ws->ptrs : in_ptrs,
                      ws != NULL ? ws->ids : in_ids, err, err_len);
    if (st == PS_STATUS_OK) {
        st = check_outputs(m, outputs, n_outputs, batch, ws != NULL, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        goto out_scratch;
    }
    if (ws == NULL) {
        st = model_workspace_new(m, batch, &tmp);
        if (st != PS_STATUS_OK) {
            goto out_scratch;
        }
        ws = tmp;
        memcpy(ws->ptrs, in_ptrs, m->n_inputs * sizeof(*in_ptrs));
        memcpy(ws->ids, in_ids, m->n_inputs * sizeof(*in_ids));
    }
    st = model_device_inputs(m, ws, batch, err, err_len);
    if (st == PS_STATUS_OK) {
        st = model_seq_prepare(m, ws, batch, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        goto out_pass;
    }
    if (!rows_held) {
        st = model_bag_fetch(m, ws, batch, err, err_len);
        if (st != PS_STATUS_OK) {
            goto out_pass;
        }
    }
    st = model_graph_run(m, ws, batch, err, err_len);
    if (st != PS_STATUS_OK) {
        goto out_pass;
    }
    st = model_device_finish(m, ws, err, err_len);
    for (size_t k = 0; st == PS_STATUS_OK && k < n_outputs; k++) {
        model_output *out = &outputs[k];
        const size_t v = output_value(m, out->name);
        const model_value *val = &m->values[v];
        out->data = model_device_output(m, ws, v, batch, out->buffer);
        if (out->data == NULL) {
            ps_set_err(err, err_len, "output \"%s\": cannot download it from %s: %s", out->name,
                       kernels_backend_name(m->backend), kernels_stream_last_error(ws->stream));
            st = PS_STATUS_INTERNAL;
            break;
        }
        out->ndims = val->desc.ndims;
        memcpy(out->dims, val->desc.dims, sizeof(out->dims));
        if (m->max_batch > 0) {
            out->dims[0] = (int64_t)batch;
        }
    }

out_pass:
    if (st != PS_STATUS_OK && m->device) {
        (void)kernels_stream_sync(ws->stream); /* nothing queued outlives the pass */
    }
out_scratch:
    model_workspace_destroy(tmp);
    free(in_ptrs);
    free(in_ids);
    return st;
}
