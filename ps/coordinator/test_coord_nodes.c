/* test_coord_nodes.c: unit tests of the coordinator's membership operations (register,
 * ring add and remove, liveness, watch limits) on a coord_ctx in a fake world
 * (test_world.h): no process, no network.
 *
 * Old behaviour these would have caught (each test says which): a new shard joined a
 * ring that held data at once; `ring remove` of a loaded shard succeeded right after a
 * coordinator restart; Register took any weight or role; watch streams had no limit; a
 * shard on the ring registering with another weight moved keys at once. */
#include "test_world.h"

/* D6: before, s4 went on the ring at once and a quarter of the keys became NOT_FOUND. */
static void test_new_shard_waits_while_the_ring_holds_data(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    uint64_t epoch = 0, now_epoch = 0;
    assert_int_equal(where(c, "s1", &epoch), 'R');
    assert_int_equal(epoch, 3);
    set_shard("s2", PS_STATUS_OK, 10);
    set_shard("s4", PS_STATUS_OK, 0);
    reg_shard(c, "s4", "127.0.0.1:7004");
    assert_int_equal(where(c, "s4", &now_epoch), 'W');
    assert_int_equal(now_epoch, epoch); /* the ring did not change */
    assert_int_equal(events_with("shard s4 at 127.0.0.1:7004 waits off the ring"), 1);
    assert_int_equal(events_with("shard s2 on the ring holds 10 keys"), 1);
    /* registering again (a restart) keeps it waiting, and says why only once */
    reg_shard(c, "s4", "127.0.0.1:7004");
    assert_int_equal(where(c, "s4", NULL), 'W');
    assert_int_equal(events_with("waits off the ring:"), 1);
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    hb.id = (char *)"s4";
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(resp.epoch, epoch);
    /* once the ring is empty again, a registration joins */
    set_shard("s2", PS_STATUS_OK, 0);
    reg_shard(c, "s4", "127.0.0.1:7004");
    assert_int_equal(where(c, "s4", &now_epoch), 'R');
    assert_int_equal(now_epoch, epoch + 1);
    /* replicas never wait */
    set_shard("s2", PS_STATUS_OK, 10);
    assert_int_equal(reg(c, "r1", "127.0.0.1:8001", PS__NODE_ROLE__ROLE_SERVE, 0, NULL),
                     PS_STATUS_OK);
    assert_int_equal(where(c, "r1", NULL), 'o');
    coord_destroy(c);
}

static void test_unreachable_member_counts_as_data(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    set_shard("s3", PS_STATUS_UNAVAILABLE, 0);
    reg_shard(c, "s5", "127.0.0.1:7005");
    assert_int_equal(where(c, "s5", NULL), 'W');
    assert_int_equal(events_with("shard s3 at 127.0.0.1:7003 could not be asked"), 1);
    coord_destroy(c);
}

/* A shard already on the ring (a restart) goes back to its place, even with data. */
static void test_restart_goes_back_to_its_place(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    set_shard("s1", PS_STATUS_OK, 99);
    uint64_t epoch = 0, after = 0;
    where(c, "s1", &epoch);
    int probes = w.probes;
    reg_shard(c, "s1", "127.0.0.1:7001");
    assert_int_equal(where(c, "s1", &after), 'R');
    assert_int_equal(after, epoch);
    assert_int_equal(w.probes, probes);   /* nothing to decide: no shard asked */
    reg_shard(c, "s1", "127.0.0.1:7101"); /* it came back on another port */
    assert_int_equal(where(c, "s1", &after), 'R');
    assert_int_equal(after, epoch + 1);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(reg(c, "s1", "127.0.0.1:7101", PS__NODE_ROLE__ROLE_SERVE, 0, err),
                     PS_STATUS_ALREADY_EXISTS);
    must_contain(err, "already registered as a shard");
    coord_destroy(c);
}

