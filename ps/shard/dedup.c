/* dedup.c: recent request ids and the keys they applied (see dedup.h). A chained hash
 * table of requests by id, each with its keys in an open-addressing set (linear
 * probing, at most 3/4 full), and a FIFO of the requests in the order first seen, which
 * the bound trims. A set, not a sorted array: one large push arrives as many calls
 * with the same request id (a million rows in 64 Ki-key calls), and each call looks up
 * and adds its keys; a sorted array made every call copy and re-sort all the keys
 * before it (quadratic: it took a third of a shard's time in sparse pushes). */
#include "dedup.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct request {
    uint64_t id;
    uint64_t pos;    /* the largest position its keys were applied at */
    uint64_t *slots; /* cap slots, 0 = empty (the key 0 is has_zero) */
    size_t n, cap;   /* distinct keys (has_zero included); slots, a power of two or 0 */
    bool has_zero;
    struct request *chain;         /* next in its bucket */
    struct request *older, *newer; /* the FIFO */
} request;

struct dedup {
    pthread_mutex_t lock;
    uint64_t max_keys;
    request **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_requests;
    uint64_t n_keys, forgotten;
    request *oldest, *newest;
};

static size_t bucket_of(const dedup *d, uint64_t id) {
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (d->n_buckets - 1);
}

ps_status dedup_create(uint64_t max_keys, dedup **ret) {
    dedup *d = calloc(1, sizeof *d);
    if (!d)
        return PS_STATUS_NO_MEMORY;
    d->max_keys = max_keys ? max_keys : DEDUP_DEFAULT_MAX_KEYS;
    d->n_buckets = 64;
    d->buckets = calloc(d->n_buckets, sizeof *d->buckets);
    if (!d->buckets || pthread_mutex_init(&d->lock, NULL) != 0) {
        free(d->buckets);
        free(d);
        return PS_STATUS_NO_MEMORY;
    }
    *ret = d;
    return PS_STATUS_OK;
}

void dedup_destroy(dedup *d) {
    if (!d)
        return;
    for (request *r = d->oldest; r;) {
        request *next = r->newer;
        free(r->slots);
        free(r);
        r = next;
    }
    free(d->buckets);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static request *find_locked(const dedup *d, uint64_t id) {
    for (request *r = d->buckets[bucket_of(d, id)]; r; r = r->chain)
        if (r->id == id)
            return r;
    return NULL;
}

static size_t slot_of(uint64_t key, size_t cap) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static bool has_key(const request *r, uint64_t key) {
    if (key == 0)
        return r->has_zero;
    if (r->cap == 0)
        return false;
    for (size_t i = slot_of(key, r->cap);; i = (i + 1) & (r->cap - 1)) {
        if (r->slots[i] == key)
            return true;
        if (r->slots[i] == 0)
            return false;
    }
}

/* Adds key (not 0) to slots (cap, a power of two, with room); true when it was new. */
static bool slot_add(uint64_t *slots, size_t cap, uint64_t key) {
    for (size_t i = slot_of(key, cap);; i = (i + 1) & (cap - 1)) {
        if (slots[i] == key)
            return false;
        if (slots[i] == 0) {
            slots[i] = key;
            return true;
        }
    }
}

size_t dedup_lookup(dedup *d, uint64_t id, size_t n, const uint64_t *keys, bool *ret_applied,
                    uint64_t *ret_pos) {
    size_t found = 0;
    uint64_t pos = 0;
    pthread_mutex_lock(&d->lock);
    const request *r = id ? find_locked(d, id) : NULL;
    for (size_t i = 0; i < n; i++) {
        bool hit = r && has_key(r, keys[i]);
        if (ret_applied)
            ret_applied[i] = hit;
        found += hit;
    }
    if (found && r)
        pos = r->pos;
    pthread_mutex_unlock(&d->lock);
    if (ret_pos)
        *ret_pos = pos;
    return found;
}

/* Unlinks and frees the oldest request (lock held). */
static void forget_oldest_locked(dedup *d) {
    request *r = d->oldest;
    request **pp = &d->buckets[bucket_of(d, r->id)];
    while (*pp != r)
        pp = &(*pp)->chain;
    *pp = r->chain;
    d->oldest = r->newer;
    if (d->oldest)
        d->oldest->older = NULL;
    else
        d->newest = NULL;
    d->n_keys -= r->n;
    d->n_requests--;
    d->forgotten++;
    free(r->slots);
    free(r);
}

/* Doubles the bucket table when it is full (lock held); a failure keeps the old one. */
static void grow_locked(dedup *d) {
    if (d->n_requests < d->n_buckets)
        return;
    size_t n = d->n_buckets * 2;
    request **b = calloc(n, sizeof *b);
    if (!b)
        return;
    request **old = d->buckets;
    size_t old_n = d->n_buckets;
    d->buckets = b;
    d->n_buckets = n;
    for (size_t i = 0; i < old_n; i++) {
        for (request *r = old[i]; r;) {
            request *next = r->chain;
            size_t k = bucket_of(d, r->id);
            r->chain = b[k];
            b[k] = r;
            r = next;
        }
    }
    free(old);
}

/* Adds keys[0..n) to r's set, growing it first so that it stays at most 3/4 full
 * (lock held). NO_MEMORY keeps r as it was. */
static ps_status add_keys_locked(dedup *d, request *r, size_t n, const uint64_t *keys) {
    size_t want = r->n + n, cap = r->cap ? r->cap : 16;
    while (cap / 4 * 3 < want)
        cap *= 2;
    if (cap != r->cap) {
        uint64_t *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return PS_STATUS_NO_MEMORY;
        for (size_t i = 0; i < r->cap; i++)
            if (r->slots[i])
                (void)slot_add(grown, cap, r->slots[i]);
        free(r->slots);
        r->slots = grown;
        r->cap = cap;
    }
    size_t added = 0;
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == 0) {
            added += !r->has_zero;
            r->has_zero = true;
        } else {
            added += slot_add(r->slots, r->cap, keys[i]);
        }
    }
    r->n += added;
    d->n_keys += added;
    return PS_STATUS_OK;
}

