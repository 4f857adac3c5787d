/* backend.h: the interface every compute backend implements (CPU now, CUDA later).
 *
 * Built like ggml-backend: a backend is a table of function pointers (the "iface")
 * plus an opaque context, wrapped in an opaque handle. The model executor calls ops
 * only through the dispatchers (ops.h, and the kernels_backend_* shorthands below),
 * never a backend directly, so adding a backend means filling one iface and nothing
 * else changes. The dispatchers check arguments once, so implementations may assume
 * sane sizes; an iface entry marked optional may be NULL and the dispatcher then
 * answers UNIMPLEMENTED (the executor turns that into a message naming the backend
 * and op), or falls back where this header says so.
 *
 * Memory: a backend computes either on host memory (CPU: kernels_backend_host_memory
 * is true, and any host pointer may be given to an op) or on its own device memory
 * (CUDA): then tensors live in buffers from kernels_buffer_alloc, filled and read with
 * kernels_buffer_upload / kernels_buffer_download. An executor that works on every
 * backend allocates, uploads and downloads; one that sees host memory may skip it.
 *
 * Streams: ops run on a stream (kernels_stream), the stream-like context of CUDA: ops
 * queued on one stream run in order, possibly after the call returned; different
 * streams may run at once. A stream is used by one thread at a time; give each
 * worker thread its own. Every backend has a default stream (kernels_backend_stream),
 * which the kernels_backend_* shorthands use. To a backend, a stream is an "exec"
 * context made by iface.stream_create; a backend without per-stream state leaves that
 * NULL and gets its own context as the exec of every stream.
 *
 * Loading: the CPU backend is built in; others are loadable modules
 * (libkernels_<name>.so, see kernels_backend_open and KERNELS_BACKEND_MODULE_OPEN), so
 * a program built without CUDA and a machine without a GPU both work. Programs pick
 * one with the words of their flags (--device cpu|cuda|auto, --precision fp32|bf16)
 * through kernels_backend_select.
 *
 * Precision: every tensor is FP32 in every backend's memory. A backend opened with
 * KERNELS_PRECISION_BF16 (the CUDA backend only) rounds the inputs and weights of its
 * GEMMs to BF16 and accumulates in FP32: faster, less exact (its op test states the
 * tolerance). The CPU backend is FP32 only.
 *
 * Threads: any number of threads may run ops on one CPU backend (its default stream
 * included) at once. The backend owns a pool of worker threads (as many as OpenBLAS
 * uses) that the row-wise ops split large inputs over; a caller that finds the pool
 * busy runs its op itself (kernels/cpu/cpu_pool.h). OpenBLAS may itself use threads for
 * large GEMMs (OPENBLAS_NUM_THREADS caps them process-wide).
 */
#ifndef PS_KERNELS_BACKEND_H
#define PS_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "status.h"

/* Largest buffer kernels_buffer_alloc gives (a guard against sizes gone wrong). */
#define KERNELS_MAX_BUFFER_BYTES ((size_t)1 << 40)

/* Version of kernels_backend_iface; a module built against another answers
 * FAILED_PRECONDITION from its init. 3: last_error, and KERNELS_BACKEND_MODULE_OPEN.
 * 4: the graph entries (the iface grew: a module built for 3 must not fill it). */
#define KERNELS_BACKEND_ABI_VERSION 4u

/* The symbol a loadable backend exports, of type kernels_backend_module_init_fn: it
 * fills *ret_iface and *ret_ctx (its context, then owned by the handle) or answers
 * UNAVAILABLE when it cannot run here (no device, no driver). */
#define KERNELS_BACKEND_MODULE_INIT "kernels_backend_module_init"

/* The richer entry a module may export instead (kernels_backend_module_open_fn): the
 * same, with the options of kernels_backend_module_opts and a message saying why it
 * failed. The loader prefers it when both exist. */
#define KERNELS_BACKEND_MODULE_OPEN "kernels_backend_module_open"

/* The arithmetic of a backend's GEMMs (see Precision above). */
typedef enum kernels_precision {
    KERNELS_PRECISION_FP32 = 0, /* FP32 everywhere (the default; no TF32) */
    KERNELS_PRECISION_BF16,     /* GEMM inputs and weights BF16, FP32 accumulate and output */
} kernels_precision;

