/* coord.h: the coordinator's state and what it can be asked to do, as functions on a
 * context (coord_ctx): membership and liveness, the ring and the join policy, the model
 * registry, persistence. The rpc handlers (handlers.c) are thin glue over these; unit
 * tests call them directly, with fakes for the network and the disk.
 *
 * Why this way:
 * - One lock guards membership, ring and registry together, so every change is seen
 *   whole. Nothing slow runs under it: asking shards how much data they hold (join and
 *   remove decisions) happens with the lock released, and the decision is retaken if
 *   the ring changed meanwhile; the state file is encoded under the lock and written
 *   after it is released (state_store.h), so heartbeats never wait for a disk.
 * - Every operation returns a ps_status and, on failure, a message in `err` that a
 *   person can act on (it becomes the gRPC status details).
 * - Events worth a log line (a node died, came back, waits off the ring, joined) go to
 *   an event callback: main logs them, tests count them.
 * - Messages handed out (rings, models, status) are private copies the caller frees
 *   with protobuf_c_message_free_unpacked(&msg->base, NULL), so they can be sent after
 *   the lock is released.
 */
#ifndef PS_COORDINATOR_COORD_H
#define PS_COORDINATOR_COORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "state_store.h"
#include "status.h"

#define COORD_ERR_MAX 1024             /* room for an operation's message */
#define COORD_MAX_PUBLISHES 64         /* publishes running at once */
#define COORD_MAX_OPTIMIZER_FIELDS 16  /* hyper-parameters in one SetOptimizer */
#define COORD_DEFAULT_MAX_WATCHERS 200 /* WatchRing + WatchModels streams open at once */
#define COORD_DEFAULT_REPLICATION 2    /* copies of each key */
#define COORD_MAX_REPLICATION 3
#define COORD_MAX_WATCHERS_LIMIT 100000 /* the largest --max-watchers */
#define COORD_JOIN_ATTEMPTS 3           /* ring changes tolerated while its shards are asked */
#define COORD_WATCH_POLL_MS 200         /* how often a watch checks that its call lives */
/* A join or drain not committed within this many ms is cancelled (--ring-change-timeout-ms). */
#define COORD_DEFAULT_RING_CHANGE_TIMEOUT_MS 600000
#define COORD_MAX_RING_CHANGE_TIMEOUT_MS 86400000 /* the largest --ring-change-timeout-ms */

typedef enum coord_event_level {
    COORD_EVENT_INFO = 0,
    COORD_EVENT_WARN = 1,
    COORD_EVENT_ERROR = 2,
} coord_event_level;

/* Something happened that deserves a log line (one line, no newline). */
typedef void (*coord_event_fn)(void *arg, coord_event_level level, const char *message);
/* Asks shard `id` at `addr` how many keys it holds (shard_probe_keys is the real one). */
typedef ps_status (*coord_probe_fn)(void *arg, const char *id, const char *addr, uint64_t *ret_keys,
                                    char *err, size_t err_len);
/* Monotonic milliseconds (ps_now_ms is the real one). */
typedef int64_t (*coord_clock_fn)(void *arg);
/* Whether the call a watch serves is still wanted. */
typedef bool (*coord_alive_fn)(void *arg);

typedef struct coord_opts {
    const char *state_path;    /* the state file (state_store.h); required */
    int heartbeat_ms;          /* expected heartbeat interval; 3 missed = dead */
    uint32_t replication;      /* copies of each key (R); 0 = COORD_DEFAULT_REPLICATION */
    uint32_t vnodes;           /* virtual nodes per unit of weight; 0 = default */
    size_t max_nodes;          /* 0 = MEMBERSHIP_DEFAULT_MAX_NODES */
    size_t max_watchers;       /* 0 = COORD_DEFAULT_MAX_WATCHERS */
    size_t max_versions;       /* model versions kept; 0 = REGISTRY_DEFAULT_MAX_VERSIONS */
    size_t max_registry_bytes; /* 0 = REGISTRY_DEFAULT_MAX_BYTES */
    coord_probe_fn probe;      /* NULL = shard_probe_keys */
    void *probe_arg;
    state_store_write_fn write; /* NULL = ps_write_file_atomic */
    void *write_arg;
    coord_event_fn event; /* NULL = events are dropped */
    void *event_arg;
    coord_clock_fn clock; /* NULL = ps_now_ms */
    void *clock_arg;
    int64_t worker_timeout_ms;      /* a training worker silent this long is dead; 0 = default */
    int64_t ring_change_timeout_ms; /* a join or drain not committed by then is cancelled;
                                       0 = COORD_DEFAULT_RING_CHANGE_TIMEOUT_MS */
} coord_opts;

typedef struct coord_ctx coord_ctx;

/* Creates the context and loads the state file. A damaged file is refused (PARSE, with
 * a message naming the file, what is wrong and what to do, in err). The nodes it lists
 * count as alive, as if heard from at creation: a restart gives each a full dead-after
 * interval to report in before the liveness sweep may declare it dead. */
