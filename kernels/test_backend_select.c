/* test_backend_select.c: kernels_backend_select (cmocka), the words of --device and
 * --precision. The GPU module is replaced by the loader's test modules: "nodev" (loads,
 * finds no device: UNAVAILABLE, as the CUDA module on a machine without a GPU),
 * "cpumod" (loads and runs, FP32 only) and "nosuch" (not built). Modules come from
 * $PS_KERNELS_MODULE_DIR.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"

/* Selects with these words; the status, and the backend (destroyed by the caller). */
static ps_status select_with(const char *device, const char *precision, const char *gpu,
                             kernels_backend **ret, char *err, size_t err_len) {
    const kernels_backend_select_opts opts = {
        .device = device,
        .precision = precision,
        .module_dir = getenv("PS_KERNELS_MODULE_DIR"),
        .gpu_module = gpu,
    };
    return kernels_backend_select(&opts, ret, err, err_len);
}

static void test_cpu(void **state) {
    (void)state;
    kernels_backend *be = NULL;
    char err[256] = "";
    assert_int_equal(select_with(NULL, NULL, NULL, &be, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpu");
    assert_int_equal(kernels_backend_precision(be), KERNELS_PRECISION_FP32);
    assert_string_equal(kernels_precision_name(kernels_backend_precision(be)), "fp32");
    assert_string_equal(kernels_precision_name(KERNELS_PRECISION_BF16), "bf16");
    /* The CPU backend words no errors: "" (never NULL), also for no stream. */
    assert_string_equal(kernels_stream_last_error(kernels_backend_stream(be)), "");
    assert_string_equal(kernels_stream_last_error(NULL), "");
    kernels_backend_destroy(be);
    assert_int_equal(select_with("cpu", "fp32", NULL, &be, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpu");
    kernels_backend_destroy(be);
}

static void test_bad_words(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"gpu", "fp32"}, {"CPU", "fp32"},  {"", "fp32"},
        {"cpu", "fp16"}, {"auto", "BF16"}, {"cpu", "bf16"}, /* the CPU computes in FP32 only */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kernels_backend *be = (kernels_backend *)cases; /* must stay untouched */
        char err[256] = "";
        assert_int_equal(select_with(cases[i][0], cases[i][1], "nodev", &be, err, sizeof(err)),
                         PS_STATUS_INVALID_ARGUMENT);
        assert_ptr_equal(be, (kernels_backend *)cases);
        assert_true(strlen(err) > 0);
    }
    char err[256] = "";
    kernels_backend *be = NULL;
    assert_int_equal(kernels_backend_select(NULL, &be, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    const kernels_backend_select_opts opts = {.device = "cpu"};
    assert_int_equal(kernels_backend_select(&opts, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
}

static void test_cuda_is_strict(void **state) {
    (void)state;
    kernels_backend *be = NULL;
    char err[512] = "";
    assert_int_equal(select_with("cuda", NULL, "nodev", &be, err, sizeof(err)),
                     PS_STATUS_UNAVAILABLE);
    assert_non_null(strstr(err, "nodev"));
    assert_null(be);
    assert_int_equal(select_with("cuda", NULL, "nosuch", &be, err, sizeof(err)),
                     PS_STATUS_NOT_FOUND);
    assert_null(be);
    assert_int_equal(select_with("cuda", NULL, "cpumod", &be, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpumod");
    kernels_backend_destroy(be);
}

static void test_auto_falls_back(void **state) {
    (void)state;
    static const char *const missing[] = {"nodev", "nosuch"};
    for (size_t i = 0; i < 2; i++) {
        for (int bf16 = 0; bf16 < 2; bf16++) {
            kernels_backend *be = NULL;
            char err[256] = "";
            assert_int_equal(
                select_with("auto", bf16 ? "bf16" : "fp32", missing[i], &be, err, sizeof(err)),
                PS_STATUS_OK);
            assert_string_equal(kernels_backend_name(be), "cpu");
            assert_int_equal(kernels_backend_precision(be), KERNELS_PRECISION_FP32);
            kernels_backend_destroy(be);
        }
    }
}

static void test_auto_takes_the_gpu_module(void **state) {
    (void)state;
    kernels_backend *be = NULL;
    char err[256] = "";
    assert_int_equal(select_with("auto", "fp32", "cpumod", &be, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpumod");
    kernels_backend_destroy(be);
    /* A module that loads but lacks BF16 is an error, not a silent FP32 backend. */
    be = NULL;
    assert_int_equal(select_with("auto", "bf16", "cpumod", &be, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "fp32 only"));
    assert_null(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu),
        cmocka_unit_test(test_bad_words),
        cmocka_unit_test(test_cuda_is_strict),
        cmocka_unit_test(test_auto_falls_back),
        cmocka_unit_test(test_auto_takes_the_gpu_module),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
