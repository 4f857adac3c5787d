/* model_config_util.c: what the files of the config parser share (see
 * model_config_internal.h): op and activation names, the fields each op takes, dim
 * variables (union-find with path halving), the field readers that give every message
 * the same form, and the check that names stay unique across the model. */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Small helpers */

char *cfg_dup_str(const char *s) {
    const size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

const char *const cfg_op_names[] = {
    [MODEL_CONFIG_OP_DENSE] = "dense",
    [MODEL_CONFIG_OP_RELU] = "relu",
    [MODEL_CONFIG_OP_SOFTMAX] = "softmax",
    [MODEL_CONFIG_OP_ADD] = "add",
    [MODEL_CONFIG_OP_SCALE] = "scale",
    [MODEL_CONFIG_OP_EMBEDDING_BAG] = "embedding_bag",
    [MODEL_CONFIG_OP_CONCAT] = "concat",
    [MODEL_CONFIG_OP_CONV2D] = "conv2d",
    [MODEL_CONFIG_OP_MAXPOOL2D] = "maxpool2d",
    [MODEL_CONFIG_OP_AVGPOOL2D] = "avgpool2d",
    [MODEL_CONFIG_OP_FLATTEN] = "flatten",
    [MODEL_CONFIG_OP_RESHAPE] = "reshape",
    [MODEL_CONFIG_OP_GELU] = "gelu",
    [MODEL_CONFIG_OP_TANH] = "tanh",
    [MODEL_CONFIG_OP_SIGMOID] = "sigmoid",
    [MODEL_CONFIG_OP_LAYERNORM] = "layernorm",
    [MODEL_CONFIG_OP_EMBEDDING] = "embedding",
    [MODEL_CONFIG_OP_POSITION_EMBEDDING] = "position_embedding",
    [MODEL_CONFIG_OP_ATTENTION] = "attention",
    [MODEL_CONFIG_OP_MEAN_POOL] = "mean_pool",
    [MODEL_CONFIG_OP_L2_NORMALIZE] = "l2_normalize",
};
const size_t cfg_op_count = sizeof(cfg_op_names) / sizeof(cfg_op_names[0]);

const char *const cfg_activation_names[] = {
    [MODEL_CONFIG_ACTIVATION_NONE] = "none",       [MODEL_CONFIG_ACTIVATION_RELU] = "relu",
    [MODEL_CONFIG_ACTIVATION_SIGMOID] = "sigmoid", [MODEL_CONFIG_ACTIVATION_TANH] = "tanh",
    [MODEL_CONFIG_ACTIVATION_GELU] = "gelu",
};
const size_t cfg_activation_count = sizeof(cfg_activation_names) / sizeof(cfg_activation_names[0]);

const char *const *cfg_op_keys(model_config_op op) {
    static const char *const dense[] = {"op",     "name", "input",      "output",
                                        "weight", "bias", "activation", NULL};
    static const char *const unary[] = {"op", "name", "input", "output", NULL};
    static const char *const softmax[] = {"op", "name", "input", "output", "axis", NULL};
    static const char *const pair[] = {"op", "name", "inputs", "output", NULL};
    static const char *const scale[] = {"op", "name", "input", "output", "scale", "shift", NULL};
    static const char *const bag[] = {"op", "name", "input", "output", "table", "mode", NULL};
    static const char *const reshape[] = {"op", "name", "input", "output", "shape", NULL};
    static const char *const norm[] = {"op",     "name", "input", "output",
                                       "weight", "bias", "eps",   NULL};
    switch (op) {
    case MODEL_CONFIG_OP_DENSE:
        return dense;
    case MODEL_CONFIG_OP_SOFTMAX:
        return softmax;
    case MODEL_CONFIG_OP_ADD:
    case MODEL_CONFIG_OP_CONCAT:
        return pair;
    case MODEL_CONFIG_OP_SCALE:
        return scale;
    case MODEL_CONFIG_OP_EMBEDDING_BAG:
        return bag;
    case MODEL_CONFIG_OP_CONV2D:
    case MODEL_CONFIG_OP_MAXPOOL2D:
    case MODEL_CONFIG_OP_AVGPOOL2D:
        return cfg_window_keys(op);
    case MODEL_CONFIG_OP_RESHAPE:
        return reshape;
    case MODEL_CONFIG_OP_LAYERNORM:
        return norm;
    case MODEL_CONFIG_OP_EMBEDDING:
    case MODEL_CONFIG_OP_POSITION_EMBEDDING:
    case MODEL_CONFIG_OP_ATTENTION:
    case MODEL_CONFIG_OP_MEAN_POOL:
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        return cfg_seq_keys(op);
    case MODEL_CONFIG_OP_RELU:
    case MODEL_CONFIG_OP_FLATTEN:
    case MODEL_CONFIG_OP_GELU:
    case MODEL_CONFIG_OP_TANH:
    case MODEL_CONFIG_OP_SIGMOID:
        break;
    }
    return unary;
}

uint32_t cfg_list_inputs(model_config_op op) {
    switch (op) {
    case MODEL_CONFIG_OP_ADD:
    case MODEL_CONFIG_OP_CONCAT:
        return 2;
    case MODEL_CONFIG_OP_ATTENTION:
        return 3;
    default:
        break;
    }
    return 0;
}

const char *model_config_op_name(model_config_op op) {
    return (unsigned)op < cfg_op_count ? cfg_op_names[op] : "?";
}

const char *model_config_activation_name(model_config_activation activation) {
    return (unsigned)activation < cfg_activation_count ? cfg_activation_names[activation] : "?";
}

const char *model_config_pool_name(model_config_pool pool) {
    switch (pool) {
    case MODEL_CONFIG_POOL_SUM:
        return "sum";
    case MODEL_CONFIG_POOL_MEAN:
        return "mean";
    }
    return "?";
}

/* Writes "[-1, 64]" into buf; with `unknown_as_q`, DIM_UNKNOWN dims print as "?". */
const char *cfg_dims_str(const int64_t *dims, uint32_t ndims, bool unknown_as_q, char *buf,
                         size_t len) {
    size_t used = 0;
    used += (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < ndims && used < len; d++) {
        if (unknown_as_q && dims[d] == DIM_UNKNOWN) {
            used += (size_t)snprintf(buf + used, len - used, "%s?", d > 0 ? ", " : "");
        } else {
            used += (size_t)snprintf(buf + used, len - used, "%s%lld", d > 0 ? ", " : "",
                                     (long long)dims[d]);
        }
    }
    if (used < len) {
        snprintf(buf + used, len - used, "]");
    }
    return buf;
}

/* ------------------------------------------------------------------------------------ */
/* Dim variables */

size_t cfg_var_find(dimvar *vars, size_t v) {
    while (vars[v].parent != v) {
        vars[v].parent = vars[vars[v].parent].parent; /* path halving */
        v = vars[v].parent;
    }
    return v;
}

int64_t cfg_var_value(dimvar *vars, size_t v) {
    return vars[cfg_var_find(vars, v)].value;
}

/* For the read-only accessors: no path compression, so concurrent readers never write
 * (the parse ends by flattening every variable to point at its root). */
int64_t cfg_var_value_ro(const dimvar *vars, size_t v) {
    while (vars[v].parent != v) {
        v = vars[v].parent;
    }
    return vars[v].value;
}

/* Makes a and b the same dim. False on a contradiction (both fixed, different); then
 * *ret_a and *ret_b get the two values. */
bool cfg_var_unify(dimvar *vars, size_t a, size_t b, int64_t *ret_a, int64_t *ret_b) {
    const size_t ra = cfg_var_find(vars, a);
    const size_t rb = cfg_var_find(vars, b);
    if (ra == rb) {
        return true;
    }
    if (vars[ra].value != DIM_UNKNOWN && vars[rb].value != DIM_UNKNOWN &&
        vars[ra].value != vars[rb].value) {
        *ret_a = vars[ra].value;
        *ret_b = vars[rb].value;
        return false;
    }
    if (vars[ra].value == DIM_UNKNOWN) {
        vars[ra].parent = rb;
    } else {
        vars[rb].parent = ra;
    }
    return true;
}

/* A new variable with the given value; SIZE_MAX when out of memory. */
size_t cfg_var_new(model_config *cfg, int64_t value) {
    if (cfg->n_vars == cfg->cap_vars) {
        const size_t cap = cfg->cap_vars > 0 ? cfg->cap_vars * 2 : 64;
        dimvar *vars = realloc(cfg->vars, cap * sizeof(*vars));
        if (vars == NULL) {
            return SIZE_MAX;
        }
        cfg->vars = vars;
        cfg->cap_vars = cap;
    }
    cfg->vars[cfg->n_vars] = (dimvar){.parent = cfg->n_vars, .value = value};
    return cfg->n_vars++;
}

/* Current dims of a list of variables (DIM_UNKNOWN where not fixed). */
void cfg_vars_dims(dimvar *vars, const size_t *list, uint32_t ndims, int64_t *ret_dims) {
    for (uint32_t d = 0; d < ndims; d++) {
        ret_dims[d] = cfg_var_value(vars, list[d]);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Fields and names */

/* A required or optional string field. A present non-string, empty or too-long value
 * is an error; a missing required one too. *ret is NULL for a missing optional one. */
ps_status cfg_get_name(json_t *obj, const char *key, bool required, const char *where,
                       const char **ret, char *err, size_t err_len) {
    json_t *v = json_object_get(obj, key);
    *ret = NULL;
    if (v == NULL) {
        if (required) {
            ps_set_err(err, err_len, "%s: missing field \"%s\"", where, key);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        return PS_STATUS_OK;
    }
    if (!json_is_string(v)) {
        ps_set_err(err, err_len, "%s: \"%s\" must be a string", where, key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *s = json_string_value(v);
    if (s[0] == '\0') {
        ps_set_err(err, err_len, "%s: \"%s\" is empty", where, key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (strlen(s) > MODEL_CONFIG_NAME_MAX) {
        ps_set_err(err, err_len, "%s: \"%s\" is longer than %d bytes", where, key,
                   MODEL_CONFIG_NAME_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret = s;
    return PS_STATUS_OK;
}

/* Rejects fields not in `allowed` (a NULL-terminated list). */
ps_status cfg_check_keys(json_t *obj, const char *const *allowed, const char *where, char *err,
                         size_t err_len) {
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++) {
            known = strcmp(key, allowed[i]) == 0;
        }
        if (!known) {
            char list[256] = "";
            size_t used = 0;
            for (size_t i = 0; allowed[i] != NULL && used < sizeof(list); i++) {
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
                                         i > 0 ? ", " : "", allowed[i]);
            }
            ps_set_err(err, err_len, "%s: unknown field \"%s\" (expected: %s)", where, key, list);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* Is `name` already used by an input, a layer output or a parameter? Writes what uses
 * it into `what`. */
bool cfg_name_taken(const model_config *cfg, const char *name, char *what, size_t what_len) {
    size_t i;
    if (cfg_names_find(cfg, &cfg->value_names, name, &i)) {
        if (cfg->values[i].producer == MODEL_CONFIG_NONE) {
            snprintf(what, what_len, "a model input");
        } else {
            snprintf(what, what_len, "the output of layers[%zu]", cfg->values[i].producer);
        }
        return true;
    }
    if (cfg_names_find(cfg, &cfg->param_names, name, &i)) {
        snprintf(what, what_len, "the %s parameter of layers[%zu]", cfg->params[i].role,
                 cfg->params[i].first_layer);
        return true;
    }
    return false;
}

ps_status cfg_parse_activation(const layer_ctx *lc, json_t *obj, model_config_layer *info,
                               char *err, size_t err_len) {
    const char *act;
    ps_status st = cfg_get_name(obj, "activation", false, lc->where, &act, err, err_len);
    if (st != PS_STATUS_OK || act == NULL) {
        return st;
    }
    for (size_t i = 0; i < cfg_activation_count; i++) {
        if (strcmp(act, cfg_activation_names[i]) == 0) {
            info->activation = (model_config_activation)i;
            return PS_STATUS_OK;
        }
    }
    ps_set_err(err, err_len,
               "%s: unknown activation \"%s\" (supported: none, relu, sigmoid, tanh, gelu)",
               lc->where, act);
    return PS_STATUS_INVALID_ARGUMENT;
}
