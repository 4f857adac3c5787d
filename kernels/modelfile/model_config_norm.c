/* model_config_norm.c: config.json's layernorm layer (see model_config.h): its weight
 * and bias, each as wide as the input's last axis, and its eps. */
#include "model_config_internal.h"
#include "util.h"

#include <math.h>
#include <stdio.h>

#define LAYERNORM_DEFAULT_EPS 1e-5 /* PyTorch LayerNorm's default */

ps_status cfg_parse_layernorm(model_config *cfg, const layer_ctx *lc, json_t *obj,
                              model_config_layer *info, char *err, size_t err_len) {
    const cfg_value *x = &cfg->values[info->inputs[0]];
    const size_t last = x->vars[x->ndims - 1];
    json_t *eps = json_object_get(obj, "eps");
    const double e = eps == NULL ? LAYERNORM_DEFAULT_EPS : json_number_value(eps);
    if ((eps != NULL && !json_is_number(eps)) || !isfinite(e) || !(e > 0.0) || !((float)e > 0.0f) ||
        !isfinite((float)e)) {
        ps_set_err(err, err_len, "%s: \"eps\" must be a finite number > 0 (a float32)", lc->where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    info->eps = (float)e;
    ps_status st = cfg_param_field(cfg, lc, obj, "weight", false, 1, &info->weight, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_param_field(cfg, lc, obj, "bias", false, 1, &info->bias, err, err_len);
    }
    if (st == PS_STATUS_OK && info->weight != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->weight, 0, last, x->name,
                               "the feature count of input", err, err_len);
    }
    if (st == PS_STATUS_OK && info->bias != MODEL_CONFIG_NONE) {
        st = cfg_tie_param_dim(cfg, lc, info->bias, 0, last, x->name, "the feature count of input",
                               err, err_len);
    }
    return st;
}
