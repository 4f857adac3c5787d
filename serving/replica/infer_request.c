/* infer_request.c: see infer_request.h; step 2 (step 1 is infer_request_check.c). Every
 * array here is on the heap and sized by a count that was checked first, or by the
 * model's config. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer_request.h"
#include "infer_request_internal.h"
#include "text_input.h"
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
        return infer_request_invalid(err, err_len, "input '%s': datatype %.16s, expected %s",
                                     in->name, in->datatype, want->datatype);
    if (in->n_shape != want->ndims)
        return infer_request_invalid(err, err_len, "input '%s': shape %s, expected %s", in->name,
                                     got_shape, want_shape);
    uint64_t count = 1;
    for (size_t k = 0; k < in->n_shape; k++) {
        if (mbs > 0 && k == 0) {
            if (in->shape[0] < 1)
                return infer_request_invalid(err, err_len,
                                             "input '%s': batch size %lld must be at least 1",
                                             in->name, (long long)in->shape[0]);
            if ((uint64_t)in->shape[0] > mbs)
                return infer_request_invalid(err, err_len,
                                             "input '%s': batch size %lld is over the model's "
                                             "max_batch_size %u",
                                             in->name, (long long)in->shape[0], mbs);
        } else if (in->shape[k] != want->dims[k]) {
            return infer_request_invalid(err, err_len, "input '%s': shape %s, expected %s",
                                         in->name, got_shape, want_shape);
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
        return infer_request_invalid(err, err_len, "input '%s' is %s: give %s, not %s", in->name,
                                     type, field, ids ? "fp32_contents" : "int64_contents");
    if (c && c->n_bytes_contents > 0)
        return infer_request_invalid(err, err_len,
                                     "input '%s' is %s: give %s, not bytes_contents (for text)",
                                     in->name, type, field);
    if (o->n_raw > 0 && have > 0)
        return infer_request_invalid(
            err, err_len, "input '%s' has both typed contents and raw_input_contents", in->name);
    char shape[160];
    shape_to_string(in->shape, in->n_shape, shape, sizeof shape);
    if (o->n_raw > 0 && o->raw[i].len != count * elem)
        return infer_request_invalid(
            err, err_len, "input '%s': %zu bytes of raw content, expected %llu (shape %s of %s)",
            in->name, o->raw[i].len, (unsigned long long)(count * elem), shape, type);
    if (o->n_raw == 0 && have != count)
        return infer_request_invalid(err, err_len,
                                     "input '%s': %zu %s values, expected %llu (shape %s)",
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
            return infer_request_invalid(err, err_len,
                                         "input '%s': element %llu is not a finite number",
                                         in->name, (unsigned long long)k);
        }
    }
    *ret_data = data;
    return PS_STATUS_OK;
}

/* Appends a decoded input (data: malloc'd, owned by r from here) to r. */
static ps_status add_input(infer_request *r, const char *name, const int64_t *shape, size_t ndims,
                           bool ids, void *data, uint32_t mbs, char *err, size_t err_len) {
    r->in_data[r->n_inputs] = data;
    model_input *mi = &r->inputs[r->n_inputs++];
    mi->name = name;
    mi->ndims = (uint32_t)ndims;
    memcpy(mi->dims, shape, ndims * sizeof *shape);
    if (ids)
        mi->ids = data;
    else
        mi->data = data;
    if (mbs > 0 && r->n_inputs > 1 && mi->dims[0] != r->batch)
        return infer_request_invalid(err, err_len,
                                     "inputs disagree on the batch size (%lld and %lld)",
                                     (long long)r->batch, (long long)mi->dims[0]);
    if (mbs > 0)
        r->batch = mi->dims[0];
    return PS_STATUS_OK;
}

