/* cuda_dnn.c: conv2d and pool2d of the CUDA backend, through cuDNN 9's legacy
 * (descriptor) API.
 *
 * Why the legacy API: in FP32 it covers every conv2d and pool2d shape ops.h allows
 * (groups, dilation, asymmetric strides) from plain C in a few calls, and it stays
 * within cuDNN 9 (deprecated, not removed: see notes/cuda-libs.md). The graph API is
 * the way to fused conv + bias + activation later; here the bias and the activation
 * run as one elementwise kernel after the convolution (cuda_launch_bias_act), which
 * also gives GELU, which cuDNN's legacy activations lack.
 *
 * FP32 only, matching the CPU reference within the op tests' tolerance: the
 * convolution's math type is CUDNN_FMA_MATH (no TF32 tensor cores) and only the
 * GEMM-like algorithms are used (implicit GEMM, precomputed implicit GEMM, GEMM,
 * direct): FFT and Winograd round differently enough to miss 1e-4. Among those, the
 * first cuDNN's heuristic ranks whose workspace fits CUDA_CONV_WORKSPACE_MAX; the
 * workspace comes from the stream-ordered pool.
 *
 * Descriptors are built per call (host work, microseconds) by functions that need no
 * device, so the shape mapping is unit-tested on machines without a GPU
 * (test_cuda_host.c): cuDNN's output size must equal ops.h's rule.
 */
#include "cuda_internal.h"

#include <string.h>

#include "cuda_kernels.h"
#include "util.h"

/* The first failed cuDNN call of a chain. */
typedef struct dnn_failure {
    cudnnStatus_t rc;
    const char *what;
} dnn_failure;

/* true when rc is success; otherwise records it in *f. Chains with && stop at the
 * first failure. */
static bool dnn_ok(cudnnStatus_t rc, const char *what, dnn_failure *f) {
    if (rc == CUDNN_STATUS_SUCCESS) {
        return true;
    }
    f->rc = rc;
    f->what = what;
    return false;
}

