/* train_config.c: the training fields of config.json (see train_config.h). */
#include "train_config.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct tensor_opt {
    char *name;
    optim_spec spec;
} tensor_opt;

struct train_config {
    bool has_default;
    optim_spec default_opt;
    tensor_opt *tensors;
    size_t n_tensors;
    train_table *tables;
    size_t n_tables;
    bool skip_non_finite;
    train_consistency consistency;
    uint32_t staleness;
    train_propagation propagation;
    uint32_t served_versions;
};

/* An optimizer object: "type" and hyper-parameters over the kind's defaults. */
static ps_status parse_optimizer(json_t *obj, const char *where, optim_spec *ret, char *err,
                                 size_t err_len) {
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: want an object like {\"type\": \"adam\", \"lr\": 0.001}",
                   where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    json_t *type = json_object_get(obj, "type");
    optim_kind kind;
    if (!json_is_string(type) || !optim_kind_parse(json_string_value(type), &kind) ||
        kind == OPTIM_NONE) {
        ps_set_err(err, err_len, "%s: \"type\" must be one of sgd, adagrad, adam, ftrl", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    optim_spec spec;
    optim_spec_defaults(kind, &spec);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "type") == 0)
            continue;
        if (!json_is_number(v)) {
            ps_set_err(err, err_len, "%s: \"%s\" must be a number", where, key);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        char why[256];
        if (optim_spec_set(&spec, key, json_number_value(v), why, sizeof why) != PS_STATUS_OK) {
            ps_set_err(err, err_len, "%s: %s", where, why);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    char why[256];
    if (optim_spec_check(&spec, why, sizeof why) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %s", where, why);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret = spec;
    return PS_STATUS_OK;
}

static ps_status check_allowed(json_t *obj, const char *const *allowed, size_t n, const char *where,
                               char *err, size_t err_len) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok) {
            ps_set_err(err, err_len, "%s: unknown field \"%s\"", where, key);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || s[i] == '/' || s[i] == 0x7f)
            return false;
    return true;
}

static ps_status parse_table(json_t *obj, size_t i, train_table *t, char *err, size_t err_len) {
    char where[64];
    snprintf(where, sizeof where, "tables[%zu]", i);
    static const char *const allowed[] = {"name", "dim", "seed", "init", "optimizer"};
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "%s: want an object with name, dim, init, seed, optimizer", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = check_allowed(obj, allowed, 5, where, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    json_t *name = json_object_get(obj, "name"), *dim = json_object_get(obj, "dim");
    json_t *seed = json_object_get(obj, "seed"), *init = json_object_get(obj, "init");
    json_t *opt = json_object_get(obj, "optimizer");
    if (!json_is_string(name) || !valid_name(json_string_value(name))) {
        ps_set_err(err, err_len, "%s: \"name\" must be 1-255 printable bytes without '/'", where);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!json_is_integer(dim) || json_integer_value(dim) < 1 ||
        json_integer_value(dim) > TABLE_MAX_DIM) {
        ps_set_err(err, err_len, "%s (%s): \"dim\" must be an integer in 1..%u", where,
                   json_string_value(name), TABLE_MAX_DIM);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0)) {
        ps_set_err(err, err_len, "%s (%s): \"seed\" must be a non-negative integer", where,
                   json_string_value(name));
        return PS_STATUS_INVALID_ARGUMENT;
    }
    t->spec.dim = (uint32_t)json_integer_value(dim);
    t->spec.seed = seed ? (uint64_t)json_integer_value(seed) : 0;
    t->spec.init = TABLE_INIT_ZEROS;
    if (init) {
        static const char *const init_allowed[] = {"type", "scale"};
        json_t *type = json_object_get(init, "type"), *scale = json_object_get(init, "scale");
        if (!json_is_object(init) ||
            check_allowed(init, init_allowed, 2, where, err, err_len) != PS_STATUS_OK ||
            !json_is_string(type) || !table_init_parse(json_string_value(type), &t->spec.init) ||
            (scale && !json_is_number(scale))) {
            ps_set_err(err, err_len,
                       "%s (%s): \"init\" must be {\"type\": zeros|uniform|normal, \"scale\": "
                       "number}",
                       where, json_string_value(name));
            return PS_STATUS_INVALID_ARGUMENT;
        }
        t->spec.init_scale = scale ? (float)json_number_value(scale) : 0.0f;
    }
    memset(&t->optimizer, 0, sizeof t->optimizer);
    if (opt) {
        char owhere[320];
        snprintf(owhere, sizeof owhere, "%s (%s) optimizer", where, json_string_value(name));
        if ((st = parse_optimizer(opt, owhere, &t->optimizer, err, err_len)) != PS_STATUS_OK)
            return st;
    }
    t->spec.optimizer = t->optimizer.kind;
    char why[256];
    if (table_spec_check(&t->spec, why, sizeof why) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s (%s): %s", where, json_string_value(name), why);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    t->name = strdup(json_string_value(name));
    return t->name ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

static ps_status parse_tables(train_config *cfg, json_t *arr, char *err, size_t err_len) {
    if (!json_is_array(arr) || json_array_size(arr) > TRAIN_CONFIG_MAX_TABLES) {
        ps_set_err(err, err_len, "\"tables\" must be an array of at most %u tables",
                   TRAIN_CONFIG_MAX_TABLES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    size_t n = json_array_size(arr);
    cfg->tables = calloc(n + 1, sizeof *cfg->tables);
    if (!cfg->tables)
        return PS_STATUS_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        ps_status st = parse_table(json_array_get(arr, i), i, &cfg->tables[i], err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        cfg->n_tables++;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->tables[j].name, cfg->tables[i].name) == 0) {
                ps_set_err(err, err_len, "tables[%zu]: table \"%s\" is declared twice", i,
                           cfg->tables[i].name);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    return PS_STATUS_OK;
}

static ps_status parse_tensors(train_config *cfg, json_t *obj, char *err, size_t err_len) {
    if (!json_is_object(obj) || json_object_size(obj) > TRAIN_CONFIG_MAX_TENSORS) {
        ps_set_err(err, err_len,
                   "training.tensors must be an object of at most %u tensor names to optimizers",
                   TRAIN_CONFIG_MAX_TENSORS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    cfg->tensors = calloc(json_object_size(obj) + 1, sizeof *cfg->tensors);
    if (!cfg->tensors)
        return PS_STATUS_NO_MEMORY;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        tensor_opt *t = &cfg->tensors[cfg->n_tensors];
        char where[320];
        snprintf(where, sizeof where, "training.tensors[\"%.255s\"]", key);
        ps_status st = parse_optimizer(v, where, &t->spec, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        if (!(t->name = strdup(key)))
            return PS_STATUS_NO_MEMORY;
        cfg->n_tensors++;
    }
    return PS_STATUS_OK;
}

static ps_status parse_choice(json_t *v, const char *what, const char *const *names, size_t n,
                              int *ret, char *err, size_t err_len) {
    for (size_t i = 0; json_is_string(v) && i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *ret = (int)i;
            return PS_STATUS_OK;
        }
    }
    ps_set_err(err, err_len, "training.%s must be one of %s%s%s%s%s", what, names[0],
               n > 1 ? ", " : "", n > 1 ? names[1] : "", n > 2 ? ", " : "", n > 2 ? names[2] : "");
    return PS_STATUS_INVALID_ARGUMENT;
}

static const char *const CONSISTENCY[] = {"asp", "bsp", "ssp"};
static const char *const PROPAGATION[] = {"streaming", "consistent"};
static const char *const NON_FINITE[] = {"reject", "skip"};

static ps_status parse_training(train_config *cfg, json_t *tr, char *err, size_t err_len) {
    static const char *const allowed[] = {"optimizer",   "tensors",   "non_finite",
                                          "consistency", "staleness", "propagation"};
    if (!json_is_object(tr)) {
        ps_set_err(err, err_len, "\"training\" must be an object");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = check_allowed(tr, allowed, 6, "training", err, err_len);
    json_t *v;
    int choice = 0;
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "optimizer"))) {
        st = parse_optimizer(v, "training.optimizer", &cfg->default_opt, err, err_len);
        cfg->has_default = st == PS_STATUS_OK;
    }
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "tensors")))
        st = parse_tensors(cfg, v, err, err_len);
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "non_finite"))) {
        st = parse_choice(v, "non_finite", NON_FINITE, 2, &choice, err, err_len);
        cfg->skip_non_finite = choice == 1;
    }
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "consistency"))) {
        st = parse_choice(v, "consistency", CONSISTENCY, 3, &choice, err, err_len);
        cfg->consistency = (train_consistency)choice;
        cfg->staleness = cfg->consistency == TRAIN_CONSISTENCY_SSP ? 1 : 0;
    }
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "staleness"))) {
        if (cfg->consistency != TRAIN_CONSISTENCY_SSP || !json_is_integer(v) ||
            json_integer_value(v) < 0 || json_integer_value(v) > TRAIN_CONFIG_MAX_STALENESS) {
            ps_set_err(err, err_len,
                       "training.staleness goes with \"consistency\": \"ssp\" and must be an "
                       "integer in 0..%u",
                       TRAIN_CONFIG_MAX_STALENESS);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        cfg->staleness = (uint32_t)json_integer_value(v);
    }
    if (st == PS_STATUS_OK && (v = json_object_get(tr, "propagation"))) {
        st = parse_choice(v, "propagation", PROPAGATION, 2, &choice, err, err_len);
        cfg->propagation = (train_propagation)choice;
    }
    return st;
}

