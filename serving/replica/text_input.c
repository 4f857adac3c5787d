/* text_input.c: see text_input.h. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_input.h"
#include "infer_request_internal.h"
#include "util.h"

/* The strings of one request, as views into the request (no copy). */
typedef struct strings {
    const uint8_t **data;
    size_t *len;
} strings;

/* Splits raw content into exactly `batch` length-prefixed strings. */
static ps_status split_raw(const char *name, const rpc_bytes_view *raw, size_t batch, strings *s,
                           char *err, size_t err_len) {
    size_t at = 0;
    for (size_t k = 0; k < batch; k++) {
        if (raw->len - at < 4)
            return infer_request_invalid(
                err, err_len,
                "input '%s': raw content holds %zu string(s), the shape says %zu "
                "(each string is a 4-byte little-endian length, then its bytes)",
                name, k, batch);
        const uint8_t *p = raw->data + at;
        const uint32_t n =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        at += 4;
        if (n > WORDPIECE_MAX_TEXT_BYTES)
            return infer_request_invalid(
                err, err_len, "input '%s': string %zu is %" PRIu32 " bytes; at most %u allowed",
                name, k, n, WORDPIECE_MAX_TEXT_BYTES);
        if (n > raw->len - at)
            return infer_request_invalid(
                err, err_len,
                "input '%s': string %zu's length %" PRIu32
                " (at byte %zu) runs past the end of the %zu-byte raw content",
                name, k, n, at - 4, raw->len);
        s->data[k] = raw->data + at;
        s->len[k] = n;
        at += n;
    }
    if (at != raw->len)
        return infer_request_invalid(
            err, err_len,
            "input '%s': %zu byte(s) after the %zu string(s) the shape says; give "
            "exactly one string per sample",
            name, raw->len - at, batch);
    return PS_STATUS_OK;
}

/* Takes exactly `batch` bytes_contents entries. */
static ps_status split_typed(const Inference__ModelInferRequest__InferInputTensor *in, size_t batch,
                             strings *s, char *err, size_t err_len) {
    const Inference__InferTensorContents *c = in->contents;
    const size_t have = c ? c->n_bytes_contents : 0;
    if (c && (c->n_fp32_contents || c->n_int64_contents))
        return infer_request_invalid(
            err, err_len, "input '%s' is BYTES (text): give bytes_contents, not %s", in->name,
            c->n_fp32_contents ? "fp32_contents" : "int64_contents");
    if (have != batch)
        return infer_request_invalid(err, err_len,
                                     "input '%s': %zu bytes_contents string(s), the shape says %zu",
                                     in->name, have, batch);
    for (size_t k = 0; k < batch; k++) {
        if (c->bytes_contents[k].len > WORDPIECE_MAX_TEXT_BYTES)
            return infer_request_invalid(
                err, err_len, "input '%s': string %zu is %zu bytes; at most %u allowed", in->name,
                k, c->bytes_contents[k].len, WORDPIECE_MAX_TEXT_BYTES);
        s->data[k] = c->bytes_contents[k].data;
        s->len[k] = c->bytes_contents[k].len;
    }
    return PS_STATUS_OK;
}

/* The batch size from the shape [B, 1]. */
static ps_status read_shape(const text_input_opts *o, size_t *ret_batch, char *err,
                            size_t err_len) {
    const Inference__ModelInferRequest__InferInputTensor *in = o->in;
    if (!in->datatype || strcmp(in->datatype, "BYTES") != 0)
        return infer_request_invalid(
            err, err_len,
            "input '%s': datatype %.16s, expected BYTES (one UTF-8 string per sample)", in->name,
            in->datatype ? in->datatype : "");
    if (in->n_shape != 2 || in->shape[1] != 1)
        return infer_request_invalid(
            err, err_len, "input '%s': shape must be [batch, 1] (one string per sample)", in->name);
    if (in->shape[0] < 1 || (uint64_t)in->shape[0] > o->max_batch_size)
        return infer_request_invalid(
            err, err_len,
            "input '%s': batch size %lld must be from 1 to the model's max_batch_size %u", in->name,
            (long long)in->shape[0], o->max_batch_size);
    *ret_batch = (size_t)in->shape[0];
    return PS_STATUS_OK;
}

ps_status text_input_encode(const text_input_opts *o, int64_t **ret_ids, int64_t **ret_mask,
                            int64_t *ret_batch, char *err, size_t err_len) {
    size_t batch = 0;
    ps_status st = read_shape(o, &batch, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    const size_t S = o->text->max_len;
    strings s = {calloc(batch, sizeof *s.data), calloc(batch, sizeof *s.len)};
    int64_t *ids = malloc(batch * S * sizeof *ids);
    int64_t *mask = malloc(batch * S * sizeof *mask);
    if (!s.data || !s.len || !ids || !mask) {
        ps_set_err(err, err_len, "out of memory for input '%s' (%zu strings)", o->in->name, batch);
        st = PS_STATUS_RESOURCE_EXHAUSTED;
        goto out;
    }
    st = o->raw ? split_raw(o->in->name, o->raw, batch, &s, err, err_len)
                : split_typed(o->in, batch, &s, err, err_len);
    for (size_t k = 0; st == PS_STATUS_OK && k < batch; k++) {
        char why[256];
        st = wordpiece_encode(o->tokenizer, (const char *)s.data[k], s.len[k], S, ids + k * S,
                              mask + k * S, NULL, why, sizeof why);
        if (st == PS_STATUS_INVALID_ARGUMENT)
            infer_request_invalid(err, err_len, "input '%s': string %zu: %s", o->in->name, k, why);
        else if (st != PS_STATUS_OK)
            ps_set_err(err, err_len, "input '%s': string %zu: %s", o->in->name, k, why);
    }
    if (st == PS_STATUS_OK) {
        *ret_ids = ids;
        *ret_mask = mask;
        *ret_batch = (int64_t)batch;
        ids = mask = NULL;
    }
out:
    free(s.data);
    free(s.len);
    free(ids);
    free(mask);
    return st;
}
