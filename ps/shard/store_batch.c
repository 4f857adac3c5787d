/* store_batch.c: pushes into the chunk store, in two steps (see store.h): prepare
 * (no lock: stateless checks, every allocation) and apply (write lock: checks against
 * the state, then publish; past the checks nothing can fail). */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optimizer.h"
#include "shard_limits.h"
#include "store.h"
#include "store_internal.h"
#include "util.h"

#define FLOAT_EXP_MASK 0x7f800000u /* an all-ones exponent: NaN or infinity */

struct store_batch {
    store_push push;            /* the request's arrays (not owned) */
    update_log_entry **entries; /* n; NULL once handed to the log */
    store_chunk **fresh;        /* ASSIGN: n new chunks with the values (NULL for ADD);
                                   after apply, what replaced data went into */
    store_chunk **found;        /* n: the chunk each key had when applied (scratch) */
    char **names;               /* NULL, or n copies of the names (NULL = none) */
    store_chunk **slots;        /* a bigger table prepared outside the lock, or NULL; after
                                   apply, the replaced table */
    size_t slots_cap;
    float **state_new; /* OPTIMIZE: n buffers for the new state (NULL for a skipped
                          key); after apply, the replaced states */
    bool *skip;        /* OPTIMIZE with skip_non_finite: keys skipped, or NULL */
    uint64_t skipped;  /* keys skipped */
    bool applied;
};

/* ------------------------------------------------------------------ checks --- */

static bool is_finite_bits(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & FLOAT_EXP_MASK) != FLOAT_EXP_MASK;
}

/* Index of the first NaN or infinity among n little-endian floats at p (any
 * alignment), or n. Blocks are scanned without an early exit so the loop vectorizes:
 * this runs over every pushed value. */
static uint64_t first_non_finite(const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i += 1024) {
        uint64_t m = n - i < 1024 ? n - i : 1024;
        uint32_t any = 0;
        for (uint64_t k = 0; k < m; k++) {
            uint32_t bits;
            memcpy(&bits, p + (i + k) * 4, 4);
            any |= (bits & FLOAT_EXP_MASK) == FLOAT_EXP_MASK;
        }
        for (uint64_t k = 0; any && k < m; k++) {
            float v;
            memcpy(&v, p + (i + k) * 4, 4);
            if (!is_finite_bits(v))
                return i + k;
        }
    }
    return n;
}

/* Index of the first k where a[k] + d[k] is not finite, or n (vectorizable blocks). */
static uint32_t first_non_finite_sum(const float *a, const float *d, uint32_t n) {
    for (uint32_t i = 0; i < n; i += 1024) {
        uint32_t m = n - i < 1024 ? n - i : 1024;
        uint32_t any = 0;
        for (uint32_t k = 0; k < m; k++) {
            float s = a[i + k] + d[i + k];
            uint32_t bits;
            memcpy(&bits, &s, sizeof bits);
            any |= (bits & FLOAT_EXP_MASK) == FLOAT_EXP_MASK;
        }
        for (uint32_t k = 0; any && k < m; k++)
            if (!is_finite_bits(a[i + k] + d[i + k]))
                return i + k;
    }
    return n;
}

/* The checks that need no state. */
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
    bool skipping = p->op == UPDATE_LOG_OP_OPTIMIZE && p->skip_non_finite;
    uint64_t bad = skipping ? total : first_non_finite(p->values, total); /* else per key */
    if (bad < total) {
        float v;
        memcpy(&v, p->values + bad * 4, 4);
        ps_set_err(err, err_len, "push value %llu is %s: only finite values are accepted",
                   (unsigned long long)bad, isnan(v) ? "NaN" : "infinite");
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
    for (size_t i = 0; i < b->push.n; i++) {
        if (b->entries)
            update_log_entry_unref(b->entries[i]);
        if (b->fresh)
            store_chunk_free(b->fresh[i]);
        if (b->names)
            free(b->names[i]);
    }
    free(b->entries);
    free(b->fresh);
    free(b->found);
    free(b->names);
    free(b->slots);
    for (size_t i = 0; b->state_new && i < b->push.n; i++)
        free(b->state_new[i]);
    free(b->state_new);
    free(b->skip);
    free(b);
}

