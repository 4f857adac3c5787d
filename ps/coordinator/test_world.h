/* test_world.h: the fake world the coordinator's unit tests run in: fake shards (the
 * probe answers what a test sets), a fake clock, a disk hook that can hold a write, and
 * the events the coordinator reported. Header-only: each test program includes it
 * once, and calls setup/teardown around each test. */
#ifndef PS_COORDINATOR_TEST_WORLD_H
#define PS_COORDINATOR_TEST_WORLD_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "coord.h"
#include "test_fixtures.h"
#include "util.h"

#define MAX_FAKES 8
#define MAX_EVENTS 64

/* ----------------------------------------------------------------- the world --- */

typedef struct world {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct {
        char id[16];
        ps_status status; /* what asking it gives */
        uint64_t keys;
    } shards[MAX_FAKES];
    size_t n_shards;
    int probes;
    char events[MAX_EVENTS][COORD_ERR_MAX];
    size_t n_events;
    bool block_writes, in_write, release; /* the disk hook */
    atomic_llong now;
    uint32_t vnodes;           /* 0 = 20 */
    uint32_t replication;      /* 0 = 1: most tests pin R = 1 (no failover) */
    int64_t change_timeout_ms; /* --ring-change-timeout-ms; 0 = the default */
    char dir[512], path[600];
} world;

static world w;

static inline ps_status fake_probe(void *arg, const char *id, const char *addr, uint64_t *ret_keys,
                                   char *err, size_t err_len) {
    (void)arg;
    (void)addr;
    pthread_mutex_lock(&w.lock);
    w.probes++;
    ps_status st = PS_STATUS_UNAVAILABLE;
    for (size_t i = 0; i < w.n_shards; i++)
        if (strcmp(w.shards[i].id, id) == 0) {
            st = w.shards[i].status;
            if (st == PS_STATUS_OK)
                *ret_keys = w.shards[i].keys;
        }
    pthread_mutex_unlock(&w.lock);
    if (st != PS_STATUS_OK)
        snprintf(err, err_len, "UNAVAILABLE: connection refused");
    return st;
}

static inline void set_shard(const char *id, ps_status st, uint64_t keys) {
    pthread_mutex_lock(&w.lock);
    size_t i = 0;
    while (i < w.n_shards && strcmp(w.shards[i].id, id) != 0)
        i++;
    if (i == w.n_shards)
        w.n_shards++;
    snprintf(w.shards[i].id, sizeof w.shards[i].id, "%s", id);
    w.shards[i].status = st;
    w.shards[i].keys = keys;
    pthread_mutex_unlock(&w.lock);
}

static inline void on_event(void *arg, coord_event_level level, const char *message) {
    (void)arg;
    (void)level;
    pthread_mutex_lock(&w.lock);
    if (w.n_events < MAX_EVENTS)
        snprintf(w.events[w.n_events++], COORD_ERR_MAX, "%s", message);
    pthread_mutex_unlock(&w.lock);
}

static inline int events_with(const char *words) {
    int n = 0;
    pthread_mutex_lock(&w.lock);
    for (size_t i = 0; i < w.n_events; i++)
        n += strstr(w.events[i], words) != NULL;
    pthread_mutex_unlock(&w.lock);
    return n;
}

static inline int64_t fake_clock(void *arg) {
    (void)arg;
    return atomic_load(&w.now);
}

static inline ps_status hooked_write(void *arg, const char *path, const void *data, size_t len) {
    (void)arg;
    pthread_mutex_lock(&w.lock);
    if (w.block_writes) {
        w.in_write = true;
        pthread_cond_broadcast(&w.cond);
        while (!w.release)
            pthread_cond_wait(&w.cond, &w.lock);
        w.in_write = false;
    }
    pthread_mutex_unlock(&w.lock);
    return ps_write_file_atomic(path, data, len);
}

static inline coord_ctx *open_ctx(size_t max_nodes, size_t max_watchers) {
    coord_opts o = {.state_path = w.path,
                    .heartbeat_ms = 100,
                    .vnodes = w.vnodes ? w.vnodes : 20,
                    .replication = w.replication ? w.replication : 1,
                    .max_nodes = max_nodes,
                    .max_watchers = max_watchers,
                    .probe = fake_probe,
                    .write = hooked_write,
                    .event = on_event,
                    .clock = fake_clock,
                    .ring_change_timeout_ms = w.change_timeout_ms};
    coord_ctx *c = NULL;
    char err[COORD_ERR_MAX];
    assert_int_equal(coord_create(&o, &c, err, sizeof err), PS_STATUS_OK);
    return c;
}

