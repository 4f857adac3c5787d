/* model_config_internal.h: the parsed config's private layout and the helpers the files
 * of the config parser share. Not for other modules: they see model_config.h.
 *
 * The parser is one module cut into files by concern, all over this struct:
 *   model_config.c         create (parse, load, clone), destroy, the top level
 *   model_config_util.c    dim variables (union-find), names, each op's fields, field
 *                          checks, messages
 *   model_config_io.c      "inputs" and "outputs", and the outputs' final check
 *   model_config_layers.c  one layer: fields, inputs, parameters, the classic ops
 *   model_config_ops.c     "tables", embedding_bag, concat (and its width sums)
 *   model_config_image.c   conv2d, maxpool2d, avgpool2d, flatten, reshape
 *   model_config_norm.c    layernorm
 *   model_config_text.c    the text (BYTES) input and its "tokenizer"
 *   model_config_seq.c     embedding, position_embedding, attention, mean_pool,
 *                          l2_normalize (the sequence ops) and their masks
 *   model_config_query.c   accessors and model_config_resolve
 * model_config.c says why shapes are worked out by unification.
 */
#ifndef PS_KERNELS_MODEL_CONFIG_INTERNAL_H
#define PS_KERNELS_MODEL_CONFIG_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

#define DIM_UNKNOWN 0                /* dimvar.value: not fixed yet */
#define DIM_BATCH (-1)               /* dimvar.value: the batch dim */
#define BATCH_VAR 0                  /* the one variable that stands for the batch dim */
#define DIM_LIMIT MODEL_MAX_ELEMENTS /* largest dim, and largest element count */

/* One dim variable: union-find parent and, at the root, the value. */
typedef struct dimvar {
    size_t parent;
    int64_t value; /* DIM_UNKNOWN, DIM_BATCH, or > 0; meaningful at roots only */
} dimvar;

/* A declared input or output. */
typedef struct cfg_io {
    char *name; /* owned */
    bool ids;   /* datatype INT64 (inputs only): ids for embedding_bag */
    uint32_t ndims;
    int64_t dims[MODEL_MAX_DIMS];
} cfg_io;

/* A tensor flowing through the graph. */
typedef struct cfg_value {
    const char *name; /* an input's or a layer's output name (owned there) */
    uint32_t ndims;
    size_t vars[MODEL_MAX_DIMS];
    size_t producer; /* layer index, or MODEL_CONFIG_NONE for a model input */
    bool ids;        /* an INT64 model input */
} cfg_value;

/* A parameter tensor the layers reference. */
typedef struct cfg_param {
    char *name; /* owned */
    uint32_t ndims;
    size_t vars[MODEL_MAX_DIMS];
    size_t first_layer; /* the layer that referenced it first */
    const char *role;   /* its role there: "weight", "bias", "scale", "shift" */
} cfg_param;

typedef struct cfg_layer {
    model_config_layer info; /* info.name points at name or at output */
    char *name;              /* owned; the layer's "name", or NULL */
    char *output;            /* owned; the output value's name */
} cfg_layer;

/* A declared sparse table (the graph's view: name and row width). */
typedef struct cfg_table {
    char *name; /* owned */
    uint32_t dim;
} cfg_table;

/* The text input (a BYTES input) and its tokenizer; name NULL when the model has none. */
typedef struct cfg_text {
    char *name;        /* owned */
    size_t json_index; /* its place in "inputs", for messages */
    char *vocab;       /* owned: the tokens joined with "\n" */
    size_t vocab_len;
    size_t vocab_tokens;
    uint32_t max_len;
    size_t feeds[2]; /* input indices: ids, mask */
} cfg_text;

/* A concat's width rule, out = a + b (dim variables), which union-find cannot state:
 * applied once a and b are fixed (cfg_sums_apply). */
typedef struct cfg_sum {
    size_t layer; /* the concat layer, for messages */
    size_t a, b, out;
} cfg_sum;

/* An index of names by hash (model_config_names.c): slots hold entry indexes (SIZE_MAX:
 * empty) into the config's values or params, whichever the index is of. */
typedef struct cfg_names {
    uint64_t *hashes;
    size_t *slots;
    size_t cap, n; /* cap: a power of two or 0 */
} cfg_names;

struct model_config {
    char *text; /* the JSON text, NUL-terminated, owned */
    size_t text_len;
    char *name;         /* owned */
    uint32_t max_batch; /* 0: no batch dim */

