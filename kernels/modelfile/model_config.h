/* model_config.h: a model's config.json: its inputs, outputs and graph of ops.
 *
 * A model directory is `<name>/config.json` + `<name>/<version>/model.safetensors`.
 * config.json (every field but the ones marked optional is required):
 *
 *   {
 *     "name": "digits_mlp",                  letters, digits, '_', '-', '.'
 *     "max_batch_size": 64,                  optional, default 0 = no batch dimension
 *     "inputs":  [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
 *     "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
 *     "tables":  [{"name": "item_emb", "dim": 8, ...}],   optional (sparse tables)
 *     "layers": [
 *       {"op": "dense", "input": "pixels", "output": "h1", "weight": "fc1.weight",
 *        "bias": "fc1.bias", "activation": "relu"},
 *       {"op": "dense", "input": "h1", "output": "logits", "weight": "fc2.weight",
 *        "bias": "fc2.bias"},
 *       {"op": "softmax", "input": "logits", "output": "probabilities"}
 *     ]
 *   }
 *
 * Shapes (KServe metadata style): with max_batch_size > 0 the first dim is the batch
 * dimension and must be -1, and at least one more dim follows; with max_batch_size 0
 * there is no batch dimension. Every other dim is a positive integer. Datatypes: every
 * output and every value a layer makes is "FP32"; an input is "FP32", "BYTES" (text, see
 * "Text input") or "INT64" (ids
 * into a sparse table or an embedding, or a mask; only embedding_bag and embedding
 * layers read them as "input", attention and mean_pool as "mask"). Other top-level
 * fields are ignored (room for batching policy and the like); unknown fields inside
 * inputs, outputs and layers are errors (typos).
 *
 * Text input (optional; a text encoder such as all-MiniLM-L6-v2 served from raw text):
 * one input of datatype "BYTES" and shape [-1, 1] (one UTF-8 string per sample;
 * max_batch_size > 0), with a root object
 *   "tokenizer": {"type": "wordpiece", "vocab": ["[PAD]", ..., "##~"], "max_len": 128,
 *                 "feeds": ["input_ids", "attention_mask"]}
 * vocab: the tokens, id = index (1 to MODEL_CONFIG_MAX_VOCAB_TOKENS strings of 1 to
 * MODEL_CONFIG_MAX_TOKEN_BYTES bytes, no "\n" or "\r", holding [UNK] [CLS] [SEP] [PAD]);
 * feeds: two distinct INT64 inputs of shape [-1, max_len] (2..MODEL_CONFIG_MAX_SEQ), the
 * token ids and the attention mask. The BYTES input is not a graph input: the input
 * list, the values and model_config_input_count leave it out, and the replica encodes
 * each string into the two feeds. A request gives EITHER the text input (and then
 * neither feed) OR the two feeds, never both. "tokenizer" without a BYTES input, or a
 * BYTES input without it, is an error.
 *
 * Tables: the sparse embedding tables (rows of `dim` floats, keyed by id, held by the
 * parameter servers; train_config.h owns the whole entry). This parser reads only each
 * entry's "name" (unique, 1-255 bytes) and "dim" (1..TABLE_MAX_DIM): what the graph
 * needs. The other fields (seed, init, optimizer) are accepted unchecked here;
 * train_config_parse checks them.
 *
 * Ops (every layer also takes an optional "name", used in messages). All act on the
 * last axis; the leading dims (batch included) are rows:
 *   dense    input, output, weight [out, in] (PyTorch Linear layout), bias [out]
 *            (optional), activation "none" (default) | "relu" | "sigmoid" | "tanh" |
 *            "gelu" (PyTorch's erf form): y = act(x W^T + b)
 *   relu, gelu, tanh, sigmoid
 *            input, output: the function on every element
 *   layernorm
 *            input, output, weight [features] and bias [features] (each optional), eps
 *            (optional, default 1e-5, finite and > 0): PyTorch LayerNorm over the last
 *            axis, y = (x - mean) / sqrt(var + eps) * weight + bias (biased variance)
 *   softmax  input, output, axis (optional; only -1 or the last axis' index)
 *   add      inputs [a, b] of the same shape, output: y = a + b
 *   scale    input, output, scale [features] and/or shift [features] (each optional,
 *            at least one): y = x * scale + shift
 *   concat   inputs [a, b] of the same rank and the same leading dims, output: a and b
 *            side by side on the last axis (y[..., 0:A] = a, y[..., A:A+B] = b)
 *   embedding_bag
 *            input, output, table (a declared table's name), mode "sum" | "mean":
 *            input is a model input of datatype INT64 and shape [-1, L] ([L] with
 *            max_batch_size 0), L >= 1 ids per sample; output [-1, dim] ([dim]), dim the
 *            table's: per sample, the sum (or the mean) of the rows of its ids. An id
 *            < 0 is padding and is skipped; "mean" divides by the count of ids that are
 *            not padding (a sample of padding only gets zeros).
 * Sequence ops (a BERT-style encoder: all-MiniLM-L6-v2 and the like). A sequence value
 * is [-1, S, D] ([S, D] with max_batch_size 0), S fixed by the config; dense, layernorm,
 * add, scale and the elementwise functions act on it token by token (rows = batch * S).
 * A "mask" is a model input of shape [-1, S] ([S]), datatype INT64 or FP32: non-zero
 * marks a token, zero padding (the tokenizer's attention_mask):
 *   embedding
 *            input, output, weight [V, D]: input a model input of datatype INT64 and shape
 *            [-1, S] ([S]); output [-1, S, D], y[b, t, :] = weight[id, :]. An id < 0 or
 *            >= V in a request is INVALID_ARGUMENT (model_infer names the input and id)
 *   position_embedding
 *            input [-1, S, D], output (same shape), weight [P, D] with P >= S:
 *            y[b, t, :] = x[b, t, :] + weight[t, :]
 *   attention
 *            inputs [q, k, v] (the same shape [-1, S, H*d]), output (that shape), heads H
 *            (an integer from 1 to MODEL_CONFIG_MAX_HEADS dividing the last dim; S at
 *            most MODEL_CONFIG_MAX_SEQ), mask
 *            (optional): per head softmax(q k^T / sqrt(d)) v over the unmasked keys,
 *            heads side by side (a sample with no token gets zeros)
 *   mean_pool
 *            input [-1, S, D], output [-1, D] ([D]), mask (optional): per sample the
 *            mean of the token rows, weighted by the mask (sentence-transformers' mean
 *            pooling; all padding gives zeros)
 *   l2_normalize
 *            input, output (same shape), eps (optional, default 1e-12, finite and > 0):
 *            y = x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)
 * Image ops (PyTorch Conv2d / MaxPool2d / AvgPool2d, NCHW). Their input is [-1, C, H, W]
 * ([C, H, W] with max_batch_size 0) and C, H and W must be fixed by the config (a
 * model input's dims, a reshape, an earlier conv2d or pool), so every output dim is
 * known at parse time. Window fields are an integer or [h, w], each at most
 * MODEL_CONFIG_MAX_WINDOW:
 *   conv2d   input, output, weight [K, C/groups, R, S], bias [K] (optional),
 *            out_channels K, kernel_size [R, S], stride (default 1), padding (default
 *            0, zeros), dilation (default 1), groups (default 1; divides C and K),
 *            activation as dense's: y [-1, K, P, Q], P = (H + 2 pad - dilation (R - 1) -
 *            1) / stride + 1 (Q likewise); the dilated kernel must fit the padded image
 *   maxpool2d, avgpool2d
 *            input, output, kernel_size, stride (default: the kernel), padding (default
 *            0, at most half the kernel), avgpool2d also count_include_pad (default
 *            true: padding counts in the divisor): y [-1, C, P, Q], P = (H + 2 pad -
 *            kernel) / stride + 1
 *   flatten  input, output: y [-1, the product of the other dims] ([that product]
 *            without a batch dim); those dims must be fixed unless the input already
 *            has a single one
 *   reshape  input, output, shape (the per-sample shape, without the batch dim: a list
 *            of positive integers): same elements, same order. The input's element count
 *            must match; a single dim not fixed by the config is fixed by it.
 * Layers are listed in execution order: a layer reads only model inputs and outputs
 * of earlier layers. Every name (inputs, layer outputs, parameter tensors) is unique
 * across the model; several layers may share one parameter tensor. Each model output
 * must be produced by a layer, and its declared shape must match what the graph makes.
 *
 * Parameter shapes: a config fixes only some dims of the parameter tensors (fc1.weight
 * must have 64 columns because the input has 64 features, but its row count is a
 * hidden size only the weights know). model_config_param_at reports what the config
 * alone fixes (-1 elsewhere); model_config_resolve takes the actual shapes (from the
 * registry or a safetensors file), checks them against the graph and works out every
 * tensor's shape.
 *
 * Values: the tensors that flow through the graph are numbered: the model inputs are
 * values 0..input_count-1 (in config order), then layer i's output is value
 * input_count + i. Layer info refers to values and parameters by these indices.
 *
 * A model_config is immutable after parsing: any number of threads may read it.
 * Errors: functions that take `err, err_len` write a message a person can act on
 * there (NUL-terminated, truncated to fit; `err` may be NULL) when they fail.
 */
