/* test_agreement.c: what every process must compute identically, pinned to fixed
 * values (the dense key includes the model version since issue 7). Shards, replicas, psctl and
 * client libraries in other languages each compute a dense chunk's key and its place on the ring on
 * their own; if any of them drifts (a changed hash input, seed, byte order or ring rule), keys
 * silently become unreachable. These values were computed once and must never change without a data
 * migration. Also: every status survives the trip to a gRPC code and back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hashring.h"
#include "rpc.h"
#include "util.h"

typedef struct key_case {
    const char *model;
    uint64_t version;
    const char *tensor;
    uint32_t chunk;
    uint64_t key;
} key_case;

static void test_dense_keys_fixed(void **state) {
    (void)state;
    static const key_case cases[] = {
        {"digits_mlp", 1ull, "fc1.weight", 0u, 0x0d0dd77065cbcad9ull},
        {"digits_mlp", 2ull, "fc2.bias", 1u, 0xf840ddf34a2c919dull},
        {"m", 0ull, "", 7u, 0x69c14c60ae6c57d2ull},
        {"", UINT64_MAX, "", UINT32_MAX, 0x3de15a33d3843ab2ull},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t k =
            ps_key_dense(cases[i].model, cases[i].version, cases[i].tensor, cases[i].chunk);
        if (k != cases[i].key)
            fail_msg("key of %s v%llu %s#%u is %016llx, expected %016llx", cases[i].model,
                     (unsigned long long)cases[i].version, cases[i].tensor, cases[i].chunk,
                     (unsigned long long)k, (unsigned long long)cases[i].key);
    }
    /* the separator matters: ("ab","c") and ("a","bc") differ */
    assert_true(ps_key_dense("ab", 1, "c", 0) != ps_key_dense("a", 1, "bc", 0));
    /* versions of a model live under different keys */
    assert_true(ps_key_dense("m", 1, "t", 0) != ps_key_dense("m", 2, "t", 0));
}

/* Row keys: the same values psclient's Python keys.py must give
 * (tests/e2e/psclient_support.py ROW_KEYS). */
static void test_row_keys_fixed(void **state) {
    (void)state;
    static const struct {
        const char *model, *table;
        uint64_t id, key;
    } cases[] = {
        {"rec", "user_emb", 0ull, 0x8ca942276d00e54dull},
        {"rec", "user_emb", 123456789ull, 0xffd74d3d60ad987cull},
        {"", "", UINT64_MAX, 0xc9ba4b5fc803992cull},
        {"digits_mlp", "t", 1ull << 40, 0xf3213e03d382e78cull},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t k = ps_key_row(cases[i].model, cases[i].table, cases[i].id);
        if (k != cases[i].key)
            fail_msg("key of %s/%s row %llu is %016llx, expected %016llx", cases[i].model,
                     cases[i].table, (unsigned long long)cases[i].id, (unsigned long long)k,
                     (unsigned long long)cases[i].key);
    }
    assert_true(ps_key_row("ab", "c", 1) != ps_key_row("a", "bc", 1));
}

typedef struct place_case {
    uint32_t chunk;
    uint64_t key;
    const char *owners[3];
} place_case;

static void test_ring_placement_fixed(void **state) {
    (void)state;
    /* shard-3 has twice the weight of the others; the default vnodes per weight */
    static const place_case cases[] = {
        {0, 0x0d0dd77065cbcad9ull, {"shard-3", "shard-1", "shard-2"}},
        {1, 0xabb43c0e5cddb5b0ull, {"shard-3", "shard-2", "shard-1"}},
        {2, 0x3390ff34387caf3cull, {"shard-2", "shard-1", "shard-3"}},
        {3, 0x7fe196d46ed24683ull, {"shard-3", "shard-1", "shard-2"}},
        {4, 0x7b73e3cdd2c5b22eull, {"shard-3", "shard-2", "shard-1"}},
        {5, 0x5b187a61e2a386b5ull, {"shard-2", "shard-3", "shard-1"}},
        {6, 0x64c98176daab69dfull, {"shard-2", "shard-3", "shard-1"}},
        {7, 0x113ec89f81757a8cull, {"shard-1", "shard-2", "shard-3"}},
    };
    hashring *r = NULL;
    assert_int_equal(hashring_create(0, &r), PS_STATUS_OK);
    /* insertion order must not matter */
    assert_int_equal(hashring_add(r, "shard-3", "127.0.0.1:3", 2), PS_STATUS_OK);
    assert_int_equal(hashring_add(r, "shard-1", "127.0.0.1:1", 1), PS_STATUS_OK);
    assert_int_equal(hashring_add(r, "shard-2", "127.0.0.1:2", 1), PS_STATUS_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t k = ps_key_dense("digits_mlp", 1, "fc1.weight", cases[i].chunk);
        assert_true(k == cases[i].key);
        uint32_t owners[3];
        assert_int_equal(hashring_owners(r, k, 3, owners), 3);
        for (int j = 0; j < 3; j++) {
            hashring_node_info info;
            assert_true(hashring_node_at(r, owners[j], &info));
            if (strcmp(info.id, cases[i].owners[j]) != 0)
                fail_msg("chunk %u owner %d is %s, expected %s", cases[i].chunk, j, info.id,
                         cases[i].owners[j]);
        }
        assert_int_equal(hashring_primary(r, k), owners[0]);
    }
    hashring_destroy(r);
}

static void test_status_code_round_trip(void **state) {
    (void)state;
    /* every status maps to a gRPC code; codes that name a status map back to it */
    for (int s = PS_STATUS_OK; s >= PS_STATUS_WRONG_EPOCH; s--) {
        int code = rpc_code_from_status((ps_status)s);
        assert_true(code >= 0 && code <= 16);
        ps_status back = rpc_status_from_code(code);
        switch ((ps_status)s) {
        case PS_STATUS_NO_MEMORY: /* in-process detail: travels as its gRPC family */
            assert_int_equal(code, 8 /* RESOURCE_EXHAUSTED */);
            assert_int_equal(back, PS_STATUS_RESOURCE_EXHAUSTED);
            break;
        case PS_STATUS_IO:
            assert_int_equal(code, 13 /* INTERNAL */);
            assert_int_equal(back, PS_STATUS_INTERNAL);
            break;
        case PS_STATUS_PARSE:
            assert_int_equal(code, 3 /* INVALID_ARGUMENT */);
            assert_int_equal(back, PS_STATUS_INVALID_ARGUMENT);
            break;
        default:
            if (back != (ps_status)s)
                fail_msg("%s -> %s -> %s", ps_status_name((ps_status)s), rpc_code_name(code),
                         ps_status_name(back));
        }
    }
    /* WRONG_EPOCH is the only status that travels as ABORTED */
    assert_int_equal(rpc_code_from_status(PS_STATUS_WRONG_EPOCH), 10);
    assert_int_equal(rpc_status_from_code(10), PS_STATUS_WRONG_EPOCH);
    /* every gRPC code maps to some status and has a name */
    for (int code = 0; code <= 16; code++) {
        ps_status st = rpc_status_from_code(code);
        assert_true(st <= PS_STATUS_OK && st >= PS_STATUS_WRONG_EPOCH);
        assert_true(strlen(rpc_code_name(code)) > 0);
        assert_true((code == 0) == (st == PS_STATUS_OK));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_keys_fixed),
        cmocka_unit_test(test_row_keys_fixed),
        cmocka_unit_test(test_ring_placement_fixed),
        cmocka_unit_test(test_status_code_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
