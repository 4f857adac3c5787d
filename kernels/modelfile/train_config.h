/* train_config.h: the training half of a model's config.json: the optimizer of each
 * dense tensor, the sparse embedding tables, and the training policies.
 *
 *   "training": {                                        optional, and so is each field
 *     "optimizer": {"type": "adam", "lr": 0.001},        every dense tensor's default
 *     "tensors": {"fc1.weight": {"type": "sgd", "lr": 0.1, "momentum": 0.9}},
 *     "non_finite": "reject",                            or "skip" (count and skip keys
 *                                                        whose gradients are not finite)
 *     "consistency": "asp",                              or "bsp", or "ssp" with
 *     "staleness": 2,                                    a bound (ssp only; default 1)
 *     "propagation": "streaming"                         or "consistent"
 *   },
 *   "version_policy": {"latest": 2},                     optional: replicas serve the
 *                                                        latest N versions (default 1)
 *   "tables": [
 *     {"name": "user_emb", "dim": 16, "seed": 7,          seed optional (0)
 *      "init": {"type": "normal", "scale": 0.01},        optional (zeros)
 *      "optimizer": {"type": "adagrad", "lr": 0.05}}     optional (none)
 *   ]
 *
 * An optimizer object is "type" (sgd, adagrad, adam, ftrl) and any hyper-parameters of
 * that kind by train_spec.h's names; the others take the kind's defaults. A tensor's
 * optimizer is its "tensors" entry, else "optimizer", else none (optimizer pushes to it
 * are refused). Unknown keys are errors (typos); every value is checked with
 * optim_spec_check / table_spec_check when parsed.
 *
 * (The version policy is a serving field; it lives here because the coordinator, which
 * applies it, reads this half of the file and not the graph.)
 *
 * Why it is separate from model_config.h: the PS programs (coordinator, psctl, the
 * clients) need this half and not the graph, and psctl rewrites it
 * (train_config_set) without touching anything else in the file.
 */
#ifndef PS_KERNELS_TRAIN_CONFIG_H
#define PS_KERNELS_TRAIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "train_spec.h"

#define TRAIN_CONFIG_MAX_TABLES 1024
#define TRAIN_CONFIG_MAX_TENSORS 65536 /* entries of training.tensors */
#define TRAIN_CONFIG_MAX_STALENESS 1000000
#define TRAIN_CONFIG_MAX_SERVED_VERSIONS 16 /* version_policy.latest at most */

typedef struct train_config train_config;

typedef enum train_consistency {
    TRAIN_CONSISTENCY_ASP = 0,
    TRAIN_CONSISTENCY_BSP,
    TRAIN_CONSISTENCY_SSP,
} train_consistency;

typedef enum train_propagation {
    TRAIN_PROPAGATION_STREAMING = 0,
    TRAIN_PROPAGATION_CONSISTENT,
} train_propagation;

typedef struct train_table {
    const char *name; /* owned by the config */
    table_spec spec;
    optim_spec optimizer; /* kind OPTIM_NONE: none (optimizer pushes refused) */
} train_table;

/* Parses the training fields of config.json text (len bytes). PARSE for text that is
 * not JSON, INVALID_ARGUMENT for bad training fields (err names the field). Text
 * without any of them gives an empty config (no optimizer, no tables, ASP, streaming,
 * reject). */
ps_status train_config_parse(const char *text, size_t len, train_config **ret_cfg, char *err,
                             size_t err_len);
void train_config_destroy(train_config *cfg); /* accepts NULL */

/* The optimizer of dense tensor `tensor`; false when it has none. */
bool train_config_optimizer(const train_config *cfg, const char *tensor, optim_spec *ret_spec);
bool train_config_skip_non_finite(const train_config *cfg);
train_consistency train_config_consistency(const train_config *cfg);
uint32_t train_config_staleness(const train_config *cfg); /* ssp's bound; 0 for bsp */
train_propagation train_config_propagation(const train_config *cfg);
/* How many of the model's latest versions replicas serve side by side (version_policy;
 * 1 by default). */
uint32_t train_config_served_versions(const train_config *cfg);

size_t train_config_table_count(const train_config *cfg);
bool train_config_table_at(const train_config *cfg, size_t i, train_table *ret_table);
bool train_config_table_find(const train_config *cfg, const char *name, train_table *ret_table);

/* psctl's edit: a copy of config.json text with one hyper-parameter of one optimizer set
 * (a tensor's own entry, created from the default when it has none; a table's; or,
 * with target NULL, the default "optimizer"), checked by parsing the result. With
 * `kind` non-NULL the optimizer becomes that kind (its defaults, then `field` if any).
 * *ret_text is malloc'd. NOT_FOUND for an unknown table; INVALID_ARGUMENT for a field
 * the kind does not use or a value out of range. */
ps_status train_config_set(const char *text, size_t len, const char *target, bool is_table,
                           const char *kind, const char *field, double value, char **ret_text,
                           char *err, size_t err_len);

const char *train_consistency_name(train_consistency c);
const char *train_propagation_name(train_propagation p);

#endif
