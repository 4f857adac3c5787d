/* test_model_image.c: unit tests of the graph executor's image layers (cmocka): a tiny
 * CNN (reshape -> conv2d -> relu -> maxpool2d -> flatten -> dense -> softmax) with
 * known weights, then conv2d with stride, padding, dilation, groups and an activation,
 * avgpool2d both ways, the elementwise gelu / tanh / sigmoid layers, dense with gelu,
 * layernorm, and a model without a batch dim. Each against a straightforward reference computed
 * here in double, at batch 1 and at max_batch_size, with and without a workspace.
 *
 * Before these ops existed the configs here were refused ("unknown op"), so every test
 * would have failed on that code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_ref.h"
#include "model.h"
#include "test_model_backend.h"

#define ATOL 1e-5
#define RTOL 1e-4

enum { ACT_NONE, ACT_RELU, ACT_GELU, ACT_TANH, ACT_SIGMOID };
enum { POOL_MAX, POOL_AVG, POOL_AVG_EXCL };

static void assert_close(const float *got, const double *want, size_t n, const char *what) {
    ref_assert_close(got, want, n, ATOL, RTOL, what);
}

static double act(double v, int a) {
    switch (a) {
    case ACT_RELU:
        return v > 0 ? v : 0;
    case ACT_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case ACT_TANH:
        return tanh(v);
    case ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-v));
    default:
        return v;
    }
}

/* Deterministic values in about [-1, 1]. */
static void fill(float *p, size_t n, double seed) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)sin(seed + (double)i * 0.731);
    }
}

typedef struct conv_ref {
    size_t n, c, h, w, k, r, s, sh, sw, ph, pw, dh, dw, g;
} conv_ref;

