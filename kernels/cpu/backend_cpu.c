/* backend_cpu.c: the CPU backend, the reference every other backend is checked against:
 * its iface table, dense, softmax and the elementwise ops (the others are in
 * cpu_image.c, cpu_seq.c and cpu_tensor.c).
 *
 * Dense layers are one cblas_sgemm each (OpenBLAS, which runs large GEMMs on its own
 * threads): y = x * W^T with W in PyTorch Linear layout [out, in], which is exactly
 * sgemm's (NoTrans, Trans) case, so the weights are used where they lie, never
 * transposed or copied. The bias is written into y first and sgemm accumulates onto
 * it (beta = 1), which saves a pass over y. The other ops are loops over rows or
 * elements split across the backend's thread pool (cpu_pool.h); GELU and softmax's exp
 * are the vectorised ones of cpu_vmath.h, the simple loops are vectorised by the
 * compiler. Softmax subtracts the row maximum before exp (no overflow) and sums in
 * double, so rows of thousands of classes stay accurate.
 *
 * The backend's context is its thread pool, sized like OpenBLAS's thread count when
 * the backend is created; it has no per-stream state (every stream's exec is the
 * pool; a NULL pool, as the test module that wraps this iface gives, runs every op on
 * the calling thread). Its memory is the host's (the dispatchers' malloc and memcpy
 * serve the buffer entries), every op is done when it returns, and any number of
 * threads may run ops at once (the pool runs one op's parts at a time; an op that
 * finds it busy runs on its caller's thread).
 */
#include "cpu_internal.h"

#include "cpu_vmath.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* One part of cpu_act_apply: items are elements. */
typedef struct act_job {
    float *y;
    kernels_activation act;
} act_job;

static void act_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const act_job *j = arg;
    float *y = j->y;
    switch (j->act) {
    case KERNELS_ACTIVATION_NONE:
        break;
    case KERNELS_ACTIVATION_RELU:
        for (size_t i = begin; i < end; i++) {
            y[i] = y[i] > 0.0f ? y[i] : 0.0f;
        }
        break;
    case KERNELS_ACTIVATION_SIGMOID:
        for (size_t i = begin; i < end; i++) {
            y[i] = 1.0f / (1.0f + expf(-y[i]));
        }
        break;
    case KERNELS_ACTIVATION_TANH:
        for (size_t i = begin; i < end; i++) {
            y[i] = tanhf(y[i]);
        }
        break;
    case KERNELS_ACTIVATION_GELU:
        cpu_vmath_gelu(y + begin, end - begin);
        break;
    }
}

void cpu_act_apply(cpu_pool *pool, float *y, size_t n, kernels_activation act) {
    if (act == KERNELS_ACTIVATION_NONE) {
        return;
    }
    act_job j = {.y = y, .act = act};
    cpu_pool_run(pool, n, act == KERNELS_ACTIVATION_RELU ? CPU_GRAIN_CHEAP : CPU_GRAIN_MATH,
                 act_part, &j);
}

/* dense's bias rows: items are rows of y. */
typedef struct bias_job {
    const float *bias;
    float *y;
    size_t out;
} bias_job;

static void bias_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const bias_job *j = arg;
    for (size_t r = begin; r < end; r++) {
        memcpy(j->y + r * j->out, j->bias, j->out * sizeof(*j->y));
    }
}

static ps_status cpu_dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                           const float *bias, size_t out, kernels_activation act, float *y) {
    float beta = 0.0f;
    if (bias != NULL) {
        bias_job j = {.bias = bias, .y = y, .out = out};
        cpu_pool_run(exec, rows, cpu_rows_grain(out, CPU_GRAIN_CHEAP), bias_part, &j);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)out, (blasint)in,
                1.0f, x, (blasint)in, w, (blasint)in, beta, y, (blasint)out);
    cpu_act_apply(exec, y, rows * out, act);
    return PS_STATUS_OK;
}

/* The row ops' jobs: items are rows of `cols` floats. */
typedef struct rows_job {
    const float *x, *a, *b; /* input; per-column (or second) operands, may be NULL */
    float *y;
    size_t cols;
} rows_job;

static void softmax_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const rows_job *j = arg;
    for (size_t r = begin; r < end; r++) {
        cpu_vmath_softmax(j->x + r * j->cols, j->cols, j->y + r * j->cols);
    }
}

static ps_status cpu_softmax(void *exec, const float *x, size_t rows, size_t cols, float *y) {
    rows_job j = {.x = x, .y = y, .cols = cols};
    cpu_pool_run(exec, rows, cpu_rows_grain(cols, CPU_GRAIN_MATH), softmax_part, &j);
    return PS_STATUS_OK;
}

static ps_status cpu_activation(void *exec, kernels_activation act, const float *x, size_t n,
                                float *y) {
    if (y != x) {
        memcpy(y, x, n * sizeof(*y));
    }
    cpu_act_apply(exec, y, n, act);
    return PS_STATUS_OK;
}

static ps_status cpu_relu(void *exec, const float *x, size_t n, float *y) {
    return cpu_activation(exec, KERNELS_ACTIVATION_RELU, x, n, y);
}

/* add: items are elements. */
static void add_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const rows_job *j = arg;
    for (size_t i = begin; i < end; i++) {
        j->y[i] = j->a[i] + j->b[i];
    }
}

static ps_status cpu_add(void *exec, const float *a, const float *b, size_t n, float *y) {
    rows_job j = {.a = a, .b = b, .y = y};
    cpu_pool_run(exec, n, CPU_GRAIN_CHEAP, add_part, &j);
    return PS_STATUS_OK;
}

static void scale_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const rows_job *j = arg;
    for (size_t r = begin; r < end; r++) {
        const float *xr = j->x + r * j->cols;
        float *yr = j->y + r * j->cols;
        for (size_t c = 0; c < j->cols; c++) {
            const float s = j->a != NULL ? j->a[c] : 1.0f;
            const float t = j->b != NULL ? j->b[c] : 0.0f;
            yr[c] = xr[c] * s + t;
        }
    }
}

static ps_status cpu_scale(void *exec, const float *x, size_t rows, size_t cols, const float *scale,
                           const float *shift, float *y) {
    rows_job j = {.x = x, .a = scale, .b = shift, .y = y, .cols = cols};
    cpu_pool_run(exec, rows, cpu_rows_grain(cols, CPU_GRAIN_CHEAP), scale_part, &j);
    return PS_STATUS_OK;
}

static void cpu_free_ctx(void *ctx);

static const kernels_backend_iface cpu_iface = {
    .name = "cpu",
    .free_ctx = cpu_free_ctx,
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

static void cpu_free_ctx(void *ctx) {
    cpu_pool_destroy(ctx);
}

ps_status kernels_backend_cpu_create(kernels_backend **ret_backend) {
    if (ret_backend == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const int blas_threads = openblas_get_num_threads();
    cpu_pool_opts opts = {.threads = blas_threads < 1 ? 1 : (size_t)blas_threads};
    opts.threads = opts.threads > CPU_POOL_MAX_THREADS ? CPU_POOL_MAX_THREADS : opts.threads;
    cpu_pool *pool = NULL;
    ps_status st = cpu_pool_create(&opts, &pool);
    if (st != PS_STATUS_OK) {
        return st;
    }
    return kernels_backend_create(&cpu_iface, pool, ret_backend); /* frees pool on failure */
}