ps_status coord_create(const coord_opts *opts, coord_ctx **ret_ctx, char *err, size_t err_len);
/* Call after every rpc call has ended. Accepts NULL. */
void coord_destroy(coord_ctx *ctx);
/* Ends watches and liveness waits (shutdown). */
void coord_stop(coord_ctx *ctx);
/* For the start-up line. */
void coord_summary(coord_ctx *ctx, uint64_t *ret_epoch, size_t *ret_nodes, size_t *ret_models);

/* ------------------------------------------------------- nodes (coord_nodes.c) --- */

/* A node announces itself. A new shard joins the ring at once only while the ring holds
 * no data (the ring's shards are asked) and no change is in progress; otherwise it is
 * kept registered but off the ring (NodeInfo.waiting) until `ring add`. A shard already
 * on the ring (a restart) goes back to its place; a joining one stays joining. */
ps_status coord_node_register(coord_ctx *ctx, const Ps__NodeInfo *node,
                              Ps__RegisterResponse *ret_resp, char *err, size_t err_len);
/* Records a node's heartbeat (a shard's keys, seq and synced_epoch) and commits the
 * ring change in progress once every shard of the ring has synced. NOT_FOUND for an
 * unknown id (the node registers again). */
ps_status coord_node_heartbeat(coord_ctx *ctx, const Ps__HeartbeatRequest *req,
                               Ps__HeartbeatResponse *ret_resp, char *err, size_t err_len);
/* Puts a shard on the ring (admin). While the ring holds no data, at once; otherwise it
 * starts a join: the shard is marked joining and a pending ring with it is published
 * (the current epoch moves on by one, the pending ring has the next), committed once
 * every shard has copied its keys (coord_node_heartbeat). FAILED_PRECONDITION while
 * another change is in progress (naming it). `ring add` of the shard being drained
 * cancels the drain (it stays); node->draining set asks for that only (`ring cancel`:
 * FAILED_PRECONDITION, nothing added, when the shard is not draining). `balanced`: at
 * tokens chosen so that every shard owns its weight's share of the keys
 * (hashring_alloc.h), kept in membership and the state file; else at hashed positions.
 * *ret_epoch: the current epoch after the call. */
ps_status coord_node_add(coord_ctx *ctx, const Ps__NodeInfo *node, bool balanced,
                         uint64_t *ret_epoch, char *err, size_t err_len);
/* Takes a node out (admin). A shard that answers that it holds keys is never removed;
 * one that cannot be asked only with `force` (which also cancels a change in
 * progress; without force a ring shard is not removed during one). Removing the
 * joining shard cancels the join (it stays registered, waiting off the ring); a dead
 * shard already off the ring (failover) is forgotten. */
ps_status coord_node_remove(coord_ctx *ctx, const char *id, bool force, uint64_t *ret_epoch,
                            char *err, size_t err_len);
/* Starts draining a live shard on the ring (RemoveNode with drain): it is marked
 * draining and a pending ring without it is published; once every shard has copied its
 * keys to their next owners the ring commits without it (kept as a known node, like a
 * removed one). FAILED_PRECONDITION during another change, for the last shard, for a
 * dead one. */
ps_status coord_node_drain(coord_ctx *ctx, const char *id, uint64_t *ret_epoch, char *err,
                           size_t err_len);
/* The ring with every node (a copy). */
ps_status coord_ring_get(coord_ctx *ctx, Ps__Ring **ret_ring);
/* Marks dead the nodes silent for 3 intervals (one event each), fails over (R >= 2),
 * and settles the ring change in progress: cancelled when a shard failed over, when
 * the joining shard died, or past the timeout; committed when every shard synced. */
void coord_liveness_sweep(coord_ctx *ctx);
/* Sleeps about half a heartbeat interval; false once the coordinator stops. */
bool coord_liveness_wait(coord_ctx *ctx);

/* ------------------------------------------------------------------- watches --- */

/* A watch stream starts / ends. RESOURCE_EXHAUSTED when max_watchers are open. */
ps_status coord_watch_begin(coord_ctx *ctx, char *err, size_t err_len);
void coord_watch_end(coord_ctx *ctx);
/* A message packed once and shared by every watch stream that sends it: each stream
 * holds a reference (coord_packed_unref drops it), not a copy of its own. Before, each
 * stream unpacked and packed its own copy, and one that was not read held both: idle
 * watchers of a 40 MiB registry took ~75 MiB each. */
typedef struct coord_packed coord_packed;
const uint8_t *coord_packed_bytes(const coord_packed *p, size_t *ret_len);
void coord_packed_unref(void *p); /* accepts NULL; void * for rpc_ctx_write_packed */

/* How old the shared packed ring may be before a watcher that wakes builds it again:
 * its nodes' liveness figures are that fresh (the ring itself is exact: its epoch). */