static size_t out_len(size_t in, size_t k, size_t s, size_t p, size_t d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* y[n, k, p, q] = act(sum x[n, c, p*sh - ph + i*dh, q*sw - pw + j*dw] w[k, c', i, j] + b[k]). */
static void ref_conv(const conv_ref *cr, const double *x, const float *wt, const float *b, int a,
                     double *y) {
    const size_t P = out_len(cr->h, cr->r, cr->sh, cr->ph, cr->dh);
    const size_t Q = out_len(cr->w, cr->s, cr->sw, cr->pw, cr->dw);
    const size_t cg = cr->c / cr->g;
    const size_t kg = cr->k / cr->g;
    for (size_t n = 0; n < cr->n; n++) {
        for (size_t k = 0; k < cr->k; k++) {
            for (size_t p = 0; p < P; p++) {
                for (size_t q = 0; q < Q; q++) {
                    double acc = b != NULL ? b[k] : 0.0;
                    for (size_t ci = 0; ci < cg; ci++) {
                        const size_t c = (k / kg) * cg + ci;
                        for (size_t i = 0; i < cr->r; i++) {
                            for (size_t j = 0; j < cr->s; j++) {
                                const long hh = (long)(p * cr->sh + i * cr->dh) - (long)cr->ph;
                                const long ww = (long)(q * cr->sw + j * cr->dw) - (long)cr->pw;
                                if (hh < 0 || ww < 0 || hh >= (long)cr->h || ww >= (long)cr->w) {
                                    continue;
                                }
                                acc +=
                                    x[((n * cr->c + c) * cr->h + (size_t)hh) * cr->w + (size_t)ww] *
                                    wt[((k * cg + ci) * cr->r + i) * cr->s + j];
                            }
                        }
                    }
                    y[((n * cr->k + k) * P + p) * Q + q] = act(acc, a);
                }
            }
        }
    }
}

/* Pooling of x[nc, h, w] (nc = batch * channels), a square kernel, stride and padding. */
static void ref_pool(const double *x, size_t nc, size_t h, size_t w, size_t kk, size_t st,
                     size_t pad, int kind, double *y) {
    const size_t P = out_len(h, kk, st, pad, 1);
    const size_t Q = out_len(w, kk, st, pad, 1);
    for (size_t c = 0; c < nc; c++) {
        for (size_t p = 0; p < P; p++) {
            for (size_t q = 0; q < Q; q++) {
                double best = -INFINITY;
                double sum = 0.0;
                size_t inside = 0;
                for (size_t i = 0; i < kk; i++) {
                    for (size_t j = 0; j < kk; j++) {
                        const long hh = (long)(p * st + i) - (long)pad;
                        const long ww = (long)(q * st + j) - (long)pad;
                        if (hh < 0 || ww < 0 || hh >= (long)h || ww >= (long)w) {
                            continue;
                        }
                        const double v = x[(c * h + (size_t)hh) * w + (size_t)ww];
                        best = v > best ? v : best;
                        sum += v;
                        inside++;
                    }
                }
                y[(c * P + p) * Q + q] = kind == POOL_MAX   ? best
                                         : kind == POOL_AVG ? sum / (double)(kk * kk)
                                                            : sum / (double)inside;
            }
        }
    }
}

/* y[rows, out] = act(x w^T + b), then softmax per row when `soft`. */
static void ref_dense(const double *x, size_t rows, size_t in, const float *wt, const float *b,
                      size_t out, int a, bool soft, double *y) {
    for (size_t r = 0; r < rows; r++) {
        double mx = -INFINITY;
        for (size_t o = 0; o < out; o++) {
            double acc = b[o];
            for (size_t i = 0; i < in; i++) {
                acc += x[r * in + i] * wt[o * in + i];
            }
            y[r * out + o] = act(acc, a);
            mx = y[r * out + o] > mx ? y[r * out + o] : mx;
        }
        if (soft) {
            double sum = 0.0;
            for (size_t o = 0; o < out; o++) {
                y[r * out + o] = exp(y[r * out + o] - mx);
                sum += y[r * out + o];
            }
            for (size_t o = 0; o < out; o++) {
                y[r * out + o] /= sum;
            }
        }
    }
}

/* A model with its parameters filled by fill(seed = parameter index + 1). */
static model *make_model(const char *sq, const model_tensor_desc *shapes, size_t n) {
    model_config *cfg = test_config_sq(sq);
    model *m = NULL;
    char err[512] = "";
    if (model_create(cfg, shapes, n, test_model_backend(), &m, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("model_create: %s", err);
    }
    model_config_destroy(cfg);
    for (size_t i = 0; i < n; i++) {
        float *p;
        size_t count;
        assert_int_equal(model_param(m, shapes[i].name, &p, &count), PS_STATUS_OK);
        fill(p, count, (double)i + 1.0);
        assert_int_equal(model_param_mark(m, shapes[i].name, 0, count), PS_STATUS_OK);
    }
    test_model_sync(m);
    return m;
}

static const float *param(model *m, const char *name) {
    float *p;
    size_t count;
    assert_int_equal(model_param(m, name, &p, &count), PS_STATUS_OK);
    return p;
}

/* Runs `m` on x at `batch` (with ws, then without) and checks output y against want. */
static void run_check(const model *m, model_workspace *ws, const char *in_name, uint32_t ndims,
                      const int64_t *dims, const float *x, size_t batch, size_t per_sample,
                      const double *want, const char *what) {
    model_input in = {.name = in_name, .ndims = ndims, .data = x};
    memcpy(in.dims, dims, ndims * sizeof(*dims));
    if (model_max_batch_size(m) > 0) {
        in.dims[0] = (int64_t)batch;
    }
    char err[512] = "";
    model_output out = {.name = "y"};
    if (model_infer(m, ws, &in, 1, &out, 1, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("%s: infer: %s", what, err);
    }
    assert_close(out.data, want, batch * per_sample, what);
    float *buf = malloc(batch * per_sample * sizeof(float));
    assert_non_null(buf);
    model_output out2 = {.name = "y", .buffer = buf, .capacity = batch * per_sample};
    assert_int_equal(model_infer(m, NULL, &in, 1, &out2, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_close(buf, want, batch * per_sample, what);
    free(buf);
}

/* ------------------------------------------------------------------------------------ */

#define CNN_MAX 6
static const char *cnn_json =
    "{'name': 'cnn', 'max_batch_size': 6,"
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 64]}],"
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 10]}],"
    " 'layers': [{'op': 'reshape', 'input': 'x', 'output': 'img', 'shape': [1, 8, 8]},"
    "  {'op': 'conv2d', 'input': 'img', 'output': 'c', 'weight': 'cw', 'bias': 'cb',"
    "   'out_channels': 3, 'kernel_size': 3, 'padding': 1},"
    "  {'op': 'relu', 'input': 'c', 'output': 'r'},"
    "  {'op': 'maxpool2d', 'input': 'r', 'output': 'p', 'kernel_size': 2},"
    "  {'op': 'flatten', 'input': 'p', 'output': 'f'},"
    "  {'op': 'dense', 'input': 'f', 'output': 'logits', 'weight': 'fw', 'bias': 'fb'},"
    "  {'op': 'softmax', 'input': 'logits', 'output': 'y'}]}";

static void test_tiny_cnn(void **state) {
    (void)state;
    const model_tensor_desc shapes[] = {
        {.name = "cw", .ndims = 4, .dims = {3, 1, 3, 3}},
        {.name = "cb", .ndims = 1, .dims = {3}},
        {.name = "fw", .ndims = 2, .dims = {10, 48}},
        {.name = "fb", .ndims = 1, .dims = {10}},
    };
    model *m = make_model(cnn_json, shapes, 4);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    const size_t batches[] = {1, CNN_MAX};
    for (size_t t = 0; t < 2; t++) {
        const size_t b = batches[t];
        float x[CNN_MAX * 64];
        double xd[CNN_MAX * 64];
        fill(x, b * 64, 10.0 + (double)b);
        for (size_t i = 0; i < b * 64; i++) {
            xd[i] = x[i];
        }
        double c[CNN_MAX * 3 * 64];
        double p[CNN_MAX * 48];
        double want[CNN_MAX * 10];
        const conv_ref cr = {b, 1, 8, 8, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1};
        ref_conv(&cr, xd, param(m, "cw"), param(m, "cb"), ACT_RELU, c);
        ref_pool(c, b * 3, 8, 8, 2, 2, 0, POOL_MAX, p);
        ref_dense(p, b, 48, param(m, "fw"), param(m, "fb"), 10, ACT_NONE, true, want);
        char what[64];
        snprintf(what, sizeof(what), "tiny cnn batch %zu", b);
        run_check(m, ws, "x", 2, (const int64_t[]){-1, 64}, x, b, 10, want, what);
    }
    model_workspace_destroy(ws);
    model_destroy(m);
}

#define OPT_MAX 3
static const char *options_json =
    "{'name': 'opts', 'max_batch_size': 3,"
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2, 7, 9]}],"
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 5]}],"
    " 'layers': [{'op': 'conv2d', 'input': 'x', 'output': 'c', 'weight': 'cw', 'bias': 'cb',"
    "   'out_channels': 4, 'kernel_size': [3, 2], 'stride': [2, 1], 'padding': [1, 0],"
    "   'dilation': [1, 2], 'groups': 2, 'activation': 'gelu'},"
    "  {'op': 'avgpool2d', 'input': 'c', 'output': 'a1', 'kernel_size': 3, 'stride': 2,"
    "   'padding': 1, 'count_include_pad': false},"
    "  {'op': 'tanh', 'input': 'a1', 'output': 't'},"
    "  {'op': 'avgpool2d', 'input': 't', 'output': 'a2', 'kernel_size': 2, 'stride': 1,"
    "   'padding': 1},"
    "  {'op': 'sigmoid', 'input': 'a2', 'output': 's'},"
    "  {'op': 'gelu', 'input': 's', 'output': 'g'},"
    "  {'op': 'flatten', 'input': 'g', 'output': 'f'},"
    "  {'op': 'dense', 'input': 'f', 'output': 'y', 'weight': 'fw', 'bias': 'fb',"
    "   'activation': 'gelu'}]}";

