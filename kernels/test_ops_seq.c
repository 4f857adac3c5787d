/* test_ops_seq.c: activation, softmax, layernorm, attention, mean pooling and L2
 * normalisation against double references (test_ops.h).
 *
 * Tolerances: activations atol 1e-6, rtol 1e-5 (a few ulp of expf/tanhf/erff);
 * softmax atol 1e-6, rtol 1e-5; layernorm atol 1e-5, rtol 1e-5 (outputs of a few
 * units); attention atol 1e-5, rtol 1e-4 (two GEMMs around a softmax); mean pooling
 * atol 1e-6, rtol 1e-5; L2 normalisation atol 1e-6, rtol 1e-5 (outputs within [-1, 1]).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_ops.h"

/* ------------------------------------------------------------------------------------ */
/* activation, softmax */

/* act over n values uniform in [-6, 6), out of place and in place. */
void ops_check_activation(ops_env *env, kernels_activation act, size_t n) {
    float *x = ops_host_rand(env, n, -6, 6);
    double *want = malloc(n * sizeof(*want));
    assert_non_null(want);
    for (size_t i = 0; i < n; i++) {
        const double v = x[i];
        want[i] = act == KERNELS_ACTIVATION_RELU      ? (v > 0 ? v : 0)
                  : act == KERNELS_ACTIVATION_SIGMOID ? 1 / (1 + exp(-v))
                  : act == KERNELS_ACTIVATION_TANH    ? tanh(v)
                  : act == KERNELS_ACTIVATION_GELU    ? 0.5 * v * (1 + erf(v / sqrt(2.0)))
                                                      : v;
    }
    float *dx = ops_dev_put(env, x, n), *dy = ops_dev_nan(env, n);
    char what[64];
    snprintf(what, sizeof(what), "activation %d n=%zu", (int)act, n);
    assert_int_equal(kernels_op_activation(env->s, act, dx, n, dy), PS_STATUS_OK);
    ops_expect_dev(env, what, dy, want, n, 1e-6, 1e-5);
    /* in place */
    assert_int_equal(kernels_op_activation(env->s, act, dx, n, dx), PS_STATUS_OK);
    ops_expect_dev(env, what, dx, want, n, 1e-6, 1e-5);
    ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(x);
}

static void test_activation(void **state) {
    ops_env *env = ops_env_of(state);
    static const kernels_activation acts[] = {
        KERNELS_ACTIVATION_NONE, KERNELS_ACTIVATION_RELU, KERNELS_ACTIVATION_SIGMOID,
        KERNELS_ACTIVATION_TANH, KERNELS_ACTIVATION_GELU,
    };
    for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
        ops_check_activation(env, acts[a], a == 0 ? 1 : ops_rand_size(env, 1, 5000));
    }
}

/* Softmax of rows x cols values in [-20, 20) with x[0] = 1000, out of place and in place. */
void ops_check_softmax(ops_env *env, size_t rows, size_t cols) {
    float *x = ops_host_rand(env, rows * cols, -20, 20);
    x[0] = 1000.0f; /* large logits must not overflow */
    double *want = malloc(rows * cols * sizeof(*want));
    assert_non_null(want);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double max = -INFINITY, sum = 0;
        for (size_t c = 0; c < cols; c++) {
            max = fmax(max, xr[c]);
        }
        for (size_t c = 0; c < cols; c++) {
            sum += exp(xr[c] - max);
        }
        for (size_t c = 0; c < cols; c++) {
            want[r * cols + c] = exp(xr[c] - max) / sum;
        }
    }
    float *dx = ops_dev_put(env, x, rows * cols), *dy = ops_dev_nan(env, rows * cols);
    char what[64];
    snprintf(what, sizeof(what), "softmax %zux%zu", rows, cols);
    assert_int_equal(kernels_op_softmax(env->s, dx, rows, cols, dy), PS_STATUS_OK);
    ops_expect_dev(env, what, dy, want, rows * cols, 1e-6, 1e-5);
    assert_int_equal(kernels_op_softmax(env->s, dx, rows, cols, dx), PS_STATUS_OK);
    ops_expect_dev(env, what, dx, want, rows * cols, 1e-6, 1e-5);
    ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(x);
}

