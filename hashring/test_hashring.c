/* test_hashring.c: unit tests of the consistent-hash ring (cmocka).
 *
 * The placement properties are checked key by key over many keys, not statistically:
 * adding a node only moves keys to it, removing one only moves its keys, owner lists
 * change by one insertion or removal, and the same members give the same ring in any
 * add order. Lookups are also compared with a brute-force ring rebuilt here from the
 * documented vnode encoding, which exercises the bucket table, scans and wrap-around.
 * Parsing is fed every truncation, byte flips and random bytes, each in an exactly
 * sized heap buffer so that the sanitizer build catches any over-read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "hashring.h"

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static hashring *ring_new(uint32_t vpw) {
    hashring *ring = NULL;
    assert_int_equal(hashring_create(vpw, &ring), PS_STATUS_OK);
    assert_non_null(ring);
    return ring;
}

static void ring_add_named(hashring *ring, unsigned num, uint32_t weight) {
    char id[32];
    char addr[32];
    snprintf(id, sizeof(id), "node-%02u", num);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", 7000 + num);
    assert_int_equal(hashring_add(ring, id, addr, weight), PS_STATUS_OK);
}

/* A ring of nodes "node-00".."node-(n-1)", weight 1. */
static hashring *ring_of(uint32_t vpw, unsigned n) {
    hashring *ring = ring_new(vpw);
    for (unsigned i = 0; i < n; i++) {
        ring_add_named(ring, i, 1);
    }
    return ring;
}

static const char *node_id(const hashring *ring, uint32_t index) {
    hashring_node_info info;
    assert_true(hashring_node_at(ring, index, &info));
    return info.id;
}

/* map[i] = index in `to` of member i of `from`, UINT32_MAX when `to` lacks it. */
static uint32_t *index_map(const hashring *from, const hashring *to) {
    const uint32_t n = hashring_node_count(from);
    uint32_t *map = calloc(n + 1, sizeof(*map));
    assert_non_null(map);
    for (uint32_t i = 0; i < n; i++) {
        if (!hashring_find(to, node_id(from, i), &map[i])) {
            map[i] = UINT32_MAX;
        }
    }
    return map;
}

static uint64_t key_hash(uint64_t key) {
    return hashring_hash(&key, sizeof(key));
}

static unsigned char *serialize(const hashring *ring, size_t *ret_len) {
    size_t len = 0;
    assert_int_equal(hashring_serialize(ring, NULL, 0, &len), PS_STATUS_RESOURCE_EXHAUSTED);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    size_t len2 = 0;
    assert_int_equal(hashring_serialize(ring, buf, len, &len2), PS_STATUS_OK);
    assert_int_equal(len, len2);
    *ret_len = len;
    return buf;
}

/* Parses a copy of buf[0..len) in a buffer of exactly len bytes. */
static ps_status parse_exact(const unsigned char *buf, size_t len, hashring **ret_ring) {
    unsigned char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0) {
        memcpy(copy, buf, len);
    }
    ps_status st = hashring_parse(len > 0 ? copy : NULL, len, ret_ring);
    free(copy);
    return st;
}

/* Same primary and owner lists (as indices) for nkeys keys. */
static void assert_same_lookups(const hashring *a, const hashring *b, uint32_t nkeys,
                                uint64_t seed) {
    uint64_t state = seed;
    for (uint32_t k = 0; k < nkeys; k++) {
        const uint64_t h = key_hash(splitmix64(&state));
        assert_int_equal(hashring_primary(a, h), hashring_primary(b, h));
        uint32_t oa[HASHRING_MAX_REPLICAS];
        uint32_t ob[HASHRING_MAX_REPLICAS];
        const uint32_t na = hashring_owners(a, h, HASHRING_MAX_REPLICAS, oa);
        const uint32_t nb = hashring_owners(b, h, HASHRING_MAX_REPLICAS, ob);
        assert_int_equal(na, nb);
        assert_memory_equal(oa, ob, na * sizeof(uint32_t));
    }
}

/* ------------------------------------------------------------------------------------ */
/* A brute-force reference ring built from the documented vnode encoding. */

typedef struct ref_point {
    uint64_t hash;
    uint32_t owner;
} ref_point;

typedef struct ref_ring {
    ref_point *points;
    uint32_t n;
    uint32_t nodes;
} ref_ring;

static int ref_point_cmp(const void *a, const void *b) {
    const ref_point *pa = a;
    const ref_point *pb = b;
    if (pa->hash != pb->hash) {
        return pa->hash < pb->hash ? -1 : 1;
    }
    return pa->owner < pb->owner ? -1 : pa->owner > pb->owner;
}

