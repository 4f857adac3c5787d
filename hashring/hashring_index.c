/* hashring_index.c: building the ring's lookup tables from its members (see
 * hashring_internal.h for the tables and hashring.c for why they look like this).
 *
 * A member's points are its explicit tokens when it has them, else its hashed
 * positions: XXH3-64 of the node id bytes, one 0 byte (ids never contain one, so the
 * encoding is unambiguous), and the vnode number as 4 little-endian bytes. Vnode
 * numbers run 0..weight*vnodes_per_weight-1, so raising a weight keeps a node's old
 * points.
 */
#define XXH_INLINE_ALL /* the same inlined XXH3 as the lookups in hashring.c */
#include <xxhash.h>

#include "hashring_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BUCKETS_PER_POINT 4 /* bucket count >= this many times the points */
#define MIN_BUCKET_BITS 4

void hashring_index_free(hashring_index *ix) {
    if (ix == NULL) {
        return;
    }
    free(ix->arena);
    free(ix);
}

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

/* The tables' memory. Lookups hit them at random, so past a few pages every lookup
 * would also miss the TLB: large arenas are 2 MiB aligned and marked for transparent
 * huge pages (a hint; without THP they are ordinary pages). */
#define ARENA_HUGE ((size_t)2 << 20)       /* huge page size and alignment */
#define ARENA_HUGE_MIN ((size_t)256 << 10) /* smaller arenas: plain malloc, no rounding */
static void *arena_alloc(size_t size) {
#ifdef MADV_HUGEPAGE
    if (size >= ARENA_HUGE_MIN) {
        void *p = NULL;
        const size_t rounded = (size + ARENA_HUGE - 1) & ~(size_t)(ARENA_HUGE - 1);
        if (posix_memalign(&p, ARENA_HUGE, rounded) != 0) {
            return NULL;
        }
        (void)madvise(p, rounded, MADV_HUGEPAGE);
        return p;
    }
#endif
    return malloc(size);
}

/* A vnode before sorting. */
typedef struct ring_point {
    uint64_t hash;
    uint32_t owner;
} ring_point;

/* Sorts points by (hash, owner): an LSD radix sort on the hash, 8 bits a pass, which
 * is stable, so points generated in owner order keep owner order among equal hashes.
 * Passes whose byte is the same in every point are skipped. O(n), where qsort took
 * most of the rebuild time. The result lands in `p` (tmp is scratch of n points). */
static void sort_points(ring_point *p, ring_point *tmp, uint32_t n) {
    uint32_t counts[8][256];
    memset(counts, 0, sizeof(counts));
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t b = 0; b < 8; b++) {
            counts[b][(p[i].hash >> (8 * b)) & 0xff]++;
        }
    }
    ring_point *src = p;
    ring_point *dst = tmp;
    for (uint32_t b = 0; b < 8; b++) {
        if (counts[b][(src[0].hash >> (8 * b)) & 0xff] == n) {
            continue;
        }
        uint32_t offset[256];
        uint32_t sum = 0;
        for (uint32_t d = 0; d < 256; d++) {
            offset[d] = sum;
            sum += counts[b][d];
        }
        for (uint32_t i = 0; i < n; i++) {
            dst[offset[(src[i].hash >> (8 * b)) & 0xff]++] = src[i];
        }
        ring_point *t = src;
        src = dst;
        dst = t;
    }
    if (src != p) {
        memcpy(p, src, (size_t)n * sizeof(*p));
    }
}

static uint64_t vnode_hash(const hashring_member *m, uint32_t vnode) {
    unsigned char buf[HASHRING_ID_MAX + 1 + 4];
    memcpy(buf, m->id, m->id_len);
    buf[m->id_len] = 0;
    buf[m->id_len + 1] = (unsigned char)(vnode & 0xff);
    buf[m->id_len + 2] = (unsigned char)((vnode >> 8) & 0xff);
    buf[m->id_len + 3] = (unsigned char)((vnode >> 16) & 0xff);
    buf[m->id_len + 4] = (unsigned char)((vnode >> 24) & 0xff);
    return XXH3_64bits(buf, (size_t)m->id_len + 5);
}

uint64_t hashring_vnode_hash(const char *id, uint32_t vnode) {
    hashring_member m;
    m.id_len = (uint32_t)strnlen(id, HASHRING_ID_MAX);
    memcpy(m.id, id, m.id_len);
    return vnode_hash(&m, vnode);
}

/* Total vnodes of a member set, or UINT64_MAX past HASHRING_MAX_POINTS. */
static uint64_t total_points(const hashring_member *members, uint32_t count, uint32_t vpw) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        total += hashring_member_points(&members[i], vpw); /* each < 2^64: factors < 2^32 */
        if (total > HASHRING_MAX_POINTS) {
            return UINT64_MAX;
        }
    }
    return total;
}

/* Appends owner o to list (of *len entries) unless present. */
static void list_add_distinct(uint16_t *list, uint32_t *len, uint16_t o) {
    for (uint32_t k = 0; k < *len; k++) {
        if (list[k] == o) {
            return;
        }
    }
    list[(*len)++] = o;
}

/* For each point, the first nrep distinct owners clockwise from it. The last point's
 * list comes from a walk (with wrap); every other one from its successor's:
 * list(i) = owner(i) followed by list(i+1) without owner(i), cut to nrep. That is
 * O(n * nrep) whatever the weights, where a walk per point could be O(n^2). */
