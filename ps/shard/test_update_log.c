/* test_update_log.c: the update log keeps entries in seq order within its bounds,
 * tells readers to resync when it cannot continue from their seq, wakes waiting
 * readers, and keeps an entry alive while a reader holds it after eviction (the
 * use-after-free of issue 6, D2, was a stream reading an entry it no longer held). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>

#include "shard_limits.h"
#include "update_log.h"

#define START 1000

static update_log *make_log(uint64_t max_bytes, uint32_t max_entries) {
    update_log_opts o = {.max_bytes = max_bytes, .max_entries = max_entries, .start_seq = START};
    update_log *l = NULL;
    assert_int_equal(update_log_create(&o, &l), PS_STATUS_OK);
    return l;
}

/* A batch of n entries with seqs first_seq.. and `len` floats each, values[0] = seq. */
static update_log_batch *batch_n(uint64_t first_seq, size_t n, uint32_t len) {
    update_log_batch *b = NULL;
    assert_int_equal(update_log_batch_create(n, &b), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++) {
        update_log_values *v = NULL;
        assert_int_equal(update_log_values_create(len, &v), PS_STATUS_OK);
        memset(v->data, 0, (size_t)len * sizeof(float));
        v->data[0] = (float)(first_seq + i);
        update_log_entry *e = update_log_batch_entry(b, i);
        update_log_entry_set(e, v);
        update_log_values_unref(v); /* the entry holds it now */
        e->seq = e->version = first_seq + i;
        e->key = 7;
    }
    return b;
}

/* Appends entries first_seq.. with `len` floats each, values[0] = seq, one per append. */
static void append_n(update_log *l, uint64_t first_seq, size_t n, uint32_t len) {
    for (size_t i = 0; i < n; i++)
        update_log_append(l, batch_n(first_seq + i, 1, len), 1);
}

static void test_reads_in_order_then_idle(void **state) {
    (void)state;
    update_log *l = make_log(0, 0);
    uint64_t last = 0;
    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(l, START, 0, &e, &last), UPDATE_LOG_READ_IDLE);
    assert_int_equal(last, START);
    append_n(l, START + 1, 5, 4);
    for (uint64_t after = START; after < START + 5; after++) {
        assert_int_equal(update_log_read(l, after, 0, &e, &last), UPDATE_LOG_READ_ENTRY);
        assert_int_equal(e->seq, after + 1);
        assert_true(e->values[0] == (float)(after + 1));
        update_log_entry_unref(e);
    }
    assert_int_equal(update_log_read(l, START + 5, 10, &e, &last), UPDATE_LOG_READ_IDLE);
    assert_int_equal(last, START + 5);
    update_log_destroy(l);
}

static void test_resync_before_start_and_past_end(void **state) {
    (void)state;
    update_log *l = make_log(0, 0);
    update_log_entry *e = NULL;
    uint64_t last = 0;
    /* a subscriber from before this log (another incarnation, or seq 0) cannot continue */
    assert_int_equal(update_log_read(l, 0, 0, &e, &last), UPDATE_LOG_READ_RESYNC);
    assert_int_equal(update_log_read(l, START - 1, 0, &e, &last), UPDATE_LOG_READ_RESYNC);
    /* nor one that claims a seq the log never reached */
    assert_int_equal(update_log_read(l, START + 1, 0, &e, &last), UPDATE_LOG_READ_RESYNC);
    assert_int_equal(last, START);
    update_log_destroy(l);
}

static void test_bytes_and_count_bounds_evict_oldest(void **state) {
    (void)state;
    uint64_t per = update_log_entry_bytes(16);
    update_log *l = make_log(per * 10, 0);
    append_n(l, START + 1, 25, 16);
    update_log_stats s;
    update_log_get_stats(l, &s);
    assert_int_equal(s.entries, 10);
    assert_int_equal(s.bytes, per * 10);
    assert_int_equal(s.first_seq, START + 16);
    assert_int_equal(s.last_seq, START + 25);
    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(l, START + 14, 0, &e, NULL), UPDATE_LOG_READ_RESYNC);
    assert_int_equal(update_log_read(l, START + 15, 0, &e, NULL), UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->seq, START + 16);
    update_log_entry_unref(e);
    update_log_destroy(l);

    l = make_log(0, 4); /* the count bound */
    append_n(l, START + 1, 9, 1);
    update_log_get_stats(l, &s);
    assert_int_equal(s.entries, 4);
    assert_int_equal(s.first_seq, START + 6);
    update_log_destroy(l);
}

static void test_entry_larger_than_budget_is_kept_alone(void **state) {
    (void)state;
    update_log *l = make_log(update_log_entry_bytes(8), 0);
    append_n(l, START + 1, 2, 8);
    append_n(l, START + 3, 1, 1000);
    update_log_stats s;
    update_log_get_stats(l, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.first_seq, START + 3);
    update_log_destroy(l);
}

