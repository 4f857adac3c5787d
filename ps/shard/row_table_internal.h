/* row_table_internal.h: one sparse table's private layout (see row_table.h), shared by
 * row_table.c (index, slabs, batches) and row_table_pin.c (an export's point-in-time
 * view and whole-row writes). Nothing else includes it. */
#ifndef PS_SHARD_ROW_TABLE_INTERNAL_H
#define PS_SHARD_ROW_TABLE_INTERNAL_H

#include <stdbool.h>

#include "row_table.h"

typedef struct row_index_slot {
    uint64_t id;
    uint32_t row; /* ROW_TABLE_NONE: empty */
    uint32_t unused;
} row_index_slot;

/* A slab: slab_rows row records of `pitch` floats each, one after the other. A record
 * is the row's stride floats, a pad float when stride is odd, then its step count (8
 * bytes): a push reads and writes a row and its step in the same cache line or two. */
typedef struct row_slab {
    float *rows; /* slab_rows * pitch floats, 64-byte aligned; owns the allocation */
} row_slab;

/* An export's view of the table at one moment (row_table_pin); index NULL: no pin. */
typedef struct row_table_pin_view {
    row_index_slot *index; /* the index then (still the table's until it grows) */
    uint64_t mask;         /* its capacity - 1 */
    bool index_owned;      /* the table grew a new index: this one is the pin's to free */
    uint64_t count;        /* rows then: the pin reads rows below it only */
    uint32_t nslabs;       /* slabs holding those rows */
    row_slab *copies;      /* nslabs: a slab's rows as they were, copied before a write
                              changed them (rows NULL: not copied, the slab is unchanged) */
} row_table_pin_view;

struct row_table {
    table_spec spec;
    uint32_t slots;  /* optimizer state slots per weight */
    uint32_t stride; /* floats per row: dim * (1 + slots) */
    uint32_t pitch;  /* floats per row record: stride rounded up to even, + 2 (the step) */
    uint64_t salt;   /* mixed into every id's hash */
    row_index_slot *index;
    uint64_t mask;       /* index capacity - 1 (a power of two minus one) */
    uint64_t count;      /* rows held */
    uint64_t next_row;   /* row numbers below it were handed out (held or free) */
    uint64_t generation; /* bumped when a held id loses its row number (row_table_generation) */
    uint32_t *free_rows; /* numbers of removed rows, for row_table_add: n_free of cap */
    size_t n_free, cap_free;
    row_slab *slabs;        /* slabs[r >> slab_shift] holds row r */
    uint32_t nslabs;        /* slabs allocated */
    uint32_t slabs_cap;     /* entries of `slabs` */
    uint32_t slab_shift;    /* log2 of the rows per slab */
    float *fresh;           /* the state of a new row: slots * dim floats (NULL: no slots) */
    row_table_pin_view pin; /* an export's view, or none */
};

/* Bytes of one slab's allocation: its row records. */
static inline size_t row_table_slab_bytes(const row_table *t) {
    return ((size_t)1 << t->slab_shift) * t->pitch * sizeof(float);
}

/* Row record `at` of a slab: the row's floats, then (row_table_record_step) its step. */
static inline float *row_table_record(const row_table *t, const row_slab *s, uint32_t at) {
    return s->rows + (size_t)at * t->pitch;
}

static inline uint64_t *row_table_record_step(const row_table *t, float *record) {
    return (uint64_t *)(void *)(record + t->pitch - 2);
}

static inline float *row_table_row_at(const row_table *t, uint32_t r) {
    return row_table_record(t, &t->slabs[r >> t->slab_shift], r & ((1u << t->slab_shift) - 1));
}

static inline uint64_t *row_table_step_at(const row_table *t, uint32_t r) {
    return row_table_record_step(t, row_table_row_at(t, r));
}

#endif
