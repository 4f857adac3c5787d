/* test_store_blocks.c: the store shares its chunks' value blocks instead of copying
 * them (store.h): the log's entries and Pull replies hold references, so a block
 * someone else holds must never be written. An ADD always publishes a new block with
 * the sums (one pass over the old and pushed values), so holders keep what they had.
 * Also: pushes arriving in pieces (a float split across two) land intact, ADDs summed
 * straight from such pieces included, and a NaN anywhere in the pieces, or a sum that
 * overflows, is refused with its index and changes nothing. */
#include <math.h>

#include "test_store.h"

static const uint64_t KEY = 77;

/* A block of key KEY with a reference (store_read_blocks). */
static update_log_values *hold(fixture *f, uint64_t *ret_version) {
    uint32_t len = 0;
    update_log_values *b = NULL;
    assert_int_equal(
        store_read_blocks(f->store, 1, &KEY, UINT64_MAX, &len, ret_version, &b, NULL, NULL, 0),
        PS_STATUS_OK);
    return b;
}

static float value0(fixture *f) {
    snapshot s = snapshot_take(f, 1, &KEY);
    float v = s.values[0];
    snapshot_free(&s);
    return v;
}

static void test_held_block_is_never_written(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, &KEY, 4, 1, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    uint64_t v0 = 0;
    update_log_values *pulled = hold(&f, &v0); /* a Pull reply still being sent */
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 1, &KEY, 4, 10, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    assert_true(pulled->data[0] == 1 && pulled->data[3] == 4); /* what was pulled */
    assert_true(value0(&f) == 11);                             /* the chunk moved on */
    /* the log's entries hold what the chunk became: the assigned values, then the sums */
    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(f.log, TEST_START_SEQ, 0, &e, NULL), UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->op, UPDATE_LOG_OP_ASSIGN);
    assert_true(e->values[0] == 1 && e->values[3] == 4);
    update_log_entry_unref(e);
    assert_int_equal(update_log_read(f.log, TEST_START_SEQ + 1, 0, &e, NULL),
                     UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->op, UPDATE_LOG_OP_ASSIGN);
    assert_true(e->values[0] == 11 && e->values[3] == 17);
    update_log_entry_unref(e);
    update_log_values_unref(pulled);
    fixture_free(&f);
}

static void test_add_publishes_a_new_block_even_when_alone(void **state) {
    (void)state;
    /* a log too small to keep the ASSIGN's block: the chunk alone holds it */
    update_log_opts lo = {.start_seq = TEST_START_SEQ, .max_bytes = 1};
    fixture f = {0};
    assert_int_equal(update_log_create(&lo, &f.log), PS_STATUS_OK);
    store_opts so = {.log = f.log};
    assert_int_equal(store_create(&so, &f.store), PS_STATUS_OK);
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, &KEY, 4, 1, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 1, &KEY, 4, 0, NULL, NULL, err, 256),
                     PS_STATUS_OK); /* evicts the ASSIGN from the log */
    uint64_t v1 = 0;
    update_log_values *before = hold(&f, &v1);
    update_log_values_unref(before); /* only its address kept, to compare */
    uint64_t versions[1];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 1, &KEY, 4, 100, NULL, versions, err, 256),
                     PS_STATUS_OK);
    uint64_t v2 = 0;
    update_log_values *after = hold(&f, &v2);
    assert_ptr_not_equal(after, before); /* made while the old one still lived */
    assert_int_equal(v2, versions[0]);
    assert_true(v2 > v1);
    assert_true(after->data[0] == 1 + 0 + 100 && after->data[3] == 4 + 3 + 103);
    update_log_values_unref(after);
    fixture_free(&f);
}

static void test_values_in_pieces(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    float vals[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    const uint8_t *raw = (const uint8_t *)vals;
    /* cut mid-float: 5 + 9 + 10 bytes */
    ps_bytes pieces[3] = {{raw, 5}, {raw + 5, 9}, {raw + 14, 10}};
    const uint64_t keys[2] = {1, 2};
    const uint32_t lens[2] = {2, 4};
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 2,
                    .keys = keys,
                    .lengths = lens,
                    .values_len = sizeof vals,
                    .pieces = pieces,
                    .n_pieces = 3};
    char err[256];
    store_batch *b = NULL;
    assert_int_equal(store_batch_prepare(f.store, &p, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    snapshot s = snapshot_take(&f, 2, keys);
    assert_int_equal(s.values_len, sizeof vals);
    assert_memory_equal(s.values, vals, sizeof vals);
    snapshot_free(&s);

    /* a NaN in the last piece: refused, named by its index, nothing applied */
    vals[4] = NAN;
    snapshot before = snapshot_take(&f, 2, keys);
    assert_int_equal(store_batch_prepare(f.store, &p, &b, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "push value 4 is NaN"));
    snapshot after = snapshot_take(&f, 2, keys);
    snapshot_assert_same(&before, &after);
    snapshot_free(&before);
    snapshot_free(&after);

    /* an ADD is summed straight from the pieces (cut mid-float, an empty one among them) */
    vals[4] = 5;
    float delta[6] = {0.5f, 1, -3, 0.25f, 100, -6.25f};
    const uint8_t *draw = (const uint8_t *)delta;
    ps_bytes dp[5] = {{draw, 3}, {draw + 3, 0}, {draw + 3, 2}, {draw + 5, 11}, {draw + 16, 8}};
    store_push add = p;
    add.op = UPDATE_LOG_OP_ADD;
    add.pieces = dp;
    add.n_pieces = 5;
    assert_int_equal(store_batch_prepare(f.store, &add, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    s = snapshot_take(&f, 2, keys);
    for (int i = 0; i < 6; i++)
        assert_true(s.values[i] == vals[i] + delta[i]);
    snapshot_free(&s);
    /* a NaN in a piece after a cut float: refused at apply with the same message */
    before = snapshot_take(&f, 2, keys);
    delta[3] = NAN;
    assert_int_equal(store_batch_prepare(f.store, &add, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    store_batch_destroy(b);
    assert_non_null(strstr(err, "push value 3 is NaN"));
    /* a value whose sum overflows, on a float cut between two pieces: names both */
    delta[3] = 0.25f;
    delta[1] = 3.4e38f;
    float big[6] = {1.5f, 3.4e38f, 3, 4, 5, 6.25f};
    store_push set = p;
    set.pieces = NULL;
    set.n_pieces = 0;
    set.values = (const uint8_t *)big;
    assert_int_equal(store_batch_prepare(f.store, &set, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    snapshot_free(&before);
    before = snapshot_take(&f, 2, keys);
    assert_int_equal(store_batch_prepare(f.store, &add, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    store_batch_destroy(b);
    assert_non_null(strstr(err, "would make value 1 non-finite (3.4e+38 + 3.4e+38)"));
    after = snapshot_take(&f, 2, keys);
    snapshot_assert_same(&before, &after); /* neither refusal changed anything */
    snapshot_free(&before);
    snapshot_free(&after);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held_block_is_never_written),
        cmocka_unit_test(test_add_publishes_a_new_block_even_when_alone),
        cmocka_unit_test(test_values_in_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
