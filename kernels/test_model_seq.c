/* test_model_seq.c: unit tests of the graph executor's sequence layers (cmocka): a tiny
 * BERT sentence encoder (2 layers, hidden 8, 2 heads, vocab 11, 5 tokens, batch 3 with
 * padding) in the exporter's syntax, run through model_infer and compared with a
 * straightforward double-precision forward pass written here (atol + rtol). It covers
 * embedding, position_embedding, attention, mean_pool and l2_normalize, and dense
 * (with and without gelu), the gelu layer, layernorm, add and scale on 3-D values
 * [-1, S, D]; the mask as INT64 (non-zero values other than 1 included) and as FP32;
 * with and without a workspace. Hostile inputs (ids V, INT64_MAX and -5, a mask of the
 * wrong datatype) give INVALID_ARGUMENT with a message, and the instance still serves.
 *
 * Before these ops existed such a config was refused ("unknown op", and INT64 inputs
 * fed embedding_bag layers only): every test here would have failed on that code.
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
#define LAYERS 2
#define HID 8   /* hidden */
#define HEADS 2 /* head_dim 4 */
#define VOCAB 11
#define SEQ 5
#define POS 7 /* positions (>= SEQ) */
#define FF 16 /* intermediate */
#define BATCH 3
#define MAX_BATCH 4
#define EPS 1e-12

/* The config: INT64 or FP32 attention_mask. Layer 0's intermediate dense has the gelu
 * activation, layer 1's a separate gelu layer. */
static model_config *bert_config(int fp32_mask) {
    size_t cap = 16384, n = 0;
    char *t = malloc(cap);
    assert_non_null(t);
#define PUT(...) n += (size_t)snprintf(t + n, cap - n, __VA_ARGS__)
    PUT("{\"name\": \"bert\", \"max_batch_size\": %d, \"inputs\": ["
        "{\"name\": \"input_ids\", \"datatype\": \"INT64\", \"shape\": [-1, %d]},"
        "{\"name\": \"attention_mask\", \"datatype\": \"%s\", \"shape\": [-1, %d]}],"
        "\"outputs\": [{\"name\": \"embedding\", \"datatype\": \"FP32\", \"shape\": [-1, %d]}],"
        "\"layers\": ["
        "{\"op\": \"embedding\", \"input\": \"input_ids\", \"weight\": \"word\", \"output\": "
        "\"we\"},"
        "{\"op\": \"position_embedding\", \"input\": \"we\", \"weight\": \"pos\", \"output\": "
        "\"wp\"},"
        "{\"op\": \"scale\", \"input\": \"wp\", \"shift\": \"tt\", \"output\": \"wt\"},"
        "{\"op\": \"layernorm\", \"input\": \"wt\", \"weight\": \"e.ln.w\", \"bias\": "
        "\"e.ln.b\", \"eps\": 1e-12, \"output\": \"h0\"},",
        MAX_BATCH, SEQ, fp32_mask ? "FP32" : "INT64", SEQ, HID);
    for (int l = 0; l < LAYERS; l++) {
        const char *qkv[] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            PUT("{\"op\": \"dense\", \"input\": \"h%d\", \"weight\": \"l%d.%s.w\", \"bias\": "
                "\"l%d.%s.b\", \"output\": \"l%d.%s\"},",
                l, l, qkv[j], l, qkv[j], l, qkv[j]);
        }
        PUT("{\"op\": \"attention\", \"inputs\": [\"l%d.q\", \"l%d.k\", \"l%d.v\"], \"heads\": "
            "%d, \"mask\": \"attention_mask\", \"output\": \"l%d.ctx\"},"
            "{\"op\": \"dense\", \"input\": \"l%d.ctx\", \"weight\": \"l%d.o.w\", \"bias\": "
            "\"l%d.o.b\", \"output\": \"l%d.ao\"},"
            "{\"op\": \"add\", \"inputs\": [\"l%d.ao\", \"h%d\"], \"output\": \"l%d.ar\"},"
            "{\"op\": \"layernorm\", \"input\": \"l%d.ar\", \"weight\": \"l%d.ln1.w\", \"bias\": "
            "\"l%d.ln1.b\", \"eps\": 1e-12, \"output\": \"l%d.h1\"},",
            l, l, l, HEADS, l, l, l, l, l, l, l, l, l, l, l, l);
        if (l == 0) {
            PUT("{\"op\": \"dense\", \"input\": \"l0.h1\", \"weight\": \"l0.i.w\", \"bias\": "
                "\"l0.i.b\", \"activation\": \"gelu\", \"output\": \"l0.ff\"},");
        } else {
            PUT("{\"op\": \"dense\", \"input\": \"l%d.h1\", \"weight\": \"l%d.i.w\", \"bias\": "
                "\"l%d.i.b\", \"output\": \"l%d.pre\"},"
                "{\"op\": \"gelu\", \"input\": \"l%d.pre\", \"output\": \"l%d.ff\"},",
                l, l, l, l, l, l);
        }
        PUT("{\"op\": \"dense\", \"input\": \"l%d.ff\", \"weight\": \"l%d.f.w\", \"bias\": "
            "\"l%d.f.b\", \"output\": \"l%d.fo\"},"
            "{\"op\": \"add\", \"inputs\": [\"l%d.fo\", \"l%d.h1\"], \"output\": \"l%d.fr\"},"
            "{\"op\": \"layernorm\", \"input\": \"l%d.fr\", \"weight\": \"l%d.ln2.w\", \"bias\": "
            "\"l%d.ln2.b\", \"eps\": 1e-12, \"output\": \"h%d\"},",
            l, l, l, l, l, l, l, l, l, l, l + 1);
    }
    PUT("{\"op\": \"mean_pool\", \"input\": \"h%d\", \"mask\": \"attention_mask\", \"output\": "
        "\"pooled\"},"
        "{\"op\": \"l2_normalize\", \"input\": \"pooled\", \"output\": \"embedding\"}]}",
        LAYERS);
