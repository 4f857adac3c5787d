/* store_batch.c: the second step of a push into the chunk store (see store.h): under
 * the write lock, checks against the state, ADD sums and optimizer steps into the
 * prepared blocks, then publish by swapping pointers; past the checks nothing can fail.
 * store_prepare.c makes the batch. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optimizer.h"
#include "store.h"
#include "store_internal.h"
#include "store_values.h"
#include "util.h"

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
 * *ret_new_bytes and *ret_new_count for chunks and states the push creates; makes a
 * new chunk for a key a concurrent delete removed since prepare. */
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
        if (!c && !b->fresh[i] && !(b->fresh[i] = store_calloc(s, 1, sizeof *b->fresh[i]))) {
            ps_set_err(err, err_len, "out of memory for a new chunk");
            return PS_STATUS_NO_MEMORY;
        }
        if (!c) {
            new_bytes += (uint64_t)p->lengths[i] * sizeof(float);
            new_count++;
        } else if (p->op == UPDATE_LOG_OP_OPTIMIZE && c->state_kind == OPTIM_NONE) {
            new_bytes += (uint64_t)c->len * sizeof(float) * optim_spec_slots(p->optimizer->kind);
        }
    }
    *ret_new_bytes = new_bytes;
    *ret_new_count = new_count;
    return PS_STATUS_OK;
}

/* Why key i's sum at k is not finite: the pushed value is not (refused as prepare
 * refuses an ASSIGN's), or old + pushed overflows. */
static void add_refusal(const store_push *p, const store_chunk *c, size_t i, size_t k, char *err,
                        size_t err_len) {
    uint64_t at = k;
    for (size_t j = 0; j < i; j++)
        at += p->lengths[j];
    ps_bytes one;
    ps_bytes_cursor cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
    float v = NAN;
    if (ps_bytes_take(&cur, NULL, at * sizeof v))
        (void)ps_bytes_take(&cur, &v, sizeof v);
    if (!isfinite(v))
        ps_set_err(err, err_len, "push value %llu is %s: only finite values are accepted",
                   (unsigned long long)at, isnan(v) ? "NaN" : "infinite");
    else
        ps_set_err(err, err_len,
                   "ADD to key %016llx %s(index %zu) would make value %zu non-finite (%g + %g): "
                   "nothing was applied",
                   (unsigned long long)c->key, name_or_empty(c), i, k, (double)c->values->data[k],
                   (double)v);
}

/* ADD: every key's sums into its block, added straight from the pieces the values
 * arrived in (prepare does not copy an ADD's values: one pass reads them once), checked
 * finite (a non-finite pushed value makes its sum so); the update log keeps what the
 * chunk becomes. OPTIMIZE: every key's step out of place, into its block (the new
 * weights) and b->state_new (the new state), checked finite. Write lock held; the
 * store is not changed. */
