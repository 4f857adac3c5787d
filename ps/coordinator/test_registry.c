/* test_registry.c: unit tests of the model registry and of what a hostile client may
 * send to RegisterModel (cmocka, no process).
 *
 * Old behaviour these would have caught: no limit on the tensor count (100k tensors
 * were accepted and sized allocations), none on config.json (64 MiB was parsed), none
 * on names or chunk sizes; a version near 2^64 made the next automatic version wrap
 * to 0 and could not be saved in the state file; the registry grew without bound, so a
 * listing could exceed the message limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"
#include "test_fixtures.h"

/* Validation fails with INVALID_ARGUMENT and a message containing `words`. */
static void refused(const Ps__ModelInfo *m, const char *words) {
    char err[512] = "";
    assert_int_equal(registry_model_validate(m, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    if (!strstr(err, words))
        fail_msg("message '%s' lacks '%s'", err, words);
}

static void test_valid_model(void **state) {
    (void)state;
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    char err[512] = "";
    assert_int_equal(registry_model_validate(&t.info, err, sizeof err), PS_STATUS_OK);
}

static void test_hostile_counts_and_names(void **state) {
    (void)state;
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    /* 100k tensors: refused on the count, before anything is sized by it */
    Ps__TensorInfo **many = calloc(100000, sizeof *many);
    assert_non_null(many);
    for (size_t i = 0; i < 100000; i++)
        many[i] = &t.tensors[0];
    t.info.tensors = many;
    t.info.n_tensors = 100000;
    refused(&t.info, "100000 tensors (1 to 16384 allowed)");
    t.info.n_tensors = 0;
    refused(&t.info, "0 tensors");
    free(many);

    char *huge = malloc(REGISTRY_MAX_CONFIG_BYTES + 2);
    assert_non_null(huge);
    memset(huge, 'a', REGISTRY_MAX_CONFIG_BYTES + 1);
    huge[REGISTRY_MAX_CONFIG_BYTES + 1] = '\0';
    tiny_model_init(&t, "tiny", 0);
    t.info.name = huge; /* a 1 MiB name */
    refused(&t.info, "model name of 1-63 characters");
    tiny_model_init(&t, "tiny", 0);
    t.tensors[1].name = huge;
    refused(&t.info, "tensor 1: a name of 1 to 255 bytes");
    t.tensors[1].name = (char *)"";
    refused(&t.info, "tensor 1: a name");
    /* names of new uploads must be text (what a state file holds is not asked again:
     * older builds took control characters, and the coordinator must still start) */
    char err[512] = "";
    t.tensors[1].name = (char *)"\xff\xfe\xfd\xfc"; /* JSON state could not hold it */
    assert_int_equal(registry_model_check_text(&t.info, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "tensor 1: its name is not UTF-8 text"));
    t.tensors[1].name = (char *)"fc1.weight\nINFO forged"; /* nor a log line */
    assert_int_equal(registry_model_check_text(&t.info, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    t.tensors[1].name = (char *)"fc1.bias";
    assert_int_equal(registry_model_check_text(&t.info, err, sizeof err), PS_STATUS_OK);
    tiny_model_init(&t, "tiny", 0);
    t.info.config_json = huge; /* over REGISTRY_MAX_CONFIG_BYTES */
    refused(&t.info, "config.json of 1 to 1048576 bytes");
    t.info.config_json = (char *)"";
    refused(&t.info, "config.json of 1 to");
    free(huge);

    tiny_model_init(&t, "tiny", REGISTRY_MAX_VERSION + 1);
    refused(&t.info, "version 4294967296 is over");
    tiny_model_init(&t, "tiny", 0);
    t.tensors[3].name = (char *)"fc1.weight";
    refused(&t.info, "tensor fc1.weight is listed twice");
    tiny_model_init(&t, "tiny", 0);
    t.tensors[0].dtype = (char *)"FP16";
    refused(&t.info, "dtype FP16 is not supported");
}

static void test_hostile_shapes_and_chunks(void **state) {
    (void)state;
    tiny_model t;
    int64_t dims[MODEL_MAX_DIMS + 1];
    for (int i = 0; i <= MODEL_MAX_DIMS; i++)
        dims[i] = 2;
    tiny_model_init(&t, "tiny", 0);
    t.tensors[0].shape = dims;
    t.tensors[0].n_shape = MODEL_MAX_DIMS + 1;
    refused(&t.info, "has 9 dimensions (1 to 8 allowed)");
    t.tensors[0].n_shape = 0;
    refused(&t.info, "has 0 dimensions");

    /* products that overflow int64 and uint64, and negative or zero dims */
    int64_t overflow64[2] = {INT64_MAX, 2};
    int64_t overflow_u64[2] = {1ll << 32, 1ll << 32};
    int64_t over_limit[2] = {1ll << 21, 1ll << 20};
    int64_t negative[2] = {-1, 4};
    int64_t zero[2] = {0, 4};
    const int64_t *bad[] = {overflow64, overflow_u64, over_limit, negative, zero};
    const char *why[] = {"the most a replica can hold", "the most a replica can hold",
                         "the most a replica can hold", "it must be positive",
                         "it must be positive"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tiny_model_init(&t, "tiny", 0);
        t.tensors[0].shape = (int64_t *)bad[i];
        t.tensors[0].chunks = 1;
        refused(&t.info, why[i]);
    }

    tiny_model_init(&t, "tiny", 0);
    t.tensors[0].chunks = 3; /* 200 floats in chunks of 64 need 4 */
    refused(&t.info, "3 chunks of 64 floats do not cover 200 floats");
    t.tensors[0].chunks = UINT32_MAX;
    refused(&t.info, "do not cover");
    tiny_model_init(&t, "tiny", 0);
    t.tensors[0].chunk_floats = 0;
    refused(&t.info, "chunks of 0 floats");
    t.tensors[0].chunk_floats = REGISTRY_MAX_CHUNK_FLOATS + 1;
    refused(&t.info, "(1 to 4194304 allowed)");
}

static void test_graph_must_agree(void **state) {
    (void)state;
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    snprintf(t.config, sizeof t.config, TINY_CONFIG_FMT, "other");
    refused(&t.info, "its config names the model 'other'");
    tiny_model_init(&t, "tiny", 0);
    snprintf(t.config, sizeof t.config, "{not json");
    refused(&t.info, "model tiny: config.json:");
    tiny_model_init(&t, "tiny", 0);
    t.shapes[2][1] = 49; /* fc2.weight must take the 50 hidden features */
    t.tensors[2].chunks = 3;
    refused(&t.info, "fc2.weight");
}

static registry *make(size_t max_versions, size_t max_bytes) {
    registry_opts o = {.max_versions = max_versions, .max_bytes = max_bytes};
    registry *r = NULL;
    assert_int_equal(registry_create(&o, &r), PS_STATUS_OK);
    return r;
}

/* Puts a copy of model `name` version `version`; returns the status. */
static ps_status put(registry *r, const char *name, uint64_t version, uint64_t *ret_version) {
    tiny_model t;
    tiny_model_init(&t, name, version);
    Ps__ModelInfo *copy = NULL;
    assert_int_equal(registry_model_copy(&t.info, &copy), PS_STATUS_OK);
    char err[256];
    ps_status st = registry_model_put(r, copy, ret_version, err, sizeof err);
    if (st != PS_STATUS_OK)
        ps__model_info__free_unpacked(copy, NULL);
    return st;
}

/* Puts a version of `name` whose config.json says version_policy latest n. */
static void put_policy(registry *r, const char *name, uint64_t version, int n) {
    tiny_model t;
    tiny_model_init(&t, name, version);
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"name\": \"%s\", \"version_policy\": {\"latest\": %d}}", name, n);
    t.info.config_json = cfg;
    Ps__ModelInfo *copy = NULL;
    assert_int_equal(registry_model_copy(&t.info, &copy), PS_STATUS_OK);
    uint64_t v = 0;
    char err[256];
    assert_int_equal(registry_model_put(r, copy, &v, err, sizeof err), PS_STATUS_OK);
}

/* A version deleted from the top is never numbered again; explicit versions stand. */
static void test_deleted_versions_not_reused(void **state) {
    (void)state;
    registry *r = make(0, 0);
    uint64_t v = 0;
    assert_int_equal(put(r, "m", 0, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "m", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 2);
    Ps__ModelInfo *taken = NULL;
    assert_int_equal(registry_model_take(r, "m", 2, &taken), PS_STATUS_OK);
    ps__model_info__free_unpacked(taken, NULL);
    assert_int_equal(put(r, "m", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 3); /* not 2 again */
    const char *names[4];
    uint64_t versions[4];
    assert_int_equal(registry_marks_collect(r, names, versions), 0); /* v3 stored says it */
    /* every version deleted: the name still remembers */
    assert_int_equal(registry_model_take(r, "m", 3, &taken), PS_STATUS_OK);
    ps__model_info__free_unpacked(taken, NULL);
    assert_int_equal(registry_model_take(r, "m", 1, &taken), PS_STATUS_OK);
    ps__model_info__free_unpacked(taken, NULL);
    assert_int_equal(registry_marks_collect(r, names, versions), 1);
    assert_string_equal(names[0], "m");
    assert_int_equal(versions[0], 3);
    assert_int_equal(put(r, "m", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 4);
    assert_int_equal(put(r, "m", 2, &v), PS_STATUS_OK); /* asked for: given */
    assert_int_equal(v, 2);
    assert_int_equal(put(r, "other", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 1);
    /* marks are checked like names */
    assert_int_equal(registry_mark_raise(r, "a b", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(registry_mark_raise(r, "m", 0), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(registry_mark_raise(r, "m", REGISTRY_MAX_VERSION + 1),
                     PS_STATUS_INVALID_ARGUMENT);
    registry_destroy(r);
}

/* Marks are bounded: past REGISTRY_MAX_MARKS names the redundant, then the lowest go. */
static void test_marks_bounded(void **state) {
    (void)state;
    registry *r = make(0, 0);
    char name[32];
    for (uint32_t i = 0; i < REGISTRY_MAX_MARKS + 10; i++) {
        snprintf(name, sizeof name, "n%u", i);
        assert_int_equal(registry_mark_raise(r, name, 100 + i), PS_STATUS_OK);
    }
    assert_int_equal(registry_mark_count(r), REGISTRY_MAX_MARKS);
    assert_int_equal(registry_mark(r, "n0"), 0); /* the lowest went */
    assert_int_equal(registry_mark(r, "n4105"), 4205);
    registry_destroy(r);
}

/* A full table drops first the marks stored versions repeat; deleting the version that
 * repeated one marks it again, so its number is not given again (found by an adversarial
 * run: a mark dropped while v501 was stored, then v501 deleted, and v0 gave 501). */
static void test_marks_dropped_while_repeated_come_back_on_delete(void **state) {
    (void)state;
    registry *r = make(0, 0);
    uint64_t v = 0;
    assert_int_equal(put(r, "a", 500, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "a", 501, &v), PS_STATUS_OK);
    char name[32];
    for (uint32_t i = 0; registry_mark_count(r) < REGISTRY_MAX_MARKS; i++) {
        snprintf(name, sizeof name, "n%u", i);
        assert_int_equal(registry_mark_raise(r, name, 10), PS_STATUS_OK);
    }
    assert_int_equal(put(r, "b", 0, &v), PS_STATUS_OK); /* full: a's mark (501 stored) goes */
    assert_int_equal(registry_mark(r, "a"), 0);
    Ps__ModelInfo *taken = NULL;
    assert_int_equal(registry_model_take(r, "a", 501, &taken), PS_STATUS_OK);
    ps__model_info__free_unpacked(taken, NULL);
    assert_int_equal(registry_mark(r, "a"), 501);
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 502);
    registry_destroy(r);
}

/* What replicas serve: the latest N versions, N from the latest version's policy. */
static void test_served_versions(void **state) {
    (void)state;
    registry *r = make(0, 0);
    const Ps__ModelInfo *list[8];
    put_policy(r, "m", 1, 2);
    put_policy(r, "m", 2, 2);
    put_policy(r, "m", 3, 2);
    put_policy(r, "n", 5, 1);
    put_policy(r, "n", 6, 1);
    size_t k = registry_models_collect(r, true, list);
    assert_int_equal(k, 3); /* m 2 and 3, n 6 */
    uint64_t sum = 0;
    for (size_t i = 0; i < k; i++)
        sum += list[i]->version;
    assert_int_equal(sum, 2 + 3 + 6);
    put_policy(r, "m", 4, 3); /* the latest's policy decides: 2, 3, 4 */
    k = registry_models_collect(r, true, list);
    assert_int_equal(k, 4);
    registry_destroy(r);
}

static void test_versions_and_listing(void **state) {
    (void)state;
    registry *r = make(0, 0);
    uint64_t v = 0;
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 1);
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 2);
    assert_int_equal(put(r, "a", 7, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "b", 0, &v), PS_STATUS_OK);
    assert_int_equal(v, 1);
    size_t bytes = registry_bytes(r);
    assert_int_equal(put(r, "a", 2, &v), PS_STATUS_OK); /* replaces version 2 */
    assert_int_equal(registry_bytes(r), bytes);
    assert_int_equal(registry_model_count(r), 4);
    assert_int_equal(registry_generation(r), 5);
    assert_int_equal(registry_model_find(r, "a", 0)->version, 7);
    assert_int_equal(registry_model_find(r, "a", 2)->version, 2);
    assert_null(registry_model_find(r, "a", 3));
    assert_null(registry_model_find(r, "c", 0));
    const Ps__ModelInfo *list[4];
    assert_int_equal(registry_models_collect(r, false, list), 4);
    assert_int_equal(registry_models_collect(r, true, list), 2);
    /* the largest version: no automatic version after it */
    assert_int_equal(put(r, "b", REGISTRY_MAX_VERSION, &v), PS_STATUS_OK);
    v = 99;
    assert_int_equal(put(r, "b", 0, &v), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(v, 99); /* untouched on failure */
    registry_destroy(r);
    registry_destroy(NULL);
}

static void test_limits(void **state) {
    (void)state;
    registry *r = make(2, 0);
    uint64_t v = 0;
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(put(r, "a", 2, &v), PS_STATUS_OK); /* replacing needs no room */
    assert_int_equal(registry_generation(r), 3);
    registry_destroy(r);

    r = make(0, 0);
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    size_t one = registry_bytes(r);
    assert_true(one > 500);
    registry_destroy(r);
    r = make(0, one + one / 2); /* bytes: room for one tiny model, not two */
    assert_int_equal(put(r, "a", 0, &v), PS_STATUS_OK);
    assert_int_equal(put(r, "b", 0, &v), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(registry_model_count(r), 1);
    registry_destroy(r);

    registry_opts too_big = {.max_bytes = REGISTRY_MAX_BYTES_LIMIT + 1};
    assert_int_equal(registry_create(&too_big, &r), PS_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_model),
        cmocka_unit_test(test_hostile_counts_and_names),
        cmocka_unit_test(test_hostile_shapes_and_chunks),
        cmocka_unit_test(test_graph_must_agree),
        cmocka_unit_test(test_versions_and_listing),
        cmocka_unit_test(test_served_versions),
        cmocka_unit_test(test_deleted_versions_not_reused),
        cmocka_unit_test(test_marks_bounded),
        cmocka_unit_test(test_marks_dropped_while_repeated_come_back_on_delete),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
