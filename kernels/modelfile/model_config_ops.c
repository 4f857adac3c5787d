/* model_config_ops.c: what config.json says about sparse tables and the ops that serve
 * recommenders (see model_config.h): the "tables" entries (name and dim only; the rest
 * of each entry belongs to train_config.c), embedding_bag, and concat.
 *
 * A concat's output width is the sum of its inputs' widths, which union-find cannot
 * state (it only says "these dims are equal"). Each concat records the rule
 * (cfg_sum); cfg_sums_apply fixes the width once both inputs' are known, in layer
 * order, so a chain of concats resolves front to back. That happens at the end of
 * parsing (where inputs and tables fix the widths, as in every recommender) and again
 * in model_config_resolve, after the parameters' actual dims are in (a concat of two
 * dense outputs). Every value's width comes from an input, a table, a parameter or an
 * earlier concat, so a forward pass over the rules always fixes them all.
 */
#include "model_config_internal.h"
#include "train_spec.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Tables */

/* One "tables" entry: name and dim; other fields are train_config.c's to check. */
static ps_status parse_table(json_t *obj, size_t i, cfg_table *t, char *err, size_t err_len) {
    char where[64];
    snprintf(where, sizeof(where), "tables[%zu]", i);
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: must be an object with at least name and dim", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const char *name;
    ps_status st = cfg_get_name(obj, "name", true, where, &name, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    json_t *dim = json_object_get(obj, "dim");
    if (!json_is_integer(dim) || json_integer_value(dim) < 1 ||
        json_integer_value(dim) > TABLE_MAX_DIM) {
        ps_set_err(err, err_len, "%s (\"%s\"): \"dim\" must be an integer from 1 to %u", where,
                   name, TABLE_MAX_DIM);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    t->dim = (uint32_t)json_integer_value(dim);
    t->name = cfg_dup_str(name);
    return t->name != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

ps_status cfg_parse_tables(model_config *cfg, json_t *root, char *err, size_t err_len) {
    json_t *arr = json_object_get(root, "tables");
    if (arr == NULL) {
        return PS_STATUS_OK;
    }
    if (!json_is_array(arr) || json_array_size(arr) > MODEL_CONFIG_MAX_TABLES) {
        ps_set_err(err, err_len, "config: \"tables\" must be a list of at most %d tables",
                   MODEL_CONFIG_MAX_TABLES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const size_t n = json_array_size(arr);
    cfg->tables = calloc(n + 1, sizeof(*cfg->tables));
    if (cfg->tables == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        ps_status st = parse_table(json_array_get(arr, i), i, &cfg->tables[i], err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
        cfg->n_tables = i + 1;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->tables[j].name, cfg->tables[i].name) == 0) {
                ps_set_err(err, err_len,
                           "tables[%zu]: table \"%s\" is declared twice (also "
                           "tables[%zu])",
                           i, cfg->tables[i].name, j);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* embedding_bag */

/* "table": a declared table's index. */
static ps_status bag_table(const model_config *cfg, const layer_ctx *lc, json_t *obj,
                           size_t *ret_table, char *err, size_t err_len) {
    const char *name;
    ps_status st = cfg_get_name(obj, "table", true, lc->where, &name, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (size_t i = 0; i < cfg->n_tables; i++) {
        if (strcmp(cfg->tables[i].name, name) == 0) {
            *ret_table = i;
            return PS_STATUS_OK;
        }
    }
    char list[256] = "none";
    size_t used = 0;
    for (size_t i = 0; i < cfg->n_tables && used < sizeof(list); i++) {
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i > 0 ? ", " : "",
                                 cfg->tables[i].name);
    }
    ps_set_err(err, err_len,
               "%s: table \"%s\" is not declared in the config's \"tables\" (declared: %s)",
               lc->where, name, list);
    return PS_STATUS_INVALID_ARGUMENT;
}

/* "mode": "sum" or "mean". */
static ps_status bag_mode(const layer_ctx *lc, json_t *obj, model_config_pool *ret_pool, char *err,
                          size_t err_len) {
    const char *mode;
    ps_status st = cfg_get_name(obj, "mode", true, lc->where, &mode, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (strcmp(mode, "sum") == 0) {
        *ret_pool = MODEL_CONFIG_POOL_SUM;
    } else if (strcmp(mode, "mean") == 0) {
        *ret_pool = MODEL_CONFIG_POOL_MEAN;
    } else {
        ps_set_err(err, err_len, "%s: unknown mode \"%s\" (supported: sum, mean)", lc->where, mode);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

ps_status cfg_parse_bag(model_config *cfg, const layer_ctx *lc, json_t *obj,
                        model_config_layer *info, cfg_value *out, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const uint32_t rank = cfg->max_batch > 0 ? 2 : 1;
    if (!x->ids || x->ndims != rank) {
        ps_set_err(err, err_len,
                   "%s: input \"%s\" must be a model input of datatype INT64 and shape %s (ids "
                   "per sample)",
                   lc->where, x->name, rank == 2 ? "[-1, L]" : "[L]");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = bag_table(cfg, lc, obj, &info->table, err, err_len);
    if (st == PS_STATUS_OK) {
        st = bag_mode(lc, obj, &info->pool, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    const size_t dim = cfg_var_new(cfg, cfg->tables[info->table].dim);
    if (dim == SIZE_MAX) {
        return PS_STATUS_NO_MEMORY;
    }
    out->ndims = rank;
    out->vars[rank - 1] = dim; /* vars[0] stays the batch var when batched */
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* concat */

/* One concat's rule: its width from its inputs' once both are known; a width fixed
 * otherwise (a declared output, a later layer, a parameter) must agree. */
static ps_status sum_apply(const model_config *cfg, dimvar *vars, const cfg_sum *s,
                           const char *where, char *err, size_t err_len) {
    const int64_t a = cfg_var_value(vars, s->a);
    const int64_t b = cfg_var_value(vars, s->b);
    if (a <= 0 || b <= 0) {
        return PS_STATUS_OK; /* not known yet: the parameters' dims will fix it (resolve) */
    }
    const cfg_layer *layer = &cfg->layers[s->layer];
    const int64_t sum = a + b; /* each <= DIM_LIMIT: no overflow in int64 */
    const size_t root = cfg_var_find(vars, s->out);
    if (sum > DIM_LIMIT) {
        ps_set_err(err, err_len, "%s: %lld + %lld features is more than %lld", where, (long long)a,
                   (long long)b, DIM_LIMIT);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (vars[root].value == DIM_UNKNOWN) {
        vars[root].value = sum;
    } else if (vars[root].value != sum) {
        ps_set_err(err, err_len,
                   "%s: \"%s\" (%lld features) and \"%s\" (%lld) make %lld features, but the "
                   "graph needs %lld there",
                   where, cfg->values[layer->info.inputs[0]].name, (long long)a,
                   cfg->values[layer->info.inputs[1]].name, (long long)b, (long long)sum,
                   (long long)vars[root].value);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

ps_status cfg_parse_concat(model_config *cfg, const layer_ctx *lc, const model_config_layer *info,
                           cfg_value *out, char *err, size_t err_len) {
    const cfg_value *a = &cfg->values[info->inputs[0]];
    const cfg_value *b = &cfg->values[info->inputs[1]];
    if (a->ndims != b->ndims) {
        ps_set_err(err, err_len, "%s: inputs \"%s\" (%u dims) and \"%s\" (%u dims) differ in rank",
                   lc->where, a->name, a->ndims, b->name, b->ndims);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (uint32_t d = 0; d + 1 < a->ndims; d++) {
        int64_t va;
        int64_t vb;
        if (!cfg_var_unify(cfg->vars, a->vars[d], b->vars[d], &va, &vb)) {
            ps_set_err(err, err_len,
                       "%s: inputs must have the same leading dims, but dim %u of \"%s\" is %lld "
                       "and of \"%s\" is %lld",
                       lc->where, d, a->name, (long long)va, b->name, (long long)vb);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    const size_t width = cfg_var_new(cfg, DIM_UNKNOWN);
    if (width == SIZE_MAX) {
        return PS_STATUS_NO_MEMORY;
    }
    out->vars[out->ndims - 1] = width;
    /* one concat per layer at most: n_sums < n_layers, the array's size */
    const cfg_sum *s = &cfg->sums[cfg->n_sums++];
    cfg->sums[cfg->n_sums - 1] = (cfg_sum){
        .layer = lc->index, .a = a->vars[a->ndims - 1], .b = b->vars[b->ndims - 1], .out = width};
    return sum_apply(cfg, cfg->vars, s, lc->where, err, err_len);
}

ps_status cfg_sums_apply(const model_config *cfg, dimvar *vars, char *err, size_t err_len) {
    for (size_t i = 0; i < cfg->n_sums; i++) {
        const cfg_sum *s = &cfg->sums[i];
        char where[MODEL_CONFIG_NAME_MAX + 64];
        snprintf(where, sizeof(where), "layers[%zu] (concat \"%s\")", s->layer,
                 cfg->layers[s->layer].info.name);
        ps_status st = sum_apply(cfg, vars, s, where, err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    return PS_STATUS_OK;
}
