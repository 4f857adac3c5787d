/* psclient.h: the client library of the parameter servers, for training jobs, tools
 * (psctl) and serving replicas.
 *
 * It keeps the ring it got from the coordinator, groups keys by owning shard and
 * sends one message per shard per request. When a shard answers that the ring moved
 * (ABORTED), it fetches the ring again and re-sends only the keys that were refused,
 * so an ADD is never applied twice. Not thread-safe: one client per thread.
 */
#ifndef PS_CLIENT_PSCLIENT_H
#define PS_CLIENT_PSCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "ps.pb-c.h"
#include "rpc.h"
#include "status.h"
#include "train_spec.h"

typedef struct ps_client ps_client;

/* Connects to the coordinator at `coordinator` ("host:port") and fetches the ring. On
 * failure `err` (may be NULL) gets a message naming the coordinator and the cause. */
ps_status ps_client_create(const char *coordinator, ps_client **ret_client, char *err,
                           size_t err_len);
void ps_client_destroy(ps_client *client); /* accepts NULL */

/* The message of the last failure (a person can act on it); "" after success. */
const char *ps_client_error(const ps_client *client);

/* The channel to the coordinator, for calls this library does not wrap. */
rpc_channel *ps_client_coordinator(ps_client *client);

/* Fetches the ring again. */
ps_status ps_client_refresh(ps_client *client);
uint64_t ps_client_epoch(const ps_client *client);

/* How long an operation keeps trying keys whose shard cannot be reached, on a fresh
 * ring each time, when the ring keeps R >= 2 copies (a failover moves them to the next
 * owner): PS_CLIENT_FAILOVER_WAIT_MS by default; 0 fails at once. Reads and pushes
 * alike (pushes carry a request id, so a retry lands once). */
#define PS_CLIENT_FAILOVER_WAIT_MS 20000
void ps_client_set_failover_wait(ps_client *client, int64_t ms);
/* How long one call to a shard may take before it is given up (DEADLINE_EXCEEDED, and
 * the keys of a push in it PS_PUSH_UNKNOWN): PS_CLIENT_CALL_TIMEOUT_MS by default; ms <= 0
 * restores it. A shard that stops reading (hung, or cut off) is given up at the deadline
 * even in the middle of a transfer. */
#define PS_CLIENT_CALL_TIMEOUT_MS 30000
void ps_client_set_call_timeout(ps_client *client, int64_t ms);
/* The request id of the writes (pushes of chunks and of rows) from now on. Every write
 * carries one, the same on every retry the client makes itself, so a shard applies each
 * key of it once; by default (id 0) each write gets a fresh random one. A write that
 * failed may still have landed in part: to try it again without applying anything
 * twice, set an id of your own before it (ps_client_new_request_id) and set the same one
 * again before each retry, then 0. The same id must name the same write (the same keys
 * and values): shards remember per key which ids changed it, so an id used again for
 * another write is silently not applied to the keys it already changed. No call of a
 * write with a set id counts as a first try (the shards look every key up). Shards
 * remember an id for their last few million keys pushed (ps-shard --dedup-mb): retry
 * within seconds. */
void ps_client_set_request_id(ps_client *client, uint64_t id);
uint64_t ps_client_new_request_id(ps_client *client); /* random, never 0 */
/* Shards on the ring, by dense ring index. */
uint32_t ps_client_shard_count(const ps_client *client);
const char *ps_client_shard_id(const ps_client *client, uint32_t index);
const char *ps_client_shard_addr(const ps_client *client, uint32_t index);
/* Ring index of the shard owning `key` (UINT32_MAX on an empty ring). */
uint32_t ps_client_owner(const ps_client *client, uint64_t key);

/* Pulls n keys: dst[i] receives lens[i] floats (the shard must hold exactly that many);
 * ret_versions (may be NULL) the chunk versions. */
ps_status ps_client_pull(ps_client *client, size_t n, const uint64_t *keys, float *const *dst,
                         const uint32_t *lens, uint64_t *ret_versions);

/* Pushes n keys with `op`; src[i] holds lens[i] floats; names (may be NULL) label the
 * keys for operators; ret_versions (may be NULL) gets the new chunk versions. */
ps_status ps_client_push(ps_client *client, Ps__PushOp op, size_t n, const uint64_t *keys,
                         const float *const *src, const uint32_t *lens, const char *const *names,
                         uint64_t *ret_versions);

/* What a push did to one key, as far as the client can know. */
typedef enum ps_push_outcome {
    PS_PUSH_NOT_APPLIED = 0, /* its shard refused the request, or it was never sent */
    PS_PUSH_APPLIED = 1,     /* its shard acknowledged it */
    PS_PUSH_UNKNOWN = 2,     /* the call was lost (timeout, broken connection): it may
                                have been applied; re-reading the key tells */
} ps_push_outcome;

/* ps_client_push that also says, per key, what happened (ret_outcome: n entries of
 * ps_push_outcome, may be NULL). A shard applies a request all or nothing, and when
 * one shard fails the others still get their keys, so a failed push leaves exactly the
 * failing shards' keys unapplied: a caller can retry just those (an ADD retried whole
 * would apply twice where it had succeeded). Returns the first failure. */
