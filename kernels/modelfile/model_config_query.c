/* model_config_query.c: the parsed config's accessors, and model_config_resolve, which
 * checks actual parameter shapes against the graph (see model_config.h). Accessors
 * only read (cfg_var_value_ro): a parsed config may be shared by any number of
 * threads. */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    d->datatype = io->ids ? "INT64" : "FP32";
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
        const int64_t x = cfg_var_value_ro(cfg->vars, p->vars[d]);
        ret_desc->dims[d] = x == DIM_UNKNOWN ? -1 : x;
    }
    return true;
}

bool model_config_param_find(const model_config *cfg, const char *name, size_t *ret_index) {
    return cfg_names_find(cfg, &cfg->param_names, name, ret_index);
}

size_t model_config_table_count(const model_config *cfg) {
    return cfg->n_tables;
}

bool model_config_table_at(const model_config *cfg, size_t i, model_config_table *ret_table) {
    if (i >= cfg->n_tables || ret_table == NULL) {
        return false;
    }
    ret_table->name = cfg->tables[i].name;
    ret_table->dim = cfg->tables[i].dim;
    return true;
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
    return cfg_names_find(cfg, &cfg->value_names, name, ret_index);
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
                 p->name, p->role, p->first_layer, cfg_op_names[user->info.op], user->info.name);
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
            const size_t r = cfg_var_find(vars, p->vars[d]);
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
                           cfg_dims_str(g->dims,
                                        g->ndims <= MODEL_MAX_DIMS ? g->ndims : MODEL_MAX_DIMS,
                                        false, have_s, sizeof(have_s)),
                           DIM_LIMIT);
                goto out_vars;
            }
        }
        if (!ok) {
            cfg_vars_dims(vars, p->vars, p->ndims, need);
            ps_set_err(err, err_len, "%s has shape %s, but the graph needs %s", where,
                       cfg_dims_str(g->dims, g->ndims <= MODEL_MAX_DIMS ? g->ndims : MODEL_MAX_DIMS,
                                    false, have_s, sizeof(have_s)),
                       cfg_dims_str(need, p->ndims, true, need_s, sizeof(need_s)));
            goto out_vars;
        }
    }

    /* The concats' widths, now that every parameter dim is in. */
    st = cfg_sums_apply(cfg, vars, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_seq_check(cfg, vars, err, err_len); /* positions, heads */
    }
    if (st != PS_STATUS_OK) {
        goto out_vars;
    }
    st = PS_STATUS_INVALID_ARGUMENT;

    /* Every value dim is now fixed (each comes from an input, a table, a parameter dim
     * or the concats' sums);
     * every per-sample element count, times the largest batch, must stay within the
     * limit (what a backend can address in one tensor). */
    const int64_t batch_cap = cfg->max_batch > 0 ? (int64_t)cfg->max_batch : 1;
    for (size_t v = 0; v < cfg->n_values; v++) {
        const cfg_value *val = &cfg->values[v];
        int64_t per_sample = 1;
        for (uint32_t d = 0; d < val->ndims; d++) {
            const int64_t x = cfg_var_value(vars, val->vars[d]);
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
        cfg_vars_dims(vars, p->vars, p->ndims, ret_params[i].dims);
    }
    for (size_t v = 0; ret_values != NULL && v < cfg->n_values; v++) {
        const cfg_value *val = &cfg->values[v];
        memset(&ret_values[v], 0, sizeof(ret_values[v]));
        ret_values[v].name = val->name;
        ret_values[v].datatype = val->ids ? "INT64" : "FP32";
        ret_values[v].ndims = val->ndims;
        cfg_vars_dims(vars, val->vars, val->ndims, ret_values[v].dims);
    }
    st = PS_STATUS_OK;

out_vars:
    free(vars);
    return st;
}
