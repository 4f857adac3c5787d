/* bench_faults_add.c: the add-a-node case of bench_faults (bench_faults_cases.h). Three
 * shards take cfg->add_mb MiB in tensors of at most 64 MiB; a fourth shard is started
 * and put on the ring through the coordinator's AddNode; the case times AddNode until
 * the coordinator's ring (the one requests route by) holds the new shard, reads what
 * the new shard holds from its Health, and pulls every tensor back to check that the
 * move lost nothing. A refused AddNode (data does not move with membership in this
 * build) is a figure not measured, not a failure.
 */
#include "bench_faults_cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_ps_cluster.h"
#include "util.h"

#define MODEL "bench_faults_add"
#define TENSOR_FLOATS (16ull << 20) /* 64 MiB per tensor: the client's buffer */
#define ADD_NODE_TIMEOUT_MS 120000  /* the AddNode call itself (balanced tokens take time) */
#define POLL_US 20000

/* The value of float i of tensor j: a whole number, exact in a float. */
static float pattern(uint64_t j, uint64_t i) {
    return (float)((i * 7 + j * 13) % 4093);
}

/* Floats of tensor j of the data set of `total` floats. */
static uint64_t tensor_floats(uint64_t total, uint64_t j) {
    uint64_t left = total - j * TENSOR_FLOATS;
    return left < TENSOR_FLOATS ? left : TENSOR_FLOATS;
}

/* ASSIGNs (upload) or pulls and checks (check) every tensor of the data set. */
static ps_status walk_data(ps_client *pc, uint64_t total, bool upload, float *buf, char *err,
                           size_t err_len) {
    for (uint64_t j = 0; j * TENSOR_FLOATS < total; j++) {
        char name[32];
        snprintf(name, sizeof name, "t%llu", (unsigned long long)j);
        uint64_t n = tensor_floats(total, j);
        int64_t shape;
        Ps__TensorInfo t;
        bench_faults_tensor(name, n, &shape, &t);
        ps_status st;
        if (upload) {
            for (uint64_t i = 0; i < n; i++)
                buf[i] = pattern(j, i);
            st = ps_client_push_tensor(pc, MODEL, 1, &t, PS__PUSH_OP__PUSH_ASSIGN, buf, n);
        } else {
            st = ps_client_pull_tensor(pc, MODEL, 1, &t, buf, n, NULL);
        }
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "%s %s: %s", upload ? "upload" : "pull after the add", name,
                       ps_client_error(pc));
            return st;
        }
        for (uint64_t i = 0; !upload && i < n; i++)
            if (buf[i] != pattern(j, i)) {
                ps_set_err(err, err_len, "after the add, float %llu of %s is %g, want %g",
                           (unsigned long long)i, name, (double)buf[i], (double)pattern(j, i));
                return PS_STATUS_INTERNAL;
            }
    }
    return PS_STATUS_OK;
}

/* AddNode for shard `index`. *ret_refused when the coordinator answers that the shard
 * cannot join (FAILED_PRECONDITION; its message in f->note); *ret_joined when it answers
 * that the shard is a member already (it joined on its own when it registered). */
static ps_status add_node(const bench_faults_cfg *cfg, ps_client *pc, const bench_cluster *cl,
                          int index, bool *ret_refused, bool *ret_joined, bench_add_node *f,
                          char *err, size_t err_len) {
    Ps__NodeInfo node = PS__NODE_INFO__INIT;
    node.id = (char *)bench_cluster_shard_id(cl, index);
    node.addr = (char *)bench_cluster_shard_addr(cl, index);
    node.weight = 1;
    node.role = PS__NODE_ROLE__ROLE_SHARD;
    Ps__AddNodeRequest req = PS__ADD_NODE_REQUEST__INIT;
    req.node = &node;
    req.balanced = cfg->balanced;
    ProtobufCMessage *resp = NULL;
    rpc_result res = {0};
    rpc_call_opts opts = {.timeout_ms = ADD_NODE_TIMEOUT_MS};
    ps_status st = rpc_call(ps_client_coordinator(pc), "/ps.Coordinator/AddNode", &req.base,
                            &ps__membership_response__descriptor, &opts, &resp, &res);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    *ret_refused = st == PS_STATUS_FAILED_PRECONDITION;
    *ret_joined = st == PS_STATUS_ALREADY_EXISTS;
    if (*ret_refused)
        snprintf(f->note, sizeof f->note, "AddNode refused: %s", res.details);
    else if (*ret_joined)
        snprintf(f->note, sizeof f->note,
                 "%s joined the ring on its own: add_node_s counts from its start", node.id);
    if (*ret_joined)
        st = PS_STATUS_OK;
    else if (st != PS_STATUS_OK && !*ret_refused)
        ps_set_err(err, err_len, "AddNode %s at %s: %s", node.id, node.addr, res.details);
    return st;
}

