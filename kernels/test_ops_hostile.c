/* test_ops_hostile.c: every dispatcher refuses bad arguments with INVALID_ARGUMENT
 * before a backend sees them: NULL stream or data, zero sizes, sizes past the limits,
 * products that overflow size_t or pass KERNELS_MAX_DIM, bad enums, bad ids, shapes
 * whose kernel does not fit. The pointers given are small host arrays: the checks
 * must refuse before anything is read, on any backend (test_ops.h).
 */
#include <stdbool.h>
#include <math.h>
#include <stdint.h>

#include "test_ops.h"

#define BAD PS_STATUS_INVALID_ARGUMENT
#define BIG ((size_t)1 << 33)     /* past KERNELS_MAX_DIM alone */
#define HALF ((size_t)1 << 16)    /* HALF * HALF passes KERNELS_MAX_DIM */
#define HUGE_N (SIZE_MAX / 2 + 3) /* squares and doubles overflow size_t */

static float v[64];
static const int64_t ids[4] = {0, 1, -1, 0};

static void test_dense_image_hostile(void **state) {
    kernels_stream *s = ops_env_of(state)->s;
    const bool host = kernels_backend_host_memory(ops_env_of(state)->be);
    const kernels_activation none = KERNELS_ACTIVATION_NONE;
    assert_int_equal(kernels_op_dense(NULL, v, 1, 1, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, NULL, 1, 1, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, 1, NULL, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, 1, v, NULL, 1, none, NULL), BAD);
    assert_int_equal(kernels_op_dense(s, v, 0, 1, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, 0, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, 1, v, NULL, 0, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, BIG, 1, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, HALF, HALF, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, HALF, v, NULL, HALF, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, HUGE_N, HUGE_N, v, NULL, 1, none, v), BAD);
    assert_int_equal(kernels_op_dense(s, v, 1, 1, v, NULL, 1, (kernels_activation)99, v), BAD);

    const kernels_conv2d_shape ok = {1, 2, 4, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    size_t p = 77, q = 77;
    assert_int_equal(kernels_conv2d_out_size(&ok, &p, &q), PS_STATUS_OK);
    assert_int_equal(p, 4), assert_int_equal(q, 4);
    kernels_conv2d_shape c = ok;
    assert_int_equal(kernels_op_conv2d(s, NULL, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    assert_int_equal(kernels_op_conv2d(s, &c, NULL, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, (kernels_activation)-1, v), BAD);
    size_t *fields[] = {&c.batch,        &c.in_channels, &c.in_h,       &c.in_w,
                        &c.out_channels, &c.kernel_h,    &c.kernel_w,   &c.stride_h,
                        &c.stride_w,     &c.dilation_h,  &c.dilation_w, &c.groups};
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        const size_t bad_values[] = {0, BIG, HUGE_N, SIZE_MAX};
        for (size_t b = 0; b < 4; b++) {
            c = ok;
            *fields[f] = bad_values[b];
            assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
            assert_int_equal(kernels_conv2d_out_size(&c, &p, &q), BAD);
        }
    }
    c = ok, c.pad_h = SIZE_MAX; /* overflows in + 2 pad */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    c = ok, c.kernel_h = 7; /* does not fit the padded image (4 + 2) */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    c = ok, c.dilation_w = 3; /* a dilated 3-tap kernel spans 7 */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    c = ok, c.groups = 2, c.out_channels = 3; /* groups must divide K */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    c = ok, c.batch = HALF, c.in_h = HALF, c.in_w = 2; /* x count passes the limit */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    c = ok, c.in_channels = HALF, c.out_channels = HALF; /* w count passes the limit */
    assert_int_equal(kernels_op_conv2d(s, &c, v, v, NULL, KERNELS_ACTIVATION_NONE, v), BAD);
    assert_int_equal(p, 4); /* untouched on failure */

    const kernels_pool2d_shape pok = {1, 1, 4, 4, 2, 2, 2, 2, 1, 1};
    kernels_pool2d_shape pc = pok;
    if (host) {
        assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), PS_STATUS_OK);
    }
    assert_int_equal(kernels_op_pool2d(s, &pc, (kernels_pool2d_kind)9, v, v), BAD);
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_AVG, NULL, v), BAD);
    assert_int_equal(kernels_op_pool2d(s, NULL, KERNELS_POOL2D_AVG, v, v), BAD);
    pc = pok, pc.pad_h = 2; /* more than kernel / 2 */
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), BAD);
    pc = pok, pc.stride_w = 0;
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), BAD);
    pc = pok, pc.channels = 0;
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), BAD);
    pc = pok, pc.batch = HALF, pc.channels = HALF;
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), BAD);
    pc = pok, pc.kernel_h = 9, pc.pad_h = 0;
    assert_int_equal(kernels_op_pool2d(s, &pc, KERNELS_POOL2D_MAX, v, v), BAD);
}