#undef PUT
    assert_true(n < cap);
    model_config *cfg = NULL;
    char err[512] = "";
    if (model_config_parse(t, n, &cfg, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("config: %s", err);
    }
    free(t);
    return cfg;
}

/* An instance of the config with deterministic parameters in about [-1, 1]. */
static model *bert_model(int fp32_mask) {
    model_config *cfg = bert_config(fp32_mask);
    model_tensor_desc shapes[64];
    char names[64][32];
    size_t n = 0;
#define SHAPE(r, c, ...)                                                                           \
    do {                                                                                           \
        snprintf(names[n], sizeof(names[n]), __VA_ARGS__);                                         \
        shapes[n] = (model_tensor_desc){                                                           \
            .name = names[n], .ndims = (r) > 0 ? 2 : 1, .dims = {(r) > 0 ? (r) : (c), (c)}};       \
        n++;                                                                                       \
    } while (0)
    SHAPE(VOCAB, HID, "word");
    SHAPE(POS, HID, "pos");
    SHAPE(0, HID, "tt");
    SHAPE(0, HID, "e.ln.w");
    SHAPE(0, HID, "e.ln.b");
    for (int l = 0; l < LAYERS; l++) {
        const char *sq[] = {"q", "k", "v", "o"};
        for (int j = 0; j < 4; j++) {
            SHAPE(HID, HID, "l%d.%s.w", l, sq[j]);
            SHAPE(0, HID, "l%d.%s.b", l, sq[j]);
        }
        SHAPE(FF, HID, "l%d.i.w", l);
        SHAPE(0, FF, "l%d.i.b", l);
        SHAPE(HID, FF, "l%d.f.w", l);
        SHAPE(0, HID, "l%d.f.b", l);
        for (int j = 0; j < 4; j++) {
            SHAPE(0, HID, "l%d.ln%d.%c", l, 1 + j / 2, "wb"[j % 2]);
        }
    }
#undef SHAPE
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
        for (size_t k = 0; k < count; k++) {
            p[k] = (float)sin(1.7 * (double)i + (double)k * 0.731);
        }
        assert_int_equal(model_param_mark(m, shapes[i].name, 0, count), PS_STATUS_OK);
    }
    test_model_sync(m);
    return m;
}