/* Waits until the ring requests route by holds shard `id`. */
static ps_status wait_on_ring(const bench_faults_cfg *cfg, ps_client *pc, const char *id, char *err,
                              size_t err_len) {
    int64_t until = ps_now_us() + (int64_t)cfg->add_timeout_s * 1000000;
    for (;;) {
        ps_status st = ps_client_refresh(pc);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "ring after AddNode: %s", ps_client_error(pc));
            return st;
        }
        for (uint32_t i = 0; i < ps_client_shard_count(pc); i++)
            if (strcmp(ps_client_shard_id(pc, i), id) == 0)
                return PS_STATUS_OK;
        if (ps_now_us() > until) {
            ps_set_err(err, err_len, "AddNode was accepted but %s is not on the ring after %d s",
                       id, cfg->add_timeout_s);
            return PS_STATUS_DEADLINE_EXCEEDED;
        }
        usleep(POLL_US);
    }
}

ps_status bench_faults_add_node(const bench_faults_cfg *cfg, bench_add_node *ret, char *err,
                                size_t err_len) {
    bench_cluster_opts co = {
        .build_dir = cfg->build_dir, .shards = 3, .data_dir = true, .fsync = "group"};
    bench_add_node f = {0};
    bench_cluster *cl = NULL;
    ps_client *pc = NULL;
    uint64_t total = (uint64_t)cfg->add_mb << 18; /* floats */
    float *buf = malloc((total < TENSOR_FLOATS ? total : TENSOR_FLOATS) * sizeof *buf);
    if (!buf) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st;
    if ((st = bench_cluster_create(&co, &cl, err, err_len)) != PS_STATUS_OK ||
        (st = ps_client_create(bench_cluster_coordinator(cl), &pc, err, err_len)) != PS_STATUS_OK ||
        (st = walk_data(pc, total, true, buf, err, err_len)) != PS_STATUS_OK)
        goto out;
    uint64_t synced_before = 0; /* image bytes the shards' syncs sent before the add */
    for (int i = 0; i < 3; i++) {
        uint64_t held = 0, synced = 0;
        if ((st = bench_cluster_shard_held(cl, i, &held, &synced, err, err_len)) != PS_STATUS_OK)
            goto out;
        f.ring_bytes += held;
        synced_before += synced;
    }
    int index = -1;
    int64_t started_us = ps_now_us();
    if ((st = bench_cluster_shard_start(cl, &index, err, err_len)) != PS_STATUS_OK)
        goto out;
    const char *id = bench_cluster_shard_id(cl, index);
    int64_t t0 = ps_now_us();
    bool refused = false, joined = false;
    if ((st = add_node(cfg, pc, cl, index, &refused, &joined, &f, err, err_len)) != PS_STATUS_OK) {
        if (refused) { /* a figure not measured: the build cannot move data yet */
            *ret = f;
            st = PS_STATUS_OK;
        }
        goto out;
    }
    if ((st = wait_on_ring(cfg, pc, id, err, err_len)) != PS_STATUS_OK)
        goto out;
    int64_t t1 = ps_now_us();
    f.add_s = (double)(t1 - (joined ? started_us : t0)) / 1e6;
    uint64_t synced_after = 0;
    for (int i = 0; i <= index; i++) {
        uint64_t held = 0, synced = 0;
        if ((st = bench_cluster_shard_held(cl, i, &held, &synced, err, err_len)) != PS_STATUS_OK)
            goto out;
        f.after_bytes += held;
        f.new_shard_bytes = i == index ? held : f.new_shard_bytes;
        synced_after += i < 3 ? synced : 0;
    }
    /* moved: what the old shards' syncs sent for the add (images, headers included) */
    f.moved_bytes = synced_after - synced_before;
    f.moved_x = f.ring_bytes ? (double)f.moved_bytes / ((double)f.ring_bytes / 4.0) : 0;
    if ((st = walk_data(pc, total, false, buf, err, err_len)) != PS_STATUS_OK)
        goto out;
    f.checked_floats = total;
    f.measured = true;
    *ret = f;
out:
    ps_client_destroy(pc);
    bench_cluster_destroy(cl);
    free(buf);
    return st;
}
