/* test_text_input.c: a model's text input (BYTES) in a ModelInferRequest, decoded and
 * tokenized into the INT64 inputs it feeds (text_input.h, through infer_request_create;
 * cmocka, no process). Before this module a BYTES input was refused outright; these
 * tests pin down the encoding (equal to wordpiece_encode's), both wire forms, the
 * either-text-or-ids rule and every hostile length and count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "infer_request.h"
#include "text_input.h"

#define S 6
static const char CONFIG[] =
    "{\"name\": \"enc\", \"max_batch_size\": 4,"
    " \"inputs\": [{\"name\": \"text\", \"datatype\": \"BYTES\", \"shape\": [-1, 1]},"
    "  {\"name\": \"ids\", \"datatype\": \"INT64\", \"shape\": [-1, 6]},"
    "  {\"name\": \"mask\", \"datatype\": \"INT64\", \"shape\": [-1, 6]}],"
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"
    " \"layers\": [{\"op\": \"embedding\", \"input\": \"ids\", \"output\": \"e\", \"weight\": "
    "\"emb\"}, {\"op\": \"mean_pool\", \"input\": \"e\", \"output\": \"y\", \"mask\": \"mask\"}],"
    " \"tokenizer\": {\"type\": \"wordpiece\", \"max_len\": 6, \"feeds\": [\"ids\", \"mask\"],"
    "  \"vocab\": [\"[PAD]\", \"[UNK]\", \"[CLS]\", \"[SEP]\", \"hello\", \"world\", \"##s\","
    " \"!\"]}}";

typedef struct fx {
    model_config *cfg;
    wordpiece *wp;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in[3];
    Inference__ModelInferRequest__InferInputTensor *ins[3];
    Inference__InferTensorContents contents;
    ProtobufCBinaryData strs[4];
    int64_t shape[2];
    uint8_t raw_bytes[256];
    rpc_bytes_view raw[3];
    char err[512];
} fx;

/* Appends a length-prefixed string to f->raw_bytes (raw[0]). */
static void raw_add(fx *f, const char *s, size_t len, uint32_t prefix) {
    uint8_t *p = f->raw_bytes + f->raw[0].len;
    p[0] = (uint8_t)prefix;
    p[1] = (uint8_t)(prefix >> 8);
    p[2] = (uint8_t)(prefix >> 16);
    p[3] = (uint8_t)(prefix >> 24);
    memcpy(p + 4, s, len);
    f->raw[0].len += 4 + len;
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(model_config_parse(CONFIG, strlen(CONFIG), &f->cfg, f->err, sizeof f->err),
                     PS_STATUS_OK);
    model_config_text_in t;
    assert_true(model_config_text_input(f->cfg, &t));
    assert_int_equal(wordpiece_create(NULL, t.vocab, t.vocab_len, &f->wp, f->err, sizeof f->err),
                     PS_STATUS_OK);
    inference__model_infer_request__init(&f->req);
    inference__model_infer_request__infer_input_tensor__init(&f->in[0]);
    inference__infer_tensor_contents__init(&f->contents);
    f->req.model_name = "enc";
    f->in[0].name = "text";
    f->in[0].datatype = "BYTES";
    f->shape[0] = 2;
    f->shape[1] = 1;
    f->in[0].n_shape = 2;
    f->in[0].shape = f->shape;
    f->ins[0] = &f->in[0];
    f->req.n_inputs = 1;
    f->req.inputs = f->ins;
    f->raw[0].data = f->raw_bytes;
    raw_add(f, "Hello worlds!", 13, 13);
    raw_add(f, "", 0, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    wordpiece_destroy(f->wp);
    model_config_destroy(f->cfg);
    free(f);
    return 0;
}

static ps_status create(fx *f, size_t n_raw, infer_request **ret) {
    infer_request_opts o = {
        .config = f->cfg, .request = &f->req, .raw = f->raw, .n_raw = n_raw, .tokenizer = f->wp};
    f->err[0] = '\0';
    return infer_request_create(&o, ret, f->err, sizeof f->err);
}

static void expect_invalid(fx *f, size_t n_raw, const char *fragment) {
    infer_request *r = NULL;
    ps_status st = create(f, n_raw, &r);
    if (st != PS_STATUS_INVALID_ARGUMENT || !strstr(f->err, fragment))
        fail_msg("got %s (%s), want INVALID_ARGUMENT with \"%s\"", ps_status_name(st), f->err,
                 fragment);
    assert_null(r);
}

/* The request decodes into ids and mask equal to the tokenizer's own encoding. */
static void check_encoded(fx *f, infer_request *r) {
    size_t n = 0;
    const model_input *in = infer_request_inputs(r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(in[0].name, "ids");
    assert_string_equal(in[1].name, "mask");
    assert_int_equal(infer_request_batch(r), 2);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(in[k].ndims, 2);
        assert_int_equal(in[k].dims[0], 2);
        assert_int_equal(in[k].dims[1], S);
    }
    /* [CLS] hello world ##s ! [SEP]; then [CLS] [SEP] and padding */
    const int64_t want_ids[2 * S] = {2, 4, 5, 6, 7, 3, 2, 3, 0, 0, 0, 0};
    const int64_t want_mask[2 * S] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    assert_memory_equal(in[0].ids, want_ids, sizeof want_ids);
    assert_memory_equal(in[1].ids, want_mask, sizeof want_mask);
    int64_t ids[S], mask[S];
    assert_int_equal(wordpiece_encode(f->wp, "Hello worlds!", 13, S, ids, mask, NULL, NULL, 0),
                     PS_STATUS_OK);
    assert_memory_equal(in[0].ids, ids, sizeof ids);
    assert_memory_equal(in[1].ids, mask, sizeof mask);
}

static void test_raw_text(void **state) {
    fx *f = *state;
    infer_request *r = NULL;
    assert_int_equal(create(f, 1, &r), PS_STATUS_OK);
    check_encoded(f, r);
    size_t n_out = 0;
    infer_request_outputs(r, &n_out);
    assert_int_equal(n_out, 1);
    infer_request_destroy(r);
}

static void test_bytes_contents(void **state) {
    fx *f = *state;
    f->strs[0] = (ProtobufCBinaryData){13, (uint8_t *)"Hello worlds!"};
    f->strs[1] = (ProtobufCBinaryData){0, NULL};
    f->contents.n_bytes_contents = 2;
    f->contents.bytes_contents = f->strs;
    f->in[0].contents = &f->contents;
    infer_request *r = NULL;
    assert_int_equal(create(f, 0, &r), PS_STATUS_OK);
    check_encoded(f, r);
    infer_request_destroy(r);
    f->contents.n_bytes_contents = 3; /* more strings than the batch */
    f->strs[2] = f->strs[0];
    expect_invalid(f, 0, "input 'text': 3 bytes_contents string(s), the shape says 2");
    f->contents.n_bytes_contents = 2;
    int64_t v = 1;
    f->contents.n_int64_contents = 1;
    f->contents.int64_contents = &v;
    expect_invalid(f, 0, "input 'text' is BYTES (text): give bytes_contents, not int64_contents");
    f->contents.n_int64_contents = 0;
    f->strs[1] = (ProtobufCBinaryData){WORDPIECE_MAX_TEXT_BYTES + 1, (uint8_t *)"x"};
    expect_invalid(f, 0, "input 'text': string 1 is 1048577 bytes; at most 1048576 allowed");
}

static void test_hostile_raw(void **state) {
    fx *f = *state;
    f->raw[0].len = 0;
    raw_add(f, "ok", 2, 2);
    raw_add(f, "\xff\xfe", 2, 2);
    expect_invalid(f, 1, "input 'text': string 1: ");
    assert_non_null(strstr(f->err, "UTF-8"));
    f->raw[0].len = 0;
    raw_add(f, "ok", 2, 2);
    raw_add(f, "abc", 3, 50); /* a length prefix past the buffer */
    expect_invalid(f, 1, "string 1's length 50 (at byte 6) runs past the end of the 13-byte raw");
    f->raw[0].len = 0;
    raw_add(f, "ok", 2, 2);
    raw_add(f, "ok", 2, 2);
    raw_add(f, "ok", 2, 2); /* more strings than the batch */
    expect_invalid(f, 1, "6 byte(s) after the 2 string(s) the shape says");
    f->raw[0].len = 0;
    raw_add(f, "ok", 2, 2); /* fewer */
    expect_invalid(f, 1, "raw content holds 1 string(s), the shape says 2");
    f->raw[0].len = 0;
    raw_add(f, "ok", 2, 2);
    raw_add(f, "", 0, WORDPIECE_MAX_TEXT_BYTES + 1);
    expect_invalid(f, 1, "string 1 is 1048577 bytes; at most 1048576 allowed");
    f->raw[0].len = 3; /* a cut length prefix */
    expect_invalid(f, 1, "raw content holds 0 string(s)");
}

static void test_hostile_shape(void **state) {
    fx *f = *state;
    f->in[0].datatype = "FP32";
    expect_invalid(f, 1, "input 'text': datatype FP32, expected BYTES");
    f->in[0].datatype = "BYTES";
    f->shape[1] = 2;
    expect_invalid(f, 1, "input 'text': shape must be [batch, 1]");
    f->shape[1] = 1;
    f->shape[0] = 5;
    expect_invalid(f, 1, "batch size 5 must be from 1 to the model's max_batch_size 4");
    f->shape[0] = 0;
    expect_invalid(f, 1, "batch size 0 must be from 1");
}

/* Either the text or the ids, never both; the ids alone still work. */
static void test_text_or_ids(void **state) {
    fx *f = *state;
    int64_t ids[2 * S] = {2, 4, 3, 0, 0, 0, 2, 3, 0, 0, 0, 0};
    int64_t shape[2] = {2, S};
    for (int k = 1; k < 3; k++) {
        inference__model_infer_request__infer_input_tensor__init(&f->in[k]);
        f->in[k].datatype = "INT64";
        f->in[k].n_shape = 2;
        f->in[k].shape = shape;
        f->raw[k] = (rpc_bytes_view){(const uint8_t *)ids, sizeof ids};
        f->ins[k] = &f->in[k];
    }
    f->in[1].name = "ids";
    f->in[2].name = "mask";
    f->req.n_inputs = 3;
    expect_invalid(f, 0, "input 'ids' is fed by text input 'text': give either the text or");
    f->ins[1] = &f->in[2];
    f->req.n_inputs = 2;
    expect_invalid(f, 0, "input 'mask' is fed by text input 'text'");
    f->ins[1] = &f->in[1];
    /* just the ids */
    f->req.inputs = f->ins + 1;
    f->req.n_inputs = 2;
    f->raw[0] = f->raw[1]; /* raw entries follow the request's inputs */
    infer_request *r = NULL;
    assert_int_equal(create(f, 2, &r), PS_STATUS_OK);
    size_t n = 0;
    const model_input *in = infer_request_inputs(r, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(in[0].ids, ids, sizeof ids);
    infer_request_destroy(r);
    f->in[1].datatype = "BYTES"; /* BYTES for an INT64 input */
    expect_invalid(f, 2, "input 'ids': datatype BYTES, expected INT64");
    f->in[1].datatype = "INT64";
    Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    ProtobufCBinaryData one = {1, (uint8_t *)"x"};
    c.n_bytes_contents = 1;
    c.bytes_contents = &one;
    f->in[1].contents = &c; /* strings for an INT64 input */
    expect_invalid(f, 0, "input 'ids' is INT64: give int64_contents, not bytes_contents");
    f->in[1].contents = NULL;
    /* no tokenizer loaded */
    f->req.inputs = f->ins;
    f->ins[1] = &f->in[1];
    f->req.n_inputs = 1;
    infer_request_opts o = {.config = f->cfg, .request = &f->req, .raw = f->raw, .n_raw = 1};
    infer_request *r2 = NULL;
    assert_int_equal(infer_request_create(&o, &r2, f->err, sizeof f->err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(f->err, "no tokenizer"));
}

/* Step 1 refuses a huge bytes_contents count before any model is looked at. */
static void test_step1_count(void **state) {
    fx *f = *state;
    f->contents.n_bytes_contents = TEXT_INPUT_MAX_STRINGS + 1;
    f->contents.bytes_contents = f->strs; /* never read */
    f->in[0].contents = &f->contents;
    char err[256];
    assert_int_equal(infer_request_check(&f->req, 0, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "65537 bytes_contents strings; at most 65536 allowed"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raw_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_contents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_or_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step1_count, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
