/* dedup.c: recent request ids and the keys they applied (see dedup.h). A chained hash
 * table of requests by id; each request keeps its keys as an append-only list and, once
 * a lookup needs it, an open-addressing set over them (linear probing, at most half
 * full, built from the list incrementally: keys[0..indexed) are in it); a FIFO of the
 * requests in the order first seen, which the bound trims. Recording a call is an
 * append; a set is built only for requests that are looked up (retries, and calls not
 * marked as first tries), so the common path of a large push pays a copy of its keys
 * instead of a probe into a table larger than the caches for every key, three times. */
#include "dedup.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* Keys recorded at one journal position: keys[previous segment's end..end), by the
 * dedup_record call numbered seq. */
typedef struct segment {
    uint64_t pos;
    uint64_t seq;
    size_t end;
} segment;

typedef struct request {
    uint64_t id;
    uint64_t pos;   /* the largest position its keys were applied at */
    uint64_t *keys; /* the keys recorded, n of cap_keys, in the order recorded */
    size_t n, cap_keys, indexed;
    segment *segs; /* where each position's keys are: n_segs of cap_segs */
    size_t n_segs, cap_segs;
    uint64_t *slots; /* the set over keys[0..indexed): cap slots, 0 = empty (the key 0 is
                        has_zero); NULL until a lookup needs it */
    size_t cap;      /* slots, a power of two or 0 */
    bool has_zero;
    bool retried;          /* a call of it came that was not a first try: look every call up */
    int64_t first_ms;      /* when it was first recorded (ps_now_ms) */
    uint64_t swept;        /* the marks (dedup_forget) up to this number are applied to it */
    struct request *chain; /* next in its bucket */
    struct request *older, *newer; /* the FIFO */
} request;

/* Keys an image replaced (dedup_forget), each with the number of the forget: a key
 * recorded by a call numbered lower no longer counts. Open addressing, at most half
 * full; the key 0 apart. */
typedef struct tombs {
    uint64_t *keys, *seqs;
    size_t cap, n; /* cap: a power of two or 0 */
    uint64_t zero_seq;
} tombs;

