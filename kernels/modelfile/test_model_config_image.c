/* test_model_config_image.c: unit tests of the image ops of config.json (cmocka):
 * conv2d, maxpool2d, avgpool2d, flatten, reshape, layernorm, the elementwise gelu /
 * tanh / sigmoid layers and dense's gelu activation: the dims they infer, the parameter
 * shapes they fix (model_config_param_at, model_config_resolve), and their errors.
 *
 * Before these ops existed every config here was refused ("unknown op", "unknown
 * activation"); every test would have failed on that code. Configs are written with
 * single quotes, turned into double quotes before parsing.
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

/* The digits CNN: 64 pixels -> [1, 8, 8] -> conv 4x3x3 (pad 1) -> relu -> maxpool 2 ->
 * flatten -> dense -> softmax over 10 classes. */
#define CNN_HEAD                                                                                   \
    "{'name': 'cnn', 'max_batch_size': 16,"                                                        \
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 64]}],"                           \
    " 'outputs': [{'name': 'probs', 'datatype': 'FP32', 'shape': [-1, 10]}],"
static const char *cnn = CNN_HEAD
    " 'layers': [{'op': 'reshape', 'input': 'x', 'output': 'img', 'shape': [1, 8, 8]},"
    "  {'op': 'conv2d', 'name': 'conv1', 'input': 'img', 'output': 'c', 'weight': 'conv1.weight',"
    "   'bias': 'conv1.bias', 'out_channels': 4, 'kernel_size': 3, 'padding': 1},"
    "  {'op': 'relu', 'input': 'c', 'output': 'r'},"
    "  {'op': 'maxpool2d', 'input': 'r', 'output': 'p', 'kernel_size': 2},"
    "  {'op': 'flatten', 'input': 'p', 'output': 'f'},"
    "  {'op': 'dense', 'input': 'f', 'output': 'logits', 'weight': 'fc.weight',"
    "   'bias': 'fc.bias', 'activation': 'gelu'},"
    "  {'op': 'softmax', 'input': 'logits', 'output': 'probs'}]}";

