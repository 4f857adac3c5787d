/* test_backend_cpu.c: unit tests of the backend dispatch and the CPU backend (cmocka).
 *
 * Each op is checked against a naive C reference computed here in double, over sizes
 * that take OpenBLAS through its small and blocked paths, with an absolute + relative
 * tolerance; the first mismatch is printed with both values. The dispatcher's argument
 * checks and the optional-entry rule (NULL scale: UNIMPLEMENTED) are checked with a
 * stub backend.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "test_ref.h"

#define ATOL 1e-5
#define RTOL 1e-5

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static uint64_t rng_state = 42;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 40) / (double)(1ULL << 24) * 2.0 - 1.0);
}

static float *rand_vec(size_t n) {
    float *v = malloc((n > 0 ? n : 1) * sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        v[i] = frand();
    }
    return v;
}

static void assert_close(const float *got, const double *want, size_t n, const char *what) {
    ref_assert_close(got, want, n, ATOL, RTOL, what);
}

static kernels_backend *cpu(void) {
    kernels_backend *be = NULL;
    assert_int_equal(kernels_backend_cpu_create(&be), PS_STATUS_OK);
    assert_non_null(be);
    assert_string_equal(kernels_backend_name(be), "cpu");
    return be;
}

/* ------------------------------------------------------------------------------------ */
/* Ops against references */

static void check_dense(size_t rows, size_t in, size_t out, bool with_bias,
                        kernels_activation act) {
    kernels_backend *be = cpu();
    float *x = rand_vec(rows * in);
    float *w = rand_vec(out * in);
    float *b = with_bias ? rand_vec(out) : NULL;
    float *y = calloc(rows * out, sizeof(*y));
    double *ref = calloc(rows * out, sizeof(*ref));
    assert_non_null(y);
    assert_non_null(ref);
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            double acc = b != NULL ? b[o] : 0.0;
            for (size_t i = 0; i < in; i++) {
                acc += (double)x[r * in + i] * w[o * in + i];
            }
            ref[r * out + o] = ref_act(acc, act);
        }
    }
    assert_int_equal(kernels_backend_dense(be, x, rows, in, w, b, out, act, y), PS_STATUS_OK);
    char what[96];
    snprintf(what, sizeof(what), "dense %zux%zu->%zu bias=%d act=%d", rows, in, out, with_bias,
             (int)act);
    assert_close(y, ref, rows * out, what);
    free(ref);
    free(y);
    free(b);
    free(w);
    free(x);
    kernels_backend_destroy(be);
}

static void test_dense_matches_reference(void **state) {
    (void)state;
    static const size_t sizes[][3] = {{1, 1, 1},     {1, 64, 10},  {5, 64, 64},   {3, 7, 13},
                                      {37, 129, 65}, {64, 64, 10}, {128, 300, 17}};
    static const kernels_activation acts[] = {KERNELS_ACTIVATION_NONE, KERNELS_ACTIVATION_RELU,
                                              KERNELS_ACTIVATION_SIGMOID, KERNELS_ACTIVATION_TANH};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
            check_dense(sizes[s][0], sizes[s][1], sizes[s][2], true, acts[a]);
            check_dense(sizes[s][0], sizes[s][1], sizes[s][2], false, acts[a]);
        }
    }
}

static void test_softmax_matches_reference(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    const size_t rows = 7;
    const size_t cols = 1000;
    float *x = rand_vec(rows * cols);
    for (size_t i = 0; i < rows * cols; i++) {
        x[i] *= 20.0f;
    }
    x[0] = 1000.0f; /* large logits must not overflow */
    x[cols] = -1000.0f;
    float *y = calloc(rows * cols, sizeof(*y));
    double *ref = calloc(rows * cols, sizeof(*ref));
    for (size_t r = 0; r < rows; r++) {
        double max = x[r * cols];
        for (size_t c = 1; c < cols; c++) {
            max = fmax(max, x[r * cols + c]);
        }
        double sum = 0;
        for (size_t c = 0; c < cols; c++) {
            sum += exp(x[r * cols + c] - max);
        }
        for (size_t c = 0; c < cols; c++) {
            ref[r * cols + c] = exp(x[r * cols + c] - max) / sum;
        }
    }
    assert_int_equal(kernels_backend_softmax(be, x, rows, cols, y), PS_STATUS_OK);
    assert_close(y, ref, rows * cols, "softmax");
    /* in place */
    assert_int_equal(kernels_backend_softmax(be, x, rows, cols, x), PS_STATUS_OK);
    assert_close(x, ref, rows * cols, "softmax in place");
    free(ref);
    free(y);
    free(x);
    kernels_backend_destroy(be);
}

