/* cuda_internal.h: what the CUDA backend's C files share: its context and stream
 * structs, error reporting, and each file's ops (each with the iface signature of
 * backend.h). Not for other modules: the rest of the project sees only the module's
 * KERNELS_BACKEND_MODULE_OPEN entry (backend_cuda.c).
 *
 * Layout: a backend context is the exec of its default stream (backend.h: the
 * default stream's exec is the context itself), so both are a cuda_exec; the state
 * every stream of one backend shares (device, precision, the cuBLASLt handle) is a
 * cuda_shared the default exec owns. Each exec has its own cudaStream_t and the
 * handles that bind to a stream (cuBLAS, cuDNN), so streams never share mutable state
 * and each may be driven by its own thread.
 *
 * Errors: every CUDA, cuBLAS and cuDNN result goes through cuda_check_* which turns a
 * failure into a ps_status and keeps a message ("what: library error name: text") in
 * the exec, read back through the iface's last_error. Nothing here exits or prints.
 */
#ifndef PS_KERNELS_CUDA_INTERNAL_H
#define PS_KERNELS_CUDA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "backend.h"

/* Bytes of cuBLASLt workspace per stream (NVIDIA's advice for Hopper: 32 MiB). */
#define CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)

/* Dense algorithms remembered per stream (by shape, epilogue, precision, alignment). */
#define CUDA_LT_CACHE_SIZE 32u

/* Longest message kept per stream. */
#define CUDA_ERR_LEN 256u

/* Most scratch memory one op takes from the stream-ordered pool for cuDNN workspace
 * (algorithms that want more are skipped) and attention scores (the batch is cut
 * into chunks that fit). */
#define CUDA_CONV_WORKSPACE_MAX ((size_t)1 << 30)
#define CUDA_ATTENTION_SCRATCH_BYTES ((size_t)256 << 20)

/* One remembered cuBLASLt algorithm and what it was chosen for. */
typedef struct cuda_lt_entry {
    bool used;
    uint64_t rows, in, out;  /* the GEMM's shape */
    int epilogue, precision; /* cublasLtEpilogue_t, kernels_precision */
    uint32_t align[4];       /* alignment of x, w, bias, y (bytes, <= 256) */
    cublasLtMatmulAlgo_t algo;
    size_t workspace; /* bytes the algorithm needs (<= CUDA_LT_WORKSPACE_BYTES) */
} cuda_lt_entry;

/* What every stream of one backend shares; owned by the backend context. */
typedef struct cuda_shared {
    int device;                  /* the CUDA device every stream runs on */
    kernels_precision precision; /* of dense (backend.h) */
    cublasLtHandle_t lt;         /* cuBLASLt; thread-safe, so one per backend */
} cuda_shared;

/* One stream (and, for the default stream, the backend context). */
typedef struct cuda_exec {
    cuda_shared *shared;                        /* the backend's shared state */
    bool owns_shared;                           /* true for the backend context */
    cudaStream_t stream;                        /* where every op of this exec is queued */
    cublasHandle_t blas;                        /* attention's batched GEMMs, on `stream` */
    cudnnHandle_t dnn;                          /* conv2d, pool2d; NULL until first used */
    void *lt_workspace;                         /* CUDA_LT_WORKSPACE_BYTES for cuBLASLt */
    cuda_lt_entry lt_cache[CUDA_LT_CACHE_SIZE]; /* dense algorithms already chosen */
    unsigned lt_next;                           /* the cache slot replaced next */
    char err[CUDA_ERR_LEN];                     /* the last failure; "" when none */
} cuda_exec;

/* --- backend_cuda.c: errors --------------------------------------------------------- */

/* The status a failed call maps to (pure, unit-tested): an allocation failure is
 * NO_MEMORY, an unsupported case UNIMPLEMENTED, no device UNAVAILABLE, the rest INTERNAL. */
ps_status cuda_status_of_rt(cudaError_t rc);
ps_status cuda_status_of_blas(cublasStatus_t rc);
ps_status cuda_status_of_dnn(cudnnStatus_t rc);

/* OK when rc is success; otherwise the status above, with "what: NAME: text" kept as
 * the exec's last error (e may be NULL: no message). cuda_check_rt also clears CUDA's
 * per-thread last error, so a later launch check does not see an old failure. */