static void test_cnn_parses(void **state) {
    (void)state;
    model_config *cfg = parse_ok(cnn);
    assert_int_equal(model_config_layer_count(cfg), 7);
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 1, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_CONV2D);
    assert_string_equal(l.name, "conv1");
    assert_int_equal(l.window.out_channels, 4);
    assert_int_equal(l.window.kernel[0], 3);
    assert_int_equal(l.window.kernel[1], 3);
    assert_int_equal(l.window.stride[0], 1);
    assert_int_equal(l.window.padding[1], 1);
    assert_int_equal(l.window.dilation[0], 1);
    assert_int_equal(l.window.groups, 1);
    assert_int_equal(l.activation, MODEL_CONFIG_ACTIVATION_NONE);
    assert_true(model_config_layer_at(cfg, 3, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_MAXPOOL2D);
    assert_int_equal(l.window.stride[0], 2); /* default: the kernel */
    assert_true(model_config_layer_at(cfg, 5, &l));
    assert_int_equal(l.activation, MODEL_CONFIG_ACTIVATION_GELU);
    assert_string_equal(model_config_op_name(MODEL_CONFIG_OP_MAXPOOL2D), "maxpool2d");
    assert_string_equal(model_config_activation_name(MODEL_CONFIG_ACTIVATION_GELU), "gelu");

    /* The conv weight is fixed by the config alone; fc.weight's columns by the flatten. */
    model_tensor_desc d;
    size_t i;
    assert_true(model_config_param_find(cfg, "conv1.weight", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 4, (const int64_t[]){4, 1, 3, 3});
    assert_true(model_config_param_find(cfg, "conv1.bias", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 1, (const int64_t[]){4});
    assert_true(model_config_param_find(cfg, "fc.weight", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 2, (const int64_t[]){10, 64});

    model_tensor_desc given[4] = {
        {.name = "conv1.weight", .ndims = 4, .dims = {4, 1, 3, 3}},
        {.name = "conv1.bias", .ndims = 1, .dims = {4}},
        {.name = "fc.weight", .ndims = 2, .dims = {10, 64}},
        {.name = "fc.bias", .ndims = 1, .dims = {10}},
    };
    model_tensor_desc values[8];
    char err[512] = "";
    assert_int_equal(model_config_resolve(cfg, given, 4, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    expect_dims(&values[1], 4, (const int64_t[]){-1, 1, 8, 8});
    expect_dims(&values[2], 4, (const int64_t[]){-1, 4, 8, 8});
    expect_dims(&values[4], 4, (const int64_t[]){-1, 4, 4, 4});
    expect_dims(&values[5], 2, (const int64_t[]){-1, 64});

    given[0].dims[3] = 2; /* a 3x2 kernel */
    assert_int_equal(model_config_resolve(cfg, given, 4, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "conv1.weight"));
    model_config_destroy(cfg);
}

/* Stride, dilation, groups, avgpool without padding counted, the elementwise ops, a
 * reshape fixing a width only the weights would know, no batch dim. */
static void test_window_options(void **state) {
    (void)state;
    model_config *cfg =
        parse_ok("{'name': 'm', 'max_batch_size': 4,"
                 " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4, 9, 10]}],"
                 " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 6, 2, 2]}],"
                 " 'layers': [{'op': 'conv2d', 'input': 'x', 'output': 'c', 'weight': 'w',"
                 "   'out_channels': 6, 'kernel_size': [3, 2], 'stride': [2, 3], 'dilation': 2,"
                 "   'groups': 2, 'padding': [1, 0], 'activation': 'tanh'},"
                 "  {'op': 'gelu', 'input': 'c', 'output': 'g'},"
                 "  {'op': 'sigmoid', 'input': 'g', 'output': 's'},"
                 "  {'op': 'tanh', 'input': 's', 'output': 't'},"
                 "  {'op': 'avgpool2d', 'input': 't', 'output': 'y', 'kernel_size': 3, 'stride': 2,"
                 "   'padding': 1, 'count_include_pad': false}]}");
    /* conv: H (9 + 2 - 2*2 - 1) / 2 + 1 = 4, W (10 - 2 - 1) / 3 + 1 = 3; pool: 2 x 2. */
    size_t i;
    model_tensor_desc d;
    assert_true(model_config_param_find(cfg, "w", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 4, (const int64_t[]){6, 2, 3, 2});
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 4, &l));
    assert_false(l.window.count_include_pad);
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.activation, MODEL_CONFIG_ACTIVATION_TANH);
    assert_int_equal(l.window.stride[1], 3);
    model_config_destroy(cfg);

    cfg = parse_ok("{'name': 'm',"
                   " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [5]}],"
                   " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [12]}],"
                   " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'w'},"
                   "  {'op': 'reshape', 'input': 'h', 'output': 'img', 'shape': [3, 4, 4]},"
                   "  {'op': 'maxpool2d', 'input': 'img', 'output': 'p', 'kernel_size': 2},"
                   "  {'op': 'flatten', 'input': 'p', 'output': 'y'}]}");
    assert_true(model_config_param_find(cfg, "w", &i));
    assert_true(model_config_param_at(cfg, i, &d));
    expect_dims(&d, 2, (const int64_t[]){48, 5}); /* fixed by the reshape */
    model_config_destroy(cfg);
}

#define IMG_IN(layers, out_dims)                                                                   \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2, 6, 6]},"                       \
    "            {'name': 'v', 'datatype': 'FP32', 'shape': [-1, 36]}],"                           \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': " out_dims "}],"                      \
    " 'layers': [" layers "]}"
#define CONV(extra)                                                                                \
    "{'op': 'conv2d', 'name': 'c1', 'input': 'x', 'output': 'y', 'weight': 'w', "                  \
    "'out_channels': 4, " extra "}"

static void test_window_errors(void **state) {
    (void)state;
    expect_invalid(
        IMG_IN(CONV("'kernel_size': 3"), "[-1, 4, 5, 5]"),
        "\"y\" is declared with shape [-1, 4, 5, 5], but layers[0] produces [-1, 4, 4, 4]");
    expect_invalid(IMG_IN("{'op': 'conv2d', 'input': 'v', 'output': 'y', 'weight': 'w',"
                          " 'out_channels': 4, 'kernel_size': 3}",
                          "[-1, 4, 4, 4]"),
                   "layers[0] (conv2d \"y\"): input \"v\" has 2 dims; it must be [-1, C, H, W]");
    expect_invalid(IMG_IN(CONV("'stride': 1"), "[-1, 4, 4, 4]"),
                   "layers[0] (conv2d \"c1\"): missing field \"kernel_size\" must be an integer");
    expect_invalid(IMG_IN(CONV("'kernel_size': 0"), "[-1, 4, 4, 4]"),
                   "\"kernel_size\" must be an integer or a list [h, w] of integers from 1");
    expect_invalid(IMG_IN(CONV("'kernel_size': [3, 3, 3]"), "[-1, 4, 4, 4]"), "\"kernel_size\"");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'stride': 'a'"), "[-1, 4, 4, 4]"), "\"stride\"");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'padding': -1"), "[-1, 4, 4, 4]"), "\"padding\"");
    expect_invalid(IMG_IN(CONV("'kernel_size': 99999999"), "[-1, 4, 4, 4]"), "\"kernel_size\"");
    expect_invalid(IMG_IN(CONV("'kernel_size': 7"), "[-1, 4, 4, 4]"),
                   "the kernel [7, 7] (dilation [1, 1]) does not fit input \"x\" of 6 x 6");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'dilation': 3"), "[-1, 4, 4, 4]"),
                   "does not fit");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'groups': 4"), "[-1, 4, 4, 4]"),
                   "groups 4 must divide the input's channels (2) and out_channels (4)");
    expect_invalid(IMG_IN("{'op': 'conv2d', 'input': 'x', 'output': 'y', 'weight': 'w',"
                          " 'kernel_size': 3}",
                          "[-1, 4, 4, 4]"),
                   "\"out_channels\" must be an integer from 1");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'activation': 'swish'"), "[-1, 4, 4, 4]"),
                   "unknown activation \"swish\"");
    expect_invalid(IMG_IN(CONV("'kernel_size': 3, 'count_include_pad': true"), "[-1, 4, 4, 4]"),
                   "unknown field \"count_include_pad\"");
    expect_invalid(IMG_IN("{'op': 'maxpool2d', 'input': 'x', 'output': 'y', 'kernel_size': 3,"
                          " 'padding': 2}",
                          "[-1, 2, 4, 4]"),
                   "padding [2, 2] must be at most half the kernel [3, 3]");
    expect_invalid(IMG_IN("{'op': 'maxpool2d', 'input': 'x', 'output': 'y', 'kernel_size': 3,"
                          " 'dilation': 2}",
                          "[-1, 2, 2, 2]"),
                   "unknown field \"dilation\"");
    expect_invalid(IMG_IN("{'op': 'avgpool2d', 'input': 'x', 'output': 'y', 'kernel_size': 3,"
                          " 'count_include_pad': 1}",
                          "[-1, 2, 2, 2]"),
                   "\"count_include_pad\" must be true or false");
    /* A conv whose input width only a parameter fixes. */
    expect_invalid(IMG_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'd'},"
                          "{'op': 'conv2d', 'input': 'h', 'output': 'y', 'weight': 'w',"
                          " 'out_channels': 4, 'kernel_size': 1}",
                          "[-1, 4, 6, 6]"),
                   "the width of input \"h\" is not fixed by the config");
    /* The conv weight shared with a dense layer of another rank. */
    expect_invalid(IMG_IN("{'op': 'dense', 'input': 'v', 'output': 'h', 'weight': 'w'}," CONV(
                              "'kernel_size': 3"),
                          "[-1, 4, 4, 4]"),
                   "parameter \"w\" is used as a 4-dim weight here but as a 2-dim weight");
}