static ps_status apply_compute(store_batch *b, char *err, size_t err_len) {
    const store_push *p = &b->push;
    ps_bytes one;
    ps_bytes_cursor cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
    for (size_t i = 0; p->op == UPDATE_LOG_OP_ADD && i < p->n; i++) {
        const store_chunk *c = b->found[i];
        size_t k = store_values_add_pieces(b->blocks[i]->data, c->values->data, &cur, c->len);
        if (k < c->len) {
            add_refusal(p, c, i, k, err, err_len);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    if (p->op != UPDATE_LOG_OP_OPTIMIZE)
        return PS_STATUS_OK;
    const optim_spec *o = p->optimizer;
    uint32_t slots = optim_spec_slots(o->kind);
    for (size_t i = 0; i < p->n; i++) {
        if (skipped(b, i))
            continue;
        const store_chunk *c = b->found[i];
        float *g = b->blocks[i]->data, *st = b->state_new[i]->data;
        const float *old_state = c->state ? c->state->data : NULL;
        if (c->state_kind == OPTIM_NONE) {
            optimizer_state_init(o, c->len, st);
            old_state = st;
        }
        optimizer_step(o, c->len, c->values->data, g, old_state, c->steps + 1, g, st);
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

/* Publishes key i as update `seq` making the chunk's version `version`, with log entry
 * e (write lock held; cannot fail): the chunk's values become the prepared block, the
 * old block goes to b->replaced. */
static void apply_key(store *s, store_batch *b, size_t i, update_log_entry *e, uint64_t seq,
                      uint64_t version) {
    store_chunk *c = b->found[i];
    e->seq = seq;
    e->version = version;
    e->prev_version = c ? c->version : 0;
    update_log_values **pub = &b->blocks[i];
    if (!c) { /* a new chunk: the prepared one */
        c = b->fresh[i];
        b->fresh[i] = NULL;
        c->key = b->push.keys[i];
        c->len = b->push.lengths[i];
        store_table_put(s, c);
        s->bytes += (uint64_t)c->len * sizeof(float);
    }
    b->replaced[i] = c->values; /* NULL for a new chunk */
    c->values = *pub;           /* the chunk takes the batch's reference */
    *pub = NULL;
    if (b->push.op == UPDATE_LOG_OP_ASSIGN && c->state) { /* new values: the optimizer */
        uint64_t state_bytes = store_chunk_bytes(c) - (uint64_t)c->len * sizeof(float);
        s->bytes -= state_bytes; /* state of the old ones goes (freed after the lock) */
        quota_release(s->quota, state_bytes);
        b->state_new[i] = c->state;
        c->state = NULL;
    }
    if (b->push.op == UPDATE_LOG_OP_ASSIGN) {
        c->state_kind = OPTIM_NONE;
        c->steps = 0;
    }
    if (b->push.op == UPDATE_LOG_OP_OPTIMIZE) { /* the step's state */
        if (c->state_kind == OPTIM_NONE)        /* its first step: the state is new */
            s->bytes +=
                (uint64_t)c->len * sizeof(float) * optim_spec_slots(b->push.optimizer->kind);
        update_log_values *old = c->state;
        c->state = b->state_new[i];
        b->state_new[i] = old;
        c->state_kind = b->push.optimizer->kind;
        c->steps++;
    }
    if (b->names && b->names[i] && (!c->name || strcmp(c->name, b->names[i]) != 0)) {
        char *old = c->name;
        c->name = b->names[i];
        b->names[i] = old;
    }
    c->version = version;
}

/* Checks, computes and reserves under the write lock (held on return, OK or not). */
static ps_status apply_prepare_locked(store *s, store_batch *b, char *err, size_t err_len) {
    uint64_t new_bytes = 0;
    size_t new_count = 0;
    ps_status st = apply_check(s, b, &new_bytes, &new_count, err, err_len);
    if (st == PS_STATUS_OK)
        st = apply_compute(b, err, err_len);
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
    /* the journal comes last: a record is written only for a push that will apply, and
     * a push it cannot write does not apply (a larger table made above stays: harmless) */
    if (!b->push.from_peer || !b->push.base_version) /* the versions this push will give */
        b->push.base_version = s->clock;
    if (st == PS_STATUS_OK && s->journal.push &&
        s->journal.push(s->journal.arg, &b->push, &b->lsn, err, err_len) != PS_STATUS_OK) {
        quota_release(s->quota, new_bytes);
        st = PS_STATUS_IO;
    }
    if (st == PS_STATUS_OK)
        assert((s->count + new_count) * 2 <= s->cap); /* every insert finds a free slot */
    return st;
}

ps_status store_batch_apply(store *s, store_batch *b, uint64_t *ret_versions, uint64_t *ret_seq,
                            char *err, size_t err_len) {
    if (b->applied) {
        ps_set_err(err, err_len, "this push was already applied");
        return PS_STATUS_FAILED_PRECONDITION;
    }
    pthread_rwlock_wrlock(&s->lock);
    ps_status st = apply_prepare_locked(s, b, err, err_len);
    if (st != PS_STATUS_OK) {
        pthread_rwlock_unlock(&s->lock);
        return st;
    }
    /* the point of no return: nothing below can fail. Versions: key i gets base + i + 1
     * (or its slot's, when the push is a subset of one: its place in the whole), base
     * being the clock (what the journal recorded), or for a copy from the keys'
     * primary, the primary's base: every owner gives a chunk the same version (also
     * from a backup's share of a push), and the clock never goes back */
    uint64_t base = b->push.base_version; /* set by apply_prepare_locked */
    size_t entry = 0;
    for (size_t i = 0; i < b->push.n; i++) {
        if (skipped(b, i)) {
            if (ret_versions)
                ret_versions[i] = 0;
            continue;
        }
        uint64_t version = base + (b->push.slots ? b->push.slots[i] : i) + 1;
        apply_key(s, b, i, update_log_batch_entry(b->log, entry++), ++s->seq, version);
        if (version > s->clock)
            s->clock = version;
        if (ret_versions)
            ret_versions[i] = version;
    }
    s->skipped += b->skipped;
    update_log_append(s->log, b->log, entry); /* the log takes the entries */
    b->log = NULL;
    uint64_t seq = s->seq;
    pthread_rwlock_unlock(&s->lock);
    b->applied = true;
    if (ret_seq)
        *ret_seq = seq;
    return PS_STATUS_OK;
}

uint64_t store_batch_lsn(const store_batch *b) {
    return b->lsn;
}

uint64_t store_batch_skipped(const store_batch *b) {
    return b->skipped;
}
