/* backend_cuda.c: the CUDA backend, libkernels_cuda.so: its module entry, iface table,
 * streams and device buffers (the ops are in cuda_dense.c, cuda_dnn.c, cuda_ops.c and
 * cuda_attention.c; errors in cuda_status.c).
 *
 * A loadable module so that no program links CUDA: kernels_backend_open dlopens it by
 * name. Its entry (KERNELS_BACKEND_MODULE_OPEN) answers UNAVAILABLE, with the CUDA
 * call and error that said so, when the machine has no usable GPU: no driver
 * (cudaErrorInsufficientDriver), no device, no kernels built for this GPU, or no
 * stream-ordered allocator. The op tests then exit 77 (skipped).
 *
 * Device: device 0 of those CUDA_VISIBLE_DEVICES shows; a process serving from several
 * GPUs runs one process per GPU (NCCL among them). Every thread starts on device 0, so
 * no op needs cudaSetDevice.
 *
 * Memory: buffers are cudaMalloc'd (256-byte aligned; cudaFree waits for the device).
 * Scratch that one op needs (BF16 copies, cuDNN workspace, attention scores, ids) comes
 * from the stream-ordered pool (cudaMallocAsync / cudaFreeAsync on the op's stream):
 * no synchronisation, freed memory reused by the next op, and capturable into a CUDA
 * graph. Uploads return once the host memory may be reused; downloads wait for the
 * stream, so a failure of any op queued before shows there.
 *
 * Graphs: a stream's ops are recorded with stream capture (thread-local mode) and
 * instantiated once; a launch replays them. The executor records only passes whose
 * ops read device memory alone (no ids), after one pass ran them eagerly (cuDNN
 * handles and cuBLASLt algorithms are made then, not during the recording).
 */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"
#include "util.h"

/* The module's entry; the loader finds it by name (KERNELS_BACKEND_MODULE_OPEN). The
 * module's other symbols are hidden (meson: gnu_symbol_visibility). */
__attribute__((visibility("default"))) ps_status
kernels_backend_module_open(uint32_t abi_version, const kernels_backend_module_opts *opts,
                            kernels_backend_iface *ret_iface, void **ret_ctx, char *err,
                            size_t err_len);

/* ------------------------------------------------------------------------------------ */
/* Streams: one exec each */

static void exec_destroy(cuda_exec *e) {
    if (e == NULL) {
        return;
    }
    if (e->stream != NULL) {
        (void)cudaStreamSynchronize(e->stream); /* the workspace may still be in use */
    }
    if (e->dnn != NULL) {
        cudnnDestroy(e->dnn);
    }
    if (e->blas != NULL) {
        cublasDestroy(e->blas);
    }
    cudaFree(e->lt_workspace);
    if (e->stream != NULL) {
        cudaStreamDestroy(e->stream);
    }
    if (e->owns_shared && e->shared != NULL) {
        if (e->shared->lt != NULL) {
            cublasLtDestroy(e->shared->lt);
        }
        free(e->shared);
    }
    (void)cudaGetLastError();
    free(e);
}

/* A new exec on its own stream; err says which call failed. */
static ps_status exec_create(cuda_shared *shared, cuda_exec **ret, char *err, size_t err_len) {
    cuda_exec *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    e->shared = shared;
    ps_status st = cuda_check_rt(e, cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags");
    if (st == PS_STATUS_OK) {
        st = cuda_check_rt(e, cudaMalloc(&e->lt_workspace, CUDA_LT_WORKSPACE_BYTES),
                           "cudaMalloc (cuBLASLt workspace)");
    }
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e, cublasCreate(&e->blas), "cublasCreate");
    }
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e, cublasSetStream(e->blas, e->stream), "cublasSetStream");
    }
    if (st == PS_STATUS_OK) { /* plain FP32 GEMMs: no TF32 (the op tests assume FP32) */
        st = cuda_check_blas(e, cublasSetMathMode(e->blas, CUBLAS_DEFAULT_MATH),
                             "cublasSetMathMode");
    }
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s", e->err);
        exec_destroy(e);
        return st;
    }
    *ret = e;
    return PS_STATUS_OK;
}

static ps_status cuda_stream_create(void *ctx, void **ret_exec) {
    cuda_exec *base = ctx, *e = NULL;
    char why[CUDA_ERR_LEN]; /* not kept: the default stream may be busy on another thread */
    ps_status st = exec_create(base->shared, &e, why, sizeof(why));
    if (st == PS_STATUS_OK) {
        *ret_exec = e;
    }
    return st;
}