static ref_ring ref_build(const hashring *ring) {
    ref_ring ref = {0};
    ref.nodes = hashring_node_count(ring);
    const uint32_t vpw = hashring_vnodes_per_weight(ring);
    for (uint32_t i = 0; i < ref.nodes; i++) {
        hashring_node_info info;
        assert_true(hashring_node_at(ring, i, &info));
        ref.n += info.weight * vpw;
    }
    ref.points = calloc(ref.n + 1, sizeof(*ref.points));
    assert_non_null(ref.points);
    uint32_t k = 0;
    for (uint32_t i = 0; i < ref.nodes; i++) {
        hashring_node_info info;
        assert_true(hashring_node_at(ring, i, &info));
        const size_t id_len = strlen(info.id);
        for (uint32_t v = 0; v < info.weight * vpw; v++) {
            unsigned char buf[HASHRING_ID_MAX + 5];
            memcpy(buf, info.id, id_len);
            buf[id_len] = 0;
            for (int b = 0; b < 4; b++) {
                buf[id_len + 1 + b] = (unsigned char)(v >> (8 * b));
            }
            ref.points[k].hash = XXH3_64bits(buf, id_len + 5);
            ref.points[k].owner = i;
            k++;
        }
    }
    qsort(ref.points, ref.n, sizeof(*ref.points), ref_point_cmp);
    return ref;
}

/* Index of the first point at or after h (binary search, wrapping to 0). */
static uint32_t ref_successor(const ref_ring *ref, uint64_t h) {
    uint32_t lo = 0;
    uint32_t hi = ref->n;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (ref->points[mid].hash < h) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == ref->n ? 0 : lo;
}

static uint32_t ref_owners(const ref_ring *ref, uint64_t h, uint32_t r, uint32_t *out) {
    uint32_t len = 0;
    if (r > ref->nodes) {
        r = ref->nodes;
    }
    for (uint32_t i = ref_successor(ref, h), steps = 0; len < r && steps < ref->n;
         i = (i + 1) % ref->n, steps++) {
        const uint32_t o = ref->points[i].owner;
        bool seen = false;
        for (uint32_t j = 0; j < len; j++) {
            seen = seen || out[j] == o;
        }
        if (!seen) {
            out[len++] = o;
        }
    }
    return len;
}

static void check_against_reference(const hashring *ring, uint32_t nkeys, uint64_t seed) {
    ref_ring ref = ref_build(ring);
    uint64_t state = seed;
    /* random keys, the extremes, and each point's hash and its neighbours */
    const uint32_t total = nkeys + 2 + 3 * ref.n;
    for (uint32_t k = 0; k < total; k++) {
        uint64_t h;
        if (k < nkeys) {
            h = key_hash(splitmix64(&state));
        } else if (k == nkeys) {
            h = 0;
        } else if (k == nkeys + 1) {
            h = UINT64_MAX;
        } else {
            const uint32_t j = k - nkeys - 2;
            h = ref.points[j / 3].hash + (uint64_t)(j % 3) - 1; /* p-1, p, p+1 */
        }
        uint32_t want[HASHRING_MAX_REPLICAS];
        uint32_t got[HASHRING_MAX_REPLICAS];
        const uint32_t nw = ref_owners(&ref, h, HASHRING_MAX_REPLICAS, want);
        const uint32_t ng = hashring_owners(ring, h, HASHRING_MAX_REPLICAS, got);
        assert_int_equal(ng, nw);
        assert_memory_equal(got, want, nw * sizeof(uint32_t));
        assert_int_equal(hashring_primary(ring, h), ref.points[ref_successor(&ref, h)].owner);
    }
    free(ref.points);
}

/* ------------------------------------------------------------------------------------ */
/* Tests */

static void test_empty_ring(void **state) {
    (void)state;
    hashring_destroy(NULL);
    assert_int_equal(hashring_create(0, NULL), PS_STATUS_INVALID_ARGUMENT);
    hashring *ring = ring_new(0);
    assert_int_equal(hashring_vnodes_per_weight(ring), HASHRING_DEFAULT_VNODES);
    assert_int_equal(hashring_node_count(ring), 0);
    assert_int_equal(hashring_epoch(ring), 0);
    uint32_t owners[HASHRING_MAX_REPLICAS];
    for (uint64_t h = 0; h < 1000; h++) {
        const uint64_t kh = key_hash(h);
        assert_int_equal(hashring_primary(ring, kh), UINT32_MAX);
        assert_int_equal(hashring_owners(ring, kh, 3, owners), 0);
    }
    assert_int_equal(hashring_primary(ring, 0), UINT32_MAX);
    assert_int_equal(hashring_primary(ring, UINT64_MAX), UINT32_MAX);
    assert_int_equal(hashring_owners(ring, UINT64_MAX, 8, owners), 0);
    hashring_node_info info;
    assert_false(hashring_node_at(ring, 0, &info));
    assert_false(hashring_find(ring, "node-00", NULL));

    /* back to empty after add + remove */
    ring_add_named(ring, 1, 1);
    assert_int_not_equal(hashring_primary(ring, 12345), UINT32_MAX);
    assert_int_equal(hashring_remove(ring, "node-01"), PS_STATUS_OK);
    assert_int_equal(hashring_primary(ring, 12345), UINT32_MAX);
    assert_int_equal(hashring_owners(ring, 12345, 3, owners), 0);
    assert_int_equal(hashring_epoch(ring), 2);
    hashring_destroy(ring);
}

