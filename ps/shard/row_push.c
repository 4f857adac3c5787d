/* row_push.c: PushRows into the row store (see row_store.h). Before the table's lock:
 * every check that needs no row (names, spec, op, optimizer, lengths, unique ids, finite
 * values) and every allocation (one scratch block). Under the table's read lock: find
 * the rows (the index lookups, the longest pass, run side by side for concurrent
 * pushes). Under its write lock: find them all again if rows were removed or moved
 * meanwhile, else only those that were missing; make the missing rows, compute every
 * result into the scratch, check that all are finite, and only then copy them into the
 * rows, so a failure changes no row. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optimizer.h"
#include "row_store_internal.h"
#include "shard_limits.h"
#include "util.h"

#define ROW_PUSH_PREFETCH 16u /* how many ids ahead the unique check prefetches */
/* Floats of a run: gathered, computed and checked while they stay in the core's cache. */
#define ROW_PUSH_RUN_FLOATS (32u * 1024u)

/* What a push needs beyond the request, all in one scratch block (mem). */
typedef struct push_work {
    size_t m;            /* rows to apply: n less the skipped ones */
    uint64_t skipped;    /* rows skipped for non-finite gradients */
    const uint64_t *ids; /* m ids: the push's, or `kept` when rows were skipped */
    uint64_t *kept;      /* the ids of the rows not skipped */
    uint64_t *hashes;    /* m: row_table_hash of each id */
    uint64_t *steps;     /* m: step counts (Adam only) */
    uint64_t *set;       /* the unique-id check's hash set (set_cap entries) */
    size_t set_cap;
    uint32_t *rows; /* m: row numbers */
    float *grads;   /* m * dim: the values as aligned floats (unless in_place) */
    /* ADD and OPTIMIZE pushes whose values are all finite read them where they lie (in
     * the request's pieces), run after run, from this cursor; a run that straddles two
     * pieces, or lies unaligned, is copied into bounce (a run: max(run, dim) floats, or
     * fewer when the push holds fewer) */
    bool in_place;
    ps_bytes_cursor cur;
    ps_bytes one;
    float *bounce;
    float *work;     /* m * planes * dim: the results, run after run */
    float *fresh;    /* slots * dim: the state a row starts its first step from */
    uint32_t planes; /* floats per weight computed: 1, or 1 + slots for OPTIMIZE */
    void *mem;       /* the scratch block (row_store_scratch_take) */
    size_t mem_bytes;
} push_work;