/* ops.h's output length of one axis (the shape was checked by the dispatcher). */
static size_t axis_out(size_t in, size_t pad, size_t kernel, size_t stride, size_t dil) {
    return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

static ps_status dnn_failed(const dnn_failure *f, char *err, size_t err_len) {
    ps_set_err(err, err_len, "%s: %s (%d)", f->what, cudnnGetErrorString(f->rc), (int)f->rc);
    return cuda_status_of_dnn(f->rc);
}

static bool dims_match(int n, int c, int h, int w, size_t want_n, size_t want_c, size_t want_h,
                       size_t want_w) {
    return (size_t)n == want_n && (size_t)c == want_c && (size_t)h == want_h && (size_t)w == want_w;
}

void cuda_conv_desc_destroy(cuda_conv_desc *d) {
    if (d->conv != NULL) {
        cudnnDestroyConvolutionDescriptor(d->conv);
    }
    if (d->w != NULL) {
        cudnnDestroyFilterDescriptor(d->w);
    }
    if (d->y != NULL) {
        cudnnDestroyTensorDescriptor(d->y);
    }
    if (d->x != NULL) {
        cudnnDestroyTensorDescriptor(d->x);
    }
    memset(d, 0, sizeof(*d));
}

ps_status cuda_conv_desc_create(const kernels_conv2d_shape *c, cuda_conv_desc *ret, char *err,
                                size_t err_len) {
    cuda_conv_desc d;
    memset(&d, 0, sizeof(d));
    dnn_failure f = {CUDNN_STATUS_SUCCESS, NULL};
    const size_t p = axis_out(c->in_h, c->pad_h, c->kernel_h, c->stride_h, c->dilation_h);
    const size_t q = axis_out(c->in_w, c->pad_w, c->kernel_w, c->stride_w, c->dilation_w);
    int n = 0, k = 0, h = 0, w = 0;
    /* Every size is <= KERNELS_MAX_DIM (checked), so each fits an int. */
    const bool ok =
        dnn_ok(cudnnCreateTensorDescriptor(&d.x), "cudnnCreateTensorDescriptor", &f) &&
        dnn_ok(cudnnCreateTensorDescriptor(&d.y), "cudnnCreateTensorDescriptor", &f) &&
        dnn_ok(cudnnCreateFilterDescriptor(&d.w), "cudnnCreateFilterDescriptor", &f) &&
        dnn_ok(cudnnCreateConvolutionDescriptor(&d.conv), "cudnnCreateConvolutionDescriptor", &f) &&
        dnn_ok(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)c->batch,
                                          (int)c->in_channels, (int)c->in_h, (int)c->in_w),
               "cudnnSetTensor4dDescriptor (x)", &f) &&
        dnn_ok(cudnnSetFilter4dDescriptor(d.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                          (int)c->out_channels, (int)(c->in_channels / c->groups),
                                          (int)c->kernel_h, (int)c->kernel_w),
               "cudnnSetFilter4dDescriptor", &f) &&
        dnn_ok(cudnnSetConvolution2dDescriptor(d.conv, (int)c->pad_h, (int)c->pad_w,
                                               (int)c->stride_h, (int)c->stride_w,
                                               (int)c->dilation_h, (int)c->dilation_w,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
               "cudnnSetConvolution2dDescriptor", &f) &&
        dnn_ok(cudnnSetConvolutionGroupCount(d.conv, (int)c->groups),
               "cudnnSetConvolutionGroupCount", &f) &&
        dnn_ok(cudnnSetConvolutionMathType(d.conv, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType",
               &f) &&
        dnn_ok(cudnnGetConvolution2dForwardOutputDim(d.conv, d.x, d.w, &n, &k, &h, &w),
               "cudnnGetConvolution2dForwardOutputDim", &f) &&
        dnn_ok(cudnnSetTensor4dDescriptor(d.y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k, h, w),
               "cudnnSetTensor4dDescriptor (y)", &f);
    if (!ok) {
        cuda_conv_desc_destroy(&d);
        return dnn_failed(&f, err, err_len);
    }
    if (!dims_match(n, k, h, w, c->batch, c->out_channels, p, q)) {
        ps_set_err(err, err_len, "cuDNN's conv2d output %dx%dx%dx%d is not ops.h's %zux%zux%zux%zu",
                   n, k, h, w, c->batch, c->out_channels, p, q);
        cuda_conv_desc_destroy(&d);
        return PS_STATUS_INTERNAL;
    }
    d.out_h = p, d.out_w = q;
    *ret = d;
    return PS_STATUS_OK;
}

void cuda_pool_desc_destroy(cuda_pool_desc *d) {
    if (d->pool != NULL) {
        cudnnDestroyPoolingDescriptor(d->pool);
    }
    if (d->y != NULL) {
        cudnnDestroyTensorDescriptor(d->y);
    }
    if (d->x != NULL) {
        cudnnDestroyTensorDescriptor(d->x);
    }
    memset(d, 0, sizeof(*d));
}

ps_status cuda_pool_desc_create(const kernels_pool2d_shape *c, kernels_pool2d_kind kind,
                                cuda_pool_desc *ret, char *err, size_t err_len) {
    const cudnnPoolingMode_t mode = kind == KERNELS_POOL2D_MAX ? CUDNN_POOLING_MAX
                                    : kind == KERNELS_POOL2D_AVG
                                        ? CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                                        : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
    cuda_pool_desc d;
    memset(&d, 0, sizeof(d));
    dnn_failure f = {CUDNN_STATUS_SUCCESS, NULL};
    const size_t p = axis_out(c->in_h, c->pad_h, c->kernel_h, c->stride_h, 1);
    const size_t q = axis_out(c->in_w, c->pad_w, c->kernel_w, c->stride_w, 1);
    int n = 0, ch = 0, h = 0, w = 0;
    const bool ok =
        dnn_ok(cudnnCreateTensorDescriptor(&d.x), "cudnnCreateTensorDescriptor", &f) &&
        dnn_ok(cudnnCreateTensorDescriptor(&d.y), "cudnnCreateTensorDescriptor", &f) &&
        dnn_ok(cudnnCreatePoolingDescriptor(&d.pool), "cudnnCreatePoolingDescriptor", &f) &&
        dnn_ok(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)c->batch,
                                          (int)c->channels, (int)c->in_h, (int)c->in_w),
               "cudnnSetTensor4dDescriptor (x)", &f) &&
        dnn_ok(cudnnSetPooling2dDescriptor(d.pool, mode, CUDNN_NOT_PROPAGATE_NAN, (int)c->kernel_h,
                                           (int)c->kernel_w, (int)c->pad_h, (int)c->pad_w,
                                           (int)c->stride_h, (int)c->stride_w),
               "cudnnSetPooling2dDescriptor", &f) &&
        dnn_ok(cudnnGetPooling2dForwardOutputDim(d.pool, d.x, &n, &ch, &h, &w),
               "cudnnGetPooling2dForwardOutputDim", &f) &&
        dnn_ok(cudnnSetTensor4dDescriptor(d.y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, ch, h, w),
               "cudnnSetTensor4dDescriptor (y)", &f);
    if (!ok) {
        cuda_pool_desc_destroy(&d);
        return dnn_failed(&f, err, err_len);
    }
    if (!dims_match(n, ch, h, w, c->batch, c->channels, p, q)) {
        ps_set_err(err, err_len, "cuDNN's pool2d output %dx%dx%dx%d is not ops.h's %zux%zux%zux%zu",
                   n, ch, h, w, c->batch, c->channels, p, q);
        cuda_pool_desc_destroy(&d);
        return PS_STATUS_INTERNAL;
    }
    d.out_h = p, d.out_w = q;
    *ret = d;
    return PS_STATUS_OK;
}