/* Most characters in a backend name (letters, digits, '_'). */
#define KERNELS_BACKEND_MAX_NAME 32u

/* What a backend implements. `ctx` is the context given to kernels_backend_create;
 * `exec` is the context of the stream an op runs on (see Streams above). Sizes are
 * already checked by the dispatcher (ops.h). Ops return OK once queued; an error met
 * while running comes back from stream_sync. */
typedef struct kernels_backend_iface {
    const char *name; /* short, e.g. "cpu"; used in messages */

    /* Frees ctx when the backend is destroyed; optional (NULL: nothing to free). */
    void (*free_ctx)(void *ctx);

    /* Required ops (see ops.h for what each computes). */
    ps_status (*dense)(void *exec, const float *x, size_t rows, size_t in, const float *w,
                       const float *bias, size_t out, kernels_activation act, float *y);
    ps_status (*softmax)(void *exec, const float *x, size_t rows, size_t cols, float *y);
    ps_status (*relu)(void *exec, const float *x, size_t n, float *y);
    ps_status (*add)(void *exec, const float *a, const float *b, size_t n, float *y);

    /* Optional ops. */
    ps_status (*scale)(void *exec, const float *x, size_t rows, size_t cols, const float *scale,
                       const float *shift, float *y);
    ps_status (*embedding_bag)(void *exec, const float *rows, size_t n_rows, size_t dim,
                               const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                               float *y);
    ps_status (*concat)(void *exec, const float *a, size_t ca, const float *b, size_t cb,
                        size_t rows, float *y);

    /* true: tensors live in device memory; the buffer entries below are then required.
     * false (the default): host memory; NULL buffer entries mean aligned malloc, free
     * and memcpy, and a NULL copy means memmove. */
    bool device_memory;

    /* Streams, optional: NULL stream_create means every stream's exec is ctx. */
    ps_status (*stream_create)(void *ctx, void **ret_exec);
    void (*stream_destroy)(void *ctx, void *exec);
    ps_status (*stream_sync)(void *exec); /* waits for the ops queued; NULL: nothing */

    /* Buffers. upload returns when src may be reused; download returns when dst holds
     * the data, after every op queued before it on the stream. */
    ps_status (*buffer_alloc)(void *ctx, size_t bytes, void **ret_ptr);
    void (*buffer_free)(void *ctx, void *ptr);
    ps_status (*buffer_upload)(void *exec, void *dst, const void *src, size_t bytes);
    ps_status (*buffer_download)(void *exec, void *dst, const void *src, size_t bytes);
    ps_status (*copy)(void *exec, const float *x, size_t n, float *y); /* y = x */

    /* Optional ops (ops.h). */
    ps_status (*activation)(void *exec, kernels_activation act, const float *x, size_t n, float *y);
    ps_status (*conv2d)(void *exec, const kernels_conv2d_shape *shape, const float *x,
                        const float *w, const float *bias, kernels_activation act, float *y);
    ps_status (*pool2d)(void *exec, const kernels_pool2d_shape *shape, kernels_pool2d_kind kind,
                        const float *x, float *y);
    ps_status (*layernorm)(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                           const float *beta, float eps, float *y);
    ps_status (*attention)(void *exec, const kernels_attention_shape *shape, const float *q,
                           const float *k, const float *v, const float *mask, float *y);
    ps_status (*mean_pool)(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                           const float *mask, float *y);
    ps_status (*embedding_gather)(void *exec, const float *table, size_t n_rows, size_t dim,
                                  const int64_t *index, size_t n, float *y);
    /* dims, perm: ndims entries; y's axis i is x's axis perm[i]. */
    ps_status (*transpose)(void *exec, const float *x, const size_t *dims, size_t ndims,
                           const size_t *perm, float *y);

    /* Optional: what the stream's last failed call was, e.g. "cublasLtMatmul: ...";
     * "" when nothing failed. Owned by exec, valid until the next op on the stream. */
    const char *(*last_error)(void *exec);

    /* Optional op (ops.h), added last so that a module built before it (the loader
     * zeroes the iface it fills) simply lacks it. */
    ps_status (*l2_normalize)(void *exec, const float *x, size_t rows, size_t cols, float eps,
                              float *y);

    /* Optional, all four or none: graphs (CUDA graphs). graph_begin makes the stream
     * record the ops queued on it instead of running them; graph_end stops recording
     * (always, also after a failed op) and gives the recording, ready to launch, or a
     * failure when it cannot be replayed; graph_launch queues a replay (the same
     * buffers and host arguments as recorded: device memory is read when it runs);
     * graph_free frees one. */
    ps_status (*graph_begin)(void *exec);
    ps_status (*graph_end)(void *exec, void **ret_graph);
    ps_status (*graph_launch)(void *exec, void *graph);
    void (*graph_free)(void *ctx, void *graph);
} kernels_backend_iface;

