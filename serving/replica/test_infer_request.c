/* test_infer_request.c: checking and decoding ModelInferRequests (cmocka, no process).
 *
 * The old handler (serving/serve/serve.c) put arrays sized by the request's counts on
 * the stack before checking them: 100,000 requested outputs or 200,000 empty inputs
 * overflowed the worker's stack (SIGSEGV). test_huge_counts_refused_first builds those
 * requests and expects a clear INVALID_ARGUMENT; the rest pin down every other check
 * and the decoded result. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "infer_request.h"

static const char CONFIG[] =
    "{\"name\": \"m\", \"max_batch_size\": 4,"
    " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 2]},"
    "               {\"name\": \"h\", \"datatype\": \"FP32\", \"shape\": [-1, 2]}],"
    " \"layers\": [{\"op\": \"dense\", \"input\": \"x\", \"output\": \"h\", \"weight\": \"w\"},"
    "              {\"op\": \"softmax\", \"input\": \"h\", \"output\": \"y\"}]}";

typedef struct fx {
    model_config *cfg;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in;
    Inference__ModelInferRequest__InferInputTensor *ins[1];
    int64_t shape[2];
    float values[6];
    rpc_bytes_view raw[1];
    char err[512];
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    assert_int_equal(model_config_parse(CONFIG, strlen(CONFIG), &f->cfg, f->err, sizeof f->err),
                     PS_STATUS_OK);
    inference__model_infer_request__init(&f->req);
    inference__model_infer_request__infer_input_tensor__init(&f->in);
    f->req.model_name = "m";
    f->in.name = "x";
    f->in.datatype = "FP32";
    f->shape[0] = 2;
    f->shape[1] = 3;
    f->in.n_shape = 2;
    f->in.shape = f->shape;
    f->ins[0] = &f->in;
    f->req.n_inputs = 1;
    f->req.inputs = f->ins;
    for (int i = 0; i < 6; i++)
        f->values[i] = (float)i;
    f->raw[0] = (rpc_bytes_view){(const uint8_t *)f->values, sizeof f->values};
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
    infer_request *r = (infer_request *)0x1;
    assert_int_equal(create(f, n_raw, &r), PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(r, (infer_request *)0x1); /* untouched on failure */
    if (!strstr(f->err, a) || (b && !strstr(f->err, b)))
        fail_msg("message '%s' lacks '%s' / '%s'", f->err, a, b ? b : "");
}

static void test_valid_raw_and_typed(void **state) {
    fx *f = *state;
    infer_request *r = NULL;
    assert_int_equal(create(f, 1, &r), PS_STATUS_OK);
    size_t n_in = 0, n_out = 0;
    const model_input *in = infer_request_inputs(r, &n_in);
    model_output *out = infer_request_outputs(r, &n_out);
    assert_int_equal(n_in, 1);
    assert_int_equal(n_out, 2); /* none named: every output */
    assert_int_equal(in[0].dims[0], 2);
    assert_true(in[0].data[5] == 5.0f);
    assert_string_equal(out[0].name, "y");
    assert_int_equal(out[0].capacity, 4);
    assert_int_equal(infer_request_batch(r), 2);
    float *b = infer_request_output_take(r, 0);
    assert_non_null(b);
    free(b);
    infer_request_destroy(r);

    Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    c.n_fp32_contents = 6;
    c.fp32_contents = f->values;
    f->in.contents = &c;
    Inference__ModelInferRequest__InferRequestedOutputTensor o =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferRequestedOutputTensor *os[] = {&o};
    o.name = "h";
    f->req.n_outputs = 1;
    f->req.outputs = os;
    assert_int_equal(create(f, 0, &r), PS_STATUS_OK);
    out = infer_request_outputs(r, &n_out);
    assert_int_equal(n_out, 1);
    assert_string_equal(out[0].name, "h");
    infer_request_destroy(r);
    infer_request_destroy(NULL);
}

