/* store_prepare.c: the first step of a push into the chunk store (see store.h):
 * without the store's lock, the checks that need no state, then each key's values
 * copied once from the message (as it arrived, in pieces) into a new block and
 * checked finite there, and every allocation the push may need. store_batch.c
 * applies the result. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optimizer.h"
#include "shard_limits.h"
#include "store.h"
#include "store_internal.h"
#include "store_values.h"
#include "util.h"

/* ------------------------------------------------------------------ checks --- */

/* The checks that need no state (finite values are checked as they are copied). */
static ps_status push_check(const store_push *p, char *err, size_t err_len) {
    if (p->op != UPDATE_LOG_OP_ASSIGN && p->op != UPDATE_LOG_OP_ADD &&
        p->op != UPDATE_LOG_OP_OPTIMIZE) {
        ps_set_err(err, err_len, "unknown push op %d", (int)p->op);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (p->op == UPDATE_LOG_OP_OPTIMIZE) {
        if (!p->optimizer || p->optimizer->kind == OPTIM_NONE) {
            ps_set_err(err, err_len, "an optimizer push must name its optimizer");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        ps_status st = optim_spec_check(p->optimizer, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (p->n > SHARD_MAX_KEYS_PER_REQUEST) {
        ps_set_err(err, err_len, "push of %zu keys: at most %u keys per request", p->n,
                   SHARD_MAX_KEYS_PER_REQUEST);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint64_t total = 0; /* floats; each length and the sum are bounded, so no overflow */
    for (size_t i = 0; i < p->n; i++) {
        uint32_t len = p->lengths[i];
        if (len == 0 || len > SHARD_MAX_CHUNK_FLOATS) {
            ps_set_err(err, err_len, "key %016llx (index %zu) has length %u: want 1..%u floats",
                       (unsigned long long)p->keys[i], i, len, SHARD_MAX_CHUNK_FLOATS);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        total += len;
        if (total > SHARD_MAX_VALUE_BYTES / 4) {
            ps_set_err(err, err_len,
                       "the lengths add up to more than %u floats by key %zu: a push carries "
                       "at most %u value bytes",
                       SHARD_MAX_VALUE_BYTES / 4, i, SHARD_MAX_VALUE_BYTES);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (p->names && strnlen(p->names[i], SHARD_MAX_NAME_BYTES + 1) > SHARD_MAX_NAME_BYTES) {
            ps_set_err(err, err_len, "name of key %016llx (index %zu) is longer than %u bytes",
                       (unsigned long long)p->keys[i], i, SHARD_MAX_NAME_BYTES);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    if (total * 4 != p->values_len) {
        ps_set_err(err, err_len,
                   "push carries %zu value bytes but its lengths add up to %llu floats (%llu "
                   "bytes)",
                   p->values_len, (unsigned long long)total, (unsigned long long)(total * 4));
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* INVALID_ARGUMENT when a key appears twice (each key is one update of one chunk). */
static ps_status push_check_unique(store *s, const store_push *p, char *err, size_t err_len) {
    if (p->n < 2)
        return PS_STATUS_OK;
    uint64_t *sorted = store_malloc(s, p->n * sizeof *sorted);
    if (!sorted) {
        ps_set_err(err, err_len, "out of memory checking %zu keys", p->n);
        return PS_STATUS_NO_MEMORY;
    }
    memcpy(sorted, p->keys, p->n * sizeof *sorted);
    qsort(sorted, p->n, sizeof *sorted, cmp_u64);
    ps_status st = PS_STATUS_OK;
    for (size_t i = 1; i < p->n && st == PS_STATUS_OK; i++) {
        if (sorted[i] == sorted[i - 1]) {
            ps_set_err(err, err_len, "key %016llx appears more than once in one push",
                       (unsigned long long)sorted[i]);
            st = PS_STATUS_INVALID_ARGUMENT;
        }
    }
    free(sorted);
    return st;
}

/* ------------------------------------------------------------------ prepare --- */

void store_batch_destroy(store_batch *b) {
    if (!b)
        return;
    update_log_batch_destroy(b->log);
    for (size_t i = 0; i < b->push.n; i++) {
        if (b->blocks)
            update_log_values_unref(b->blocks[i]);
        if (b->replaced)
            update_log_values_unref(b->replaced[i]);
        if (b->fresh)
            store_chunk_free(b->fresh[i]);
        if (b->names)
            free(b->names[i]);
        if (b->state_new)
            update_log_values_unref(b->state_new[i]);
    }
    free(b->blocks);
    free(b->replaced);
    free(b->fresh);
    free(b->found);
    free(b->names);
    free(b->slots);
    free(b->state_new);
    free(b->skip);
    free(b);
}

/* Copies key i's values (the next len floats at value index off) into a new block
 * and checks them: a non-finite value refuses the push (INVALID_ARGUMENT, naming it),
 * or skips the key (skip_non_finite). An ADD's block is only made: apply adds into it
 * straight from the pushed values (and checks the sums). Then allocates what the key
 * needs besides. */
static ps_status prepare_key(store *s, store_batch *b, size_t i, ps_bytes_cursor *cur, uint64_t off,
                             size_t *entry, char *err, size_t err_len) {
    const store_push *p = &b->push;
    uint32_t len = p->lengths[i];
    if (store_alloc_fails(s) || update_log_values_create(len, &b->blocks[i]) != PS_STATUS_OK)
        return PS_STATUS_NO_MEMORY;
    float *v = b->blocks[i]->data;
    size_t bad = len;
    if (p->op != UPDATE_LOG_OP_ADD) {
        (void)ps_bytes_take(cur, v, (size_t)len * sizeof(float)); /* the one copy; total checked */
        bad = store_values_first_non_finite(v, len);
    }
    if (bad < len && b->skip) { /* skip_non_finite: no entry, no state */
        update_log_values_unref(b->blocks[i]);
        b->blocks[i] = NULL;
        b->skip[i] = true;
        b->skipped++;
        return PS_STATUS_OK;
    }
    if (bad < len) {
        ps_set_err(err, err_len, "push value %llu is %s: only finite values are accepted",
                   (unsigned long long)(off + bad), isnan(v[bad]) ? "NaN" : "infinite");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    update_log_entry *e = update_log_batch_entry(b->log, (*entry)++);
    e->key = p->keys[i];
    e->op = UPDATE_LOG_OP_ASSIGN;          /* the chunk's new values, whatever the op: */
    update_log_entry_set(e, b->blocks[i]); /* ADD, OPTIMIZE: once computed into the block */
    if (p->names && p->names[i][0]) {
        b->names[i] = store_malloc(s, strlen(p->names[i]) + 1);
        if (!b->names[i])
            return PS_STATUS_NO_MEMORY;
        strcpy(b->names[i], p->names[i]);
    }
    if (p->op == UPDATE_LOG_OP_OPTIMIZE) {
        size_t floats = (size_t)len * optim_spec_slots(p->optimizer->kind);
        if (store_alloc_fails(s) ||
            update_log_values_create((uint32_t)floats, &b->state_new[i]) != PS_STATUS_OK)
            return PS_STATUS_NO_MEMORY;
    }
    return PS_STATUS_OK;
}

/* The per-key arrays of a batch. */
static bool prepare_arrays(store *s, store_batch *b) {
    const store_push *p = &b->push;
    b->blocks = store_calloc(s, p->n, sizeof *b->blocks);
    b->replaced = store_calloc(s, p->n, sizeof *b->replaced);
    b->found = store_calloc(s, p->n, sizeof *b->found);
    if (!b->blocks || !b->replaced || !b->found)
        return false;
    if (store_alloc_fails(s) || update_log_batch_create(p->n, &b->log) != PS_STATUS_OK)
        return false;
    if (p->op == UPDATE_LOG_OP_ASSIGN && !(b->fresh = store_calloc(s, p->n, sizeof *b->fresh)))
        return false;
    if (p->names && !(b->names = store_calloc(s, p->n, sizeof *b->names)))
        return false;
    if ((p->op == UPDATE_LOG_OP_OPTIMIZE || p->op == UPDATE_LOG_OP_ASSIGN) &&
        !(b->state_new = store_calloc(s, p->n, sizeof *b->state_new)))
        return false;
    if (p->op == UPDATE_LOG_OP_OPTIMIZE && p->skip_non_finite &&
        !(b->skip = store_calloc(s, p->n, sizeof *b->skip)))
        return false;
    return true;
}

/* ASSIGN: new chunks for the keys absent now (the usual case for an upload), and a
 * bigger table in case they all stay new. Apply makes what a concurrent delete adds. */
static bool prepare_assign(store *s, store_batch *b) {
    const store_push *p = &b->push;
    size_t absent = 0;
    pthread_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < p->n; i++) /* only compared with NULL below, never read */
        b->found[i] = store_table_get(s, p->keys[i]);
    size_t want = store_table_cap_for(s->count + p->n), cap = s->cap;
    pthread_rwlock_unlock(&s->lock);
    for (size_t i = 0; i < p->n; i++) {
        bool present = b->found[i] != NULL;
        b->found[i] = NULL; /* apply fills it again, under its lock */
        if (present)
            continue;
        absent++;
        if (!(b->fresh[i] = store_calloc(s, 1, sizeof *b->fresh[i])))
            return false;
    }
    if (absent > 0 && want > cap) {
        b->slots = store_calloc(s, want, sizeof *b->slots);
        if (!b->slots)
            return false;
        b->slots_cap = want;
    }
    return true;
}

/* A result block for ADD's key i, whose chunk's block is shared. */
ps_status store_batch_prepare(store *s, const store_push *p, store_batch **ret_batch, char *err,
                              size_t err_len) {
    ps_status st = push_check(p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    st = push_check_unique(s, p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    store_batch *b = store_calloc(s, 1, sizeof *b);
    if (!b || (b->push = *p, !prepare_arrays(s, b)))
        goto fail_memory;
    ps_bytes one;
    ps_bytes_cursor cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
    uint64_t off = 0;
    size_t entry = 0;
    for (size_t i = 0; i < p->n; i++) {
        st = prepare_key(s, b, i, &cur, off, &entry, err, err_len);
        if (st == PS_STATUS_INVALID_ARGUMENT) {
            store_batch_destroy(b);
            return st;
        }
        if (st != PS_STATUS_OK)
            goto fail_memory;
        off += p->lengths[i];
    }
    if (p->op == UPDATE_LOG_OP_ASSIGN && !prepare_assign(s, b))
        goto fail_memory;
    *ret_batch = b;
    return PS_STATUS_OK;

fail_memory:
    store_batch_destroy(b);
    ps_set_err(err, err_len, "out of memory preparing a push of %zu keys (%zu value bytes)", p->n,
               p->values_len);
    return PS_STATUS_NO_MEMORY;
}
