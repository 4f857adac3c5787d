/* coord_internal.h: what the parts of the coordinator context (coord.c, coord_nodes.c,
 * coord_models.c) share: the context's fields and helpers for events, snapshots and
 * message copies. Not for other modules: they use coord.h. */
#ifndef PS_COORDINATOR_COORD_INTERNAL_H
#define PS_COORDINATOR_COORD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "coord.h"
#include "workers.h"
#include "membership.h"
#include "registry.h"
#include "ring_state.h"
#include "state_store.h"

/* A publish in progress (coord_publish.c). */
typedef struct coord_publish {
    bool active;
    char model[256];
    uint64_t version, number;
    int64_t started_ms;
    uint32_t workers;                        /* live training workers when fenced */
    char (*expected)[MEMBERSHIP_ID_MAX + 1]; /* replicas that must prepare it */
    bool *prepared;                          /* per expected replica */
    size_t n_expected;
    char error[320]; /* a replica's failure: the publish fails */
} coord_publish;

struct coord_ctx {
    int heartbeat_ms;
    uint32_t replication;  /* R: copies of each key */
    bool failover_refused; /* said once: too many shards silent at once */
    size_t max_watchers;
    coord_probe_fn probe;
    void *probe_arg;
    coord_event_fn event;
    void *event_arg;
    coord_clock_fn clock;
    void *clock_arg;

    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t changed; /* ring or registry changed, or stopping */
    membership *members;
    ring_state *ring;
    registry *models;
    workers *workers; /* training workers and their clocks (not persisted) */
    int64_t worker_timeout_ms;
    int64_t ring_change_timeout_ms; /* a join or drain not committed by then is cancelled */
    int64_t change_started_ms;      /* when the change in progress started (or was loaded) */
    coord_publish publishes[COORD_MAX_PUBLISHES]; /* publishes in progress */
    state_store *store;                           /* its writes happen outside `lock` */
    uint64_t snapshot_seq;                        /* the number of the last snapshot taken */
    size_t watchers;                              /* watch streams open */
    bool stopping;
    /* What watch streams send, packed once and shared (coord_packed): the registry's
     * update for models_gen, and the ring as it was at ring_at_ms of epoch ring_epoch. */
    coord_packed *models_packed, *ring_packed;
    uint64_t models_gen, ring_epoch;
    int64_t ring_at_ms;
};

/* A packed message and its references: the cache's, and one per stream sending it. */
struct coord_packed {
    atomic_int refs;
    size_t len;
    uint8_t data[];
};

/* True while a publish of the model runs: its workers' waits park (lock held). */
bool coord_publish_fenced_locked(coord_ctx *c, const char *model);