static void test_seq_hostile(void **state) {
    kernels_stream *s = ops_env_of(state)->s;
    const bool host = kernels_backend_host_memory(ops_env_of(state)->be);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_GELU, v, 0, v), BAD);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_GELU, NULL, 1, v), BAD);
    assert_int_equal(kernels_op_activation(s, (kernels_activation)5, v, 1, v), BAD);
    assert_int_equal(kernels_op_activation(NULL, KERNELS_ACTIVATION_RELU, v, 1, v), BAD);
    assert_int_equal(kernels_op_softmax(s, v, 0, 1, v), BAD);
    assert_int_equal(kernels_op_softmax(s, v, HALF, HALF, v), BAD);
    assert_int_equal(kernels_op_softmax(s, v, HUGE_N, 4, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, v, 1, 1, NULL, NULL, 0.0f, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, v, 1, 1, NULL, NULL, -1e-5f, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, v, 1, 1, NULL, NULL, NAN, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, v, 1, 1, NULL, NULL, INFINITY, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, v, HALF, HALF, NULL, NULL, 1e-5f, v), BAD);
    assert_int_equal(kernels_op_layernorm(s, NULL, 1, 1, NULL, NULL, 1e-5f, v), BAD);

    const kernels_attention_shape ok = {1, 2, 2, 2, 4};
    kernels_attention_shape a = ok;
    if (host) {
        assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), PS_STATUS_OK);
    }
    assert_int_equal(kernels_op_attention(s, NULL, v, v, v, NULL, v), BAD);
    assert_int_equal(kernels_op_attention(s, &a, v, NULL, v, NULL, v), BAD);
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, NULL), BAD);
    a = ok, a.ld = 3; /* shorter than heads * head_dim */
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), BAD);
    a = ok, a.seq = KERNELS_ATTENTION_MAX_SEQ + 1, a.batch = 1;
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), BAD);
    a = ok, a.heads = 0;
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), BAD);
    a = ok, a.heads = HUGE_N, a.head_dim = HUGE_N, a.ld = SIZE_MAX;
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), BAD);
    a = ok, a.batch = HALF, a.seq = 512, a.ld = 384, a.heads = 12, a.head_dim = 32;
    assert_int_equal(kernels_op_attention(s, &a, v, v, v, NULL, v), BAD);
    assert_int_equal(kernels_op_mean_pool(s, v, 1, 0, 1, NULL, v), BAD);
    assert_int_equal(kernels_op_mean_pool(s, v, HALF, HALF, 1, NULL, v), BAD);
    assert_int_equal(kernels_op_mean_pool(s, v, 1, 1, 1, NULL, NULL), BAD);
    assert_int_equal(kernels_op_l2_normalize(NULL, v, 1, 1, 1e-12f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, NULL, 1, 1, 1e-12f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 1, 1, 1e-12f, NULL), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 0, 1, 1e-12f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 1, 0, 1e-12f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, HALF, HALF, 1e-12f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 1, 1, 0.0f, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 1, 1, NAN, v), BAD);
    assert_int_equal(kernels_op_l2_normalize(s, v, 1, 1, INFINITY, v), BAD);
}