static void test_softmax(void **state) {
    ops_env *env = ops_env_of(state);
    static const size_t shapes[][2] = {{1, 1}, {3, 1}, {1, 7}, {7, 1000}, {0, 0}, {0, 0}};
    for (size_t t = 0; t < sizeof(shapes) / sizeof(shapes[0]); t++) {
        size_t rows = shapes[t][0], cols = shapes[t][1];
        if (rows == 0) {
            rows = ops_rand_size(env, 1, 40), cols = ops_rand_size(env, 1, 300);
        }
        ops_check_softmax(env, rows, cols);
    }
}

/* ------------------------------------------------------------------------------------ */
/* layernorm */

void ops_check_layernorm(ops_env *env, size_t rows, size_t cols, int affine) {
    const float eps = 1e-12f; /* BERT's */
    float *x = ops_host_rand(env, rows * cols, -3, 5);
    float *g = ops_host_rand(env, cols, 0.5f, 1.5f), *b = ops_host_rand(env, cols, -1, 1);
    double *want = malloc(rows * cols * sizeof(*want));
    assert_non_null(want);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double mean = 0, var = 0;
        for (size_t c = 0; c < cols; c++) {
            mean += xr[c];
        }
        mean /= (double)cols;
        for (size_t c = 0; c < cols; c++) {
            var += (xr[c] - mean) * (xr[c] - mean);
        }
        var /= (double)cols;
        for (size_t c = 0; c < cols; c++) {
            const double z = (xr[c] - mean) / sqrt(var + eps);
            want[r * cols + c] = affine ? z * g[c] + b[c] : z;
        }
    }
    float *dx = ops_dev_put(env, x, rows * cols), *dy = ops_dev_nan(env, rows * cols);
    float *dg = ops_dev_put(env, g, cols), *db = ops_dev_put(env, b, cols);
    char what[64];
    snprintf(what, sizeof(what), "layernorm %zux%zu affine=%d", rows, cols, affine);
    assert_int_equal(kernels_op_layernorm(env->s, dx, rows, cols, affine ? dg : NULL,
                                          affine ? db : NULL, eps, dy),
                     PS_STATUS_OK);
    ops_expect_dev(env, what, dy, want, rows * cols, 1e-5, 1e-5);
    ops_dev_free(env, db), ops_dev_free(env, dg), ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(b), free(g), free(x);
}

static void test_layernorm(void **state) {
    ops_env *env = ops_env_of(state);
    ops_check_layernorm(env, 1, 1, 1); /* one element: zero variance, output beta */
    ops_check_layernorm(env, 5, 384, 1);
    for (int t = 0; t < 8; t++) {
        ops_check_layernorm(env, ops_rand_size(env, 1, 20), ops_rand_size(env, 1, 700), t % 2);
    }
}

/* ------------------------------------------------------------------------------------ */
/* attention */

