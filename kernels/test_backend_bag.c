/* test_backend_bag.c: unit tests of the recommender ops of the backend interface,
 * embedding_bag and concat (cmocka): the CPU backend against a straightforward
 * reference computed here in double, over odd sizes, with padding, repeated rows and
 * all-padding samples; the dispatchers' argument checks; UNIMPLEMENTED for a backend
 * without them. (Before these ops existed there was no dispatcher to call: the
 * executor could not run a graph with tables at all.)
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

#include "test_ref.h"
#include "backend.h"

#define ATOL 1e-5
#define RTOL 1e-5

static uint64_t rng_state = 7;

static uint32_t next(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

static float frand(void) { /* uniform in [-1, 1) */
    return (float)((double)next() / (double)(1u << 31) * 2.0 - 1.0);
}

static kernels_backend *cpu(void) {
    kernels_backend *be = NULL;
    assert_int_equal(kernels_backend_cpu_create(&be), PS_STATUS_OK);
    return be;
}

static void assert_close(const float *got, const double *want, size_t n, const char *what) {
    ref_assert_close(got, want, n, ATOL, RTOL, what);
}

/* The reference: per sample, the sum of its rows in double, divided by the count of
 * rows that are not padding for "mean" (zeros when there are none). */
static void bag_reference(const float *rows, size_t dim, const int64_t *index, size_t batch,
                          size_t len, kernels_pool pool, double *want) {
    for (size_t b = 0; b < batch; b++) {
        size_t count = 0;
        for (size_t c = 0; c < dim; c++) {
            want[b * dim + c] = 0.0;
        }
        for (size_t j = 0; j < len; j++) {
            const int64_t r = index[b * len + j];
            if (r < 0) {
                continue;
            }
            count++;
            for (size_t c = 0; c < dim; c++) {
                want[b * dim + c] += rows[(size_t)r * dim + c];
            }
        }
        for (size_t c = 0; pool == KERNELS_POOL_MEAN && count > 0 && c < dim; c++) {
            want[b * dim + c] /= (double)count;
        }
    }
}

/* A random bag: each entry padding with probability 1/4, else a random row (repeats
 * included); sample 0 is all padding when `empty_first`. */
static void check_bag(size_t n_rows, size_t dim, size_t batch, size_t len, kernels_pool pool,
                      bool empty_first) {
    kernels_backend *be = cpu();
    float *rows = calloc(n_rows * dim + 1, sizeof(*rows)); /* (read only where filled) */
    int64_t *index = malloc(batch * len * sizeof(*index));
    float *y = malloc(batch * dim * sizeof(*y));
    double *want = malloc(batch * dim * sizeof(*want));
    assert_true(rows && index && y && want);
    for (size_t i = 0; i < n_rows * dim; i++) {
        rows[i] = frand();
    }
    for (size_t i = 0; i < batch * len; i++) {
        const bool pad = n_rows == 0 || next() % 4 == 0 || (empty_first && i < len);
        index[i] = pad ? -1 : (int64_t)(next() % n_rows);
    }
    for (size_t i = 0; i < batch * dim; i++) {
        y[i] = NAN; /* every element must be written */
    }
    assert_int_equal(kernels_backend_embedding_bag(be, n_rows ? rows : NULL, n_rows, dim, index,
                                                   batch, len, pool, y),
                     PS_STATUS_OK);
    bag_reference(rows, dim, index, batch, len, pool, want);
    char what[96];
    snprintf(what, sizeof(what), "bag rows=%zu dim=%zu batch=%zu len=%zu %s", n_rows, dim, batch,
             len, pool == KERNELS_POOL_MEAN ? "mean" : "sum");
    assert_close(y, want, batch * dim, what);
    if (empty_first) {
        for (size_t c = 0; c < dim; c++) {
            assert_true(y[c] == 0.0f); /* all padding: zeros, not NaN */
        }
    }
    free(rows);
    free(index);
    free(y);
    free(want);
    kernels_backend_destroy(be);
}

static void test_bag_matches_reference(void **state) {
    (void)state;
    const size_t shapes[][4] = {{1, 1, 1, 1},     {5, 3, 7, 4},  {13, 8, 2, 9},
                                {100, 17, 31, 8}, {3, 1, 64, 1}, {40, 129, 5, 33}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        for (int pool = KERNELS_POOL_SUM; pool <= KERNELS_POOL_MEAN; pool++) {
            check_bag(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], (kernels_pool)pool,
                      false);
            check_bag(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], (kernels_pool)pool,
                      true);
        }
    }
    /* no rows at all: every sample is padding */
    check_bag(0, 6, 4, 3, KERNELS_POOL_MEAN, true);
    check_bag(0, 6, 4, 3, KERNELS_POOL_SUM, true);
}

