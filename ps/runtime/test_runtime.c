/* test_runtime.c: the process runtime against an in-process fake coordinator (built
 * on the rpc layer, in this process: no process starts). Checks registration that
 * waits for a coordinator starting late, heartbeats filled by the hook,
 * re-registration when the coordinator forgets the node, rings delivered newest-only
 * through the watch and through a heartbeat's epoch, the registry watch, a return
 * within heartbeats of a coordinator back from a long outage, and a prompt stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "runtime.h"
#include "util.h"

/* ------------------------------------------------------------ fake coordinator --- */

typedef struct fake {
    rpc_server *server;
    atomic_int registers, heartbeats;
    atomic_bool forget;         /* answer the next heartbeat NOT_FOUND */
    _Atomic uint64_t epoch;     /* the ring epoch GetRing/WatchRing/Heartbeat report */
    atomic_bool watch_silent;   /* WatchRing sends nothing (heartbeat must catch up) */
    _Atomic uint64_t last_keys; /* from the last heartbeat */
    char last_addr[128];
} fake;

static ps_status h_register(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    fake *f = user;
    const Ps__RegisterRequest *req = (const Ps__RegisterRequest *)msg;
    snprintf(f->last_addr, sizeof f->last_addr, "%s", req->node ? req->node->addr : "");
    atomic_fetch_add(&f->registers, 1);
    Ps__RegisterResponse resp = PS__REGISTER_RESPONSE__INIT;
    resp.heartbeat_ms = 50;
    resp.epoch = atomic_load(&f->epoch);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_heartbeat(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    fake *f = user;
    if (atomic_exchange(&f->forget, false))
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "unknown node");
    atomic_store(&f->last_keys, ((const Ps__HeartbeatRequest *)msg)->keys);
    atomic_fetch_add(&f->heartbeats, 1);
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    resp.epoch = atomic_load(&f->epoch);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status reply_ring(rpc_ctx *ctx, uint64_t epoch, bool stream) {
    Ps__Ring ring = PS__RING__INIT;
    ring.epoch = epoch;
    return stream ? rpc_ctx_write(ctx, &ring.base) : rpc_ctx_reply(ctx, &ring.base);
}

static ps_status h_get_ring(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    return reply_ring(ctx, atomic_load(&((fake *)user)->epoch), false);
}

static ps_status h_watch_ring(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    fake *f = user;
    uint64_t sent = ((const Ps__WatchRingRequest *)msg)->after_epoch;
    while (rpc_ctx_alive(ctx)) {
        uint64_t e = atomic_load(&f->epoch);
        if (e > sent && !atomic_load(&f->watch_silent)) {
            /* an old ring first: the runtime must not deliver it */
            if (sent > 0 && reply_ring(ctx, sent, true) != PS_STATUS_OK)
                return PS_STATUS_CANCELLED;
            if (reply_ring(ctx, e, true) != PS_STATUS_OK)
                return PS_STATUS_CANCELLED;
            sent = e;
        }
        usleep(10000);
    }
    return PS_STATUS_CANCELLED;
}

static ps_status h_watch_models(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Ps__ModelInfo m = PS__MODEL_INFO__INIT;
    m.name = "m1";
    m.version = 3;
    Ps__ModelInfo *ms[] = {&m};
    Ps__ModelsUpdate up = PS__MODELS_UPDATE__INIT;
    up.generation = 1;
    up.n_models = 1;
    up.models = ms;
    if (rpc_ctx_write(ctx, &up.base) != PS_STATUS_OK)
        return PS_STATUS_CANCELLED;
    while (rpc_ctx_alive(ctx))
        usleep(10000);
    return PS_STATUS_CANCELLED;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void fake_start(fake *f, int port) {
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const rpc_method methods[] = {
        {"/ps.Coordinator/RegisterNode", RPC_METHOD_UNARY, &ps__register_request__descriptor,
         h_register, f, 0},
        {"/ps.Coordinator/Heartbeat", RPC_METHOD_UNARY, &ps__heartbeat_request__descriptor,
         h_heartbeat, f, 0},
        {"/ps.Coordinator/GetRing", RPC_METHOD_UNARY, &ps__get_ring_request__descriptor, h_get_ring,
         f, 0},
        {"/ps.Coordinator/WatchRing", RPC_METHOD_SERVER_STREAM, &ps__watch_ring_request__descriptor,
         h_watch_ring, f, 0},
        {"/ps.Coordinator/WatchModels", RPC_METHOD_SERVER_STREAM,
         &ps__watch_models_request__descriptor, h_watch_models, f, 0},
    };
    rpc_server_opts opts = {.listen = listen, .threads = 2, .grace_ms = -1};
    assert_int_equal(
        rpc_server_serve(&opts, methods, sizeof methods / sizeof methods[0], &f->server, NULL),
        PS_STATUS_OK);
}

/* ------------------------------------------------------------ the node --- */

typedef struct node {
    _Atomic uint64_t ring_epoch; /* last delivered */
    atomic_int rings;            /* deliveries */
    atomic_int models;
    _Atomic uint64_t model_version;
    atomic_bool out_of_order; /* a delivered ring was not newer */
} node;

static void on_ring(void *user, const Ps__Ring *ring) {
    node *n = user;
    if (ring->epoch <= atomic_load(&n->ring_epoch) && atomic_load(&n->rings) > 0)
        atomic_store(&n->out_of_order, true);
    atomic_store(&n->ring_epoch, ring->epoch);
    atomic_fetch_add(&n->rings, 1);
}

static void on_models(void *user, const Ps__ModelsUpdate *up) {
    node *n = user;
    if (up->n_models == 1)
        atomic_store(&n->model_version, up->models[0]->version);
    atomic_fetch_add(&n->models, 1);
}

static void on_heartbeat(void *user, Ps__HeartbeatRequest *req) {
    (void)user;
    req->keys = 42;
}

static ps_status echo_never(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    return rpc_ctx_error(ctx, PS_STATUS_UNIMPLEMENTED, "test");
}

static bool wait_for(atomic_int *v, int at_least, int ms) {
    for (int64_t end = ps_now_ms() + ms; ps_now_ms() < end; usleep(5000))
        if (atomic_load(v) >= at_least)
            return true;
    return atomic_load(v) >= at_least;
}

static bool wait_epoch(_Atomic uint64_t *v, uint64_t want, int ms) {
    for (int64_t end = ps_now_ms() + ms; ps_now_ms() < end; usleep(5000))
        if (atomic_load(v) == want)
            return true;
    return atomic_load(v) == want;
}

/* A coordinator that starts 300 ms after the node: the node waits for it, and then
 * heartbeats, re-registers, follows rings and the registry, and stops promptly. */
static void test_lifecycle(void **state) {
    (void)state;
    fake f;
    memset(&f, 0, sizeof f);
    atomic_store(&f.epoch, 1);
    int port = free_port();
    char coord[64];
    snprintf(coord, sizeof coord, "127.0.0.1:%d", port);

    node n;
    memset(&n, 0, sizeof n);
    ps_runtime_opts opts = {.program = "test",
                            .id = "node-1",
                            .coordinator = coord,
                            .role = PS__NODE_ROLE__ROLE_SHARD,
                            .register_timeout_ms = 10000,
                            .hooks = {&n, on_ring, on_models, on_heartbeat}};
    ps_runtime *rt = NULL;
    assert_int_equal(ps_runtime_create(&opts, &rt), PS_STATUS_OK);
    const rpc_method m[] = {{"/test.Node/Nothing", RPC_METHOD_UNARY,
                             &ps__get_ring_request__descriptor, echo_never, NULL, 0}};
    rpc_server_opts sopts = {.listen = "127.0.0.1:0", .threads = 1};
    char err[256] = "";
    assert_int_equal(ps_runtime_serve(rt, &sopts, m, 1, err, sizeof err), PS_STATUS_OK);
    assert_true(ps_runtime_port(rt) > 0);
    assert_non_null(strstr(ps_runtime_addr(rt), "127.0.0.1:"));

    /* the coordinator comes up late */
    int64_t t0 = ps_now_ms();
    usleep(300000);
    fake_start(&f, port);
    assert_int_equal(ps_runtime_join(rt, err, sizeof err), PS_STATUS_OK);
    assert_true(ps_now_ms() - t0 >= 300);
    assert_string_equal(f.last_addr, ps_runtime_addr(rt));
    /* the ring is known when join returns */
    assert_int_equal(atomic_load(&n.ring_epoch), 1);

    /* heartbeats carry what the hook filled */
    assert_true(wait_for(&f.heartbeats, 3, 5000));
    assert_int_equal(atomic_load(&f.last_keys), 42);
    assert_true(ps_runtime_connected(rt));

    /* a new ring through the watch, never an older one after it */
    atomic_store(&f.epoch, 5);
    assert_true(wait_epoch(&n.ring_epoch, 5, 5000));
    /* a ring the watch does not send arrives through the heartbeat's epoch */
    atomic_store(&f.watch_silent, true);
    atomic_store(&f.epoch, 7);
    assert_true(wait_epoch(&n.ring_epoch, 7, 5000));
    assert_false(atomic_load(&n.out_of_order));

    /* the registry */
    assert_true(wait_for(&n.models, 1, 5000));
    assert_int_equal(atomic_load(&n.model_version), 3);

    /* the coordinator forgets the node: it registers again */
    int before = atomic_load(&f.registers);
    atomic_store(&f.forget, true);
    assert_true(wait_for(&f.registers, before + 1, 5000));

    /* stop is prompt even with open watch streams */
    int64_t t1 = ps_now_ms();
    ps_runtime_destroy(rt);
    assert_true(ps_now_ms() - t1 < 3000);
    rpc_server_destroy(f.server);
}

/* The coordinator goes away for 3.5 s and comes back on its port. Before, gRPC's own
 * reconnect backoff (1 s, then 1.6 s, then 2.56 s, each +-20%) had grown past the
 * outage, so the node's next attempt to connect came 0.6 to 2.7 s after the coordinator
 * was back, whatever the heartbeat interval (and minutes after longer outages). Now
 * every retry lifts that backoff: heartbeats resume within a few intervals (50 ms). */
static void test_back_within_heartbeats_after_a_long_outage(void **state) {
    (void)state;
    fake f;
    memset(&f, 0, sizeof f);
    atomic_store(&f.epoch, 1);
    int port = free_port();
    char coord[64];
    snprintf(coord, sizeof coord, "127.0.0.1:%d", port);
    fake_start(&f, port);
    node n;
    memset(&n, 0, sizeof n);
    ps_runtime_opts opts = {.program = "test",
                            .id = "node-3",
                            .coordinator = coord,
                            .role = PS__NODE_ROLE__ROLE_SERVE,
                            .hooks = {&n, on_ring, on_models, on_heartbeat}};
    ps_runtime *rt = NULL;
    assert_int_equal(ps_runtime_create(&opts, &rt), PS_STATUS_OK);
    const rpc_method m[] = {{"/test.Node/Nothing", RPC_METHOD_UNARY,
                             &ps__get_ring_request__descriptor, echo_never, NULL, 0}};
    rpc_server_opts sopts = {.listen = "127.0.0.1:0", .threads = 1};
    char err[256] = "";
    assert_int_equal(ps_runtime_serve(rt, &sopts, m, 1, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(ps_runtime_join(rt, err, sizeof err), PS_STATUS_OK);
    assert_true(wait_for(&f.heartbeats, 2, 5000));
    assert_true(wait_for(&n.models, 1, 5000));

    rpc_server_destroy(f.server); /* the coordinator dies */
    usleep(3500 * 1000);
    assert_false(ps_runtime_connected(rt));
    int beats = atomic_load(&f.heartbeats), models = atomic_load(&n.models);
    fake_start(&f, port); /* and is back on its port */
    int64_t t0 = ps_now_ms();
    assert_true(wait_for(&f.heartbeats, beats + 1, 10000));
    int64_t took = ps_now_ms() - t0;
    print_message("heartbeats resumed %lld ms after the coordinator came back\n", (long long)took);
    assert_true(took < 500);
    /* the registry watch resumed too: the list is delivered again */
    assert_true(wait_for(&n.models, models + 1, 5000));
    ps_runtime_destroy(rt);
    rpc_server_destroy(f.server);
}

/* Nobody answers: join gives up after the register timeout, saying why. */
static void test_join_times_out(void **state) {
    (void)state;
    char coord[64];
    snprintf(coord, sizeof coord, "127.0.0.1:%d", free_port());
    ps_runtime_opts opts = {
        .program = "test", .id = "node-2", .coordinator = coord, .register_timeout_ms = 400};
    ps_runtime *rt = NULL;
    assert_int_equal(ps_runtime_create(&opts, &rt), PS_STATUS_OK);
    const rpc_method m[] = {{"/test.Node/Nothing", RPC_METHOD_UNARY,
                             &ps__get_ring_request__descriptor, echo_never, NULL, 0}};
    rpc_server_opts sopts = {.listen = "127.0.0.1:0", .threads = 1};
    char err[256] = "";
    assert_int_equal(ps_runtime_serve(rt, &sopts, m, 1, err, sizeof err), PS_STATUS_OK);
    int64_t t0 = ps_now_ms();
    assert_int_not_equal(ps_runtime_join(rt, err, sizeof err), PS_STATUS_OK);
    assert_true(ps_now_ms() - t0 < 5000);
    assert_non_null(strstr(err, "cannot register with the coordinator at"));
    ps_runtime_destroy(rt);
}

static void test_bad_options(void **state) {
    (void)state;
    ps_runtime *rt = (ps_runtime *)0x1;
    ps_runtime_opts none = {0};
    assert_int_equal(ps_runtime_create(&none, &rt), PS_STATUS_INVALID_ARGUMENT);
    char long_id[400];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    ps_runtime_opts bad = {.program = "t", .id = long_id};
    assert_int_equal(ps_runtime_create(&bad, &rt), PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(rt, (ps_runtime *)0x1); /* untouched on failure */
    ps_runtime_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_back_within_heartbeats_after_a_long_outage),
        cmocka_unit_test(test_join_times_out),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