static const float *P(model *m, const char *fmt, int l) {
    char name[32];
    snprintf(name, sizeof(name), fmt, l);
    float *p = NULL;
    assert_int_equal(model_param(m, name, &p, NULL), PS_STATUS_OK);
    return p;
}

/* ---- the reference, in double ------------------------------------------------------ */

static void ref_dense(const double *x, size_t rows, size_t in, const float *w, const float *b,
                      size_t out, int gelu, double *y) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            double acc = b[o];
            for (size_t i = 0; i < in; i++) {
                acc += x[r * in + i] * w[o * in + i];
            }
            y[r * out + o] = gelu ? 0.5 * acc * (1.0 + erf(acc / sqrt(2.0))) : acc;
        }
    }
}

static void ref_layernorm(double *x, size_t rows, const float *g, const float *b) {
    for (size_t r = 0; r < rows; r++) {
        double *xr = x + r * HID, mean = 0, var = 0;
        for (size_t c = 0; c < HID; c++) {
            mean += xr[c] / HID;
        }
        for (size_t c = 0; c < HID; c++) {
            var += (xr[c] - mean) * (xr[c] - mean) / HID;
        }
        for (size_t c = 0; c < HID; c++) {
            xr[c] = (xr[c] - mean) / sqrt(var + EPS) * g[c] + b[c];
        }
    }
}

/* y[b, t, :] per head softmax(q k^T / sqrt(d)) v over the keys with mask != 0. */
static void ref_attention(const double *q, const double *k, const double *v, size_t batch,
                          const double *mask, double *y) {
    const size_t d = HID / HEADS;
    for (size_t b = 0; b < batch; b++) {
        for (size_t h = 0; h < HEADS; h++) {
            for (size_t i = 0; i < SEQ; i++) {
                double p[SEQ], max = -INFINITY, sum = 0;
                for (size_t j = 0; j < SEQ; j++) {
                    p[j] = 0;
                    for (size_t e = 0; e < d; e++) {
                        p[j] +=
                            q[(b * SEQ + i) * HID + h * d + e] * k[(b * SEQ + j) * HID + h * d + e];
                    }
                    p[j] /= sqrt((double)d);
                    max = mask[b * SEQ + j] != 0 ? fmax(max, p[j]) : max;
                }
                for (size_t j = 0; j < SEQ; j++) {
                    p[j] = mask[b * SEQ + j] != 0 ? exp(p[j] - max) : 0;
                    sum += p[j];
                }
                for (size_t e = 0; e < d; e++) {
                    double acc = 0;
                    for (size_t j = 0; j < SEQ; j++) {
                        acc += p[j] / sum * v[(b * SEQ + j) * HID + h * d + e];
                    }
                    y[(b * SEQ + i) * HID + h * d + e] = acc;
                }
            }
        }
    }
}

