/* registry.c: the model registry and the checks a model must pass (see registry.h). */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "membership.h"
#include "train_config.h"
#include "util.h"

typedef struct registry_mark_entry {
    char name[REGISTRY_NAME_MAX + 1];
    uint64_t version;
} registry_mark_entry;

struct registry {
    Ps__ModelInfo **models; /* owned copies; n used of cap */
    size_t *sizes;          /* packed size of each */
    uint32_t *served;       /* its version policy: the latest N versions are served */
    size_t n, cap;
    size_t bytes; /* sum of sizes */
    size_t max_versions, max_bytes;
    uint64_t generation;
    registry_mark_entry *marks; /* n_marks used of cap_marks, unordered */
    size_t n_marks, cap_marks;
};

ps_status registry_create(const registry_opts *opts, registry **ret_registry) {
    size_t max_versions =
        opts && opts->max_versions ? opts->max_versions : REGISTRY_DEFAULT_MAX_VERSIONS;
    size_t max_bytes = opts && opts->max_bytes ? opts->max_bytes : REGISTRY_DEFAULT_MAX_BYTES;
    if (max_bytes > REGISTRY_MAX_BYTES_LIMIT)
        return PS_STATUS_INVALID_ARGUMENT;
    registry *r = calloc(1, sizeof *r);
    if (!r)
        return PS_STATUS_NO_MEMORY;
    r->max_versions = max_versions;
    r->max_bytes = max_bytes;
    *ret_registry = r;
    return PS_STATUS_OK;
}

void registry_destroy(registry *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        ps__model_info__free_unpacked(r->models[i], NULL);
    free(r->models);
    free(r->sizes);
    free(r->served);
    free(r->marks);
    free(r);
}

