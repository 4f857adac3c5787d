/* psclient.c: see psclient.h. The client itself: the ring it keeps and the channels to
 * the coordinator and the shards (the routing loop is in psclient_route.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>
#include <unistd.h>

#include "psclient_internal.h"
#include "util.h"

ps_status psclient_fail(ps_client *c, ps_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return st;
}

static void drop_shards(ps_client *c) {
    for (uint32_t i = 0; i < c->n_shards; i++)
        rpc_channel_destroy(c->shards[i]);
    free(c->shards);
    c->shards = NULL;
    c->n_shards = 0;
}

ps_status ps_client_refresh(ps_client *c) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rpc_call(c->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &resp, &res);
    if (st != PS_STATUS_OK)
        return psclient_fail(c, st, "cannot get the ring from the coordinator at %s: %s %s",
                             c->coordinator, rpc_code_name(res.grpc_code), res.details);
    Ps__Ring *ring = (Ps__Ring *)resp;
    c->replication = ring->replication ? ring->replication : 1;
    hashring *r = NULL;
    st = hashring_parse(ring->ring.data, ring->ring.len, &r);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (st != PS_STATUS_OK)
        return psclient_fail(c, st, "the coordinator sent a ring that does not parse");
    drop_shards(c);
    hashring_destroy(c->ring);
    c->ring = r;
    c->n_shards = hashring_node_count(r);
    c->shards = calloc(c->n_shards ? c->n_shards : 1, sizeof *c->shards);
    if (!c->shards)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    c->err[0] = '\0';
    return PS_STATUS_OK;
}

uint64_t psclient_request_id(ps_client *c) {
    return c->user_request_id ? c->user_request_id : ps_client_new_request_id(c);
}

void ps_client_set_request_id(ps_client *c, uint64_t id) {
    c->user_request_id = id;
}

uint64_t ps_client_new_request_id(ps_client *c) {
    for (;;) { /* SplitMix64 over a random seed: distinct per client and per push */
        uint64_t z = c->request_seed + (++c->request_next) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        if (z)
            return z;
    }
}

void ps_client_set_failover_wait(ps_client *c, int64_t ms) {
    c->failover_wait_ms = ms > 0 ? ms : 0;
}

void ps_client_set_call_timeout(ps_client *c, int64_t ms) {
    c->call_timeout_ms = ms > 0 ? ms : PS_CLIENT_CALL_TIMEOUT_MS;
    for (uint32_t i = 0; i < c->n_shards; i++) { /* reopened with the new keepalive */
        rpc_channel_destroy(c->shards[i]);
        c->shards[i] = NULL;
    }
}

ps_status ps_client_create(const char *coordinator, ps_client **ret_client, char *err,
                           size_t err_len) {
    ps_client *c = calloc(1, sizeof *c);
    if (!c) {
        if (err)
            snprintf(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(c->coordinator, sizeof c->coordinator, "%s", coordinator);
    c->failover_wait_ms = PS_CLIENT_FAILOVER_WAIT_MS;
    c->call_timeout_ms = PS_CLIENT_CALL_TIMEOUT_MS;
    if (getrandom(&c->request_seed, sizeof c->request_seed, 0) != (ssize_t)sizeof c->request_seed)
        c->request_seed = (uint64_t)ps_now_ms() ^ ((uint64_t)getpid() << 32);
    ps_status st = rpc_loan_create(&c->loan);
    if (st != PS_STATUS_OK)
        psclient_fail(c, st, "out of memory");
    else if ((st = rpc_channel_create(coordinator, NULL, &c->coord)) != PS_STATUS_OK)
        psclient_fail(c, st, "bad coordinator address '%s'", coordinator);
    else
        st = ps_client_refresh(c);
    if (st != PS_STATUS_OK) {
        if (err)
            snprintf(err, err_len, "%s", c->err);
        ps_client_destroy(c);
        return st;
    }
    *ret_client = c;
    return PS_STATUS_OK;
}

void ps_client_destroy(ps_client *c) {
    if (!c)
        return;
    drop_shards(c);
    hashring_destroy(c->ring);
    rpc_channel_destroy(c->coord);
    psclient_scratch_free(c);
    rpc_loan_destroy(c->loan);
    free(c);
}

const char *ps_client_error(const ps_client *c) {
    return c->err;
}

rpc_channel *ps_client_coordinator(ps_client *c) {
    return c->coord;
}

uint64_t ps_client_epoch(const ps_client *c) {
    return c->ring ? hashring_epoch(c->ring) : 0;
}

uint32_t ps_client_shard_count(const ps_client *c) {
    return c->n_shards;
}

const char *ps_client_shard_id(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.id : "";
}

const char *ps_client_shard_addr(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.addr : "";
}

uint32_t ps_client_owner(const ps_client *c, uint64_t key) {
    return hashring_primary(c->ring, key);
}

rpc_channel *psclient_shard_channel(ps_client *c, uint32_t index) {
    /* a shard that stops reading is found by keepalive pings within the call's deadline
     * or so (rpc.h, RPC_DEFAULT_KEEPALIVE_MS) */
    int64_t keepalive = c->call_timeout_ms / 2; /* 0 would mean the default: raise it */
    if (keepalive < RPC_MIN_KEEPALIVE_MS)
        keepalive = RPC_MIN_KEEPALIVE_MS;
    rpc_channel_opts opts = {.keepalive_ms = keepalive < RPC_DEFAULT_KEEPALIVE_MS
                                                 ? (int)keepalive
                                                 : RPC_DEFAULT_KEEPALIVE_MS};
    if (!c->shards[index] && rpc_channel_create(ps_client_shard_addr(c, index), &opts,
                                                &c->shards[index]) != PS_STATUS_OK)
        return NULL;
    return c->shards[index];
}

ps_status psclient_call_failed(ps_client *c, uint32_t s, const char *what, ps_status st,
                               const rpc_result *res) {
    if (st == PS_STATUS_WRONG_EPOCH)
        return st;
    return psclient_fail(c, st, "%s on shard %s (%s): %s: %s", what, ps_client_shard_id(c, s),
                         ps_client_shard_addr(c, s), rpc_code_name(res->grpc_code), res->details);
}
