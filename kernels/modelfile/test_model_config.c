/* test_model_config.c: unit tests of config.json parsing and shape resolution (cmocka).
 *
 * Configs are written with single quotes (turned into double quotes before parsing)
 * so they stay readable here. Every error path is checked for its status and for a
 * fragment of its message, because the message is what a person acts on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model_config.h"

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static char *dq(const char *s) { /* ' -> " */
    char *t = strdup(s);
    assert_non_null(t);
    for (char *p = t; *p != '\0'; p++) {
        if (*p == '\'') {
            *p = '"';
        }
    }
    return t;
}

static ps_status parse_sq(const char *sq, model_config **ret_cfg, char *err, size_t err_len) {
    char *text = dq(sq);
    const ps_status st = model_config_parse(text, strlen(text), ret_cfg, err, err_len);
    free(text);
    return st;
}

static model_config *parse_ok(const char *sq) {
    model_config *cfg = NULL;
    char err[512] = "";
    const ps_status st = parse_sq(sq, &cfg, err, sizeof(err));
    if (st != PS_STATUS_OK) {
        fail_msg("parse failed: %s: %s", ps_status_name(st), err);
    }
    return cfg;
}

static void expect_error(const char *sq, ps_status want, const char *fragment) {
    model_config *cfg = NULL;
    char err[512] = "";
    const ps_status st = parse_sq(sq, &cfg, err, sizeof(err));
    if (st != want) {
        fail_msg("config %s: got %s (%s), want %s", sq, ps_status_name(st), err,
                 ps_status_name(want));
    }
    assert_null(cfg);
    if (strstr(err, fragment) == NULL) {
        fail_msg("config %s: message \"%s\" lacks \"%s\"", sq, err, fragment);
    }
}

static void assert_dims(const model_tensor_desc *d, uint32_t ndims, const int64_t *dims) {
    assert_int_equal(d->ndims, ndims);
    for (uint32_t i = 0; i < ndims; i++) {
        if (d->dims[i] != dims[i]) {
            fail_msg("%s: dim %u is %lld, want %lld", d->name, i, (long long)d->dims[i],
                     (long long)dims[i]);
        }
    }
}

static model_tensor_desc shape(const char *name, uint32_t ndims, int64_t d0, int64_t d1) {
    model_tensor_desc d = {.name = name, .ndims = ndims, .dims = {d0, d1}};
    return d;
}

#define DIGITS_HEAD                                                                                \
    "{'name': 'digits_mlp', 'max_batch_size': 64,"                                                 \
    " 'inputs':  [{'name': 'pixels', 'datatype': 'FP32', 'shape': [-1, 64]}],"                     \
    " 'outputs': [{'name': 'probabilities', 'datatype': 'FP32', 'shape': [-1, 10]}],"

static const char *digits =
    DIGITS_HEAD " 'layers': ["
                "  {'op': 'dense', 'input': 'pixels', 'output': 'h1', 'weight': 'fc1.weight',"
                "   'bias': 'fc1.bias', 'activation': 'relu'},"
                "  {'op': 'dense', 'input': 'h1', 'output': 'logits', 'weight': 'fc2.weight',"
                "   'bias': 'fc2.bias'},"
                "  {'op': 'softmax', 'input': 'logits', 'output': 'probabilities'}],"
                " 'dynamic_batching': {'max_queue_delay_microseconds': 100}}";

/* One input x [-1, 4], the given layers, an output y with the given dims. */
#define ONE_IN(layers, out_dims)                                                                   \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"                            \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': " out_dims "}],"                      \
    " 'layers': [" layers "]}"

/* Two inputs: a [-1, 4] and b with the given dims; output y [-1, 4]. */
#define TWO_IN(b_dims, layers)                                                                     \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': [-1, 4]},"                             \
    "            {'name': 'b', 'datatype': 'FP32', 'shape': " b_dims "}],"                         \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 4]}],"                           \
    " 'layers': [" layers "]}"

/* ------------------------------------------------------------------------------------ */
/* Happy paths */

