/* test_train_config.c: unit tests of config.json's training fields (train_config.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "train_config.h"

static train_config *parse_ok(const char *text) {
    train_config *cfg = NULL;
    char err[256] = "";
    ps_status st = train_config_parse(text, strlen(text), &cfg, err, sizeof err);
    if (st != PS_STATUS_OK)
        fail_msg("parse failed: %s", err);
    return cfg;
}

/* Parses text that must be refused with `want`, and whose message contains `needle`. */
static void parse_bad(const char *text, ps_status want, const char *needle) {
    train_config *cfg = (train_config *)0x1;
    char err[256] = "";
    assert_int_equal(train_config_parse(text, strlen(text), &cfg, err, sizeof err), want);
    assert_ptr_equal(cfg, (train_config *)0x1); /* untouched */
    if (!strstr(err, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err, needle);
}

static void test_empty_config(void **state) {
    (void)state;
    train_config *cfg = parse_ok("{\"name\": \"m\"}");
    optim_spec o;
    assert_false(train_config_optimizer(cfg, "w", &o));
    assert_false(train_config_skip_non_finite(cfg));
    assert_int_equal(train_config_consistency(cfg), TRAIN_CONSISTENCY_ASP);
    assert_int_equal(train_config_propagation(cfg), TRAIN_PROPAGATION_STREAMING);
    assert_int_equal(train_config_table_count(cfg), 0);
    assert_int_equal(train_config_served_versions(cfg), 1);
    train_config_destroy(cfg);
    cfg = parse_ok("{\"version_policy\": {\"latest\": 3}}");
    assert_int_equal(train_config_served_versions(cfg), 3);
    train_config_destroy(cfg);
}

static void test_optimizers_and_overrides(void **state) {
    (void)state;
    train_config *cfg =
        parse_ok("{\"training\": {\"optimizer\": {\"type\": \"adam\", \"lr\": 0.01},"
                 " \"tensors\": {\"fc1.weight\": {\"type\": \"sgd\", \"momentum\": 0.9}},"
                 " \"non_finite\": \"skip\", \"consistency\": \"ssp\", \"staleness\": 3,"
                 " \"propagation\": \"consistent\"}}");
    optim_spec o;
    assert_true(train_config_optimizer(cfg, "fc2.bias", &o));
    assert_int_equal(o.kind, OPTIM_ADAM);
    assert_float_equal(o.lr, 0.01f, 1e-9);
    assert_float_equal(o.beta2, 0.999f, 1e-9); /* the kind's default */
    assert_true(train_config_optimizer(cfg, "fc1.weight", &o));
    assert_int_equal(o.kind, OPTIM_SGD);
    assert_float_equal(o.momentum, 0.9f, 1e-9);
    assert_float_equal(o.lr, 0.01f, 1e-9); /* SGD's default lr */
    assert_true(train_config_skip_non_finite(cfg));
    assert_int_equal(train_config_consistency(cfg), TRAIN_CONSISTENCY_SSP);
    assert_int_equal(train_config_staleness(cfg), 3);
    assert_int_equal(train_config_propagation(cfg), TRAIN_PROPAGATION_CONSISTENT);
    train_config_destroy(cfg);
}

static void test_tables(void **state) {
    (void)state;
    train_config *cfg = parse_ok("{\"tables\": [{\"name\": \"user\", \"dim\": 16, \"seed\": 7,"
                                 " \"init\": {\"type\": \"normal\", \"scale\": 0.01},"
                                 " \"optimizer\": {\"type\": \"adagrad\", \"lr\": 0.05}}, "
                                 "{\"name\": \"item\", \"dim\": 1}]}");
    assert_int_equal(train_config_table_count(cfg), 2);
    train_table t;
    assert_true(train_config_table_find(cfg, "user", &t));
    assert_int_equal(t.spec.dim, 16);
    assert_int_equal(t.spec.seed, 7);
    assert_int_equal(t.spec.init, TABLE_INIT_NORMAL);
    assert_float_equal(t.spec.init_scale, 0.01f, 1e-9);
    assert_int_equal(t.spec.optimizer, OPTIM_ADAGRAD);
    assert_int_equal(t.optimizer.kind, OPTIM_ADAGRAD);
    assert_float_equal(t.optimizer.lr, 0.05f, 1e-9);
    assert_true(train_config_table_at(cfg, 1, &t));
    assert_string_equal(t.name, "item");
    assert_int_equal(t.spec.init, TABLE_INIT_ZEROS);
    assert_int_equal(t.optimizer.kind, OPTIM_NONE);
    assert_false(train_config_table_at(cfg, 2, &t));
    assert_false(train_config_table_find(cfg, "nope", &t));
    train_config_destroy(cfg);
}

static void test_bad_fields(void **state) {
    (void)state;
    parse_bad("{", PS_STATUS_PARSE, "line");
    parse_bad("{\"training\": {\"optimiser\": {}}}", PS_STATUS_INVALID_ARGUMENT, "optimiser");
    parse_bad("{\"training\": {\"optimizer\": {\"type\": \"lion\"}}}", PS_STATUS_INVALID_ARGUMENT,
              "type");
    parse_bad("{\"training\": {\"optimizer\": {\"type\": \"sgd\", \"beta1\": 0.9}}}",
              PS_STATUS_INVALID_ARGUMENT, "beta1");
    parse_bad("{\"training\": {\"optimizer\": {\"type\": \"adam\", \"lr\": -1}}}",
              PS_STATUS_INVALID_ARGUMENT, "lr");
    parse_bad("{\"training\": {\"optimizer\": {\"type\": \"adam\", \"lr\": \"big\"}}}",
              PS_STATUS_INVALID_ARGUMENT, "number");
    parse_bad("{\"training\": {\"non_finite\": \"ignore\"}}", PS_STATUS_INVALID_ARGUMENT,
              "non_finite");
    parse_bad("{\"training\": {\"staleness\": 2}}", PS_STATUS_INVALID_ARGUMENT, "ssp");
    parse_bad("{\"training\": {\"consistency\": \"ssp\", \"staleness\": -1}}",
              PS_STATUS_INVALID_ARGUMENT, "staleness");
    parse_bad("{\"tables\": [{\"name\": \"t\", \"dim\": 0}]}", PS_STATUS_INVALID_ARGUMENT, "dim");
    parse_bad("{\"tables\": [{\"name\": \"t\", \"dim\": 100000}]}", PS_STATUS_INVALID_ARGUMENT,
              "dim");
    parse_bad("{\"tables\": [{\"name\": \"a/b\", \"dim\": 2}]}", PS_STATUS_INVALID_ARGUMENT,
              "name");
    parse_bad("{\"tables\": [{\"name\": \"t\", \"dim\": 2}, {\"name\": \"t\", \"dim\": 2}]}",
              PS_STATUS_INVALID_ARGUMENT, "twice");
    parse_bad("{\"tables\": [{\"name\": \"t\", \"dim\": 2, \"init\": {\"type\": \"normal\","
              " \"scale\": -1}}]}",
              PS_STATUS_INVALID_ARGUMENT, "t");
    parse_bad("{\"version_policy\": {\"latest\": 0}}", PS_STATUS_INVALID_ARGUMENT,
              "version_policy");
    parse_bad("{\"version_policy\": {\"latest\": 99}}", PS_STATUS_INVALID_ARGUMENT, "1..16");
    parse_bad("{\"version_policy\": {\"all\": true}}", PS_STATUS_INVALID_ARGUMENT, "all");
    parse_bad("{\"tables\": [{\"name\": \"t\", \"dim\": 2, \"size\": 5}]}",
              PS_STATUS_INVALID_ARGUMENT, "size");
}

static void test_set_edits_one_optimizer(void **state) {
    (void)state;
    const char *text = "{\"name\": \"m\", \"layers\": [], \"training\": {\"optimizer\": "
                       "{\"type\": \"adam\", \"lr\": 0.001}}, \"tables\": [{\"name\": \"u\", "
                       "\"dim\": 4, \"optimizer\": {\"type\": \"adagrad\"}}]}";
    char *out = NULL, err[256] = "";
    /* a tensor without its own entry inherits the default, then changes */
    assert_int_equal(train_config_set(text, strlen(text), "fc1.weight", false, NULL, "lr", 0.5,
                                      &out, err, sizeof err),
                     PS_STATUS_OK);
    train_config *cfg = parse_ok(out);
    optim_spec o;
    assert_true(train_config_optimizer(cfg, "fc1.weight", &o));
    assert_int_equal(o.kind, OPTIM_ADAM);
    assert_float_equal(o.lr, 0.5f, 1e-7);
    assert_true(train_config_optimizer(cfg, "fc2.weight", &o));
    assert_float_equal(o.lr, 0.001f, 1e-9);
    assert_non_null(strstr(out, "\"layers\"")); /* the rest is kept */
    train_config_destroy(cfg);
    free(out);
    /* a table, with a kind change */
    assert_int_equal(
        train_config_set(text, strlen(text), "u", true, "ftrl", "l1", 0.25, &out, err, sizeof err),
        PS_STATUS_OK);
    cfg = parse_ok(out);
    train_table t;
    assert_true(train_config_table_find(cfg, "u", &t));
    assert_int_equal(t.optimizer.kind, OPTIM_FTRL);
    assert_int_equal(t.spec.optimizer, OPTIM_FTRL);
    assert_float_equal(t.optimizer.l1, 0.25f, 1e-9);
    train_config_destroy(cfg);
    free(out);
    /* refusals leave *ret_text alone */
    out = (char *)0x1;
    assert_int_equal(
        train_config_set(text, strlen(text), "v", true, NULL, "lr", 1, &out, err, sizeof err),
        PS_STATUS_NOT_FOUND);
    assert_int_equal(train_config_set(text, strlen(text), NULL, false, NULL, "momentum", 0.9, &out,
                                      err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "momentum"));
    assert_int_equal(
        train_config_set(text, strlen(text), NULL, false, NULL, "lr", -2, &out, err, sizeof err),
        PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(out, (char *)0x1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_config),
        cmocka_unit_test(test_optimizers_and_overrides),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_set_edits_one_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