/* The sentence embeddings [batch, HID] of ids under mask (as 0/1 doubles). */
static void ref_forward(model *m, const int64_t *ids, const double *mask, size_t batch,
                        double *out) {
    const size_t rows = batch * SEQ;
    double *h = malloc(rows * HID * sizeof(double)), *q = malloc(rows * HID * sizeof(double));
    double *k = malloc(rows * HID * sizeof(double)), *v = malloc(rows * HID * sizeof(double));
    double *c = malloc(rows * HID * sizeof(double)), *f = malloc(rows * FF * sizeof(double));
    assert_true(h && q && k && v && c && f);
    const float *word = P(m, "word", 0), *pos = P(m, "pos", 0), *tt = P(m, "tt", 0);
    for (size_t r = 0; r < rows; r++) {
        for (size_t e = 0; e < HID; e++) {
            h[r * HID + e] = (double)word[ids[r] * HID + e] + pos[(r % SEQ) * HID + e] + tt[e];
        }
    }
    ref_layernorm(h, rows, P(m, "e.ln.w", 0), P(m, "e.ln.b", 0));
    for (int l = 0; l < LAYERS; l++) {
        ref_dense(h, rows, HID, P(m, "l%d.q.w", l), P(m, "l%d.q.b", l), HID, 0, q);
        ref_dense(h, rows, HID, P(m, "l%d.k.w", l), P(m, "l%d.k.b", l), HID, 0, k);
        ref_dense(h, rows, HID, P(m, "l%d.v.w", l), P(m, "l%d.v.b", l), HID, 0, v);
        ref_attention(q, k, v, batch, mask, c);
        ref_dense(c, rows, HID, P(m, "l%d.o.w", l), P(m, "l%d.o.b", l), HID, 0, q);
        for (size_t i = 0; i < rows * HID; i++) {
            h[i] += q[i];
        }
        ref_layernorm(h, rows, P(m, "l%d.ln1.w", l), P(m, "l%d.ln1.b", l));
        ref_dense(h, rows, HID, P(m, "l%d.i.w", l), P(m, "l%d.i.b", l), FF, 1, f);
        ref_dense(f, rows, FF, P(m, "l%d.f.w", l), P(m, "l%d.f.b", l), HID, 0, q);
        for (size_t i = 0; i < rows * HID; i++) {
            h[i] += q[i];
        }
        ref_layernorm(h, rows, P(m, "l%d.ln2.w", l), P(m, "l%d.ln2.b", l));
    }
    for (size_t b = 0; b < batch; b++) {
        double weight = 0, norm = 0;
        for (size_t t = 0; t < SEQ; t++) {
            weight += mask[b * SEQ + t];
        }
        for (size_t e = 0; e < HID; e++) {
            double acc = 0;
            for (size_t t = 0; t < SEQ; t++) {
                acc += mask[b * SEQ + t] * h[(b * SEQ + t) * HID + e];
            }
            out[b * HID + e] = acc / fmax(weight, 1e-9);
            norm += out[b * HID + e] * out[b * HID + e];
        }
        for (size_t e = 0; e < HID; e++) {
            out[b * HID + e] /= fmax(sqrt(norm), EPS);
        }
    }
    free(h), free(q), free(k), free(v), free(c), free(f);
}

/* ---- the tests ----------------------------------------------------------------------- */

static void assert_close_all(const float *got, const double *want, size_t n) {
    ref_assert_close(got, want, n, ATOL, RTOL, "output");
}

/* Batch 3: sample 0 all tokens (one mask value 7: a token too), sample 1 right padding,
 * sample 2 a hole. Padding positions hold id 0. */
static const int64_t ids[BATCH * SEQ] = {1, 4, 9, 10, 2, 3, 3, 5, 0, 0, 7, 0, 6, 8, 0};
static const int64_t mask_i[BATCH * SEQ] = {1, 1, 7, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0};

static void mask_inputs(model_input in[2], int fp32_mask, float *mask_f) {
    for (size_t i = 0; i < BATCH * SEQ; i++) {
        mask_f[i] = mask_i[i] != 0 ? 1.0f : 0.0f;
    }
    in[0] = (model_input){.name = "input_ids", .ndims = 2, .dims = {BATCH, SEQ}, .ids = ids};
    in[1] = (model_input){.name = "attention_mask", .ndims = 2, .dims = {BATCH, SEQ}};
    if (fp32_mask) {
        in[1].data = mask_f;
    } else {
        in[1].ids = mask_i;
    }
}

