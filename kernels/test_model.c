/* test_model.c: unit tests of model instances and the forward pass (cmocka).
 *
 * Forward passes are checked against a naive reference computed here in double
 * (dense + relu + softmax at batch 1 and 5; add, scale, tanh, sigmoid and a model
 * without a batch dim), with 1e-5 absolute + relative tolerance. Then: every input and
 * output error, parameter access, loading weights from safetensors, concurrent
 * inference from several threads, and the committed sample model (models/digits_mlp,
 * path from PS_MODELS_DIR) classifying its held-out digits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "test_ref.h"
#include "model.h"
#include "test_model_backend.h"

#define ATOL 1e-5
#define RTOL 1e-5

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static void assert_close(const float *got, const double *want, size_t n, const char *what) {
    ref_assert_close(got, want, n, ATOL, RTOL, what);
}

static model_tensor_desc shape(const char *name, uint32_t ndims, int64_t d0, int64_t d1) {
    model_tensor_desc d = {.name = name, .datatype = "FP32", .ndims = ndims, .dims = {d0, d1}};
    return d;
}

/* value i of a parameter: deterministic, varied signs */
static float pval(int which, size_t i) {
    return (float)sin((double)(which * 100 + (int)i) * 0.7) * 0.8f;
}

static void fill(float *dst, size_t n, int which, float mul) {
    for (size_t i = 0; i < n; i++) {
        dst[i] = pval(which, i) * mul;
    }
}

static void ref_dense(const double *x, size_t rows, size_t in, const float *w, const float *b,
                      size_t out, double *y) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            double acc = b != NULL ? b[o] : 0.0;
            for (size_t i = 0; i < in; i++) {
                acc += x[r * in + i] * w[o * in + i];
            }
            y[r * out + o] = acc;
        }
    }
}

static void ref_softmax(double *x, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        double max = x[r * cols];
        for (size_t c = 1; c < cols; c++) {
            max = fmax(max, x[r * cols + c]);
        }
        double sum = 0;
        for (size_t c = 0; c < cols; c++) {
            x[r * cols + c] = exp(x[r * cols + c] - max);
            sum += x[r * cols + c];
        }
        for (size_t c = 0; c < cols; c++) {
            x[r * cols + c] /= sum;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* The tiny MLP: x [-1, 4] -> dense 5 relu -> dense 3 (logits) -> softmax (probs) */

static const char *tiny_json =
    "{'name': 'tiny', 'max_batch_size': 8,"
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"
    " 'outputs': [{'name': 'probs', 'datatype': 'FP32', 'shape': [-1, 3]},"
    "             {'name': 'logits', 'datatype': 'FP32', 'shape': [-1, 3]}],"
    " 'layers': ["
    "  {'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w1', 'bias': 'b1',"
    "   'activation': 'relu'},"
    "  {'op': 'dense', 'input': 'h', 'output': 'logits', 'weight': 'w2', 'bias': 'b2'},"
    "  {'op': 'softmax', 'input': 'logits', 'output': 'probs'}]}";

typedef struct tiny_weights {
    float w1[5 * 4], b1[5], w2[3 * 5], b2[3];
} tiny_weights;

static void tiny_fill(tiny_weights *tw) {
    fill(tw->w1, 20, 1, 1.0f);
    fill(tw->b1, 5, 2, 1.0f);
    fill(tw->w2, 15, 3, 1.0f);
    fill(tw->b2, 3, 4, 1.0f);
}

/* The tiny model with its weights written through both parameter APIs. */
static model *tiny_model(model_config **ret_cfg) {
    model_config *cfg = test_config_sq(tiny_json);
    model_tensor_desc shapes[] = {shape("w1", 2, 5, 4), shape("b1", 1, 5, 0), shape("w2", 2, 3, 5),
                                  shape("b2", 1, 3, 0)};
    model *m = NULL;
    char err[512] = "";
    assert_int_equal(model_create(cfg, shapes, 4, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_OK);
    tiny_weights tw;
    tiny_fill(&tw);
    float *p;
    size_t count;
    assert_int_equal(model_param(m, "w1", &p, &count), PS_STATUS_OK);
    assert_int_equal(count, 20);
    for (size_t i = 0; i < count; i++) {
        assert_true(p[i] == 0.0f); /* starts zeroed */
    }
    memcpy(p, tw.w1, sizeof(tw.w1));
    assert_int_equal(model_param_mark(m, "w1", 0, count), PS_STATUS_OK);
    /* b1 in two chunks, like pulls from two shards */
    assert_int_equal(model_param_write(m, "b1", 0, tw.b1, 2), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "b1", 2, tw.b1 + 2, 3), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "w2", 0, tw.w2, 15), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "b2", 0, tw.b2, 3), PS_STATUS_OK);
    test_model_sync(m);
    if (ret_cfg != NULL) {
        *ret_cfg = cfg;
    } else {
        model_config_destroy(cfg);
    }
    return m;
}

