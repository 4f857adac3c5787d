/* test_ops_image.c: dense, conv2d and pool2d against double references (test_ops.h).
 *
 * Tolerances: dense and conv2d atol 1e-4, rtol 1e-4 (FP32 sums of up to ~600 products
 * of values in [-1, 1), any summation order); pool2d atol 1e-6, rtol 1e-6 (max is
 * exact, an average sums at most 25 values).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_ops.h"
#include "test_ref.h"

#define GEMM_ATOL 1e-4
#define GEMM_RTOL 1e-4
#define POOL_ATOL 1e-6
#define POOL_RTOL 1e-6

static const kernels_activation all_acts[] = {
    KERNELS_ACTIVATION_NONE, KERNELS_ACTIVATION_RELU, KERNELS_ACTIVATION_SIGMOID,
    KERNELS_ACTIVATION_TANH, KERNELS_ACTIVATION_GELU,
};
#define N_ACTS (sizeof(all_acts) / sizeof(all_acts[0]))

/* ------------------------------------------------------------------------------------ */
/* dense */

static void check_dense(ops_env *env, size_t rows, size_t in, size_t out, int with_bias,
                        kernels_activation act) {
    float *x = ops_host_rand(env, rows * in, -1, 1);
    float *w = ops_host_rand(env, out * in, -1, 1);
    float *b = ops_host_rand(env, out, -1, 1);
    double *want = malloc(rows * out * sizeof(*want));
    assert_non_null(want);
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            double acc = with_bias ? b[o] : 0.0;
            for (size_t i = 0; i < in; i++) {
                acc += (double)x[r * in + i] * w[o * in + i];
            }
            want[r * out + o] = ref_act(acc, act);
        }
    }
    float *dx = ops_dev_put(env, x, rows * in), *dw = ops_dev_put(env, w, out * in);
    float *db = with_bias ? ops_dev_put(env, b, out) : NULL;
    float *dy = ops_dev_nan(env, rows * out);
    assert_int_equal(kernels_op_dense(env->s, dx, rows, in, dw, db, out, act, dy), PS_STATUS_OK);
    char what[96];
    snprintf(what, sizeof(what), "dense %zux%zu->%zu bias=%d act=%d", rows, in, out, with_bias,
             (int)act);
    ops_expect_dev(env, what, dy, want, rows * out, GEMM_ATOL, GEMM_RTOL);
    ops_dev_free(env, dy), ops_dev_free(env, db), ops_dev_free(env, dw), ops_dev_free(env, dx);
    free(want), free(b), free(w), free(x);
}

static void test_dense(void **state) {
    ops_env *env = ops_env_of(state);
    static const size_t edges[][3] = {
        {1, 1, 1}, {1, 1, 7}, {7, 1, 1}, {1, 384, 1536}, {33, 129, 65}};
    for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        for (size_t a = 0; a < N_ACTS; a++) {
            check_dense(env, edges[e][0], edges[e][1], edges[e][2], (int)(a % 2), all_acts[a]);
        }
    }
    for (int t = 0; t < 12; t++) {
        check_dense(env, ops_rand_size(env, 1, 70), ops_rand_size(env, 1, 300),
                    ops_rand_size(env, 1, 90), t % 3 != 0, all_acts[t % N_ACTS]);
    }
}

/* ------------------------------------------------------------------------------------ */
/* conv2d */

static void ref_conv2d(const kernels_conv2d_shape *c, const float *x, const float *w,
                       const float *b, kernels_activation act, size_t p_len, size_t q_len,
                       double *y) {
    const size_t cg = c->in_channels / c->groups, kg = c->out_channels / c->groups;
    for (size_t n = 0; n < c->batch; n++) {
        for (size_t k = 0; k < c->out_channels; k++) {
            const size_t g = k / kg;
            for (size_t p = 0; p < p_len; p++) {
                for (size_t q = 0; q < q_len; q++) {
                    double acc = b != NULL ? b[k] : 0.0;
                    for (size_t ch = 0; ch < cg; ch++) {
                        for (size_t r = 0; r < c->kernel_h; r++) {
                            for (size_t s = 0; s < c->kernel_w; s++) {
                                const long ih =
                                    (long)(p * c->stride_h + r * c->dilation_h) - (long)c->pad_h;
                                const long iw =
                                    (long)(q * c->stride_w + s * c->dilation_w) - (long)c->pad_w;
                                if (ih < 0 || iw < 0 || ih >= (long)c->in_h ||
                                    iw >= (long)c->in_w) {
                                    continue;
                                }
                                const size_t xc = g * cg + ch;
                                acc +=
                                    (double)x[((n * c->in_channels + xc) * c->in_h + (size_t)ih) *
                                                  c->in_w +
                                              (size_t)iw] *
                                    w[((k * cg + ch) * c->kernel_h + r) * c->kernel_w + s];
                            }
                        }
                    }
                    y[((n * c->out_channels + k) * p_len + p) * q_len + q] = ref_act(acc, act);
                }
            }
        }
    }
}