static ps_status parse_root(train_config *cfg, json_t *root, char *err, size_t err_len) {
    if (!json_is_object(root)) {
        ps_set_err(err, err_len, "config.json must be a JSON object");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    json_t *v;
    ps_status st = PS_STATUS_OK;
    cfg->served_versions = 1;
    if ((v = json_object_get(root, "version_policy"))) {
        static const char *const allowed[] = {"latest"};
        json_t *n = json_object_get(v, "latest");
        if (json_is_object(v) &&
            (st = check_allowed(v, allowed, 1, "version_policy", err, err_len)) != PS_STATUS_OK)
            return st;
        if (!json_is_integer(n) || json_integer_value(n) < 1 ||
            json_integer_value(n) > TRAIN_CONFIG_MAX_SERVED_VERSIONS) {
            ps_set_err(err, err_len,
                       "version_policy must be {\"latest\": N} with N in 1..%u (the versions "
                       "replicas serve side by side)",
                       TRAIN_CONFIG_MAX_SERVED_VERSIONS);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        cfg->served_versions = (uint32_t)json_integer_value(n);
    }
    if ((v = json_object_get(root, "training")))
        st = parse_training(cfg, v, err, err_len);
    if (st == PS_STATUS_OK && (v = json_object_get(root, "tables")))
        st = parse_tables(cfg, v, err, err_len);
    return st;
}

ps_status train_config_parse(const char *text, size_t len, train_config **ret_cfg, char *err,
                             size_t err_len) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ps_set_err(err, err_len, "config.json line %d: %s", jerr.line, jerr.text);
        return PS_STATUS_PARSE;
    }
    train_config *cfg = calloc(1, sizeof *cfg);
    ps_status st = cfg ? parse_root(cfg, root, err, err_len) : PS_STATUS_NO_MEMORY;
    json_decref(root);
    if (st != PS_STATUS_OK) {
        if (st == PS_STATUS_NO_MEMORY)
            ps_set_err(err, err_len, "out of memory parsing the training fields");
        train_config_destroy(cfg);
        return st;
    }
    *ret_cfg = cfg;
    return PS_STATUS_OK;
}