static void tiny_input(size_t batch, float *x) {
    for (size_t i = 0; i < batch * 4; i++) {
        x[i] = (float)cos((double)i * 1.3) * 2.0f;
    }
}

/* logits and probs for a batch, in double */
static void tiny_reference(const float *x, size_t batch, double *logits, double *probs) {
    tiny_weights tw;
    tiny_fill(&tw);
    double xin[8 * 4];
    double h[8 * 5];
    for (size_t i = 0; i < batch * 4; i++) {
        xin[i] = x[i];
    }
    ref_dense(xin, batch, 4, tw.w1, tw.b1, 5, h);
    for (size_t i = 0; i < batch * 5; i++) {
        h[i] = h[i] > 0 ? h[i] : 0;
    }
    ref_dense(h, batch, 5, tw.w2, tw.b2, 3, logits);
    memcpy(probs, logits, batch * 3 * sizeof(double));
    ref_softmax(probs, batch, 3);
}

static void test_tiny_forward(void **state) {
    (void)state;
    model *m = tiny_model(NULL);
    assert_string_equal(model_name(m), "tiny");
    assert_int_equal(model_max_batch_size(m), 8);
    assert_string_equal(model_config_name(model_get_config(m)), "tiny");
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);

    const size_t batches[] = {1, 5, 8};
    for (size_t k = 0; k < 3; k++) {
        const size_t b = batches[k];
        float x[8 * 4];
        tiny_input(b, x);
        double want_logits[8 * 3];
        double want_probs[8 * 3];
        tiny_reference(x, b, want_logits, want_probs);

        model_input in = {.name = "x", .ndims = 2, .dims = {(int64_t)b, 4}, .data = x};
        float probs[8 * 3];
        model_output out[2] = {
            {.name = "probs", .buffer = probs, .capacity = 8 * 3},
            {.name = "logits"}, /* into the workspace */
        };
        char err[512] = "";
        assert_int_equal(model_infer(m, ws, &in, 1, out, 2, err, sizeof(err)), PS_STATUS_OK);
        assert_ptr_equal(out[0].data, probs);
        assert_int_equal(out[0].ndims, 2);
        assert_int_equal(out[0].dims[0], b);
        assert_int_equal(out[0].dims[1], 3);
        assert_int_equal(out[1].dims[0], b);
        char what[48];
        snprintf(what, sizeof(what), "probs batch %zu", b);
        assert_close(probs, want_probs, b * 3, what);
        snprintf(what, sizeof(what), "logits batch %zu", b);
        assert_close(out[1].data, want_logits, b * 3, what);

        /* no workspace: scratch per call, outputs need buffers */
        float logits[8 * 3];
        model_output out2 = {.name = "logits", .buffer = logits, .capacity = b * 3};
        assert_int_equal(model_infer(m, NULL, &in, 1, &out2, 1, err, sizeof(err)), PS_STATUS_OK);
        assert_close(logits, want_logits, b * 3, "logits without workspace");
    }
    /* no outputs asked: runs, returns OK */
    float x[4] = {0};
    model_input in = {.name = "x", .ndims = 2, .dims = {1, 4}, .data = x};
    assert_int_equal(model_infer(m, ws, &in, 1, NULL, 0, NULL, 0), PS_STATUS_OK);
    model_workspace_destroy(ws);
    model_workspace_destroy(NULL);
    model_destroy(m);
    model_destroy(NULL);
}

