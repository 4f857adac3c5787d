/* test_served.c: served models and the model set, filled from an in-memory shard
 * (cmocka, no process): the initial load, updates by the version rule, re-pulls,
 * param_version, and the check of outputs after each forward pass.
 *
 * Old behaviour these tests would have caught (serving/serve/replica.c): replicas
 * answered NaN outputs with OK (test_nonfinite_outputs_refused); an ADD was applied
 * onto a value of another version (test_gap_is_pulled_not_added); param_version was a
 * sum of versions that a re-pull could lower (test_param_version_monotone).
 *
 * meson runs them twice: on the CPU, and with a first argument naming the cpudev test
 * backend (device memory, kernels/test_module_cpudev.h), where a chunk or update that
 * the replica wrote but did not mark and sync never reaches the forward passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models.h"
#include "test_fixtures.h"
#include "util.h"

#define NAME "digits_mlp"

static kernels_backend *backend; /* argv[1] opened; NULL: each model's own CPU backend */

typedef struct fx {
    Ps__ModelInfo *info;
    fixture_store *store;
    served_source src;
    models *m;
    model *ref; /* the same model opened from its directory */
    char err[512];
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->info = fixture_model_info(NAME, 1000, 1); /* several chunks per weight */
    f->store = fixture_store_create();
    fixture_store_put_model(f->store, f->info, 100);
    f->src = fixture_store_source(f->store);
    assert_int_equal(models_create(&(models_opts){.backend = backend}, &f->m), PS_STATUS_OK);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/" NAME,
             getenv("PS_MODELS_DIR") ? getenv("PS_MODELS_DIR") : "models");
    assert_int_equal(model_open_dir(dir, 1, NULL, &f->ref, f->err, sizeof f->err), PS_STATUS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    models_destroy(f->m);
    model_destroy(f->ref);
    fixture_store_destroy(f->store);
    ps__model_info__free_unpacked(f->info, NULL);
    free(f);
    return 0;
}

static void load(fx *f) {
    if (models_load(f->m, f->info, &f->src, f->err, sizeof f->err) != PS_STATUS_OK)
        fail_msg("load: %s", f->err);
}

/* Runs one input row through s; returns the 10 probabilities in out. */
static ps_status infer(served *s, float *out, served_infer_report *rep, char *err, size_t len) {
    static float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 16);
    model_input in = {.name = "pixels", .ndims = 2, .dims = {1, 64}, .data = x};
    model_output o = {.name = "probabilities", .buffer = out, .capacity = 10};
    return served_infer(s, &in, 1, &o, 1, rep, err, len);
}

static void test_load_matches_reference(void **state) {
    fx *f = *state;
    load(f);
    assert_true(models_ready(f->m)); /* nothing expected yet */
    served *s = models_acquire(f->m, NAME, 0);
    assert_non_null(s);
    assert_int_equal(served_version(s), 1);
    /* param_version: the sum of the 8 chunks' versions, each 100 in the store */
    assert_int_equal(served_param_version(s), 800);
    assert_true(served_current(s));
    float got[10], want[10];
    served_infer_report rep;
    assert_int_equal(infer(s, got, &rep, f->err, sizeof f->err), PS_STATUS_OK);
    assert_int_equal(rep.param_version, 800);
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 16);
    model_input in = {.name = "pixels", .ndims = 2, .dims = {1, 64}, .data = x};
    model_output o = {.name = "probabilities", .buffer = want, .capacity = 10};
    assert_int_equal(model_infer(f->ref, NULL, &in, 1, &o, 1, f->err, sizeof f->err), PS_STATUS_OK);
    assert_memory_equal(got, want, sizeof got);
    char names[64];
    models_names_list(f->m, names, sizeof names);
    assert_string_equal(names, NAME " v1");
    assert_null(models_acquire(f->m, NAME, 2));
    served_release(s);
    /* loading again is a no-op */
    assert_int_equal(fixture_store_pulls(f->store) > 0, 1);
    int pulls = fixture_store_pulls(f->store);
    load(f);
    assert_int_equal(fixture_store_pulls(f->store), pulls);
}

