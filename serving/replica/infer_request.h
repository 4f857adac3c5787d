/* infer_request.h: a KServe v2 ModelInferRequest, checked and decoded for a model.
 *
 * Everything in a request is client-supplied, so it is checked in two steps before it
 * sizes anything:
 *   1. infer_request_check: every count and length against the named limits below,
 *      without looking at any model (a request with 50,000 outputs or a 10 MB name is
 *      refused here, before a single array is allocated for it);
 *   2. infer_request_create: the request against the model's config (input names,
 *      datatypes, shapes, batch size, content lengths, finite values, output names),
 *      then the decoded inputs and output buffers, all on the heap.
 * Inputs come as raw_input_contents (little-endian) or typed contents: fp32_contents
 * for an FP32 input, int64_contents for an INT64 one (ids for a sparse table; any
 * value, < 0 is padding). Outputs are FP32.
 * A model with a text input (model_config.h, "Text input") takes either that BYTES
 * input (raw_input_contents or bytes_contents; text_input.h decodes and tokenizes it
 * into the two INT64 inputs it feeds) or those two inputs, never both.
 * Failures are INVALID_ARGUMENT with a message a person can act on; names quoted from
 * the request are cut to 64 bytes.
 */
#ifndef PS_SERVING_REPLICA_INFER_REQUEST_H
#define PS_SERVING_REPLICA_INFER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "inference.pb-c.h"
#include "model.h"
#include "rpc.h"
#include "status.h"
#include "wordpiece.h"

#define INFER_MAX_INPUTS 64            /* inputs and raw_input_contents entries */
#define INFER_MAX_OUTPUTS 64           /* requested outputs */
#define INFER_MAX_NAME_BYTES 255       /* model, tensor and parameter names */
#define INFER_MAX_VERSION_BYTES 20     /* a model version: a decimal uint64 */
#define INFER_MAX_ID_BYTES 256         /* the request id (echoed in the response) */
#define INFER_MAX_DATATYPE_BYTES 16    /* "FP32" and the like */
#define INFER_MAX_PARAMETERS 64        /* entries in any parameters map */
#define INFER_MAX_PARAMETER_BYTES 4096 /* a string parameter's value */
#define INFER_MAX_RANK MODEL_MAX_DIMS  /* dimensions of an input's shape */

/* Checks a model name and version string (ModelReady, ModelMetadata, ...). */
ps_status infer_request_check_model_ref(const char *name, const char *version, char *err,
                                        size_t err_len);
/* Step 1 above; n_raw is the number of raw_input_contents entries. */
ps_status infer_request_check(const Inference__ModelInferRequest *req, size_t n_raw, char *err,
                              size_t err_len);

typedef struct infer_request_opts {
    const model_config *config;                  /* the model asked for */
    const Inference__ModelInferRequest *request; /* unpacked without raw_input_contents */
    const rpc_bytes_view *raw;                   /* the raw_input_contents, in order */
    size_t n_raw;
    const wordpiece *tokenizer; /* the model version's, for its text input (NULL: none) */
} infer_request_opts;

typedef struct infer_request infer_request;

/* Steps 1 and 2 above. */
ps_status infer_request_create(const infer_request_opts *opts, infer_request **ret_request,
                               char *err, size_t err_len);
void infer_request_destroy(infer_request *r); /* accepts NULL */

/* Inputs in request order, ready for model_infer. */
const model_input *infer_request_inputs(const infer_request *r, size_t *ret_n);
/* Outputs in request order (every model output when none was named), each with a
 * buffer of its full size. */
model_output *infer_request_outputs(infer_request *r, size_t *ret_n);
/* The batch size (1 for a model without a batch dimension). */
int64_t infer_request_batch(const infer_request *r);
/* Hands output i's buffer (malloc'd) to the caller; the request no longer frees it. */
float *infer_request_output_take(infer_request *r, size_t i);

#endif
