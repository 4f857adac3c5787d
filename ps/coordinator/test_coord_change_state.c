/* test_coord_change_state.c: unit tests of a ring change in the coordinator's state
 * file: a restart keeps a join or drain in progress (same epochs, same pending ring)
 * and it commits after; impossible changes in a file are refused with where and what;
 * the fields are written only while a change is in progress (older files load as
 * before). No process, no network (test_world.h).
 *
 * Old behaviour these would have caught: joining/draining were not in the file, so a
 * coordinator restart during a change would have dropped it. */
#include "test_world.h"

#include "state_store.h"

static ps_status drain(coord_ctx *c, const char *id, char *err) {
    uint64_t epoch = 0;
    return coord_node_drain(c, id, &epoch, err, COORD_ERR_MAX);
}

static Ps__Ring *ring_now(coord_ctx *c) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    return ring;
}

static void test_state_file_keeps_the_change(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    Ps__Ring *before = ring_now(c);
    coord_destroy(c);
    c = open_ctx(0, 0); /* the coordinator restarts */
    Ps__Ring *after = ring_now(c);
    assert_int_equal(after->epoch, before->epoch);
    assert_int_equal(after->pending_epoch, before->pending_epoch);
    assert_int_equal(after->pending.len, before->pending.len);
    assert_memory_equal(after->pending.data, before->pending.data, before->pending.len);
    assert_int_equal(where(c, "s4", NULL), 'J');
    assert_int_equal(events_with("a ring change from"), 1);
    all_beat(c, before->pending_epoch);
    assert_int_equal(where(c, "s4", NULL), 'R');
    ps__ring__free_unpacked(before, NULL);
    ps__ring__free_unpacked(after, NULL);
    /* a drain too */
    assert_int_equal(drain(c, "s1", err), PS_STATUS_OK);
    coord_destroy(c);
    c = open_ctx(0, 0);
    assert_int_equal(where(c, "s1", NULL), 'D');
    coord_destroy(c);
}

/* A damaged change in a state file is refused with where and what. */
static void test_state_file_refuses_impossible_changes(void **state) {
    (void)state;
    static const struct {
        const char *nodes, *words;
    } cases[] = {
        {"{\"id\":\"s1\",\"addr\":\"h:1\",\"weight\":1,\"role\":\"shard\",\"in_ring\":true,"
         "\"joining\":true}",
         "nodes[0]: node s1 cannot be joining"},
        {"{\"id\":\"s1\",\"addr\":\"h:1\",\"weight\":1,\"role\":\"shard\",\"in_ring\":false,"
         "\"draining\":true}",
         "nodes[0]: node s1 cannot be draining"},
        {"{\"id\":\"s1\",\"addr\":\"h:1\",\"weight\":1,\"role\":\"shard\",\"in_ring\":true,"
         "\"draining\":true},{\"id\":\"s2\",\"addr\":\"h:2\",\"weight\":1,\"role\":\"shard\","
         "\"in_ring\":false,\"joining\":true}",
         "nodes[1]: node s2 is joining, but node s1 is draining: one change at a time"},
        {"{\"id\":\"s1\",\"addr\":\"h:1\",\"weight\":1,\"role\":\"shard\",\"in_ring\":true,"
         "\"draining\":1}",
         "nodes[0].draining: expected a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "{\"format\":1,\"epoch\":4,\"model_generation\":0,\"nodes\":[%s],\"models\":[]}",
                 cases[i].nodes);
        membership *m = NULL;
        ring_state *r = NULL;
        registry *g = NULL;
        membership_opts mo = {.heartbeat_ms = 100};
        assert_int_equal(membership_create(&mo, &m), PS_STATUS_OK);
        assert_int_equal(ring_state_create(NULL, &r), PS_STATUS_OK);
        assert_int_equal(registry_create(NULL, &g), PS_STATUS_OK);
        char err[COORD_ERR_MAX] = "";
        assert_int_equal(state_store_decode(text, strlen(text), m, r, g, err, sizeof err),
                         PS_STATUS_PARSE);
        must_contain(err, cases[i].words);
        registry_destroy(g);
        ring_state_destroy(r);
        membership_destroy(m);
    }
    /* the good one loads with its pending ring */
    const char *good = "{\"format\":1,\"epoch\":4,\"model_generation\":0,\"nodes\":["
                       "{\"id\":\"s1\",\"addr\":\"h:1\",\"weight\":1,\"role\":\"shard\","
                       "\"in_ring\":true},{\"id\":\"s2\",\"addr\":\"h:2\",\"weight\":1,"
                       "\"role\":\"shard\",\"in_ring\":false,\"joining\":true}],\"models\":[]}";
    membership *m = NULL;
    ring_state *r = NULL;
    registry *g = NULL;
    membership_opts mo = {.heartbeat_ms = 100};
    assert_int_equal(membership_create(&mo, &m), PS_STATUS_OK);
    assert_int_equal(ring_state_create(NULL, &r), PS_STATUS_OK);
    assert_int_equal(registry_create(NULL, &g), PS_STATUS_OK);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(state_store_decode(good, strlen(good), m, r, g, err, sizeof err), 0);
    assert_int_equal(ring_state_epoch(r), 4);
    assert_int_equal(ring_state_pending_epoch(r), 5);
    assert_int_equal(hashring_node_count(ring_state_pending(r)), 2);
    char *text = NULL;
    assert_int_equal(state_store_encode(m, r, g, &text), PS_STATUS_OK);
    must_contain(text, "\"joining\": true");
    assert_null(strstr(text, "draining")); /* written only when true */
    free(text);
    registry_destroy(g);
    ring_state_destroy(r);
    membership_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_file_keeps_the_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_file_refuses_impossible_changes, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
