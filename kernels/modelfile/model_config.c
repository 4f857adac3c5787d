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
 * One rule is not an equality: a concat's width is the sum of its inputs' widths; those
 * sums are applied once their terms are known (model_config_ops.c says how). Two more
 * wait for the parameters' dims, positions >= tokens and heads dividing the width
 * (model_config_seq.c).
 *
 * Errors are found in reading order (inputs, outputs, tables, layers top to bottom), so
 * the message names the first place a person has to fix.
 *
 * This file holds the top level (parse, load, clone, destroy); the other parts are
 * listed in model_config_internal.h.
 */
#include "model_config_internal.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    cfg_names_free(&cfg->value_names);
    cfg_names_free(&cfg->param_names);
    for (size_t i = 0; i < cfg->n_params; i++) {
        free(cfg->params[i].name);
    }
    free(cfg->params);
    for (size_t i = 0; i < cfg->n_tables; i++) {
        free(cfg->tables[i].name);
    }
    free(cfg->tables);
    free(cfg->text_in.name);
    free(cfg->text_in.vocab);
    free(cfg->sums);
    free(cfg->vars);
    free(cfg->name);
    free(cfg->text);
    free(cfg);
}

/* ------------------------------------------------------------------------------------ */
/* The top level */

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
    ps_status st = cfg_get_name(root, "name", true, "config", &name, err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (!model_name_ok(name)) {
        ps_set_err(err, err_len,
                   "config: name \"%s\" may only contain letters, digits, '_', '-' and '.'", name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    cfg->name = cfg_dup_str(name);
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
    if (cfg_var_new(cfg, DIM_BATCH) != BATCH_VAR) {
        return PS_STATUS_NO_MEMORY;
    }

    st = cfg_parse_io_list(cfg, root, "inputs", &cfg->n_inputs, &cfg->inputs, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_parse_io_list(cfg, root, "outputs", &cfg->n_outputs, &cfg->outputs, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = cfg_parse_tokenizer(cfg, root, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = cfg_parse_tables(cfg, root, err, err_len);
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
    cfg->sums = calloc(n_layers, sizeof(*cfg->sums));
    cfg->values = calloc(cfg->n_inputs + n_layers, sizeof(*cfg->values));
    if (cfg->layers == NULL || cfg->sums == NULL || cfg->values == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        const cfg_io *in = &cfg->inputs[i];
        cfg_value *v = &cfg->values[i];
        v->name = in->name;
        v->ndims = in->ndims;
        v->producer = MODEL_CONFIG_NONE;
        v->ids = in->ids;
        for (uint32_t d = 0; d < in->ndims; d++) {
            v->vars[d] = in->dims[d] == DIM_BATCH ? BATCH_VAR : cfg_var_new(cfg, in->dims[d]);
            if (v->vars[d] == SIZE_MAX) {
                return PS_STATUS_NO_MEMORY;
            }
        }
        cfg->n_values = i + 1;
        if (cfg_names_add(cfg, &cfg->value_names, i) != PS_STATUS_OK) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    for (size_t i = 0; i < n_layers; i++) {
        layer_ctx lc = {.index = i, .all = layers};
        st = cfg_parse_layer(cfg, &lc, json_array_get(layers, i), err, err_len);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    st = cfg_check_outputs(cfg, err, err_len);
    if (st == PS_STATUS_OK) {
        st = cfg_sums_apply(cfg, cfg->vars, err, err_len);
    }
    if (st == PS_STATUS_OK) {
        st = cfg_seq_check(cfg, cfg->vars, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (size_t v = 0; v < cfg->n_vars; v++) {
        cfg->vars[v].parent = cfg_var_find(cfg->vars, v);
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