static void test_huge_counts_refused_first(void **state) {
    fx *f = *state;
    size_t n = 100000;
    Inference__ModelInferRequest__InferRequestedOutputTensor o =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    o.name = "y";
    Inference__ModelInferRequest__InferRequestedOutputTensor **os = calloc(n, sizeof *os);
    for (size_t i = 0; i < n; i++)
        os[i] = &o;
    f->req.n_outputs = n;
    f->req.outputs = os;
    expect_invalid(f, 1, "100000 requested outputs", "at most 64");
    f->req.n_outputs = 0;
    free(os);

    n = 200000; /* empty inputs: two bytes each on the wire */
    Inference__ModelInferRequest__InferInputTensor empty =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor **ins = calloc(n, sizeof *ins);
    for (size_t i = 0; i < n; i++)
        ins[i] = &empty;
    f->req.n_inputs = n;
    f->req.inputs = ins;
    expect_invalid(f, 0, "200000 inputs", "at most 64");
    expect_invalid(f, 0, "200000 inputs", NULL);
    f->req.n_inputs = 1;
    f->req.inputs = f->ins;
    free(ins);
    expect_invalid(f, 100000, "100000 raw_input_contents", "at most 64");

    Inference__ModelInferRequest__ParametersEntry pe =
        INFERENCE__MODEL_INFER_REQUEST__PARAMETERS_ENTRY__INIT;
    Inference__ModelInferRequest__ParametersEntry **pes = calloc(70000, sizeof *pes);
    for (size_t i = 0; i < 70000; i++)
        pes[i] = &pe;
    f->req.n_parameters = 70000;
    f->req.parameters = pes;
    expect_invalid(f, 1, "70000 parameters", NULL);
    f->req.n_parameters = 0;
    free(pes);

    int64_t *dims = calloc(1000, sizeof *dims);
    f->in.n_shape = 1000;
    f->in.shape = dims;
    expect_invalid(f, 1, "1000 dimensions", "at most 8");
    free(dims);
}

static void test_long_strings_refused(void **state) {
    fx *f = *state;
    size_t len = 1 << 20;
    char *big = malloc(len + 1);
    memset(big, 'a', len);
    big[len] = '\0';
    f->req.model_name = big;
    expect_invalid(f, 1, "model name is 1048576 bytes", "at most 255");
    f->req.model_name = "m";
    f->in.name = big;
    expect_invalid(f, 1, "the name of input 0 is 1048576 bytes", NULL);
    f->in.name = "x";
    f->req.id = big;
    expect_invalid(f, 1, "request id", NULL);
    f->req.id = "";
    Inference__InferParameter v = INFERENCE__INFER_PARAMETER__INIT;
    v.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    v.string_param = big;
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry pe =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__PARAMETERS_ENTRY__INIT;
    Inference__ModelInferRequest__InferInputTensor__ParametersEntry *pes[] = {&pe};
    pe.key = "k";
    pe.value = &v;
    f->in.n_parameters = 1;
    f->in.parameters = pes;
    expect_invalid(f, 1, "string parameter 'k'", "at most 4096");
    f->in.n_parameters = 0;
    assert_int_equal(infer_request_check_model_ref("m", big, f->err, sizeof f->err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(infer_request_check_model_ref("m", "12", f->err, sizeof f->err), PS_STATUS_OK);
    free(big);
}

static void test_model_checks(void **state) {
    fx *f = *state;
    f->in.name = "image";
    expect_invalid(f, 1, "unknown input 'image'", "'x' FP32 [-1,3]");
    f->in.name = "x";
    f->in.datatype = "INT32";
    expect_invalid(f, 1, "INT32", "FP32");
    f->in.datatype = "FP32";
    f->shape[0] = 5;
    expect_invalid(f, 1, "batch size 5", "max_batch_size 4");
    f->shape[0] = 0;
    expect_invalid(f, 1, "at least 1", NULL);
    f->shape[0] = 1;
    expect_invalid(f, 1, "24 bytes of raw content, expected 12", NULL);
    f->shape[0] = 2;
    f->shape[1] = 4;
    expect_invalid(f, 1, "shape [2,4], expected [-1,3]", NULL);
    f->shape[1] = 3;
    f->values[4] = NAN;
    expect_invalid(f, 1, "element 4 is not a finite number", NULL);
    f->values[4] = 4.0f;
    expect_invalid(f, 0, "0 fp32_contents values, expected 6", NULL);
    Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    int32_t ints[1] = {1};
    c.n_int_contents = 1;
    c.int_contents = ints;
    f->in.contents = &c;
    expect_invalid(f, 0, "only fp32_contents", NULL);
    f->in.contents = NULL;
    Inference__ModelInferRequest__InferRequestedOutputTensor o =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferRequestedOutputTensor *os[] = {&o, &o};
    o.name = "logits_x";
    f->req.n_outputs = 1;
    f->req.outputs = os;
    expect_invalid(f, 1, "unknown output 'logits_x'", NULL);
    o.name = "y";
    f->req.n_outputs = 2;
    expect_invalid(f, 1, "output 'y' is requested twice", NULL);
    f->req.n_outputs = 0;
    Inference__ModelInferRequest__InferInputTensor *twice[] = {&f->in, &f->in};
    f->req.n_inputs = 2;
    f->req.inputs = twice;
    expect_invalid(f, 1, "2 inputs: give one per input", NULL);
    expect_invalid(f, 0, "takes 1 input(s), the request has 2", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_raw_and_typed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_counts_refused_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_strings_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