/* Reports an event (printf format). */
void coord_event(coord_ctx *c, coord_event_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t coord_now(coord_ctx *c);

/* A snapshot of the durable state: taken under the lock, written after it. */
typedef struct coord_snapshot {
    char *text; /* NULL when encoding failed (reported) */
    uint64_t seq;
} coord_snapshot;
void coord_snapshot_take_locked(coord_ctx *c, coord_snapshot *ret_snap);
/* Writes (unless a newer one was), reports a failure, frees the text. No lock held. */
void coord_snapshot_write(coord_ctx *c, coord_snapshot *snap);
/* What every change ends with: takes a snapshot under the lock (held by the caller),
 * releases the lock, then writes the snapshot, so disk writes never hold up the
 * heartbeats that take the lock. */
void coord_unlock_and_persist(coord_ctx *c);

/* coord_suspects.c: shards on the ring whose heartbeat is late are asked directly (the
 * probe, lock NOT held); one that nothing answers for is marked dead at once (the next
 * liveness sweep fails it over). Only with R >= 2. */
void coord_probe_suspects(coord_ctx *c);

/* A packed message with one reference (the caller's); NULL when out of memory. */
coord_packed *coord_packed_make(const ProtobufCMessage *msg);
coord_packed *coord_packed_ref(coord_packed *p);
/* Replaces the cache slot *slot (its reference dropped) with p, and gives the caller a
 * reference to it (lock held). */
coord_packed *coord_packed_cache(coord_packed **slot, coord_packed *p);
/* A private copy of a packed message (NULL when out of memory). */
ProtobufCMessage *coord_packed_unpack(const ProtobufCMessageDescriptor *desc,
                                      const coord_packed *p);

/* Packs `msg` into a malloc'd buffer (under the lock, while it points into the state);
 * coord_message_unpack then makes the caller's private copy and frees the buffer. */
ps_status coord_message_pack(const ProtobufCMessage *msg, uint8_t **ret_buf, size_t *ret_len);
ps_status coord_message_unpack(const ProtobufCMessageDescriptor *desc, uint8_t *buf, size_t len,
                               ProtobufCMessage **ret_msg);

/* Fills a Ring message from the state (strings point into it; lock held). Free the
 * parts with coord_ring_fill_free once packed. */
typedef struct coord_ring_parts {
    Ps__NodeInfo *infos;
    Ps__NodeInfo **ptrs;
    uint8_t *ring_bytes;
    uint8_t *pending_bytes; /* the pending ring's, or NULL */
} coord_ring_parts;
ps_status coord_ring_fill_locked(coord_ctx *c, Ps__Ring *ring, coord_ring_parts *parts);
void coord_ring_fill_free(coord_ring_parts *parts);

/* Waits (lock held) until current(c) > after, the call dies or the coordinator stops:
 * OK, CANCELLED or UNAVAILABLE. */
ps_status coord_wait_locked(coord_ctx *c, uint64_t (*current)(coord_ctx *c), uint64_t after,
                            coord_alive_fn alive, void *arg);

/* ----------------------------------------------- shared by the node operations --- */

/* Syntax and ranges of a NodeInfo a client sent (id, address, weight, role). */
ps_status coord_node_check(const Ps__NodeInfo *node, char *err, size_t err_len);
membership_role coord_role_of(Ps__NodeRole role);
/* Asks the ring's shards whether they hold data (lock held on entry and exit, released
 * while asking). `stop_early`: stop at the first shard that holds data or cannot be
 * asked (enough to decide). On OK, *ret_verdict is valid for the current ring and `why`
 * says why a join is not allowed. UNAVAILABLE when the ring kept changing. */
ps_status coord_ring_check_locked(coord_ctx *c, bool stop_early, ring_verdict *ret_verdict,
                                  char *why, size_t why_len);
/* Rebuilds the ring and wakes the watches (lock held); a message in err on failure. */
ps_status coord_ring_rebuild_locked(coord_ctx *c, char *err, size_t err_len);

/* ------------------------------------------ ring changes (coord_change.c) --- */

/* "the join of shard s4 at ADDR" / "the drain of shard s2": the change n is in. */
void coord_change_name(const membership_node *n, char *buf, size_t cap);
/* FAILED_PRECONDITION with a message naming the change in progress (lock held), or OK
 * when there is none. `what` is the refused operation ("not adding shard s5"). */
ps_status coord_change_refuse_locked(coord_ctx *c, const char *what, char *err, size_t err_len);
/* Marks n joining (join) or draining and publishes the pending ring (lock held); on
 * failure n is as before and err says why. */
ps_status coord_change_start_locked(coord_ctx *c, membership_node *n, bool join, char *err,
                                    size_t err_len);
/* Ends the change in progress without applying it (joining or draining cleared, an
 * event saying `why`); the caller rebuilds the ring. True when there was one. */
bool coord_change_clear_locked(coord_ctx *c, const char *why);
/* coord_change_clear_locked, then the ring rebuilt (no pending). */
void coord_change_cancel_locked(coord_ctx *c, const char *why);
/* Settles the change in progress (lock held): cancels it when the joining shard died or
 * the timeout passed, commits it once every shard of the ring has synced. True when
 * the ring changed (the caller persists). */
bool coord_change_settle_locked(coord_ctx *c);

#endif
