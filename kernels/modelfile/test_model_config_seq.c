/* test_model_config_seq.c: unit tests of the sequence ops of config.json (cmocka):
 * embedding, position_embedding, attention (the first 3-input layer), mean_pool,
 * l2_normalize and their masks: a one-layer BERT encoder in the exporter's syntax, the
 * dims the parser infers, the parameter shapes it fixes, and an error naming the layer
 * for each wrong rank, shape, field or rule (heads that do not divide, fewer positions
 * than tokens, a mask of the wrong shape, three inputs to add, ...).
 *
 * Before these ops existed every config here was refused ("unknown op"), and INT64
 * inputs could feed embedding_bag layers only; every test would have failed on that
 * code. Configs are written with single quotes, turned into double quotes before
 * parsing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_config_parse.h"

/* Token ids and a mask of 5 tokens; FP32 sequences x [-1, 5, 8] and a flat f [-1, 8]. */
#define SEQ_IN                                                                                     \
    "{'name': 'seq', 'max_batch_size': 4,"                                                         \
    " 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 5]},"                          \
    "  {'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 5]},"                                   \
    "  {'name': 'fmask', 'datatype': 'FP32', 'shape': [-1, 5]},"                                   \
    "  {'name': 'x', 'datatype': 'FP32', 'shape': [-1, 5, 8]},"                                    \
    "  {'name': 'f', 'datatype': 'FP32', 'shape': [-1, 8]}],"
/* A config of SEQ_IN's inputs, one output y of shape `out`, and the given layers. */
#define SEQ(layers, out)                                                                           \
    SEQ_IN " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': " out "}],"                    \
           " 'layers': [" layers "]}"

/* One BERT encoder layer (hidden 8, 2 heads, 5 tokens) in the exporter's syntax. */
static const char *bert =
    "{'name': 'bert', 'max_batch_size': 4,"
    " 'inputs': [{'name': 'input_ids', 'datatype': 'INT64', 'shape': [-1, 5]},"
    "  {'name': 'attention_mask', 'datatype': 'INT64', 'shape': [-1, 5]}],"
    " 'outputs': [{'name': 'embedding', 'datatype': 'FP32', 'shape': [-1, 8]}],"
    " 'layers': ["
    "  {'op': 'embedding', 'input': 'input_ids', 'weight': 'word', 'output': 'we'},"
    "  {'op': 'position_embedding', 'input': 'we', 'weight': 'pos', 'output': 'wp'},"
    "  {'op': 'scale', 'input': 'wp', 'shift': 'tt', 'output': 'wt'},"
    "  {'op': 'layernorm', 'input': 'wt', 'weight': 'ln0.w', 'bias': 'ln0.b', 'eps': 1e-12,"
    "   'output': 'h0'},"
    "  {'op': 'dense', 'input': 'h0', 'weight': 'q.w', 'bias': 'q.b', 'output': 'q'},"
    "  {'op': 'dense', 'input': 'h0', 'weight': 'k.w', 'bias': 'k.b', 'output': 'k'},"
    "  {'op': 'dense', 'input': 'h0', 'weight': 'v.w', 'bias': 'v.b', 'output': 'v'},"
    "  {'op': 'attention', 'inputs': ['q', 'k', 'v'], 'heads': 2, 'mask': 'attention_mask',"
    "   'output': 'ctx'},"
    "  {'op': 'dense', 'input': 'ctx', 'weight': 'o.w', 'bias': 'o.b', 'output': 'ao'},"
    "  {'op': 'add', 'inputs': ['ao', 'h0'], 'output': 'ar'},"
    "  {'op': 'layernorm', 'input': 'ar', 'weight': 'ln1.w', 'bias': 'ln1.b', 'eps': 1e-12,"
    "   'output': 'h1'},"
    "  {'op': 'dense', 'input': 'h1', 'weight': 'i.w', 'bias': 'i.b', 'activation': 'gelu',"
    "   'output': 'ff'},"
    "  {'op': 'dense', 'input': 'ff', 'weight': 'f.w', 'bias': 'f.b', 'output': 'fo'},"
    "  {'op': 'add', 'inputs': ['fo', 'h1'], 'output': 'fr'},"
    "  {'op': 'layernorm', 'input': 'fr', 'weight': 'ln2.w', 'bias': 'ln2.b', 'eps': 1e-12,"
    "   'output': 'h2'},"
    "  {'op': 'mean_pool', 'input': 'h2', 'mask': 'attention_mask', 'output': 'pooled'},"
    "  {'op': 'l2_normalize', 'input': 'pooled', 'output': 'embedding'}]}";

