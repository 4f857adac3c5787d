/* model_bag.c: the executor's embedding bags (see model.h, "Tables").
 *
 * Why it is built this way: a bag's ids are model inputs, so every row a pass needs is
 * known before any layer runs; they are read first, one source call per bag layer,
 * into the workspace, and the layers then run without waiting on anything. Within a
 * layer each distinct id is read once: the batch's ids go through an open-addressing
 * table (linear probing, power-of-two size at least twice the ids, so probes stay
 * short) that gives each id its row number; the backend op then gets the rows and,
 * per id, the row number (-1 for padding). Everything is sized at workspace creation
 * for max_batch_size samples, so a pass allocates nothing. On a device backend the rows
 * are read into host memory as ever and uploaded when the layer runs; the row numbers
 * stay on the host (index arrays are host memory on every backend, ops.h).
 */
#include "model_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Plan and workspace */

/* a * b + c within KERNELS_MAX_DIM, into *ret. */
static bool fits(size_t a, size_t b, size_t c, size_t *ret) {
    size_t p;
    return !__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(p, c, ret) &&
           *ret <= KERNELS_MAX_DIM;
}

ps_status model_bag_plan(model *m, char *err, size_t err_len) {
    const size_t batch_cap = m->max_batch > 0 ? m->max_batch : 1;
    for (size_t l = 0; l < m->n_layers; l++) {
        m->n_bags += m->layers[l].op == MODEL_CONFIG_OP_EMBEDDING_BAG;
    }
    if (m->n_bags == 0) {
        return PS_STATUS_OK;
    }
    m->bags = calloc(m->n_bags, sizeof(*m->bags));
    if (m->bags == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    size_t k = 0;
    for (size_t l = 0; l < m->n_layers; l++) {
        const model_config_layer *layer = &m->layers[l];
        if (layer->op != MODEL_CONFIG_OP_EMBEDDING_BAG) {
            continue;
        }
        model_config_table t;
        model_config_table_at(m->cfg, layer->table, &t);
        model_bag *b = &m->bags[k++];
        b->layer = l;
        b->input = layer->inputs[0];
        b->table = t.name;
        b->dim = t.dim;
        b->len = m->values[b->input].per_sample; /* [-1, L] or [L]: L ids per sample */
        b->index_off = m->bag_index_per_batch;
        b->rows_off = m->bag_rows_per_batch;
        size_t rows_total;
        /* every bag's rows for max_batch_size samples: within what one op addresses */
        if (!fits(b->len, b->dim, m->bag_rows_per_batch, &m->bag_rows_per_batch) ||
            !fits(m->bag_rows_per_batch, batch_cap, 0, &rows_total) ||
            !fits(b->len, 1, m->bag_index_per_batch, &m->bag_index_per_batch) ||
            !fits(m->bag_index_per_batch, batch_cap, 0, &rows_total)) {
            ps_set_err(err, err_len,
                       "layer \"%s\": %zu ids of %u floats per sample, for a batch of %zu "
                       "(max_batch_size), need more than %u floats of workspace",
                       layer->name, b->len, b->dim, batch_cap, KERNELS_MAX_DIM);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
        if (b->len > m->bag_max_len) {
            m->bag_max_len = b->len;
        }
    }
    return PS_STATUS_OK;
}

ps_status model_bag_ws_alloc(const model *m, model_workspace *ws) {
    if (m->n_bags == 0) {
        return PS_STATUS_OK;
    }
    const size_t ids = ws->batch_cap * m->bag_max_len; /* <= KERNELS_MAX_DIM: planned */
    ws->hash_cap = 16;
    while (ws->hash_cap < 2 * ids) {
        ws->hash_cap *= 2;
    }
    ws->bag_index = malloc(ws->batch_cap * m->bag_index_per_batch * sizeof(*ws->bag_index));
    ws->bag_rows = malloc(ws->batch_cap * m->bag_rows_per_batch * sizeof(*ws->bag_rows));
    ws->bag_n_rows = calloc(m->n_bags, sizeof(*ws->bag_n_rows));
    ws->uniq = malloc(ids * sizeof(*ws->uniq));
    ws->hash = malloc(ws->hash_cap * sizeof(*ws->hash));
    if (ws->bag_index == NULL || ws->bag_rows == NULL || ws->bag_n_rows == NULL ||
        ws->uniq == NULL || ws->hash == NULL) {
        return PS_STATUS_NO_MEMORY; /* the caller frees ws and what was allocated */
    }
    return PS_STATUS_OK;
}

void model_bag_ws_free(model_workspace *ws) {
    free(ws->bag_index);
    free(ws->bag_rows);
    free(ws->bag_n_rows);
    free(ws->uniq);
    free(ws->hash);
}

/* ------------------------------------------------------------------------------------ */
/* Reading rows */

/* SplitMix64's finalizer: spreads ids that differ in few bits over the table. */
static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The distinct ids of n entries into ws->uniq (first-seen order), each entry's row
 * number into index (-1 for padding); returns how many are distinct. */
static size_t dedupe(model_workspace *ws, const int64_t *ids, size_t n, int64_t *index) {
    size_t cap = 16;
    while (cap < 2 * n) { /* <= ws->hash_cap: n is at most batch_cap * bag_max_len */
        cap *= 2;
    }
    for (size_t i = 0; i < cap; i++) {
        ws->hash[i] = -1;
    }
    size_t n_uniq = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0) {
            index[i] = -1;
            continue;
        }
        const uint64_t id = (uint64_t)ids[i];
        size_t pos = (size_t)mix(id) & (cap - 1);
        while (ws->hash[pos] >= 0 && ws->uniq[ws->hash[pos]] != id) {
            pos = (pos + 1) & (cap - 1);
        }
        if (ws->hash[pos] < 0) {
            ws->hash[pos] = (int64_t)n_uniq;
            ws->uniq[n_uniq++] = id;
        }
        index[i] = ws->hash[pos];
    }
    return n_uniq;
}

