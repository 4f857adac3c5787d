/* row_store.c: the shard's sparse tables: the table list, names and specs, locks, the
 * quota, row making and pulls (see row_store.h). Pushes are in row_push.c. */
#include "row_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "row_store_internal.h"
#include "shard_limits.h"
#include "util.h"

/* ------------------------------------------------------------------ life cycle --- */

ps_status row_store_create(const row_store_opts *opts, row_store **ret_store) {
    row_store *rs = calloc(1, sizeof *rs);
    if (!rs)
        return PS_STATUS_NO_MEMORY;
    rs->quota = opts->quota;
    rs->max_tables = opts->max_tables ? opts->max_tables : ROW_STORE_DEFAULT_MAX_TABLES;
    snprintf(rs->name, sizeof rs->name, "%s", opts->name ? opts->name : "this shard");
    atomic_init(&rs->skipped, 0);
    /* The salt only has to be unknown to clients: the clock and an address will do. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rs->salt = row_table_hash((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                              (uint64_t)(uintptr_t)rs);
    rs->tables = calloc(rs->max_tables, sizeof *rs->tables);
    if (!rs->tables)
        goto fail_tables;
    if (pthread_rwlock_init(&rs->lock, NULL) != 0)
        goto fail_lock;
    if (pthread_mutex_init(&rs->scratch_lock, NULL) != 0)
        goto fail_scratch;
    if (pthread_mutex_init(&rs->export_lock, NULL) != 0)
        goto fail_export;
    *ret_store = rs;
    return PS_STATUS_OK;
fail_export:
    pthread_mutex_destroy(&rs->scratch_lock);
fail_scratch:
    pthread_rwlock_destroy(&rs->lock);
fail_lock:
    free(rs->tables);
fail_tables:
    free(rs);
    return PS_STATUS_NO_MEMORY;
}

void row_store_destroy(row_store *rs) {
    if (!rs)
        return;
    for (uint32_t i = 0; i < rs->ntables; i++) {
        row_store_table *e = rs->tables[i];
        if (rs->quota)
            quota_release(rs->quota, row_table_count(e->rows) * row_table_row_bytes(e->rows));
        pthread_rwlock_destroy(&e->lock);
        row_table_destroy(e->rows);
        free(e);
    }
    for (int i = 0; i < ROW_STORE_SCRATCH_KEEP; i++)
        free(rs->scratch[i]);
    pthread_mutex_destroy(&rs->export_lock);
    pthread_mutex_destroy(&rs->scratch_lock);
    pthread_rwlock_destroy(&rs->lock);
    free(rs->tables);
    free(rs);
}

void *row_store_scratch_take(row_store *rs, size_t bytes, size_t *ret_bytes) {
    bytes = (bytes + 63) / 64 * 64;
    void *mem = NULL;
    pthread_mutex_lock(&rs->scratch_lock);
    for (int i = 0; i < ROW_STORE_SCRATCH_KEEP && !mem; i++) {
        if (rs->scratch[i] && rs->scratch_bytes[i] >= bytes) {
            mem = rs->scratch[i];
            bytes = rs->scratch_bytes[i];
            rs->scratch[i] = NULL;
            rs->scratch_bytes[i] = 0;
        }
    }
    pthread_mutex_unlock(&rs->scratch_lock);
    if (!mem)
        mem = aligned_alloc(64, bytes);
    if (mem)
        *ret_bytes = bytes;
    return mem;
}

void row_store_scratch_give(row_store *rs, void *mem, size_t bytes) {
    if (mem && bytes <= ROW_STORE_SCRATCH_KEEP_BYTES) {
        pthread_mutex_lock(&rs->scratch_lock);
        for (int i = 0; i < ROW_STORE_SCRATCH_KEEP && mem; i++) {
            if (!rs->scratch[i]) {
                rs->scratch[i] = mem;
                rs->scratch_bytes[i] = bytes;
                mem = NULL;
            }
        }
        pthread_mutex_unlock(&rs->scratch_lock);
    }
    free(mem);
}

/* ------------------------------------------------------------------ tables --- */

static ps_status check_name(const char *what, const char *name, char *err, size_t err_len) {
    size_t len = name ? strnlen(name, ROW_STORE_MAX_NAME_BYTES + 1) : 0;
    if (len == 0 || len > ROW_STORE_MAX_NAME_BYTES) {
        ps_set_err(err, err_len, "the %s name must be 1..%u bytes long (got %s)", what,
                   ROW_STORE_MAX_NAME_BYTES, len ? "a longer one" : "none");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

ps_status row_store_check_request(const char *model, const char *table, const table_spec *spec,
                                  size_t n, char *err, size_t err_len) {
    ps_status st = check_name("model", model, err, err_len);
    if (st == PS_STATUS_OK)
        st = check_name("table", table, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    char why[200] = "";
    if (!spec || table_spec_check(spec, why, sizeof why) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "table %s/%s: bad spec: %s", model, table,
                   spec ? why : "none given");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (n > SHARD_MAX_KEYS_PER_REQUEST) {
        ps_set_err(err, err_len,
                   "%zu row ids in one request: at most %u (SHARD_MAX_KEYS_PER_REQUEST)", n,
                   SHARD_MAX_KEYS_PER_REQUEST);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

static bool spec_equal(const table_spec *a, const table_spec *b) {
    return a->dim == b->dim && a->init == b->init && a->init_scale == b->init_scale &&
           a->seed == b->seed && a->optimizer == b->optimizer;
}

static void spec_format(const table_spec *s, char *buf, size_t len) {
    snprintf(buf, len, "dim %u, init %s, scale %g, seed %llu, optimizer %s", s->dim,
             table_init_name(s->init), (double)s->init_scale, (unsigned long long)s->seed,
             optim_kind_name(s->optimizer));
}

static row_store_table *table_find(row_store *rs, const char *model, const char *table) {
    for (uint32_t i = 0; i < rs->ntables; i++)
        if (!strcmp(rs->tables[i]->model, model) && !strcmp(rs->tables[i]->table, table))
            return rs->tables[i];
    return NULL;
}

/* Adds the table (list write-locked; absent). */
static ps_status table_add(row_store *rs, const char *model, const char *table,
                           const table_spec *spec, row_store_table **ret_table, char *err,
                           size_t err_len) {
    if (rs->ntables == rs->max_tables) {
        ps_set_err(err, err_len,
                   "%s already holds %u sparse tables, the most it keeps (max_tables): table "
                   "%s/%s cannot be made",
                   rs->name, rs->max_tables, model, table);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    row_store_table *e = calloc(1, sizeof *e);
    if (!e)
        goto fail_entry;
    row_table_opts topts = {.spec = spec, .salt = rs->salt};
    if (row_table_create(&topts, &e->rows) != PS_STATUS_OK)
        goto fail_rows;
    if (pthread_rwlock_init(&e->lock, NULL) != 0)
        goto fail_lock;
    strcpy(e->model, model); /* lengths checked by row_store_check_request */
    strcpy(e->table, table);
    rs->tables[rs->ntables++] = e;
    *ret_table = e;
    return PS_STATUS_OK;
fail_lock:
    row_table_destroy(e->rows);
fail_rows:
    free(e);
fail_entry:
    ps_set_err(err, err_len, "out of memory making table %s/%s", model, table);
    return PS_STATUS_NO_MEMORY;
}

ps_status row_store_table_get(row_store *rs, const char *model, const char *table,
                              const table_spec *spec, row_store_table **ret_table, char *err,
                              size_t err_len) {
    ps_status st = PS_STATUS_OK;
    pthread_rwlock_rdlock(&rs->lock);
    row_store_table *e = table_find(rs, model, table);
    pthread_rwlock_unlock(&rs->lock);
    if (!e) {
        pthread_rwlock_wrlock(&rs->lock);
        e = table_find(rs, model, table); /* another request may have made it */
        if (!e)
            st = table_add(rs, model, table, spec, &e, err, err_len);
        pthread_rwlock_unlock(&rs->lock);
        if (st != PS_STATUS_OK)
            return st;
    }
    const table_spec *have = row_table_spec(e->rows); /* fixed once made: no lock needed */
    if (!spec_equal(have, spec)) {
        char a[160], b[160];
        spec_format(have, a, sizeof a);
        spec_format(spec, b, sizeof b);
        ps_set_err(err, err_len,
                   "table %s/%s on %s has spec (%s) but this request says (%s): every request "
                   "must carry the spec the table was made with",
                   model, table, rs->name, a, b);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    *ret_table = e;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ rows --- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* How many distinct ids among the n ids whose rows are ROW_TABLE_NONE. */
static ps_status count_distinct_missing(size_t n, const uint64_t *ids, const uint32_t *rows,
                                        size_t missing, uint64_t *ret_count) {
    uint64_t *tmp = malloc(missing * sizeof *tmp);
    if (!tmp)
        return PS_STATUS_NO_MEMORY;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i] == ROW_TABLE_NONE)
            tmp[k++] = ids[i];
    qsort(tmp, k, sizeof *tmp, cmp_u64);
    uint64_t distinct = 0;
    for (size_t i = 0; i < k; i++)
        distinct += i == 0 || tmp[i] != tmp[i - 1];
    free(tmp);
    *ret_count = distinct;
    return PS_STATUS_OK;
}

ps_status row_store_make_rows(row_store *rs, row_store_table *e, size_t n, const uint64_t *ids,
                              const uint64_t *hashes, uint32_t *rows, size_t missing,
                              bool ids_unique, uint64_t *ret_made, char *err, size_t err_len) {
    uint64_t k = missing;
    if (!ids_unique && missing > 1 &&
        count_distinct_missing(n, ids, rows, missing, &k) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory making %zu rows of table %s/%s", missing, e->model,
                   e->table);
        return PS_STATUS_NO_MEMORY;
    }
    const uint64_t bytes = k * row_table_row_bytes(e->rows);
    if (rs->quota && !quota_reserve(rs->quota, bytes)) {
        ps_set_err(err, err_len,
                   "%s holds %llu of its %llu bytes (--max-bytes): %llu new rows of table %s/%s "
                   "need %llu bytes more; raise --max-bytes, add shards or delete models",
                   rs->name, (unsigned long long)quota_used(rs->quota),
                   (unsigned long long)quota_max(rs->quota), (unsigned long long)k, e->model,
                   e->table, (unsigned long long)bytes);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    ps_status st = row_table_reserve(e->rows, k);
    if (st != PS_STATUS_OK) {
        if (rs->quota)
            quota_release(rs->quota, bytes);
        if (st == PS_STATUS_RESOURCE_EXHAUSTED)
            ps_set_err(err, err_len,
                       "table %s/%s on %s holds %llu rows: %llu more pass its limit "
                       "of %u rows (ROW_TABLE_MAX_ROWS)",
                       e->model, e->table, rs->name, (unsigned long long)row_table_count(e->rows),
                       (unsigned long long)k, ROW_TABLE_MAX_ROWS);
        else
            ps_set_err(err, err_len, "out of memory making %llu rows of table %s/%s",
                       (unsigned long long)k, e->model, e->table);
        return st;
    }
    for (size_t i = 0; i < n; i++) {
        if (rows[i] != ROW_TABLE_NONE)
            continue;
        /* a repeated id was made at its first place */
        if (ids_unique || row_table_find(e->rows, 1, &ids[i], &hashes[i], &rows[i]))
            rows[i] = row_table_add(e->rows, ids[i], hashes[i]);
    }
    *ret_made = k;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ pulls --- */

ps_status row_store_pull(row_store *rs, const char *model, const char *table,
                         const table_spec *spec, size_t n, const uint64_t *ids, float *out,
                         float *state_out, uint64_t *steps_out, uint64_t *ret_created, char *err,
                         size_t err_len) {
    row_store_table *e;
    ps_status st = row_store_check_request(model, table, spec, n, err, err_len);
    if (st == PS_STATUS_OK)
        st = row_store_table_get(rs, model, table, spec, &e, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    size_t scratch_bytes;
    uint64_t *hashes =
        row_store_scratch_take(rs, n * (sizeof *hashes + sizeof(uint32_t)), &scratch_bytes);
    if (!hashes) {
        ps_set_err(err, err_len, "out of memory pulling %zu rows", n);
        return PS_STATUS_NO_MEMORY;
    }
    uint32_t *rows = (uint32_t *)(hashes + n);
    for (size_t i = 0; i < n; i++)
        hashes[i] = row_table_hash(rs->salt, ids[i]);
    uint64_t made = 0;
    pthread_rwlock_rdlock(&e->lock);
    size_t missing = row_table_find(e->rows, n, ids, hashes, rows);
    if (missing) {
        pthread_rwlock_unlock(&e->lock);
        pthread_rwlock_wrlock(&e->lock);
        missing = row_table_find(e->rows, n, ids, hashes, rows); /* others may have made some */
        if (missing)
            st = row_store_make_rows(rs, e, n, ids, hashes, rows, missing, false, &made, err,
                                     err_len);
    }
    if (st == PS_STATUS_OK)
        row_table_read(e->rows, n, rows, out, state_out, steps_out);
    pthread_rwlock_unlock(&e->lock);
    row_store_scratch_give(rs, hashes, scratch_bytes);
    if (st == PS_STATUS_OK && ret_created)
        *ret_created = made;
    return st;
}

/* ------------------------------------------------------------------ removal --- */

ps_status row_store_remove(row_store *rs, const char *model, const char *table, size_t n,
                           const uint64_t *ids, uint64_t *ret_removed, uint64_t *ret_lsn, char *err,
                           size_t err_len) {
    if (ret_removed)
        *ret_removed = 0;
    if (ret_lsn)
        *ret_lsn = 0;
    pthread_rwlock_rdlock(&rs->lock);
    row_store_table *e = table_find(rs, model, table);
    pthread_rwlock_unlock(&rs->lock);
    if (!e || n == 0) /* tables are never dropped: e stays valid */
        return PS_STATUS_OK;
    size_t scratch_bytes;
    uint64_t *hashes = row_store_scratch_take(rs, n * sizeof *hashes, &scratch_bytes);
    if (!hashes) {
        ps_set_err(err, err_len, "out of memory removing %zu rows", n);
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++)
        hashes[i] = row_table_hash(rs->salt, ids[i]);
    ps_status st = PS_STATUS_OK;
    uint64_t removed = 0, lsn = 0;
    pthread_rwlock_wrlock(&e->lock);
    if (row_table_pin_slots(e->rows) > 0) { /* before the journal: nothing may differ */
        ps_set_err(err, err_len, "table %s/%s is being exported: its rows are removed later", model,
                   table);
        st = PS_STATUS_FAILED_PRECONDITION;
    } else if (rs->journal.remove) {
        st = rs->journal.remove(rs->journal.arg, model, table, n, ids, &lsn, err, err_len);
    }
    if (st == PS_STATUS_OK &&
        (st = row_table_remove(e->rows, n, ids, hashes, &removed)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "out of memory removing %zu rows of table %s/%s", n, model, table);
    if (st == PS_STATUS_OK && removed && rs->quota)
        quota_release(rs->quota, removed * row_table_row_bytes(e->rows));
    /* spare numbers past a quarter of the rows: move the rows down, free the slabs */
    if (st == PS_STATUS_OK && removed && row_table_free(e->rows) * 4 > row_table_count(e->rows))
        (void)row_table_compact(e->rows, NULL); /* NO_MEMORY cannot happen; pinned: checked */
    pthread_rwlock_unlock(&e->lock);
    row_store_scratch_give(rs, hashes, scratch_bytes);
    if (ret_removed)
        *ret_removed = removed;
    if (ret_lsn)
        *ret_lsn = lsn;
    return st;
}

typedef struct scan_accept {
    uint64_t table_key;
    bool (*accept)(void *arg, uint64_t key);
    void *arg;
} scan_accept;

static bool scan_id(void *arg, uint64_t id) {
    const scan_accept *a = arg;
    return a->accept(a->arg, ps_key_row_in(a->table_key, id));
}

ps_status row_store_scan(row_store *rs, uint32_t index, uint64_t *slot, uint64_t max_slots,
                         bool (*accept)(void *arg, uint64_t key), void *accept_arg, uint64_t *ids,
                         size_t max_ids, size_t *ret_n, char *model, char *table, bool *ret_done) {
    *ret_n = 0;
    *ret_done = true;
    pthread_rwlock_rdlock(&rs->lock);
    row_store_table *e = index < rs->ntables ? rs->tables[index] : NULL;
    pthread_rwlock_unlock(&rs->lock);
    if (!e) /* tables are never dropped: e stays valid */
        return PS_STATUS_NOT_FOUND;
    snprintf(model, ROW_STORE_MAX_NAME_BYTES + 1, "%s", e->model);
    snprintf(table, ROW_STORE_MAX_NAME_BYTES + 1, "%s", e->table);
    scan_accept a = {ps_key_table(e->model, e->table), accept, accept_arg};
    pthread_rwlock_rdlock(&e->lock);
    *ret_n = row_table_scan(e->rows, slot, max_slots, scan_id, &a, ids, max_ids);
    *ret_done = *slot >= row_table_slots_total(e->rows);
    pthread_rwlock_unlock(&e->lock);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ figures --- */

size_t row_store_stats(row_store *rs, row_table_stats *out, size_t max) {
    pthread_rwlock_rdlock(&rs->lock);
    size_t count = rs->ntables;
    for (size_t i = 0; i < count && i < max; i++) {
        row_store_table *e = rs->tables[i];
        row_table_stats *s = &out[i];
        snprintf(s->model, sizeof s->model, "%s", e->model);
        snprintf(s->table, sizeof s->table, "%s", e->table);
        pthread_rwlock_rdlock(&e->lock);
        s->spec = *row_table_spec(e->rows);
        s->rows = row_table_count(e->rows);
        s->bytes = s->rows * row_table_row_bytes(e->rows);
        pthread_rwlock_unlock(&e->lock);
    }
    pthread_rwlock_unlock(&rs->lock);
    return count;
}

void row_store_totals(row_store *rs, uint64_t *ret_rows, uint64_t *ret_bytes) {
    uint64_t rows = 0, bytes = 0;
    pthread_rwlock_rdlock(&rs->lock);
    for (uint32_t i = 0; i < rs->ntables; i++) {
        row_store_table *e = rs->tables[i];
        pthread_rwlock_rdlock(&e->lock);
        uint64_t r = row_table_count(e->rows);
        rows += r;
        bytes += r * row_table_row_bytes(e->rows);
        pthread_rwlock_unlock(&e->lock);
    }
    pthread_rwlock_unlock(&rs->lock);
    if (ret_rows)
        *ret_rows = rows;
    if (ret_bytes)
        *ret_bytes = bytes;
}

uint64_t row_store_skipped(row_store *rs) {
    return atomic_load(&rs->skipped);
}

void row_store_set_journal(row_store *rs, const row_journal *journal) {
    rs->journal = journal ? *journal : (row_journal){0};
}
