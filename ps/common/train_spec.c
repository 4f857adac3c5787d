/* train_spec.c: optimizer and sparse-table specs: defaults, checks, names, and the
 * deterministic row initializer (see train_spec.h for the contract and the formulas).
 *
 * The hyper-parameters are described once, in a table (name, offset in optim_spec,
 * range, the kinds that use it), so that the check, the setter and the error texts
 * always agree on which kind uses which field.
 */
#include "train_spec.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* ---- the hyper-parameter table ------------------------------------------------------ */

typedef enum optim_range {
    OPTIM_RANGE_POSITIVE, /* > 0 */
    OPTIM_RANGE_UNIT,     /* in [0, 1) */
    OPTIM_RANGE_NONNEG,   /* >= 0 */
} optim_range;

#define KIND_BIT(k) (1u << (unsigned)(k))

typedef struct optim_field {
    const char *name;  /* as optim_spec_set takes it */
    size_t offset;     /* of the float in optim_spec */
    optim_range range; /* the values optim_spec_check accepts */
    unsigned kinds;    /* KIND_BIT of every kind that uses it */
} optim_field;

static const optim_field optim_fields[] = {
    {"lr", offsetof(optim_spec, lr), OPTIM_RANGE_POSITIVE,
     KIND_BIT(OPTIM_SGD) | KIND_BIT(OPTIM_ADAGRAD) | KIND_BIT(OPTIM_ADAM) | KIND_BIT(OPTIM_FTRL)},
    {"momentum", offsetof(optim_spec, momentum), OPTIM_RANGE_UNIT, KIND_BIT(OPTIM_SGD)},
    {"weight_decay", offsetof(optim_spec, weight_decay), OPTIM_RANGE_NONNEG,
     KIND_BIT(OPTIM_SGD) | KIND_BIT(OPTIM_ADAGRAD) | KIND_BIT(OPTIM_ADAM)},
    {"beta1", offsetof(optim_spec, beta1), OPTIM_RANGE_UNIT, KIND_BIT(OPTIM_ADAM)},
    {"beta2", offsetof(optim_spec, beta2), OPTIM_RANGE_UNIT, KIND_BIT(OPTIM_ADAM)},
    {"eps", offsetof(optim_spec, eps), OPTIM_RANGE_POSITIVE,
     KIND_BIT(OPTIM_ADAGRAD) | KIND_BIT(OPTIM_ADAM)},
    {"initial_accumulator", offsetof(optim_spec, initial_accumulator), OPTIM_RANGE_NONNEG,
     KIND_BIT(OPTIM_ADAGRAD)},
    {"l1", offsetof(optim_spec, l1), OPTIM_RANGE_NONNEG, KIND_BIT(OPTIM_FTRL)},
    {"l2", offsetof(optim_spec, l2), OPTIM_RANGE_NONNEG, KIND_BIT(OPTIM_FTRL)},
    {"beta", offsetof(optim_spec, beta), OPTIM_RANGE_NONNEG, KIND_BIT(OPTIM_FTRL)},
};

#define OPTIM_FIELD_COUNT (sizeof(optim_fields) / sizeof(optim_fields[0]))

static const char *optim_range_text(optim_range range) {
    switch (range) {
    case OPTIM_RANGE_POSITIVE:
        return "> 0";
    case OPTIM_RANGE_UNIT:
        return "in [0, 1)";
    case OPTIM_RANGE_NONNEG:
        return ">= 0";
    }
    return "?";
}

static int optim_range_holds(optim_range range, float v) {
    switch (range) {
    case OPTIM_RANGE_POSITIVE:
        return v > 0.0f;
    case OPTIM_RANGE_UNIT:
        return v >= 0.0f && v < 1.0f;
    case OPTIM_RANGE_NONNEG:
        return v >= 0.0f;
    }
    return 0;
}

static int optim_kind_valid(optim_kind kind) {
    return kind == OPTIM_SGD || kind == OPTIM_ADAGRAD || kind == OPTIM_ADAM || kind == OPTIM_FTRL;
}

