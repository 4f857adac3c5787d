/* test_quota.c: the shard's value-memory quota (quota.h): reservations fit whole or
 * change nothing, releases give bytes back, no limit still counts, no wrap-around past
 * 2^64, and threads racing for the last bytes never take more than the limit. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "quota.h"

static void test_limit(void **state) {
    (void)state;
    quota *q = NULL;
    assert_int_equal(quota_create(100, &q), PS_STATUS_OK);
    assert_int_equal(quota_max(q), 100);
    assert_true(quota_reserve(q, 60));
    assert_false(quota_reserve(q, 41)); /* would pass the limit: nothing changes */
    assert_int_equal(quota_used(q), 60);
    assert_true(quota_reserve(q, 40)); /* exactly the limit */
    assert_false(quota_reserve(q, 1));
    assert_true(quota_reserve(q, 0));
    assert_int_equal(quota_used(q), 100);
    quota_release(q, 30);
    assert_int_equal(quota_used(q), 70);
    assert_true(quota_reserve(q, 30));
    quota_release(q, 100);
    assert_int_equal(quota_used(q), 0);
    quota_destroy(q);
    quota_destroy(NULL);
}

static void test_no_limit_and_overflow(void **state) {
    (void)state;
    quota *q = NULL;
    assert_int_equal(quota_create(0, &q), PS_STATUS_OK);
    assert_int_equal(quota_max(q), 0);
    assert_true(quota_reserve(q, UINT64_MAX - 10)); /* no limit: counted all the same */
    assert_int_equal(quota_used(q), UINT64_MAX - 10);
    assert_false(quota_reserve(q, 11)); /* the count would wrap around */
    assert_true(quota_reserve(q, 10));
    assert_false(quota_reserve(q, 1));
    assert_int_equal(quota_used(q), UINT64_MAX);
    quota_release(q, UINT64_MAX);
    assert_int_equal(quota_used(q), 0);
    quota_destroy(q);

    assert_int_equal(quota_create(UINT64_MAX, &q), PS_STATUS_OK);
    assert_true(quota_reserve(q, 5));
    assert_false(quota_reserve(q, UINT64_MAX)); /* 5 + 2^64-1 wraps: refused, not 4 */
    assert_int_equal(quota_used(q), 5);
    quota_destroy(q);
}

#define THREADS 4
#define TRIES 20000
#define LIMIT 30011 /* less than THREADS * TRIES: the threads race for the last bytes */

typedef struct racer {
    quota *q;
    uint64_t won;     /* reservations that fit */
    uint64_t over;    /* times the count was seen past the limit */
    uint64_t churned; /* reserve-then-release pairs done */
} racer;

static void *race(void *arg) {
    racer *r = arg;
    for (int i = 0; i < TRIES; i++) {
        r->won += quota_reserve(r->q, 1);
        r->over += quota_used(r->q) > LIMIT;
    }
    return NULL;
}

static void *churn(void *arg) {
    racer *r = arg;
    for (int i = 0; i < TRIES; i++) {
        if (quota_reserve(r->q, 7)) {
            r->over += quota_used(r->q) > LIMIT;
            quota_release(r->q, 7);
            r->churned++;
        }
    }
    return NULL;
}

static void run_threads(void *(*fn)(void *), racer *r) {
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, fn, &r[i]), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
}

static void test_threads(void **state) {
    (void)state;
    quota *q = NULL;
    assert_int_equal(quota_create(LIMIT, &q), PS_STATUS_OK);
    racer r[THREADS] = {{0}};
    for (int i = 0; i < THREADS; i++)
        r[i].q = q;
    run_threads(race, r);
    uint64_t won = 0;
    for (int i = 0; i < THREADS; i++) {
        won += r[i].won;
        assert_int_equal(r[i].over, 0);
    }
    assert_int_equal(won, LIMIT); /* every byte taken once, none twice */
    assert_int_equal(quota_used(q), LIMIT);

    quota_release(q, 1000); /* room for some churn */
    for (int i = 0; i < THREADS; i++)
        r[i] = (racer){.q = q};
    run_threads(churn, r);
    uint64_t churned = 0;
    for (int i = 0; i < THREADS; i++) {
        churned += r[i].churned;
        assert_int_equal(r[i].over, 0);
    }
    assert_true(churned > 0);
    assert_int_equal(quota_used(q), LIMIT - 1000); /* every release matched its reserve */
    quota_destroy(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_no_limit_and_overflow),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
