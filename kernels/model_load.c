/* model_load.c: model instances from weights files: from a parsed safetensors file
 * (shapes, then values) and from a model directory (config.json + <version>/
 * model.safetensors). See model.h. */
#include "model_internal.h"
#include "util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (status == PS_STATUS_OK) {
        status = model_params_sync(m, err, err_len); /* nobody else sees m yet */
    }
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
                       p->desc.name,
                       model_dims_str(p->desc.dims, p->desc.ndims, want, sizeof(want)));
            return PS_STATUS_INVALID_ARGUMENT;
        }
        memcpy(p->data, t.data, p->count * sizeof(float));
        model_device_param_mark(m, p, 0, p->count);
    }
    return PS_STATUS_OK;
}
