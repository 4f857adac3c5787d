/* test_coord_change.c: unit tests of ring changes that move data (coord_change.c) on a
 * coord_ctx in a fake world (test_world.h): no process, no network. A join or drain
 * publishes a pending ring (epoch + 1 at once, the pending ring epoch + 2), commits only
 * once every shard of the ring reports it synced, with exactly the pending epoch and
 * placement; one change at a time; failover, the joining shard's death, the timeout and
 * the operator cancel it (the state file: test_coord_change_state.c).
 *
 * Old behaviour these would have caught: `ring add` of a loaded ring was refused (data
 * could not move), and a drain did not exist. */
#include "test_world.h"

/* A copy of the ring (free with ps__ring__free_unpacked). */
static Ps__Ring *ring_now(coord_ctx *c) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    return ring;
}

static ps_status drain(coord_ctx *c, const char *id, char *err) {
    uint64_t epoch = 0;
    return coord_node_drain(c, id, &epoch, err, COORD_ERR_MAX);
}

static ps_status rm(coord_ctx *c, const char *id, bool force, char *err) {
    uint64_t epoch = 0;
    return coord_node_remove(c, id, force, &epoch, err, COORD_ERR_MAX);
}

static void test_join_commits_only_when_every_shard_synced(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    uint64_t e = 0;
    where(c, "s1", &e);
    char err[COORD_ERR_MAX] = "";
    Ps__NodeInfo n = PS__NODE_INFO__INIT;
    n.id = (char *)"s4";
    n.addr = (char *)"127.0.0.1:7004";
    uint64_t epoch = 0;
    assert_int_equal(coord_node_add(c, &n, false, &epoch, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(epoch, e + 1); /* same members, next epoch: watchers get the pending ring */
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_wait(c, e, NULL, NULL, &ring), PS_STATUS_OK);
    assert_int_equal(ring->epoch, e + 1);
    assert_int_equal(ring->pending_epoch, e + 2);
    assert_true(ring->pending.len > 0);
    hashring *pending = NULL, *current = NULL;
    assert_int_equal(hashring_parse(ring->pending.data, ring->pending.len, &pending), 0);
    assert_int_equal(hashring_parse(ring->ring.data, ring->ring.len, &current), 0);
    assert_int_equal(hashring_node_count(pending), 4);
    assert_int_equal(hashring_node_count(current), 3);
    assert_int_equal(hashring_epoch(pending), e + 2);
    hashring_destroy(current);
    uint8_t *pending_bytes = malloc(ring->pending.len);
    size_t pending_len = ring->pending.len;
    memcpy(pending_bytes, ring->pending.data, pending_len);
    ps__ring__free_unpacked(ring, NULL);
    assert_int_equal(where(c, "s4", NULL), 'J');

    /* the joining shard reports nothing useful; stale and partial reports change nothing */
    heartbeat_synced(c, "s4", 0);
    heartbeat_synced(c, "s1", e + 2);
    heartbeat_synced(c, "s2", e + 2);
    heartbeat_synced(c, "s3", e + 1);
    assert_int_equal(where(c, "s4", &epoch), 'J');
    assert_int_equal(epoch, e + 1);
    ring = ring_now(c);
    assert_int_equal(ring->pending_epoch, e + 2);
    for (size_t i = 0; i < ring->n_nodes; i++)
        if (strcmp(ring->nodes[i]->id, "s2") == 0)
            assert_int_equal(ring->nodes[i]->synced_epoch, e + 2);
    ps__ring__free_unpacked(ring, NULL);

    heartbeat_synced(c, "s3", e + 2); /* the last one: committed */
    ring = ring_now(c);
    assert_int_equal(ring->epoch, e + 2);
    assert_int_equal(ring->pending_epoch, 0);
    assert_int_equal(ring->pending.len, 0);
    assert_int_equal(ring->ring.len, pending_len); /* the pending ring, byte for byte */
    assert_memory_equal(ring->ring.data, pending_bytes, pending_len);
    ps__ring__free_unpacked(ring, NULL);
    assert_int_equal(where(c, "s4", NULL), 'R');
    assert_int_equal(events_with("ring add s4 committed"), 1);
    free(pending_bytes);
    hashring_destroy(pending);
    coord_destroy(c);
}

/* --balanced: the tokens chosen at the start are the ones committed. */
static void test_balanced_join_commits_the_pending_placement(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    Ps__NodeInfo n = PS__NODE_INFO__INIT;
    n.id = (char *)"s4";
    n.addr = (char *)"127.0.0.1:7004";
    n.weight = 2;
    uint64_t epoch = 0;
    assert_int_equal(coord_node_add(c, &n, true, &epoch, err, sizeof err), PS_STATUS_OK);
    Ps__Ring *ring = ring_now(c);
    size_t len = ring->pending.len;
    uint8_t *bytes = malloc(len);
    memcpy(bytes, ring->pending.data, len);
    uint64_t pending_epoch = ring->pending_epoch;
    ps__ring__free_unpacked(ring, NULL);
    all_beat(c, pending_epoch);
    ring = ring_now(c);
    assert_int_equal(ring->epoch, pending_epoch);
    assert_int_equal(ring->ring.len, len);
    assert_memory_equal(ring->ring.data, bytes, len);
    hashring *h = NULL;
    assert_int_equal(hashring_parse(ring->ring.data, ring->ring.len, &h), 0);
    uint32_t idx;
    hashring_node_info info;
    assert_true(hashring_find(h, "s4", &idx) && hashring_node_at(h, idx, &info));
    assert_non_null(info.tokens); /* balanced: explicit tokens */
    hashring_destroy(h);
    ps__ring__free_unpacked(ring, NULL);
    free(bytes);
    coord_destroy(c);
}

static void test_drain_moves_then_takes_the_shard_off(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    set_shard("s2", PS_STATUS_OK, 7);
    uint64_t e = 0;
    where(c, "s1", &e);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(drain(c, "s2", err), PS_STATUS_OK);
    assert_int_equal(where(c, "s2", NULL), 'D');
    Ps__Ring *ring = ring_now(c);
    assert_int_equal(ring->epoch, e + 1);
    assert_int_equal(ring->pending_epoch, e + 2);
    hashring *pending = NULL;
    assert_int_equal(hashring_parse(ring->pending.data, ring->pending.len, &pending), 0);
    uint32_t idx;
    assert_false(hashring_find(pending, "s2", &idx));
    assert_int_equal(hashring_node_count(pending), 2);
    hashring_destroy(pending);
    ps__ring__free_unpacked(ring, NULL);
    assert_int_equal(events_with("ring drain s2 at 127.0.0.1:7002: draining"), 1);
    /* the draining shard has keys to send too: its report is needed */
    heartbeat_synced(c, "s1", e + 2);
    heartbeat_synced(c, "s3", e + 2);
    assert_int_equal(where(c, "s2", NULL), 'D');
    heartbeat_synced(c, "s2", e + 2);
    uint64_t epoch = 0;
    assert_int_equal(where(c, "s2", &epoch), 'o'); /* alive: kept, off the ring */
    assert_int_equal(epoch, e + 2);
    assert_int_equal(events_with("ring drain s2 committed"), 1);
    /* what cannot be drained */
    assert_int_equal(drain(c, "s2", err), PS_STATUS_NOT_FOUND);
    must_contain(err, "no shard s2 on the ring");
    assert_int_equal(drain(c, "nobody", err), PS_STATUS_NOT_FOUND);
    assert_int_equal(drain(c, "", err), PS_STATUS_INVALID_ARGUMENT);
    atomic_store(&w.now, 1400); /* s3 silent for 3 intervals: dead */
    heartbeat_synced(c, "s1", 0);
    coord_liveness_sweep(c);
    assert_int_equal(drain(c, "s3", err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "not draining shard s3: it is dead");
    must_contain(err, "psctl ring remove --id s3 --force");
    set_shard("s3", PS_STATUS_UNAVAILABLE, 0);
    assert_int_equal(rm(c, "s3", true, err), PS_STATUS_OK); /* by force: cannot be asked */
    assert_int_equal(drain(c, "s1", err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "it is the last shard on the ring");
    assert_true(strlen(err) < 512);
    coord_destroy(c);
}

static void test_one_change_at_a_time(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    uint64_t e = 0;
    where(c, "s1", &e);
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "shard s4 is already joining the ring");
    set_shard("s5", PS_STATUS_OK, 0);
    reg_shard(c, "s5", "127.0.0.1:7005");
    assert_int_equal(where(c, "s5", NULL), 'W');
    assert_int_equal(add(c, "s5", "127.0.0.1:7005", err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "not adding shard s5: a ring change is in progress, the join of shard s4 "
                      "at 127.0.0.1:7004");
    must_contain(err, "psctl ring cancel");
    assert_true(strlen(err) < 512);
    assert_int_equal(drain(c, "s1", err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "not draining shard s1: a ring change is in progress");
    assert_int_equal(rm(c, "s1", false, err), PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "not removing shard s1: a ring change is in progress");
    uint64_t after = 0;
    where(c, "s4", &after);
    assert_int_equal(after, e); /* nothing refused changed the ring */
    /* an empty ring still waits for the change: one at a time */
    set_shard("s1", PS_STATUS_OK, 0);
    reg_shard(c, "s5", "127.0.0.1:7005");
    assert_int_equal(where(c, "s5", NULL), 'W');
    coord_destroy(c);
}

static void test_failover_cancels_the_change(void **state) {
    (void)state;
    w.replication = 2;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    uint64_t e = 0;
    where(c, "s1", &e);
    atomic_store(&w.now, 1250);
    heartbeat_synced(c, "s1", e + 1);
    heartbeat_synced(c, "s3", e + 1);
    heartbeat_synced(c, "s4", 0);
    atomic_store(&w.now, 1301); /* s2 silent for 3 intervals */
    coord_liveness_sweep(c);
    uint64_t epoch = 0;
    assert_int_equal(where(c, "s2", &epoch), 'o');
    assert_int_equal(epoch, e + 1); /* one rebuild: failover and cancel together */
    assert_int_equal(where(c, "s4", NULL), 'W');
    Ps__Ring *ring = ring_now(c);
    assert_int_equal(ring->pending_epoch, 0);
    assert_int_equal(ring->pending.len, 0);
    ps__ring__free_unpacked(ring, NULL);
    assert_int_equal(events_with("ring change cancelled: the join of shard s4"), 1);
    assert_int_equal(events_with("shard s2 died and failover takes it off the ring"), 1);
    assert_int_equal(events_with("repeat `psctl ring add --id s4 --addr 127.0.0.1:7004`"), 1);
    coord_destroy(c);
    w.replication = 0;
}

static void test_death_of_the_joining_shard_cancels_the_change(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    atomic_store(&w.now, 1250);
    heartbeat_synced(c, "s1", 0);
    heartbeat_synced(c, "s2", 0);
    heartbeat_synced(c, "s3", 0);
    atomic_store(&w.now, 1301); /* s4 silent for 3 intervals */
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s4", NULL), 'W');
    assert_int_equal(events_with("the joining shard s4 is dead"), 1);
    coord_destroy(c);
}

static void test_timeout_cancels_the_change(void **state) {
    (void)state;
    w.change_timeout_ms = 1000;
    coord_ctx *c = three_shards();
    set_shard("s2", PS_STATUS_OK, 7);
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(drain(c, "s2", err), PS_STATUS_OK);
    uint64_t e = 0;
    where(c, "s2", &e);
    for (int64_t t = 1100; t <= 2000; t += 100) { /* all alive; s3 never syncs */
        atomic_store(&w.now, t);
        heartbeat_synced(c, "s1", e + 1);
        heartbeat_synced(c, "s2", e + 1);
        heartbeat_synced(c, "s3", 0);
        coord_liveness_sweep(c);
        assert_int_equal(where(c, "s2", NULL), 'D');
    }
    atomic_store(&w.now, 2001);
    coord_liveness_sweep(c);
    uint64_t epoch = 0;
    assert_int_equal(where(c, "s2", &epoch), 'R');
    assert_int_equal(epoch, e + 1);
    assert_int_equal(events_with("not committed within 1000 ms (--ring-change-timeout-ms): 2 of "
                                 "3 shards synced, not shard s3"),
                     1);
    assert_int_equal(events_with("psctl ring drain --id s2"), 1);
    /* a report for the cancelled pending ring commits nothing later */
    heartbeat_synced(c, "s3", e + 1);
    assert_int_equal(where(c, "s2", NULL), 'R');
    coord_destroy(c);
    w.change_timeout_ms = 0;
}

static void test_cancel_by_hand(void **state) {
    (void)state;
    coord_ctx *c = loaded_ring_and_s4();
    char err[COORD_ERR_MAX] = "";
    uint64_t e = 0, epoch = 0;
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    where(c, "s1", &e);
    assert_int_equal(rm(c, "s4", false, err), PS_STATUS_OK); /* remove of the joining shard */
    assert_int_equal(where(c, "s4", &epoch), 'W');
    assert_int_equal(epoch, e + 1);
    assert_int_equal(events_with("`ring remove` of the joining shard s4"), 1);
    assert_int_equal(drain(c, "s2", err), PS_STATUS_OK);
    assert_int_equal(add(c, "s2", "127.0.0.1:7002", err), PS_STATUS_OK); /* keeps it */
    assert_int_equal(where(c, "s2", &epoch), 'R');
    assert_int_equal(epoch, e + 3);
    assert_int_equal(events_with("`ring add` of shard s2 keeps it on the ring"), 1);
    Ps__NodeInfo cancel = PS__NODE_INFO__INIT; /* `ring cancel` of a drain that is over */
    cancel.id = (char *)"s4";
    cancel.addr = (char *)"127.0.0.1:7004";
    cancel.draining = true;
    assert_int_equal(coord_node_add(c, &cancel, false, &epoch, err, sizeof err),
                     PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "shard s4 is not draining: no drain of it to cancel");
    assert_int_equal(where(c, "s4", NULL), 'W');
    /* a join of a shard never heard from leaves nothing behind when cancelled */
    assert_int_equal(add(c, "s9", "127.0.0.1:7009", err), PS_STATUS_OK);
    assert_int_equal(where(c, "s9", NULL), 'J');
    assert_int_equal(rm(c, "s9", false, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s9", NULL), '-');
    /* --force during a change: the change is cancelled, the shard removed */
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    set_shard("s3", PS_STATUS_UNAVAILABLE, 0);
    assert_int_equal(rm(c, "s3", true, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s4", NULL), 'W');
    assert_int_equal(where(c, "s3", NULL), 'o');
    assert_int_equal(events_with("shard s3 was removed by force"), 1);
    coord_destroy(c);
}

/* After failover a dead shard is off the ring; `ring remove` forgets it (it answered
 * NOT_FOUND, "no node on the ring", before). */
static void test_remove_forgets_a_dead_shard_off_the_ring(void **state) {
    (void)state;
    w.replication = 2;
    coord_ctx *c = three_shards();
    atomic_store(&w.now, 1250);
    heartbeat_synced(c, "s1", 0);
    heartbeat_synced(c, "s3", 0);
    atomic_store(&w.now, 1301);
    coord_liveness_sweep(c);
    assert_int_equal(where(c, "s2", NULL), 'o');
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(rm(c, "s2", true, err), PS_STATUS_OK);
    assert_int_equal(where(c, "s2", NULL), '-');
    assert_int_equal(events_with("forgot shard s2"), 1);
    coord_destroy(c);
    w.replication = 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_commits_only_when_every_shard_synced, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_balanced_join_commits_the_pending_placement, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_drain_moves_then_takes_the_shard_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_change_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_cancels_the_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death_of_the_joining_shard_cancels_the_change, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_cancels_the_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_by_hand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_forgets_a_dead_shard_off_the_ring, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