static void test_updates_by_version_rule(void **state) {
    fx *f = *state;
    load(f);
    served *s = models_acquire(f->m, NAME, 0);
    uint64_t key = ps_key_dense(NAME, 1, "fc2.bias", 0), v = 0;
    assert_true(served_chunk_version(s, key, &v));
    assert_int_equal(v, 100);
    float delta[10] = {0}, before[10], after[10];
    delta[3] = 5.0f;
    served_infer_report rep;
    assert_int_equal(infer(s, before, &rep, f->err, sizeof f->err), PS_STATUS_OK);
    uint8_t *buf = NULL;
    Ps__Update u = fixture_update(key, PS__PUSH_OP__PUSH_ADD, 100000, 100, delta, 10, &buf);
    models_update_apply(f->m, &u);
    models_update_apply(f->m, &u); /* a duplicate: skipped */
    free(buf);
    assert_true(served_chunk_version(s, key, &v));
    assert_int_equal(v, 100000);
    assert_int_equal(served_param_version(s), 800 - 100 + 100000);
    assert_int_equal(infer(s, after, &rep, f->err, sizeof f->err), PS_STATUS_OK);
    /* the reference with the same delta gives the same outputs */
    float *bias = NULL, want[10], x[64];
    size_t n = 0;
    assert_int_equal(model_param(f->ref, "fc2.bias", &bias, &n), PS_STATUS_OK);
    bias[3] += 5.0f;
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 16);
    model_input in = {.name = "pixels", .ndims = 2, .dims = {1, 64}, .data = x};
    model_output o = {.name = "probabilities", .buffer = want, .capacity = 10};
    assert_int_equal(model_infer(f->ref, NULL, &in, 1, &o, 1, f->err, sizeof f->err), PS_STATUS_OK);
    assert_memory_equal(after, want, sizeof want);
    assert_memory_not_equal(after, before, sizeof want);
    /* an update for a key of no model changes nothing */
    u = fixture_update(12345, PS__PUSH_OP__PUSH_ASSIGN, 200000, 0, delta, 10, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    assert_int_equal(served_param_version(s), 800 - 100 + 100000);
    served_release(s);
}

