/* model_config_seq.c: config.json's sequence ops (see model_config.h): embedding,
 * position_embedding, attention, mean_pool and l2_normalize, and the masks attention
 * and mean_pool read.
 *
 * A sequence value is [-1, S, D] ([S, D] without a batch dim). Most rules are
 * equalities of dims and go through union-find like every other op (an attention's
 * q, k and v have one shape; a mask's batch and S are its sequence's). Two are not,
 * and both wait for a dim only the parameters fix: a position table's row count P
 * must be at least S, and an attention's heads must divide its width (q is usually a
 * dense output, whose width is its weight's row count). cfg_seq_check applies them
 * where both sides are known: at the end of parsing and again in
 * model_config_resolve, once the parameters' actual dims are in (with the limit on an
 * attention's tokens, MODEL_CONFIG_MAX_SEQ).
 */
#include "model_config_internal.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define L2_NORMALIZE_DEFAULT_EPS 1e-12 /* torch.nn.functional.normalize's default */

const char *const *cfg_seq_keys(model_config_op op) {
    static const char *const embedding[] = {"op", "name", "input", "output", "weight", NULL};
    static const char *const attention[] = {"op",    "name", "inputs", "output",
                                            "heads", "mask", NULL};
    static const char *const pool[] = {"op", "name", "input", "output", "mask", NULL};
    static const char *const l2[] = {"op", "name", "input", "output", "eps", NULL};
    switch (op) {
    case MODEL_CONFIG_OP_ATTENTION:
        return attention;
    case MODEL_CONFIG_OP_MEAN_POOL:
        return pool;
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        return l2;
    default:
        break;
    }
    return embedding;
}

/* Dims of a sequence value: 3 with a batch dim, else 2. */
static uint32_t seq_rank(const model_config *cfg) {
    return cfg->max_batch > 0 ? 3 : 2;
}

/* x must be a sequence [-1, S, D] ([S, D]). */
static ps_status need_seq(const model_config *cfg, const layer_ctx *lc, const cfg_value *x,
                          char *err, size_t err_len) {
    if (x->ndims == seq_rank(cfg)) {
        return PS_STATUS_OK;
    }
    ps_set_err(err, err_len, "%s: input \"%s\" has %u dims; it must be a sequence %s", lc->where,
               x->name, x->ndims, cfg->max_batch > 0 ? "[-1, S, D]" : "[S, D]");
    return PS_STATUS_INVALID_ARGUMENT;
}