ps_status model_bag_fetch(const model *m, model_workspace *ws, size_t batch, char *err,
                          size_t err_len) {
    for (size_t k = 0; k < m->n_bags; k++) {
        const model_bag *b = &m->bags[k];
        const model_config_layer *layer = &m->layers[b->layer];
        int64_t *index = ws->bag_index + b->index_off * ws->batch_cap;
        float *rows = ws->bag_rows + b->rows_off * ws->batch_cap;
        const size_t n = dedupe(ws, ws->ids[b->input], batch * b->len, index);
        ws->bag_n_rows[k] = n;
        if (n == 0) {
            continue; /* padding only: nothing to read */
        }
        if (m->rows_fn == NULL) {
            ps_set_err(err, err_len,
                       "layer \"%s\" reads table \"%s\", but model %s has no rows source to read "
                       "it from (model_set_rows)",
                       layer->name, b->table, model_config_name(m->cfg));
            return PS_STATUS_FAILED_PRECONDITION;
        }
        char why[512] = "";
        ps_status st =
            m->rows_fn(m->rows_arg, b->table, b->dim, n, ws->uniq, rows, why, sizeof(why));
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "layer \"%s\" (embedding_bag of table \"%s\", %zu rows): %s",
                       layer->name, b->table, n, why[0] != '\0' ? why : ps_status_str(st));
            return st;
        }
    }
    return PS_STATUS_OK;
}

ps_status model_bag_run(const model *m, const model_workspace *ws, size_t layer, size_t batch,
                        float *y) {
    for (size_t k = 0; k < m->n_bags; k++) {
        const model_bag *b = &m->bags[k];
        if (b->layer != layer) {
            continue;
        }
        const kernels_pool pool =
            m->layers[layer].pool == MODEL_CONFIG_POOL_MEAN ? KERNELS_POOL_MEAN : KERNELS_POOL_SUM;
        const size_t n = ws->bag_n_rows[k];
        const float *rows = n > 0 ? ws->bag_rows + b->rows_off * ws->batch_cap : NULL;
        if (n > 0 && m->device) { /* read on the host; the op reads them on the device */
            float *dev = ws->bag_rows_dev + b->rows_off * ws->batch_cap;
            ps_status st = kernels_buffer_upload(ws->stream, dev, rows, n * b->dim * sizeof(float));
            if (st != PS_STATUS_OK) {
                return st;
            }
            rows = dev;
        }
        return kernels_op_embedding_bag(ws->stream, rows, n, b->dim,
                                        ws->bag_index + b->index_off * ws->batch_cap, batch, b->len,
                                        pool, y);
    }
    return PS_STATUS_INTERNAL;
}
