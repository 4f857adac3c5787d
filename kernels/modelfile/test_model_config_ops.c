/* test_model_config_ops.c: unit tests of the config parts that serve recommenders
 * (cmocka): "tables", INT64 ids inputs, the embedding_bag and concat ops, and concat
 * widths that only the weights fix (model_config_resolve).
 *
 * Before these ops existed a config with them was refused ("unknown op") and an INT64
 * input was UNIMPLEMENTED; every test here would have failed on that code. Configs are
 * written with single quotes, turned into double quotes before parsing.
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

/* The recommender of the brief: user ids [-1, 1] summed, item ids [-1, 3] averaged,
 * side by side, then a dense layer to one score. */
#define TABLES                                                                                     \
    " 'tables': [{'name': 'user_emb', 'dim': 4, 'seed': 7, 'init': {'type': 'normal',"             \
    "             'scale': 0.1}, 'optimizer': {'type': 'adagrad', 'lr': 0.05}},"                   \
    "            {'name': 'item_emb', 'dim': 3}],"
#define CTR_HEAD                                                                                   \
    "{'name': 'ctr', 'max_batch_size': 16,"                                                        \
    " 'inputs': [{'name': 'user', 'datatype': 'INT64', 'shape': [-1, 1]},"                         \
    "            {'name': 'items', 'datatype': 'INT64', 'shape': [-1, 3]}],"                       \
    " 'outputs': [{'name': 'score', 'datatype': 'FP32', 'shape': [-1, 1]}]," TABLES
#define BAG(in, out, table, mode)                                                                  \
    "{'op': 'embedding_bag', 'input': '" in "', 'output': '" out "', 'table': '" table             \
    "', 'mode': '" mode "'}"

static const char *ctr = CTR_HEAD " 'layers': [" BAG("user", "u", "user_emb", "sum") "," BAG(
    "items", "it", "item_emb", "mean") ","
                                       "  {'op': 'concat', 'inputs': ['u', 'it'], 'output': 'h'},"
                                       "  {'op': 'dense', 'input': 'h', 'output': 'score', "
                                       "'weight': 'fc.weight', 'bias': 'fc.bias',"
                                       "   'activation': 'sigmoid'}]}";

