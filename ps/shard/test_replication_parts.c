/* test_replication_parts.c: the pieces replication rests on, without a network:
 *   - dedup.h: a request's keys are found once recorded (also those of a retry that
 *     carries another subset), other ids find nothing, id 0 is never remembered, the
 *     bound forgets the requests seen longest ago and never the one just recorded; a
 *     first try is looked up only once a retry of its request came; keys an image
 *     replaced count for the requests recorded before no more (marks swept in bulk);
 *   - push_subset.h: a subset's values are exactly its keys' bytes, also when the
 *     request's values arrived in pieces that cut floats and keys in two;
 *   - a copy a backup sends on as the keys' primary now (forwarded) owns its bytes and
 *     applies only the keys its request did not apply where it lands;
 *   - repl_inbox.h: a stream remembers what it applied, never goes back but for a
 *     sync's reset, starts anew for a restarted primary and refuses the calls of its
 *     earlier runs, lets only a primary's newest sync install, refuses a bad id, and keeps
 *     a second call of one stream waiting while the first applies;
 *   - the replicator's routing (replicator_internal.h): a change goes only from a key's
 *     primary, to its other owners and to every owner a pending ring gives it (a node
 *     joining gets exactly the keys it will own), and a target holds a key when it owns
 *     it on the settled ring (never when it is to be sent everything); which changes a
 *     ring change may have kept from an owner (replicator_lost.c);
 *   - gc.h: a pass drops exactly the chunks the ring gives this shard under no role,
 *     in bounded passes; the store keeps the others untouched; the same for sparse rows
 *     (cycles of bounded passes until one drops nothing, the kept rows' values intact),
 *     and the journal record of dropped rows replays (and is refused cut, or from a
 *     peer). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "dedup.h"
#include "push_subset.h"
#include "gc.h"
#include "image_stores.h"
#include "journal.h"
#include "placement.h"
#include "repl_inbox.h"
#include "replicator_internal.h"
#include "test_store.h"
#include "util.h"

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

/* The journal's check: first tries are not looked up (the common path costs nothing)
 * until a call of the request that is not one comes, also before anything of the
 * request was recorded (a retry that overtook its first try); repeats recorded twice
 * count once once looked up. */
static void test_dedup_check_looks_first_tries_up_only_after_a_retry(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t keys[] = {11, 12, 13}, more[] = {14, 15};
    assert_int_equal(dedup_check(d, 1, 3, keys, true), 0);
    assert_int_equal(dedup_record(d, 1, 3, keys, 10), PS_STATUS_OK);
    assert_int_equal(dedup_check(d, 1, 3, keys, true), 0);  /* a first try: not looked up */
    assert_int_equal(dedup_check(d, 1, 3, keys, false), 3); /* a retry: found, and marked */
    assert_int_equal(dedup_check(d, 1, 3, keys, true), 3);  /* so now every call is */
    assert_int_equal(dedup_check(d, 1, 2, more, true), 0);
    assert_int_equal(dedup_check(d, 0, 3, keys, false), 0); /* no id */
    /* the retry comes first and applies; its late first try finds what it applied */
    assert_int_equal(dedup_check(d, 2, 2, more, false), 0);
    assert_int_equal(dedup_record(d, 2, 2, more, 11), PS_STATUS_OK);
    assert_int_equal(dedup_check(d, 2, 2, more, true), 2);
    /* keys recorded twice (a backup's copy and a sync's record) are found once */
    assert_int_equal(dedup_record(d, 3, 3, keys, 12), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 3, 3, keys, 12), PS_STATUS_OK);
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_int_equal(st.keys, 3 + 2 + 6);
    assert_int_equal(dedup_lookup(d, 3, 3, keys, NULL, NULL), 3);
    assert_int_equal(dedup_record(d, 4, 2, more, 13), PS_STATUS_OK); /* export: distinct */
    assert_int_equal(dedup_record(d, 4, 2, more, 13), PS_STATUS_OK);
    dedup_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(dedup_export(d, 100, &e, &n), PS_STATUS_OK);
    assert_int_equal(n, 4);
    assert_int_equal(e[2].id, 3);
    assert_int_equal(e[2].n, 3);
    assert_int_equal(e[3].id, 4);
    assert_int_equal(e[3].n, 2);
    assert_int_equal(e[3].keys[0], 14);
    assert_int_equal(e[3].keys[1], 15);
    free(e);
    dedup_destroy(d);
}

/* The bound: past max_keys the oldest requests are forgotten (a retry of them would
 * apply again), counted, and those forgotten younger than DEDUP_SHORT_WINDOW_MS counted
 * apart; the window is how far back the memory reaches. */
static void test_dedup_bound_and_window(void **state) {
    (void)state;
    dedup *d = NULL;
    const uint64_t bound = 2 * (2 + DEDUP_REQUEST_KEYS) + 1; /* two requests of 2 keys */
    assert_int_equal(dedup_create(bound, &d), PS_STATUS_OK);
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_int_equal(st.window_ms, 0); /* nothing remembered */
    assert_int_equal(st.max_keys, bound);
    const uint64_t a[] = {1, 2}, b[] = {3, 4}, c[] = {5, 6};
    assert_int_equal(dedup_record(d, 1, 2, a, 10), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 2, 2, b, 11), PS_STATUS_OK);
    usleep(20 * 1000);
    dedup_get_stats(d, &st);
    assert_true(st.window_ms >= 15 && st.window_ms < DEDUP_SHORT_WINDOW_MS);
    assert_int_equal(st.forgotten, 0);
    assert_int_equal(dedup_record(d, 3, 2, c, 12), PS_STATUS_OK); /* past the bound: 1 goes */
    dedup_get_stats(d, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.forgotten, 1);
    assert_int_equal(st.forgotten_young, 1);
    assert_int_equal(dedup_lookup(d, 1, 2, a, NULL, NULL), 0); /* forgotten */
    assert_int_equal(dedup_lookup(d, 2, 2, b, NULL, NULL), 2);
    dedup_destroy(d);
    /* a stream of one-key requests is bounded by what each costs, not only its key
     * (found by an adversarial run: 1-key pushes took ~60x what --dedup-mb said) */
    assert_int_equal(dedup_create(1000, &d), PS_STATUS_OK);
    for (uint64_t id = 1; id <= 1000; id++)
        assert_int_equal(dedup_record(d, id, 1, &id, id), PS_STATUS_OK);
    dedup_get_stats(d, &st);
    assert_true(st.requests * (1 + DEDUP_REQUEST_KEYS) <= 1000 && st.requests >= 20);
    assert_int_equal(st.forgotten, 1000 - st.requests);
    dedup_destroy(d);
}