static void check_bert(int fp32_mask) {
    model *m = bert_model(fp32_mask);
    double mask_d[BATCH * SEQ], want[BATCH * HID];
    for (size_t i = 0; i < BATCH * SEQ; i++) {
        mask_d[i] = mask_i[i] != 0 ? 1.0 : 0.0;
    }
    ref_forward(m, ids, mask_d, BATCH, want);
    float mask_f[BATCH * SEQ];
    model_input in[2];
    mask_inputs(in, fp32_mask, mask_f);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    char err[512] = "";
    model_output out = {.name = "embedding"};
    if (model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("infer: %s", err);
    }
    assert_int_equal(out.ndims, 2);
    assert_int_equal(out.dims[0], BATCH);
    assert_int_equal(out.dims[1], HID);
    assert_close_all(out.data, want, BATCH * HID);
    /* without a workspace, into a buffer */
    float buf[BATCH * HID];
    model_output out2 = {.name = "embedding", .buffer = buf, .capacity = BATCH * HID};
    assert_int_equal(model_infer(m, NULL, in, 2, &out2, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_close_all(buf, want, BATCH * HID);
    /* batch 1 (sample 1 alone) gives sample 1's embedding */
    model_input one[2];
    memcpy(one, in, sizeof(one));
    one[0].dims[0] = one[1].dims[0] = 1;
    one[0].ids = ids + SEQ;
    if (fp32_mask) {
        one[1].data = mask_f + SEQ;
    } else {
        one[1].ids = mask_i + SEQ;
    }
    assert_int_equal(model_infer(m, ws, one, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_close_all(out.data, want + HID, HID);
    model_workspace_destroy(ws);
    model_destroy(m);
}

static void test_bert(void **state) {
    (void)state;
    check_bert(0); /* INT64 mask */
    check_bert(1); /* FP32 mask */
}

/* One bad id at position 7 (sample 1, token 2): INVALID_ARGUMENT naming input and id. */
static void expect_bad_id(model *m, model_workspace *ws, int64_t id, const char *fragment) {
    int64_t bad[BATCH * SEQ];
    memcpy(bad, ids, sizeof(bad));
    bad[7] = id;
    float mask_f[BATCH * SEQ];
    model_input in[2];
    mask_inputs(in, 0, mask_f);
    in[0].ids = bad;
    float buf[BATCH * HID];
    model_output out = {.name = "embedding", .buffer = buf, .capacity = BATCH * HID};
    char err[512] = "";
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    if (strstr(err, fragment) == NULL) {
        fail_msg("id %lld: message \"%s\" lacks \"%s\"", (long long)id, err, fragment);
    }
}

static void test_bert_hostile(void **state) {
    (void)state;
    model *m = bert_model(0);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    expect_bad_id(m, ws, VOCAB,
                  "input \"input_ids\": id 11 (sample 1, token 2) is not a row of the embedding "
                  "\"word\" of layer \"we\" (ids are 0..10)");
    expect_bad_id(m, ws, INT64_MAX, "input \"input_ids\": id 9223372036854775807 (sample 1");
    expect_bad_id(m, ws, -5, "input \"input_ids\": id -5 (sample 1, token 2)");
    expect_bad_id(m, NULL, -1, "input \"input_ids\": id -1");
    /* the mask as floats where the model wants INT64 */
    float mask_f[BATCH * SEQ];
    model_input in[2];
    mask_inputs(in, 1, mask_f);
    model_output out = {.name = "embedding"};
    char err[512] = "";
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input \"attention_mask\" has no data; it is INT64"));
    /* a mask of the wrong length */
    mask_inputs(in, 0, mask_f);
    in[1].dims[1] = SEQ - 1;
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input \"attention_mask\": shape [3, 4] does not match"));
    /* still serves */
    mask_inputs(in, 0, mask_f);
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    model_workspace_destroy(ws);
    model_destroy(m);

    /* ids where the FP32 mask model wants floats */
    m = bert_model(1);
    mask_inputs(in, 0, mask_f);
    float buf[BATCH * HID];
    model_output out2 = {.name = "embedding", .buffer = buf, .capacity = BATCH * HID};
    assert_int_equal(model_infer(m, NULL, in, 2, &out2, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input \"attention_mask\" has no data; it is FP32"));
    model_destroy(m);
}

int main(int argc, char **argv) {
    test_model_backend_open(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bert),
        cmocka_unit_test(test_bert_hostile),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_model_backend_close();
    return failed;
}