static void test_single_node(void **state) {
    (void)state;
    hashring *ring = ring_of(50, 1);
    uint32_t owners[HASHRING_MAX_REPLICAS];
    uint64_t s = 7;
    for (int k = 0; k < 10000; k++) {
        const uint64_t h = splitmix64(&s);
        assert_int_equal(hashring_primary(ring, h), 0);
        assert_int_equal(hashring_owners(ring, h, 3, owners), 1);
        assert_int_equal(owners[0], 0);
    }
    hashring_destroy(ring);
}

static void test_matches_reference(void **state) {
    (void)state;
    /* few points (long scans, wrap past the last point), mixed weights, many points */
    const struct {
        uint32_t vpw;
        unsigned nodes;
    } cases[] = {{1, 1}, {1, 3}, {3, 5}, {16, 9}, {100, 10}, {1000, 10}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        hashring *ring = ring_new(cases[c].vpw);
        for (unsigned i = 0; i < cases[c].nodes; i++) {
            ring_add_named(ring, i, 1 + i % 3);
        }
        check_against_reference(ring, 20000, c + 1);
        hashring_destroy(ring);
    }
}

static void test_order_independent(void **state) {
    (void)state;
    const unsigned n = 9;
    hashring *fwd = ring_new(200);
    hashring *rev = ring_new(200);
    hashring *mix = ring_new(200);
    for (unsigned i = 0; i < n; i++) {
        ring_add_named(fwd, i, 1 + i % 2);
        ring_add_named(rev, n - 1 - i, 1 + (n - 1 - i) % 2);
        const unsigned j = (i * 4) % n; /* 4 is coprime with 9: a permutation */
        ring_add_named(mix, j, 1 + j % 2);
    }
    assert_int_equal(hashring_epoch(fwd), n);
    assert_int_equal(hashring_epoch(rev), n);
    assert_int_equal(hashring_epoch(mix), n);
    for (uint32_t i = 0; i < n; i++) {
        assert_string_equal(node_id(fwd, i), node_id(rev, i));
        assert_string_equal(node_id(fwd, i), node_id(mix, i));
    }
    assert_same_lookups(fwd, rev, 100000, 11);
    assert_same_lookups(fwd, mix, 100000, 12);

    size_t la, lb, lc;
    unsigned char *a = serialize(fwd, &la);
    unsigned char *b = serialize(rev, &lb);
    unsigned char *c = serialize(mix, &lc);
    assert_int_equal(la, lb);
    assert_int_equal(la, lc);
    assert_memory_equal(a, b, la);
    assert_memory_equal(a, c, la);
    free(a);
    free(b);
    free(c);

    /* a remove and re-add gives the same ring again (epoch aside) */
    assert_int_equal(hashring_remove(mix, "node-04"), PS_STATUS_OK);
    ring_add_named(mix, 4, 1);
    assert_same_lookups(fwd, mix, 100000, 13);
    hashring_destroy(fwd);
    hashring_destroy(rev);
    hashring_destroy(mix);
}

static void test_owners_distinct(void **state) {
    (void)state;
    const unsigned sizes[] = {2, 6, 12};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        const unsigned n = sizes[s];
        hashring *ring = ring_of(100, n);
        uint64_t rng = 99 + s;
        for (int k = 0; k < 30000; k++) {
            const uint64_t h = key_hash(splitmix64(&rng));
            const uint32_t primary = hashring_primary(ring, h);
            assert_true(primary < n);
            for (uint32_t r = 0; r <= HASHRING_MAX_REPLICAS + 2; r++) {
                uint32_t owners[HASHRING_MAX_REPLICAS + 2];
                const uint32_t got = hashring_owners(ring, h, r, owners);
                uint32_t want = r < n ? r : n;
                want = want < HASHRING_MAX_REPLICAS ? want : HASHRING_MAX_REPLICAS;
                assert_int_equal(got, want);
                if (got > 0) {
                    assert_int_equal(owners[0], primary);
                }
                for (uint32_t i = 0; i < got; i++) {
                    assert_true(owners[i] < n);
                    for (uint32_t j = 0; j < i; j++) {
                        assert_int_not_equal(owners[i], owners[j]);
                    }
                }
            }
        }
        uint32_t unused[1];
        assert_int_equal(hashring_owners(ring, 1, 0, unused), 0);
        hashring_destroy(ring);
    }
}

