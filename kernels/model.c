/* model.c: model instances: the plan made at create, parameters, workspaces (see
 * model.h for the contract; model_internal.h lists the module's other files).
 *
 * Why it is built this way: everything that can be decided once is decided at create
 * time. model_config_resolve fixes every tensor's shape, so the instance keeps a flat
 * plan: per value its rows per sample and features (ops act on the last axis, the
 * leading dims are rows), per layer the value and parameter indices, and per value
 * its offset in a workspace laid out for the largest batch. A forward pass is then
 * input checks, one backend call per layer and the output copies: no allocation when
 * a workspace is given, and no shared mutable state, so concurrent calls only need
 * their own workspaces. Activations are not reused across layers (every value has its
 * own slot): the models this serves are small, and the slot layout stays trivial to
 * check; liveness-based reuse can come later without changing the API. On a device
 * backend the same plan is laid out in device memory (model_device.c), and small
 * batches replay recorded graphs (model_graph.c).
 */
#include "model_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Helpers */

const char *model_dims_str(const int64_t *dims, uint32_t ndims, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < ndims && d < MODEL_MAX_DIMS && used < len; d++) {
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d > 0 ? ", " : "",
                                 (long long)dims[d]);
    }
    if (used < len) {
        snprintf(buf + used, len - used, "]");
    }
    return buf;
}

/* ------------------------------------------------------------------------------------ */
/* Create / destroy */

void model_destroy(model *m) {
    if (m == NULL) {
        return;
    }
    model_device_params_destroy(m); /* before the backend goes */
    for (size_t i = 0; m->params != NULL && i < m->n_params; i++) {
        free(m->params[i].data);
    }
    free(m->params);
    free(m->values);
    free(m->layers);
    free(m->output_names);
    free(m->output_values);
    free(m->bags);
    if (m->own_backend) {
        kernels_backend_destroy(m->backend);
    }
    model_config_destroy(m->cfg);
    free(m);
}

