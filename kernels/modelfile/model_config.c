/* model_config.c: parsing and checking config.json (see model_config.h for the format).
 *
 * Why it is built this way: shapes are worked out by unification, not by a forward
 * pass alone. Every dim of every value and parameter is a variable (a union-find
 * node) that is either unknown, a positive constant, or the batch dim; each op states
 * which dims must be equal (a dense layer's weight columns = its input's last dim, an
 * add's two inputs dim by dim, a declared output = the value that produces it, ...).
 * So the config alone already fixes what it can in both directions (fc2.weight must
 * have 10 rows because softmax turns its output into the declared 10-class output),
 * and model_config_resolve only adds the parameters' actual dims as more constants on
 * a copy of the variables: every contradiction, at parse time or at resolve time, is
 * one failed unification, reported with the names of both sides.
 *
 * Errors are found in reading order (inputs, outputs, layers top to bottom), so the
 * message names the first place a person has to fix.
 */
#include "model_config.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Private types */

#define DIM_UNKNOWN 0                /* dimvar.value: not fixed yet */
#define DIM_BATCH (-1)               /* dimvar.value: the batch dim */
#define BATCH_VAR 0                  /* the one variable that stands for the batch dim */
#define DIM_LIMIT MODEL_MAX_ELEMENTS /* largest dim, and largest element count */

/* One dim variable: union-find parent and, at the root, the value. */
typedef struct dimvar {
    size_t parent;
    int64_t value; /* DIM_UNKNOWN, DIM_BATCH, or > 0; meaningful at roots only */
} dimvar;

/* A declared input or output. */
typedef struct cfg_io {
    char *name; /* owned */
    uint32_t ndims;
    int64_t dims[MODEL_MAX_DIMS];
} cfg_io;

/* A tensor flowing through the graph. */
typedef struct cfg_value {
    const char *name; /* an input's or a layer's output name (owned there) */
    uint32_t ndims;
    size_t vars[MODEL_MAX_DIMS];
    size_t producer; /* layer index, or MODEL_CONFIG_NONE for a model input */
} cfg_value;

/* A parameter tensor the layers reference. */
typedef struct cfg_param {
    char *name; /* owned */
    uint32_t ndims;
    size_t vars[MODEL_MAX_DIMS];
    size_t first_layer; /* the layer that referenced it first */
    const char *role;   /* its role there: "weight", "bias", "scale", "shift" */
} cfg_param;

typedef struct cfg_layer {
    model_config_layer info; /* info.name points at name or at output */
    char *name;              /* owned; the layer's "name", or NULL */
    char *output;            /* owned; the output value's name */
} cfg_layer;

struct model_config {
    char *text; /* the JSON text, NUL-terminated, owned */
    size_t text_len;
    char *name;         /* owned */
    uint32_t max_batch; /* 0: no batch dim */

    size_t n_inputs;
    cfg_io *inputs;
    size_t n_outputs;
    cfg_io *outputs;
    size_t n_layers;
    cfg_layer *layers;
    size_t n_values;   /* n_inputs + n_layers once parsed */
    cfg_value *values; /* [n_inputs + n_layers] */
    size_t n_params;
    size_t cap_params;
    cfg_param *params;
    size_t n_vars;
    size_t cap_vars;
    dimvar *vars; /* vars[BATCH_VAR] is the batch dim */
};

/* ------------------------------------------------------------------------------------ */
/* Small helpers */

