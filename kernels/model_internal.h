/* model_internal.h: the model instance's private layout and what its files share. Not
 * for other modules: they see model.h.
 *
 * One module in eight files, over these structs:
 *   model.c        create (the plan), destroy, accessors, parameters, workspaces
 *   model_device.c device backends: parameter mirrors and their dirty ranges, the
 *                  workspace's device arena and stream, input uploads, output downloads
 *   model_graph.c  small-batch passes recorded as graphs and replayed (device backends)
 *   model_load.c   instances from safetensors files and model directories
 *   model_infer.c  input and output checks, the layer loop (model_infer)
 *   model_bag.c    embedding bags: their plan, workspace part, row reads and op
 *   model_image.c  conv2d, pools, flatten, reshape, layernorm and elementwise layers
 *   model_seq.c    the sequence layers (embedding, position_embedding, attention,
 *                  mean_pool, l2_normalize), their ids checks and INT64 masks
 */
#ifndef PS_KERNELS_MODEL_INTERNAL_H
#define PS_KERNELS_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "parameter bytes are little-endian; this code assumes a little-endian host"
#endif

#define SLOT_ALIGN_FLOATS 16 /* workspace slots start on 64-byte boundaries */

/* Largest batch whose passes are recorded as graphs (model_graph.c): small batches
 * are bound by op launches, large ones by arithmetic. */
#define MODEL_GRAPH_MAX_BATCH 8u

/* Floats per dirty bit of a device mirror: model_params_sync uploads whole blocks
 * (runs of marked blocks as one upload), so a mark costs a few bit sets. */
#define MODEL_SYNC_BLOCK_FLOATS 1024u

typedef struct model_param_slot {
    model_tensor_desc desc; /* actual shape; name points into the instance's config */
    size_t count;           /* floats */
    float *data;            /* owned, zeroed at create: the host copy writers fill */
    float *dev;             /* device backends: the mirror ops read (owned); else NULL */
    uint64_t *dirty;        /* device backends: a bit per MODEL_SYNC_BLOCK_FLOATS floats
                               written since the last sync; else NULL */
    bool any_dirty;         /* some bit of dirty is set */
} model_param_slot;

typedef struct model_value {
    model_tensor_desc desc; /* shape; dims[0] == -1 for the batch dim when batched */
    bool ids;               /* an INT64 model input */
    size_t rows;            /* rows per sample: product of the dims between batch and last */
    size_t cols;            /* the last dim */
    size_t per_sample;      /* rows * cols */
    size_t slot;            /* workspace offset per batch_cap, floats (layer outputs, and
                               int_mask inputs) */
    bool int_mask;          /* an INT64 input some layer reads as a mask: model_seq_prepare
                               converts it to floats (non-zero: 1) into its slot */
    bool staged;            /* device backends: has a host slot (int masks, outputs) */
    size_t host_slot;       /* its offset in the workspace's host part, per batch_cap */
} model_value;

/* One embedding_bag layer, planned at create. Per unit of batch capacity it has `len`
 * index entries and up to `len` rows of `dim` floats in the workspace. */
typedef struct model_bag {
    size_t layer;      /* index into model.layers */
    size_t input;      /* the ids input's value index */
    const char *table; /* the table's name (in the config) */
    uint32_t dim;      /* floats per row */
    size_t len;        /* ids per sample (L) */
    size_t index_off;  /* offset of its index entries, per unit of batch capacity */
    size_t rows_off;   /* offset of its rows, floats per unit of batch capacity */
} model_bag;

struct model {
    model_config *cfg;        /* owned copy */
    kernels_backend *backend; /* borrowed, or owned when own_backend */
    bool own_backend;
    bool device;            /* the backend computes on device memory (model_device.c) */
    kernels_stream *stream; /* device: the instance's stream for parameter uploads */
    bool params_dirty;      /* device: some parameter has dirty blocks */
    size_t host_per_batch;  /* device: host staging floats per unit of batch capacity */
    bool graphable;         /* device, and no layer reads host ids: passes may be graphs */
    uint32_t max_batch;     /* 0: no batch dim */
    size_t n_inputs;        /* values 0..n_inputs-1 are the model inputs */
    size_t n_params;
    model_param_slot *params; /* [n_params], config order */
    size_t n_values;
    model_value *values; /* [n_values] */
    size_t n_layers;
    model_config_layer *layers; /* [n_layers] */
    size_t n_outputs;
    const char **output_names; /* [n_outputs] declared outputs (strings in cfg) */
    size_t *output_values;     /* [n_outputs] their value indices */
    size_t ws_per_batch;       /* workspace floats per unit of batch capacity */
    size_t n_bags;
    model_bag *bags;            /* [n_bags], layer order */
    size_t bag_index_per_batch; /* index entries of every bag, per unit of batch capacity */
    size_t bag_rows_per_batch;  /* row floats of every bag, per unit of batch capacity */
    size_t bag_max_len;         /* the largest len: sizes the dedupe scratch */
    model_rows_fn rows_fn;      /* where rows come from (NULL: nowhere) */
    void *rows_arg;
};