static void test_reader_keeps_evicted_entry_alive(void **state) {
    (void)state;
    update_log *l = make_log(update_log_entry_bytes(64) * 2, 0);
    append_n(l, START + 1, 1, 64);
    update_log_entry *held = NULL;
    assert_int_equal(update_log_read(l, START, 0, &held, NULL), UPDATE_LOG_READ_ENTRY);
    append_n(l, START + 2, 10, 64); /* evicts `held` from the log */
    /* still ours: ASan would report a use-after-free here otherwise */
    assert_int_equal(held->seq, START + 1);
    assert_true(held->values[0] == (float)(START + 1));
    update_log_entry_unref(held);
    update_log_destroy(l);
}

typedef struct waiter {
    update_log *log;
    uint64_t from; /* reads the entry after this seq */
    update_log_read_kind kind;
    uint64_t seq;
} waiter;

static void *wait_next(void *arg) {
    waiter *w = arg;
    update_log_entry *e = NULL;
    w->kind = update_log_read(w->log, w->from, 10000, &e, NULL);
    if (w->kind == UPDATE_LOG_READ_ENTRY) {
        w->seq = e->seq;
        update_log_entry_unref(e);
    }
    return NULL;
}

static void test_append_and_stop_wake_readers(void **state) {
    (void)state;
    update_log *l = make_log(0, 0);
    waiter w = {.log = l, .from = START};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_next, &w), 0);
    append_n(l, START + 1, 1, 1);
    pthread_join(t, NULL);
    assert_int_equal(w.kind, UPDATE_LOG_READ_ENTRY);
    assert_int_equal(w.seq, START + 1);

    waiter w2 = {.log = l, .from = START + 1}; /* past the last entry: it waits, then stops */
    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(l, START + 1, 0, &e, NULL), UPDATE_LOG_READ_IDLE);
    assert_int_equal(pthread_create(&t, NULL, wait_next, &w2), 0);
    update_log_stop(l);
    pthread_join(t, NULL);
    assert_int_equal(w2.kind, UPDATE_LOG_READ_STOPPED);
    assert_int_equal(update_log_read(l, START + 1, 0, &e, NULL), UPDATE_LOG_READ_STOPPED);
    update_log_destroy(l);
}

/* A push's entries go in with one append; a reader holding one entry of a batch keeps
 * that entry's values after the log evicted the whole batch, and the batch's other
 * entries are released at once (their blocks are not kept for the held one). */
static void test_batch_appended_whole_and_released_per_entry(void **state) {
    (void)state;
    update_log *l = make_log(update_log_entry_bytes(64) * 4, 0);
    update_log_batch *b = batch_n(START + 1, 3, 64);
    update_log_values *second = update_log_batch_entry(b, 1)->block;
    update_log_values_ref(second); /* to watch its count */
    update_log_append(l, b, 3);
    update_log_stats s;
    update_log_get_stats(l, &s);
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.last_seq, START + 3);
    update_log_entry *held = NULL;
    assert_int_equal(update_log_read(l, START, 0, &held, NULL), UPDATE_LOG_READ_ENTRY);
    append_n(l, START + 4, 4, 64); /* evicts all three */
    update_log_get_stats(l, &s);
    assert_int_equal(s.first_seq, START + 4);
    assert_int_equal(atomic_load(&second->refs), 1); /* only ours: the log let it go */
    assert_int_equal(held->seq, START + 1);          /* the held one is intact */
    assert_true(held->values[0] == (float)(START + 1));
    update_log_entry_unref(held);
    update_log_values_unref(second);
    update_log_destroy(l);
}

/* Entries past the count given to append (keys a push skipped) are released unused,
 * and a batch never appended releases everything it holds. */
static void test_unused_entries_and_unappended_batch_released(void **state) {
    (void)state;
    update_log *l = make_log(0, 0);
    update_log_batch *b = batch_n(START + 1, 3, 4);
    update_log_values *third = update_log_batch_entry(b, 2)->block;
    update_log_values_ref(third);
    update_log_append(l, b, 2);
    update_log_stats s;
    update_log_get_stats(l, &s);
    assert_int_equal(s.entries, 2);
    assert_int_equal(atomic_load(&third->refs), 1);
    update_log_values_unref(third);
    update_log_batch_destroy(batch_n(START + 3, 5, 4)); /* ASan: nothing leaks */
    update_log_batch_destroy(NULL);
    update_log_destroy(l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_in_order_then_idle),
        cmocka_unit_test(test_resync_before_start_and_past_end),
        cmocka_unit_test(test_bytes_and_count_bounds_evict_oldest),
        cmocka_unit_test(test_entry_larger_than_budget_is_kept_alone),
        cmocka_unit_test(test_reader_keeps_evicted_entry_alive),
        cmocka_unit_test(test_append_and_stop_wake_readers),
        cmocka_unit_test(test_batch_appended_whole_and_released_per_entry),
        cmocka_unit_test(test_unused_entries_and_unappended_batch_released),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