static char *dup_str(const char *s) {
    const size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

static const char *const op_names[] = {
    [MODEL_CONFIG_OP_DENSE] = "dense",     [MODEL_CONFIG_OP_RELU] = "relu",
    [MODEL_CONFIG_OP_SOFTMAX] = "softmax", [MODEL_CONFIG_OP_ADD] = "add",
    [MODEL_CONFIG_OP_SCALE] = "scale",
};
#define OP_COUNT (sizeof(op_names) / sizeof(op_names[0]))

static const char *const activation_names[] = {
    [MODEL_CONFIG_ACTIVATION_NONE] = "none",
    [MODEL_CONFIG_ACTIVATION_RELU] = "relu",
    [MODEL_CONFIG_ACTIVATION_SIGMOID] = "sigmoid",
    [MODEL_CONFIG_ACTIVATION_TANH] = "tanh",
};
#define ACTIVATION_COUNT (sizeof(activation_names) / sizeof(activation_names[0]))

const char *model_config_op_name(model_config_op op) {
    return (unsigned)op < OP_COUNT ? op_names[op] : "?";
}

const char *model_config_activation_name(model_config_activation activation) {
    return (unsigned)activation < ACTIVATION_COUNT ? activation_names[activation] : "?";
}

/* Writes "[-1, 64]" into buf; with `unknown_as_q`, DIM_UNKNOWN dims print as "?". */
static const char *dims_str(const int64_t *dims, uint32_t ndims, bool unknown_as_q, char *buf,
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

static size_t var_find(dimvar *vars, size_t v) {
    while (vars[v].parent != v) {
        vars[v].parent = vars[vars[v].parent].parent; /* path halving */
        v = vars[v].parent;
    }
    return v;
}

static int64_t var_value(dimvar *vars, size_t v) {
    return vars[var_find(vars, v)].value;
}

/* For the read-only accessors: no path compression, so concurrent readers never write
 * (the parse ends by flattening every variable to point at its root). */
static int64_t var_value_ro(const dimvar *vars, size_t v) {
    while (vars[v].parent != v) {
        v = vars[v].parent;
    }
    return vars[v].value;
}

/* Makes a and b the same dim. False on a contradiction (both fixed, different); then
 * *ret_a and *ret_b get the two values. */
static bool var_unify(dimvar *vars, size_t a, size_t b, int64_t *ret_a, int64_t *ret_b) {
    const size_t ra = var_find(vars, a);
    const size_t rb = var_find(vars, b);
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
static size_t var_new(model_config *cfg, int64_t value) {
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
static void vars_dims(dimvar *vars, const size_t *list, uint32_t ndims, int64_t *ret_dims) {
    for (uint32_t d = 0; d < ndims; d++) {
        ret_dims[d] = var_value(vars, list[d]);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Destruction */

void model_config_destroy(model_config *cfg) {
    if (cfg == NULL) {
        return;
    }
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        free(cfg->inputs[i].name);
    }
    free(cfg->inputs);
    for (size_t i = 0; i < cfg->n_outputs; i++) {
        free(cfg->outputs[i].name);
    }
    free(cfg->outputs);
    for (size_t i = 0; i < cfg->n_layers; i++) {
        free(cfg->layers[i].name);
        free(cfg->layers[i].output);
    }
    free(cfg->layers);
    free(cfg->values);
    for (size_t i = 0; i < cfg->n_params; i++) {
        free(cfg->params[i].name);
    }
    free(cfg->params);
    free(cfg->vars);
    free(cfg->name);
    free(cfg->text);
    free(cfg);
}

/* ------------------------------------------------------------------------------------ */
/* Parsing: names and shapes */

/* A required or optional string field. A present non-string, empty or too-long value
 * is an error; a missing required one too. *ret is NULL for a missing optional one. */
static ps_status get_name(json_t *obj, const char *key, bool required, const char *where,
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
static ps_status check_keys(json_t *obj, const char *const *allowed, const char *where, char *err,
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
static bool name_taken(const model_config *cfg, const char *name, char *what, size_t what_len) {
    for (size_t i = 0; i < cfg->n_values; i++) {
        if (strcmp(cfg->values[i].name, name) == 0) {
            if (cfg->values[i].producer == MODEL_CONFIG_NONE) {
                snprintf(what, what_len, "a model input");
            } else {
                snprintf(what, what_len, "the output of layers[%zu]", cfg->values[i].producer);
            }
            return true;
        }
    }
    for (size_t i = 0; i < cfg->n_params; i++) {
        if (strcmp(cfg->params[i].name, name) == 0) {
            snprintf(what, what_len, "the %s parameter of layers[%zu]", cfg->params[i].role,
                     cfg->params[i].first_layer);
            return true;
        }
    }
    return false;
}

/* One entry of "inputs" or "outputs". */
static ps_status parse_io(model_config *cfg, json_t *obj, const char *where, cfg_io *io, char *err,
                          size_t err_len) {
    static const char *const keys[] = {"name", "datatype", "shape", NULL};
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: must be an object with name, datatype and shape", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = check_keys(obj, keys, where, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const char *name;
    const char *datatype;
    st = get_name(obj, "name", true, where, &name, err, err_len);
    if (st == PS_STATUS_OK) {
        st = get_name(obj, "datatype", true, where, &datatype, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (strcmp(datatype, "FP32") != 0) {
        ps_set_err(err, err_len,
                   "%s (\"%s\"): datatype \"%s\" is not supported; only \"FP32\" is, for now",
                   where, name, datatype);
        return PS_STATUS_UNIMPLEMENTED;
    }
    json_t *shape = json_object_get(obj, "shape");
    if (shape == NULL) {
        ps_set_err(err, err_len, "%s (\"%s\"): missing field \"shape\"", where, name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const bool batched = cfg->max_batch > 0;
    const size_t min_dims = batched ? 2 : 1;
    if (!json_is_array(shape) || json_array_size(shape) < min_dims ||
        json_array_size(shape) > MODEL_MAX_DIMS) {
        ps_set_err(err, err_len, "%s (\"%s\"): shape must be a list of %zu to %d dims%s", where,
                   name, min_dims, MODEL_MAX_DIMS,
                   batched ? " starting with the batch dim -1 (max_batch_size > 0)" : "");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    io->ndims = (uint32_t)json_array_size(shape);
    int64_t per_sample = 1;
    for (uint32_t d = 0; d < io->ndims; d++) {
        json_t *v = json_array_get(shape, d);
        const json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (batched && d == 0) {
            if (x != -1) {
                ps_set_err(err, err_len,
                           "%s (\"%s\"): shape[0] must be -1, the batch dim, because "
                           "max_batch_size is %u",
                           where, name, cfg->max_batch);
                return PS_STATUS_INVALID_ARGUMENT;
            }
            io->dims[d] = DIM_BATCH;
            continue;
        }
        if (x == -1) {
            ps_set_err(err, err_len,
                       "%s (\"%s\"): shape[%u] is -1; variable dims are not supported%s", where,
                       name, d,
                       batched ? " (only shape[0], the batch dim, is -1)"
                               : " (max_batch_size is 0, so there is no batch dim)");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (x < 1 || x > DIM_LIMIT) {
            ps_set_err(err, err_len, "%s (\"%s\"): shape[%u] must be a positive integer", where,
                       name, d);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        io->dims[d] = x;
        per_sample *= x;
        if (per_sample > DIM_LIMIT) {
            ps_set_err(err, err_len, "%s (\"%s\"): more than %lld elements per sample", where, name,
                       DIM_LIMIT);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    io->name = dup_str(name);
    return io->name != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

static ps_status parse_io_list(model_config *cfg, json_t *root, const char *key, size_t *ret_n,
                               cfg_io **ret_list, char *err, size_t err_len) {
    json_t *arr = json_object_get(root, key);
    if (arr == NULL) {
        ps_set_err(err, err_len, "config: missing field \"%s\"", key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        ps_set_err(err, err_len, "config: \"%s\" must be a non-empty list", key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const size_t n = json_array_size(arr);
    *ret_list = calloc(n, sizeof(**ret_list));
    if (*ret_list == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof(where), "%s[%zu]", key, i);
        ps_status st = parse_io(cfg, json_array_get(arr, i), where, &(*ret_list)[i], err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        *ret_n = i + 1;
        for (size_t j = 0; j < i; j++) {
            if (strcmp((*ret_list)[j].name, (*ret_list)[i].name) == 0) {
                ps_set_err(err, err_len, "%s: duplicate name \"%s\" (also %s[%zu])", where,
                           (*ret_list)[i].name, key, j);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Parsing: layers */

/* Context for messages about one layer: "layers[2] (dense \"fc2\")". */
typedef struct layer_ctx {
    size_t index;
    char where[MODEL_CONFIG_NAME_MAX + 64];
    json_t *all; /* the whole "layers" array, to tell "comes later" from "missing" */
} layer_ctx;

/* Looks up a layer input by name. */
static ps_status resolve_input(model_config *cfg, const layer_ctx *lc, const char *name,
                               size_t *ret_value, char *err, size_t err_len) {
    for (size_t i = 0; i < cfg->n_values; i++) {
        if (strcmp(cfg->values[i].name, name) == 0) {
            *ret_value = i;
            return PS_STATUS_OK;
        }
    }
    for (size_t i = 0; i < cfg->n_params; i++) {
        if (strcmp(cfg->params[i].name, name) == 0) {
            ps_set_err(err, err_len,
                       "%s: input \"%s\" is a parameter tensor (the %s of layers[%zu]), not a "
                       "model input or a layer output",
                       lc->where, name, cfg->params[i].role, cfg->params[i].first_layer);
            return PS_STATUS_INVALID_ARGUMENT;
        }
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
    for (size_t i = 0; i < cfg->n_params; i++) {
        cfg_param *p = &cfg->params[i];
        if (strcmp(p->name, name) == 0) {
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
    }
    if (name_taken(cfg, name, what, sizeof(what))) {
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
        p->vars[d] = var_new(cfg, DIM_UNKNOWN);
        if (p->vars[d] == SIZE_MAX) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    p->name = dup_str(name);
    if (p->name == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    *ret_index = cfg->n_params++;
    return PS_STATUS_OK;
}

/* An optional parameter field ("bias", "scale", "shift") or a required one ("weight"). */
static ps_status param_field(model_config *cfg, const layer_ctx *lc, json_t *obj, const char *key,
                             bool required, uint32_t ndims, size_t *ret_index, char *err,
                             size_t err_len) {
    const char *name;
    *ret_index = MODEL_CONFIG_NONE;
    ps_status st = get_name(obj, key, required, lc->where, &name, err, err_len);
    if (st != PS_STATUS_OK || name == NULL) {
        return st;
    }
    return use_param(cfg, lc, name, key, ndims, ret_index, err, err_len);
}

/* States that parameter dim `pdim` equals value dim `vvar`; on a contradiction, says so. */
static ps_status tie_param_dim(model_config *cfg, const layer_ctx *lc, size_t param, uint32_t pdim,
                               size_t vvar, const char *value_name, const char *meaning, char *err,
                               size_t err_len) {
    int64_t a;
    int64_t b;
    if (!var_unify(cfg->vars, cfg->params[param].vars[pdim], vvar, &a, &b)) {
        ps_set_err(err, err_len, "%s: %s \"%s\" dim %u is %lld, but %s \"%s\" is %lld", lc->where,
                   cfg->params[param].role, cfg->params[param].name, pdim, (long long)a, meaning,
                   value_name, (long long)b);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* Parses layers[index] and appends its output value. */
static ps_status parse_layer(model_config *cfg, layer_ctx *lc, json_t *obj, char *err,
                             size_t err_len) {
    static const char *const dense_keys[] = {"op",     "name", "input",      "output",
                                             "weight", "bias", "activation", NULL};
    static const char *const unary_keys[] = {"op", "name", "input", "output", NULL};
    static const char *const softmax_keys[] = {"op", "name", "input", "output", "axis", NULL};
    static const char *const add_keys[] = {"op", "name", "inputs", "output", NULL};
    static const char *const scale_keys[] = {"op",    "name",  "input", "output",
                                             "scale", "shift", NULL};
    cfg_layer *layer = &cfg->layers[lc->index];
    model_config_layer *info = &layer->info;
    snprintf(lc->where, sizeof(lc->where), "layers[%zu]", lc->index);
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: must be an object with op, input(s) and output", lc->where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *op;
    const char *layer_name;
    const char *output;
    ps_status st = get_name(obj, "op", true, lc->where, &op, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    size_t op_index = OP_COUNT;
    for (size_t i = 0; i < OP_COUNT; i++) {
        if (strcmp(op, op_names[i]) == 0) {
            op_index = i;
        }
    }
    if (op_index == OP_COUNT) {
        ps_set_err(err, err_len,
                   "%s: unknown op \"%s\" (supported: dense, relu, softmax, add, scale)", lc->where,
                   op);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->op = (model_config_op)op_index;
    st = get_name(obj, "name", false, lc->where, &layer_name, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = get_name(obj, "output", true, lc->where, &output, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    snprintf(lc->where, sizeof(lc->where), "layers[%zu] (%s \"%s\")", lc->index, op,
             layer_name != NULL ? layer_name : output);

    const char *const *keys = info->op == MODEL_CONFIG_OP_DENSE     ? dense_keys
                              : info->op == MODEL_CONFIG_OP_SOFTMAX ? softmax_keys
                              : info->op == MODEL_CONFIG_OP_ADD     ? add_keys
                              : info->op == MODEL_CONFIG_OP_SCALE   ? scale_keys
                                                                    : unary_keys;
    st = check_keys(obj, keys, lc->where, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }

    /* Inputs. */
    if (info->op == MODEL_CONFIG_OP_ADD) {
        json_t *inputs = json_object_get(obj, "inputs");
        if (inputs == NULL) {
            ps_set_err(err, err_len, "%s: missing field \"inputs\" (a list of two value names)",
                       lc->where);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (!json_is_array(inputs) || json_array_size(inputs) != 2 ||
            !json_is_string(json_array_get(inputs, 0)) ||
            !json_is_string(json_array_get(inputs, 1))) {
            ps_set_err(err, err_len, "%s: \"inputs\" must be a list of two value names", lc->where);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        info->input_count = 2;
    } else {
        info->input_count = 1;
    }
    for (uint32_t k = 0; k < info->input_count; k++) {
        const char *in;
        if (info->op == MODEL_CONFIG_OP_ADD) {
            in = json_string_value(json_array_get(json_object_get(obj, "inputs"), k));
        } else {
            st = get_name(obj, "input", true, lc->where, &in, err, err_len);
            if (st != PS_STATUS_OK) {
                return st;
            }
        }
        st = resolve_input(cfg, lc, in, &info->inputs[k], err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const size_t last = x->vars[x->ndims - 1];

    /* Output name: unique across the model. */
    char what[MODEL_CONFIG_NAME_MAX + 64];
    if (name_taken(cfg, output, what, sizeof(what))) {
        ps_set_err(err, err_len, "%s: output \"%s\" is already %s; every name must be unique",
                   lc->where, output, what);
        return PS_STATUS_INVALID_ARGUMENT;
    }

    /* Op-specific fields, parameters and the output's dims. */
    cfg_value out = {.ndims = x->ndims, .producer = lc->index};
    memcpy(out.vars, x->vars, sizeof(out.vars));
    info->weight = info->bias = info->scale = info->shift = MODEL_CONFIG_NONE;
    info->activation = MODEL_CONFIG_ACTIVATION_NONE;
    switch (info->op) {
    case MODEL_CONFIG_OP_DENSE: {
        const char *act;
        st = get_name(obj, "activation", false, lc->where, &act, err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        if (act != NULL) {
            size_t a = ACTIVATION_COUNT;
            for (size_t i = 0; i < ACTIVATION_COUNT; i++) {
                if (strcmp(act, activation_names[i]) == 0) {
                    a = i;
                }
            }
            if (a == ACTIVATION_COUNT) {
                ps_set_err(err, err_len,
                           "%s: unknown activation \"%s\" (supported: none, relu, sigmoid, tanh)",
                           lc->where, act);
                return PS_STATUS_INVALID_ARGUMENT;
            }
            info->activation = (model_config_activation)a;
        }
        st = param_field(cfg, lc, obj, "weight", true, 2, &info->weight, err, err_len);
        if (st == PS_STATUS_OK) {
            st = param_field(cfg, lc, obj, "bias", false, 1, &info->bias, err, err_len);
        }
        if (st != PS_STATUS_OK) {
            return st;
        }
        /* weight [out, in]: in = the input's last dim; bias [out]; output [..., out]. */
        st = tie_param_dim(cfg, lc, info->weight, 1, last, x->name, "the feature count of input",
                           err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        const size_t out_var = cfg->params[info->weight].vars[0];
        if (info->bias != MODEL_CONFIG_NONE) {
            st = tie_param_dim(cfg, lc, info->bias, 0, out_var, cfg->params[info->weight].name,
                               "the row count of weight", err, err_len);
            if (st != PS_STATUS_OK) {
                return st;
            }
        }
        out.vars[out.ndims - 1] = out_var;
        break;
    }
    case MODEL_CONFIG_OP_RELU:
        break;
    case MODEL_CONFIG_OP_SOFTMAX: {
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
        break;
    }
    case MODEL_CONFIG_OP_ADD: {
        const cfg_value *y = &cfg->values[info->inputs[1]];
        if (y->ndims != x->ndims) {
            ps_set_err(err, err_len,
                       "%s: inputs \"%s\" (%u dims) and \"%s\" (%u dims) differ in rank", lc->where,
                       x->name, x->ndims, y->name, y->ndims);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        for (uint32_t d = 0; d < x->ndims; d++) {
            int64_t a;
            int64_t b;
            if (!var_unify(cfg->vars, x->vars[d], y->vars[d], &a, &b)) {
                ps_set_err(err, err_len,
                           "%s: inputs must have the same shape, but dim %u of \"%s\" is %lld and "
                           "of \"%s\" is %lld",
                           lc->where, d, x->name, (long long)a, y->name, (long long)b);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
        break;
    }
    case MODEL_CONFIG_OP_SCALE:
        st = param_field(cfg, lc, obj, "scale", false, 1, &info->scale, err, err_len);
        if (st == PS_STATUS_OK) {
            st = param_field(cfg, lc, obj, "shift", false, 1, &info->shift, err, err_len);
        }
        if (st != PS_STATUS_OK) {
            return st;
        }
        if (info->scale == MODEL_CONFIG_NONE && info->shift == MODEL_CONFIG_NONE) {
            ps_set_err(err, err_len, "%s: needs \"scale\", \"shift\" or both", lc->where);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (info->scale != MODEL_CONFIG_NONE) {
            st = tie_param_dim(cfg, lc, info->scale, 0, last, x->name, "the feature count of input",
                               err, err_len);
        }
        if (st == PS_STATUS_OK && info->shift != MODEL_CONFIG_NONE) {
            st = tie_param_dim(cfg, lc, info->shift, 0, last, x->name, "the feature count of input",
                               err, err_len);
        }
        if (st != PS_STATUS_OK) {
            return st;
        }
        break;
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
        layer->name = dup_str(layer_name);
        if (layer->name == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    layer->output = dup_str(output);
    if (layer->output == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    info->name = layer->name != NULL ? layer->name : layer->output;
    info->output = cfg->n_values;
    out.name = layer->output;
    cfg->values[cfg->n_values++] = out;
    return PS_STATUS_OK;
}

/* Each declared output: produced by a layer, same shape as what the layer makes. */
static ps_status check_outputs(model_config *cfg, char *err, size_t err_len) {
    for (size_t i = 0; i < cfg->n_outputs; i++) {
        const cfg_io *o = &cfg->outputs[i];
        size_t v = MODEL_CONFIG_NONE;
        for (size_t j = 0; j < cfg->n_values; j++) {
            if (strcmp(cfg->values[j].name, o->name) == 0) {
                v = j;
            }
        }
        if (v == MODEL_CONFIG_NONE) {
            ps_set_err(err, err_len, "outputs[%zu]: no layer produces \"%s\"", i, o->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        const cfg_value *val = &cfg->values[v];
        if (val->producer == MODEL_CONFIG_NONE) {
            ps_set_err(err, err_len,
                       "outputs[%zu]: \"%s\" is a model input; outputs must be produced by a layer",
                       i, o->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        int64_t made[MODEL_MAX_DIMS];
        vars_dims(cfg->vars, val->vars, val->ndims, made);
        char want_s[160];
        char made_s[160];
        bool ok = val->ndims == o->ndims;
        for (uint32_t d = 0; ok && d < o->ndims; d++) {
            int64_t a;
            int64_t b;
            const size_t c = var_new(cfg, o->dims[d]);
            if (c == SIZE_MAX) {
                return PS_STATUS_NO_MEMORY;
            }
            ok = var_unify(cfg->vars, val->vars[d], c, &a, &b);
        }
        if (!ok) {
            ps_set_err(
                err, err_len,
                "outputs[%zu]: \"%s\" is declared with shape %s, but layers[%zu] produces %s", i,
                o->name, dims_str(o->dims, o->ndims, true, want_s, sizeof(want_s)), val->producer,
                dims_str(made, val->ndims, true, made_s, sizeof(made_s)));
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

static bool model_name_ok(const char *s) {
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        return false;
    }
    for (; *s != '\0'; s++) {
        const char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.')) {
            return false;
        }
    }
    return true;
}

static ps_status parse_root(model_config *cfg, json_t *root, char *err, size_t err_len) {
    if (!json_is_object(root)) {
        ps_set_err(err, err_len, "config: the top level must be a JSON object");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *name;
    ps_status st = get_name(root, "name", true, "config", &name, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (!model_name_ok(name)) {
        ps_set_err(err, err_len,
                   "config: name \"%s\" may only contain letters, digits, '_', '-' and '.'", name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    cfg->name = dup_str(name);
    if (cfg->name == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    json_t *mbs = json_object_get(root, "max_batch_size");
    if (mbs != NULL) {
        if (!json_is_integer(mbs) || json_integer_value(mbs) < 0 ||
            json_integer_value(mbs) > DIM_LIMIT) {
            ps_set_err(err, err_len,
                       "config: max_batch_size must be an integer >= 0 (0: no batch dim)");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        cfg->max_batch = (uint32_t)json_integer_value(mbs);
    }
    if (var_new(cfg, DIM_BATCH) != BATCH_VAR) {
        return PS_STATUS_NO_MEMORY;
    }

    st = parse_io_list(cfg, root, "inputs", &cfg->n_inputs, &cfg->inputs, err, err_len);
    if (st == PS_STATUS_OK) {
        st = parse_io_list(cfg, root, "outputs", &cfg->n_outputs, &cfg->outputs, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }

    json_t *layers = json_object_get(root, "layers");
    if (layers == NULL) {
        ps_set_err(err, err_len, "config: missing field \"layers\"");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!json_is_array(layers) || json_array_size(layers) == 0) {
        ps_set_err(err, err_len, "config: \"layers\" must be a non-empty list");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const size_t n_layers = json_array_size(layers);
    cfg->layers = calloc(n_layers, sizeof(*cfg->layers));
    cfg->values = calloc(cfg->n_inputs + n_layers, sizeof(*cfg->values));
    if (cfg->layers == NULL || cfg->values == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const cfg_io *in = &cfg->inputs[i];
        cfg_value *v = &cfg->values[i];
        v->name = in->name;
        v->ndims = in->ndims;
        v->producer = MODEL_CONFIG_NONE;
        for (uint32_t d = 0; d < in->ndims; d++) {
            v->vars[d] = in->dims[d] == DIM_BATCH ? BATCH_VAR : var_new(cfg, in->dims[d]);
            if (v->vars[d] == SIZE_MAX) {
                return PS_STATUS_NO_MEMORY;
            }
        }
        cfg->n_values = i + 1;
    }
    for (size_t i = 0; i < n_layers; i++) {
        layer_ctx lc = {.index = i, .all = layers};
        st = parse_layer(cfg, &lc, json_array_get(layers, i), err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    st = check_outputs(cfg, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (size_t v = 0; v < cfg->n_vars; v++) {
        cfg->vars[v].parent = var_find(cfg->vars, v);
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Public API: parsing */

ps_status model_config_parse(const char *text, size_t len, model_config **ret_cfg, char *err,
                             size_t err_len) {
    if ((text == NULL && len > 0) || ret_cfg == NULL) {
        ps_set_err(err, err_len, "config: no text or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (len > MODEL_CONFIG_MAX_BYTES) {
        ps_set_err(err, err_len, "config: %zu bytes, more than the %u-byte limit", len,
                   MODEL_CONFIG_MAX_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    model_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = PS_STATUS_NO_MEMORY;
    cfg->text = malloc(len + 1);
    if (cfg->text == NULL) {
        goto fail_cfg;
    }
    if (len > 0) {
        memcpy(cfg->text, text, len);
    }
    cfg->text[len] = '\0';
    cfg->text_len = len;

    json_error_t jerr;
    json_t *root = json_loadb(cfg->text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        ps_set_err(err, err_len, "config: not valid JSON: line %d, column %d: %s", jerr.line,
                   jerr.column, jerr.text);
        st = PS_STATUS_PARSE;
        goto fail_cfg;
    }
    st = parse_root(cfg, root, err, err_len);
    json_decref(root);
    if (st != PS_STATUS_OK) {
        goto fail_cfg;
    }
    *ret_cfg = cfg;
    return PS_STATUS_OK;

fail_cfg:
    model_config_destroy(cfg);
    return st;
}

ps_status model_config_load(const char *path, model_config **ret_cfg, char *err, size_t err_len) {
    if (path == NULL || ret_cfg == NULL) {
        ps_set_err(err, err_len, "config: no path or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_IO;
    char *text = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ps_set_err(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return PS_STATUS_IO;
    }
    size_t len = 0;
    size_t cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap > MODEL_CONFIG_MAX_BYTES) {
                ps_set_err(err, err_len, "%s: larger than the %u-byte limit for a config", path,
                           MODEL_CONFIG_MAX_BYTES);
                st = PS_STATUS_INVALID_ARGUMENT;
                goto out_text;
            }
            cap = cap > 0 ? cap * 2 : 4096;
            char *grown = realloc(text, cap);
            if (grown == NULL) {
                st = PS_STATUS_NO_MEMORY;
                goto out_text;
            }
            text = grown;
        }
        const size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        ps_set_err(err, err_len, "%s: read failed", path);
        goto out_text;
    }
    char msg[512] = "";
    st = model_config_parse(text, len, ret_cfg, msg, sizeof(msg));
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %s", path, msg);
    }

out_text:
    free(text);
    fclose(f);
    return st;
}

ps_status model_config_clone(const model_config *cfg, model_config **ret_cfg) {
    if (cfg == NULL || ret_cfg == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return model_config_parse(cfg->text, cfg->text_len, ret_cfg, NULL, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Public API: accessors */

const char *model_config_text(const model_config *cfg, size_t *ret_len) {
    if (ret_len != NULL) {
        *ret_len = cfg->text_len;
    }
    return cfg->text;
}

const char *model_config_name(const model_config *cfg) {
    return cfg->name;
}

uint32_t model_config_max_batch_size(const model_config *cfg) {
    return cfg->max_batch;
}

size_t model_config_input_count(const model_config *cfg) {
    return cfg->n_inputs;
}

size_t model_config_output_count(const model_config *cfg) {
    return cfg->n_outputs;
}

static void io_desc(const cfg_io *io, model_tensor_desc *d) {
    memset(d, 0, sizeof(*d));
    d->name = io->name;
    d->datatype = "FP32";
    d->ndims = io->ndims;
    memcpy(d->dims, io->dims, io->ndims * sizeof(io->dims[0]));
}

bool model_config_input_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc) {
    if (i >= cfg->n_inputs || ret_desc == NULL) {
        return false;
    }
    io_desc(&cfg->inputs[i], ret_desc);
    return true;
}

bool model_config_output_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc) {
    if (i >= cfg->n_outputs || ret_desc == NULL) {
        return false;
    }
    io_desc(&cfg->outputs[i], ret_desc);
    return true;
}

size_t model_config_param_count(const model_config *cfg) {
    return cfg->n_params;
}

bool model_config_param_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc) {
    if (i >= cfg->n_params || ret_desc == NULL) {
        return false;
    }
    const cfg_param *p = &cfg->params[i];
    memset(ret_desc, 0, sizeof(*ret_desc));
    ret_desc->name = p->name;
    ret_desc->datatype = "FP32";
    ret_desc->ndims = p->ndims;
    for (uint32_t d = 0; d < p->ndims; d++) {
        const int64_t x = var_value_ro(cfg->vars, p->vars[d]);
        ret_desc->dims[d] = x == DIM_UNKNOWN ? -1 : x;
    }
    return true;
}

bool model_config_param_find(const model_config *cfg, const char *name, size_t *ret_index) {
    for (size_t i = 0; name != NULL && i < cfg->n_params; i++) {
        if (strcmp(cfg->params[i].name, name) == 0) {
            if (ret_index != NULL) {
                *ret_index = i;
            }
            return true;
        }
    }
    return false;
}

size_t model_config_layer_count(const model_config *cfg) {
    return cfg->n_layers;
}

bool model_config_layer_at(const model_config *cfg, size_t i, model_config_layer *ret_layer) {
    if (i >= cfg->n_layers || ret_layer == NULL) {
        return false;
    }
    *ret_layer = cfg->layers[i].info;
    return true;
}

size_t model_config_value_count(const model_config *cfg) {
    return cfg->n_values;
}

const char *model_config_value_name(const model_config *cfg, size_t i) {
    return i < cfg->n_values ? cfg->values[i].name : NULL;
}

bool model_config_value_find(const model_config *cfg, const char *name, size_t *ret_index) {
    for (size_t i = 0; name != NULL && i < cfg->n_values; i++) {
        if (strcmp(cfg->values[i].name, name) == 0) {
            if (ret_index != NULL) {
                *ret_index = i;
            }
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* Public API: resolving parameter shapes */

ps_status model_config_resolve(const model_config *cfg, const model_tensor_desc *given,
                               size_t n_given, model_tensor_desc *ret_params,
                               model_tensor_desc *ret_values, char *err, size_t err_len) {
    if (cfg == NULL || (given == NULL && n_given > 0)) {
        ps_set_err(err, err_len, "resolve: no config or no shapes");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_INVALID_ARGUMENT;
    dimvar *vars = malloc((cfg->n_vars > 0 ? cfg->n_vars : 1) * sizeof(*vars));
    if (vars == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    memcpy(vars, cfg->vars, cfg->n_vars * sizeof(*vars));

    for (size_t i = 0; i < cfg->n_params; i++) {
        const cfg_param *p = &cfg->params[i];
        const model_tensor_desc *g = NULL;
        for (size_t j = 0; j < n_given && g == NULL; j++) {
            if (given[j].name != NULL && strcmp(given[j].name, p->name) == 0) {
                g = &given[j];
            }
        }
        const cfg_layer *user = &cfg->layers[p->first_layer];
        char where[MODEL_CONFIG_NAME_MAX * 2 + 96];
        snprintf(where, sizeof(where), "parameter \"%s\" (the %s of layers[%zu], %s \"%s\")",
                 p->name, p->role, p->first_layer, op_names[user->info.op], user->info.name);
        if (g == NULL) {
            ps_set_err(err, err_len, "%s is missing", where);
            goto out_vars;
        }
        if (g->datatype != NULL && strcmp(g->datatype, "FP32") != 0 &&
            strcmp(g->datatype, "F32") != 0) {
            ps_set_err(err, err_len, "%s has datatype %s; only FP32 is supported", where,
                       g->datatype);
            goto out_vars;
        }
        int64_t need[MODEL_MAX_DIMS];
        char need_s[160];
        char have_s[160];
        bool ok = g->ndims == p->ndims;
        for (uint32_t d = 0; ok && d < p->ndims; d++) {
            const size_t r = var_find(vars, p->vars[d]);
            ok = g->dims[d] >= 1 && g->dims[d] <= DIM_LIMIT &&
                 (vars[r].value == DIM_UNKNOWN || vars[r].value == g->dims[d]);
            if (ok) {
                vars[r].value = g->dims[d];
            }
        }
        int64_t elements = 1;
        for (uint32_t d = 0; ok && d < p->ndims; d++) {
            elements *= g->dims[d]; /* each <= DIM_LIMIT, and the product is checked each step */
            if (elements > DIM_LIMIT) {
                ps_set_err(err, err_len,
                           "%s has shape %s: more than %lld elements, the most a parameter may "
                           "have",
                           where,
                           dims_str(g->dims, g->ndims <= MODEL_MAX_DIMS ? g->ndims : MODEL_MAX_DIMS,
                                    false, have_s, sizeof(have_s)),
                           DIM_LIMIT);
                goto out_vars;
            }
        }
        if (!ok) {
            vars_dims(vars, p->vars, p->ndims, need);
            ps_set_err(err, err_len, "%s has shape %s, but the graph needs %s", where,
                       dims_str(g->dims, g->ndims <= MODEL_MAX_DIMS ? g->ndims : MODEL_MAX_DIMS,
                                false, have_s, sizeof(have_s)),
                       dims_str(need, p->ndims, true, need_s, sizeof(need_s)));
            goto out_vars;
        }
    }

    /* Every value dim is now fixed (each comes from an input or a parameter dim);
     * every per-sample element count, times the largest batch, must stay within the
     * limit (what a backend can address in one tensor). */
    const int64_t batch_cap = cfg->max_batch > 0 ? (int64_t)cfg->max_batch : 1;
    for (size_t v = 0; v < cfg->n_values; v++) {
        const cfg_value *val = &cfg->values[v];
        int64_t per_sample = 1;
        for (uint32_t d = 0; d < val->ndims; d++) {
            const int64_t x = var_value(vars, val->vars[d]);
            if (x == DIM_UNKNOWN) {
                ps_set_err(err, err_len, "resolve: dim %u of \"%s\" is not determined", d,
                           val->name);
                st = PS_STATUS_INTERNAL;
                goto out_vars;
            }
            if (x > 0) {
                per_sample *= x;
                if (per_sample > DIM_LIMIT) {
                    ps_set_err(err, err_len, "\"%s\" would have more than %lld elements per sample",
                               val->name, DIM_LIMIT);
                    goto out_vars;
                }
            }
        }
        if (per_sample > DIM_LIMIT / batch_cap) {
            ps_set_err(err, err_len,
                       "\"%s\" has %lld elements per sample: a batch of %lld (max_batch_size) "
                       "would have more than %lld",
                       val->name, (long long)per_sample, (long long)batch_cap, DIM_LIMIT);
            goto out_vars;
        }
    }

    for (size_t i = 0; ret_params != NULL && i < cfg->n_params; i++) {
        const cfg_param *p = &cfg->params[i];
        memset(&ret_params[i], 0, sizeof(ret_params[i]));
        ret_params[i].name = p->name;
        ret_params[i].datatype = "FP32";
        ret_params[i].ndims = p->ndims;
        vars_dims(vars, p->vars, p->ndims, ret_params[i].dims);
    }
    for (size_t v = 0; ret_values != NULL && v < cfg->n_values; v++) {
        const cfg_value *val = &cfg->values[v];
        memset(&ret_values[v], 0, sizeof(ret_values[v]));
        ret_values[v].name = val->name;
        ret_values[v].datatype = "FP32";
        ret_values[v].ndims = val->ndims;
        vars_dims(vars, val->vars, val->ndims, ret_values[v].dims);
    }
    st = PS_STATUS_OK;

out_vars:
    free(vars);
    return st;
}