static void test_reshape_errors(void **state) {
    (void)state;
    expect_invalid(
        IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y', 'shape': [5, 7]}", "[-1, 5, 7]"),
        "layers[0] (reshape \"y\"): input \"v\" has 36 elements per sample, but "
        "\"shape\" holds 35");
    expect_invalid(IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y'}", "[-1, 36]"),
                   "\"shape\" must be a list of 1 to 7 positive integers");
    expect_invalid(
        IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y', 'shape': []}", "[-1, 36]"),
        "\"shape\" must be a list");
    expect_invalid(
        IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y', 'shape': [-1, 36]}", "[-1, 36]"),
        "\"shape\" must be a list");
    expect_invalid(IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y',"
                          " 'shape': [1, 1, 1, 1, 1, 1, 1, 36]}",
                          "[-1, 36]"),
                   "\"shape\" must be a list of 1 to 7");
    expect_invalid(IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y',"
                          " 'shape': [65536, 65536, 65536]}",
                          "[-1, 36]"),
                   "\"shape\" must be a list");
    expect_invalid(IMG_IN("{'op': 'reshape', 'input': 'v', 'output': 'y', 'shape': [36],"
                          " 'kernel_size': 2}",
                          "[-1, 36]"),
                   "unknown field \"kernel_size\"");
    /* Dense on [-1, 2, 6, 6]: [-1, 2, 6, ?]; a reshape to 7 per sample cannot be. */
    expect_invalid(IMG_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'd'},"
                          "{'op': 'reshape', 'input': 'h', 'output': 'y', 'shape': [7]}",
                          "[-1, 7]"),
                   "input \"h\" has an unknown multiple of 12 elements per sample, but \"shape\" "
                   "holds 7");
    expect_invalid(IMG_IN("{'op': 'dense', 'input': 'x', 'output': 'h', 'weight': 'd'},"
                          "{'op': 'flatten', 'input': 'h', 'output': 'y'}",
                          "[-1, 72]"),
                   "1 dims of input \"h\" are not fixed by the config");
    expect_invalid(IMG_IN("{'op': 'flatten', 'input': 'x', 'output': 'y'}", "[-1, 36]"),
                   "declared with shape [-1, 36], but layers[0] produces [-1, 72]");
}

