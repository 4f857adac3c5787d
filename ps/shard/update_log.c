/* update_log.c: the bounded, reference-counted log of applied updates and the value
 * blocks it shares with the store (see update_log.h). A circular array of entry
 * pointers sized at creation, a byte budget, and a condition variable that readers
 * wait on for the next seq. */
#include "update_log.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "shard_limits.h"
#include "util.h"

#define UPDATE_LOG_DEFAULT_BYTES (64ull << 20)

struct update_log {
    pthread_mutex_t lock;
    pthread_cond_t grew;     /* broadcast on append and on stop */
    update_log_entry **ring; /* circular: `count` entries from `head`, seqs contiguous */
    size_t cap, head, count; /* cap = max_entries */
    uint64_t bytes;          /* held, by update_log_entry_bytes */
    uint64_t max_bytes;      /* budget */
    uint64_t last_seq;       /* seq of the newest entry (start_seq before any) */
    uint64_t gone_seq;       /* every seq <= this is not held (evicted, or before start) */
    bool stopping;           /* update_log_stop was called */
};

/* ------------------------------------------------------------------ blocks --- */

ps_status update_log_values_create(uint32_t len, update_log_values **ret_values) {
    update_log_values *v = malloc(sizeof *v + (size_t)len * sizeof(float));
    if (!v)
        return PS_STATUS_NO_MEMORY;
    atomic_init(&v->refs, 1);
    v->len = len;
    v->pad = 0;
    *ret_values = v;
    return PS_STATUS_OK;
}

void update_log_values_ref(update_log_values *v) {
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void update_log_values_unref(void *arg) {
    update_log_values *v = arg;
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        free(v);
}

/* ------------------------------------------------------------------ entries --- */

/* A push's entries in one allocation; freed when no entry is alive any more. */
struct update_log_batch {
    atomic_size_t live; /* entries whose refs are not 0, + 1 until appended */
    size_t n;
    update_log_entry entries[];
};

uint64_t update_log_entry_bytes(uint32_t len) {
    return sizeof(update_log_entry) + sizeof(update_log_values) + (uint64_t)len * sizeof(float);
}

ps_status update_log_batch_create(size_t n, update_log_batch **ret_batch) {
    update_log_batch *b = calloc(1, sizeof *b + n * sizeof(update_log_entry));
    if (!b)
        return PS_STATUS_NO_MEMORY;
    atomic_init(&b->live, 1);
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        atomic_init(&b->entries[i].refs, 0);
        b->entries[i].batch = b;
    }
    *ret_batch = b;
    return PS_STATUS_OK;
}

update_log_entry *update_log_batch_entry(update_log_batch *b, size_t i) {
    return &b->entries[i];
}

static void batch_release(update_log_batch *b) {
    if (atomic_fetch_sub_explicit(&b->live, 1, memory_order_acq_rel) == 1)
        free(b);
}

/* Releases the blocks of entries [from, n) that were never appended. */
static void batch_drop_unused(update_log_batch *b, size_t from) {
    for (size_t i = from; i < b->n; i++) {
        update_log_values_unref(b->entries[i].block);
        b->entries[i].block = NULL;
        b->entries[i].values = NULL;
    }
}

void update_log_batch_destroy(update_log_batch *b) {
    if (!b)
        return;
    batch_drop_unused(b, 0);
    batch_release(b);
}

void update_log_entry_set(update_log_entry *e, update_log_values *block) {
    update_log_values_ref(block);
    update_log_values_unref(e->block);
    e->block = block;
    e->values = block->data;
    e->len = block->len;
}