/* The stream's cuDNN handle, created on first use (it loads cuDNN's sub-libraries). */
static ps_status dnn_handle(cuda_exec *e) {
    if (e->dnn != NULL) {
        return PS_STATUS_OK;
    }
    cudnnHandle_t h = NULL;
    ps_status st = cuda_check_dnn(e, cudnnCreate(&h), "cudnnCreate");
    if (st == PS_STATUS_OK) {
        st = cuda_check_dnn(e, cudnnSetStream(h, e->stream), "cudnnSetStream");
        if (st != PS_STATUS_OK) {
            cudnnDestroy(h);
            return st;
        }
        e->dnn = h;
    }
    return st;
}

static bool algo_exact(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

/* The algorithm (see the top) and its workspace bytes. */
static ps_status conv_algo(cuda_exec *e, const cuda_conv_desc *d,
                           cudnnConvolutionFwdAlgo_t *ret_algo, size_t *ret_ws) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int found = 0;
    ps_status st = cuda_check_dnn(
        e,
        cudnnGetConvolutionForwardAlgorithm_v7(e->dnn, d->x, d->w, d->conv, d->y,
                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf),
        "cudnnGetConvolutionForwardAlgorithm_v7");
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (int i = 0; i < found; i++) {
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == CUDNN_FMA_MATH &&
            algo_exact(perf[i].algo) && perf[i].memory <= CUDA_CONV_WORKSPACE_MAX) {
            *ret_algo = perf[i].algo;
            *ret_ws = perf[i].memory;
            return PS_STATUS_OK;
        }
    }
    /* None ranked: implicit GEMM runs every shape, with no or little workspace. */
    size_t ws = 0;
    st = cuda_check_dnn(
        e,
        cudnnGetConvolutionForwardWorkspaceSize(e->dnn, d->x, d->w, d->conv, d->y,
                                                CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &ws),
        "cudnnGetConvolutionForwardWorkspaceSize");
    if (st == PS_STATUS_OK) {
        *ret_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
        *ret_ws = ws;
    }
    return st;
}

ps_status cuda_conv2d(void *exec, const kernels_conv2d_shape *shape, const float *x, const float *w,
                      const float *bias, kernels_activation act, float *y) {
    cuda_exec *e = exec;
    cuda_conv_desc d;
    ps_status st = dnn_handle(e);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cuda_conv_desc_create(shape, &d, e->err, sizeof(e->err));
    if (st != PS_STATUS_OK) {
        return st;
    }
    cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    size_t ws_bytes = 0;
    void *ws = NULL;
    st = conv_algo(e, &d, &algo, &ws_bytes);
    if (st == PS_STATUS_OK && ws_bytes > 0) {
        st = cuda_check_rt(e, cudaMallocAsync(&ws, ws_bytes, e->stream),
                           "cudaMallocAsync (cuDNN workspace)");
    }
    if (st == PS_STATUS_OK) {
        const float alpha = 1.0f, beta = 0.0f;
        st = cuda_check_dnn(e,
                            cudnnConvolutionForward(e->dnn, &alpha, d.x, x, d.w, w, d.conv, algo,
                                                    ws, ws_bytes, &beta, d.y, y),
                            "cudnnConvolutionForward");
    }
    if (ws != NULL) {
        ps_status fst = cuda_check_rt(e, cudaFreeAsync(ws, e->stream), "cudaFreeAsync");
        st = st != PS_STATUS_OK ? st : fst;
    }
    if (st == PS_STATUS_OK && (bias != NULL || act != KERNELS_ACTIVATION_NONE)) {
        st = cuda_check_rt(e,
                           cuda_launch_bias_act(e->stream, y, bias, shape->batch,
                                                shape->out_channels, d.out_h * d.out_w, act),
                           "bias_act kernel");
    }
    cuda_conv_desc_destroy(&d);
    return st;
}

ps_status cuda_pool2d(void *exec, const kernels_pool2d_shape *shape, kernels_pool2d_kind kind,
                      const float *x, float *y) {
    cuda_exec *e = exec;
    cuda_pool_desc d;
    ps_status st = dnn_handle(e);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cuda_pool_desc_create(shape, kind, &d, e->err, sizeof(e->err));
    if (st != PS_STATUS_OK) {
        return st;
    }
    const float alpha = 1.0f, beta = 0.0f;
    st = cuda_check_dnn(e, cudnnPoolingForward(e->dnn, d.pool, &alpha, d.x, x, &beta, d.y, y),
                        "cudnnPoolingForward");
    cuda_pool_desc_destroy(&d);
    return st;
}