#ifndef PS_KERNELS_MODEL_CONFIG_H
#define PS_KERNELS_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define MODEL_MAX_DIMS 8                   /* dims of any tensor, batch dim included */
#define MODEL_MAX_ELEMENTS 2147483647LL    /* elements of any tensor, a whole batch included */
#define MODEL_CONFIG_NAME_MAX 255          /* longest name (model, tensor, layer), bytes */
#define MODEL_CONFIG_MAX_BYTES (16u << 20) /* longest config.json accepted */
#define MODEL_CONFIG_NONE SIZE_MAX         /* "no such parameter" in model_config_layer */
#define MODEL_CONFIG_MAX_TABLES 1024       /* entries of "tables" (train_config.h's limit) */
#define MODEL_CONFIG_MAX_WINDOW                                                                    \
    65536 /* largest kernel, stride, padding, dilation, groups                                     \
             and out_channels of a conv2d or pool */

#define MODEL_CONFIG_MAX_HEADS 65536 /* largest "heads" of an attention layer */
#define MODEL_CONFIG_MAX_INPUTS 3    /* most values one layer reads (attention: q, k, v) */
#define MODEL_CONFIG_MAX_SEQ                                                                       \
    8192 /* most tokens an attention layer takes (the kernels'                                     \
            KERNELS_ATTENTION_MAX_SEQ) */

