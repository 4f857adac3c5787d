/* test_infer_ids.c: decoding INT64 (ids) inputs of ModelInferRequests for a model with
 * a sparse table (cmocka, no process): raw little-endian int64 bytes and
 * int64_contents; and the hostile cases the FP32 path already refuses: FP32 data where
 * INT64 is due (datatype, typed contents, raw byte count), ids that do not match the
 * shape, shapes past the model's, both kinds of contents at once.
 *
 * Before this, every INT64 input was refused ("only fp32_contents") and a config with
 * an INT64 input did not even parse: these tests would have failed at setup.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "infer_request.h"

static const char CONFIG[] =
    "{\"name\": \"bag\", \"max_batch_size\": 4,"
    " \"inputs\": [{\"name\": \"items\", \"datatype\": \"INT64\", \"shape\": [-1, 3]},"
    "              {\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 2]}],"
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 4]}],"
    " \"tables\": [{\"name\": \"t\", \"dim\": 2}],"
    " \"layers\": [{\"op\": \"embedding_bag\", \"input\": \"items\", \"output\": \"e\","
    "               \"table\": \"t\", \"mode\": \"mean\"},"
    "              {\"op\": \"concat\", \"inputs\": [\"e\", \"x\"], \"output\": \"y\"}]}";

typedef struct fx {
    model_config *cfg;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in[2];
    Inference__ModelInferRequest__InferInputTensor *ins[2];
    int64_t shape[2][2];
    int64_t ids[6];
    float x[4];
    rpc_bytes_view raw[2];
    char err[512];
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(model_config_parse(CONFIG, strlen(CONFIG), &f->cfg, f->err, sizeof f->err),
                     PS_STATUS_OK);
    inference__model_infer_request__init(&f->req);
    f->req.model_name = "bag";
    const char *names[2] = {"items", "x"};
    const char *types[2] = {"INT64", "FP32"};
    const int64_t cols[2] = {3, 2};
    for (int i = 0; i < 2; i++) {
        inference__model_infer_request__infer_input_tensor__init(&f->in[i]);
        f->in[i].name = (char *)names[i];
        f->in[i].datatype = (char *)types[i];
        f->shape[i][0] = 2;
        f->shape[i][1] = cols[i];
        f->in[i].n_shape = 2;
        f->in[i].shape = f->shape[i];
        f->ins[i] = &f->in[i];
    }
    f->req.n_inputs = 2;
    f->req.inputs = f->ins;
    const int64_t ids[6] = {5, -1, 1LL << 40, -1, -1, -1};
    memcpy(f->ids, ids, sizeof ids);
    for (int i = 0; i < 4; i++)
        f->x[i] = (float)i;
    f->raw[0] = (rpc_bytes_view){(const uint8_t *)f->ids, sizeof f->ids};
    f->raw[1] = (rpc_bytes_view){(const uint8_t *)f->x, sizeof f->x};
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    model_config_destroy(f->cfg);
    free(f);
    return 0;
}

static ps_status create(fx *f, size_t n_raw, infer_request **ret) {
    infer_request_opts o = {.config = f->cfg, .request = &f->req, .raw = f->raw, .n_raw = n_raw};
    f->err[0] = '\0';
    return infer_request_create(&o, ret, f->err, sizeof f->err);
}

static void expect_invalid(fx *f, size_t n_raw, const char *a, const char *b) {
    infer_request *r = NULL;
    assert_int_equal(create(f, n_raw, &r), PS_STATUS_INVALID_ARGUMENT);
    assert_null(r);
    if (!strstr(f->err, a) || (b && !strstr(f->err, b)))
        fail_msg("message '%s' lacks '%s' / '%s'", f->err, a, b ? b : "");
}

static void check_decoded(infer_request *r) {
    size_t n = 0;
    const model_input *in = infer_request_inputs(r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(in[0].name, "items");
    assert_null(in[0].data);
    assert_non_null(in[0].ids);
    const int64_t want[6] = {5, -1, 1LL << 40, -1, -1, -1};
    assert_memory_equal(in[0].ids, want, sizeof want);
    assert_non_null(in[1].data);
    assert_null(in[1].ids);
    assert_true(in[1].data[3] == 3.0f);
    assert_int_equal(infer_request_batch(r), 2);
}

static void test_raw_and_typed_ids(void **state) {
    fx *f = *state;
    infer_request *r = NULL;
    assert_int_equal(create(f, 2, &r), PS_STATUS_OK);
    check_decoded(r);
    infer_request_destroy(r);

    Inference__InferTensorContents ci = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    Inference__InferTensorContents cf = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    ci.n_int64_contents = 6;
    ci.int64_contents = f->ids;
    cf.n_fp32_contents = 4;
    cf.fp32_contents = f->x;
    f->in[0].contents = &ci;
    f->in[1].contents = &cf;
    assert_int_equal(create(f, 0, &r), PS_STATUS_OK);
    check_decoded(r);
    infer_request_destroy(r);

    /* hostile typed contents */
    ci.n_int64_contents = 5;
    expect_invalid(f, 0, "input 'items': 5 int64_contents values, expected 6", "[2,3]");
    ci.n_int64_contents = 6;
    expect_invalid(f, 2, "input 'items' has both typed contents and raw_input_contents", NULL);
    f->in[0].contents = &cf; /* floats where ids are due */
    expect_invalid(f, 0, "input 'items' is INT64: give int64_contents, not fp32_contents", NULL);
    f->in[0].contents = &ci;
    f->in[1].contents = &ci; /* ids where floats are due */
    expect_invalid(f, 0, "input 'x' is FP32: give fp32_contents, not int64_contents", NULL);
    f->in[1].contents = &cf;
    Inference__InferTensorContents cu = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    uint64_t u[6] = {0};
    cu.n_uint64_contents = 6;
    cu.uint64_contents = u;
    f->in[0].contents = &cu;
    expect_invalid(f, 0, "only fp32_contents (FP32 inputs), int64_contents (INT64 inputs)", NULL);
}