/* A request applied partly before a sync's point and partly after: the export gives
 * the keys applied up to the point (the images hold them), under the largest of their
 * positions, and none of the later ones (they reach the backup as changes). */
static void test_dedup_export_splits_a_request_at_the_point(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t a[] = {1, 2}, b[] = {3}, c[] = {4, 5};
    assert_int_equal(dedup_record(d, 7, 2, a, 10), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 7, 1, b, 20), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 7, 2, c, 30), PS_STATUS_OK);
    dedup_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(dedup_export(d, 25, &e, &n), PS_STATUS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].n, 3);
    assert_int_equal(e[0].pos, 20);
    assert_int_equal(e[0].keys[0], 1);
    assert_int_equal(e[0].keys[2], 3);
    free(e);
    assert_int_equal(dedup_export(d, 5, &e, &n), PS_STATUS_OK); /* before all: none */
    assert_int_equal(n, 0);
    free(e);
    dedup_destroy(d);
}

/* What a sync sends a backup of the requests its images hold: only those applied at or
 * before its point, keys sorted; and the record that carries them round-trips. */
static void test_dedup_export_and_its_journal_record(void **state) {
    (void)state;
    dedup *d = NULL, *backup = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    assert_int_equal(dedup_create(0, &backup), PS_STATUS_OK);
    const uint64_t a[] = {30, 10, 20}, b[] = {5}, c[] = {7, 8};
    assert_int_equal(dedup_record(d, 1, 3, a, 100), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 2, 1, b, 0), PS_STATUS_OK);   /* a replay's: position 0 */
    assert_int_equal(dedup_record(d, 3, 2, c, 101), PS_STATUS_OK); /* after the point */
    dedup_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(dedup_export(d, 100, &e, &n), PS_STATUS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].id, 1);
    assert_int_equal(e[0].n, 3);
    assert_int_equal(e[0].keys[0], 10);
    assert_int_equal(e[0].keys[2], 30);
    assert_int_equal(e[1].id, 2);
    uint8_t rec[JOURNAL_DEDUP_HEAD + 3 * 8];
    size_t len = journal_encode_dedup(e[0].id, e[0].n, e[0].keys, rec);
    assert_int_equal(len, sizeof rec);
    uint64_t id = 0, *keys = NULL;
    size_t m = 0;
    assert_int_equal(journal_request_of(JOURNAL_TYPE_DEDUP, rec, len, &id, &keys, &m),
                     PS_STATUS_OK);
    assert_int_equal(id, 1);
    assert_int_equal(m, 3);
    assert_int_equal(keys[1], 20);
    free(keys);
    journal_target t = {.dedup = backup}; /* a replay remembers it, changes nothing */
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_DEDUP, rec, len, false, NULL), PS_STATUS_OK);
    const uint64_t retry[] = {20, 40};
    bool applied[2];
    assert_int_equal(dedup_lookup(backup, 1, 2, retry, applied, NULL), 1);
    assert_true(applied[0] && !applied[1]);
    /* a cut or padded record is refused, not read past its end */
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_DEDUP, rec, len - 1, false, NULL),
                     PS_STATUS_PARSE);
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_DEDUP, rec, 8, false, NULL), PS_STATUS_PARSE);
    uint32_t huge = JOURNAL_DEDUP_MAX_KEYS + 1;
    memcpy(rec + 4, &huge, 4);
    assert_int_equal(journal_request_of(JOURNAL_TYPE_DEDUP, rec, len, &id, &keys, &m),
                     PS_STATUS_PARSE);
    free(e);
    dedup_destroy(d);
    dedup_destroy(backup);
}

/* One push cut into many calls under one request id: every key of every call is found
 * after, the key 0 too, and counted once. */
static void test_dedup_request_grows_over_many_calls(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    enum { CALLS = 10, PER = 10000 };
    uint64_t *keys = malloc(CALLS * PER * sizeof *keys);
    assert_non_null(keys);
    for (size_t i = 0; i < CALLS * PER; i++)
        keys[i] = i * 0x100000001ull; /* keys[0] == 0 */
    for (int c = 0; c < CALLS; c++) {
        assert_int_equal(dedup_lookup(d, 9, PER, keys + c * PER, NULL, NULL), 0);
        assert_int_equal(dedup_record(d, 9, PER, keys + c * PER, (uint64_t)c + 1), PS_STATUS_OK);
    }
    assert_int_equal(dedup_record(d, 9, 3, keys, 20), PS_STATUS_OK); /* again: no new key */
    assert_int_equal(dedup_lookup(d, 9, CALLS * PER, keys, NULL, NULL), CALLS * PER);
    const uint64_t other[] = {3, 5};
    assert_int_equal(dedup_lookup(d, 9, 2, other, NULL, NULL), 0);
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_int_equal(st.keys, CALLS * PER + 3); /* the repeats are kept, found once */
    dedup_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(dedup_export(d, 20, &e, &n), PS_STATUS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].n, CALLS * PER);
    for (size_t i = 0; i < CALLS * PER; i++) /* sorted, as the sync sends them */
        assert_int_equal(e[0].keys[i], keys[i]);
    free(e);
    free(keys);
    dedup_destroy(d);
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

