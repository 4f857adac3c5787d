/* test_row_table.c: the storage of one sparse table (row_table.h): new rows hold their
 * deterministic initial values, lookups find every row through many rehashes (1M ids,
 * sequential and scattered), gather and scatter move rows plane by plane, limits,
 * removal (every other row still found with its values, numbers reused, nothing while
 * pinned) and compaction (the memory goes back, the rows keep their values). */
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
    /* only the missing ones are looked up again: the others are kept as given */
    uint64_t again[3] = {42, 7, 0}, again_h[3];
    uint32_t got[3] = {12345, ROW_TABLE_NONE, ROW_TABLE_NONE};
    for (int i = 0; i < 3; i++)
        again_h[i] = row_table_hash(3, again[i]);
    assert_int_equal(row_table_find_missing(t, 3, again, again_h, got), 1);
    assert_int_equal(got[0], 12345);
    assert_int_equal(got[1], ROW_TABLE_NONE);
    assert_int_equal(got[2], rows[1]);
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

/* The values a test row holds: weights id + j, state -(id + j), step id % 1000. */
static void row_values(uint64_t id, float *w, float *st, uint64_t *step) {
    for (uint32_t j = 0; j < 3; j++) {
        w[j] = (float)(id % 100000) + (float)j;
        st[j] = -w[j];
    }
    *step = id % 1000;
}

static void expect_rows(row_table *t, size_t n, const uint64_t *ids, bool held) {
    uint32_t *rows = malloc(n * sizeof *rows);
    assert_non_null(rows);
    find_ids(t, n, ids, rows, 5, held ? 0 : n);
    for (size_t i = 0; held && i < n; i++) {
        float w[3], st[3], want_w[3], want_st[3];
        uint64_t step, want_step;
        row_table_read(t, 1, &rows[i], w, st, &step);
        row_values(ids[i], want_w, want_st, &want_step);
        assert_memory_equal(w, want_w, sizeof w);
        assert_memory_equal(st, want_st, sizeof st);
        assert_int_equal(step, want_step);
        assert_true(rows[i] < row_table_count(t) * 2 + 64);
    }
    free(rows);
}

static void test_remove_and_compact(void **state) {
    (void)state;
    enum { N = 200000 };
    row_table *t = make_table(3, OPTIM_ADAGRAD, 5);
    uint64_t *ids = malloc(N * sizeof *ids), *hashes = malloc(N * sizeof *hashes);
    uint32_t *rows = malloc(N * sizeof *rows);
    assert_true(ids && hashes && rows);
    for (size_t i = 0; i < N; i++) {
        ids[i] = i * 0x9E3779B97F4A7C15ull; /* scattered over the index */
        hashes[i] = row_table_hash(5, ids[i]);
    }
    add_ids(t, N, ids, rows, 5);
    for (size_t i = 0; i < N; i++) {
        float w[3], st[3];
        uint64_t step;
        row_values(ids[i], w, st, &step);
        row_table_write(t, 1, &rows[i], w, st, &step);
    }
    /* adding rows and growing the index leave every found number valid */
    const uint64_t gen0 = row_table_generation(t);
    /* the odd ones go (named twice, and with ids the table never held) */
    size_t m = 0;
    uint64_t *gone = malloc((N / 2 + 2) * sizeof *gone), *gone_h = malloc((N / 2 + 2) * 8);
    assert_true(gone && gone_h);
    for (size_t i = 1; i < N; i += 2) {
        gone[m] = ids[i];
        gone_h[m++] = hashes[i];
    }
    gone[m] = ids[1];
    gone_h[m++] = hashes[1];
    gone[m] = 12345; /* never held */
    gone_h[m++] = row_table_hash(5, 12345);
    uint64_t removed = 0;
    assert_int_equal(row_table_pin(t), PS_STATUS_OK); /* not while pinned */
    assert_int_equal(row_table_remove(t, m, gone, gone_h, &removed), PS_STATUS_FAILED_PRECONDITION);
    assert_int_equal(row_table_compact(t, NULL), PS_STATUS_FAILED_PRECONDITION);
    assert_int_equal(removed, 0);
    row_table_unpin(t);
    assert_true(row_table_generation(t) == gen0); /* refused: nothing changed */
    assert_int_equal(row_table_remove(t, 1, &gone[m - 1], &gone_h[m - 1], &removed),
                     PS_STATUS_OK); /* an id never held: nothing changed */
    assert_true(removed == 0 && row_table_generation(t) == gen0);
    assert_int_equal(row_table_remove(t, m, gone, gone_h, &removed), PS_STATUS_OK);
    assert_int_equal(removed, N / 2);
    const uint64_t gen1 = row_table_generation(t); /* found numbers of the gone ids are stale */
    assert_true(gen1 != gen0);
    assert_int_equal(row_table_count(t), N / 2);
    uint64_t *kept = malloc(N / 2 * sizeof *kept);
    assert_non_null(kept);
    for (size_t i = 0; i < N / 2; i++)
        kept[i] = ids[2 * i];
    expect_rows(t, N / 2, kept, true);
    expect_rows(t, N / 2, gone, false);
    /* new rows take the numbers the removed ones left */
    uint64_t fresh[4] = {1, 2, 3, 4};
    uint32_t fresh_rows[4];
    add_ids(t, 4, fresh, fresh_rows, 5);
    for (int i = 0; i < 4; i++)
        assert_true(fresh_rows[i] < N);
    assert_true(row_table_generation(t) == gen1);
    assert_int_equal(row_table_count(t), N / 2 + 4);
    uint64_t fresh_h[4];
    for (int i = 0; i < 4; i++)
        fresh_h[i] = row_table_hash(5, fresh[i]);
    assert_int_equal(row_table_remove(t, 4, fresh, fresh_h, &removed), PS_STATUS_OK);
    assert_int_equal(removed, 4);
    /* compaction gives the slabs of the upper half back; every row keeps its values */
    uint64_t freed = 0;
    const uint64_t gen2 = row_table_generation(t);
    assert_int_equal(row_table_compact(t, &freed), PS_STATUS_OK);
    assert_true(freed > 0);
    assert_true(row_table_generation(t) != gen2); /* rows moved */
    expect_rows(t, N / 2, kept, true);
    uint32_t *found = malloc(N / 2 * sizeof *found);
    assert_non_null(found);
    find_ids(t, N / 2, kept, found, 5, 0);
    for (size_t i = 0; i < N / 2; i++)
        assert_true(found[i] < N / 2);   /* numbered below the count now */
    add_ids(t, 4, fresh, fresh_rows, 5); /* and it grows again from there */
    assert_int_equal(row_table_count(t), N / 2 + 4);
    expect_rows(t, N / 2, kept, true);
    free(found);
    free(kept);
    free(gone);
    free(gone_h);
    free(ids);
    free(hashes);
    free(rows);
    row_table_destroy(t);
}

