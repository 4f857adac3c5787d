/* model.h: a model instance: parameter memory plus a forward pass over its graph.
 *
 * A serving replica gets a config (model_config) and the parameter tensors' names and
 * shapes from the registry, creates an instance, fills each parameter's memory chunk
 * by chunk (model_param or model_param_write), later applies updates to ranges of it
 * in place, and runs forward passes (model_infer). Tools and tests load everything
 * from a model directory in one call (model_open_dir).
 *
 * Memory: each parameter is one contiguous FP32 host buffer, row-major, in the shape
 * the registry gave (PyTorch layout: dense weights [out, in]). Parameters start at zero.
 * Ops run on a kernels backend (backend.h). On a host-memory backend (the CPU) they read
 * those buffers directly. On a device backend (CUDA) the instance keeps a device mirror
 * of every parameter, allocated once, and ops read the mirror; the rule for writers:
 *   - every write into a parameter's host buffer is marked: model_param_write and
 *     model_load_safetensors mark what they write themselves; a write through
 *     model_param's pointer is followed by model_param_mark(name, offset, count);
 *   - model_params_sync uploads what was marked since the last sync (runs of marked
 *     ranges, coalesced). Call it after a batch of writes, where the writes are already
 *     serialised against model_infer (under the write side of the lock, below): until
 *     then, passes see the old values (the mirror is stale by design, so a half-written
 *     update is never read). On a host backend marks and syncs do nothing (the ops read
 *     what was written at once), so code written to this rule runs on every backend.
 * Each workspace holds, on a device, the arena of every layer output for
 * max_batch_size samples and a stream of its own; a pass uploads its FP32 inputs, and
 * downloads the outputs asked for into the caller's buffer or the workspace's host
 * memory (model_output.data is host memory on every backend). Ids stay on the host.
 * On a backend with graphs (backend.h), a workspace records the layers of a small
 * batch's pass (up to 8 samples; its second pass of that size) and replays them in
 * later passes of that size, for a graph without embedding or embedding_bag layers.
 *
 * Threads:
 *   - model_infer may run on any number of threads at once on one instance. Each call
 *     needs its own scratch memory: pass a model_workspace that no other thread uses
 *     at the same time (one per worker thread is the usual), or NULL to allocate
 *     scratch for that call only.
 *   - Parameter writes (through model_param's pointer, model_param_write,
 *     model_load_safetensors), marks and model_params_sync are NOT synchronised with
 *     model_infer nor with each other: a forward pass that
 *     runs during a write reads a mix of old and new values. Callers that must not
 *     serve torn weights serialize writes against inference themselves (a rwlock: infer
 *     under the read side, writes under the write side), or build a second instance
 *     and swap pointers (the "consistent" update mode).
 *
 * Inference: inputs are given by name, each contiguous row-major with the full shape
 * (batch dim first when max_batch_size > 0, 1 <= batch <= max_batch_size, the same
 * batch for every input; the other dims exactly as configured): FP32 inputs as floats
 * (model_input.data), INT64 inputs as ids (model_input.ids): for an embedding_bag an id
 * < 0 is padding; an embedding's ids must be rows of its table (INVALID_ARGUMENT naming
 * the input and the id otherwise, before any layer runs); a mask's are 0 for padding,
 * anything else a token (converted to FP32 in the workspace).
 * Every model input must be given. Outputs are asked for by name (any subset, any
 * order); each lands in the caller's buffer, or when none is given, in the workspace
 * (valid until the workspace's next use).
 *
 * Tables: the kernels know no network, so an instance whose graph has embedding_bag
 * layers reads table rows through a source its owner sets (model_set_rows): a serving
 * replica's reads them from the parameter servers, a test's from memory. A forward
 * pass gathers each embedding_bag layer's ids over the batch (padding skipped, each
 * distinct id once), asks the source once per layer, then the backend reduces the rows
 * per sample. The rows are read before any layer runs: model_infer_rows does only
 * that part, so a caller can read them without holding whatever guards the dense
 * parameters, then run model_infer on the same workspace. Workspaces are sized at
 * model_workspace_create for max_batch_size samples of every table input.
 */
#ifndef PS_KERNELS_MODEL_H
#define PS_KERNELS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model_config.h"
#include "safetensors.h"
#include "status.h"

typedef struct model model;
typedef struct model_workspace model_workspace;

/* One input tensor of a forward pass. */
typedef struct model_input {
    const char *name;             /* a model input's name */
    uint32_t ndims;               /* as configured, batch dim included */
    int64_t dims[MODEL_MAX_DIMS]; /* dims[0] is the batch size when max_batch_size > 0 */
    const float *data;            /* FP32 inputs: product(dims) floats, row-major */
    const int64_t *ids;           /* INT64 inputs: product(dims) ids (< 0: padding) */
} model_input;

/* Where an instance reads table rows: out[n * dim] gets the rows of ids[0..n) (distinct,
 * each >= 0) of table `table`, dim floats each, in ids order. On failure it writes err
 * (a message a person can act on) and returns the status model_infer then returns
 * (UNAVAILABLE when the rows cannot be reached, say). Called from model_infer's and
 * model_infer_rows' threads, possibly several at once. */
typedef ps_status (*model_rows_fn)(void *arg, const char *table, uint32_t dim, size_t n,
                                   const uint64_t *ids, float *out, char *err, size_t err_len);

/* One requested output. The caller sets name and optionally buffer/capacity; infer
 * sets data, ndims and dims. */