/* An image replaced key 2 (dedup_forget): what requests recorded of it before counts no
 * more, what they record after does; lookups, the journal's check and the export agree;
 * key 0 too; a forget with nothing remembered is nothing. */
static void test_dedup_forgets_keys_an_image_replaced(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t k2[] = {2};
    dedup_forget(d, 1, k2); /* nothing remembered: nothing to do */
    const uint64_t a[] = {1, 2, 3}, b[] = {2, 0};
    assert_int_equal(dedup_record(d, 7, 3, a, 10), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 8, 2, b, 11), PS_STATUS_OK);
    const uint64_t gone[] = {2, 0};
    dedup_forget(d, 2, gone);
    bool applied[3];
    uint64_t pos = 0;
    assert_int_equal(dedup_lookup(d, 7, 3, a, applied, &pos), 2);
    assert_true(applied[0] && !applied[1] && applied[2]);
    assert_int_equal(dedup_lookup(d, 8, 2, b, NULL, NULL), 0);
    assert_int_equal(dedup_check(d, 7, 3, a, false), 2);           /* a retry: looked up */
    assert_int_equal(dedup_record(d, 7, 1, k2, 12), PS_STATUS_OK); /* applied again after */
    assert_int_equal(dedup_lookup(d, 7, 3, a, applied, &pos), 3);
    assert_int_equal(pos, 12);
    dedup_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(dedup_export(d, 100, &e, &n), PS_STATUS_OK);
    assert_int_equal(n, 1); /* request 8 holds nothing that counts */
    assert_int_equal(e[0].id, 7);
    assert_int_equal(e[0].n, 3);
    free(e);
    assert_int_equal(dedup_export(d, 11, &e, &n), PS_STATUS_OK); /* before the new record */
    assert_int_equal(n, 1);
    assert_int_equal(e[0].n, 2); /* 1 and 3 */
    assert_int_equal(e[0].pos, 10);
    free(e);
    dedup_destroy(d);
}

/* Marks past the keys remembered are applied in one pass: the keys that no longer
 * count go (a request left with none goes too), and what still counts is still found. */
static void test_dedup_forget_marks_are_swept(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    enum { N = 6000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    assert_non_null(keys);
    for (size_t i = 0; i < N; i++)
        keys[i] = 1000 + i;
    const uint64_t mine[] = {1000, 5, 6};
    assert_int_equal(dedup_record(d, 1, 3, mine, 1), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 2, 2, keys + 10, 2), PS_STATUS_OK);
    dedup_forget(d, N, keys); /* more marks than keys remembered: swept now */
    dedup_stats st;
    dedup_get_stats(d, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.keys, 2);
    bool applied[3];
    assert_int_equal(dedup_lookup(d, 1, 3, mine, applied, NULL), 2);
    assert_true(!applied[0] && applied[1] && applied[2]);
    assert_int_equal(dedup_record(d, 1, 1, keys, 3), PS_STATUS_OK); /* no mark is left */
    assert_int_equal(dedup_lookup(d, 1, 3, mine, NULL, NULL), 3);
    free(keys);
    dedup_destroy(d);
}

/* Which changes a ring change may keep from an owner (replicator_lost.c): changes left
 * to a sync that runs under their view are covered once it ends well; a view change,
 * a sync under another view, or a failed sync after a view change makes them lost; a
 * target the next view takes off both rings loses nothing (with a view between, it
 * does: it may have been the keys' primary meanwhile); a dropped queue's entries are left (their
 * view) or lost (another one); ranges merge past their bound and keep every position. */
