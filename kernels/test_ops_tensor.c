/* test_ops_tensor.c: embedding gather and bag, add, scale, concat, reshape, transpose,
 * buffers and streams against double references (test_ops.h).
 *
 * Tolerances: data movement (gather, concat, reshape, transpose, buffers) is exact
 * (atol 0, rtol 0); add and scale atol 1e-6, rtol 1e-6 (one rounding); embedding bag
 * atol 1e-5, rtol 1e-5 (sums of up to 20 rows).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_ops.h"

/* ------------------------------------------------------------------------------------ */
/* embedding gather and bag */

static int64_t *rand_ids(ops_env *env, size_t n, size_t n_rows) {
    int64_t *ids = malloc(n * sizeof(*ids));
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++) { /* about one in five is padding */
        ids[i] = n_rows == 0 || ops_rand_size(env, 0, 4) == 0
                     ? -1
                     : (int64_t)ops_rand_size(env, 0, n_rows - 1);
    }
    return ids;
}

static void check_embedding(ops_env *env, size_t n_rows, size_t dim, size_t batch, size_t len,
                            int bag, kernels_pool pool) {
    float *table = n_rows > 0 ? ops_host_rand(env, n_rows * dim, -1, 1) : NULL;
    int64_t *ids = rand_ids(env, batch * len, n_rows);
    const size_t n_out = bag ? batch * dim : batch * len * dim;
    double *want = calloc(n_out, sizeof(*want));
    assert_non_null(want);
    for (size_t b = 0; b < batch; b++) {
        size_t count = 0;
        for (size_t j = 0; j < len; j++) {
            const int64_t r = ids[b * len + j];
            for (size_t d = 0; r >= 0 && d < dim; d++) {
                want[(bag ? b : b * len + j) * dim + d] += table[(size_t)r * dim + d];
            }
            count += r >= 0;
        }
        for (size_t d = 0; bag && pool == KERNELS_POOL_MEAN && count > 0 && d < dim; d++) {
            want[b * dim + d] /= (double)count;
        }
    }
    float *dt = n_rows > 0 ? ops_dev_put(env, table, n_rows * dim) : NULL;
    float *dy = ops_dev_nan(env, n_out);
    char what[96];
    snprintf(what, sizeof(what), "embedding %s rows=%zu dim=%zu %zux%zu pool=%d",
             bag ? "bag" : "gather", n_rows, dim, batch, len, (int)pool);
    if (bag) {
        assert_int_equal(
            kernels_op_embedding_bag(env->s, dt, n_rows, dim, ids, batch, len, pool, dy),
            PS_STATUS_OK);
        ops_expect_dev(env, what, dy, want, n_out, 1e-5, 1e-5);
    } else {
        assert_int_equal(kernels_op_embedding_gather(env->s, dt, n_rows, dim, ids, batch * len, dy),
                         PS_STATUS_OK);
        ops_expect_dev(env, what, dy, want, n_out, 0, 0);
    }
    ops_dev_free(env, dy), ops_dev_free(env, dt);
    free(want), free(ids), free(table);
}

