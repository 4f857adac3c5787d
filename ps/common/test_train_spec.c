/* test_train_spec.c: optimizer specs (defaults, range checks and their messages, the
 * per-kind setter, names) and table specs (bounds, names, the deterministic row
 * initializer, pinned to values computed by an independent Python implementation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "train_spec.h"

static const optim_kind all_kinds[] = {OPTIM_SGD, OPTIM_ADAGRAD, OPTIM_ADAM, OPTIM_FTRL};
#define KIND_COUNT (sizeof(all_kinds) / sizeof(all_kinds[0]))

/* The hyper-parameters each kind uses, and a pointer to the field in a spec. */
typedef struct field_case {
    const char *name;
    size_t offset;
    int range; /* 0: > 0; 1: in [0, 1); 2: >= 0 */
    unsigned kinds;
} field_case;

#define KB(k) (1u << (unsigned)(k))
static const field_case fields[] = {
    {"lr", offsetof(optim_spec, lr), 0,
     KB(OPTIM_SGD) | KB(OPTIM_ADAGRAD) | KB(OPTIM_ADAM) | KB(OPTIM_FTRL)},
    {"momentum", offsetof(optim_spec, momentum), 1, KB(OPTIM_SGD)},
    {"weight_decay", offsetof(optim_spec, weight_decay), 2,
     KB(OPTIM_SGD) | KB(OPTIM_ADAGRAD) | KB(OPTIM_ADAM)},
    {"beta1", offsetof(optim_spec, beta1), 1, KB(OPTIM_ADAM)},
    {"beta2", offsetof(optim_spec, beta2), 1, KB(OPTIM_ADAM)},
    {"eps", offsetof(optim_spec, eps), 0, KB(OPTIM_ADAGRAD) | KB(OPTIM_ADAM)},
    {"initial_accumulator", offsetof(optim_spec, initial_accumulator), 2, KB(OPTIM_ADAGRAD)},
    {"l1", offsetof(optim_spec, l1), 2, KB(OPTIM_FTRL)},
    {"l2", offsetof(optim_spec, l2), 2, KB(OPTIM_FTRL)},
    {"beta", offsetof(optim_spec, beta), 2, KB(OPTIM_FTRL)},
};
#define FIELD_COUNT (sizeof(fields) / sizeof(fields[0]))

static float *field_ptr(optim_spec *spec, const field_case *f) {
    return (float *)(void *)((char *)spec + f->offset);
}

static void test_defaults(void **state) {
    (void)state;
    char err[256];
    for (size_t k = 0; k < KIND_COUNT; k++) {
        optim_spec spec;
        optim_spec_defaults(all_kinds[k], &spec);
        assert_int_equal(spec.kind, all_kinds[k]);
        assert_int_equal(optim_spec_check(&spec, err, sizeof(err)), PS_STATUS_OK);
    }
    optim_spec s;
    optim_spec_defaults(OPTIM_SGD, &s);
    assert_true(s.lr == 0.01f && s.momentum == 0.0f && s.weight_decay == 0.0f);
    optim_spec_defaults(OPTIM_ADAGRAD, &s);
    assert_true(s.lr == 0.01f && s.eps == 1e-10f && s.initial_accumulator == 0.0f);
    optim_spec_defaults(OPTIM_ADAM, &s);
    assert_true(s.lr == 0.001f && s.beta1 == 0.9f && s.beta2 == 0.999f && s.eps == 1e-8f);
    optim_spec_defaults(OPTIM_FTRL, &s);
    assert_true(s.lr == 0.05f && s.beta == 1.0f && s.l1 == 0.0f && s.l2 == 0.0f);
    assert_int_equal(optim_spec_slots(OPTIM_NONE), 0);
    assert_int_equal(optim_spec_slots(OPTIM_SGD), 1);
    assert_int_equal(optim_spec_slots(OPTIM_ADAGRAD), 1);
    assert_int_equal(optim_spec_slots(OPTIM_ADAM), 2);
    assert_int_equal(optim_spec_slots(OPTIM_FTRL), 2);
    assert_int_equal(optim_spec_slots((optim_kind)9), 0);
}

/* Every bad value of every used field is refused, and the message names the field with
 * its value and range; the same values in a field the kind does not use are ignored. */
