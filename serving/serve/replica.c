/* replica.c: see replica.h. The list of served models is small (a few models and
 * versions), so it is an array under a mutex; each entry is reference-counted so a
 * request that holds one is unaffected when a newer version retires it. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "replica.h"
#include "util.h"

#define PULL_BATCH_BYTES (8u << 20)

typedef struct chunk_ref {
    uint64_t key;
    uint32_t param;  /* parameter (tensor) index in the served model's tensors */
    uint32_t offset; /* first float in the parameter */
    uint32_t len;    /* floats */
    uint64_t held;   /* version held; 0 = not yet filled */
    uint64_t want;   /* highest version an update announced that could not be applied */
    bool resync;     /* a shard said it lost track: pull again whatever the versions */
} chunk_ref;

static bool is_stale(const chunk_ref *c) {
    return c->resync || c->want > c->held;
}

typedef struct tensor_ref {
    char *name;
    float *data; /* the model instance's parameter buffer */
    uint64_t count;
} tensor_ref;

struct served {
    atomic_int refs;
    char *name;
    uint64_t version;
    model *m;
    pthread_rwlock_t lock; /* infer: read; updates and pulls: write */
    tensor_ref *tensors;
    size_t n_tensors;
    chunk_ref *chunks;
    size_t n_chunks;
    uint32_t *slots; /* key -> chunk index + 1 (0 = empty), open addressing */
    size_t n_slots;
    uint64_t param_version; /* sum of held; under lock */
    size_t stale;           /* chunks with want > held; under lock */
    atomic_bool ready;
    atomic_bool retired;

    pthread_mutex_t stats_lock;
    served_stats stats;

    /* idle forward-pass workspaces (scratch sized for max_batch_size), so a request
     * allocates nothing in the common case; one per concurrently running request */
    pthread_mutex_t ws_lock;
    model_workspace *idle_ws[16];
    size_t n_idle_ws;
};

struct replica {
    pthread_mutex_t lock;
    served **list;
    size_t n, cap;
    /* what the registry last said should be served */
    char **expect_names;
    uint64_t *expect_versions;
    size_t n_expect;
};

/* ------------------------------------------------------------------ served --- */

static void served_free(served *s) {
    for (size_t i = 0; i < s->n_idle_ws; i++)
        model_workspace_destroy(s->idle_ws[i]);
    pthread_mutex_destroy(&s->ws_lock);
    model_destroy(s->m);
    for (size_t i = 0; i < s->n_tensors; i++)
        free(s->tensors[i].name);
    free(s->tensors);
    free(s->chunks);
    free(s->slots);
    free(s->name);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->stats_lock);
    free(s);
}

void served_release(served *s) {
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        served_free(s);
}

static chunk_ref *find_chunk(served *s, uint64_t key) {
    for (size_t i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 11) & (s->n_slots - 1);;
         i = (i + 1) & (s->n_slots - 1)) {
        uint32_t v = s->slots[i];
        if (!v)
            return NULL;
        if (s->chunks[v - 1].key == key)
            return &s->chunks[v - 1];
    }
}

