/* test_sync_dedup.c: the request ids a sync sends with each batch of images: only the
 * requests that applied to the batch's keys, only the keys accepted, one record per
 * request and batch, the cost known before an image joins, a staged image carried over
 * a flush, and the point respected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journal.h"
#include "sync_dedup.h"

typedef struct got_record {
    uint64_t id;
    size_t n;
    uint64_t keys[8];
} got_record;

typedef struct got {
    got_record r[16];
    size_t n;
} got;

static ps_status collect(void *arg, uint64_t id, size_t n, const uint64_t *keys) {
    got *g = arg;
    assert_true(g->n < 16 && n <= 8);
    g->r[g->n].id = id;
    g->r[g->n].n = n;
    memcpy(g->r[g->n].keys, keys, n * sizeof *keys);
    g->n++;
    return PS_STATUS_OK;
}

static bool not_99(void *arg, uint64_t key) {
    (void)arg;
    return key != 99;
}

static const got_record *find(const got *g, uint64_t id) {
    for (size_t i = 0; i < g->n; i++)
        if (g->r[i].id == id)
            return &g->r[i];
    return NULL;
}

static void test_records_follow_their_images(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    const uint64_t a[] = {10, 20, 99}, b[] = {20, 30}, late[] = {10};
    assert_int_equal(dedup_record(d, 1, 3, a, 5), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 2, 2, b, 6), PS_STATUS_OK);
    assert_int_equal(dedup_record(d, 3, 1, late, 9), PS_STATUS_OK); /* after the point */
    sync_dedup *sd = NULL;
    assert_int_equal(sync_dedup_export(d, 8, 8, &sd), PS_STATUS_OK);
    assert_int_equal(sync_dedup_index(sd, not_99, NULL), PS_STATUS_OK);

    size_t recs = 0, bytes = 0;
    const uint64_t img1[] = {20};
    assert_int_equal(sync_dedup_stage(sd, 1, img1, &recs, &bytes), PS_STATUS_OK);
    assert_int_equal(recs, 2); /* requests 1 and 2 applied to 20 */
    assert_int_equal(bytes, 2 * (8 + JOURNAL_DEDUP_HEAD) + 2 * 8);
    sync_dedup_commit(sd);
    const uint64_t img2[] = {10, 40, 99};
    assert_int_equal(sync_dedup_stage(sd, 3, img2, &recs, &bytes), PS_STATUS_OK);
    assert_int_equal(recs, 0); /* request 1 has its record in the batch; 99 not accepted */
    assert_int_equal(bytes, 8);
    sync_dedup_commit(sd);
    sync_dedup_pending(sd, &recs, &bytes);
    assert_int_equal(recs, 2);
    assert_int_equal(bytes, 2 * (8 + JOURNAL_DEDUP_HEAD) + 3 * 8);

    /* the next image is staged, the batch goes, the staged image starts the next one */
    const uint64_t img3[] = {30};
    assert_int_equal(sync_dedup_stage(sd, 1, img3, &recs, &bytes), PS_STATUS_OK);
    assert_int_equal(recs, 0); /* request 2 is in this batch already */
    got g = {0};
    assert_int_equal(sync_dedup_flush(sd, collect, &g), PS_STATUS_OK);
    assert_int_equal(g.n, 2);
    const got_record *r1 = find(&g, 1), *r2 = find(&g, 2);
    assert_non_null(r1);
    assert_non_null(r2);
    assert_int_equal(r1->n, 2); /* 10 and 20, not 99, nothing of request 3 */
    assert_int_equal(r1->keys[0] + r1->keys[1], 30);
    assert_int_equal(r2->n, 1);
    assert_int_equal(r2->keys[0], 20);
    assert_null(find(&g, 3));
    sync_dedup_pending(sd, &recs, &bytes);
    assert_int_equal(recs, 0);
    sync_dedup_commit(sd); /* after the flush: a record of its own again */
    sync_dedup_pending(sd, &recs, &bytes);
    assert_int_equal(recs, 1);
    memset(&g, 0, sizeof g);
    assert_int_equal(sync_dedup_flush(sd, collect, &g), PS_STATUS_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.r[0].id, 2);
    assert_int_equal(g.r[0].n, 1);
    assert_int_equal(g.r[0].keys[0], 30);
    memset(&g, 0, sizeof g);
    assert_int_equal(sync_dedup_flush(sd, collect, &g), PS_STATUS_OK); /* empty */
    assert_int_equal(g.n, 0);
    sync_dedup_destroy(sd);
    dedup_destroy(d);
}

/* Keys no request applied to cost nothing; no request memory at all works too. */
static void test_nothing_remembered(void **state) {
    (void)state;
    dedup *d = NULL;
    assert_int_equal(dedup_create(0, &d), PS_STATUS_OK);
    sync_dedup *sd = NULL;
    assert_int_equal(sync_dedup_export(d, 100, 8, &sd), PS_STATUS_OK);
    assert_int_equal(sync_dedup_index(sd, NULL, NULL), PS_STATUS_OK);
    const uint64_t img[] = {1, 2, 3};
    size_t recs = 1, bytes = 1;
    assert_int_equal(sync_dedup_stage(sd, 3, img, &recs, &bytes), PS_STATUS_OK);
    assert_int_equal(recs + bytes, 0);
    sync_dedup_commit(sd);
    got g = {0};
    assert_int_equal(sync_dedup_flush(sd, collect, &g), PS_STATUS_OK);
    assert_int_equal(g.n, 0);
    sync_dedup_destroy(sd);
    sync_dedup_destroy(NULL);
    dedup_destroy(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_follow_their_images),
        cmocka_unit_test(test_nothing_remembered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
