/* test_model_device.c: unit tests of the executor on a device-memory backend (cmocka;
 * run on the cpudev test module, see test_module_cpudev.h).
 *
 * What only a device shows: a write into a parameter's host buffer reaches the passes
 * only through model_param_mark + model_params_sync (the device mirror is stale until
 * then, by design); a sync uploads the marked blocks and nothing else; outputs without
 * a buffer land in host memory; and cpudev itself refuses host pointers, so the other
 * executor tests passing on it means the executor handed every op device memory. Passes
 * of small batches replay graphs (cpudev records them, refusing any upload, download
 * or host ids while recording): their answers follow new inputs and synced weights.
 * On the CPU backend the same writes are seen at once and marks and syncs do nothing.
 */
#include <dlfcn.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_internal.h" /* MODEL_SYNC_BLOCK_FLOATS */
#include "test_model_backend.h"

#define WIDE (3 * MODEL_SYNC_BLOCK_FLOATS) /* three dirty blocks' worth of inputs */

/* y[-1, 1] = x[-1, n] w[1, n]^T + b */
static model *dot_model(kernels_backend *backend, size_t n) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"name\": \"dot\", \"max_batch_size\": 2,"
             " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, %zu]}],"
             " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 1]}],"
             " \"layers\": [{\"op\": \"dense\", \"input\": \"x\", \"output\": \"y\","
             " \"weight\": \"w\", \"bias\": \"b\"}]}",
             n);
    model_config *cfg = NULL;
    char err[512] = "";
    assert_int_equal(model_config_parse(json, strlen(json), &cfg, err, sizeof(err)), PS_STATUS_OK);
    const model_tensor_desc shapes[] = {
        {.name = "w", .datatype = "FP32", .ndims = 2, .dims = {1, (int64_t)n}},
        {.name = "b", .datatype = "FP32", .ndims = 1, .dims = {1}}};
    model *m = NULL;
    if (model_create(cfg, shapes, 2, backend, &m, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("model_create: %s", err);
    }
    model_config_destroy(cfg);
    return m;
}

/* y for x = all ones (the sum of w, plus b), through a workspace output (host). */
static float run_ones(const model *m, size_t n) {
    float *x = malloc(n * sizeof(*x));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = 1.0f;
    }
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    const model_input in = {.name = "x", .ndims = 2, .dims = {1, (int64_t)n}, .data = x};
    model_output out = {.name = "y"};
    char err[512] = "";
    if (model_infer(m, ws, &in, 1, &out, 1, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("model_infer: %s", err);
    }
    const float y = out.data[0]; /* host memory on every backend */
    model_workspace_destroy(ws);
    free(x);
    return y;
}

static void test_write_reaches_passes_only_through_sync(void **state) {
    (void)state;
    model *m = dot_model(test_model_backend(), 2);
    const bool device = test_model_backend_device();
    float *w = NULL;
    size_t count = 0;
    assert_int_equal(model_param(m, "w", &w, &count), PS_STATUS_OK);
    assert_int_equal(count, 2);
    assert_true(run_ones(m, 2) == 0.0f); /* parameters start at zero, mirror too */

    w[0] = 1.0f;
    w[1] = 2.0f;
    assert_int_equal(model_param_mark(m, "w", 0, 2), PS_STATUS_OK);
    test_model_sync(m);
    assert_true(run_ones(m, 2) == 3.0f);

    /* written and marked, not synced: a device still computes with the old values */
    w[0] = 10.0f;
    assert_int_equal(model_param_mark(m, "w", 0, 1), PS_STATUS_OK);
    assert_true(run_ones(m, 2) == (device ? 3.0f : 12.0f));
    test_model_sync(m);
    assert_true(run_ones(m, 2) == 12.0f);

    /* model_param_write marks itself; the sync is still the caller's */
    const float b = 0.5f;
    assert_int_equal(model_param_write(m, "b", 0, &b, 1), PS_STATUS_OK);
    assert_true(run_ones(m, 2) == (device ? 12.0f : 12.5f));
    test_model_sync(m);
    assert_true(run_ones(m, 2) == 12.5f);
    test_model_sync(m); /* nothing marked: nothing to do */
    assert_true(run_ones(m, 2) == 12.5f);
    model_destroy(m);
}

