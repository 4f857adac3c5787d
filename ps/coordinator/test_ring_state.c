/* test_ring_state.c: unit tests of the ring built from members, its epochs and the join
 * policy (cmocka, no process).
 *
 * Old behaviour these would have caught: any new shard joined the ring at once, whatever
 * the ring held (a quarter of a 3-shard ring's chunks became NOT_FOUND when a 4th
 * started); a shard that could not be asked was not counted as holding data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ring_state.h"

typedef struct fixture {
    membership *m;
    ring_state *r;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    membership_opts mo = {.heartbeat_ms = 100};
    ring_state_opts ro = {.vnodes = 50};
    if (!f || membership_create(&mo, &f->m) != PS_STATUS_OK ||
        ring_state_create(&ro, &f->r) != PS_STATUS_OK)
        return -1;
    const char *ids[] = {"s1", "s2", "s3", "waiter", "r1"};
    for (int i = 0; i < 5; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7001 + i);
        membership_node *n = NULL;
        if (membership_node_add(f->m, ids[i], addr,
                                i == 4 ? MEMBERSHIP_ROLE_SERVE : MEMBERSHIP_ROLE_SHARD, 1,
                                &n) != PS_STATUS_OK)
            return -1;
        n->in_ring = i < 3;
        n->waiting = i == 3;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ring_state_destroy(f->r);
    membership_destroy(f->m);
    free(f);
    return 0;
}

static void test_rebuild_moves_the_epoch(void **state) {
    fixture *f = *state;
    assert_int_equal(ring_state_epoch(f->r), 0);
    assert_int_equal(hashring_node_count(ring_state_ring(f->r)), 0);
    assert_int_equal(ring_state_rebuild(f->r, f->m), PS_STATUS_OK);
    assert_int_equal(ring_state_epoch(f->r), 1);
    /* only the shards on the ring: not the waiting one, not the replica */
    const hashring *h = ring_state_ring(f->r);
    assert_int_equal(hashring_node_count(h), 3);
    uint32_t idx;
    assert_true(hashring_find(h, "s2", &idx));
    assert_false(hashring_find(h, "waiter", &idx));
    assert_false(hashring_find(h, "r1", &idx));
    assert_int_equal(hashring_epoch(h), 1);
    assert_int_equal(ring_state_rebuild(f->r, f->m), PS_STATUS_OK);
    assert_int_equal(ring_state_epoch(f->r), 2);
    assert_int_equal(ring_state_restore(f->r, f->m, 41), PS_STATUS_OK);
    assert_int_equal(ring_state_epoch(f->r), 41);

    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(ring_state_serialize(f->r, &buf, &len), PS_STATUS_OK);
    hashring *parsed = NULL;
    assert_int_equal(hashring_parse(buf, len, &parsed), PS_STATUS_OK);
    assert_int_equal(hashring_epoch(parsed), 41);
    assert_int_equal(hashring_node_count(parsed), 3);
    hashring_destroy(parsed);
    free(buf);
}

static void test_probe_list_copies_the_members(void **state) {
    fixture *f = *state;
    ring_probe *p = NULL;
    size_t n = 0;
    assert_int_equal(ring_state_probe_list(f->m, &p, &n), PS_STATUS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(p[0].id, "s1");
    assert_string_equal(p[2].addr, "127.0.0.1:7003");
    assert_false(p[0].asked);
    free(p);
}

static void answer(ring_probe *p, ps_status st, uint64_t keys, const char *detail) {
    p->asked = true;
    p->status = st;
    p->keys = keys;
    snprintf(p->detail, sizeof p->detail, "%s", detail);
}

static void test_verdicts(void **state) {
    fixture *f = *state;
    ring_probe *p = NULL;
    size_t n = 0;
    ring_verdict v;
    char why[512];
    assert_int_equal(ring_state_probe_list(f->m, &p, &n), PS_STATUS_OK);

    ring_state_verdict(NULL, 0, &v); /* an empty ring */
    assert_true(ring_state_join_allowed(&v));

    for (size_t i = 0; i < n; i++)
        answer(&p[i], PS_STATUS_OK, 0, "");
    ring_state_verdict(p, n, &v);
    assert_true(ring_state_join_allowed(&v));

    answer(&p[1], PS_STATUS_OK, 7, "");
    answer(&p[2], PS_STATUS_OK, 5, "");
    ring_state_verdict(p, n, &v);
    assert_false(ring_state_join_allowed(&v));
    assert_int_equal(v.keys, 12);
    assert_int_equal(v.holding, 2);
    ring_state_verdict_explain(&v, p, why, sizeof why);
    assert_string_equal(why, "the ring holds 12 keys on 2 of 3 shards");

    /* a shard that cannot be asked counts as holding data */
    answer(&p[1], PS_STATUS_OK, 0, "");
    answer(&p[2], PS_STATUS_UNAVAILABLE, 0, "UNAVAILABLE: connection refused");
    ring_state_verdict(p, n, &v);
    assert_false(ring_state_join_allowed(&v));
    assert_int_equal(v.unreachable, 1);
    ring_state_verdict_explain(&v, p, why, sizeof why);
    assert_non_null(strstr(why, "shard s3 at 127.0.0.1:7003 could not be asked"));
    assert_non_null(strstr(why, "connection refused"));
    assert_non_null(strstr(why, "counts as holding data"));

    /* a check that stopped early decides nothing in favour of joining */
    answer(&p[2], PS_STATUS_OK, 0, "");
    p[2].asked = false;
    ring_state_verdict(p, n, &v);
    assert_false(ring_state_join_allowed(&v));
    ring_state_verdict_explain(&v, p, why, sizeof why);
    assert_string_equal(why, "not every shard on the ring was asked");
    answer(&p[1], PS_STATUS_OK, 20, ""); /* what stopped it: only that is said */
    ring_state_verdict(p, n, &v);
    ring_state_verdict_explain(&v, p, why, sizeof why);
    assert_string_equal(why, "shard s2 on the ring holds 20 keys");
    answer(&p[2], PS_STATUS_OK, 1, "");
    ring_state_verdict(p, n, &v);
    ring_state_verdict_explain(&v, p, why, 8); /* truncates, never overflows */
    assert_string_equal(why, "the rin");
    free(p);
}

static void test_join_share(void **state) {
    fixture *f = *state;
    /* three shards of weight 1: a fourth takes a quarter of the keys */
    double share = ring_state_join_share(f->m, 1);
    assert_true(share > 0.2499 && share < 0.2501);
    share = ring_state_join_share(f->m, 3);
    assert_true(share > 0.4999 && share < 0.5001);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rebuild_moves_the_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_list_copies_the_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_join_share, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
