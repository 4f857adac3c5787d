/* test_backend_open.c: kernels_backend_open (cmocka): the built-in CPU backend by
 * name, names refused before they become paths, a missing module (NOT_FOUND, as for
 * "cuda" in a build without it), a module that cannot run here (UNAVAILABLE, as the
 * CUDA module without a GPU), and a module that loads and computes (the CPU iface
 * wrapped by test_module_cpu.c). Modules come from $PS_KERNELS_MODULE_DIR. Also a
 * device-memory backend (stubs): what create requires of it, and the host executor
 * (model_create) refusing it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "model.h"

static kernels_backend_open_opts module_opts(void) {
    const char *dir = getenv("PS_KERNELS_MODULE_DIR");
    assert_non_null(dir);
    return (kernels_backend_open_opts){.module_dir = dir};
}

static void test_cpu_by_name(void **state) {
    (void)state;
    kernels_backend *be = NULL;
    assert_int_equal(kernels_backend_open("cpu", NULL, &be, NULL, 0), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpu");
    assert_true(kernels_backend_host_memory(be));
    kernels_backend_destroy(be);
}

static void test_bad_names(void **state) {
    (void)state;
    const kernels_backend_open_opts opts = module_opts();
    static const char *const bad[] = {
        "", "../cpu", "a/b", "CPU", "cpu.so", "x y", "a_name_longer_than_thirty_two_chars"};
    kernels_backend *be = (kernels_backend *)&opts; /* must stay untouched */
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(kernels_backend_open(bad[i], &opts, &be, err, sizeof(err)),
                         PS_STATUS_INVALID_ARGUMENT);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(kernels_backend_open(NULL, &opts, &be, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(be, &opts);
}

static void test_missing_and_unavailable(void **state) {
    (void)state;
    const kernels_backend_open_opts opts = module_opts();
    kernels_backend *be = NULL;
    char err[512] = "";
    assert_int_equal(kernels_backend_open("nosuch", &opts, &be, err, sizeof(err)),
                     PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "libkernels_nosuch.so"));
    assert_int_equal(kernels_backend_open("cpumod", NULL, &be, err, sizeof(err)),
                     PS_STATUS_NOT_FOUND); /* no module folder */
    assert_int_equal(kernels_backend_open("nodev", &opts, &be, err, sizeof(err)),
                     PS_STATUS_UNAVAILABLE);
    assert_non_null(strstr(err, "nodev"));
    assert_null(be);
}

static void test_module_computes(void **state) {
    (void)state;
    const kernels_backend_open_opts opts = module_opts();
    kernels_backend *be = NULL;
    char err[512] = "";
    assert_int_equal(kernels_backend_open("cpumod", &opts, &be, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpumod");
    const float x[2] = {1, 2}, w[4] = {1, 0, 1, -1}, b[2] = {0.5f, 0};
    float y[2] = {0, 0};
    assert_int_equal(kernels_backend_dense(be, x, 1, 2, w, b, 2, KERNELS_ACTIVATION_RELU, y),
                     PS_STATUS_OK);
    assert_true(y[0] == 1.5f && y[1] == 0.0f);
    kernels_backend_destroy(be); /* closes the module after its context */
}

/* ------------------------------------------------------------------------------------ */
/* A device-memory backend (stubs): create's rules, and the host executor refuses it */

static ps_status stub_dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                            const float *bias, size_t out, kernels_activation act, float *y) {
    (void)exec, (void)x, (void)rows, (void)in, (void)w, (void)bias, (void)out, (void)act, (void)y;
    return PS_STATUS_OK;
}
static ps_status stub_softmax(void *exec, const float *x, size_t rows, size_t cols, float *y) {
    (void)exec, (void)x, (void)rows, (void)cols, (void)y;
    return PS_STATUS_OK;
}
static ps_status stub_unary(void *exec, const float *x, size_t n, float *y) {
    (void)exec, (void)x, (void)n, (void)y;
    return PS_STATUS_OK;
}
static ps_status stub_add(void *exec, const float *a, const float *b, size_t n, float *y) {
    (void)exec, (void)a, (void)b, (void)n, (void)y;
    return PS_STATUS_OK;
}
static ps_status stub_alloc(void *ctx, size_t bytes, void **ret_ptr) {
    (void)ctx, (void)bytes, (void)ret_ptr;
    return PS_STATUS_NO_MEMORY;
}
static void stub_free(void *ctx, void *ptr) {
    (void)ctx, (void)ptr;
}
static ps_status stub_copy_bytes(void *exec, void *dst, const void *src, size_t bytes) {
    (void)exec, (void)dst, (void)src, (void)bytes;
    return PS_STATUS_OK;
}

static void test_device_backend(void **state) {
    (void)state;
    kernels_backend_iface iface = {
        .name = "stubdev",
        .dense = stub_dense,
        .softmax = stub_softmax,
        .relu = stub_unary,
        .add = stub_add,
        .device_memory = true,
    };
    kernels_backend *be = NULL;
    /* Device memory without buffer entries: refused. */
    assert_int_equal(kernels_backend_create(&iface, NULL, &be), PS_STATUS_INVALID_ARGUMENT);
    assert_null(be);
    iface.buffer_alloc = stub_alloc;
    iface.buffer_free = stub_free;
    iface.buffer_upload = stub_copy_bytes;
    iface.buffer_download = stub_copy_bytes;
    iface.copy = stub_unary;
    assert_int_equal(kernels_backend_create(&iface, NULL, &be), PS_STATUS_OK);
    assert_false(kernels_backend_host_memory(be));
    void *p = NULL;
    assert_int_equal(kernels_buffer_alloc(be, 16, &p), PS_STATUS_NO_MEMORY); /* its own alloc */
    /* An op the stub lacks: UNIMPLEMENTED after the checks. */
    const kernels_pool2d_shape pool = {1, 1, 2, 2, 2, 2, 2, 2, 0, 0};
    float v[4] = {0};
    assert_int_equal(kernels_op_pool2d(kernels_backend_stream(be), &pool, KERNELS_POOL2D_MAX, v, v),
                     PS_STATUS_UNIMPLEMENTED);

    /* The executor drives device memory through the backend's buffers: the model is
     * made (no parameters to mirror), but this stub allocates nothing, so no pass can
     * get its device arena. */
    static const char json[] =
        "{\"name\": \"t\", \"max_batch_size\": 2,"
        " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"
        " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"
        " \"layers\": [{\"op\": \"softmax\", \"input\": \"x\", \"output\": \"y\"}]}";
    char err[512] = "";
    model_config *cfg = NULL;
    assert_int_equal(model_config_parse(json, strlen(json), &cfg, err, sizeof(err)), PS_STATUS_OK);
    model *m = NULL;
    assert_int_equal(model_create(cfg, NULL, 0, be, &m, err, sizeof(err)), PS_STATUS_OK);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_NO_MEMORY);
    assert_null(ws);
    float y[3];
    const model_input in = {.name = "x", .ndims = 2, .dims = {1, 3}, .data = v};
    model_output out = {.name = "y", .buffer = y, .capacity = 3};
    assert_int_equal(model_infer(m, NULL, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_NO_MEMORY);
    model_destroy(m);
    model_config_destroy(cfg);
    kernels_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_by_name),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_missing_and_unavailable),
        cmocka_unit_test(test_module_computes),
        cmocka_unit_test(test_device_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