static void test_replicator_lost_changes(void **state) {
    (void)state;
    replicator *r = calloc(1, sizeof *r);
    assert_non_null(r);
    assert_int_equal(pthread_mutex_init(&r->lock, NULL), 0);
    repl_target t = {.r = r};
    r->view = 1;
    repl_left_add_locked(&t, 5, 1);
    repl_left_add_locked(&t, 6, 1);
    repl_left_sync_start_locked(&t, 1);
    repl_left_sync_end_locked(&t, true);
    assert_false(replicator_lost(r, 5) || replicator_lost(r, 6));
    repl_left_add_locked(&t, 7, 1);
    r->view = 2;
    repl_left_view_changed_locked(&t);
    assert_true(replicator_lost(r, 7));
    assert_false(replicator_lost(r, 6) || replicator_lost(r, 8));
    repl_left_add_locked(&t, 9, 2);
    repl_left_sync_start_locked(&t, 3); /* its rings are newer than the change's */
    repl_left_sync_end_locked(&t, true);
    assert_true(replicator_lost(r, 9));
    r->view = 3;
    repl_left_add_locked(&t, 11, 3);
    repl_left_sync_start_locked(&t, 3);
    repl_left_sync_end_locked(&t, false); /* failed: left again */
    assert_false(replicator_lost(r, 11));
    r->view = 4;
    repl_left_view_changed_locked(&t);
    assert_true(replicator_lost(r, 11));
    repl_left_add_locked(&t, 12, 4);
    repl_left_add_locked(&t, 13, 5); /* left under two views: the older is lost */
    assert_true(replicator_lost(r, 12));
    assert_false(replicator_lost(r, 13));
    t.removed = true; /* off both rings by the next view: owned nothing since */
    t.removed_view = 6;
    repl_left_view_changed_locked(&t);
    assert_false(replicator_lost(r, 13));
    repl_left_add_locked(&t, 14, 4); /* a view between: it may have owned the keys */
    repl_left_view_changed_locked(&t);
    assert_true(replicator_lost(r, 14));
    t.removed = false;
    t.removed_view = 0;
    r->view = 6;
    repl_entry *e1 = calloc(1, sizeof *e1), *e2 = calloc(1, sizeof *e2);
    assert_true(e1 && e2);
    *e1 = (repl_entry){.next = e2, .pos = 20, .view = 5};
    *e2 = (repl_entry){.pos = 21, .view = 6};
    t.head = e1;
    t.tail = e2;
    repl_drop_queue_locked(&t);
    assert_true(replicator_lost(r, 20));
    assert_false(replicator_lost(r, 21)); /* left to the next sync, under this view */
    assert_int_equal(t.left.lo, 21);
    for (uint64_t p = 100; p < 140; p += 2) /* far apart: past the bound, merged */
        repl_lost_add_locked(r, p, p);
    assert_true(r->n_lost <= REPL_LOST_RANGES);
    for (uint64_t p = 100; p < 140; p += 2)
        assert_true(replicator_lost(r, p));
    assert_true(replicator_lost(r, 7) && replicator_lost(r, 20));
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Values 0..n-1 as floats for keys of the given lengths, delivered in pieces of
 * piece_bytes (cutting floats in two). */
static void check_subset(size_t piece_bytes) {
    const uint32_t lengths[] = {3, 1, 4, 2, 5};
    const uint64_t keys[] = {1, 2, 3, 4, 5};
    float values[15];
    for (int i = 0; i < 15; i++)
        values[i] = (float)i;
    ps_bytes pieces[64];
    size_t n_pieces = 0;
    for (size_t off = 0; off < sizeof values; off += piece_bytes) {
        size_t len = sizeof values - off < piece_bytes ? sizeof values - off : piece_bytes;
        pieces[n_pieces++] = (ps_bytes){(const uint8_t *)values + off, len};
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

/* A backup that gets a share of a push (a subset: the keys it owns) gives each key the
 * version the primary gave it, whatever the key's place in the share; so does a share
 * of a share (a retry's subset sent on), and a restart's replay of the share's record.
 * The store gave the k-th key of a record base + k + 1, so a backup's version of a
 * key after a gap was lower than the primary's (and after a failover the new primary
 * could hand out a version a replica already held for older data). */
static void test_subset_keeps_the_primary_versions(void **state) {
    (void)state;
    fixture prim = fixture_make(0), back = fixture_make(0);
    const uint64_t keys[4] = {11, 12, 13, 14};
    const uint32_t lengths[4] = {2, 2, 2, 2};
    const float values[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 4,
                    .keys = keys,
                    .lengths = lengths,
                    .values = (const uint8_t *)values,
                    .values_len = sizeof values};
    store_batch *b = NULL;
    char err[256];
    uint64_t pv[4];
    assert_int_equal(store_batch_prepare(prim.store, &p, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(prim.store, b, pv, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    p.base_version = pv[0] - 1; /* what the primary's journal record carries */
    const uint32_t idx[2] = {1, 3}, idx2[1] = {1};
    push_subset share, again;
    assert_int_equal(push_subset_make(&p, idx, 2, &share), PS_STATUS_OK);
    assert_int_equal(push_subset_make(&share.push, idx2, 1, &again), PS_STATUS_OK);
    assert_int_equal(again.push.slots[0], 3); /* key 14's place in the whole */
    journal_encoded e;
    assert_int_equal(journal_encode_push(&share.push, &e), PS_STATUS_OK);
    uint8_t *rec = malloc(e.len), *at = rec;
    assert_non_null(rec);
    for (int i = 0; i < e.n_iov; i++) {
        memcpy(at, e.iov[i].iov_base, e.iov[i].iov_len);
        at += e.iov[i].iov_len;
    }
    journal_target t = {.chunks = back.store};
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_PUSH, rec, e.len, true, NULL), PS_STATUS_OK);
    uint32_t l[2];
    uint64_t bv[2];
    const uint64_t got_keys[2] = {12, 14};
    store_stat(back.store, 2, got_keys, l, bv);
    assert_int_equal(bv[0], pv[1]);
    assert_int_equal(bv[1], pv[3]);
    /* replayed at a restart (not from a peer): new versions from the clock, still one
     * per key's place, so the share's keys keep their order and gap */
    fixture re = fixture_make(0);
    journal_target rt = {.chunks = re.store};
    assert_int_equal(journal_apply(&rt, JOURNAL_TYPE_PUSH, rec, e.len, false, NULL), PS_STATUS_OK);
    store_stat(re.store, 2, got_keys, l, bv);
    assert_int_equal(bv[1] - bv[0], 2);
    journal_encoded_free(&e);
    free(rec);
    push_subset_free(&again);
    push_subset_free(&share);
    fixture_free(&re);
    fixture_free(&back);
    fixture_free(&prim);
}

/* The values of the three one-float chunks keys[0..3) into got. */
static void read3(store *s, const uint64_t *keys, float *got) {
    uint32_t lens[3];
    uint64_t vers[3];
    float *vals = NULL;
    size_t len = 0;
    assert_int_equal(store_read(s, 3, keys, 1 << 20, lens, vers, &vals, &len, NULL, NULL, 0),
                     PS_STATUS_OK);
    assert_int_equal(len, 3 * sizeof *vals);
    memcpy(got, vals, len);
    free(vals);
}

/* The one run of bytes an entry's record makes. */
static uint8_t *entry_bytes(const repl_entry *e) {
    uint8_t *b = malloc(e->enc.len + 1), *at = b;
    assert_non_null(b);
    for (int i = 0; i < e->enc.n_iov; i++) {
        memcpy(at, e->enc.iov[i].iov_base, e->enc.iov[i].iov_len);
        at += e->enc.iov[i].iov_len;
    }
    return b;
}

/* A copy from a peer that a backup sends on (the keys' primary now, after a ring
 * change) is marked forwarded and owns its bytes; where it lands, only the keys its
 * request did not apply there before are applied (a whole copy that is not forwarded
 * is applied whole): the old primary that made the change and gets it back from the
 * new one does not apply it twice. The same for rows. */
static void test_forwarded_copies_apply_only_what_was_not_applied(void **state) {
    (void)state;
    fixture back = fixture_make(0);
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t keys[3] = {21, 22, 23};
    const uint32_t lengths[3] = {1, 1, 1};
    const float zeros[3] = {0, 0, 0}, ones[3] = {1, 1, 1};
    store_push init = {.op = UPDATE_LOG_OP_ASSIGN,
                       .n = 3,
                       .keys = keys,
                       .lengths = lengths,
                       .values = (const uint8_t *)zeros,
                       .values_len = sizeof zeros};
    store_batch *b = NULL;
    char err[256];
    assert_int_equal(store_batch_prepare(back.store, &init, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(back.store, b, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    float *copy = malloc(sizeof ones); /* the peer's request, gone once the entry is made */
    assert_non_null(copy);
    memcpy(copy, ones, sizeof ones);
    store_push add = {.op = UPDATE_LOG_OP_ADD,
                      .n = 3,
                      .keys = keys,
                      .lengths = lengths,
                      .values = (const uint8_t *)copy,
                      .values_len = sizeof ones,
                      .from_peer = true,
                      .request_id = 77};
    repl_entry *fwd = repl_entry_forwarded(repl_entry_push(&add, NULL, 0), JOURNAL_TYPE_PUSH);
    repl_entry *plain = repl_entry_push(&add, NULL, 0);
    assert_true(fwd && plain);
    assert_int_equal(fwd->enc.n_iov, 1);
    uint8_t *plain_rec = entry_bytes(plain); /* before the request's memory goes */
    memset(copy, 0xff, sizeof ones);         /* (NaN: applying it would be refused) */
    free(copy);
    uint8_t *rec = entry_bytes(fwd);
    const uint64_t done[1] = {22};
    assert_int_equal(dedup_record(d, 77, 1, done, 5), PS_STATUS_OK); /* 22 applied here */
    journal_target t = {.chunks = back.store, .dedup = d};
    uint64_t lsn = 1;
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_PUSH, rec, fwd->enc.len, true, &lsn),
                     PS_STATUS_OK);
    float got[3];
    read3(back.store, keys, got);
    assert_true(got[0] == 1 && got[1] == 0 && got[2] == 1);
    assert_int_equal(dedup_record(d, 77, 3, keys, 6), PS_STATUS_OK); /* now all were */
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_PUSH, rec, fwd->enc.len, true, &lsn),
                     PS_STATUS_OK);
    assert_int_equal(lsn, 0); /* nothing applied, nothing journaled */
    read3(back.store, keys, got);
    assert_true(got[0] == 1 && got[1] == 0 && got[2] == 1);
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_PUSH, plain_rec, plain->enc.len, true, NULL),
                     PS_STATUS_OK); /* not forwarded: applied whole, as every copy is */
    read3(back.store, keys, got);
    assert_true(got[0] == 2 && got[1] == 1 && got[2] == 2);
    free(rec);
    free(plain_rec);
    repl_entry_free(fwd);
    repl_entry_free(plain);

    /* rows: row 6 applied here before, row 5 not */
    row_store *rs = NULL;
    assert_int_equal(row_store_create(&(row_store_opts){.name = "f"}, &rs), PS_STATUS_OK);
    const table_spec spec = {.dim = 2, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_NONE};
    const uint64_t ids[2] = {5, 6};
    const float rows[4] = {1, 1, 1, 1};
    row_push rp = {.model = "m",
                   .table = "emb",
                   .spec = &spec,
                   .op = ROW_OP_ADD,
                   .n = 2,
                   .ids = ids,
                   .values = (const uint8_t *)rows,
                   .values_len = sizeof rows,
                   .from_peer = true,
                   .request_id = 78};
    repl_entry *rf = repl_entry_forwarded(repl_entry_rows(&rp, NULL, 0), JOURNAL_TYPE_ROWS);
    assert_non_null(rf);
    uint8_t *rrec = entry_bytes(rf);
    uint64_t k6;
    ps_keys_rows(ps_key_table("m", "emb"), 1, &ids[1], &k6);
    assert_int_equal(dedup_record(d, 78, 1, &k6, 7), PS_STATUS_OK);
    journal_target rt = {.rows = rs, .dedup = d};
    assert_int_equal(journal_apply(&rt, JOURNAL_TYPE_ROWS, rrec, rf->enc.len, true, NULL),
                     PS_STATUS_OK);
    float rgot[4];
    assert_int_equal(
        row_store_pull(rs, "m", "emb", &spec, 2, ids, rgot, NULL, NULL, NULL, err, sizeof err),
        PS_STATUS_OK);
    assert_true(rgot[0] == 1 && rgot[1] == 1 && rgot[2] == 0 && rgot[3] == 0);
    free(rrec);
    repl_entry_free(rf);
    row_store_destroy(rs);
    dedup_destroy(d);
    fixture_free(&back);
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
    /* a call from its run before the restart, still on its way, cannot take the stream
       back; nor from any of its last REPL_INBOX_RETIRED runs */
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied),
                     PS_STATUS_FAILED_PRECONDITION);
    for (uint64_t inc = 7; inc < 7 + REPL_INBOX_RETIRED; inc++) {
        assert_int_equal(repl_inbox_begin(in, "shard-1", inc, &s, &applied), PS_STATUS_OK);
        repl_inbox_end(in, s, 0, false);
    } /* retired now: 5 (forgotten), 6, 7, 8, 9; current 10 */
    assert_int_equal(repl_inbox_begin(in, "shard-1", 6, &s, &applied),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_int_equal(repl_inbox_begin(in, "shard-1", 9, &s, &applied),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    repl_inbox_end(in, s, 0, false);
    /* syncs: only the newest of an incarnation installs; unnumbered ones always may */
    assert_int_equal(repl_inbox_begin(in, "shard-1", 5, &s, &applied), PS_STATUS_OK);
    assert_true(repl_inbox_sync_newest(s, 3));
    assert_true(repl_inbox_sync_newest(s, 3)); /* the same sync's next call */
    assert_false(repl_inbox_sync_newest(s, 2));
    assert_true(repl_inbox_sync_newest(s, 0));
    assert_true(repl_inbox_sync_newest(s, 4));
    assert_false(repl_inbox_sync_newest(s, 3));
    repl_inbox_end(in, s, 0, false);
    assert_int_equal(repl_inbox_begin(in, "shard-1", 11, &s, &applied), PS_STATUS_OK);
    assert_true(repl_inbox_sync_newest(s, 1)); /* a new incarnation numbers anew */
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

typedef struct later_batch {
    repl_inbox *in;
    uint64_t first, applied;
    ps_status st;
} later_batch;

static void *begin_later(void *arg) {
    later_batch *c = arg;
    repl_stream *s = NULL;
    c->st =
        repl_inbox_begin_at(c->in, "shard-3", 7, c->first, ps_now_ms() + 10000, &s, &c->applied);
    if (c->st == PS_STATUS_OK)
        repl_inbox_end(c->in, s, c->first + 4, false);
    return NULL;
}

/* Pipelined batches may arrive out of order: the later one waits for the earlier. */
static void test_inbox_applies_batches_in_order(void **state) {
    (void)state;
    repl_inbox *in = NULL;
    assert_int_equal(repl_inbox_create(&in), PS_STATUS_OK);
    repl_stream *s = NULL;
    uint64_t applied = 0;
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 1, ps_now_ms() + 10000, &s, &applied),
                     PS_STATUS_OK);
    repl_inbox_end(in, s, 5, false); /* records 1..5 */
    later_batch c = {.in = in, .first = 11};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, begin_later, &c), 0);
    usleep(50 * 1000); /* it arrived before records 6..10: it must wait for them */
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 6, ps_now_ms() + 10000, &s, &applied),
                     PS_STATUS_OK);
    assert_int_equal(applied, 5);
    repl_inbox_end(in, s, 10, false);
    pthread_join(t, NULL);
    assert_int_equal(c.st, PS_STATUS_OK);
    assert_int_equal(c.applied, 10); /* it began after 6..10 were applied */
    assert_int_equal(repl_inbox_begin(in, "shard-3", 7, &s, &applied), PS_STATUS_OK);
    assert_int_equal(applied, 15);
    repl_inbox_end(in, s, applied, false);
    /* a batch whose predecessors never come: UNAVAILABLE by the deadline, nothing held */
    int64_t t0 = ps_now_ms();
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 40, t0 + 100, &s, &applied),
                     PS_STATUS_UNAVAILABLE);
    assert_true(ps_now_ms() - t0 >= 100);
    assert_int_equal(applied, 15);
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 16, t0, &s, &applied), PS_STATUS_OK);
    repl_inbox_end(in, s, 16, false);
    /* a sync's batch (first 0) and a resent one (first <= applied + 1) never wait */
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 0, 0, &s, &applied), PS_STATUS_OK);
    repl_inbox_end(in, s, applied, false);
    assert_int_equal(repl_inbox_begin_at(in, "shard-3", 7, 3, 0, &s, &applied), PS_STATUS_OK);
    repl_inbox_end(in, s, applied, false);
    repl_inbox_destroy(in);
}