/* D6 for `psctl ring add`: before, it put the shard on a loaded ring at once, exit 0, and
 * a quarter of the keys went NOT_FOUND. Now it starts a join (test_coord_change.c has
 * the rest) and only an empty ring takes a shard at once. */
static void test_ring_add_of_a_loaded_ring_starts_a_join(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(add(c, "s1", "127.0.0.1:7001", err), PS_STATUS_ALREADY_EXISTS);
    set_shard("s1", PS_STATUS_OK, 4);
    set_shard("s3", PS_STATUS_OK, 8);
    reg_shard(c, "s4", "127.0.0.1:7004");
    assert_int_equal(where(c, "s4", NULL), 'W');
    uint64_t epoch = 0, after = 0;
    where(c, "s1", &epoch);
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    assert_int_equal(where(c, "s4", &after), 'J'); /* not on the ring until its keys are copied */
    assert_int_equal(after, epoch + 1);
    assert_int_equal(
        events_with("ring add s4 at 127.0.0.1:7004 weight 1, hashed positions: joining"), 1);
    coord_destroy(c);
    /* an empty ring: a waiting shard is added at once */
    unlink(w.path);
    set_shard("s3", PS_STATUS_OK, 0);
    c = three_shards();
    set_shard("s1", PS_STATUS_OK, 4);
    reg_shard(c, "s4", "127.0.0.1:7004");
    set_shard("s1", PS_STATUS_OK, 0);
    where(c, "s1", &epoch);
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    assert_int_equal(where(c, "s4", &after), 'R');
    assert_int_equal(after, epoch + 1);
    coord_destroy(c);
}

static ps_status rm(coord_ctx *c, const char *id, bool force, char *err) {
    uint64_t epoch = 0;
    return coord_node_remove(c, id, force, &epoch, err, COORD_ERR_MAX);
}

/* D8: before, after a restart a loaded shard had no heartbeat figure yet (0 keys) and,
 * not alive, was not asked: `ring remove` succeeded and its chunks were lost. */
