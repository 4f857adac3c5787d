/* loader.h: loads what the model registry lists, and keeps trying until it loads.
 *
 * The registry (WatchModels) says which version of each model to serve; the loader
 * loads each one into the model set on a thread of its own. A load that fails (a chunk
 * that no shard holds yet, a shard that is down) is tried again with exponential
 * backoff (200 ms doubling to 5 s by default), without waiting for the registry to
 * change, and is reported once per streak of failures, then once when it loads.
 *
 * Loading starts only once the gate allows it: the update streams of the shards must
 * be subscribed first, so that everything after the pull reaches the model (the
 * replica's sync module is the gate).
 */
#ifndef PS_SERVING_REPLICA_LOADER_H
#define PS_SERVING_REPLICA_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "logger.h"
#include "models.h"
#include "served.h"
#include "status.h"

#define LOADER_DEFAULT_BACKOFF_MIN_MS 200
#define LOADER_DEFAULT_BACKOFF_MAX_MS 5000
#define LOADER_MAX_MODELS 1024 /* registry entries accepted at once */

typedef struct loader_opts {
    models *models;       /* where models load (borrowed) */
    served_source source; /* pulls chunks; used by the loader's thread only */
    /* Waits up to timeout_ms until loading may start; NULL: at once. */
    bool (*gate)(void *arg, int timeout_ms);
    void *gate_arg;
    int backoff_min_ms;    /* first retry delay; 0 = LOADER_DEFAULT_BACKOFF_MIN_MS */
    int backoff_max_ms;    /* largest delay; 0 = LOADER_DEFAULT_BACKOFF_MAX_MS */
    replica_logger logger; /* load failures (once per streak) and successes */
    /* Consistent propagation: called (from the loader's thread) once the cut an entry
     * is publishing was built (error NULL), or could not be (error says why). */
    void (*prepared)(void *arg, const char *model, uint64_t version, uint64_t publish,
                     const char *error);
    void *prepared_arg;
} loader_opts;

typedef struct loader loader;

/* Starts the loader's thread. */
ps_status loader_create(const loader_opts *opts, loader **ret_loader);
void loader_destroy(loader *l); /* stops and joins the thread; accepts NULL */

/* The registry's latest list: entries are copied; an entry already known (same name,
 * version and publish numbers) keeps its retry state; one whose publish numbers moved
 * is loaded again (models_load builds or switches the cut). Also tells the model set what to
 * expect. RESOURCE_EXHAUSTED past LOADER_MAX_MODELS; NO_MEMORY. On failure nothing changes. */
ps_status loader_registry_install(loader *l, const Ps__ModelsUpdate *update);
/* How many listed entries are not loaded yet. */
size_t loader_pending(loader *l);

#endif
