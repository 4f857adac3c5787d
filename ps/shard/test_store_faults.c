/* test_store_faults.c: a push is all or nothing (issue 6, D3). Every allocation a push
 * makes, in prepare or in apply, is made to fail in turn, and the store and the log
 * must then be exactly as before; the old shard allocated new chunks inside its apply
 * loop and returned an error after the earlier keys were applied and logged. Also:
 * concurrent pushes leave contiguous, ordered seqs in the log and lose no update. */
#include <pthread.h>

#include "test_store.h"

#define N_OLD 4
#define N_NEW 4

static const uint64_t OLD[N_OLD] = {101, 102, 103, 104};
static const uint64_t MIXED[N_OLD + N_NEW] = {101, 201, 102, 202, 103, 203, 104, 204};

static fixture loaded(void) {
    fixture f = fixture_make(0);
    const char *names[] = {"m/a#0", "m/a#1", "m/a#2", "m/a#3"};
    char err[256];
    assert_int_equal(
        push_uniform(&f, UPDATE_LOG_OP_ASSIGN, N_OLD, OLD, 3, 1, names, NULL, err, 256),
        PS_STATUS_OK);
    return f;
}

/* Fails allocation 1, 2, ... of one push until a run no longer hits the fault; every
 * failed run must change nothing. Returns how many allocations the push made. */
static int fail_each_allocation(update_log_op op, size_t n, const uint64_t *keys) {
    const char *names[] = {"x#0", "x#1", "x#2", "x#3", "x#4", "x#5", "x#6", "x#7"};
    for (uint32_t nth = 1; nth < 1000; nth++) {
        fixture f = loaded();
        snapshot before = snapshot_take(&f, n, keys);
        store_fault_fail_alloc(f.store, nth);
        char err[256] = "";
        ps_status st = push_uniform(&f, op, n, keys, 3, 50, names, NULL, err, sizeof err);
        store_fault_fail_alloc(f.store, 0);
        snapshot after = snapshot_take(&f, n, keys);
        if (st == PS_STATUS_OK) { /* every key applied, as update before.seq + i + 1 */
            assert_int_equal(after.stats.seq, before.stats.seq + n);
            assert_int_equal(after.log.last_seq, before.log.last_seq + n);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(after.lengths[i], 3);
                assert_int_equal(after.versions[i], before.stats.seq + i + 1);
                float want = op == UPDATE_LOG_OP_ADD ? 1 + (float)(i * 3) + 50 + (float)(i * 3)
                                                     : 50 + (float)(i * 3);
                assert_true(after.values[i * 3] == want);
            }
        } else {
            snapshot_assert_same(&before, &after);
            assert_int_equal(st, PS_STATUS_NO_MEMORY);
            assert_non_null(strstr(err, "out of memory"));
        }
        snapshot_free(&before);
        snapshot_free(&after);
        fixture_free(&f);
        if (st == PS_STATUS_OK)
            return (int)nth - 1;
    }
    fail_msg("a push kept failing");
    return -1;
}

static void test_assign_fails_whole_at_every_allocation(void **state) {
    (void)state;
    int allocs = fail_each_allocation(UPDATE_LOG_OP_ASSIGN, N_OLD + N_NEW, MIXED);
    /* at least: per key a value block and a name, and a chunk per new key (the log's
     * entries come in one allocation for the whole push) */
    assert_true(allocs >= 2 * (N_OLD + N_NEW) + N_NEW);
}

static void test_add_fails_whole_at_every_allocation(void **state) {
    (void)state;
    int allocs = fail_each_allocation(UPDATE_LOG_OP_ADD, N_OLD, OLD);
    assert_true(allocs >= 2 * N_OLD);
}

/* The table must grow inside apply when another push filled it after this one was
 * prepared; that allocation failing must also leave everything as it was. */
