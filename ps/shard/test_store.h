/* test_store.h: helpers shared by the chunk store's unit tests (test_store.c,
 * test_store_faults.c): a store over a fresh log, one-call pushes, and a snapshot of
 * everything a failed push must leave as it was. Header-only, tests only. */
#ifndef PS_SHARD_TEST_STORE_H
#define PS_SHARD_TEST_STORE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "store.h"
#include "update_log.h"

#define TEST_START_SEQ 5000
#define TEST_MAX_KEYS 64

typedef struct fixture {
    update_log *log;
    store *store;
} fixture;

static inline fixture fixture_make(uint64_t max_bytes) {
    fixture f = {0};
    update_log_opts lo = {.start_seq = TEST_START_SEQ};
    assert_int_equal(update_log_create(&lo, &f.log), PS_STATUS_OK);
    store_opts so = {.log = f.log, .max_bytes = max_bytes};
    assert_int_equal(store_create(&so, &f.store), PS_STATUS_OK);
    return f;
}

static inline void fixture_free(fixture *f) {
    store_destroy(f->store);
    update_log_destroy(f->log);
}

/* Pushes n keys of `len` floats each; key i gets values base + i*len + k. Returns the
 * status of prepare, else of apply; err gets the message. */
static inline ps_status push_uniform(fixture *f, update_log_op op, size_t n, const uint64_t *keys,
                                     uint32_t len, float base, const char *const *names,
                                     uint64_t *ret_versions, char *err, size_t err_len) {
    uint32_t lengths[TEST_MAX_KEYS];
    float *values = calloc((size_t)n * len + 1, sizeof *values);
    assert_non_null(values);
    assert_true(n <= TEST_MAX_KEYS);
    for (size_t i = 0; i < n; i++) {
        lengths[i] = len;
        for (uint32_t k = 0; k < len; k++)
            values[i * len + k] = base + (float)(i * len + k);
    }
    store_push p = {.op = op,
                    .n = n,
                    .keys = keys,
                    .lengths = lengths,
                    .values = (const uint8_t *)values,
                    .values_len = n * len * sizeof(float),
                    .names = names};
    store_batch *b = NULL;
    ps_status st = store_batch_prepare(f->store, &p, &b, err, err_len);
    if (st == PS_STATUS_OK)
        st = store_batch_apply(f->store, b, ret_versions, NULL, err, err_len);
    store_batch_destroy(b);
    free(values);
    return st;
}

/* Everything a refused push must leave unchanged. */
typedef struct snapshot {
    store_stats stats;
    update_log_stats log;
    uint32_t lengths[TEST_MAX_KEYS];
    uint64_t versions[TEST_MAX_KEYS];
    float *values;
    size_t values_len;
} snapshot;

static inline snapshot snapshot_take(fixture *f, size_t n, const uint64_t *keys) {
    snapshot s = {0};
    store_get_stats(f->store, &s.stats);
    update_log_get_stats(f->log, &s.log);
    store_stat(f->store, n, keys, s.lengths, s.versions);
    /* values of the keys that exist, in order */
    uint64_t present[TEST_MAX_KEYS];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (s.lengths[i])
            present[m++] = keys[i];
    uint32_t lens[TEST_MAX_KEYS];
    uint64_t vers[TEST_MAX_KEYS];
    assert_int_equal(store_read(f->store, m, present, UINT64_MAX, lens, vers, &s.values,
                                &s.values_len, NULL, NULL, 0),
                     PS_STATUS_OK);
    return s;
}

static inline void snapshot_assert_same(const snapshot *a, const snapshot *b) {
    assert_memory_equal(&a->stats, &b->stats, sizeof a->stats);
    assert_memory_equal(&a->log, &b->log, sizeof a->log);
    assert_memory_equal(a->lengths, b->lengths, sizeof a->lengths);
    assert_memory_equal(a->versions, b->versions, sizeof a->versions);
    assert_int_equal(a->values_len, b->values_len);
    assert_memory_equal(a->values, b->values, a->values_len);
}

static inline void snapshot_free(snapshot *s) {
    free(s->values);
}

#endif