static void test_tensor_hostile(void **state) {
    kernels_stream *s = ops_env_of(state)->s;
    const bool host = kernels_backend_host_memory(ops_env_of(state)->be);
    const kernels_pool sum = KERNELS_POOL_SUM;
    if (host) { /* the arguments pass: a device backend would read host memory */
        assert_int_equal(kernels_op_embedding_gather(s, v, 2, 2, ids, 4, v), PS_STATUS_OK);
        assert_int_equal(kernels_op_embedding_bag(s, v, 2, 2, ids, 2, 2, sum, v), PS_STATUS_OK);
        assert_int_equal(kernels_op_transpose(s, v, (size_t[]){2, 3}, 2, (size_t[]){1, 0}, v + 8),
                         PS_STATUS_OK);
    }
    assert_int_equal(kernels_op_embedding_gather(s, v, 1, 2, ids, 4, v), BAD); /* id 1 >= 1 */
    assert_int_equal(kernels_op_embedding_gather(s, NULL, 2, 2, ids, 4, v), BAD);
    assert_int_equal(kernels_op_embedding_gather(s, v, 2, 2, NULL, 4, v), BAD);
    assert_int_equal(kernels_op_embedding_gather(s, v, 2, 0, ids, 4, v), BAD);
    assert_int_equal(kernels_op_embedding_gather(s, v, 2, 2, ids, 0, v), BAD);
    assert_int_equal(kernels_op_embedding_gather(s, v, BIG, 2, ids, 4, v), BAD);
    assert_int_equal(kernels_op_embedding_gather(s, v, 2, HALF, ids, HALF, v), BAD);
    const int64_t below[1] = {-2};
    assert_int_equal(kernels_op_embedding_gather(s, v, 2, 2, below, 1, v), BAD);
    assert_int_equal(kernels_op_embedding_bag(s, v, 2, 2, ids, 2, 2, (kernels_pool)3, v), BAD);
    assert_int_equal(kernels_op_embedding_bag(s, v, 2, 2, ids, HALF, HALF, sum, v), BAD);
    assert_int_equal(kernels_op_embedding_bag(s, v, HUGE_N, HUGE_N, ids, 1, 1, sum, v), BAD);
    assert_int_equal(kernels_op_add(s, v, v, 0, v), BAD);
    assert_int_equal(kernels_op_add(s, v, v, BIG, v), BAD);
    assert_int_equal(kernels_op_add(s, v, NULL, 1, v), BAD);
    assert_int_equal(kernels_op_scale(s, v, HALF, HALF, NULL, NULL, v), BAD);
    assert_int_equal(kernels_op_scale(s, v, 1, 0, NULL, NULL, v), BAD);
    assert_int_equal(kernels_op_concat(s, v, KERNELS_MAX_DIM, v, 1, 1, v), BAD);
    assert_int_equal(kernels_op_concat(s, v, HALF, v, HALF, HALF, v), BAD);
    assert_int_equal(kernels_op_concat(s, v, 1, v, 1, 0, v), BAD);

    const size_t d2[2] = {2, 3}, d1[1] = {6}, d1bad[1] = {5}, dzero[2] = {2, 0};
    const size_t dbig[3] = {HALF, HALF, 2}, p2[2] = {1, 0}, pdup[2] = {1, 1}, pout[2] = {0, 2};
    assert_int_equal(kernels_op_reshape(s, v, d2, 2, d1, 1, v), PS_STATUS_OK);
    assert_int_equal(kernels_op_reshape(s, v, d2, 2, d1bad, 1, v + 8), BAD);
    assert_int_equal(kernels_op_reshape(s, v, dzero, 2, d1, 1, v + 8), BAD);
    assert_int_equal(kernels_op_reshape(s, v, d2, 0, d1, 1, v + 8), BAD);
    assert_int_equal(kernels_op_reshape(s, v, d2, KERNELS_MAX_NDIM + 1, d1, 1, v + 8), BAD);
    assert_int_equal(kernels_op_reshape(s, v, NULL, 2, d1, 1, v + 8), BAD);
    assert_int_equal(kernels_op_reshape(s, v, dbig, 3, d1, 1, v + 8), BAD);
    assert_int_equal(kernels_op_transpose(s, v, d2, 2, pdup, v + 8), BAD);
    assert_int_equal(kernels_op_transpose(s, v, d2, 2, pout, v + 8), BAD);
    assert_int_equal(kernels_op_transpose(s, v, d2, 2, p2, v), BAD); /* in place */
    assert_int_equal(kernels_op_transpose(s, v, d2, 2, NULL, v + 8), BAD);
    assert_int_equal(kernels_op_transpose(s, v, dbig, 3, p2, v + 8), BAD);
    assert_int_equal(kernels_op_transpose(s, v, d2, 0, p2, v + 8), BAD);
}

static void test_buffer_hostile(void **state) {
    ops_env *env = ops_env_of(state);
    void *p = (void *)v;
    assert_int_equal(kernels_buffer_alloc(env->be, 0, &p), BAD);
    assert_int_equal(kernels_buffer_alloc(env->be, KERNELS_MAX_BUFFER_BYTES + 1, &p), BAD);
    assert_int_equal(kernels_buffer_alloc(env->be, SIZE_MAX, &p), BAD);
    assert_int_equal(kernels_buffer_alloc(NULL, 4, &p), BAD);
    assert_int_equal(kernels_buffer_alloc(env->be, 4, NULL), BAD);
    assert_ptr_equal(p, v); /* untouched on failure */
    assert_int_equal(kernels_buffer_upload(env->s, NULL, v, 4), BAD);
    assert_int_equal(kernels_buffer_upload(env->s, v, NULL, 4), BAD);
    assert_int_equal(kernels_buffer_upload(NULL, v, v, 4), BAD);
    assert_int_equal(kernels_buffer_upload(env->s, v, v, 0), BAD);
    assert_int_equal(kernels_buffer_download(env->s, v, v, SIZE_MAX), BAD);
    assert_int_equal(kernels_buffer_download(env->s, NULL, v, 4), BAD);
    assert_int_equal(kernels_stream_sync(NULL), BAD);
    assert_int_equal(kernels_stream_create(NULL, NULL), BAD);
    assert_null(kernels_backend_stream(NULL));
    assert_false(kernels_backend_host_memory(NULL));
}

const struct CMUnitTest ops_hostile_tests[] = {
    cmocka_unit_test(test_dense_image_hostile),
    cmocka_unit_test(test_seq_hostile),
    cmocka_unit_test(test_tensor_hostile),
    cmocka_unit_test(test_buffer_hostile),
};
const size_t ops_hostile_tests_n = sizeof(ops_hostile_tests) / sizeof(ops_hostile_tests[0]);
