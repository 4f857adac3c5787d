/* test_replication_parts.c: the pieces replication rests on, without a network:
 *   - dedup.h: a request's keys are found once recorded (also those of a retry that
 *     carries another subset), other ids find nothing, id 0 is never remembered, the
 *     bound forgets the requests seen longest ago and never the one just recorded;
 *   - push_subset.h: a subset's values are exactly its keys' bytes, also when the
 *     request's values arrived in pieces that cut floats and keys in two;
 *   - repl_inbox.h: a stream remembers what it applied, never goes back but for a
 *     sync's reset, starts anew for a restarted primary, refuses a bad id, and keeps
 *     a second call of one stream waiting while the first applies. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "dedup.h"
#include "push_subset.h"
#include "repl_inbox.h"

static void test_dedup_finds_what_a_request_applied(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t keys[] = {50, 10, 40};
    assert_int_equal(dedup_record(d, 7, 3, keys, 100), PS_STATUS_OK);
    const uint64_t retry[] = {10, 20, 40, 60}; /* regrouped by a ring change */
    bool applied[4];
    uint64_t pos = 0;
    assert_int_equal(dedup_lookup(d, 7, 4, retry, applied, &pos), 2);
    assert_true(applied[0] && !applied[1] && applied[2] && !applied[3]);
    assert_int_equal(pos, 100);
    assert_int_equal(dedup_lookup(d, 8, 4, retry, applied, &pos), 0); /* another request */
    assert_int_equal(pos, 0);
    const uint64_t rest[] = {20, 60};
    assert_int_equal(dedup_record(d, 7, 2, rest, 120), PS_STATUS_OK);
    assert_int_equal(dedup_lookup(d, 7, 4, retry, NULL, &pos), 4);
    assert_int_equal(pos, 120);
    assert_int_equal(dedup_record(d, 0, 3, keys, 1), PS_STATUS_OK); /* no id: not kept */
    assert_int_equal(dedup_lookup(d, 0, 3, keys, NULL, NULL), 0);
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.keys, 5);
    dedup_destroy(d);
    dedup_destroy(NULL);
}

static void test_dedup_forgets_the_oldest_past_its_bound(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(10, &d), PS_STATUS_OK);
    uint64_t keys[8];
    for (uint64_t id = 1; id <= 200; id++) { /* many requests: the table grows */
        for (int i = 0; i < 4; i++)
            keys[i] = id * 10 + (uint64_t)i;
        assert_int_equal(dedup_record(d, id, 4, keys, id), PS_STATUS_OK);
    }
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_true(st.keys <= 10);
    assert_int_equal(st.forgotten, 200 - st.requests);
    keys[0] = 2000;
    assert_int_equal(dedup_lookup(d, 200, 1, keys, NULL, NULL), 1); /* the newest stays */
    keys[0] = 10;
    assert_int_equal(dedup_lookup(d, 1, 1, keys, NULL, NULL), 0); /* the oldest went */
    for (int i = 0; i < 8; i++) /* one request larger than the bound is still kept */
        keys[i] = 5000 + (uint64_t)i;
    assert_int_equal(dedup_record(d, 999, 8, keys, 1), PS_STATUS_OK);
    assert_int_equal(dedup_lookup(d, 999, 8, keys, NULL, NULL), 8);
    dedup_destroy(d);
}

/* Values 0..n-1 as floats for keys of the given lengths, delivered in pieces of
 * piece_bytes (cutting floats in two). */