static void expect_infer_error(const model *m, model_workspace *ws, const model_input *in,
                               size_t n_in, model_output *out, size_t n_out, const char *fragment) {
    char err[512] = "";
    const ps_status st = model_infer(m, ws, in, n_in, out, n_out, err, sizeof(err));
    if (st != PS_STATUS_INVALID_ARGUMENT || strstr(err, fragment) == NULL) {
        fail_msg("infer: got %s \"%s\", want INVALID_ARGUMENT with \"%s\"", ps_status_name(st), err,
                 fragment);
    }
}

static void test_infer_errors(void **state) {
    (void)state;
    model *m = tiny_model(NULL);
    model *other = tiny_model(NULL);
    model_workspace *ws = NULL;
    model_workspace *other_ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    assert_int_equal(model_workspace_create(other, &other_ws), PS_STATUS_OK);
    float x[16 * 4] = {0};
    float y[8 * 3];
    model_output out = {.name = "probs", .buffer = y, .capacity = 24};

    model_input in = {.name = "x", .ndims = 2, .dims = {9, 4}, .data = x};
    expect_infer_error(m, ws, &in, 1, &out, 1, "input \"x\": batch size 9 is outside 1..8");
    in.dims[0] = 0;
    expect_infer_error(m, ws, &in, 1, &out, 1, "batch size 0 is outside 1..8");
    in.dims[0] = -1;
    expect_infer_error(m, ws, &in, 1, &out, 1, "batch size -1 is outside");
    in.dims[0] = 2;
    in.dims[1] = 5;
    expect_infer_error(m, ws, &in, 1, &out, 1,
                       "input \"x\": shape [2, 5] does not match the model's [-1, 4] (-1: the "
                       "batch size)");
    in.dims[1] = 4;
    in.ndims = 3;
    in.dims[2] = 1;
    expect_infer_error(m, ws, &in, 1, &out, 1, "shape [2, 4, 1] does not match");
    in.ndims = 1;
    expect_infer_error(m, ws, &in, 1, &out, 1, "shape [2] does not match");
    in.ndims = 2;
    in.name = "pixels";
    expect_infer_error(m, ws, &in, 1, &out, 1,
                       "unknown input \"pixels\"; the model's inputs are: x");
    in.name = "h"; /* a value, but not an input */
    expect_infer_error(m, ws, &in, 1, &out, 1, "unknown input \"h\"");
    in.name = "x";
    expect_infer_error(m, ws, NULL, 0, &out, 1, "input \"x\" is missing");
    model_input twice[2] = {in, in};
    expect_infer_error(m, ws, twice, 2, &out, 1, "input \"x\" is given twice");
    in.data = NULL;
    expect_infer_error(m, ws, &in, 1, &out, 1, "input \"x\" has no data");
    in.data = x;

    out.name = "h";
    expect_infer_error(m, ws, &in, 1, &out, 1,
                       "unknown output \"h\"; the model's outputs are: probs, logits");
    out.name = "probs";
    out.capacity = 5;
    expect_infer_error(m, ws, &in, 1, &out, 1,
                       "output \"probs\": the buffer holds 5 floats, but batch 2 needs 6");
    out.capacity = 24;
    out.buffer = NULL;
    expect_infer_error(m, NULL, &in, 1, &out, 1,
                       "output \"probs\" has no buffer; without a workspace every output "
                       "needs one");
    out.buffer = y;
    expect_infer_error(m, other_ws, &in, 1, &out, 1, "the workspace belongs to another model");
    assert_int_equal(model_infer(m, ws, &in, 1, &out, 1, NULL, 0), PS_STATUS_OK);

    model_workspace_destroy(other_ws);
    model_workspace_destroy(ws);
    model_destroy(other);
    model_destroy(m);
}

