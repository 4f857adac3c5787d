/* psclient_internal.h: what the client library's files share (not for its users):
 * the client structure, error texts, shard channels, and the routing loop that every
 * keyed operation (pull, push, stat: psclient_keys.c) runs through. */
#ifndef PS_CLIENT_PSCLIENT_INTERNAL_H
#define PS_CLIENT_PSCLIENT_INTERNAL_H

#include <stdbool.h>

#include "hashring.h"
#include "psclient.h"

#define MAX_ROUNDS 5
#define CALL_TIMEOUT_MS 30000
#define BATCH_BYTES (16u << 20) /* values per message when cutting tensors */

struct ps_client {
    char coordinator[256];
    rpc_channel *coord;
    hashring *ring;
    rpc_channel **shards; /* by ring index; created on first use */
    uint32_t n_shards;
    char err[1024];
};

/* Sets the client's error text (see ps_client_error) and returns st. */
ps_status psclient_fail(ps_client *c, ps_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The channel to the shard at ring index `index`, opened on first use; NULL when it
 * cannot be opened. */
rpc_channel *psclient_shard_channel(ps_client *c, uint32_t index);

/* One call to one shard with the keys idx[0..m). Returns OK, WRONG_EPOCH (re-route), or
 * a failure with c->err set. */
typedef ps_status (*shard_call)(ps_client *c, uint32_t shard, const size_t *idx, size_t m,
                                void *arg);

/* Sends each shard its keys; keys a shard refuses because the ring moved are routed
 * again on a fresh ring. Without keep_going the first other failure ends it; with it,
 * the other shards still get their keys and the first failure (and its message) is
 * returned at the end. */
ps_status psclient_route(ps_client *c, size_t n, const uint64_t *keys, shard_call call, void *arg,
                         bool keep_going);

/* A failed call to shard s: WRONG_EPOCH as it is (the keys are routed again), anything
 * else with a message naming the shard, the code and the details. */
ps_status psclient_call_failed(ps_client *c, uint32_t s, const char *what, ps_status st,
                               const rpc_result *res);

#endif
