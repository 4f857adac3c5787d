/* infer_request.c: see infer_request.h. Every array here is on the heap and sized by
 * a count that was checked first, or by the model's config. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer_request.h"
#include "util.h"

struct infer_request {
    model_input *inputs;
    void **in_data; /* per input: floats (FP32) or int64 ids (INT64), malloc'd */
    size_t n_inputs;
    model_output *outputs;
    size_t n_outputs;
    int64_t batch;
};

#define INVALID PS_STATUS_INVALID_ARGUMENT

/* Formats err and returns INVALID_ARGUMENT. */
static ps_status invalid(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ps_status invalid(char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return INVALID;
}

/* ================================================================ step 1: limits === */

/* Messages are formatted only on failure: the common path formats nothing. */

static bool too_long(const char *s, size_t max) {
    return s && strnlen(s, max + 1) > max;
}

static ps_status long_string(const char *what, const char *s, size_t max, char *err,
                             size_t err_len) {
    return invalid(err, err_len, "%s is %zu bytes; at most %zu allowed", what, strlen(s), max);
}

static ps_status check_string(const char *what, const char *s, size_t max, char *err,
                              size_t err_len) {
    return too_long(s, max) ? long_string(what, s, max, err, err_len) : PS_STATUS_OK;
}

static ps_status check_count(const char *what, const char *where, size_t n, size_t max, char *err,
                             size_t err_len) {
    if (n > max)
        return invalid(err, err_len, "%s has %zu %s; at most %zu allowed", where, n, what, max);
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
                                c->n_uint64_contents || c->n_fp64_contents || c->n_bytes_contents);
    if (!bad && !other_contents && in->n_parameters == 0)
        return PS_STATUS_OK; /* the common case */
    snprintf(where, sizeof where, "input '%.64s'", in->name ? in->name : "");
    snprintf(what, sizeof what, "the datatype of %s", where);
    ps_status st = check_string(what, in->datatype, INFER_MAX_DATATYPE_BYTES, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("dimensions", where, in->n_shape, INFER_MAX_RANK, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_count("parameters", where, in->n_parameters, INFER_MAX_PARAMETERS, err, err_len);
    for (size_t k = 0; st == PS_STATUS_OK && k < in->n_parameters; k++)
        st = check_param(where, in->parameters[k]->key, in->parameters[k]->value, err, err_len);
    if (st == PS_STATUS_OK && other_contents)
        st = invalid(err, err_len,
                     "%s: only fp32_contents (FP32 inputs), int64_contents (INT64 inputs) or "
                     "raw_input_contents are accepted",
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
        st = invalid(err, err_len,
                     "%zu raw_input_contents for %zu inputs: give one per input, in order", n_raw,
                     req->n_inputs);
    return st;
}

/* ================================================================ step 2: model === */

static void shape_to_string(const int64_t *dims, size_t n, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* Finds a model input by name; false when the model has none of that name. */
static bool find_input(const model_config *cfg, const char *name, model_tensor_desc *ret_desc) {
    for (size_t k = 0; k < model_config_input_count(cfg); k++)
        if (model_config_input_at(cfg, k, ret_desc) && strcmp(ret_desc->name, name) == 0)
            return true;
    return false;
}

/* Checks input i's shape against the model's; *ret_count gets its element count. */
static ps_status check_shape(const Inference__ModelInferRequest__InferInputTensor *in,
                             const model_tensor_desc *want, uint32_t mbs, uint64_t *ret_count,
                             char *err, size_t err_len) {
    char want_shape[160], got_shape[160];
    shape_to_string(want->dims, want->ndims, want_shape, sizeof want_shape);
    shape_to_string(in->shape, in->n_shape, got_shape, sizeof got_shape);
    if (strcmp(in->datatype, want->datatype) != 0)
        return invalid(err, err_len, "input '%s': datatype %.16s, expected %s", in->name,
                       in->datatype, want->datatype);
    if (in->n_shape != want->ndims)
        return invalid(err, err_len, "input '%s': shape %s, expected %s", in->name, got_shape,
                       want_shape);
    uint64_t count = 1;
    for (size_t k = 0; k < in->n_shape; k++) {
        if (mbs > 0 && k == 0) {
            if (in->shape[0] < 1)
                return invalid(err, err_len, "input '%s': batch size %lld must be at least 1",
                               in->name, (long long)in->shape[0]);
            if ((uint64_t)in->shape[0] > mbs)
                return invalid(err, err_len,
                               "input '%s': batch size %lld is over the model's "
                               "max_batch_size %u",
                               in->name, (long long)in->shape[0], mbs);
        } else if (in->shape[k] != want->dims[k]) {
            return invalid(err, err_len, "input '%s': shape %s, expected %s", in->name, got_shape,
                           want_shape);
        }
        count *= (uint64_t)in->shape[k]; /* bounded: fixed dims times max_batch_size */
    }
    *ret_count = count;
    return PS_STATUS_OK;
}

/* Copies input i's values (raw or typed: fp32_contents for FP32, int64_contents for
 * INT64) into a new buffer of count elements; floats must all be finite (any id is
 * fine: < 0 is padding). */
static ps_status read_values(const infer_request_opts *o, size_t i, bool ids, uint64_t count,
                             void **ret_data, char *err, size_t err_len) {
    const Inference__ModelInferRequest__InferInputTensor *in = o->request->inputs[i];
    const Inference__InferTensorContents *c = in->contents;
    const size_t elem = ids ? 8 : 4;
    const char *type = ids ? "INT64" : "FP32";
    const char *field = ids ? "int64_contents" : "fp32_contents";
    size_t have = c ? (ids ? c->n_int64_contents : c->n_fp32_contents) : 0;
    size_t wrong = c ? (ids ? c->n_fp32_contents : c->n_int64_contents) : 0;
    if (wrong > 0)
        return invalid(err, err_len, "input '%s' is %s: give %s, not %s", in->name, type, field,
                       ids ? "fp32_contents" : "int64_contents");
    if (o->n_raw > 0 && have > 0)
        return invalid(err, err_len, "input '%s' has both typed contents and raw_input_contents",
                       in->name);
    char shape[160];
    shape_to_string(in->shape, in->n_shape, shape, sizeof shape);
    if (o->n_raw > 0 && o->raw[i].len != count * elem)
        return invalid(err, err_len,
                       "input '%s': %zu bytes of raw content, expected %llu (shape %s of %s)",
                       in->name, o->raw[i].len, (unsigned long long)(count * elem), shape, type);
    if (o->n_raw == 0 && have != count)
        return invalid(err, err_len, "input '%s': %zu %s values, expected %llu (shape %s)",
                       in->name, have, field, (unsigned long long)count, shape);
    uint8_t *data = malloc(count * elem + 1);
    if (!data) {
        ps_set_err(err, err_len, "out of memory for input '%s' (%llu values)", in->name,
                   (unsigned long long)count);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    const void *src = o->n_raw ? (const void *)o->raw[i].data
                      : ids    ? (const void *)c->int64_contents
                               : (const void *)c->fp32_contents;
    memcpy(data, src, count * elem); /* raw bytes are little-endian, like this host */
    for (uint64_t k = 0; !ids && k < count; k++) {
        float v;
        memcpy(&v, data + k * 4, 4);
        if (!isfinite(v)) {
            free(data);
            return invalid(err, err_len, "input '%s': element %llu is not a finite number",
                           in->name, (unsigned long long)k);
        }
    }
    *ret_data = data;
    return PS_STATUS_OK;
}

/* Decodes every input into r (inputs were counted and checked in step 1). */
static ps_status read_inputs(infer_request *r, const infer_request_opts *o, char *err,
                             size_t err_len) {
    const model_config *cfg = o->config;
    const Inference__ModelInferRequest *req = o->request;
    size_t ni = model_config_input_count(cfg);
    uint32_t mbs = model_config_max_batch_size(cfg);
    if (req->n_inputs != ni)
        return invalid(err, err_len, "model '%s' takes %zu input(s), the request has %zu",
                       model_config_name(cfg), ni, req->n_inputs);
    for (size_t i = 0; i < req->n_inputs; i++) {
        const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[i];
        model_tensor_desc want;
        if (!find_input(cfg, in->name, &want)) {
            char shape[160];
            model_config_input_at(cfg, 0, &want);
            shape_to_string(want.dims, want.ndims, shape, sizeof shape);
            return invalid(err, err_len, "unknown input '%s': model '%s' takes '%s' %s %s%s",
                           in->name, model_config_name(cfg), want.name, want.datatype, shape,
                           ni > 1 ? " (and more)" : "");
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(req->inputs[k]->name, in->name) == 0)
                return invalid(err, err_len, "input '%s' is given twice", in->name);
        uint64_t count = 0;
        ps_status st = check_shape(in, &want, mbs, &count, err, err_len);
        const bool ids = strcmp(want.datatype, "INT64") == 0;
        if (st == PS_STATUS_OK)
            st = read_values(o, i, ids, count, &r->in_data[i], err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        r->n_inputs++;
        model_input *mi = &r->inputs[i];
        mi->name = in->name;
        mi->ndims = (uint32_t)in->n_shape;
        for (size_t k = 0; k < in->n_shape; k++)
            mi->dims[k] = in->shape[k];
        if (ids)
            mi->ids = r->in_data[i];
        else
            mi->data = r->in_data[i];
        if (mbs > 0 && i > 0 && mi->dims[0] != r->batch)
            return invalid(err, err_len, "inputs disagree on the batch size (%lld and %lld)",
                           (long long)r->batch, (long long)mi->dims[0]);
        if (mbs > 0)
            r->batch = mi->dims[0];
    }
    return PS_STATUS_OK;
}

/* Sets up the requested outputs (all when none is named), with full-size buffers. */
static ps_status make_outputs(infer_request *r, const infer_request_opts *o, char *err,
                              size_t err_len) {
    const model_config *cfg = o->config;
    const Inference__ModelInferRequest *req = o->request;
    size_t no = model_config_output_count(cfg);
    for (size_t i = 0; i < r->n_outputs; i++) {
        model_tensor_desc d;
        const char *name = req->n_outputs ? req->outputs[i]->name : NULL;
        bool found = false;
        for (size_t k = 0; k < no && !found; k++)
            found = model_config_output_at(cfg, name ? k : i, &d) &&
                    (!name || strcmp(d.name, name) == 0);
        if (!found)
            return invalid(err, err_len, "unknown output '%s' requested from model '%s'",
                           name ? name : "?", model_config_name(cfg));
        for (size_t k = 0; k < i; k++)
            if (strcmp(r->outputs[k].name, d.name) == 0)
                return invalid(err, err_len, "output '%s' is requested twice", d.name);
        uint64_t count = 1;
        for (uint32_t k = 0; k < d.ndims; k++)
            count *= (uint64_t)(d.dims[k] < 0 ? r->batch : d.dims[k]);
        model_output *mo = &r->outputs[i];
        mo->name = d.name; /* owned by the config, which outlives the request */
        mo->capacity = count;
        mo->buffer = malloc(count * 4 + 1);
        if (!mo->buffer) {
            ps_set_err(err, err_len, "out of memory for output '%s'", d.name);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
    }
    return PS_STATUS_OK;
}

ps_status infer_request_create(const infer_request_opts *opts, infer_request **ret_request,
                               char *err, size_t err_len) {
    const Inference__ModelInferRequest *req = opts->request;
    ps_status st = infer_request_check(req, opts->n_raw, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    size_t n_out = req->n_outputs ? req->n_outputs : model_config_output_count(opts->config);
    infer_request *r = calloc(1, sizeof *r);
    if (!r) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    r->batch = 1;
    r->inputs = calloc(req->n_inputs + 1, sizeof *r->inputs);
    r->in_data = calloc(req->n_inputs + 1, sizeof *r->in_data);
    r->outputs = calloc(n_out + 1, sizeof *r->outputs);
    r->n_outputs = n_out;
    if (!r->inputs || !r->in_data || !r->outputs) {
        ps_set_err(err, err_len, "out of memory");
        st = PS_STATUS_RESOURCE_EXHAUSTED;
        goto fail;
    }
    st = read_inputs(r, opts, err, err_len);
    if (st == PS_STATUS_OK)
        st = make_outputs(r, opts, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail;
    *ret_request = r;
    return PS_STATUS_OK;
fail:
    infer_request_destroy(r);
    return st;
}

void infer_request_destroy(infer_request *r) {
    if (!r)
        return;
    for (size_t i = 0; r->in_data && i < r->n_inputs; i++)
        free(r->in_data[i]);
    for (size_t i = 0; r->outputs && i < r->n_outputs; i++)
        free(r->outputs[i].buffer);
    free(r->in_data);
    free(r->inputs);
    free(r->outputs);
    free(r);
}

const model_input *infer_request_inputs(const infer_request *r, size_t *ret_n) {
    *ret_n = r->n_inputs;
    return r->inputs;
}

model_output *infer_request_outputs(infer_request *r, size_t *ret_n) {
    *ret_n = r->n_outputs;
    return r->outputs;
}

int64_t infer_request_batch(const infer_request *r) {
    return r->batch;
}

float *infer_request_output_take(infer_request *r, size_t i) {
    float *b = r->outputs[i].buffer;
    r->outputs[i].buffer = NULL;
    return b;
}