/* The shapes a resolve of `bert` gets: hidden 8, vocab 11, 7 positions, ff 16. */
static void bert_given(model_tensor_desc *g, size_t *ret_n) {
    size_t n = 0;
    g[n++] = (model_tensor_desc){.name = "word", .ndims = 2, .dims = {11, 8}};
    g[n++] = (model_tensor_desc){.name = "pos", .ndims = 2, .dims = {7, 8}};
    g[n++] = (model_tensor_desc){.name = "tt", .ndims = 1, .dims = {8}};
    static const char *const sq[] = {"q", "k", "v", "o"};
    static const char *const w_names[] = {"q.w", "k.w", "v.w", "o.w"};
    static const char *const b_names[] = {"q.b", "k.b", "v.b", "o.b"};
    for (size_t i = 0; i < sizeof(sq) / sizeof(sq[0]); i++) {
        g[n++] = (model_tensor_desc){.name = w_names[i], .ndims = 2, .dims = {8, 8}};
        g[n++] = (model_tensor_desc){.name = b_names[i], .ndims = 1, .dims = {8}};
    }
    static const char *const ln[] = {"ln0.w", "ln0.b", "ln1.w", "ln1.b", "ln2.w", "ln2.b"};
    for (size_t i = 0; i < sizeof(ln) / sizeof(ln[0]); i++) {
        g[n++] = (model_tensor_desc){.name = ln[i], .ndims = 1, .dims = {8}};
    }
    g[n++] = (model_tensor_desc){.name = "i.w", .ndims = 2, .dims = {16, 8}};
    g[n++] = (model_tensor_desc){.name = "i.b", .ndims = 1, .dims = {16}};
    g[n++] = (model_tensor_desc){.name = "f.w", .ndims = 2, .dims = {8, 16}};
    g[n++] = (model_tensor_desc){.name = "f.b", .ndims = 1, .dims = {8}};
    *ret_n = n;
}

