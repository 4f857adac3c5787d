/* store.c: the chunk store's table, reads, deletes and life cycle (see store.h).
 * Pushes are in store_batch.c. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"
#include "util.h"

#define STORE_INITIAL_CAP 1024

/* ------------------------------------------------------------------ table --- */

static size_t slot_of(uint64_t key, size_t cap) {
    return (size_t)(key * 0x9E3779B97F4A7C15ull >> 7) & (cap - 1);
}

store_chunk *store_table_get(const store *s, uint64_t key) {
    for (size_t i = slot_of(key, s->cap);; i = (i + 1) & (s->cap - 1)) {
        store_chunk *c = s->slots[i];
        if (!c)
            return NULL;
        if (c->key == key)
            return c;
    }
}

/* Removes the chunk with `key` and returns it, or NULL (write lock held). Linear
 * probing keeps no tombstones: after the hole, each chunk of the run that could sit
 * in it (its home slot is not cyclically in (hole, j]) moves back into it, leaving a
 * new hole, so every remaining chunk stays reachable from its home slot. */
static store_chunk *table_remove(store *s, uint64_t key) {
    size_t mask = s->cap - 1, hole = slot_of(key, s->cap);
    for (;; hole = (hole + 1) & mask) {
        if (!s->slots[hole])
            return NULL;
        if (s->slots[hole]->key == key)
            break;
    }
    store_chunk *gone = s->slots[hole];
    for (size_t j = (hole + 1) & mask; s->slots[j]; j = (j + 1) & mask) {
        size_t home = slot_of(s->slots[j]->key, s->cap);
        if (((j - home) & mask) >= ((j - hole) & mask)) { /* home is at or before the hole */
            s->slots[hole] = s->slots[j];
            hole = j;
        }
    }
    s->slots[hole] = NULL;
    s->count--;
    return gone;
}

static void table_place(store_chunk **slots, size_t cap, store_chunk *c) {
    size_t i = slot_of(c->key, cap);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = c;
}

void store_table_put(store *s, store_chunk *c) {
    table_place(s->slots, s->cap, c);
    s->count++;
}

void store_table_rehash(const store *s, store_chunk **slots, size_t cap) {
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i])
            table_place(slots, cap, s->slots[i]);
}

size_t store_table_cap_for(size_t count) {
    size_t cap = STORE_INITIAL_CAP;
    while (cap / 2 < count)
        cap *= 2;
    return cap;
}

/* ------------------------------------------------------------------ faults --- */

bool store_alloc_fails(store *s) {
    unsigned cur = atomic_load(&s->fault_countdown);
    while (cur > 0 && !atomic_compare_exchange_weak(&s->fault_countdown, &cur, cur - 1)) {
    }
    return cur == 1;
}

void *store_malloc(store *s, size_t size) {
    return store_alloc_fails(s) ? NULL : malloc(size ? size : 1);
}

void *store_calloc(store *s, size_t n, size_t size) {
    return store_alloc_fails(s) ? NULL : calloc(n ? n : 1, size);
}

void store_fault_fail_alloc(store *s, uint32_t nth) {
    atomic_store(&s->fault_countdown, nth);
}

/* ------------------------------------------------------------------ life cycle --- */

uint64_t store_chunk_bytes(const store_chunk *c) {
    return (uint64_t)c->len * sizeof(float) * (1 + optim_spec_slots(c->state_kind));
}

void store_chunk_free(store_chunk *c) {
    if (!c)
        return;
    update_log_values_unref(c->values);
    update_log_values_unref(c->state);
    free(c->name);
    free(c);
}

ps_status store_create(const store_opts *opts, store **ret_store) {
    if (!opts || !opts->log)
        return PS_STATUS_INVALID_ARGUMENT;
    store *s = calloc(1, sizeof *s);
    if (!s)
        return PS_STATUS_NO_MEMORY;
    s->cap = STORE_INITIAL_CAP;
    s->slots = calloc(s->cap, sizeof *s->slots);
    if (!s->slots)
        goto fail_slots;
    if (pthread_rwlock_init(&s->lock, NULL) != 0)
        goto fail_lock;
    s->log = opts->log;
    snprintf(s->name, sizeof s->name, "%s%s", opts->name ? "shard " : "this shard",
             opts->name ? opts->name : "");
    s->quota = opts->quota;
    if (!s->quota) {
        if (quota_create(opts->max_bytes, &s->own_quota) != PS_STATUS_OK)
            goto fail_quota;
        s->quota = s->own_quota;
    }
    update_log_stats ls;
    update_log_get_stats(s->log, &ls);
    s->seq = ls.last_seq;
    s->clock = ls.last_seq;
    atomic_init(&s->fault_countdown, 0);
    *ret_store = s;
    return PS_STATUS_OK;

fail_quota:
    pthread_rwlock_destroy(&s->lock);
fail_lock:
    free(s->slots);
fail_slots:
    free(s);
    return PS_STATUS_NO_MEMORY;
}

