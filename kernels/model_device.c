/* model_device.c: the executor on a backend that computes on device memory (see
 * model.h, "Memory"): parameter mirrors and their dirty ranges, the workspace's device
 * arena and stream, the uploads of a pass's inputs and the downloads of its outputs.
 *
 * Why it is built this way: the host buffer of each parameter stays the one writers
 * fill (a replica writes chunks and range updates into it; an update needs a host copy
 * to add to anyway), and the device holds a mirror that changes only in
 * model_params_sync, where the caller already keeps passes out. Writers mark what they
 * wrote; a mark sets a bit per MODEL_SYNC_BLOCK_FLOATS floats, so it is cheap and its
 * memory bounded, and a sync uploads each run of marked blocks as one copy. Everything
 * a pass needs on the device (its value arena, sized for max_batch_size) is allocated
 * once per workspace, with a stream of its own so that workspaces on other threads run
 * at once. On a host backend none of this exists: ops get the host buffers as before.
 */
#include "model_internal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* Plan */

/* A host slot for value v (once), after the ones given so far. */
static void stage(model *m, size_t v) {
    model_value *val = &m->values[v];
    if (val->staged) {
        return;
    }
    val->staged = true;
    val->host_slot = m->host_per_batch;
    /* within the arena's size, which the plan checked: no overflow */
    m->host_per_batch +=
        (val->per_sample + SLOT_ALIGN_FLOATS - 1) / SLOT_ALIGN_FLOATS * SLOT_ALIGN_FLOATS;
}

void model_device_plan(model *m) {
    if (!m->device) {
        return;
    }
    for (size_t v = 0; v < m->n_inputs; v++) {
        if (m->values[v].int_mask) {
            stage(m, v);
        }
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        stage(m, m->output_values[i]);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Parameters */

static size_t blocks_of(size_t count) {
    return (count + MODEL_SYNC_BLOCK_FLOATS - 1) / MODEL_SYNC_BLOCK_FLOATS;
}

ps_status model_device_params_create(model *m, char *err, size_t err_len) {
    if (!m->device) {
        return PS_STATUS_OK;
    }
    ps_status st = kernels_stream_create(m->backend, &m->stream);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model: backend %s: cannot create a stream: %s",
                   kernels_backend_name(m->backend), ps_status_str(st));
        return st;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        model_param_slot *p = &m->params[i];
        void *dev = NULL;
        st = kernels_buffer_alloc(m->backend, p->count * sizeof(float), &dev);
        p->dev = dev;
        p->dirty = calloc((blocks_of(p->count) + 63) / 64, sizeof(*p->dirty));
        if (st != PS_STATUS_OK || p->dirty == NULL) {
            ps_set_err(err, err_len, "parameter \"%s\": cannot allocate %zu floats on %s",
                       p->desc.name, p->count, kernels_backend_name(m->backend));
            return st != PS_STATUS_OK ? st : PS_STATUS_NO_MEMORY;
        }
        model_device_param_mark(m, p, 0, p->count); /* the mirror starts as zeros too */
    }
    return model_params_sync(m, err, err_len);
}

void model_device_params_destroy(model *m) {
    for (size_t i = 0; m->params != NULL && i < m->n_params; i++) {
        kernels_buffer_free(m->backend, m->params[i].dev);
        free(m->params[i].dirty);
    }
    kernels_stream_destroy(m->stream);
}

void model_device_param_mark(model *m, model_param_slot *p, size_t offset, size_t count) {
    if (p->dirty == NULL || count == 0) {
        return;
    }
    const size_t last = (offset + count - 1) / MODEL_SYNC_BLOCK_FLOATS;
    for (size_t b = offset / MODEL_SYNC_BLOCK_FLOATS; b <= last; b++) {
        p->dirty[b / 64] |= (uint64_t)1 << (b % 64);
    }
    p->any_dirty = true;
    m->params_dirty = true;
}

static bool block_dirty(const model_param_slot *p, size_t b) {
    return (p->dirty[b / 64] >> (b % 64)) & 1u;
}

/* Uploads the runs of dirty blocks of p, clearing each run once it is queued. */
static ps_status sync_param(model *m, model_param_slot *p) {
    const size_t n_blocks = blocks_of(p->count);
    for (size_t b = 0; b < n_blocks;) {
        if (p->dirty[b / 64] == 0) {
            b = (b / 64 + 1) * 64; /* a whole word clean */
            continue;
        }
        if (!block_dirty(p, b)) {
            b++;
            continue;
        }
        size_t end = b;
        while (end < n_blocks && block_dirty(p, end)) {
            end++;
        }
        const size_t first = b * MODEL_SYNC_BLOCK_FLOATS;
        size_t stop = end * MODEL_SYNC_BLOCK_FLOATS;
        stop = stop < p->count ? stop : p->count;
        ps_status st = kernels_buffer_upload(m->stream, p->dev + first, p->data + first,
                                             (stop - first) * sizeof(float));
        if (st != PS_STATUS_OK) {
            return st; /* the run stays marked: the next sync retries it */
        }
        for (size_t k = b; k < end; k++) {
            p->dirty[k / 64] &= ~((uint64_t)1 << (k % 64));
        }
        b = end;
    }
    p->any_dirty = false;
    return PS_STATUS_OK;
}