static void build_lists(hashring_index *ix) {
    const uint32_t n = ix->npoints;
    const uint32_t nrep = ix->nreplicas;
    uint16_t *lists = ix->point_lists;

    for (size_t k = 0; k < (size_t)n * HASHRING_MAX_REPLICAS; k++) {
        lists[k] = LIST_NONE;
    }
    uint16_t *last = lists + (size_t)(n - 1) * HASHRING_MAX_REPLICAS;
    uint32_t len = 0;
    for (uint32_t step = 0; step < n && len < nrep; step++) {
        list_add_distinct(last, &len, ix->point_owner[(n - 1 + step) % n]);
    }
    for (uint32_t i = n - 1; i-- > 0;) {
        uint16_t *cur = lists + (size_t)i * HASHRING_MAX_REPLICAS;
        const uint16_t *next = cur + HASHRING_MAX_REPLICAS;
        const uint16_t o = ix->point_owner[i];
        uint32_t out = 0;
        cur[out++] = o;
        for (uint32_t k = 0; k < nrep && out < nrep; k++) {
            if (next[k] != o) {
                cur[out++] = next[k];
            }
        }
    }
}

static void build_buckets(hashring_index *ix) {
    const uint32_t n = ix->npoints;
    uint32_t p = 0;
    for (uint64_t b = 0; b < ix->nbuckets; b++) {
        const uint64_t start = b << ix->shift;
        while (p < n && ix->point_hash[p] < start) {
            p++;
        }
        if (p == n) { /* no point at or after the start: wrap to the first point */
            ix->bucket_point[b] = 0;
            ix->bucket_owner[b] = ix->point_owner[0];
        } else if ((ix->point_hash[p] >> ix->shift) == b) { /* a point inside: scan */
            ix->bucket_point[b] = p | BUCKET_POINT_SCAN;
            ix->bucket_owner[b] = BUCKET_SCAN;
        } else { /* the whole bucket maps to point p */
            ix->bucket_point[b] = p;
            ix->bucket_owner[b] = ix->point_owner[p];
        }
    }
}

/* Builds the tables for a non-empty member set. NO_MEMORY, or RESOURCE_EXHAUSTED past
 * HASHRING_MAX_POINTS. */
ps_status hashring_index_build(const hashring_member *members, uint32_t count, uint32_t vpw,
                               hashring_index **ret_ix) {
    ps_status st = PS_STATUS_NO_MEMORY;
    ring_point *points = NULL;
    const uint64_t total = total_points(members, count, vpw);
    if (total == UINT64_MAX) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    const uint32_t n = (uint32_t)total;

    hashring_index *ix = calloc(1, sizeof(*ix));
    if (ix == NULL) {
        goto fail;
    }
    ix->npoints = n;
    ix->nreplicas = count < HASHRING_MAX_REPLICAS ? count : HASHRING_MAX_REPLICAS;
    uint32_t bits = MIN_BUCKET_BITS;
    while ((UINT64_C(1) << bits) < (uint64_t)n * BUCKETS_PER_POINT) {
        bits++;
    }
    ix->nbuckets = UINT64_C(1) << bits;
    ix->shift = 64 - bits;

    points = malloc(2 * (size_t)n * sizeof(*points)); /* the points, then sort scratch */
    /* one arena, tables in the order a lookup uses them, each 64-byte aligned */
    const size_t sz_bucket_owner = align64((size_t)ix->nbuckets * sizeof(*ix->bucket_owner));
    const size_t sz_bucket_point = align64((size_t)ix->nbuckets * sizeof(*ix->bucket_point));
    const size_t sz_point_hash = align64(((size_t)n + 1) * sizeof(*ix->point_hash));
    const size_t sz_point_owner = align64((size_t)n * sizeof(*ix->point_owner));
    const size_t sz_point_lists =
        align64((size_t)n * HASHRING_MAX_REPLICAS * sizeof(*ix->point_lists));
    unsigned char *arena = arena_alloc(sz_bucket_owner + sz_bucket_point + sz_point_hash +
                                       sz_point_owner + sz_point_lists);
    if (points == NULL || arena == NULL) {
        goto fail;
    }
    ix->arena = arena;
    ix->bucket_owner = (uint16_t *)arena;
    arena += sz_bucket_owner;
    ix->bucket_point = (uint32_t *)arena;
    arena += sz_bucket_point;
    ix->point_hash = (uint64_t *)arena;
    arena += sz_point_hash;
    ix->point_owner = (uint16_t *)arena;
    arena += sz_point_owner;
    ix->point_lists = (uint16_t *)arena;

    size_t k = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint32_t nv = (uint32_t)hashring_member_points(&members[i], vpw); /* fits */
        for (uint32_t v = 0; v < nv; v++) {
            points[k].hash = members[i].tokens ? members[i].tokens[v] : vnode_hash(&members[i], v);
            points[k].owner = i;
            k++;
        }
    }
    sort_points(points, points + n, n);
    for (uint32_t i = 0; i < n; i++) {
        ix->point_hash[i] = points[i].hash;
        ix->point_owner[i] = (uint16_t)points[i].owner;
    }
    ix->point_hash[n] = UINT64_MAX;
    free(points);
    points = NULL;

    build_lists(ix);
    build_buckets(ix);
    *ret_ix = ix;
    return PS_STATUS_OK;

fail:
    free(points);
    hashring_index_free(ix);
    return st;
}