/* The optional "mask": a model input [-1, S] ([S]) whose batch and S are x's. */
static ps_status parse_mask(model_config *cfg, const layer_ctx *lc, json_t *obj, const cfg_value *x,
                            model_config_layer *info, char *err, size_t err_len) {
    const char *name;
    info->mask = MODEL_CONFIG_NONE;
    ps_status st = cfg_get_name(obj, "mask", false, lc->where, &name, err, err_len);
    if (st != PS_STATUS_OK || name == NULL) {
        return st;
    }
    const uint32_t rank = seq_rank(cfg) - 1;
    const char *shape = cfg->max_batch > 0 ? "[-1, S]" : "[S]";
    size_t v = MODEL_CONFIG_NONE;
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        if (strcmp(cfg->values[i].name, name) == 0) {
            v = i;
        }
    }
    if (v == MODEL_CONFIG_NONE) {
        ps_set_err(err, err_len,
                   "%s: mask \"%s\" is not a model input; a mask must be a model input of shape "
                   "%s (INT64 or FP32)",
                   lc->where, name, shape);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const cfg_value *m = &cfg->values[v];
    if (m->ndims != rank) {
        ps_set_err(err, err_len, "%s: mask \"%s\" has %u dims; it must be %s, as \"%s\" is %s",
                   lc->where, name, m->ndims, shape, x->name,
                   cfg->max_batch > 0 ? "[-1, S, D]" : "[S, D]");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (uint32_t d = 0; d < rank; d++) {
        int64_t a;
        int64_t b;
        if (!cfg_var_unify(cfg->vars, m->vars[d], x->vars[d], &a, &b)) {
            ps_set_err(err, err_len,
                       "%s: mask \"%s\" dim %u is %lld, but \"%s\" has %lld there (the mask must "
                       "be %s with the S of its sequence)",
                       lc->where, name, d, (long long)a, x->name, (long long)b, shape);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    info->mask = v;
    return PS_STATUS_OK;
}

/* embedding: ids [-1, S] -> [-1, S, D], weight [V, D]. */
static ps_status parse_embedding(model_config *cfg, const layer_ctx *lc, json_t *obj,
                                 model_config_layer *info, cfg_value *out, char *err,
                                 size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const uint32_t rank = seq_rank(cfg) - 1;
    if (!x->ids || x->ndims != rank) {
        ps_set_err(err, err_len,
                   "%s: input \"%s\" must be a model input of datatype INT64 and shape %s (token "
                   "ids)",
                   lc->where, x->name, rank == 2 ? "[-1, S]" : "[S]");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = cfg_param_field(cfg, lc, obj, "weight", true, 2, &info->weight, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    out->ndims = rank + 1;
    out->vars[rank] = cfg->params[info->weight].vars[1];
    return PS_STATUS_OK;
}

/* position_embedding: [-1, S, D] + weight[0..S), weight [P, D]; P >= S in cfg_seq_check. */
static ps_status parse_position(model_config *cfg, const layer_ctx *lc, json_t *obj,
                                model_config_layer *info, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    ps_status st = need_seq(cfg, lc, x, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_param_field(cfg, lc, obj, "weight", true, 2, &info->weight, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = cfg_tie_param_dim(cfg, lc, info->weight, 1, x->vars[x->ndims - 1], x->name,
                               "the feature count of input", err, err_len);
    }
    return st;
}

/* attention: q, k, v of one sequence shape, heads, mask. */
static ps_status parse_attention(model_config *cfg, const layer_ctx *lc, json_t *obj,
                                 model_config_layer *info, char *err, size_t err_len) {
    const cfg_value *q = &cfg->values[info->inputs[0]];
    ps_status st = need_seq(cfg, lc, q, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (uint32_t k = 1; k < 3; k++) {
        const cfg_value *o = &cfg->values[info->inputs[k]];
        if (o->ndims != q->ndims) {
            ps_set_err(err, err_len,
                       "%s: inputs \"%s\" (%u dims) and \"%s\" (%u dims) differ in rank; q, k "
                       "and v must have the same shape",
                       lc->where, q->name, q->ndims, o->name, o->ndims);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        for (uint32_t d = 0; d < q->ndims; d++) {
            int64_t a;
            int64_t b;
            if (!cfg_var_unify(cfg->vars, q->vars[d], o->vars[d], &a, &b)) {
                ps_set_err(err, err_len,
                           "%s: q, k and v must have the same shape, but dim %u of \"%s\" is "
                           "%lld and of \"%s\" is %lld",
                           lc->where, d, q->name, (long long)a, o->name, (long long)b);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    json_t *heads = json_object_get(obj, "heads");
    if (!json_is_integer(heads) || json_integer_value(heads) < 1 ||
        json_integer_value(heads) > MODEL_CONFIG_MAX_HEADS) {
        ps_set_err(err, err_len, "%s: \"heads\" must be an integer from 1 to %d", lc->where,
                   MODEL_CONFIG_MAX_HEADS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->heads = (uint32_t)json_integer_value(heads);
    return parse_mask(cfg, lc, obj, q, info, err, err_len);
}

/* mean_pool: [-1, S, D] -> [-1, D], mask. */
static ps_status parse_mean_pool(model_config *cfg, const layer_ctx *lc, json_t *obj,
                                 model_config_layer *info, cfg_value *out, char *err,
                                 size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    ps_status st = need_seq(cfg, lc, x, err, err_len);
    if (st == PS_STATUS_OK) {
        st = parse_mask(cfg, lc, obj, x, info, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    out->ndims = x->ndims - 1;
    out->vars[out->ndims - 1] = x->vars[x->ndims - 1];
    return PS_STATUS_OK;
}

/* l2_normalize: eps. */
static ps_status parse_l2(const layer_ctx *lc, json_t *obj, model_config_layer *info, char *err,
                          size_t err_len) {
    json_t *eps = json_object_get(obj, "eps");
    const double e = eps == NULL ? L2_NORMALIZE_DEFAULT_EPS : json_number_value(eps);
    if ((eps != NULL && !json_is_number(eps)) || !isfinite(e) || !(e > 0.0) || !((float)e > 0.0f) ||
        !isfinite((float)e)) {
        ps_set_err(err, err_len, "%s: \"eps\" must be a finite number > 0 (a float32)", lc->where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->eps = (float)e;
    return PS_STATUS_OK;
}

ps_status cfg_parse_seq(model_config *cfg, const layer_ctx *lc, json_t *obj,
                        model_config_layer *info, cfg_value *out, char *err, size_t err_len) {
    switch (info->op) {
    case MODEL_CONFIG_OP_EMBEDDING:
        return parse_embedding(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_POSITION_EMBEDDING:
        return parse_position(cfg, lc, obj, info, err, err_len);
    case MODEL_CONFIG_OP_ATTENTION:
        return parse_attention(cfg, lc, obj, info, err, err_len);
    case MODEL_CONFIG_OP_MEAN_POOL:
        return parse_mean_pool(cfg, lc, obj, info, out, err, err_len);
    case MODEL_CONFIG_OP_L2_NORMALIZE:
        return parse_l2(lc, obj, info, err, err_len);
    default:
        break;
    }
    return PS_STATUS_INTERNAL;
}

ps_status cfg_seq_check(const model_config *cfg, dimvar *vars, char *err, size_t err_len) {
    for (size_t l = 0; l < cfg->n_layers; l++) {
        const model_config_layer *info = &cfg->layers[l].info;
        const cfg_value *x = &cfg->values[info->inputs[0]];
        if (info->op == MODEL_CONFIG_OP_POSITION_EMBEDDING) {
            const cfg_param *w = &cfg->params[info->weight];
            const int64_t p = cfg_var_value(vars, w->vars[0]);
            const int64_t s = cfg_var_value(vars, x->vars[x->ndims - 2]);
            if (p > 0 && s > 0 && p < s) {
                ps_set_err(err, err_len,
                           "layers[%zu] (position_embedding \"%s\"): weight \"%s\" has %lld rows "
                           "(positions), fewer than the %lld tokens of \"%s\"",
                           l, info->name, w->name, (long long)p, (long long)s, x->name);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        } else if (info->op == MODEL_CONFIG_OP_ATTENTION) {
            const int64_t s = cfg_var_value(vars, x->vars[x->ndims - 2]);
            if (s > MODEL_CONFIG_MAX_SEQ) {
                ps_set_err(err, err_len,
                           "layers[%zu] (attention \"%s\"): \"%s\" has %lld tokens; attention "
                           "takes at most %d",
                           l, info->name, x->name, (long long)s, MODEL_CONFIG_MAX_SEQ);
                return PS_STATUS_INVALID_ARGUMENT;
            }
            const int64_t width = cfg_var_value(vars, x->vars[x->ndims - 1]);
            if (width > 0 && width % info->heads != 0) {
                ps_set_err(err, err_len,
                           "layers[%zu] (attention \"%s\"): %u heads do not divide the %lld "
                           "features of \"%s\"",
                           l, info->name, info->heads, (long long)width, x->name);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    return PS_STATUS_OK;
}
