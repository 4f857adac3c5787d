/* backend_cpu.c: the CPU backend, the reference every other backend is checked against.
 *
 * Dense layers are one cblas_sgemm each (OpenBLAS): y = x * W^T with W in PyTorch
 * Linear layout [out, in], which is exactly sgemm's (NoTrans, Trans) case, so the
 * weights are used where they lie, never transposed or copied. The bias is written
 * into y first and sgemm accumulates onto it (beta = 1), which saves a pass over y.
 * Everything else is a plain C loop: these ops are memory-bound and the compiler
 * vectorises them well enough. Softmax subtracts the row maximum before exp (no
 * overflow) and sums in double, so rows of thousands of classes stay accurate. An
 * embedding bag adds its rows in float, in index order, then divides once for "mean"
 * (a bag holds a few dozen rows; float keeps it as fast as the rows are read).
 *
 * The backend has no state: the context is NULL and every op may run on any number
 * of threads at once.
 */
#include "backend.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static ps_status cpu_dense(void *ctx, const float *x, size_t rows, size_t in, const float *w,
                           const float *bias, size_t out, kernels_activation act, float *y) {
    (void)ctx;
    float beta = 0.0f;
    if (bias != NULL) {
        for (size_t r = 0; r < rows; r++) {
            memcpy(y + r * out, bias, out * sizeof(*y));
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)out, (blasint)in,
                1.0f, x, (blasint)in, w, (blasint)in, beta, y, (blasint)out);
    const size_t n = rows * out;
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
    }
    return PS_STATUS_OK;
}

static ps_status cpu_softmax(void *ctx, const float *x, size_t rows, size_t cols, float *y) {
    (void)ctx;
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

static ps_status cpu_relu(void *ctx, const float *x, size_t n, float *y) {
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    }
    return PS_STATUS_OK;
}

static ps_status cpu_add(void *ctx, const float *a, const float *b, size_t n, float *y) {
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        y[i] = a[i] + b[i];
    }
    return PS_STATUS_OK;
}

static ps_status cpu_scale(void *ctx, const float *x, size_t rows, size_t cols, const float *scale,
                           const float *shift, float *y) {
    (void)ctx;
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

static ps_status cpu_embedding_bag(void *ctx, const float *rows, size_t n_rows, size_t dim,
                                   const int64_t *index, size_t batch, size_t len,
                                   kernels_pool pool, float *y) {
    (void)ctx;
    (void)n_rows;
    for (size_t b = 0; b < batch; b++) {
        float *yb = y + b * dim;
        memset(yb, 0, dim * sizeof(*yb));
        size_t count = 0;
        for (size_t j = 0; j < len; j++) {
            const int64_t r = index[b * len + j];
            if (r < 0) {
                continue; /* padding */
            }
            const float *row = rows + (size_t)r * dim;
            for (size_t c = 0; c < dim; c++) {
                yb[c] += row[c];
            }
            count++;
        }
        if (pool == KERNELS_POOL_MEAN && count > 1) {
            for (size_t c = 0; c < dim; c++) {
                yb[c] /= (float)count;
            }
        }
    }
    return PS_STATUS_OK;
}

static ps_status cpu_concat(void *ctx, const float *a, size_t ca, const float *b, size_t cb,
                            size_t rows, float *y) {
    (void)ctx;
    for (size_t r = 0; r < rows; r++) {
        memcpy(y + r * (ca + cb), a + r * ca, ca * sizeof(*y));
        memcpy(y + r * (ca + cb) + ca, b + r * cb, cb * sizeof(*y));
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
};

ps_status kernels_backend_cpu_create(kernels_backend **ret_backend) {
    return kernels_backend_create(&cpu_iface, NULL, ret_backend);
}
