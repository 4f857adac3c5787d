/* row_store_image.c: the row store's side of images (image_stores.h): a pin of every
 * table at one moment (row_table_pin: copy on write of the slabs pushes touch), read a
 * bounded batch at a time under each table's read lock, and installs that replace rows
 * whole. */
#include <stdlib.h>
#include <string.h>

#include "image_stores.h"
#include "optimizer.h"
#include "row_store_internal.h"
#include "util.h"

struct row_store_pin {
    row_store *rs;
    row_store_table **tables; /* ntables pinned (NULL once unpinned) */
    uint32_t ntables;
};

static void table_unpin(row_store_table *e) {
    pthread_rwlock_wrlock(&e->lock);
    row_table_unpin(e->rows);
    pthread_rwlock_unlock(&e->lock);
}

void row_store_pin_destroy(row_store_pin *pin) {
    if (!pin)
        return;
    for (uint32_t i = 0; i < pin->ntables; i++)
        if (pin->tables[i])
            table_unpin(pin->tables[i]);
    pthread_mutex_unlock(&pin->rs->export_lock);
    free(pin->tables);
    free(pin);
}

ps_status row_store_pin_create(row_store *rs, row_store_pin **ret_pin) {
    row_store_pin *pin = calloc(1, sizeof *pin);
    row_store_table **tables = calloc(rs->max_tables, sizeof *tables);
    if (!pin || !tables) {
        free(pin);
        free(tables);
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_lock(&rs->export_lock); /* one export at a time: one pin per table */
    *pin = (row_store_pin){.rs = rs, .tables = tables};
    *ret_pin = pin;
    return PS_STATUS_OK;
}

ps_status row_store_pin_take(row_store_pin *pin, image_held_fn held, void *held_arg,
                             uint64_t *ret_tables) {
    row_store *rs = pin->rs;
    pthread_rwlock_wrlock(&rs->lock);
    uint32_t n = rs->ntables, pinned = 0;
    for (uint32_t i = 0; i < n; i++)
        pthread_rwlock_wrlock(&rs->tables[i]->lock);
    ps_status st = held ? held(held_arg) : PS_STATUS_OK;
    for (; st == PS_STATUS_OK && pinned < n; pinned++) {
        pin->tables[pinned] = rs->tables[pinned];
        st = row_table_pin(pin->tables[pinned]->rows);
    }
    if (st != PS_STATUS_OK) { /* the one that failed is not pinned; the others go */
        for (uint32_t i = 0; i + 1 < pinned; i++)
            row_table_unpin(pin->tables[i]->rows);
        memset(pin->tables, 0, n * sizeof *pin->tables);
    }
    for (uint32_t i = 0; i < n; i++)
        pthread_rwlock_unlock(&rs->tables[i]->lock);
    pthread_rwlock_unlock(&rs->lock);
    if (st != PS_STATUS_OK)
        return st;
    pin->ntables = n;
    if (ret_tables)
        *ret_tables = n;
    return PS_STATUS_OK;
}

/* A batch's arrays, sized for the widest table. */
typedef struct rows_batch {
    size_t max; /* rows */
    uint64_t *ids, *steps;
    float *values, *state;
} rows_batch;

/* Keeps the rows whose key `accept` takes (moving them to the front); returns how many. */
static size_t batch_filter(rows_batch *b, size_t got, const row_store_table *e, uint32_t dim,
                           uint32_t slots, image_accept_fn accept, void *accept_arg) {
    if (!accept)
        return got;
    const uint64_t table_key = ps_key_table(e->model, e->table);
    const size_t sl = (size_t)slots * dim;
    size_t k = 0;
    for (size_t i = 0; i < got; i++) {
        if (!accept(accept_arg, ps_key_row_in(table_key, b->ids[i])))
            continue;
        b->ids[k] = b->ids[i];
        b->steps[k] = b->steps[i];
        memmove(b->values + k * dim, b->values + i * dim, dim * sizeof(float));
        if (sl)
            memmove(b->state + k * sl, b->state + i * sl, sl * sizeof(float));
        k++;
    }
    return k;
}

/* Visits one pinned table (then unpins it). */
static ps_status visit_table(row_store_table *e, rows_batch *b, image_accept_fn accept,
                             void *accept_arg, ps_status (*fn)(void *, const image_rows *),
                             void *arg, uint64_t *rows) {
    const table_spec spec = *row_table_spec(e->rows);
    const uint32_t slots = optim_spec_slots(spec.optimizer);
    const size_t row_bytes = 16 + (size_t)spec.dim * (1 + slots) * sizeof(float);
    size_t max = IMAGE_EXPORT_ROWS_BYTES / row_bytes;
    max = max < 1 ? 1 : max > b->max ? b->max : max;
    uint64_t cursor = 0, slots_total;
    ps_status st = PS_STATUS_OK;
    do {
        pthread_rwlock_rdlock(&e->lock);
        slots_total = row_table_pin_slots(e->rows);
        size_t got =
            row_table_pin_read(e->rows, &cursor, max, b->ids, b->steps, b->values, b->state);
        pthread_rwlock_unlock(&e->lock);
        got = batch_filter(b, got, e, spec.dim, slots, accept, accept_arg);
        if (got == 0)
            continue;
        image_rows r = {.model = e->model,
                        .table = e->table,
                        .spec = spec,
                        .n = got,
                        .ids = b->ids,
                        .steps = b->steps,
                        .values = b->values,
                        .state = slots ? b->state : NULL};
        *rows += got;
        st = fn ? fn(arg, &r) : PS_STATUS_OK;
    } while (st == PS_STATUS_OK && cursor < slots_total);
    return st;
}

ps_status row_store_pin_visit(row_store_pin *pin, image_accept_fn accept, void *accept_arg,
                              ps_status (*fn)(void *arg, const image_rows *rows), void *arg,
                              uint64_t *ret_rows) {
    /* the most rows of the narrowest row in one batch, and floats for the widest */
    rows_batch b = {.max = IMAGE_EXPORT_ROWS_BYTES / (16 + sizeof(float))};
    b.max = b.max > IMAGE_MAX_ROWS ? IMAGE_MAX_ROWS : b.max;
    b.ids = malloc(b.max * sizeof *b.ids);
    b.steps = malloc(b.max * sizeof *b.steps);
    b.values = malloc(IMAGE_EXPORT_ROWS_BYTES + TABLE_MAX_DIM * sizeof(float));
    b.state = malloc(IMAGE_EXPORT_ROWS_BYTES + TABLE_MAX_DIM * OPTIM_MAX_SLOTS * sizeof(float));
    uint64_t rows = 0;
    ps_status st = b.ids && b.steps && b.values && b.state ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    for (uint32_t i = 0; st == PS_STATUS_OK && i < pin->ntables; i++) {
        st = visit_table(pin->tables[i], &b, accept, accept_arg, fn, arg, &rows);
        table_unpin(pin->tables[i]); /* its copied slabs go now */
        pin->tables[i] = NULL;
    }
    free(b.ids);
    free(b.steps);
    free(b.values);
    free(b.state);
    if (ret_rows)
        *ret_rows = rows;
    return st;
}

/* ------------------------------------------------------------------ install --- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The checks that need no table: names, spec, count, values finite, ids unique. */
static ps_status install_check(const image_rows *r, uint64_t *sorted, char *err, size_t err_len) {
    ps_status st = row_store_check_request(r->model, r->table, &r->spec, r->n, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    const uint32_t slots = optim_spec_slots(r->spec.optimizer);
    const uint64_t sl = (uint64_t)r->n * slots * r->spec.dim;
    if (r->n > IMAGE_MAX_ROWS || !r->ids || !r->steps || !r->values || (slots && !r->state)) {
        ps_set_err(err, err_len, "rows image of %s/%s: %zu rows (1..%u) or an array missing",
                   r->model, r->table, r->n, IMAGE_MAX_ROWS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!optimizer_all_finite(r->values, (uint64_t)r->n * r->spec.dim) ||
        (sl && !optimizer_all_finite(r->state, sl))) {
        ps_set_err(err, err_len, "rows image of %s/%s holds a NaN or an infinity", r->model,
                   r->table);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    memcpy(sorted, r->ids, r->n * sizeof *sorted);
    qsort(sorted, r->n, sizeof *sorted, cmp_u64);
    for (size_t i = 1; i < r->n; i++) {
        if (sorted[i] == sorted[i - 1]) {
            ps_set_err(err, err_len, "rows image of %s/%s holds row id %llu twice", r->model,
                       r->table, (unsigned long long)sorted[i]);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return PS_STATUS_OK;
}

/* Under the table's write lock: make, unshare, journal, write. */
static ps_status install_locked(row_store *rs, row_store_table *e, const image_rows *r,
                                const uint64_t *hashes, uint32_t *rows, const image_encoded *rec,
                                image_journal_fn journal, void *journal_arg, uint64_t *ret_lsn,
                                char *err, size_t err_len) {
    size_t missing = row_table_find(e->rows, r->n, r->ids, hashes, rows);
    uint64_t made = 0;
    ps_status st = PS_STATUS_OK;
    if (missing)
        st = row_store_make_rows(rs, e, r->n, r->ids, hashes, rows, missing, true, &made, err,
                                 err_len);
    if (st == PS_STATUS_OK && row_table_unshare(e->rows, r->n, rows) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory copying rows that a snapshot still reads");
        st = PS_STATUS_NO_MEMORY;
    }
    if (st == PS_STATUS_OK && journal &&
        journal(journal_arg, rec, 1, ret_lsn, err, err_len) != PS_STATUS_OK)
        st = PS_STATUS_IO;
    if (st == PS_STATUS_OK)
        row_table_write(e->rows, r->n, rows, r->values, r->state, r->steps);
    return st;
}

ps_status row_store_install(row_store *rs, const image_rows *r, image_journal_fn journal,
                            void *journal_arg, uint64_t *ret_lsn, char *err, size_t err_len) {
    if (r->n == 0)
        return PS_STATUS_OK;
    uint64_t *sorted = malloc(r->n * sizeof *sorted), *hashes = malloc(r->n * sizeof *hashes);
    uint32_t *rows = malloc(r->n * sizeof *rows);
    image_encoded *rec = journal ? malloc(sizeof *rec) : NULL;
    ps_status st = PS_STATUS_NO_MEMORY;
    uint64_t lsn = 0;
    if (!sorted || !hashes || !rows || (journal && !rec)) {
        ps_set_err(err, err_len, "out of memory installing %zu rows", r->n);
        goto out;
    }
    st = install_check(r, sorted, err, err_len);
    if (st == PS_STATUS_OK && journal)
        st = image_encode_rows(r, rec, err, err_len);
    row_store_table *e = NULL;
    if (st == PS_STATUS_OK)
        st = row_store_table_get(rs, r->model, r->table, &r->spec, &e, err, err_len);
    if (st == PS_STATUS_OK) {
        for (size_t i = 0; i < r->n; i++)
            hashes[i] = row_table_hash(rs->salt, r->ids[i]);
        pthread_rwlock_wrlock(&e->lock);
        st = install_locked(rs, e, r, hashes, rows, rec, journal, journal_arg, &lsn, err, err_len);
        pthread_rwlock_unlock(&e->lock);
    }
out:
    free(sorted);
    free(hashes);
    free(rows);
    free(rec);
    if (st == PS_STATUS_OK && ret_lsn)
        *ret_lsn = lsn;
    return st;
}