static void test_sync_uploads_the_marked_blocks(void **state) {
    (void)state;
    model *m = dot_model(test_model_backend(), WIDE);
    float *w = NULL;
    assert_int_equal(model_param(m, "w", &w, NULL), PS_STATUS_OK);
    /* blocks 0 and 2 marked (two runs), block 1 written but not marked */
    w[5] = 1.0f;
    w[MODEL_SYNC_BLOCK_FLOATS + 7] = 100.0f;
    w[WIDE - 1] = 2.0f;
    assert_int_equal(model_param_mark(m, "w", 5, 1), PS_STATUS_OK);
    assert_int_equal(model_param_mark(m, "w", WIDE - 1, 1), PS_STATUS_OK);
    test_model_sync(m);
    assert_true(run_ones(m, WIDE) == (test_model_backend_device() ? 3.0f : 103.0f));
    /* a range across two blocks marks both */
    assert_int_equal(model_param_mark(m, "w", MODEL_SYNC_BLOCK_FLOATS - 1, 10), PS_STATUS_OK);
    test_model_sync(m);
    assert_true(run_ones(m, WIDE) == 103.0f);
    model_destroy(m);
}

static void test_mark_errors(void **state) {
    (void)state;
    model *m = dot_model(test_model_backend(), 2);
    assert_int_equal(model_param_mark(m, "nope", 0, 1), PS_STATUS_NOT_FOUND);
    assert_int_equal(model_param_mark(m, "w", 1, 2), PS_STATUS_OUT_OF_RANGE);
    assert_int_equal(model_param_mark(m, "w", SIZE_MAX, 2), PS_STATUS_OUT_OF_RANGE);
    assert_int_equal(model_param_mark(m, "w", 2, 0), PS_STATUS_OK);
    assert_int_equal(model_param_mark(NULL, "w", 0, 1), PS_STATUS_NOT_FOUND);
    char err[256] = "";
    assert_int_equal(model_params_sync(NULL, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no model"));
    model_destroy(m);
}

/* The guard that gives the executor tests on cpudev their meaning. */
static void test_cpudev_refuses_host_memory(void **state) {
    (void)state;
    kernels_backend *be = test_model_backend();
    if (!test_model_backend_device()) {
        skip();
    }
    float host[4] = {-1, 2, -3, 4};
    float *dev = NULL;
    assert_int_equal(kernels_buffer_alloc(be, 8 * sizeof(float), (void **)&dev), PS_STATUS_OK);
    kernels_stream *s = kernels_backend_stream(be);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_RELU, host, 4, dev),
                     PS_STATUS_INTERNAL);
    assert_non_null(strstr(kernels_stream_last_error(s), "not cpudev memory"));
    assert_int_equal(kernels_buffer_upload(s, dev, host, sizeof(host)), PS_STATUS_OK);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_RELU, dev, 4, dev + 4),
                     PS_STATUS_OK);
    /* past the end of its buffer is not its memory either */
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_RELU, dev, 4, dev + 6),
                     PS_STATUS_INTERNAL);
    float got[4];
    assert_int_equal(kernels_buffer_download(s, got, dev + 4, sizeof(got)), PS_STATUS_OK);
    const float want[4] = {0, 2, 0, 4};
    assert_memory_equal(got, want, sizeof(want));
    assert_int_equal(kernels_buffer_download(s, got, host, sizeof(got)), PS_STATUS_INTERNAL);
    kernels_buffer_free(be, dev);
}

/* The graph dispatchers (backend.h): a host backend has none; cpudev records ops on
 * buffers, refuses uploads while recording, and replays what the buffers hold then. */