void store_destroy(store *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i])
            quota_release(s->quota, store_chunk_bytes(s->slots[i]));
        store_chunk_free(s->slots[i]);
    }
    free(s->slots);
    quota_destroy(s->own_quota);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

/* ------------------------------------------------------------------ reads --- */

/* Checks that every key is held and that the values (with state: and the optimizer
 * state) fit max_bytes (lock held); *ret_total and *ret_state_total get their bytes. */
static ps_status read_check(store *s, size_t n, const uint64_t *keys, uint64_t max_bytes,
                            bool with_state, uint64_t *ret_total, uint64_t *ret_state_total,
                            char *err, size_t err_len) {
    uint64_t total = 0, state_total = 0; /* bytes */
    for (size_t i = 0; i < n; i++) {
        const store_chunk *c = store_table_get(s, keys[i]);
        if (!c) {
            ps_set_err(err, err_len, "key %016llx (index %zu) is not on %s",
                       (unsigned long long)keys[i], i, s->name);
            return PS_STATUS_NOT_FOUND;
        }
        total += (uint64_t)c->len * sizeof(float);
        if (with_state)
            state_total += store_chunk_bytes(c) - (uint64_t)c->len * sizeof(float);
        if (total + state_total > max_bytes) {
            ps_set_err(err, err_len,
                       "the values%s of these %zu keys pass %llu bytes, more than one answer "
                       "may carry: pull fewer keys at once",
                       with_state ? " and optimizer state" : "", n, (unsigned long long)max_bytes);
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
    }
    *ret_total = total;
    *ret_state_total = state_total;
    return PS_STATUS_OK;
}

/* Reads n chunks (lock held); with ret_info, their optimizer state too. */
static ps_status read_locked(store *s, size_t n, const uint64_t *keys, uint64_t max_bytes,
                             uint32_t *ret_lengths, uint64_t *ret_versions, float **ret_values,
                             size_t *ret_values_len, store_state_info *ret_info, float **ret_state,
                             size_t *ret_state_len, char *err, size_t err_len) {
    uint64_t total = 0, state_total = 0; /* bytes */
    ps_status st =
        read_check(s, n, keys, max_bytes, ret_info != NULL, &total, &state_total, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    float *values = malloc(total ? total : 1);
    float *state = ret_info ? malloc(state_total ? state_total : 1) : NULL;
    if (!values || (ret_info && !state)) {
        free(values);
        free(state);
        ps_set_err(err, err_len, "out of memory for %llu bytes of values",
                   (unsigned long long)(total + state_total));
        return PS_STATUS_NO_MEMORY;
    }
    size_t off = 0, soff = 0; /* floats */
    for (size_t i = 0; i < n; i++) {
        const store_chunk *c = store_table_get(s, keys[i]);
        memcpy(values + off, c->values->data, (size_t)c->len * sizeof(float));
        off += c->len;
        ret_lengths[i] = c->len;
        ret_versions[i] = c->version;
        if (ret_info) {
            uint32_t sf = c->len * optim_spec_slots(c->state_kind);
            ret_info[i] =
                (store_state_info){.kind = c->state_kind, .steps = c->steps, .state_floats = sf};
            if (sf)
                memcpy(state + soff, c->state->data, (size_t)sf * sizeof(float));
            soff += sf;
        }
    }
    *ret_values = values;
    *ret_values_len = (size_t)total;
    if (ret_info) {
        *ret_state = state;
        *ret_state_len = (size_t)state_total;
    }
    return PS_STATUS_OK;
}

ps_status store_read(store *s, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                     uint32_t *ret_lengths, uint64_t *ret_versions, float **ret_values,
                     size_t *ret_values_len, uint64_t *ret_seq, char *err, size_t err_len) {
    pthread_rwlock_rdlock(&s->lock);
    ps_status st = read_locked(s, n, keys, max_value_bytes, ret_lengths, ret_versions, ret_values,
                               ret_values_len, NULL, NULL, NULL, err, err_len);
    if (st == PS_STATUS_OK && ret_seq)
        *ret_seq = s->seq;
    pthread_rwlock_unlock(&s->lock);
    return st;
}

ps_status store_read_blocks(store *s, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                            uint32_t *ret_lengths, uint64_t *ret_versions,
                            update_log_values **ret_blocks, uint64_t *ret_seq, char *err,
                            size_t err_len) {
    uint64_t total = 0, state_total = 0;
    pthread_rwlock_rdlock(&s->lock);
    ps_status st =
        read_check(s, n, keys, max_value_bytes, false, &total, &state_total, err, err_len);
    for (size_t i = 0; st == PS_STATUS_OK && i < n; i++) {
        const store_chunk *c = store_table_get(s, keys[i]);
        update_log_values_ref(c->values);
        ret_blocks[i] = c->values;
        ret_lengths[i] = c->len;
        ret_versions[i] = c->version;
    }
    if (st == PS_STATUS_OK && ret_seq)
        *ret_seq = s->seq;
    pthread_rwlock_unlock(&s->lock);
    return st;
}

ps_status store_read_state(store *s, size_t n, const uint64_t *keys, uint64_t max_value_bytes,
                           uint32_t *ret_lengths, uint64_t *ret_versions, float **ret_values,
                           size_t *ret_values_len, store_state_info *ret_info, float **ret_state,
                           size_t *ret_state_len, uint64_t *ret_seq, char *err, size_t err_len) {
    pthread_rwlock_rdlock(&s->lock);
    ps_status st = read_locked(s, n, keys, max_value_bytes, ret_lengths, ret_versions, ret_values,
                               ret_values_len, ret_info, ret_state, ret_state_len, err, err_len);
    if (st == PS_STATUS_OK && ret_seq)
        *ret_seq = s->seq;
    pthread_rwlock_unlock(&s->lock);
    return st;
}

void store_stat(store *s, size_t n, const uint64_t *keys, uint32_t *ret_lengths,
                uint64_t *ret_versions) {
    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < n; i++) {
        const store_chunk *c = store_table_get(s, keys[i]);
        ret_lengths[i] = c ? c->len : 0;
        ret_versions[i] = c ? c->version : 0;
    }
    pthread_rwlock_unlock(&s->lock);
}

ps_status store_delete_journaled(store *s, size_t n, const uint64_t *keys, uint64_t *ret_deleted,
                                 uint64_t *ret_bytes, uint64_t *ret_lsn, char *err,
                                 size_t err_len) {
    uint64_t deleted = 0, bytes = 0, lsn = 0;
    pthread_rwlock_wrlock(&s->lock);
    if (s->journal.del &&
        s->journal.del(s->journal.arg, n, keys, &lsn, err, err_len) != PS_STATUS_OK) {
        pthread_rwlock_unlock(&s->lock);
        return PS_STATUS_IO;
    }
    for (size_t i = 0; i < n; i++) {
        store_chunk *c = table_remove(s, keys[i]);
        if (!c)
            continue;
        uint64_t b = store_chunk_bytes(c);
        s->bytes -= b;
        quota_release(s->quota, b);
        bytes += b;
        deleted++;
        store_chunk_free(c); /* under the lock: a delete allocates nothing, so cannot fail */
    }
    pthread_rwlock_unlock(&s->lock);
    if (ret_deleted)
        *ret_deleted = deleted;
    if (ret_bytes)
        *ret_bytes = bytes;
    if (ret_lsn)
        *ret_lsn = lsn;
    return PS_STATUS_OK;
}

void store_delete(store *s, size_t n, const uint64_t *keys, uint64_t *ret_deleted,
                  uint64_t *ret_bytes) {
    store_delete_journaled(s, n, keys, ret_deleted, ret_bytes, NULL, NULL, 0);
}

void store_set_journal(store *s, const store_journal *journal) {
    pthread_rwlock_wrlock(&s->lock);
    s->journal = journal ? *journal : (store_journal){0};
    pthread_rwlock_unlock(&s->lock);
}

void store_get_stats(store *s, store_stats *ret_stats) {
    pthread_rwlock_rdlock(&s->lock);
    ret_stats->keys = s->count;
    ret_stats->bytes = s->bytes;
    ret_stats->seq = s->seq;
    ret_stats->max_bytes = quota_max(s->quota);
    ret_stats->skipped = s->skipped;
    pthread_rwlock_unlock(&s->lock);
}
