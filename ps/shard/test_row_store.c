/* test_row_store.c: the shard's sparse tables (row_store.h): rows made on first touch
 * and pulled with repeats, specs, bad requests, the quota, 1M rows, figures,
 * max_tables. Pushes are tested in test_row_push.c. No process is started. */
#include "test_row_store.h"

static void test_first_touch(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t ids[4] = {3, 1000000007, 3, 0}, created = 0, steps[4];
    float out[12], again[12], st[12], want[3];
    assert_int_equal(pull(rs, "t", &SPEC, 4, ids, out, st, steps, &created), PS_STATUS_OK);
    assert_int_equal(created, 3); /* id 3 twice: one row */
    for (int i = 0; i < 4; i++) {
        table_spec_init_row(&SPEC, ids[i], want);
        assert_memory_equal(out + 3 * i, want, sizeof want);
        assert_int_equal(steps[i], 0);
        for (int j = 0; j < 3; j++)
            assert_true(st[3 * i + j] == 0.0f); /* Adagrad's default accumulator */
    }
    assert_int_equal(pull(rs, "t", &SPEC, 4, ids, again, NULL, NULL, &created), PS_STATUS_OK);
    assert_int_equal(created, 0);
    assert_memory_equal(again, out, sizeof out);
    assert_int_equal(rows_of(rs), 3);
    row_store_destroy(rs);
    row_store_destroy(NULL);
}

static void test_spec_mismatch(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t id = 1, created = 77;
    float out[4] = {0};
    assert_int_equal(pull(rs, "t", &SPEC, 1, &id, out, NULL, NULL, NULL), PS_STATUS_OK);
    table_spec other = SPEC;
    other.dim = 4;
    assert_int_equal(pull(rs, "t", &other, 1, &id, out, NULL, NULL, &created),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "m/t"));
    assert_non_null(strstr(err, "dim 3"));
    assert_non_null(strstr(err, "dim 4"));
    assert_int_equal(created, 77); /* untouched on failure */
    other = SPEC;
    other.seed = 6;
    assert_int_equal(push(rs, "t", &other, ROW_OP_ADD, NULL, 1, &id, out, false, NULL, NULL),
                     PS_STATUS_FAILED_PRECONDITION);
    other = SPEC;
    other.optimizer = OPTIM_ADAM;
    assert_int_equal(pull(rs, "t", &other, 1, &id, out, NULL, NULL, NULL),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "adagrad"));
    other = SPEC;
    other.init_scale = 0.2f;
    assert_int_equal(pull(rs, "t", &other, 1, &id, out, NULL, NULL, NULL),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_int_equal(rows_of(rs), 1);
    row_store_destroy(rs);
}

