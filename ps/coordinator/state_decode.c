/* state_decode.c: the strict reader of the coordinator's state file (state_store.h
 * documents the format). Every field is checked for its type and range before use, and
 * the first problem is reported as "where: what", e.g. "nodes[1].weight: expected an
 * integer 1..1000, got a string", so a person can find it in the file. */
#include "state_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util.h"

static const char *kind(const json_t *v) {
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return v ? "null" : "nothing (the field is missing)";
    }
}

/* obj[key] as an integer in [min, max]. */
static bool get_int(const json_t *obj, const char *where, const char *key, json_int_t min,
                    json_int_t max, json_int_t *ret, char *err, size_t err_len) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        ps_set_err(err, err_len, "%s%s: expected an integer %lld..%lld, got %s", where, key,
                   (long long)min, (long long)max, kind(v));
        return false;
    }
    if (json_integer_value(v) < min || json_integer_value(v) > max) {
        ps_set_err(err, err_len, "%s%s: expected an integer %lld..%lld, got %lld", where, key,
                   (long long)min, (long long)max, (long long)json_integer_value(v));
        return false;
    }
    *ret = json_integer_value(v);
    return true;
}

static bool get_str(const json_t *obj, const char *where, const char *key, const char **ret,
                    char *err, size_t err_len) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        ps_set_err(err, err_len, "%s%s: expected a string, got %s", where, key, kind(v));
        return false;
    }
    *ret = json_string_value(v);
    return true;
}

/* obj[key] as a boolean; when absent, `dflt` if optional. */
static bool get_bool(const json_t *obj, const char *where, const char *key, bool optional,
                     bool dflt, bool *ret, char *err, size_t err_len) {
    const json_t *v = json_object_get(obj, key);
    if (!v && optional) {
        *ret = dflt;
        return true;
    }
    if (!json_is_boolean(v)) {
        ps_set_err(err, err_len, "%s%s: expected a boolean, got %s", where, key, kind(v));
        return false;
    }
    *ret = json_is_true(v);
    return true;
}

static const json_t *get_array(const json_t *obj, const char *where, const char *key, size_t max,
                               char *err, size_t err_len) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_array(v)) {
        ps_set_err(err, err_len, "%s%s: expected an array, got %s", where, key, kind(v));
        return NULL;
    }
    if (json_array_size(v) > max) {
        ps_set_err(err, err_len, "%s%s: %zu entries, over the limit of %zu", where, key,
                   json_array_size(v), max);
        return NULL;
    }
    return v;
}

/* ----------------------------------------------------------------- nodes --- */

/* jn["tokens"] (state_store.h) into a malloc'd array: *ret_tokens stays NULL when the
 * node has none. PARSE with a message for anything but 1..HASHRING_MAX_POINTS strictly
 * ascending tokens of STATE_STORE_TOKEN_HEX lowercase hex digits, or tokens in a format
 * 1 file or on a node that is not a shard. */
static ps_status decode_tokens(const json_t *jn, const char *where, json_int_t format, bool shard,
                               uint64_t **ret_tokens, uint32_t *ret_n, char *err, size_t err_len) {
    const json_t *v = json_object_get(jn, "tokens");
    if (!v)
        return PS_STATUS_OK;
    if (!json_is_string(v)) {
        ps_set_err(err, err_len, "%stokens: expected a string, got %s", where, kind(v));
        return PS_STATUS_PARSE;
    }
    if (format < STATE_STORE_FORMAT || !shard) {
        ps_set_err(err, err_len, "%stokens: %s", where,
                   !shard ? "only a shard has ring tokens" : "tokens need format 2");
        return PS_STATUS_PARSE;
    }
    const char *hex = json_string_value(v);
    size_t len = json_string_length(v), n = len / STATE_STORE_TOKEN_HEX;
    if (len == 0 || len % STATE_STORE_TOKEN_HEX || n > HASHRING_MAX_POINTS) {
        ps_set_err(err, err_len,
                   "%stokens: expected 1..%u tokens of %d hex digits each, got %zu characters",
                   where, HASHRING_MAX_POINTS, STATE_STORE_TOKEN_HEX, len);
        return PS_STATUS_PARSE;
    }
    uint64_t *tokens = malloc(n * sizeof *tokens);
    if (!tokens)
        return PS_STATUS_NO_MEMORY;
    for (size_t t = 0; t < n; t++) {
        uint64_t x = 0;
        for (size_t k = 0; k < STATE_STORE_TOKEN_HEX; k++) {
            char c = hex[t * STATE_STORE_TOKEN_HEX + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) {
                ps_set_err(err, err_len, "%stokens: character %zu is not a lowercase hex digit",
                           where, t * STATE_STORE_TOKEN_HEX + k);
                free(tokens);
                return PS_STATUS_PARSE;
            }
            x = x << 4 | (uint64_t)d;
        }
        if (t > 0 && x <= tokens[t - 1]) {
            ps_set_err(err, err_len, "%stokens: token %zu is not above the one before", where, t);
            free(tokens);
            return PS_STATUS_PARSE;
        }
        tokens[t] = x;
    }
    *ret_tokens = tokens;
    *ret_n = (uint32_t)n;
    return PS_STATUS_OK;
}