static void test_gap_is_pulled_not_added(void **state) {
    fx *f = *state;
    load(f);
    served *s = models_acquire(f->m, NAME, 0);
    uint64_t key = ps_key_dense(NAME, 1, "fc2.bias", 0), v = 0;
    size_t n = 0;
    float *bias = fixture_tensor_values(NAME, "fc2.bias", &n);
    float delta[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < 10; i++)
        bias[i] += 2.0f; /* the shard applied two ADDs; the replica saw only the second */
    fixture_store_put(f->store, key, bias, 10, 300);
    uint8_t *buf = NULL;
    Ps__Update u = fixture_update(key, PS__PUSH_OP__PUSH_ADD, 300, 200, delta, 10, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    assert_false(served_current(s));
    assert_true(served_chunk_version(s, key, &v));
    assert_int_equal(v, 100); /* not applied onto version 100 */
    size_t left = 99;
    assert_int_equal(models_stale_fix(f->m, &f->src, &left, f->err, sizeof f->err), PS_STATUS_OK);
    assert_int_equal(left, 0);
    assert_true(served_chunk_version(s, key, &v));
    assert_int_equal(v, 300);
    assert_true(served_current(s));
    free(bias);
    served_release(s);
}

static bool is_fc1(uint64_t key, void *arg) {
    const Ps__ModelInfo *info = arg;
    for (size_t i = 0; i < info->n_tensors; i++)
        if (strcmp(info->tensors[i]->name, "fc1.weight") == 0)
            for (uint32_t c = 0; c < info->tensors[i]->chunks; c++)
                if (ps_key_dense(NAME, 1, "fc1.weight", c) == key)
                    return true;
    return false;
}

static void test_param_version_monotone(void **state) {
    fx *f = *state;
    load(f);
    served *s = models_acquire(f->m, NAME, 0);
    /* a shard "restarts" and comes back holding older versions (what a restarted
     * shard with a counter from 1 would answer): re-pulled, param_version stays */
    fixture_store_put_model(f->store, f->info, 7);
    size_t marked = models_repull_mark(f->m, is_fc1, f->info);
    assert_int_equal(marked, 5); /* 64 x 64 floats in chunks of 1000 */
    assert_false(served_current(s));
    assert_int_equal(models_stale_fix(f->m, &f->src, NULL, f->err, sizeof f->err), PS_STATUS_OK);
    assert_true(served_current(s));
    assert_int_equal(served_param_version(s), 800); /* older versions never lower it */
    /* a failing re-pull leaves the marks for the next round */
    models_repull_mark(f->m, NULL, NULL);
    fixture_store_fail_next(f->store, 1);
    size_t left = 12345; /* the old replica_fix_stale wrote it on failure too */
    assert_int_equal(models_stale_fix(f->m, &f->src, &left, f->err, sizeof f->err),
                     PS_STATUS_UNAVAILABLE);
    assert_int_equal(left, 12345);
    uint64_t v = 777;
    assert_false(served_chunk_version(s, 42, &v));
    assert_int_equal(v, 777);
    assert_false(served_current(s));
    assert_int_equal(models_stale_fix(f->m, &f->src, NULL, f->err, sizeof f->err), PS_STATUS_OK);
    assert_true(served_current(s));
    served_release(s);
}

static void test_nonfinite_outputs_refused(void **state) {
    fx *f = *state;
    load(f);
    served *s = models_acquire(f->m, NAME, 0);
    uint64_t key = ps_key_dense(NAME, 1, "fc1.weight", 0);
    float huge[1000], good[1000];
    for (int i = 0; i < 1000; i++)
        huge[i] = 3e38f; /* finite weights whose products overflow */
    size_t n = 0;
    float *w = fixture_tensor_values(NAME, "fc1.weight", &n);
    memcpy(good, w, sizeof good);
    free(w);
    uint8_t *buf = NULL;
    Ps__Update u = fixture_update(key, PS__PUSH_OP__PUSH_ASSIGN, 500, 100, huge, 1000, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    float out[10];
    served_infer_report rep;
    assert_int_equal(infer(s, out, &rep, f->err, sizeof f->err), PS_STATUS_INTERNAL);
    assert_true(rep.streak_start);
    if (!strstr(f->err, "model digits_mlp version 1") || !strstr(f->err, "'probabilities'") ||
        !strstr(f->err, "non-finite"))
        fail_msg("message: %s", f->err);
    assert_int_equal(infer(s, out, &rep, f->err, sizeof f->err), PS_STATUS_INTERNAL);
    assert_false(rep.streak_start); /* once per streak */
    served_stats st;
    served_stats_get(s, &st);
    u = fixture_update(key, PS__PUSH_OP__PUSH_ASSIGN, 600, 500, good, 1000, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    assert_int_equal(infer(s, out, &rep, f->err, sizeof f->err), PS_STATUS_OK);
    assert_true(rep.streak_end);
    for (int i = 0; i < 10; i++)
        assert_true(isfinite(out[i]));
    /* bad and good answers alternating (a client sending overflowing inputs) are logged
     * at most once a minute: neither this streak's start nor its end */
    u = fixture_update(key, PS__PUSH_OP__PUSH_ASSIGN, 700, 600, huge, 1000, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    assert_int_equal(infer(s, out, &rep, f->err, sizeof f->err), PS_STATUS_INTERNAL);
    assert_false(rep.streak_start);
    u = fixture_update(key, PS__PUSH_OP__PUSH_ASSIGN, 800, 700, good, 1000, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    assert_int_equal(infer(s, out, &rep, f->err, sizeof f->err), PS_STATUS_OK);
    assert_false(rep.streak_end);
    served_release(s);
}

static void test_failed_load_unlists(void **state) {
    fx *f = *state;
    assert_true(fixture_store_remove(f->store, ps_key_dense(NAME, 1, "fc2.weight", 0)));
    const char *names[] = {NAME};
    uint64_t versions[] = {1};
    assert_int_equal(models_expect(f->m, 1, names, versions), PS_STATUS_OK);
    assert_false(models_ready(f->m));
    assert_int_equal(models_load(f->m, f->info, &f->src, f->err, sizeof f->err),
                     PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(f->err, "no chunk"));
    assert_null(models_acquire(f->m, NAME, 0));
    assert_false(models_ready(f->m));
    fixture_store_put_model(f->store, f->info, 100);
    load(f);
    assert_true(models_ready(f->m));
}

static void test_newer_version_retires_older(void **state) {
    fx *f = *state;
    load(f);
    served *old = models_acquire(f->m, NAME, 1);
    Ps__ModelInfo *v2 = fixture_model_info(NAME, 1000, 2);
    /* version 2 lives under its own keys: until it is uploaded it cannot load */
    assert_int_equal(models_load(f->m, v2, &f->src, f->err, sizeof f->err), PS_STATUS_NOT_FOUND);
    served *still = models_acquire(f->m, NAME, 1); /* and version 1 keeps serving */
    assert_non_null(still);
    served_release(still);
    fixture_store_put_model(f->store, v2, 100);
    assert_int_equal(models_load(f->m, v2, &f->src, f->err, sizeof f->err), PS_STATUS_OK);
    assert_null(models_acquire(f->m, NAME, 1));
    served *s = models_acquire(f->m, NAME, 0);
    assert_int_equal(served_version(s), 2);
    float out[10];
    assert_int_equal(infer(old, out, NULL, f->err, sizeof f->err), PS_STATUS_OK); /* still valid */
    served_release(old);
    served_release(s);
    ps__model_info__free_unpacked(v2, NULL);
}

/* The parameter-memory quota refuses a version before allocating anything for it; a
 * version switch needs room for both versions. digits_mlp holds 4810 floats. */
static void test_memory_quota(void **state) {
    fx *f = *state;
    const uint64_t bytes = 4810 * 4;
    models *small = NULL;
    assert_int_equal(
        models_create(&(models_opts){.max_bytes = bytes - 4, .backend = backend}, &small),
        PS_STATUS_OK);
    int pulls = fixture_store_pulls(f->store);
    assert_int_equal(models_load(small, f->info, &f->src, f->err, sizeof f->err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    if (!strstr(f->err, "--max-model-mb") || !strstr(f->err, NAME " version 1"))
        fail_msg("message: %s", f->err);
    assert_int_equal(fixture_store_pulls(f->store), pulls); /* nothing was pulled */
    assert_null(models_acquire(small, NAME, 0));
    models_destroy(small);

    models *exact = NULL;
    assert_int_equal(models_create(&(models_opts){.max_bytes = bytes, .backend = backend}, &exact),
                     PS_STATUS_OK);
    assert_int_equal(models_load(exact, f->info, &f->src, f->err, sizeof f->err), PS_STATUS_OK);
    /* version 2 beside version 1 does not fit: refused, version 1 keeps serving */
    f->info->version = 2;
    assert_int_equal(models_load(exact, f->info, &f->src, f->err, sizeof f->err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    f->info->version = 1;
    served *s = models_acquire(exact, NAME, 0);
    assert_non_null(s);
    assert_int_equal(served_version(s), 1);
    served_release(s);
    models_destroy(exact);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        char err[512] = "";
        kernels_backend_open_opts o = {.module_dir = getenv("PS_KERNELS_MODULE_DIR")};
        if (kernels_backend_open(argv[1], &o, &backend, err, sizeof err) != PS_STATUS_OK) {
            fprintf(stderr, "backend %s: %s\n", argv[1], err);
            return 1;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_matches_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_updates_by_version_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_is_pulled_not_added, setup, teardown),
        cmocka_unit_test_setup_teardown(test_param_version_monotone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_outputs_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_load_unlists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_version_retires_older, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_quota, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    kernels_backend_destroy(backend);
    return failed;
}
