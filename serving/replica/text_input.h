/* text_input.h: the text input of a KServe ModelInferRequest (datatype BYTES, one UTF-8
 * string per sample), decoded and tokenized into the INT64 inputs a text encoder's graph
 * reads (the config's "tokenizer" feeds: token ids and attention mask; model_config.h,
 * "Text input").
 *
 * A BYTES tensor comes either as raw_input_contents, KServe's binary form (each string
 * preceded by its length, 4 bytes little-endian, strings back to back), or as
 * contents.bytes_contents (one entry per string). Every length and count in it is
 * client input, so each is checked before it is used: a string's length against
 * WORDPIECE_MAX_TEXT_BYTES and against the bytes left, the count of strings against the
 * batch size the shape states (itself at most max_batch_size), no bytes after the last
 * string. The two outputs are on the heap, batch x max_len each (never the stack).
 *
 * Why a module of its own: it is the one place that reads the text wire format and
 * calls the tokenizer; infer_request.c only routes a text input here and hands the two
 * buffers on as ordinary INT64 inputs. It keeps no state (one call per request), so it
 * has no handle; the tokenizer it uses belongs to the served model version.
 */
#ifndef PS_SERVING_REPLICA_TEXT_INPUT_H
#define PS_SERVING_REPLICA_TEXT_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "inference.pb-c.h"
#include "model_config.h"
#include "rpc.h"
#include "status.h"
#include "wordpiece.h"

#define TEXT_INPUT_MAX_STRINGS 65536 /* bytes_contents entries a request may carry (step 1) */

typedef struct text_input_opts {
    const wordpiece *tokenizer;                               /* the model version's */
    const model_config_text_in *text;                         /* the config's text input */
    uint32_t max_batch_size;                                  /* the model's, > 0 */
    const Inference__ModelInferRequest__InferInputTensor *in; /* the request's text input */
    const rpc_bytes_view *raw; /* its raw_input_contents entry, or NULL for bytes_contents */
} text_input_opts;

/* Checks the input (datatype BYTES, shape [B, 1] with 1 <= B <= max_batch_size, B
 * strings, each valid UTF-8 of at most WORDPIECE_MAX_TEXT_BYTES) and encodes it:
 * *ret_ids and *ret_mask (malloc'd, B x max_len each, row per string) and *ret_batch = B.
 * INVALID_ARGUMENT names the input, the string and what is wrong; RESOURCE_EXHAUSTED
 * when out of memory. Outputs are untouched on failure. */
ps_status text_input_encode(const text_input_opts *o, int64_t **ret_ids, int64_t **ret_mask,
                            int64_t *ret_batch, char *err, size_t err_len);

#endif
