/* test_row_table.c: the storage of one sparse table (row_table.h): new rows hold their
 * deterministic initial values, lookups find every row through many rehashes (1M ids,
 * sequential and scattered), gather and scatter move rows plane by plane, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "optimizer.h"
#include "row_table.h"

static row_table *make_table(uint32_t dim, optim_kind kind, uint64_t salt) {
    table_spec spec = {
        .dim = dim, .init = TABLE_INIT_NORMAL, .init_scale = 0.5f, .seed = 11, .optimizer = kind};
    row_table_opts opts = {.spec = &spec, .salt = salt};
    row_table *t = NULL;
    assert_int_equal(row_table_create(&opts, &t), PS_STATUS_OK);
    return t;
}

/* Adds ids that are absent (reserving room first); returns their rows. */
static void add_ids(row_table *t, size_t n, const uint64_t *ids, uint32_t *rows, uint64_t salt) {
    assert_int_equal(row_table_reserve(t, n), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++)
        rows[i] = row_table_add(t, ids[i], row_table_hash(salt, ids[i]));
}

static void find_ids(const row_table *t, size_t n, const uint64_t *ids, uint32_t *rows,
                     uint64_t salt, size_t want_missing) {
    uint64_t *hashes = malloc(n * sizeof *hashes);
    assert_non_null(hashes);
    for (size_t i = 0; i < n; i++)
        hashes[i] = row_table_hash(salt, ids[i]);
    assert_int_equal(row_table_find(t, n, ids, hashes, rows), want_missing);
    free(hashes);
}

static void test_new_rows(void **state) {
    (void)state;
    row_table *t = make_table(5, OPTIM_ADAGRAD, 3);
    assert_int_equal(row_table_slots(t), 1);
    assert_int_equal(row_table_row_bytes(t), 5 * 2 * 4 + 8 + ROW_TABLE_INDEX_BYTES_PER_ROW);
    uint64_t ids[3] = {42, 0, UINT64_MAX}, absent[2] = {7, 43};
    uint32_t rows[3], found[3];
    add_ids(t, 3, ids, rows, 3);
    assert_int_equal(row_table_count(t), 3);
    find_ids(t, 3, ids, found, 3, 0);
    assert_memory_equal(found, rows, sizeof rows);
    find_ids(t, 2, absent, found, 3, 2);
    assert_int_equal(found[0], ROW_TABLE_NONE);
    assert_int_equal(found[1], ROW_TABLE_NONE);

    float out[15], st[15], want[5];
    uint64_t steps[3] = {9, 9, 9};
    row_table_read(t, 3, rows, out, st, steps);
    for (int i = 0; i < 3; i++) {
        table_spec_init_row(row_table_spec(t), ids[i], want);
        assert_memory_equal(out + i * 5, want, sizeof want);
        for (int j = 0; j < 5; j++) /* Adagrad's default initial_accumulator */
            assert_true(st[i * 5 + j] == 0.0f);
        assert_int_equal(steps[i], 0);
    }
    row_table_destroy(t);
    row_table_destroy(NULL);
}

/* 1M ids, added in batches of growing size so the index doubles many times: every row
 * stays reachable and keeps its values. Sequential ids and ids far apart. */