static inline int setup(void **state) {
    (void)state;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    atomic_store(&w.now, 1000);
    const char *tmp = getenv("TMPDIR");
    snprintf(w.dir, sizeof w.dir, "%s/test_coord.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(w.dir))
        return -1;
    snprintf(w.path, sizeof w.path, "%s/coordinator.json", w.dir);
    return 0;
}

static inline int teardown(void **state) {
    (void)state;
    unlink(w.path);
    rmdir(w.dir);
    return 0;
}

/* ----------------------------------------------------------------- helpers --- */

static inline ps_status reg(coord_ctx *c, const char *id, const char *addr, Ps__NodeRole role,
                            uint32_t weight, char *err) {
    Ps__NodeInfo n = PS__NODE_INFO__INIT;
    n.id = (char *)id;
    n.addr = (char *)addr;
    n.role = role;
    n.weight = weight;
    Ps__RegisterResponse resp = PS__REGISTER_RESPONSE__INIT;
    char buf[COORD_ERR_MAX];
    return coord_node_register(c, &n, &resp, err ? err : buf, COORD_ERR_MAX);
}

static inline void reg_shard(coord_ctx *c, const char *id, const char *addr) {
    assert_int_equal(reg(c, id, addr, PS__NODE_ROLE__ROLE_SHARD, 0, NULL), PS_STATUS_OK);
}

/* The node's entry in a ring copy: 'R' on the ring, 'D' draining (on it), 'J' joining,
 * 'W' waiting, 'o' off, '-' unknown. */
static inline char where(coord_ctx *c, const char *id, uint64_t *ret_epoch) {
    Ps__Ring *ring = NULL;
    assert_int_equal(coord_ring_get(c, &ring), PS_STATUS_OK);
    char at = '-';
    for (size_t i = 0; i < ring->n_nodes; i++)
        if (strcmp(ring->nodes[i]->id, id) == 0)
            at = ring->nodes[i]->draining  ? 'D'
                 : ring->nodes[i]->in_ring ? 'R'
                 : ring->nodes[i]->joining ? 'J'
                 : ring->nodes[i]->waiting ? 'W'
                                           : 'o';
    if (ret_epoch)
        *ret_epoch = ring->epoch;
    ps__ring__free_unpacked(ring, NULL);
    return at;
}

static inline ps_status add(coord_ctx *c, const char *id, const char *addr, char *err) {
    Ps__NodeInfo n = PS__NODE_INFO__INIT;
    n.id = (char *)id;
    n.addr = (char *)addr;
    uint64_t epoch = 0;
    return coord_node_add(c, &n, false, &epoch, err, COORD_ERR_MAX);
}

static inline void must_contain(const char *text, const char *words) {
    if (!strstr(text, words))
        fail_msg("'%s' lacks '%s'", text, words);
}

/* A heartbeat from node `id` reporting `synced` as its synced_epoch. */
static inline ps_status heartbeat_synced(coord_ctx *c, const char *id, uint64_t synced) {
    Ps__HeartbeatRequest hb = PS__HEARTBEAT_REQUEST__INIT;
    hb.id = (char *)id;
    hb.synced_epoch = synced;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    char err[COORD_ERR_MAX];
    return coord_node_heartbeat(c, &hb, &resp, err, sizeof err);
}

/* Three shards on the ring, all empty. */
static inline coord_ctx *three_shards(void) {
    coord_ctx *c = open_ctx(0, 0);
    const char *ids[] = {"s1", "s2", "s3"};
    for (int i = 0; i < 3; i++) {
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7001 + i);
        set_shard(ids[i], PS_STATUS_OK, 0);
        reg_shard(c, ids[i], addr);
        assert_int_equal(where(c, ids[i], NULL), 'R');
    }
    return c;
}

/* Three shards holding data, and s4 registered (waiting off the ring). */
static inline coord_ctx *loaded_ring_and_s4(void) {
    coord_ctx *c = three_shards();
    set_shard("s1", PS_STATUS_OK, 10);
    set_shard("s4", PS_STATUS_OK, 0);
    reg_shard(c, "s4", "127.0.0.1:7004");
    assert_int_equal(where(c, "s4", NULL), 'W');
    return c;
}

/* Every shard s1..s4 heartbeats that it synced for `synced`. */
static inline void all_beat(coord_ctx *c, uint64_t synced) {
    const char *ids[] = {"s1", "s2", "s3", "s4"};
    for (int i = 0; i < 4; i++)
        heartbeat_synced(c, ids[i], synced);
}

#endif
