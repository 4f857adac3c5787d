/* backend_cpu.c: the CPU backend, the reference every other backend is checked against:
 * its iface table, dense, softmax and the elementwise ops (the others are in
 * cpu_image.c, cpu_seq.c and cpu_tensor.c).
 *
 * Dense layers are one cblas_sgemm each (OpenBLAS, which runs large GEMMs on its own
 * threads): y = x * W^T with W in PyTorch Linear layout [out, in], which is exactly
 * sgemm's (NoTrans, Trans) case, so the weights are used where they lie, never
 * transposed or copied. The bias is written into y first and sgemm accumulates onto
 * it (beta = 1), which saves a pass over y. Everything else is a plain C loop: these
 * ops are memory-bound, and the compiler vectorises the simple ones. Softmax subtracts
 * the row maximum before exp (no overflow) and sums in double, so rows of thousands of
 * classes stay accurate.
 *
 * The backend has no state: its context is NULL, it has no per-stream state (every
 * stream's exec is NULL too), its memory is the host's (the dispatchers' malloc and
 * memcpy serve the buffer entries), every op is done when it returns, and any number
 * of threads may run ops at once.
 */
#include "cpu_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void cpu_act_apply(float *y, size_t n, kernels_activation act) {
    switch (act) {
    case KERNELS_ACTIVATION_NONE:
        break;
    case KERNELS_ACTIVATION_RELU:
        for (size_t i = 0; i < n; i++) {
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
        }
        break;
    case KERNELS_ACTIVATION_SIGMOID:
        for (size_t i = 0; i < n; i++) {
            y[i] = 1.0f / (1.0f + expf(-y[i]));
        }
        break;
    case KERNELS_ACTIVATION_TANH:
        for (size_t i = 0; i < n; i++) {
            y[i] = tanhf(y[i]);
        }
        break;
    case KERNELS_ACTIVATION_GELU:
        for (size_t i = 0; i < n; i++) {
            y[i] = 0.5f * y[i] * (1.0f + erff(y[i] * (float)M_SQRT1_2));
        }
        break;
    }
}

static ps_status cpu_dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                           const float *bias, size_t out, kernels_activation act, float *y) {
    (void)exec;
    float beta = 0.0f;
    if (bias != NULL) {
        for (size_t r = 0; r < rows; r++) {
            memcpy(y + r * out, bias, out * sizeof(*y));
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)out, (blasint)in,
                1.0f, x, (blasint)in, w, (blasint)in, beta, y, (blasint)out);
    cpu_act_apply(y, rows * out, act);
    return PS_STATUS_OK;
}

static ps_status cpu_softmax(void *exec, const float *x, size_t rows, size_t cols, float *y) {
    (void)exec;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float max = xr[0];
        for (size_t c = 1; c < cols; c++) {
            max = xr[c] > max ? xr[c] : max;
        }
        double sum = 0.0;
        for (size_t c = 0; c < cols; c++) {
            yr[c] = expf(xr[c] - max);
            sum += yr[c];
        }
        const float inv = (float)(1.0 / sum);
        for (size_t c = 0; c < cols; c++) {
            yr[c] *= inv;
        }
    }
    return PS_STATUS_OK;
}

static ps_status cpu_activation(void *exec, kernels_activation act, const float *x, size_t n,
                                float *y) {
    (void)exec;
    if (y != x) {
        memcpy(y, x, n * sizeof(*y));
    }
    cpu_act_apply(y, n, act);
    return PS_STATUS_OK;
}

static ps_status cpu_relu(void *exec, const float *x, size_t n, float *y) {
    return cpu_activation(exec, KERNELS_ACTIVATION_RELU, x, n, y);
}

static ps_status cpu_add(void *exec, const float *a, const float *b, size_t n, float *y) {
    (void)exec;
    for (size_t i = 0; i < n; i++) {
        y[i] = a[i] + b[i];
    }
    return PS_STATUS_OK;
}

static ps_status cpu_scale(void *exec, const float *x, size_t rows, size_t cols, const float *scale,
                           const float *shift, float *y) {
    (void)exec;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        for (size_t c = 0; c < cols; c++) {
            const float s = scale != NULL ? scale[c] : 1.0f;
            const float t = shift != NULL ? shift[c] : 0.0f;
            yr[c] = xr[c] * s + t;
        }
    }
    return PS_STATUS_OK;
}

static const kernels_backend_iface cpu_iface = {
    .name = "cpu",
    .free_ctx = NULL,
    .dense = cpu_dense,
    .softmax = cpu_softmax,
    .relu = cpu_relu,
    .add = cpu_add,
    .scale = cpu_scale,
    .embedding_bag = cpu_embedding_bag,
    .concat = cpu_concat,
    .device_memory = false, /* buffers, upload, download: the dispatchers' host defaults */
    .copy = cpu_copy,
    .activation = cpu_activation,
    .conv2d = cpu_conv2d,
    .pool2d = cpu_pool2d,
    .layernorm = cpu_layernorm,
    .attention = cpu_attention,
    .mean_pool = cpu_mean_pool,
    .embedding_gather = cpu_embedding_gather,
    .transpose = cpu_transpose,
    .l2_normalize = cpu_l2_normalize,
};

const kernels_backend_iface *kernels_cpu_iface(void) {
    return &cpu_iface;
}

ps_status kernels_backend_cpu_create(kernels_backend **ret_backend) {
    return kernels_backend_create(&cpu_iface, NULL, ret_backend);
}