static void test_hostile_raw_ids(void **state) {
    fx *f = *state;
    /* FP32 declared where INT64 is due, and the reverse */
    f->in[0].datatype = "FP32";
    expect_invalid(f, 2, "input 'items': datatype FP32, expected INT64", NULL);
    f->in[0].datatype = "INT32";
    expect_invalid(f, 2, "datatype INT32, expected INT64", NULL);
    f->in[0].datatype = "INT64";
    f->in[1].datatype = "INT64";
    expect_invalid(f, 2, "input 'x': datatype INT64, expected FP32", NULL);
    f->in[1].datatype = "FP32";
    /* ids sent as 4-byte values: the byte count gives it away */
    f->raw[0].len = 6 * 4;
    expect_invalid(f, 2, "input 'items': 24 bytes of raw content, expected 48", "of INT64");
    f->raw[0].len = 5 * 8; /* one id short of the shape */
    expect_invalid(f, 2, "40 bytes of raw content, expected 48 (shape [2,3] of INT64)", NULL);
    f->raw[0].len = 7 * 8; /* one id too many */
    expect_invalid(f, 2, "56 bytes of raw content, expected 48", NULL);
    f->raw[0].len = sizeof f->ids;
    /* shapes: wrong L, past max_batch_size, absurd dims, batch disagreement */
    f->shape[0][1] = 6;
    f->shape[0][0] = 1;
    expect_invalid(f, 2, "input 'items': shape [1,6], expected [-1,3]", NULL);
    f->shape[0][1] = 3;
    f->shape[0][0] = 1LL << 40;
    expect_invalid(f, 2, "batch size 1099511627776 is over the model's max_batch_size 4", NULL);
    f->shape[0][0] = -3;
    expect_invalid(f, 2, "batch size -3 must be at least 1", NULL);
    f->shape[0][0] = 2;
    f->shape[0][1] = INT64_MAX;
    expect_invalid(f, 2, "expected [-1,3]", NULL);
    f->shape[0][1] = 3;
    f->shape[1][0] = 1;
    f->raw[1].len = 2 * 4;
    expect_invalid(f, 2, "inputs disagree on the batch size (2 and 1)", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raw_and_typed_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_raw_ids, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