/* ----------------------------------------------------------------- validation --- */

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first tensor name used twice, or NULL. */
static ps_status find_duplicate(const Ps__ModelInfo *m, const char **ret_dup) {
    const char **names = malloc(m->n_tensors * sizeof *names);
    if (!names)
        return PS_STATUS_NO_MEMORY;
    for (size_t i = 0; i < m->n_tensors; i++)
        names[i] = m->tensors[i]->name;
    qsort(names, m->n_tensors, sizeof *names, cmp_name);
    *ret_dup = NULL;
    for (size_t i = 1; i < m->n_tensors && !*ret_dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            *ret_dup = names[i];
    free(names);
    return PS_STATUS_OK;
}

/* One tensor's name, dtype, shape and chunking. */
static ps_status check_tensor(const Ps__TensorInfo *t, size_t i, char *err, size_t err_len) {
    size_t name_len = t && t->name ? strnlen(t->name, REGISTRY_TENSOR_NAME_MAX + 1) : 0;
    if (name_len == 0 || name_len > REGISTRY_TENSOR_NAME_MAX) {
        ps_set_err(err, err_len, "tensor %zu: a name of 1 to %d bytes is required", i,
                   REGISTRY_TENSOR_NAME_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }

    if (t->n_shape == 0 || t->n_shape > MODEL_MAX_DIMS) {
        ps_set_err(err, err_len, "tensor %.64s has %zu dimensions (1 to %d allowed)", t->name,
                   t->n_shape, MODEL_MAX_DIMS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint64_t count = 1;
    for (size_t k = 0; k < t->n_shape; k++) {
        if (t->shape[k] <= 0) {
            ps_set_err(err, err_len, "tensor %.64s: dimension %zu is %lld; it must be positive",
                       t->name, k, (long long)t->shape[k]);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (__builtin_mul_overflow(count, (uint64_t)t->shape[k], &count) ||
            count > REGISTRY_MAX_TENSOR_FLOATS) {
            ps_set_err(err, err_len,
                       "tensor %.64s has more than %llu elements (dimensions 0..%zu already), the "
                       "most a replica can hold",
                       t->name, (unsigned long long)REGISTRY_MAX_TENSOR_FLOATS, k);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    if (!t->dtype || strcmp(t->dtype, "FP32") != 0) {
        ps_set_err(err, err_len, "tensor %.64s: dtype %.32s is not supported (FP32 only)", t->name,
                   t->dtype ? t->dtype : "(none)");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (t->chunk_floats == 0 || t->chunk_floats > REGISTRY_MAX_CHUNK_FLOATS) {
        ps_set_err(err, err_len, "tensor %.64s: chunks of %u floats (1 to %u allowed)", t->name,
                   t->chunk_floats, REGISTRY_MAX_CHUNK_FLOATS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if ((uint64_t)t->chunks != (count + t->chunk_floats - 1) / t->chunk_floats) {
        ps_set_err(err, err_len, "tensor %.64s: %u chunks of %u floats do not cover %llu floats",
                   t->name, t->chunks, t->chunk_floats, (unsigned long long)count);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* The config must parse, carry the model's name, and agree with the tensors' shapes:
 * otherwise no replica could load it. */
static ps_status check_graph(const Ps__ModelInfo *m, char *err, size_t err_len) {
    model_config *cfg = NULL;
    char why[512];
    ps_status st =
        model_config_parse(m->config_json, strlen(m->config_json), &cfg, why, sizeof why);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: config.json: %s", m->name, why);
        return st == PS_STATUS_NO_MEMORY ? st : PS_STATUS_INVALID_ARGUMENT;
    }
    model_tensor_desc *given = calloc(m->n_tensors, sizeof *given);
    if (!given) {
        st = PS_STATUS_NO_MEMORY;
        goto out_cfg;
    }
    train_config *training = NULL;
    if ((st = train_config_parse(m->config_json, strlen(m->config_json), &training, why,
                                 sizeof why)) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: config.json: %s", m->name, why);
        if (st != PS_STATUS_NO_MEMORY)
            st = PS_STATUS_INVALID_ARGUMENT;
        goto out_given;
    }
    train_config_destroy(training);
    if (strcmp(model_config_name(cfg), m->name) != 0) {
        ps_set_err(err, err_len, "model %s: its config names the model '%.64s'", m->name,
                   model_config_name(cfg));
        st = PS_STATUS_INVALID_ARGUMENT;
        goto out_given;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const Ps__TensorInfo *t = m->tensors[i];
        given[i].name = t->name;
        given[i].datatype = t->dtype;
        given[i].ndims = (uint32_t)t->n_shape; /* <= MODEL_MAX_DIMS: checked before */
        memcpy(given[i].dims, t->shape, t->n_shape * sizeof(int64_t));
    }
    st = model_config_resolve(cfg, given, m->n_tensors, NULL, NULL, why, sizeof why);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: %s", m->name, why);
        if (st != PS_STATUS_NO_MEMORY)
            st = PS_STATUS_INVALID_ARGUMENT;
    }
out_given:
    free(given);
out_cfg:
    model_config_destroy(cfg);
    return st;
}

ps_status registry_model_check_text(const Ps__ModelInfo *m, char *err, size_t err_len) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        const char *name = m->tensors[i] && m->tensors[i]->name ? m->tensors[i]->name : "";
        if (!ps_text_valid(name, strlen(name))) {
            ps_set_err(err, err_len,
                       "tensor %zu: its name is not UTF-8 text (or holds a control character)", i);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

ps_status registry_model_validate(const Ps__ModelInfo *m, char *err, size_t err_len) {
    if (!m || !m->name || !membership_id_valid(m->name)) {
        ps_set_err(err, err_len, "a model name of 1-%d characters of [A-Za-z0-9._-] is required",
                   REGISTRY_NAME_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (m->version > REGISTRY_MAX_VERSION) {
        ps_set_err(err, err_len, "model %s: version %llu is over %llu", m->name,
                   (unsigned long long)m->version, (unsigned long long)REGISTRY_MAX_VERSION);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (m->n_tensors == 0 || m->n_tensors > REGISTRY_MAX_TENSORS) {
        ps_set_err(err, err_len, "model %s has %zu tensors (1 to %u allowed)", m->name,
                   m->n_tensors, REGISTRY_MAX_TENSORS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    size_t config_len = m->config_json ? strnlen(m->config_json, REGISTRY_MAX_CONFIG_BYTES + 1) : 0;
    if (config_len == 0 || config_len > REGISTRY_MAX_CONFIG_BYTES) {
        ps_set_err(err, err_len, "model %s: a config.json of 1 to %u bytes is required", m->name,
                   REGISTRY_MAX_CONFIG_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        ps_status st = check_tensor(m->tensors[i], i, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    const char *dup = NULL;
    if (find_duplicate(m, &dup) != PS_STATUS_OK)
        return PS_STATUS_NO_MEMORY;
    if (dup) {
        ps_set_err(err, err_len, "model %s: tensor %.64s is listed twice", m->name, dup);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return check_graph(m, err, err_len);
}

ps_status registry_model_copy(const Ps__ModelInfo *m, Ps__ModelInfo **ret_copy) {
    size_t len = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return PS_STATUS_NO_MEMORY;
    protobuf_c_message_pack(&m->base, buf);
    Ps__ModelInfo *copy = ps__model_info__unpack(NULL, len, buf);
    free(buf);
    if (!copy)
        return PS_STATUS_NO_MEMORY;
    *ret_copy = copy;
    return PS_STATUS_OK;
}

/* ----------------------------------------------------------------- storage --- */

ps_status registry_model_take(registry *r, const char *name, uint64_t version,
                              Ps__ModelInfo **ret_model) {
    for (size_t i = 0; name && version && i < r->n; i++) {
        if (r->models[i]->version != version || strcmp(r->models[i]->name, name) != 0)
            continue;
        *ret_model = r->models[i];
        r->bytes -= r->sizes[i];
        r->n--;
        r->models[i] = r->models[r->n];
        r->sizes[i] = r->sizes[r->n];
        r->served[i] = r->served[r->n];
        r->generation++;
        /* the mark may have been dropped while stored versions repeated it (a full
         * table, mark_room): what is taken must stay marked */
        (void)registry_mark_raise(r, name, version);
        return PS_STATUS_OK;
    }
    return PS_STATUS_NOT_FOUND;
}

/* The version policy of an entry (validated at registration: 1 when unreadable). */
static uint32_t served_versions(const Ps__ModelInfo *m) {
    train_config *tc = NULL;
    const char *json = m->config_json ? m->config_json : "";
    if (train_config_parse(json, strlen(json), &tc, NULL, 0) != PS_STATUS_OK)
        return 1;
    uint32_t n = train_config_served_versions(tc);
    train_config_destroy(tc);
    return n;
}

ps_status registry_model_put(registry *r, Ps__ModelInfo *m, uint64_t *ret_version, char *err,
                             size_t err_len) {
    uint64_t latest = 0;
    size_t same = SIZE_MAX;
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->models[i]->name, m->name) != 0)
            continue;
        if (r->models[i]->version > latest)
            latest = r->models[i]->version;
        if (m->version != 0 && r->models[i]->version == m->version)
            same = i;
    }
    uint64_t mark = registry_mark(r, m->name);
    if (mark > latest)
        latest = mark;
    uint64_t version = m->version ? m->version : latest + 1;
    if (version > REGISTRY_MAX_VERSION) {
        ps_set_err(err, err_len, "model %s: no version number is left after %llu", m->name,
                   (unsigned long long)latest);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    uint64_t saved_version = m->version;
    m->version = version;
    size_t size = protobuf_c_message_get_packed_size(&m->base);
    uint32_t served = served_versions(m);
    size_t bytes = r->bytes - (same != SIZE_MAX ? r->sizes[same] : 0);
    if (size > r->max_bytes - bytes) {
        m->version = saved_version;
        ps_set_err(err, err_len,
                   "the registry is full: model %s takes %zu bytes and %zu of %zu are used "
                   "(--max-registry-mb)",
                   m->name, size, bytes, r->max_bytes);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    if (same != SIZE_MAX) { /* re-upload of a version: replace it */
        ps__model_info__free_unpacked(r->models[same], NULL);
        r->models[same] = m;
        r->sizes[same] = size;
        r->served[same] = served;
    } else {
        if (r->n == r->max_versions) {
            m->version = saved_version;
            ps_set_err(err, err_len, "the registry is full: %zu model versions (--max-versions)",
                       r->max_versions);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 8;
            Ps__ModelInfo **models = realloc(r->models, cap * sizeof *models);
            if (!models)
                goto fail_memory;
            r->models = models;
            size_t *sizes = realloc(r->sizes, cap * sizeof *sizes);
            if (!sizes)
                goto fail_memory;
            r->sizes = sizes;
            uint32_t *sv = realloc(r->served, cap * sizeof *sv);
            if (!sv)
                goto fail_memory;
            r->served = sv;
            r->cap = cap;
        }
        r->models[r->n] = m;
        r->sizes[r->n] = size;
        r->served[r->n] = served;
        r->n++;
    }
    r->bytes = bytes + size;
    r->generation++;
    *ret_version = version;
    /* a mark that cannot be kept (out of memory) is the one case a number may be given
     * again: the upload itself is done and stands */
    (void)registry_mark_raise(r, m->name, version);
    return PS_STATUS_OK;
fail_memory:
    m->version = saved_version;
    ps_set_err(err, err_len, "out of memory");
    return PS_STATUS_NO_MEMORY;
}

const Ps__ModelInfo *registry_model_find(const registry *r, const char *name, uint64_t version) {
    const Ps__ModelInfo *best = NULL;
    for (size_t i = 0; name && i < r->n; i++) {
        const Ps__ModelInfo *m = r->models[i];
        if (strcmp(m->name, name) != 0)
            continue;
        if (version ? m->version == version : (!best || m->version > best->version))
            best = m;
    }
    return best;
}

size_t registry_model_count(const registry *r) {
    return r->n;
}

/* True when version m of its model is among the latest N its latest version's policy
 * says replicas serve. */
static bool is_served(const registry *r, const Ps__ModelInfo *m) {
    const Ps__ModelInfo *latest = NULL;
    size_t at = 0, newer = 0;
    for (size_t i = 0; i < r->n; i++) {
        const Ps__ModelInfo *o = r->models[i];
        if (strcmp(o->name, m->name) != 0)
            continue;
        if (!latest || o->version > latest->version) {
            latest = o;
            at = i;
        }
        newer += o->version > m->version;
    }
    return latest && newer < r->served[at];
}

size_t registry_models_collect(const registry *r, bool served_only, const Ps__ModelInfo **out) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        const Ps__ModelInfo *m = r->models[i];
        if (served_only && !is_served(r, m))
            continue;
        out[n++] = m;
    }
    return n;
}

uint64_t registry_generation(const registry *r) {
    return r->generation;
}

void registry_set_generation(registry *r, uint64_t generation) {
    r->generation = generation;
}

size_t registry_bytes(const registry *r) {
    return r->bytes;
}

size_t registry_version_limit(const registry *r) {
    return r->max_versions;
}

/* ----------------------------------------------------------------- marks --- */

static registry_mark_entry *mark_find(const registry *r, const char *name) {
    for (size_t i = 0; i < r->n_marks; i++)
        if (strcmp(r->marks[i].name, name) == 0)
            return &r->marks[i];
    return NULL;
}

uint64_t registry_mark(const registry *r, const char *name) {
    const registry_mark_entry *e = name ? mark_find(r, name) : NULL;
    return e ? e->version : 0;
}

/* The highest stored version of `name` (0: none). */
static uint64_t latest_stored(const registry *r, const char *name) {
    uint64_t latest = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->models[i]->version > latest && strcmp(r->models[i]->name, name) == 0)
            latest = r->models[i]->version;
    return latest;
}

/* Room for one more mark: grows the array, or forgets the marks the entries repeat,
 * or at last the lowest mark. */
static bool mark_room(registry *r) {
    if (r->n_marks < r->cap_marks)
        return true;
    if (r->cap_marks < REGISTRY_MAX_MARKS) {
        size_t cap = r->cap_marks ? r->cap_marks * 2 : 16;
        registry_mark_entry *marks = realloc(r->marks, cap * sizeof *marks);
        if (!marks)
            return false;
        r->marks = marks;
        r->cap_marks = cap;
        return true;
    }
    size_t k = 0, lowest = 0;
    for (size_t i = 0; i < r->n_marks; i++)
        if (r->marks[i].version > latest_stored(r, r->marks[i].name))
            r->marks[k++] = r->marks[i];
    if (k == r->n_marks) {
        for (size_t i = 1; i < k; i++)
            if (r->marks[i].version < r->marks[lowest].version)
                lowest = i;
        r->marks[lowest] = r->marks[--k];
    }
    r->n_marks = k;
    return true;
}

ps_status registry_mark_raise(registry *r, const char *name, uint64_t version) {
    if (!name || !membership_id_valid(name) || strlen(name) > REGISTRY_NAME_MAX || version == 0 ||
        version > REGISTRY_MAX_VERSION)
        return PS_STATUS_INVALID_ARGUMENT;
    registry_mark_entry *e = mark_find(r, name);
    if (e) {
        if (version > e->version)
            e->version = version;
        return PS_STATUS_OK;
    }
    if (!mark_room(r))
        return PS_STATUS_NO_MEMORY;
    e = &r->marks[r->n_marks++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->version = version;
    return PS_STATUS_OK;
}

size_t registry_mark_count(const registry *r) {
    return r->n_marks;
}

size_t registry_marks_collect(const registry *r, const char **names, uint64_t *versions) {
    size_t k = 0;
    for (size_t i = 0; i < r->n_marks; i++) {
        if (r->marks[i].version <= latest_stored(r, r->marks[i].name))
            continue;
        names[k] = r->marks[i].name;
        versions[k++] = r->marks[i].version;
    }
    return k;
}