/* The init of a loadable backend (KERNELS_BACKEND_MODULE_INIT). */
typedef ps_status (*kernels_backend_module_init_fn)(uint32_t abi_version,
                                                    kernels_backend_iface *ret_iface,
                                                    void **ret_ctx);

/* What kernels_backend_open passes to a module's KERNELS_BACKEND_MODULE_OPEN. */
typedef struct kernels_backend_module_opts {
    kernels_precision precision; /* a module that lacks it answers INVALID_ARGUMENT */
} kernels_backend_module_opts;

/* KERNELS_BACKEND_MODULE_OPEN: like the init, plus options and a message (err, may be
 * NULL; always terminated) saying why it failed, e.g. which CUDA call found no device. */
typedef ps_status (*kernels_backend_module_open_fn)(uint32_t abi_version,
                                                    const kernels_backend_module_opts *opts,
                                                    kernels_backend_iface *ret_iface,
                                                    void **ret_ctx, char *err, size_t err_len);

typedef struct kernels_backend kernels_backend;

/* For backend implementations: wraps an iface (copied) and a context (owned from now
 * on: freed with iface->free_ctx when the backend is destroyed, also when this call
 * fails). INVALID_ARGUMENT when a required entry (name, dense, softmax, relu, add; the
 * buffer entries and copy for device memory) is NULL. */
ps_status kernels_backend_create(const kernels_backend_iface *iface, void *ctx,
                                 kernels_backend **ret_backend);
void kernels_backend_destroy(kernels_backend *backend); /* accepts NULL */

/* The CPU backend (kernels/cpu/): OpenBLAS sgemm and plain C loops. */
ps_status kernels_backend_cpu_create(kernels_backend **ret_backend);

/* Where kernels_backend_open looks for loadable backends, and what it asks of one. */
typedef struct kernels_backend_open_opts {
    const char *module_dir;      /* folder of libkernels_<name>.so files; NULL: no modules */
    kernels_precision precision; /* FP32 (zero, the default) or BF16 (modules that offer it) */
} kernels_backend_open_opts;

/* A backend by name: "cpu", or the module <module_dir>/libkernels_<name>.so. NOT_FOUND
 * when no such module exists, UNAVAILABLE when it cannot run here (its libraries or
 * device missing), INVALID_ARGUMENT for a bad name or a precision the backend lacks;
 * err (may be NULL) then says why. */
ps_status kernels_backend_open(const char *name, const kernels_backend_open_opts *opts,
                               kernels_backend **ret_backend, char *err, size_t err_len);

/* What a program's --device and --precision flags ask for (backend_select.c). */
typedef struct kernels_backend_select_opts {
    const char *device;     /* "cpu", "cuda" or "auto"; NULL: "cpu" */
    const char *precision;  /* "fp32" or "bf16"; NULL: "fp32" */
    const char *module_dir; /* where the CUDA module is (kernels_backend_open_opts) */
    const char *gpu_module; /* the module "cuda" and "auto" load; NULL: "cuda" (tests
                             * name another) */
} kernels_backend_select_opts;

/* The backend those words name. "cpu": the CPU backend (FP32 only: bf16 is
 * INVALID_ARGUMENT). "cuda": the CUDA module, or its error (NOT_FOUND: not built;
 * UNAVAILABLE: no GPU or driver). "auto": the CUDA module when it loads and finds a GPU,
 * else the CPU backend in FP32 (a program logs kernels_backend_name and
 * kernels_backend_precision to say which it got). Unknown words: INVALID_ARGUMENT. err
 * (may be NULL) says why on failure. */
ps_status kernels_backend_select(const kernels_backend_select_opts *opts,
                                 kernels_backend **ret_backend, char *err, size_t err_len);