    size_t n_inputs;
    cfg_io *inputs;
    size_t n_outputs;
    cfg_io *outputs;
    size_t n_tables;
    cfg_table *tables;
    cfg_text text_in; /* the BYTES input, kept out of inputs (the graph never sees it) */
    size_t n_layers;
    cfg_layer *layers;
    size_t n_values;   /* n_inputs + n_layers once parsed */
    cfg_value *values; /* [n_inputs + n_layers] */
    size_t n_params;
    size_t cap_params;
    cfg_param *params;
    cfg_names value_names; /* values[] by name */
    cfg_names param_names; /* params[] by name */
    size_t n_sums;
    cfg_sum *sums; /* [n_layers] at most: one per concat */
    size_t n_vars;
    size_t cap_vars;
    dimvar *vars; /* vars[BATCH_VAR] is the batch dim */
};

/* Context for messages about one layer: "layers[2] (dense \"fc2\")". */
typedef struct layer_ctx {
    size_t index;
    char where[MODEL_CONFIG_NAME_MAX + 64];
    json_t *all; /* the whole "layers" array, to tell "comes later" from "missing" */
} layer_ctx;

/* ---- model_config_names.c ----------------------------------------------------------- */

/* Adds entry `index` of names' kind (cfg->values for &cfg->value_names, else
 * cfg->params), by its name; a name already there keeps its first entry. NO_MEMORY. */
ps_status cfg_names_add(model_config *cfg, cfg_names *names, size_t index);
/* The first entry added with this name (NULL: none). */
bool cfg_names_find(const model_config *cfg, const cfg_names *names, const char *name,
                    size_t *ret_index);
void cfg_names_free(cfg_names *names);

/* ---- model_config_util.c ------------------------------------------------------------ */

extern const char *const cfg_op_names[];
extern const size_t cfg_op_count;
extern const char *const cfg_activation_names[];
extern const size_t cfg_activation_count;

char *cfg_dup_str(const char *s);
/* Writes "[-1, 64]" into buf; with `unknown_as_q`, DIM_UNKNOWN dims print as "?". */
const char *cfg_dims_str(const int64_t *dims, uint32_t ndims, bool unknown_as_q, char *buf,
                         size_t len);

size_t cfg_var_find(dimvar *vars, size_t v);
int64_t cfg_var_value(dimvar *vars, size_t v);
/* For the read-only accessors: no path compression, so concurrent readers never write. */
int64_t cfg_var_value_ro(const dimvar *vars, size_t v);
/* Makes a and b the same dim. False on a contradiction (both fixed, different); then
 * *ret_a and *ret_b get the two values. */
bool cfg_var_unify(dimvar *vars, size_t a, size_t b, int64_t *ret_a, int64_t *ret_b);
/* A new variable with the given value; SIZE_MAX when out of memory. */
size_t cfg_var_new(model_config *cfg, int64_t value);
/* Current dims of a list of variables (DIM_UNKNOWN where not fixed). */
void cfg_vars_dims(dimvar *vars, const size_t *list, uint32_t ndims, int64_t *ret_dims);

/* A required or optional string field. A present non-string, empty or too-long value
 * is an error; a missing required one too. *ret is NULL for a missing optional one. */
ps_status cfg_get_name(json_t *obj, const char *key, bool required, const char *where,
                       const char **ret, char *err, size_t err_len);
/* Rejects fields not in `allowed` (a NULL-terminated list). */
ps_status cfg_check_keys(json_t *obj, const char *const *allowed, const char *where, char *err,
                         size_t err_len);
/* The optional "activation" field into info->activation. */
ps_status cfg_parse_activation(const layer_ctx *lc, json_t *obj, model_config_layer *info,
                               char *err, size_t err_len);
/* The fields each op takes (NULL-terminated). */
const char *const *cfg_op_keys(model_config_op op);
/* How many names a layer's "inputs" list holds: 2 for add and concat, 3 for attention
 * (q, k, v); 0 for the ops that take one "input". */
uint32_t cfg_list_inputs(model_config_op op);
/* Is `name` already used by an input, a layer output or a parameter? Writes what uses
 * it into `what`. */
bool cfg_name_taken(const model_config *cfg, const char *name, char *what, size_t what_len);

/* ---- model_config_io.c -------------------------------------------------------------- */

/* "inputs" or "outputs" of the root object. */
ps_status cfg_parse_io_list(model_config *cfg, json_t *root, const char *key, size_t *ret_n,
                            cfg_io **ret_list, char *err, size_t err_len);