/* Builds a served model from a registry entry: instance, chunk table. Not listed. */
static ps_status served_build(const Ps__ModelInfo *info, served **ret, char *err, size_t err_len) {
    model_config *cfg = NULL;
    ps_status st =
        model_config_parse(info->config_json, strlen(info->config_json), &cfg, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    served *s = calloc(1, sizeof *s);
    model_tensor_desc *descs = calloc(info->n_tensors + 1, sizeof *descs);
    if (!s || !descs) {
        free(s);
        free(descs);
        model_config_destroy(cfg);
        snprintf(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    atomic_init(&s->refs, 1);
    pthread_rwlock_init(&s->lock, NULL);
    pthread_mutex_init(&s->stats_lock, NULL);
    pthread_mutex_init(&s->ws_lock, NULL);
    s->name = strdup(info->name);
    s->version = info->version;
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Ps__TensorInfo *t = info->tensors[i];
        descs[i].name = t->name;
        descs[i].datatype = t->dtype;
        descs[i].ndims = (uint32_t)(t->n_shape < MODEL_MAX_DIMS ? t->n_shape : MODEL_MAX_DIMS);
        for (uint32_t k = 0; k < descs[i].ndims; k++)
            descs[i].dims[k] = t->shape[k];
    }
    st = model_create(cfg, descs, info->n_tensors, NULL, &s->m, err, err_len);
    free(descs);
    model_config_destroy(cfg);
    if (st != PS_STATUS_OK)
        goto fail;

    size_t n_chunks = 0;
    for (size_t i = 0; i < info->n_tensors; i++)
        n_chunks += info->tensors[i]->chunks;
    s->tensors = calloc(info->n_tensors + 1, sizeof *s->tensors);
    s->chunks = calloc(n_chunks + 1, sizeof *s->chunks);
    s->n_slots = 16;
    while (s->n_slots < n_chunks * 2)
        s->n_slots *= 2;
    s->slots = calloc(s->n_slots, sizeof *s->slots);
    if (!s->tensors || !s->chunks || !s->slots) {
        snprintf(err, err_len, "out of memory");
        st = PS_STATUS_NO_MEMORY;
        goto fail;
    }
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Ps__TensorInfo *t = info->tensors[i];
        tensor_ref *tr = &s->tensors[s->n_tensors];
        size_t count = 0;
        if (model_param(s->m, t->name, &tr->data, &count) != PS_STATUS_OK)
            continue; /* a tensor the graph does not use */
        tr->name = strdup(t->name);
        tr->count = count;
        if (count != ps_tensor_count(t) || t->chunk_floats == 0) {
            snprintf(err, err_len, "tensor %s: registry says %llu floats, model wants %zu", t->name,
                     (unsigned long long)ps_tensor_count(t), count);
            s->n_tensors++;
            st = PS_STATUS_INVALID_ARGUMENT;
            goto fail;
        }
        for (uint32_t c = 0; c < t->chunks; c++) {
            chunk_ref *cr = &s->chunks[s->n_chunks];
            uint64_t start = (uint64_t)c * t->chunk_floats;
            cr->key = ps_key_dense(info->name, t->name, c);
            cr->param = (uint32_t)s->n_tensors;
            cr->offset = (uint32_t)start;
            cr->len = (uint32_t)(count - start < t->chunk_floats ? count - start : t->chunk_floats);
            size_t j = (size_t)(cr->key * 0x9E3779B97F4A7C15ull >> 11) & (s->n_slots - 1);
            while (s->slots[j])
                j = (j + 1) & (s->n_slots - 1);
            s->slots[j] = (uint32_t)(s->n_chunks + 1);
            s->n_chunks++;
        }
        s->n_tensors++;
    }
    *ret = s;
    return PS_STATUS_OK;
fail:
    served_free(s);
    return st;
}

/* Installs pulled values of chunk `c` at `version` (write lock held). */
static void install(served *s, chunk_ref *c, const float *values, uint64_t version) {
    bool was_stale = is_stale(c);
    if (version > c->held) {
        memcpy(s->tensors[c->param].data + c->offset, values, c->len * 4ull);
        s->param_version += version - c->held;
        c->held = version;
    }
    c->resync = false;
    if (was_stale && !is_stale(c))
        s->stale--;
}

/* Pulls the chunks idx[0..n) of s and installs them. */
static ps_status pull_chunks(served *s, ps_client *pc, const size_t *idx, size_t n, char *err,
                             size_t err_len) {
    size_t cap_floats = PULL_BATCH_BYTES / 4;
    float *buf = malloc(cap_floats * 4);
    uint64_t *keys = malloc((n + 1) * sizeof *keys), *versions = malloc((n + 1) * sizeof *versions);
    float **dst = malloc((n + 1) * sizeof *dst);
    uint32_t *lens = malloc((n + 1) * sizeof *lens);
    ps_status st = PS_STATUS_OK;
    if (!buf || !keys || !versions || !dst || !lens) {
        snprintf(err, err_len, "out of memory");
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (size_t first = 0; first < n;) {
        size_t m = 0, used = 0;
        while (first + m < n) {
            chunk_ref *c = &s->chunks[idx[first + m]];
            if (m > 0 && used + c->len > cap_floats)
                break;
            if (c->len > cap_floats) { /* one chunk bigger than the batch buffer */
                float *grown = realloc(buf, c->len * 4ull);
                if (!grown) {
                    snprintf(err, err_len, "out of memory");
                    st = PS_STATUS_NO_MEMORY;
                    goto out;
                }
                buf = grown;
                cap_floats = c->len;
            }
            keys[m] = c->key;
            lens[m] = c->len;
            dst[m] = buf + used;
            used += c->len;
            m++;
        }
        st = ps_client_pull(pc, m, keys, dst, lens, versions);
        if (st != PS_STATUS_OK) {
            snprintf(err, err_len, "%s", ps_client_error(pc));
            goto out;
        }
        pthread_rwlock_wrlock(&s->lock);
        for (size_t i = 0; i < m; i++)
            install(s, &s->chunks[idx[first + i]], dst[i], versions[i]);
        pthread_rwlock_unlock(&s->lock);
        first += m;
    }
out:
    free(buf);
    free(keys);
    free(versions);
    free(dst);
    free(lens);
    return st;
}

/* ------------------------------------------------------------------ replica --- */

ps_status replica_create(replica **ret) {
    replica *r = calloc(1, sizeof *r);
    if (!r)
        return PS_STATUS_NO_MEMORY;
    pthread_mutex_init(&r->lock, NULL);
    *ret = r;
    return PS_STATUS_OK;
}

void replica_destroy(replica *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        served_release(r->list[i]);
    free(r->list);
    for (size_t i = 0; i < r->n_expect; i++)
        free(r->expect_names[i]);
    free(r->expect_names);
    free(r->expect_versions);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Snapshot of the list with references taken; free with release_all. */
static served **snapshot(replica *r, size_t *ret_n) {
    pthread_mutex_lock(&r->lock);
    served **out = malloc((r->n + 1) * sizeof *out);
    size_t n = 0;
    for (size_t i = 0; out && i < r->n; i++) {
        atomic_fetch_add(&r->list[i]->refs, 1);
        out[n++] = r->list[i];
    }
    pthread_mutex_unlock(&r->lock);
    *ret_n = n;
    return out;
}

static void release_all(served **list, size_t n) {
    for (size_t i = 0; i < n; i++)
        served_release(list[i]);
    free(list);
}

ps_status replica_load(replica *r, ps_client *pc, const Ps__ModelInfo *info, char *err,
                       size_t err_len) {
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->list[i]->name, info->name) == 0 && r->list[i]->version == info->version) {
            pthread_mutex_unlock(&r->lock);
            return PS_STATUS_OK;
        }
    }
    pthread_mutex_unlock(&r->lock);

    served *s = NULL;
    ps_status st = served_build(info, &s, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    /* list it first, so updates that race with the pull reach it */
    pthread_mutex_lock(&r->lock);
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 8;
        served **grown = realloc(r->list, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&r->lock);
            served_release(s);
            snprintf(err, err_len, "out of memory");
            return PS_STATUS_NO_MEMORY;
        }
        r->list = grown;
        r->cap = cap;
    }
    r->list[r->n++] = s;
    atomic_fetch_add(&s->refs, 1); /* ours, while loading */
    pthread_mutex_unlock(&r->lock);

    size_t *idx = malloc((s->n_chunks + 1) * sizeof *idx);
    if (!idx) {
        st = PS_STATUS_NO_MEMORY;
        snprintf(err, err_len, "out of memory");
    } else {
        for (size_t i = 0; i < s->n_chunks; i++)
            idx[i] = i;
        st = pull_chunks(s, pc, idx, s->n_chunks, err, err_len);
        free(idx);
    }
    size_t left = 0;
    if (st == PS_STATUS_OK)
        st = replica_fix_stale(r, pc, &left);
    if (st == PS_STATUS_OK && left > 0) {
        snprintf(err, err_len, "%zu chunks still behind after pulling again", left);
        st = PS_STATUS_UNAVAILABLE;
    }
    pthread_mutex_lock(&r->lock);
    if (st != PS_STATUS_OK) { /* unlist; a later registry update retries */
        for (size_t i = 0; i < r->n; i++) {
            if (r->list[i] == s) {
                r->list[i] = r->list[--r->n];
                served_release(s);
                break;
            }
        }
    } else {
        atomic_store(&s->ready, true);
        /* retire older versions of the same model */
        for (size_t i = 0; i < r->n;) {
            served *o = r->list[i];
            if (o != s && strcmp(o->name, s->name) == 0 && o->version < s->version) {
                atomic_store(&o->retired, true);
                r->list[i] = r->list[--r->n];
                served_release(o);
            } else {
                i++;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    served_release(s);
    return st;
}

void replica_apply_update(replica *r, const Ps__Update *u) {
    size_t n = 0;
    served **list = snapshot(r, &n);
    for (size_t i = 0; i < n; i++) {
        served *s = list[i];
        chunk_ref *c = find_chunk(s, u->key);
        if (!c)
            continue;
        const float *values = (const float *)u->values.data; /* may be unaligned: copy */
        pthread_rwlock_wrlock(&s->lock);
        bool full = u->values.len == c->len * 4ull;
        if (u->version <= c->held) {
            /* already in */
        } else if (full && (u->version == c->held + 1 || u->op == PS__PUSH_OP__PUSH_ASSIGN) &&
                   c->held > 0) {
            float *dst = s->tensors[c->param].data + c->offset;
            if (u->op == PS__PUSH_OP__PUSH_ASSIGN) {
                memcpy(dst, values, c->len * 4ull);
            } else {
                for (uint32_t k = 0; k < c->len; k++) {
                    float d;
                    memcpy(&d, (const uint8_t *)values + k * 4ull, 4);
                    dst[k] += d;
                }
            }
            bool was_stale = is_stale(c);
            s->param_version += u->version - c->held;
            c->held = u->version;
            if (was_stale && !is_stale(c))
                s->stale--;
        } else if (u->version > c->want) {
            /* a gap (or a chunk not filled yet): pull it again */
            if (!is_stale(c))
                s->stale++;
            c->want = u->version;
        }
        pthread_rwlock_unlock(&s->lock);
    }
    release_all(list, n);
}

void replica_mark_all_stale(replica *r) {
    size_t n = 0;
    served **list = snapshot(r, &n);
    for (size_t i = 0; i < n; i++) {
        served *s = list[i];
        pthread_rwlock_wrlock(&s->lock);
        for (size_t k = 0; k < s->n_chunks; k++) {
            chunk_ref *c = &s->chunks[k];
            if (!is_stale(c))
                s->stale++;
            c->resync = true;
        }
        pthread_rwlock_unlock(&s->lock);
    }
    release_all(list, n);
}

ps_status replica_fix_stale(replica *r, ps_client *pc, size_t *ret_left) {
    size_t n = 0, left = 0;
    served **list = snapshot(r, &n);
    ps_status st = PS_STATUS_OK;
    for (size_t i = 0; i < n && st == PS_STATUS_OK; i++) {
        served *s = list[i];
        pthread_rwlock_rdlock(&s->lock);
        size_t stale = s->stale, m = 0;
        size_t *idx = stale ? malloc(stale * sizeof *idx) : NULL;
        for (size_t k = 0; idx && k < s->n_chunks && m < stale; k++)
            if (is_stale(&s->chunks[k]))
                idx[m++] = k;
        pthread_rwlock_unlock(&s->lock);
        if (m > 0) {
            char err[256];
            st = pull_chunks(s, pc, idx, m, err, sizeof err);
            pthread_rwlock_rdlock(&s->lock);
            left += s->stale; /* an update may have announced more meanwhile */
            pthread_rwlock_unlock(&s->lock);
        }
        free(idx);
    }
    release_all(list, n);
    if (ret_left)
        *ret_left = left;
    return st;
}

void replica_expect(replica *r, size_t n, const char *const *names, const uint64_t *versions) {
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_expect; i++)
        free(r->expect_names[i]);
    free(r->expect_names);
    free(r->expect_versions);
    r->expect_names = calloc(n + 1, sizeof *r->expect_names);
    r->expect_versions = calloc(n + 1, sizeof *r->expect_versions);
    r->n_expect = 0;
    for (size_t i = 0; r->expect_names && r->expect_versions && i < n; i++) {
        r->expect_names[i] = strdup(names[i]);
        r->expect_versions[i] = versions[i];
        r->n_expect++;
    }
    pthread_mutex_unlock(&r->lock);
}

bool replica_ready(replica *r) {
    pthread_mutex_lock(&r->lock);
    bool ok = true;
    for (size_t i = 0; ok && i < r->n_expect; i++) {
        bool found = false;
        for (size_t k = 0; k < r->n; k++)
            if (strcmp(r->list[k]->name, r->expect_names[i]) == 0 &&
                r->list[k]->version >= r->expect_versions[i] && atomic_load(&r->list[k]->ready))
                found = true;
        ok = found;
    }
    pthread_mutex_unlock(&r->lock);
    return ok;
}

served *replica_acquire(replica *r, const char *name, uint64_t version) {
    pthread_mutex_lock(&r->lock);
    served *best = NULL;
    for (size_t i = 0; i < r->n; i++) {
        served *s = r->list[i];
        if (!atomic_load(&s->ready) || strcmp(s->name, name) != 0)
            continue;
        if (version ? s->version == version : (!best || s->version > best->version))
            best = s;
    }
    if (best)
        atomic_fetch_add(&best->refs, 1);
    pthread_mutex_unlock(&r->lock);
    return best;
}

void replica_list_names(replica *r, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && used + 1 < cap; i++) {
        if (!atomic_load(&r->list[i]->ready))
            continue;
        int w = snprintf(buf + used, cap - used, "%s%s v%llu", used ? "," : "", r->list[i]->name,
                         (unsigned long long)r->list[i]->version);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
    pthread_mutex_unlock(&r->lock);
    if (!used)
        snprintf(buf, cap, "none");
}

/* ------------------------------------------------------------------ accessors --- */

const model *served_model(const served *s) {
    return s->m;
}

uint64_t served_version(const served *s) {
    return s->version;
}

uint64_t served_param_version(const served *s) {
    pthread_rwlock_rdlock((pthread_rwlock_t *)&s->lock);
    uint64_t v = s->param_version;
    pthread_rwlock_unlock((pthread_rwlock_t *)&s->lock);
    return v;
}

ps_status served_infer(served *s, const model_input *inputs, size_t n_inputs, model_output *outputs,
                       size_t n_outputs, uint64_t *ret_param_version, char *err, size_t err_len) {
    model_workspace *ws = NULL;
    pthread_mutex_lock(&s->ws_lock);
    if (s->n_idle_ws > 0)
        ws = s->idle_ws[--s->n_idle_ws];
    pthread_mutex_unlock(&s->ws_lock);
    if (!ws && model_workspace_create(s->m, &ws) != PS_STATUS_OK)
        ws = NULL; /* infer then allocates scratch for this call alone */

    pthread_rwlock_rdlock(&s->lock);
    ps_status st = model_infer(s->m, ws, inputs, n_inputs, outputs, n_outputs, err, err_len);
    if (ret_param_version)
        *ret_param_version = s->param_version;
    pthread_rwlock_unlock(&s->lock);

    if (ws) {
        pthread_mutex_lock(&s->ws_lock);
        if (s->n_idle_ws < sizeof s->idle_ws / sizeof s->idle_ws[0]) {
            s->idle_ws[s->n_idle_ws++] = ws;
            ws = NULL;
        }
        pthread_mutex_unlock(&s->ws_lock);
        model_workspace_destroy(ws);
    }
    return st;
}

void served_stats_get(served *s, served_stats *ret) {
    pthread_mutex_lock(&s->stats_lock);
    *ret = s->stats;
    pthread_mutex_unlock(&s->stats_lock);
}

void served_stats_add(served *s, bool ok, uint64_t batch, uint64_t total_ns, uint64_t compute_ns) {
    pthread_mutex_lock(&s->stats_lock);
    if (ok) {
        s->stats.success++;
        s->stats.success_ns += total_ns;
        s->stats.inferences += batch;
        s->stats.executions++;
        s->stats.compute_ns += compute_ns;
        s->stats.last_inference_ms = (uint64_t)ps_wall_ms();
    } else {
        s->stats.fail++;
    }
    pthread_mutex_unlock(&s->stats_lock);
}
