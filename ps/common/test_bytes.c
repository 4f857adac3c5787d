/* test_bytes.c: the piece cursor (bytes.h) reads bytes as if they were one run,
 * across pieces of any size, empty ones included, and says when they run out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bytes.h"

static void test_take_across_pieces(void **state) {
    (void)state;
    uint8_t all[100];
    for (size_t i = 0; i < sizeof all; i++)
        all[i] = (uint8_t)(i * 7 + 1);
    const ps_bytes pieces[] = {
        {all, 3}, {all + 3, 0}, {all + 3, 50}, {all + 53, 1}, {all + 54, 46}};
    const size_t reads[] = {1, 2, 5, 44, 0, 30, 18};
    ps_bytes_cursor c = {pieces, 5, 0, 0};
    size_t at = 0;
    for (size_t r = 0; r < sizeof reads / sizeof *reads; r++) {
        uint8_t got[64];
        assert_true(ps_bytes_take(&c, got, reads[r]));
        assert_memory_equal(got, all + at, reads[r]);
        at += reads[r];
    }
    assert_int_equal(at, 100);
    const uint8_t *p = NULL;
    assert_int_equal(ps_bytes_next(&c, 10, &p), 0); /* at the end */
    uint8_t one;
    assert_false(ps_bytes_take(&c, &one, 1));
}

static void test_next_runs_and_skips(void **state) {
    (void)state;
    uint8_t all[20] = {0};
    const ps_bytes pieces[] = {{all, 8}, {all + 8, 12}};
    ps_bytes_cursor c = {pieces, 2, 0, 0};
    const uint8_t *p = NULL;
    assert_int_equal(ps_bytes_next(&c, 5, &p), 5); /* at most max */
    assert_ptr_equal(p, all);
    assert_int_equal(ps_bytes_next(&c, 100, &p), 3); /* never past a piece */
    assert_ptr_equal(p, all + 5);
    assert_true(ps_bytes_take(&c, NULL, 10)); /* skipped */
    assert_int_equal(ps_bytes_next(&c, 100, &p), 2);
    assert_ptr_equal(p, all + 18);
    ps_bytes_cursor short_one = {pieces, 2, 0, 0};
    uint8_t big[32];
    assert_false(ps_bytes_take(&short_one, big, 21)); /* 20 there: a partial copy */
}

/* ps_bytes_runs: the pieces when there are some, else the one run. */
static void test_runs_of_pieces_or_one(void **state) {
    (void)state;
    const uint8_t all[6] = {1, 2, 3, 4, 5, 6};
    const ps_bytes pieces[2] = {{all, 2}, {all + 2, 4}};
    ps_bytes one;
    uint8_t got[6];
    ps_bytes_cursor c = ps_bytes_runs(pieces, 2, NULL, 6, &one);
    assert_true(ps_bytes_take(&c, got, 6));
    assert_memory_equal(got, all, 6);
    c = ps_bytes_runs(NULL, 0, all + 1, 5, &one);
    assert_true(ps_bytes_take(&c, got, 5));
    assert_memory_equal(got, all + 1, 5);
    assert_false(ps_bytes_take(&c, got, 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_across_pieces),
        cmocka_unit_test(test_next_runs_and_skips),
        cmocka_unit_test(test_runs_of_pieces_or_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