/* A stride of odd length (dim 3, no state: 3 floats, padded to 4 before the step) keeps
 * floats and steps apart through every path that reads or moves records: write, read,
 * a pin's copy on write and its reads, removal and compaction. Steps near UINT64_MAX
 * would show in the floats if they overlapped (and the other way round). */
static void test_odd_stride_records(void **state) {
    (void)state;
    enum { N = 70000 }; /* past one slab */
    row_table *t = make_table(3, OPTIM_NONE, 5);
    assert_int_equal(row_table_row_bytes(t), (3 + 1) * 4 + 8 + ROW_TABLE_INDEX_BYTES_PER_ROW);
    uint64_t *ids = malloc(N * sizeof *ids), *steps = malloc(N * sizeof *steps);
    uint32_t *rows = malloc(N * sizeof *rows);
    float *w = malloc(3 * N * sizeof *w);
    assert_true(ids && steps && rows && w);
    for (size_t i = 0; i < N; i++) {
        ids[i] = i * 7919 + 1;
        steps[i] = UINT64_MAX - i;
        for (int j = 0; j < 3; j++)
            w[3 * i + j] = (float)i + 0.25f * (float)j;
    }
    add_ids(t, N, ids, rows, 5);
    row_table_write(t, N, rows, w, NULL, steps);
    /* a pin reads the rows as they were while the first half is written again */
    assert_int_equal(row_table_pin(t), PS_STATUS_OK);
    assert_int_equal(row_table_unshare(t, N / 2, rows), PS_STATUS_OK);
    float *w2 = malloc(3 * N * sizeof *w2);
    uint64_t *steps2 = malloc(N * sizeof *steps2);
    assert_true(w2 && steps2);
    for (size_t i = 0; i < 3 * N; i++)
        w2[i] = -w[i];
    for (size_t i = 0; i < N; i++)
        steps2[i] = i;
    row_table_write(t, N / 2, rows, w2, NULL, steps2);
    uint64_t cursor = 0, got_ids[256], got_steps[256];
    float got_w[3 * 256];
    size_t seen = 0;
    while (cursor < row_table_pin_slots(t)) {
        size_t n = row_table_pin_read(t, &cursor, 256, got_ids, got_steps, got_w, NULL);
        for (size_t k = 0; k < n; k++, seen++) {
            size_t i = (size_t)((got_ids[k] - 1) / 7919);
            assert_int_equal(got_steps[k], UINT64_MAX - i);
            assert_memory_equal(&got_w[3 * k], &w[3 * i], 3 * sizeof(float));
        }
    }
    assert_int_equal(seen, N);
    row_table_unpin(t);
    /* the written half reads as written, the other as before; then removal and
     * compaction move records, floats and steps together */
    uint64_t *gone = malloc(N / 2 * sizeof *gone), *gone_h = malloc(N / 2 * sizeof *gone_h);
    assert_true(gone && gone_h);
    for (size_t i = 0; i < N / 2; i++) {
        gone[i] = ids[2 * i];
        gone_h[i] = row_table_hash(5, gone[i]);
    }
    uint64_t removed = 0;
    assert_int_equal(row_table_remove(t, N / 2, gone, gone_h, &removed), PS_STATUS_OK);
    assert_int_equal(removed, N / 2);
    assert_int_equal(row_table_compact(t, NULL), PS_STATUS_OK);
    for (size_t i = 1; i < N; i += 2) {
        uint32_t r;
        float got[3];
        uint64_t step;
        find_ids(t, 1, &ids[i], &r, 5, 0);
        row_table_read(t, 1, &r, got, NULL, &step);
        const bool again = i < N / 2;
        assert_memory_equal(got, again ? &w2[3 * i] : &w[3 * i], sizeof got);
        assert_int_equal(step, again ? i : UINT64_MAX - i);
    }
    free(gone);
    free(gone_h);
    free(w2);
    free(steps2);
    free(w);
    free(rows);
    free(steps);
    free(ids);
    row_table_destroy(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rows),           cmocka_unit_test(test_growth),
        cmocka_unit_test(test_gather_scatter),     cmocka_unit_test(test_limits),
        cmocka_unit_test(test_remove_and_compact), cmocka_unit_test(test_odd_stride_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