void update_log_entry_ref(update_log_entry *e) {
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void update_log_entry_unref(void *arg) {
    update_log_entry *e = arg;
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    update_log_values_unref(e->block);
    batch_release(e->batch);
}

/* ------------------------------------------------------------------ the log --- */

ps_status update_log_create(const update_log_opts *opts, update_log **ret_log) {
    update_log *l = calloc(1, sizeof *l);
    if (!l)
        return PS_STATUS_NO_MEMORY;
    l->max_bytes = opts && opts->max_bytes ? opts->max_bytes : UPDATE_LOG_DEFAULT_BYTES;
    l->cap = opts && opts->max_entries ? opts->max_entries : SHARD_LOG_MAX_ENTRIES;
    uint64_t fit = l->max_bytes / update_log_entry_bytes(1) + 1; /* more never fit the budget */
    if (l->cap > fit)
        l->cap = (size_t)fit;
    l->last_seq = l->gone_seq = opts ? opts->start_seq : 0;
    l->ring = calloc(l->cap, sizeof *l->ring);
    if (!l->ring)
        goto fail_ring;
    if (pthread_mutex_init(&l->lock, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&l->grew, NULL) != 0)
        goto fail_cond;
    *ret_log = l;
    return PS_STATUS_OK;

fail_cond:
    pthread_mutex_destroy(&l->lock);
fail_mutex:
    free(l->ring);
fail_ring:
    free(l);
    return PS_STATUS_NO_MEMORY;
}

void update_log_destroy(update_log *l) {
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        update_log_entry_unref(l->ring[(l->head + i) % l->cap]);
    free(l->ring);
    pthread_cond_destroy(&l->grew);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/* Drops the oldest entry (lock held). */
static void log_evict_oldest(update_log *l) {
    update_log_entry *old = l->ring[l->head];
    l->ring[l->head] = NULL;
    l->head = (l->head + 1) % l->cap;
    l->count--;
    l->bytes -= update_log_entry_bytes(old->len);
    l->gone_seq = old->seq;
    update_log_entry_unref(old);
}

void update_log_append(update_log *l, update_log_batch *b, size_t n) {
    batch_drop_unused(b, n);
    atomic_store(&b->live, n + 1); /* each appended entry, + the caller's until below */
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < n; i++) {
        update_log_entry *e = &b->entries[i];
        uint64_t need = update_log_entry_bytes(e->len);
        assert(e->seq == l->last_seq + 1); /* contiguous: readers index by seq */
        atomic_store(&e->refs, 1);         /* the log's */
        while (l->count > 0 && (l->count == l->cap || l->bytes + need > l->max_bytes))
            log_evict_oldest(l);
        l->ring[(l->head + l->count) % l->cap] = e;
        l->count++;
        l->bytes += need;
        l->last_seq = e->seq;
    }
    pthread_cond_broadcast(&l->grew);
    pthread_mutex_unlock(&l->lock);
    batch_release(b);
}

update_log_read_kind update_log_read(update_log *l, uint64_t after_seq, int wait_ms,
                                     update_log_entry **ret_entry, uint64_t *ret_last_seq) {
    update_log_read_kind kind;
    struct timespec until = ps_abstime_after_ms(wait_ms > 0 ? wait_ms : 0);
    pthread_mutex_lock(&l->lock);
    for (;;) {
        if (l->stopping) {
            kind = UPDATE_LOG_READ_STOPPED;
            break;
        }
        if (after_seq < l->gone_seq || after_seq > l->last_seq) {
            kind = UPDATE_LOG_READ_RESYNC;
            break;
        }
        if (after_seq < l->last_seq) {
            /* held: the log's first seq is gone_seq + 1 and seqs are contiguous */
            uint64_t first = l->gone_seq + 1;
            update_log_entry *e = l->ring[(l->head + (after_seq + 1 - first)) % l->cap];
            assert(e->seq == after_seq + 1);
            update_log_entry_ref(e);
            *ret_entry = e;
            kind = UPDATE_LOG_READ_ENTRY;
            break;
        }
        /* after_seq == last_seq: wait for the next append */
        if (wait_ms <= 0) {
            kind = UPDATE_LOG_READ_IDLE;
            break;
        }
        if (pthread_cond_timedwait(&l->grew, &l->lock, &until) == ETIMEDOUT)
            wait_ms = 0; /* look once more, then answer IDLE */
    }
    if (ret_last_seq)
        *ret_last_seq = l->last_seq;
    pthread_mutex_unlock(&l->lock);
    return kind;
}

void update_log_stop(update_log *l) {
    pthread_mutex_lock(&l->lock);
    l->stopping = true;
    pthread_cond_broadcast(&l->grew);
    pthread_mutex_unlock(&l->lock);
}

void update_log_get_stats(update_log *l, update_log_stats *ret_stats) {
    pthread_mutex_lock(&l->lock);
    ret_stats->last_seq = l->last_seq;
    ret_stats->first_seq = l->gone_seq + 1;
    ret_stats->entries = l->count;
    ret_stats->bytes = l->bytes;
    pthread_mutex_unlock(&l->lock);
}
