/* infer_request_check.c: step 1 of infer_request.h, every count and length of a request
 * against the named limits, before any model is looked at (infer_request.c: step 2). */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "infer_request.h"
#include "infer_request_internal.h"
#include "text_input.h"
#include "util.h"

ps_status infer_request_invalid(char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return PS_STATUS_INVALID_ARGUMENT;
}

/* ================================================================ step 1: limits === */

/* Messages are formatted only on failure: the common path formats nothing. */

static bool too_long(const char *s, size_t max) {
    return s && strnlen(s, max + 1) > max;
}

static ps_status long_string(const char *what, const char *s, size_t max, char *err,
                             size_t err_len) {
    return infer_request_invalid(err, err_len, "%s is %zu bytes; at most %zu allowed", what,
                                 strlen(s), max);
}

static ps_status check_string(const char *what, const char *s, size_t max, char *err,
                              size_t err_len) {
    return too_long(s, max) ? long_string(what, s, max, err, err_len) : PS_STATUS_OK;
}

static ps_status check_count(const char *what, const char *where, size_t n, size_t max, char *err,
                             size_t err_len) {
    if (n > max)
        return infer_request_invalid(err, err_len, "%s has %zu %s; at most %zu allowed", where, n,
                                     what, max);
    return PS_STATUS_OK;
}

/* The entries of a parameters map (at most INFER_MAX_PARAMETERS, checked first). */
static ps_status check_param(const char *where, const char *key, const Inference__InferParameter *v,
                             char *err, size_t err_len) {
    char what[160];
    if (too_long(key, INFER_MAX_NAME_BYTES)) {
        snprintf(what, sizeof what, "a parameter name of %s", where);
        return long_string(what, key, INFER_MAX_NAME_BYTES, err, err_len);
    }
    if (v &&
        v->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM &&
        too_long(v->string_param, INFER_MAX_PARAMETER_BYTES)) {
        snprintf(what, sizeof what, "string parameter '%.64s' of %s", key ? key : "", where);
        return long_string(what, v->string_param, INFER_MAX_PARAMETER_BYTES, err, err_len);
    }
    return PS_STATUS_OK;
}

ps_status infer_request_check_model_ref(const char *name, const char *version, char *err,
                                        size_t err_len) {
    ps_status st = check_string("the model name", name, INFER_MAX_NAME_BYTES, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_string("the model version", version, INFER_MAX_VERSION_BYTES, err, err_len);
    return st;
}

static ps_status check_input(const Inference__ModelInferRequest__InferInputTensor *in, size_t i,
                             char *err, size_t err_len) {
    char where[96], what[128];
    if (too_long(in->name, INFER_MAX_NAME_BYTES)) {
        snprintf(where, sizeof where, "the name of input %zu", i);
        return long_string(where, in->name, INFER_MAX_NAME_BYTES, err, err_len);
    }
    bool bad = too_long(in->datatype, INFER_MAX_DATATYPE_BYTES) || in->n_shape > INFER_MAX_RANK ||
               in->n_parameters > INFER_MAX_PARAMETERS;
    const Inference__InferTensorContents *c = in->contents;
    bool other_contents = c && (c->n_bool_contents || c->n_int_contents || c->n_uint_contents ||
                                c->n_uint64_contents || c->n_fp64_contents);
    bad = bad || (c && c->n_bytes_contents > TEXT_INPUT_MAX_STRINGS);
    if (!bad && !other_contents && in->n_parameters == 0)
        return PS_STATUS_OK; /* the common case */
    snprintf(where, sizeof where, "input '%.64s'", in->name ? in->name : "");
    snprintf(what, sizeof what, "the datatype of %s", where);
    ps_status st = check_string(what, in->datatype, INFER_MAX_DATATYPE_BYTES, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("dimensions", where, in->n_shape, INFER_MAX_RANK, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("parameters", where, in->n_parameters, INFER_MAX_PARAMETERS, err, err_len);
    if (st == PS_STATUS_OK && c)
        st = check_count("bytes_contents strings", where, c->n_bytes_contents,
                         TEXT_INPUT_MAX_STRINGS, err, err_len);
    for (size_t k = 0; st == PS_STATUS_OK && k < in->n_parameters; k++)
        st = check_param(where, in->parameters[k]->key, in->parameters[k]->value, err, err_len);
    if (st == PS_STATUS_OK && other_contents)
        st = infer_request_invalid(
            err, err_len,
            "%s: only fp32_contents (FP32 inputs), int64_contents (INT64 inputs), "
            "bytes_contents (BYTES inputs) or raw_input_contents are accepted",
            where);
    return st;
}

static ps_status check_output(const Inference__ModelInferRequest__InferRequestedOutputTensor *o,
                              size_t i, char *err, size_t err_len) {
    if (!too_long(o->name, INFER_MAX_NAME_BYTES) && o->n_parameters == 0)
        return PS_STATUS_OK; /* the common case */
    char what[64];
    snprintf(what, sizeof what, "requested output %zu", i);
    ps_status st = check_string(what, o->name, INFER_MAX_NAME_BYTES, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("parameters", what, o->n_parameters, INFER_MAX_PARAMETERS, err, err_len);
    for (size_t k = 0; st == PS_STATUS_OK && k < o->n_parameters; k++)
        st = check_param(what, o->parameters[k]->key, o->parameters[k]->value, err, err_len);
    return st;
}

ps_status infer_request_check(const Inference__ModelInferRequest *req, size_t n_raw, char *err,
                              size_t err_len) {
    const char *where = "the request";
    ps_status st = infer_request_check_model_ref(req->model_name, req->model_version, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_string("the request id", req->id, INFER_MAX_ID_BYTES, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("inputs", where, req->n_inputs, INFER_MAX_INPUTS, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("raw_input_contents", where, n_raw, INFER_MAX_INPUTS, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("requested outputs", where, req->n_outputs, INFER_MAX_OUTPUTS, err,
                         err_len);
    if (st == PS_STATUS_OK)
        st =
            check_count("parameters", where, req->n_parameters, INFER_MAX_PARAMETERS, err, err_len);
    for (size_t i = 0; st == PS_STATUS_OK && i < req->n_parameters; i++)
        st = check_param(where, req->parameters[i]->key, req->parameters[i]->value, err, err_len);
    for (size_t i = 0; st == PS_STATUS_OK && i < req->n_inputs; i++)
        st = check_input(req->inputs[i], i, err, err_len);
    for (size_t i = 0; st == PS_STATUS_OK && i < req->n_outputs; i++)
        st = check_output(req->outputs[i], i, err, err_len);
    if (st == PS_STATUS_OK && n_raw && n_raw != req->n_inputs)
        st = infer_request_invalid(
            err, err_len, "%zu raw_input_contents for %zu inputs: give one per input, in order",
            n_raw, req->n_inputs);
    return st;
}