static void cuda_stream_destroy(void *ctx, void *exec) {
    (void)ctx;
    exec_destroy(exec);
}

static ps_status cuda_stream_sync(void *exec) {
    cuda_exec *e = exec;
    return cuda_check_rt(e, cudaStreamSynchronize(e->stream), "cudaStreamSynchronize");
}

static void cuda_free_ctx(void *ctx) {
    exec_destroy(ctx);
}

static const char *cuda_last_error(void *exec) {
    return ((cuda_exec *)exec)->err;
}

/* ------------------------------------------------------------------------------------ */
/* Buffers */

/* Called from any thread (no stream): no message is kept. */
static ps_status cuda_buffer_alloc(void *ctx, size_t bytes, void **ret_ptr) {
    (void)ctx;
    void *p = NULL;
    ps_status st = cuda_check_rt(NULL, cudaMalloc(&p, bytes), "cudaMalloc");
    if (st == PS_STATUS_OK) {
        *ret_ptr = p;
    }
    return st;
}

static void cuda_buffer_free(void *ctx, void *ptr) {
    (void)ctx;
    (void)cuda_check_rt(NULL, cudaFree(ptr), "cudaFree");
}

static ps_status cuda_buffer_upload(void *exec, void *dst, const void *src, size_t bytes) {
    return cuda_copy_from_host(exec, dst, src, bytes);
}

static ps_status cuda_buffer_download(void *exec, void *dst, const void *src, size_t bytes) {
    cuda_exec *e = exec;
    ps_status st = cuda_check_rt(
        e, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, e->stream), "cudaMemcpyAsync");
    return st != PS_STATUS_OK ? st : cuda_stream_sync(e);
}

/* y = x (memmove semantics: an overlap goes through a scratch copy). */
static ps_status cuda_copy(void *exec, const float *x, size_t n, float *y) {
    cuda_exec *e = exec;
    const size_t bytes = n * sizeof(float);
    const uintptr_t xa = (uintptr_t)x, ya = (uintptr_t)y; /* different buffers may compare */
    const bool overlap = xa < ya + bytes && ya < xa + bytes;
    if (!overlap) {
        return cuda_check_rt(e, cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, e->stream),
                             "cudaMemcpyAsync");
    }
    void *tmp = NULL;
    ps_status st = cuda_check_rt(e, cudaMallocAsync(&tmp, bytes, e->stream), "cudaMallocAsync");
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cuda_check_rt(e, cudaMemcpyAsync(tmp, x, bytes, cudaMemcpyDeviceToDevice, e->stream),
                       "cudaMemcpyAsync");
    if (st == PS_STATUS_OK) {
        st = cuda_check_rt(e, cudaMemcpyAsync(y, tmp, bytes, cudaMemcpyDeviceToDevice, e->stream),
                           "cudaMemcpyAsync");
    }
    ps_status fst = cuda_check_rt(e, cudaFreeAsync(tmp, e->stream), "cudaFreeAsync");
    return st != PS_STATUS_OK ? st : fst;
}

/* ------------------------------------------------------------------------------------ */
/* The module */

/* ------------------------------------------------------------------------------------ */
/* Graphs: CUDA graphs of a stream's ops */

static ps_status cuda_graph_begin(void *exec) {
    cuda_exec *e = exec;
    /* thread-local: another thread's cudaMalloc (a new workspace) does not void it */
    return cuda_check_rt(e, cudaStreamBeginCapture(e->stream, cudaStreamCaptureModeThreadLocal),
                         "cudaStreamBeginCapture");
}