/* The iface name, e.g. "cpu". */
const char *kernels_backend_name(const kernels_backend *backend);

/* The precision the backend computes in (FP32 for a NULL backend). */
kernels_precision kernels_backend_precision(const kernels_backend *backend);

/* "fp32" or "bf16". */
const char *kernels_precision_name(kernels_precision precision);

/* Whether ops take host memory (true for the CPU backend). */
bool kernels_backend_host_memory(const kernels_backend *backend);

/* The backend's default stream (NULL for a NULL backend); lives as long as it. */
kernels_stream *kernels_backend_stream(const kernels_backend *backend);

/* A new stream of the backend (which must outlive it). */
ps_status kernels_stream_create(const kernels_backend *backend, kernels_stream **ret_stream);
void kernels_stream_destroy(kernels_stream *stream); /* accepts NULL; never the default */
/* Waits until every op queued on the stream has run; the first failure among them. */
ps_status kernels_stream_sync(kernels_stream *stream);
/* What the stream's last failure was, as the backend words it ("" when it says
 * nothing; never NULL). Valid until the next call on the stream. */
const char *kernels_stream_last_error(const kernels_stream *stream);

/* Graphs: a recording of the ops queued on a stream, replayed later at the cost of one
 * launch (CUDA graphs: small batches are bound by kernel launches, not arithmetic).
 * Only ops whose arguments stay valid are worth recording: device buffers (read when
 * the replay runs) and host values the op copies at record time (sizes, shapes); a
 * host array an op reads while running (ids) is read at record time only. A backend
 * without graphs answers UNIMPLEMENTED, and callers run the ops one by one. */
typedef struct kernels_graph kernels_graph;
/* Starts recording on the stream (nothing queued then runs until capture_end). */
ps_status kernels_stream_capture_begin(kernels_stream *stream);
/* Stops recording (always) and gives the graph; on failure (an op failed while
 * recording, or the backend cannot replay it) no graph and the backend's status. */
ps_status kernels_stream_capture_end(kernels_stream *stream, kernels_graph **ret_graph);
/* Queues a replay of the graph on a stream of the backend that recorded it. */
ps_status kernels_graph_launch(kernels_stream *stream, const kernels_graph *graph);
void kernels_graph_destroy(kernels_graph *graph); /* accepts NULL; not while it runs */

/* Backend memory of `bytes` (1 .. KERNELS_MAX_BUFFER_BYTES), aligned to 64 bytes,
 * uninitialised. Freed with kernels_buffer_free (accepts NULL). */
ps_status kernels_buffer_alloc(const kernels_backend *backend, size_t bytes, void **ret_ptr);
void kernels_buffer_free(const kernels_backend *backend, void *ptr);
/* Host src -> backend dst, bytes > 0; returns when src may be reused. */
ps_status kernels_buffer_upload(kernels_stream *stream, void *dst, const void *src, size_t bytes);
/* Backend src -> host dst after the ops queued before; returns when dst holds it. */
ps_status kernels_buffer_download(kernels_stream *stream, void *dst, const void *src, size_t bytes);

/* Shorthands: the op of ops.h on the backend's default stream. */
ps_status kernels_backend_dense(const kernels_backend *backend, const float *x, size_t rows,
                                size_t in, const float *w, const float *bias, size_t out,
                                kernels_activation act, float *y);
ps_status kernels_backend_softmax(const kernels_backend *backend, const float *x, size_t rows,
                                  size_t cols, float *y);
ps_status kernels_backend_relu(const kernels_backend *backend, const float *x, size_t n, float *y);
ps_status kernels_backend_add(const kernels_backend *backend, const float *a, const float *b,
                              size_t n, float *y);
ps_status kernels_backend_scale(const kernels_backend *backend, const float *x, size_t rows,
                                size_t cols, const float *scale, const float *shift, float *y);
ps_status kernels_backend_embedding_bag(const kernels_backend *backend, const float *rows,
                                        size_t n_rows, size_t dim, const int64_t *index,
                                        size_t batch, size_t len, kernels_pool pool, float *y);
ps_status kernels_backend_concat(const kernels_backend *backend, const float *a, size_t ca,
                                 const float *b, size_t cb, size_t rows, float *y);

#endif
