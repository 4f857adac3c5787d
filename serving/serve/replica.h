/* replica.h: the models a serving replica holds, and how parameter updates reach them.
 *
 * A served model is one version of one model: a kernels model instance whose
 * parameter memory is filled chunk by chunk from the shards, plus, per chunk, the
 * version it holds. Updates streamed from the shards carry the chunk's new version,
 * which makes applying them idempotent and order-safe:
 *   - version <= held: already in (e.g. the pull saw it): skip;
 *   - version == held + 1: apply (ADD adds the delta, ASSIGN copies);
 *   - a gap: ASSIGN is applied whole; for ADD the chunk is marked stale and pulled
 *     again (replica_fix_stale).
 * A model is listed (so updates reach it) before its initial pull, and becomes ready
 * when every chunk is filled and none is stale. Readers (inference) and writers
 * (updates, pulls) are serialized per model by a reader-writer lock, so a forward pass
 * never sees a half-applied update.
 */
#ifndef PS_SERVING_REPLICA_H
#define PS_SERVING_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "psclient.h"
#include "status.h"

typedef struct replica replica;
typedef struct served served;

ps_status replica_create(replica **ret_replica);
void replica_destroy(replica *r); /* accepts NULL; no other thread may use r */

/* Loads one registry entry: lists it, pulls every chunk through `pc`, marks it ready
 * and retires older versions of the same model. Already loaded: OK at once. */
ps_status replica_load(replica *r, ps_client *pc, const Ps__ModelInfo *info, char *err,
                       size_t err_len);
/* Applies one update streamed from a shard (see above). */
void replica_apply_update(replica *r, const Ps__Update *u);
/* Marks every chunk of every model stale (after a resync or a shard restart). */
void replica_mark_all_stale(replica *r);
/* Pulls stale chunks again; returns how many chunks are still stale. */
ps_status replica_fix_stale(replica *r, ps_client *pc, size_t *ret_left);

/* True when every model the registry last listed (replica_expect) is ready. */
bool replica_ready(replica *r);
/* The registry's latest list, as names and versions: for replica_ready. */
void replica_expect(replica *r, size_t n, const char *const *names, const uint64_t *versions);

/* A ready model by name and version (0: the newest ready version), with a reference
 * (release it); NULL when none. */
served *replica_acquire(replica *r, const char *name, uint64_t version);
void served_release(served *s);
/* Names of ready models, comma-separated, for messages. */
void replica_list_names(replica *r, char *buf, size_t cap);

/* For a held served model: */
const model *served_model(const served *s);
uint64_t served_version(const served *s);
/* Sum of the chunk versions held: changes whenever an update is applied. */
uint64_t served_param_version(const served *s);
/* Infer under the model's read lock. */
ps_status served_infer(served *s, const model_input *inputs, size_t n_inputs, model_output *outputs,
                       size_t n_outputs, uint64_t *ret_param_version, char *err, size_t err_len);

/* Statistics for ModelStatistics / metrics (counts and nanoseconds). */
typedef struct served_stats {
    uint64_t success, fail, inferences, executions;
    uint64_t success_ns, compute_ns;
    uint64_t last_inference_ms; /* wall clock */
} served_stats;
void served_stats_get(served *s, served_stats *ret);
void served_stats_add(served *s, bool ok, uint64_t batch, uint64_t total_ns, uint64_t compute_ns);

#endif