static void test_conv_options(void **state) {
    (void)state;
    /* conv: P = (7 + 2 - 2 - 1) / 2 + 1 = 4, Q = (9 - 2 - 1) + 1 = 7; avg 3/2/1: 2 x 4;
     * avg 2/1/1: 3 x 5; flatten 4 * 15 = 60. */
    const model_tensor_desc shapes[] = {
        {.name = "cw", .ndims = 4, .dims = {4, 1, 3, 2}},
        {.name = "cb", .ndims = 1, .dims = {4}},
        {.name = "fw", .ndims = 2, .dims = {5, 60}},
        {.name = "fb", .ndims = 1, .dims = {5}},
    };
    model *m = make_model(options_json, shapes, 4);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    for (size_t b = 1; b <= OPT_MAX; b += OPT_MAX - 1) {
        float x[OPT_MAX * 126];
        double xd[OPT_MAX * 126];
        fill(x, b * 126, 3.0 + (double)b);
        for (size_t i = 0; i < b * 126; i++) {
            xd[i] = x[i];
        }
        double c[OPT_MAX * 4 * 28];
        double a1[OPT_MAX * 4 * 8];
        double a2[OPT_MAX * 4 * 15];
        double want[OPT_MAX * 5];
        const conv_ref cr = {b, 2, 7, 9, 4, 3, 2, 2, 1, 1, 0, 1, 2, 2};
        ref_conv(&cr, xd, param(m, "cw"), param(m, "cb"), ACT_GELU, c);
        ref_pool(c, b * 4, 4, 7, 3, 2, 1, POOL_AVG_EXCL, a1);
        for (size_t i = 0; i < b * 32; i++) {
            a1[i] = tanh(a1[i]);
        }
        ref_pool(a1, b * 4, 2, 4, 2, 1, 1, POOL_AVG, a2);
        for (size_t i = 0; i < b * 60; i++) {
            a2[i] = act(act(a2[i], ACT_SIGMOID), ACT_GELU);
        }
        ref_dense(a2, b, 60, param(m, "fw"), param(m, "fb"), 5, ACT_GELU, false, want);
        char what[64];
        snprintf(what, sizeof(what), "conv options batch %zu", b);
        run_check(m, ws, "x", 4, (const int64_t[]){-1, 2, 7, 9}, x, b, 5, want, what);
    }
    model_workspace_destroy(ws);
    model_destroy(m);
}

