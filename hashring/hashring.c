/* hashring.c: the consistent-hash ring (see hashring.h for the contract).
 *
 * Why it is built this way: lookups are the hot path of every client request, and
 * membership changes are rare, so every change rebuilds flat, read-only lookup tables
 * from scratch and a lookup touches as little memory as possible:
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
 * A vnode's position is XXH3-64 of the node id bytes, one 0 byte (ids never contain
 * one, so the encoding is unambiguous), and the vnode number as 4 little-endian bytes.
 * Vnode numbers run 0..weight*vnodes_per_weight-1, so raising a weight keeps a node's
 * old points. Members are kept sorted by id (strcmp order): the dense index of a member
 * is its rank, the same in every process that knows the same members.
 */
#define XXH_INLINE_ALL /* the key hash is on the hot path: let the compiler inline it */
#include <xxhash.h>

#include "hashring.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ------------------------------------------------------------------------------------ */
/* Private types */

#define BUCKET_SCAN UINT16_MAX                /* bucket_owner: a point lies inside the bucket */
#define BUCKET_POINT_SCAN (UINT32_C(1) << 31) /* bucket_point: same, as a flag bit */
#define LIST_NONE UINT16_MAX                  /* unused slot of a point's owner list */
#define BUCKETS_PER_POINT 4                   /* bucket count >= this many times the points */
#define MIN_BUCKET_BITS 4

#define WIRE_MAGIC "PSRG"
#define WIRE_VERSION 1u
#define WIRE_HEADER_LEN (4 + 4 + 8 + 4 + 4)
#define WIRE_MEMBER_MIN_LEN (4 + 2 + 1 + 2 + 1) /* weight, id_len, 1-byte id, addr_len, ... */