/* Adding a node: every key whose primary changed now maps to the new node. */
static void test_add_moves_only_to_new(void **state) {
    (void)state;
    const uint32_t nkeys = 250000;
    hashring *before = ring_of(1000, 10);
    hashring *after = NULL;
    assert_int_equal(hashring_clone(before, &after), PS_STATUS_OK);
    ring_add_named(after, 10, 1);
    uint32_t new_index;
    assert_true(hashring_find(after, "node-10", &new_index));
    uint32_t *map = index_map(before, after);

    uint64_t rng = 2024;
    uint32_t moved = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        const uint64_t h = key_hash(splitmix64(&rng));
        const uint32_t old_p = map[hashring_primary(before, h)];
        const uint32_t new_p = hashring_primary(after, h);
        if (old_p != new_p) {
            assert_int_equal(new_p, new_index);
            moved++;
        }
    }
    /* about 1/11 of the keys move (the new node's share) */
    const double frac = (double)moved / nkeys;
    assert_true(frac > 0.8 / 11 && frac < 1.2 / 11);
    free(map);
    hashring_destroy(before);
    hashring_destroy(after);
}

/* Removing a node: only the removed node's keys move. */
static void test_remove_moves_only_removed(void **state) {
    (void)state;
    const uint32_t nkeys = 250000;
    hashring *before = ring_of(1000, 10);
    hashring *after = NULL;
    assert_int_equal(hashring_clone(before, &after), PS_STATUS_OK);
    assert_int_equal(hashring_remove(after, "node-03"), PS_STATUS_OK);
    uint32_t removed;
    assert_true(hashring_find(before, "node-03", &removed));
    uint32_t *map = index_map(before, after);
    assert_int_equal(map[removed], UINT32_MAX);

    uint64_t rng = 4048;
    uint32_t moved = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        const uint64_t h = key_hash(splitmix64(&rng));
        const uint32_t old_p = hashring_primary(before, h);
        const uint32_t new_p = hashring_primary(after, h);
        if (old_p == removed) {
            assert_true(new_p < hashring_node_count(after));
            moved++;
        } else {
            assert_int_equal(new_p, map[old_p]);
        }
    }
    const double frac = (double)moved / nkeys;
    assert_true(frac > 0.8 / 10 && frac < 1.2 / 10);
    free(map);
    hashring_destroy(before);
    hashring_destroy(after);
}

/* Owner lists: after an add, the new list is the old one with the new node inserted
 * and the last dropped, or unchanged; after a remove, the old one without the removed
 * node and one more at the end, or unchanged. */
static void test_owner_lists_stable(void **state) {
    (void)state;
    const uint32_t nkeys = 200000;
    const uint32_t r = 3;
    hashring *before = ring_of(500, 6);
    hashring *after = NULL;
    assert_int_equal(hashring_clone(before, &after), PS_STATUS_OK);
    ring_add_named(after, 6, 1);
    uint32_t added;
    assert_true(hashring_find(after, "node-06", &added));
    uint32_t *map = index_map(before, after);

    uint64_t rng = 77;
    uint32_t changed = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        const uint64_t h = key_hash(splitmix64(&rng));
        uint32_t old_l[HASHRING_MAX_REPLICAS];
        uint32_t new_l[HASHRING_MAX_REPLICAS];
        assert_int_equal(hashring_owners(before, h, r, old_l), r);
        assert_int_equal(hashring_owners(after, h, r, new_l), r);
        for (uint32_t i = 0; i < r; i++) {
            old_l[i] = map[old_l[i]];
        }
        uint32_t pos = r;
        for (uint32_t i = 0; i < r; i++) {
            if (new_l[i] == added) {
                pos = i;
            }
        }
        if (pos == r) {
            assert_memory_equal(new_l, old_l, r * sizeof(uint32_t));
            continue;
        }
        changed++;
        uint32_t expect[HASHRING_MAX_REPLICAS];
        for (uint32_t i = 0, j = 0; i < r; i++) {
            expect[i] = i == pos ? added : old_l[j++];
        }
        assert_memory_equal(new_l, expect, r * sizeof(uint32_t));
    }
    assert_true(changed > 0);
    free(map);

    /* and back: removing the node restores every old list */
    uint32_t *back = index_map(after, before);
    rng = 77;
    for (uint32_t k = 0; k < nkeys; k++) {
        const uint64_t h = key_hash(splitmix64(&rng));
        uint32_t old_l[HASHRING_MAX_REPLICAS];
        uint32_t new_l[HASHRING_MAX_REPLICAS];
        hashring_owners(after, h, r, old_l);
        hashring_owners(before, h, r, new_l);
        uint32_t expect[HASHRING_MAX_REPLICAS];
        uint32_t len = 0;
        for (uint32_t i = 0; i < r; i++) {
            if (old_l[i] != added) {
                expect[len++] = back[old_l[i]];
            }
        }
        assert_true(len == r || len == r - 1);
        assert_memory_equal(new_l, expect, len * sizeof(uint32_t));
        if (len == r - 1) {
            for (uint32_t i = 0; i < len; i++) {
                assert_int_not_equal(new_l[r - 1], expect[i]);
            }
        }
    }
    free(back);
    hashring_destroy(before);
    hashring_destroy(after);
}

