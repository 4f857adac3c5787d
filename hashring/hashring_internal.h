/* hashring_internal.h: what the hashring's source files share, and nothing else uses:
 * the ring's struct, its members, the lookup tables built from them, and the helpers
 * that rebuild them. Other modules use hashring.h.
 *
 * The ring is split over files by job: hashring.c (lifecycle, membership, lookups),
 * hashring_index.c (building the lookup tables), hashring_wire.c (the serialized
 * form), hashring_ownership.c (who owns how much of the circle). The lookup path
 * (hashring_primary, hashring_owners) stays in hashring.c next to the struct layout it
 * depends on.
 */
#ifndef PS_HASHRING_INTERNAL_H
#define PS_HASHRING_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "hashring.h"

#define BUCKET_SCAN UINT16_MAX                /* bucket_owner: a point lies inside the bucket */
#define BUCKET_POINT_SCAN (UINT32_C(1) << 31) /* bucket_point: same, as a flag bit */
#define LIST_NONE UINT16_MAX                  /* unused slot of a point's owner list */

/* One physical member, stored inline so that the member array is one allocation. */
typedef struct hashring_member {
    uint32_t weight;                  /* >= 1 */
    uint32_t id_len;                  /* strlen(id), 1..HASHRING_ID_MAX */
    uint32_t addr_len;                /* strlen(addr), 1..HASHRING_ADDR_MAX */
    uint64_t *tokens;                 /* explicit positions, strictly ascending, owned by the member
                                         entry; NULL = hashed positions */
    uint32_t n_tokens;                /* how many (1..HASHRING_MAX_POINTS); 0 without tokens */
    char id[HASHRING_ID_MAX + 1];     /* NUL-terminated */
    char addr[HASHRING_ADDR_MAX + 1]; /* NUL-terminated */
} hashring_member;

/* The lookup tables built from one member set; owned by the ring, replaced whole. */
typedef struct hashring_index {
    uint32_t npoints;       /* n: total vnodes */
    uint32_t nreplicas;     /* min(HASHRING_MAX_REPLICAS, node count) */
    uint32_t shift;         /* 64 - log2(bucket count) */
    uint64_t nbuckets;      /* B */
    uint64_t *point_hash;   /* [n + 1], sorted, sentinel UINT64_MAX at [n] */
    uint16_t *point_owner;  /* [n] */
    uint16_t *point_lists;  /* [n * HASHRING_MAX_REPLICAS] */
    uint16_t *bucket_owner; /* [B] owner, or BUCKET_SCAN */
    uint32_t *bucket_point; /* [B] first point at/after bucket start, | BUCKET_POINT_SCAN */
    void *arena;            /* one allocation holding all the tables above */
} hashring_index;

struct hashring {
    /* Hot lookup fields first, copied from `index` so a lookup reads one cache line of
     * the ring and then the tables. For an empty ring they point at static tables that
     * send every lookup to the scan path, which answers "no owner". */
    const uint16_t *bucket_owner;
    const uint32_t *bucket_point;
    const uint64_t *point_hash;
    const uint16_t *point_owner;
    const uint16_t *point_lists;
    uint32_t shift;
    uint32_t npoints;
    uint32_t nreplicas;

    uint32_t count;    /* members */
    uint32_t capacity; /* allocated members */
    uint32_t vnodes_per_weight;
    uint64_t epoch;
    hashring_member *members; /* [capacity], sorted by id */
    hashring_index *index;    /* NULL when the ring is empty */
};

/* ------------------------------------------------------- hashring_index.c --- */

/* Builds the tables for a non-empty member set. NO_MEMORY, or RESOURCE_EXHAUSTED past
 * HASHRING_MAX_POINTS. */
ps_status hashring_index_build(const hashring_member *members, uint32_t count, uint32_t vpw,
                               hashring_index **ret_ix);
void hashring_index_free(hashring_index *ix); /* accepts NULL */

/* ------------------------------------------------------------- hashring.c --- */

/* Builds the index for the current members and installs it; the ring is unchanged on
 * failure. */
ps_status hashring_rebuild(hashring *ring);
/* Room for `want` members (NO_MEMORY). */
ps_status hashring_reserve(hashring *ring, uint32_t want);
/* True when a member has explicit tokens. */
bool hashring_has_tokens(const hashring *ring);
/* A member's points: its tokens, or weight * vpw hashed positions (< 2^64). */
uint64_t hashring_member_points(const hashring_member *m, uint32_t vpw);

#endif