static void test_digits_config(void **state) {
    (void)state;
    model_config *cfg = parse_ok(digits);
    assert_string_equal(model_config_name(cfg), "digits_mlp");
    assert_int_equal(model_config_max_batch_size(cfg), 64);

    model_tensor_desc d;
    assert_int_equal(model_config_input_count(cfg), 1);
    assert_true(model_config_input_at(cfg, 0, &d));
    assert_string_equal(d.name, "pixels");
    assert_string_equal(d.datatype, "FP32");
    assert_dims(&d, 2, (int64_t[]){-1, 64});
    assert_false(model_config_input_at(cfg, 1, &d));
    assert_int_equal(model_config_output_count(cfg), 1);
    assert_true(model_config_output_at(cfg, 0, &d));
    assert_string_equal(d.name, "probabilities");
    assert_dims(&d, 2, (int64_t[]){-1, 10});

    /* What the config alone fixes: fc1's columns from the input, fc2's rows from the
     * declared output (through the softmax), the hidden size nowhere. */
    assert_int_equal(model_config_param_count(cfg), 4);
    static const char *const names[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    static const int64_t want[4][2] = {{-1, 64}, {-1, 0}, {10, -1}, {10, 0}};
    for (size_t i = 0; i < 4; i++) {
        assert_true(model_config_param_at(cfg, i, &d));
        assert_string_equal(d.name, names[i]);
        assert_dims(&d, i % 2 == 0 ? 2 : 1, want[i]);
        size_t index;
        assert_true(model_config_param_find(cfg, names[i], &index));
        assert_int_equal(index, i);
    }
    assert_false(model_config_param_find(cfg, "h1", NULL));

    assert_int_equal(model_config_layer_count(cfg), 3);
    assert_int_equal(model_config_value_count(cfg), 4);
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_DENSE);
    assert_int_equal(l.activation, MODEL_CONFIG_ACTIVATION_RELU);
    assert_int_equal(l.input_count, 1);
    assert_int_equal(l.inputs[0], 0);
    assert_int_equal(l.output, 1);
    assert_int_equal(l.weight, 0);
    assert_int_equal(l.bias, 1);
    assert_int_equal(l.scale, MODEL_CONFIG_NONE);
    assert_string_equal(l.name, "h1");
    assert_true(model_config_layer_at(cfg, 2, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_SOFTMAX);
    assert_int_equal(l.inputs[0], 2);
    assert_int_equal(l.output, 3);
    assert_false(model_config_layer_at(cfg, 3, &l));
    assert_string_equal(model_config_value_name(cfg, 2), "logits");
    assert_null(model_config_value_name(cfg, 4));
    size_t v;
    assert_true(model_config_value_find(cfg, "probabilities", &v));
    assert_int_equal(v, 3);

    size_t len;
    assert_non_null(strstr(model_config_text(cfg, &len), "digits_mlp"));
    assert_true(len > 0);
    model_config *copy = NULL;
    assert_int_equal(model_config_clone(cfg, &copy), PS_STATUS_OK);
    assert_string_equal(model_config_name(copy), "digits_mlp");
    assert_int_equal(model_config_param_count(copy), 4);
    model_config_destroy(copy);
    model_config_destroy(cfg);
    model_config_destroy(NULL);
}

static void test_resolve(void **state) {
    (void)state;
    model_config *cfg = parse_ok(digits);
    /* any order; extra entries ignored; NULL datatype means FP32 */
    model_tensor_desc given[] = {
        shape("fc2.bias", 1, 10, 0),    shape("unused", 1, 3, 0),    shape("fc1.weight", 2, 32, 64),
        shape("fc2.weight", 2, 10, 32), shape("fc1.bias", 1, 32, 0),
    };
    given[2].datatype = "F32"; /* safetensors spelling */
    model_tensor_desc params[4];
    model_tensor_desc values[4];
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 5, params, values, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_string_equal(params[0].name, "fc1.weight");
    assert_dims(&params[0], 2, (int64_t[]){32, 64});
    assert_dims(&params[3], 1, (int64_t[]){10});
    assert_string_equal(values[1].name, "h1");
    assert_dims(&values[0], 2, (int64_t[]){-1, 64});
    assert_dims(&values[1], 2, (int64_t[]){-1, 32});
    assert_dims(&values[2], 2, (int64_t[]){-1, 10});
    assert_dims(&values[3], 2, (int64_t[]){-1, 10});
    assert_int_equal(model_config_resolve(cfg, given, 5, NULL, NULL, NULL, 0), PS_STATUS_OK);
    model_config_destroy(cfg);
}

static void expect_resolve_error(model_tensor_desc *given, size_t n, const char *fragment) {
    model_config *cfg = parse_ok(digits);
    char err[512] = "";
    const ps_status st = model_config_resolve(cfg, given, n, NULL, NULL, err, sizeof(err));
    if (st != PS_STATUS_INVALID_ARGUMENT || strstr(err, fragment) == NULL) {
        fail_msg("resolve: got %s \"%s\", want INVALID_ARGUMENT with \"%s\"", ps_status_name(st),
                 err, fragment);
    }
    model_config_destroy(cfg);
}

static void test_resolve_errors(void **state) {
    (void)state;
    model_tensor_desc g[4] = {shape("fc1.weight", 2, 32, 64), shape("fc1.bias", 1, 32, 0),
                              shape("fc2.weight", 2, 10, 32), shape("fc2.bias", 1, 10, 0)};
    expect_resolve_error(g, 3,
                         "parameter \"fc2.bias\" (the bias of layers[1], dense \"logits\") "
                         "is missing");
    g[2].dims[1] = 31; /* fc2's columns must be the hidden size fc1 gave h1 */
    expect_resolve_error(g, 4,
                         "\"fc2.weight\" (the weight of layers[1], dense \"logits\") has "
                         "shape [10, 31], but the graph needs [10, 32]");
    g[2].dims[1] = 32;
    g[0].dims[1] = 63; /* fc1's columns must be the input's 64 features */
    expect_resolve_error(g, 4, "has shape [32, 63], but the graph needs [32, 64]");
    g[0].dims[1] = 64;
    g[1].dims[0] = 31; /* fc1.bias must match fc1's rows */
    expect_resolve_error(g, 4,
                         "\"fc1.bias\" (the bias of layers[0], dense \"h1\") has shape "
                         "[31], but the graph needs [32]");
    g[1].dims[0] = 32;
    g[3].dims[0] = 9; /* fc2.bias: the declared output has 10 classes */
    expect_resolve_error(g, 4, "has shape [9], but the graph needs [10]");
    g[3].dims[0] = 10;
    g[0].ndims = 3; /* wrong rank */
    expect_resolve_error(g, 4, "has shape [32, 64, 0], but the graph needs [?, 64]");
    g[0].ndims = 2;
    g[0].dims[0] = 0; /* not positive */
    expect_resolve_error(g, 4, "has shape [0, 64]");
    g[0].dims[0] = 32;
    g[1].datatype = "FP16";
    expect_resolve_error(g, 4, "has datatype FP16; only FP32 is supported");
    g[1].datatype = NULL;
    /* sizes no replica could hold, caught here for the coordinator and replicas alike */
    g[0].dims[0] = 1 << 26; /* 2^32 elements */
    expect_resolve_error(g, 4, "more than 2147483647 elements, the most a parameter may have");
    /* a value that fits per sample, but not as a batch of max_batch_size */
    model_config *wide =
        parse_ok("{'name': 'wide', 'max_batch_size': 1000000,"
                 " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4096]}],"
                 " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 4096]}],"
                 " 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}");
    char err[512] = "";
    assert_int_equal(model_config_resolve(wide, NULL, 0, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "a batch of 1000000 (max_batch_size) would have more than"));
    model_config_destroy(wide);
}

static void test_other_ops_and_no_batch(void **state) {
    (void)state;
    /* every op; a shared parameter; no batch dim; a rank-3 input (dense on the last axis) */
    model_config *cfg = parse_ok(
        "{'name': 'zoo-1.0', 'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': [3, 2, 4]},"
        "  {'name': 'b', 'datatype': 'FP32', 'shape': [3, 2, 4]}],"
        " 'outputs': [{'name': 'p', 'datatype': 'FP32', 'shape': [3, 2, 5]},"
        "  {'name': 's', 'datatype': 'FP32', 'shape': [3, 2, 4]}],"
        " 'layers': ["
        "  {'op': 'add', 'inputs': ['a', 'b'], 'output': 's', 'name': 'sum'},"
        "  {'op': 'scale', 'input': 's', 'output': 'n', 'scale': 'g', 'shift': 'beta'},"
        "  {'op': 'dense', 'input': 'n', 'output': 'h', 'weight': 'w', 'activation': 'tanh'},"
        "  {'op': 'relu', 'input': 'h', 'output': 'r'},"
        "  {'op': 'dense', 'input': 'r', 'output': 'h2', 'weight': 'w2', 'bias': 'b2',"
        "   'activation': 'sigmoid'},"
        "  {'op': 'softmax', 'input': 'h2', 'output': 'p', 'axis': 2}]}");
    assert_int_equal(model_config_max_batch_size(cfg), 0);
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_ADD);
    assert_int_equal(l.input_count, 2);
    assert_string_equal(l.name, "sum");
    assert_true(model_config_layer_at(cfg, 1, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_SCALE);
    assert_int_not_equal(l.scale, MODEL_CONFIG_NONE);
    assert_true(model_config_layer_at(cfg, 4, &l));
    assert_int_equal(l.activation, MODEL_CONFIG_ACTIVATION_SIGMOID);
    model_tensor_desc d;
    assert_true(model_config_param_at(cfg, 0, &d)); /* g */
    assert_dims(&d, 1, (int64_t[]){4});
    assert_true(model_config_param_at(cfg, 2, &d)); /* w: columns fixed, rows free */
    assert_dims(&d, 2, (int64_t[]){-1, 4});
    assert_true(model_config_param_at(cfg, 3, &d)); /* w2: rows from the output p */
    assert_dims(&d, 2, (int64_t[]){5, -1});
    model_tensor_desc given[] = {shape("g", 1, 4, 0), shape("beta", 1, 4, 0), shape("w", 2, 6, 4),
                                 shape("w2", 2, 5, 6), shape("b2", 1, 5, 0)};
    model_tensor_desc values[8];
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 5, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_dims(&values[4], 3, (int64_t[]){3, 2, 6}); /* h */
    assert_dims(&values[7], 3, (int64_t[]){3, 2, 5}); /* p */
    model_config_destroy(cfg);

    /* a parameter shared by two layers: one row count for both */
    cfg = parse_ok(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w'},"
                          "{'op': 'dense', 'input': 'h', 'output': 'y', 'weight': 'w'}",
                          "[-1, 4]"));
    assert_true(model_config_param_at(cfg, 0, &d));
    assert_dims(&d, 2, (int64_t[]){4, 4});
    model_config_destroy(cfg);
}

