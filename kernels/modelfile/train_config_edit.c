/* train_config_edit.c: train_config_set, psctl's edit of an optimizer in config.json
 * text (see train_config.h). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "train_config.h"
#include "util.h"

/* The object holding `key` in parent, made (empty) when absent; NULL when the field
 * exists but is not an object, or on no memory. */
static json_t *child_object(json_t *parent, const char *key) {
    json_t *o = json_object_get(parent, key);
    if (o)
        return json_is_object(o) ? o : NULL;
    o = json_object();
    if (!o || json_object_set_new(parent, key, o) != 0)
        return NULL;
    return o;
}

static json_t *find_table(json_t *root, const char *name) {
    json_t *tables = json_object_get(root, "tables"), *t;
    size_t i;
    json_array_foreach(tables, i, t) {
        json_t *n = json_object_get(t, "name");
        if (json_is_string(n) && strcmp(json_string_value(n), name) == 0)
            return t;
    }
    return NULL;
}

/* Where the edited optimizer goes: *ret_parent[*ret_key]; *ret_base is what it starts
 * from when it has no entry of its own (a tensor inherits the default). */
static ps_status locate(json_t *root, const char *target, bool is_table, json_t **ret_parent,
                        const char **ret_key, json_t **ret_base, char *err, size_t err_len) {
    if (is_table) {
        json_t *t = find_table(root, target);
        if (!t) {
            ps_set_err(err, err_len, "the model declares no table \"%s\"", target);
            return PS_STATUS_NOT_FOUND;
        }
        *ret_parent = t;
        *ret_key = "optimizer";
        *ret_base = NULL;
        return PS_STATUS_OK;
    }
    json_t *training = child_object(root, "training");
    if (!training) {
        ps_set_err(err, err_len, "\"training\" in config.json is not an object");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!target) {
        *ret_parent = training;
        *ret_key = "optimizer";
        *ret_base = NULL;
        return PS_STATUS_OK;
    }
    json_t *tensors = child_object(training, "tensors");
    if (!tensors) {
        ps_set_err(err, err_len, "training.tensors in config.json is not an object");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_parent = tensors;
    *ret_key = target;
    *ret_base = json_object_get(training, "optimizer");
    return PS_STATUS_OK;
}

static ps_status edit(json_t *root, const char *target, bool is_table, const char *kind,
                      const char *field, double value, char *err, size_t err_len) {
    json_t *parent, *base;
    const char *key;
    ps_status st = locate(root, target, is_table, &parent, &key, &base, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    json_t *opt = json_object_get(parent, key);
    if (kind || !opt) {
        if (!kind && !base) {
            ps_set_err(err, err_len, "%s%s has no optimizer yet: name its type (--type)",
                       target ? (is_table ? "table " : "tensor ") : "the model",
                       target ? target : "");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        opt = kind ? json_pack("{ss}", "type", kind) : json_deep_copy(base);
        if (!opt || json_object_set_new(parent, key, opt) != 0)
            return PS_STATUS_NO_MEMORY;
    }
    if (field && json_object_set_new(opt, field, json_real(value)) != 0)
        return PS_STATUS_NO_MEMORY;
    return PS_STATUS_OK;
}

ps_status train_config_set(const char *text, size_t len, const char *target, bool is_table,
                           const char *kind, const char *field, double value, char **ret_text,
                           char *err, size_t err_len) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ps_set_err(err, err_len, "config.json line %d: %s", jerr.line, jerr.text);
        return PS_STATUS_PARSE;
    }
    ps_status st = json_is_object(root)
                       ? edit(root, target, is_table, kind, field, value, err, err_len)
                       : PS_STATUS_INVALID_ARGUMENT;
    char *out = NULL;
    if (st == PS_STATUS_OK && !(out = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(9))))
        st = PS_STATUS_NO_MEMORY;
    json_decref(root);
    train_config *check = NULL;
    if (st == PS_STATUS_OK)
        st = train_config_parse(out, strlen(out), &check, err, err_len);
    train_config_destroy(check);
    if (st != PS_STATUS_OK) {
        if (st == PS_STATUS_NO_MEMORY)
            ps_set_err(err, err_len, "out of memory editing config.json");
        free(out);
        return st;
    }
    *ret_text = out;
    return PS_STATUS_OK;
}