static void test_graph_dispatch(void **state) {
    (void)state;
    kernels_backend *cpu = NULL;
    assert_int_equal(kernels_backend_cpu_create(&cpu), PS_STATUS_OK);
    kernels_graph *g = NULL;
    assert_int_equal(kernels_stream_capture_begin(kernels_backend_stream(cpu)),
                     PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(kernels_stream_capture_end(kernels_backend_stream(cpu), &g),
                     PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(kernels_stream_capture_begin(NULL), PS_STATUS_INVALID_ARGUMENT);
    kernels_graph_destroy(NULL);
    kernels_backend_destroy(cpu);
    if (!test_model_backend_device()) {
        skip();
    }
    kernels_backend *be = test_model_backend();
    kernels_stream *s = NULL;
    assert_int_equal(kernels_stream_create(be, &s), PS_STATUS_OK);
    float *dev = NULL;
    assert_int_equal(kernels_buffer_alloc(be, 8 * sizeof(float), (void **)&dev), PS_STATUS_OK);
    float x[4] = {-1, 2, -3, 4}, got[4];
    assert_int_equal(kernels_buffer_upload(s, dev, x, sizeof(x)), PS_STATUS_OK);
    assert_int_equal(kernels_stream_capture_begin(s), PS_STATUS_OK);
    assert_int_equal(kernels_op_activation(s, KERNELS_ACTIVATION_RELU, dev, 4, dev + 4),
                     PS_STATUS_OK);
    assert_int_equal(kernels_stream_capture_end(s, &g), PS_STATUS_OK);
    assert_int_equal(kernels_graph_launch(NULL, g), PS_STATUS_INVALID_ARGUMENT);
    for (int round = 0; round < 2; round++) {
        x[0] = (float)round + 1.0f; /* new contents, the same buffer */
        assert_int_equal(kernels_buffer_upload(s, dev, x, sizeof(x)), PS_STATUS_OK);
        assert_int_equal(kernels_graph_launch(s, g), PS_STATUS_OK);
        assert_int_equal(kernels_buffer_download(s, got, dev + 4, sizeof(got)), PS_STATUS_OK);
        const float want[4] = {(float)round + 1.0f, 2, 0, 4};
        assert_memory_equal(got, want, sizeof(want));
    }
    kernels_graph_destroy(g);
    /* an upload while recording would replay stale host memory: the recording fails */
    assert_int_equal(kernels_stream_capture_begin(s), PS_STATUS_OK);
    assert_int_equal(kernels_buffer_upload(s, dev, x, sizeof(x)), PS_STATUS_INTERNAL);
    g = NULL;
    assert_int_equal(kernels_stream_capture_end(s, &g), PS_STATUS_INTERNAL);
    assert_null(g);
    kernels_buffer_free(be, dev);
    kernels_stream_destroy(s);
}

/* Graphs cpudev launched so far (0 on another backend). */
static uint64_t launches(void) {
    const char *dir = getenv("PS_KERNELS_MODULE_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/libkernels_cpudev.so", dir != NULL ? dir : ".");
    void *h = test_model_backend_device() ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    if (h == NULL) {
        return 0;
    }
    uint64_t (*fn)(void) = NULL;
    void *sym = dlsym(h, "kernels_cpudev_graph_launches");
    memcpy(&fn, &sym, sizeof(fn));
    const uint64_t n = fn != NULL ? fn() : 0;
    dlclose(h);
    return n;
}

/* x[-1, 3] -> dense 4 (relu) -> dense 2: y; weights w1 [4, 3], w2 [2, 4] */
static const char mlp_json[] =
    "{\"name\": \"mlp\", \"max_batch_size\": 16,"
    " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 2]}],"
    " \"layers\": [{\"op\": \"dense\", \"input\": \"x\", \"output\": \"h\", \"weight\": \"w1\","
    " \"activation\": \"relu\"},"
    " {\"op\": \"dense\", \"input\": \"h\", \"output\": \"y\", \"weight\": \"w2\"}]}";

/* Runs the mlp on `batch` rows of x (seeded) and checks y against double arithmetic. */
static void mlp_check(const model *m, model_workspace *ws, size_t batch, int seed, const float *w1,
                      const float *w2) {
    float x[16 * 3];
    for (size_t i = 0; i < batch * 3; i++) {
        x[i] = (float)sin((double)(seed * 31 + (int)i)) * 2.0f;
    }
    float y[16 * 2];
    const model_input in = {.name = "x", .ndims = 2, .dims = {(int64_t)batch, 3}, .data = x};
    model_output out = {.name = "y", .buffer = y, .capacity = 32};
    char err[512] = "";
    if (model_infer(m, ws, &in, 1, &out, 1, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("model_infer batch %zu: %s", batch, err);
    }
    for (size_t r = 0; r < batch; r++) {
        double h[4];
        for (size_t o = 0; o < 4; o++) {
            double acc = 0;
            for (size_t i = 0; i < 3; i++) {
                acc += (double)x[r * 3 + i] * w1[o * 3 + i];
            }
            h[o] = acc > 0 ? acc : 0;
        }
        for (size_t o = 0; o < 2; o++) {
            double want = 0;
            for (size_t i = 0; i < 4; i++) {
                want += h[i] * w2[o * 4 + i];
            }
            if (fabs(y[r * 2 + o] - want) > 1e-5 + 1e-5 * fabs(want)) {
                fail_msg("batch %zu seed %d: y[%zu][%zu] = %g, want %g", batch, seed, r, o,
                         (double)y[r * 2 + o], want);
            }
        }
    }
}

static void test_small_batches_replay_graphs(void **state) {
    (void)state;
    model_config *cfg = NULL;
    char err[512] = "";
    assert_int_equal(model_config_parse(mlp_json, strlen(mlp_json), &cfg, err, sizeof(err)),
                     PS_STATUS_OK);
    const model_tensor_desc shapes[] = {{.name = "w1", .ndims = 2, .dims = {4, 3}},
                                        {.name = "w2", .ndims = 2, .dims = {2, 4}}};
    model *m = NULL;
    assert_int_equal(model_create(cfg, shapes, 2, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_OK);
    model_config_destroy(cfg);
    float w1[12], w2[8];
    for (int i = 0; i < 12; i++) {
        w1[i] = (float)cos(i * 0.9);
    }
    for (int i = 0; i < 8; i++) {
        w2[i] = (float)sin(i * 1.3);
    }
    assert_int_equal(model_param_write(m, "w1", 0, w1, 12), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "w2", 0, w2, 8), PS_STATUS_OK);
    test_model_sync(m);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    const bool device = test_model_backend_device();
    const uint64_t before = launches();
    /* per size: an eager pass, a recorded one (launched), then replays; new x each time */
    for (int seed = 0; seed < 4; seed++) {
        mlp_check(m, ws, 1, seed, w1, w2);
        mlp_check(m, ws, 3, seed + 10, w1, w2);
    }
    assert_int_equal(launches() - before, device ? 6 : 0);
    /* new weights, synced: the replays read the mirrors as they are now */
    w2[5] = -3.0f;
    assert_int_equal(model_param_write(m, "w2", 5, &w2[5], 1), PS_STATUS_OK);
    test_model_sync(m);
    mlp_check(m, ws, 3, 99, w1, w2);
    mlp_check(m, ws, 1, 98, w1, w2);
    assert_int_equal(launches() - before, device ? 8 : 0);
    /* past MODEL_GRAPH_MAX_BATCH, and without a workspace: op by op */
    mlp_check(m, ws, MODEL_GRAPH_MAX_BATCH + 1, 5, w1, w2);
    mlp_check(m, ws, MODEL_GRAPH_MAX_BATCH + 1, 6, w1, w2);
    mlp_check(m, ws, MODEL_GRAPH_MAX_BATCH + 1, 7, w1, w2);
    mlp_check(m, NULL, 2, 8, w1, w2);
    mlp_check(m, NULL, 2, 9, w1, w2);
    assert_int_equal(launches() - before, device ? 8 : 0);
    model_workspace_destroy(ws);

    /* a backend whose recordings fail: the same answers, op by op */
    setenv("PS_CPUDEV_NO_GRAPHS", "1", 1);
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    for (int seed = 0; seed < 4; seed++) {
        mlp_check(m, ws, 2, seed + 20, w1, w2);
    }
    unsetenv("PS_CPUDEV_NO_GRAPHS");
    mlp_check(m, ws, 2, 30, w1, w2); /* that size stays op by op */
    assert_int_equal(launches() - before, device ? 8 : 0);
    model_workspace_destroy(ws);
    model_destroy(m);
}

int main(int argc, char **argv) {
    test_model_backend_open(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_reaches_passes_only_through_sync),
        cmocka_unit_test(test_sync_uploads_the_marked_blocks),
        cmocka_unit_test(test_mark_errors),
        cmocka_unit_test(test_cpudev_refuses_host_memory),
        cmocka_unit_test(test_graph_dispatch),
        cmocka_unit_test(test_small_batches_replay_graphs),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_model_backend_close();
    return failed;
}