static void test_load_file(void **state) {
    (void)state;
    char path[] = "/tmp/test_model_config_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *text = dq(digits);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    model_config *cfg = NULL;
    char err[512] = "";
    assert_int_equal(model_config_load(path, &cfg, err, sizeof(err)), PS_STATUS_OK);
    assert_string_equal(model_config_name(cfg), "digits_mlp");
    model_config_destroy(cfg);

    /* errors name the file */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"name\": ", f);
    fclose(f);
    cfg = NULL;
    assert_int_equal(model_config_load(path, &cfg, err, sizeof(err)), PS_STATUS_PARSE);
    assert_null(cfg);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not valid JSON"));
    unlink(path);
    assert_int_equal(model_config_load(path, &cfg, err, sizeof(err)), PS_STATUS_IO);
    assert_non_null(strstr(err, "cannot open"));
    free(text);
}

/* ------------------------------------------------------------------------------------ */
/* Error paths */

static void test_document_errors(void **state) {
    (void)state;
    expect_error("{'name': ", PS_STATUS_PARSE, "not valid JSON: line 1");
    expect_error("[1]", PS_STATUS_INVALID_ARGUMENT, "top level must be a JSON object");
    expect_error("{'name': 'a', 'name': 'b'}", PS_STATUS_PARSE, "duplicate");
    expect_error("{'max_batch_size': 1}", PS_STATUS_INVALID_ARGUMENT, "missing field \"name\"");
    expect_error("{'name': 7}", PS_STATUS_INVALID_ARGUMENT, "\"name\" must be a string");
    expect_error("{'name': ''}", PS_STATUS_INVALID_ARGUMENT, "\"name\" is empty");
    expect_error("{'name': '../x'}", PS_STATUS_INVALID_ARGUMENT, "may only contain");
    expect_error("{'name': 'm', 'max_batch_size': -1}", PS_STATUS_INVALID_ARGUMENT,
                 "max_batch_size must be an integer >= 0");
    expect_error("{'name': 'm', 'max_batch_size': '8'}", PS_STATUS_INVALID_ARGUMENT,
                 "max_batch_size must be");
    expect_error("{'name': 'm'}", PS_STATUS_INVALID_ARGUMENT, "missing field \"inputs\"");
    expect_error("{'name': 'm', 'inputs': []}", PS_STATUS_INVALID_ARGUMENT,
                 "\"inputs\" must be a non-empty list");
}

