/* test_loader.c: the loader retries failed loads with backoff and waits for its gate
 * (cmocka, no process; the shard is in memory).
 *
 * The old replica (serving/serve/serve.c) tried a model once per registry update: a
 * first load that failed (a chunk missing) was never tried again until the registry
 * changed. test_retries_until_the_data_is_there fails on that behaviour: the registry
 * is installed once, the chunk appears later, and the model must become ready. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "loader.h"
#include "test_fixtures.h"
#include "util.h"

#define NAME "digits_mlp"

typedef struct fx {
    Ps__ModelInfo *info;
    Ps__ModelsUpdate update;
    Ps__ModelInfo *list[1];
    fixture_store *store;
    fixture_log *log;
    models *m;
    atomic_bool gate_open;
} fx;

static bool gate(void *arg, int timeout_ms) {
    fx *f = arg;
    if (!atomic_load(&f->gate_open))
        fixture_sleep_ms(timeout_ms);
    return atomic_load(&f->gate_open);
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->info = fixture_model_info(NAME, 1000, 1);
    ps__models_update__init(&f->update);
    f->list[0] = f->info;
    f->update.n_models = 1;
    f->update.models = f->list;
    f->store = fixture_store_create();
    f->log = fixture_log_create();
    assert_int_equal(models_create(NULL, &f->m), PS_STATUS_OK);
    atomic_init(&f->gate_open, true);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    models_destroy(f->m);
    fixture_log_destroy(f->log);
    fixture_store_destroy(f->store);
    ps__model_info__free_unpacked(f->info, NULL);
    free(f);
    return 0;
}

static loader *start(fx *f, int min_ms, int max_ms) {
    loader_opts o = {.models = f->m,
                     .source = fixture_store_source(f->store),
                     .gate = gate,
                     .gate_arg = f,
                     .backoff_min_ms = min_ms,
                     .backoff_max_ms = max_ms,
                     .logger = fixture_log_logger(f->log)};
    loader *l = NULL;
    assert_int_equal(loader_create(&o, &l), PS_STATUS_OK);
    return l;
}

/* Polls cond until it holds or 10 s pass. */
static bool eventually(bool (*cond)(fx *), fx *f) {
    for (int i = 0; i < 2000; i++) {
        if (cond(f))
            return true;
        fixture_sleep_ms(5);
    }
    return false;
}

static bool ready(fx *f) {
    return models_ready(f->m);
}

static bool retried_3(fx *f) {
    return fixture_store_pulls(f->store) >= 3;
}

static void test_retries_until_the_data_is_there(void **state) {
    fx *f = *state;
    loader *l = start(f, 2, 20);
    assert_int_equal(loader_registry_install(l, &f->update), PS_STATUS_OK);
    assert_false(models_ready(f->m));
    assert_true(eventually(retried_3, f)); /* the store is empty: every try fails */
    assert_false(models_ready(f->m));
    assert_int_equal(loader_pending(l), 1);
    assert_int_equal(fixture_log_count(f->log, "cannot load model digits_mlp version 1"), 1);
    fixture_store_put_model(f->store, f->info, 100);
    assert_true(eventually(ready, f));
    assert_int_equal(loader_pending(l), 0);
    assert_int_equal(fixture_log_count(f->log, "failed attempts"), 1);
    /* the same registry again changes nothing */
    int pulls = fixture_store_pulls(f->store);
    assert_int_equal(loader_registry_install(l, &f->update), PS_STATUS_OK);
    fixture_sleep_ms(50);
    assert_int_equal(fixture_store_pulls(f->store), pulls);
    loader_destroy(l);
}

static bool retried_1(fx *f) {
    return fixture_store_pulls(f->store) >= 2;
}

static void test_backoff_grows(void **state) {
    fx *f = *state;
    loader *l = start(f, 40, 160);
    assert_int_equal(loader_registry_install(l, &f->update), PS_STATUS_OK);
    assert_true(eventually(retried_1, f)); /* failed once, retried once */
    int before = fixture_store_pulls(f->store);
    /* then tries after 80, 160, 160, ... ms: at most 6 more in 600 ms (a fixed 40 ms
     * retry would make 15) */
    fixture_sleep_ms(600);
    assert_true(fixture_store_pulls(f->store) - before <= 6);
    loader_destroy(l);
}

static void test_gate_holds_loading(void **state) {
    fx *f = *state;
    atomic_store(&f->gate_open, false);
    fixture_store_put_model(f->store, f->info, 100);
    loader *l = start(f, 2, 20);
    assert_int_equal(loader_registry_install(l, &f->update), PS_STATUS_OK);
    fixture_sleep_ms(250);
    assert_int_equal(fixture_store_pulls(f->store), 0);
    atomic_store(&f->gate_open, true);
    assert_true(eventually(ready, f));
    assert_int_equal(fixture_log_count(f->log, "cannot load"), 0);
    loader_destroy(l);
}

static void test_limits(void **state) {
    fx *f = *state;
    loader *l = start(f, 2, 20);
    Ps__ModelsUpdate big = f->update;
    big.n_models = LOADER_MAX_MODELS + 1;
    assert_int_equal(loader_registry_install(l, &big), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(loader_pending(l), 0);
    loader_destroy(l);
    loader_destroy(NULL);
    loader_opts bad = {0};
    assert_int_equal(loader_create(&bad, &l), PS_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retries_until_the_data_is_there, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_holds_loading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
