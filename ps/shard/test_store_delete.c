/* test_store_delete.c: deleting chunks (a model version's, issue 7): present, absent
 * and repeated keys, the memory and quota given back, and the open-addressing table's
 * probe chains kept whole by backward-shift deletion (white-box), also against a plain
 * model of random ASSIGNs and deletes. */
#include <math.h>

#include "shard_limits.h"
#include "store_internal.h" /* white-box checks of the table */
#include "test_store.h"

static const uint64_t KEYS[] = {11, 22, 33, 44};

static void stat1(fixture *f, uint64_t key, uint32_t *ret_len, uint64_t *ret_version) {
    store_stat(f->store, 1, &key, ret_len, ret_version);
}

static void test_delete_frees_keys_and_skips_absent_ones(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    char err[256];
    const char *names[] = {"m/t#0", "m/t#1", "m/t#2"};
    uint64_t v[3];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 3, KEYS, 4, 0, names, v, err, 256),
                     PS_STATUS_OK);
    store_stats before;
    store_get_stats(f.store, &before);
    update_log_stats log_before;
    update_log_get_stats(f.log, &log_before);

    /* one held key, one never pushed, the held one again: freed once */
    const uint64_t del[] = {KEYS[1], 999, KEYS[1]};
    uint64_t deleted = 77, bytes = 77;
    store_delete(f.store, 3, del, &deleted, &bytes);
    assert_int_equal(deleted, 1);
    assert_int_equal(bytes, 4 * sizeof(float));
    store_stats s;
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 2);
    assert_int_equal(s.bytes, 8 * sizeof(float));
    assert_int_equal(s.seq, before.seq); /* a delete is not an update */
    update_log_stats log_after;
    update_log_get_stats(f.log, &log_after);
    assert_memory_equal(&log_before, &log_after, sizeof log_before);

    uint32_t len = 9;
    uint64_t ver = 9;
    stat1(&f, KEYS[1], &len, &ver);
    assert_int_equal(len, 0);
    assert_int_equal(ver, 0);
    uint32_t lens[3];
    uint64_t vers[3];
    float *vals = NULL;
    size_t vlen = 0;
    assert_int_equal(
        store_read(f.store, 1, KEYS + 1, 1 << 20, lens, vers, &vals, &vlen, NULL, err, 256),
        PS_STATUS_NOT_FOUND);
    assert_null(vals);
    /* the others are untouched */
    const uint64_t kept[] = {KEYS[0], KEYS[2]};
    assert_int_equal(
        store_read(f.store, 2, kept, 1 << 20, lens, vers, &vals, &vlen, NULL, err, 256),
        PS_STATUS_OK);
    assert_int_equal(vers[0], v[0]);
    assert_int_equal(vers[1], v[2]);
    assert_true(vals[0] == 0 && vals[3] == 3 && vals[4] == 8 && vals[7] == 11);
    free(vals);

    /* an ADD to it is refused like one to a key never assigned */
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ADD, 1, KEYS + 1, 4, 0, NULL, NULL, err, 256),
                     PS_STATUS_NOT_FOUND);

    /* a retry frees nothing; NULL results are allowed */
    store_delete(f.store, 3, del, &deleted, &bytes);
    assert_int_equal(deleted, 0);
    assert_int_equal(bytes, 0);
    store_delete(f.store, 3, del, NULL, NULL);
    store_delete(f.store, 0, NULL, &deleted, &bytes);
    assert_int_equal(deleted, 0);

    /* ASSIGNed again, with another length even: a new chunk, no name, a newer version */
    assert_int_equal(
        push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, KEYS + 1, 3, 5, NULL, vers, err, 256),
        PS_STATUS_OK);
    assert_true(vers[0] > v[2]);
    update_log_entry *e = NULL;
    assert_int_equal(update_log_read(f.log, vers[0] - 1, 0, &e, NULL), UPDATE_LOG_READ_ENTRY);
    assert_int_equal(e->prev_version, 0); /* created by that update */
    update_log_entry_unref(e);
    stat1(&f, KEYS[1], &len, &ver);
    assert_int_equal(len, 3);
    assert_int_equal(ver, vers[0]);
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 3);
    assert_int_equal(s.bytes, 11 * sizeof(float));

    /* everything, then nothing is left */
    store_delete(f.store, 4, KEYS, &deleted, &bytes);
    assert_int_equal(deleted, 3);
    assert_int_equal(bytes, 11 * sizeof(float));
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 0);
    assert_int_equal(s.bytes, 0);
    fixture_free(&f);
}