/* One physical member, stored inline so that the member array is one allocation. */
typedef struct hashring_member {
    uint32_t weight;                  /* >= 1 */
    uint32_t id_len;                  /* strlen(id), 1..HASHRING_ID_MAX */
    uint32_t addr_len;                /* strlen(addr), 1..HASHRING_ADDR_MAX */
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

/* Tables of the empty ring: one bucket (shift 63 gives index 0 or 1), both "scan". */
static const uint16_t empty_bucket_owner[2] = {BUCKET_SCAN, BUCKET_SCAN};
static const uint32_t empty_bucket_point[2] = {BUCKET_POINT_SCAN, BUCKET_POINT_SCAN};
static const uint64_t empty_point_hash[1] = {UINT64_MAX};

/* ------------------------------------------------------------------------------------ */
/* Index construction */

static void index_free(hashring_index *ix) {
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

/* Total vnodes of a member set, or UINT64_MAX past HASHRING_MAX_POINTS. */
static uint64_t total_points(const hashring_member *members, uint32_t count, uint32_t vpw) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        total += (uint64_t)members[i].weight * vpw; /* < 2^64: both factors < 2^32 */
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
static ps_status index_build(const hashring_member *members, uint32_t count, uint32_t vpw,
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
        const uint32_t nv = members[i].weight * vpw; /* fits: total <= MAX_POINTS */
        for (uint32_t v = 0; v < nv; v++) {
            points[k].hash = vnode_hash(&members[i], v);
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
    index_free(ix);
    return st;
}

/* Points the ring's hot fields at ix (or at the empty tables) and takes ownership. */
static void ring_install_index(hashring *ring, hashring_index *ix) {
    index_free(ring->index);
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

/* Builds the index for the current members and installs it; the ring is unchanged on
 * failure. */
static ps_status ring_rebuild(hashring *ring) {
    hashring_index *ix = NULL;
    if (ring->count > 0) {
        ps_status st = index_build(ring->members, ring->count, ring->vnodes_per_weight, &ix);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    ring_install_index(ring, ix);
    return PS_STATUS_OK;
}

static ps_status ring_reserve(hashring *ring, uint32_t want) {
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
    index_free(ring->index);
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
    st = ring_reserve(copy, ring->count);
    if (st != PS_STATUS_OK) {
        goto fail_copy;
    }
    if (ring->count > 0) {
        memcpy(copy->members, ring->members, (size_t)ring->count * sizeof(*ring->members));
    }
    copy->count = ring->count;
    copy->epoch = ring->epoch;
    st = ring_rebuild(copy); /* rebuilding is deterministic: same tables as the source */
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

ps_status hashring_add(hashring *ring, const char *id, const char *addr, uint32_t weight) {
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
    if (ring->count >= HASHRING_MAX_NODES ||
        (uint64_t)ring->npoints + (uint64_t)weight * ring->vnodes_per_weight >
            HASHRING_MAX_POINTS) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    ps_status st = ring_reserve(ring, ring->count + 1);
    if (st != PS_STATUS_OK) {
        return st;
    }
    hashring_member *m = &ring->members[pos];
    memmove(m + 1, m, (size_t)(ring->count - pos) * sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->weight = weight;
    m->id_len = (uint32_t)id_len;
    m->addr_len = (uint32_t)addr_len;
    memcpy(m->id, id, id_len);
    memcpy(m->addr, addr, addr_len);
    ring->count++;

    st = ring_rebuild(ring);
    if (st != PS_STATUS_OK) { /* undo the insertion */
        ring->count--;
        memmove(m, m + 1, (size_t)(ring->count - pos) * sizeof(*m));
        return st;
    }
    ring->epoch++;
    return PS_STATUS_OK;
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

    ps_status st = ring_rebuild(ring);
    if (st != PS_STATUS_OK) { /* undo the removal */
        memmove(m + 1, m, (size_t)(ring->count - pos) * sizeof(*m));
        *m = saved;
        ring->count++;
        return st;
    }
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

/* ------------------------------------------------------------------------------------ */
/* Serialized form */

static unsigned char *put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
    return p + 2;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) {
        p[k] = (unsigned char)((v >> (8 * k)) & 0xff);
    }
    return p + 4;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v) {
    for (int k = 0; k < 8; k++) {
        p[k] = (unsigned char)((v >> (8 * k)) & 0xff);
    }
    return p + 8;
}

ps_status hashring_serialize(const hashring *ring, void *buf, size_t cap, size_t *ret_len) {
    if (ring == NULL || ret_len == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    size_t need = WIRE_HEADER_LEN;
    for (uint32_t i = 0; i < ring->count; i++) {
        need += 4 + 2 + ring->members[i].id_len + 2 + ring->members[i].addr_len;
    }
    *ret_len = need;
    if (buf == NULL || cap < need) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    unsigned char *p = buf;
    memcpy(p, WIRE_MAGIC, 4);
    p += 4;
    p = put_u32(p, WIRE_VERSION);
    p = put_u64(p, ring->epoch);
    p = put_u32(p, ring->vnodes_per_weight);
    p = put_u32(p, ring->count);
    for (uint32_t i = 0; i < ring->count; i++) {
        const hashring_member *m = &ring->members[i];
        p = put_u32(p, m->weight);
        p = put_u16(p, (uint16_t)m->id_len);
        memcpy(p, m->id, m->id_len);
        p += m->id_len;
        p = put_u16(p, (uint16_t)m->addr_len);
        memcpy(p, m->addr, m->addr_len);
        p += m->addr_len;
    }
    return PS_STATUS_OK;
}

/* A bounds-checked little-endian reader: every get fails instead of reading past end. */
typedef struct wire_reader {
    const unsigned char *p;
    size_t left;
} wire_reader;

static bool get_bytes(wire_reader *r, void *out, size_t len) {
    if (r->left < len) {
        return false;
    }
    memcpy(out, r->p, len);
    r->p += len;
    r->left -= len;
    return true;
}

static bool get_uint(wire_reader *r, size_t width, uint64_t *ret_v) {
    unsigned char b[8];
    if (!get_bytes(r, b, width)) {
        return false;
    }
    uint64_t v = 0;
    for (size_t k = width; k-- > 0;) {
        v = (v << 8) | b[k];
    }
    *ret_v = v;
    return true;
}

/* A length-prefixed (u16) string of 1..max bytes without NUL, copied NUL-terminated. */
static bool get_string(wire_reader *r, size_t max, char *out, uint32_t *ret_len) {
    uint64_t len;
    if (!get_uint(r, 2, &len) || len == 0 || len > max || !get_bytes(r, out, len)) {
        return false;
    }
    if (memchr(out, 0, len) != NULL) {
        return false;
    }
    out[len] = 0;
    *ret_len = (uint32_t)len;
    return true;
}

ps_status hashring_parse(const void *buf, size_t len, hashring **ret_ring) {
    if (ret_ring == NULL || (buf == NULL && len > 0)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    wire_reader r = {.p = buf, .left = len};
    char magic[4];
    uint64_t version, epoch, vpw, count;
    if (!get_bytes(&r, magic, 4) || memcmp(magic, WIRE_MAGIC, 4) != 0 ||
        !get_uint(&r, 4, &version) || version != WIRE_VERSION || !get_uint(&r, 8, &epoch) ||
        !get_uint(&r, 4, &vpw) || vpw == 0 || vpw > HASHRING_MAX_POINTS ||
        !get_uint(&r, 4, &count) || count > HASHRING_MAX_NODES ||
        count > r.left / WIRE_MEMBER_MIN_LEN) {
        return PS_STATUS_PARSE;
    }

    hashring *ring = NULL;
    ps_status st = hashring_create((uint32_t)vpw, &ring);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = ring_reserve(ring, (uint32_t)count);
    if (st != PS_STATUS_OK) {
        goto fail_ring;
    }
    st = PS_STATUS_PARSE;
    uint64_t points = 0;
    for (uint32_t i = 0; i < count; i++) {
        hashring_member *m = &ring->members[i];
        uint64_t weight;
        memset(m, 0, sizeof(*m));
        if (!get_uint(&r, 4, &weight) || weight == 0 ||
            !get_string(&r, HASHRING_ID_MAX, m->id, &m->id_len) ||
            !get_string(&r, HASHRING_ADDR_MAX, m->addr, &m->addr_len)) {
            goto fail_ring;
        }
        m->weight = (uint32_t)weight;
        /* index order is id order: strictly increasing, which also rules out duplicates */
        if (i > 0 && strcmp(ring->members[i - 1].id, m->id) >= 0) {
            goto fail_ring;
        }
        points += weight * vpw;
        if (points > HASHRING_MAX_POINTS) {
            goto fail_ring;
        }
        ring->count = i + 1;
    }
    if (r.left != 0) { /* trailing bytes */
        goto fail_ring;
    }
    st = ring_rebuild(ring);
    if (st != PS_STATUS_OK) {
        goto fail_ring;
    }
    ring->epoch = epoch;
    *ret_ring = ring;
    return PS_STATUS_OK;

fail_ring:
    hashring_destroy(ring);
    return st;
}
