/* model_config_layers.c: one entry of config.json's "layers" (see model_config.h for
 * the ops): its common fields, its inputs (earlier values only), its parameters (found
 * or added, with their dims tied to the values they meet), and the dims rules of the
 * classic ops; embedding_bag and concat are in model_config_ops.c, the image ops and
 * reshapes in model_config_image.c, layernorm in model_config_norm.c, the sequence ops
 * in model_config_seq.c. */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Looks up a layer input by name. */
static ps_status resolve_input(model_config *cfg, const layer_ctx *lc, const char *name,
                               size_t *ret_value, char *err, size_t err_len) {
    if (cfg_names_find(cfg, &cfg->value_names, name, ret_value)) {
        return PS_STATUS_OK;
    }
    size_t i;
    if (cfg_names_find(cfg, &cfg->param_names, name, &i)) {
        ps_set_err(err, err_len,
                   "%s: input \"%s\" is a parameter tensor (the %s of layers[%zu]), not a "
                   "model input or a layer output",
                   lc->where, name, cfg->params[i].role, cfg->params[i].first_layer);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t j = lc->index; j < json_array_size(lc->all); j++) {
        json_t *out = json_object_get(json_array_get(lc->all, j), "output");
        if (json_is_string(out) && strcmp(json_string_value(out), name) == 0) {
            ps_set_err(err, err_len,
                       "%s: input \"%s\" is produced by layers[%zu], which %s; list layers in "
                       "execution order",
                       lc->where, name, j, j == lc->index ? "is this layer" : "comes later");
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    ps_set_err(err, err_len,
               "%s: input \"%s\" is not a model input and no earlier layer produces it", lc->where,
               name);
    return PS_STATUS_INVALID_ARGUMENT;
}

/* Finds or adds a parameter of the given rank; *ret_index gets its index. */
static ps_status use_param(model_config *cfg, const layer_ctx *lc, const char *name,
                           const char *role, uint32_t ndims, size_t *ret_index, char *err,
                           size_t err_len) {
    char what[MODEL_CONFIG_NAME_MAX + 64];
    size_t i;
    if (cfg_names_find(cfg, &cfg->param_names, name, &i)) {
        const cfg_param *p = &cfg->params[i];
        if (p->ndims != ndims) {
            ps_set_err(err, err_len,
                       "%s: parameter \"%s\" is used as a %u-dim %s here but as a %u-dim %s "
                       "by layers[%zu]",
                       lc->where, name, ndims, role, p->ndims, p->role, p->first_layer);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        *ret_index = i;
        return PS_STATUS_OK;
    }
    if (cfg_name_taken(cfg, name, what, sizeof(what))) {
        ps_set_err(err, err_len, "%s: %s \"%s\" names %s, not a parameter tensor", lc->where, role,
                   name, what);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (cfg->n_params == cfg->cap_params) {
        const size_t cap = cfg->cap_params > 0 ? cfg->cap_params * 2 : 16;
        cfg_param *params = realloc(cfg->params, cap * sizeof(*params));
        if (params == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
        cfg->params = params;
        cfg->cap_params = cap;
    }
    cfg_param *p = &cfg->params[cfg->n_params];
    memset(p, 0, sizeof(*p));
    p->ndims = ndims;
    p->first_layer = lc->index;
    p->role = role;
    for (uint32_t d = 0; d < ndims; d++) {
        p->vars[d] = cfg_var_new(cfg, DIM_UNKNOWN);
        if (p->vars[d] == SIZE_MAX) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    p->name = cfg_dup_str(name);
    if (p->name == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    *ret_index = cfg->n_params++;
    return cfg_names_add(cfg, &cfg->param_names, *ret_index);
}

ps_status cfg_param_field(model_config *cfg, const layer_ctx *lc, json_t *obj, const char *key,
                          bool required, uint32_t ndims, size_t *ret_index, char *err,
                          size_t err_len) {
    const char *name;
    *ret_index = MODEL_CONFIG_NONE;
    ps_status st = cfg_get_name(obj, key, required, lc->where, &name, err, err_len);
    if (st != PS_STATUS_OK || name == NULL) {
        return st;
    }
    return use_param(cfg, lc, name, key, ndims, ret_index, err, err_len);
}

ps_status cfg_tie_param_dim(model_config *cfg, const layer_ctx *lc, size_t param, uint32_t pdim,
                            size_t vvar, const char *value_name, const char *meaning, char *err,
                            size_t err_len) {
    int64_t a;
    int64_t b;
    if (!cfg_var_unify(cfg->vars, cfg->params[param].vars[pdim], vvar, &a, &b)) {
        ps_set_err(err, err_len, "%s: %s \"%s\" dim %u is %lld, but %s \"%s\" is %lld", lc->where,
                   cfg->params[param].role, cfg->params[param].name, pdim, (long long)a, meaning,
                   value_name, (long long)b);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* "op", "name" and "output"; lc->where then names the op and the layer. */
static ps_status parse_head(layer_ctx *lc, json_t *obj, model_config_layer *info,
                            const char **ret_name, const char **ret_output, char *err,
                            size_t err_len) {
    const char *op;
    ps_status st = cfg_get_name(obj, "op", true, lc->where, &op, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    size_t op_index = cfg_op_count;
    for (size_t i = 0; i < cfg_op_count; i++) {
        if (strcmp(op, cfg_op_names[i]) == 0) {
            op_index = i;
        }
    }
    if (op_index == cfg_op_count) {
        ps_set_err(err, err_len,
                   "%s: unknown op \"%s\" (supported: dense, relu, softmax, add, scale, "
                   "embedding_bag, concat, conv2d, maxpool2d, avgpool2d, flatten, reshape, "
                   "gelu, tanh, sigmoid, layernorm, embedding, position_embedding, attention, "
                   "mean_pool, l2_normalize)",
                   lc->where, op);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->op = (model_config_op)op_index;
    st = cfg_get_name(obj, "name", false, lc->where, ret_name, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_get_name(obj, "output", true, lc->where, ret_output, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    snprintf(lc->where, sizeof(lc->where), "layers[%zu] (%s \"%s\")", lc->index, op,
             *ret_name != NULL ? *ret_name : *ret_output);
    return cfg_check_keys(obj, cfg_op_keys(info->op), lc->where, err, err_len);
}

/* The layer's inputs: "inputs" (a list, cfg_list_inputs) or "input". Only embedding_bag
 * and embedding layers may read an INT64 (ids) input this way (masks are "mask"). */
static ps_status parse_inputs(model_config *cfg, const layer_ctx *lc, json_t *obj,
                              model_config_layer *info, char *err, size_t err_len) {
    const uint32_t n_list = cfg_list_inputs(info->op);
    const char *count = n_list == 3 ? "three" : "two";
    json_t *list = json_object_get(obj, "inputs");
    if (n_list > 0 && list == NULL) {
        ps_set_err(err, err_len, "%s: missing field \"inputs\" (a list of %s value names)",
                   lc->where, count);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    bool names_ok = n_list == 0 || (json_is_array(list) && json_array_size(list) == n_list);
    for (uint32_t k = 0; names_ok && k < n_list; k++) {
        names_ok = json_is_string(json_array_get(list, k));
    }
    if (!names_ok) {
        ps_set_err(err, err_len, "%s: \"inputs\" must be a list of %s value names", lc->where,
                   count);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->input_count = n_list > 0 ? n_list : 1;
    for (uint32_t k = 0; k < info->input_count; k++) {
        const char *in = NULL;
        ps_status st = PS_STATUS_OK;
        if (n_list > 0) {
            in = json_string_value(json_array_get(list, k));
        } else {
            st = cfg_get_name(obj, "input", true, lc->where, &in, err, err_len);
        }
        if (st == PS_STATUS_OK) {
            st = resolve_input(cfg, lc, in, &info->inputs[k], err, err_len);
        }
        if (st != PS_STATUS_OK) {
            return st;
        }
        if (cfg->values[info->inputs[k]].ids && info->op != MODEL_CONFIG_OP_EMBEDDING_BAG &&
            info->op != MODEL_CONFIG_OP_EMBEDDING) {
            ps_set_err(err, err_len,
                       "%s: input \"%s\" is an INT64 model input (ids); only embedding_bag and "
                       "embedding layers may read it (attention and mean_pool take a mask as "
                       "\"mask\")",
                       lc->where, in);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* dense: activation, weight [out, in] with in = the input's last dim, bias [out];
 * output [..., out]. */
static ps_status parse_dense(model_config *cfg, const layer_ctx *lc, json_t *obj,
                             model_config_layer *info, cfg_value *out, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    ps_status st = cfg_parse_activation(lc, obj, info, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cfg_param_field(cfg, lc, obj, "weight", true, 2, &info->weight, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_param_field(cfg, lc, obj, "bias", false, 1, &info->bias, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = cfg_tie_param_dim(cfg, lc, info->weight, 1, x->vars[x->ndims - 1], x->name,
                               "the feature count of input", err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    const size_t out_var = cfg->params[info->weight].vars[0];
    if (info->bias != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->bias, 0, out_var, cfg->params[info->weight].name,
                               "the row count of weight", err, err_len);
    }
    out->vars[out->ndims - 1] = out_var;
    return st;
}

/* softmax: only over the last axis. */
static ps_status parse_softmax(model_config *cfg, const layer_ctx *lc, json_t *obj,
                               const model_config_layer *info, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    json_t *axis = json_object_get(obj, "axis");
    if (axis != NULL) {
        const json_int_t a = json_is_integer(axis) ? json_integer_value(axis) : -2;
        if (a != -1 && a != (json_int_t)x->ndims - 1) {
            ps_set_err(err, err_len,
                       "%s: softmax axis must be the last one (-1 or %u); other axes are not "
                       "supported",
                       lc->where, x->ndims - 1);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* add: both inputs of one shape. */
static ps_status parse_add(model_config *cfg, const layer_ctx *lc, const model_config_layer *info,
                           char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const cfg_value *y = &cfg->values[info->inputs[1]];
    if (y->ndims != x->ndims) {
        ps_set_err(err, err_len, "%s: inputs \"%s\" (%u dims) and \"%s\" (%u dims) differ in rank",
                   lc->where, x->name, x->ndims, y->name, y->ndims);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (uint32_t d = 0; d < x->ndims; d++) {
        int64_t a;
        int64_t b;
        if (!cfg_var_unify(cfg->vars, x->vars[d], y->vars[d], &a, &b)) {
            ps_set_err(err, err_len,
                       "%s: inputs must have the same shape, but dim %u of \"%s\" is %lld and "
                       "of \"%s\" is %lld",
                       lc->where, d, x->name, (long long)a, y->name, (long long)b);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* scale: scale [features] and/or shift [features]. */
static ps_status parse_scale(model_config *cfg, const layer_ctx *lc, json_t *obj,
                             model_config_layer *info, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const size_t last = x->vars[x->ndims - 1];
    ps_status st = cfg_param_field(cfg, lc, obj, "scale", false, 1, &info->scale, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_param_field(cfg, lc, obj, "shift", false, 1, &info->shift, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (info->scale == MODEL_CONFIG_NONE && info->shift == MODEL_CONFIG_NONE) {
        ps_set_err(err, err_len, "%s: needs \"scale\", \"shift\" or both", lc->where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (info->scale != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->scale, 0, last, x->name, "the feature count of input",
                               err, err_len);
    }
    if (st == PS_STATUS_OK && info->shift != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->shift, 0, last, x->name, "the feature count of input",
                               err, err_len);
    }
    return st;
}

/* The op's own fields, parameters and dims rules; *out starts as a copy of the first
 * input's dims. */
static ps_status parse_op(model_config *cfg, const layer_ctx *lc, json_t *obj,
                          model_config_layer *info, cfg_value *out, char *err, size_t err_len) {
    switch (info->op) {
    case MODEL_CONFIG_OP_DENSE:
        return parse_dense(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_RELU:
    case MODEL_CONFIG_OP_GELU:
    case MODEL_CONFIG_OP_TANH:
    case MODEL_CONFIG_OP_SIGMOID:
        return PS_STATUS_OK;
    case MODEL_CONFIG_OP_CONV2D:
    case MODEL_CONFIG_OP_MAXPOOL2D:
    case MODEL_CONFIG_OP_AVGPOOL2D:
        return cfg_parse_window(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_FLATTEN:
    case MODEL_CONFIG_OP_RESHAPE:
        return cfg_parse_reshape(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_LAYERNORM:
        return cfg_parse_layernorm(cfg, lc, obj, info, err, err_len);
    case MODEL_CONFIG_OP_SOFTMAX:
        return parse_softmax(cfg, lc, obj, info, err, err_len);
    case MODEL_CONFIG_OP_ADD:
        return parse_add(cfg, lc, info, err, err_len);
    case MODEL_CONFIG_OP_SCALE:
        return parse_scale(cfg, lc, obj, info, err, err_len);
    case MODEL_CONFIG_OP_EMBEDDING_BAG:
        return cfg_parse_bag(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_CONCAT:
        return cfg_parse_concat(cfg, lc, info, out, err, err_len);
    case MODEL_CONFIG_OP_EMBEDDING:
    case MODEL_CONFIG_OP_POSITION_EMBEDDING:
    case MODEL_CONFIG_OP_ATTENTION:
    case MODEL_CONFIG_OP_MEAN_POOL:
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        return cfg_parse_seq(cfg, lc, obj, info, out, err, err_len);
    }
    return PS_STATUS_INTERNAL;
}

ps_status cfg_parse_layer(model_config *cfg, layer_ctx *lc, json_t *obj, char *err,
                          size_t err_len) {
    cfg_layer *layer = &cfg->layers[lc->index];
    model_config_layer *info = &layer->info;
    snprintf(lc->where, sizeof(lc->where), "layers[%zu]", lc->index);
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: must be an object with op, input(s) and output", lc->where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *layer_name = NULL;
    const char *output = NULL;
    ps_status st = parse_head(lc, obj, info, &layer_name, &output, err, err_len);
    if (st == PS_STATUS_OK) {
        st = parse_inputs(cfg, lc, obj, info, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }

    /* Output name: unique across the model. */
    char what[MODEL_CONFIG_NAME_MAX + 64];
    if (cfg_name_taken(cfg, output, what, sizeof(what))) {
        ps_set_err(err, err_len, "%s: output \"%s\" is already %s; every name must be unique",
                   lc->where, output, what);
        return PS_STATUS_INVALID_ARGUMENT;
    }

    /* Op-specific fields, parameters and the output's dims. */
    const cfg_value *x = &cfg->values[info->inputs[0]];
    cfg_value out = {.ndims = x->ndims, .producer = lc->index};
    memcpy(out.vars, x->vars, sizeof(out.vars));
    info->weight = info->bias = info->scale = info->shift = info->table = MODEL_CONFIG_NONE;
    info->activation = MODEL_CONFIG_ACTIVATION_NONE;
    info->pool = MODEL_CONFIG_POOL_SUM;
    memset(&info->window, 0, sizeof(info->window));
    info->eps = 0.0f;
    info->mask = MODEL_CONFIG_NONE;
    info->heads = 0;
    st = parse_op(cfg, lc, obj, info, &out, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }

    const size_t own[] = {info->weight, info->bias, info->scale, info->shift};
    for (size_t k = 0; k < sizeof(own) / sizeof(own[0]); k++) {
        if (own[k] != MODEL_CONFIG_NONE && strcmp(cfg->params[own[k]].name, output) == 0) {
            ps_set_err(err, err_len, "%s: output \"%s\" is also the name of its %s parameter",
                       lc->where, output, cfg->params[own[k]].role);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    cfg->n_layers = lc->index + 1; /* from here on, destroy frees this layer's strings */
    if (layer_name != NULL) {
        layer->name = cfg_dup_str(layer_name);
        if (layer->name == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    layer->output = cfg_dup_str(output);
    if (layer->output == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    info->name = layer->name != NULL ? layer->name : layer->output;
    info->output = cfg->n_values;
    out.name = layer->output;
    cfg->values[cfg->n_values++] = out;
    return cfg_names_add(cfg, &cfg->value_names, cfg->n_values - 1);
}