static void test_delete_gives_the_quota_back(void **state) {
    (void)state;
    fixture f = fixture_make(8 * sizeof(float));
    char err[256];
    assert_int_equal(push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 2, KEYS, 4, 0, NULL, NULL, err, 256),
                     PS_STATUS_OK);
    assert_int_equal(
        push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, KEYS + 2, 4, 0, NULL, NULL, err, 256),
        PS_STATUS_RESOURCE_EXHAUSTED);
    uint64_t deleted = 0, bytes = 0;
    store_delete(f.store, 1, KEYS, &deleted, &bytes);
    assert_int_equal(deleted, 1);
    assert_int_equal(bytes, 4 * sizeof(float));
    assert_int_equal(
        push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, KEYS + 2, 4, 0, NULL, NULL, err, 256),
        PS_STATUS_OK);
    store_stats s;
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 2);
    assert_int_equal(s.bytes, 8 * sizeof(float));
    fixture_free(&f);
}

/* Mirrors slot_of in store.c, to build keys that share home slots; the test asserts
 * below that they really form one run, so a change of hash shows here. */
static size_t home_slot(uint64_t key, size_t cap) {
    return (size_t)(key * 0x9E3779B97F4A7C15ull >> 7) & (cap - 1);
}

#define CHAIN_CAP 1024u   /* the store's first table: no growth below 512 keys */
#define CHAIN_CLUSTER 60u /* keys homed on the last 3 slots and the first 2: wraps */
#define CHAIN_SPREAD 400u /* other keys, anywhere */
#define CHAIN_KEYS (CHAIN_CLUSTER + CHAIN_SPREAD)

/* Pushes keys[0..n) ASSIGN, one float each, 64 at a time; versions into ret_versions. */
static void push_many(fixture *f, size_t n, const uint64_t *keys, uint64_t *ret_versions) {
    char err[256];
    for (size_t i = 0; i < n; i += TEST_MAX_KEYS) {
        size_t m = n - i < TEST_MAX_KEYS ? n - i : TEST_MAX_KEYS;
        ps_status st = push_uniform(f, UPDATE_LOG_OP_ASSIGN, m, keys + i, 1, (float)i, NULL,
                                    ret_versions + i, err, sizeof err);
        if (st != PS_STATUS_OK)
            fail_msg("push of keys %zu..%zu: %s", i, i + m, err);
    }
}

/* Every key is held with its version, or absent when gone[i]. */
static void assert_held(fixture *f, size_t n, const uint64_t *keys, const uint64_t *versions,
                        const bool *gone) {
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        uint64_t ver;
        stat1(f, keys[i], &len, &ver);
        if (gone[i] ? len != 0 || ver != 0 : len != 1 || ver != versions[i])
            fail_msg("key %zu (%016llx, home %zu): length %u version %llu, want %s", i,
                     (unsigned long long)keys[i], home_slot(keys[i], CHAIN_CAP), len,
                     (unsigned long long)ver, gone[i] ? "absent" : "held");
    }
}