static ps_status cuda_graph_end(void *exec, void **ret_graph) {
    cuda_exec *e = exec;
    cudaGraph_t graph = NULL;
    ps_status st =
        cuda_check_rt(e, cudaStreamEndCapture(e->stream, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t inst = NULL;
    if (st == PS_STATUS_OK) {
        st = cuda_check_rt(e, cudaGraphInstantiate(&inst, graph, 0), "cudaGraphInstantiate");
    }
    if (graph != NULL) {
        (void)cudaGraphDestroy(graph); /* the instance keeps what it needs */
    }
    if (st == PS_STATUS_OK) {
        *ret_graph = inst;
    }
    return st;
}

static ps_status cuda_graph_launch(void *exec, void *graph) {
    cuda_exec *e = exec;
    return cuda_check_rt(e, cudaGraphLaunch((cudaGraphExec_t)graph, e->stream), "cudaGraphLaunch");
}

static void cuda_graph_free(void *ctx, void *graph) {
    (void)ctx;
    (void)cudaGraphExecDestroy((cudaGraphExec_t)graph);
    (void)cudaGetLastError();
}

static const kernels_backend_iface cuda_iface = {
    .name = "cuda",
    .free_ctx = cuda_free_ctx,
    .dense = cuda_dense,
    .softmax = cuda_softmax,
    .relu = cuda_relu,
    .add = cuda_add,
    .scale = cuda_scale,
    .embedding_bag = cuda_embedding_bag,
    .concat = cuda_concat,
    .device_memory = true,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_sync = cuda_stream_sync,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_free = cuda_buffer_free,
    .buffer_upload = cuda_buffer_upload,
    .buffer_download = cuda_buffer_download,
    .copy = cuda_copy,
    .activation = cuda_activation,
    .conv2d = cuda_conv2d,
    .pool2d = cuda_pool2d,
    .layernorm = cuda_layernorm,
    .attention = cuda_attention,
    .mean_pool = cuda_mean_pool,
    .embedding_gather = cuda_embedding_gather,
    .transpose = cuda_transpose,
    .last_error = cuda_last_error,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

/* UNAVAILABLE unless device 0 can run this module: a driver, a device, kernels built
 * for it, and the stream-ordered allocator. */
static ps_status device_usable(char *err, size_t err_len) {
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        ps_set_err(err, err_len, "no usable CUDA device: cudaGetDeviceCount: %s",
                   rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices");
        (void)cudaGetLastError();
        return PS_STATUS_UNAVAILABLE;
    }
    struct cudaDeviceProp prop;
    rc = cudaGetDeviceProperties(&prop, 0);
    int pools = 0;
    if (rc == cudaSuccess) {
        rc = cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, 0);
    }
    if (rc != cudaSuccess) {
        ps_set_err(err, err_len, "CUDA device 0: %s", cudaGetErrorString(rc));
        (void)cudaGetLastError();
        return PS_STATUS_UNAVAILABLE;
    }
    rc = cuda_kernels_probe();
    if (rc != cudaSuccess) {
        ps_set_err(err, err_len, "CUDA device 0 (%s, sm_%d%d): this module has no code for it: %s",
                   prop.name, prop.major, prop.minor, cudaGetErrorString(rc));
        (void)cudaGetLastError();
        return PS_STATUS_UNAVAILABLE;
    }
    if (!pools) {
        ps_set_err(err, err_len, "CUDA device 0 (%s) lacks the stream-ordered allocator",
                   prop.name);
        return PS_STATUS_UNAVAILABLE;
    }
    return PS_STATUS_OK;
}

ps_status kernels_backend_module_open(uint32_t abi_version, const kernels_backend_module_opts *opts,
                                      kernels_backend_iface *ret_iface, void **ret_ctx, char *err,
                                      size_t err_len) {
    if (abi_version != KERNELS_BACKEND_ABI_VERSION) {
        ps_set_err(err, err_len, "module built for backend ABI %u, loader has %u",
                   KERNELS_BACKEND_ABI_VERSION, abi_version);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    const kernels_precision precision = opts != NULL ? opts->precision : KERNELS_PRECISION_FP32;
    if (precision != KERNELS_PRECISION_FP32 && precision != KERNELS_PRECISION_BF16) {
        ps_set_err(err, err_len, "unknown precision %d", (int)precision);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = device_usable(err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    cuda_shared *shared = calloc(1, sizeof(*shared));
    if (shared == NULL) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    shared->device = 0;
    shared->precision = precision;
    cublasStatus_t brc = cublasLtCreate(&shared->lt);
    if (brc != CUBLAS_STATUS_SUCCESS) {
        ps_set_err(err, err_len, "cublasLtCreate: %s", cublasGetStatusString(brc));
        free(shared);
        return cuda_status_of_blas(brc);
    }
    cuda_exec *ctx = NULL;
    st = exec_create(shared, &ctx, err, err_len);
    if (st != PS_STATUS_OK) {
        cublasLtDestroy(shared->lt);
        free(shared);
        return st;
    }
    ctx->owns_shared = true;
    *ret_iface = cuda_iface;
    *ret_ctx = ctx;
    return PS_STATUS_OK;
}
