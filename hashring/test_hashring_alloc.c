/* test_hashring_alloc.c: unit tests of explicit tokens, ownership and the balanced
 * token allocator (cmocka; no process, no network).
 *
 * The balance targets of `ring add --balanced` are checked on rings grown member by
 * member (weights all 1, and 1 and 2 mixed): after every add, primary ownership
 * peak/mean must be <= 1.02 with the default vnodes. The same rings grown with hashed
 * positions (what `ring add` did before) are printed beside them: they miss that
 * target at most sizes (peak/mean up to 1.08 here), so these tests fail on hashed
 * placement. Replicated ownership (r = 2, 3) is printed, not enforced beyond a loose
 * bound: the allocator does not set it exactly (hashring_alloc.h says why).
 * Tokens must survive serialize/parse (format 2), clone and remove; rings without
 * tokens must still serialize as format 1, byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hashring.h"
#include "hashring_alloc.h"

#define TARGET_PRIMARY 1.02   /* the target for primary peak/mean */
#define LOOSE_REPLICATED 1.15 /* replicated peak/mean bound, equal weights, 3+ members */
#define GROW_TO 12            /* members a ring is grown to (the issue: at least 10) */

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static hashring *ring_new(uint32_t vpw) {
    hashring *ring = NULL;
    assert_int_equal(hashring_create(vpw, &ring), PS_STATUS_OK);
    return ring;
}

static void name(unsigned i, char *id, char *addr) {
    snprintf(id, 32, "shard-%02u", i);
    snprintf(addr, 32, "127.0.0.1:%u", 7000 + i);
}

/* Adds member i with balanced tokens. */
static void add_balanced(hashring *ring, unsigned i, uint32_t weight) {
    char id[32], addr[32];
    name(i, id, addr);
    uint64_t *tokens = NULL;
    uint32_t n = 0;
    assert_int_equal(hashring_alloc_tokens(ring, id, weight, &tokens, &n), PS_STATUS_OK);
    assert_int_equal(n, weight * hashring_vnodes_per_weight(ring));
    assert_int_equal(hashring_add_tokens(ring, id, addr, weight, tokens, n), PS_STATUS_OK);
    free(tokens);
}

static double peak_mean(const hashring *ring, uint32_t r) {
    double pm = 0;
    double shares[64];
    assert_true(hashring_node_count(ring) <= 64);
    assert_int_equal(hashring_ownership(ring, r, shares, &pm), PS_STATUS_OK);
    double sum = 0;
    for (uint32_t i = 0; i < hashring_node_count(ring); i++) {
        sum += shares[i];
    }
    const uint32_t owners = r < hashring_node_count(ring) ? r : hashring_node_count(ring);
    assert_true(sum > owners - 1e-9 && sum < owners + 1e-9); /* the circle, r times */
    return pm;
}

static unsigned char *serialize(const hashring *ring, size_t *ret_len) {
    size_t len = 0;
    hashring_serialize(ring, NULL, 0, &len);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(hashring_serialize(ring, buf, len, ret_len), PS_STATUS_OK);
    return buf;
}

/* Parses from an exactly sized heap copy, so the sanitizer catches any over-read. */
static ps_status parse_exact(const unsigned char *buf, size_t len, hashring **ret) {
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    *ret = NULL;
    const ps_status st = hashring_parse(copy, len, ret);
    free(copy);
    return st;
}

static void assert_same_ring(const hashring *a, const hashring *b) {
    assert_int_equal(hashring_point_count(a), hashring_point_count(b));
    for (uint32_t j = 0; j < hashring_point_count(a); j++) {
        uint64_t ha, hb;
        uint32_t oa, ob;
        assert_true(hashring_point_at(a, j, &ha, &oa));
        assert_true(hashring_point_at(b, j, &hb, &ob));
        assert_true(ha == hb);
        assert_int_equal(oa, ob);
    }
    uint64_t key = 1;
    for (int i = 0; i < 20000; i++) {
        key = key * 6364136223846793005u + 1442695040888963407u;
        uint32_t wa[3], wb[3];
        assert_int_equal(hashring_owners(a, key, 3, wa), hashring_owners(b, key, 3, wb));
        assert_memory_equal(wa, wb, sizeof(wa[0]) * (hashring_node_count(a) < 3 ? 1 : 3));
    }
}

/* A ring of 2 balanced members and 1 hashed one, vnodes 50, epoch 7. */
static hashring *mixed_ring(void) {
    hashring *ring = ring_new(50);
    add_balanced(ring, 1, 1);
    add_balanced(ring, 2, 2);
    assert_int_equal(hashring_add(ring, "shard-03", "127.0.0.1:7003", 1), PS_STATUS_OK);
    hashring_set_epoch(ring, 7);
    return ring;
}