static void test_bad_requests(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t ids[2] = {1, 2}, created = 77;
    float vals[6] = {0};
    char long_name[ROW_STORE_MAX_NAME_BYTES + 2];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    assert_int_equal(pull(rs, "", &SPEC, 1, ids, vals, NULL, NULL, &created),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(pull(rs, long_name, &SPEC, 1, ids, vals, NULL, NULL, &created),
                     PS_STATUS_INVALID_ARGUMENT);
    long_name[ROW_STORE_MAX_NAME_BYTES] = 0; /* 255 bytes: fine */
    assert_int_equal(pull(rs, long_name, &SPEC, 1, ids, vals, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(
        row_store_pull(rs, NULL, "t", &SPEC, 1, ids, vals, NULL, NULL, NULL, err, sizeof err),
        PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(pull(rs, "t", NULL, 1, ids, vals, NULL, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    table_spec bad = SPEC;
    bad.dim = 0;
    assert_int_equal(pull(rs, "t", &bad, 1, ids, vals, NULL, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(
        pull(rs, "t", &SPEC, SHARD_MAX_KEYS_PER_REQUEST + 1, ids, vals, NULL, NULL, NULL),
        PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "SHARD_MAX_KEYS_PER_REQUEST"));
    assert_int_equal(push(rs, "t", &SPEC, (row_op)7, NULL, 2, ids, vals, false, &created, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_OPTIMIZE, NULL, 2, ids, vals, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    optim_spec opt;
    optim_spec_defaults(OPTIM_ADAGRAD, &opt);
    opt.lr = -1;
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_OPTIMIZE, &opt, 2, ids, vals, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "lr"));
    optim_spec_defaults(OPTIM_ADAM, &opt);
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_OPTIMIZE, &opt, 2, ids, vals, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "adam"));
    row_push p = {.model = "m",
                  .table = "t",
                  .spec = &SPEC,
                  .op = ROW_OP_ADD,
                  .n = 2,
                  .ids = ids,
                  .values = (const uint8_t *)vals,
                  .values_len = 2 * 3 * 4 - 4};
    assert_int_equal(row_store_push(rs, &p, &created, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "value bytes"));
    assert_int_equal(created, 77);
    assert_int_equal(row_store_stats(rs, NULL, 0), 1); /* only the 255-byte name's table */
    assert_int_equal(rows_of(rs), 1);
    row_store_destroy(rs);
}

static void test_quota(void **state) {
    (void)state;
    quota *q = NULL;
    assert_int_equal(quota_create(11 * SPEC_ROW_BYTES, &q), PS_STATUS_OK);
    row_store *rs = make_store(q, 0);
    uint64_t ids[12], created = 77;
    float out[36], vals[36] = {0};
    for (int i = 0; i < 12; i++)
        ids[i] = (uint64_t)i * 1000;
    assert_int_equal(pull(rs, "t", &SPEC, 10, ids, out, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(quota_used(q), 10 * SPEC_ROW_BYTES);
    assert_int_equal(pull(rs, "t", &SPEC, 12, ids, out, NULL, NULL, &created),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "shard-t holds 640 of its 704 bytes (--max-bytes)"));
    assert_int_equal(created, 77);
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_ADD, NULL, 12, ids, vals, false, NULL, NULL),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(rows_of(rs), 10);
    assert_int_equal(quota_used(q), 10 * SPEC_ROW_BYTES);
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_ADD, NULL, 10, ids, vals, false, NULL, NULL),
                     PS_STATUS_OK);                 /* present rows need nothing more */
    uint64_t twice[3] = {ids[10], ids[10], ids[0]}; /* one new row: fits */
    assert_int_equal(pull(rs, "t", &SPEC, 3, twice, out, NULL, NULL, &created), PS_STATUS_OK);
    assert_int_equal(created, 1);
    assert_int_equal(quota_used(q), 11 * SPEC_ROW_BYTES);
    row_table_stats s;
    assert_int_equal(row_store_stats(rs, &s, 1), 1);
    assert_int_equal(s.bytes, 11 * SPEC_ROW_BYTES);
    row_store_destroy(rs);
    assert_int_equal(quota_used(q), 0);
    quota_destroy(q);
}

/* 1M rows, made by pulls in the largest batches a request may carry (the table grows
 * through many rehashes), then all read back, added to, and read again. */
static void test_million_rows(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    table_spec one = {
        .dim = 1, .init = TABLE_INIT_UNIFORM, .init_scale = 1, .seed = 3, .optimizer = OPTIM_NONE};
    const size_t n = 1u << 20, batch = SHARD_MAX_KEYS_PER_REQUEST;
    uint64_t *ids = malloc(n * sizeof *ids), created;
    float *out = malloc(n * sizeof *out), *ones = malloc(batch * sizeof *ones);
    assert_true(ids && out && ones);
    for (size_t i = 0; i < n; i++)
        ids[i] = i * 7919 + 13;
    for (size_t i = 0; i < batch; i++)
        ones[i] = 1;
    for (int round = 0; round < 3; round++) {
        for (size_t at = 0; at < n; at += batch) {
            assert_int_equal(pull(rs, "t", &one, batch, ids + at, out + at, NULL, NULL, &created),
                             PS_STATUS_OK);
            assert_int_equal(created, round == 0 ? batch : 0);
        }
        for (size_t i = 0; i < n; i++) {
            float want;
            table_spec_init_row(&one, ids[i], &want);
            assert_true(out[i] == (round == 2 ? want + 1 : want));
        }
        for (size_t at = 0; round == 1 && at < n; at += batch)
            assert_int_equal(
                push(rs, "t", &one, ROW_OP_ADD, NULL, batch, ids + at, ones, false, NULL, NULL),
                PS_STATUS_OK);
    }
    assert_int_equal(rows_of(rs), n);
    free(ids);
    free(out);
    free(ones);
    row_store_destroy(rs);
}

static void test_stats(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    table_spec one = {.dim = 1, .optimizer = OPTIM_NONE};
    uint64_t ids[2] = {1, 2};
    float out[6];
    assert_int_equal(pull(rs, "a", &SPEC, 2, ids, out, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(
        row_store_pull(rs, "n", "a", &one, 1, ids, out, NULL, NULL, NULL, err, sizeof err),
        PS_STATUS_OK);
    row_table_stats s[3];
    assert_int_equal(row_store_stats(rs, s, 1), 2); /* fills one, says two */
    assert_int_equal(row_store_stats(rs, s, 3), 2);
    assert_string_equal(s[0].model, "m");
    assert_string_equal(s[0].table, "a");
    assert_int_equal(s[0].spec.dim, 3);
    assert_int_equal(s[0].rows, 2);
    assert_int_equal(s[0].bytes, 2 * SPEC_ROW_BYTES);
    assert_string_equal(s[1].model, "n");
    assert_int_equal(s[1].rows, 1);
    assert_int_equal(s[1].bytes, 4 + 4 + 8 + 32); /* an odd stride is padded to 8 bytes */
    uint64_t rows, bytes;
    row_store_totals(rs, &rows, &bytes);
    assert_int_equal(rows, 3);
    assert_int_equal(bytes, 2 * SPEC_ROW_BYTES + 48);
    row_store_destroy(rs);
}

static void test_max_tables(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 2);
    uint64_t id = 1;
    float out[3];
    assert_int_equal(pull(rs, "a", &SPEC, 1, &id, out, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(pull(rs, "b", &SPEC, 1, &id, out, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(pull(rs, "c", &SPEC, 1, &id, out, NULL, NULL, NULL),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "max_tables"));
    assert_int_equal(pull(rs, "a", &SPEC, 1, &id, out, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(row_store_stats(rs, NULL, 0), 2);
    row_store_destroy(rs);
}

/* A journal for removals that records what it was asked, or refuses. */
typedef struct fake_journal {
    size_t calls, n;
    bool refuse;
} fake_journal;

static ps_status fake_remove(void *arg, const char *model, const char *table, size_t n,
                             const uint64_t *ids, uint64_t *ret_lsn, char *e, size_t e_len) {
    fake_journal *j = arg;
    (void)model, (void)table, (void)ids;
    if (j->refuse) {
        snprintf(e, e_len, "refused");
        return PS_STATUS_IO;
    }
    j->calls++;
    j->n = n;
    *ret_lsn = 42;
    return PS_STATUS_OK;
}

/* Removal: journaled first (a refusal removes nothing), the quota given back, other
 * rows untouched, a table that does not exist is nothing to do. */
static void test_remove(void **state) {
    (void)state;
    quota *q = NULL;
    assert_int_equal(quota_create(100 * SPEC_ROW_BYTES, &q), PS_STATUS_OK);
    row_store *rs = make_store(q, 0);
    uint64_t ids[10];
    float vals[30];
    for (int i = 0; i < 10; i++)
        ids[i] = 1000 + (uint64_t)i;
    assert_int_equal(pull(rs, "t", &SPEC, 10, ids, vals, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(quota_used(q), 10 * SPEC_ROW_BYTES);
    fake_journal j = {.refuse = true};
    row_journal rj = {.push = NULL, .remove = fake_remove, .arg = &j};
    row_store_set_journal(rs, &rj);
    uint64_t removed = 9, lsn = 9;
    assert_int_equal(row_store_remove(rs, "m", "t", 4, ids, &removed, &lsn, err, sizeof err),
                     PS_STATUS_IO);
    assert_int_equal(removed, 0);
    assert_int_equal(rows_of(rs), 10);
    j.refuse = false;
    const uint64_t gone[] = {ids[0], ids[2], 77 /* never held */};
    assert_int_equal(row_store_remove(rs, "m", "t", 3, gone, &removed, &lsn, err, sizeof err),
                     PS_STATUS_OK);
    assert_int_equal(removed, 2);
    assert_int_equal(lsn, 42);
    assert_int_equal(j.calls, 1);
    assert_int_equal(j.n, 3);
    assert_int_equal(rows_of(rs), 8);
    assert_int_equal(quota_used(q), 8 * SPEC_ROW_BYTES);
    assert_rows(rs, "t", &SPEC, 1, &ids[1], &vals[3]);
    assert_int_equal(row_store_remove(rs, "m", "nope", 3, gone, &removed, NULL, err, sizeof err),
                     PS_STATUS_OK);
    assert_int_equal(removed, 0);
    row_store_set_journal(rs, NULL);
    row_store_destroy(rs);
    assert_int_equal(quota_used(q), 0);
    quota_destroy(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_touch),  cmocka_unit_test(test_spec_mismatch),
        cmocka_unit_test(test_bad_requests), cmocka_unit_test(test_quota),
        cmocka_unit_test(test_million_rows), cmocka_unit_test(test_stats),
        cmocka_unit_test(test_max_tables),   cmocka_unit_test(test_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