/* No batch dim: [C, H, W] in, a reshape from a dense output whose width the weights
 * fix, a conv without bias, a maxpool with padding. */
static void test_without_batch(void **state) {
    (void)state;
    const model_tensor_desc shapes[] = {
        {.name = "dw", .ndims = 2, .dims = {50, 6}},
        {.name = "db", .ndims = 1, .dims = {50}},
        {.name = "cw", .ndims = 4, .dims = {3, 2, 2, 2}},
    };
    model *m = make_model("{'name': 'nb',"
                          " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [6]}],"
                          " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [3, 3, 3]}],"
                          " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': "
                          "'dw', 'bias': 'db'},"
                          "  {'op': 'reshape', 'input': 'h', 'output': 'img', 'shape': [2, 5, 5]},"
                          "  {'op': 'conv2d', 'input': 'img', 'output': 'c', 'weight': 'cw',"
                          "   'out_channels': 3, 'kernel_size': 2},"
                          "  {'op': 'maxpool2d', 'input': 'c', 'output': 'y', 'kernel_size': 2,"
                          "   'stride': 2, 'padding': 1}]}",
                          shapes, 3);
    float x[6];
    double xd[6];
    fill(x, 6, 0.5);
    for (size_t i = 0; i < 6; i++) {
        xd[i] = x[i];
    }
    double h[50];
    double c[3 * 16];
    double want[27];
    ref_dense(xd, 1, 6, param(m, "dw"), param(m, "db"), 50, ACT_NONE, false, h);
    const conv_ref cr = {1, 2, 5, 5, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1};
    ref_conv(&cr, h, param(m, "cw"), NULL, ACT_NONE, c);
    ref_pool(c, 3, 4, 4, 2, 2, 1, POOL_MAX, want);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    run_check(m, ws, "x", 1, (const int64_t[]){6}, x, 1, 27, want, "without batch");
    model_workspace_destroy(ws);
    model_destroy(m);
}