ps_status dedup_record(dedup *d, uint64_t id, size_t n, const uint64_t *keys, uint64_t pos) {
    if (!id || n == 0)
        return PS_STATUS_OK;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&d->lock);
    request *r = find_locked(d, id);
    if (!r) {
        grow_locked(d);
        if (!(r = calloc(1, sizeof *r))) {
            st = PS_STATUS_NO_MEMORY;
            goto out;
        }
        r->id = id;
        size_t k = bucket_of(d, id);
        r->chain = d->buckets[k];
        d->buckets[k] = r;
        r->older = d->newest;
        if (d->newest)
            d->newest->newer = r;
        else
            d->oldest = r;
        d->newest = r;
        d->n_requests++;
    }
    if ((st = add_keys_locked(d, r, n, keys)) != PS_STATUS_OK)
        goto out;
    if (pos > r->pos)
        r->pos = pos;
    while (d->n_keys > d->max_keys && d->oldest != r)
        forget_oldest_locked(d);
out:
    pthread_mutex_unlock(&d->lock);
    return st;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

ps_status dedup_export(dedup *d, uint64_t max_pos, dedup_entry **ret_entries, size_t *ret_n) {
    pthread_mutex_lock(&d->lock);
    size_t n = 0, keys = 0;
    for (const request *r = d->oldest; r; r = r->newer)
        if (r->pos <= max_pos) {
            n++;
            keys += r->n;
        }
    /* bounded by max_keys (and the requests by their keys): no overflow */
    dedup_entry *out = malloc(n * sizeof *out + keys * sizeof(uint64_t) + 1);
    if (!out) {
        pthread_mutex_unlock(&d->lock);
        return PS_STATUS_NO_MEMORY;
    }
    uint64_t *at = (uint64_t *)(out + n);
    size_t i = 0;
    for (const request *r = d->oldest; r; r = r->newer) {
        if (r->pos > max_pos)
            continue;
        size_t k = 0;
        if (r->has_zero)
            at[k++] = 0;
        for (size_t j = 0; j < r->cap; j++)
            if (r->slots[j])
                at[k++] = r->slots[j];
        out[i++] = (dedup_entry){.id = r->id, .pos = r->pos, .n = k, .keys = at};
        at += k;
    }
    pthread_mutex_unlock(&d->lock);
    for (size_t j = 0; j < n; j++) /* sorted outside the lock: pushes wait on it */
        qsort((uint64_t *)out[j].keys, out[j].n, sizeof *out[j].keys, cmp_u64);
    *ret_entries = out;
    *ret_n = n;
    return PS_STATUS_OK;
}

void dedup_get_stats(dedup *d, dedup_stats *ret) {
    pthread_mutex_lock(&d->lock);
    ret->requests = d->n_requests;
    ret->keys = d->n_keys;
    ret->forgotten = d->forgotten;
    pthread_mutex_unlock(&d->lock);
}
