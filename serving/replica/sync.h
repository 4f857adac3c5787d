/* sync.h: keeps a replica's models in step with the shards.
 *
 * One subscriber thread per shard on the ring follows that shard's Subscribe stream
 * and applies its updates to the model set (subscriber.h says what each message
 * means). It resumes where it stopped after any break, passing the shard incarnation
 * it last saw. Everything held from a shard is marked for a re-pull when the shard
 * restarted (a new incarnation, in a Health answer or on the stream), when it says
 * resync, or when the stream stalled: shards send a keepalive every second on an idle
 * stream, so a stream that carried nothing for stall_ms (3 s) is cancelled and
 * subscribed again. One more thread watches for stalls and pulls stale chunks again.
 *
 * Which chunks a shard holds comes from the ring (the primary owner of each key).
 * The loader waits on sync_ready_wait before its first pull, so that everything after
 * that pull reaches the model through the streams.
 */
#ifndef PS_SERVING_REPLICA_SYNC_H
#define PS_SERVING_REPLICA_SYNC_H

#include <stdbool.h>

#include "coordinator.pb-c.h"
#include "logger.h"
#include "models.h"
#include "served.h"
#include "status.h"

#define SYNC_DEFAULT_STALL_MS 3000 /* 3 x the shards' 1000 ms keepalive */
#define SYNC_DEFAULT_FIX_MS 100    /* stall checks and stale re-pulls, at least this often */
#define SYNC_RETRY_MS 200          /* wait before reaching a shard again */
#define SYNC_HEALTH_TIMEOUT_MS 2000
#define SYNC_MAX_SHARDS 256 /* subscriptions at once (one thread each) */

typedef struct sync_opts {
    models *models;        /* where updates go (borrowed) */
    served_source source;  /* re-pulls stale chunks; used by sync's own thread only */
    int stall_ms;          /* 0 = SYNC_DEFAULT_STALL_MS */
    int fix_interval_ms;   /* 0 = SYNC_DEFAULT_FIX_MS */
    replica_logger logger; /* stalls, restarts, lost and regained shards, re-pull failures */
} sync_opts;

typedef struct sync_ctx sync_ctx;

/* Starts the watch-and-fix thread; subscriptions start with the first ring. */
ps_status sync_create(const sync_opts *opts, sync_ctx **ret_sync);
void sync_destroy(sync_ctx *s); /* cancels the streams, joins every thread; accepts NULL */

/* The ring as the coordinator sent it: subscribes to every shard on it that has no
 * subscriber yet, stops those no longer on it, and uses its placement for re-pulls.
 * RESOURCE_EXHAUSTED when more than SYNC_MAX_SHARDS shards (the first ones are
 * followed) or a thread could not start. */
ps_status sync_ring_install(sync_ctx *s, const Ps__Ring *ring);
/* Waits up to timeout_ms until a ring was installed and every shard on it was tried at
 * least once (subscribed, or found unreachable). */
bool sync_ready_wait(sync_ctx *s, int timeout_ms);

#endif