ps_status ps_client_push_report(ps_client *client, Ps__PushOp op, size_t n, const uint64_t *keys,
                                const float *const *src, const uint32_t *lens,
                                const char *const *names, uint64_t *ret_versions,
                                uint8_t *ret_outcome);

/* An optimizer push (PUSH_OPTIMIZE): the values are gradients that the shards apply
 * with `optimizer` (train_spec.h) and the optimizer state they keep per chunk. */
typedef struct ps_push_train {
    const optim_spec *optimizer; /* checked by the shards (INVALID_ARGUMENT) */
    bool skip_non_finite;        /* skip and count keys with non-finite gradients instead
                                    of refusing the request */
    uint64_t skipped;            /* out: keys the shards skipped */
} ps_push_train;

/* ps_client_push_report for gradients: each key's chunk takes one optimizer step. */
ps_status ps_client_push_optimize(ps_client *client, ps_push_train *train, size_t n,
                                  const uint64_t *keys, const float *const *src,
                                  const uint32_t *lens, uint64_t *ret_versions,
                                  uint8_t *ret_outcome);

/* A sparse table as requests name it: its model, its name and its spec (from the
 * model's config.json: train_config.h). */
typedef struct ps_table_ref {
    const char *model;
    const char *table;
    const table_spec *spec;
} ps_table_ref;

/* Rows of n ids (ids may repeat) into out (n * dim floats, in id order); rows not yet
 * on their shards are created there with the table's initializer. *ret_created (may be
 * NULL) counts them. */
ps_status ps_client_pull_rows(ps_client *client, const ps_table_ref *table, size_t n,
                              const uint64_t *ids, float *out, uint64_t *ret_created);
/* Pushes n rows (values: n * dim floats): ASSIGN, ADD, or OPTIMIZE with train's
 * optimizer (train is ignored otherwise). Ids must not repeat within one call (sum
 * their gradients first); the shards refuse a repeat. Goes on past a failing shard and
 * returns its failure at the end. */
ps_status ps_client_push_rows(ps_client *client, const ps_table_ref *table, Ps__PushOp op,
                              ps_push_train *train, size_t n, const uint64_t *ids,
                              const float *values, uint64_t *ret_created);

/* What the shards hold of n keys, without the values: ret_lens[i] the floats held (0
 * when its shard does not hold it or cannot be asked), ret_versions (may be NULL) the
 * versions. Goes on past a shard that cannot be asked and returns its failure at the
 * end, so the other keys are still counted. */
ps_status ps_client_stat(ps_client *client, size_t n, const uint64_t *keys, uint32_t *ret_lens,
                         uint64_t *ret_versions);

/* What ps_client_delete freed: filled whatever the outcome (a partial failure still
 * freed what the other shards held). */
typedef struct ps_delete_counts {
    uint64_t chunks; /* chunks freed */
    uint64_t bytes;  /* value bytes freed */
} ps_delete_counts;

/* Frees n keys on their shards (a deleted model version). Keys a shard does not hold
 * are skipped, so a retry is harmless. Goes on past a failing shard and returns its
 * failure at the end. counts may be NULL. */
ps_status ps_client_delete(ps_client *client, size_t n, const uint64_t *keys,
                           ps_delete_counts *counts);

/* The registry entry of a model (version 0 = latest); free with
 * ps__model_info__free_unpacked(m, NULL). NOT_FOUND for an unknown model. */
ps_status ps_client_get_model(ps_client *client, const char *name, uint64_t version,
                              Ps__ModelInfo **ret_model);
/* A tensor of a registry entry by name, or NULL. */
const Ps__TensorInfo *ps_client_find_tensor(const Ps__ModelInfo *model, const char *tensor);
/* Floats in a tensor (product of its shape). */
uint64_t ps_tensor_count(const Ps__TensorInfo *tensor);

/* A whole tensor of version `version` of `model`, cut into its chunks (keys
 * ps_key_dense(model, version, tensor, i)): `count` must equal the tensor's size.
 * push: ASSIGN to upload or replace, ADD to apply a delta.
 * pull: ret_version_sum (may be NULL) gets the sum of the chunk versions. */
ps_status ps_client_push_tensor(ps_client *client, const char *model, uint64_t version,
                                const Ps__TensorInfo *tensor, Ps__PushOp op, const float *data,
                                uint64_t count);
/* ps_client_push_tensor over the chunks `only` marks (t->chunks flags; NULL: all),
 * saying per chunk what happened in ret_outcome (t->chunks entries of
 * ps_push_outcome; may be NULL). It goes on past failing shards (see
 * ps_client_push_report) and returns the first failure. */
ps_status ps_client_push_tensor_report(ps_client *client, const char *model, uint64_t version,
                                       const Ps__TensorInfo *tensor, Ps__PushOp op,
                                       const float *data, uint64_t count, const uint8_t *only,
                                       uint8_t *ret_outcome);
/* One optimizer step over a whole tensor: grad holds `count` floats (its size). */
ps_status ps_client_push_tensor_optimize(ps_client *client, const char *model, uint64_t version,
                                         const Ps__TensorInfo *tensor, ps_push_train *train,
                                         const float *grad, uint64_t count);
ps_status ps_client_pull_tensor(ps_client *client, const char *model, uint64_t version,
                                const Ps__TensorInfo *tensor, float *dst, uint64_t count,
                                uint64_t *ret_version_sum);

#endif