static void test_bert_parses(void **state) {
    (void)state;
    model_config *cfg = parse_ok(bert);
    assert_int_equal(model_config_layer_count(cfg), 17);
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_EMBEDDING);
    assert_int_equal(l.input_count, 1);
    assert_int_equal(l.inputs[0], 0);
    assert_int_equal(l.mask, MODEL_CONFIG_NONE);
    assert_true(model_config_layer_at(cfg, 7, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_ATTENTION);
    assert_int_equal(l.input_count, 3);
    assert_int_equal(l.heads, 2);
    assert_int_equal(l.mask, 1); /* attention_mask */
    size_t q, k, v;
    assert_true(model_config_value_find(cfg, "q", &q));
    assert_true(model_config_value_find(cfg, "k", &k));
    assert_true(model_config_value_find(cfg, "v", &v));
    assert_int_equal(l.inputs[0], q);
    assert_int_equal(l.inputs[1], k);
    assert_int_equal(l.inputs[2], v);
    assert_true(model_config_layer_at(cfg, 15, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_MEAN_POOL);
    assert_int_equal(l.mask, 1);
    assert_true(model_config_layer_at(cfg, 16, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_L2_NORMALIZE);
    assert_true(l.eps > 0.99e-12f && l.eps < 1.01e-12f); /* the default */
    assert_string_equal(model_config_op_name(MODEL_CONFIG_OP_POSITION_EMBEDDING),
                        "position_embedding");
    assert_string_equal(model_config_op_name(MODEL_CONFIG_OP_L2_NORMALIZE), "l2_normalize");

    /* The declared output fixes the hidden size: the word table's columns are 8. */
    model_tensor_desc d;
    size_t i;
    assert_true(model_config_param_find(cfg, "word", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 2, (const int64_t[]){-1, 8});
    assert_true(model_config_param_find(cfg, "pos", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 2, (const int64_t[]){-1, 8});

    model_tensor_desc given[32];
    size_t n;
    bert_given(given, &n);
    model_tensor_desc values[19];
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, n, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_string_equal(values[0].datatype, "INT64");
    assert_string_equal(values[1].datatype, "INT64");
    expect_dims(&values[2], 3, (const int64_t[]){-1, 5, 8});   /* we */
    expect_dims(&values[9], 3, (const int64_t[]){-1, 5, 8});   /* ctx */
    expect_dims(&values[13], 3, (const int64_t[]){-1, 5, 16}); /* ff: dense on 3-D */
    expect_dims(&values[17], 2, (const int64_t[]){-1, 8});     /* pooled */
    expect_dims(&values[18], 2, (const int64_t[]){-1, 8});     /* embedding */

    /* Fewer positions than tokens: refused at resolve, naming the layer and table. */
    given[1].dims[0] = 4;
    assert_int_equal(model_config_resolve(cfg, given, n, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(
        strstr(err, "layers[1] (position_embedding \"wp\"): weight \"pos\" has 4 rows"));
    given[1].dims[0] = 5; /* exactly S: fine */
    assert_int_equal(model_config_resolve(cfg, given, n, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_OK);
    model_config_destroy(cfg);
}

/* Heads that do not divide a width only the weights fix: refused at resolve. */
static void test_heads_at_resolve(void **state) {
    (void)state;
    model_config *cfg =
        parse_ok(SEQ("{'op': 'dense', 'input': 'x', 'weight': 'w', 'output': 'q'},"
                     "{'op': 'attention', 'inputs': ['q', 'q', 'q'], 'heads': 4, 'output': 'a'},"
                     "{'op': 'mean_pool', 'input': 'a', 'output': 'p'},"
                     "{'op': 'dense', 'input': 'p', 'weight': 'w2', 'output': 'y'}",
                     "[-1, 6]"));
    model_tensor_desc given[2] = {{.name = "w", .ndims = 2, .dims = {6, 8}},
                                  {.name = "w2", .ndims = 2, .dims = {6, 6}}};
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 2, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "layers[1] (attention \"a\"): 4 heads do not divide the 6 "
                                "features of \"q\""));
    model_config_destroy(cfg);
    /* with a mask given as FP32 and 2 heads it resolves */
    cfg = parse_ok(SEQ("{'op': 'dense', 'input': 'x', 'weight': 'w', 'output': 'q'},"
                       "{'op': 'attention', 'inputs': ['q', 'q', 'q'], 'heads': 2, 'mask': "
                       "'fmask', 'output': 'a'},"
                       "{'op': 'mean_pool', 'input': 'a', 'mask': 'fmask', 'output': 'p'},"
                       "{'op': 'dense', 'input': 'p', 'weight': 'w2', 'output': 'y'}",
                       "[-1, 6]"));
    assert_int_equal(model_config_resolve(cfg, given, 2, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_OK);
    model_config_destroy(cfg);
}

/* Without a batch dim: ids [S] -> [S, D] -> [D]. */
static void test_unbatched(void **state) {
    (void)state;
    model_config *cfg =
        parse_ok("{'name': 'u', 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [3]}],"
                 " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [4]}],"
                 " 'layers': [{'op': 'embedding', 'input': 'ids', 'weight': 'e', 'output': 'h'},"
                 "  {'op': 'attention', 'inputs': ['h', 'h', 'h'], 'heads': 2, 'mask': 'ids',"
                 "   'output': 'a'},"
                 "  {'op': 'mean_pool', 'input': 'a', 'mask': 'ids', 'output': 'p'},"
                 "  {'op': 'l2_normalize', 'input': 'p', 'eps': 1e-6, 'output': 'y'}]}");
    model_tensor_desc given[1] = {{.name = "e", .ndims = 2, .dims = {9, 4}}};
    model_tensor_desc values[5];
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 1, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    expect_dims(&values[1], 2, (const int64_t[]){3, 4});
    expect_dims(&values[3], 1, (const int64_t[]){4});
    model_config_destroy(cfg);
}

static void test_embedding_errors(void **state) {
    (void)state;
    expect_invalid(SEQ("{'op': 'embedding', 'input': 'f', 'weight': 'e', 'output': 'h'},"
                       "{'op': 'mean_pool', 'input': 'h', 'output': 'y'}",
                       "[-1, 8]"),
                   "layers[0] (embedding \"h\"): input \"f\" must be a model input of datatype "
                   "INT64 and shape [-1, S] (token ids)");
    expect_invalid(SEQ("{'op': 'embedding', 'input': 'ids', 'output': 'y'}", "[-1, 5, 8]"),
                   "layers[0] (embedding \"y\"): missing field \"weight\"");
    expect_invalid(SEQ("{'op': 'embedding', 'input': 'ids', 'weight': 'e', 'table': 't', "
                       "'output': 'y'}",
                       "[-1, 5, 8]"),
                   "\"table\"");
    /* the declared output fixes D; a dense reading it must agree */
    expect_invalid(SEQ("{'op': 'embedding', 'input': 'ids', 'weight': 'e', 'output': 'h'},"
                       "{'op': 'add', 'inputs': ['h', 'x'], 'output': 'y'}",
                       "[-1, 5, 3]"),
                   "is declared with shape [-1, 5, 3], but layers[1] produces [-1, 5, 8]");
    /* an INT64 input read by anything else is refused */
    expect_invalid(SEQ("{'op': 'relu', 'input': 'mask', 'output': 'y'}", "[-1, 5]"),
                   "input \"mask\" is an INT64 model input (ids); only embedding_bag and "
                   "embedding layers may read it");
}

static void test_position_errors(void **state) {
    (void)state;
    expect_invalid(
        SEQ("{'op': 'position_embedding', 'input': 'f', 'weight': 'p', 'output': 'y'}", "[-1, 8]"),
        "layers[0] (position_embedding \"y\"): input \"f\" has 2 dims; it must be a "
        "sequence [-1, S, D]");
    expect_invalid(SEQ("{'op': 'position_embedding', 'input': 'x', 'output': 'y'}", "[-1, 5, 8]"),
                   "missing field \"weight\"");
    /* the table's width is the sequence's */
    model_config *cfg = parse_ok(SEQ(
        "{'op': 'position_embedding', 'input': 'x', 'weight': 'p', 'output': 'y'}", "[-1, 5, 8]"));
    model_tensor_desc given[1] = {{.name = "p", .ndims = 2, .dims = {512, 7}}};
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 1, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "parameter \"p\""));
    given[0].dims[1] = 8;
    assert_int_equal(model_config_resolve(cfg, given, 1, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_OK);
    model_config_destroy(cfg);
}

static void test_attention_errors(void **state) {
    (void)state;
    expect_invalid(
        SEQ("{'op': 'attention', 'inputs': ['x', 'x'], 'heads': 2, 'output': 'y'}", "[-1, 5, 8]"),
        "layers[0] (attention \"y\"): \"inputs\" must be a list of three value names");
    expect_invalid(SEQ("{'op': 'attention', 'heads': 2, 'output': 'y'}", "[-1, 5, 8]"),
                   "missing field \"inputs\" (a list of three value names)");
    expect_invalid(
        SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'output': 'y'}", "[-1, 5, 8]"),
        "\"heads\" must be an integer from 1 to 65536");
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 0, 'output': 'y'}",
                       "[-1, 5, 8]"),
                   "\"heads\" must be an integer from 1 to 65536");
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 3, 'output': 'y'}",
                       "[-1, 5, 8]"),
                   "layers[0] (attention \"y\"): 3 heads do not divide the 8 features of \"x\"");
    expect_invalid(
        SEQ("{'op': 'attention', 'inputs': ['f', 'f', 'f'], 'heads': 2, 'output': 'y'}", "[-1, 8]"),
        "input \"f\" has 2 dims; it must be a sequence [-1, S, D]");
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'f', 'x'], 'heads': 2, 'output': 'y'}",
                       "[-1, 5, 8]"),
                   "inputs \"x\" (3 dims) and \"f\" (2 dims) differ in rank");
    expect_invalid(
        SEQ("{'op': 'dense', 'input': 'x', 'weight': 'w', 'output': 'k'},"
            "{'op': 'reshape', 'input': 'f', 'shape': [2, 4], 'output': 'v'},"
            "{'op': 'attention', 'inputs': ['x', 'k', 'v'], 'heads': 2, 'output': 'y'}",
            "[-1, 5, 8]"),
        "q, k and v must have the same shape, but dim 1 of \"x\" is 5 and of \"v\" is 2");
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'ids'], 'heads': 2, "
                       "'output': 'y'}",
                       "[-1, 5, 8]"),
                   "input \"ids\" is an INT64 model input (ids)");
    /* masks: a model input [-1, S] */
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 2, 'mask': 'x', "
                       "'output': 'y'}",
                       "[-1, 5, 8]"),
                   "mask \"x\" has 3 dims; it must be [-1, S], as \"x\" is [-1, S, D]");
    expect_invalid(SEQ("{'op': 'relu', 'input': 'fmask', 'output': 'm2'},"
                       "{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 2, 'mask': 'm2', "
                       "'output': 'y'}",
                       "[-1, 5, 8]"),
                   "mask \"m2\" is not a model input; a mask must be a model input of shape "
                   "[-1, S] (INT64 or FP32)");
    expect_invalid(SEQ("{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 2, 'mask': 'nope', "
                       "'output': 'y'}",
                       "[-1, 5, 8]"),
                   "mask \"nope\" is not a model input");
    expect_invalid(
        "{'name': 'm', 'max_batch_size': 4,"
        " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 5, 8]},"
        "  {'name': 'm', 'datatype': 'INT64', 'shape': [-1, 4]}],"
        " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 5, 8]}],"
        " 'layers': [{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 2, 'mask': 'm',"
        "  'output': 'y'}]}",
        "layers[0] (attention \"y\"): mask \"m\" dim 1 is 4, but \"x\" has 5 there");
    expect_invalid("{'name': 'm', 'max_batch_size': 1,"
                   " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 8193, 2]}],"
                   " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 8193, 2]}],"
                   " 'layers': [{'op': 'attention', 'inputs': ['x', 'x', 'x'], 'heads': 1,"
                   "  'output': 'y'}]}",
                   "layers[0] (attention \"y\"): \"x\" has 8193 tokens; attention takes at most "
                   "8192");
    /* add still takes exactly two */
    expect_invalid(SEQ("{'op': 'add', 'inputs': ['x', 'x', 'x'], 'output': 'y'}", "[-1, 5, 8]"),
                   "layers[0] (add \"y\"): \"inputs\" must be a list of two value names");
}

