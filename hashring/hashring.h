/* hashring.h: the consistent-hash ring that places keys on parameter-server shards.
 *
 * Each physical node (a shard) owns `vnodes_per_weight * weight` virtual points on a
 * 64-bit circle; a point's position is XXH3-64 of (node id, vnode index), so every
 * process that knows the same members builds the same ring, whatever order the
 * members were added in. A member may instead carry EXPLICIT tokens (its points'
 * positions, chosen by hashring_alloc.h so the ring stays balanced); they travel in
 * the serialized form, so every process still builds the same ring. A key's owners
 * are the first R distinct physical nodes met clockwise from the key's hash; the first
 * is the primary: the point at position p owns the keys in (previous point, p].
 *
 * Lookups are O(1) expected: a bucket table indexed by the top bits of the hash gives
 * the first ring point at or after the bucket's start, so a lookup is one table load
 * and a short scan. The table and the per-point owner lists are rebuilt on every
 * membership change (changes are rare; lookups are the hot path).
 *
 * The ring is not thread-safe for concurrent mutation; concurrent lookups on a ring
 * that nobody mutates are safe. Callers that change membership build a new ring (or
 * copy one) and swap pointers.
 */
#ifndef PS_HASHRING_H
#define PS_HASHRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define HASHRING_ID_MAX 63      /* longest node id, bytes, without the NUL */
#define HASHRING_ADDR_MAX 255   /* longest node address ("host:port"), bytes */
#define HASHRING_MAX_REPLICAS 8 /* largest R that hashring_owners answers */
#define HASHRING_DEFAULT_VNODES 1000
/* Bounds that keep the lookup tables compact (node indices are stored as uint16, point
 * indices leave bit 31 free). Past them hashring_add answers RESOURCE_EXHAUSTED and
 * hashring_parse answers PARSE. The tables take 50-74 bytes per point (point hash,
 * owner and owner list: 26; bucket table: 6 bytes a bucket, 4-8 buckets a point):
 * about 650 KiB for 10 nodes of 1000 vnodes, about 200 MiB at HASHRING_MAX_POINTS.
 * Tables of 256 KiB or more are rounded up to 2 MiB and asked for huge pages. */
#define HASHRING_MAX_NODES 65535u /* members; indices 0..65534 */
/* Sum of the members' points: weight * vnodes_per_weight each, or their tokens. */
#define HASHRING_MAX_POINTS (1u << 22)

typedef struct hashring hashring;

/* One physical member as callers see it. */
typedef struct hashring_node_info {
    const char *id;         /* unique, stable name, e.g. "shard-1" */
    const char *addr;       /* where it listens, e.g. "127.0.0.1:7001" */
    uint32_t weight;        /* relative capacity, >= 1; vnodes = weight * vnodes_per_weight
                               (without explicit tokens) */
    uint32_t index;         /* dense index 0..count-1: members sorted by id, so every process
                               that knows the same members uses the same indices */
    const uint64_t *tokens; /* its explicit tokens (ascending; valid like id), or NULL:
                               hashed positions */
    uint32_t n_tokens;      /* how many (0 without) */
} hashring_node_info;

/* An empty ring at epoch 0. vnodes_per_weight 0 means HASHRING_DEFAULT_VNODES;
 * INVALID_ARGUMENT past HASHRING_MAX_POINTS or for a NULL ret_ring. */
ps_status hashring_create(uint32_t vnodes_per_weight, hashring **ret_ring);
void hashring_destroy(hashring *ring); /* accepts NULL */

/* A deep copy (members, epoch, index). */
ps_status hashring_clone(const hashring *ring, hashring **ret_ring);

/* Membership. Each change increments the epoch by one.
 * add: INVALID_ARGUMENT for an empty/too-long id or addr or weight 0;
 *      ALREADY_EXISTS for a duplicate id.
 *      RESOURCE_EXHAUSTED past HASHRING_MAX_NODES or HASHRING_MAX_POINTS.
 * remove: NOT_FOUND for an unknown id.
 * A failed change (including NO_MEMORY) leaves the ring and its epoch as they were.
 * Every change renumbers members (indices are ranks by id) and rebuilds the tables:
 * O(points) time. */
ps_status hashring_add(hashring *ring, const char *id, const char *addr, uint32_t weight);
/* hashring_add with explicit tokens (copied): n_tokens >= 1 positions in strictly
 * ascending order, else INVALID_ARGUMENT; they are the member's points whatever its
 * weight and vnodes_per_weight (so a member keeps its placement when either changes;
 * the allocator gives weight * vnodes_per_weight). tokens NULL is hashring_add. */