/* Allocates key i's log entry (and, for ASSIGN, its new chunk) with the values. */
static ps_status prepare_key(store *s, store_batch *b, size_t i, size_t off) {
    const store_push *p = &b->push;
    uint32_t len = p->lengths[i];
    if (b->skip && first_non_finite(p->values + off * 4, len) < len) {
        b->skip[i] = true; /* skip_non_finite: no entry, no state */
        b->skipped++;
        return PS_STATUS_OK;
    }
    if (store_alloc_fails(s) || update_log_entry_create(len, &b->entries[i]) != PS_STATUS_OK)
        return PS_STATUS_NO_MEMORY;
    update_log_entry *e = b->entries[i];
    memcpy(e->values, p->values + off * 4, (size_t)len * 4);
    e->key = p->keys[i];
    e->op = p->op;
    if (p->names && p->names[i][0]) {
        b->names[i] = store_malloc(s, strlen(p->names[i]) + 1);
        if (!b->names[i])
            return PS_STATUS_NO_MEMORY;
        strcpy(b->names[i], p->names[i]);
    }
    if (p->op == UPDATE_LOG_OP_ASSIGN) {
        store_chunk *c = store_calloc(s, 1, sizeof *c);
        if (!c)
            return PS_STATUS_NO_MEMORY;
        b->fresh[i] = c;
        c->key = p->keys[i];
        c->len = len;
        c->data = store_malloc(s, (size_t)len * sizeof(float));
        if (!c->data)
            return PS_STATUS_NO_MEMORY;
        memcpy(c->data, e->values, (size_t)len * sizeof(float));
    }
    if (p->op == UPDATE_LOG_OP_OPTIMIZE) {
        size_t floats = (size_t)len * optim_spec_slots(p->optimizer->kind);
        b->state_new[i] = store_malloc(s, floats * sizeof(float));
        if (!b->state_new[i])
            return PS_STATUS_NO_MEMORY;
    }
    return PS_STATUS_OK;
}