static hashring *ring_of(const char *const *ids, int n, uint64_t epoch) {
    hashring *r = NULL;
    assert_int_equal(hashring_create(50, &r), PS_STATUS_OK);
    for (int i = 0; i < n; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7000 + i);
        assert_int_equal(hashring_add(r, ids[i], addr, 1), PS_STATUS_OK);
    }
    hashring_set_epoch(r, epoch);
    return r;
}

static void test_routing_with_a_pending_ring(void **state) {
    (void)state;
    const char *ids[] = {"a", "b", "c", "d"};
    hashring *cur = ring_of(ids, 3, 5), *pend = ring_of(ids, 4, 6);
    repl_target tgt[4]; /* by id: a b c d */
    memset(tgt, 0, sizeof tgt);
    repl_target *cur_t[3], *pend_t[4];
    uint32_t self = 0;
    assert_true(hashring_find(cur, "a", &self));
    for (int i = 0; i < 3; i++) { /* ring indices are ranks by id: the same here */
        uint32_t k = 0;
        assert_true(hashring_find(cur, ids[i], &k));
        cur_t[k] = strcmp(ids[i], "a") == 0 ? NULL : &tgt[i];
    }
    for (int i = 0; i < 4; i++) {
        uint32_t k = 0;
        assert_true(hashring_find(pend, ids[i], &k));
        pend_t[k] = strcmp(ids[i], "a") == 0 ? NULL : &tgt[i];
    }
    uint32_t d_pend = 0, a_pend = 0;
    assert_true(hashring_find(pend, "d", &d_pend));
    assert_true(hashring_find(pend, "a", &a_pend));
    int mine = 0, to_d = 0, d_owns = 0;
    for (uint64_t key = 1; key < 20000; key++) {
        uint64_t k = key * 0x9E3779B97F4A7C15ull;
        repl_target *out[2 * HASHRING_MAX_REPLICAS];
        uint32_t n = repl_targets_of(cur, pend, self, cur_t, pend_t, 2, k, out);
        uint32_t o[2];
        hashring_owners(cur, k, 2, o);
        if (o[0] != self) { /* not its primary: nothing goes from here */
            assert_int_equal(n, 0);
            continue;
        }
        mine++;
        uint32_t p[2];
        hashring_owners(pend, k, 2, p);
        bool d_will = p[0] == d_pend || p[1] == d_pend, sent_d = false;
        for (uint32_t j = 0; j < n; j++) {
            assert_non_null(out[j]);
            for (uint32_t m = j + 1; m < n; m++)
                assert_ptr_not_equal(out[j], out[m]); /* each target once */
            sent_d |= out[j] == &tgt[3];
        }
        assert_int_equal(sent_d, d_will); /* the joining node gets exactly its keys */
        to_d += sent_d;
        d_owns += d_will;
        /* the settled ring (cur): d holds nothing; the current backup holds it */
        uint32_t d_settled = UINT32_MAX;
        assert_false(repl_held(cur, d_settled, false, 2, k));
        assert_true(repl_held(cur, o[1], false, 2, k));
        assert_false(repl_held(cur, o[1], true, 2, k)); /* full: sent everything */
        assert_false(repl_held(NULL, o[1], false, 2, k));
    }
    assert_true(mine > 0 && to_d > 0 && to_d == d_owns);
    repl_target *out[2 * HASHRING_MAX_REPLICAS]; /* no pending: the other owners only */
    for (uint64_t key = 1; key < 2000; key++) {
        uint64_t k = key * 0x9E3779B97F4A7C15ull;
        uint32_t o[2];
        hashring_owners(cur, k, 2, o);
        uint32_t n = repl_targets_of(cur, NULL, self, cur_t, pend_t, 2, k, out);
        assert_int_equal(n, o[0] == self ? 1 : 0);
        if (n)
            assert_ptr_equal(out[0], cur_t[o[1]]);
    }
    hashring_destroy(cur);
    hashring_destroy(pend);
}