/* layernorm (weight, bias, eps) after a dense with gelu on [-1, 3, 6] (rows per sample
 * 3), then one without parameters, at batch 1 and 4. */
static void test_layernorm(void **state) {
    (void)state;
    const model_tensor_desc shapes[] = {
        {.name = "dw", .ndims = 2, .dims = {6, 5}},
        {.name = "db", .ndims = 1, .dims = {6}},
        {.name = "g", .ndims = 1, .dims = {6}},
        {.name = "b", .ndims = 1, .dims = {6}},
    };
    model *m = make_model(
        "{'name': 'ln', 'max_batch_size': 4,"
        " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3, 5]}],"
        " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 3, 6]}],"
        " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'dw', 'bias': 'db',"
        "   'activation': 'gelu'},"
        "  {'op': 'layernorm', 'input': 'h', 'output': 'n', 'weight': 'g', 'bias': 'b',"
        "   'eps': 0.001},"
        "  {'op': 'layernorm', 'input': 'n', 'output': 'y'}]}",
        shapes, 4);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    for (size_t b = 1; b <= 4; b += 3) {
        float x[4 * 15];
        double xd[4 * 15];
        double h[4 * 18];
        fill(x, b * 15, 7.0 + (double)b);
        for (size_t i = 0; i < b * 15; i++) {
            xd[i] = x[i];
        }
        ref_dense(xd, b * 3, 5, param(m, "dw"), param(m, "db"), 6, ACT_GELU, false, h);
        for (int pass = 0; pass < 2; pass++) {
            for (size_t r = 0; r < b * 3; r++) {
                double mean = 0.0;
                double var = 0.0;
                for (size_t c = 0; c < 6; c++) {
                    mean += h[r * 6 + c] / 6.0;
                }
                for (size_t c = 0; c < 6; c++) {
                    var += (h[r * 6 + c] - mean) * (h[r * 6 + c] - mean) / 6.0;
                }
                for (size_t c = 0; c < 6; c++) {
                    const double v = (h[r * 6 + c] - mean) / sqrt(var + (pass == 0 ? 1e-3 : 1e-5));
                    h[r * 6 + c] = pass == 0 ? v * param(m, "g")[c] + param(m, "b")[c] : v;
                }
            }
        }
        run_check(m, ws, "x", 3, (const int64_t[]){-1, 3, 5}, x, b, 18, h, "layernorm");
    }
    model_workspace_destroy(ws);
    model_destroy(m);
}

/* A conv weight of the wrong shape is refused at create, naming it. */
static void test_create_errors(void **state) {
    (void)state;
    model_config *cfg = test_config_sq(cnn_json);
    const model_tensor_desc shapes[] = {
        {.name = "cw", .ndims = 4, .dims = {3, 2, 3, 3}},
        {.name = "cb", .ndims = 1, .dims = {3}},
        {.name = "fw", .ndims = 2, .dims = {10, 48}},
        {.name = "fb", .ndims = 1, .dims = {10}},
    };
    model *m = NULL;
    char err[512] = "";
    assert_int_equal(model_create(cfg, shapes, 4, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_null(m);
    assert_non_null(strstr(err, "\"cw\""));
    model_config_destroy(cfg);
}

int main(int argc, char **argv) {
    test_model_backend_open(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_cnn),      cmocka_unit_test(test_conv_options),
        cmocka_unit_test(test_without_batch), cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_create_errors),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_model_backend_close();
    return failed;
}
