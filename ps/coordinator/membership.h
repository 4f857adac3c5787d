/* membership.h: the coordinator's table of nodes (shards and serving replicas) and
 * their liveness.
 *
 * Why this way: membership is plain data that several decisions read (the ring is
 * built from the shards marked in_ring, the state file lists every node, status shows
 * them), so it is a table with no lock of its own: the coordinator's one state lock
 * guards it together with the ring and the registry, and every change to them is seen
 * whole. The table is sized once at creation (max_nodes), so a client can never make
 * it grow past a named limit. Liveness is computed from heartbeat times passed in by
 * the caller (no clock inside), which keeps it testable. No logging: the sweep
 * reports transitions through a callback and the caller says what happened.
 */
#ifndef PS_COORDINATOR_MEMBERSHIP_H
#define PS_COORDINATOR_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hashring.h"
#include "status.h"

#define MEMBERSHIP_ID_MAX HASHRING_ID_MAX     /* longest node id, bytes */
#define MEMBERSHIP_ADDR_MAX HASHRING_ADDR_MAX /* longest "host:port", bytes */
#define MEMBERSHIP_MAX_WEIGHT 1000            /* largest shard weight */
#define MEMBERSHIP_DEFAULT_MAX_NODES 256      /* nodes (shards + replicas) at most */
#define MEMBERSHIP_MAX_NODES_LIMIT 4096       /* the largest max_nodes accepted */
#define MEMBERSHIP_DEAD_AFTER_BEATS 3         /* missed heartbeat intervals = dead */
#define MEMBERSHIP_MAX_SERVING 256            /* model versions a replica reports serving */

typedef enum membership_role {
    MEMBERSHIP_ROLE_SHARD = 0, /* a parameter-server shard (may own ring ranges) */
    MEMBERSHIP_ROLE_SERVE = 1, /* a serving replica */
} membership_role;

/* One node. Callers read these fields and change them under the coordinator's lock. */
typedef struct membership_node {
    char id[MEMBERSHIP_ID_MAX + 1];     /* unique name, [A-Za-z0-9._-] */
    char addr[MEMBERSHIP_ADDR_MAX + 1]; /* where it serves, "host:port" */
    uint32_t weight;                    /* 1..MEMBERSHIP_MAX_WEIGHT */
    membership_role role;               /* shard or replica */
    bool in_ring;                       /* a shard owning ring ranges */
    bool waiting;  /* a shard that registered while the ring held data: off the ring until
                      `ring add` moves its share of the keys to it */
    bool joining;  /* a shard being added (off the ring): the shards copy the keys the pending
                      ring gives it; it goes on the ring when every shard has synced */
    bool draining; /* a shard being drained (on the ring): its keys are copied to their
                      next owners; it leaves the ring when every shard has synced */
    uint64_t synced_epoch; /* a shard's last report: the pending ring epoch it finished
                              copying for (0: none) */
    bool alive;            /* heard from within MEMBERSHIP_DEAD_AFTER_BEATS intervals */
    int64_t last_hb_ms;    /* monotonic time of the last register/heartbeat; 0 = never */
    uint64_t keys, seq;    /* as last reported by a shard's heartbeat (display only) */
    uint64_t serving[MEMBERSHIP_MAX_SERVING]; /* a replica's ready versions, as
                                                 membership_model_ref hashes */
    uint32_t n_serving;
    uint64_t *tokens;  /* a shard's explicit ring positions (ascending; `ring add
                          --balanced`), owned by the table; NULL = hashed positions.
                          Copies of the struct share the array: only
                          membership_node_tokens_set changes it */
    uint32_t n_tokens; /* how many; 0 without */
} membership_node;

typedef struct membership_opts {
    size_t max_nodes; /* 0 = MEMBERSHIP_DEFAULT_MAX_NODES; at most MEMBERSHIP_MAX_NODES_LIMIT */
    int heartbeat_ms; /* the expected heartbeat interval (> 0) */
} membership_opts;

typedef struct membership membership;

/* INVALID_ARGUMENT for options out of range, NO_MEMORY. */
ps_status membership_create(const membership_opts *opts, membership **ret_members);
void membership_destroy(membership *members); /* accepts NULL */

/* Syntax checks for what clients send: 1..MEMBERSHIP_ID_MAX of [A-Za-z0-9._-]; and
 * "host:port" of at most MEMBERSHIP_ADDR_MAX bytes with a port 1..65535. */
bool membership_id_valid(const char *id);
/* A model version as one 64-bit value (XXH3 of name NUL and the version), what nodes
 * keep of the versions a replica serves. */
uint64_t membership_model_ref(const char *name, uint64_t version);
/* True when a live node reports serving that version; ret_id (may be NULL) names one. */
bool membership_serving(const membership *members, uint64_t ref, const char **ret_id);
bool membership_addr_valid(const char *addr);
const char *membership_role_name(membership_role role); /* "shard" or "replica" */

size_t membership_node_count(const membership *members);
size_t membership_node_limit(const membership *members);
/* The i-th node (i < count), in the order they were added; NULL past the end. The
 * pointer stays valid until a node is removed. */
membership_node *membership_node_at(membership *members, size_t i);
const membership_node *membership_node_at_const(const membership *members, size_t i);
membership_node *membership_node_find(membership *members, const char *id);

/* Adds a node, not alive, off the ring. INVALID_ARGUMENT for a bad id, address, role
 * or weight; ALREADY_EXISTS for a known id; RESOURCE_EXHAUSTED when the table is full.
 * *ret_node (may be NULL) gets the new entry. */
ps_status membership_node_add(membership *members, const char *id, const char *addr,
                              membership_role role, uint32_t weight, membership_node **ret_node);
/* NOT_FOUND for an unknown id. Frees the node's tokens. */
ps_status membership_node_remove(membership *members, const char *id);

/* Gives a node explicit ring tokens: `tokens` (malloc'd, n_tokens of them, strictly
 * ascending) becomes the node's, and the array it had is freed; NULL (with 0) goes back
 * to hashed positions. Registrations and heartbeats never change them. */
void membership_node_tokens_set(membership_node *node, uint64_t *tokens, uint32_t n_tokens);

/* Records a sign of life at now_ms. Returns true when the node was not alive before
 * (it came back, or reports in for the first time since the coordinator started). */
bool membership_node_touch(membership_node *node, int64_t now_ms);

/* Marks dead every alive node silent for more than MEMBERSHIP_DEAD_AFTER_BEATS
 * intervals at now_ms, calling died(arg, node, silent_ms) for each. Returns how many
 * died. */
size_t membership_liveness_sweep(membership *members, int64_t now_ms,
                                 void (*died)(void *arg, const membership_node *node,
                                              int64_t silent_ms),
                                 void *arg);

/* Shards on the ring. */
size_t membership_ring_count(const membership *members);

/* ------------------------------------------------- a ring change in progress --- */

/* The shard joining or draining (one change at a time), or NULL. */
membership_node *membership_changing(membership *members);

/* How far the shards of the current ring are with a pending ring of `pending_epoch`: a
 * shard has synced once it reports synced_epoch >= it. Every shard on the ring counts,
 * dead or alive: the keys a dead one is primary for are copied by no one, so a change
 * waits for it to come back (or for failover, which cancels the change). */
typedef struct membership_sync {
    size_t shards;                       /* shards on the current ring */
    size_t synced;                       /* of them, synced */
    const membership_node *first_behind; /* the first one not synced, or NULL */
} membership_sync;
void membership_sync_count(const membership *members, uint64_t pending_epoch,
                           membership_sync *ret_sync);

#endif
