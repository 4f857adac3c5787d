/* test_sync.c: following a shard's update stream (cmocka; no process: the shard is an
 * in-process rpc server with Health and Subscribe, the chunks come from an in-memory
 * store).
 *
 * Old behaviour these tests would have caught (serving/serve/serve.c): a stream that
 * went silent was followed forever (test_stalled_stream_is_resubscribed); a shard
 * restart whose sequence numbers did not go down was not noticed, so nothing was
 * pulled again (test_new_incarnation_repulls); models could start loading before the
 * streams were subscribed (a fixed 50 ms sleep; test_ready_after_subscribing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "hashring.h"
#include "rpc.h"
#include "sync.h"
#include "test_fixtures.h"
#include "util.h"

#define NAME "digits_mlp"

typedef struct fx {
    pthread_mutex_t lock; /* the fake shard's state: */
    uint64_t incarnation, seq;
    int subscribes;
    int silent_left;   /* this many more streams send nothing at all */
    int generation;    /* bumped to end every open stream (a "restart") */
    Ps__Update *queue; /* one update to send, or NULL */
    rpc_server *server;
    char addr[64];
    Ps__ModelInfo *info;
    fixture_store *store;
    fixture_log *log;
    models *m;
    sync_ctx *sync;
} fx;

static ps_status h_health(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    fx *f = user;
    Ps__HealthResponse resp = PS__HEALTH_RESPONSE__INIT;
    pthread_mutex_lock(&f->lock);
    resp.seq = f->seq;
    resp.incarnation = f->incarnation;
    pthread_mutex_unlock(&f->lock);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_subscribe(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    fx *f = user;
    pthread_mutex_lock(&f->lock);
    f->subscribes++;
    bool silent = f->silent_left > 0;
    f->silent_left -= silent;
    int gen = f->generation;
    pthread_mutex_unlock(&f->lock);
    int64_t last = ps_now_ms();
    while (rpc_ctx_alive(ctx)) {
        pthread_mutex_lock(&f->lock);
        bool ended = f->generation != gen;
        Ps__Update *u = silent ? NULL : f->queue;
        if (u)
            f->queue = NULL;
        Ps__Update keep = PS__UPDATE__INIT;
        keep.keepalive = true;
        keep.seq = f->seq;
        keep.incarnation = f->incarnation;
        pthread_mutex_unlock(&f->lock);
        if (ended)
            return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE, "restarting");
        if (u || (!silent && ps_now_ms() - last >= 50)) {
            if (rpc_ctx_write(ctx, u ? &u->base : &keep.base) != PS_STATUS_OK)
                return PS_STATUS_CANCELLED;
            last = ps_now_ms();
        }
        fixture_sleep_ms(5);
    }
    return PS_STATUS_CANCELLED;
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    f->incarnation = 0xabc;
    f->seq = 1000;
    rpc_method methods[] = {
        {"/ps.ParameterServer/Health", RPC_METHOD_UNARY, &ps__health_request__descriptor, h_health,
         f, 0},
        {"/ps.ParameterServer/Subscribe", RPC_METHOD_SERVER_STREAM,
         &ps__subscribe_request__descriptor, h_subscribe, f, 0},
    };
    rpc_server_opts so = {.listen = "127.0.0.1:0", .threads = 2, .grace_ms = -1};
    int port = 0;
    assert_int_equal(rpc_server_serve(&so, methods, 2, &f->server, &port), PS_STATUS_OK);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", port);
    f->info = fixture_model_info(NAME, 65536, 1);
    f->store = fixture_store_create();
    fixture_store_put_model(f->store, f->info, 100);
    f->log = fixture_log_create();
    assert_int_equal(models_create(NULL, &f->m), PS_STATUS_OK);
    served_source src = fixture_store_source(f->store);
    char err[256];
    assert_int_equal(models_load(f->m, f->info, &src, err, sizeof err), PS_STATUS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    sync_destroy(f->sync);
    rpc_server_destroy(f->server);
    models_destroy(f->m);
    fixture_log_destroy(f->log);
    fixture_store_destroy(f->store);
    ps__model_info__free_unpacked(f->info, NULL);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

/* Starts sync with a ring of one shard: the fake one, owner of every key. */
static void start(fx *f) {
    sync_opts o = {.models = f->m,
                   .source = fixture_store_source(f->store),
                   .stall_ms = 300,
                   .fix_interval_ms = 20,
                   .logger = fixture_log_logger(f->log)};
    assert_int_equal(sync_create(&o, &f->sync), PS_STATUS_OK);
    hashring *r = NULL;
    assert_int_equal(hashring_create(0, &r), PS_STATUS_OK);
    assert_int_equal(hashring_add(r, "fake-1", f->addr, 1), PS_STATUS_OK);
    size_t len = 0;
    hashring_serialize(r, NULL, 0, &len);
    uint8_t *buf = malloc(len);
    assert_int_equal(hashring_serialize(r, buf, len, &len), PS_STATUS_OK);
    hashring_destroy(r);
    Ps__NodeInfo node = PS__NODE_INFO__INIT, *nodes[] = {&node};
    node.id = "fake-1";
    node.addr = f->addr;
    node.in_ring = true;
    Ps__Ring ring = PS__RING__INIT;
    ring.ring.data = buf;
    ring.ring.len = len;
    ring.n_nodes = 1;
    ring.nodes = nodes;
    assert_int_equal(sync_ring_install(f->sync, &ring), PS_STATUS_OK);
    free(buf);
}

static bool eventually(bool (*cond)(fx *), fx *f) {
    for (int i = 0; i < 2000; i++) { /* 10 s */
        if (cond(f))
            return true;
        fixture_sleep_ms(5);
    }
    return false;
}

static uint64_t bias_version(fx *f) {
    served *s = models_acquire(f->m, NAME, 0);
    uint64_t v = 0;
    assert_true(served_chunk_version(s, ps_key_dense(NAME, 1, "fc2.bias", 0), &v));
    served_release(s);
    return v;
}

static bool bias_at_200(fx *f) {
    return bias_version(f) == 200;
}

static bool bias_at_500(fx *f) {
    return bias_version(f) == 500;
}

static bool current(fx *f) {
    served *s = models_acquire(f->m, NAME, 0);
    bool ok = served_current(s);
    served_release(s);
    return ok;
}

static bool subscribed(fx *f) {
    pthread_mutex_lock(&f->lock);
    int n = f->subscribes;
    pthread_mutex_unlock(&f->lock);
    return n >= 1;
}

static bool resubscribed(fx *f) {
    pthread_mutex_lock(&f->lock);
    int n = f->subscribes;
    pthread_mutex_unlock(&f->lock);
    return n >= 2;
}

static void test_ready_after_subscribing(void **state) {
    fx *f = *state;
    sync_opts o = {.models = f->m, .source = fixture_store_source(f->store)};
    assert_int_equal(sync_create(&o, &f->sync), PS_STATUS_OK);
    assert_false(sync_ready_wait(f->sync, 50)); /* no ring yet */
    sync_destroy(f->sync);
    f->sync = NULL;
    start(f);
    assert_true(sync_ready_wait(f->sync, 5000));
    float delta[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t *buf = NULL;
    Ps__Update u = fixture_update(ps_key_dense(NAME, 1, "fc2.bias", 0), PS__PUSH_OP__PUSH_ADD, 200,
                                  100, delta, 10, &buf);
    u.incarnation = 0xabc;
    pthread_mutex_lock(&f->lock);
    f->queue = &u;
    pthread_mutex_unlock(&f->lock);
    assert_true(eventually(bias_at_200, f));
    assert_int_equal(fixture_log_count(f->log, "sent nothing"), 0); /* keepalives */
    sync_destroy(f->sync);
    f->sync = NULL;
    free(buf);
}

static void test_stalled_stream_is_resubscribed(void **state) {
    fx *f = *state;
    f->silent_left = 1;
    start(f);
    assert_true(sync_ready_wait(f->sync, 5000));
    assert_true(eventually(current, f)); /* the first subscription's re-pull is done */
    int pulls = fixture_store_pulls(f->store);
    assert_int_equal(fixture_log_count(f->log, "sent nothing"), 0);
    assert_true(eventually(resubscribed, f));
    for (int i = 0; i < 2000 && fixture_log_count(f->log, "sent nothing") == 0; i++)
        fixture_sleep_ms(5);
    assert_int_equal(fixture_log_count(f->log, "sent nothing, not even a keepalive, for 300 ms"),
                     1);
    for (int i = 0; i < 2000 && fixture_store_pulls(f->store) == pulls; i++)
        fixture_sleep_ms(5);
    assert_true(fixture_store_pulls(f->store) > pulls); /* what it held was pulled again */
}

static void test_new_incarnation_repulls(void **state) {
    fx *f = *state;
    start(f);
    assert_true(sync_ready_wait(f->sync, 5000));
    assert_true(eventually(subscribed, f)); /* the stream reached the shard */
    assert_true(eventually(current, f));    /* and the first subscription's re-pull is done */
    fixture_store_put_model(f->store, f->info, 500); /* the restarted shard's data */
    pthread_mutex_lock(&f->lock);
    f->incarnation = 0xdef;
    f->seq = 400;
    f->generation++;
    pthread_mutex_unlock(&f->lock);
    assert_true(eventually(bias_at_500, f));
    for (int i = 0; i < 2000 && !fixture_log_count(f->log, "restarted (new incarnation)"); i++)
        fixture_sleep_ms(5);
    assert_int_equal(fixture_log_count(f->log, "restarted (new incarnation)"), 1);
    assert_true(fixture_log_count(f->log, "ended (UNAVAILABLE restarting)") >= 1);
}

int main(void) {
    rpc_process_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_after_subscribing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_stream_is_resubscribed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_incarnation_repulls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