static void check_conv2d(ops_env *env, const kernels_conv2d_shape *c, int with_bias,
                         kernels_activation act) {
    size_t p_len, q_len;
    assert_int_equal(kernels_conv2d_out_size(c, &p_len, &q_len), PS_STATUS_OK);
    const size_t n_x = c->batch * c->in_channels * c->in_h * c->in_w;
    const size_t n_w = c->out_channels * (c->in_channels / c->groups) * c->kernel_h * c->kernel_w;
    const size_t n_y = c->batch * c->out_channels * p_len * q_len;
    float *x = ops_host_rand(env, n_x, -1, 1), *w = ops_host_rand(env, n_w, -1, 1);
    float *b = ops_host_rand(env, c->out_channels, -1, 1);
    double *want = malloc(n_y * sizeof(*want));
    assert_non_null(want);
    ref_conv2d(c, x, w, with_bias ? b : NULL, act, p_len, q_len, want);
    float *dx = ops_dev_put(env, x, n_x), *dw = ops_dev_put(env, w, n_w);
    float *db = with_bias ? ops_dev_put(env, b, c->out_channels) : NULL;
    float *dy = ops_dev_nan(env, n_y);
    assert_int_equal(kernels_op_conv2d(env->s, c, dx, dw, db, act, dy), PS_STATUS_OK);
    char what[160];
    snprintf(what, sizeof(what),
             "conv2d N%zu C%zu %zux%zu K%zu k%zux%zu s%zu,%zu p%zu,%zu d%zu,%zu g%zu act=%d",
             c->batch, c->in_channels, c->in_h, c->in_w, c->out_channels, c->kernel_h, c->kernel_w,
             c->stride_h, c->stride_w, c->pad_h, c->pad_w, c->dilation_h, c->dilation_w, c->groups,
             (int)act);
    ops_expect_dev(env, what, dy, want, n_y, GEMM_ATOL, GEMM_RTOL);
    ops_dev_free(env, dy), ops_dev_free(env, db), ops_dev_free(env, dw), ops_dev_free(env, dx);
    free(want), free(b), free(w), free(x);
}

static void test_conv2d(void **state) {
    ops_env *env = ops_env_of(state);
    static const kernels_conv2d_shape edges[] = {
        /* N  C  H  W  K  R  S  sh sw ph pw dh dw g */
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* all ones */
        {2, 3, 5, 7, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1},      /* pointwise */
        {1, 3, 9, 9, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1},      /* strided, padded */
        {1, 4, 8, 11, 4, 3, 2, 1, 3, 2, 0, 2, 1, 2},     /* dilated, grouped */
        {2, 6, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},      /* depthwise */
        {1, 2, 3, 3, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1},      /* kernel larger than the image */
        {1, 64, 128, 128, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* several im2col bands */
    };
    for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        check_conv2d(env, &edges[e], e % 2 == 0, all_acts[e % N_ACTS]);
    }
    for (int t = 0; t < 12;) {
        const size_t g = ops_rand_size(env, 1, 3);
        kernels_conv2d_shape c = {
            .batch = ops_rand_size(env, 1, 2),
            .in_channels = g * ops_rand_size(env, 1, 3),
            .in_h = ops_rand_size(env, 1, 12),
            .in_w = ops_rand_size(env, 1, 12),
            .out_channels = g * ops_rand_size(env, 1, 3),
            .kernel_h = ops_rand_size(env, 1, 4),
            .kernel_w = ops_rand_size(env, 1, 4),
            .stride_h = ops_rand_size(env, 1, 3),
            .stride_w = ops_rand_size(env, 1, 3),
            .pad_h = ops_rand_size(env, 0, 2),
            .pad_w = ops_rand_size(env, 0, 2),
            .dilation_h = ops_rand_size(env, 1, 2),
            .dilation_w = ops_rand_size(env, 1, 2),
            .groups = g,
        };
        size_t p, q;
        if (kernels_conv2d_out_size(&c, &p, &q) != PS_STATUS_OK) {
            continue; /* the kernel does not fit: draw again */
        }
        check_conv2d(env, &c, t % 2, all_acts[t % N_ACTS]);
        t++;
    }
}

/* ------------------------------------------------------------------------------------ */
/* pool2d */