/* ------------------------------------------------------------------------------------ */
/* Balance targets */

static void grow(const char *what, uint32_t (*weight_of)(unsigned)) {
    hashring *bal = ring_new(0);
    hashring *hashed = ring_new(0);
    printf("# %s: peak/mean (primary, r=2, r=3), balanced vs hashed\n", what);
    for (unsigned i = 1; i <= GROW_TO; i++) {
        char id[32], addr[32];
        name(i, id, addr);
        add_balanced(bal, i, weight_of(i));
        assert_int_equal(hashring_add(hashed, id, addr, weight_of(i)), PS_STATUS_OK);
        const double b1 = peak_mean(bal, 1), b2 = peak_mean(bal, 2), b3 = peak_mean(bal, 3);
        printf("#   %2u members: balanced %.4f %.4f %.4f   hashed %.4f %.4f %.4f\n", i, b1, b2, b3,
               peak_mean(hashed, 1), peak_mean(hashed, 2), peak_mean(hashed, 3));
        assert_true(b1 <= TARGET_PRIMARY);
        if (weight_of(2) == weight_of(1) && i >= 3) {
            assert_true(b2 <= LOOSE_REPLICATED && b3 <= LOOSE_REPLICATED);
        }
    }
    hashring_destroy(hashed);
    hashring_destroy(bal);
}

static uint32_t weight_one(unsigned i) {
    (void)i;
    return 1;
}

static uint32_t weight_one_two(unsigned i) {
    return i % 2 ? 1 : 2;
}

static void test_grow_equal_weights(void **state) {
    (void)state;
    grow("weights 1", weight_one);
}

static void test_grow_mixed_weights(void **state) {
    (void)state;
    grow("weights 1 and 2", weight_one_two);
}

/* A balanced add to a hashed (unbalanced) ring takes most from the busiest members. */
static void test_alloc_evens_hashed_ring(void **state) {
    (void)state;
    hashring *ring = ring_new(0);
    for (unsigned i = 1; i <= 6; i++) {
        char id[32], addr[32];
        name(i, id, addr);
        assert_int_equal(hashring_add(ring, id, addr, 1), PS_STATUS_OK);
    }
    const double before = peak_mean(ring, 1);
    add_balanced(ring, 7, 1);
    const double after = peak_mean(ring, 1);
    printf("# hashed ring of 6 + one balanced: primary peak/mean %.4f -> %.4f\n", before, after);
    assert_true(before > TARGET_PRIMARY); /* this ring needs it */
    assert_true(after < before && after <= TARGET_PRIMARY);
    hashring_destroy(ring);
}

static void test_alloc_deterministic(void **state) {
    (void)state;
    hashring *a = ring_new(200);
    hashring *b = ring_new(200);
    for (unsigned i = 1; i <= 4; i++) {
        add_balanced(a, i, i % 2 + 1);
        add_balanced(b, i, i % 2 + 1);
    }
    assert_same_ring(a, b);
    uint64_t *ta = NULL, *tb = NULL;
    uint32_t na = 0, nb = 0;
    assert_int_equal(hashring_alloc_tokens(a, "shard-09", 3, &ta, &na), PS_STATUS_OK);
    assert_int_equal(hashring_alloc_tokens(b, "shard-09", 3, &tb, &nb), PS_STATUS_OK);
    assert_int_equal(na, 600);
    assert_int_equal(nb, na);
    assert_memory_equal(ta, tb, na * sizeof(*ta));
    for (uint32_t v = 1; v < na; v++) {
        assert_true(ta[v] > ta[v - 1]);
    }
    free(ta);
    free(tb);
    hashring_destroy(a);
    hashring_destroy(b);
}