static ps_status decode_node(const json_t *jn, size_t i, json_int_t format, membership *members,
                             char *err, size_t err_len) {
    char where[48];
    snprintf(where, sizeof where, "nodes[%zu].", i);
    if (!json_is_object(jn)) {
        ps_set_err(err, err_len, "nodes[%zu]: expected an object, got %s", i, kind(jn));
        return PS_STATUS_PARSE;
    }
    const char *id = NULL, *addr = NULL, *role = NULL;
    json_int_t weight = 0;
    bool in_ring = false, waiting = false, joining = false, draining = false;
    if (!get_bool(jn, where, "joining", true, false, &joining, err, err_len) ||
        !get_bool(jn, where, "draining", true, false, &draining, err, err_len))
        return PS_STATUS_PARSE;
    if (!get_str(jn, where, "id", &id, err, err_len) ||
        !get_str(jn, where, "addr", &addr, err, err_len) ||
        !get_int(jn, where, "weight", 1, MEMBERSHIP_MAX_WEIGHT, &weight, err, err_len) ||
        !get_str(jn, where, "role", &role, err, err_len) ||
        !get_bool(jn, where, "in_ring", false, false, &in_ring, err, err_len) ||
        !get_bool(jn, where, "waiting", true, false, &waiting, err, err_len))
        return PS_STATUS_PARSE;
    membership_role r;
    if (strcmp(role, "shard") == 0) {
        r = MEMBERSHIP_ROLE_SHARD;
    } else if (strcmp(role, "serve") == 0) {
        r = MEMBERSHIP_ROLE_SERVE;
    } else {
        ps_set_err(err, err_len, "%srole: expected \"shard\" or \"serve\", got \"%.32s\"", where,
                   role);
        return PS_STATUS_PARSE;
    }
    if (!membership_id_valid(id) || !membership_addr_valid(addr)) {
        ps_set_err(err, err_len, "%s: id \"%.80s\" or address \"%.80s\" is not valid", where, id,
                   addr);
        return PS_STATUS_PARSE;
    }
    if ((in_ring || waiting) && (r != MEMBERSHIP_ROLE_SHARD || (in_ring && waiting))) {
        ps_set_err(err, err_len, "%s: node %s cannot be %s", where, id,
                   r != MEMBERSHIP_ROLE_SHARD ? "on the ring or waiting: it is not a shard"
                                              : "both on the ring and waiting");
        return PS_STATUS_PARSE;
    }
    if ((joining || draining) &&
        (r != MEMBERSHIP_ROLE_SHARD || (joining && (in_ring || waiting || draining)) ||
         (draining && !in_ring))) {
        ps_set_err(err, err_len,
                   "nodes[%zu]: node %s cannot be %s: a joining shard is off the ring and not "
                   "waiting, a draining one on the ring",
                   i, id, joining ? "joining" : "draining");
        return PS_STATUS_PARSE;
    }
    if ((joining || draining) && membership_changing(members)) {
        const membership_node *other = membership_changing(members);
        ps_set_err(err, err_len,
                   "nodes[%zu]: node %s is %s, but node %s is %s: one change at a time", i, id,
                   joining ? "joining" : "draining", other->id,
                   other->joining ? "joining" : "draining");
        return PS_STATUS_PARSE;
    }
    uint64_t *tokens = NULL;
    uint32_t n_tokens = 0;
    ps_status st = decode_tokens(jn, where, format, r == MEMBERSHIP_ROLE_SHARD, &tokens, &n_tokens,
                                 err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    membership_node *n = NULL;
    st = membership_node_add(members, id, addr, r, (uint32_t)weight, &n);
    if (st == PS_STATUS_ALREADY_EXISTS)
        ps_set_err(err, err_len, "%sid: node %s is listed twice", where, id);
    if (st != PS_STATUS_OK) {
        free(tokens);
        return st == PS_STATUS_NO_MEMORY ? st : PS_STATUS_PARSE;
    }
    n->in_ring = in_ring;
    n->waiting = waiting;
    n->joining = joining;
    n->draining = draining;
    membership_node_tokens_set(n, tokens, n_tokens);
    return PS_STATUS_OK;
}

/* ----------------------------------------------------------------- models --- */

/* Fills t from jt; shape is malloc'd into t->shape. */
static ps_status decode_tensor(const json_t *jt, const char *where, Ps__TensorInfo *t, char *err,
                               size_t err_len) {
    if (!json_is_object(jt)) {
        ps_set_err(err, err_len, "%s: expected an object, got %s", where, kind(jt));
        return PS_STATUS_PARSE;
    }
    char at[96];
    snprintf(at, sizeof at, "%s.", where);
    const char *name = NULL, *dtype = NULL;
    json_int_t cf = 0, chunks = 0;
    const json_t *shape = NULL;
    if (!get_str(jt, at, "name", &name, err, err_len) ||
        !get_str(jt, at, "dtype", &dtype, err, err_len) ||
        !(shape = get_array(jt, at, "shape", MODEL_MAX_DIMS, err, err_len)) ||
        !get_int(jt, at, "chunk_floats", 1, REGISTRY_MAX_CHUNK_FLOATS, &cf, err, err_len) ||
        !get_int(jt, at, "chunks", 0, UINT32_MAX, &chunks, err, err_len))
        return PS_STATUS_PARSE;
    t->name = (char *)name;
    t->dtype = (char *)dtype;
    t->chunk_floats = (uint32_t)cf;
    t->chunks = (uint32_t)chunks;
    t->n_shape = json_array_size(shape);
    t->shape = calloc(t->n_shape ? t->n_shape : 1, sizeof *t->shape);
    if (!t->shape)
        return PS_STATUS_NO_MEMORY;
    for (size_t k = 0; k < t->n_shape; k++) {
        const json_t *d = json_array_get(shape, k);
        if (!json_is_integer(d)) {
            ps_set_err(err, err_len, "%s.shape[%zu]: expected an integer, got %s", where, k,
                       kind(d));
            return PS_STATUS_PARSE;
        }
        t->shape[k] = json_integer_value(d);
    }
    return PS_STATUS_OK;
}

/* The message being decoded: strings point into the JSON; arrays are malloc'd. */
typedef struct model_parts {
    Ps__ModelInfo model;
    Ps__TensorInfo *tensors;
    Ps__TensorInfo **ptrs;
} model_parts;

static void parts_free(model_parts *p) {
    for (size_t i = 0; p->tensors && i < p->model.n_tensors; i++)
        free(p->tensors[i].shape);
    free(p->tensors);
    free(p->ptrs);
}

static ps_status decode_model_parts(const json_t *jm, const char *where, model_parts *p, char *err,
                                    size_t err_len) {
    char at[64];
    snprintf(at, sizeof at, "%s.", where);
    const char *name = NULL, *config = NULL;
    json_int_t version = 0;
    const json_t *tensors = NULL;
    json_int_t published = 0; /* absent in files written before consistent propagation */
    if (json_object_get(jm, "published") &&
        !get_int(jm, at, "published", 0, INT64_MAX, &published, err, err_len))
        return PS_STATUS_PARSE;
    if (!get_str(jm, at, "name", &name, err, err_len) ||
        !get_int(jm, at, "version", 1, (json_int_t)REGISTRY_MAX_VERSION, &version, err, err_len) ||
        !get_str(jm, at, "config_json", &config, err, err_len) ||
        !(tensors = get_array(jm, at, "tensors", REGISTRY_MAX_TENSORS, err, err_len)))
        return PS_STATUS_PARSE;
    size_t n = json_array_size(tensors);
    p->model.name = (char *)name;
    p->model.version = (uint64_t)version;
    p->model.config_json = (char *)config;
    p->model.published = (uint64_t)published;
    p->tensors = calloc(n ? n : 1, sizeof *p->tensors);
    p->ptrs = calloc(n ? n : 1, sizeof *p->ptrs);
    if (!p->tensors || !p->ptrs)
        return PS_STATUS_NO_MEMORY;
    p->model.tensors = p->ptrs;
    for (size_t i = 0; i < n; i++) {
        ps__tensor_info__init(&p->tensors[i]);
        p->ptrs[i] = &p->tensors[i];
        p->model.n_tensors = i + 1; /* so parts_free frees this one's shape */
        char tw[80];
        snprintf(tw, sizeof tw, "%s.tensors[%zu]", where, i);
        ps_status st = decode_tensor(json_array_get(tensors, i), tw, &p->tensors[i], err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    return PS_STATUS_OK;
}

static ps_status decode_model(const json_t *jm, size_t i, registry *reg, char *err,
                              size_t err_len) {
    char where[48];
    snprintf(where, sizeof where, "models[%zu]", i);
    if (!json_is_object(jm)) {
        ps_set_err(err, err_len, "%s: expected an object, got %s", where, kind(jm));
        return PS_STATUS_PARSE;
    }
    model_parts p = {.model = PS__MODEL_INFO__INIT};
    ps_status st = decode_model_parts(jm, where, &p, err, err_len);
    char why[512];
    if (st == PS_STATUS_OK && (st = registry_model_validate(&p.model, why, sizeof why)) != 0) {
        ps_set_err(err, err_len, "%s: %s", where, why);
        goto out_parts;
    }
    if (st == PS_STATUS_OK && registry_model_find(reg, p.model.name, p.model.version)) {
        ps_set_err(err, err_len, "%s: model %s version %llu is listed twice", where, p.model.name,
                   (unsigned long long)p.model.version);
        st = PS_STATUS_PARSE;
        goto out_parts;
    }
    Ps__ModelInfo *copy = NULL;
    if (st == PS_STATUS_OK)
        st = registry_model_copy(&p.model, &copy);
    uint64_t version = 0;
    if (st == PS_STATUS_OK &&
        (st = registry_model_put(reg, copy, &version, why, sizeof why)) != 0) {
        ps__model_info__free_unpacked(copy, NULL);
        ps_set_err(err, err_len, "%s: %s", where, why);
    }
out_parts:
    parts_free(&p);
    if (st == PS_STATUS_NO_MEMORY)
        return st;
    return st == PS_STATUS_OK ? st : PS_STATUS_PARSE;
}

/* ----------------------------------------------------------------- the file --- */

/* The optional "version_marks": {"name": version, ...} (registry.h). */
static ps_status decode_marks(const json_t *root, registry *reg, char *err, size_t err_len) {
    const json_t *marks = json_object_get(root, "version_marks");
    if (!marks)
        return PS_STATUS_OK;
    if (!json_is_object(marks) || json_object_size(marks) > REGISTRY_MAX_MARKS) {
        ps_set_err(err, err_len, "version_marks: expected an object of at most %u names, got %s",
                   REGISTRY_MAX_MARKS, kind(marks));
        return PS_STATUS_PARSE;
    }
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)marks, name, v) {
        json_int_t version = 0;
        if (!get_int(marks, "version_marks.", name, 1, (json_int_t)REGISTRY_MAX_VERSION, &version,
                     err, err_len))
            return PS_STATUS_PARSE;
        ps_status st = registry_mark_raise(reg, name, (uint64_t)version);
        if (st == PS_STATUS_INVALID_ARGUMENT) {
            ps_set_err(err, err_len, "version_marks: \"%.80s\" is no model name", name);
            return PS_STATUS_PARSE;
        }
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "out of memory");
            return st;
        }
    }
    return PS_STATUS_OK;
}