static void test_params_and_create_errors(void **state) {
    (void)state;
    model_config *cfg = NULL;
    model *m = tiny_model(&cfg);
    assert_int_equal(model_param_count(m), 4);
    model_tensor_desc d;
    assert_true(model_param_at(m, 2, &d));
    assert_string_equal(d.name, "w2");
    assert_int_equal(d.ndims, 2);
    assert_int_equal(d.dims[0], 3);
    assert_int_equal(d.dims[1], 5);
    assert_false(model_param_at(m, 4, &d));
    float *p = NULL;
    assert_int_equal(model_param(m, "h", &p, NULL), PS_STATUS_NOT_FOUND);
    assert_int_equal(model_param(m, "nope", &p, NULL), PS_STATUS_NOT_FOUND);
    assert_null(p);
    const float v[4] = {1, 2, 3, 4};
    assert_int_equal(model_param_write(m, "b2", 1, v, 3), PS_STATUS_OUT_OF_RANGE);
    assert_int_equal(model_param_write(m, "b2", 4, v, 0), PS_STATUS_OUT_OF_RANGE);
    assert_int_equal(model_param_write(m, "b2", 3, v, 0), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "b2", SIZE_MAX, v, 2), PS_STATUS_OUT_OF_RANGE);
    assert_int_equal(model_param_write(m, "nope", 0, v, 1), PS_STATUS_NOT_FOUND);
    model_destroy(m);

    /* shapes that disagree with the graph: the message says what the graph needs */
    model_tensor_desc bad[] = {shape("w1", 2, 5, 4), shape("b1", 1, 5, 0), shape("w2", 2, 3, 6),
                               shape("b2", 1, 3, 0)};
    char err[512] = "";
    m = NULL;
    assert_int_equal(model_create(cfg, bad, 4, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_null(m);
    assert_non_null(strstr(err, "\"w2\" (the weight of layers[1], dense \"logits\") has shape "
                                "[3, 6], but the graph needs [3, 5]"));
    bad[2].dims[1] = 5;
    assert_int_equal(model_create(cfg, bad, 3, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"b2\""));
    assert_non_null(strstr(err, "is missing"));

    /* a workspace that would pass the element limit: the config's own check (shared
     * with the coordinator, which refuses such a model at registration) says so */
    model_config *big =
        test_config_sq("{'name': 'big', 'max_batch_size': 1000000,"
                       " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4096]}],"
                       " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 4096]}],"
                       " 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}");
    assert_int_equal(model_create(big, NULL, 0, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "max_batch_size"));
    model_config_destroy(big);
    model_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------ */
/* Every op, no batch dim */

static const char *zoo_json =
    "{'name': 'zoo', 'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': [2, 3]},"
    "  {'name': 'b', 'datatype': 'FP32', 'shape': [2, 3]}],"
    " 'outputs': [{'name': 'p', 'datatype': 'FP32', 'shape': [2, 2]},"
    "  {'name': 's', 'datatype': 'FP32', 'shape': [2, 3]}],"
    " 'layers': ["
    "  {'op': 'add', 'inputs': ['a', 'b'], 'output': 's'},"
    "  {'op': 'scale', 'input': 's', 'output': 'n', 'scale': 'g', 'shift': 'beta'},"
    "  {'op': 'dense', 'input': 'n', 'output': 'h', 'weight': 'w', 'activation': 'tanh'},"
    "  {'op': 'relu', 'input': 'h', 'output': 'r'},"
    "  {'op': 'dense', 'input': 'r', 'output': 'q', 'weight': 'w2', 'bias': 'b2',"
    "   'activation': 'sigmoid'},"
    "  {'op': 'scale', 'input': 'q', 'output': 'q2', 'shift': 'beta2'},"
    "  {'op': 'softmax', 'input': 'q2', 'output': 'p'}]}";

static void test_every_op_without_batch(void **state) {
    (void)state;
    model_config *cfg = test_config_sq(zoo_json);
    model_tensor_desc shapes[] = {shape("g", 1, 3, 0),  shape("beta", 1, 3, 0),
                                  shape("w", 2, 4, 3),  shape("w2", 2, 2, 4),
                                  shape("b2", 1, 2, 0), shape("beta2", 1, 2, 0)};
    model *m = NULL;
    char err[512] = "";
    assert_int_equal(model_create(cfg, shapes, 6, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_OK);
    const char *names[] = {"g", "beta", "w", "w2", "b2", "beta2"};
    for (int k = 0; k < 6; k++) {
        float *p;
        size_t n;
        assert_int_equal(model_param(m, names[k], &p, &n), PS_STATUS_OK);
        for (size_t i = 0; i < n; i++) {
            p[i] = pval(10 + k, i) * 2.0f;
        }
        test_model_param_written(m, names[k]);
    }
    float a[6], b[6];
    for (int i = 0; i < 6; i++) {
        a[i] = pval(30, (size_t)i) * 3.0f;
        b[i] = pval(31, (size_t)i);
    }
    /* reference */
    float g[3], beta[3], w[12], w2[8], b2[2], beta2[2];
    fill(g, 3, 10, 2.0f);
    fill(beta, 3, 11, 2.0f);
    fill(w, 12, 12, 2.0f);
    fill(w2, 8, 13, 2.0f);
    fill(b2, 2, 14, 2.0f);
    fill(beta2, 2, 15, 2.0f);
    double s[6], n[6], h[8], q[4];
    for (size_t i = 0; i < 6; i++) {
        s[i] = (double)a[i] + b[i];
        n[i] = s[i] * g[i % 3] + beta[i % 3];
    }
    ref_dense(n, 2, 3, w, NULL, 4, h);
    for (size_t i = 0; i < 8; i++) {
        h[i] = tanh(h[i]);
        h[i] = h[i] > 0 ? h[i] : 0;
    }
    ref_dense(h, 2, 4, w2, b2, 2, q);
    for (size_t i = 0; i < 4; i++) {
        q[i] = 1.0 / (1.0 + exp(-q[i])) + beta2[i % 2];
    }
    ref_softmax(q, 2, 2);

    model_input in[2] = {{.name = "b", .ndims = 2, .dims = {2, 3}, .data = b},
                         {.name = "a", .ndims = 2, .dims = {2, 3}, .data = a}};
    float pbuf[4], sbuf[6];
    model_output out[2] = {{.name = "s", .buffer = sbuf, .capacity = 6},
                           {.name = "p", .buffer = pbuf, .capacity = 4}};
    assert_int_equal(model_infer(m, NULL, in, 2, out, 2, err, sizeof(err)), PS_STATUS_OK);
    assert_close(sbuf, s, 6, "zoo s");
    assert_close(pbuf, q, 4, "zoo p");
    assert_int_equal(out[1].ndims, 2);
    assert_int_equal(out[1].dims[0], 2); /* no batch dim: the declared shape */

    in[0].dims[0] = 3;
    expect_infer_error(m, NULL, in, 2, out, 2, "shape [3, 3] does not match the model's [2, 3]");
    model_destroy(m);
    model_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------ */
/* Weights from safetensors */

/* A safetensors buffer holding the tiny weights; `w2_dtype` lets tests break it. */
static unsigned char *tiny_safetensors(const char *w2_dtype, int w2_cols, size_t *ret_len) {
    tiny_weights tw;
    tiny_fill(&tw);
    const size_t w2_bytes = (strcmp(w2_dtype, "F64") == 0 ? 8 : 4) * 3 * (size_t)w2_cols;
    char header[1024];
    snprintf(header, sizeof(header),
             "{\"w1\":{\"dtype\":\"F32\",\"shape\":[5,4],\"data_offsets\":[0,80]},"
             "\"b1\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[80,100]},"
             "\"b2\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[100,112]},"
             "\"w2\":{\"dtype\":\"%s\",\"shape\":[3,%d],\"data_offsets\":[112,%zu]},"
             "\"__metadata__\":{\"format\":\"pt\"}}",
             w2_dtype, w2_cols, 112 + w2_bytes);
    const size_t hlen = strlen(header);
    const size_t len = 8 + hlen + 112 + w2_bytes;
    unsigned char *buf = calloc(1, len);
    assert_non_null(buf);
    const uint64_t le = hlen;
    memcpy(buf, &le, 8);
    memcpy(buf + 8, header, hlen);
    unsigned char *data = buf + 8 + hlen; /* deliberately unaligned when hlen % 4 != 0 */
    memcpy(data, tw.w1, 80);
    memcpy(data + 80, tw.b1, 20);
    memcpy(data + 100, tw.b2, 12);
    if (w2_bytes == sizeof(tw.w2)) {
        memcpy(data + 112, tw.w2, 60);
    }
    *ret_len = len;
    return buf;
}

static void test_load_from_safetensors(void **state) {
    (void)state;
    model_config *cfg = test_config_sq(tiny_json);
    size_t len;
    unsigned char *buf = tiny_safetensors("F32", 5, &len);
    safetensors *st = NULL;
    char err[512] = "";
    assert_int_equal(safetensors_open_memory(buf, len, &st, err, sizeof(err)), PS_STATUS_OK);
    model *m = NULL;
    assert_int_equal(
        model_create_from_safetensors(cfg, st, test_model_backend(), &m, err, sizeof(err)),
        PS_STATUS_OK);
    float x[5 * 4];
    tiny_input(5, x);
    double want_logits[5 * 3];
    double want_probs[5 * 3];
    tiny_reference(x, 5, want_logits, want_probs);
    model_input in = {.name = "x", .ndims = 2, .dims = {5, 4}, .data = x};
    float probs[15];
    model_output out = {.name = "probs", .buffer = probs, .capacity = 15};
    assert_int_equal(model_infer(m, NULL, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_close(probs, want_probs, 15, "probs from safetensors weights");

    /* the same weights into an instance with different shapes: refused */
    model_config *other = test_config_sq(
        "{'name': 'o', 'max_batch_size': 2,"
        " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"
        " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 6]}],"
        " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'w1', 'bias': 'b1'}]}");
    model_tensor_desc shapes[] = {shape("w1", 2, 6, 4), shape("b1", 1, 6, 0)};
    model *mo = NULL;
    assert_int_equal(model_create(other, shapes, 2, test_model_backend(), &mo, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_int_equal(model_load_safetensors(mo, st, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "tensor \"w1\" has a different shape than the model's [6, 4]"));
    /* and a model with no backing tensor */
    model_config *missing = test_config_sq(
        "{'name': 'o', 'max_batch_size': 2,"
        " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"
        " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 6]}],"
        " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'w9'}]}");
    model *mm = NULL;
    assert_int_equal(
        model_create_from_safetensors(missing, st, test_model_backend(), &mm, err, sizeof(err)),
        PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "the weights have no tensor \"w9\""));
    assert_null(mm);
    model_config_destroy(missing);
    model_destroy(mo);
    model_config_destroy(other);
    model_destroy(m);
    safetensors_destroy(st);
    free(buf);

    /* wrong dtype and wrong shape in the file */
    buf = tiny_safetensors("F64", 5, &len);
    assert_int_equal(safetensors_open_memory(buf, len, &st, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(
        model_create_from_safetensors(cfg, st, test_model_backend(), &m, err, sizeof(err)),
        PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"w2\" (the weight of layers[1], dense \"logits\") has "
                                "datatype F64; only FP32 is supported"));
    safetensors_destroy(st);
    free(buf);
    buf = tiny_safetensors("F32", 6, &len);
    assert_int_equal(safetensors_open_memory(buf, len, &st, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(
        model_create_from_safetensors(cfg, st, test_model_backend(), &m, err, sizeof(err)),
        PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "has shape [3, 6], but the graph needs [3, 5]"));
    safetensors_destroy(st);
    free(buf);
    model_config_destroy(cfg);
}

/* ------------------------------------------------------------------------------------ */
/* Concurrency: several threads, one instance, a workspace each (or none) */

typedef struct worker_arg {
    const model *m;
    int id;
    int failures;
} worker_arg;

static void *worker(void *p) {
    worker_arg *arg = p;
    model_workspace *ws = NULL;
    if (arg->id % 2 == 0 && model_workspace_create(arg->m, &ws) != PS_STATUS_OK) {
        arg->failures++;
        return NULL;
    }
    for (int iter = 0; iter < 300; iter++) {
        const size_t b = (size_t)(iter + arg->id) % 8 + 1;
        float x[8 * 4];
        tiny_input(b, x);
        double want_logits[8 * 3];
        double want_probs[8 * 3];
        tiny_reference(x, b, want_logits, want_probs);
        float probs[8 * 3];
        model_input in = {.name = "x", .ndims = 2, .dims = {(int64_t)b, 4}, .data = x};
        model_output out = {.name = "probs", .buffer = probs, .capacity = 24};
        if (model_infer(arg->m, ws, &in, 1, &out, 1, NULL, 0) != PS_STATUS_OK) {
            arg->failures++;
            continue;
        }
        for (size_t i = 0; i < b * 3; i++) {
            if (fabs(probs[i] - want_probs[i]) > ATOL + RTOL * fabs(want_probs[i])) {
                arg->failures++;
                break;
            }
        }
    }
    model_workspace_destroy(ws);
    return NULL;
}

static void test_concurrent_infer(void **state) {
    (void)state;
    model *m = tiny_model(NULL);
    enum { THREADS = 6 };
    pthread_t threads[THREADS];
    worker_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (worker_arg){.m = m, .id = t};
        assert_int_equal(pthread_create(&threads[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(args[t].failures, 0);
    }
    model_destroy(m);
}

/* ------------------------------------------------------------------------------------ */
/* The committed sample model */

static void test_sample_model_classifies_heldout_digits(void **state) {
    (void)state;
    const char *root = getenv("PS_MODELS_DIR");
    if (root == NULL) {
        fail_msg("PS_MODELS_DIR is not set (meson sets it to the repo's models/)");
    }
    char dir[1024];
    char path[1100];
    snprintf(dir, sizeof(dir), "%s/digits_mlp", root);
    snprintf(path, sizeof(path), "%s/heldout.json", dir);

    model *m = NULL;
    char err[1024] = "";
    const ps_status st = model_open_dir(dir, 0, test_model_backend(), &m, err, sizeof(err));
    if (st != PS_STATUS_OK) {
        fail_msg("model_open_dir: %s: %s (run scripts/make_sample_model)", ps_status_name(st), err);
    }
    assert_string_equal(model_name(m), "digits_mlp");
    assert_int_equal(model_max_batch_size(m), 64);

    json_error_t jerr;
    json_t *held = json_load_file(path, 0, &jerr);
    if (held == NULL) {
        fail_msg("%s: %s", path, jerr.text);
    }
    json_t *pixels = json_object_get(held, "pixels");
    json_t *labels = json_object_get(held, "labels");
    json_t *preds = json_object_get(held, "predictions");
    json_t *probs_ref = json_object_get(held, "probabilities");
    const size_t n = json_array_size(pixels);
    assert_int_equal(n, 360);
    assert_int_equal(json_array_size(labels), n);
    assert_int_equal(json_array_size(preds), n);

    float *x = malloc(n * 64 * sizeof(*x));
    float *probs = malloc(n * 10 * sizeof(*probs));
    assert_non_null(x);
    assert_non_null(probs);
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(pixels, i);
        assert_int_equal(json_array_size(row), 64);
        for (size_t j = 0; j < 64; j++) {
            x[i * 64 + j] = (float)json_integer_value(json_array_get(row, j));
        }
    }
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    for (size_t start = 0; start < n; start += 64) {
        const size_t b = n - start < 64 ? n - start : 64;
        model_input in = {
            .name = "pixels", .ndims = 2, .dims = {(int64_t)b, 64}, .data = x + start * 64};
        model_output out = {
            .name = "probabilities", .buffer = probs + start * 10, .capacity = b * 10};
        assert_int_equal(model_infer(m, ws, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    }
    size_t correct = 0;
    size_t agree = 0;
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t c = 1; c < 10; c++) {
            best = probs[i * 10 + c] > probs[i * 10 + best] ? c : best;
        }
        correct += best == (size_t)json_integer_value(json_array_get(labels, i));
        agree += best == (size_t)json_integer_value(json_array_get(preds, i));
    }
    /* the numpy forward pass at export time and ours agree on every image */
    assert_int_equal(agree, n);
    const double accuracy = (double)correct / (double)n;
    assert_true(accuracy >= 0.95);
    assert_true(fabs(accuracy - json_real_value(json_object_get(held, "accuracy"))) < 1e-5);
    /* the first images' probabilities match numpy's float64 forward pass */
    for (size_t i = 0; i < json_array_size(probs_ref); i++) {
        double want[10];
        for (size_t c = 0; c < 10; c++) {
            want[c] = json_real_value(json_array_get(json_array_get(probs_ref, i), c));
        }
        assert_close(probs + i * 10, want, 10, "digits_mlp probabilities");
    }
    /* a few digits by name: the first ten the exported model gets right */
    size_t checked = 0;
    for (size_t i = 0; i < n && checked < 10; i++) {
        const json_int_t label = json_integer_value(json_array_get(labels, i));
        if (json_integer_value(json_array_get(preds, i)) != label) {
            continue;
        }
        float one[10];
        model_input in = {.name = "pixels", .ndims = 2, .dims = {1, 64}, .data = x + i * 64};
        model_output out = {.name = "probabilities", .buffer = one, .capacity = 10};
        assert_int_equal(model_infer(m, NULL, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_OK);
        size_t best = 0;
        for (size_t c = 1; c < 10; c++) {
            best = one[c] > one[best] ? c : best;
        }
        assert_int_equal(best, label);
        checked++;
    }
    assert_int_equal(checked, 10);

    model_workspace_destroy(ws);
    free(probs);
    free(x);
    json_decref(held);
    model_destroy(m);

    /* directory errors name the path */
    assert_int_equal(model_open_dir(dir, 7, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_IO);
    assert_non_null(strstr(err, "7/model.safetensors"));
    assert_int_equal(
        model_open_dir("/nonexistent/dir", 0, test_model_backend(), &m, err, sizeof(err)),
        PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "no version directory"));
}

int main(int argc, char **argv) {
    test_model_backend_open(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_forward),
        cmocka_unit_test(test_infer_errors),
        cmocka_unit_test(test_params_and_create_errors),
        cmocka_unit_test(test_every_op_without_batch),
        cmocka_unit_test(test_load_from_safetensors),
        cmocka_unit_test(test_concurrent_infer),
        cmocka_unit_test(test_sample_model_classifies_heldout_digits),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_model_backend_close();
    return failed;
}
