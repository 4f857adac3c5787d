/* psclient_internal.h: what the client library's files share (not for its users):
 * the client structure (with its reusable scratch), error texts, shard channels, and
 * the routing loop that every keyed operation (pull, push, stat, delete:
 * psclient_keys.c; rows: psclient_rows.c) runs through. */
#ifndef PS_CLIENT_PSCLIENT_INTERNAL_H
#define PS_CLIENT_PSCLIENT_INTERNAL_H

#include <stdbool.h>

#include "hashring.h"
#include "psclient.h"

#define MAX_ROUNDS 5
/* Keys whose shard is unreachable (UNAVAILABLE, DEADLINE_EXCEEDED) are tried again, on
 * a fresh ring each time, for c->failover_wait_ms (PS_CLIENT_FAILOVER_WAIT_MS: long
 * enough for the coordinator to find a dead primary and move its keys to the next
 * owner), for ops safe to repeat (shard_op.retry_unavailable), pausing between tries: */
#define FAILOVER_PAUSE_MIN_MS 50
#define FAILOVER_PAUSE_MAX_MS 500
#define BATCH_BYTES (16u << 20) /* values per batch of rows (psclient_rows.c) */
/* Values per batch of a tensor's chunks: each batch's calls are all in flight, and the
 * next batch starts once they are answered, so a batch ends in a wait for the slowest
 * call (with --fsync group, up to a group's 5 ms plus its fsync). 64 MiB against 16:
 * R=2 --fsync group ADDs of a 64 MiB tensor 0.28-0.30 -> 0.31-0.34 GB/s here. The
 * client holds one batch's values copied (one copy: the calls' buffers). */
#define TENSOR_BATCH_BYTES (64u << 20)

struct ps_client {
    char coordinator[256];
    rpc_channel *coord;
    hashring *ring;
    rpc_channel **shards; /* by ring index; created on first use */
    uint32_t n_shards;
    uint32_t replication; /* R, as the ring said: with 1 a dead shard's keys go nowhere */
    char err[1024];
    /* Scratch reused by every call instead of allocated per call (psclient.c): the
     * routing arrays (route_cap key indices, or calls, each) and per shard
     * (shard_cap). */
    size_t *pending, *group, *retry;
    uint32_t *owner;
    size_t route_cap;
    size_t *shard_first, *shard_m;
    size_t *win_next, *win_done, *win_end; /* a windowed round's calls, per shard */
    uint32_t shard_cap;
    struct psclient_call *calls; /* a round's calls (route_cap at most: one key or more) */
    /* the caller's values pushes lend gRPC (rpc_loan): a push returns once gRPC has
     * dropped them all (psclient_keys.c) */
    rpc_loan *loan;
    rpc_bytes_part *parts; /* a push call's parts (req_cap: one per key) */
    /* a request's keys, lengths and names while it is packed (req_cap each) */
    uint64_t *req_keys;
    uint32_t *req_lens;
    char **req_names;
    size_t req_cap;
    uint64_t request_seed, request_next; /* request ids (psclient_request_id) */
    uint64_t user_request_id;            /* ps_client_set_request_id; 0: none */
    int64_t failover_wait_ms;            /* ps_client_set_failover_wait */
    int64_t call_timeout_ms;             /* ps_client_set_call_timeout */
    int64_t failover_deadline;           /* the running op's wait for a failover ends */
    int route_round; /* the running op's round: in round 0 every key goes for the first time */
};

/* The request id of one logical push (the caller's, ps_client_set_request_id, else a new
 * random one, never 0): the same on every retry of it, so shards apply each key of it
 * once (PushRequest.request_id). */
uint64_t psclient_request_id(ps_client *c);

/* Sets the client's error text (see ps_client_error) and returns st. */
ps_status psclient_fail(ps_client *c, ps_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The channel to the shard at ring index `index`, opened on first use; NULL when it
 * cannot be opened. */
rpc_channel *psclient_shard_channel(ps_client *c, uint32_t index);

/* Room for m keys in c->req_keys, req_lens and req_names; NO_MEMORY (c->err set). */
ps_status psclient_req_reserve(ps_client *c, size_t m);
/* What every keyed call starts with: the shard's channel and the keys (or row ids)
 * idx[0..m) picks from all, in c->req_keys (reused scratch: a request is packed before
 * the next call needs it). On failure c's error says why. */
ps_status psclient_call_keys(ps_client *c, uint32_t s, const uint64_t *all, const size_t *idx,
                             size_t m, rpc_channel **ret_ch);
/* Frees the client's scratch (ps_client_destroy). */
void psclient_scratch_free(ps_client *c);

/* One call to one shard with the keys idx[0..m), in two halves, so that every shard's
 * request is in flight before any answer is waited for: start sends it (OK with *ret_pending set;
 * or OK leaving it NULL when the call is already done; or WRONG_EPOCH or a failure with c->err set,
 * and nothing in flight); finish collects it (OK, WRONG_EPOCH, or a failure with c->err set), and
 * is called exactly once for every pending call. */
typedef ps_status (*shard_start)(ps_client *c, uint32_t shard, const size_t *idx, size_t m,
                                 void *arg, rpc_pending **ret_pending);
typedef ps_status (*shard_finish)(ps_client *c, uint32_t shard, const size_t *idx, size_t m,
                                  void *arg, rpc_pending *pending);

typedef struct shard_op {
    shard_start start;
    shard_finish finish;
    /* When lens is not NULL (floats per key), a shard's keys go in several calls of at
     * most call_floats floats each (one key at least), all in flight at once: a large
     * transfer moves faster as a few concurrent calls than as one. Any call holds
     * CALL_KEYS keys at most. */
    const uint32_t *lens;
    uint64_t call_floats;
    /* Calls that fail UNAVAILABLE or DEADLINE_EXCEEDED (a shard died, a failover runs)
     * are tried again for up to FAILOVER_WAIT_MS when the ring keeps R >= 2 copies: reads,
     * and pushes that carry a request id (a shard applies each of their keys once). */
    bool retry_unavailable;
    /* Calls in flight to one shard at most (0: all at once). A window lets a large
     * transfer's replies come whole one after another, so the client copies one while
     * the next arrives: all at once, their frames interleave on the connection and
     * every reply completes near the end (64 MiB pulls: 1.6-1.9 -> 2.0-2.4 GB/s at 4). */
    size_t window;
} shard_op;

/* Pull calls in flight to one shard at a time (shard_op.window). */
#define PULL_WINDOW 4

/* Floats per call when a request is cut (shard_op.call_floats). */
#define CALL_FLOATS (1u << 18) /* floats: 1 MiB */
/* Keys per call at most, whatever the op: below the shards' limit of keys per request
 * (SHARD_MAX_KEYS_PER_REQUEST, 256 Ki), so no request is refused for its size. */
#define CALL_KEYS (64u * 1024u)

/* Sends each shard its keys, every call in flight at once, then collects them in
 * shard order; keys a shard refuses because the ring moved are routed again on a
 * fresh ring (only those: nothing is applied twice). Without keep_going a failure
 * ends it after that round's calls are collected; with it, the keys of the other
 * shards still go out. The failure returned (and its message) is the first: of the
 * earliest round, the lowest shard index (then the first of its calls). */
ps_status psclient_route_op(ps_client *c, size_t n, const uint64_t *keys, const shard_op *op,
                            void *arg, bool keep_going);

/* A failed call to shard s: WRONG_EPOCH as it is (the keys are routed again), anything
 * else with a message naming the shard, the code and the details. */
ps_status psclient_call_failed(ps_client *c, uint32_t s, const char *what, ps_status st,
                               const rpc_result *res);

#endif