static void test_pool_errors(void **state) {
    (void)state;
    expect_invalid(SEQ("{'op': 'mean_pool', 'input': 'f', 'output': 'y'}", "[-1, 8]"),
                   "layers[0] (mean_pool \"y\"): input \"f\" has 2 dims; it must be a sequence");
    expect_invalid(SEQ("{'op': 'mean_pool', 'input': 'x', 'output': 'y'}", "[-1, 5, 8]"),
                   "\"y\" is declared with shape [-1, 5, 8], but layers[0] produces [-1, 8]");
    expect_invalid(SEQ("{'op': 'mean_pool', 'input': 'x', 'mask': 'f', 'output': 'y'}", "[-1, 8]"),
                   "mask \"f\" dim 1 is 8, but \"x\" has 5 there");
    expect_invalid(SEQ("{'op': 'mean_pool', 'input': 'x', 'mask': 5, 'output': 'y'}", "[-1, 8]"),
                   "\"mask\"");
    expect_invalid(SEQ("{'op': 'mean_pool', 'input': 'x', 'heads': 2, 'output': 'y'}", "[-1, 8]"),
                   "\"heads\"");
    expect_invalid(SEQ("{'op': 'l2_normalize', 'input': 'f', 'eps': 0, 'output': 'y'}", "[-1, 8]"),
                   "layers[0] (l2_normalize \"y\"): \"eps\" must be a finite number > 0");
    expect_invalid(
        SEQ("{'op': 'l2_normalize', 'input': 'f', 'eps': 'big', 'output': 'y'}", "[-1, 8]"),
        "\"eps\" must be a finite number > 0");
    expect_invalid(
        SEQ("{'op': 'l2_normalize', 'input': 'f', 'weight': 'w', 'output': 'y'}", "[-1, 8]"),
        "\"weight\"");
    /* l2_normalize keeps the shape */
    expect_invalid(SEQ("{'op': 'l2_normalize', 'input': 'x', 'output': 'y'}", "[-1, 8]"),
                   "but layers[0] produces [-1, 5, 8]");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bert_parses),     cmocka_unit_test(test_heads_at_resolve),
        cmocka_unit_test(test_unbatched),       cmocka_unit_test(test_embedding_errors),
        cmocka_unit_test(test_position_errors), cmocka_unit_test(test_attention_errors),
        cmocka_unit_test(test_pool_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
