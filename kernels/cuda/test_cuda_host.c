/* test_cuda_host.c: the CUDA backend's host-side logic, on any machine (cmocka; no GPU,
 * no kernel launched): how CUDA, cuBLAS and cuDNN failures become statuses and
 * messages, which cuBLASLt epilogue each (activation, bias) gets, the alignment given
 * to cuBLASLt's heuristic, attention's chunking, and, the part most likely to go wrong
 * unseen, that the cuDNN descriptors built for every conv2d and pool2d shape ops.h
 * allows give exactly ops.h's output size (cuDNN's descriptor calls need no device).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cuda_internal.h"

static void test_status_maps(void **state) {
    (void)state;
    assert_int_equal(cuda_status_of_rt(cudaSuccess), PS_STATUS_OK);
    assert_int_equal(cuda_status_of_rt(cudaErrorMemoryAllocation), PS_STATUS_NO_MEMORY);
    assert_int_equal(cuda_status_of_rt(cudaErrorInsufficientDriver), PS_STATUS_UNAVAILABLE);
    assert_int_equal(cuda_status_of_rt(cudaErrorNoDevice), PS_STATUS_UNAVAILABLE);
    assert_int_equal(cuda_status_of_rt(cudaErrorIllegalAddress), PS_STATUS_INTERNAL);
    assert_int_equal(cuda_status_of_blas(CUBLAS_STATUS_SUCCESS), PS_STATUS_OK);
    assert_int_equal(cuda_status_of_blas(CUBLAS_STATUS_ALLOC_FAILED), PS_STATUS_NO_MEMORY);
    assert_int_equal(cuda_status_of_blas(CUBLAS_STATUS_NOT_SUPPORTED), PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(cuda_status_of_blas(CUBLAS_STATUS_EXECUTION_FAILED), PS_STATUS_INTERNAL);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_SUCCESS), PS_STATUS_OK);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_NOT_SUPPORTED_SHAPE), PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED),
                     PS_STATUS_NO_MEMORY);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_NOT_INITIALIZED), PS_STATUS_UNAVAILABLE);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED),
                     PS_STATUS_UNAVAILABLE);
    assert_int_equal(cuda_status_of_dnn(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH), PS_STATUS_INTERNAL);
}

static void test_messages(void **state) {
    (void)state;
    cuda_exec e;
    memset(&e, 0, sizeof(e));
    assert_int_equal(cuda_check_rt(&e, cudaSuccess, "x"), PS_STATUS_OK);
    assert_string_equal(e.err, "");
    assert_int_equal(cuda_check_rt(&e, cudaErrorMemoryAllocation, "cudaMalloc"),
                     PS_STATUS_NO_MEMORY);
    assert_non_null(strstr(e.err, "cudaMalloc: cudaErrorMemoryAllocation"));
    assert_int_equal(cuda_check_blas(&e, CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul"),
                     PS_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(e.err, "cublasLtMatmul: CUBLAS_STATUS_NOT_SUPPORTED"));
    assert_int_equal(cuda_check_dnn(&e, CUDNN_STATUS_NOT_SUPPORTED, "cudnnConvolutionForward"),
                     PS_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(e.err, "cudnnConvolutionForward: "));
    assert_int_equal(cuda_check_rt(NULL, cudaErrorIllegalAddress, "no exec"), PS_STATUS_INTERNAL);
}

static void test_ptr_align(void **state) {
    (void)state;
    assert_int_equal(cuda_ptr_align(NULL), 256);
    assert_int_equal(cuda_ptr_align((void *)(uintptr_t)0x7f0000001000), 256);
    assert_int_equal(cuda_ptr_align((void *)(uintptr_t)0x7f0000001004), 4);
    assert_int_equal(cuda_ptr_align((void *)(uintptr_t)0x7f0000001010), 16);
    assert_int_equal(cuda_ptr_align((void *)(uintptr_t)0x7f0000001080), 128);
}

static void test_dense_plan(void **state) {
    (void)state;
    static const struct {
        kernels_activation act;
        bool bias;
        cublasLtEpilogue_t epi;
        kernels_activation after;
    } cases[] = {
        {KERNELS_ACTIVATION_NONE, false, CUBLASLT_EPILOGUE_DEFAULT, KERNELS_ACTIVATION_NONE},
        {KERNELS_ACTIVATION_NONE, true, CUBLASLT_EPILOGUE_BIAS, KERNELS_ACTIVATION_NONE},
        {KERNELS_ACTIVATION_RELU, false, CUBLASLT_EPILOGUE_RELU, KERNELS_ACTIVATION_NONE},
        {KERNELS_ACTIVATION_RELU, true, CUBLASLT_EPILOGUE_RELU_BIAS, KERNELS_ACTIVATION_NONE},
        /* GELU never fuses: ops.h's erf form is not what cuBLASLt documents */
        {KERNELS_ACTIVATION_GELU, true, CUBLASLT_EPILOGUE_BIAS, KERNELS_ACTIVATION_GELU},
        {KERNELS_ACTIVATION_GELU, false, CUBLASLT_EPILOGUE_DEFAULT, KERNELS_ACTIVATION_GELU},
        {KERNELS_ACTIVATION_SIGMOID, true, CUBLASLT_EPILOGUE_BIAS, KERNELS_ACTIVATION_SIGMOID},
        {KERNELS_ACTIVATION_TANH, false, CUBLASLT_EPILOGUE_DEFAULT, KERNELS_ACTIVATION_TANH},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cublasLtEpilogue_t epi = (cublasLtEpilogue_t)-1;
        kernels_activation after = (kernels_activation)-1;
        cuda_dense_plan(cases[i].act, cases[i].bias, &epi, &after);
        assert_int_equal(epi, cases[i].epi);
        assert_int_equal(after, cases[i].after);
    }
}