struct dedup {
    pthread_mutex_t lock;
    uint64_t max_keys;
    request **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_requests;
    uint64_t n_keys, forgotten, forgotten_young;
    int64_t warned_ms; /* the last warning that the memory reaches back too little */
    request *oldest, *newest;
    uint64_t seq;        /* numbers dedup_record and dedup_forget calls, in order */
    uint64_t forget_seq; /* the last dedup_forget's number */
    tombs tombs;
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
    free(d->tombs.keys);
    free(d->tombs.seqs);
    for (request *r = d->oldest; r;) {
        request *next = r->newer;
        free(r->keys);
        free(r->segs);
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

/* How many keys ahead the batch loops prefetch their home slots: a set of a million
 * keys is far larger than the caches, and a probe that waits for memory costs ~100 ns;
 * with the slots of the next keys already on their way the loads overlap. */
#define DEDUP_PREFETCH 16u

/* Tombs kept at least before a sweep applies them (dedup_forget). */
#define DEDUP_TOMBS_MIN 4096u

static void prefetch_home(const uint64_t *slots, size_t cap, uint64_t key) {
    __builtin_prefetch(&slots[slot_of(key, cap)]);
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

/* Puts keys[indexed..n) into r's set, growing it first so that it stays at most half
 * full (lock held). NO_MEMORY keeps r as it was. */
static ps_status index_locked(request *r) {
    if (r->indexed == r->n)
        return PS_STATUS_OK;
    size_t want = r->n, cap = r->cap ? r->cap : 16;
    while (cap / 2 < want)
        cap *= 2;
    if (cap != r->cap) {
        uint64_t *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return PS_STATUS_NO_MEMORY;
        for (size_t i = 0; i < r->cap; i++) {
            if (i + DEDUP_PREFETCH < r->cap && r->slots[i + DEDUP_PREFETCH])
                prefetch_home(grown, cap, r->slots[i + DEDUP_PREFETCH]);
            if (r->slots[i])
                (void)slot_add(grown, cap, r->slots[i]);
        }
        free(r->slots);
        r->slots = grown;
        r->cap = cap;
    }
    for (size_t i = r->indexed; i < r->n; i++) {
        if (i + DEDUP_PREFETCH < r->n)
            prefetch_home(r->slots, r->cap, r->keys[i + DEDUP_PREFETCH]);
        if (r->keys[i])
            (void)slot_add(r->slots, r->cap, r->keys[i]);
        else
            r->has_zero = true;
    }
    r->indexed = r->n;
    return PS_STATUS_OK;
}

/* The number of the last dedup_forget of key (0: none since the tombs were swept). */
static uint64_t tomb_of(const tombs *t, uint64_t key) {
    if (key == 0)
        return t->zero_seq;
    if (t->n == 0)
        return 0;
    for (size_t i = slot_of(key, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->keys[i] == key)
            return t->seqs[i];
        if (t->keys[i] == 0)
            return 0;
    }
}

static void filter_locked(dedup *d, request *r);

/* Which of keys[0..n) r applied (lock held); see dedup_lookup. Without the memory for
 * r's set, the list is searched instead (slow, but no retry is ever wrongly applied). A
 * key an image replaced since r recorded it counts only if r recorded it again after:
 * the marks are applied to r first (once per dedup_forget since). */
static size_t lookup_locked(dedup *d, request *r, size_t n, const uint64_t *keys,
                            bool *ret_applied) {
    if (r->swept < d->forget_seq) /* (only requests older than the mark hold such keys) */
        filter_locked(d, r);
    bool indexed = index_locked(r) == PS_STATUS_OK;
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        bool hit = false;
        if (indexed) {
            if (r->cap && i + DEDUP_PREFETCH < n)
                prefetch_home(r->slots, r->cap, keys[i + DEDUP_PREFETCH]);
            hit = has_key(r, keys[i]);
        } else {
            for (size_t j = 0; j < r->n && !hit; j++)
                hit = r->keys[j] == keys[i];
        }
        if (ret_applied)
            ret_applied[i] = hit;
        found += hit;
    }
    return found;
}

size_t dedup_lookup(dedup *d, uint64_t id, size_t n, const uint64_t *keys, bool *ret_applied,
                    uint64_t *ret_pos) {
    size_t found = 0;
    uint64_t pos = 0;
    pthread_mutex_lock(&d->lock);
    request *r = id ? find_locked(d, id) : NULL;
    if (r)
        found = lookup_locked(d, r, n, keys, ret_applied);
    else if (ret_applied)
        memset(ret_applied, 0, n * sizeof *ret_applied);
    if (found)
        pos = r->pos;
    pthread_mutex_unlock(&d->lock);
    if (ret_pos)
        *ret_pos = pos;
    return found;
}

/* Unlinks and frees request r (lock held). */
static void unlink_locked(dedup *d, request *r) {
    request **pp = &d->buckets[bucket_of(d, r->id)];
    while (*pp != r)
        pp = &(*pp)->chain;
    *pp = r->chain;
    if (r->older)
        r->older->newer = r->newer;
    else
        d->oldest = r->newer;
    if (r->newer)
        r->newer->older = r->older;
    else
        d->newest = r->older;
    d->n_keys -= r->n;
    d->n_requests--;
    free(r->keys);
    free(r->segs);
    free(r->slots);
    free(r);
}

/* Forgets the oldest request for the bound (lock held). */
static void forget_oldest_locked(dedup *d) {
    int64_t now = ps_now_ms(), age = now - d->oldest->first_ms;
    unlink_locked(d, d->oldest);
    d->forgotten++;
    if (age >= DEDUP_SHORT_WINDOW_MS)
        return;
    d->forgotten_young++;
    if (d->warned_ms && now - d->warned_ms < 60000)
        return;
    d->warned_ms = now;
    PS_WARN("request-id memory (%llu keys) now reaches back only %lld ms: a push retried later "
            "than that may be applied twice; give the shard more (--dedup-mb)",
            (unsigned long long)d->max_keys, (long long)age);
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

/* Appends keys[0..n), applied at pos, to r's list (lock held). NO_MEMORY keeps r as it
 * was. */
static ps_status append_locked(dedup *d, request *r, size_t n, const uint64_t *keys, uint64_t pos) {
    bool same = r->n_segs && r->segs[r->n_segs - 1].pos == pos &&
                r->segs[r->n_segs - 1].seq > d->forget_seq;
    /* first sizes of 1: most requests are one call (the first reservation then fits
     * it exactly); a request recorded again grows by doubling */
    if (!ps_reserve((void **)&r->segs, &r->cap_segs, r->n_segs + 1, sizeof *r->segs, 1) ||
        !ps_reserve((void **)&r->keys, &r->cap_keys, r->n + n, sizeof *r->keys, 1))
        return PS_STATUS_NO_MEMORY;
    memcpy(r->keys + r->n, keys, n * sizeof *keys);
    r->n += n;
    d->n_keys += n;
    if (!same)
        r->segs[r->n_segs++] = (segment){.pos = pos, .seq = ++d->seq};
    r->segs[r->n_segs - 1].end = r->n;
    if (pos > r->pos)
        r->pos = pos;
    return PS_STATUS_OK;
}

/* The request with this id, made (and placed last in the FIFO) if new (lock held);
 * NULL without memory. */
static request *get_locked(dedup *d, uint64_t id) {
    request *r = find_locked(d, id);
    if (r)
        return r;
    grow_locked(d);
    if (!(r = calloc(1, sizeof *r)))
        return NULL;
    r->id = id;
    r->first_ms = ps_now_ms();
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
    return r;
}

size_t dedup_check(dedup *d, uint64_t id, size_t n, const uint64_t *keys, bool first_try) {
    if (!id)
        return 0;
    size_t found = 0;
    pthread_mutex_lock(&d->lock);
    request *r = first_try ? find_locked(d, id) : get_locked(d, id);
    if (r && !first_try)
        r->retried = true;
    if (r && r->retried) /* (no r: nothing of the request is remembered to find) */
        found = lookup_locked(d, r, n, keys, NULL);
    pthread_mutex_unlock(&d->lock);
    return found;
}

ps_status dedup_record(dedup *d, uint64_t id, size_t n, const uint64_t *keys, uint64_t pos) {
    if (!id || n == 0)
        return PS_STATUS_OK;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&d->lock);
    request *r = get_locked(d, id);
    if (!r) {
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    if ((st = append_locked(d, r, n, keys, pos)) != PS_STATUS_OK)
        goto out;
    while (d->n_keys + d->n_requests * DEDUP_REQUEST_KEYS > d->max_keys && d->oldest != r)
        forget_oldest_locked(d);
out:
    pthread_mutex_unlock(&d->lock);
    return st;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether key, recorded in r's segment s, still counts: no image replaced it since. */
static bool still_counts(const dedup *d, const request *r, size_t s, uint64_t key) {
    if (!d->tombs.n && !d->tombs.zero_seq)
        return true;
    uint64_t tomb = tomb_of(&d->tombs, key);
    return !tomb || r->segs[s].seq > tomb;
}

ps_status dedup_export(dedup *d, uint64_t max_pos, dedup_entry **ret_entries, size_t *ret_n) {
    pthread_mutex_lock(&d->lock);
    size_t n = 0, keys = 0; /* at most: keys an image replaced are left out below */
    for (const request *r = d->oldest; r; r = r->newer) {
        size_t k = 0, start = 0;
        for (size_t s = 0; s < r->n_segs; start = r->segs[s++].end)
            if (r->segs[s].pos <= max_pos)
                k += r->segs[s].end - start;
        n += k > 0;
        keys += k;
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
        size_t start = 0, m = 0;
        uint64_t pos = 0;
        for (size_t s = 0; s < r->n_segs; start = r->segs[s++].end) {
            if (r->segs[s].pos > max_pos)
                continue;
            size_t before = m;
            for (size_t j = start; j < r->segs[s].end; j++)
                if (still_counts(d, r, s, r->keys[j]))
                    at[m++] = r->keys[j];
            if (m > before && r->segs[s].pos > pos)
                pos = r->segs[s].pos;
        }
        if (!m)
            continue;
        out[i++] = (dedup_entry){.id = r->id, .pos = pos, .n = m, .keys = at};
        at += m;
    }
    n = i;
    pthread_mutex_unlock(&d->lock);
    for (size_t j = 0; j < n; j++) { /* sorted and made distinct outside the lock */
        uint64_t *k = (uint64_t *)out[j].keys;
        qsort(k, out[j].n, sizeof *k, cmp_u64);
        size_t m = 0;
        for (size_t x = 0; x < out[j].n; x++)
            if (m == 0 || k[m - 1] != k[x])
                k[m++] = k[x];
        out[j].n = m;
    }
    *ret_entries = out;
    *ret_n = n;
    return PS_STATUS_OK;
}

/* Drops from r the keys the marks say no longer count (lock held); its set is built
 * again when a lookup needs it. */
static void filter_locked(dedup *d, request *r) {
    r->swept = d->forget_seq;
    if (r->n_segs == 0 || r->segs[0].seq > d->forget_seq)
        return; /* recorded after every mark */
    size_t m = 0, start = 0, segs = 0;
    uint64_t pos = 0;
    for (size_t s = 0; s < r->n_segs; s++) {
        size_t before = m, end = r->segs[s].end;
        for (size_t j = start; j < end; j++)
            if (still_counts(d, r, s, r->keys[j]))
                r->keys[m++] = r->keys[j];
        start = end;
        if (m > before) {
            r->segs[segs] = r->segs[s];
            r->segs[segs++].end = m;
            if (r->segs[s].pos > pos)
                pos = r->segs[s].pos;
        }
    }
    if (m == r->n)
        return;
    d->n_keys -= r->n - m;
    r->n = m;
    r->n_segs = segs;
    r->pos = pos;
    free(r->slots);
    r->slots = NULL;
    r->cap = r->indexed = 0;
    r->has_zero = false;
}

/* Applies the marks to every request and drops them (lock held): what keeps the marks
 * bounded. Requests left without keys go. */
static void sweep_locked(dedup *d) {
    for (request *r = d->oldest; r;) {
        request *next = r->newer;
        filter_locked(d, r);
        if (r->n == 0 && !r->retried) /* (a retry's mark stays: see dedup_check) */
            unlink_locked(d, r);
        r = next;
    }
    free(d->tombs.keys);
    free(d->tombs.seqs);
    d->tombs = (tombs){0};
}

/* Sets key's tomb to seq (lock held); false without memory for a bigger table. */
static bool tomb_put(tombs *t, uint64_t key, uint64_t seq) {
    if (key == 0) {
        t->zero_seq = seq;
        return true;
    }
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        uint64_t *keys = calloc(cap, sizeof *keys), *seqs = calloc(cap, sizeof *seqs);
        if (!keys || !seqs) {
            free(keys);
            free(seqs);
            return false;
        }
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->keys[i])
                continue;
            size_t j = slot_of(t->keys[i], cap);
            while (keys[j])
                j = (j + 1) & (cap - 1);
            keys[j] = t->keys[i];
            seqs[j] = t->seqs[i];
        }
        free(t->keys);
        free(t->seqs);
        t->keys = keys;
        t->seqs = seqs;
        t->cap = cap;
    }
    size_t i = slot_of(key, t->cap);
    while (t->keys[i] && t->keys[i] != key)
        i = (i + 1) & (t->cap - 1);
    t->n += t->keys[i] == 0;
    t->keys[i] = key;
    t->seqs[i] = seq;
    return true;
}

void dedup_forget(dedup *d, size_t n, const uint64_t *keys) {
    pthread_mutex_lock(&d->lock);
    if (d->n_requests == 0 || n == 0) { /* nothing recorded to forget */
        pthread_mutex_unlock(&d->lock);
        return;
    }
    uint64_t seq = d->forget_seq = ++d->seq;
    for (size_t i = 0; i < n; i++) {
        if (!tomb_put(&d->tombs, keys[i], seq)) { /* no memory: apply what is there */
            sweep_locked(d);
            if (d->n_requests == 0 || !tomb_put(&d->tombs, keys[i], seq)) {
                /* still none: forget every request (a retry of one may be applied
                   again; keeping a wrong answer would lose it instead) */
                while (d->oldest)
                    forget_oldest_locked(d);
                break;
            }
        }
    }
    /* marks past a quarter of the keys remembered (or a small floor): applied to every
       request and dropped, so they take at most a quarter of the memory the keys do */
    if (d->tombs.n > DEDUP_TOMBS_MIN && d->tombs.n > d->n_keys / 4)
        sweep_locked(d);
    pthread_mutex_unlock(&d->lock);
}

void dedup_get_stats(dedup *d, dedup_stats *ret) {
    pthread_mutex_lock(&d->lock);
    ret->requests = d->n_requests;
    ret->keys = d->n_keys;
    ret->forgotten = d->forgotten;
    ret->max_keys = d->max_keys;
    ret->forgotten_young = d->forgotten_young;
    int64_t age = d->oldest ? ps_now_ms() - d->oldest->first_ms : 0;
    ret->window_ms = age > 0 ? (uint64_t)age : 0;
    pthread_mutex_unlock(&d->lock);
}