static void test_weights(void **state) {
    (void)state;
    const uint32_t nkeys = 500000;
    hashring *ring = ring_new(1000);
    assert_int_equal(hashring_add(ring, "heavy", "h:1", 2), PS_STATUS_OK);
    for (unsigned i = 0; i < 4; i++) {
        ring_add_named(ring, i, 1);
    }
    uint32_t heavy;
    assert_true(hashring_find(ring, "heavy", &heavy));
    hashring_node_info info;
    assert_true(hashring_node_at(ring, heavy, &info));
    assert_int_equal(info.weight, 2);

    uint32_t counts[5] = {0};
    uint64_t rng = 5;
    for (uint32_t k = 0; k < nkeys; k++) {
        counts[hashring_primary(ring, key_hash(splitmix64(&rng)))]++;
    }
    double light_sum = 0;
    for (uint32_t i = 0; i < 5; i++) {
        if (i != heavy) {
            light_sum += counts[i];
            /* each light node: 1/6 of the keys, give or take 10% */
            assert_true(counts[i] > 0.9 * nkeys / 6 && counts[i] < 1.1 * nkeys / 6);
        }
    }
    const double ratio = counts[heavy] / (light_sum / 4);
    assert_true(ratio > 1.8 && ratio < 2.2);
    hashring_destroy(ring);
}

static void test_epoch(void **state) {
    (void)state;
    hashring *ring = ring_new(10);
    assert_int_equal(hashring_epoch(ring), 0);
    ring_add_named(ring, 1, 1);
    assert_int_equal(hashring_epoch(ring), 1);
    ring_add_named(ring, 2, 3);
    assert_int_equal(hashring_epoch(ring), 2);
    assert_int_equal(hashring_add(ring, "node-01", "x:1", 1), PS_STATUS_ALREADY_EXISTS);
    assert_int_equal(hashring_epoch(ring), 2);
    assert_int_equal(hashring_remove(ring, "nope"), PS_STATUS_NOT_FOUND);
    assert_int_equal(hashring_epoch(ring), 2);
    assert_int_equal(hashring_remove(ring, "node-01"), PS_STATUS_OK);
    assert_int_equal(hashring_epoch(ring), 3);
    hashring_set_epoch(ring, 1000);
    assert_int_equal(hashring_epoch(ring), 1000);
    ring_add_named(ring, 3, 1);
    assert_int_equal(hashring_epoch(ring), 1001);
    hashring_destroy(ring);
}

