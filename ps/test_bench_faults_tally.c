/* test_bench_faults_tally.c: the failover figures of bench_faults from made-up counts:
 * an acknowledged ADD missing from a chunk counts as lost, an extra one within the
 * unknown outcomes as applied-not-acknowledged, one beyond them as duplicated, a chunk
 * whose floats disagree as torn; the failover time ignores pushes that started before
 * the kill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bench_faults_tally.h"

/* Three chunks of 2, 3 and 1 floats holding 5, 7 and 4. */
static void fill(float *v) {
    const float init[6] = {5, 5, 7, 7, 7, 4};
    memcpy(v, init, sizeof init);
}

static const uint32_t lens[3] = {2, 3, 1};

static void test_exact_values_lose_nothing(void **state) {
    (void)state;
    float v[6];
    fill(v);
    const uint64_t acked[3] = {5, 7, 4}, unknown[3] = {0, 0, 0};
    bench_tally t;
    assert_int_equal(bench_tally_chunks(3, acked, unknown, lens, v, &t), PS_STATUS_OK);
    assert_int_equal(t.acked, 16);
    assert_int_equal(t.lost, 0);
    assert_int_equal(t.unacked, 0);
    assert_int_equal(t.duplicated, 0);
    assert_int_equal(t.torn, 0);
}

static void test_missing_ack_is_lost(void **state) {
    (void)state;
    float v[6];
    fill(v);
    const uint64_t acked[3] = {6, 7, 6}, unknown[3] = {0, 0, 0};
    bench_tally t;
    assert_int_equal(bench_tally_chunks(3, acked, unknown, lens, v, &t), PS_STATUS_OK);
    assert_int_equal(t.lost, 3); /* 1 from chunk 0, 2 from chunk 2 */
    assert_int_equal(t.unacked, 0);
}

static void test_extra_within_unknown_is_unacked_beyond_is_duplicated(void **state) {
    (void)state;
    float v[6];
    fill(v);
    const uint64_t acked[3] = {4, 5, 4}, unknown[3] = {1, 1, 0};
    bench_tally t;
    assert_int_equal(bench_tally_chunks(3, acked, unknown, lens, v, &t), PS_STATUS_OK);
    assert_int_equal(t.lost, 0);
    assert_int_equal(t.unacked, 2);    /* one per chunk 0 and 1 */
    assert_int_equal(t.duplicated, 1); /* chunk 1: 7 = 5 acked + 1 unknown + 1 more */
}

static void test_disagreeing_or_fractional_chunk_is_torn(void **state) {
    (void)state;
    float v[6];
    fill(v);
    v[4] = 6;   /* chunk 1: 7 7 6 */
    v[5] = 3.5; /* chunk 2: not a count of ADDs */
    const uint64_t acked[3] = {5, 7, 4}, unknown[3] = {0, 0, 0};
    bench_tally t;
    assert_int_equal(bench_tally_chunks(3, acked, unknown, lens, v, &t), PS_STATUS_OK);
    assert_int_equal(t.torn, 2);
    assert_int_equal(t.lost, 4); /* chunk 2 reads as 0 */
}

static void test_empty_chunk_refused(void **state) {
    (void)state;
    float v[1] = {0};
    const uint32_t zero[1] = {0};
    const uint64_t acked[1] = {0}, unknown[1] = {0};
    bench_tally t = {.acked = 99};
    assert_int_equal(bench_tally_chunks(1, acked, unknown, zero, v, &t),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(t.acked, 99); /* untouched on failure */
}

static void test_failover_ignores_pushes_started_before_the_kill(void **state) {
    (void)state;
    const bench_push_record r[] = {
        {.start_us = 100, .end_us = 110, .acked = true},
        {.start_us = 190, .end_us = 3400, .acked = true}, /* in flight at the kill */
        {.start_us = 3400, .end_us = 3500, .acked = false},
        {.start_us = 3500, .end_us = 3600, .acked = true},
        {.start_us = 3600, .end_us = 3610, .acked = true},
    };
    int64_t us = -1;
    assert_true(bench_tally_failover_us(r, 5, 200, &us));
    assert_int_equal(us, 3400);
    assert_int_equal(bench_tally_acked_after(r, 5, 200), 2);
    us = -1;
    assert_false(bench_tally_failover_us(r, 5, 4000, &us));
    assert_int_equal(us, -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_values_lose_nothing),
        cmocka_unit_test(test_missing_ack_is_lost),
        cmocka_unit_test(test_extra_within_unknown_is_unacked_beyond_is_duplicated),
        cmocka_unit_test(test_disagreeing_or_fractional_chunk_is_torn),
        cmocka_unit_test(test_empty_chunk_refused),
        cmocka_unit_test(test_failover_ignores_pushes_started_before_the_kill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
