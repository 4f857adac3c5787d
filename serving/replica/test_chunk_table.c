/* test_chunk_table.c: the update rule, stale bookkeeping, re-pull marks and the
 * monotone param_version of chunk_table (cmocka, no process).
 *
 * What the old code (serving/serve/replica.c) got wrong and these tests pin down: it
 * applied an ADD whenever version == held + 1, whatever the chunk's version before
 * that ADD; after a shard restart (versions 1, 2, ... again) it applied deltas onto
 * values of another incarnation (test_add_needs_prev_version) or ignored the restarted
 * shard's updates; its param_version was a sum of versions that could go backwards
 * (test_version_sum_is_monotone). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "chunk_table.h"

static chunk_table *table3(void) {
    chunk_table *t = NULL;
    assert_int_equal(chunk_table_create(3, &t), PS_STATUS_OK);
    for (uint64_t k = 1; k <= 3; k++) {
        chunk_table_entry e = {
            .key = k * 1000003, .param = 0, .offset = (uint32_t)(k * 4), .len = 4};
        assert_int_equal(chunk_table_add(t, &e), PS_STATUS_OK);
    }
    return t;
}

static void test_create_add_find(void **state) {
    (void)state;
    chunk_table *t = NULL;
    assert_int_equal(chunk_table_create(0, &t), PS_STATUS_INVALID_ARGUMENT);
    t = table3();
    chunk_table_entry dup = {.key = 1000003, .len = 4};
    assert_int_equal(chunk_table_add(t, &dup), PS_STATUS_ALREADY_EXISTS);
    chunk_table_entry more = {.key = 77, .len = 4};
    assert_int_equal(chunk_table_add(t, &more), PS_STATUS_RESOURCE_EXHAUSTED);
    size_t i = 99;
    assert_true(chunk_table_find(t, 2000006, &i));
    assert_int_equal(i, 1);
    assert_int_equal(chunk_table_at(t, 1)->offset, 8);
    assert_false(chunk_table_find(t, 5, &i));
    assert_int_equal(chunk_table_count(t), 3);
    assert_false(chunk_table_filled(t));
    chunk_table_destroy(t);
    chunk_table_destroy(NULL);
}

static void test_update_rule(void **state) {
    (void)state;
    chunk_table *t = table3();
    /* not filled yet: ASSIGN carries every value, ADD cannot apply */
    assert_int_equal(chunk_table_decide(t, 0, false, 50, 0, 4), CHUNK_TABLE_ASSIGN);
    assert_int_equal(chunk_table_decide(t, 0, true, 50, 0, 4), CHUNK_TABLE_STALE);
    chunk_table_set_pulled(t, 0, 100, chunk_table_generation(t));
    assert_int_equal(chunk_table_held(t, 0), 100);
    /* held >= version: skip */
    assert_int_equal(chunk_table_decide(t, 0, true, 100, 99, 4), CHUNK_TABLE_SKIP);
    assert_int_equal(chunk_table_decide(t, 0, false, 90, 0, 4), CHUNK_TABLE_SKIP);
    /* ADD onto exactly the version held, even when versions jump (shard seq numbers) */
    assert_int_equal(chunk_table_decide(t, 0, true, 5000, 100, 4), CHUNK_TABLE_ADD);
    /* ASSIGN whenever newer */
    assert_int_equal(chunk_table_decide(t, 0, false, 5000, 4000, 4), CHUNK_TABLE_ASSIGN);
    /* a length that does not match the chunk: stale, never reshaped */
    assert_int_equal(chunk_table_decide(t, 0, false, 5000, 100, 3), CHUNK_TABLE_STALE);
    assert_int_equal(chunk_table_decide(t, 0, true, 5000, 100, 5), CHUNK_TABLE_STALE);
    chunk_table_destroy(t);
}

