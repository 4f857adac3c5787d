/* gc.c: drops the chunks and rows a shard no longer owns (see gc.h). */
#include "gc.h"

#include <stdlib.h>
#include <string.h>

#include "image.h"

typedef struct gc_run {
    uint64_t *keys;
    size_t n, max;
    bool more;
} gc_run;

/* Chunks' and rows' keys alike (arg: the placement). */
static bool not_owned(void *arg, uint64_t key) {
    return !placement_owns_any(arg, key);
}

static ps_status collect(void *arg, const image_chunk *c) {
    gc_run *g = arg;
    if (g->n == g->max) {
        g->more = true;
        return PS_STATUS_OUT_OF_RANGE; /* enough for one pass */
    }
    g->keys[g->n++] = c->key;
    return PS_STATUS_OK;
}

ps_status gc_rows_pass(row_store *rows, placement *placement, gc_rows_cursor *cur, size_t max,
                       uint64_t *ret_dropped, uint64_t *ret_lsn, bool *ret_more) {
    max = max ? max : GC_MAX_KEYS_PER_PASS;
    *ret_dropped = 0;
    *ret_more = false;
    if (ret_lsn)
        *ret_lsn = 0;
    uint64_t *ids = malloc(max * sizeof *ids);
    if (!ids)
        return PS_STATUS_NO_MEMORY;
    char model[ROW_STORE_MAX_NAME_BYTES + 1], table[ROW_STORE_MAX_NAME_BYTES + 1], err[256];
    size_t n = 0;
    bool done = false;
    ps_status st = row_store_scan(rows, cur->table, &cur->slot, GC_ROWS_SLOTS_PER_PASS, not_owned,
                                  placement, ids, max, &n, model, table, &done);
    if (st == PS_STATUS_NOT_FOUND) {               /* past the last table: the cycle is complete */
        *ret_more = cur->dropped > 0 || cur->busy; /* again, until a cycle has nothing */
        *cur = (gc_rows_cursor){0};
        free(ids);
        return PS_STATUS_OK;
    }
    uint64_t removed = 0, lsn = 0;
    if (st == PS_STATUS_OK && n > 0) {
        st = row_store_remove(rows, model, table, n, ids, &removed, &lsn, err, sizeof err);
        if (st == PS_STATUS_FAILED_PRECONDITION) { /* an export reads the table: its */
            st = PS_STATUS_OK;                     /* slots are looked at next cycle */
            cur->busy = true;
        }
    }
    free(ids);
    if (st != PS_STATUS_OK)
        return st;
    cur->dropped += removed;
    if (done) {
        cur->table++;
        cur->slot = 0;
    }
    *ret_dropped = removed;
    *ret_more = true; /* until a pass finds no table left */
    if (ret_lsn)
        *ret_lsn = lsn;
    return PS_STATUS_OK;
}

ps_status gc_pass(store *chunks, placement *placement, size_t max, uint64_t *ret_dropped,
                  uint64_t *ret_lsn, bool *ret_more) {
    gc_run g = {.max = max ? max : GC_MAX_KEYS_PER_PASS};
    *ret_dropped = 0;
    *ret_more = false;
    if (ret_lsn)
        *ret_lsn = 0;
    if (!(g.keys = malloc(g.max * sizeof *g.keys)))
        return PS_STATUS_NO_MEMORY;
    image_export_opts eo = {.chunks = chunks,
                            .accept = not_owned,
                            .accept_arg = placement,
                            .visit_chunk = collect,
                            .arg = &g};
    char err[256];
    ps_status st = image_export(&eo, NULL, err, sizeof err);
    if (st == PS_STATUS_OUT_OF_RANGE)
        st = PS_STATUS_OK;
    uint64_t deleted = 0, lsn = 0;
    if (st == PS_STATUS_OK && g.n > 0)
        st = store_delete_journaled(chunks, g.n, g.keys, &deleted, NULL, &lsn, err, sizeof err);
    free(g.keys);
    if (st != PS_STATUS_OK)
        return st;
    *ret_dropped = deleted;
    *ret_more = g.more;
    if (ret_lsn)
        *ret_lsn = lsn;
    return PS_STATUS_OK;
}
