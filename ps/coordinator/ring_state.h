/* ring_state.h: the consistent-hash ring the coordinator builds from its members, its
 * epoch, and the join policy (may a shard join the ring now?).
 *
 * Why this way: the ring is a pure function of the shards marked in_ring (their ids,
 * weights, and explicit tokens when `ring add --balanced` gave them some), so it is
 * rebuilt whole from the membership table on every change, and each rebuild moves the
 * epoch on by one (clients and shards compare epochs to notice a new ring). A shard's
 * tokens are its points whatever its weight or --vnodes, so neither a re-registration
 * with another weight nor a restart with other --vnodes moves its keys; tokens reach
 * every other process inside the serialized ring, so all build the same ring. Like the
 * membership table it has no lock of its own: the coordinator's state lock guards
 * both, so ring and table never disagree.
 *
 * The join policy: a shard joins at once only while the ring holds no data; otherwise
 * the keys it would own must be copied to it first (a pending ring, coord_change.c),
 * or they would stay on their old shards and become unreachable. Whether the ring holds data is a
 * question for the shards themselves at decision time (a cache or the state file can be stale): the
 * caller copies the members out (ring_state_probe_list), asks each one WITHOUT holding the state
 * lock, and hands the answers to ring_state_verdict. A shard that cannot be asked counts as holding
 * data. The verdict also words the reason for people.
 */
#ifndef PS_COORDINATOR_RING_STATE_H
#define PS_COORDINATOR_RING_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hashring.h"
#include "membership.h"
#include "status.h"

#define RING_PROBE_DETAIL_MAX 160 /* why a shard could not be asked, bytes */

typedef struct ring_state_opts {
    uint32_t vnodes; /* virtual nodes per unit of weight; 0 = HASHRING_DEFAULT_VNODES */
} ring_state_opts;

typedef struct ring_state ring_state;

ps_status ring_state_create(const ring_state_opts *opts, ring_state **ret_ring);
void ring_state_destroy(ring_state *ring); /* accepts NULL */

/* The epoch of the current ring (0 before the first build). */
uint64_t ring_state_epoch(const ring_state *ring);
/* The current ring (never NULL after create). */
const hashring *ring_state_ring(const ring_state *ring);

/* Rebuilds the ring from the shards marked in_ring and moves the epoch on by one; while
 * a shard joins or drains (membership_changing), also the pending ring: the shards
 * after the change (the joining one added, the draining one left out), with the next
 * epoch, which the ring will have once the change commits. On failure the old rings
 * and epoch stay. */
ps_status ring_state_rebuild(ring_state *ring, const membership *members);
/* Builds the ring with exactly `epoch` (loading a saved state). */
ps_status ring_state_restore(ring_state *ring, const membership *members, uint64_t epoch);

/* The pending ring (see ring_state_rebuild), or NULL while no change is in progress;
 * its epoch (0 when none), always the current epoch + 1. Committing the change (the
 * joining shard in_ring, the draining one off) and rebuilding gives a current ring with
 * exactly this epoch and placement. */
const hashring *ring_state_pending(const ring_state *ring);
uint64_t ring_state_pending_epoch(const ring_state *ring);

/* The share of the keys (0..1) shard `id` owns as primary on the current ring; 0 when
 * it is not on the ring (or memory runs out: the figure is for messages only). */
double ring_state_share(const ring_state *ring, const char *id);
/* The same on the pending ring (0 when none). */
double ring_state_pending_share(const ring_state *ring, const char *id);

/* hashring_serialize of the current ring into a malloc'd buffer (free it). */
ps_status ring_state_serialize(const ring_state *ring, uint8_t **ret_buf, size_t *ret_len);
/* The same of the pending ring: NULL and 0 when there is none. */
ps_status ring_state_serialize_pending(const ring_state *ring, uint8_t **ret_buf, size_t *ret_len);

/* ----------------------------------------------------------------- join policy --- */

/* One ring member and what it answered when asked how many keys it holds. */
typedef struct ring_probe {
    char id[MEMBERSHIP_ID_MAX + 1];
    char addr[MEMBERSHIP_ADDR_MAX + 1];
    bool asked;                         /* false: not asked (a check that stopped early) */
    ps_status status;                   /* OK: `keys` is its answer; else it could not be asked */
    uint64_t keys;                      /* keys it holds, when status is OK */
    char detail[RING_PROBE_DETAIL_MAX]; /* why it could not be asked */
} ring_probe;

/* Copies the ring's members (shards marked in_ring) out of the table, so they can be
 * asked without the state lock. *ret_probes is malloc'd (free it; NULL when none). */
ps_status ring_state_probe_list(const membership *members, ring_probe **ret_probes, size_t *ret_n);

/* What the answers add up to. */
typedef struct ring_verdict {
    size_t members;           /* shards on the ring */
    size_t asked;             /* of them, asked */
    size_t holding;           /* answered that they hold keys */
    size_t unreachable;       /* could not be asked (counted as holding data) */
    uint64_t keys;            /* keys held, summed over the shards that answered */
    size_t first_unreachable; /* index of the first one that could not be asked, or SIZE_MAX */
    size_t first_holding;     /* index of the first one that holds keys, or SIZE_MAX */
} ring_verdict;

void ring_state_verdict(const ring_probe *probes, size_t n, ring_verdict *ret_verdict);
/* The policy: a shard may join at once only a ring that holds no data, every member
 * asked (else its keys must be copied to it first). */
bool ring_state_join_allowed(const ring_verdict *verdict);
/* Why not, for people: "the ring holds 120 keys on 2 of 3 shards; shard-3 at
 * 127.0.0.1:7003 could not be asked (...) and counts as holding data"; after a check
 * that stopped early, only what settled it: "shard-1 on the ring holds 20 keys". */
void ring_state_verdict_explain(const ring_verdict *verdict, const ring_probe *probes, char *buf,
                                size_t cap);
/* The share of the key space (0..1) a shard of `weight` would take if it joined. */
double ring_state_join_share(const membership *members, uint32_t weight);

#endif