static void test_add_needs_prev_version(void **state) {
    (void)state;
    chunk_table *t = table3();
    chunk_table_set_pulled(t, 1, 5, chunk_table_generation(t));
    /* the old rule applied this (version == held + 1); its delta was computed on
     * another value (prev_version 3), so it must be pulled instead */
    assert_int_equal(chunk_table_decide(t, 1, true, 6, 3, 4), CHUNK_TABLE_STALE);
    chunk_table_set_wanted(t, 1, 6);
    assert_true(chunk_table_is_stale(t, 1));
    assert_int_equal(chunk_table_stale_count(t), 1);
    /* the pull brings version 6: caught up */
    assert_true(chunk_table_set_pulled(t, 1, 6, chunk_table_generation(t)));
    assert_false(chunk_table_is_stale(t, 1));
    assert_int_equal(chunk_table_stale_count(t), 0);
    chunk_table_destroy(t);
}

static void test_applied_clears_wanted(void **state) {
    (void)state;
    chunk_table *t = table3();
    chunk_table_set_pulled(t, 2, 10, 0);
    chunk_table_set_wanted(t, 2, 12); /* an ADD at 12 onto 11 came first */
    assert_true(chunk_table_is_stale(t, 2));
    chunk_table_set_applied(t, 2, 11);
    assert_true(chunk_table_is_stale(t, 2)); /* still behind 12 */
    chunk_table_set_applied(t, 2, 12);
    assert_false(chunk_table_is_stale(t, 2));
    size_t idx[3];
    assert_int_equal(chunk_table_stale_list(t, idx, 3), 0);
    chunk_table_destroy(t);
}

static bool only_first(uint64_t key, void *arg) {
    (void)arg;
    return key == 1000003;
}

static void test_repull_marks_and_generations(void **state) {
    (void)state;
    chunk_table *t = table3();
    for (size_t i = 0; i < 3; i++)
        chunk_table_set_pulled(t, i, 7, 0);
    assert_true(chunk_table_filled(t));
    assert_int_equal(chunk_table_repull_mark(t, only_first, NULL), 1);
    assert_int_equal(chunk_table_stale_count(t), 1);
    size_t idx[3];
    assert_int_equal(chunk_table_stale_list(t, idx, 3), 1);
    assert_int_equal(idx[0], 0);
    /* a pull that started before a newer mark does not clear it */
    uint64_t gen = chunk_table_generation(t);
    assert_int_equal(chunk_table_repull_mark(t, NULL, NULL), 3);
    assert_false(chunk_table_set_pulled(t, 0, 7, gen)); /* same version: nothing to copy */
    assert_true(chunk_table_is_stale(t, 0));
    assert_int_equal(chunk_table_stale_count(t), 3);
    gen = chunk_table_generation(t);
    for (size_t i = 0; i < 3; i++)
        chunk_table_set_pulled(t, i, 7, gen);
    assert_int_equal(chunk_table_stale_count(t), 0);
    chunk_table_destroy(t);
}

static void test_version_sum_is_monotone(void **state) {
    (void)state;
    chunk_table *t = table3();
    chunk_table_set_pulled(t, 0, 300, 0);
    chunk_table_set_pulled(t, 1, 200, 0);
    assert_int_equal(chunk_table_version_sum(t), 500);
    /* an older pull result never lowers what is held or reported */
    assert_false(chunk_table_set_pulled(t, 0, 100, 0));
    assert_int_equal(chunk_table_held(t, 0), 300);
    assert_int_equal(chunk_table_version_sum(t), 500);
    /* an update to a chunk held below the maximum still raises it */
    chunk_table_set_applied(t, 1, 250);
    assert_int_equal(chunk_table_version_sum(t), 550);
    chunk_table_set_applied(t, 2, 400);
    assert_int_equal(chunk_table_version_sum(t), 950);
    chunk_table_destroy(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_add_find),
        cmocka_unit_test(test_update_rule),
        cmocka_unit_test(test_add_needs_prev_version),
        cmocka_unit_test(test_applied_clears_wanted),
        cmocka_unit_test(test_repull_marks_and_generations),
        cmocka_unit_test(test_version_sum_is_monotone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
