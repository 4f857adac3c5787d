/* row_table.c: one sparse table's index and row slabs (see row_table.h for the layout
 * and why). Batch loops prefetch a few rows ahead and special-case dim 1, where a
 * memcpy call per row would cost more than the row. */
#include "row_table.h"

#include <stdlib.h>
#include <string.h>

#include "optimizer.h"
#include "row_table_internal.h"
#include "util.h"

#define ROW_TABLE_INITIAL_CAP 64u /* index slots of a new table */
#define ROW_TABLE_PREFETCH 16u    /* how many rows ahead the batch loops prefetch */
#define ROW_TABLE_LINE 64u        /* bytes of a cache line: no index slot straddles two */

static float *row_at(const row_table *t, uint32_t r) {
    return row_table_row_at(t, r);
}

static uint64_t *step_at(const row_table *t, uint32_t r) {
    return row_table_step_at(t, r);
}

/* Prefetches a row record's cache lines (for a write when `write`). */
static inline void prefetch_record(const row_table *t, const float *record, int write) {
    const char *p = (const char *)record, *end = p + (size_t)t->pitch * sizeof(float);
    for (p = (const char *)((uintptr_t)p & ~(uintptr_t)(ROW_TABLE_LINE - 1)); p < end;
         p += ROW_TABLE_LINE) {
        if (write)
            __builtin_prefetch(p, 1);
        else
            __builtin_prefetch(p, 0);
    }
}

static void index_place(row_index_slot *index, uint64_t mask, uint64_t id, uint64_t hash,
                        uint32_t row) {
    uint64_t i = hash & mask;
    while (index[i].row != ROW_TABLE_NONE)
        i = (i + 1) & mask;
    index[i].id = id;
    index[i].row = row;
}

/* A cap-slot index (cap >= 4), every slot empty, aligned to a cache line. */
static row_index_slot *index_alloc(uint64_t cap) {
    row_index_slot *index = aligned_alloc(ROW_TABLE_LINE, cap * sizeof *index);
    if (index)
        memset(index, 0xff, cap * sizeof *index); /* row ROW_TABLE_NONE */
    return index;
}

/* ------------------------------------------------------------------ life cycle --- */

ps_status row_table_create(const row_table_opts *opts, row_table **ret_table) {
    row_table *t = calloc(1, sizeof *t);
    if (!t)
        return PS_STATUS_NO_MEMORY;
    t->spec = *opts->spec;
    t->slots = optim_spec_slots(t->spec.optimizer);
    t->stride = t->spec.dim * (1 + t->slots);
    t->pitch = (t->stride + 1) / 2 * 2 + 2;
    t->salt = opts->salt;
    uint64_t row_bytes = (uint64_t)t->pitch * sizeof(float);
    t->slab_shift = 16; /* 64 Ki rows: ROW_TABLE_SLAB_MAX_ROWS */
    while (t->slab_shift > 1 && (row_bytes << t->slab_shift) > ROW_TABLE_SLAB_BYTES)
        t->slab_shift--;
    t->index = index_alloc(ROW_TABLE_INITIAL_CAP);
    if (!t->index)
        goto fail;
    t->mask = ROW_TABLE_INITIAL_CAP - 1;
    if (t->slots) {
        t->fresh = malloc((size_t)t->slots * t->spec.dim * sizeof(float));
        if (!t->fresh)
            goto fail;
        optim_spec defaults;
        optim_spec_defaults(t->spec.optimizer, &defaults);
        optimizer_state_init(&defaults, t->spec.dim, t->fresh);
    }
    *ret_table = t;
    return PS_STATUS_OK;
fail:
    row_table_destroy(t);
    return PS_STATUS_NO_MEMORY;
}

void row_table_destroy(row_table *t) {
    if (!t)
        return;
    row_table_unpin(t);
    for (uint32_t i = 0; i < t->nslabs; i++)
        free(t->slabs[i].rows);
    free(t->slabs);
    free(t->free_rows);
    free(t->index);
    free(t->fresh);
    free(t);
}

const table_spec *row_table_spec(const row_table *t) {
    return &t->spec;
}