static void test_io_errors(void **state) {
    (void)state;
#define IO(in, out)                                                                                \
    "{'name': 'm', 'max_batch_size': 4, 'inputs': [" in "], 'outputs': [" out "],"                 \
    " 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}"
#define X(shape) "{'name': 'x', 'datatype': 'FP32', 'shape': " shape "}"
#define Y "{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 3]}"
    expect_error(IO(X("[-1, 3]"), ""), PS_STATUS_INVALID_ARGUMENT,
                 "\"outputs\" must be a non-empty list");
    expect_error(IO("{'name': 'x', 'datatype': 'INT32', 'shape': [-1, 3]}", Y),
                 PS_STATUS_UNIMPLEMENTED,
                 "inputs[0] (\"x\"): datatype \"INT32\" is not supported; only \"FP32\" and "
                 "\"INT64\"");
    expect_error(IO("{'name': 'x', 'datatype': 'INT64', 'shape': [-1, 3]}", Y),
                 PS_STATUS_INVALID_ARGUMENT,
                 "input \"x\" is an INT64 model input (ids); only embedding_bag and embedding "
                 "layers may read it");
    expect_error(IO(X("[-1, 3]"), "{'name': 'y', 'datatype': 'BF16', 'shape': [-1, 3]}"),
                 PS_STATUS_UNIMPLEMENTED, "outputs[0] (\"y\"): datatype \"BF16\"");
    expect_error(IO("{'name': 'x', 'shape': [-1, 3]}", Y), PS_STATUS_INVALID_ARGUMENT,
                 "inputs[0]: missing field \"datatype\"");
    expect_error(IO("{'name': 'x', 'datatype': 'FP32'}", Y), PS_STATUS_INVALID_ARGUMENT,
                 "inputs[0] (\"x\"): missing field \"shape\"");
    expect_error(IO("{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3], 'dims': [3]}", Y),
                 PS_STATUS_INVALID_ARGUMENT,
                 "inputs[0]: unknown field \"dims\" (expected: name, datatype, shape)");
    expect_error(IO("7", Y), PS_STATUS_INVALID_ARGUMENT, "inputs[0]: must be an object");
    expect_error(IO(X("[3]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "starting with the batch dim -1 (max_batch_size > 0)");
    expect_error(IO(X("[3, 3]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "shape[0] must be -1, the batch dim, because max_batch_size is 4");
    expect_error(IO(X("[-1, 0]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "shape[1] must be a positive integer");
    expect_error(IO(X("[-1, 3.5]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "shape[1] must be a positive integer");
    expect_error(IO(X("[-1, -1]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "shape[1] is -1; variable dims are not supported");
    expect_error(IO(X("[-1, 1, 1, 1, 1, 1, 1, 1, 1]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "2 to 8 dims");
    expect_error(IO(X("[-1, 65536, 65536]"), Y), PS_STATUS_INVALID_ARGUMENT, "elements per sample");
    expect_error(IO(X("'3'"), Y), PS_STATUS_INVALID_ARGUMENT, "shape must be a list");
    expect_error(IO(X("[-1, 3]") "," X("[-1, 3]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "inputs[1]: duplicate name \"x\" (also inputs[0])");
    expect_error(IO(X("[-1, 3]"), Y "," Y), PS_STATUS_INVALID_ARGUMENT,
                 "outputs[1]: duplicate name \"y\"");
    /* without batching: no -1 anywhere */
    expect_error("{'name': 'm', 'inputs': [" X(
                     "[-1, 3]") "], 'outputs': [" Y "],"
                                " 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}",
                 PS_STATUS_INVALID_ARGUMENT, "max_batch_size is 0, so there is no batch dim");
    /* declared output shape must match what the graph makes */
    expect_error(IO(X("[-1, 4]"), Y), PS_STATUS_INVALID_ARGUMENT,
                 "outputs[0]: \"y\" is declared with shape [-1, 3], but layers[0] produces "
                 "[-1, 4]");
    expect_error(IO(X("[-1, 3]"), "{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 3, 1]}"),
                 PS_STATUS_INVALID_ARGUMENT, "declared with shape [-1, 3, 1]");
    expect_error(IO(X("[-1, 3]"), "{'name': 'z', 'datatype': 'FP32', 'shape': [-1, 3]}"),
                 PS_STATUS_INVALID_ARGUMENT, "outputs[0]: no layer produces \"z\"");
    expect_error(IO(X("[-1, 3]"), "{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3]}"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "\"x\" is a model input; outputs must be produced by a layer");
#undef IO
#undef X
#undef Y
}

static void test_layer_errors(void **state) {
    (void)state;
    expect_error("{'name': 'm', 'max_batch_size': 8,"
                 " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"
                 " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 4]}]}",
                 PS_STATUS_INVALID_ARGUMENT, "missing field \"layers\"");
    expect_error(ONE_IN("", "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                 "\"layers\" must be a non-empty list");
    expect_error(ONE_IN("'relu'", "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                 "layers[0]: must be an object");
    expect_error(ONE_IN("{'op': 'lstm', 'input': 'x', 'output': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "layers[0]: unknown op \"lstm\" (supported: dense, relu, softmax, add, "
                 "scale, embedding_bag, concat, conv2d, maxpool2d, avgpool2d, flatten, reshape, "
                 "gelu, tanh, sigmoid, layernorm, embedding, position_embedding, attention, "
                 "mean_pool, l2_normalize)");
    expect_error(ONE_IN("{'input': 'x', 'output': 'y'}", "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                 "layers[0]: missing field \"op\"");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'x'}", "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                 "layers[0]: missing field \"output\"");
    expect_error(ONE_IN("{'op': 'relu', 'output': 'y'}", "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                 "layers[0] (relu \"y\"): missing field \"input\"");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "layers[0] (dense \"y\"): missing field \"weight\"");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'w',"
                        " 'activaton': 'relu'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "unknown field \"activaton\" (expected: op, name, "
                 "input, output, weight, bias, activation)");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'x', 'output': 'y', 'weight': 'w'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "unknown field \"weight\"");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'w',"
                        " 'activation': 'swish'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "unknown activation \"swish\" (supported: none, relu, sigmoid, tanh, gelu)");
    expect_error(ONE_IN("{'op': 'softmax', 'input': 'x', 'output': 'y', 'axis': 0}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "softmax axis must be the last one (-1 or 1)");
    expect_error(ONE_IN("{'op': 'scale', 'input': 'x', 'output': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "needs \"scale\", \"shift\" or both");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'x', 'output': 'y', 'name': ''}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "\"name\" is empty");

    /* references */
    expect_error(ONE_IN("{'op': 'relu', 'input': 'nope', 'output': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "layers[0] (relu \"y\"): input \"nope\" is not a model input and no earlier "
                 "layer produces it");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'h', 'output': 'y'},"
                        "{'op': 'relu', 'input': 'x', 'output': 'h'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "input \"h\" is produced by layers[1], which comes later; list layers in "
                 "execution order");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'y', 'output': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "is produced by layers[0], which is this layer");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w'},"
                        "{'op': 'relu', 'input': 'w', 'output': 'y'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "input \"w\" is a parameter tensor (the weight of layers[0])");

    /* duplicate names */
    expect_error(ONE_IN("{'op': 'relu', 'input': 'x', 'output': 'x'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "output \"x\" is already a model input; every name must be unique");
    expect_error(ONE_IN("{'op': 'relu', 'input': 'x', 'output': 'y'},"
                        "{'op': 'relu', 'input': 'x', 'output': 'y'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "output \"y\" is already the output of layers[0]");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w'},"
                        "{'op': 'relu', 'input': 'h', 'output': 'w'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "output \"w\" is already the weight parameter of layers[0]");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'x'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT, "weight \"x\" names a model input, not a parameter");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'y', 'weight': 'y'}", "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "output \"y\" is also the name of its weight parameter");
    expect_error(ONE_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w'},"
                        "{'op': 'dense', 'input': 'h', 'output': 'y', 'weight': 'v', 'bias': 'w'}",
                        "[-1, 4]"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "parameter \"w\" is used as a 1-dim bias here but as a 2-dim weight by "
                 "layers[0]");

    /* shapes fixed by the config that disagree */
    expect_error(TWO_IN("[-1, 5]", "{'op': 'add', 'inputs': ['a', 'b'], 'output': 'y'}"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "inputs must have the same shape, but dim 1 of \"a\" is 4 and of \"b\" is 5");
    expect_error(TWO_IN("[-1, 4, 1]", "{'op': 'add', 'inputs': ['a', 'b'], 'output': 'y'}"),
                 PS_STATUS_INVALID_ARGUMENT, "differ in rank");
    expect_error(TWO_IN("[-1, 4]", "{'op': 'add', 'inputs': ['a'], 'output': 'y'}"),
                 PS_STATUS_INVALID_ARGUMENT, "\"inputs\" must be a list of two value names");
    expect_error(TWO_IN("[-1, 4]", "{'op': 'add', 'input': 'a', 'output': 'y'}"),
                 PS_STATUS_INVALID_ARGUMENT, "unknown field \"input\"");
    expect_error(TWO_IN("[-1, 5]", "{'op': 'scale', 'input': 'a', 'output': 'h', 'scale': 'g'},"
                                   "{'op': 'scale', 'input': 'b', 'output': 'y', 'scale': 'g'}"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "layers[1] (scale \"y\"): scale \"g\" dim 0 is 4, but the feature count of "
                 "input \"b\" is 5");
    expect_error(TWO_IN("[-1, 5]", "{'op': 'dense', 'input': 'a', 'output': 'h', 'weight': 'w'},"
                                   "{'op': 'dense', 'input': 'b', 'output': 'y', 'weight': 'w'}"),
                 PS_STATUS_INVALID_ARGUMENT,
                 "weight \"w\" dim 1 is 4, but the feature count of input \"b\" is 5");
}

/* A deep config (names looked up by hash while it is parsed): 5,000 dense layers in a
 * chain, each its own weight and bias, all found; then the same chain whose last layer
 * reuses the weight of layers[3] with another rank, or takes as input a parameter, or
 * writes an output that a parameter already names: each refused, naming layers[3]. */
static char *deep_config(size_t n, const char *last) {
    size_t cap = n * 160 + 1024, at = 0;
    char *t = malloc(cap);
    assert_non_null(t);
    at += (size_t)snprintf(t + at, cap - at,
                           "{'name': 'deep', 'max_batch_size': 1, 'inputs': [{'name': 'x', "
                           "'datatype': 'FP32', 'shape': [-1, 4]}], 'outputs': [{'name': 'h%zu', "
                           "'datatype': 'FP32', 'shape': [-1, 4]}], 'layers': [",
                           n - 1);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 == n && last) {
            at += (size_t)snprintf(t + at, cap - at, "%s]}", last);
            break;
        }
        at += (size_t)snprintf(t + at, cap - at,
                               "{'op': 'dense', 'input': '%s%zu', 'output': 'h%zu', 'weight': "
                               "'w%zu', 'bias': 'b%zu'}%s",
                               i ? "h" : "x", i ? i - 1 : 0, i, i, i, i + 1 < n ? ", " : "]}");
    }
    if (strncmp(t + strlen(t) - 2, "]}", 2) != 0)
        fail_msg("deep config cut");
    /* the first layer's input is 'x0': make it 'x' */
    char *x0 = strstr(t, "'input': 'x0'");
    assert_non_null(x0);
    memmove(x0 + 11, x0 + 12, strlen(x0 + 12) + 1);
    return t;
}

static void test_deep_config(void **state) {
    (void)state;
    enum { N = 5000 };
    char *t = deep_config(N, NULL);
    model_config *cfg = parse_ok(t);
    free(t);
    assert_int_equal(model_config_layer_count(cfg), N);
    size_t i = 0;
    assert_true(model_config_param_find(cfg, "w4321", &i));
    assert_true(model_config_value_find(cfg, "h4999", &i));
    assert_false(model_config_param_find(cfg, "h4999", &i));
    assert_false(model_config_value_find(cfg, "w4321", &i));
    model_config_destroy(cfg);
    char last[256];
    snprintf(last, sizeof last, "{'op': 'scale', 'input': 'h%d', 'output': 'h%d', 'scale': 'w3'}",
             N - 2, N - 1);
    t = deep_config(N, last);
    expect_error(t, PS_STATUS_INVALID_ARGUMENT, "but as a 2-dim weight by layers[3]");
    free(t);
    snprintf(last, sizeof last, "{'op': 'dense', 'input': 'b3', 'output': 'h%d', 'weight': 'wz'}",
             N - 1);
    t = deep_config(N, last);
    expect_error(t, PS_STATUS_INVALID_ARGUMENT, "is a parameter tensor (the bias of layers[3])");
    free(t);
    snprintf(last, sizeof last, "{'op': 'dense', 'input': 'h%d', 'output': 'w3', 'weight': 'wz'}",
             N - 2);
    t = deep_config(N, last);
    expect_error(t, PS_STATUS_INVALID_ARGUMENT, "layers[3]");
    free(t);
}

static void test_error_buffer_edge_cases(void **state) {
    (void)state;
    model_config *cfg = NULL;
    char tiny[8];
    memset(tiny, 'x', sizeof(tiny));
    assert_int_equal(parse_sq("{'name': 7}", &cfg, tiny, sizeof(tiny)), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1); /* truncated, terminated */
    assert_int_equal(parse_sq("{'name': 7}", &cfg, NULL, 0), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(model_config_parse(NULL, 0, &cfg, NULL, 0), PS_STATUS_PARSE);
    assert_int_equal(model_config_parse("{}", 2, NULL, NULL, 0), PS_STATUS_INVALID_ARGUMENT);
    assert_null(cfg);
    assert_string_equal(model_config_op_name(MODEL_CONFIG_OP_SCALE), "scale");
    assert_string_equal(model_config_op_name((model_config_op)42), "?");
    assert_string_equal(model_config_activation_name(MODEL_CONFIG_ACTIVATION_TANH), "tanh");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digits_config),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_resolve_errors),
        cmocka_unit_test(test_other_ops_and_no_batch),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_document_errors),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_layer_errors),
        cmocka_unit_test(test_error_buffer_edge_cases),
        cmocka_unit_test(test_deep_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