static void test_check_ranges(void **state) {
    (void)state;
    static const float bad_positive[] = {0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    static const float bad_unit[] = {-0.1f, 1.0f, 1.5f, NAN, INFINITY, -INFINITY};
    static const float bad_nonneg[] = {-1e-3f, NAN, INFINITY, -INFINITY};
    static const struct {
        const float *values;
        size_t count;
        const char *range_text;
    } bad[] = {{bad_positive, 5, "> 0"}, {bad_unit, 6, "in [0, 1)"}, {bad_nonneg, 4, ">= 0"}};
    for (size_t k = 0; k < KIND_COUNT; k++) {
        for (size_t f = 0; f < FIELD_COUNT; f++) {
            const int used = (fields[f].kinds & KB(all_kinds[k])) != 0;
            for (size_t b = 0; b < bad[fields[f].range].count; b++) {
                optim_spec spec;
                optim_spec_defaults(all_kinds[k], &spec);
                *field_ptr(&spec, &fields[f]) = bad[fields[f].range].values[b];
                char err[256] = "";
                ps_status st = optim_spec_check(&spec, err, sizeof(err));
                if (!used) {
                    assert_int_equal(st, PS_STATUS_OK);
                    continue;
                }
                assert_int_equal(st, PS_STATUS_INVALID_ARGUMENT);
                char named[64];
                snprintf(named, sizeof(named), " %s = ", fields[f].name);
                if (strstr(err, named) == NULL ||
                    strstr(err, bad[fields[f].range].range_text) == NULL ||
                    strstr(err, optim_kind_name(all_kinds[k])) == NULL)
                    fail_msg("kind %s field %s: message \"%s\"", optim_kind_name(all_kinds[k]),
                             fields[f].name, err);
            }
        }
    }
    /* The edges that are allowed. */
    optim_spec spec;
    optim_spec_defaults(OPTIM_ADAM, &spec);
    spec.beta1 = 0.0f;
    spec.beta2 = nextafterf(1.0f, 0.0f);
    spec.weight_decay = 0.0f;
    assert_int_equal(optim_spec_check(&spec, NULL, 0), PS_STATUS_OK);
}

static void test_check_kind(void **state) {
    (void)state;
    optim_spec spec;
    char err[256] = "";
    optim_spec_defaults(OPTIM_NONE, &spec);
    assert_int_equal(optim_spec_check(&spec, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "optimizer kind 0"));
    optim_spec_defaults(OPTIM_SGD, &spec);
    spec.kind = (optim_kind)7;
    assert_int_equal(optim_spec_check(&spec, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "optimizer kind 7"));
    /* A tiny buffer gets a truncated, terminated message. */
    char small[8];
    assert_int_equal(optim_spec_check(&spec, small, sizeof(small)), PS_STATUS_INVALID_ARGUMENT);
    assert_true(strlen(small) < sizeof(small));
}

static void test_set(void **state) {
    (void)state;
    char err[256] = "";
    for (size_t k = 0; k < KIND_COUNT; k++) {
        for (size_t f = 0; f < FIELD_COUNT; f++) {
            optim_spec spec, before;
            optim_spec_defaults(all_kinds[k], &spec);
            before = spec;
            ps_status st = optim_spec_set(&spec, fields[f].name, 0.25, err, sizeof(err));
            if (fields[f].kinds & KB(all_kinds[k])) {
                assert_int_equal(st, PS_STATUS_OK);
                assert_true(*field_ptr(&spec, &fields[f]) == 0.25f);
                continue;
            }
            assert_int_equal(st, PS_STATUS_INVALID_ARGUMENT);
            assert_memory_equal(&spec, &before, sizeof(spec));
            assert_non_null(strstr(err, fields[f].name));
            assert_non_null(strstr(err, "it uses lr")); /* lists the kind's fields */
        }
    }
    optim_spec spec;
    optim_spec_defaults(OPTIM_ADAM, &spec);
    assert_int_equal(optim_spec_set(&spec, "learning_rate", 0.1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "learning_rate"));
    assert_non_null(strstr(err, "lr, weight_decay, beta1, beta2, eps"));
    assert_int_equal(optim_spec_set(&spec, NULL, 0.1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    /* Not checked here, refused by the check; beyond float's range it is an infinity. */
    assert_int_equal(optim_spec_set(&spec, "beta1", 2.0, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(optim_spec_check(&spec, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(optim_spec_set(&spec, "beta1", 0.5, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(optim_spec_set(&spec, "lr", 1e300, err, sizeof(err)), PS_STATUS_OK);
    assert_true(isinf(spec.lr));
    assert_int_equal(optim_spec_check(&spec, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "lr = inf"));
    optim_spec_defaults(OPTIM_NONE, &spec);
    assert_int_equal(optim_spec_set(&spec, "lr", 0.1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
}

static void test_names(void **state) {
    (void)state;
    static const optim_kind kinds[] = {OPTIM_NONE, OPTIM_SGD, OPTIM_ADAGRAD, OPTIM_ADAM,
                                       OPTIM_FTRL};
    static const char *const kind_names[] = {"none", "sgd", "adagrad", "adam", "ftrl"};
    for (size_t i = 0; i < 5; i++) {
        optim_kind k = (optim_kind)99;
        assert_string_equal(optim_kind_name(kinds[i]), kind_names[i]);
        assert_true(optim_kind_parse(kind_names[i], &k));
        assert_int_equal(k, kinds[i]);
    }
    optim_kind k = OPTIM_ADAM;
    assert_false(optim_kind_parse("SGD", &k));
    assert_false(optim_kind_parse("", &k));
    assert_false(optim_kind_parse("?", &k));
    assert_false(optim_kind_parse(NULL, &k));
    assert_int_equal(k, OPTIM_ADAM); /* untouched */
    assert_string_equal(optim_kind_name((optim_kind)5), "?");

    static const table_init_kind inits[] = {TABLE_INIT_ZEROS, TABLE_INIT_UNIFORM,
                                            TABLE_INIT_NORMAL};
    static const char *const init_names[] = {"zeros", "uniform", "normal"};
    for (size_t i = 0; i < 3; i++) {
        table_init_kind t = (table_init_kind)99;
        assert_string_equal(table_init_name(inits[i]), init_names[i]);
        assert_true(table_init_parse(init_names[i], &t));
        assert_int_equal(t, inits[i]);
    }
    table_init_kind t = TABLE_INIT_NORMAL;
    assert_false(table_init_parse("gaussian", &t));
    assert_false(table_init_parse(NULL, &t));
    assert_int_equal(t, TABLE_INIT_NORMAL);
    assert_string_equal(table_init_name((table_init_kind)3), "?");
}

static table_spec good_table(void) {
    table_spec spec = {.dim = 8,
                       .init = TABLE_INIT_UNIFORM,
                       .init_scale = 0.1f,
                       .seed = 1,
                       .optimizer = OPTIM_SGD};
    return spec;
}

static void expect_table_refused(table_spec spec, const char *needle) {
    char err[256] = "";
    assert_int_equal(table_spec_check(&spec, err, sizeof(err)), PS_STATUS_INVALID_ARGUMENT);
    if (strstr(err, needle) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", needle, err);
}

static void test_table_check(void **state) {
    (void)state;
    table_spec spec = good_table();
    assert_int_equal(table_spec_check(&spec, NULL, 0), PS_STATUS_OK);
    spec.dim = 1;
    assert_int_equal(table_spec_check(&spec, NULL, 0), PS_STATUS_OK);
    spec.dim = TABLE_MAX_DIM;
    assert_int_equal(table_spec_check(&spec, NULL, 0), PS_STATUS_OK);
    spec = good_table();
    spec.optimizer = OPTIM_NONE;
    spec.init_scale = 0.0f;
    spec.init = TABLE_INIT_ZEROS;
    assert_int_equal(table_spec_check(&spec, NULL, 0), PS_STATUS_OK);

    spec = good_table();
    spec.dim = 0;
    expect_table_refused(spec, "dim = 0");
    spec.dim = TABLE_MAX_DIM + 1;
    expect_table_refused(spec, "dim = 4097");
    spec = good_table();
    spec.init = (table_init_kind)3;
    expect_table_refused(spec, "init = 3");
    static const float bad_scales[] = {-1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 4; i++) {
        spec = good_table();
        spec.init_scale = bad_scales[i];
        expect_table_refused(spec, "init_scale = ");
    }
    spec = good_table();
    spec.optimizer = (optim_kind)5;
    expect_table_refused(spec, "optimizer = 5");
}

/* Values from the independent Python/numpy implementation of train_spec.h's scheme
 * (seed 7, dim 4): the report of the change that added this test shows the script. */
static void test_init_row_pinned(void **state) {
    (void)state;
    static const float uniform_0[4] = {-0x1.8c99acp-3f, -0x1.d63baep-2f, -0x1.a73896p-2f,
                                       -0x1.494370p-5f};
    static const float uniform_12345[4] = {0x1.1cc8acp-3f, 0x1.ffb430p-5f, -0x1.72cb84p-3f,
                                           -0x1.9ceccap-2f};
    static const float normal_0[4] = {0x1.6b08cap+0f, -0x1.19191ep+1f, 0x1.468e84p+0f,
                                      0x1.ad7a7cp-1f};
    static const float normal_12345[4] = {-0x1.b36632p-1f, -0x1.236366p-2f, -0x1.86842cp-1f,
                                          0x1.7760e2p-1f};
    table_spec spec = {.dim = 4, .init = TABLE_INIT_UNIFORM, .init_scale = 0.5f, .seed = 7};
    float row[4];
    table_spec_init_row(&spec, 0, row);
    assert_memory_equal(row, uniform_0, sizeof(row));
    table_spec_init_row(&spec, 12345, row);
    assert_memory_equal(row, uniform_12345, sizeof(row));
    spec.init = TABLE_INIT_NORMAL;
    spec.init_scale = 1.0f;
    table_spec_init_row(&spec, 0, row);
    assert_memory_equal(row, normal_0, sizeof(row));
    table_spec_init_row(&spec, 12345, row);
    assert_memory_equal(row, normal_12345, sizeof(row));
}

#define STAT_DIM 1000u
#define STAT_ROWS 100u

static void test_init_row_properties(void **state) {
    (void)state;
    static float a[STAT_DIM], b[STAT_DIM];
    table_spec spec = {
        .dim = STAT_DIM, .init = TABLE_INIT_UNIFORM, .init_scale = 0.25f, .seed = 42};
    table_spec_init_row(&spec, 9, a);
    table_spec_init_row(&spec, 9, b);
    assert_memory_equal(a, b, sizeof(a));
    table_spec_init_row(&spec, 10, b);
    assert_memory_not_equal(a, b, sizeof(a));
    spec.seed = 43;
    table_spec_init_row(&spec, 9, b);
    assert_memory_not_equal(a, b, sizeof(a));

    /* uniform: inside [-scale, scale) over 100k values, both halves used */
    spec.seed = 42;
    size_t negative = 0;
    for (uint64_t id = 0; id < STAT_ROWS; id++) {
        table_spec_init_row(&spec, id, a);
        for (uint32_t j = 0; j < STAT_DIM; j++) {
            assert_true(a[j] >= -0.25f && a[j] < 0.25f);
            negative += a[j] < 0.0f;
        }
    }
    assert_in_range(negative, 49000, 51000);

    /* normal: mean ~0 and std ~scale over 100k values (the mean's standard error is
     * scale / 316, so 0.02 * scale is six of them) */
    spec.init = TABLE_INIT_NORMAL;
    spec.init_scale = 2.0f;
    double sum = 0.0, sum_sq = 0.0;
    for (uint64_t id = 0; id < STAT_ROWS; id++) {
        table_spec_init_row(&spec, id * 7919u, a);
        for (uint32_t j = 0; j < STAT_DIM; j++) {
            assert_true(isfinite(a[j]));
            sum += a[j];
            sum_sq += (double)a[j] * a[j];
        }
    }
    const double count = (double)STAT_DIM * STAT_ROWS;
    const double mean = sum / count, std = sqrt(sum_sq / count - mean * mean);
    if (fabs(mean) > 0.02 * 2.0 || fabs(std - 2.0) > 0.02 * 2.0)
        fail_msg("normal rows: mean %g, std %g (expected ~0, ~2)", mean, std);

    /* zeros: all zero whatever the scale */
    spec.init = TABLE_INIT_ZEROS;
    spec.init_scale = 3.0f;
    memset(a, 0xff, sizeof(a));
    table_spec_init_row(&spec, 5, a);
    for (uint32_t j = 0; j < STAT_DIM; j++)
        assert_true(a[j] == 0.0f);
}

static void test_format(void **state) {
    (void)state;
    optim_spec spec;
    optim_spec_defaults(OPTIM_ADAM, &spec);
    spec.lr = 0.5f;
    char buf[256];
    int n = optim_spec_format(&spec, buf, sizeof buf);
    assert_string_equal(buf, "adam lr=0.5 weight_decay=0 beta1=0.9 beta2=0.999 eps=1e-08");
    assert_int_equal(n, (int)strlen(buf));
    optim_spec_defaults(OPTIM_FTRL, &spec);
    assert_int_equal(optim_spec_format(&spec, NULL, 0),
                     (int)strlen("ftrl lr=0.05 l1=0 l2=0 beta=1"));
    char small[8];
    optim_spec_format(&spec, small, sizeof small); /* truncated, still terminated */
    assert_string_equal(small, "ftrl lr");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_check_ranges),
        cmocka_unit_test(test_check_kind),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_table_check),
        cmocka_unit_test(test_init_row_pinned),
        cmocka_unit_test(test_init_row_properties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
