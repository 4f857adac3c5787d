/* served.c: see served.h. The instance's parameter buffers are written in place:
 * updates under the write lock, forward passes under the read lock. Every write is
 * marked and synced before the write lock is let go (model.h, "Memory": on a device
 * backend that uploads the written ranges to the device mirror; on the CPU it costs
 * nothing). Pulls are in served_pull.c. Table rows are not held here: each pass reads
 * its own (served_rows), so there is nothing to update. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "served_internal.h"
#include "util.h"

static void served_free(served *s) {
    for (size_t i = 0; i < s->n_idle_ws; i++)
        model_workspace_destroy(s->idle_ws[i]);
    model_destroy(s->m);
    wordpiece_destroy(s->tokenizer);
    train_config_destroy(s->training);
    chunk_table_destroy(s->chunks);
    free(s->params);
    free(s->pnames);
    free(s->name);
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->stats_lock);
    pthread_mutex_destroy(&s->ws_lock);
    free(s);
}

void served_retain(served *s) {
    atomic_fetch_add(&s->refs, 1);
}

void served_release(served *s) {
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        served_free(s);
}

/* The instance for a registry entry (config + tensor shapes). */
static ps_status build_model(const Ps__ModelInfo *info, kernels_backend *backend, model **ret,
                             char *err, size_t err_len) {
    model_config *cfg = NULL;
    const char *json = info->config_json ? info->config_json : "";
    ps_status st = model_config_parse(json, strlen(json), &cfg, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    model_tensor_desc *descs = calloc(info->n_tensors + 1, sizeof *descs);
    if (!descs) {
        model_config_destroy(cfg);
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Ps__TensorInfo *t = info->tensors[i];
        if (t->n_shape > MODEL_MAX_DIMS) {
            ps_set_err(err, err_len, "tensor %.64s has %zu dimensions (at most %d)", t->name,
                       t->n_shape, MODEL_MAX_DIMS);
            st = PS_STATUS_INVALID_ARGUMENT;
            goto out;
        }
        descs[i].name = t->name;
        descs[i].datatype = t->dtype;
        descs[i].ndims = (uint32_t)t->n_shape;
        for (uint32_t k = 0; k < descs[i].ndims; k++)
            descs[i].dims[k] = t->shape[k];
    }
    st = model_create(cfg, descs, info->n_tensors, backend, ret, err, err_len);
out:
    free(descs);
    model_config_destroy(cfg);
    return st;
}

/* Floats in a registry tensor (product of its shape; 0 when a dim is not positive or
 * the product overflows). */
static uint64_t tensor_count(const Ps__TensorInfo *t) {
    uint64_t count = 1;
    for (size_t k = 0; k < t->n_shape; k++)
        if (t->shape[k] <= 0 || __builtin_mul_overflow(count, (uint64_t)t->shape[k], &count))
            return 0;
    return count;
}

/* Fills the chunk table: one entry per chunk of every tensor the graph uses. */
static ps_status build_chunks(served *s, const Ps__ModelInfo *info, char *err, size_t err_len) {
    uint64_t n_chunks = 0;
    for (size_t i = 0; i < info->n_tensors; i++)
        n_chunks += info->tensors[i]->chunks;
    if (n_chunks == 0 || n_chunks > SERVED_MAX_CHUNKS) {
        ps_set_err(err, err_len, "model %.64s has %llu chunks (1 to %u allowed)", info->name,
                   (unsigned long long)n_chunks, SERVED_MAX_CHUNKS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = chunk_table_create((size_t)n_chunks, &s->chunks);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory");
        return st;
    }
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Ps__TensorInfo *t = info->tensors[i];
        size_t count = 0;
        size_t p = 0;
        if (!model_config_param_find(model_get_config(s->m), t->name, &p) ||
            model_param(s->m, t->name, &s->params[i], &count) != PS_STATUS_OK) {
            s->params[i] = NULL; /* a tensor the graph does not use */
            continue;
        }
        model_tensor_desc d;
        model_param_at(s->m, p, &d);
        s->pnames[i] = d.name; /* the instance's own copy: lives as long as it */
        uint64_t cf = t->chunk_floats;
        if (count != tensor_count(t) || cf == 0 || count > UINT32_MAX ||
            t->chunks != (count + cf - 1) / cf) {
            ps_set_err(err, err_len,
                       "tensor %.64s: registry says %llu floats in %u chunks of %u, "
                       "the model wants %zu",
                       t->name, (unsigned long long)tensor_count(t), t->chunks, t->chunk_floats,
                       count);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        for (uint32_t c = 0; c < t->chunks; c++) {
            uint64_t start = (uint64_t)c * cf;
            chunk_table_entry e = {.key = ps_key_dense(info->name, info->version, t->name, c),
                                   .param = (uint32_t)i,
                                   .offset = (uint32_t)start,
                                   .len = (uint32_t)(count - start < cf ? count - start : cf)};
            st = chunk_table_add(s->chunks, &e);
            if (st != PS_STATUS_OK) {
                ps_set_err(err, err_len, "tensor %.64s chunk %u: duplicate key", t->name, c);
                return PS_STATUS_INVALID_ARGUMENT;
            }
        }
    }
    return PS_STATUS_OK;
}

/* The model's rows source (model.h): the table's spec from the config, then `rows`. */
static ps_status read_rows(void *arg, const char *table, uint32_t dim, size_t n,
                           const uint64_t *ids, float *out, char *err, size_t err_len) {
    served *s = arg;
    train_table t;
    if (!train_config_table_find(s->training, table, &t) || t.spec.dim != dim) {
        ps_set_err(err, err_len, "model %s: no table %s of dim %u in its training config", s->name,
                   table, dim);
        return PS_STATUS_INTERNAL; /* checked at create: cannot happen */
    }
    return s->rows.pull(s->rows.arg, s->name, table, &t.spec, n, ids, out, err, err_len);
}

/* For a model with tables: its table specs (train_config.h, which checks them) and the
 * rows source. Every table the graph reads must have a spec of the same dim. */
static ps_status bind_tables(served *s, const Ps__ModelInfo *info, const served_rows *rows,
                             char *err, size_t err_len) {
    if (!model_has_tables(s->m))
        return PS_STATUS_OK;
    const char *json = info->config_json ? info->config_json : "";
    char why[512];
    ps_status st = train_config_parse(json, strlen(json), &s->training, why, sizeof why);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %.64s: config.json: %s", info->name, why);
        return st == PS_STATUS_NO_MEMORY ? st : PS_STATUS_INVALID_ARGUMENT;
    }
    const model_config *cfg = model_get_config(s->m);
    for (size_t i = 0; i < model_config_table_count(cfg); i++) {
        model_config_table mt;
        train_table tt;
        model_config_table_at(cfg, i, &mt);
        if (!train_config_table_find(s->training, mt.name, &tt) || tt.spec.dim != mt.dim) {
            ps_set_err(err, err_len, "model %.64s: table %s has no training spec of dim %u",
                       info->name, mt.name, mt.dim);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    if (rows && rows->pull) {
        s->rows = *rows;
        model_set_rows(s->m, read_rows, s);
    }
    return PS_STATUS_OK;
}

/* The tokenizer of the config's text input, from its vocab (none without one). */
static ps_status build_tokenizer(served *s, char *err, size_t err_len) {
    model_config_text_in t;
    if (!model_config_text_input(model_get_config(s->m), &t))
        return PS_STATUS_OK;
    char why[256];
    ps_status st = wordpiece_create(NULL, t.vocab, t.vocab_len, &s->tokenizer, why, sizeof why);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "model %.64s: tokenizer of input %s: %s", s->name, t.name, why);
    return st;
}

/* Consistent propagation: the instance holds one published cut and takes no update. */
static ps_status read_propagation(served *s, const Ps__ModelInfo *info, char *err, size_t err_len) {
    const char *json = info->config_json ? info->config_json : "";
    train_config *tc = NULL;
    char why[512];
    ps_status st = train_config_parse(json, strlen(json), &tc, why, sizeof why);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %.64s: config.json: %s", info->name, why);
        return st == PS_STATUS_NO_MEMORY ? st : PS_STATUS_INVALID_ARGUMENT;
    }
    s->frozen = train_config_propagation(tc) == TRAIN_PROPAGATION_CONSISTENT;
    train_config_destroy(tc);
    if (s->frozen)
        s->publish = info->publishing ? info->publishing : info->published;
    return PS_STATUS_OK;
}

ps_status served_create(const Ps__ModelInfo *info, const served_rows *rows,
                        kernels_backend *backend, served **ret_served, char *err, size_t err_len) {
    served *s = calloc(1, sizeof *s);
    if (!s) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    atomic_init(&s->refs, 1);
    pthread_rwlock_init(&s->lock, NULL);
    pthread_mutex_init(&s->stats_lock, NULL);
    pthread_mutex_init(&s->ws_lock, NULL);
    s->version = info->version;
    s->name = strdup(info->name ? info->name : "");
    s->params = calloc(info->n_tensors + 1, sizeof *s->params);
    s->pnames = calloc(info->n_tensors + 1, sizeof *s->pnames);
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!s->name || !s->params || !s->pnames) {
        ps_set_err(err, err_len, "out of memory");
        goto fail;
    }
    st = build_model(info, backend, &s->m, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail;
    st = build_tokenizer(s, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail;
    st = read_propagation(s, info, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail;
    st = build_chunks(s, info, err, err_len);
    if (st == PS_STATUS_OK)
        st = bind_tables(s, info, rows, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail;
    *ret_served = s;
    return PS_STATUS_OK;
fail:
    served_free(s);
    return st;
}

const char *served_name(const served *s) {
    return s->name;
}

uint64_t served_version(const served *s) {
    return s->version;
}

const model *served_model(const served *s) {
    return s->m;
}

const wordpiece *served_tokenizer(const served *s) {
    return s->tokenizer;
}

bool served_ready(const served *s) {
    return atomic_load(&s->ready);
}

void served_ready_set(served *s) {
    atomic_store(&s->ready, true);
}

bool served_frozen(const served *s) {
    return s->frozen;
}

uint64_t served_publish(const served *s) {
    return s->publish;
}

void served_chunk_written(served *s, const chunk_table_entry *e) {
    model_param_mark(s->m, s->pnames[e->param], e->offset, e->len);
}

ps_status served_params_sync(served *s, char *err, size_t err_len) {
    ps_status st = model_params_sync(s->m, err, err_len);
    atomic_store(&s->unsynced, st != PS_STATUS_OK);
    return st;
}

bool served_update_apply(served *s, const Ps__Update *u) {
    if (s->frozen) /* a published cut: it changes only by the next publish */
        return false;
    pthread_rwlock_wrlock(&s->lock);
    size_t i = 0;
    bool found = chunk_table_find(s->chunks, u->key, &i);
    if (found) {
        const chunk_table_entry *e = chunk_table_at(s->chunks, i);
        bool add = u->op == PS__PUSH_OP__PUSH_ADD;
        size_t floats = u->values.len % 4 ? SIZE_MAX : u->values.len / 4;
        float *dst = s->params[e->param] + e->offset;
        switch (chunk_table_decide(s->chunks, i, add, u->version, u->prev_version, floats)) {
        case CHUNK_TABLE_ASSIGN:
            memcpy(dst, u->values.data, e->len * 4ull); /* values may be unaligned */
            served_chunk_written(s, e);
            chunk_table_set_applied(s->chunks, i, u->version);
            break;
        case CHUNK_TABLE_ADD:
            for (uint32_t k = 0; k < e->len; k++) {
                float d;
                memcpy(&d, u->values.data + k * 4ull, 4);
                dst[k] += d;
            }
            served_chunk_written(s, e);
            chunk_table_set_applied(s->chunks, i, u->version);
            break;
        case CHUNK_TABLE_STALE:
            chunk_table_set_wanted(s->chunks, i, u->version);
            break;
        case CHUNK_TABLE_SKIP:
            break;
        }
        served_params_sync(s, NULL, 0); /* a failure: retried before the next pass */
        s->param_version = chunk_table_version_sum(s->chunks);
    }
    pthread_rwlock_unlock(&s->lock);
    return found;
}

size_t served_repull_mark(served *s, bool (*pred)(uint64_t key, void *arg), void *arg) {
    if (s->frozen && served_ready(s))
        return 0; /* a published cut is never re-pulled: it would mix cuts */
    pthread_rwlock_wrlock(&s->lock);
    size_t n = chunk_table_repull_mark(s->chunks, pred, arg);
    pthread_rwlock_unlock(&s->lock);
    return n;
}

bool served_current(served *s) {
    pthread_rwlock_rdlock(&s->lock);
    bool ok = chunk_table_stale_count(s->chunks) == 0 && chunk_table_filled(s->chunks);
    pthread_rwlock_unlock(&s->lock);
    return ok;
}

uint64_t served_param_version(served *s) {
    pthread_rwlock_rdlock(&s->lock);
    uint64_t v = s->param_version;
    pthread_rwlock_unlock(&s->lock);
    return v;
}

bool served_chunk_version(served *s, uint64_t key, uint64_t *ret_version) {
    pthread_rwlock_rdlock(&s->lock);
    size_t i = 0;
    bool found = chunk_table_find(s->chunks, key, &i);
    if (found)
        *ret_version = chunk_table_held(s->chunks, i);
    pthread_rwlock_unlock(&s->lock);
    return found;
}