/* Mask kinds: 0 none (NULL), 1 right padding, 2 random holes, 3 one sample all padding. */
void ops_check_attention(ops_env *env, kernels_attention_shape c, int packed, int mask_kind) {
    const size_t hidden = c.heads * c.head_dim, tokens = c.batch * c.seq;
    c.ld = packed ? 3 * hidden : hidden;
    const size_t n_in = packed ? tokens * c.ld : 3 * tokens * hidden;
    float *in = ops_host_rand(env, n_in, -1, 1);
    const float *q = in, *k = packed ? in + hidden : in + tokens * hidden;
    const float *v = packed ? in + 2 * hidden : in + 2 * tokens * hidden;
    float *mask = malloc(tokens * sizeof(*mask));
    double *want = calloc(tokens * hidden, sizeof(*want)), *p = malloc(c.seq * sizeof(*p));
    assert_non_null(mask), assert_non_null(want), assert_non_null(p);
    for (size_t b = 0; b < c.batch; b++) {
        const size_t len = ops_rand_size(env, 1, c.seq);
        for (size_t t = 0; t < c.seq; t++) {
            mask[b * c.seq + t] = mask_kind == 1   ? (t < len ? 1.0f : 0.0f)
                                  : mask_kind == 2 ? (float)ops_rand_size(env, 0, 1)
                                  : mask_kind == 3 ? (b == c.batch - 1 ? 0.0f : 1.0f)
                                                   : 1.0f;
        }
    }
    const double scale = 1.0 / sqrt((double)c.head_dim);
    for (size_t b = 0; b < c.batch; b++) {
        for (size_t h = 0; h < c.heads; h++) {
            for (size_t i = 0; i < c.seq; i++) {
                const float *qi = q + (b * c.seq + i) * c.ld + h * c.head_dim;
                double max = -INFINITY, sum = 0;
                for (size_t j = 0; j < c.seq; j++) {
                    const float *kj = k + (b * c.seq + j) * c.ld + h * c.head_dim;
                    double dot = 0;
                    for (size_t d = 0; d < c.head_dim; d++) {
                        dot += (double)qi[d] * kj[d];
                    }
                    p[j] = dot * scale;
                    if (mask[b * c.seq + j] != 0.0f) {
                        max = fmax(max, p[j]);
                    }
                }
                for (size_t j = 0; j < c.seq; j++) {
                    p[j] = mask[b * c.seq + j] != 0.0f ? exp(p[j] - max) : 0.0;
                    sum += p[j];
                }
                double *yi = want + (b * c.seq + i) * hidden + h * c.head_dim;
                for (size_t j = 0; sum > 0 && j < c.seq; j++) { /* sum 0: no token, zeros */
                    const float *vj = v + (b * c.seq + j) * c.ld + h * c.head_dim;
                    for (size_t d = 0; d < c.head_dim; d++) {
                        yi[d] += p[j] / sum * vj[d];
                    }
                }
            }
        }
    }
    float *d_in = ops_dev_put(env, in, n_in), *d_mask = ops_dev_put(env, mask, tokens);
    float *dy = ops_dev_nan(env, tokens * hidden);
    const size_t dk = (size_t)(k - in), dv = (size_t)(v - in);
    assert_int_equal(kernels_op_attention(env->s, &c, d_in, d_in + dk, d_in + dv,
                                          mask_kind == 0 ? NULL : d_mask, dy),
                     PS_STATUS_OK);
    char what[128];
    snprintf(what, sizeof(what), "attention b%zu s%zu h%zu d%zu packed=%d mask=%d", c.batch, c.seq,
             c.heads, c.head_dim, packed, mask_kind);
    ops_expect_dev(env, what, dy, want, tokens * hidden, 1e-5, 1e-4);
    ops_dev_free(env, dy), ops_dev_free(env, d_mask), ops_dev_free(env, d_in);
    free(p), free(want), free(mask), free(in);
}

static void test_attention(void **state) {
    ops_env *env = ops_env_of(state);
    ops_check_attention(env, (kernels_attention_shape){1, 1, 1, 1, 0}, 0, 0);
    ops_check_attention(env, (kernels_attention_shape){2, 7, 3, 5, 0}, 1, 1);
    ops_check_attention(env, (kernels_attention_shape){2, 33, 12, 32, 0}, 1, 1); /* MiniLM */
    ops_check_attention(env, (kernels_attention_shape){3, 9, 2, 4, 0}, 0, 3);
    for (int t = 0; t < 8; t++) {
        kernels_attention_shape c = {ops_rand_size(env, 1, 3), ops_rand_size(env, 1, 40),
                                     ops_rand_size(env, 1, 4), ops_rand_size(env, 1, 17), 0};
        ops_check_attention(env, c, t % 2, t % 4);
    }
}

/* ------------------------------------------------------------------------------------ */
/* mean pooling */

void ops_check_mean_pool(ops_env *env, size_t batch, size_t seq, size_t dim, int with_mask) {
    float *x = ops_host_rand(env, batch * seq * dim, -1, 1);
    float *mask = malloc(batch * seq * sizeof(*mask));
    double *want = malloc(batch * dim * sizeof(*want));
    assert_non_null(mask), assert_non_null(want);
    for (size_t i = 0; i < batch * seq; i++) {
        mask[i] = with_mask ? 0.5f * (float)ops_rand_size(env, 0, 2) : 1.0f; /* 0, 0.5, 1 */
    }
    if (with_mask) {
        memset(mask, 0, seq * sizeof(*mask)); /* sample 0: all padding, zeros */
        if (batch > 1) {                      /* sample 1: total weight below 1 */
            memset(mask + seq, 0, seq * sizeof(*mask));
            mask[seq + seq / 2] = 0.5f;
        }
    }
    for (size_t b = 0; b < batch; b++) {
        double weight = 0;
        for (size_t t = 0; t < seq; t++) {
            weight += mask[b * seq + t];
        }
        for (size_t d = 0; d < dim; d++) {
            double acc = 0;
            for (size_t t = 0; t < seq; t++) {
                acc += (double)mask[b * seq + t] * x[(b * seq + t) * dim + d];
            }
            want[b * dim + d] = acc / fmax(weight, 1e-9);
        }
    }
    float *dx = ops_dev_put(env, x, batch * seq * dim), *dm = ops_dev_put(env, mask, batch * seq);
    float *dy = ops_dev_nan(env, batch * dim);
    assert_int_equal(kernels_op_mean_pool(env->s, dx, batch, seq, dim, with_mask ? dm : NULL, dy),
                     PS_STATUS_OK);
    char what[64];
    snprintf(what, sizeof(what), "mean_pool %zux%zux%zu mask=%d", batch, seq, dim, with_mask);
    ops_expect_dev(env, what, dy, want, batch * dim, 1e-6, 1e-5);
    ops_dev_free(env, dy), ops_dev_free(env, dm), ops_dev_free(env, dx);
    free(want), free(mask), free(x);
}