static void test_gc_drops_only_chunks_owned_by_no_role(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    const char *ids[] = {"a", "b", "c", "d"};
    hashring *ring = ring_of(ids, 4, 9);
    size_t len = 0;
    assert_int_equal(hashring_serialize(ring, NULL, 0, &len), PS_STATUS_RESOURCE_EXHAUSTED);
    uint8_t *bytes = malloc(len);
    assert_non_null(bytes);
    assert_int_equal(hashring_serialize(ring, bytes, len, &len), PS_STATUS_OK);
    placement *p = NULL;
    assert_int_equal(placement_create(&(placement_opts){.self_id = "a"}, &p), PS_STATUS_OK);
    placement_set_replication(p, 2);
    assert_int_equal(placement_ring_install(p, bytes, len, NULL, NULL), PS_STATUS_OK);
    uint64_t keys[TEST_MAX_KEYS];
    size_t owned = 0;
    for (size_t i = 0; i < TEST_MAX_KEYS; i++) {
        keys[i] = (i + 1) * 0x9E3779B97F4A7C15ull;
        owned += placement_owns_any(p, keys[i]);
    }
    assert_true(owned > 0 && owned < TEST_MAX_KEYS);
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, TEST_MAX_KEYS, keys, 4, 1.0f, NULL,
                                  NULL, err, sizeof err),
                     PS_STATUS_OK);
    uint64_t dropped = 0, total = 0;
    bool more = true;
    while (more) { /* passes of at most 5 */
        assert_int_equal(gc_pass(f.store, p, 5, &dropped, NULL, &more), PS_STATUS_OK);
        assert_true(dropped <= 5);
        total += dropped;
    }
    assert_int_equal(total, TEST_MAX_KEYS - owned);
    uint32_t lengths[TEST_MAX_KEYS];
    uint64_t versions[TEST_MAX_KEYS];
    store_stat(f.store, TEST_MAX_KEYS, keys, lengths, versions);
    for (size_t i = 0; i < TEST_MAX_KEYS; i++)
        assert_int_equal(lengths[i], placement_owns_any(p, keys[i]) ? 4 : 0);
    assert_int_equal(gc_pass(f.store, p, 0, &dropped, NULL, &more), PS_STATUS_OK);
    assert_int_equal(dropped, 0); /* nothing left to drop */
    placement_destroy(p);
    free(bytes);
    hashring_destroy(ring);
    fixture_free(&f);
}

