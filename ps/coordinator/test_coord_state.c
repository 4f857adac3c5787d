/* test_coord_state.c: unit tests of the coordinator's persistence and registry
 * operations on a coord_ctx in a fake world (test_world.h): no process, no network.
 *
 * Old behaviour these would have caught: the state file was written (with its fsync)
 * under the lock heartbeats take, so a slow disk stalled liveness; a damaged state file
 * was half-loaded (unreadable nodes and models skipped) instead of refused; AddNode had
 * no balanced placement (the ring stayed at hashed positions, peak/mean above 1.02). */
#include <math.h>

#include "test_world.h"

typedef struct slow_register {
    coord_ctx *c;
    ps_status st;
} slow_register;

static void *register_model(void *arg) {
    slow_register *r = arg;
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    uint64_t version = 0;
    char err[COORD_ERR_MAX];
    r->st = coord_model_register(r->c, &t.info, &version, err, sizeof err);
    return NULL;
}

typedef struct beat {
    coord_ctx *c;
    bool done;
    ps_status st;
} beat;

static void *heartbeat(void *arg) {
    beat *b = arg;
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    hb.id = (char *)"s1";
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    ps_status st = coord_node_heartbeat(b->c, &hb, &resp, err, sizeof err);
    pthread_mutex_lock(&w.lock);
    b->st = st;
    b->done = true;
    pthread_cond_broadcast(&w.cond);
    pthread_mutex_unlock(&w.lock);
    return NULL;
}

/* Waits (w.lock held) until *flag, at most 30 s; returns *flag. */
static bool wait_for(const bool *flag) {
    struct timespec until = ps_abstime_after_ms(30000);
    while (!*flag)
        if (pthread_cond_timedwait(&w.cond, &w.lock, &until) != 0)
            break;
    return *flag;
}