static void test_layernorm(void **state) {
    (void)state;
    model_config *cfg = parse_ok(IMG_IN(
        "{'op': 'layernorm', 'input': 'v', 'output': 'n', 'weight': 'g', 'bias': 'b', 'eps': 1e-6},"
        "{'op': 'layernorm', 'input': 'n', 'output': 'y'}",
        "[-1, 36]"));
    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_LAYERNORM);
    assert_true(l.eps == 1e-6f);
    assert_int_not_equal(l.weight, MODEL_CONFIG_NONE);
    model_tensor_desc d;
    assert_true(model_config_param_at(cfg, l.bias, &d));
    expect_dims(&d, 1, (const int64_t[]){36});
    assert_true(model_config_layer_at(cfg, 1, &l));
    assert_true(l.eps == 1e-5f);
    assert_int_equal(l.weight, MODEL_CONFIG_NONE);
    assert_int_equal(l.bias, MODEL_CONFIG_NONE);
    model_config_destroy(cfg);

    expect_invalid(IMG_IN("{'op': 'layernorm', 'input': 'v', 'output': 'y', 'eps': 0}", "[-1, 36]"),
                   "layers[0] (layernorm \"y\"): \"eps\" must be a finite number > 0");
    expect_invalid(
        IMG_IN("{'op': 'layernorm', 'input': 'v', 'output': 'y', 'eps': 'x'}", "[-1, 36]"),
        "\"eps\" must be");
    expect_invalid(
        IMG_IN("{'op': 'layernorm', 'input': 'v', 'output': 'y', 'eps': 1e-60}", "[-1, 36]"),
        "\"eps\" must be");
    expect_invalid(
        IMG_IN("{'op': 'layernorm', 'input': 'v', 'output': 'y', 'shape': [3]}", "[-1, 36]"),
        "unknown field \"shape\"");
    /* One weight for two widths. */
    expect_invalid(IMG_IN("{'op': 'layernorm', 'input': 'v', 'output': 'n', 'weight': 'g'},"
                          "{'op': 'layernorm', 'input': 'x', 'output': 'y', 'weight': 'g'}",
                          "[-1, 2, 6, 6]"),
                   "weight \"g\" dim 0 is 36, but the feature count of input \"x\" is 6");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn_parses),    cmocka_unit_test(test_window_options),
        cmocka_unit_test(test_window_errors), cmocka_unit_test(test_reshape_errors),
        cmocka_unit_test(test_layernorm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