static void test_alloc_errors(void **state) {
    (void)state;
    hashring *ring = ring_new(10);
    uint64_t *t = NULL;
    uint32_t n = 0;
    /* an empty ring: the member's hashed positions, sorted */
    assert_int_equal(hashring_alloc_tokens(ring, "solo", 2, &t, &n), PS_STATUS_OK);
    assert_int_equal(n, 20);
    for (uint32_t v = 1; v < n; v++) {
        assert_true(t[v] > t[v - 1]);
    }
    for (uint32_t v = 0; v < n; v++) {
        bool found = false;
        for (uint32_t k = 0; k < n; k++) {
            found = found || t[k] == hashring_vnode_hash("solo", v);
        }
        assert_true(found);
    }
    free(t);
    add_balanced(ring, 1, 1);
    char id[32], addr[32];
    name(1, id, addr);
    t = NULL;
    assert_int_equal(hashring_alloc_tokens(ring, id, 1, &t, &n), PS_STATUS_ALREADY_EXISTS);
    assert_int_equal(hashring_alloc_tokens(ring, "x", 0, &t, &n), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_alloc_tokens(ring, "", 1, &t, &n), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_alloc_tokens(NULL, "x", 1, &t, &n), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_alloc_tokens(ring, "x", HASHRING_MAX_POINTS, &t, &n),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_null(t); /* untouched on failure */
    hashring_destroy(ring);
}

/* ------------------------------------------------------------------------------------ */
/* Explicit tokens in the ring */

static void test_add_tokens_checks(void **state) {
    (void)state;
    hashring *ring = ring_new(3);
    const uint64_t good[3] = {10, 20, 30};
    const uint64_t unsorted[3] = {10, 30, 20};
    const uint64_t repeated[3] = {10, 10, 30};
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, good, 0), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, unsorted, 3),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, repeated, 3),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_node_count(ring), 0);
    assert_int_equal(hashring_epoch(ring), 0);
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, good, 3), PS_STATUS_OK);
    hashring_node_info info;
    assert_true(hashring_node_at(ring, 0, &info));
    assert_non_null(info.tokens);
    assert_memory_equal(info.tokens, good, sizeof(good));
    /* key k goes to the first token >= k, wrapping past the last */
    assert_int_equal(hashring_primary(ring, 15), 0);
    uint64_t h;
    assert_true(hashring_point_at(ring, 2, &h, NULL) && h == 30);
    assert_false(hashring_point_at(ring, 3, &h, NULL));
    assert_int_equal(hashring_add(ring, "b", "h:2", 1), PS_STATUS_OK);
    assert_true(hashring_node_at(ring, 1, &info));
    assert_null(info.tokens);
    assert_int_equal(info.n_tokens, 0);
    assert_int_equal(hashring_remove(ring, "a"), PS_STATUS_OK); /* frees them (ASan) */
    /* tokens are the member's points whatever its weight: 2 tokens at weight 5 */
    assert_int_equal(hashring_add_tokens(ring, "c", "h:3", 5, good, 2), PS_STATUS_OK);
    assert_int_equal(hashring_point_count(ring), 3 + 2);
    hashring *copy = NULL;
    size_t len = 0;
    unsigned char *buf = serialize(ring, &len);
    assert_int_equal(parse_exact(buf, len, &copy), PS_STATUS_OK);
    assert_same_ring(ring, copy);
    free(buf);
    hashring_destroy(copy);
    hashring_destroy(ring);
}

static void test_ownership_exact(void **state) {
    (void)state;
    hashring *ring = ring_new(2);
    const uint64_t q = UINT64_C(1) << 62; /* a quarter of the circle */
    const uint64_t ta[2] = {q, 3 * q};    /* a owns (0, q] and (2q, 3q] */
    const uint64_t tb[2] = {2 * q, UINT64_MAX};
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, ta, 2), PS_STATUS_OK);
    assert_int_equal(hashring_add_tokens(ring, "b", "h:2", 1, tb, 2), PS_STATUS_OK);
    double shares[2], pm = 0;
    assert_int_equal(hashring_ownership(ring, 1, shares, &pm), PS_STATUS_OK);
    /* a: (UINT64_MAX, q] wraps: q + 1 keys, and q more; b: 2q - 1 keys */
    assert_true(shares[0] > 0.5 - 1e-12 && shares[0] < 0.5 + 1e-12);
    assert_true(shares[1] > 0.5 - 1e-12 && shares[1] < 0.5 + 1e-12);
    assert_true(pm > 1.0 - 1e-12 && pm < 1.0 + 1e-12);
    assert_int_equal(hashring_ownership(ring, 2, shares, &pm), PS_STATUS_OK);
    assert_true(shares[0] == 1.0 && shares[1] == 1.0 && pm == 1.0);
    assert_int_equal(hashring_ownership(ring, 0, shares, &pm), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(hashring_ownership(NULL, 1, shares, &pm), PS_STATUS_INVALID_ARGUMENT);
    hashring_destroy(ring);

    /* an empty ring: no shares, peak/mean 0 */
    ring = ring_new(5);
    assert_int_equal(hashring_ownership(ring, 1, NULL, &pm), PS_STATUS_OK);
    assert_true(pm == 0);
    hashring_destroy(ring);
}

/* ------------------------------------------------------------------------------------ */
/* Serialized form */

