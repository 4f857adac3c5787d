/* test_workers.c: unit tests of the training workers' clocks (workers.h): the BSP/SSP
 * rule, joining at the slowest clock, dead workers released, bad clocks. Time is
 * passed in, so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "workers.h"

static workers *make(int64_t timeout_ms, size_t max) {
    workers_opts o = {.timeout_ms = timeout_ms, .max_workers = max};
    workers *w = NULL;
    assert_int_equal(workers_create(&o, &w), PS_STATUS_OK);
    return w;
}

static uint64_t join(workers *w, const char *model, int64_t now, uint64_t *ret_clock) {
    uint64_t id = 0, clock = 99;
    char err[256];
    assert_int_equal(workers_register(w, model, "t", now, &id, &clock, err, sizeof err),
                     PS_STATUS_OK);
    assert_true(id != 0);
    if (ret_clock)
        *ret_clock = clock;
    return id;
}

static void tick(workers *w, const char *model, uint64_t id, uint64_t clock, int64_t now) {
    char err[256];
    assert_int_equal(workers_clock(w, model, id, clock, now, err, sizeof err), PS_STATUS_OK);
}

static void test_bsp_and_ssp(void **state) {
    (void)state;
    workers *w = make(1000, 0);
    uint64_t a = join(w, "m", 0, NULL), b = join(w, "m", 0, NULL);
    assert_true(workers_ready(w, "m", 0, 0)); /* everyone at 0 */
    tick(w, "m", a, 1, 10);
    /* BSP: a at clock 1 waits for b to finish step 1 */
    assert_false(workers_ready(w, "m", 1, 0));
    /* SSP with staleness 1: a may run one step ahead */
    assert_true(workers_ready(w, "m", 1, 1));
    tick(w, "m", a, 2, 20);
    assert_false(workers_ready(w, "m", 2, 1));
    assert_true(workers_ready(w, "m", 2, 2));
    tick(w, "m", b, 1, 30);
    assert_true(workers_ready(w, "m", 2, 1));
    assert_false(workers_ready(w, "m", 2, 0));
    tick(w, "m", b, 2, 40);
    assert_true(workers_ready(w, "m", 2, 0));
    size_t live = 0;
    assert_int_equal(workers_min_clock(w, "m", &live), 2);
    assert_int_equal(live, 2);
    /* another model's workers are another group */
    assert_int_equal(workers_min_clock(w, "other", &live), UINT64_MAX);
    assert_int_equal(live, 0);
    assert_true(workers_ready(w, "other", 100, 0));
    workers_destroy(w);
}

static void test_join_at_slowest_and_leave(void **state) {
    (void)state;
    workers *w = make(1000, 0);
    uint64_t a = join(w, "m", 0, NULL), b = join(w, "m", 0, NULL);
    tick(w, "m", a, 5, 1);
    tick(w, "m", b, 3, 1);
    uint64_t clock = 0;
    uint64_t c = join(w, "m", 2, &clock);
    assert_int_equal(clock, 3); /* joining never holds anyone back */
    assert_true(c != a && c != b);
    assert_int_equal(workers_leave(w, "m", b), PS_STATUS_OK);
    assert_int_equal(workers_leave(w, "m", b), PS_STATUS_NOT_FOUND);
    assert_int_equal(workers_min_clock(w, "m", NULL), 3); /* c */
    tick(w, "m", c, 5, 3);
    assert_true(workers_ready(w, "m", 5, 0));
    workers_destroy(w);
}

static void test_dead_worker_releases_the_others(void **state) {
    (void)state;
    workers *w = make(1000, 0);
    uint64_t a = join(w, "m", 0, NULL), b = join(w, "m", 0, NULL);
    tick(w, "m", a, 3, 500);
    assert_false(workers_ready(w, "m", 3, 0));            /* b is at 0 */
    assert_int_equal(workers_expire(w, 999, NULL, 0), 0); /* b silent 999 ms: alive */
    char err[256];
    assert_int_equal(workers_touch(w, "m", a, 1400, err, sizeof err), PS_STATUS_OK);
    uint64_t dead[4] = {0};
    assert_int_equal(workers_expire(w, 1000, dead, 4), 1);
    assert_int_equal(dead[0], b);
    assert_true(workers_ready(w, "m", 3, 0));
    /* the dead worker is told to register again */
    assert_int_equal(workers_clock(w, "m", b, 1, 1001, err, sizeof err), PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "register again"));
    assert_int_equal(workers_touch(w, "m", b, 1001, err, sizeof err), PS_STATUS_NOT_FOUND);
    workers_destroy(w);
}

static void test_bad_calls(void **state) {
    (void)state;
    workers *w = make(1000, 2);
    char err[256];
    uint64_t id = 7, clock = 7;
    assert_int_equal(workers_register(w, "", "x", 0, &id, &clock, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(id, 7); /* untouched */
    uint64_t a = join(w, "m", 0, NULL);
    join(w, "m", 0, NULL);
    assert_int_equal(workers_register(w, "m", "x", 0, &id, &clock, err, sizeof err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    tick(w, "m", a, 4, 1);
    assert_int_equal(workers_clock(w, "m", a, 3, 2, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "cannot go back"));
    tick(w, "m", a, 4, 3); /* the same clock: a heartbeat */
    /* before, UINT64_MAX was taken, and then read as "no live worker": min_clock 0 */
    assert_int_equal(workers_clock(w, "m", a, UINT64_MAX, 3, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "is past the largest"));
    tick(w, "m", a, 5, 3); /* its clock stayed 4 */
    /* before, a newline in a name went into the log as it was */
    assert_int_equal(workers_register(w, "m", "w\nINFO forged", 0, &id, &clock, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "must be text"));
    assert_int_equal(workers_clock(w, "n", a, 5, 3, err, sizeof err), PS_STATUS_NOT_FOUND);
    assert_int_equal(workers_clock(w, "m", 12345, 5, 3, err, sizeof err), PS_STATUS_NOT_FOUND);
    workers_destroy(w);
    workers_destroy(NULL);
}

static void test_parked(void **state) {
    (void)state;
    workers *w = make(1000, 0);
    size_t live = 9;
    assert_true(workers_all_parked(w, "m", &live)); /* nobody: nobody pushes */
    assert_int_equal(live, 0);
    uint64_t a = join(w, "m", 0, NULL), b = join(w, "m", 0, NULL);
    assert_false(workers_all_parked(w, "m", &live));
    assert_int_equal(live, 2);
    assert_int_equal(workers_park(w, "m", a, true), PS_STATUS_OK);
    assert_false(workers_all_parked(w, "m", NULL));
    assert_int_equal(workers_park(w, "m", b, true), PS_STATUS_OK);
    assert_true(workers_all_parked(w, "m", NULL));
    assert_int_equal(workers_park(w, "m", b, false), PS_STATUS_OK);
    assert_false(workers_all_parked(w, "m", NULL));
    assert_int_equal(workers_leave(w, "m", b), PS_STATUS_OK); /* b leaves: a alone, parked */
    assert_true(workers_all_parked(w, "m", NULL));
    assert_int_equal(workers_park(w, "m", 999, true), PS_STATUS_NOT_FOUND);
    workers_destroy(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bsp_and_ssp),
        cmocka_unit_test(test_join_at_slowest_and_leave),
        cmocka_unit_test(test_dead_worker_releases_the_others),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_parked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