static void test_errors(void **state) {
    (void)state;
    hashring *ring = ring_new(10);
    char id63[HASHRING_ID_MAX + 1];
    char id64[HASHRING_ID_MAX + 2];
    char addr255[HASHRING_ADDR_MAX + 1];
    char addr256[HASHRING_ADDR_MAX + 2];
    memset(id63, 'a', sizeof(id63) - 1);
    id63[sizeof(id63) - 1] = 0;
    memset(id64, 'b', sizeof(id64) - 1);
    id64[sizeof(id64) - 1] = 0;
    memset(addr255, 'c', sizeof(addr255) - 1);
    addr255[sizeof(addr255) - 1] = 0;
    memset(addr256, 'd', sizeof(addr256) - 1);
    addr256[sizeof(addr256) - 1] = 0;

    assert_int_equal(hashring_add(ring, "a", "x:1", 0), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, "", "x:1", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, NULL, "x:1", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, id64, "x:1", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, "a", "", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, "a", NULL, 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, "a", addr256, 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(NULL, "a", "x:1", 1), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add(ring, "a", "x:1", UINT32_MAX), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(hashring_node_count(ring), 0);
    assert_int_equal(hashring_epoch(ring), 0);

    assert_int_equal(hashring_add(ring, id63, addr255, 1), PS_STATUS_OK);
    assert_int_equal(hashring_add(ring, id63, "x:2", 1), PS_STATUS_ALREADY_EXISTS);
    assert_int_equal(hashring_remove(ring, "unknown"), PS_STATUS_NOT_FOUND);
    assert_int_equal(hashring_remove(ring, NULL), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_remove(NULL, "a"), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_node_count(ring), 1);
    assert_int_equal(hashring_epoch(ring), 1);
    hashring_node_info info;
    assert_true(hashring_node_at(ring, 0, &info));
    assert_string_equal(info.id, id63);
    assert_string_equal(info.addr, addr255);
    assert_false(hashring_node_at(ring, 1, &info));
    assert_false(hashring_node_at(ring, UINT32_MAX, &info));
    assert_false(hashring_find(ring, "unknown", NULL));
    assert_false(hashring_find(ring, NULL, NULL));

    /* past the point bound: the ring is left as it was */
    assert_int_equal(hashring_add(ring, "big", "x:3", HASHRING_MAX_POINTS / 10),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(hashring_node_count(ring), 1);
    assert_int_equal(hashring_epoch(ring), 1);
    assert_int_equal(hashring_primary(ring, 42), 0);

    hashring *big = NULL;
    assert_int_equal(hashring_create(HASHRING_MAX_POINTS + 1, &big), PS_STATUS_INVALID_ARGUMENT);
    assert_null(big);
    assert_int_equal(hashring_clone(NULL, &big), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_clone(ring, NULL), PS_STATUS_INVALID_ARGUMENT);
    hashring_destroy(ring);
}

static void test_node_at_sorted(void **state) {
    (void)state;
    hashring *ring = ring_new(10);
    const char *ids[] = {"zeta", "alpha", "mid", "Alpha", "alpha2", "b"};
    const char *sorted[] = {"Alpha", "alpha", "alpha2", "b", "mid", "zeta"};
    for (size_t i = 0; i < 6; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%zu:80", i);
        assert_int_equal(hashring_add(ring, ids[i], addr, (uint32_t)i + 1), PS_STATUS_OK);
    }
    for (uint32_t i = 0; i < 6; i++) {
        hashring_node_info info;
        assert_true(hashring_node_at(ring, i, &info));
        assert_string_equal(info.id, sorted[i]);
        assert_int_equal(info.index, i);
        uint32_t idx = UINT32_MAX;
        assert_true(hashring_find(ring, sorted[i], &idx));
        assert_int_equal(idx, i);
    }
    hashring_node_info info;
    assert_true(hashring_find(ring, "zeta", NULL));
    assert_true(hashring_node_at(ring, 5, &info));
    assert_string_equal(info.addr, "10.0.0.0:80");
    assert_int_equal(info.weight, 1);
    hashring_destroy(ring);
}

static hashring *sample_ring(void) {
    hashring *ring = ring_new(64);
    for (unsigned i = 0; i < 5; i++) {
        ring_add_named(ring, i, 1 + i);
    }
    hashring_set_epoch(ring, UINT64_C(0x0102030405060708));
    return ring;
}

static void test_serialize_roundtrip(void **state) {
    (void)state;
    hashring *ring = sample_ring();
    size_t need = 0;
    assert_int_equal(hashring_serialize(ring, NULL, 0, &need), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_true(need > 0);
    unsigned char small[8];
    size_t need2 = 0;
    assert_int_equal(hashring_serialize(ring, small, sizeof(small), &need2),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(need2, need);
    assert_int_equal(hashring_serialize(ring, small, sizeof(small), NULL),
                     PS_STATUS_INVALID_ARGUMENT);

    size_t len;
    unsigned char *buf = serialize(ring, &len);
    assert_memory_equal(buf, "PSRG\x01\x00\x00\x00\x08\x07\x06\x05\x04\x03\x02\x01", 16);
    assert_memory_equal(buf + 16, "\x40\x00\x00\x00\x05\x00\x00\x00", 8);
    /* first member: weight 1, "node-00", "127.0.0.1:7000" */
    assert_memory_equal(buf + 24,
                        "\x01\x00\x00\x00\x07\x00node-00\x0e\x00"
                        "127.0.0.1:7000",
                        4 + 2 + 7 + 2 + 14);

    hashring *copy = NULL;
    assert_int_equal(parse_exact(buf, len, &copy), PS_STATUS_OK);
    assert_int_equal(hashring_epoch(copy), hashring_epoch(ring));
    assert_int_equal(hashring_vnodes_per_weight(copy), 64);
    assert_int_equal(hashring_node_count(copy), 5);
    for (uint32_t i = 0; i < 5; i++) {
        hashring_node_info a, b;
        assert_true(hashring_node_at(ring, i, &a));
        assert_true(hashring_node_at(copy, i, &b));
        assert_string_equal(a.id, b.id);
        assert_string_equal(a.addr, b.addr);
        assert_int_equal(a.weight, b.weight);
    }
    assert_same_lookups(ring, copy, 100000, 3);
    size_t len2;
    unsigned char *buf2 = serialize(copy, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);
    hashring_destroy(copy);

    /* empty ring */
    hashring *empty = ring_new(5);
    hashring_set_epoch(empty, 9);
    unsigned char *ebuf = serialize(empty, &len2);
    assert_int_equal(len2, 24);
    assert_int_equal(parse_exact(ebuf, len2, &copy), PS_STATUS_OK);
    assert_int_equal(hashring_node_count(copy), 0);
    assert_int_equal(hashring_epoch(copy), 9);
    assert_int_equal(hashring_vnodes_per_weight(copy), 5);
    assert_int_equal(hashring_primary(copy, 1), UINT32_MAX);
    free(ebuf);
    hashring_destroy(copy);
    hashring_destroy(empty);

    assert_int_equal(hashring_parse(buf, len, NULL), PS_STATUS_INVALID_ARGUMENT);
    free(buf);
    hashring_destroy(ring);
}

static void test_parse_truncated(void **state) {
    (void)state;
    hashring *ring = sample_ring();
    size_t len;
    unsigned char *buf = serialize(ring, &len);
    for (size_t cut = 0; cut < len; cut++) {
        hashring *out = NULL;
        assert_int_equal(parse_exact(buf, cut, &out), PS_STATUS_PARSE);
        assert_null(out);
    }
    /* one trailing byte */
    unsigned char *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    hashring *out = NULL;
    assert_int_equal(parse_exact(longer, len + 1, &out), PS_STATUS_PARSE);
    free(longer);
    free(buf);
    hashring_destroy(ring);
}

static void put_le(unsigned char *p, uint64_t v, int width) {
    for (int k = 0; k < width; k++) {
        p[k] = (unsigned char)(v >> (8 * k));
    }
}

/* Parses a corrupted copy of buf: PARSE, or OK for a ring that serializes back to
 * exactly the corrupted bytes (the format has one encoding per ring). */
static ps_status parse_checked(const unsigned char *buf, size_t len) {
    hashring *out = NULL;
    const ps_status st = parse_exact(buf, len, &out);
    assert_true(st == PS_STATUS_OK || st == PS_STATUS_PARSE);
    if (st == PS_STATUS_OK) {
        size_t len2;
        unsigned char *again = serialize(out, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(again, buf, len);
        free(again);
        hashring_destroy(out);
    } else {
        assert_null(out);
    }
    return st;
}

static void test_parse_corrupt(void **state) {
    (void)state;
    hashring *ring = sample_ring();
    size_t len;
    unsigned char *buf = serialize(ring, &len);
    unsigned char *bad = malloc(len);
    assert_non_null(bad);
    const size_t m0 = 24;                      /* first member */
    const size_t m1 = m0 + 4 + 2 + 7 + 2 + 14; /* second member */

    /* targeted corruptions, each must be rejected */
    const struct {
        size_t off;
        uint64_t value;
        int width;
    } cases[] = {
        {0, 'X', 1},              /* magic */
        {4, 2, 4},                /* version */
        {4, 0, 4},                /* version */
        {16, 0, 4},               /* vnodes_per_weight 0 */
        {16, UINT32_MAX, 4},      /* vnodes_per_weight past the bound */
        {20, 6, 4},               /* count too large: truncated */
        {20, 4, 4},               /* count too small: trailing bytes */
        {20, UINT32_MAX, 4},      /* huge count */
        {m0, 0, 4},               /* weight 0 */
        {m0, UINT32_MAX, 4},      /* weight past the point bound */
        {m0 + 4, 0, 2},           /* empty id */
        {m0 + 4, 64, 2},          /* id too long */
        {m0 + 4, UINT16_MAX, 2},  /* id length past the end */
        {m0 + 6 + 3, 0, 1},       /* NUL inside the id */
        {m0 + 13, 0, 2},          /* empty addr */
        {m0 + 13, UINT16_MAX, 2}, /* addr too long */
        {m0 + 15 + 2, 0, 1},      /* NUL inside the addr */
        {m1 + 6 + 6, '0', 1},     /* "node-01" -> "node-00": duplicate id */
        {m1 + 6 + 4, ',', 1},     /* "node-01" -> "node,01": sorts before "node-00" */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        memcpy(bad, buf, len);
        put_le(bad + cases[c].off, cases[c].value, cases[c].width);
        hashring *out = NULL;
        assert_int_equal(parse_exact(bad, len, &out), PS_STATUS_PARSE);
        assert_null(out);
    }

    /* every byte flipped with several masks: rejected, or a ring that round-trips */
    const unsigned char masks[] = {0x01, 0x10, 0x80, 0xff};
    size_t rejected = 0;
    for (size_t off = 0; off < len; off++) {
        for (size_t k = 0; k < sizeof(masks); k++) {
            memcpy(bad, buf, len);
            bad[off] ^= masks[k];
            rejected += parse_checked(bad, len) == PS_STATUS_PARSE;
        }
    }
    assert_true(rejected > 0);
    free(bad);

    /* random bytes: all rejected */
    uint64_t rng = 31337;
    for (int t = 0; t < 20000; t++) {
        const size_t n = splitmix64(&rng) % 300;
        unsigned char *junk = malloc(n + 1);
        assert_non_null(junk);
        for (size_t i = 0; i < n; i++) {
            junk[i] = (unsigned char)splitmix64(&rng);
        }
        hashring *out = NULL;
        assert_int_equal(parse_exact(junk, n, &out), PS_STATUS_PARSE);
        free(junk);
    }

    /* a valid header followed by random bytes (some short lengths, some small counts) */
    for (int t = 0; t < 20000; t++) {
        const size_t n = 24 + splitmix64(&rng) % 120;
        unsigned char *junk = malloc(n);
        assert_non_null(junk);
        memcpy(junk, buf, 24);
        put_le(junk + 16, 1 + splitmix64(&rng) % 4, 4);
        put_le(junk + 20, splitmix64(&rng) % 4, 4);
        for (size_t i = 24; i < n; i++) {
            uint64_t x = splitmix64(&rng);
            /* bias towards small numbers so lengths and weights are often plausible */
            junk[i] = (x & 3) == 0 ? (unsigned char)(x >> 8) : (unsigned char)((x >> 8) % 8);
        }
        parse_checked(junk, n);
        free(junk);
    }
    free(buf);
    hashring_destroy(ring);
}

static void test_clone_independent(void **state) {
    (void)state;
    hashring *ring = sample_ring();
    hashring *copy = NULL;
    assert_int_equal(hashring_clone(ring, &copy), PS_STATUS_OK);
    assert_ptr_not_equal(ring, copy);
    assert_int_equal(hashring_epoch(copy), hashring_epoch(ring));
    assert_int_equal(hashring_vnodes_per_weight(copy), hashring_vnodes_per_weight(ring));
    assert_same_lookups(ring, copy, 50000, 8);

    size_t la, lb;
    unsigned char *a = serialize(ring, &la);
    ring_add_named(copy, 42, 3);
    assert_int_equal(hashring_remove(copy, "node-00"), PS_STATUS_OK);
    assert_int_equal(hashring_node_count(ring), 5);
    assert_int_equal(hashring_epoch(ring), UINT64_C(0x0102030405060708));
    assert_int_equal(hashring_epoch(copy), UINT64_C(0x0102030405060708) + 2);
    unsigned char *b = serialize(ring, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);

    /* the copy outlives its source */
    hashring *copy2 = NULL;
    assert_int_equal(hashring_clone(ring, &copy2), PS_STATUS_OK);
    hashring *ref = NULL;
    assert_int_equal(hashring_clone(ring, &ref), PS_STATUS_OK);
    hashring_destroy(ring);
    assert_same_lookups(copy2, ref, 50000, 9);
    check_against_reference(copy, 10000, 10);

    /* cloning an empty ring */
    hashring *empty = ring_new(3);
    hashring *ecopy = NULL;
    assert_int_equal(hashring_clone(empty, &ecopy), PS_STATUS_OK);
    assert_int_equal(hashring_node_count(ecopy), 0);
    assert_int_equal(hashring_primary(ecopy, 5), UINT32_MAX);
    hashring_destroy(empty);
    hashring_destroy(ecopy);
    hashring_destroy(copy);
    hashring_destroy(copy2);
    hashring_destroy(ref);
}

static void test_hash(void **state) {
    (void)state;
    const char *s = "model/tensor/0";
    assert_int_equal(hashring_hash(s, strlen(s)), XXH3_64bits(s, strlen(s)));
    assert_int_equal(hashring_hash("", 0), XXH3_64bits("", 0));
    assert_int_not_equal(hashring_hash("a", 1), hashring_hash("b", 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_ring),
        cmocka_unit_test(test_single_node),
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_owners_distinct),
        cmocka_unit_test(test_add_moves_only_to_new),
        cmocka_unit_test(test_remove_moves_only_removed),
        cmocka_unit_test(test_owner_lists_stable),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_epoch),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_node_at_sorted),
        cmocka_unit_test(test_serialize_roundtrip),
        cmocka_unit_test(test_parse_truncated),
        cmocka_unit_test(test_parse_corrupt),
        cmocka_unit_test(test_clone_independent),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