#define MODEL_CONFIG_MAX_VOCAB_TOKENS (1u << 20) /* tokens of a tokenizer's "vocab" */
#define MODEL_CONFIG_MAX_TOKEN_BYTES 1024        /* bytes of one vocab token */

typedef struct model_config model_config;

/* The text input and its tokenizer. Strings belong to the config. */
typedef struct model_config_text_in {
    const char *name;    /* the BYTES input, shape [-1, 1] */
    const char *vocab;   /* the tokens joined with "\n" (vocab.txt bytes), NUL-terminated */
    size_t vocab_len;    /* bytes of vocab, the NUL left out */
    size_t vocab_tokens; /* tokens in vocab */
    uint32_t max_len;    /* tokens per encoded string: S of the feeds */
    size_t ids_input;    /* the feeds, as model input indices (model_config_input_at) */
    size_t mask_input;
} model_config_text_in;

/* A named tensor and its shape: inputs, outputs, parameters, values. */
typedef struct model_tensor_desc {
    const char *name;     /* NUL-terminated; owned by whoever filled the struct */
    const char *datatype; /* "FP32", or "INT64" for an ids input; may be NULL in shapes given
                             to model_config_resolve */
    uint32_t ndims;
    int64_t dims[MODEL_MAX_DIMS]; /* -1: batch dim (inputs, outputs, values) or not fixed
                                     by the config (parameters) */
} model_tensor_desc;

