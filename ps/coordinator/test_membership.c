/* test_membership.c: unit tests of the node table and liveness (cmocka, no process).
 *
 * Old behaviour these would have caught: Register accepted any weight (a client could
 * ask for 2^32-1 and make the ring allocate billions of points); liveness logged a
 * death but nothing told the caller when a node came back after one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "membership.h"

static membership *make(size_t max_nodes) {
    membership_opts o = {.max_nodes = max_nodes, .heartbeat_ms = 100};
    membership *m = NULL;
    assert_int_equal(membership_create(&o, &m), PS_STATUS_OK);
    return m;
}

static void test_create_checks_options(void **state) {
    (void)state;
    membership *m = NULL;
    membership_opts bad_hb = {.heartbeat_ms = 0};
    membership_opts too_many = {.max_nodes = MEMBERSHIP_MAX_NODES_LIMIT + 1, .heartbeat_ms = 10};
    assert_int_equal(membership_create(&bad_hb, &m), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(membership_create(&too_many, &m), PS_STATUS_INVALID_ARGUMENT);
    assert_null(m);
    membership_destroy(NULL);
    m = make(0);
    assert_int_equal(membership_node_limit(m), MEMBERSHIP_DEFAULT_MAX_NODES);
    membership_destroy(m);
}

static void test_ids_and_addresses(void **state) {
    (void)state;
    char huge[10 * 1024];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    assert_false(membership_id_valid(NULL));
    assert_false(membership_id_valid(""));
    assert_false(membership_id_valid(huge));
    assert_false(membership_id_valid("shard 1"));
    assert_false(membership_id_valid("shard/1"));
    assert_true(membership_id_valid("shard-1_a.b"));
    huge[MEMBERSHIP_ID_MAX] = '\0';
    assert_true(membership_id_valid(huge));
    huge[MEMBERSHIP_ID_MAX] = 'a';
    huge[MEMBERSHIP_ID_MAX + 1] = '\0';
    assert_false(membership_id_valid(huge));

    assert_true(membership_addr_valid("127.0.0.1:7000"));
    assert_true(membership_addr_valid("[::1]:7000"));
    assert_false(membership_addr_valid(NULL));
    assert_false(membership_addr_valid("127.0.0.1"));
    assert_false(membership_addr_valid(":7000"));
    assert_false(membership_addr_valid("h:0"));
    assert_false(membership_addr_valid("h:65536"));
    assert_false(membership_addr_valid("h:12x"));
    /* what would split log lines or hide in a state file (found by an adversarial run) */
    assert_true(membership_addr_valid("shard-1.example_net:7001"));
    const char *bad[] = {"h\n:5",    "a b:5",     "127.0.0.1: 5", "127.0.0.1:+5", "127.0.0.1:05",
                         "host:1:2", "[::1:7000", "[]:7000",      "h\t:5",        "h\xff:5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (membership_addr_valid(bad[i]))
            fail_msg("accepted address '%s'", bad[i]);
    memset(huge, 'h', sizeof huge - 1);
    memcpy(huge + sizeof huge - 6, ":7000", 6);
    assert_false(membership_addr_valid(huge));
}

static void test_add_find_remove(void **state) {
    (void)state;
    membership *m = make(2);
    membership_node *n = NULL;
    assert_int_equal(membership_node_add(m, "s1", "h:1", MEMBERSHIP_ROLE_SHARD, 1, &n),
                     PS_STATUS_OK);
    assert_string_equal(n->id, "s1");
    assert_false(n->alive);
    assert_false(n->in_ring);
    assert_int_equal(membership_node_add(m, "s1", "h:2", MEMBERSHIP_ROLE_SHARD, 1, NULL),
                     PS_STATUS_ALREADY_EXISTS);
    assert_int_equal(membership_node_add(m, "s2", "h:2", MEMBERSHIP_ROLE_SHARD, 0, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(
        membership_node_add(m, "s2", "h:2", MEMBERSHIP_ROLE_SHARD, MEMBERSHIP_MAX_WEIGHT + 1, NULL),
        PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(membership_node_add(m, "s2", "h:2", (membership_role)7, 1, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(membership_node_add(m, "r1", "h:3", MEMBERSHIP_ROLE_SERVE, 1, NULL),
                     PS_STATUS_OK);
    assert_int_equal(membership_node_add(m, "s3", "h:4", MEMBERSHIP_ROLE_SHARD, 1, NULL),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(membership_node_count(m), 2);
    assert_non_null(membership_node_find(m, "r1"));
    assert_null(membership_node_find(m, "s3"));
    assert_null(membership_node_at(m, 2));

    membership_node_find(m, "s1")->in_ring = true;
    assert_int_equal(membership_ring_count(m), 1);
    assert_int_equal(membership_node_remove(m, "s1"), PS_STATUS_OK);
    assert_int_equal(membership_node_remove(m, "s1"), PS_STATUS_NOT_FOUND);
    assert_int_equal(membership_ring_count(m), 0);
    assert_string_equal(membership_node_at(m, 0)->id, "r1");
    membership_destroy(m);
}

typedef struct deaths {
    int count;
    char last[MEMBERSHIP_ID_MAX + 1];
    int64_t silent;
} deaths;

static void on_death(void *arg, const membership_node *n, int64_t silent_ms) {
    deaths *d = arg;
    d->count++;
    strcpy(d->last, n->id);
    d->silent = silent_ms;
}

static void test_liveness(void **state) {
    (void)state;
    membership *m = make(4);
    membership_node *a = NULL, *b = NULL;
    assert_int_equal(membership_node_add(m, "a", "h:1", MEMBERSHIP_ROLE_SHARD, 1, &a), 0);
    assert_int_equal(membership_node_add(m, "b", "h:2", MEMBERSHIP_ROLE_SERVE, 1, &b), 0);
    assert_true(membership_node_touch(a, 1000)); /* first contact counts as coming back */
    assert_false(membership_node_touch(a, 1000));
    assert_true(membership_node_touch(b, 1250));
    deaths d = {0};
    /* 3 intervals of 100 ms: still alive at exactly 300 ms of silence */
    assert_int_equal(membership_liveness_sweep(m, 1300, on_death, &d), 0);
    assert_int_equal(membership_liveness_sweep(m, 1301, on_death, &d), 1);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.last, "a");
    assert_int_equal(d.silent, 301);
    assert_false(a->alive);
    assert_true(b->alive);
    /* reported once, not on every sweep */
    assert_int_equal(membership_liveness_sweep(m, 1400, on_death, &d), 0);
    assert_int_equal(d.count, 1);
    assert_true(membership_node_touch(a, 1500)); /* it came back */
    assert_true(a->alive);
    assert_int_equal(membership_liveness_sweep(m, 2000, NULL, NULL), 2);
    membership_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_checks_options),
        cmocka_unit_test(test_ids_and_addresses),
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_liveness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