#define COORD_RING_FRESH_MS 1000

/* Waits until the ring's epoch passes after_epoch, then gives the ring (a Ring message)
 * packed and shared, and its epoch. CANCELLED when alive(arg) turns false, UNAVAILABLE
 * when the coordinator stops. */
ps_status coord_ring_wait_packed(coord_ctx *ctx, uint64_t after_epoch, coord_alive_fn alive,
                                 void *arg, coord_packed **ret_packed, uint64_t *ret_epoch);
/* The same for the registry's generation: a ModelsUpdate of the latest version of
 * every model. */
ps_status coord_models_wait_packed(coord_ctx *ctx, uint64_t after_generation, coord_alive_fn alive,
                                   void *arg, coord_packed **ret_packed, uint64_t *ret_generation);
/* The same two, as a private copy of the message. */
ps_status coord_ring_wait(coord_ctx *ctx, uint64_t after_epoch, coord_alive_fn alive, void *arg,
                          Ps__Ring **ret_ring);
ps_status coord_models_wait(coord_ctx *ctx, uint64_t after_generation, coord_alive_fn alive,
                            void *arg, Ps__ModelsUpdate **ret_update);

/* ----------------------------------------------------- models (coord_models.c) --- */

/* Validates (registry_model_validate) and stores a model version. */
ps_status coord_model_register(coord_ctx *ctx, const Ps__ModelInfo *model, uint64_t *ret_version,
                               char *err, size_t err_len);
/* Every version of every model. */
ps_status coord_models_list(coord_ctx *ctx, Ps__ListModelsResponse **ret_list);
/* One version (0 = latest). NOT_FOUND with a message. */
ps_status coord_model_get(coord_ctx *ctx, const char *name, uint64_t version,
                          Ps__ModelInfo **ret_model, char *err, size_t err_len);
/* Takes a version out of the registry (and its state file) and hands the removed entry
 * to the caller, whose tensors name the chunks to free. Unless force, FAILED_PRECONDITION
 * for a model's latest version (replicas move to it, maybe before a heartbeat says so)
 * and for a version a live replica reports serving; NOT_FOUND when absent. */
ps_status coord_model_delete(coord_ctx *ctx, const char *name, uint64_t version, bool force,
                             Ps__ModelInfo **ret_model, char *err, size_t err_len);
/* Changes one optimizer of a model version's config.json (SetOptimizer in
 * coordinator.proto) and answers a copy of the changed entry (*ret_model; free with
 * ps__model_info__free_unpacked). */
ps_status coord_model_set_optimizer(coord_ctx *ctx, const Ps__SetOptimizerRequest *req,
                                    Ps__ModelInfo **ret_model, char *err, size_t err_len);
/* ------------------------------------------- training workers (coord_workers.c) --- */

/* A training worker joins a model (workers.h): resp gets its id, starting clock and the
 * model's consistency (strings static). NOT_FOUND for an unknown model. */
ps_status coord_worker_register(coord_ctx *ctx, const char *model, const char *name,
                                Ps__RegisterWorkerResponse *resp, char *err, size_t err_len);
/* A worker advances its clock (or leaves); resp gets the slowest live clock. */
ps_status coord_worker_clock(coord_ctx *ctx, const Ps__ClockRequest *req, Ps__ClockResponse *resp,
                             char *err, size_t err_len);
/* Blocks until a worker at req->clock may read under the model's policy, or `alive`
 * turns false (DEADLINE_EXCEEDED), or the coordinator stops (UNAVAILABLE). */
ps_status coord_worker_wait(coord_ctx *ctx, const Ps__WaitClockRequest *req, coord_alive_fn alive,
                            void *arg, Ps__ClockResponse *resp, char *err, size_t err_len);

/* -------------------------------------------- consistent cuts (coord_publish.c) --- */

/* Sends one progress message; false when the call is gone. */
typedef bool (*coord_publish_fn)(void *arg, const Ps__PublishProgress *progress);
/* Runs a publish (Publish in coordinator.proto) to its end, reporting each phase:
 * fences the model's training workers until all are parked, has every live replica
 * serving the version prepare the cut, commits. `alive` false (the call's deadline):
 * DEADLINE_EXCEEDED and nothing changes. FAILED_PRECONDITION for a model that
 * propagates by streaming or one being published; FAILED_PRECONDITION when a replica could not
 * build the cut. */
ps_status coord_publish_run(coord_ctx *ctx, const Ps__PublishRequest *req, coord_alive_fn alive,
                            coord_publish_fn progress, void *arg, char *err, size_t err_len);
/* A replica built (or could not build) a cut. NOT_FOUND when no such publish runs. */
ps_status coord_publish_prepared(coord_ctx *ctx, const Ps__PreparedRequest *req, char *err,
                                 size_t err_len);

/* The ring, every node and every model version. */
ps_status coord_status_get(coord_ctx *ctx, Ps__StatusResponse **ret_status);

#endif