typedef enum model_config_op {
    MODEL_CONFIG_OP_DENSE = 0,
    MODEL_CONFIG_OP_RELU,
    MODEL_CONFIG_OP_SOFTMAX,
    MODEL_CONFIG_OP_ADD,
    MODEL_CONFIG_OP_SCALE,
    MODEL_CONFIG_OP_EMBEDDING_BAG,
    MODEL_CONFIG_OP_CONCAT,
    MODEL_CONFIG_OP_CONV2D,
    MODEL_CONFIG_OP_MAXPOOL2D,
    MODEL_CONFIG_OP_AVGPOOL2D,
    MODEL_CONFIG_OP_FLATTEN,
    MODEL_CONFIG_OP_RESHAPE,
    MODEL_CONFIG_OP_GELU,
    MODEL_CONFIG_OP_TANH,
    MODEL_CONFIG_OP_SIGMOID,
    MODEL_CONFIG_OP_LAYERNORM,
    MODEL_CONFIG_OP_EMBEDDING,
    MODEL_CONFIG_OP_POSITION_EMBEDDING,
    MODEL_CONFIG_OP_ATTENTION,
    MODEL_CONFIG_OP_MEAN_POOL,
    MODEL_CONFIG_OP_L2_NORMALIZE,
} model_config_op;

/* How an embedding_bag reduces the rows of a sample's ids. */
typedef enum model_config_pool {
    MODEL_CONFIG_POOL_SUM = 0,
    MODEL_CONFIG_POOL_MEAN,
} model_config_pool;

/* A sparse table as the graph sees it. Strings belong to the config. */
typedef struct model_config_table {
    const char *name;
    uint32_t dim; /* floats per row, 1..TABLE_MAX_DIM */
} model_config_table;

typedef enum model_config_activation {
    MODEL_CONFIG_ACTIVATION_NONE = 0,
    MODEL_CONFIG_ACTIVATION_RELU,
    MODEL_CONFIG_ACTIVATION_SIGMOID,
    MODEL_CONFIG_ACTIVATION_TANH,
    MODEL_CONFIG_ACTIVATION_GELU,
} model_config_activation;

/* A conv2d's or a pool's window, [0] along the height and [1] along the width. */
typedef struct model_config_window {
    uint32_t out_channels;  /* conv2d: K */
    uint32_t kernel[2];     /* conv2d: R, S; pools: the window */
    uint32_t stride[2];     /* >= 1 */
    uint32_t padding[2];    /* zeros on each side */
    uint32_t dilation[2];   /* conv2d; 1 for pools */
    uint32_t groups;        /* conv2d; 1 for pools */
    bool count_include_pad; /* avgpool2d: padding counts in the divisor */
} model_config_window;

/* One layer, by indices (see "Values" above). Strings belong to the config. */
typedef struct model_config_layer {
    model_config_op op;
    const char *name;                       /* the layer's "name", or its output's name */
    model_config_activation activation;     /* dense and conv2d; NONE for other ops */
    uint32_t input_count;                   /* 1; 2 for add and concat, 3 for attention */
    size_t inputs[MODEL_CONFIG_MAX_INPUTS]; /* value indices */
    size_t output;                          /* value index (input_count + layer index) */
    size_t weight;              /* dense, conv2d, embedding, position_embedding: parameter index
                                   (layernorm: or MODEL_CONFIG_NONE) */
    size_t bias;                /* dense, conv2d: parameter index or MODEL_CONFIG_NONE */
    size_t scale;               /* scale: parameter index or MODEL_CONFIG_NONE */
    size_t shift;               /* scale: parameter index or MODEL_CONFIG_NONE */
    size_t table;               /* embedding_bag: table index (model_config_table_at),
                                   MODEL_CONFIG_NONE for other ops */
    model_config_pool pool;     /* embedding_bag: sum or mean */
    model_config_window window; /* conv2d, maxpool2d, avgpool2d; zeros otherwise */
    float eps;                  /* layernorm, l2_normalize; 0 for other ops */
    size_t mask;    /* attention, mean_pool: the mask input's value index, or MODEL_CONFIG_NONE */
    uint32_t heads; /* attention: H; 0 for other ops */
} model_config_layer;