static double ref_pool(const kernels_pool2d_shape *c, kernels_pool2d_kind kind, const float *img,
                       size_t p, size_t q) {
    double max = -INFINITY, sum = 0;
    size_t inside = 0;
    for (size_t r = 0; r < c->kernel_h; r++) {
        for (size_t s = 0; s < c->kernel_w; s++) {
            const long ih = (long)(p * c->stride_h + r) - (long)c->pad_h;
            const long iw = (long)(q * c->stride_w + s) - (long)c->pad_w;
            if (ih < 0 || iw < 0 || ih >= (long)c->in_h || iw >= (long)c->in_w) {
                continue; /* padding: -inf for max, 0 for the sums */
            }
            const double v = img[(size_t)ih * c->in_w + (size_t)iw];
            max = v > max ? v : max;
            sum += v;
            inside++;
        }
    }
    if (kind == KERNELS_POOL2D_MAX) {
        return max;
    }
    return sum / (double)(kind == KERNELS_POOL2D_AVG ? c->kernel_h * c->kernel_w : inside);
}

static void check_pool2d(ops_env *env, const kernels_pool2d_shape *c, kernels_pool2d_kind kind) {
    size_t p_len, q_len;
    assert_int_equal(kernels_pool2d_out_size(c, &p_len, &q_len), PS_STATUS_OK);
    const size_t planes = c->batch * c->channels;
    const size_t n_x = planes * c->in_h * c->in_w, n_y = planes * p_len * q_len;
    float *x = ops_host_rand(env, n_x, -1, 1);
    double *want = malloc(n_y * sizeof(*want));
    assert_non_null(want);
    for (size_t i = 0; i < planes; i++) {
        for (size_t p = 0; p < p_len; p++) {
            for (size_t q = 0; q < q_len; q++) {
                want[(i * p_len + p) * q_len + q] =
                    ref_pool(c, kind, x + i * c->in_h * c->in_w, p, q);
            }
        }
    }
    float *dx = ops_dev_put(env, x, n_x), *dy = ops_dev_nan(env, n_y);
    assert_int_equal(kernels_op_pool2d(env->s, c, kind, dx, dy), PS_STATUS_OK);
    char what[128];
    snprintf(what, sizeof(what), "pool2d kind=%d N%zu C%zu %zux%zu k%zux%zu s%zu,%zu p%zu,%zu",
             (int)kind, c->batch, c->channels, c->in_h, c->in_w, c->kernel_h, c->kernel_w,
             c->stride_h, c->stride_w, c->pad_h, c->pad_w);
    ops_expect_dev(env, what, dy, want, n_y, POOL_ATOL, POOL_RTOL);
    ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(x);
}

static void test_pool2d(void **state) {
    ops_env *env = ops_env_of(state);
    static const kernels_pool2d_shape edges[] = {
        /* N  C  H  W  kh kw sh sw ph pw */
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 3, 6, 6, 2, 2, 2, 2, 0, 0},
        {1, 2, 7, 5, 3, 3, 2, 2, 1, 1}, {1, 1, 5, 9, 5, 3, 1, 2, 2, 1},
        {3, 2, 4, 4, 4, 4, 4, 4, 2, 2},
    };
    static const kernels_pool2d_kind kinds[] = {KERNELS_POOL2D_MAX, KERNELS_POOL2D_AVG,
                                                KERNELS_POOL2D_AVG_EXCLUDE_PAD};
    for (size_t e = 0; e < sizeof(edges) / sizeof(edges[0]); e++) {
        for (size_t k = 0; k < 3; k++) {
            check_pool2d(env, &edges[e], kinds[k]);
        }
    }
    for (int t = 0; t < 15;) {
        kernels_pool2d_shape c = {
            .batch = ops_rand_size(env, 1, 3),
            .channels = ops_rand_size(env, 1, 4),
            .in_h = ops_rand_size(env, 1, 13),
            .in_w = ops_rand_size(env, 1, 13),
            .kernel_h = ops_rand_size(env, 1, 4),
            .kernel_w = ops_rand_size(env, 1, 4),
            .stride_h = ops_rand_size(env, 1, 3),
            .stride_w = ops_rand_size(env, 1, 3),
        };
        c.pad_h = ops_rand_size(env, 0, c.kernel_h / 2);
        c.pad_w = ops_rand_size(env, 0, c.kernel_w / 2);
        size_t p, q;
        if (kernels_pool2d_out_size(&c, &p, &q) != PS_STATUS_OK) {
            continue;
        }
        check_pool2d(env, &c, kinds[t % 3]);
        t++;
    }
}

const struct CMUnitTest ops_image_tests[] = {
    cmocka_unit_test(test_dense),
    cmocka_unit_test(test_conv2d),
    cmocka_unit_test(test_pool2d),
};
const size_t ops_image_tests_n = sizeof(ops_image_tests) / sizeof(ops_image_tests[0]);