uint64_t row_table_count(const row_table *t) {
    return t->count;
}

uint64_t row_table_generation(const row_table *t) {
    return t->generation;
}

uint64_t row_table_free(const row_table *t) {
    return t->n_free;
}

uint32_t row_table_slots(const row_table *t) {
    return t->slots;
}

uint64_t row_table_row_bytes(const row_table *t) {
    return (uint64_t)t->pitch * sizeof(float) + ROW_TABLE_INDEX_BYTES_PER_ROW;
}

/* ------------------------------------------------------------------ index --- */

/* The row of `id`, or ROW_TABLE_NONE: linear probing from the home slot to the id or
 * an empty slot. (Probing by whole cache lines, with the slots of a line compared
 * without branches, measured slower on the development machines.) */
static uint32_t probe(const row_table *t, uint64_t id, uint64_t hash) {
    for (uint64_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        const row_index_slot *s = &t->index[i];
        if (s->row == ROW_TABLE_NONE || s->id == id)
            return s->row;
    }
}

/* Looks up ids[i] for every i (all), or only those whose rows[i] is ROW_TABLE_NONE. */
static size_t find(const row_table *t, size_t n, const uint64_t *ids, const uint64_t *hashes,
                   uint32_t *rows, bool all) {
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t ahead = i + ROW_TABLE_PREFETCH;
        if (ahead < n && (all || rows[ahead] == ROW_TABLE_NONE))
            __builtin_prefetch(&t->index[hashes[ahead] & t->mask]);
        if (!all && rows[i] != ROW_TABLE_NONE)
            continue;
        rows[i] = probe(t, ids[i], hashes[i]);
        missing += rows[i] == ROW_TABLE_NONE;
    }
    return missing;
}

size_t row_table_find(const row_table *t, size_t n, const uint64_t *ids, const uint64_t *hashes,
                      uint32_t *rows) {
    return find(t, n, ids, hashes, rows, true);
}

size_t row_table_find_missing(const row_table *t, size_t n, const uint64_t *ids,
                              const uint64_t *hashes, uint32_t *rows) {
    return find(t, n, ids, hashes, rows, false);
}

static ps_status index_grow(row_table *t, uint64_t rows) {
    uint64_t cap = t->mask + 1;
    if (rows * 2 <= cap)
        return PS_STATUS_OK;
    while (rows * 2 > cap)
        cap *= 2;
    row_index_slot *index = index_alloc(cap);
    if (!index)
        return PS_STATUS_NO_MEMORY;
    for (uint64_t i = 0; i <= t->mask; i++) {
        const row_index_slot *s = &t->index[i];
        if (s->row != ROW_TABLE_NONE)
            index_place(index, cap - 1, s->id, row_table_hash(t->salt, s->id), s->row);
    }
    if (t->pin.index == t->index)
        t->pin.index_owned = true; /* a pin still reads it: it frees it */
    else
        free(t->index);
    t->index = index;
    t->mask = cap - 1;
    return PS_STATUS_OK;
}

static ps_status slabs_grow(row_table *t, uint64_t rows) {
    const size_t slab_rows = (size_t)1 << t->slab_shift;
    while ((uint64_t)t->nslabs * slab_rows < rows) {
        if (t->nslabs == t->slabs_cap) {
            uint32_t cap = t->slabs_cap ? t->slabs_cap * 2 : 16;
            row_slab *slabs = realloc(t->slabs, cap * sizeof *slabs);
            if (!slabs)
                return PS_STATUS_NO_MEMORY;
            t->slabs = slabs;
            t->slabs_cap = cap;
        }
        const size_t bytes = row_table_slab_bytes(t);
        float *mem = aligned_alloc(ROW_TABLE_LINE,
                                   (bytes + ROW_TABLE_LINE - 1) & ~(size_t)(ROW_TABLE_LINE - 1));
        if (!mem)
            return PS_STATUS_NO_MEMORY;
        t->slabs[t->nslabs++].rows = mem;
    }
    return PS_STATUS_OK;
}