static void test_state_is_written_outside_the_lock(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    pthread_mutex_lock(&w.lock);
    w.block_writes = true; /* the next state write stops inside the disk */
    pthread_mutex_unlock(&w.lock);
    slow_register r = {.c = c};
    pthread_t writer, beater;
    assert_int_equal(pthread_create(&writer, NULL, register_model, &r), 0);
    pthread_mutex_lock(&w.lock);
    assert_true(wait_for(&w.in_write));
    pthread_mutex_unlock(&w.lock);
    /* the disk holds the write: a heartbeat must still be answered */
    beat b = {.c = c};
    assert_int_equal(pthread_create(&beater, NULL, heartbeat, &b), 0);
    pthread_mutex_lock(&w.lock);
    bool answered = wait_for(&b.done);
    bool still_writing = w.in_write;
    w.release = true;
    pthread_cond_broadcast(&w.cond);
    pthread_mutex_unlock(&w.lock);
    pthread_join(writer, NULL);
    pthread_join(beater, NULL);
    assert_true(answered);
    assert_true(still_writing);
    assert_int_equal(b.st, PS_STATUS_OK);
    assert_int_equal(r.st, PS_STATUS_OK);
    coord_destroy(c);
    /* the write completed: a restart finds the model */
    w.block_writes = false;
    c = open_ctx(0, 0);
    Ps__ModelInfo *m = NULL;
    char err[COORD_ERR_MAX];
    assert_int_equal(coord_model_get(c, "tiny", 0, &m, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(m->version, 1);
    ps__model_info__free_unpacked(m, NULL);
    coord_destroy(c);
}

static void test_damaged_state_file_is_refused(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    coord_destroy(c);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(ps_read_file(w.path, &text, &len), PS_STATUS_OK);
    assert_int_equal(ps_write_file_atomic(w.path, text, len / 3), PS_STATUS_OK); /* truncated */
    free(text);
    coord_opts o = {.state_path = w.path, .heartbeat_ms = 100, .probe = fake_probe};
    char err[COORD_ERR_MAX] = "";
    c = NULL;
    assert_int_equal(coord_create(&o, &c, err, sizeof err), PS_STATUS_PARSE);
    assert_null(c);
    must_contain(err, w.path);
    must_contain(err, "is damaged");
    must_contain(err, "truncated");
    must_contain(err, "restore it from a backup, or move it away");
}

static void test_models_and_status(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(version, 1);
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(version, 2);
    t.tensors[0].chunks = 9;
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "9 chunks of 64 floats do not cover 200 floats");
    assert_int_equal(version, 2);

    Ps__ListModelsResponse *list = NULL;
    assert_int_equal(coord_models_list(c, &list), PS_STATUS_OK);
    assert_int_equal(list->n_models, 2);
    ps__list_models_response__free_unpacked(list, NULL);
    Ps__ModelsUpdate *up = NULL;
    assert_int_equal(coord_models_wait(c, 0, NULL, NULL, &up), PS_STATUS_OK);
    assert_int_equal(up->generation, 2);
    assert_int_equal(up->n_models, 1); /* the latest of each */
    assert_int_equal(up->models[0]->version, 2);
    ps__models_update__free_unpacked(up, NULL);
    Ps__ModelInfo *m = NULL;
    assert_int_equal(coord_model_get(c, "tiny", 3, &m, err, sizeof err), PS_STATUS_NOT_FOUND);
    must_contain(err, "no model tiny version 3");
    assert_int_equal(coord_model_get(c, "none", 0, &m, err, sizeof err), PS_STATUS_NOT_FOUND);

    Ps__StatusResponse *st = NULL;
    assert_int_equal(coord_status_get(c, &st), PS_STATUS_OK);
    assert_int_equal(st->ring->n_nodes, 3);
    assert_int_equal(st->ring->epoch, 3);
    assert_int_equal(st->n_models, 2);
    ps__status_response__free_unpacked(st, NULL);
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    hb.id = (char *)"s1";
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(resp.registry_generation, 2);
    uint64_t epoch = 0;
    size_t nodes = 0, models = 0;
    coord_summary(c, &epoch, &nodes, &models);
    assert_int_equal(epoch, 3);
    assert_int_equal(nodes, 3);
    assert_int_equal(models, 2);
    coord_destroy(c);
}

/* A version a live replica serves is not deleted unless forced; a deleted version is
 * gone from the registry, the watches and the state file. */
static void test_delete_model(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(reg(c, "r1", "127.0.0.1:9001", PS__NODE_ROLE__ROLE_SERVE, 1, err),
                     PS_STATUS_OK);
    Ps__ModelRef ref = PS__MODEL_REF__INIT;
    ref.name = (char *)"tiny";
    ref.version = 1;
    Ps__ModelRef *refs[] = {&ref};
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    hb.id = (char *)"r1";
    hb.n_serving = 1;
    hb.serving = refs;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);

    Ps__ModelInfo *m = NULL;
    assert_int_equal(coord_model_delete(c, "tiny", 1, false, &m, err, sizeof err),
                     PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "model tiny version 1 is served by replica r1");
    /* the latest version, even if no heartbeat says it is served yet */
    assert_int_equal(coord_model_delete(c, "tiny", 2, false, &m, err, sizeof err),
                     PS_STATUS_FAILED_PRECONDITION);
    must_contain(err, "model tiny version 2 is its latest version");
    assert_null(m);
    assert_int_equal(coord_model_delete(c, "tiny", 3, false, &m, err, sizeof err),
                     PS_STATUS_NOT_FOUND);
    assert_int_equal(coord_model_delete(c, "tiny", 0, false, &m, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    /* the replica moves to version 2: version 1 may go */
    ref.version = 2;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(coord_model_delete(c, "tiny", 1, false, &m, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(m->version, 1);
    assert_int_equal(m->n_tensors, t.info.n_tensors); /* what to free on the shards */
    ps__model_info__free_unpacked(m, NULL);
    Ps__ModelInfo *got = NULL;
    assert_int_equal(coord_model_get(c, "tiny", 1, &got, err, sizeof err), PS_STATUS_NOT_FOUND);
    /* forced while served */
    assert_int_equal(coord_model_delete(c, "tiny", 2, true, &m, err, sizeof err), PS_STATUS_OK);
    ps__model_info__free_unpacked(m, NULL);
    Ps__ListModelsResponse *list = NULL;
    assert_int_equal(coord_models_list(c, &list), PS_STATUS_OK);
    assert_int_equal(list->n_models, 0);
    ps__list_models_response__free_unpacked(list, NULL);
    assert_true(events_with("model tiny version 2 deleted (forced)") > 0);
    /* a heartbeat claiming too many versions is refused */
    hb.n_serving = MEMBERSHIP_MAX_SERVING + 1;
    assert_int_equal(coord_node_heartbeat(c, &hb, &resp, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    coord_destroy(c);
}

/* The current ring's bytes (Ring.ring) into *ret (malloc'd), and its epoch. */
static size_t ring_bytes(coord_ctx *c, uint8_t **ret, uint64_t *ret_epoch) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    *ret = malloc(ring->ring.len);
    assert_non_null(*ret);
    memcpy(*ret, ring->ring.data, ring->ring.len);
    size_t len = ring->ring.len;
    *ret_epoch = ring->epoch;
    ps__ring__free_unpacked(ring, NULL);
    return len;
}

static void assert_same_bytes(const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
}

/* `ring add --balanced` keeps the ring balanced, and the tokens stay through a
 * re-registration (even with another weight) and a restart; a plain add is hashed. */
static void test_balanced_tokens_are_kept(void **state) {
    (void)state;
    w.vnodes = 200;
    coord_ctx *c = open_ctx(0, 0);
    char err[COORD_ERR_MAX] = "";
    const char *ids[] = {"s1", "s2", "s3", "s4"};
    for (int i = 0; i < 4; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7001 + i);
        set_shard(ids[i], PS_STATUS_OK, 0);
        Ps__NodeInfo n = PS__NODE_INFO__INIT;
        n.id = (char *)ids[i];
        n.addr = addr;
        n.weight = i == 3 ? 2 : 1;
        uint64_t epoch = 0;
        assert_int_equal(coord_node_add(c, &n, true, &epoch, err, sizeof err), PS_STATUS_OK);
    }
    assert_int_equal(events_with("balanced tokens"), 4);
    uint8_t *before = NULL, *after = NULL;
    uint64_t epoch = 0, epoch2 = 0;
    size_t len = ring_bytes(c, &before, &epoch);
    hashring *ring = NULL;
    assert_int_equal(hashring_parse(before, len, &ring), PS_STATUS_OK);
    double peak_mean = 0;
    assert_int_equal(hashring_ownership(ring, 1, NULL, &peak_mean), PS_STATUS_OK);
    assert_true(peak_mean <= 1.02);
    hashring_destroy(ring);

    /* s2 restarts: registers again, with the same weight and then with another */
    reg_shard(c, "s2", "127.0.0.1:7002");
    size_t len2 = ring_bytes(c, &after, &epoch2);
    assert_int_equal(epoch2, epoch);
    assert_same_bytes(before, len, after, len2);
    free(after);
    /* another weight changes nothing: the ring's weight stands (coord_node_register) */
    assert_int_equal(reg(c, "s2", "127.0.0.1:7002", PS__NODE_ROLE__ROLE_SHARD, 3, err),
                     PS_STATUS_OK);
    uint8_t *back = NULL;
    size_t len3 = ring_bytes(c, &back, &epoch2);
    assert_int_equal(epoch2, epoch);
    assert_same_bytes(before, len, back, len3);
    uint32_t idx;
    hashring_node_info info;
    assert_int_equal(hashring_parse(back, len3, &ring), PS_STATUS_OK);
    assert_true(hashring_find(ring, "s2", &idx) && hashring_node_at(ring, idx, &info));
    assert_int_equal(info.weight, 1);
    assert_int_equal(info.n_tokens, 200); /* its points did not move */
    hashring_destroy(ring);

    /* a restart loads the same ring from the state file */
    coord_destroy(c);
    c = open_ctx(0, 0);
    len2 = ring_bytes(c, &after, &epoch2);
    assert_int_equal(epoch2, epoch);
    assert_same_bytes(back, len3, after, len2);
    free(after);
    free(back);

    /* a plain add: hashed positions */
    set_shard("s5", PS_STATUS_OK, 0);
    assert_int_equal(add(c, "s5", "127.0.0.1:7005", err), PS_STATUS_OK);
    assert_int_equal(events_with("weight 1, hashed positions"), 1);
    len2 = ring_bytes(c, &after, &epoch2);
    assert_int_equal(hashring_parse(after, len2, &ring), PS_STATUS_OK);
    assert_true(hashring_find(ring, "s5", &idx) && hashring_node_at(ring, idx, &info));
    assert_null(info.tokens);
    assert_true(hashring_find(ring, "s4", &idx) && hashring_node_at(ring, idx, &info));
    assert_int_equal(info.n_tokens, 400);
    hashring_destroy(ring);
    free(after);
    free(before);
    coord_destroy(c);
}

/* Registers the tiny model `name` as its next version; returns that version. */
static uint64_t register_tiny(coord_ctx *c, const char *name) {
    tiny_model t;
    tiny_model_init(&t, name, 0);
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    return version;
}

/* Before, the publish numbers an uploader sent were stored as sent: a published of 2^63
 * or more was written as a negative number and the coordinator refused its own state file
 * at the next start; a publishing number showed a publish that was not running. */
static void test_uploaders_publish_numbers_are_ignored(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    t.info.published = UINT64_MAX;
    t.info.publishing = 42;
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    t.info.published = (uint64_t)1 << 63;
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    Ps__ModelInfo *m = NULL;
    for (uint64_t v = 1; v <= 2; v++) {
        assert_int_equal(coord_model_get(c, "tiny", v, &m, err, sizeof err), PS_STATUS_OK);
        assert_int_equal(m->published, 0);
        assert_int_equal(m->publishing, 0);
        ps__model_info__free_unpacked(m, NULL);
    }
    coord_destroy(c);
    c = open_ctx(0, 0); /* the state file loads */
    assert_int_equal(coord_model_get(c, "tiny", 2, &m, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(m->published, 0);
    ps__model_info__free_unpacked(m, NULL);
    coord_destroy(c);
}

/* Before, a tensor name that was not UTF-8 was registered; from then on the state could
 * not be encoded, every later change stood in memory only, and a restart lost them all
 * (the ring epoch went back to 0). */
static void test_a_name_that_is_not_text_is_refused(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    register_tiny(c, "tiny");
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    t.tensors[3].name = (char *)"\xff\xfe\xfd\xfc";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "tensor 3: its name is not UTF-8 text");
    set_shard("s4", PS_STATUS_OK, 0);
    assert_int_equal(add(c, "s4", "127.0.0.1:7004", err), PS_STATUS_OK);
    uint64_t epoch = 0;
    assert_int_equal(where(c, "s4", &epoch), 'R');
    coord_destroy(c);
    c = open_ctx(0, 0); /* every acknowledged change is there after a restart */
    uint64_t back = 0;
    assert_int_equal(where(c, "s4", &back), 'R');
    assert_int_equal(back, epoch);
    Ps__ModelInfo *m = NULL;
    assert_int_equal(coord_model_get(c, "tiny", 1, &m, err, sizeof err), PS_STATUS_OK);
    ps__model_info__free_unpacked(m, NULL);
    coord_destroy(c);
}

/* Before, SetOptimizer stored whatever its edit made: a compact config rewritten
 * indented grew past the 1 MiB a config may take (and the next start refused the state
 * file), a tensor the model lacks was accepted, and a NaN said "out of memory". */
static void test_set_optimizer_keeps_the_model_valid(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    /* a compact config of about 600 KB: the tiny model and a long array of zeros */
    const size_t zeros = 300 * 1000;
    char *big = malloc(sizeof(TINY_CONFIG_FMT) + 64 + 2 * zeros);
    assert_non_null(big);
    int n = snprintf(big, 1024, TINY_CONFIG_FMT, "tiny");
    size_t at = (size_t)n - 1; /* over the closing brace */
    at += (size_t)sprintf(big + at, ", \"notes\": [0");
    for (size_t i = 1; i < zeros; i++) {
        big[at++] = ',';
        big[at++] = '0';
    }
    strcpy(big + at, "]}");
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    t.info.config_json = big;
    uint64_t version = 0;
    char err[COORD_ERR_MAX] = "";
    assert_int_equal(coord_model_register(c, &t.info, &version, err, sizeof err), PS_STATUS_OK);
    Ps__SetOptimizerRequest req = PS__SET_OPTIMIZER_REQUEST__INIT;
    req.model = (char *)"tiny";
    req.type = (char *)"adam";
    Ps__ModelInfo *m = NULL;
    assert_int_equal(coord_model_set_optimizer(c, &req, &m, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "a config.json of 1 to 1048576 bytes is required");
    /* a tensor the model lacks; a value that is not a number */
    register_tiny(c, "small");
    req.model = (char *)"small";
    req.tensor = (char *)"fc9.weight";
    assert_int_equal(coord_model_set_optimizer(c, &req, &m, err, sizeof err), PS_STATUS_NOT_FOUND);
    must_contain(err, "model small version 1 has no tensor fc9.weight");
    req.tensor = (char *)"fc1.weight";
    char *fields[] = {(char *)"lr"};
    double values[] = {NAN};
    req.fields = fields;
    req.values = values;
    req.n_fields = req.n_values = 1;
    assert_int_equal(coord_model_set_optimizer(c, &req, &m, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    must_contain(err, "hyper-parameter lr is NaN");
    values[0] = 0.01;
    assert_int_equal(coord_model_set_optimizer(c, &req, &m, err, sizeof err), PS_STATUS_OK);
    ps__model_info__free_unpacked(m, NULL);
    coord_destroy(c);
    c = open_ctx(0, 0); /* the state file loads */
    assert_int_equal(coord_model_get(c, "small", 1, &m, err, sizeof err), PS_STATUS_OK);
    must_contain(m->config_json, "fc1.weight");
    ps__model_info__free_unpacked(m, NULL);
    coord_destroy(c);
    free(big);
}

/* Watchers share one packed copy per registry generation and per ring epoch (the ring
 * rebuilt once COORD_RING_FRESH_MS passed, for fresh liveness figures). */
static void test_watchers_share_packed_messages(void **state) {
    (void)state;
    coord_ctx *c = three_shards();
    coord_packed *a = NULL, *b = NULL;
    uint64_t gen = 0, epoch = 0;
    register_tiny(c, "tiny");
    assert_int_equal(coord_models_wait_packed(c, 0, NULL, NULL, &a, &gen), PS_STATUS_OK);
    assert_int_equal(coord_models_wait_packed(c, 0, NULL, NULL, &b, &gen), PS_STATUS_OK);
    assert_ptr_equal(a, b); /* one copy */
    assert_int_equal(gen, 1);
    coord_packed_unref(b);
    register_tiny(c, "tiny");
    assert_int_equal(coord_models_wait_packed(c, 1, NULL, NULL, &b, &gen), PS_STATUS_OK);
    assert_ptr_not_equal(a, b);
    assert_int_equal(gen, 2);
    size_t len = 0;
    const uint8_t *bytes = coord_packed_bytes(a, &len); /* the old one lives while held */
    Ps__ModelsUpdate *up = ps__models_update__unpack(NULL, len, bytes);
    assert_non_null(up);
    assert_int_equal(up->generation, 1);
    ps__models_update__free_unpacked(up, NULL);
    coord_packed_unref(a);
    coord_packed_unref(b);

    assert_int_equal(coord_ring_wait_packed(c, 0, NULL, NULL, &a, &epoch), PS_STATUS_OK);
    assert_int_equal(coord_ring_wait_packed(c, 0, NULL, NULL, &b, &epoch), PS_STATUS_OK);
    assert_ptr_equal(a, b);
    coord_packed_unref(b);
    atomic_fetch_add(&w.now, COORD_RING_FRESH_MS); /* liveness figures that old: rebuilt */
    assert_int_equal(coord_ring_wait_packed(c, 0, NULL, NULL, &b, &epoch), PS_STATUS_OK);
    assert_ptr_not_equal(a, b);
    assert_int_equal(epoch, 3);
    coord_packed_unref(a);
    coord_packed_unref(b);
    coord_destroy(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_is_written_outside_the_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_state_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uploaders_publish_numbers_are_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_name_that_is_not_text_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_optimizer_keeps_the_model_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchers_share_packed_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balanced_tokens_are_kept, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
