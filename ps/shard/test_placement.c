/* test_placement.c: a shard owns exactly the keys the ring makes it primary of; rings
 * only move forward; a shard off the ring owns nothing; a ring that does not parse is
 * refused and leaves the held one in place; a ring held still is replaced only once
 * every hold is let go; a hold waits, up to its deadline, for a ring it was told of. */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "hashring.h"
#include "placement.h"
#include "util.h"

/* A serialized ring of the given shards at `epoch` (malloc'd). */
static void *ring_bytes(const char *const *ids, size_t n, uint64_t epoch, size_t *ret_len) {
    hashring *r = NULL;
    assert_int_equal(hashring_create(0, &r), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(hashring_add(r, ids[i], "127.0.0.1:1", 1), PS_STATUS_OK);
    hashring_set_epoch(r, epoch);
    size_t len = 0;
    hashring_serialize(r, NULL, 0, &len);
    void *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(hashring_serialize(r, buf, len, &len), PS_STATUS_OK);
    hashring_destroy(r);
    *ret_len = len;
    return buf;
}

static placement *make(const char *id) {
    placement_opts o = {.self_id = id};
    placement *p = NULL;
    assert_int_equal(placement_create(&o, &p), PS_STATUS_OK);
    return p;
}

static void test_owns_exactly_its_primary_keys(void **state) {
    (void)state;
    const char *ids[] = {"shard-1", "shard-2", "shard-3"};
    size_t len = 0;
    void *buf = ring_bytes(ids, 3, 5, &len);
    hashring *r = NULL;
    assert_int_equal(hashring_parse(buf, len, &r), PS_STATUS_OK);
    uint32_t self = 0;
    assert_true(hashring_find(r, "shard-2", &self));
    placement *p = make("shard-2");
    bool installed = false;
    placement_info info;
    assert_int_equal(placement_ring_install(p, buf, len, &installed, &info), PS_STATUS_OK);
    assert_true(installed);
    assert_int_equal(info.epoch, 5);
    assert_int_equal(info.nodes, 3);
    assert_true(info.member);
    size_t mine = 0;
    char err[256];
    for (uint64_t k = 1; k < 300; k++) {
        uint64_t key = k * 0x9E3779B97F4A7C15ull;
        ps_status st = placement_check(p, 5, 1, &key, NULL, err, sizeof err);
        if (hashring_primary(r, key) == self) {
            assert_int_equal(st, PS_STATUS_OK);
            mine++;
        } else {
            assert_int_equal(st, PS_STATUS_WRONG_EPOCH);
            assert_non_null(strstr(err, "refresh the ring"));
        }
    }
    assert_true(mine > 0 && mine < 299);
    hashring_destroy(r);
    placement_destroy(p);
    free(buf);
}

static void test_rings_only_move_forward(void **state) {
    (void)state;
    const char *one[] = {"shard-1"}, *two[] = {"shard-1", "shard-2"};
    size_t l1 = 0, l2 = 0;
    void *newer = ring_bytes(one, 1, 7, &l1), *older = ring_bytes(two, 2, 6, &l2);
    placement *p = make("shard-1");
    bool installed = true;
    assert_int_equal(placement_ring_install(p, newer, l1, &installed, NULL), PS_STATUS_OK);
    assert_true(installed);
    assert_int_equal(placement_ring_install(p, older, l2, &installed, NULL), PS_STATUS_OK);
    assert_false(installed);
    placement_info info;
    placement_get_info(p, &info);
    assert_int_equal(info.epoch, 7);
    assert_int_equal(info.nodes, 1);
    /* garbage is refused and changes nothing */
    assert_int_equal(placement_ring_install(p, "nope", 4, &installed, NULL), PS_STATUS_PARSE);
    placement_get_info(p, &info);
    assert_int_equal(info.epoch, 7);
    placement_destroy(p);
    free(newer);
    free(older);
}

static void test_off_the_ring_owns_nothing(void **state) {
    (void)state;
    placement *p = make("shard-9");
    uint64_t key = 42;
    char err[256];
    assert_int_equal(placement_check(p, 0, 1, &key, NULL, err, sizeof err), PS_STATUS_WRONG_EPOCH);
    assert_non_null(strstr(err, "not on the ring"));
    const char *ids[] = {"shard-1"};
    size_t len = 0;
    void *buf = ring_bytes(ids, 1, 2, &len);
    assert_int_equal(placement_ring_install(p, buf, len, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(placement_check(p, 2, 1, &key, NULL, err, sizeof err), PS_STATUS_WRONG_EPOCH);
    assert_non_null(strstr(err, "shard-9"));
    placement_destroy(p);
    free(buf);
}

typedef struct installer {
    placement *p;
    const void *ring;
    size_t len;
    atomic_bool done;
} installer;

static void *install_main(void *arg) {
    installer *in = arg;
    bool installed = false;
    assert_int_equal(placement_ring_install(in->p, in->ring, in->len, &installed, NULL),
                     PS_STATUS_OK);
    assert_true(installed);
    atomic_store(&in->done, true);
    return NULL;
}

/* shard-2's placement at a ring of epoch 7 (shard-1 and shard-2), and a ring of epoch 8
 * of the first n8 of them to install later. */
typedef struct at_seven {
    placement *p;
    void *r7, *r8;
    size_t l7, l8;
} at_seven;

static at_seven at_seven_make(size_t n8) {
    const char *ids[] = {"shard-1", "shard-2"};
    at_seven a = {0};
    a.r7 = ring_bytes(ids, 2, 7, &a.l7);
    a.r8 = ring_bytes(ids, n8, 8, &a.l8);
    a.p = make("shard-2");
    assert_int_equal(placement_ring_install(a.p, a.r7, a.l7, NULL, NULL), PS_STATUS_OK);
    return a;
}

static void at_seven_free(at_seven *a) {
    placement_destroy(a->p);
    free(a->r7);
    free(a->r8);
}

static void test_a_held_ring_stays_until_released(void **state) {
    (void)state;
    at_seven a = at_seven_make(1);
    placement *p = a.p;
    placement_info held, again;
    placement_hold(p, 0, 0, &held);
    placement_hold(p, 7, 0, &again); /* holds overlap */
    assert_int_equal(held.epoch, 7);
    assert_true(held.member);
    installer in = {.p = p, .ring = a.r8, .len = a.l8};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, install_main, &in), 0);
    usleep(100 * 1000);
    assert_false(atomic_load(&in.done)); /* the install waits for the holds */
    placement_info now;
    placement_get_info(p, &now); /* lookups go on meanwhile */
    assert_int_equal(now.epoch, 7);
    (void)placement_owns_any(p, 1); /* returns: checks do not wait for the install */
    placement_release(p);
    usleep(50 * 1000);
    assert_false(atomic_load(&in.done)); /* one hold is still there */
    placement_release(p);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(atomic_load(&in.done));
    placement_get_info(p, &now);
    assert_int_equal(now.epoch, 8);
    assert_false(now.member); /* the ring of epoch 8 has only shard-1 */
    at_seven_free(&a);
}

static void test_a_hold_waits_for_a_newer_ring(void **state) {
    (void)state;
    at_seven a = at_seven_make(2);
    placement *p = a.p;
    /* not there by the deadline: held as it is */
    placement_info info;
    int64_t t0 = ps_now_ms();
    placement_hold(p, 8, t0 + 100, &info);
    assert_true(ps_now_ms() - t0 >= 90);
    assert_int_equal(info.epoch, 7);
    placement_release(p);
    /* installed while it waits: held at the new ring, long before the deadline */
    installer in = {.p = p, .ring = a.r8, .len = a.l8};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, install_main, &in), 0);
    t0 = ps_now_ms();
    placement_hold(p, 8, t0 + 30000, &info);
    assert_true(ps_now_ms() - t0 < 20000);
    assert_int_equal(info.epoch, 8);
    placement_release(p);
    assert_int_equal(pthread_join(th, NULL), 0);
    at_seven_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owns_exactly_its_primary_keys),
        cmocka_unit_test(test_rings_only_move_forward),
        cmocka_unit_test(test_off_the_ring_owns_nothing),
        cmocka_unit_test(test_a_held_ring_stays_until_released),
        cmocka_unit_test(test_a_hold_waits_for_a_newer_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