ps_status row_table_reserve(row_table *t, uint64_t extra) {
    if (extra > ROW_TABLE_MAX_ROWS - t->count)
        return PS_STATUS_RESOURCE_EXHAUSTED;
    ps_status st = index_grow(t, t->count + extra);
    if (st == PS_STATUS_OK) /* as if no free row were taken (none are while pinned) */
        st = slabs_grow(t, t->next_row + extra);
    return st;
}

uint32_t row_table_add(row_table *t, uint64_t id, uint64_t hash) {
    /* a free number only without a pin: the pin reads the rows below its count */
    uint32_t r = t->n_free && !t->pin.index ? t->free_rows[--t->n_free] : (uint32_t)t->next_row++;
    t->count++;
    index_place(t->index, t->mask, id, hash, r);
    float *row = row_at(t, r);
    table_spec_init_row(&t->spec, id, row);
    if (t->slots)
        memcpy(row + t->spec.dim, t->fresh, (size_t)t->slots * t->spec.dim * sizeof(float));
    *step_at(t, r) = 0;
    return r;
}

/* Takes slot i out of the index: the slots after it in its run move back into the hole
 * when their home lies at or before it (cyclically), so every id stays reachable from
 * its home without tombstones. */
static void index_take_out(row_table *t, uint64_t i) {
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        const row_index_slot *s = &t->index[j];
        if (s->row == ROW_TABLE_NONE)
            break;
        uint64_t home = row_table_hash(t->salt, s->id) & t->mask;
        /* s may fill the hole at i when i lies cyclically in [home, j) */
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->index[i] = *s;
            i = j;
        }
    }
    t->index[i].row = ROW_TABLE_NONE;
    t->index[i].id = UINT64_MAX;
}

ps_status row_table_remove(row_table *t, size_t n, const uint64_t *ids, const uint64_t *hashes,
                           uint64_t *ret_removed) {
    *ret_removed = 0;
    if (t->pin.index)
        return PS_STATUS_FAILED_PRECONDITION;
    /* room for every number first: then nothing fails */
    if (!ps_reserve((void **)&t->free_rows, &t->cap_free, t->n_free + n, sizeof *t->free_rows, 64))
        return PS_STATUS_NO_MEMORY;
    uint64_t removed = 0;
    for (size_t k = 0; k < n; k++) {
        for (uint64_t i = hashes[k] & t->mask;; i = (i + 1) & t->mask) {
            const row_index_slot *s = &t->index[i];
            if (s->row == ROW_TABLE_NONE)
                break; /* not held (or named twice) */
            if (s->id != ids[k])
                continue;
            t->free_rows[t->n_free++] = s->row;
            index_take_out(t, i);
            t->count--;
            removed++;
            break;
        }
    }
    t->generation += removed > 0;
    *ret_removed = removed;
    return PS_STATUS_OK;
}

size_t row_table_scan(const row_table *t, uint64_t *slot, uint64_t max_slots,
                      bool (*accept)(void *arg, uint64_t id), void *arg, uint64_t *ids,
                      size_t max_ids) {
    size_t got = 0;
    uint64_t i = *slot, end = i + max_slots > t->mask + 1 ? t->mask + 1 : i + max_slots;
    for (; i < end && got < max_ids; i++) {
        const row_index_slot *s = &t->index[i];
        if (s->row != ROW_TABLE_NONE && accept(arg, s->id))
            ids[got++] = s->id;
    }
    *slot = i;
    return got;
}

uint64_t row_table_slots_total(const row_table *t) {
    return t->mask + 1;
}