ps_status store_batch_prepare(store *s, const store_push *p, store_batch **ret_batch, char *err,
                              size_t err_len) {
    ps_status st = push_check(p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    st = push_check_unique(s, p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    store_batch *b = store_calloc(s, 1, sizeof *b);
    if (!b)
        goto fail_memory;
    b->push = *p;
    b->entries = store_calloc(s, p->n, sizeof *b->entries);
    b->found = store_calloc(s, p->n, sizeof *b->found);
    if (!b->entries || !b->found)
        goto fail_memory;
    if (p->op == UPDATE_LOG_OP_ASSIGN && !(b->fresh = store_calloc(s, p->n, sizeof *b->fresh)))
        goto fail_memory;
    if (p->names && !(b->names = store_calloc(s, p->n, sizeof *b->names)))
        goto fail_memory;
    if (p->op == UPDATE_LOG_OP_OPTIMIZE &&
        !(b->state_new = store_calloc(s, p->n, sizeof *b->state_new)))
        goto fail_memory;
    if (p->op == UPDATE_LOG_OP_OPTIMIZE && p->skip_non_finite &&
        !(b->skip = store_calloc(s, p->n, sizeof *b->skip)))
        goto fail_memory;
    size_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (prepare_key(s, b, i, off) != PS_STATUS_OK)
            goto fail_memory;
        off += p->lengths[i];
    }
    if (p->op == UPDATE_LOG_OP_ASSIGN) {
        /* a bigger table, in case every key is new (the usual case for ASSIGN) */
        pthread_rwlock_rdlock(&s->lock);
        size_t want = store_table_cap_for(s->count + p->n), cap = s->cap;
        pthread_rwlock_unlock(&s->lock);
        if (want > cap) {
            b->slots = store_calloc(s, want, sizeof *b->slots);
            if (!b->slots)
                goto fail_memory;
            b->slots_cap = want;
        }
    }
    *ret_batch = b;
    return PS_STATUS_OK;

fail_memory:
    store_batch_destroy(b);
    ps_set_err(err, err_len, "out of memory preparing a push of %zu keys (%zu value bytes)", p->n,
               p->values_len);
    return PS_STATUS_NO_MEMORY;
}

/* ------------------------------------------------------------------ apply --- */

static const char *name_or_empty(const store_chunk *c) {
    return c->name ? c->name : "";
}

static const char *op_name(update_log_op op) {
    return op == UPDATE_LOG_OP_ADD      ? "ADD"
           : op == UPDATE_LOG_OP_ASSIGN ? "ASSIGN"
                                        : "optimizer push";
}

static bool skipped(const store_batch *b, size_t i) {
    return b->skip && b->skip[i];
}

/* Checks key i of the batch against its chunk c (write lock held). */
static ps_status check_key(store *s, const store_batch *b, size_t i, const store_chunk *c,
                           char *err, size_t err_len) {
    const store_push *p = &b->push;
    if (!c && p->op != UPDATE_LOG_OP_ASSIGN) {
        ps_set_err(err, err_len, "%s to key %016llx (index %zu), which is not on %s (%s)",
                   op_name(p->op), (unsigned long long)p->keys[i], i, s->name,
                   p->op == UPDATE_LOG_OP_ADD ? "ASSIGN it first" : "upload the model first");
        return PS_STATUS_NOT_FOUND;
    }
    if (c && c->len != p->lengths[i]) {
        ps_set_err(err, err_len,
                   "%s of %u floats to key %016llx %s(index %zu), which holds %u floats; "
                   "upload a new model version to change shapes",
                   op_name(p->op), p->lengths[i], (unsigned long long)p->keys[i], name_or_empty(c),
                   i, c->len);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (p->op == UPDATE_LOG_OP_OPTIMIZE && c->state_kind != OPTIM_NONE &&
        c->state_kind != p->optimizer->kind) {
        ps_set_err(err, err_len,
                   "optimizer push with %s to key %016llx %s(index %zu), whose optimizer state "
                   "was made by %s: a chunk keeps one optimizer",
                   optim_kind_name(p->optimizer->kind), (unsigned long long)c->key,
                   name_or_empty(c), i, optim_kind_name(c->state_kind));
        return PS_STATUS_FAILED_PRECONDITION;
    }
    return PS_STATUS_OK;
}

/* Checks the batch against the state (write lock held); fills b->found, and
 * *ret_new_bytes and *ret_new_count for chunks and states the push creates. */
static ps_status apply_check(store *s, store_batch *b, uint64_t *ret_new_bytes,
                             size_t *ret_new_count, char *err, size_t err_len) {
    const store_push *p = &b->push;
    uint64_t new_bytes = 0;
    size_t new_count = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (skipped(b, i))
            continue;
        store_chunk *c = store_table_get(s, p->keys[i]);
        b->found[i] = c;
        ps_status st = check_key(s, b, i, c, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        if (!c) {
            new_bytes += (uint64_t)p->lengths[i] * sizeof(float);
            new_count++;
        } else if (p->op == UPDATE_LOG_OP_OPTIMIZE && c->state_kind == OPTIM_NONE) {
            new_bytes += (uint64_t)c->len * sizeof(float) * optim_spec_slots(p->optimizer->kind);
        }
    }
    for (size_t i = 0; p->op == UPDATE_LOG_OP_ADD && i < p->n; i++) {
        const store_chunk *c = b->found[i];
        const float *d = b->entries[i]->values;
        uint32_t k = first_non_finite_sum(c->data, d, c->len);
        if (k < c->len) {
            ps_set_err(err, err_len,
                       "ADD to key %016llx %s(index %zu) would make value %u non-finite (%g + "
                       "%g): nothing was applied",
                       (unsigned long long)c->key, name_or_empty(c), i, k, (double)c->data[k],
                       (double)d[k]);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    *ret_new_bytes = new_bytes;
    *ret_new_count = new_count;
    return PS_STATUS_OK;
}

/* OPTIMIZE: computes every key's step out of place, into its log entry (the new
 * weights) and b->state_new (the new state), and checks the results are finite (write
 * lock held; the store is not changed). */
static ps_status apply_optimize(store_batch *b, char *err, size_t err_len) {
    const store_push *p = &b->push;
    const optim_spec *o = p->optimizer;
    uint32_t slots = optim_spec_slots(o->kind);
    for (size_t i = 0; i < p->n; i++) {
        if (skipped(b, i))
            continue;
        const store_chunk *c = b->found[i];
        float *g = b->entries[i]->values, *st = b->state_new[i];
        const float *old_state = c->state;
        if (c->state_kind == OPTIM_NONE) {
            optimizer_state_init(o, c->len, st);
            old_state = st;
        }
        optimizer_step(o, c->len, c->data, g, old_state, c->steps + 1, g, st);
        if (!optimizer_all_finite(g, c->len) ||
            !optimizer_all_finite(st, (uint64_t)c->len * slots)) {
            ps_set_err(err, err_len,
                       "%s step on key %016llx %s(index %zu) would make its weights or state "
                       "non-finite (the gradient is too large for the learning rate?): nothing "
                       "was applied",
                       optim_kind_name(o->kind), (unsigned long long)c->key, name_or_empty(c), i);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* Makes room for `count` chunks (write lock held), with the prepared table when it is
 * big enough; the replaced table goes into the batch to be freed after unlock. */
static ps_status apply_reserve(store *s, store_batch *b, size_t count) {
    size_t want = store_table_cap_for(count);
    if (want <= s->cap)
        return PS_STATUS_OK;
    if (b->slots_cap < want) {
        free(b->slots);
        b->slots = store_calloc(s, want, sizeof *b->slots);
        b->slots_cap = b->slots ? want : 0;
        if (!b->slots)
            return PS_STATUS_NO_MEMORY;
    }
    store_table_rehash(s, b->slots, b->slots_cap);
    store_chunk **old = s->slots;
    s->slots = b->slots;
    s->cap = b->slots_cap;
    b->slots = old; /* freed by store_batch_destroy */
    return PS_STATUS_OK;
}

/* Publishes key i as update `seq` (write lock held; cannot fail). */
static void apply_key(store *s, store_batch *b, size_t i, uint64_t seq) {
    update_log_entry *e = b->entries[i];
    store_chunk *c = b->found[i];
    e->seq = e->version = seq;
    e->prev_version = c ? c->version : 0;
    if (!c) { /* a new chunk: the prepared one */
        c = b->fresh[i];
        b->fresh[i] = NULL;
        store_table_put(s, c);
        s->bytes += (uint64_t)c->len * sizeof(float);
    } else if (b->push.op == UPDATE_LOG_OP_ASSIGN) { /* swap in the prepared values */
        float *old = c->data;
        c->data = b->fresh[i]->data;
        b->fresh[i]->data = old;
        if (c->state) { /* new values: the optimizer state of the old ones goes */
            uint64_t state_bytes = store_chunk_bytes(c) - (uint64_t)c->len * sizeof(float);
            s->bytes -= state_bytes;
            quota_release(s->quota, state_bytes);
            b->fresh[i]->state = c->state; /* freed with the batch, after the lock */
            c->state = NULL;
        }
        c->state_kind = OPTIM_NONE;
        c->steps = 0;
    } else if (b->push.op == UPDATE_LOG_OP_OPTIMIZE) { /* the step's results */
        memcpy(c->data, e->values, (size_t)c->len * sizeof(float));
        if (c->state_kind == OPTIM_NONE) /* its first step: the state is new */
            s->bytes +=
                (uint64_t)c->len * sizeof(float) * optim_spec_slots(b->push.optimizer->kind);
        float *old = c->state;
        c->state = b->state_new[i];
        b->state_new[i] = old;
        c->state_kind = b->push.optimizer->kind;
        c->steps++;
        e->op = UPDATE_LOG_OP_ASSIGN; /* subscribers get the weights, not the gradient */
    } else {
        for (uint32_t k = 0; k < c->len; k++)
            c->data[k] += e->values[k];
    }
    if (b->names && b->names[i] && (!c->name || strcmp(c->name, b->names[i]) != 0)) {
        char *old = c->name;
        c->name = b->names[i];
        b->names[i] = old;
    }
    c->version = seq;
}

/* Moves the entries of the keys not skipped to the front; returns their count. */
static size_t compact_entries(store_batch *b) {
    size_t m = 0;
    for (size_t i = 0; i < b->push.n; i++)
        if (b->entries[i])
            b->entries[m++] = b->entries[i];
    return m;
}

ps_status store_batch_apply(store *s, store_batch *b, uint64_t *ret_versions, uint64_t *ret_seq,
                            char *err, size_t err_len) {
    if (b->applied) {
        ps_set_err(err, err_len, "this push was already applied");
        return PS_STATUS_FAILED_PRECONDITION;
    }
    uint64_t new_bytes = 0;
    size_t new_count = 0;
    pthread_rwlock_wrlock(&s->lock);
    ps_status st = apply_check(s, b, &new_bytes, &new_count, err, err_len);
    if (st == PS_STATUS_OK && b->push.op == UPDATE_LOG_OP_OPTIMIZE)
        st = apply_optimize(b, err, err_len);
    if (st == PS_STATUS_OK && new_bytes > 0 && !quota_reserve(s->quota, new_bytes)) {
        ps_set_err(err, err_len,
                   "the shard holds %llu of its %llu bytes (--max-bytes) and this push would add "
                   "%llu: nothing was applied",
                   (unsigned long long)quota_used(s->quota),
                   (unsigned long long)quota_max(s->quota), (unsigned long long)new_bytes);
        st = PS_STATUS_RESOURCE_EXHAUSTED;
    } else if (st == PS_STATUS_OK && apply_reserve(s, b, s->count + new_count) != PS_STATUS_OK) {
        quota_release(s->quota, new_bytes);
        ps_set_err(err, err_len, "out of memory growing the table to %zu chunks",
                   s->count + new_count);
        st = PS_STATUS_NO_MEMORY;
    }
    if (st != PS_STATUS_OK) {
        pthread_rwlock_unlock(&s->lock);
        return st;
    }
    /* the point of no return: nothing below can fail */
    assert((s->count + new_count) * 2 <= s->cap); /* every insert finds a free slot */
    for (size_t i = 0; i < b->push.n; i++) {
        if (skipped(b, i)) {
            if (ret_versions)
                ret_versions[i] = 0;
            continue;
        }
        apply_key(s, b, i, ++s->seq);
        if (ret_versions)
            ret_versions[i] = s->seq;
    }
    s->skipped += b->skipped;
    update_log_append(s->log, b->entries, compact_entries(b));
    uint64_t seq = s->seq;
    pthread_rwlock_unlock(&s->lock);
    free(b->entries); /* the log holds their references now */
    b->entries = NULL;
    b->applied = true;
    if (ret_seq)
        *ret_seq = seq;
    return PS_STATUS_OK;
}

uint64_t store_batch_skipped(const store_batch *b) {
    return b->skipped;
}
