/* model_config_image.c: the image ops of config.json (see model_config.h): conv2d,
 * maxpool2d and avgpool2d (their windows, parameters and output dims), and the ops that
 * only change a value's shape, flatten and reshape.
 *
 * Output sizes of a window are arithmetic on the input's dims, which union-find cannot
 * state, so these ops need their input's C, H and W fixed when the layer is parsed
 * (inputs, reshapes and earlier windows fix them); the output's dims are then fixed
 * too, and a wrong parameter shape is caught by model_config_resolve like any other.
 */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

const char *const *cfg_window_keys(model_config_op op) {
    static const char *const conv[] = {
        "op",           "name",        "input",  "output",  "weight",   "bias",   "activation",
        "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", NULL};
    static const char *const maxpool[] = {"op",          "name",   "input",   "output",
                                          "kernel_size", "stride", "padding", NULL};
    static const char *const avgpool[] = {"op",          "name",   "input",   "output",
                                          "kernel_size", "stride", "padding", "count_include_pad",
                                          NULL};
    if (op == MODEL_CONFIG_OP_CONV2D) {
        return conv;
    }
    return op == MODEL_CONFIG_OP_MAXPOOL2D ? maxpool : avgpool;
}

/* One integer in lo..MODEL_CONFIG_MAX_WINDOW. */
static bool window_int(json_t *v, uint32_t lo, uint32_t *ret) {
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo ||
        json_integer_value(v) > MODEL_CONFIG_MAX_WINDOW) {
        return false;
    }
    *ret = (uint32_t)json_integer_value(v);
    return true;
}

/* A window field: an integer or [h, w], each lo..MODEL_CONFIG_MAX_WINDOW; `dflt` when
 * missing (a missing required field is an error). */