static void test_remove_asks_the_shard_even_after_a_restart(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    coord_destroy(c); /* the coordinator restarts: nobody has sent a heartbeat yet */
    c = open_ctx(0, 0);
    assert_int_equal(where(c, "s1", NULL), 'R');
    set_shard("s1", PS_STATUS_OK, 5);
    set_shard("s2", PS_STATUS_UNAVAILABLE, 0);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(rm(c, "s1", false, err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "shard s1 holds 5 keys; removing it would lose them");
    assert_int_equal(rm(c, "s1", true, err), PS_STATUS_FAILED_PRECONDITION); /* never */
    assert_int_equal(where(c, "s1", NULL), 'R');
    assert_int_equal(rm(c, "s2", false, err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "cannot ask shard s2 at 127.0.0.1:7002 how much data it holds");
    must_contain(err, "psctl ring remove --id s2 --force");
    assert_true(strlen(err) < 512);
    uint64_t epoch = 0, after = 0;
    where(c, "s2", &epoch);
    assert_int_equal(rm(c, "s2", true, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s2", &after),
                     'o'); /* presumed alive after the restart: kept, off the ring */
    assert_int_equal(after, epoch + 1);
    assert_int_equal(events_with("removed shard s2 at 127.0.0.1:7002 by force"), 1);
    /* an empty shard that is alive leaves the ring but stays known */
    reg_shard(c, "s3", "127.0.0.1:7003");
    assert_int_equal(rm(c, "s3", false, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s3", NULL), 'o');
    assert_int_equal(rm(c, "s3", false, err), PS_STATUS_NOT_FOUND);
    must_contain(err, "no node s3 on the ring");
    assert_int_equal(rm(c, "nobody", false, err), PS_STATUS_NOT_FOUND);
    assert_int_equal(rm(c, "", false, err), PS_STATUS_INVALID_ARGUMENT);
    coord_destroy(c);
}

/* R = 2: a shard that falls silent leaves the ring (its keys' next owners serve them);
 * a restarted coordinator does not judge members it has not heard from; more shards
 * silent at once than the copies cover: no failover, said once. */
static void test_failover_takes_a_dead_shard_off_the_ring(void **state) {
    (void)state;
    w.replication = 2;
    coord_ctx *c = three_shards();
    uint64_t epoch = 0, after = 0;
    where(c, "s2", &epoch);
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    atomic_store(&w.now, 1250);
    const char *alive[] = {"s1", "s3"};
    for (int i = 0; i < 2; i++) {
        hb.id = (char *)alive[i];
        assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    }
    atomic_store(&w.now, 1301); /* s2 silent for 3 intervals */
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s2", &after), 'o');
    assert_int_equal(after, epoch + 1);
    assert_int_equal(events_with("shard s2 is dead: taken off the ring"), 1);
    assert_int_equal(where(c, "s1", NULL), 'R');
    /* a heartbeat s2 sent before it was killed, handled late, shows it alive again: a
     * plain `ring remove` says it is not on the ring, a forced one forgets it */
    hb.id = "s2";
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(rm(c, "s2", false, err), PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "no node s2 on the ring"));
    assert_int_equal(rm(c, "s2", true, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s2", NULL), '-');
    assert_int_equal(events_with("forgot shard s2"), 1);
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_NOT_FOUND);
    atomic_store(&w.now, 2000); /* then both others at once: more than R - 1 */
    coord_liveness_sweep(c);
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s1", NULL), 'R');
    assert_int_equal(where(c, "s3", NULL), 'R');
    assert_int_equal(events_with("no failover"), 1);
    coord_destroy(c);
    c = open_ctx(0, 0); /* restarted: nobody heard from yet, nobody judged */
    atomic_store(&w.now, 9000);
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s1", NULL), 'R');
    assert_int_equal(where(c, "s3", NULL), 'R');
    coord_destroy(c);
    w.replication = 0;
}

/* R = 2: a shard whose heartbeat is late and that nothing answers for (its process is
 * gone) is failed over after 1.5 intervals instead of 3; one that answers is not. */
static void test_a_late_shard_nothing_answers_for_fails_over_early(void **state) {
    (void)state;
    w.replication = 2;
    coord_ctx *c = three_shards();
    uint64_t epoch = 0, after = 0;
    where(c, "s2", &epoch);
    set_shard("s2", PS_STATUS_UNAVAILABLE, 0); /* connection refused */
    set_shard("s3", PS_STATUS_OK, 0);          /* late but answering */
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    atomic_store(&w.now, 1100); /* 1 interval: nobody is late yet */
    hb.id = (char *)"s1";
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s2", NULL), 'R');
    atomic_store(&w.now, 1170); /* 1.7 intervals since s2 and s3 were heard from */
    coord_liveness_sweep(c);
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s2", &after), 'o');
    assert_int_equal(after, epoch + 1);
    assert_int_equal(events_with("nothing answers there"), 1);
    assert_int_equal(where(c, "s3", NULL), 'R'); /* it answers: not judged early */
    coord_destroy(c);
    w.replication = 0;
}

static void test_liveness_events(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    atomic_store(&w.now, 1301); /* 3 intervals of 100 ms and 1 ms since they registered */
    coord_liveness_sweep(c);
    assert_int_equal(events_with("is dead: no heartbeat for 301 ms"), 3);
    coord_liveness_sweep(c);
    assert_int_equal(events_with("is dead"), 3); /* once each */
    atomic_store(&w.now, 1500);
    hb.id = (char *)"s2";
    hb.keys = 42;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(events_with("node s2 (shard at 127.0.0.1:7002) is back"), 1);
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(events_with("is back"), 1);
    hb.id = (char *)"ghost";
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_NOT_FOUND);
    must_contain(err, "register first");
    coord_destroy(c);
}

static bool not_alive(void *arg) {
    (void)arg;
    return false;
}

static void test_watch_limit_and_waits(void **state) {
    (void)state;
    coord_ctx *c = open_ctx(0, 2);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_watch_begin(c, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(coord_watch_begin(c, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(coord_watch_begin(c, err, sizeof err), PS_STATUS_RESOURCE_EXHAUSTED);
    must_contain(err, "2 watch streams are open, the limit (--max-watchers)");
    coord_watch_end(c);
    assert_int_equal(coord_watch_begin(c, err, sizeof err), PS_STATUS_OK);
    coord_watch_end(c);
    coord_watch_end(c);

    set_shard("s1", PS_STATUS_OK, 0);
    reg_shard(c, "s1", "127.0.0.1:7001"); /* epoch 1 */
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_wait(c, 0, NULL, NULL, &ring), PS_STATUS_OK);
    assert_int_equal(ring->epoch, 1);
    ps__ring__free_unpacked(ring, NULL);
    assert_int_equal(coord_ring_wait(c, 1, not_alive, NULL, &ring), PS_STATUS_CANCELLED);
    coord_stop(c);
    assert_int_equal(coord_ring_wait(c, 1, NULL, NULL, &ring), PS_STATUS_UNAVAILABLE);
    Ps__ModelsUpdate *up = NULL;
    assert_int_equal(coord_models_wait(c, 5, NULL, NULL, &up), PS_STATUS_UNAVAILABLE);
    assert_false(coord_liveness_wait(c));
    coord_destroy(c);
}

static void test_hostile_registrations(void **state) {
    (void)state;
    coord_ctx *c = open_ctx(3, 0);
    char err[COORD_ERR_MAX] = "";
    char huge[10 * 1024];
    memset(huge, 'x', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    Ps__RegisterResponse resp = PS__REGISTER_RESPONSE__INIT;
    assert_int_equal(coord_node_register(c, NULL, &resp, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(reg(c, "", "h:1", PS__NODE_ROLE__ROLE_SHARD, 0, err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "node id of 1-63 characters");
    assert_int_equal(reg(c, huge, "h:1", PS__NODE_ROLE__ROLE_SHARD, 0, err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(reg(c, "s1", huge, PS__NODE_ROLE__ROLE_SHARD, 0, err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "is not HOST:PORT");
    assert_true(strlen(err) < 512);
    assert_int_equal(reg(c, "s1", "h:1", PS__NODE_ROLE__ROLE_SHARD, UINT32_MAX, err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "weight 4294967295 is over 1000");
    assert_int_equal(reg(c, "s1", "h:1", (Ps__NodeRole)7, 0, err), PS_STATUS_INVALID_ARGUMENT);
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        assert_int_equal(reg(c, id, "h:1", PS__NODE_ROLE__ROLE_SERVE, 0, err), PS_STATUS_OK);
    }
    assert_int_equal(reg(c, "r9", "h:1", PS__NODE_ROLE__ROLE_SERVE, 0, err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    must_contain(err, "the cluster is full (3 nodes at most)");
    assert_int_equal(add(c, "s9", "h:9", err), PS_STATUS_RESOURCE_EXHAUSTED);
    coord_destroy(c);
}

/* Before, a weight the ring could not take (weight x vnodes over its point limit) was
 * left on the ring: every later rebuild failed and no shard could ever join again. */
static void test_weight_the_ring_cannot_take_changes_nothing(void **state) {
    (void)state;
    w.vnodes = 5000; /* 1000 x 5000 points: over HASHRING_MAX_POINTS */
    coord_ctx *c = open_ctx(0, 0);
    set_shard("s1", PS_STATUS_OK, 0);
    set_shard("s2", PS_STATUS_OK, 0);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(reg(c, "s1", "127.0.0.1:7001", PS__NODE_ROLE__ROLE_SHARD, 1000, err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    must_contain(err, "the ring cannot take it");
    assert_int_equal(where(c, "s1", NULL), '-');
    assert_int_equal(add(c, "s1", "127.0.0.1:7001", &err[0]), PS_STATUS_OK); /* weight 1 */
    Ps__NodeInfo heavy = PS__NODE_INFO__INIT;
    heavy.id = (char *)"s2";
    heavy.addr = (char *)"127.0.0.1:7002";
    heavy.weight = 1000;
    uint64_t epoch = 0, after = 0;
    where(c, "s1", &epoch);
    assert_int_equal(coord_node_add(c, &heavy, false, &after, err, sizeof err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(where(c, "s2", &after), '-');
    assert_int_equal(after, epoch);
    assert_int_equal(coord_node_add(c, &heavy, true, &after, err, sizeof err), /* balanced */
                     PS_STATUS_RESOURCE_EXHAUSTED);
    must_contain(err, "the ring cannot take shard s2");
    assert_int_equal(where(c, "s2", &after), '-');
    assert_int_equal(after, epoch);
    reg_shard(c, "s2", "127.0.0.1:7002"); /* weight 1: the ring still takes members */
    assert_int_equal(where(c, "s2", &after), 'R');
    assert_int_equal(after, epoch + 1);
    coord_destroy(c);
}

/* The weight a ring node holds, from a ring copy (0: not there). */
static uint32_t ring_weight(coord_ctx *c, const char *id) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    uint32_t weight = 0;
    for (size_t i = 0; i < ring->n_nodes; i++)
        if (strcmp(ring->nodes[i]->id, id) == 0)
            weight = ring->nodes[i]->weight;
    ps__ring__free_unpacked(ring, NULL);
    return weight;
}

/* Before, a shard on the ring that registered with another weight (restarted with another
 * --weight, or without the one it was added with) changed the ring at once: its keys
 * moved to new owners with no copy, unreachable, and the old owner's clean-up then
 * deleted them. Now the ring's weight stands and the operator is told how to change it. */
static void test_registering_with_another_weight_keeps_the_ring(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    set_shard("s2", PS_STATUS_OK, 10); /* the ring holds data */
    uint64_t epoch = 0, after = 0;
    where(c, "s2", &epoch);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(reg(c, "s2", "127.0.0.1:7002", PS__NODE_ROLE__ROLE_SHARD, 3, err),
                     PS_STATUS_OK);
    assert_int_equal(where(c, "s2", &after), 'R');
    assert_int_equal(after, epoch);
    assert_int_equal(ring_weight(c, "s2"), 1);
    assert_int_equal(events_with("shard s2 registered with weight 3 but the ring holds it at "
                                 "weight 1: the ring's weight stands"),
                     1);
    /* the same weight, or none given, says nothing; a new address still changes the ring */
    assert_int_equal(reg(c, "s2", "127.0.0.1:7002", PS__NODE_ROLE__ROLE_SHARD, 1, err),
                     PS_STATUS_OK);
    assert_int_equal(events_with("registered with weight"), 1);
    assert_int_equal(reg(c, "s2", "127.0.0.1:7012", PS__NODE_ROLE__ROLE_SHARD, 0, err),
                     PS_STATUS_OK);
    assert_int_equal(where(c, "s2", &after), 'R');
    assert_int_equal(after, epoch + 1);
    assert_int_equal(ring_weight(c, "s2"), 1);
    coord_destroy(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_shard_waits_while_the_ring_holds_data, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_member_counts_as_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_goes_back_to_its_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_add_of_a_loaded_ring_starts_a_join, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_asks_the_shard_even_after_a_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_liveness_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_takes_a_dead_shard_off_the_ring, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_late_shard_nothing_answers_for_fails_over_early,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_limit_and_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_registrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weight_the_ring_cannot_take_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_registering_with_another_weight_keeps_the_ring, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
