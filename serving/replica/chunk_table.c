/* chunk_table.c: see chunk_table.h. Chunks live in an array in the order they were
 * added; an open-addressing index (twice the capacity, a power of two) maps keys to
 * array positions. */
#include <stdlib.h>

#include "chunk_table.h"

typedef struct chunk_state {
    chunk_table_entry e;
    uint64_t held;     /* version held; 0 = not filled yet */
    uint64_t want;     /* highest version announced that could not be applied */
    uint64_t mark_gen; /* generation of the last re-pull mark; 0 = none */
    bool repull;       /* marked for a re-pull */
} chunk_state;

struct chunk_table {
    chunk_state *chunks;
    size_t n, cap;
    uint32_t *slots; /* chunk index + 1; 0 = empty */
    size_t n_slots;  /* power of two, at least 2 * cap */
    size_t stale;    /* chunks for which is_stale holds */
    uint64_t generation;
    uint64_t version_sum; /* of every chunk's held version, mod 2^64 */
};

static bool is_stale(const chunk_state *c) {
    return c->repull || c->want > c->held;
}

static size_t slot_of(const chunk_table *t, uint64_t key) {
    return (size_t)(key * 0x9E3779B97F4A7C15ull >> 11) & (t->n_slots - 1);
}

ps_status chunk_table_create(size_t capacity, chunk_table **ret_table) {
    if (capacity == 0 || capacity >= UINT32_MAX || !ret_table)
        return PS_STATUS_INVALID_ARGUMENT;
    size_t n_slots = 16;
    while (n_slots < capacity * 2)
        n_slots *= 2;
    chunk_table *t = calloc(1, sizeof *t);
    if (!t)
        return PS_STATUS_NO_MEMORY;
    t->chunks = calloc(capacity, sizeof *t->chunks);
    t->slots = calloc(n_slots, sizeof *t->slots);
    if (!t->chunks || !t->slots) {
        chunk_table_destroy(t);
        return PS_STATUS_NO_MEMORY;
    }
    t->cap = capacity;
    t->n_slots = n_slots;
    *ret_table = t;
    return PS_STATUS_OK;
}

void chunk_table_destroy(chunk_table *t) {
    if (!t)
        return;
    free(t->chunks);
    free(t->slots);
    free(t);
}

ps_status chunk_table_add(chunk_table *t, const chunk_table_entry *entry) {
    if (chunk_table_find(t, entry->key, NULL))
        return PS_STATUS_ALREADY_EXISTS;
    if (t->n == t->cap)
        return PS_STATUS_RESOURCE_EXHAUSTED;
    size_t j = slot_of(t, entry->key);
    while (t->slots[j])
        j = (j + 1) & (t->n_slots - 1);
    t->chunks[t->n] = (chunk_state){.e = *entry};
    t->slots[j] = (uint32_t)(t->n + 1);
    t->n++;
    return PS_STATUS_OK;
}

size_t chunk_table_count(const chunk_table *t) {
    return t->n;
}

const chunk_table_entry *chunk_table_at(const chunk_table *t, size_t i) {
    return &t->chunks[i].e;
}

bool chunk_table_find(const chunk_table *t, uint64_t key, size_t *ret_index) {
    for (size_t j = slot_of(t, key);; j = (j + 1) & (t->n_slots - 1)) {
        uint32_t v = t->slots[j];
        if (!v)
            return false;
        if (t->chunks[v - 1].e.key == key) {
            if (ret_index)
                *ret_index = v - 1;
            return true;
        }
    }
}

uint64_t chunk_table_held(const chunk_table *t, size_t i) {
    return t->chunks[i].held;
}

chunk_table_action chunk_table_decide(const chunk_table *t, size_t i, bool add, uint64_t version,
                                      uint64_t prev_version, size_t value_floats) {
    const chunk_state *c = &t->chunks[i];
    if (c->held >= version)
        return CHUNK_TABLE_SKIP;
    if (value_floats != c->e.len)
        return CHUNK_TABLE_STALE;
    if (!add)
        return CHUNK_TABLE_ASSIGN;
    if (c->held > 0 && c->held == prev_version)
        return CHUNK_TABLE_ADD;
    return CHUNK_TABLE_STALE;
}

/* Runs a change to chunk c, keeping the stale count right. */
static void restale(chunk_table *t, chunk_state *c, bool was_stale) {
    bool now = is_stale(c);
    if (was_stale && !now)
        t->stale--;
    else if (!was_stale && now)
        t->stale++;
}

/* Only ever raises a chunk's version, so the sum only grows. */
static void hold(chunk_table *t, chunk_state *c, uint64_t version) {
    t->version_sum += version - c->held;
    c->held = version;
}

void chunk_table_set_applied(chunk_table *t, size_t i, uint64_t version) {
    chunk_state *c = &t->chunks[i];
    bool was = is_stale(c);
    if (version > c->held)
        hold(t, c, version);
    restale(t, c, was);
}

void chunk_table_set_wanted(chunk_table *t, size_t i, uint64_t version) {
    chunk_state *c = &t->chunks[i];
    bool was = is_stale(c);
    if (version > c->want)
        c->want = version;
    restale(t, c, was);
}

size_t chunk_table_repull_mark(chunk_table *t, bool (*pred)(uint64_t key, void *arg), void *arg) {
    size_t marked = 0;
    t->generation++;
    for (size_t i = 0; i < t->n; i++) {
        chunk_state *c = &t->chunks[i];
        if (pred && !pred(c->e.key, arg))
            continue;
        bool was = is_stale(c);
        c->repull = true;
        c->mark_gen = t->generation;
        restale(t, c, was);
        marked++;
    }
    return marked;
}

uint64_t chunk_table_generation(const chunk_table *t) {
    return t->generation;
}

bool chunk_table_set_pulled(chunk_table *t, size_t i, uint64_t version, uint64_t generation) {
    chunk_state *c = &t->chunks[i];
    bool was = is_stale(c);
    bool copy = version > c->held;
    if (copy)
        hold(t, c, version);
    if (c->mark_gen <= generation)
        c->repull = false;
    restale(t, c, was);
    return copy;
}

bool chunk_table_is_stale(const chunk_table *t, size_t i) {
    return is_stale(&t->chunks[i]);
}

size_t chunk_table_stale_count(const chunk_table *t) {
    return t->stale;
}

size_t chunk_table_stale_list(const chunk_table *t, size_t *ret_indices, size_t cap) {
    size_t m = 0;
    for (size_t i = 0; i < t->n && m < cap; i++)
        if (is_stale(&t->chunks[i]))
            ret_indices[m++] = i;
    return m;
}

bool chunk_table_filled(const chunk_table *t) {
    for (size_t i = 0; i < t->n; i++)
        if (t->chunks[i].held == 0)
            return false;
    return true;
}

uint64_t chunk_table_version_sum(const chunk_table *t) {
    return t->version_sum;
}