/* Request input i is the text input: tokenized into the two feeds (text_input.h). */
static ps_status read_text(infer_request *r, const infer_request_opts *o, size_t i,
                           const model_config_text_in *t, char *err, size_t err_len) {
    if (!o->tokenizer)
        return infer_request_invalid(
            err, err_len, "input '%s': this model version has no tokenizer loaded", t->name);
    text_input_opts to = {.tokenizer = o->tokenizer,
                          .text = t,
                          .max_batch_size = model_config_max_batch_size(o->config),
                          .in = o->request->inputs[i],
                          .raw = o->n_raw ? &o->raw[i] : NULL};
    int64_t *ids = NULL, *mask = NULL, batch = 0;
    ps_status st = text_input_encode(&to, &ids, &mask, &batch, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    model_tensor_desc d_ids, d_mask;
    model_config_input_at(o->config, t->ids_input, &d_ids);
    model_config_input_at(o->config, t->mask_input, &d_mask);
    const int64_t shape[2] = {batch, t->max_len};
    st = add_input(r, d_ids.name, shape, 2, true, ids, to.max_batch_size, err, err_len);
    if (st != PS_STATUS_OK) { /* r owns ids already */
        free(mask);
        return st;
    }
    return add_input(r, d_mask.name, shape, 2, true, mask, to.max_batch_size, err, err_len);
}

/* Decodes every input into r (inputs were counted and checked in step 1). A model with a
 * text input takes it in place of its two feeds (never both). */
static ps_status read_inputs(infer_request *r, const infer_request_opts *o, char *err,
                             size_t err_len) {
    const model_config *cfg = o->config;
    const Inference__ModelInferRequest *req = o->request;
    size_t ni = model_config_input_count(cfg);
    uint32_t mbs = model_config_max_batch_size(cfg);
    model_config_text_in t;
    size_t text_at = SIZE_MAX; /* the request's text input, if any */
    if (model_config_text_input(cfg, &t))
        for (size_t i = 0; i < req->n_inputs; i++)
            if (strcmp(req->inputs[i]->name, t.name) == 0 && text_at == SIZE_MAX)
                text_at = i;
    for (size_t i = 0; text_at != SIZE_MAX && i < req->n_inputs; i++) {
        const char *name = req->inputs[i]->name;
        if (strcmp(name, model_config_value_name(cfg, t.ids_input)) == 0 ||
            strcmp(name, model_config_value_name(cfg, t.mask_input)) == 0)
            return infer_request_invalid(
                err, err_len,
                "input '%s' is fed by text input '%s': give either the text or the "
                "INT64 inputs, not both",
                name, t.name);
    }
    if (text_at != SIZE_MAX && req->n_inputs != ni - 1)
        return infer_request_invalid(
            err, err_len,
            "model '%s' takes %zu input(s) with text input '%s' (in place of the "
            "INT64 inputs it feeds), the request has %zu",
            model_config_name(cfg), ni - 1, t.name, req->n_inputs);
    if (text_at == SIZE_MAX && req->n_inputs != ni)
        return infer_request_invalid(err, err_len,
                                     "model '%s' takes %zu input(s), the request has %zu",
                                     model_config_name(cfg), ni, req->n_inputs);
    for (size_t i = 0; i < req->n_inputs; i++) {
        const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[i];
        for (size_t k = 0; k < i; k++)
            if (strcmp(req->inputs[k]->name, in->name) == 0)
                return infer_request_invalid(err, err_len, "input '%s' is given twice", in->name);
        if (i == text_at) {
            ps_status st = read_text(r, o, i, &t, err, err_len);
            if (st != PS_STATUS_OK)
                return st;
            continue;
        }
        model_tensor_desc want;
        if (!find_input(cfg, in->name, &want)) {
            char shape[160];
            model_config_input_at(cfg, 0, &want);
            shape_to_string(want.dims, want.ndims, shape, sizeof shape);
            return infer_request_invalid(err, err_len,
                                         "unknown input '%s': model '%s' takes '%s' %s %s%s",
                                         in->name, model_config_name(cfg), want.name, want.datatype,
                                         shape, ni > 1 ? " (and more)" : "");
        }
        uint64_t count = 0;
        void *data = NULL;
        ps_status st = check_shape(in, &want, mbs, &count, err, err_len);
        const bool ids = strcmp(want.datatype, "INT64") == 0;
        if (st == PS_STATUS_OK)
            st = read_values(o, i, ids, count, &data, err, err_len);
        if (st == PS_STATUS_OK)
            st = add_input(r, in->name, in->shape, in->n_shape, ids, data, mbs, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
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
            return infer_request_invalid(err, err_len,
                                         "unknown output '%s' requested from model '%s'",
                                         name ? name : "?", model_config_name(cfg));
        for (size_t k = 0; k < i; k++)
            if (strcmp(r->outputs[k].name, d.name) == 0)
                return infer_request_invalid(err, err_len, "output '%s' is requested twice",
                                             d.name);
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
    /* a text input becomes two inputs */
    r->inputs = calloc(req->n_inputs + 2, sizeof *r->inputs);
    r->in_data = calloc(req->n_inputs + 2, sizeof *r->in_data);
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