ps_status cuda_check_rt(cuda_exec *e, cudaError_t rc, const char *what);
ps_status cuda_check_blas(cuda_exec *e, cublasStatus_t rc, const char *what);
ps_status cuda_check_dnn(cuda_exec *e, cudnnStatus_t rc, const char *what);
/* Keeps a message of the caller's own and returns st. */
ps_status cuda_fail(cuda_exec *e, ps_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies host src[bytes] to device dst on e's stream and returns once src may be
 * reused (pinned memory: after the copy; pageable: CUDA has staged it already). */
ps_status cuda_copy_from_host(cuda_exec *e, void *dst, const void *src, size_t bytes);

/* The largest power of two (<= 256) that divides the address: the alignment cuBLASLt
 * may assume (pure). NULL: 256. */
uint32_t cuda_ptr_align(const void *p);

/* --- cuda_dense.c ------------------------------------------------------------------- */

/* The cuBLASLt epilogue for (act, bias) and the activation left to run after it
 * (pure): ReLU fuses; GELU (erf form), sigmoid and tanh run as a kernel afterwards. */
void cuda_dense_plan(kernels_activation act, bool bias, cublasLtEpilogue_t *ret_epilogue,
                     kernels_activation *ret_after);
ps_status cuda_dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                     const float *bias, size_t out, kernels_activation act, float *y);

/* --- cuda_dnn.c: conv2d and pool2d through cuDNN ------------------------------------ */

/* The cuDNN descriptors of a conv2d (host-side only: no device needed, unit-tested). */
typedef struct cuda_conv_desc {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    size_t out_h, out_w; /* P, Q as cuDNN computes them (checked against ops.h's rule) */
} cuda_conv_desc;
/* Builds them for a checked shape; on failure nothing is left allocated and err (may
 * be NULL) says which call failed. */
ps_status cuda_conv_desc_create(const kernels_conv2d_shape *shape, cuda_conv_desc *ret, char *err,
                                size_t err_len);
void cuda_conv_desc_destroy(cuda_conv_desc *d); /* accepts a zeroed struct */

/* The same for pool2d. */
typedef struct cuda_pool_desc {
    cudnnTensorDescriptor_t x, y;
    cudnnPoolingDescriptor_t pool;
    size_t out_h, out_w;
} cuda_pool_desc;
ps_status cuda_pool_desc_create(const kernels_pool2d_shape *shape, kernels_pool2d_kind kind,
                                cuda_pool_desc *ret, char *err, size_t err_len);
void cuda_pool_desc_destroy(cuda_pool_desc *d);

ps_status cuda_conv2d(void *exec, const kernels_conv2d_shape *shape, const float *x, const float *w,
                      const float *bias, kernels_activation act, float *y);
ps_status cuda_pool2d(void *exec, const kernels_pool2d_shape *shape, kernels_pool2d_kind kind,
                      const float *x, float *y);

/* --- cuda_ops.c: the hand-written kernels' ops -------------------------------------- */

ps_status cuda_softmax(void *exec, const float *x, size_t rows, size_t cols, float *y);
ps_status cuda_activation(void *exec, kernels_activation act, const float *x, size_t n, float *y);
ps_status cuda_relu(void *exec, const float *x, size_t n, float *y);
ps_status cuda_add(void *exec, const float *a, const float *b, size_t n, float *y);
ps_status cuda_scale(void *exec, const float *x, size_t rows, size_t cols, const float *scale,
                     const float *shift, float *y);
ps_status cuda_layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                         const float *beta, float eps, float *y);
ps_status cuda_mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                         const float *mask, float *y);
ps_status cuda_embedding_gather(void *exec, const float *table, size_t n_rows, size_t dim,
                                const int64_t *index, size_t n, float *y);
ps_status cuda_embedding_bag(void *exec, const float *table, size_t n_rows, size_t dim,
                             const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                             float *y);
ps_status cuda_concat(void *exec, const float *a, size_t ca, const float *b, size_t cb, size_t rows,
                      float *y);
ps_status cuda_transpose(void *exec, const float *x, const size_t *dims, size_t ndims,
                         const size_t *perm, float *y);

/* --- cuda_attention.c ---------------------------------------------------------------- */

/* Samples per chunk of attention so that the scores (samples x seq x seq floats) stay
 * within CUDA_ATTENTION_SCRATCH_BYTES; at least 1 (pure). */
size_t cuda_attention_chunk(size_t batch, size_t seq);
ps_status cuda_attention(void *exec, const kernels_attention_shape *shape, const float *q,
                         const float *k, const float *v, const float *mask, float *y);

#endif