static void test_delete_keeps_probe_chains_whole(void **state) {
    (void)state;
    fixture f = fixture_make(0);
    static uint64_t keys[CHAIN_KEYS], versions[CHAIN_KEYS];
    static bool gone[CHAIN_KEYS];
    size_t n = 0;
    for (uint64_t k = 1000000; n < CHAIN_CLUSTER; k++) {
        size_t h = home_slot(k, CHAIN_CAP);
        if (h >= CHAIN_CAP - 3 || h < 2)
            keys[n++] = k;
    }
    for (uint64_t k = 1; n < CHAIN_KEYS; k++)
        keys[n++] = k * 7919u;
    memset(gone, 0, sizeof gone);
    push_many(&f, CHAIN_KEYS, keys, versions);
    {
        /* white box: the cluster is one run across the end of the table */
        const store *s = f.store;
        assert_int_equal(s->cap, CHAIN_CAP);
        for (size_t i = CHAIN_CAP - 3; i < CHAIN_CAP + CHAIN_CLUSTER - 3; i++)
            assert_non_null(s->slots[i & (CHAIN_CAP - 1)]);
    }
    assert_held(&f, CHAIN_KEYS, keys, versions, gone);

    /* every third key, in two calls, the second backwards */
    uint64_t del[CHAIN_KEYS];
    size_t nd = 0;
    for (size_t i = 0; i < CHAIN_KEYS; i += 3)
        del[nd++] = keys[i];
    for (size_t a = nd / 2, b = nd - 1; a < b; a++, b--) {
        uint64_t t = del[a];
        del[a] = del[b];
        del[b] = t;
    }
    uint64_t deleted = 0, bytes = 0, d2 = 0, b2 = 0;
    store_delete(f.store, nd / 2, del, &deleted, &bytes);
    store_delete(f.store, nd - nd / 2, del + nd / 2, &d2, &b2);
    assert_int_equal(deleted + d2, nd);
    assert_int_equal(bytes + b2, nd * sizeof(float));
    for (size_t i = 0; i < CHAIN_KEYS; i += 3)
        gone[i] = true;
    assert_held(&f, CHAIN_KEYS, keys, versions, gone);
    store_stats s;
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, CHAIN_KEYS - nd);
    assert_int_equal(s.bytes, (CHAIN_KEYS - nd) * sizeof(float));

    /* the deleted keys come back; then everything is deleted, one key at a time */
    uint64_t again[CHAIN_KEYS];
    push_many(&f, nd, del, again);
    for (size_t i = 0; i < nd; i++) {
        size_t at = 0;
        while (keys[at] != del[i])
            at++;
        versions[at] = again[i];
        gone[at] = false;
    }
    assert_held(&f, CHAIN_KEYS, keys, versions, gone);
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, CHAIN_KEYS);
    for (size_t i = 0; i < CHAIN_KEYS; i++) {
        size_t at = (i * 7) % CHAIN_KEYS; /* 7 and 460 are coprime: a permutation */
        store_delete(f.store, 1, keys + at, &deleted, NULL);
        assert_int_equal(deleted, 1);
        gone[at] = true;
        if (i % 50 == 0)
            assert_held(&f, CHAIN_KEYS, keys, versions, gone);
    }
    store_get_stats(f.store, &s);
    assert_int_equal(s.keys, 0);
    assert_int_equal(s.bytes, 0);
    for (size_t i = 0; i < CHAIN_CAP; i++)
        assert_null(f.store->slots[i]);
    fixture_free(&f);
}

/* Half the keys are multiples of 2^20, which all share home slot 0 (one long run), the
 * other half spread out. */
static uint64_t model_key(size_t i) {
    return i % 2 ? (uint64_t)i << 20 : (uint64_t)i;
}

/* Random ASSIGNs and deletes over a small key space, across table growth, checked
 * against a plain array after every step. */
static void test_delete_random_against_a_model(void **state) {
    (void)state;
    enum { UNIVERSE = 1500, STEPS = 6000 };
    fixture f = fixture_make(0);
    static uint64_t model_ver[UNIVERSE];
    static uint32_t model_len[UNIVERSE];
    memset(model_ver, 0, sizeof model_ver);
    memset(model_len, 0, sizeof model_len);
    uint64_t held = 0, bytes = 0, rng = 88172645463325252ull;
    char err[256];
    for (int step = 0; step < STEPS; step++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        size_t k = (size_t)(rng % UNIVERSE);
        uint64_t key = model_key(k);
        if ((rng >> 32) % 3 != 0) {
            uint32_t len = model_len[k] ? model_len[k] : (uint32_t)(1 + (rng >> 40) % 4);
            uint64_t ver;
            assert_int_equal(
                push_uniform(&f, UPDATE_LOG_OP_ASSIGN, 1, &key, len, 0, NULL, &ver, err, 256),
                PS_STATUS_OK);
            if (!model_len[k]) {
                held++;
                bytes += len * sizeof(float);
            }
            model_len[k] = len;
            model_ver[k] = ver;
        } else {
            uint64_t deleted, freed;
            store_delete(f.store, 1, &key, &deleted, &freed);
            assert_int_equal(deleted, model_len[k] ? 1 : 0);
            assert_int_equal(freed, model_len[k] * sizeof(float));
            if (model_len[k]) {
                held--;
                bytes -= model_len[k] * sizeof(float);
            }
            model_len[k] = 0;
            model_ver[k] = 0;
        }
        if (step % 500 == 0 || step == STEPS - 1) {
            for (size_t i = 0; i < UNIVERSE; i++) {
                uint32_t len;
                uint64_t ver;
                stat1(&f, model_key(i), &len, &ver);
                if (len != model_len[i] || ver != model_ver[i])
                    fail_msg("step %d key %zu: length %u version %llu, want %u %llu", step, i, len,
                             (unsigned long long)ver, model_len[i],
                             (unsigned long long)model_ver[i]);
            }
            store_stats s;
            store_get_stats(f.store, &s);
            assert_int_equal(s.keys, held);
            assert_int_equal(s.bytes, bytes);
        }
    }
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_frees_keys_and_skips_absent_ones),
        cmocka_unit_test(test_delete_gives_the_quota_back),
        cmocka_unit_test(test_delete_keeps_probe_chains_whole),
        cmocka_unit_test(test_delete_random_against_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
