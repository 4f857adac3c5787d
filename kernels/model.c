/* model.c: model instances and the forward pass (see model.h for the contract).
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
 * check; liveness-based reuse can come later without changing the API.
 */
#include "model.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parameter bytes are little-endian; this code assumes a little-endian host"
#endif

/* ------------------------------------------------------------------------------------ */
/* Private types */

#define SLOT_ALIGN_FLOATS 16 /* workspace slots start on 64-byte boundaries */

typedef struct model_param_slot {
    model_tensor_desc desc; /* actual shape; name points into the instance's config */
    size_t count;           /* floats */
    float *data;            /* owned, zeroed at create */
} model_param_slot;

typedef struct model_value {
    model_tensor_desc desc; /* shape; dims[0] == -1 for the batch dim when batched */
    size_t rows;            /* rows per sample: product of the dims between batch and last */
    size_t cols;            /* the last dim */
    size_t per_sample;      /* rows * cols */
    size_t slot;            /* workspace offset per batch_cap, floats (layer outputs) */
} model_value;

struct model {
    model_config *cfg;        /* owned copy */
    kernels_backend *backend; /* borrowed, or owned when own_backend */
    bool own_backend;
    uint32_t max_batch; /* 0: no batch dim */
    size_t n_inputs;    /* values 0..n_inputs-1 are the model inputs */
    size_t n_params;
    model_param_slot *params; /* [n_params], config order */
    size_t n_values;
    model_value *values; /* [n_values] */
    size_t n_layers;
    model_config_layer *layers; /* [n_layers] */
    size_t n_outputs;
    const char **output_names; /* [n_outputs] declared outputs (strings in cfg) */
    size_t *output_values;     /* [n_outputs] their value indices */
    size_t ws_per_batch;       /* workspace floats per unit of batch capacity */
};