static void test_attention_chunk(void **state) {
    (void)state;
    assert_int_equal(cuda_attention_chunk(5, KERNELS_ATTENTION_MAX_SEQ), 1);
    assert_int_equal(cuda_attention_chunk(3, 128), 3);
    assert_int_equal(cuda_attention_chunk(1000, 512),
                     CUDA_ATTENTION_SCRATCH_BYTES / (512 * 512 * sizeof(float)));
    for (size_t seq = 1; seq <= KERNELS_ATTENTION_MAX_SEQ; seq = seq * 3 + 1) {
        const size_t n = cuda_attention_chunk(1u << 20, seq);
        assert_true(n >= 1);
        assert_true(n == 1 || n * seq * seq * sizeof(float) <= CUDA_ATTENTION_SCRATCH_BYTES);
    }
}

static uint64_t rng_state = 7;
static size_t rand_in(size_t lo, size_t hi) { /* splitmix64, inclusive range */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return lo + (size_t)((z ^ (z >> 31)) % (hi - lo + 1));
}

static void check_conv(const kernels_conv2d_shape *c) {
    size_t p, q;
    if (kernels_conv2d_out_size(c, &p, &q) != PS_STATUS_OK) {
        return; /* not a shape ops.h allows */
    }
    cuda_conv_desc d;
    char err[256] = "";
    const ps_status st = cuda_conv_desc_create(c, &d, err, sizeof(err));
    if (st != PS_STATUS_OK) {
        fail_msg("conv2d N%zu C%zu %zux%zu K%zu k%zux%zu s%zu,%zu p%zu,%zu d%zu,%zu g%zu: %s",
                 c->batch, c->in_channels, c->in_h, c->in_w, c->out_channels, c->kernel_h,
                 c->kernel_w, c->stride_h, c->stride_w, c->pad_h, c->pad_w, c->dilation_h,
                 c->dilation_w, c->groups, err);
    }
    assert_int_equal(d.out_h, p);
    assert_int_equal(d.out_w, q);
    cuda_conv_desc_destroy(&d);
    assert_null(d.x);
}

static void test_conv_shapes(void **state) {
    (void)state;
    static const kernels_conv2d_shape edges[] = {
        /* N  C  H  W  K  R  S  sh sw ph pw dh dw g */
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {2, 3, 5, 7, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {1, 3, 9, 9, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1},
        {1, 4, 8, 11, 4, 3, 2, 1, 3, 2, 0, 2, 1, 2},
        {2, 6, 7, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},
        {1, 2, 3, 3, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1},
        {8, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {1, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        check_conv(&edges[i]);
    }
    for (int t = 0; t < 500; t++) {
        const size_t g = rand_in(1, 4);
        const kernels_conv2d_shape c = {
            rand_in(1, 3),     g * rand_in(1, 3),
            rand_in(1, 20),    rand_in(1, 20),
            g * rand_in(1, 3), rand_in(1, 5),
            rand_in(1, 5),     rand_in(1, 4),
            rand_in(1, 4),     rand_in(0, 3),
            rand_in(0, 3),     rand_in(1, 3),
            rand_in(1, 3),     g,
        };
        check_conv(&c);
    }
}

static void test_pool_shapes(void **state) {
    (void)state;
    static const kernels_pool2d_kind kinds[] = {KERNELS_POOL2D_MAX, KERNELS_POOL2D_AVG,
                                                KERNELS_POOL2D_AVG_EXCLUDE_PAD};
    for (int t = 0; t < 500; t++) {
        kernels_pool2d_shape c = {
            .batch = rand_in(1, 3),
            .channels = rand_in(1, 4),
            .in_h = rand_in(1, 20),
            .in_w = rand_in(1, 20),
            .kernel_h = rand_in(1, 5),
            .kernel_w = rand_in(1, 5),
            .stride_h = rand_in(1, 4),
            .stride_w = rand_in(1, 4),
        };
        c.pad_h = rand_in(0, c.kernel_h / 2);
        c.pad_w = rand_in(0, c.kernel_w / 2);
        size_t p, q;
        if (kernels_pool2d_out_size(&c, &p, &q) != PS_STATUS_OK) {
            continue;
        }
        cuda_pool_desc d;
        char err[256] = "";
        const ps_status st = cuda_pool_desc_create(&c, kinds[t % 3], &d, err, sizeof(err));
        if (st != PS_STATUS_OK) {
            fail_msg("pool2d %zux%zu k%zux%zu s%zu,%zu p%zu,%zu: %s", c.in_h, c.in_w, c.kernel_h,
                     c.kernel_w, c.stride_h, c.stride_w, c.pad_h, c.pad_w, err);
        }
        assert_int_equal(d.out_h, p);
        assert_int_equal(d.out_w, q);
        cuda_pool_desc_destroy(&d);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_maps),     cmocka_unit_test(test_messages),
        cmocka_unit_test(test_ptr_align),       cmocka_unit_test(test_dense_plan),
        cmocka_unit_test(test_attention_chunk), cmocka_unit_test(test_conv_shapes),
        cmocka_unit_test(test_pool_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