static void test_growth_inside_apply_fails_whole(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    enum { FILL = 500, LATE = 40 };
    uint64_t *fill = calloc(FILL, sizeof *fill), late[LATE];
    assert_non_null(fill);
    for (size_t i = 0; i < FILL; i++)
        fill[i] = 100000 + i;
    for (size_t i = 0; i < LATE; i++)
        late[i] = 900000 + i;
    uint32_t lens[LATE];
    float vals[LATE];
    for (size_t i = 0; i < LATE; i++) {
        lens[i] = 1;
        vals[i] = (float)i;
    }
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = LATE,
                    .keys = late,
                    .lengths = lens,
                    .values = (const uint8_t *)vals,
                    .values_len = sizeof vals};
    store_batch *b = NULL;
    assert_int_equal(store_batch_prepare(f.store, &p, &b, err, 256), PS_STATUS_OK);
    /* meanwhile another push takes the table to its load limit (512 of 1024 slots) */
    for (size_t i = 0; i < FILL; i += TEST_MAX_KEYS) {
        size_t m = FILL - i < TEST_MAX_KEYS ? FILL - i : TEST_MAX_KEYS;
        assert_int_equal(
            push_uniform(&f, UPDATE_LOG_OP_ASSIGN, m, fill + i, 1, 0, NULL, NULL, err, 256),
            PS_STATUS_OK);
    }
    store_stats s0;
    update_log_stats l0;
    store_get_stats(f.store, &s0);
    update_log_get_stats(f.log, &l0);
    store_fault_fail_alloc(f.store, 1);
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, 256), PS_STATUS_NO_MEMORY);
    store_stats s1;
    update_log_stats l1;
    store_get_stats(f.store, &s1);
    update_log_get_stats(f.log, &l1);
    assert_memory_equal(&s0, &s1, sizeof s0);
    assert_memory_equal(&l0, &l1, sizeof l0);
    /* without the fault the same batch applies */
    assert_int_equal(store_batch_apply(f.store, b, NULL, NULL, err, 256), PS_STATUS_OK);
    store_batch_destroy(b);
    store_get_stats(f.store, &s1);
    assert_int_equal(s1.keys, FILL + LATE);
    free(fill);
    fixture_free(&f);
}

typedef struct adder {
    fixture *f;
    int rounds;
} adder;

static void *add_ones(void *arg) {
    adder *a = arg;
    const uint64_t key = OLD[0];
    uint32_t len = 3;
    float ones[3] = {1, 1, 1};
    for (int i = 0; i < a->rounds; i++) {
        store_push p = {.op = UPDATE_LOG_OP_ADD,
                        .n = 1,
                        .keys = &key,
                        .lengths = &len,
                        .values = (const uint8_t *)ones,
                        .values_len = sizeof ones};
        store_batch *b = NULL;
        if (store_batch_prepare(a->f->store, &p, &b, NULL, 0) != PS_STATUS_OK ||
            store_batch_apply(a->f->store, b, NULL, NULL, NULL, 0) != PS_STATUS_OK)
            a->rounds = -1;
        store_batch_destroy(b);
    }
    return NULL;
}

static void test_concurrent_adds_are_ordered_and_complete(void **state) {
    (void)state;
    fixture f = loaded();
    enum { THREADS = 4, ROUNDS = 500 };
    adder a[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (adder){.f = &f, .rounds = ROUNDS};
        assert_int_equal(pthread_create(&t[i], NULL, add_ones, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rounds, ROUNDS);
    }
    /* every update in the log, in seq order, each ADD onto the version before it */
    uint64_t after = TEST_START_SEQ + N_OLD, prev = TEST_START_SEQ + 1;
    for (int i = 0; i < THREADS * ROUNDS; i++) {
        update_log_entry *e = NULL;
        assert_int_equal(update_log_read(f.log, after, 0, &e, NULL), UPDATE_LOG_READ_ENTRY);
        assert_int_equal(e->seq, after + 1);
        assert_int_equal(e->prev_version, prev);
        prev = e->version;
        after = e->seq;
        update_log_entry_unref(e);
    }
    snapshot s = snapshot_take(&f, 1, OLD);
    assert_true(s.values[0] == 1 + THREADS * ROUNDS);
    assert_int_equal(s.versions[0], after);
    snapshot_free(&s);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assign_fails_whole_at_every_allocation),
        cmocka_unit_test(test_add_fails_whole_at_every_allocation),
        cmocka_unit_test(test_growth_inside_apply_fails_whole),
        cmocka_unit_test(test_concurrent_adds_are_ordered_and_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
