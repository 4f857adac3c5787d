/* test_store.c: the chunk store's rules: versions are update seqs, every update goes
 * to the log with its previous version, and a refused push changes nothing: an ASSIGN
 * of another length (issue 6 D5: the old shard reshaped the chunk), an ADD whose result
 * overflows (D4: the old shard stored inf), the quota (D9), and the checks that need no
 * state (lengths, their total, NaN, duplicate keys, long names, key counts). Deletes
 * are in test_store_delete.c. */
#include <math.h>

#include "shard_limits.h"
#include "test_store.h"

static const uint64_t KEYS[] = {11, 22, 33, 44};

static void test_versions_are_seqs_and_go_to_the_log(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    uint64_t v[4];
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 3, KEYS, 2, 1, NULL, v, err, 256),
                     PS_STATUS_OK);
    assert_int_equal(v[0], TEST_START_SEQ + 1);
    assert_int_equal(v[2], TEST_START_SEQ + 3);
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 1, KEYS + 1, 2, 10, NULL, v, err, 256),
                     PS_STATUS_OK);
    assert_int_equal(v[0], TEST_START_SEQ + 4);

    uint32_t lens[2];
    uint64_t vers[2];
    float *vals = NULL;
    size_t vlen = 0;
    uint64_t seq = 0;
    assert_int_equal(store_read(f.store, 2, KEYS, 1 << 20, lens, vers, &vals, &vlen, &seq, NULL, 0),
                     PS_STATUS_OK);
    assert_int_equal(seq, TEST_START_SEQ + 4);
    assert_int_equal(vers[0], TEST_START_SEQ + 1);
    assert_int_equal(vers[1], TEST_START_SEQ + 4);
    assert_int_equal(vlen, 4 * sizeof(float));
    assert_true(vals[0] == 1 && vals[1] == 2 && vals[2] == 3 + 10 && vals[3] == 4 + 11);
    free(vals);

    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(f.log, TEST_START_SEQ + 3, 0, &e, NULL),
                     UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->key, KEYS[1]);
    assert_int_equal(e->op, UPDATE_LOG_OP_ASSIGN); /* an ADD's entry: what the chunk became */
    assert_int_equal(e->prev_version, TEST_START_SEQ + 2);
    assert_int_equal(e->version, TEST_START_SEQ + 4);
    assert_true(e->values[0] == 3 + 10 && e->values[1] == 4 + 11);
    update_log_entry_unref(e);
    assert_int_equal(update_log_read(f.log, TEST_START_SEQ, 0, &e, NULL), UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->prev_version, 0); /* created by that update */
    update_log_entry_unref(e);

    uint32_t sl[2];
    uint64_t sv[2];
    const uint64_t probe[] = {KEYS[0], 999};
    store_stat(f.store, 2, probe, sl, sv);
    assert_int_equal(sl[0], 2);
    assert_int_equal(sv[0], TEST_START_SEQ + 1);
    assert_int_equal(sl[1], 0);
    assert_int_equal(sv[1], 0);
    fixture_free(&f);
}

static void test_assign_of_another_length_is_refused(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    const char *names[] = {"m/t#0", "m/t#1"};
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, KEYS, 4, 0, names, NULL, err, 256),
                     PS_STATUS_OK);
    snapshot before = snapshot_take(&f, 4, KEYS);
    const uint64_t k[] = {KEYS[2], KEYS[1]}; /* a new key first: it must not be created */
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, k, 3, 0, NULL, NULL, err, 256),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "holds 4 floats"));
    assert_non_null(strstr(err, "m/t#1"));
    assert_non_null(strstr(err, "upload a new model version to change shapes"));
    snapshot after = snapshot_take(&f, 4, KEYS);
    snapshot_assert_same(&before, &after);
    snapshot_free(&before);
    snapshot_free(&after);
    fixture_free(&f);
}

static void test_add_that_overflows_is_refused(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    float big[3] = {1, 3e38f, 2};
    uint32_t len3[] = {3};
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 1,
                    .keys = KEYS,
                    .lengths = len3,
                    .values = (const uint8_t *)big,
                    .values_len = sizeof big};
    store_batch *b = NULL;
    assert_int_equal(store_batch_prepare(f.store, &p, &b, err, 256), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, 256), PS_STATUS_OK);
    store_batch_destroy(b);
    assert_int_equal(
        push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, KEYS + 1, 3, 0, NULL, NULL, err, 256),
        PS_STATUS_OK);
    snapshot before = snapshot_take(&f, 2, KEYS);
    /* two finite values whose sum is infinite; the other key's ADD must not apply */
    const uint64_t k[] = {KEYS[1], KEYS[0]};
    uint32_t lens[] = {3, 3};
    float delta[6] = {1, 1, 1, 0, 3e38f, 0};
    p = (store_push){.op = UPDATE_LOG_OP_ADD,
                     .n = 2,
                     .keys = k,
                     .lengths = lens,
                     .values = (const uint8_t *)delta,
                     .values_len = sizeof delta};
    assert_int_equal(store_batch_prepare(f.store, &p, &b, err, 256), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, 256),
                     PS_STATUS_INVALID_ARGUMENT);
    store_batch_destroy(b);
    assert_non_null(strstr(err, "000000000000000b"));                   /* KEYS[0] = 11 */
    assert_non_null(strstr(err, "value 1 non-finite (3e+38 + 3e+38)")); /* old + pushed */
    snapshot after = snapshot_take(&f, 2, KEYS);
    snapshot_assert_same(&before, &after);
    snapshot_free(&before);
    snapshot_free(&after);
    fixture_free(&f);
}