/* "lr, momentum, weight_decay": the fields `kind` uses, in table order. */
static void optim_fields_list(optim_kind kind, char *out, size_t out_len) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < OPTIM_FIELD_COUNT; i++) {
        if (!optim_kind_valid(kind) || !(optim_fields[i].kinds & KIND_BIT(kind)))
            continue;
        size_t name_len = strlen(optim_fields[i].name);
        if (used + name_len + 3 > out_len)
            break;
        if (used > 0) {
            memcpy(out + used, ", ", 2);
            used += 2;
        }
        memcpy(out + used, optim_fields[i].name, name_len + 1);
        used += name_len;
    }
}

/* ---- optimizers --------------------------------------------------------------------- */

void optim_spec_defaults(optim_kind kind, optim_spec *ret_spec) {
    optim_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.kind = kind;
    switch (kind) {
    case OPTIM_SGD:
        spec.lr = 0.01f;
        break;
    case OPTIM_ADAGRAD:
        spec.lr = 0.01f;
        spec.eps = 1e-10f;
        break;
    case OPTIM_ADAM:
        spec.lr = 0.001f;
        spec.beta1 = 0.9f;
        spec.beta2 = 0.999f;
        spec.eps = 1e-8f;
        break;
    case OPTIM_FTRL:
        spec.lr = 0.05f;
        spec.beta = 1.0f;
        break;
    case OPTIM_NONE:
    default:
        break;
    }
    *ret_spec = spec;
}

