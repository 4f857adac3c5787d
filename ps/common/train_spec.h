/* train_spec.h: what a training push asks of the shards, as plain C values shared by the
 * shard, the clients, psctl and the config.json parser: an optimizer and its
 * hyper-parameters, and a sparse table's spec (row width, initializer, optimizer).
 *
 * Why it is in the base layer: the same spec is read from config.json (model files),
 * carried in a push (clients), and applied on a shard; each of them checks it with the
 * same function here, so a bad spec gets the same message wherever it is caught.
 *
 * Optimizers (g: the gradient, w: the weight, element-wise; `step` counts the updates
 * the chunk or row has had, this one included; hyper-parameters as named below):
 *   SGD      g' = g + weight_decay*w;  m = momentum*m + g';  w -= lr*m
 *            (state: m; with momentum 0 this is plain SGD and m is just g')
 *   Adagrad  g' = g + weight_decay*w;  acc += g'^2;  w -= lr*g' / (sqrt(acc) + eps)
 *            (state: acc, which starts at initial_accumulator)
 *   Adam     g' = g + weight_decay*w;  m = beta1*m + (1-beta1)*g';
 *            v = beta2*v + (1-beta2)*g'^2;  w -= lr * (m / (1-beta1^step)) /
 *            (sqrt(v / (1-beta2^step)) + eps)            (state: m, v; both start at 0)
 *   FTRL     FTRL-proximal (McMahan et al. 2013) with alpha = lr:
 *            sigma = (sqrt(n + g^2) - sqrt(n)) / lr;  z += g - sigma*w;  n += g^2;
 *            w = |z| <= l1 ? 0 : -(z - sign(z)*l1) / ((beta + sqrt(n))/lr + l2)
 *            (state: z, n; both start at 0)
 * These are PyTorch's SGD (dampening 0, no Nesterov), Adagrad (lr_decay 0) and Adam
 * (amsgrad off), with weight decay added to the gradient as they do.
 *
 * The state of n weights is optim_spec_slots(kind) slots of n floats each, slot after
 * slot, in the order listed above (SGD: m; Adagrad: acc; Adam: m, v; FTRL: z, n).
 */
#ifndef PS_COMMON_TRAIN_SPEC_H
#define PS_COMMON_TRAIN_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum optim_kind {
    OPTIM_NONE = 0, /* numbered as ps.proto's OptimizerKind */
    OPTIM_SGD = 1,
    OPTIM_ADAGRAD = 2,
    OPTIM_ADAM = 3,
    OPTIM_FTRL = 4,
} optim_kind;

#define OPTIM_MAX_SLOTS 2

typedef struct optim_spec {
    optim_kind kind;
    float lr;
    float momentum;            /* SGD */
    float weight_decay;        /* SGD, Adagrad, Adam */
    float beta1, beta2;        /* Adam */
    float eps;                 /* Adagrad, Adam */
    float initial_accumulator; /* Adagrad */
    float l1, l2, beta;        /* FTRL */
} optim_spec;

/* The defaults of a kind (PyTorch's, and for FTRL lr 0.05, beta 1, l1 = l2 = 0):
 *   SGD lr 0.01, momentum 0, weight_decay 0; Adagrad lr 0.01, eps 1e-10,
 *   initial_accumulator 0; Adam lr 0.001, beta1 0.9, beta2 0.999, eps 1e-8. */
void optim_spec_defaults(optim_kind kind, optim_spec *ret_spec);

/* INVALID_ARGUMENT unless every field the kind uses is finite and in its range (lr > 0;
 * momentum, beta1, beta2 in [0, 1); eps > 0; weight_decay, initial_accumulator, l1, l2,
 * beta >= 0) and the kind is one of the four; err names the field and its range. */
ps_status optim_spec_check(const optim_spec *spec, char *err, size_t err_len);

/* State slots per weight: SGD 1, Adagrad 1, Adam 2, FTRL 2, NONE 0 (and 0 for a kind
 * outside the enum). */
uint32_t optim_spec_slots(optim_kind kind);

/* "sgd", "adagrad", "adam", "ftrl", "none"; "?" outside the enum. */
const char *optim_kind_name(optim_kind kind);
/* The kind named (the names above, lower case); false for anything else. */
int optim_kind_parse(const char *name, optim_kind *ret_kind);

/* Sets one hyper-parameter by its name as above ("lr", "momentum", "weight_decay",
 * "beta1", "beta2", "eps", "initial_accumulator", "l1", "l2", "beta"); INVALID_ARGUMENT
 * for a name the spec's kind does not use (err lists those it does). The value is not
 * checked here (optim_spec_check does). */
ps_status optim_spec_set(optim_spec *spec, const char *field, double value, char *err,
                         size_t err_len);

/* Writes "adam lr=0.001 beta1=0.9 beta2=0.999 eps=1e-08 weight_decay=0": the kind and
 * every hyper-parameter it uses, in the order of optim_spec_set's list (%g). Returns
 * what snprintf would (the length needed). */
int optim_spec_format(const optim_spec *spec, char *buf, size_t len);

/* ---- sparse tables ---------------------------------------------------------------- */

typedef enum table_init_kind {
    TABLE_INIT_ZEROS = 0, /* numbered as ps.proto's InitKind */
    TABLE_INIT_UNIFORM = 1,
    TABLE_INIT_NORMAL = 2,
} table_init_kind;

#define TABLE_MAX_DIM 4096u /* floats per row */

typedef struct table_spec {
    uint32_t dim; /* 1..TABLE_MAX_DIM */
    table_init_kind init;
    float init_scale; /* finite, >= 0 */
    uint64_t seed;
    optim_kind optimizer; /* fixes the state kept per row (NONE: none) */
} table_spec;

/* INVALID_ARGUMENT for a dim outside 1..TABLE_MAX_DIM, an unknown init or optimizer
 * kind, or a negative or non-finite scale. */
ps_status table_spec_check(const table_spec *spec, char *err, size_t err_len);

/* "zeros", "uniform", "normal"; "?" outside the enum; and the reverse. */
const char *table_init_name(table_init_kind kind);
int table_init_parse(const char *name, table_init_kind *ret_kind);

/* The initial row of `id` (dim floats into out): the same in every process for the
 * same spec and id. Element j is drawn from h(j) = mix(mix(seed ^ mix(id)) + j), where
 * mix is SplitMix64's finalizer (x += 0x9e3779b97f4a7c15; x = (x ^ x>>30) *
 * 0xbf58476d1ce4e5b9; x = (x ^ x>>27) * 0x94d049bb133111eb; x ^= x>>31) and
 * u(j) = ((h(j) >> 40) + 0.5) / 2^24, in (0, 1):
 *   zeros    0
 *   uniform  scale * (2*u(j) - 1)
 *   normal   Box-Muller on u(j) and u(j + dim):
 *            scale * sqrt(-2 ln u(j)) * cos(2 pi u(j + dim))
 * computed in double and rounded to float. */
void table_spec_init_row(const table_spec *spec, uint64_t id, float *out);

#endif
