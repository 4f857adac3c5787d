/* test_model_config_text.c: unit tests of config.json's text input (a BYTES input and its
 * "tokenizer"): what parses, what the accessor reports, and each refusal. */
#include "test_config_parse.h"

#include <stdio.h>

/* A config with a text input: PRE, then the tokenizer fields TOK, then POST. */
#define INPUTS_TEXT                                                                                \
    "{'name': 'text', 'datatype': 'BYTES', 'shape': [-1, 1]}, "                                    \
    "{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "                                     \
    "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}"
#define GRAPH                                                                                      \
    "'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 3]}], "                           \
    "'layers': [{'op': 'embedding', 'input': 'ids', 'output': 'e', 'weight': 'emb'}, "             \
    "{'op': 'mean_pool', 'input': 'e', 'output': 'y', 'mask': 'mask'}]"
#define VOCAB "['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a', '##b']"
#define TOKENIZER(fields) "'tokenizer': {" fields "}"
#define GOOD_TOK "'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'mask']"
#define CONFIG(inputs, tok)                                                                        \
    "{'name': 'enc', 'max_batch_size': 8, 'inputs': [" inputs "], " GRAPH tok "}"

static void test_text_parses(void **state) {
    (void)state;
    model_config *cfg = parse_ok(CONFIG(INPUTS_TEXT, ", " TOKENIZER(GOOD_TOK)));
    /* the text input is not a graph input */
    assert_int_equal(model_config_input_count(cfg), 2);
    model_tensor_desc d;
    assert_true(model_config_input_at(cfg, 0, &d));
    assert_string_equal(d.name, "ids");
    model_config_text_in t;
    assert_true(model_config_text_input(cfg, &t));
    assert_string_equal(t.name, "text");
    assert_string_equal(t.vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##b");
    assert_int_equal(t.vocab_len, strlen(t.vocab));
    assert_int_equal(t.vocab_tokens, 6);
    assert_int_equal(t.max_len, 4);
    assert_int_equal(t.ids_input, 0);
    assert_int_equal(t.mask_input, 1);
    /* the feeds in the other order, the text input last */
    model_config *cfg2 = parse_ok(CONFIG("{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                                         "{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                                         "{'name': 'text', 'datatype': 'BYTES', 'shape': [-1, 1]}",
                                         ", " TOKENIZER(GOOD_TOK)));
    assert_true(model_config_text_input(cfg2, &t));
    assert_int_equal(t.ids_input, 1);
    assert_int_equal(t.mask_input, 0);
    model_config_destroy(cfg2);
    /* a clone keeps it */
    model_config *c3 = NULL;
    assert_int_equal(model_config_clone(cfg, &c3), PS_STATUS_OK);
    assert_true(model_config_text_input(c3, &t));
    model_config_destroy(c3);
    model_config_destroy(cfg);
}

static void test_no_text(void **state) {
    (void)state;
    model_config *cfg = parse_ok(CONFIG("{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                                        "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}",
                                        ""));
    model_config_text_in t;
    assert_false(model_config_text_input(cfg, &t));
    model_config_destroy(cfg);
    expect_invalid(CONFIG("{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                          "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "\"tokenizer\" is given but no input has datatype BYTES");
}

static void test_text_input_errors(void **state) {
    (void)state;
    expect_invalid(CONFIG(INPUTS_TEXT, ""), "a BYTES input needs a \"tokenizer\" object");
    expect_invalid(CONFIG(INPUTS_TEXT, ", 'tokenizer': 3"), "needs a \"tokenizer\" object");
    expect_invalid(CONFIG("{'name': 'text', 'datatype': 'BYTES', 'shape': [-1, 2]}, "
                          "{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                          "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "inputs[0] (\"text\"): a BYTES (text) input must have shape [-1, 1]");
    expect_invalid("{'name': 'enc', 'inputs': [{'name': 'text', 'datatype': 'BYTES', 'shape': "
                   "[1]}, {'name': 'ids', 'datatype': 'INT64', 'shape': [4]}], 'outputs': "
                   "[{'name': 'e', 'datatype': 'FP32', 'shape': [4, 3]}], 'layers': [{'op': "
                   "'embedding', 'input': 'ids', 'output': 'e', 'weight': 'emb'}]}",
                   "max_batch_size > 0");
    expect_invalid(CONFIG(INPUTS_TEXT ", {'name': 't2', 'datatype': 'BYTES', 'shape': [-1, 1]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "at most one BYTES input");
    expect_invalid(CONFIG("{'name': 'text', 'datatype': 'BYTES', 'shape': [-1, 1], 'x': 1}, "
                          "{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                          "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "unknown field");
    expect_invalid(CONFIG("{'name': 'ids', 'datatype': 'BYTES', 'shape': [-1, 1]}, "
                          "{'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}, "
                          "{'name': 'mask', 'datatype': 'INT64', 'shape': [-1, 4]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "inputs[0]: duplicate name \"ids\"");
    expect_invalid("{'name': 'enc', 'max_batch_size': 8, 'inputs': [{'name': 'text', "
                   "'datatype': 'BYTES', 'shape': [-1, 1]}], " GRAPH "}",
                   "must hold an input the graph reads");
    /* duplicates still name the JSON positions with a text input before them */
    expect_invalid(CONFIG(INPUTS_TEXT ", {'name': 'ids', 'datatype': 'INT64', 'shape': [-1, 4]}",
                          ", " TOKENIZER(GOOD_TOK)),
                   "inputs[3]: duplicate name \"ids\" (also inputs[1])");
    /* BYTES is for inputs only */
    expect_refused("{'name': 'enc', 'max_batch_size': 8, 'inputs': [{'name': 'x', 'datatype': "
                   "'FP32', 'shape': [-1, 2]}], 'outputs': [{'name': 'y', 'datatype': 'BYTES', "
                   "'shape': [-1, 2]}], 'layers': [{'op': 'relu', 'input': 'x', 'output': 'y'}]}",
                   PS_STATUS_UNIMPLEMENTED, "only \"FP32\" is, for outputs");
}

static void test_tokenizer_errors(void **state) {
    (void)state;
    static const struct {
        const char *tok;
        const char *fragment;
    } cases[] = {
        {"'type': 'bpe', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'mask']",
         "\"type\" must be \"wordpiece\""},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'mask'], "
         "'lower': true",
         "unknown field"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 1, 'feeds': ['ids', 'mask']",
         "\"max_len\" must be an integer from 2 to 8192"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 9000, 'feeds': ['ids', 'mask']",
         "\"max_len\" must be an integer from 2"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 5, 'feeds': ['ids', 'mask']",
         "feeds[0] \"ids\" must be an INT64 input of shape [-1, 5] (max_len)"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids']",
         "\"feeds\" must list two input names"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'nope']",
         "feeds[1] must name an INT64 input of the model"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'ids']",
         "\"feeds\" names \"ids\" twice"},
        {"'type': 'wordpiece', 'vocab': " VOCAB ", 'max_len': 4, 'feeds': ['ids', 'text']",
         "feeds[1] must name an INT64 input"},
        {"'type': 'wordpiece', 'vocab': [], 'max_len': 4, 'feeds': ['ids', 'mask']",
         "\"vocab\" must be a list of 1 to 1048576 strings"},
        {"'type': 'wordpiece', 'vocab': 'a', 'max_len': 4, 'feeds': ['ids', 'mask']",
         "\"vocab\" must be a list"},
        {"'type': 'wordpiece', 'vocab': ['[PAD]', 7], 'max_len': 4, 'feeds': ['ids', 'mask']",
         "vocab[1] must be a string of 1 to 1024 bytes"},
        {"'type': 'wordpiece', 'vocab': ['[PAD]', ''], 'max_len': 4, 'feeds': ['ids', 'mask']",
         "vocab[1] must be a string"},
        {"'type': 'wordpiece', 'vocab': ['[PAD]', 'a\\nb'], 'max_len': 4, "
         "'feeds': ['ids', 'mask']",
         "vocab[1] must be a string of 1 to 1024 bytes without NUL, \\n or \\r"},
        {"'type': 'wordpiece', 'vocab': ['[PAD]', '[UNK]', '[CLS]'], 'max_len': 4, "
         "'feeds': ['ids', 'mask']",
         "\"vocab\" lacks the special token [SEP]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048];
        snprintf(text, sizeof(text),
                 "{'name': 'enc', 'max_batch_size': 8, 'inputs': [" INPUTS_TEXT "], " GRAPH
                 ", 'tokenizer': {%s}}",
                 cases[i].tok);
        expect_invalid(text, cases[i].fragment);
    }
}

/* A token longer than the limit. */
static void test_token_too_long(void **state) {
    (void)state;
    const size_t n = MODEL_CONFIG_MAX_TOKEN_BYTES + 1;
    char *text = malloc(n + 1024);
    assert_non_null(text);
    int at = snprintf(text, 1024,
                      "{'name': 'enc', 'max_batch_size': 8, 'inputs': [" INPUTS_TEXT "], " GRAPH
                      ", 'tokenizer': {'type': 'wordpiece', 'max_len': 4, 'feeds': ['ids', "
                      "'mask'], 'vocab': ['");
    memset(text + at, 'x', n);
    strcpy(text + at + n, "']}}");
    expect_invalid(text, "vocab[0] must be a string of 1 to 1024 bytes");
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_parses),       cmocka_unit_test(test_no_text),
        cmocka_unit_test(test_text_input_errors), cmocka_unit_test(test_tokenizer_errors),
        cmocka_unit_test(test_token_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