static void test_recommender_parses(void **state) {
    (void)state;
    model_config *cfg = parse_ok(ctr);
    assert_int_equal(model_config_table_count(cfg), 2);
    model_config_table t;
    assert_true(model_config_table_at(cfg, 0, &t));
    assert_string_equal(t.name, "user_emb");
    assert_int_equal(t.dim, 4);
    assert_true(model_config_table_at(cfg, 1, &t));
    assert_string_equal(t.name, "item_emb");
    assert_int_equal(t.dim, 3);
    assert_false(model_config_table_at(cfg, 2, &t));

    model_tensor_desc d;
    assert_true(model_config_input_at(cfg, 1, &d));
    assert_string_equal(d.datatype, "INT64");
    assert_true(model_config_output_at(cfg, 0, &d));
    assert_string_equal(d.datatype, "FP32");

    model_config_layer l;
    assert_true(model_config_layer_at(cfg, 0, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_EMBEDDING_BAG);
    assert_int_equal(l.table, 0);
    assert_int_equal(l.pool, MODEL_CONFIG_POOL_SUM);
    assert_int_equal(l.inputs[0], 0);
    assert_true(model_config_layer_at(cfg, 1, &l));
    assert_int_equal(l.table, 1);
    assert_int_equal(l.pool, MODEL_CONFIG_POOL_MEAN);
    assert_true(model_config_layer_at(cfg, 2, &l));
    assert_int_equal(l.op, MODEL_CONFIG_OP_CONCAT);
    assert_int_equal(l.input_count, 2);
    assert_int_equal(l.table, MODEL_CONFIG_NONE);
    assert_string_equal(model_config_op_name(MODEL_CONFIG_OP_EMBEDDING_BAG), "embedding_bag");
    assert_string_equal(model_config_pool_name(MODEL_CONFIG_POOL_MEAN), "mean");

    /* the config alone fixes fc.weight's columns: 4 + 3 */
    assert_true(model_config_param_at(cfg, 0, &d));
    assert_string_equal(d.name, "fc.weight");
    assert_int_equal(d.dims[0], 1);
    assert_int_equal(d.dims[1], 7);

    model_tensor_desc given[] = {{.name = "fc.weight", .ndims = 2, .dims = {1, 7}},
                                 {.name = "fc.bias", .ndims = 1, .dims = {1}}};
    model_tensor_desc values[6];
    char err[256] = "";
    assert_int_equal(model_config_resolve(cfg, given, 2, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    const int64_t want[][2] = {{-1, 1}, {-1, 3}, {-1, 4}, {-1, 3}, {-1, 7}, {-1, 1}};
    for (size_t v = 0; v < 6; v++) {
        assert_int_equal(values[v].ndims, 2);
        assert_int_equal(values[v].dims[0], want[v][0]);
        assert_int_equal(values[v].dims[1], want[v][1]);
    }
    assert_string_equal(values[1].datatype, "INT64");
    assert_string_equal(values[2].datatype, "FP32");

    given[0].dims[1] = 8;
    assert_int_equal(model_config_resolve(cfg, given, 2, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"fc.weight\""));
    assert_non_null(strstr(err, "[1, 7]"));
    model_config_destroy(cfg);
}

/* Without a batch dim: ids [L], output [dim]. */
static void test_unbatched_bag(void **state) {
    (void)state;
    model_config *cfg =
        parse_ok("{'name': 'm', 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [5]}],"
                 " 'outputs': [{'name': 'e', 'datatype': 'FP32', 'shape': [6]}],"
                 " 'tables': [{'name': 't', 'dim': 6}],"
                 " 'layers': [" BAG("ids", "e", "t", "sum") "]}");
    model_tensor_desc values[2];
    char err[256] = "";
    assert_int_equal(model_config_resolve(cfg, NULL, 0, NULL, values, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_int_equal(values[1].ndims, 1);
    assert_int_equal(values[1].dims[0], 6);
    model_config_destroy(cfg);
}

/* A concat of two dense outputs: the width is known only once the weights are. */
static void test_concat_width_from_weights(void **state) {
    (void)state;
    model_config *cfg =
        parse_ok("{'name': 'm', 'max_batch_size': 4,"
                 " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2, 5]}],"
                 " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 2, 3]}],"
                 " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'a', 'weight': 'wa'},"
                 "  {'op': 'dense', 'input': 'x', 'output': 'b', 'weight': 'wb'},"
                 "  {'op': 'concat', 'inputs': ['a', 'b'], 'output': 'ab'},"
                 "  {'op': 'concat', 'inputs': ['ab', 'x'], 'output': 'abx'},"
                 "  {'op': 'dense', 'input': 'abx', 'output': 'y', 'weight': 'wy'}]}");
    model_tensor_desc given[] = {{.name = "wa", .ndims = 2, .dims = {4, 5}},
                                 {.name = "wb", .ndims = 2, .dims = {6, 5}},
                                 {.name = "wy", .ndims = 2, .dims = {3, 15}}};
    model_tensor_desc params[3];
    model_tensor_desc values[6];
    char err[256] = "";
    assert_int_equal(model_config_resolve(cfg, given, 3, params, values, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_int_equal(values[3].dims[2], 10);
    assert_int_equal(values[4].dims[1], 2);
    assert_int_equal(values[4].dims[2], 15);
    given[2].dims[1] = 14; /* wy's columns must be 4 + 6 + 5 */
    assert_int_equal(model_config_resolve(cfg, given, 3, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "concat \"abx\""));
    assert_non_null(strstr(err, "make 15 features, but the graph needs 14"));
    model_config_destroy(cfg);
}

#define ONE_BAG(layer, out_dims)                                                                   \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]},"                          \
    "            {'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]},"                             \
    "            {'name': 'ids3', 'datatype': 'INT64', 'shape': [-1, 2, 2]}],"                     \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': " out_dims "}],"                      \
    " 'tables': [{'name': 't', 'dim': 4}, {'name': 'u', 'dim': 2}],"                               \
    " 'layers': [" layer "]}"

static void test_bag_errors(void **state) {
    (void)state;
    expect_refused(ONE_BAG(BAG("ids", "y", "nope", "sum"), "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                   "layers[0] (embedding_bag \"y\"): table \"nope\" is not declared in the "
                   "config's \"tables\" (declared: t, u)");
    expect_refused(ONE_BAG(BAG("ids", "y", "t", "max"), "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                   "unknown mode \"max\" (supported: sum, mean)");
    expect_refused(
        ONE_BAG("{'op': 'embedding_bag', 'input': 'ids', 'output': 'y', 'table': 't'}", "[-1, 4]"),
        PS_STATUS_INVALID_ARGUMENT, "missing field \"mode\"");
    expect_refused(
        ONE_BAG("{'op': 'embedding_bag', 'input': 'ids', 'output': 'y', 'mode': 'sum'}", "[-1, 4]"),
        PS_STATUS_INVALID_ARGUMENT, "missing field \"table\"");
    expect_refused(ONE_BAG("{'op': 'embedding_bag', 'input': 'ids', 'output': 'y', 'table': 't',"
                           " 'mode': 'sum', 'weight': 'w'}",
                           "[-1, 4]"),
                   PS_STATUS_INVALID_ARGUMENT,
                   "unknown field \"weight\" (expected: op, name, input, output, table, mode)");
    expect_refused(ONE_BAG(BAG("x", "y", "t", "sum"), "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                   "input \"x\" must be a model input of datatype INT64 and shape [-1, L]");
    expect_refused(ONE_BAG(BAG("ids3", "y", "t", "sum"), "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                   "input \"ids3\" must be a model input of datatype INT64");
    expect_refused(ONE_BAG("{'op': 'relu', 'input': 'x', 'output': 'r'}," BAG("r", "y", "t", "sum"),
                           "[-1, 4]"),
                   PS_STATUS_INVALID_ARGUMENT,
                   "input \"r\" must be a model input of datatype INT64");
    expect_refused(ONE_BAG(BAG("ids", "y", "u", "sum"), "[-1, 4]"), PS_STATUS_INVALID_ARGUMENT,
                   "\"y\" is declared with shape [-1, 4], but layers[0] produces [-1, 2]");
    /* INT64 inputs go to embedding_bag only */
    expect_refused(ONE_BAG("{'op': 'add', 'inputs': ['x', 'ids'], 'output': 'y'}", "[-1, 4]"),
                   PS_STATUS_INVALID_ARGUMENT,
                   "layers[0] (add \"y\"): input \"ids\" is an INT64 model input (ids); only "
                   "embedding_bag and embedding layers may read it");
    expect_refused(
        ONE_BAG("{'op': 'dense', 'input': 'ids', 'output': 'y', 'weight': 'w'}", "[-1, 4]"),
        PS_STATUS_INVALID_ARGUMENT, "only embedding_bag and embedding layers may read it");
    /* outputs stay FP32 */
    expect_refused("{'name': 'm', 'max_batch_size': 8,"
                   " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 4]}],"
                   " 'outputs': [{'name': 'y', 'datatype': 'INT64', 'shape': [-1, 4]}],"
                   " 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}",
                   PS_STATUS_UNIMPLEMENTED, "only \"FP32\" is, for outputs");
}

static void test_table_errors(void **state) {
    (void)state;
#define WITH_TABLES(t)                                                                             \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}],"                         \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 4]}],"                           \
    " 'tables': " t ","                                                                            \
    " 'layers': [" BAG("ids", "y", "t", "sum") "]}"
    expect_refused(WITH_TABLES("{'name': 't', 'dim': 4}"), PS_STATUS_INVALID_ARGUMENT,
                   "\"tables\" must be a list of at most 1024 tables");
    expect_refused(WITH_TABLES("[7]"), PS_STATUS_INVALID_ARGUMENT,
                   "tables[0]: must be an object with at least name and dim");
    expect_refused(WITH_TABLES("[{'dim': 4}]"), PS_STATUS_INVALID_ARGUMENT,
                   "tables[0]: missing field \"name\"");
    expect_refused(WITH_TABLES("[{'name': 't'}]"), PS_STATUS_INVALID_ARGUMENT,
                   "tables[0] (\"t\"): \"dim\" must be an integer from 1 to 4096");
    expect_refused(WITH_TABLES("[{'name': 't', 'dim': 0}]"), PS_STATUS_INVALID_ARGUMENT,
                   "\"dim\" must be an integer from 1 to 4096");
    expect_refused(WITH_TABLES("[{'name': 't', 'dim': 4097}]"), PS_STATUS_INVALID_ARGUMENT,
                   "\"dim\" must be an integer from 1 to 4096");
    expect_refused(WITH_TABLES("[{'name': 't', 'dim': 4}, {'name': 't', 'dim': 4}]"),
                   PS_STATUS_INVALID_ARGUMENT,
                   "tables[1]: table \"t\" is declared twice (also tables[0])");
    /* the other fields are train_config's: accepted unchecked here */
    model_config *cfg =
        parse_ok(WITH_TABLES("[{'name': 't', 'dim': 4, 'init': 'whatever', 'extra': 1}]"));
    model_config_destroy(cfg);
#undef WITH_TABLES
}

#define TWO(a_dims, b_dims, y_dims, layers)                                                        \
    "{'name': 'm', 'max_batch_size': 8,"                                                           \
    " 'inputs': [{'name': 'a', 'datatype': 'FP32', 'shape': " a_dims "},"                          \
    "            {'name': 'b', 'datatype': 'FP32', 'shape': " b_dims "}],"                         \
    " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': " y_dims "}],"                        \
    " 'layers': [" layers "]}"
#define CONCAT "{'op': 'concat', 'inputs': ['a', 'b'], 'output': 'y'}"

static void test_concat(void **state) {
    (void)state;
    model_config *cfg = parse_ok(TWO("[-1, 2, 3]", "[-1, 2, 5]", "[-1, 2, 8]", CONCAT));
    model_config_destroy(cfg);
    expect_refused(TWO("[-1, 3]", "[-1, 5]", "[-1, 9]", CONCAT), PS_STATUS_INVALID_ARGUMENT,
                   "\"y\" is declared with shape [-1, 9], but layers[0] produces [-1, 8]");
    expect_refused(TWO("[-1, 2, 3]", "[-1, 3, 5]", "[-1, 2, 8]", CONCAT),
                   PS_STATUS_INVALID_ARGUMENT,
                   "inputs must have the same leading dims, but dim 1 of \"a\" is 2 and of \"b\" "
                   "is 3");
    expect_refused(TWO("[-1, 3]", "[-1, 1, 5]", "[-1, 8]", CONCAT), PS_STATUS_INVALID_ARGUMENT,
                   "inputs \"a\" (2 dims) and \"b\" (3 dims) differ in rank");
    expect_refused(
        TWO("[-1, 3]", "[-1, 5]", "[-1, 8]", "{'op': 'concat', 'input': 'a', 'output': 'y'}"),
        PS_STATUS_INVALID_ARGUMENT, "unknown field \"input\"");
    expect_refused(
        TWO("[-1, 3]", "[-1, 5]", "[-1, 8]", "{'op': 'concat', 'inputs': ['a'], 'output': 'y'}"),
        PS_STATUS_INVALID_ARGUMENT, "\"inputs\" must be a list of two value names");
}

/* With an unknown first term the width stays open at parse time; the declared output
 * fixes it, and the weights must then agree. */
static void test_concat_open_width(void **state) {
    (void)state;
    model_config *cfg = parse_ok(TWO("[-1, 3]", "[-1, 5]", "[-1, 9]",
                                     "{'op': 'dense', 'input': 'a', 'output': 'h', 'weight': 'w'},"
                                     "{'op': 'concat', 'inputs': ['h', 'b'], 'output': 'y'}"));
    model_tensor_desc given[] = {{.name = "w", .ndims = 2, .dims = {4, 3}}};
    char err[256] = "";
    assert_int_equal(model_config_resolve(cfg, given, 1, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_OK);
    given[0].dims[0] = 5;
    assert_int_equal(model_config_resolve(cfg, given, 1, NULL, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "\"h\" (5 features) and \"b\" (5) make 10 features, but the "
                                "graph needs 9"));
    model_config_destroy(cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommender_parses),
        cmocka_unit_test(test_unbatched_bag),
        cmocka_unit_test(test_concat_width_from_weights),
        cmocka_unit_test(test_bag_errors),
        cmocka_unit_test(test_table_errors),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_concat_open_width),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
