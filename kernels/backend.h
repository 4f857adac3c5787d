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
 * (libkernels_<name>.so, see kernels_backend_open and KERNELS_BACKEND_MODULE_INIT), so
 * a program built without CUDA and a machine without a GPU both work.
 *
 * Threads: the CPU backend keeps no mutable state, so any number of threads may run
 * ops on one backend (its default stream included) at once. OpenBLAS may itself use
 * threads for large GEMMs (OPENBLAS_NUM_THREADS caps them process-wide).
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
 * FAILED_PRECONDITION from its init. */
#define KERNELS_BACKEND_ABI_VERSION 2u

/* The symbol a loadable backend exports, of type kernels_backend_module_init_fn: it
 * fills *ret_iface and *ret_ctx (its context, then owned by the handle) or answers
 * UNAVAILABLE when it cannot run here (no device, no driver). */
#define KERNELS_BACKEND_MODULE_INIT "kernels_backend_module_init"

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
} kernels_backend_iface;

/* The init of a loadable backend (KERNELS_BACKEND_MODULE_INIT). */
typedef ps_status (*kernels_backend_module_init_fn)(uint32_t abi_version,
                                                    kernels_backend_iface *ret_iface,
                                                    void **ret_ctx);

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

/* Where kernels_backend_open looks for loadable backends. */
typedef struct kernels_backend_open_opts {
    const char *module_dir; /* folder of libkernels_<name>.so files; NULL: no modules */
} kernels_backend_open_opts;

/* A backend by name: "cpu", or the module <module_dir>/libkernels_<name>.so. NOT_FOUND
 * when no such module exists, UNAVAILABLE when it cannot run here (its libraries or
 * device missing), INVALID_ARGUMENT for a bad name; err (may be NULL) then says why. */
ps_status kernels_backend_open(const char *name, const kernels_backend_open_opts *opts,
                               kernels_backend **ret_backend, char *err, size_t err_len);

/* The iface name, e.g. "cpu". */
const char *kernels_backend_name(const kernels_backend *backend);

/* Whether ops take host memory (true for the CPU backend). */
bool kernels_backend_host_memory(const kernels_backend *backend);

/* The backend's default stream (NULL for a NULL backend); lives as long as it. */
kernels_stream *kernels_backend_stream(const kernels_backend *backend);

/* A new stream of the backend (which must outlive it). */
ps_status kernels_stream_create(const kernels_backend *backend, kernels_stream **ret_stream);
void kernels_stream_destroy(kernels_stream *stream); /* accepts NULL; never the default */
/* Waits until every op queued on the stream has run; the first failure among them. */
ps_status kernels_stream_sync(kernels_stream *stream);

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