/* Fills m->values from resolved shapes and lays out the workspace. */
static ps_status plan_values(model *m, const model_tensor_desc *shapes, char *err, size_t err_len) {
    const size_t batch_cap = m->max_batch > 0 ? m->max_batch : 1;
    const uint32_t first = m->max_batch > 0 ? 1 : 0; /* first non-batch dim */
    size_t offset = 0;
    for (size_t v = 0; v < m->n_values; v++) {
        model_value *val = &m->values[v];
        val->desc = shapes[v];
        val->ids = val->desc.datatype != NULL && strcmp(val->desc.datatype, "INT64") == 0;
        val->rows = 1;
        for (uint32_t d = first; d + 1 < val->desc.ndims; d++) {
            val->rows *= (size_t)val->desc.dims[d];
        }
        val->cols = (size_t)val->desc.dims[val->desc.ndims - 1];
        val->per_sample = val->rows * val->cols; /* <= 2^31-1: checked by resolve */
        size_t total;
        if (__builtin_mul_overflow(val->per_sample, batch_cap, &total) || total > KERNELS_MAX_DIM) {
            ps_set_err(err, err_len,
                       "\"%s\" has %zu elements per sample: a batch of %zu (max_batch_size) would "
                       "exceed %u elements",
                       val->desc.name, val->per_sample, batch_cap, KERNELS_MAX_DIM);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
        if (v < m->n_inputs && (!m->device || val->ids)) {
            continue; /* inputs are read where the caller has them (a device: uploaded) */
        }
        val->slot = offset;
        const size_t padded =
            (val->per_sample + SLOT_ALIGN_FLOATS - 1) / SLOT_ALIGN_FLOATS * SLOT_ALIGN_FLOATS;
        if (__builtin_add_overflow(offset, padded, &offset)) {
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
    }
    m->ws_per_batch = offset;
    size_t bytes;
    if (__builtin_mul_overflow(offset, batch_cap * sizeof(float), &bytes)) {
        ps_set_err(err, err_len, "the workspace for max_batch_size %zu would overflow", batch_cap);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    return PS_STATUS_OK;
}

ps_status model_create(const model_config *cfg, const model_tensor_desc *params, size_t n_params,
                       kernels_backend *backend, model **ret_model, char *err, size_t err_len) {
    if (cfg == NULL || ret_model == NULL || (params == NULL && n_params > 0)) {
        ps_set_err(err, err_len, "model: no config, no parameter list or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_NO_MEMORY;
    model_tensor_desc *shapes = NULL;
    model *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    st = model_config_clone(cfg, &m->cfg);
    if (st != PS_STATUS_OK) {
        goto fail_model;
    }
    st = PS_STATUS_NO_MEMORY;
    m->max_batch = model_config_max_batch_size(m->cfg);
    m->n_inputs = model_config_input_count(m->cfg);
    m->n_params = model_config_param_count(m->cfg);
    m->n_values = model_config_value_count(m->cfg);
    m->n_layers = model_config_layer_count(m->cfg);
    m->params = calloc(m->n_params > 0 ? m->n_params : 1, sizeof(*m->params));
    m->values = calloc(m->n_values, sizeof(*m->values));
    m->layers = calloc(m->n_layers, sizeof(*m->layers));
    shapes = calloc(m->n_values, sizeof(*shapes));
    model_tensor_desc *pshapes = calloc(m->n_params > 0 ? m->n_params : 1, sizeof(*pshapes));
    if (m->params == NULL || m->values == NULL || m->layers == NULL || shapes == NULL ||
        pshapes == NULL) {
        free(pshapes);
        goto fail_model;
    }
    st = model_config_resolve(m->cfg, params, n_params, pshapes, shapes, err, err_len);
    for (size_t i = 0; st == PS_STATUS_OK && i < m->n_params; i++) {
        model_param_slot *p = &m->params[i];
        p->desc = pshapes[i];
        p->count = 1;
        for (uint32_t d = 0; d < p->desc.ndims; d++) {
            if (__builtin_mul_overflow(p->count, (size_t)p->desc.dims[d], &p->count)) {
                ps_set_err(err, err_len, "parameter \"%s\" is too large", p->desc.name);
                st = PS_STATUS_RESOURCE_EXHAUSTED;
            }
        }
        if (st == PS_STATUS_OK) {
            p->data = calloc(p->count, sizeof(float));
            if (p->data == NULL) {
                ps_set_err(err, err_len, "parameter \"%s\": cannot allocate %zu floats",
                           p->desc.name, p->count);
                st = PS_STATUS_NO_MEMORY;
            }
        }
    }
    free(pshapes);
    if (st != PS_STATUS_OK) {
        goto fail_model;
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        model_config_layer_at(m->cfg, i, &m->layers[i]);
    }
    m->n_outputs = model_config_output_count(m->cfg);
    m->output_names = calloc(m->n_outputs, sizeof(*m->output_names));
    m->output_values = calloc(m->n_outputs, sizeof(*m->output_values));
    if (m->output_names == NULL || m->output_values == NULL) {
        st = PS_STATUS_NO_MEMORY;
        goto fail_model;
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        model_tensor_desc d;
        model_config_output_at(m->cfg, i, &d);
        m->output_names[i] = d.name;
        model_config_value_find(m->cfg, d.name, &m->output_values[i]);
    }
    if (backend != NULL) {
        m->backend = backend;
    } else {
        st = kernels_backend_cpu_create(&m->backend);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "model: cannot create the CPU backend");
            goto fail_model;
        }
        m->own_backend = true;
    }
    m->device = !kernels_backend_host_memory(m->backend);
    st = plan_values(m, shapes, err, err_len);
    if (st == PS_STATUS_OK) {
        st = model_seq_plan(m, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = model_bag_plan(m, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        goto fail_model;
    }
    model_device_plan(m);
    model_graph_plan(m);
    st = model_device_params_create(m, err, err_len);
    if (st != PS_STATUS_OK) {
        goto fail_model;
    }
    free(shapes);
    *ret_model = m;
    return PS_STATUS_OK;

fail_model:
    free(shapes);
    model_destroy(m);
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* Accessors and parameters */

const model_config *model_get_config(const model *m) {
    return m->cfg;
}

const char *model_name(const model *m) {
    return model_config_name(m->cfg);
}

uint32_t model_max_batch_size(const model *m) {
    return m->max_batch;
}

void model_set_rows(model *m, model_rows_fn fn, void *arg) {
    m->rows_fn = fn;
    m->rows_arg = arg;
}

bool model_has_tables(const model *m) {
    return m->n_bags > 0;
}

size_t model_param_count(const model *m) {
    return m->n_params;
}

bool model_param_at(const model *m, size_t i, model_tensor_desc *ret_desc) {
    if (m == NULL || i >= m->n_params || ret_desc == NULL) {
        return false;
    }
    *ret_desc = m->params[i].desc;
    return true;
}

static model_param_slot *find_param(const model *m, const char *name) {
    size_t i;
    if (m == NULL || name == NULL || !model_config_param_find(m->cfg, name, &i)) {
        return NULL;
    }
    return &m->params[i];
}

ps_status model_param(model *m, const char *name, float **ret_data, size_t *ret_count) {
    model_param_slot *p = find_param(m, name);
    if (p == NULL) {
        return PS_STATUS_NOT_FOUND;
    }
    if (ret_data != NULL) {
        *ret_data = p->data;
    }
    if (ret_count != NULL) {
        *ret_count = p->count;
    }
    return PS_STATUS_OK;
}

ps_status model_param_write(model *m, const char *name, size_t offset, const void *src,
                            size_t count) {
    model_param_slot *p = find_param(m, name);
    if (p == NULL) {
        return PS_STATUS_NOT_FOUND;
    }
    if (offset > p->count || count > p->count - offset) {
        return PS_STATUS_OUT_OF_RANGE;
    }
    if (count > 0) {
        if (src == NULL) {
            return PS_STATUS_INVALID_ARGUMENT;
        }
        memcpy(p->data + offset, src, count * sizeof(float));
        model_device_param_mark(m, p, offset, count);
    }
    return PS_STATUS_OK;
}

ps_status model_param_mark(model *m, const char *name, size_t offset, size_t count) {
    model_param_slot *p = find_param(m, name);
    if (p == NULL) {
        return PS_STATUS_NOT_FOUND;
    }
    if (offset > p->count || count > p->count - offset) {
        return PS_STATUS_OUT_OF_RANGE;
    }
    model_device_param_mark(m, p, offset, count);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Workspaces */

ps_status model_workspace_new(const model *m, size_t batch_cap, model_workspace **ret_ws) {
    model_workspace *ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ws->m = m;
    ws->batch_cap = batch_cap;
    ws->ptrs = calloc(m->n_values, sizeof(*ws->ptrs));
    ws->ids = calloc(m->n_inputs, sizeof(*ws->ids));
    ps_status st =
        ws->ptrs == NULL || ws->ids == NULL ? PS_STATUS_NO_MEMORY : model_device_ws_alloc(m, ws);
    if (st == PS_STATUS_OK) {
        st = model_bag_ws_alloc(m, ws);
    }
    if (st != PS_STATUS_OK) {
        model_workspace_destroy(ws);
        return st;
    }
    *ret_ws = ws;
    return PS_STATUS_OK;
}

ps_status model_workspace_create(const model *m, model_workspace **ret_ws) {
    if (m == NULL || ret_ws == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return model_workspace_new(m, m->max_batch > 0 ? m->max_batch : 1, ret_ws);
}

void model_workspace_destroy(model_workspace *ws) {
    if (ws == NULL) {
        return;
    }
    model_device_ws_free(ws);
    free(ws->ptrs);
    free(ws->ids);
    model_bag_ws_free(ws);
    free(ws);
}