static void test_add_to_an_absent_key_is_refused(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, KEYS, 2, 0, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    snapshot before = snapshot_take(&f, 2, KEYS);
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 2, KEYS, 2, 0, NULL, NULL, err, 256),
                     PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "ASSIGN it first"));
    snapshot after = snapshot_take(&f, 2, KEYS);
    snapshot_assert_same(&before, &after);
    snapshot_free(&before);
    snapshot_free(&after);
    fixture_free(&f);
}

static void test_quota_refuses_new_keys_past_it(void **state) {
    (void)state;
    fixture f = fixture_make(10 * sizeof(float));
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, KEYS, 4, 0, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    snapshot before = snapshot_take(&f, 4, KEYS);
    /* two existing keys and one new of 4 floats: 12 floats > 10 */
    const uint64_t k[] = {KEYS[0], KEYS[1], KEYS[2]};
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 3, k, 4, 0, NULL, NULL, err, 256),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "--max-bytes"));
    snapshot after = snapshot_take(&f, 4, KEYS);
    snapshot_assert_same(&before, &after);
    snapshot_free(&after);
    /* replacing what is held takes no new memory: allowed at the quota */
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, KEYS, 4, 7, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    store_stats s;
    store_get_stats(f.store, &s);
    assert_int_equal(s.bytes, 8 * sizeof(float));
    assert_int_equal(s.max_bytes, 10 * sizeof(float));
    snapshot_free(&before);
    fixture_free(&f);
}

/* Prepare alone must refuse it, naming `words`. */
static void refused(fixture *f, const store_push *p, const char *words) {
    char err[256] = "";
    store_batch *b = NULL;
    assert_int_equal(store_batch_prepare(f->store, p, &b, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_null(b);
    if (!strstr(err, words))
        fail_msg("'%s' does not say '%s'", err, words);
}

static void test_stateless_checks(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    float v[4] = {1, 2, 3, 4};
    const uint8_t *bytes = (const uint8_t *)v;
    uint32_t zero[] = {0}, two[] = {2, 2}, big[] = {SHARD_MAX_CHUNK_FLOATS, 2};
    uint32_t huge[] = {UINT32_MAX, 2};
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 1,
                    .keys = KEYS,
                    .lengths = zero,
                    .values = bytes,
                    .values_len = 0};
    refused(&f, &p, "length 0");
    p = (store_push){.op = UPDATE_LOG_OP_ASSIGN,
                     .n = 2,
                     .keys = KEYS,
                     .lengths = huge,
                     .values = bytes,
                     .values_len = 16};
    refused(&f, &p, "want 1..");
    p.lengths = big; /* each allowed, the total is not */
    refused(&f, &p, "add up to more than");
    p.lengths = two;
    p.values_len = 12;
    refused(&f, &p, "lengths add up to 4 floats");
    p.values_len = 16;
    v[3] = NAN;
    refused(&f, &p, "NaN");
    v[3] = INFINITY;
    refused(&f, &p, "infinite");
    v[3] = 4;
    const uint64_t dup[] = {5, 5};
    p.keys = dup;
    refused(&f, &p, "more than once");
    p.keys = KEYS;
    char *long_name = malloc(SHARD_MAX_NAME_BYTES + 2);
    assert_non_null(long_name);
    memset(long_name, 'x', SHARD_MAX_NAME_BYTES + 1);
    long_name[SHARD_MAX_NAME_BYTES + 1] = '\0';
    const char *names[] = {"ok", long_name};
    p.names = names;
    refused(&f, &p, "longer than");
    free(long_name);
    p.names = NULL;
    p.n = SHARD_MAX_KEYS_PER_REQUEST + 1; /* the count is checked before the arrays are read */
    refused(&f, &p, "keys per request");
    p.n = 2;
    p.op = (update_log_op)7;
    refused(&f, &p, "unknown push op");
    store_stats s;
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 0);
    assert_int_equal(s.seq, TEST_START_SEQ);
    fixture_free(&f);
}

static void test_read_limits(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, KEYS, 8, 0, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    uint32_t lens[3];
    uint64_t vers[3];
    float *vals = NULL;
    size_t vlen = 0;
    assert_int_equal(store_read(f.store, 2, KEYS, 63, lens, vers, &vals, &vlen, NULL, err, 256),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "pull fewer keys"));
    assert_int_equal(
        store_read(f.store, 3, KEYS, 1 << 20, lens, vers, &vals, &vlen, NULL, err, 256),
        PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "0000000000000021")); /* KEYS[2] = 33 */
    assert_null(vals);
    fixture_free(&f);
}

/* ------------------------------------------------------------------ delete --- */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_are_seqs_and_go_to_the_log),
        cmocka_unit_test(test_assign_of_another_length_is_refused),
        cmocka_unit_test(test_add_that_overflows_is_refused),
        cmocka_unit_test(test_add_to_an_absent_key_is_refused),
        cmocka_unit_test(test_quota_refuses_new_keys_past_it),
        cmocka_unit_test(test_stateless_checks),
        cmocka_unit_test(test_read_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