void train_config_destroy(train_config *cfg) {
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_tensors; i++)
        free(cfg->tensors[i].name);
    for (size_t i = 0; i < cfg->n_tables; i++)
        free((char *)cfg->tables[i].name);
    free(cfg->tensors);
    free(cfg->tables);
    free(cfg);
}

bool train_config_optimizer(const train_config *cfg, const char *tensor, optim_spec *ret) {
    for (size_t i = 0; i < cfg->n_tensors; i++) {
        if (strcmp(cfg->tensors[i].name, tensor) == 0) {
            *ret = cfg->tensors[i].spec;
            return true;
        }
    }
    if (cfg->has_default)
        *ret = cfg->default_opt;
    return cfg->has_default;
}

bool train_config_skip_non_finite(const train_config *cfg) {
    return cfg->skip_non_finite;
}

train_consistency train_config_consistency(const train_config *cfg) {
    return cfg->consistency;
}

uint32_t train_config_staleness(const train_config *cfg) {
    return cfg->staleness;
}

train_propagation train_config_propagation(const train_config *cfg) {
    return cfg->propagation;
}

uint32_t train_config_served_versions(const train_config *cfg) {
    return cfg->served_versions;
}

size_t train_config_table_count(const train_config *cfg) {
    return cfg->n_tables;
}

bool train_config_table_at(const train_config *cfg, size_t i, train_table *ret) {
    if (i >= cfg->n_tables)
        return false;
    *ret = cfg->tables[i];
    return true;
}

bool train_config_table_find(const train_config *cfg, const char *name, train_table *ret) {
    for (size_t i = 0; i < cfg->n_tables; i++)
        if (strcmp(cfg->tables[i].name, name) == 0)
            return train_config_table_at(cfg, i, ret);
    return false;
}

const char *train_consistency_name(train_consistency c) {
    return (unsigned)c < 3 ? CONSISTENCY[c] : "?";
}

const char *train_propagation_name(train_propagation p) {
    return (unsigned)p < 2 ? PROPAGATION[p] : "?";
}
