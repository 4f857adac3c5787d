/* row_table_pin.c: a sparse table's point-in-time view for an export (copy on write of
 * its slabs) and whole-row writes (see row_table.h, "pins"). */
#include <stdlib.h>
#include <string.h>

#include "row_table.h"
#include "row_table_internal.h"

ps_status row_table_pin(row_table *t) {
    if (t->pin.index)
        return PS_STATUS_FAILED_PRECONDITION;
    const uint32_t slab_rows = 1u << t->slab_shift;
    uint32_t nslabs = (uint32_t)((t->next_row + slab_rows - 1) >> t->slab_shift);
    row_slab *copies = calloc(nslabs ? nslabs : 1, sizeof *copies);
    if (!copies)
        return PS_STATUS_NO_MEMORY;
    t->pin = (row_table_pin_view){.index = t->index,
                                  .mask = t->mask,
                                  .index_owned = false,
                                  .count = t->next_row,
                                  .nslabs = nslabs,
                                  .copies = copies};
    return PS_STATUS_OK;
}

void row_table_unpin(row_table *t) {
    if (!t->pin.index)
        return;
    for (uint32_t i = 0; i < t->pin.nslabs; i++)
        free(t->pin.copies[i].rows);
    free(t->pin.copies);
    if (t->pin.index_owned)
        free(t->pin.index);
    memset(&t->pin, 0, sizeof t->pin);
}

uint64_t row_table_pin_count(const row_table *t) {
    return t->pin.index ? t->pin.count : 0;
}

uint64_t row_table_pin_slots(const row_table *t) {
    return t->pin.index ? t->pin.mask + 1 : 0;
}

ps_status row_table_unshare(row_table *t, size_t n, const uint32_t *rows) {
    if (!t->pin.index)
        return PS_STATUS_OK;
    const size_t bytes = row_table_slab_bytes(t);
    for (size_t i = 0; i < n; i++) {
        uint32_t s = rows[i] >> t->slab_shift;
        if (rows[i] >= t->pin.count || t->pin.copies[s].rows)
            continue;
        float *copy = malloc(bytes);
        if (!copy)
            return PS_STATUS_NO_MEMORY;
        memcpy(copy, t->slabs[s].rows, bytes);
        t->pin.copies[s].rows = copy;
    }
    return PS_STATUS_OK;
}

size_t row_table_pin_read(const row_table *t, uint64_t *cursor, size_t max, uint64_t *ids,
                          uint64_t *steps, float *values, float *state) {
    const size_t dim = t->spec.dim, state_len = (size_t)t->slots * dim;
    const uint32_t mask = (1u << t->slab_shift) - 1;
    size_t got = 0;
    uint64_t i = *cursor;
    for (; i <= t->pin.mask && got < max && t->pin.index; i++) {
        const row_index_slot *slot = &t->pin.index[i];
        if (slot->row == ROW_TABLE_NONE || slot->row >= t->pin.count)
            continue;
        const uint32_t s = slot->row >> t->slab_shift, at = slot->row & mask;
        const row_slab *slab = t->pin.copies[s].rows ? &t->pin.copies[s] : &t->slabs[s];
        float *row = row_table_record(t, slab, at);
        ids[got] = slot->id;
        steps[got] = *row_table_record_step(t, row);
        memcpy(values + got * dim, row, dim * sizeof(float));
        if (state_len)
            memcpy(state + got * state_len, row + dim, state_len * sizeof(float));
        got++;
    }
    *cursor = i;
    return got;
}

void row_table_write(row_table *t, size_t n, const uint32_t *rows, const float *values,
                     const float *state, const uint64_t *steps) {
    const size_t dim = t->spec.dim, state_len = (size_t)t->slots * dim;
    for (size_t i = 0; i < n; i++) {
        float *row = row_table_row_at(t, rows[i]);
        memcpy(row, values + i * dim, dim * sizeof(float));
        if (state_len)
            memcpy(row + dim, state + i * state_len, state_len * sizeof(float));
        *row_table_step_at(t, rows[i]) = steps[i];
    }
}