static void test_elementwise_match_reference(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    const size_t rows = 9;
    const size_t cols = 31;
    const size_t n = rows * cols;
    float *a = rand_vec(n);
    float *b = rand_vec(n);
    float *s = rand_vec(cols);
    float *t = rand_vec(cols);
    float *y = calloc(n, sizeof(*y));
    double *ref = calloc(n, sizeof(*ref));

    assert_int_equal(kernels_backend_relu(be, a, n, y), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++) {
        ref[i] = a[i] > 0 ? a[i] : 0;
    }
    assert_close(y, ref, n, "relu");

    assert_int_equal(kernels_backend_add(be, a, b, n, y), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++) {
        ref[i] = (double)a[i] + b[i];
    }
    assert_close(y, ref, n, "add");

    for (int variant = 0; variant < 3; variant++) {
        const float *sc = variant != 2 ? s : NULL;
        const float *sh = variant != 1 ? t : NULL;
        assert_int_equal(kernels_backend_scale(be, a, rows, cols, sc, sh, y), PS_STATUS_OK);
        for (size_t i = 0; i < n; i++) {
            const size_t c = i % cols;
            ref[i] = (double)a[i] * (sc != NULL ? sc[c] : 1.0) + (sh != NULL ? sh[c] : 0.0);
        }
        assert_close(y, ref, n, "scale");
    }
    free(ref);
    free(y);
    free(t);
    free(s);
    free(b);
    free(a);
    kernels_backend_destroy(be);
}

/* ------------------------------------------------------------------------------------ */
/* Dispatch rules */

static void test_dispatch_rejects_bad_arguments(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    float v[4] = {0};
    assert_int_equal(kernels_backend_dense(be, NULL, 1, 1, v, NULL, 1, KERNELS_ACTIVATION_NONE, v),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_dense(be, v, 0, 1, v, NULL, 1, KERNELS_ACTIVATION_NONE, v),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_dense(be, v, 1, (size_t)KERNELS_MAX_DIM + 1, v, NULL, 1,
                                           KERNELS_ACTIVATION_NONE, v),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_dense(be, v, 1, 1, v, NULL, 1, (kernels_activation)99, v),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_softmax(be, v, 1, 0, v), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_relu(be, v, 0, v), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_add(be, v, NULL, 1, v), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(kernels_backend_scale(NULL, v, 1, 1, NULL, NULL, v),
                     PS_STATUS_INVALID_ARGUMENT);
    kernels_backend_destroy(be);
    kernels_backend_destroy(NULL);
}

static int stub_freed;

static void stub_free(void *ctx) {
    (void)ctx;
    stub_freed++;
}

static ps_status stub_dense(void *ctx, const float *x, size_t rows, size_t in, const float *w,
                            const float *bias, size_t out, kernels_activation act, float *y) {
    (void)ctx, (void)x, (void)rows, (void)in, (void)w, (void)bias, (void)out, (void)act, (void)y;
    return PS_STATUS_OK;
}

static ps_status stub_softmax(void *ctx, const float *x, size_t rows, size_t cols, float *y) {
    (void)ctx, (void)x, (void)rows, (void)cols, (void)y;
    return PS_STATUS_OK;
}

static ps_status stub_relu(void *ctx, const float *x, size_t n, float *y) {
    (void)ctx, (void)x, (void)n, (void)y;
    return PS_STATUS_OK;
}

static ps_status stub_add(void *ctx, const float *a, const float *b, size_t n, float *y) {
    (void)ctx, (void)a, (void)b, (void)n, (void)y;
    return PS_STATUS_OK;
}

static void test_optional_entries_and_ownership(void **state) {
    (void)state;
    kernels_backend_iface iface = {
        .name = "stub",
        .free_ctx = stub_free,
        .dense = stub_dense,
        .softmax = stub_softmax,
        .relu = stub_relu,
        .add = stub_add,
        .scale = NULL,
    };
    kernels_backend *be = NULL;
    stub_freed = 0;
    assert_int_equal(kernels_backend_create(&iface, &iface, &be), PS_STATUS_OK);
    float v[2] = {1, 2};
    assert_int_equal(kernels_backend_scale(be, v, 1, 2, NULL, NULL, v), PS_STATUS_UNIMPLEMENTED);
    assert_string_equal(kernels_backend_name(be), "stub");
    kernels_backend_destroy(be);
    assert_int_equal(stub_freed, 1);

    /* A required entry missing: refused, and the context is still freed. */
    iface.relu = NULL;
    be = NULL;
    assert_int_equal(kernels_backend_create(&iface, &iface, &be), PS_STATUS_INVALID_ARGUMENT);
    assert_null(be);
    assert_int_equal(stub_freed, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_matches_reference),
        cmocka_unit_test(test_softmax_matches_reference),
        cmocka_unit_test(test_elementwise_match_reference),
        cmocka_unit_test(test_dispatch_rejects_bad_arguments),
        cmocka_unit_test(test_optional_entries_and_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