/* Known numbers: padding skipped, the mean over the rows that are there. */
static void test_bag_by_hand(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    const float rows[] = {1, 2, 10, 20, 100, 200};
    const int64_t index[] = {0, -1, 2, 2, /**/ -1, -1, -1, -1, /**/ 1, 0, -1, -1};
    float y[6];
    assert_int_equal(
        kernels_backend_embedding_bag(be, rows, 3, 2, index, 3, 4, KERNELS_POOL_SUM, y),
        PS_STATUS_OK);
    const float sum[] = {201, 402, 0, 0, 11, 22};
    assert_memory_equal(y, sum, sizeof(sum));
    assert_int_equal(
        kernels_backend_embedding_bag(be, rows, 3, 2, index, 3, 4, KERNELS_POOL_MEAN, y),
        PS_STATUS_OK);
    const float mean[] = {67, 134, 0, 0, 5.5f, 11};
    assert_memory_equal(y, mean, sizeof(mean));
    kernels_backend_destroy(be);
}

static void test_concat_matches_reference(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    const size_t shapes[][3] = {{1, 1, 1}, {7, 3, 5}, {33, 16, 1}, {2, 129, 64}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const size_t rows = shapes[i][0], ca = shapes[i][1], cb = shapes[i][2];
        float *a = malloc(rows * ca * sizeof(*a));
        float *b = malloc(rows * cb * sizeof(*b));
        float *y = malloc(rows * (ca + cb) * sizeof(*y));
        double *want = malloc(rows * (ca + cb) * sizeof(*want));
        assert_true(a && b && y && want);
        for (size_t k = 0; k < rows * ca; k++) {
            a[k] = frand();
        }
        for (size_t k = 0; k < rows * cb; k++) {
            b[k] = frand();
        }
        for (size_t r = 0; r < rows; r++) {
            for (size_t c = 0; c < ca + cb; c++) {
                want[r * (ca + cb) + c] = c < ca ? a[r * ca + c] : b[r * cb + c - ca];
            }
        }
        assert_int_equal(kernels_backend_concat(be, a, ca, b, cb, rows, y), PS_STATUS_OK);
        assert_close(y, want, rows * (ca + cb), "concat");
        free(a);
        free(b);
        free(y);
        free(want);
    }
    kernels_backend_destroy(be);
}

static void test_dispatch_checks(void **state) {
    (void)state;
    kernels_backend *be = cpu();
    const float rows[4] = {1, 2, 3, 4};
    int64_t index[2] = {0, 1};
    float y[4];
    const ps_status bad = PS_STATUS_INVALID_ARGUMENT;
    const kernels_pool sum = KERNELS_POOL_SUM;
    assert_int_equal(kernels_backend_embedding_bag(NULL, rows, 2, 2, index, 1, 2, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, NULL, 2, 2, index, 1, 2, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, NULL, 1, 2, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 2, sum, NULL), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 0, index, 1, 2, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 0, 2, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 0, sum, y), bad);
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 2, (kernels_pool)7, y),
                     bad);
    assert_int_equal(
        kernels_backend_embedding_bag(be, rows, 2, 2, index, 1u << 20, 1u << 12, sum, y),
        bad);     /* batch * len past KERNELS_MAX_DIM */
    index[1] = 2; /* past the last row */
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 2, sum, y), bad);
    index[1] = -2;
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 2, sum, y), bad);
    index[1] = -1;
    assert_int_equal(kernels_backend_embedding_bag(be, rows, 2, 2, index, 1, 2, sum, y),
                     PS_STATUS_OK);

    assert_int_equal(kernels_backend_concat(be, rows, 2, rows, 2, 1, y), PS_STATUS_OK);
    assert_int_equal(kernels_backend_concat(be, NULL, 2, rows, 2, 1, y), bad);
    assert_int_equal(kernels_backend_concat(be, rows, 0, rows, 2, 1, y), bad);
    assert_int_equal(kernels_backend_concat(be, rows, 2, rows, 2, 0, y), bad);
    assert_int_equal(kernels_backend_concat(be, rows, 1u << 30, rows, 1u << 30, 1, y), bad);
    kernels_backend_destroy(be);
}

static ps_status stub_dense(void *ctx, const float *x, size_t rows, size_t in, const float *w,
                            const float *bias, size_t out, kernels_activation act, float *y) {
    (void)ctx, (void)x, (void)rows, (void)in, (void)w, (void)bias, (void)out, (void)act, (void)y;
    return PS_STATUS_OK;
}

static ps_status stub_unary(void *ctx, const float *x, size_t rows, size_t cols, float *y) {
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

/* A backend without the optional ops answers UNIMPLEMENTED (after the checks). */
static void test_optional(void **state) {
    (void)state;
    const kernels_backend_iface iface = {.name = "stub",
                                         .dense = stub_dense,
                                         .softmax = stub_unary,
                                         .relu = stub_relu,
                                         .add = stub_add};
    kernels_backend *be = NULL;
    assert_int_equal(kernels_backend_create(&iface, NULL, &be), PS_STATUS_OK);
    const float rows[2] = {1, 2};
    const int64_t index[1] = {0};
    float y[4];
    assert_int_equal(
        kernels_backend_embedding_bag(be, rows, 1, 2, index, 1, 1, KERNELS_POOL_SUM, y),
        PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(kernels_backend_concat(be, rows, 2, rows, 2, 1, y), PS_STATUS_UNIMPLEMENTED);
    kernels_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bag_matches_reference),
        cmocka_unit_test(test_bag_by_hand),
        cmocka_unit_test(test_concat_matches_reference),
        cmocka_unit_test(test_dispatch_checks),
        cmocka_unit_test(test_optional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