static ps_status push_check(const row_push *p, char *err, size_t err_len) {
    ps_status st = row_store_check_request(p->model, p->table, p->spec, p->n, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    if (p->op != ROW_OP_ASSIGN && p->op != ROW_OP_ADD && p->op != ROW_OP_OPTIMIZE) {
        ps_set_err(err, err_len, "unknown push op %d", (int)p->op);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (p->op == ROW_OP_OPTIMIZE) {
        char why[200] = "";
        if (!p->optimizer || optim_spec_check(p->optimizer, why, sizeof why) != PS_STATUS_OK) {
            ps_set_err(err, err_len, "table %s/%s: bad optimizer: %s", p->model, p->table,
                       p->optimizer ? why : "none given for an OPTIMIZE push");
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (p->optimizer->kind != p->spec->optimizer) {
            ps_set_err(err, err_len,
                       "table %s/%s keeps %s state but the push asks for %s: the optimizer "
                       "kind must be the table's",
                       p->model, p->table, optim_kind_name(p->spec->optimizer),
                       optim_kind_name(p->optimizer->kind));
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    const uint64_t want = (uint64_t)p->n * p->spec->dim * sizeof(float);
    if (p->values_len != want || want > SHARD_MAX_VALUE_BYTES) {
        ps_set_err(err, err_len,
                   "push carries %zu value bytes but %zu rows of dim %u need %llu (at most %u "
                   "bytes per push)",
                   p->values_len, p->n, p->spec->dim, (unsigned long long)want,
                   SHARD_MAX_VALUE_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* Carves every scratch array from one block. */
static ps_status push_alloc(row_store *rs, const row_push *p, push_work *w) {
    const size_t n = p->n, dim = p->spec->dim;
    const uint32_t slots = optim_spec_slots(p->spec->optimizer);
    w->planes = p->op == ROW_OP_OPTIMIZE ? 1 + slots : 1;
    w->set_cap = 16;
    while (w->set_cap < 2 * n)
        w->set_cap *= 2;
    const size_t u64s = w->set_cap + 3 * n, u32s = n + (n & 1);
    const size_t run = dim > ROW_PUSH_RUN_FLOATS ? dim : ROW_PUSH_RUN_FLOATS;
    const size_t bounce = n * dim < run ? n * dim : run; /* no more than the values */
    const size_t floats = n * dim * (1 + w->planes) + (size_t)slots * dim + bounce;
    uint8_t *mem = row_store_scratch_take(rs, u64s * 8 + u32s * 4 + floats * 4, &w->mem_bytes);
    if (!mem)
        return PS_STATUS_NO_MEMORY;
    w->mem = mem;
    w->set = (uint64_t *)mem;
    w->hashes = w->set + w->set_cap;
    w->kept = w->hashes + n;
    w->steps = w->kept + n;
    w->rows = (uint32_t *)(w->steps + n);
    w->grads = (float *)(w->rows + u32s);
    w->work = w->grads + n * dim;
    w->fresh = w->work + n * dim * w->planes;
    w->bounce = w->fresh + (size_t)slots * dim;
    return PS_STATUS_OK;
}

/* The next len floats of the values (len at most the bounce's size): where they lie
 * when they are contiguous and aligned, else copied into the bounce. */
static const float *values_next(push_work *w, size_t len) {
    ps_bytes_cursor at = w->cur;
    const uint8_t *d = NULL;
    size_t got = ps_bytes_next(&w->cur, len * sizeof(float), &d);
    if (got == len * sizeof(float) && (uintptr_t)d % _Alignof(float) == 0)
        return (const float *)d;
    w->cur = at;
    (void)ps_bytes_take(&w->cur, w->bounce, len * sizeof(float)); /* length checked */
    return w->bounce;
}

/* Whether every value is finite, read where they lie from the cursor (which then
 * starts again). */
static bool values_finite_in_place(const row_push *p, push_work *w) {
    const size_t total = p->n * p->spec->dim;
    const ps_bytes_cursor start = w->cur;
    bool finite = true;
    for (size_t at = 0; finite && at < total; at += ROW_PUSH_RUN_FLOATS) {
        size_t len = total - at < ROW_PUSH_RUN_FLOATS ? total - at : ROW_PUSH_RUN_FLOATS;
        finite = optimizer_all_finite(values_next(w, len), len);
    }
    w->cur = start;
    return finite;
}

/* INVALID_ARGUMENT when an id appears twice. Hashes are a bijection of ids (a salted
 * mixer), so the set, open addressing with linear probing at load 1/2 at most, holds
 * hashes: 0 marks an empty slot, and the id hashing to 0 is tracked apart. */
static ps_status check_unique(const row_push *p, push_work *w, char *err, size_t err_len) {
    const size_t mask = w->set_cap - 1;
    bool zero_seen = false;
    memset(w->set, 0, w->set_cap * sizeof *w->set);
    for (size_t i = 0; i < p->n; i++) {
        if (i + ROW_PUSH_PREFETCH < p->n)
            __builtin_prefetch(&w->set[w->hashes[i + ROW_PUSH_PREFETCH] & mask], 1);
        const uint64_t h = w->hashes[i];
        bool dup = h == 0 && zero_seen;
        zero_seen |= h == 0;
        size_t j = h & mask;
        for (; h && w->set[j]; j = (j + 1) & mask)
            dup |= w->set[j] == h;
        if (dup) {
            ps_set_err(err, err_len,
                       "row id %llu appears more than once in one push (again at index %zu): "
                       "sum the gradients of a repeated id first",
                       (unsigned long long)p->ids[i], i);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (h)
            w->set[j] = h;
    }
    return PS_STATUS_OK;
}

/* ADD and OPTIMIZE pushes of finite values only: leaves them where they lie (in_place).
 * Otherwise copies the values into grads; refuses non-finite ones or, when the push may
 * skip them, drops their rows (compacting ids, hashes and grads). */
static ps_status take_values(const row_push *p, push_work *w, char *err, size_t err_len) {
    const size_t dim = p->spec->dim, total = p->n * dim;
    w->cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &w->one);
    if (p->op != ROW_OP_ASSIGN && values_finite_in_place(p, w)) {
        w->in_place = true; /* compute reads them run after run */
        w->ids = p->ids;
        w->m = p->n;
        return PS_STATUS_OK;
    }
    bool finite = true;
    for (size_t at = 0; at < total; at += ROW_PUSH_RUN_FLOATS) { /* copy, check while cached */
        size_t len = total - at < ROW_PUSH_RUN_FLOATS ? total - at : ROW_PUSH_RUN_FLOATS;
        (void)ps_bytes_take(&w->cur, w->grads + at, len * sizeof(float)); /* length checked */
        finite &= optimizer_all_finite(w->grads + at, len);
    }
    w->ids = p->ids;
    w->m = p->n;
    if (finite)
        return PS_STATUS_OK;
    const bool skip = p->op == ROW_OP_OPTIMIZE && p->skip_non_finite;
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        const float *g = w->grads + i * dim;
        if (optimizer_all_finite(g, dim)) {
            memmove(w->grads + k * dim, g, dim * sizeof(float));
            w->kept[k] = p->ids[i];
            w->hashes[k++] = w->hashes[i];
            continue;
        }
        if (skip)
            continue;
        size_t j = 0;
        while (isfinite(g[j]))
            j++;
        ps_set_err(err, err_len,
                   "row index %zu (id %llu) holds %s at element %zu: only finite values are "
                   "accepted%s",
                   i, (unsigned long long)p->ids[i], isnan(g[j]) ? "a NaN" : "an infinity", j,
                   p->op == ROW_OP_OPTIMIZE ? " (skip_non_finite skips such rows instead)" : "");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    w->ids = w->kept;
    w->skipped = p->n - k;
    w->m = k;
    return PS_STATUS_OK;
}

static ps_status push_prepare(row_store *rs, const row_push *p, push_work *w, char *err,
                              size_t err_len) {
    if (push_alloc(rs, p, w) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory preparing a push of %zu rows", p->n);
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < p->n; i++)
        w->hashes[i] = row_table_hash(rs->salt, p->ids[i]);
    ps_status st = check_unique(p, w, err, err_len);
    if (st == PS_STATUS_OK)
        st = take_values(p, w, err, err_len);
    if (st == PS_STATUS_OK && p->op == ROW_OP_OPTIMIZE)
        optimizer_state_init(p->optimizer, p->spec->dim, w->fresh);
    return st;
}

/* The end of the run of rows from `a` gathered and computed together (by one
 * optimizer_step): at most ROW_PUSH_RUN_FLOATS floats, so that a run stays in cache
 * from its gather to its check; for Adam, whose bias correction depends on the step,
 * rows of one step count. */
static size_t run_end(const row_push *p, const push_work *w, size_t a) {
    const size_t most = ROW_PUSH_RUN_FLOATS / ((size_t)w->planes * p->spec->dim);
    const size_t end = w->m - a < most ? w->m : a + (most ? most : 1);
    if (p->op != ROW_OP_OPTIMIZE || p->optimizer->kind != OPTIM_ADAM)
        return end;
    size_t b = a + 1;
    while (b < end && w->steps[b] == w->steps[a])
        b++;
    return b;
}

/* Gathers each run's rows plane by plane into work and computes the results there;
 * false when a result is not finite. */
static bool compute(row_table *t, const row_push *p, push_work *w) {
    const size_t dim = p->spec->dim;
    const float *fresh = p->op == ROW_OP_OPTIMIZE ? w->fresh : NULL;
    for (size_t a = 0, b; a < w->m; a = b) {
        b = run_end(p, w, a);
        const size_t len = (b - a) * dim; /* floats per plane of the run */
        float *base = w->work + a * w->planes * dim;
        const float *g = w->in_place ? values_next(w, len) : w->grads + a * dim;
        row_table_gather(t, b - a, w->rows + a, w->planes, fresh, base);
        if (p->op == ROW_OP_ADD) {
            for (size_t i = 0; i < len; i++)
                base[i] += g[i];
        } else {
            uint64_t step = p->optimizer->kind == OPTIM_ADAM ? w->steps[a] + 1 : 1;
            optimizer_step(p->optimizer, (uint32_t)len, base, g, base + len, step, base,
                           base + len);
        }
        if (!optimizer_all_finite(base, (uint64_t)len * w->planes))
            return false;
    }
    return true;
}

/* The first row (index among the m) with a non-finite result, or m. */
static size_t first_bad_row(const row_push *p, const push_work *w) {
    const size_t dim = p->spec->dim;
    for (size_t a = 0, b; a < w->m; a = b) {
        b = run_end(p, w, a);
        const float *base = w->work + a * w->planes * dim;
        for (size_t i = 0; i < b - a; i++)
            for (uint32_t q = 0; q < w->planes; q++)
                if (!optimizer_all_finite(base + (q * (b - a) + i) * dim, dim))
                    return a + i;
    }
    return w->m;
}

/* Writes the push to the journal, if any (table lock held; nothing changed yet). */
static ps_status journal(row_store *rs, const row_push *p, char *err, size_t err_len) {
    uint64_t lsn = 0;
    if (rs->journal.push &&
        rs->journal.push(rs->journal.arg, p, &lsn, err, err_len) != PS_STATUS_OK)
        return PS_STATUS_IO;
    if (p->ret_lsn)
        *p->ret_lsn = lsn;
    return PS_STATUS_OK;
}

/* Finds the push's rows under the table's read lock, so that pushes to one table look
 * up their ids side by side; push_apply keeps what it found when the table's
 * generation is unchanged. Returns how many ids were missing. */
static size_t find_shared(row_store_table *e, push_work *w, uint64_t *ret_generation) {
    pthread_rwlock_rdlock(&e->lock);
    size_t missing = row_table_find(e->rows, w->m, w->ids, w->hashes, w->rows);
    *ret_generation = row_table_generation(e->rows);
    pthread_rwlock_unlock(&e->lock);
    return missing;
}

/* With the write lock: w->rows as found by find_shared (`missing` of them absent, at
 * `generation`) made current, then the push applied. */
static ps_status push_apply(row_store *rs, row_store_table *e, const row_push *p, push_work *w,
                            size_t missing, uint64_t generation, uint64_t *ret_made, char *err,
                            size_t err_len) {
    if (generation != row_table_generation(e->rows)) /* rows removed or moved since */
        missing = row_table_find(e->rows, w->m, w->ids, w->hashes, w->rows);
    else if (missing) /* the found rows hold; the missing ones may have been made since */
        missing = row_table_find_missing(e->rows, w->m, w->ids, w->hashes, w->rows);
    if (missing) {
        ps_status st = row_store_make_rows(rs, e, w->m, w->ids, w->hashes, w->rows, missing, true,
                                           ret_made, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (row_table_unshare(e->rows, w->m, w->rows) != PS_STATUS_OK) { /* an export's rows */
        ps_set_err(err, err_len,
                   "out of memory copying rows that a snapshot still reads: no row was changed");
        return PS_STATUS_NO_MEMORY;
    }
    if (p->op == ROW_OP_ASSIGN) { /* the values, checked finite, are the results */
        ps_status st = journal(rs, p, err, err_len);
        if (st == PS_STATUS_OK)
            row_table_scatter(e->rows, w->m, w->rows, 1, w->grads, false);
        return st;
    }
    if (p->op == ROW_OP_OPTIMIZE && p->optimizer->kind == OPTIM_ADAM)
        row_table_steps(e->rows, w->m, w->rows, w->steps);
    if (!compute(e->rows, p, w)) {
        size_t bad = first_bad_row(p, w);
        ps_set_err(err, err_len,
                   "row id %llu of table %s/%s would not be finite after this push (a weight or "
                   "optimizer state overflows): no row was changed",
                   (unsigned long long)w->ids[bad < w->m ? bad : 0], e->model, e->table);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = journal(rs, p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    for (size_t a = 0, b; a < w->m; a = b) {
        b = run_end(p, w, a);
        row_table_scatter(e->rows, b - a, w->rows + a, w->planes,
                          w->work + a * w->planes * p->spec->dim, p->op == ROW_OP_OPTIMIZE);
    }
    return PS_STATUS_OK;
}

ps_status row_store_push(row_store *rs, const row_push *p, uint64_t *ret_created,
                         uint64_t *ret_skipped, char *err, size_t err_len) {
    ps_status st = push_check(p, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    push_work w = {0};
    row_store_table *e;
    uint64_t made = 0;
    st = push_prepare(rs, p, &w, err, err_len);
    if (st == PS_STATUS_OK)
        st = row_store_table_get(rs, p->model, p->table, p->spec, &e, err, err_len);
    if (st == PS_STATUS_OK) {
        uint64_t generation;
        size_t missing = find_shared(e, &w, &generation);
        pthread_rwlock_wrlock(&e->lock);
        st = push_apply(rs, e, p, &w, missing, generation, &made, err, err_len);
        pthread_rwlock_unlock(&e->lock);
    }
    if (st == PS_STATUS_OK) {
        atomic_fetch_add(&rs->skipped, w.skipped);
        if (ret_created)
            *ret_created = made;
        if (ret_skipped)
            *ret_skipped = w.skipped;
    }
    row_store_scratch_give(rs, w.mem, w.mem_bytes);
    return st;
}