struct model_workspace {
    const model *m;
    size_t batch_cap;       /* batch size the slots are laid out for */
    float *arena;           /* batch_cap * m->ws_per_batch floats (backend memory) */
    kernels_stream *stream; /* what its passes run on: the default stream of a host
                               backend, its own stream (owned) on a device backend */
    float *host;            /* device: batch_cap * m->host_per_batch floats of host
                               staging (int masks, outputs without a buffer) */
    float *bag_rows_dev;    /* device: the bag rows uploaded (bag_rows' size) */
    /* graphable models: per batch size 1..MODEL_GRAPH_MAX_BATCH, the pass's graph
     * (recorded on the second pass of that size) and where it stands */
    kernels_graph *graphs[MODEL_GRAPH_MAX_BATCH + 1];
    uint8_t graph_state[MODEL_GRAPH_MAX_BATCH + 1];
    const float **ptrs;  /* [m->n_values] scratch: where each value is this call */
    const int64_t **ids; /* [m->n_inputs] scratch: the ids inputs this call */
    int64_t *bag_index;  /* batch_cap * m->bag_index_per_batch: row of each id, -1 padding */
    float *bag_rows;     /* batch_cap * m->bag_rows_per_batch: the rows each bag read */
    size_t *bag_n_rows;  /* [m->n_bags] rows each bag read */
    uint64_t *uniq;      /* batch_cap * bag_max_len: one bag's distinct ids */
    int64_t *hash;       /* hash_cap slots: one bag's dedupe table (-1: empty) */
    size_t hash_cap;     /* a power of two, >= 2 * batch_cap * bag_max_len */
    const model_input *rows_for; /* model_infer_rows held rows for these inputs */
    size_t rows_for_n;
};

/* model.c */
const char *model_dims_str(const int64_t *dims, uint32_t ndims, char *buf, size_t len);
ps_status model_workspace_new(const model *m, size_t batch_cap, model_workspace **ret_ws);

/* What ops read for parameter i: the device mirror, or the host buffer. */
static inline const float *model_param_ptr(const model *m, size_t i) {
    return m->params[i].dev != NULL ? m->params[i].dev : m->params[i].data;
}

/* model_device.c (every function is a no-op on a host backend unless it says so) */
/* Gives the int masks and declared outputs host slots (m->host_per_batch). */
void model_device_plan(model *m);
/* Device mirrors of every parameter, uploaded (zeros) on m->stream. */
ps_status model_device_params_create(model *m, char *err, size_t err_len);
void model_device_params_destroy(model *m);
/* Marks floats [offset, offset + count) of parameter p dirty (checked by the caller). */
void model_device_param_mark(model *m, model_param_slot *p, size_t offset, size_t count);
/* The workspace's arena, stream and staging (also on a host backend: arena, stream). */
ps_status model_device_ws_alloc(const model *m, model_workspace *ws);
void model_device_ws_free(model_workspace *ws);
/* Uploads the FP32 inputs of a checked batch into their slots (ws->ptrs updated). */
ps_status model_device_inputs(const model *m, model_workspace *ws, size_t batch, char *err,
                              size_t err_len);
/* Waits for the pass's ops; the first failure, with the backend's words in err. */
ps_status model_device_finish(const model *m, model_workspace *ws, char *err, size_t err_len);
/* Output value v of a pass into dst (host), or where it is when dst is NULL; returns
 * the host address of the data (NULL on failure). */
const float *model_device_output(const model *m, model_workspace *ws, size_t v, size_t batch,
                                 float *dst);

/* model_graph.c */
/* Whether passes of m may be recorded (m->graphable). */
void model_graph_plan(model *m);
/* Runs the layers of a pass whose inputs are in place: eagerly, or as the graph of
 * its batch size (recorded on that size's second pass). */
ps_status model_graph_run(const model *m, model_workspace *ws, size_t batch, char *err,
                          size_t err_len);
void model_graph_ws_free(model_workspace *ws);

/* model_infer.c */
/* Queues every layer of a pass on ws->stream (ws->ptrs of the outputs set). */
ps_status model_layers_run(const model *m, model_workspace *ws, size_t batch, char *err,
                           size_t err_len);

/* model_bag.c */
/* Finds the embedding_bag layers and lays out their workspace part (m->bags...).
 * RESOURCE_EXHAUSTED when it would be too large for max_batch_size. */
ps_status model_bag_plan(model *m, char *err, size_t err_len);
/* The bag part of a workspace (ws->batch_cap set). */
ps_status model_bag_ws_alloc(const model *m, model_workspace *ws);
void model_bag_ws_free(model_workspace *ws);
/* Reads the rows of every bag for a checked batch (ws->ids set). */
ps_status model_bag_fetch(const model *m, model_workspace *ws, size_t batch, char *err,
                          size_t err_len);
/* Runs bag `layer` (its rows fetched; uploaded first on a device) into y [batch, dim]. */
ps_status model_bag_run(const model *m, const model_workspace *ws, size_t layer, size_t batch,
                        float *y);

/* model_infer.c */
kernels_activation model_activation_to_backend(model_config_activation a);

/* model_image.c */
/* Runs layer l (conv2d, maxpool2d, avgpool2d, flatten, reshape, layernorm, gelu, tanh or
 * sigmoid)
 * on x, its input for `batch` samples, into y; INTERNAL for other ops. */
ps_status model_image_run(const model *m, const model_workspace *ws, const float *x, size_t l,
                          size_t batch, float *y);

/* model_seq.c */
/* Gives every INT64 input that a layer reads as a mask a workspace slot (after the
 * layer outputs'). RESOURCE_EXHAUSTED when the workspace would overflow. */
ps_status model_seq_plan(model *m, char *err, size_t err_len);
/* Before any layer runs on a checked batch (ws->ids set): every id an embedding layer
 * reads must be a row of its table (INVALID_ARGUMENT naming the input, the position and
 * the id), and the INT64 masks are converted to floats. */
ps_status model_seq_prepare(const model *m, model_workspace *ws, size_t batch, char *err,
                            size_t err_len);
/* Runs sequence layer l on x, its first input for `batch` samples, into y; INTERNAL for
 * other ops. */
ps_status model_seq_run(const model *m, const model_workspace *ws, const float *x, size_t l,
                        size_t batch, float *y);

#endif