ps_status optim_spec_check(const optim_spec *spec, char *err, size_t err_len) {
    if (!optim_kind_valid(spec->kind)) {
        ps_set_err(err, err_len,
                   "optimizer kind %d (%s) is not one of sgd (1), adagrad (2), adam (3), ftrl (4)",
                   (int)spec->kind, optim_kind_name(spec->kind));
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < OPTIM_FIELD_COUNT; i++) {
        const optim_field *f = &optim_fields[i];
        if (!(f->kinds & KIND_BIT(spec->kind)))
            continue;
        float v;
        memcpy(&v, (const char *)spec + f->offset, sizeof(v));
        if (!isfinite(v)) {
            ps_set_err(err, err_len, "%s optimizer: %s = %g is not finite (it must be %s)",
                       optim_kind_name(spec->kind), f->name, (double)v, optim_range_text(f->range));
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (!optim_range_holds(f->range, v)) {
            ps_set_err(err, err_len, "%s optimizer: %s = %g is out of range (it must be %s)",
                       optim_kind_name(spec->kind), f->name, (double)v, optim_range_text(f->range));
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

uint32_t optim_spec_slots(optim_kind kind) {
    switch (kind) {
    case OPTIM_SGD:
    case OPTIM_ADAGRAD:
        return 1;
    case OPTIM_ADAM:
    case OPTIM_FTRL:
        return 2;
    case OPTIM_NONE:
    default:
        return 0;
    }
}

const char *optim_kind_name(optim_kind kind) {
    switch (kind) {
    case OPTIM_NONE:
        return "none";
    case OPTIM_SGD:
        return "sgd";
    case OPTIM_ADAGRAD:
        return "adagrad";
    case OPTIM_ADAM:
        return "adam";
    case OPTIM_FTRL:
        return "ftrl";
    }
    return "?";
}

int optim_kind_parse(const char *name, optim_kind *ret_kind) {
    static const optim_kind kinds[] = {OPTIM_NONE, OPTIM_SGD, OPTIM_ADAGRAD, OPTIM_ADAM,
                                       OPTIM_FTRL};
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(name, optim_kind_name(kinds[i])) == 0) {
            *ret_kind = kinds[i];
            return 1;
        }
    }
    return 0;
}

ps_status optim_spec_set(optim_spec *spec, const char *field, double value, char *err,
                         size_t err_len) {
    char uses[128];
    optim_fields_list(spec->kind, uses, sizeof(uses));
    const optim_field *found = NULL;
    for (size_t i = 0; field != NULL && i < OPTIM_FIELD_COUNT; i++) {
        if (strcmp(field, optim_fields[i].name) == 0)
            found = &optim_fields[i];
    }
    if (found == NULL || !optim_kind_valid(spec->kind) || !(found->kinds & KIND_BIT(spec->kind))) {
        ps_set_err(err, err_len, "%s optimizer: %s \"%.64s\"; it uses %s",
                   optim_kind_name(spec->kind),
                   found == NULL ? "no hyper-parameter is named" : "does not use",
                   field == NULL ? "(null)" : field, uses[0] != '\0' ? uses : "none");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    /* A finite double beyond float's range becomes an infinity explicitly (the
     * conversion itself would be undefined), so optim_spec_check refuses it. */
    float v;
    if (value > (double)FLT_MAX)
        v = INFINITY;
    else if (value < -(double)FLT_MAX)
        v = -INFINITY;
    else
        v = (float)value;
    memcpy((char *)spec + found->offset, &v, sizeof(v));
    return PS_STATUS_OK;
}

/* ---- sparse tables ------------------------------------------------------------------ */

ps_status table_spec_check(const table_spec *spec, char *err, size_t err_len) {
    if (spec->dim < 1 || spec->dim > TABLE_MAX_DIM) {
        ps_set_err(err, err_len, "table dim = %u is out of range (it must be in 1..%u)",
                   (unsigned)spec->dim, TABLE_MAX_DIM);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (spec->init != TABLE_INIT_ZEROS && spec->init != TABLE_INIT_UNIFORM &&
        spec->init != TABLE_INIT_NORMAL) {
        ps_set_err(err, err_len, "table init = %d is not one of zeros (0), uniform (1), normal (2)",
                   (int)spec->init);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!isfinite(spec->init_scale) || spec->init_scale < 0.0f) {
        ps_set_err(err, err_len, "table init_scale = %g is out of range (it must be finite, >= 0)",
                   (double)spec->init_scale);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (spec->optimizer != OPTIM_NONE && !optim_kind_valid(spec->optimizer)) {
        ps_set_err(err, err_len,
                   "table optimizer = %d is not one of none (0), sgd (1), adagrad (2), adam (3), "
                   "ftrl (4)",
                   (int)spec->optimizer);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

const char *table_init_name(table_init_kind kind) {
    switch (kind) {
    case TABLE_INIT_ZEROS:
        return "zeros";
    case TABLE_INIT_UNIFORM:
        return "uniform";
    case TABLE_INIT_NORMAL:
        return "normal";
    }
    return "?";
}

int table_init_parse(const char *name, table_init_kind *ret_kind) {
    static const table_init_kind kinds[] = {TABLE_INIT_ZEROS, TABLE_INIT_UNIFORM,
                                            TABLE_INIT_NORMAL};
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(name, table_init_name(kinds[i])) == 0) {
            *ret_kind = kinds[i];
            return 1;
        }
    }
    return 0;
}

/* SplitMix64's finalizer, as written in train_spec.h. */
static uint64_t table_init_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* u(j) = ((h(j) >> 40) + 0.5) / 2^24 with h(j) = mix(base + j), in (0, 1). */
static double table_init_unit(uint64_t base, uint64_t j) {
    return ((double)(table_init_mix(base + j) >> 40) + 0.5) / 16777216.0;
}

void table_spec_init_row(const table_spec *spec, uint64_t id, float *out) {
    const uint64_t base = table_init_mix(spec->seed ^ table_init_mix(id));
    const double scale = (double)spec->init_scale;
    const double two_pi = 6.28318530717958647692528676655900577; /* 2 * pi */
    for (uint32_t j = 0; j < spec->dim; j++) {
        switch (spec->init) {
        case TABLE_INIT_UNIFORM:
            out[j] = (float)(scale * (2.0 * table_init_unit(base, j) - 1.0));
            break;
        case TABLE_INIT_NORMAL: {
            const double u1 = table_init_unit(base, j);
            const double u2 = table_init_unit(base, (uint64_t)j + spec->dim);
            out[j] = (float)(scale * sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
            break;
        }
        case TABLE_INIT_ZEROS:
        default:
            out[j] = 0.0f;
            break;
        }
    }
}

int optim_spec_format(const optim_spec *spec, char *buf, size_t len) {
    int total = snprintf(buf, len, "%s", optim_kind_name(spec->kind));
    for (size_t i = 0; optim_kind_valid(spec->kind) && i < OPTIM_FIELD_COUNT; i++) {
        if (!(optim_fields[i].kinds & KIND_BIT(spec->kind)))
            continue;
        float v;
        memcpy(&v, (const char *)spec + optim_fields[i].offset, sizeof v);
        size_t used = total >= 0 && (size_t)total < len ? (size_t)total : len;
        int n = snprintf(buf ? buf + used : NULL, buf ? len - used : 0, " %s=%g",
                         optim_fields[i].name, (double)v);
        total += n > 0 ? n : 0;
    }
    return total;
}
