/* test_cuda_bf16.c: dense on the CUDA backend opened with KERNELS_PRECISION_BF16,
 * against double references (suite gpu; exits 77 where no GPU can run it).
 *
 * Tolerance, stated per element: BF16 keeps 8 significant bits, so rounding x and w
 * each moves them by at most 2^-8 relative, a product by at most 2^-7 + 2^-16; the
 * square term and the FP32 sum's own error are far below what this worst-case bound
 * leaves over (actual errors add up like a random walk, ~sqrt(in) not in). So
 *     |got - want| <= 1e-4 + 1.13 * 2^-7 * (sum_i |x_i w_i|)
 * where 1.13 bounds the slope of every activation (GELU's largest; ReLU, tanh 1,
 * sigmoid 1/4) and 1e-4 is the FP32 tests' allowance. The test also checks that BF16
 * really was used: on a layer of 384 inputs at least one output must differ from the
 * exact value by more than FP32 could (1e-3), or the option would be silently ignored.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "test_ref.h"

#define EXIT_SKIPPED 77
#define BF16_PRODUCT_REL (1.0 / 128.0) /* 2^-7: x and w each rounded by <= 2^-8 */
#define ACT_SLOPE 1.13                 /* the steepest activation's largest slope (GELU) */
#define FP32_ATOL 1e-4
#define MISMATCHES_SHOWN 5

static kernels_backend *the_backend;
static uint64_t rng = 0x5eed;

static float rand_unit(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (float)((double)((z ^ (z >> 31)) >> 11) / (double)(1ULL << 52) - 1.0);
}

static void *dev_put(kernels_stream *s, const float *host, size_t n) {
    void *dev = NULL;
    assert_int_equal(kernels_buffer_alloc(the_backend, n * sizeof(float), &dev), PS_STATUS_OK);
    assert_int_equal(kernels_buffer_upload(s, dev, host, n * sizeof(float)), PS_STATUS_OK);
    return dev;
}

/* One dense case; the largest |got - want| over the outputs into *ret_max_err. */
static void check_dense(kernels_stream *s, size_t rows, size_t in, size_t out, int bias,
                        kernels_activation act, double *ret_max_err) {
    const size_t nx = rows * in, nw = out * in, ny = rows * out;
    float *x = malloc(nx * sizeof(*x)), *w = malloc(nw * sizeof(*w));
    float *b = malloc(out * sizeof(*b)), *got = malloc(ny * sizeof(*got));
    assert_true(x != NULL && w != NULL && b != NULL && got != NULL);
    for (size_t i = 0; i < nx; i++) {
        x[i] = rand_unit();
    }
    for (size_t i = 0; i < nw; i++) {
        w[i] = rand_unit();
    }
    for (size_t i = 0; i < out; i++) {
        b[i] = rand_unit();
    }
    void *dx = dev_put(s, x, nx), *dw = dev_put(s, w, nw), *db = bias ? dev_put(s, b, out) : NULL;
    void *dy = NULL;
    assert_int_equal(kernels_buffer_alloc(the_backend, ny * sizeof(float), &dy), PS_STATUS_OK);
    if (kernels_op_dense(s, dx, rows, in, dw, db, out, act, dy) != PS_STATUS_OK ||
        kernels_buffer_download(s, got, dy, ny * sizeof(float)) != PS_STATUS_OK) {
        fail_msg("dense %zux%zu->%zu: %s", rows, in, out, kernels_stream_last_error(s));
    }
    size_t bad = 0;
    double max_err = 0;
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            double acc = bias ? b[o] : 0.0, mag = 0.0;
            for (size_t i = 0; i < in; i++) {
                const double p = (double)x[r * in + i] * w[o * in + i];
                acc += p;
                mag += fabs(p);
            }
            const double want = ref_act(acc, act), g = got[r * out + o];
            const double err = fabs(g - want);
            const double allowed = FP32_ATOL + ACT_SLOPE * BF16_PRODUCT_REL * mag;
            max_err = err > max_err ? err : max_err;
            if (!(err <= allowed) && bad++ < MISMATCHES_SHOWN) {
                print_error("dense %zux%zu->%zu act=%d [%zu,%zu] got %.7g want %.7g allowed %.3g\n",
                            rows, in, out, (int)act, r, o, g, want, allowed);
            }
        }
    }
    kernels_buffer_free(the_backend, dy), kernels_buffer_free(the_backend, db);
    kernels_buffer_free(the_backend, dw), kernels_buffer_free(the_backend, dx);
    free(got), free(b), free(w), free(x);
    if (bad > 0) {
        fail_msg("dense %zux%zu->%zu act=%d: %zu of %zu outside the BF16 bound", rows, in, out,
                 (int)act, bad, ny);
    }
    *ret_max_err = max_err;
}

static void test_dense_bf16(void **state) {
    (void)state;
    kernels_stream *s = NULL;
    assert_int_equal(kernels_stream_create(the_backend, &s), PS_STATUS_OK);
    static const size_t shapes[][3] = {{1, 1, 1},     {1, 7, 1},       {7, 33, 5},
                                       {33, 129, 65}, {64, 384, 1536}, {3, 1536, 384}};
    static const kernels_activation acts[] = {KERNELS_ACTIVATION_NONE, KERNELS_ACTIVATION_RELU,
                                              KERNELS_ACTIVATION_SIGMOID, KERNELS_ACTIVATION_TANH,
                                              KERNELS_ACTIVATION_GELU};
    double worst_wide = 0;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        for (size_t a = 0; a < 5; a++) {
            double e = 0;
            check_dense(s, shapes[i][0], shapes[i][1], shapes[i][2], (int)(a % 2), acts[a], &e);
            if (shapes[i][1] == 384 && acts[a] == KERNELS_ACTIVATION_NONE) {
                worst_wide = e;
            }
        }
    }
    printf("# bf16 dense 64x384->1536: largest error %.3g\n", worst_wide);
    assert_true(worst_wide > 1e-3); /* BF16 really rounded: FP32 would stay below 1e-4 */
    kernels_stream_destroy(s);
}

int main(void) {
    const kernels_backend_open_opts opts = {.module_dir = getenv("PS_KERNELS_MODULE_DIR"),
                                            .precision = KERNELS_PRECISION_BF16};
    char err[512] = "";
    const ps_status st = kernels_backend_open("cuda", &opts, &the_backend, err, sizeof(err));
    if (st == PS_STATUS_UNAVAILABLE) {
        fprintf(stderr, "test_cuda_bf16: %s (skipped)\n", err);
        return EXIT_SKIPPED;
    }
    if (st != PS_STATUS_OK) {
        fprintf(stderr, "test_cuda_bf16: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dense_bf16)};
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    kernels_backend_destroy(the_backend);
    return failed;
}