static ps_status window_field(const layer_ctx *lc, json_t *obj, const char *key, bool required,
                              uint32_t lo, const uint32_t dflt[2], uint32_t ret[2], char *err,
                              size_t err_len) {
    json_t *v = json_object_get(obj, key);
    if (v == NULL && !required) {
        ret[0] = dflt[0];
        ret[1] = dflt[1];
        return PS_STATUS_OK;
    }
    bool ok = false;
    if (json_is_array(v)) {
        ok = json_array_size(v) == 2 && window_int(json_array_get(v, 0), lo, &ret[0]) &&
             window_int(json_array_get(v, 1), lo, &ret[1]);
    } else if (window_int(v, lo, &ret[0])) {
        ret[1] = ret[0];
        ok = true;
    }
    if (!ok) {
        ps_set_err(err, err_len,
                   "%s: %s\"%s\" must be an integer or a list [h, w] of integers from %u to %d",
                   lc->where, v == NULL ? "missing field " : "", key, lo, MODEL_CONFIG_MAX_WINDOW);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* The window's fields into info->window. */
static ps_status parse_window_fields(const layer_ctx *lc, json_t *obj, model_config_layer *info,
                                     char *err, size_t err_len) {
    model_config_window *w = &info->window;
    const bool conv = info->op == MODEL_CONFIG_OP_CONV2D;
    static const uint32_t ones[2] = {1, 1};
    static const uint32_t zeros[2] = {0, 0};
    ps_status st = window_field(lc, obj, "kernel_size", true, 1, ones, w->kernel, err, err_len);
    if (st == PS_STATUS_OK) {
        st = window_field(lc, obj, "stride", false, 1, conv ? ones : w->kernel, w->stride, err,
                          err_len);
    }
    if (st == PS_STATUS_OK) {
        st = window_field(lc, obj, "padding", false, 0, zeros, w->padding, err, err_len);
    }
    if (st == PS_STATUS_OK && conv) {
        st = window_field(lc, obj, "dilation", false, 1, ones, w->dilation, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    w->groups = 1;
    w->count_include_pad = true;
    if (!conv) {
        w->dilation[0] = w->dilation[1] = 1;
        json_t *cip = json_object_get(obj, "count_include_pad");
        if (cip != NULL && !json_is_boolean(cip)) {
            ps_set_err(err, err_len, "%s: \"count_include_pad\" must be true or false", lc->where);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        w->count_include_pad = cip == NULL || json_is_true(cip);
        if (w->padding[0] > w->kernel[0] / 2 || w->padding[1] > w->kernel[1] / 2) {
            ps_set_err(err, err_len,
                       "%s: padding [%u, %u] must be at most half the kernel [%u, %u]", lc->where,
                       w->padding[0], w->padding[1], w->kernel[0], w->kernel[1]);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        return PS_STATUS_OK;
    }
    json_t *g = json_object_get(obj, "groups");
    if (g != NULL && !window_int(g, 1, &w->groups)) {
        ps_set_err(err, err_len, "%s: \"groups\" must be an integer from 1 to %d", lc->where,
                   MODEL_CONFIG_MAX_WINDOW);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!window_int(json_object_get(obj, "out_channels"), 1, &w->out_channels)) {
        ps_set_err(err, err_len, "%s: \"out_channels\" must be an integer from 1 to %d", lc->where,
                   MODEL_CONFIG_MAX_WINDOW);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return cfg_parse_activation(lc, obj, info, err, err_len);
}

/* A new variable fixed at `value` into *ret. */
static ps_status fixed_var(model_config *cfg, int64_t value, size_t *ret) {
    *ret = cfg_var_new(cfg, value);
    return *ret == SIZE_MAX ? PS_STATUS_NO_MEMORY : PS_STATUS_OK;
}

/* Output size along one axis; false when the (dilated) window does not fit. */
static bool out_size(int64_t in, uint32_t k, uint32_t s, uint32_t p, uint32_t d, int64_t *ret) {
    const int64_t span = (int64_t)d * ((int64_t)k - 1) + 1;
    const int64_t padded = in + 2 * (int64_t)p;
    if (padded < span) {
        return false;
    }
    *ret = (padded - span) / s + 1;
    return true;
}

/* The conv2d's weight [K, C/groups, R, S] and bias [K]. */
static ps_status conv_params(model_config *cfg, const layer_ctx *lc, json_t *obj,
                             model_config_layer *info, int64_t c, size_t k_var, char *err,
                             size_t err_len) {
    const model_config_window *w = &info->window;
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const int64_t want[4] = {w->out_channels, c / w->groups, w->kernel[0], w->kernel[1]};
    static const char *const meaning[4] = {"out_channels of", "the channels per group of input",
                                           "kernel_size[0] of", "kernel_size[1] of"};
    ps_status st = cfg_param_field(cfg, lc, obj, "weight", true, 4, &info->weight, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_param_field(cfg, lc, obj, "bias", false, 1, &info->bias, err, err_len);
    }
    for (uint32_t d = 0; d < 4 && st == PS_STATUS_OK; d++) {
        size_t v = k_var;
        if (d > 0) {
            st = fixed_var(cfg, want[d], &v);
        }
        if (st == PS_STATUS_OK) {
            st = cfg_tie_param_dim(cfg, lc, info->weight, d, v, d == 1 ? x->name : lc->where,
                                   meaning[d], err, err_len);
        }
    }
    if (st == PS_STATUS_OK && info->bias != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->bias, 0, k_var, lc->where, "out_channels of", err,
                               err_len);
    }
    return st;
}

ps_status cfg_parse_window(model_config *cfg, const layer_ctx *lc, json_t *obj,
                           model_config_layer *info, cfg_value *out, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const uint32_t lead = cfg->max_batch > 0 ? 1 : 0;
    if (x->ndims != lead + 3) {
        ps_set_err(err, err_len, "%s: input \"%s\" has %u dims; it must be %s (NCHW)", lc->where,
                   x->name, x->ndims, lead > 0 ? "[-1, C, H, W]" : "[C, H, W]");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = parse_window_fields(lc, obj, info, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const model_config_window *w = &info->window;
    const bool conv = info->op == MODEL_CONFIG_OP_CONV2D;
    int64_t chw[3];
    static const char *const axis[3] = {"channel count", "height", "width"};
    for (uint32_t d = 0; d < 3; d++) {
        chw[d] = cfg_var_value(cfg->vars, x->vars[lead + d]);
        if (chw[d] <= 0 && (conv || d > 0)) {
            ps_set_err(err, err_len,
                       "%s: the %s of input \"%s\" is not fixed by the config (it depends on a "
                       "parameter's shape); reshape the input first",
                       lc->where, axis[d], x->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    int64_t p;
    int64_t q;
    if (!out_size(chw[1], w->kernel[0], w->stride[0], w->padding[0], w->dilation[0], &p) ||
        !out_size(chw[2], w->kernel[1], w->stride[1], w->padding[1], w->dilation[1], &q)) {
        ps_set_err(err, err_len,
                   "%s: the kernel [%u, %u] (dilation [%u, %u]) does not fit input \"%s\" of "
                   "%lld x %lld with padding [%u, %u]",
                   lc->where, w->kernel[0], w->kernel[1], w->dilation[0], w->dilation[1], x->name,
                   (long long)chw[1], (long long)chw[2], w->padding[0], w->padding[1]);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    size_t c_var = x->vars[lead];
    if (conv) {
        if (chw[0] % w->groups != 0 || w->out_channels % w->groups != 0) {
            ps_set_err(err, err_len,
                       "%s: groups %u must divide the input's channels (%lld) and out_channels "
                       "(%u)",
                       lc->where, w->groups, (long long)chw[0], w->out_channels);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        st = fixed_var(cfg, w->out_channels, &c_var);
        if (st == PS_STATUS_OK) {
            st = conv_params(cfg, lc, obj, info, chw[0], c_var, err, err_len);
        }
    }
    if (st == PS_STATUS_OK && (double)(cfg->max_batch > 0 ? cfg->max_batch : 1) *
                                      (double)(conv ? w->out_channels : (chw[0] > 0 ? chw[0] : 1)) *
                                      (double)p * (double)q >
                                  (double)DIM_LIMIT) {
        ps_set_err(err, err_len, "%s: the output of %lld x %lld per channel is too large",
                   lc->where, (long long)p, (long long)q);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    out->vars[lead] = c_var;
    if (st == PS_STATUS_OK) {
        st = fixed_var(cfg, p, &out->vars[lead + 1]);
    }
    if (st == PS_STATUS_OK) {
        st = fixed_var(cfg, q, &out->vars[lead + 2]);
    }
    return st;
}

/* reshape's "shape" into dims (the per-sample dims); *ret_count their product. */
static ps_status parse_shape(const layer_ctx *lc, json_t *obj, uint32_t max_dims, int64_t *dims,
                             uint32_t *ret_n, int64_t *ret_count, char *err, size_t err_len) {
    json_t *shape = json_object_get(obj, "shape");
    const size_t n = json_array_size(shape);
    int64_t count = 1;
    bool ok = json_is_array(shape) && n >= 1 && n <= max_dims;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *d = json_array_get(shape, i);
        ok = json_is_integer(d) && json_integer_value(d) >= 1 &&
             json_integer_value(d) <= DIM_LIMIT / count;
        if (ok) {
            dims[i] = json_integer_value(d);
            count *= dims[i];
        }
    }
    if (!ok) {
        ps_set_err(err, err_len,
                   "%s: \"shape\" must be a list of 1 to %u positive integers (the shape of one "
                   "sample, without the batch dim) of at most %lld elements",
                   lc->where, max_dims, (long long)DIM_LIMIT);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_n = (uint32_t)n;
    *ret_count = count;
    return PS_STATUS_OK;
}

ps_status cfg_parse_reshape(model_config *cfg, const layer_ctx *lc, json_t *obj,
                            const model_config_layer *info, cfg_value *out, char *err,
                            size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const uint32_t lead = cfg->max_batch > 0 ? 1 : 0;
    const bool flatten = info->op == MODEL_CONFIG_OP_FLATTEN;
    if (flatten && x->ndims == lead + 1) {
        return PS_STATUS_OK; /* already flat: the output is the input */
    }
    /* The input's per-sample element count, and its one dim not fixed (if any). */
    int64_t known = 1;
    uint32_t n_unknown = 0;
    size_t unknown_var = 0;
    for (uint32_t d = lead; d < x->ndims; d++) {
        const int64_t v = cfg_var_value(cfg->vars, x->vars[d]);
        if (v > 0 && known > DIM_LIMIT / v) {
            ps_set_err(err, err_len, "%s: input \"%s\" has more than %lld elements per sample",
                       lc->where, x->name, (long long)DIM_LIMIT);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (v > 0) {
            known *= v;
        } else {
            n_unknown++;
            unknown_var = x->vars[d];
        }
    }
    int64_t dims[MODEL_MAX_DIMS];
    uint32_t n = 1;
    int64_t count = known;
    dims[0] = known;
    if (flatten && n_unknown > 0) {
        ps_set_err(err, err_len,
                   "%s: %u dims of input \"%s\" are not fixed by the config (they depend on a "
                   "parameter's shape); flatten needs them all",
                   lc->where, n_unknown, x->name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!flatten) {
        ps_status st = parse_shape(lc, obj, MODEL_MAX_DIMS - lead, dims, &n, &count, err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    int64_t a = 0;
    int64_t b = 0;
    size_t v;
    if (n_unknown == 1 && count % known == 0) {
        if (fixed_var(cfg, count / known, &v) != PS_STATUS_OK) {
            return PS_STATUS_NO_MEMORY;
        }
        if (cfg_var_unify(cfg->vars, unknown_var, v, &a, &b)) {
            n_unknown = 0;
            known = count;
        }
    }
    if (n_unknown > 0 || known != count) {
        ps_set_err(err, err_len,
                   "%s: input \"%s\" has %s%lld elements per sample, but \"shape\" holds %lld",
                   lc->where, x->name, n_unknown > 0 ? "an unknown multiple of " : "",
                   (long long)known, (long long)count);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    out->ndims = lead + n;
    for (uint32_t d = 0; d < n; d++) {
        if (fixed_var(cfg, dims[d], &out->vars[lead + d]) != PS_STATUS_OK) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    return PS_STATUS_OK;
}