typedef struct model_output {
    const char *name;             /* a model output's name */
    float *buffer;                /* where to write it, or NULL: into the workspace */
    size_t capacity;              /* floats available at buffer */
    const float *data;            /* set by infer: buffer, or workspace memory */
    uint32_t ndims;               /* set by infer */
    int64_t dims[MODEL_MAX_DIMS]; /* set by infer: the batch dim holds the batch size */
} model_output;

/* Creates an instance: checks the parameter shapes against the graph
 * (model_config_resolve; entries the graph does not reference are ignored), allocates
 * zeroed parameter memory. cfg is copied (the caller keeps its own). backend NULL: the
 * instance creates and owns a CPU backend; else it borrows it (must outlive the
 * instance). INVALID_ARGUMENT with a message for shapes that disagree with the graph;
 * RESOURCE_EXHAUSTED when a workspace for max_batch_size would be too large; a device
 * backend's status when it cannot hold the parameter mirrors. */
ps_status model_create(const model_config *cfg, const model_tensor_desc *params, size_t n_params,
                       kernels_backend *backend, model **ret_model, char *err, size_t err_len);
/* model_create with the shapes of the tensors in st, then model_load_safetensors. */
ps_status model_create_from_safetensors(const model_config *cfg, const safetensors *st,
                                        kernels_backend *backend, model **ret_model, char *err,
                                        size_t err_len);
/* Opens a model directory: dir/config.json and dir/<version>/model.safetensors;
 * version 0 picks the highest numbered version directory. NOT_FOUND when there is no
 * version; IO/PARSE/INVALID_ARGUMENT from the pieces, with the path in the message. */
ps_status model_open_dir(const char *dir, uint32_t version, kernels_backend *backend,
                         model **ret_model, char *err, size_t err_len);
void model_destroy(model *m); /* accepts NULL */

/* The instance's own copy of its config (for names, inputs, outputs, metadata). */
const model_config *model_get_config(const model *m);
const char *model_name(const model *m);
uint32_t model_max_batch_size(const model *m);

/* Sets where the instance reads table rows (fn NULL: nowhere; a pass of a graph with
 * embedding_bag layers then fails FAILED_PRECONDITION). Set it before the first
 * forward pass: it is not synchronised with model_infer. */
void model_set_rows(model *m, model_rows_fn fn, void *arg);
/* True when the graph has embedding_bag layers (reads table rows). */
bool model_has_tables(const model *m);

/* Parameters in model_config_param order, with their actual shapes. */
size_t model_param_count(const model *m);
bool model_param_at(const model *m, size_t i, model_tensor_desc *ret_desc);
/* The writable buffer of a parameter and its length in floats; NOT_FOUND for a name
 * the graph does not reference. See "Threads" above. */
ps_status model_param(model *m, const char *name, float **ret_data, size_t *ret_count);
/* Copies count floats (little-endian bytes, any alignment) into a parameter starting
 * at element offset, and marks them: how chunks and range updates land. NOT_FOUND,
 * OUT_OF_RANGE. */
ps_status model_param_write(model *m, const char *name, size_t offset, const void *src,
                            size_t count);
/* Records that floats [offset, offset + count) of a parameter's host buffer were
 * written (see "Memory"): a few bit sets, no copy. NOT_FOUND, OUT_OF_RANGE. */
ps_status model_param_mark(model *m, const char *name, size_t offset, size_t count);
/* Uploads every marked range to the device mirror and waits for it; OK at once on a
 * host backend or when nothing is marked. On failure err says why, and what was not
 * uploaded stays marked for the next call. */
ps_status model_params_sync(model *m, char *err, size_t err_len);
/* Copies every parameter from st, which must hold each one as F32 with exactly the
 * instance's shape (extra tensors are ignored), and marks them (sync follows: see
 * "Memory"; model_create_from_safetensors and model_open_dir sync themselves).
 * NOT_FOUND / INVALID_ARGUMENT with a message; on failure some parameters may already
 * hold new values. */
ps_status model_load_safetensors(model *m, const safetensors *st, char *err, size_t err_len);

/* Scratch memory for model_infer, sized for max_batch_size (about the sum of every
 * layer output's size at that batch; on a device backend in device memory, with its
 * own stream). One thread at a time; any number per model. The model must outlive it. */
ps_status model_workspace_create(const model *m, model_workspace **ret_ws);
void model_workspace_destroy(model_workspace *ws); /* accepts NULL */

/* Reads the table rows a forward pass of these inputs needs into ws (see "Tables"
 * above), checking the inputs as model_infer does; nothing for a graph without
 * tables. A model_infer that follows on ws with the same inputs array (unchanged)
 * uses them instead of reading again; any other call on ws drops them. Errors as
 * model_infer's. */
ps_status model_infer_rows(const model *m, model_workspace *ws, const model_input *inputs,
                           size_t n_inputs, char *err, size_t err_len);

/* Runs a forward pass (see "Inference" above). ws NULL: scratch is allocated for this
 * call, and every output must then have a buffer. INVALID_ARGUMENT with a message for
 * an unknown or missing input, a wrong shape or batch size, FP32 data for an INT64
 * input (or the reverse), an unknown output, a buffer too small; UNIMPLEMENTED when
 * the backend lacks an op the graph uses; FAILED_PRECONDITION for a graph with tables
 * and no rows source; the source's status when it fails. */
ps_status model_infer(const model *m, model_workspace *ws, const model_input *inputs,
                      size_t n_inputs, model_output *outputs, size_t n_outputs, char *err,
                      size_t err_len);

#endif