struct model_workspace {
    const model *m;
    size_t batch_cap;   /* batch size the slots are laid out for */
    float *arena;       /* batch_cap * m->ws_per_batch floats */
    const float **ptrs; /* [m->n_values] scratch: where each value is this call */
};

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static const char *dims_str(const int64_t *dims, uint32_t ndims, char *buf, size_t len) {
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

static kernels_activation to_backend_activation(model_config_activation a) {
    switch (a) {
    case MODEL_CONFIG_ACTIVATION_RELU:
        return KERNELS_ACTIVATION_RELU;
    case MODEL_CONFIG_ACTIVATION_SIGMOID:
        return KERNELS_ACTIVATION_SIGMOID;
    case MODEL_CONFIG_ACTIVATION_TANH:
        return KERNELS_ACTIVATION_TANH;
    case MODEL_CONFIG_ACTIVATION_NONE:
        break;
    }
    return KERNELS_ACTIVATION_NONE;
}

/* ------------------------------------------------------------------------------------ */
/* Create / destroy */

void model_destroy(model *m) {
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; m->params != NULL && i < m->n_params; i++) {
        free(m->params[i].data);
    }
    free(m->params);
    free(m->values);
    free(m->layers);
    free(m->output_names);
    free(m->output_values);
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
        if (v < m->n_inputs) {
            continue; /* inputs are read where the caller has them */
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
    st = plan_values(m, shapes, err, err_len);
    if (st != PS_STATUS_OK) {
        goto fail_model;
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
    free(shapes);
    *ret_model = m;
    return PS_STATUS_OK;

fail_model:
    free(shapes);
    model_destroy(m);
    return st;
}

/* The shapes of cfg's parameters as st holds them; NOT_FOUND names a missing one. */
static ps_status shapes_from_safetensors(const model_config *cfg, const safetensors *st,
                                         model_tensor_desc **ret_shapes, char *err,
                                         size_t err_len) {
    const size_t n = model_config_param_count(cfg);
    model_tensor_desc *shapes = calloc(n > 0 ? n : 1, sizeof(*shapes));
    if (shapes == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        model_tensor_desc want;
        safetensors_tensor t;
        model_config_param_at(cfg, i, &want);
        if (!safetensors_find(st, want.name, &t)) {
            ps_set_err(err, err_len,
                       "the weights have no tensor \"%s\" (the model's graph uses it)", want.name);
            free(shapes);
            return PS_STATUS_NOT_FOUND;
        }
        shapes[i].name = want.name;
        shapes[i].datatype =
            t.dtype == SAFETENSORS_DTYPE_F32 ? "FP32" : safetensors_dtype_name(t.dtype);
        shapes[i].ndims = t.ndims;
        for (uint32_t d = 0; d < t.ndims; d++) {
            /* dims past INT64_MAX become 0, which resolve rejects as not positive */
            shapes[i].dims[d] = t.dims[d] <= INT64_MAX ? (int64_t)t.dims[d] : 0;
        }
    }
    *ret_shapes = shapes;
    return PS_STATUS_OK;
}

ps_status model_create_from_safetensors(const model_config *cfg, const safetensors *st,
                                        kernels_backend *backend, model **ret_model, char *err,
                                        size_t err_len) {
    if (cfg == NULL || st == NULL || ret_model == NULL) {
        ps_set_err(err, err_len, "model: no config, no weights or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    model_tensor_desc *shapes = NULL;
    model *m = NULL;
    ps_status status = shapes_from_safetensors(cfg, st, &shapes, err, err_len);
    if (status != PS_STATUS_OK) {
        return status;
    }
    status = model_create(cfg, shapes, model_config_param_count(cfg), backend, &m, err, err_len);
    free(shapes);
    if (status != PS_STATUS_OK) {
        return status;
    }
    status = model_load_safetensors(m, st, err, err_len);
    if (status != PS_STATUS_OK) {
        model_destroy(m);
        return status;
    }
    *ret_model = m;
    return PS_STATUS_OK;
}

/* The highest all-digits subdirectory name of dir; 0 when none. */
static uint32_t highest_version(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    uint32_t best = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9') {
            n++;
        }
        if (n == 0 || s[n] != '\0' || n > 9) {
            continue;
        }
        const unsigned long v = strtoul(s, NULL, 10);
        if (v > best) {
            best = (uint32_t)v;
        }
    }
    closedir(d);
    return best;
}

ps_status model_open_dir(const char *dir, uint32_t version, kernels_backend *backend,
                         model **ret_model, char *err, size_t err_len) {
    if (dir == NULL || ret_model == NULL) {
        ps_set_err(err, err_len, "model: no directory or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    char path[PATH_MAX];
    if (version == 0) {
        version = highest_version(dir);
        if (version == 0) {
            ps_set_err(err, err_len,
                       "%s: no version directory (1/, 2/, ...) with model.safetensors", dir);
            return PS_STATUS_NOT_FOUND;
        }
    }
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path)) {
        ps_set_err(err, err_len, "%s: path too long", dir);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    model_config *cfg = NULL;
    safetensors *st = NULL;
    ps_status status = model_config_load(path, &cfg, err, err_len);
    if (status != PS_STATUS_OK) {
        return status;
    }
    if (snprintf(path, sizeof(path), "%s/%u/model.safetensors", dir, version) >=
        (int)sizeof(path)) {
        ps_set_err(err, err_len, "%s: path too long", dir);
        status = PS_STATUS_INVALID_ARGUMENT;
        goto out_cfg;
    }
    status = safetensors_open_file(path, &st, err, err_len);
    if (status != PS_STATUS_OK) {
        goto out_cfg;
    }
    char msg[512] = "";
    status = model_create_from_safetensors(cfg, st, backend, ret_model, msg, sizeof(msg));
    if (status != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %s", path, msg);
    }
    safetensors_destroy(st);

out_cfg:
    model_config_destroy(cfg);
    return status;
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
    }
    return PS_STATUS_OK;
}

ps_status model_load_safetensors(model *m, const safetensors *st, char *err, size_t err_len) {
    if (m == NULL || st == NULL) {
        ps_set_err(err, err_len, "model: no model or no weights");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        model_param_slot *p = &m->params[i];
        safetensors_tensor t;
        if (!safetensors_find(st, p->desc.name, &t)) {
            ps_set_err(err, err_len, "the weights have no tensor \"%s\"", p->desc.name);
            return PS_STATUS_NOT_FOUND;
        }
        if (t.dtype != SAFETENSORS_DTYPE_F32) {
            ps_set_err(err, err_len, "tensor \"%s\" is %s; only F32 weights are supported",
                       p->desc.name, safetensors_dtype_name(t.dtype));
            return PS_STATUS_INVALID_ARGUMENT;
        }
        bool same = t.ndims == p->desc.ndims;
        for (uint32_t d = 0; same && d < t.ndims; d++) {
            same = t.dims[d] == (uint64_t)p->desc.dims[d];
        }
        if (!same) {
            char want[160];
            ps_set_err(err, err_len, "tensor \"%s\" has a different shape than the model's %s",
                       p->desc.name, dims_str(p->desc.dims, p->desc.ndims, want, sizeof(want)));
            return PS_STATUS_INVALID_ARGUMENT;
        }
        memcpy(p->data, t.data, p->count * sizeof(float));
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Workspaces */

static ps_status workspace_new(const model *m, size_t batch_cap, model_workspace **ret_ws) {
    model_workspace *ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ws->m = m;
    ws->batch_cap = batch_cap;
    /* aligned_alloc wants a size that is a multiple of the alignment */
    const size_t bytes = batch_cap * m->ws_per_batch * sizeof(float);
    ws->arena = aligned_alloc(64, bytes > 0 ? (bytes + 63) & ~(size_t)63 : 64);
    ws->ptrs = calloc(m->n_values, sizeof(*ws->ptrs));
    if (ws->arena == NULL || ws->ptrs == NULL) {
        model_workspace_destroy(ws);
        return PS_STATUS_NO_MEMORY;
    }
    *ret_ws = ws;
    return PS_STATUS_OK;
}

ps_status model_workspace_create(const model *m, model_workspace **ret_ws) {
    if (m == NULL || ret_ws == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return workspace_new(m, m->max_batch > 0 ? m->max_batch : 1, ret_ws);
}

void model_workspace_destroy(model_workspace *ws) {
    if (ws == NULL) {
        return;
    }
    free(ws->arena);
    free(ws->ptrs);
    free(ws);
}

/* ------------------------------------------------------------------------------------ */
/* Inference */

/* Checks the inputs; *ret_batch gets the batch size (1 without a batch dim) and
 * ptrs[0..n_inputs) the data. */
static ps_status check_inputs(const model *m, const model_input *inputs, size_t n_inputs,
                              size_t *ret_batch, const float **ptrs, char *err, size_t err_len) {
    char got_s[160];
    char want_s[160];
    for (size_t i = 0; i < m->n_inputs; i++) {
        ptrs[i] = NULL;
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
        if (ptrs[v] != NULL) {
            ps_set_err(err, err_len, "input \"%s\" is given twice", in->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (in->data == NULL) {
            ps_set_err(err, err_len, "input \"%s\" has no data", in->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        bool ok = in->ndims == val->desc.ndims;
        for (uint32_t d = (m->max_batch > 0 ? 1 : 0); ok && d < in->ndims; d++) {
            ok = in->dims[d] == val->desc.dims[d];
        }
        if (!ok) {
            ps_set_err(err, err_len, "input \"%s\": shape %s does not match the model's %s%s",
                       in->name, dims_str(in->dims, in->ndims, got_s, sizeof(got_s)),
                       dims_str(val->desc.dims, val->desc.ndims, want_s, sizeof(want_s)),
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
        ptrs[v] = in->data;
    }
    for (size_t i = 0; i < m->n_inputs; i++) {
        if (ptrs[i] == NULL) {
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

static ps_status run_layer(const model *m, const model_config_layer *layer, size_t batch,
                           const float **ptrs, float *y, char *err, size_t err_len) {
    const model_value *xv = &m->values[layer->inputs[0]];
    const model_value *yv = &m->values[layer->output];
    const float *x = ptrs[layer->inputs[0]];
    const size_t rows = batch * xv->rows;
    ps_status st = PS_STATUS_INTERNAL;
    switch (layer->op) {
    case MODEL_CONFIG_OP_DENSE:
        st = kernels_backend_dense(m->backend, x, rows, xv->cols, m->params[layer->weight].data,
                                   layer->bias != MODEL_CONFIG_NONE ? m->params[layer->bias].data
                                                                    : NULL,
                                   yv->cols, to_backend_activation(layer->activation), y);
        break;
    case MODEL_CONFIG_OP_RELU:
        st = kernels_backend_relu(m->backend, x, rows * xv->cols, y);
        break;
    case MODEL_CONFIG_OP_SOFTMAX:
        st = kernels_backend_softmax(m->backend, x, rows, xv->cols, y);
        break;
    case MODEL_CONFIG_OP_ADD:
        st = kernels_backend_add(m->backend, x, ptrs[layer->inputs[1]], rows * xv->cols, y);
        break;
    case MODEL_CONFIG_OP_SCALE:
        st = kernels_backend_scale(
            m->backend, x, rows, xv->cols,
            layer->scale != MODEL_CONFIG_NONE ? m->params[layer->scale].data : NULL,
            layer->shift != MODEL_CONFIG_NONE ? m->params[layer->shift].data : NULL, y);
        break;
    }
    if (st == PS_STATUS_UNIMPLEMENTED) {
        ps_set_err(err, err_len, "layer \"%s\": backend \"%s\" has no %s op", layer->name,
                   kernels_backend_name(m->backend), model_config_op_name(layer->op));
    } else if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "layer \"%s\" (%s) failed on backend \"%s\": %s", layer->name,
                   model_config_op_name(layer->op), kernels_backend_name(m->backend),
                   ps_status_str(st));
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
    /* With a workspace nothing is allocated: the input pointers go straight into it. */
    ps_status st = PS_STATUS_OK;
    model_workspace *tmp = NULL;
    const float **in_ptrs = NULL;
    if (ws == NULL) {
        in_ptrs = calloc(m->n_inputs, sizeof(*in_ptrs));
        if (in_ptrs == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    size_t batch = 0;
    st = check_inputs(m, inputs, n_inputs, &batch, ws != NULL ? ws->ptrs : in_ptrs, err, err_len);
    if (st == PS_STATUS_OK) {
        st = check_outputs(m, outputs, n_outputs, batch, ws != NULL, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        goto out_scratch;
    }
    if (ws == NULL) {
        st = workspace_new(m, batch, &tmp);
        if (st != PS_STATUS_OK) {
            goto out_scratch;
        }
        ws = tmp;
        memcpy(ws->ptrs, in_ptrs, m->n_inputs * sizeof(*in_ptrs));
    }
    for (size_t l = 0; l < m->n_layers; l++) {
        const model_config_layer *layer = &m->layers[l];
        float *y = ws->arena + ws->batch_cap * m->values[layer->output].slot;
        st = run_layer(m, layer, batch, ws->ptrs, y, err, err_len);
        if (st != PS_STATUS_OK) {
            goto out_scratch;
        }
        ws->ptrs[layer->output] = y;
    }
    for (size_t k = 0; k < n_outputs; k++) {
        model_output *out = &outputs[k];
        const size_t v = output_value(m, out->name);
        const model_value *val = &m->values[v];
        const float *src = ws->ptrs[v];
        if (out->buffer != NULL) {
            memcpy(out->buffer, src, batch * val->per_sample * sizeof(float));
            out->data = out->buffer;
        } else {
            out->data = src;
        }
        out->ndims = val->desc.ndims;
        memcpy(out->dims, val->desc.dims, sizeof(out->dims));
        if (m->max_batch > 0) {
            out->dims[0] = (int64_t)batch;
        }
    }

out_scratch:
    model_workspace_destroy(tmp);
    free(in_ptrs);
    return st;
}
