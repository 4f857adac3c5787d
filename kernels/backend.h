/* backend.h: the interface every compute backend implements (CPU now, CUDA later).
 *
 * Built like ggml-backend: a backend is a table of function pointers (the "iface")
 * plus an opaque context, wrapped in an opaque handle. The model executor calls ops
 * only through the dispatch functions below (kernels_backend_dense, ...), never a
 * backend directly, so adding a backend means filling one iface and nothing else
 * changes. The dispatchers check arguments once, so implementations may assume sane
 * sizes; an iface entry marked optional may be NULL and the dispatcher then answers
 * UNIMPLEMENTED (the executor turns that into a message naming the backend and op).
 *
 * Memory: every pointer an op gets lives where the backend computes. For the CPU
 * backend that is ordinary host memory, FP32, row-major, contiguous. A device backend
 * (CUDA) will add buffer entries (alloc, free, upload, download) to the iface; the
 * executor is the only caller that will need to learn about them.
 *
 * Threads: the CPU backend keeps no mutable state, so any number of threads may run
 * ops on one backend at once. OpenBLAS may itself use threads for large GEMMs
 * (OPENBLAS_NUM_THREADS caps them process-wide).
 */
#ifndef PS_KERNELS_BACKEND_H
#define PS_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Largest row count, feature count or element count one op call accepts: BLAS takes
 * int sizes. The dispatchers answer INVALID_ARGUMENT past it. */
#define KERNELS_MAX_DIM 2147483647u

/* Elementwise function applied after a dense layer's GEMM and bias. */
typedef enum kernels_activation {
    KERNELS_ACTIVATION_NONE = 0, /* y = x */
    KERNELS_ACTIVATION_RELU,     /* y = max(x, 0) */
    KERNELS_ACTIVATION_SIGMOID,  /* y = 1 / (1 + exp(-x)) */
    KERNELS_ACTIVATION_TANH,     /* y = tanh(x) */
} kernels_activation;

/* How an embedding bag reduces the rows of one sample. */
typedef enum kernels_pool {
    KERNELS_POOL_SUM = 0, /* y = the sum of the sample's rows */
    KERNELS_POOL_MEAN,    /* y = that sum / the count of rows (not padding); zeros for none */
} kernels_pool;

/* What a backend implements. `ctx` is the context given to kernels_backend_create.
 * Sizes are already checked (non-zero, <= KERNELS_MAX_DIM) by the dispatcher. */
typedef struct kernels_backend_iface {
    const char *name; /* short, e.g. "cpu"; used in messages */

    /* Frees ctx when the backend is destroyed; optional (NULL: nothing to free). */
    void (*free_ctx)(void *ctx);

    /* y[rows, out] = act(x[rows, in] * w[out, in]^T + bias[out]). bias may be NULL
     * (no bias). w is PyTorch Linear layout. y never aliases x, w or bias. */
    ps_status (*dense)(void *ctx, const float *x, size_t rows, size_t in, const float *w,
                       const float *bias, size_t out, kernels_activation act, float *y);

    /* y[rows, cols] = softmax over each row of x (the last axis); y may equal x. */
    ps_status (*softmax)(void *ctx, const float *x, size_t rows, size_t cols, float *y);

    /* y[n] = max(x[n], 0); y may equal x. */
    ps_status (*relu)(void *ctx, const float *x, size_t n, float *y);

    /* y[n] = a[n] + b[n]; y may equal a or b. */
    ps_status (*add)(void *ctx, const float *a, const float *b, size_t n, float *y);

    /* Optional. y[r, c] = x[r, c] * scale[c] + shift[c] over rows x cols; scale or shift
     * may be NULL (meaning 1 and 0); y may equal x. */
    ps_status (*scale)(void *ctx, const float *x, size_t rows, size_t cols, const float *scale,
                       const float *shift, float *y);

    /* Optional. An embedding bag: for each of `batch` samples, its `len` entries of
     * index (index[b * len + j]) pick rows of `rows` [n_rows, dim]; an entry -1 is
     * padding. y[b, :] = the sum (KERNELS_POOL_SUM) or the mean (KERNELS_POOL_MEAN) of
     * the rows picked, zeros when all are padding. Every entry is -1 or < n_rows
     * (checked by the dispatcher); n_rows may be 0 (rows is then NULL: all padding). */
    ps_status (*embedding_bag)(void *ctx, const float *rows, size_t n_rows, size_t dim,
                               const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                               float *y);

    /* Optional. y[r, :] = a[r, :] then b[r, :]: y[rows, ca + cb] from a[rows, ca] and
     * b[rows, cb]. y never aliases a or b. */
    ps_status (*concat)(void *ctx, const float *a, size_t ca, const float *b, size_t cb,
                        size_t rows, float *y);
} kernels_backend_iface;

typedef struct kernels_backend kernels_backend;

/* For backend implementations: wraps an iface (copied) and a context (owned from now
 * on: freed with iface->free_ctx when the backend is destroyed, also when this call
 * fails). INVALID_ARGUMENT when a required entry (name, dense, softmax, relu, add) is
 * NULL. */
ps_status kernels_backend_create(const kernels_backend_iface *iface, void *ctx,
                                 kernels_backend **ret_backend);
void kernels_backend_destroy(kernels_backend *backend); /* accepts NULL */

/* The CPU backend (kernels/cpu/backend_cpu.c): OpenBLAS sgemm and plain C loops. */
ps_status kernels_backend_cpu_create(kernels_backend **ret_backend);

/* The iface name, e.g. "cpu". */
const char *kernels_backend_name(const kernels_backend *backend);

/* Dispatch. Each checks its pointers and sizes (INVALID_ARGUMENT for NULL data, a zero
 * size or one past KERNELS_MAX_DIM, an unknown activation), then calls the backend. */
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
/* Also INVALID_ARGUMENT when batch * len or n_rows * dim passes KERNELS_MAX_DIM, an
 * index entry is outside -1..n_rows-1, or the pool is unknown. */
ps_status kernels_backend_embedding_bag(const kernels_backend *backend, const float *rows,
                                        size_t n_rows, size_t dim, const int64_t *index,
                                        size_t batch, size_t len, kernels_pool pool, float *y);
/* Also INVALID_ARGUMENT when ca + cb or rows * (ca + cb) passes KERNELS_MAX_DIM. */
ps_status kernels_backend_concat(const kernels_backend *backend, const float *a, size_t ca,
                                 const float *b, size_t cb, size_t rows, float *y);

#endif