static void test_mean_pool(void **state) {
    ops_env *env = ops_env_of(state);
    ops_check_mean_pool(env, 1, 1, 1, 0);
    ops_check_mean_pool(env, 3, 17, 384, 1);
    for (int t = 0; t < 8; t++) {
        ops_check_mean_pool(env, ops_rand_size(env, 1, 5), ops_rand_size(env, 1, 50),
                            ops_rand_size(env, 1, 100), t % 2);
    }
}

/* ------------------------------------------------------------------------------------ */
/* L2 normalisation */

/* Row kinds: 0 random, 1 all zeros (norm below eps: divided by eps, so zeros), 2 tiny
 * values (norm below eps: x / eps), 3 large values (squares past float's range). */
static void check_l2_normalize(ops_env *env, size_t rows, size_t cols, int kind) {
    const float eps = 1e-12f;
    float *x = ops_host_rand(env, rows * cols, -2, 2);
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] = kind == 1 ? 0.0f : kind == 2 ? x[i] * 1e-16f : kind == 3 ? x[i] * 1e30f : x[i];
    }
    double *want = malloc(rows * cols * sizeof(*want));
    assert_non_null(want);
    for (size_t r = 0; r < rows; r++) {
        double sq = 0;
        for (size_t c = 0; c < cols; c++) {
            sq += (double)x[r * cols + c] * x[r * cols + c];
        }
        const double norm = fmax(sqrt(sq), (double)eps);
        for (size_t c = 0; c < cols; c++) {
            want[r * cols + c] = x[r * cols + c] / norm;
        }
    }
    float *dx = ops_dev_put(env, x, rows * cols), *dy = ops_dev_nan(env, rows * cols);
    char what[64];
    snprintf(what, sizeof(what), "l2_normalize %zux%zu kind=%d", rows, cols, kind);
    const ps_status st = kernels_op_l2_normalize(env->s, dx, rows, cols, eps, dy);
    if (st == PS_STATUS_UNIMPLEMENTED && !kernels_backend_host_memory(env->be)) {
        print_message("# %s: UNIMPLEMENTED on backend %s (allowed, ops.h)\n", what,
                      kernels_backend_name(env->be));
    } else {
        assert_int_equal(st, PS_STATUS_OK);
        ops_expect_dev(env, what, dy, want, rows * cols, 1e-6, 1e-5);
        /* in place */
        assert_int_equal(kernels_op_l2_normalize(env->s, dx, rows, cols, eps, dx), PS_STATUS_OK);
        ops_expect_dev(env, what, dx, want, rows * cols, 1e-6, 1e-5);
    }
    ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(x);
}

static void test_l2_normalize(void **state) {
    ops_env *env = ops_env_of(state);
    check_l2_normalize(env, 1, 1, 0);
    check_l2_normalize(env, 3, 384, 0); /* MiniLM's sentence embeddings */
    check_l2_normalize(env, 2, 7, 1);
    check_l2_normalize(env, 2, 7, 2);
    check_l2_normalize(env, 2, 7, 3);
    for (int t = 0; t < 8; t++) {
        check_l2_normalize(env, ops_rand_size(env, 1, 20), ops_rand_size(env, 1, 500), 0);
    }
}

const struct CMUnitTest ops_seq_tests[] = {
    cmocka_unit_test(test_activation), cmocka_unit_test(test_softmax),
    cmocka_unit_test(test_layernorm),  cmocka_unit_test(test_attention),
    cmocka_unit_test(test_mean_pool),  cmocka_unit_test(test_l2_normalize),
};
const size_t ops_seq_tests_n = sizeof(ops_seq_tests) / sizeof(ops_seq_tests[0]);