static void test_growth(void **state) {
    (void)state;
    const size_t n = 1u << 20;
    for (int scattered = 0; scattered < 2; scattered++) {
        row_table *t = make_table(1, OPTIM_NONE, 99);
        uint64_t *ids = malloc(n * sizeof *ids);
        uint32_t *rows = malloc(n * sizeof *rows), *found = malloc(n * sizeof *found);
        float *out = malloc(n * sizeof *out);
        assert_true(ids && rows && found && out);
        for (size_t i = 0; i < n; i++)
            ids[i] = scattered ? i * 0x9e3779b97f4a7c15ull : i;
        for (size_t at = 0, batch = 1; at < n; at += batch, batch *= 2) {
            size_t m = n - at < batch ? n - at : batch;
            add_ids(t, m, ids + at, rows + at, 99);
        }
        assert_int_equal(row_table_count(t), n);
        find_ids(t, n, ids, found, 99, 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(found[i], i);
        row_table_read(t, n, found, out, NULL, NULL);
        for (size_t i = 0; i < n; i++) {
            float want;
            table_spec_init_row(row_table_spec(t), ids[i], &want);
            assert_true(out[i] == want);
        }
        for (size_t i = 0; i < n; i++) /* ids next to the present ones are absent */
            ids[i] = scattered ? ids[i] + 1 : ids[i] + n;
        find_ids(t, n, ids, found, 99, n);
        free(ids);
        free(rows);
        free(found);
        free(out);
        row_table_destroy(t);
    }
}

/* Gather lays rows out plane by plane (weights, then each state slot), taking the fresh
 * state for rows that never stepped; scatter writes them back and bumps steps. */
static void test_gather_scatter(void **state) {
    (void)state;
    row_table *t = make_table(2, OPTIM_ADAM, 5);
    uint64_t ids[3] = {10, 20, 30};
    uint32_t rows[3];
    add_ids(t, 3, ids, rows, 5);
    float in[18];
    for (int i = 0; i < 18; i++)
        in[i] = (float)i + 0.5f;
    row_table_scatter(t, 1, &rows[1], 3, in, true); /* row 20: one step */

    float fresh[4] = {-1, -2, -3, -4}, out[18];
    row_table_gather(t, 3, rows, 3, fresh, out);
    float w[6];
    row_table_read(t, 3, rows, w, NULL, NULL);
    assert_memory_equal(out, w, sizeof w);           /* plane 0: the weights */
    assert_true(out[6] == -1 && out[7] == -2);       /* m of row 10: fresh slot 0 */
    assert_true(out[8] == 2.5f && out[9] == 3.5f);   /* m of row 20: its own */
    assert_true(out[12] == -3 && out[13] == -4);     /* v of row 10: fresh slot 1 */
    assert_true(out[14] == 4.5f && out[15] == 5.5f); /* v of row 20 */

    row_table_scatter(t, 3, rows, 3, in, true);
    float st[12];
    uint64_t steps[3];
    row_table_read(t, 3, rows, w, st, steps);
    const float want_w[6] = {0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f};
    const float want_st[12] = {6.5f,  7.5f,  12.5f, 13.5f, 8.5f,  9.5f,
                               14.5f, 15.5f, 10.5f, 11.5f, 16.5f, 17.5f};
    assert_memory_equal(w, want_w, sizeof w);
    assert_memory_equal(st, want_st, sizeof st); /* per row: slot 0 then slot 1 */
    uint64_t want_steps[3] = {1, 2, 1};
    assert_memory_equal(steps, want_steps, sizeof steps);
    row_table_steps(t, 3, rows, steps);
    assert_memory_equal(steps, want_steps, sizeof steps);

    row_table_scatter(t, 3, rows, 1, in, false); /* weights only, no step */
    row_table_read(t, 3, rows, w, st, steps);
    assert_memory_equal(st, want_st, sizeof st);
    assert_memory_equal(steps, want_steps, sizeof steps);
    row_table_destroy(t);
}

static void test_limits(void **state) {
    (void)state;
    row_table *t = make_table(TABLE_MAX_DIM, OPTIM_FTRL, 1);
    assert_int_equal(row_table_reserve(t, (uint64_t)ROW_TABLE_MAX_ROWS + 1),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(row_table_count(t), 0);
    uint64_t id = 1;
    uint32_t row; /* the widest row works */
    add_ids(t, 1, &id, &row, 1);
    float *w = malloc(TABLE_MAX_DIM * sizeof *w), *st = malloc(2 * TABLE_MAX_DIM * sizeof *st);
    assert_true(w && st);
    row_table_read(t, 1, &row, w, st, NULL);
    for (uint32_t j = 0; j < 2 * TABLE_MAX_DIM; j++)
        assert_true(st[j] == 0.0f);
    free(w);
    free(st);
    row_table_destroy(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rows),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_gather_scatter),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