static void test_embedding(void **state) {
    ops_env *env = ops_env_of(state);
    for (int bag = 0; bag < 2; bag++) {
        check_embedding(env, 1, 1, 1, 1, bag, KERNELS_POOL_SUM);
        check_embedding(env, 0, 3, 2, 4, bag, KERNELS_POOL_MEAN);       /* no rows: all padding */
        check_embedding(env, 30522, 384, 2, 9, bag, KERNELS_POOL_MEAN); /* BERT's vocabulary */
        for (int t = 0; t < 8; t++) {
            check_embedding(env, ops_rand_size(env, 1, 200), ops_rand_size(env, 1, 70),
                            ops_rand_size(env, 1, 9), ops_rand_size(env, 1, 20), bag,
                            t % 2 ? KERNELS_POOL_MEAN : KERNELS_POOL_SUM);
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* add, scale, concat */

static void test_add_scale_concat(void **state) {
    ops_env *env = ops_env_of(state);
    for (int t = 0; t < 6; t++) {
        const size_t rows = t == 0 ? 1 : ops_rand_size(env, 1, 30);
        const size_t ca = t == 0 ? 1 : ops_rand_size(env, 1, 70);
        const size_t cb = t == 0 ? 1 : ops_rand_size(env, 1, 70);
        float *a = ops_host_rand(env, rows * ca, -1, 1), *b = ops_host_rand(env, rows * cb, -1, 1);
        float *s = ops_host_rand(env, ca, -2, 2), *sh = ops_host_rand(env, ca, -1, 1);
        float *a2 = ops_host_rand(env, rows * ca, -1, 1);
        double *want = malloc(rows * (ca + cb) * sizeof(*want));
        assert_non_null(want);
        float *da = ops_dev_put(env, a, rows * ca), *db = ops_dev_put(env, b, rows * cb);
        float *da2 = ops_dev_put(env, a2, rows * ca), *ds = ops_dev_put(env, s, ca);
        float *dsh = ops_dev_put(env, sh, ca), *dy = ops_dev_nan(env, rows * (ca + cb));

        for (size_t i = 0; i < rows * ca; i++) {
            want[i] = (double)a[i] + a2[i];
        }
        assert_int_equal(kernels_op_add(env->s, da, da2, rows * ca, dy), PS_STATUS_OK);
        ops_expect_dev(env, "add", dy, want, rows * ca, 1e-6, 1e-6);

        for (int variant = 0; variant < 3; variant++) {
            const int use_s = variant != 2, use_sh = variant != 1;
            for (size_t i = 0; i < rows * ca; i++) {
                want[i] = (double)a[i] * (use_s ? s[i % ca] : 1.0) + (use_sh ? sh[i % ca] : 0.0);
            }
            assert_int_equal(
                kernels_op_scale(env->s, da, rows, ca, use_s ? ds : NULL, use_sh ? dsh : NULL, dy),
                PS_STATUS_OK);
            ops_expect_dev(env, "scale", dy, want, rows * ca, 1e-6, 1e-6);
        }

        for (size_t r = 0; r < rows; r++) {
            for (size_t c = 0; c < ca + cb; c++) {
                want[r * (ca + cb) + c] = c < ca ? a[r * ca + c] : b[r * cb + c - ca];
            }
        }
        assert_int_equal(kernels_op_concat(env->s, da, ca, db, cb, rows, dy), PS_STATUS_OK);
        ops_expect_dev(env, "concat", dy, want, rows * (ca + cb), 0, 0);

        ops_dev_free(env, dy), ops_dev_free(env, dsh), ops_dev_free(env, ds);
        ops_dev_free(env, da2), ops_dev_free(env, db), ops_dev_free(env, da);
        free(want), free(a2), free(sh), free(s), free(b), free(a);
    }
}

/* ------------------------------------------------------------------------------------ */
/* reshape, transpose */

static void check_transpose(ops_env *env, const size_t *dims, size_t ndims, const size_t *perm) {
    size_t n = 1, in_stride[KERNELS_MAX_NDIM], out_dims[KERNELS_MAX_NDIM], idx[KERNELS_MAX_NDIM];
    for (size_t i = ndims; i-- > 0;) {
        in_stride[i] = n;
        n *= dims[i];
    }
    for (size_t i = 0; i < ndims; i++) {
        out_dims[i] = dims[perm[i]];
    }
    float *x = ops_host_rand(env, n, -1, 1);
    double *want = malloc(n * sizeof(*want));
    assert_non_null(want);
    for (size_t o = 0; o < n; o++) { /* y's flat index o -> its multi-index -> x's offset */
        size_t rest = o, off = 0;
        for (size_t i = ndims; i-- > 0;) {
            idx[i] = rest % out_dims[i];
            rest /= out_dims[i];
            off += idx[i] * in_stride[perm[i]];
        }
        want[o] = x[off];
    }
    float *dx = ops_dev_put(env, x, n), *dy = ops_dev_nan(env, n);
    char what[64];
    snprintf(what, sizeof(what), "transpose ndims=%zu n=%zu", ndims, n);
    assert_int_equal(kernels_op_transpose(env->s, dx, dims, ndims, perm, dy), PS_STATUS_OK);
    ops_expect_dev(env, what, dy, want, n, 0, 0);
    /* reshape: a copy with a new shape, or nothing in place */
    const size_t flat[1] = {n};
    for (size_t i = 0; i < n; i++) {
        want[i] = x[i];
    }
    assert_int_equal(kernels_op_reshape(env->s, dx, dims, ndims, flat, 1, dy), PS_STATUS_OK);
    ops_expect_dev(env, "reshape", dy, want, n, 0, 0);
    assert_int_equal(kernels_op_reshape(env->s, dx, flat, 1, dims, ndims, dx), PS_STATUS_OK);
    ops_expect_dev(env, "reshape in place", dx, want, n, 0, 0);
    ops_dev_free(env, dy), ops_dev_free(env, dx);
    free(want), free(x);
}

static void test_transpose_reshape(void **state) {
    ops_env *env = ops_env_of(state);
    const size_t one[1] = {1}, p1[1] = {0};
    check_transpose(env, one, 1, p1);
    const size_t mat[2] = {7, 13}, p2[2] = {1, 0};
    check_transpose(env, mat, 2, p2);
    const size_t bshd[4] = {2, 9, 12, 32}, p4[4] = {0, 2, 1, 3}; /* [b,s,h,d] -> [b,h,s,d] */
    check_transpose(env, bshd, 4, p4);
    for (int t = 0; t < 10; t++) {
        const size_t ndims = ops_rand_size(env, 1, KERNELS_MAX_NDIM);
        size_t dims[KERNELS_MAX_NDIM], perm[KERNELS_MAX_NDIM];
        for (size_t i = 0; i < ndims; i++) {
            dims[i] = ops_rand_size(env, 1, ndims > 4 ? 3 : 9);
            perm[i] = i;
        }
        for (size_t i = ndims; i-- > 1;) { /* Fisher-Yates */
            const size_t j = ops_rand_size(env, 0, i), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        check_transpose(env, dims, ndims, perm);
    }
}

/* ------------------------------------------------------------------------------------ */
/* buffers and streams */

static void test_buffers_and_streams(void **state) {
    ops_env *env = ops_env_of(state);
    const size_t n = 1000;
    float *x = ops_host_rand(env, n, -1, 1);
    double *want = malloc(n * sizeof(*want));
    assert_non_null(want);
    for (size_t i = 0; i < n; i++) {
        want[i] = x[i];
    }
    /* Round trip through a buffer, at an offset, on the default stream and a new one. */
    kernels_stream *def = kernels_backend_stream(env->be), *s2 = NULL;
    assert_non_null(def);
    assert_int_equal(kernels_stream_create(env->be, &s2), PS_STATUS_OK);
    void *buf = NULL;
    assert_int_equal(kernels_buffer_alloc(env->be, (n + 3) * sizeof(float), &buf), PS_STATUS_OK);
    assert_int_equal((uintptr_t)buf % 64, 0);
    float *dev = (float *)buf + 3;
    assert_int_equal(kernels_buffer_upload(def, dev, x, n * sizeof(float)), PS_STATUS_OK);
    float *got = malloc(n * sizeof(*got));
    assert_non_null(got);
    assert_int_equal(kernels_buffer_download(s2, got, dev, n * sizeof(float)), PS_STATUS_OK);
    ops_expect_close("buffer round trip", got, want, n, 0, 0);
    assert_int_equal(kernels_op_activation(s2, KERNELS_ACTIVATION_NONE, dev, n, dev), PS_STATUS_OK);
    assert_int_equal(kernels_stream_sync(s2), PS_STATUS_OK);
    assert_int_equal(kernels_stream_sync(def), PS_STATUS_OK);
    ops_expect_dev(env, "identity on a second stream", dev, want, n, 0, 0);
    kernels_stream_destroy(def); /* the default stream: not destroyed */
    assert_int_equal(kernels_stream_sync(def), PS_STATUS_OK);
    kernels_stream_destroy(s2);
    kernels_stream_destroy(NULL);
    kernels_buffer_free(env->be, buf);
    kernels_buffer_free(env->be, NULL);
    free(got), free(want), free(x);
}

const struct CMUnitTest ops_tensor_tests[] = {
    cmocka_unit_test(test_embedding),
    cmocka_unit_test(test_add_scale_concat),
    cmocka_unit_test(test_transpose_reshape),
    cmocka_unit_test(test_buffers_and_streams),
};
const size_t ops_tensor_tests_n = sizeof(ops_tensor_tests) / sizeof(ops_tensor_tests[0]);