ps_status model_params_sync(model *m, char *err, size_t err_len) {
    if (m == NULL) {
        ps_set_err(err, err_len, "model_params_sync: no model");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!m->device || !m->params_dirty) {
        return PS_STATUS_OK;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        model_param_slot *p = &m->params[i];
        ps_status st = p->any_dirty ? sync_param(m, p) : PS_STATUS_OK;
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "model %s: uploading parameter \"%s\" to %s: %s %s",
                       model_config_name(m->cfg), p->desc.name, kernels_backend_name(m->backend),
                       ps_status_str(st), kernels_stream_last_error(m->stream));
            return st;
        }
    }
    ps_status st = kernels_stream_sync(m->stream); /* the mirror is whole before any pass */
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: uploading parameters to %s: %s %s",
                   model_config_name(m->cfg), kernels_backend_name(m->backend), ps_status_str(st),
                   kernels_stream_last_error(m->stream));
        for (size_t i = 0; i < m->n_params; i++) { /* unknown what landed: all again */
            model_device_param_mark(m, &m->params[i], 0, m->params[i].count);
        }
        return st;
    }
    m->params_dirty = false;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Workspaces */

ps_status model_device_ws_alloc(const model *m, model_workspace *ws) {
    const size_t bytes = ws->batch_cap * m->ws_per_batch * sizeof(float);
    if (!m->device) {
        /* aligned_alloc wants a size that is a multiple of the alignment */
        ws->arena = aligned_alloc(64, bytes > 0 ? (bytes + 63) & ~(size_t)63 : 64);
        ws->stream = kernels_backend_stream(m->backend);
        return ws->arena != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    }
    void *arena = NULL;
    void *rows = NULL;
    ps_status st = kernels_buffer_alloc(m->backend, bytes > 0 ? bytes : 64, &arena);
    ws->arena = arena;
    if (st == PS_STATUS_OK) {
        st = kernels_stream_create(m->backend, &ws->stream);
    }
    if (st == PS_STATUS_OK && m->host_per_batch > 0) {
        ws->host = malloc(ws->batch_cap * m->host_per_batch * sizeof(float));
        st = ws->host != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    }
    if (st == PS_STATUS_OK && m->n_bags > 0) {
        st = kernels_buffer_alloc(m->backend, ws->batch_cap * m->bag_rows_per_batch * sizeof(float),
                                  &rows);
        ws->bag_rows_dev = rows;
    }
    return st; /* on failure the caller frees ws and what was allocated */
}

void model_device_ws_free(model_workspace *ws) {
    const model *m = ws->m;
    if (!m->device) {
        free(ws->arena);
        return;
    }
    model_graph_ws_free(ws); /* before the buffers its graphs read */
    kernels_buffer_free(m->backend, ws->arena);
    kernels_buffer_free(m->backend, ws->bag_rows_dev);
    kernels_stream_destroy(ws->stream);
    free(ws->host);
}

/* ------------------------------------------------------------------------------------ */
/* A pass */

ps_status model_device_inputs(const model *m, model_workspace *ws, size_t batch, char *err,
                              size_t err_len) {
    for (size_t v = 0; m->device && v < m->n_inputs; v++) {
        const model_value *val = &m->values[v];
        if (val->ids) {
            continue; /* ids stay on the host (ops.h); int masks: model_seq_prepare */
        }
        float *dst = ws->arena + ws->batch_cap * val->slot;
        ps_status st = kernels_buffer_upload(ws->stream, dst, ws->ptrs[v],
                                             batch * val->per_sample * sizeof(float));
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "input \"%s\": cannot upload it to %s: %s %s", val->desc.name,
                       kernels_backend_name(m->backend), ps_status_str(st),
                       kernels_stream_last_error(ws->stream));
            return st;
        }
        ws->ptrs[v] = dst;
    }
    return PS_STATUS_OK;
}

ps_status model_device_finish(const model *m, model_workspace *ws, char *err, size_t err_len) {
    if (!m->device) {
        return PS_STATUS_OK;
    }
    ps_status st = kernels_stream_sync(ws->stream);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: the pass failed on %s: %s %s",
                   model_config_name(m->cfg), kernels_backend_name(m->backend), ps_status_str(st),
                   kernels_stream_last_error(ws->stream));
    }
    return st;
}

const float *model_device_output(const model *m, model_workspace *ws, size_t v, size_t batch,
                                 float *dst) {
    const model_value *val = &m->values[v];
    const float *src = ws->ptrs[v];
    if (!m->device) {
        if (dst == NULL) {
            return src;
        }
        memcpy(dst, src, batch * val->per_sample * sizeof(float));
        return dst;
    }
    if (dst == NULL) {
        dst = ws->host + ws->batch_cap * val->host_slot;
    }
    if (kernels_buffer_download(ws->stream, dst, src, batch * val->per_sample * sizeof(float)) !=
        PS_STATUS_OK) {
        return NULL;
    }
    return dst;
}
