/* model_config_io.c: the "inputs" and "outputs" of config.json (see model_config.h for
 * the format) and, once the layers are parsed, the check that each declared output is
 * made by a layer with the declared shape. */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One entry of "inputs" (is_input) or "outputs". */
static ps_status parse_io(model_config *cfg, json_t *obj, const char *where, bool is_input,
                          cfg_io *io, char *err, size_t err_len) {
    static const char *const keys[] = {"name", "datatype", "shape", NULL};
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: must be an object with name, datatype and shape", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = cfg_check_keys(obj, keys, where, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const char *name;
    const char *datatype;
    st = cfg_get_name(obj, "name", true, where, &name, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_get_name(obj, "datatype", true, where, &datatype, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    io->ids = is_input && strcmp(datatype, "INT64") == 0;
    if (strcmp(datatype, "FP32") != 0 && !io->ids) {
        ps_set_err(err, err_len, "%s (\"%s\"): datatype \"%s\" is not supported; only %s", where,
                   name, datatype,
                   is_input ? "\"FP32\" and \"INT64\" (ids, masks) are, or \"BYTES\" (text)"
                            : "\"FP32\" is, for outputs");
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
    io->name = cfg_dup_str(name);
    return io->name != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

ps_status cfg_parse_io_list(model_config *cfg, json_t *root, const char *key, size_t *ret_n,
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
    const bool is_input = strcmp(key, "inputs") == 0;
    *ret_list = calloc(n, sizeof(**ret_list));
    if (*ret_list == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    size_t k = 0; /* entries kept in the list (the text input is kept apart) */
    for (size_t i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof(where), "%s[%zu]", key, i);
        json_t *obj = json_array_get(arr, i);
        const char *dt = json_string_value(json_object_get(obj, "datatype"));
        if (is_input && dt != NULL && strcmp(dt, "BYTES") == 0) {
            ps_status st = cfg_parse_text_input(cfg, obj, i, err, err_len);
            if (st != PS_STATUS_OK) {
                return st;
            }
            continue;
        }
        ps_status st = parse_io(cfg, obj, where, is_input, &(*ret_list)[k], err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        *ret_n = ++k;
        for (size_t j = 0; j + 1 < k; j++) {
            if (strcmp((*ret_list)[j].name, (*ret_list)[k - 1].name) == 0) {
                const bool after_text =
                    is_input && cfg->text_in.name != NULL && j >= cfg->text_in.json_index;
                ps_set_err(err, err_len, "%s: duplicate name \"%s\" (also %s[%zu])", where,
                           (*ret_list)[k - 1].name, key, after_text ? j + 1 : j);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    if (k == 0) {
        ps_set_err(err, err_len,
                   "config: \"%s\" must hold an input the graph reads (a text input feeds "
                   "INT64 inputs that must be listed too)",
                   key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* Each declared output: produced by a layer, same shape as what the layer makes. */
ps_status cfg_check_outputs(model_config *cfg, char *err, size_t err_len) {
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
        cfg_vars_dims(cfg->vars, val->vars, val->ndims, made);
        char want_s[160];
        char made_s[160];
        bool ok = val->ndims == o->ndims;
        for (uint32_t d = 0; ok && d < o->ndims; d++) {
            int64_t a;
            int64_t b;
            const size_t c = cfg_var_new(cfg, o->dims[d]);
            if (c == SIZE_MAX) {
                return PS_STATUS_NO_MEMORY;
            }
            ok = cfg_var_unify(cfg->vars, val->vars[d], c, &a, &b);
        }
        if (!ok) {
            ps_set_err(
                err, err_len,
                "outputs[%zu]: \"%s\" is declared with shape %s, but layers[%zu] produces %s", i,
                o->name, cfg_dims_str(o->dims, o->ndims, true, want_s, sizeof(want_s)),
                val->producer, cfg_dims_str(made, val->ndims, true, made_s, sizeof(made_s)));
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}