/* A placement of shard "a" on a ring of four with R=2 (bytes and ring freed by the
 * caller through the returned pointers). */
static placement *placement_of_a(hashring **ret_ring, uint8_t **ret_bytes) {
    const char *ids[] = {"a", "b", "c", "d"};
    hashring *ring = ring_of(ids, 4, 9);
    size_t len = 0;
    assert_int_equal(hashring_serialize(ring, NULL, 0, &len), PS_STATUS_RESOURCE_EXHAUSTED);
    uint8_t *bytes = malloc(len);
    assert_non_null(bytes);
    assert_int_equal(hashring_serialize(ring, bytes, len, &len), PS_STATUS_OK);
    placement *p = NULL;
    assert_int_equal(placement_create(&(placement_opts){.self_id = "a"}, &p), PS_STATUS_OK);
    placement_set_replication(p, 2);
    assert_int_equal(placement_ring_install(p, bytes, len, NULL, NULL), PS_STATUS_OK);
    *ret_ring = ring;
    *ret_bytes = bytes;
    return p;
}

static void test_gc_drops_only_rows_owned_by_no_role(void **state) {
    (void)state;
    hashring *ring;
    uint8_t *bytes;
    placement *p = placement_of_a(&ring, &bytes);
    row_store *rs = NULL, *replayed = NULL;
    assert_int_equal(row_store_create(&(row_store_opts){.name = "a"}, &rs), PS_STATUS_OK);
    assert_int_equal(row_store_create(&(row_store_opts){.name = "r"}, &replayed), PS_STATUS_OK);
    const table_spec spec = {.dim = 2,
                             .init = TABLE_INIT_NORMAL,
                             .init_scale = 0.5f,
                             .seed = 3,
                             .optimizer = OPTIM_ADAGRAD};
    enum { N = 3000 };
    uint64_t *ids = malloc(N * sizeof *ids);
    float *before = malloc(N * 2 * sizeof *before), *after = malloc(N * 2 * sizeof *after);
    assert_true(ids && before && after);
    uint64_t tk = ps_key_table("m", "emb");
    size_t owned = 0;
    for (size_t i = 0; i < N; i++) {
        ids[i] = i * 7919 + 1;
        owned += placement_owns_any(p, ps_key_row_in(tk, ids[i]));
    }
    assert_true(owned > 0 && owned < N);
    char err[256];
    assert_int_equal(
        row_store_pull(rs, "m", "emb", &spec, N, ids, before, NULL, NULL, NULL, err, sizeof err),
        PS_STATUS_OK);
    gc_rows_cursor cur = {0};
    uint64_t dropped = 0, total = 0;
    bool more = true;
    /* while an export reads the table its rows stay, and the collection goes on after */
    row_store_pin *pin = NULL;
    assert_int_equal(row_store_pin_create(rs, &pin), PS_STATUS_OK);
    assert_int_equal(row_store_pin_take(pin, NULL, NULL, NULL), PS_STATUS_OK);
    for (int i = 0; i < 2; i++) { /* the table, then the end of the cycle */
        assert_int_equal(gc_rows_pass(rs, p, &cur, 0, &dropped, NULL, &more), PS_STATUS_OK);
        assert_int_equal(dropped, 0);
        assert_true(more);
    }
    row_store_pin_destroy(pin);
    int passes = 0;
    while (more) { /* passes of at most 7 rows */
        assert_int_equal(gc_rows_pass(rs, p, &cur, 7, &dropped, NULL, &more), PS_STATUS_OK);
        assert_true(dropped <= 7);
        total += dropped;
        assert_true(++passes < 10 * N);
    }
    assert_int_equal(total, N - owned);
    uint64_t rows = 0;
    row_store_totals(rs, &rows, NULL);
    assert_int_equal(rows, owned);
    /* the kept rows hold what they held (a pull of a dropped one makes it anew) */
    uint64_t created = 0;
    assert_int_equal(
        row_store_pull(rs, "m", "emb", &spec, N, ids, after, NULL, NULL, &created, err, sizeof err),
        PS_STATUS_OK);
    assert_int_equal(created, N - owned);
    assert_memory_equal(after, before, N * 2 * sizeof *after); /* deterministic initial rows */
    /* the journal record of a removal replays; cut ones and a peer's are refused */
    assert_int_equal(row_store_pull(replayed, "m", "emb", &spec, 3, ids, after, NULL, NULL, NULL,
                                    err, sizeof err),
                     PS_STATUS_OK);
    journal_encoded e;
    assert_int_equal(journal_encode_rows_remove("m", "emb", 2, ids, &e), PS_STATUS_OK);
    uint8_t *rec = malloc(e.len);
    assert_non_null(rec);
    size_t at = 0;
    for (int i = 0; i < e.n_iov; i++) {
        memcpy(rec + at, e.iov[i].iov_base, e.iov[i].iov_len);
        at += e.iov[i].iov_len;
    }
    journal_target t = {.rows = replayed};
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_ROWS_REMOVE, rec, e.len, true, NULL),
                     PS_STATUS_PARSE); /* never from a peer */
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_ROWS_REMOVE, rec, e.len - 1, false, NULL),
                     PS_STATUS_PARSE);
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_ROWS_REMOVE, rec, 8, false, NULL),
                     PS_STATUS_PARSE);
    row_store_totals(replayed, &rows, NULL);
    assert_int_equal(rows, 3);
    assert_int_equal(journal_apply(&t, JOURNAL_TYPE_ROWS_REMOVE, rec, e.len, false, NULL),
                     PS_STATUS_OK);
    row_store_totals(replayed, &rows, NULL);
    assert_int_equal(rows, 1);
    journal_encoded_free(&e);
    free(rec);
    free(ids);
    free(before);
    free(after);
    row_store_destroy(rs);
    row_store_destroy(replayed);
    placement_destroy(p);
    free(bytes);
    hashring_destroy(ring);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_finds_what_a_request_applied),
        cmocka_unit_test(test_dedup_forgets_the_oldest_past_its_bound),
        cmocka_unit_test(test_dedup_check_looks_first_tries_up_only_after_a_retry),
        cmocka_unit_test(test_dedup_bound_and_window),
        cmocka_unit_test(test_dedup_export_and_its_journal_record),
        cmocka_unit_test(test_dedup_export_splits_a_request_at_the_point),
        cmocka_unit_test(test_dedup_request_grows_over_many_calls),
        cmocka_unit_test(test_dedup_forgets_keys_an_image_replaced),
        cmocka_unit_test(test_dedup_forget_marks_are_swept),
        cmocka_unit_test(test_replicator_lost_changes),
        cmocka_unit_test(test_push_subset_slices_values_across_pieces),
        cmocka_unit_test(test_subset_keeps_the_primary_versions),
        cmocka_unit_test(test_forwarded_copies_apply_only_what_was_not_applied),
        cmocka_unit_test(test_inbox_streams),
        cmocka_unit_test(test_inbox_one_call_per_stream_at_a_time),
        cmocka_unit_test(test_inbox_applies_batches_in_order),
        cmocka_unit_test(test_routing_with_a_pending_ring),
        cmocka_unit_test(test_gc_drops_only_chunks_owned_by_no_role),
        cmocka_unit_test(test_gc_drops_only_rows_owned_by_no_role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