static void test_tokens_roundtrip(void **state) {
    (void)state;
    hashring *ring = mixed_ring();
    size_t len = 0;
    unsigned char *buf = serialize(ring, &len);
    assert_memory_equal(buf, "PSRG\x02\x00\x00\x00", 8); /* format 2: tokens inside */
    hashring *copy = NULL;
    assert_int_equal(parse_exact(buf, len, &copy), PS_STATUS_OK);
    assert_int_equal(hashring_epoch(copy), 7);
    assert_same_ring(ring, copy);
    for (uint32_t i = 0; i < 3; i++) {
        hashring_node_info a, b;
        assert_true(hashring_node_at(ring, i, &a) && hashring_node_at(copy, i, &b));
        assert_int_equal(a.tokens == NULL, b.tokens == NULL);
        assert_int_equal(a.n_tokens, b.n_tokens);
        if (a.tokens) {
            assert_int_equal(a.n_tokens, a.weight * 50);
            assert_memory_equal(a.tokens, b.tokens, a.n_tokens * sizeof(*a.tokens));
        }
    }
    size_t len2 = 0;
    unsigned char *again = serialize(copy, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, buf, len); /* one encoding per ring */
    free(again);

    hashring *clone = NULL;
    assert_int_equal(hashring_clone(copy, &clone), PS_STATUS_OK);
    hashring_destroy(copy); /* the clone owns its own tokens */
    assert_same_ring(ring, clone);
    hashring_destroy(clone);

    /* every truncation and a trailing byte are refused */
    for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 97) {
        assert_int_equal(parse_exact(buf, cut, &copy), PS_STATUS_PARSE);
        assert_null(copy);
    }
    free(buf);
    hashring_destroy(ring);
}

static void test_format1_compatible(void **state) {
    (void)state;
    /* a format 1 ring written by hand (as before tokens existed) parses */
    static const unsigned char v1[] = "PSRG\x01\x00\x00\x00"
                                      "\x05\x00\x00\x00\x00\x00\x00\x00" /* epoch 5 */
                                      "\x04\x00\x00\x00\x01\x00\x00\x00" /* 4 vnodes, 1 */
                                      "\x02\x00\x00\x00\x01\x00"
                                      "a\x03\x00h:1";
    hashring *ring = NULL;
    assert_int_equal(parse_exact(v1, sizeof(v1) - 1, &ring), PS_STATUS_OK);
    assert_int_equal(hashring_epoch(ring), 5);
    assert_int_equal(hashring_point_count(ring), 8);
    for (uint32_t v = 0; v < 8; v++) { /* hashed positions */
        bool found = false;
        for (uint32_t j = 0; j < 8; j++) {
            uint64_t h;
            hashring_point_at(ring, j, &h, NULL);
            found = found || h == hashring_vnode_hash("a", v);
        }
        assert_true(found);
    }
    /* a ring without tokens still writes exactly format 1 */
    size_t len = 0;
    unsigned char *buf = serialize(ring, &len);
    assert_int_equal(len, sizeof(v1) - 1);
    assert_memory_equal(buf, v1, len);
    free(buf);
    hashring_destroy(ring);

    /* format 2 needs a tokens flag per member; one without any tokens is refused */
    unsigned char v2[sizeof(v1)];
    memcpy(v2, v1, sizeof(v1) - 1);
    v2[4] = 2;
    assert_int_equal(parse_exact(v2, sizeof(v1) - 1, &ring), PS_STATUS_PARSE);
    v2[sizeof(v1) - 1] = 0; /* flag 0: hashed, so no member has tokens */
    assert_int_equal(parse_exact(v2, sizeof(v1), &ring), PS_STATUS_PARSE);
    v2[sizeof(v1) - 1] = 2; /* not a flag */
    assert_int_equal(parse_exact(v2, sizeof(v1), &ring), PS_STATUS_PARSE);
}

static void test_tokens_out_of_order_refused(void **state) {
    (void)state;
    hashring *ring = ring_new(2);
    const uint64_t t[2] = {100, 200};
    assert_int_equal(hashring_add_tokens(ring, "a", "h:1", 1, t, 2), PS_STATUS_OK);
    size_t len = 0;
    unsigned char *buf = serialize(ring, &len);
    assert_int_equal(len, 24 + 4 + 2 + 1 + 2 + 3 + 1 + 4 + 16);
    hashring *out = NULL;
    assert_int_equal(parse_exact(buf, len, &out), PS_STATUS_OK);
    hashring_destroy(out);
    buf[len - 8] = 50; /* second token 50 < 100 */
    assert_int_equal(parse_exact(buf, len, &out), PS_STATUS_PARSE);
    buf[len - 8] = 100; /* equal to the first */
    assert_int_equal(parse_exact(buf, len, &out), PS_STATUS_PARSE);
    free(buf);
    hashring_destroy(ring);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_equal_weights),
        cmocka_unit_test(test_grow_mixed_weights),
        cmocka_unit_test(test_alloc_evens_hashed_ring),
        cmocka_unit_test(test_alloc_deterministic),
        cmocka_unit_test(test_alloc_errors),
        cmocka_unit_test(test_add_tokens_checks),
        cmocka_unit_test(test_ownership_exact),
        cmocka_unit_test(test_tokens_roundtrip),
        cmocka_unit_test(test_format1_compatible),
        cmocka_unit_test(test_tokens_out_of_order_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