/* Each declared output: produced by a layer, same shape as what the layer makes. */
ps_status cfg_check_outputs(model_config *cfg, char *err, size_t err_len);

/* ---- model_config_text.c ------------------------------------------------------------ */

/* inputs[json_index], an object of datatype "BYTES": checked and kept as the text input
 * (its tokenizer comes later, cfg_parse_tokenizer). */
ps_status cfg_parse_text_input(model_config *cfg, json_t *obj, size_t json_index, char *err,
                               size_t err_len);
/* The root's "tokenizer": required with a text input, refused without one. Runs once
 * every input is parsed. */
ps_status cfg_parse_tokenizer(model_config *cfg, json_t *root, char *err, size_t err_len);

/* ---- model_config_layers.c ---------------------------------------------------------- */

/* Parses layers[lc->index] and appends its output value. */
ps_status cfg_parse_layer(model_config *cfg, layer_ctx *lc, json_t *obj, char *err, size_t err_len);
/* An optional parameter field ("bias", "scale", "shift") or a required one ("weight") of
 * rank ndims, found or added; *ret_index is MODEL_CONFIG_NONE for a missing optional one. */
ps_status cfg_param_field(model_config *cfg, const layer_ctx *lc, json_t *obj, const char *key,
                          bool required, uint32_t ndims, size_t *ret_index, char *err,
                          size_t err_len);
/* States that parameter dim `pdim` equals value dim `vvar`; on a contradiction, says so. */
ps_status cfg_tie_param_dim(model_config *cfg, const layer_ctx *lc, size_t param, uint32_t pdim,
                            size_t vvar, const char *value_name, const char *meaning, char *err,
                            size_t err_len);

/* ---- model_config_image.c ----------------------------------------------------------- */

/* The fields a conv2d, maxpool2d or avgpool2d takes (NULL-terminated). */
const char *const *cfg_window_keys(model_config_op op);
/* A conv2d's or pool's window, parameters and output dims into *out. */
ps_status cfg_parse_window(model_config *cfg, const layer_ctx *lc, json_t *obj,
                           model_config_layer *info, cfg_value *out, char *err, size_t err_len);
/* A flatten's or reshape's output dims into *out. */
ps_status cfg_parse_reshape(model_config *cfg, const layer_ctx *lc, json_t *obj,
                            const model_config_layer *info, cfg_value *out, char *err,
                            size_t err_len);

/* ---- model_config_ops.c ------------------------------------------------------------- */

/* The root's optional "tables" (name and dim of each entry). */
ps_status cfg_parse_tables(model_config *cfg, json_t *root, char *err, size_t err_len);
/* An embedding_bag layer's own fields, and its output's dims into *out. */
ps_status cfg_parse_bag(model_config *cfg, const layer_ctx *lc, json_t *obj,
                        model_config_layer *info, cfg_value *out, char *err, size_t err_len);
/* A concat layer's dims rules, and its output's dims into *out. */
ps_status cfg_parse_concat(model_config *cfg, const layer_ctx *lc, const model_config_layer *info,
                           cfg_value *out, char *err, size_t err_len);
/* Fixes each concat's width from its inputs' where both are known, in layer order, and
 * checks it where it was already fixed; INVALID_ARGUMENT names the layer. */
ps_status cfg_sums_apply(const model_config *cfg, dimvar *vars, char *err, size_t err_len);

/* ---- model_config_norm.c ------------------------------------------------------------ */

/* A layernorm's weight and bias [features] and eps (output dims: the input's). */
ps_status cfg_parse_layernorm(model_config *cfg, const layer_ctx *lc, json_t *obj,
                              model_config_layer *info, char *err, size_t err_len);

/* ---- model_config_seq.c ------------------------------------------------------------- */

/* The fields a sequence op takes (NULL-terminated). */
const char *const *cfg_seq_keys(model_config_op op);
/* A sequence op's own fields, parameters, mask and its output's dims into *out. */
ps_status cfg_parse_seq(model_config *cfg, const layer_ctx *lc, json_t *obj,
                        model_config_layer *info, cfg_value *out, char *err, size_t err_len);
/* The rules that wait for dims the parameters fix: a position table has at least S
 * rows, an attention's heads divide its width. Checks each where both sides are known;
 * INVALID_ARGUMENT names the layer. */
ps_status cfg_seq_check(const model_config *cfg, dimvar *vars, char *err, size_t err_len);

#endif
