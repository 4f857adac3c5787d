/* test_coord_restart.c: what a coordinator restart does with what the state file holds,
 * on a coord_ctx in a fake world (test_world.h: fake clock, fake shards, a real state
 * file in a temporary directory): no process, no network.
 *
 * Old behaviour these would have caught: a restarted coordinator showed every member
 * dead ("never heard") until its first heartbeat, so a publish right after a restart
 * waited for no replica, and once dead members are taken off the ring a sweep could take
 * them all off at once; and each write a kill -9 cut short left a coordinator.json.tmp.PID
 * beside the state file, one more per crash, forever. */
#include <fcntl.h>

#include "test_world.h"

/* The nodes of a ring copy: how many, and how many alive. */
static void count_alive(coord_ctx *c, size_t *ret_nodes, size_t *ret_alive) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    *ret_nodes = ring->n_nodes;
    *ret_alive = 0;
    for (size_t i = 0; i < ring->n_nodes; i++)
        *ret_alive += ring->nodes[i]->alive;
    ps__ring__free_unpacked(ring, NULL);
}

static void beat(coord_ctx *c, const char *id) {
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    hb.id = (char *)id;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
}

static void test_members_get_a_dead_after_interval_from_the_restart(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    coord_destroy(c);
    atomic_store(&w.now, 50000); /* the coordinator was down for 49 s */
    c = open_ctx(0, 0);
    must_contain(w.events[w.n_events - 1], "3 nodes from");
    must_contain(w.events[w.n_events - 1], "count as alive for 300 ms (3 heartbeat intervals)");
    size_t nodes = 0, alive = 0;
    count_alive(c, &nodes, &alive);
    assert_int_equal(nodes, 3);
    assert_int_equal(alive, 3);  /* not "dead, never heard" */
    atomic_store(&w.now, 50300); /* a full dead-after interval: nobody is dead yet */
    coord_liveness_sweep(c);
    assert_int_equal(events_with("is dead: no heartbeat"), 0);
    beat(c, "s1");
    atomic_store(&w.now, 50301); /* the silent ones are dead; the one that reported in not */
    coord_liveness_sweep(c);
    assert_int_equal(events_with("is dead: no heartbeat for 301 ms"), 2);
    assert_int_equal(events_with("node s1 "), 0);
    count_alive(c, &nodes, &alive);
    assert_int_equal(alive, 1);
    beat(c, "s2"); /* and a late one is back as usual */
    assert_int_equal(events_with("node s2 (shard at 127.0.0.1:7002) is back"), 1);
    coord_destroy(c);
}

static void touch_file(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"format\": 1, \"ep", 17), 17); /* a torn write */
    close(fd);
}

static bool file_exists(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void remove_file(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void test_writes_a_crash_cut_short_are_cleaned_up(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    coord_destroy(c);
    touch_file(w.dir, "coordinator.json.tmp.4242");   /* what ps_write_file_atomic leaves */
    touch_file(w.dir, "coordinator.json.tmp.notpid"); /* not its name pattern: kept */
    touch_file(w.dir, "other.json.tmp.17");           /* another file's: kept */
    c = open_ctx(0, 0);
    size_t nodes = 0, alive = 0;
    count_alive(c, &nodes, &alive);
    assert_int_equal(nodes, 3); /* the state file itself is whole */
    assert_false(file_exists(w.dir, "coordinator.json.tmp.4242"));
    assert_true(file_exists(w.dir, "coordinator.json.tmp.notpid"));
    assert_true(file_exists(w.dir, "other.json.tmp.17"));
    coord_destroy(c);
    remove_file(w.dir, "coordinator.json.tmp.notpid");
    remove_file(w.dir, "other.json.tmp.17");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_members_get_a_dead_after_interval_from_the_restart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_writes_a_crash_cut_short_are_cleaned_up, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
