/* served.h: one version of one model as a replica serves it.
 *
 * A served model is a kernels model instance whose parameter memory is filled chunk by
 * chunk from the shards (a served_source pulls them), plus a chunk_table that knows
 * which version of each chunk it holds, so updates streamed from the shards apply by
 * the protocol's version rule (see chunk_table.h). Inference (read side) and updates
 * and pulls (write side) are serialized by a reader-writer lock, so a forward pass
 * never sees a half-applied update.
 * Every write is marked and synced to the instance's device mirror before the write
 * lock is let go (model.h, "Memory"), so on a device backend too a pass sees either
 * the old or the new update, never a stale one; a failed upload is retried, under the
 * write lock, before the next pass.
 *
 * After each forward pass every output is checked: a non-finite value (weights that
 * overflowed, say) is never answered with OK; served_infer fails with a message that
 * names the model, version and output, and says whether this is the first failure of
 * a streak (so the caller logs once per streak, not once per request).
 *
 * A model with sparse tables (embedding_bag layers) reads the rows of its ids at
 * inference time through a served_rows (the shards in production: rows_source.h), with
 * each table's spec from the model's config.json (train_config.h). Rows are read before
 * the read lock is taken (model_infer_rows), so a network read never holds up updates.
 *
 * A served model is reference-counted: served_create gives the first reference,
 * served_release drops one (it is the destroy) and accepts NULL.
 */
#ifndef PS_SERVING_REPLICA_SERVED_H
#define PS_SERVING_REPLICA_SERVED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "model.h"
#include "ps.pb-c.h"
#include "status.h"
#include "wordpiece.h"
#include "train_spec.h"

/* Largest number of chunks a served model may have (a registry entry naming more is
 * refused): 2^24 chunks of the default 256 KiB are 4 TiB of parameters. */
#define SERVED_MAX_CHUNKS (1u << 24)
/* Floats pulled per request when filling a model. */
#define SERVED_PULL_BATCH_FLOATS (2u << 20)
/* Idle forward-pass workspaces kept per model (one per concurrent request). */
#define SERVED_MAX_IDLE_WORKSPACES 16
#define SERVED_NONFINITE_LOG_MS 60000 /* a non-finite streak is logged at most this often */

/* Where chunks come from: pull n keys; dst[i] gets lens[i] floats; ret_versions the
 * chunk versions. The shards in production (shard_source.h), a table in tests. */
typedef struct served_source {
    ps_status (*pull)(void *arg, size_t n, const uint64_t *keys, float *const *dst,
                      const uint32_t *lens, uint64_t *ret_versions, char *err, size_t err_len);
    void *arg;
} served_source;

/* Where table rows come from: out[n * spec->dim] gets the rows of ids[0..n) (distinct)
 * of `table` of `model`, created on their shards from spec's initializer when new. On
 * failure err says why and the status is what the inference answers (UNAVAILABLE when
 * the shards cannot be reached). The shards in production (rows_source.h), memory in
 * tests. Called from any number of inference threads at once. */
typedef struct served_rows {
    ps_status (*pull)(void *arg, const char *model, const char *table, const table_spec *spec,
                      size_t n, const uint64_t *ids, float *out, char *err, size_t err_len);
    void *arg;
} served_rows;

typedef struct served served;

/* Builds a model version from its registry entry: instance (parameters zero), chunk
 * table, and for a model with tables their specs and `rows` (copied; NULL or no pull:
 * its inferences fail FAILED_PRECONDITION). Forward passes run on `backend` (borrowed; it
 * outlives the model), or on a CPU backend of the model's own when NULL. Nothing is
 * pulled yet. INVALID_ARGUMENT with a message when the entry does not fit the config's
 * graph. */
ps_status served_create(const Ps__ModelInfo *info, const served_rows *rows,
                        kernels_backend *backend, served **ret_served, char *err, size_t err_len);
void served_retain(served *s);
void served_release(served *s); /* drops a reference; the last one frees; accepts NULL */

const char *served_name(const served *s);
uint64_t served_version(const served *s);
const model *served_model(const served *s);
/* The tokenizer of the model's text input (model_config.h); NULL when it has none. */
const wordpiece *served_tokenizer(const served *s);

/* Applies one streamed update if it names one of this model's chunks (true), by the
 * rule of chunk_table.h. */
bool served_update_apply(served *s, const Ps__Update *u);
/* Consistent propagation (config.json training.propagation "consistent"): the
 * instance holds one published cut (served_publish: the registry's `publishing` when
 * it was made, else `published`), takes no streamed update, and a ready one is never
 * re-pulled. Streaming models: false and 0. */
bool served_frozen(const served *s);
uint64_t served_publish(const served *s);
/* Marks for a re-pull every chunk whose key pred accepts (NULL: all); returns how many. */
size_t served_repull_mark(served *s, bool (*pred)(uint64_t key, void *arg), void *arg);
/* Pulls every chunk (all = true: the initial fill) or only the stale ones, and
 * installs what is newer than held. *ret_left (may be NULL) gets the chunks still
 * stale or unfilled afterwards. On failure err says why. */
ps_status served_pull(served *s, const served_source *src, bool all, size_t *ret_left, char *err,
                      size_t err_len);
/* True when every chunk holds a version and none is stale. */
bool served_current(served *s);
/* The sum of the chunk versions held (chunk_table_version_sum): what responses
 * report as param_version. Every applied update raises it; it never decreases. */
uint64_t served_param_version(served *s);
/* The version held of the chunk with `key`; false when the model has no such chunk. */
bool served_chunk_version(served *s, uint64_t key, uint64_t *ret_version);

/* Ready: filled and listed for inference (set once by the model set). */
bool served_ready(const served *s);
void served_ready_set(served *s);

/* What a forward pass reports besides its status; written whatever the outcome. */
typedef struct served_infer_report {
    uint64_t param_version; /* the parameters the pass ran on */
    bool streak_start;      /* a non-finite failure after a success: log it (at most once per
                               SERVED_NONFINITE_LOG_MS, so clients cannot flood the log) */
    bool streak_end;        /* a success ending a streak whose start was logged: log it */
} served_infer_report;

/* Runs a forward pass under the read lock (see model_infer) and checks the outputs:
 * INTERNAL, with err naming model, version and output, when one is not finite.
 * report (may be NULL) is filled in every case. */
ps_status served_infer(served *s, const model_input *inputs, size_t n_inputs, model_output *outputs,
                       size_t n_outputs, served_infer_report *report, char *err, size_t err_len);

/* Statistics for ModelStatistics (counts and nanoseconds). */
typedef struct served_stats {
    uint64_t success, fail, inferences, executions;
    uint64_t success_ns, compute_ns;
    uint64_t last_inference_ms; /* wall clock */
} served_stats;
void served_stats_get(served *s, served_stats *ret_stats);
void served_stats_add(served *s, bool ok, uint64_t batch, uint64_t total_ns, uint64_t compute_ns);

#endif
