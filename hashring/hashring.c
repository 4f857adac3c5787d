/* hashring.c: the consistent-hash ring: lifecycle, membership and lookups (see
 * hashring.h for the contract, hashring_internal.h for how the ring is split in files).
 *
 * Why it is built this way: lookups are the hot path of every client request, and
 * membership changes are rare, so every change rebuilds flat, read-only lookup tables
 * from scratch (hashring_index.c) and a lookup touches as little memory as possible:
 *
 *   point_hash[n + 1]   ring positions sorted by (hash, owner index); the extra last
 *                       entry is a UINT64_MAX sentinel that ends every scan.
 *   point_owner[n]      dense owner index (uint16) of each point.
 *   point_lists[n][8]   for each point, the first HASHRING_MAX_REPLICAS distinct owners
 *                       met clockwise from it (uint16), so owners(R) is one load + copy.
 *   bucket_owner[B]     one entry per 2^shift slice of the hash space (B = a power of two
 *                       >= 4n): the primary owner of every key in the slice when no
 *                       point falls inside it (most slices), else BUCKET_SCAN.
 *   bucket_point[B]     the first point at or after the slice start; its top bit says a
 *                       point falls inside the slice, so a key must scan from there.
 *
 * hashring_primary is therefore one hash of the key (by the caller), one 2-byte load
 * in the common case, and a scan of about one point otherwise. Node indices are uint16
 * and the number of points is bounded (HASHRING_MAX_NODES, HASHRING_MAX_POINTS), which
 * keeps the tables compact and lets bit 31 of bucket_point carry the scan flag.
 *
 * Members are kept sorted by id (strcmp order): the dense index of a member is its
 * rank, the same in every process that knows the same members. A member's explicit
 * tokens (if any) belong to its entry in the member array: removing, cloning and
 * destroying free or copy them with it.
 */
#define XXH_INLINE_ALL /* the key hash is on the hot path: let the compiler inline it */
#include <xxhash.h>

#include "hashring_internal.h"

#include <stdlib.h>
#include <string.h>

/* Tables of the empty ring: one bucket (shift 63 gives index 0 or 1), both "scan". */
static const uint16_t empty_bucket_owner[2] = {BUCKET_SCAN, BUCKET_SCAN};
static const uint32_t empty_bucket_point[2] = {BUCKET_POINT_SCAN, BUCKET_POINT_SCAN};
static const uint64_t empty_point_hash[1] = {UINT64_MAX};

/* ------------------------------------------------------------------------------------ */
/* Tables and members */
/* Points the ring's hot fields at ix (or at the empty tables) and takes ownership. */
static void ring_install_index(hashring *ring, hashring_index *ix) {
    hashring_index_free(ring->index);
    ring->index = ix;
    if (ix == NULL) {
        ring->bucket_owner = empty_bucket_owner;
        ring->bucket_point = empty_bucket_point;
        ring->point_hash = empty_point_hash;
        ring->point_owner = NULL;
        ring->point_lists = NULL;
        ring->shift = 63;
        ring->npoints = 0;
        ring->nreplicas = 0;
        return;
    }
    ring->bucket_owner = ix->bucket_owner;
    ring->bucket_point = ix->bucket_point;
    ring->point_hash = ix->point_hash;
    ring->point_owner = ix->point_owner;
    ring->point_lists = ix->point_lists;
    ring->shift = ix->shift;
    ring->npoints = ix->npoints;
    ring->nreplicas = ix->nreplicas;
}