ps_status row_table_compact(row_table *t, uint64_t *ret_freed) {
    if (ret_freed)
        *ret_freed = 0;
    if (t->pin.index)
        return PS_STATUS_FAILED_PRECONDITION;
    const uint64_t target = t->count;
    size_t holes = 0;
    for (size_t k = 0; k < t->n_free; k++) /* the free numbers below the count, in place */
        if (t->free_rows[k] < target)
            t->free_rows[holes++] = t->free_rows[k];
    for (uint64_t i = 0; i <= t->mask && holes > 0; i++) {
        row_index_slot *s = &t->index[i];
        if (s->row == ROW_TABLE_NONE || s->row < target)
            continue;
        uint32_t to = t->free_rows[--holes];
        memcpy(row_at(t, to), row_at(t, s->row), (size_t)t->stride * sizeof(float));
        *step_at(t, to) = *step_at(t, s->row);
        s->row = to;
        t->generation++;
    }
    t->n_free = 0;
    t->next_row = target;
    const uint64_t slab_rows = (uint64_t)1 << t->slab_shift;
    uint32_t keep = (uint32_t)((target + slab_rows - 1) >> t->slab_shift);
    uint64_t freed = 0;
    while (t->nslabs > keep) {
        free(t->slabs[--t->nslabs].rows);
        freed += row_table_slab_bytes(t);
    }
    if (ret_freed)
        *ret_freed = freed;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ batches --- */

void row_table_read(const row_table *t, size_t n, const uint32_t *rows, float *out,
                    float *state_out, uint64_t *steps_out) {
    const size_t dim = t->spec.dim, state_len = (size_t)t->slots * dim;
    for (size_t i = 0; i < n; i++) {
        if (i + ROW_TABLE_PREFETCH < n)
            __builtin_prefetch(row_at(t, rows[i + ROW_TABLE_PREFETCH]));
        const float *row = row_at(t, rows[i]);
        memcpy(out + i * dim, row, dim * sizeof(float));
        if (state_out && state_len)
            memcpy(state_out + i * state_len, row + dim, state_len * sizeof(float));
        if (steps_out)
            steps_out[i] = *step_at(t, rows[i]);
    }
}

void row_table_steps(const row_table *t, size_t n, const uint32_t *rows, uint64_t *steps_out) {
    for (size_t i = 0; i < n; i++) {
        if (i + ROW_TABLE_PREFETCH < n)
            __builtin_prefetch(step_at(t, rows[i + ROW_TABLE_PREFETCH]));
        steps_out[i] = *step_at(t, rows[i]);
    }
}

void row_table_gather(const row_table *t, size_t n, const uint32_t *rows, uint32_t planes,
                      const float *fresh, float *out) {
    const size_t dim = t->spec.dim, plane = n * dim;
    const uint32_t shift = t->slab_shift, mask = (1u << shift) - 1;
    for (size_t i = 0; i < n; i++) {
        if (i + ROW_TABLE_PREFETCH < n) {
            uint32_t ahead = rows[i + ROW_TABLE_PREFETCH];
            prefetch_record(t, row_table_record(t, &t->slabs[ahead >> shift], ahead & mask), 0);
        }
        float *row = row_table_record(t, &t->slabs[rows[i] >> shift], rows[i] & mask);
        const float *state = fresh && *row_table_record_step(t, row) == 0 ? fresh : row + dim;
        if (dim == 1) { /* a memcpy call per float would cost more than the row */
            out[i] = row[0];
            for (uint32_t p = 1; p < planes; p++)
                out[p * plane + i] = state[p - 1];
            continue;
        }
        memcpy(out + i * dim, row, dim * sizeof(float));
        for (uint32_t p = 1; p < planes; p++)
            memcpy(out + p * plane + i * dim, state + (p - 1) * dim, dim * sizeof(float));
    }
}

void row_table_scatter(row_table *t, size_t n, const uint32_t *rows, uint32_t planes,
                       const float *in, bool bump_steps) {
    const size_t dim = t->spec.dim, plane = n * dim;
    const uint32_t shift = t->slab_shift, mask = (1u << shift) - 1;
    for (size_t i = 0; i < n; i++) {
        if (i + ROW_TABLE_PREFETCH < n) {
            uint32_t ahead = rows[i + ROW_TABLE_PREFETCH];
            prefetch_record(t, row_table_record(t, &t->slabs[ahead >> shift], ahead & mask), 1);
        }
        float *row = row_table_record(t, &t->slabs[rows[i] >> shift], rows[i] & mask);
        if (dim == 1) {
            for (uint32_t p = 0; p < planes; p++)
                row[p] = in[p * plane + i];
        } else {
            for (uint32_t p = 0; p < planes; p++)
                memcpy(row + p * dim, in + p * plane + i * dim, dim * sizeof(float));
        }
        *row_table_record_step(t, row) += bump_steps;
    }
}