/* Parses and validates config.json text (len bytes, need not be NUL-terminated).
 * PARSE for text that is not JSON, INVALID_ARGUMENT for JSON that is not a valid
 * config, UNIMPLEMENTED for a datatype other than FP32 (and INT64 for inputs). */
ps_status model_config_parse(const char *text, size_t len, model_config **ret_cfg, char *err,
                             size_t err_len);
/* Reads a file and parses it; IO when it cannot be read (messages name the path). */
ps_status model_config_load(const char *path, model_config **ret_cfg, char *err, size_t err_len);
/* An independent copy (parses the same text again). */
ps_status model_config_clone(const model_config *cfg, model_config **ret_cfg);
void model_config_destroy(model_config *cfg); /* accepts NULL */

/* The JSON text the config was parsed from (NUL-terminated) and its length. */
const char *model_config_text(const model_config *cfg, size_t *ret_len);

const char *model_config_name(const model_config *cfg);
/* 0 means the model takes no batch dimension. */
uint32_t model_config_max_batch_size(const model_config *cfg);

size_t model_config_input_count(const model_config *cfg);
size_t model_config_output_count(const model_config *cfg);
/* Declared inputs/outputs in config order, with their datatypes ("FP32", or "INT64" for
 * an ids input); false when i is out of range. */
bool model_config_input_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc);
bool model_config_output_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc);

/* The text input, when the model has one (see "Text input" above); false otherwise. */
bool model_config_text_input(const model_config *cfg, model_config_text_in *ret_text);

/* Parameter tensors the layers reference, in order of first reference, with the dims
 * the config alone fixes (-1 for the others; datatype "FP32"). */
size_t model_config_param_count(const model_config *cfg);
bool model_config_param_at(const model_config *cfg, size_t i, model_tensor_desc *ret_desc);
/* Index of a parameter by name; false when no layer references it. */
bool model_config_param_find(const model_config *cfg, const char *name, size_t *ret_index);

/* The declared tables, in config order; false when i is out of range. */
size_t model_config_table_count(const model_config *cfg);
bool model_config_table_at(const model_config *cfg, size_t i, model_config_table *ret_table);

size_t model_config_layer_count(const model_config *cfg);
bool model_config_layer_at(const model_config *cfg, size_t i, model_config_layer *ret_layer);

/* Values: input_count + layer_count of them. */
size_t model_config_value_count(const model_config *cfg);
const char *model_config_value_name(const model_config *cfg, size_t i); /* NULL out of range */
bool model_config_value_find(const model_config *cfg, const char *name, size_t *ret_index);

/* Checks actual parameter shapes against the graph. `given` lists n_given tensors by
 * name, in any order; every parameter the layers reference must be there (extra
 * entries are ignored, so a whole safetensors listing may be passed); a non-NULL
 * datatype must be "FP32" (or safetensors' spelling, "F32"). INVALID_ARGUMENT names the first
 * parameter that is missing or whose shape disagrees with the graph, and says which shape the graph
 * needs. On success, when non-NULL: ret_params[model_config_param_count]  every parameter's shape,
 * config order; ret_values[model_config_value_count]  every value's shape, batch dim -1 when
 *                                         max_batch_size > 0, datatype "INT64" for ids inputs;
 * names in them point into cfg. A concat's output width (the sum of its inputs') is
 * checked here too when the config alone could not fix it. */
ps_status model_config_resolve(const model_config *cfg, const model_tensor_desc *given,
                               size_t n_given, model_tensor_desc *ret_params,
                               model_tensor_desc *ret_values, char *err, size_t err_len);

/* "dense", "relu", ..., "embedding_bag", "concat", ..., "l2_normalize"; "?" outside the
 * enum. */
const char *model_config_op_name(model_config_op op);
/* "none", "relu", "sigmoid", "tanh", "gelu"; "?" outside the enum. */
const char *model_config_activation_name(model_config_activation activation);
/* "sum", "mean"; "?" outside the enum. */
const char *model_config_pool_name(model_config_pool pool);

#endif