ps_status state_store_decode(const char *text, size_t len, membership *members, ring_state *ring,
                             registry *reg, char *err, size_t err_len) {
    if (len == 0) {
        ps_set_err(err, err_len, "the file is empty");
        return PS_STATUS_PARSE;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ps_set_err(err, err_len, "not valid JSON (%s at line %d, column %d)%s", jerr.text,
                   jerr.line, jerr.column,
                   strstr(jerr.text, "premature end") || strstr(jerr.text, "end of file")
                       ? ": the file is truncated"
                       : "");
        return PS_STATUS_PARSE;
    }
    ps_status st = PS_STATUS_PARSE;
    json_int_t format = 0, epoch = 0, gen = 0;
    const json_t *nodes = NULL, *models = NULL;
    if (!json_is_object(root)) {
        ps_set_err(err, err_len, "expected an object at the top, got %s", kind(root));
        goto out_root;
    }
    if (!get_int(root, "", "format", STATE_STORE_FORMAT_HASHED, STATE_STORE_FORMAT, &format, err,
                 err_len) ||
        !get_int(root, "", "epoch", 0, INT64_MAX, &epoch, err, err_len) ||
        !get_int(root, "", "model_generation", 0, INT64_MAX, &gen, err, err_len) ||
        !(nodes = get_array(root, "", "nodes", membership_node_limit(members), err, err_len)) ||
        !(models = get_array(root, "", "models", registry_version_limit(reg), err, err_len)))
        goto out_root;
    for (size_t i = 0; i < json_array_size(nodes); i++)
        if ((st = decode_node(json_array_get(nodes, i), i, format, members, err, err_len)) != 0)
            goto out_root;
    for (size_t i = 0; i < json_array_size(models); i++)
        if ((st = decode_model(json_array_get(models, i), i, reg, err, err_len)) != 0)
            goto out_root;
    if ((st = decode_marks(root, reg, err, err_len)) != PS_STATUS_OK)
        goto out_root;
    registry_set_generation(reg, (uint64_t)gen);
    st = ring_state_restore(ring, members, (uint64_t)epoch);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "the ring cannot be rebuilt from its nodes (%s)",
                   ps_status_str(st));
out_root:
    json_decref(root);
    return st;
}