ps_status hashring_rebuild(hashring *ring) {
    hashring_index *ix = NULL;
    if (ring->count > 0) {
        ps_status st =
            hashring_index_build(ring->members, ring->count, ring->vnodes_per_weight, &ix);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    ring_install_index(ring, ix);
    return PS_STATUS_OK;
}

ps_status hashring_reserve(hashring *ring, uint32_t want) {
    if (want <= ring->capacity) {
        return PS_STATUS_OK;
    }
    uint32_t cap = ring->capacity < 8 ? 8 : ring->capacity;
    while (cap < want) {
        cap = cap > HASHRING_MAX_NODES / 2 ? HASHRING_MAX_NODES : cap * 2;
    }
    hashring_member *m = realloc(ring->members, (size_t)cap * sizeof(*m));
    if (m == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ring->members = m;
    ring->capacity = cap;
    return PS_STATUS_OK;
}

/* Binary search by id: true and *ret_pos = its index when present, else false and
 * *ret_pos = where it would be inserted. */
static bool ring_search(const hashring *ring, const char *id, uint32_t *ret_pos) {
    uint32_t lo = 0;
    uint32_t hi = ring->count;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(ring->members[mid].id, id);
        if (c == 0) {
            *ret_pos = mid;
            return true;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *ret_pos = lo;
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* Lifecycle and membership */

ps_status hashring_create(uint32_t vnodes_per_weight, hashring **ret_ring) {
    if (ret_ring == NULL || vnodes_per_weight > HASHRING_MAX_POINTS) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    hashring *ring = calloc(1, sizeof(*ring));
    if (ring == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ring->vnodes_per_weight = vnodes_per_weight == 0 ? HASHRING_DEFAULT_VNODES : vnodes_per_weight;
    ring_install_index(ring, NULL);
    *ret_ring = ring;
    return PS_STATUS_OK;
}

void hashring_destroy(hashring *ring) {
    if (ring == NULL) {
        return;
    }
    hashring_index_free(ring->index);
    for (uint32_t i = 0; i < ring->count; i++) {
        free(ring->members[i].tokens);
    }
    free(ring->members);
    free(ring);
}

ps_status hashring_clone(const hashring *ring, hashring **ret_ring) {
    if (ring == NULL || ret_ring == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    hashring *copy = NULL;
    ps_status st = hashring_create(ring->vnodes_per_weight, &copy);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = hashring_reserve(copy, ring->count);
    if (st != PS_STATUS_OK) {
        goto fail_copy;
    }
    for (uint32_t i = 0; i < ring->count; i++) {
        hashring_member *m = &copy->members[i];
        *m = ring->members[i];
        copy->count = i + 1; /* from here hashring_destroy frees its tokens */
        if (m->tokens == NULL) {
            continue;
        }
        const size_t bytes = (size_t)m->n_tokens * sizeof(*m->tokens);
        m->tokens = malloc(bytes);
        if (m->tokens == NULL) {
            st = PS_STATUS_NO_MEMORY;
            goto fail_copy;
        }
        memcpy(m->tokens, ring->members[i].tokens, bytes);
    }
    copy->epoch = ring->epoch;
    st = hashring_rebuild(copy); /* rebuilding is deterministic: same tables as the source */
    if (st != PS_STATUS_OK) {
        goto fail_copy;
    }
    *ret_ring = copy;
    return PS_STATUS_OK;

fail_copy:
    hashring_destroy(copy);
    return st;
}

/* Length of s if it is 1..max bytes, else 0 (also for NULL). */
static size_t bounded_len(const char *s, size_t max) {
    if (s == NULL) {
        return 0;
    }
    const size_t len = strnlen(s, max + 1);
    return len > max ? 0 : len;
}

/* True when n tokens are strictly ascending. */
static bool tokens_ascending(const uint64_t *tokens, uint32_t n) {
    for (uint32_t i = 1; i < n; i++) {
        if (tokens[i] <= tokens[i - 1]) {
            return false;
        }
    }
    return true;
}

ps_status hashring_add_tokens(hashring *ring, const char *id, const char *addr, uint32_t weight,
                              const uint64_t *tokens, uint32_t n_tokens) {
    if (ring == NULL || weight == 0) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const size_t id_len = bounded_len(id, HASHRING_ID_MAX);
    const size_t addr_len = bounded_len(addr, HASHRING_ADDR_MAX);
    if (id_len == 0 || addr_len == 0) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint32_t pos;
    if (ring_search(ring, id, &pos)) {
        return PS_STATUS_ALREADY_EXISTS;
    }
    if (tokens != NULL && (n_tokens == 0 || !tokens_ascending(tokens, n_tokens))) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const uint64_t points = tokens != NULL ? n_tokens : (uint64_t)weight * ring->vnodes_per_weight;
    if (ring->count >= HASHRING_MAX_NODES ||
        (uint64_t)ring->npoints + points > HASHRING_MAX_POINTS) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    uint64_t *own = NULL;
    if (tokens != NULL) {
        own = malloc((size_t)n_tokens * sizeof(*own));
        if (own == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
        memcpy(own, tokens, (size_t)n_tokens * sizeof(*own));
    }
    ps_status st = hashring_reserve(ring, ring->count + 1);
    if (st != PS_STATUS_OK) {
        free(own);
        return st;
    }
    hashring_member *m = &ring->members[pos];
    memmove(m + 1, m, (size_t)(ring->count - pos) * sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->weight = weight;
    m->id_len = (uint32_t)id_len;
    m->addr_len = (uint32_t)addr_len;
    m->tokens = own;
    m->n_tokens = own != NULL ? n_tokens : 0;
    memcpy(m->id, id, id_len);
    memcpy(m->addr, addr, addr_len);
    ring->count++;

    st = hashring_rebuild(ring);
    if (st != PS_STATUS_OK) { /* undo the insertion */
        ring->count--;
        memmove(m, m + 1, (size_t)(ring->count - pos) * sizeof(*m));
        free(own);
        return st;
    }
    ring->epoch++;
    return PS_STATUS_OK;
}

ps_status hashring_add(hashring *ring, const char *id, const char *addr, uint32_t weight) {
    return hashring_add_tokens(ring, id, addr, weight, NULL, 0);
}

ps_status hashring_remove(hashring *ring, const char *id) {
    if (ring == NULL || id == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint32_t pos;
    if (!ring_search(ring, id, &pos)) {
        return PS_STATUS_NOT_FOUND;
    }
    hashring_member saved = ring->members[pos];
    hashring_member *m = &ring->members[pos];
    memmove(m, m + 1, (size_t)(ring->count - pos - 1) * sizeof(*m));
    ring->count--;

    ps_status st = hashring_rebuild(ring);
    if (st != PS_STATUS_OK) { /* undo the removal */
        memmove(m + 1, m, (size_t)(ring->count - pos) * sizeof(*m));
        *m = saved;
        ring->count++;
        return st;
    }
    free(saved.tokens);
    ring->epoch++;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Queries */

uint64_t hashring_epoch(const hashring *ring) {
    return ring == NULL ? 0 : ring->epoch;
}

void hashring_set_epoch(hashring *ring, uint64_t epoch) {
    if (ring != NULL) {
        ring->epoch = epoch;
    }
}

uint32_t hashring_node_count(const hashring *ring) {
    return ring == NULL ? 0 : ring->count;
}

uint32_t hashring_vnodes_per_weight(const hashring *ring) {
    return ring == NULL ? 0 : ring->vnodes_per_weight;
}

bool hashring_node_at(const hashring *ring, uint32_t index, hashring_node_info *ret_info) {
    if (ring == NULL || index >= ring->count || ret_info == NULL) {
        return false;
    }
    const hashring_member *m = &ring->members[index];
    ret_info->id = m->id;
    ret_info->addr = m->addr;
    ret_info->weight = m->weight;
    ret_info->index = index;
    ret_info->tokens = m->tokens;
    ret_info->n_tokens = m->n_tokens;
    return true;
}

bool hashring_find(const hashring *ring, const char *id, uint32_t *ret_index) {
    uint32_t pos;
    if (ring == NULL || id == NULL || !ring_search(ring, id, &pos)) {
        return false;
    }
    if (ret_index != NULL) {
        *ret_index = pos;
    }
    return true;
}

bool hashring_has_tokens(const hashring *ring) {
    for (uint32_t i = 0; ring != NULL && i < ring->count; i++) {
        if (ring->members[i].tokens != NULL) {
            return true;
        }
    }
    return false;
}

uint64_t hashring_member_points(const hashring_member *m, uint32_t vpw) {
    return m->tokens != NULL ? m->n_tokens : (uint64_t)m->weight * vpw;
}

uint32_t hashring_point_count(const hashring *ring) {
    return ring == NULL ? 0 : ring->npoints;
}

bool hashring_point_at(const hashring *ring, uint32_t i, uint64_t *ret_hash, uint32_t *ret_owner) {
    if (ring == NULL || i >= ring->npoints) {
        return false;
    }
    if (ret_hash != NULL) {
        *ret_hash = ring->point_hash[i];
    }
    if (ret_owner != NULL) {
        *ret_owner = ring->point_owner[i];
    }
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* Lookups: the hot path */

uint64_t hashring_hash(const void *data, size_t len) {
    return XXH3_64bits(data, len);
}

/* Index of the first point at or after key_hash, from a bucket with a point inside.
 * The sentinel UINT64_MAX at point_hash[n] ends the scan; reaching it wraps to 0. */
static inline uint32_t ring_scan(const hashring *ring, uint32_t start, uint64_t key_hash) {
    const uint64_t *ph = ring->point_hash;
    uint32_t i = start;
    while (ph[i] < key_hash) {
        i++;
    }
    return i == ring->npoints ? 0 : i;
}

uint32_t hashring_primary(const hashring *ring, uint64_t key_hash) {
    if (ring == NULL) {
        return UINT32_MAX;
    }
    const uint64_t b = key_hash >> ring->shift;
    const uint16_t owner = ring->bucket_owner[b];
    if (__builtin_expect(owner != BUCKET_SCAN, 1)) {
        return owner;
    }
    if (ring->npoints == 0) {
        return UINT32_MAX;
    }
    const uint32_t start = ring->bucket_point[b] & ~BUCKET_POINT_SCAN;
    return ring->point_owner[ring_scan(ring, start, key_hash)];
}

uint32_t hashring_owners(const hashring *ring, uint64_t key_hash, uint32_t r,
                         uint32_t *ret_owners) {
    if (ring == NULL) {
        return 0;
    }
    const uint32_t n = r < ring->nreplicas ? r : ring->nreplicas;
    if (n == 0 || ret_owners == NULL) {
        return 0;
    }
    const uint32_t e = ring->bucket_point[key_hash >> ring->shift];
    uint32_t i = e & ~BUCKET_POINT_SCAN;
    if (e & BUCKET_POINT_SCAN) {
        i = ring_scan(ring, i, key_hash);
    }
    const uint16_t *list = ring->point_lists + (size_t)i * HASHRING_MAX_REPLICAS;
    for (uint32_t k = 0; k < n; k++) {
        ret_owners[k] = list[k];
    }
    return n;
}