ps_status hashring_add_tokens(hashring *ring, const char *id, const char *addr, uint32_t weight,
                              const uint64_t *tokens, uint32_t n_tokens);
ps_status hashring_remove(hashring *ring, const char *id);

uint64_t hashring_epoch(const hashring *ring);
/* Sets the epoch (used when a ring is rebuilt from a message that carries one). */
void hashring_set_epoch(hashring *ring, uint64_t epoch);
uint32_t hashring_node_count(const hashring *ring);
uint32_t hashring_vnodes_per_weight(const hashring *ring);

/* Member by dense index; false when out of range. The id and addr strings belong to
 * the ring and stay valid until its next change or its destruction. */
bool hashring_node_at(const hashring *ring, uint32_t index, hashring_node_info *ret_info);
/* Dense index of a member by id; false when unknown. */
bool hashring_find(const hashring *ring, const char *id, uint32_t *ret_index);

/* The hashed position of vnode `vnode` of a member `id` without tokens: XXH3-64 of the
 * id bytes (at most HASHRING_ID_MAX are used), one 0 byte, vnode as 4 LE bytes. */
uint64_t hashring_vnode_hash(const char *id, uint32_t vnode);

/* The 64-bit hash used for keys that are byte strings (XXH3-64, seed 0). */
uint64_t hashring_hash(const void *data, size_t len);

/* Dense index of the primary owner of a key hash; UINT32_MAX on an empty (or NULL)
 * ring. */
uint32_t hashring_primary(const hashring *ring, uint64_t key_hash);

/* Writes up to r (<= HASHRING_MAX_REPLICAS) distinct owners, primary first, into
 * ret_owners and returns how many were written: min(r, node_count). An r larger than
 * HASHRING_MAX_REPLICAS is treated as HASHRING_MAX_REPLICAS; 0 on an empty ring. */
uint32_t hashring_owners(const hashring *ring, uint64_t key_hash, uint32_t r, uint32_t *ret_owners);

/* The ring's points in clockwise order (sorted by position, then owner index), for
 * tools that measure or extend a ring (hashring_alloc.h); not the lookup path.
 * point_at: false past the end; ret_hash / ret_owner (dense index) may be NULL. */
uint32_t hashring_point_count(const hashring *ring);
bool hashring_point_at(const hashring *ring, uint32_t i, uint64_t *ret_hash, uint32_t *ret_owner);

/* Ownership: the share of the 64-bit key space (0..1) for which each member is one of
 * a key's first min(r, count) owners (r = 1: the primary), measured exactly on the arcs
 * between points (hashring_ownership.c). ret_shares (may be NULL) gets node_count
 * entries, by dense index. *ret_peak_mean (may be NULL) gets the ring's balance: the
 * largest share / weight over the mean share per unit of weight (1.0 = every member
 * owns exactly its weight's part; 0 on an empty ring). An r past
 * HASHRING_MAX_REPLICAS is treated as HASHRING_MAX_REPLICAS; INVALID_ARGUMENT for r 0
 * or a NULL ring. */
ps_status hashring_ownership(const hashring *ring, uint32_t r, double *ret_shares,
                             double *ret_peak_mean);

/* Serialized form (travels in messages; little-endian, versioned):
 *   magic "PSRG", u32 format version (1 or 2), u64 epoch, u32 vnodes_per_weight,
 *   u32 count, then per member in index order: u32 weight, u16 id_len, id bytes,
 *   u16 addr_len, addr bytes; in version 2 also u8 has_tokens (0 or 1) and, when 1,
 *   u32 n_tokens (1..HASHRING_MAX_POINTS) and n_tokens u64 tokens, strictly ascending.
 * Version 1 is written when no member has explicit tokens (so such rings serialize
 * exactly as before tokens existed), version 2 otherwise; both parse, and a version 2
 * ring without tokens is refused (one encoding per ring). Tokens cost 8 bytes a point:
 * 80 KB for 10 members of 1000 vnodes.
 * hashring_serialize: with buf NULL or too small, sets *ret_len to the size needed and
 * returns RESOURCE_EXHAUSTED (OK when buf fits). hashring_parse rebuilds an identical
 * ring (same epoch, same lookups); PARSE on any malformed or truncated input. */
ps_status hashring_serialize(const hashring *ring, void *buf, size_t cap, size_t *ret_len);
ps_status hashring_parse(const void *buf, size_t len, hashring **ret_ring);

#endif