static void check_subset(size_t piece_bytes) {
    const uint32_t lengths[] = {3, 1, 4, 2, 5};
    const uint64_t keys[] = {1, 2, 3, 4, 5};
    float values[15];
    for (int i = 0; i < 15; i++)
        values[i] = (float)i;
    store_bytes pieces[64];
    size_t n_pieces = 0;
    for (size_t off = 0; off < sizeof values; off += piece_bytes) {
        size_t len = sizeof values - off < piece_bytes ? sizeof values - off : piece_bytes;
        pieces[n_pieces++] = (store_bytes){(const uint8_t *)values + off, len};
    }
    store_push p = {.n = 5,
                    .keys = keys,
                    .lengths = lengths,
                    .values_len = sizeof values,
                    .pieces = pieces,
                    .n_pieces = n_pieces};
    const uint32_t idx[] = {0, 2, 3}; /* keys 1, 3, 4: floats 0-2 and 4-9 */
    push_subset s;
    assert_int_equal(push_subset_make(&p, idx, 3, &s), PS_STATUS_OK);
    assert_int_equal(s.push.n, 3);
    assert_int_equal(s.push.keys[1], 3);
    assert_int_equal(s.push.lengths[2], 2);
    assert_int_equal(s.push.values_len, 9 * 4);
    float got[9];
    size_t off = 0;
    for (size_t i = 0; i < s.push.n_pieces; i++) {
        memcpy((uint8_t *)got + off, s.push.pieces[i].data, s.push.pieces[i].len);
        off += s.push.pieces[i].len;
    }
    assert_int_equal(off, sizeof got);
    const float want[] = {0, 1, 2, 4, 5, 6, 7, 8, 9};
    assert_memory_equal(got, want, sizeof want);
    push_subset_free(&s);
    push_subset_free(NULL);
}

static void test_push_subset_slices_values_across_pieces(void **state) {
    (void)state;
    check_subset(60); /* one piece */
    check_subset(7);  /* floats cut in two */
    check_subset(1);
}

static void test_inbox_streams(void **state) {
    (void)state;
    repl_inbox *in = NULL;
    assert_int_equal(repl_inbox_create(&in), PS_STATUS_OK);
    repl_stream *s = NULL;
    uint64_t applied = 99;
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 0);
    repl_inbox_end(in, s, 10, false);
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 10);
    repl_inbox_end(in, s, 4, false); /* never back... */
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 10);
    repl_inbox_end(in, s, 3, true); /* ...but for a sync's reset */
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 3);
    repl_inbox_end(in, s, 3, false);
    assert_int_equal(repl_inbox_begin(in, "shard-1", 6, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 0); /* a restarted primary: a new stream */
    repl_inbox_end(in, s, 0, false);
    assert_int_equal(repl_inbox_begin(in, "", 1, &s, &applied), PS_STATUS_INVALID_ARGUMENT);
    char long_id[100];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_int_equal(repl_inbox_begin(in, long_id, 1, &s, &applied), PS_STATUS_INVALID_ARGUMENT);
    repl_inbox_destroy(in);
    repl_inbox_destroy(NULL);
}

typedef struct second_call {
    repl_inbox *in;
    uint64_t applied;
} second_call;

static void *begin_second(void *arg) {
    second_call *c = arg;
    repl_stream *s = NULL;
    assert_int_equal(repl_inbox_begin(c->in, "shard-2", 1, &s, &c->applied), PS_STATUS_OK);
    repl_inbox_end(c->in, s, c->applied, false);
    return NULL;
}

static void test_inbox_one_call_per_stream_at_a_time(void **state) {
    (void)state;
    repl_inbox *in = NULL;
    assert_int_equal(repl_inbox_create(&in), PS_STATUS_OK);
    repl_stream *s = NULL;
    uint64_t applied = 0;
    assert_int_equal(repl_inbox_begin(in, "shard-2", 1, &s, &applied), PS_STATUS_OK);
    second_call c = {in, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, begin_second, &c), 0);
    /* the second call waits for this one; whatever the scheduling, it sees what this
     * one applied */
    repl_inbox_end(in, s, 42, false);
    pthread_join(t, NULL);
    assert_int_equal(c.applied, 42);
    repl_inbox_destroy(in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_finds_what_a_request_applied),
        cmocka_unit_test(test_dedup_forgets_the_oldest_past_its_bound),
        cmocka_unit_test(test_push_subset_slices_values_across_pieces),
        cmocka_unit_test(test_inbox_streams),
        cmocka_unit_test(test_inbox_one_call_per_stream_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
