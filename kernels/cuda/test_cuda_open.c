/* test_cuda_open.c: opening the CUDA module, on any machine (cmocka, suite unit).
 *
 * Without a GPU (or driver) the module must load and answer UNAVAILABLE with a reason
 * a person can act on (which CUDA call said what), "auto" must fall back to the CPU and
 * "cuda" must not. With a GPU it must open in FP32 and BF16 and move data both ways.
 * Either way its entry refuses a loader of another ABI and an unknown precision before
 * touching the device. Modules come from $PS_KERNELS_MODULE_DIR.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"

static const char *module_dir(void) {
    const char *dir = getenv("PS_KERNELS_MODULE_DIR");
    assert_non_null(dir);
    return dir;
}

/* The module's entry, dlopened directly (*ret_handle: dlclose it). */
static kernels_backend_module_open_fn module_entry(void **ret_handle) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/libkernels_cuda.so", module_dir());
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* as the loader does */
    if (h == NULL) {
        fail_msg("dlopen %s: %s", path, dlerror());
    }
    void *sym = dlsym(h, KERNELS_BACKEND_MODULE_OPEN);
    assert_non_null(sym);
    kernels_backend_module_open_fn fn;
    memcpy(&fn, &sym, sizeof(fn));
    *ret_handle = h;
    return fn;
}

static void test_entry_checks_first(void **state) {
    (void)state;
    void *h = NULL;
    kernels_backend_module_open_fn fn = module_entry(&h);
    kernels_backend_iface iface;
    void *ctx = NULL;
    char err[256] = "";
    const kernels_backend_module_opts fp32 = {.precision = KERNELS_PRECISION_FP32};
    assert_int_equal(fn(KERNELS_BACKEND_ABI_VERSION + 1, &fp32, &iface, &ctx, err, sizeof(err)),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "ABI"));
    const kernels_backend_module_opts bad = {.precision = (kernels_precision)7};
    assert_int_equal(fn(KERNELS_BACKEND_ABI_VERSION, &bad, &iface, &ctx, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_null(ctx);
    dlclose(h);
}

/* The machine has no usable GPU: every way of asking says so, "auto" runs on the CPU. */
static void expect_unavailable(const char *err) {
    printf("# no GPU here: %s\n", err);
    assert_true(strstr(err, "cuda") != NULL);
    assert_true(strstr(err, "CUDA") != NULL || strstr(err, "cannot load") != NULL);
    kernels_backend *be = NULL;
    char why[512] = "";
    kernels_backend_select_opts opts = {.device = "cuda", .module_dir = module_dir()};
    assert_int_equal(kernels_backend_select(&opts, &be, why, sizeof(why)), PS_STATUS_UNAVAILABLE);
    opts.device = "auto";
    opts.precision = "bf16";
    assert_int_equal(kernels_backend_select(&opts, &be, why, sizeof(why)), PS_STATUS_OK);
    assert_string_equal(kernels_backend_name(be), "cpu");
    kernels_backend_destroy(be);
}

/* A GPU is there: FP32 and BF16 open, data goes up and comes back. */
static void expect_working(kernels_backend *be) {
    assert_string_equal(kernels_backend_name(be), "cuda");
    assert_false(kernels_backend_host_memory(be));
    assert_int_equal(kernels_backend_precision(be), KERNELS_PRECISION_FP32);
    kernels_stream *s = NULL;
    assert_int_equal(kernels_stream_create(be, &s), PS_STATUS_OK);
    float host[37], back[37];
    for (size_t i = 0; i < 37; i++) {
        host[i] = (float)i - 18.5f;
    }
    void *dev = NULL;
    assert_int_equal(kernels_buffer_alloc(be, sizeof(host), &dev), PS_STATUS_OK);
    assert_int_equal(kernels_buffer_upload(s, dev, host, sizeof(host)), PS_STATUS_OK);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_RELU, dev, 37, dev), PS_STATUS_OK);
    assert_int_equal(kernels_buffer_download(s, back, dev, sizeof(back)), PS_STATUS_OK);
    for (size_t i = 0; i < 37; i++) {
        assert_true(back[i] == (host[i] > 0 ? host[i] : 0.0f));
    }
    assert_string_equal(kernels_stream_last_error(s), "");
    kernels_buffer_free(be, dev);
    kernels_stream_destroy(s);

    kernels_backend *bf = NULL;
    char err[512] = "";
    const kernels_backend_open_opts opts = {.module_dir = module_dir(),
                                            .precision = KERNELS_PRECISION_BF16};
    assert_int_equal(kernels_backend_open("cuda", &opts, &bf, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(kernels_backend_precision(bf), KERNELS_PRECISION_BF16);
    kernels_backend_destroy(bf);
}

static void test_open(void **state) {
    (void)state;
    const kernels_backend_open_opts opts = {.module_dir = module_dir()};
    kernels_backend *be = NULL;
    char err[512] = "";
    const ps_status st = kernels_backend_open("cuda", &opts, &be, err, sizeof(err));
    if (st == PS_STATUS_OK) {
        expect_working(be);
        kernels_backend_destroy(be);
        return;
    }
    assert_int_equal(st, PS_STATUS_UNAVAILABLE);
    assert_null(be);
    expect_unavailable(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_checks_first),
        cmocka_unit_test(test_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
