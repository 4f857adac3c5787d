/* test_image.h: helpers shared by the unit tests of images and snapshots (test_image.c,
 * test_image_export.c, test_snapshot.c): a chunk store and a row store over one quota,
 * one-call pushes of each kind, and a canonical dump of everything the stores hold (one
 * encoded record per chunk and per row, sorted, versions left out) to compare two
 * stores. Header-only, tests only. */
#ifndef PS_SHARD_TEST_IMAGE_H
#define PS_SHARD_TEST_IMAGE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "image.h"
#include "quota.h"
#include "row_store.h"
#include "store.h"
#include "update_log.h"

typedef struct ti_world {
    update_log *log;
    quota *quota;
    store *store;
    row_store *rows;
} ti_world;

static inline ti_world ti_world_make(uint64_t max_bytes) {
    ti_world w = {0};
    update_log_opts lo = {.start_seq = 1000};
    assert_int_equal(update_log_create(&lo, &w.log), PS_STATUS_OK);
    assert_int_equal(quota_create(max_bytes, &w.quota), PS_STATUS_OK);
    store_opts so = {.log = w.log, .quota = w.quota};
    assert_int_equal(store_create(&so, &w.store), PS_STATUS_OK);
    row_store_opts ro = {.quota = w.quota};
    assert_int_equal(row_store_create(&ro, &w.rows), PS_STATUS_OK);
    return w;
}

static inline void ti_world_free(ti_world *w) {
    store_destroy(w->store);
    row_store_destroy(w->rows);
    quota_destroy(w->quota);
    update_log_destroy(w->log);
}

static inline image_target ti_target(ti_world *w) {
    return (image_target){.chunks = w->store, .rows = w->rows};
}

static inline const optim_spec *ti_adam(void) {
    static optim_spec o;
    optim_spec_defaults(OPTIM_ADAM, &o);
    o.lr = 0.01f;
    return &o;
}

/* A push of one key: len floats, element k = base + k. */
static inline ps_status ti_push(ti_world *w, update_log_op op, uint64_t key, uint32_t len,
                                float base) {
    float *v = malloc((size_t)len * sizeof *v);
    assert_non_null(v);
    for (uint32_t k = 0; k < len; k++)
        v[k] = base + (float)k * 0.001f;
    store_push p = {.op = op,
                    .n = 1,
                    .keys = &key,
                    .lengths = &len,
                    .values = (const uint8_t *)v,
                    .values_len = (size_t)len * sizeof(float),
                    .optimizer = ti_adam()};
    store_batch *b = NULL;
    char err[256];
    ps_status st = store_batch_prepare(w->store, &p, &b, err, sizeof err);
    if (st == PS_STATUS_OK)
        st = store_batch_apply(w->store, b, NULL, NULL, err, sizeof err);
    store_batch_destroy(b);
    free(v);
    return st;
}

static inline table_spec ti_spec(optim_kind kind, uint32_t dim) {
    return (table_spec){
        .dim = dim, .init = TABLE_INIT_UNIFORM, .init_scale = 0.1f, .seed = 3, .optimizer = kind};
}

/* A rows push to (m, table) with the spec's optimizer: each value = g. */
static inline ps_status ti_push_rows(ti_world *w, const char *table, const table_spec *spec,
                                     row_op op, size_t n, const uint64_t *ids, float g) {
    float *v = malloc(n * spec->dim * sizeof *v + 1);
    assert_non_null(v);
    for (size_t i = 0; i < n * spec->dim; i++)
        v[i] = g;
    optim_spec o;
    optim_spec_defaults(spec->optimizer ? spec->optimizer : OPTIM_SGD, &o);
    row_push p = {.model = "m",
                  .table = table,
                  .spec = spec,
                  .op = op,
                  .optimizer = &o,
                  .n = n,
                  .ids = ids,
                  .values = (const uint8_t *)v,
                  .values_len = n * spec->dim * sizeof(float)};
    char err[256];
    ps_status st = row_store_push(w->rows, &p, NULL, NULL, err, sizeof err);
    free(v);
    return st;
}

/* ------------------------------------------------------------------ dumps --- */

typedef struct ti_item {
    char sort[300]; /* "c <key>" or "r <model>/<table> <id>", zero-padded numbers */
    uint8_t *rec;   /* the encoded record (version 0) */
    size_t len;
} ti_item;

typedef struct ti_dump {
    ti_item *items;
    size_t n, cap;
    image_export_info info;
} ti_dump;

static inline void ti_dump_add(ti_dump *d, const char *sort, const image_encoded *e) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->items = realloc(d->items, d->cap * sizeof *d->items);
        assert_non_null(d->items);
    }
    ti_item *it = &d->items[d->n++];
    snprintf(it->sort, sizeof it->sort, "%s", sort);
    it->len = e->len;
    it->rec = malloc(e->len);
    assert_non_null(it->rec);
    image_encoded_copy(e, it->rec);
}

static inline ps_status ti_dump_chunk(void *arg, const image_chunk *c) {
    image_chunk v = *c;
    v.version = 0; /* a replay gives new versions */
    image_encoded e;
    assert_int_equal(image_encode_chunk(&v, &e, NULL, 0), PS_STATUS_OK);
    char sort[64];
    snprintf(sort, sizeof sort, "c %020llu", (unsigned long long)c->key);
    ti_dump_add(arg, sort, &e);
    return PS_STATUS_OK;
}

static inline ps_status ti_dump_rows(void *arg, const image_rows *r) {
    uint32_t slots = optim_spec_slots(r->spec.optimizer);
    for (size_t i = 0; i < r->n; i++) { /* one record per row: batches may differ */
        image_rows one = *r;
        one.n = 1;
        one.ids = r->ids + i;
        one.steps = r->steps + i;
        one.values = r->values + i * r->spec.dim;
        one.state = slots ? r->state + i * slots * r->spec.dim : NULL;
        image_encoded e;
        assert_int_equal(image_encode_rows(&one, &e, NULL, 0), PS_STATUS_OK);
        char sort[300];
        snprintf(sort, sizeof sort, "r %s/%s %020llu", r->model, r->table,
                 (unsigned long long)r->ids[i]);
        ti_dump_add(arg, sort, &e);
    }
    return PS_STATUS_OK;
}

static inline int ti_item_cmp(const void *a, const void *b) {
    return strcmp(((const ti_item *)a)->sort, ((const ti_item *)b)->sort);
}

/* Everything the stores hold that `accept` takes (NULL: all). */
static inline ti_dump ti_dump_take(ti_world *w, bool (*accept)(void *, uint64_t)) {
    ti_dump d = {0};
    image_export_opts o = {.chunks = w->store,
                           .rows = w->rows,
                           .accept = accept,
                           .visit_chunk = ti_dump_chunk,
                           .visit_rows = ti_dump_rows,
                           .arg = &d};
    assert_int_equal(image_export(&o, &d.info, NULL, 0), PS_STATUS_OK);
    if (d.n > 1)
        qsort(d.items, d.n, sizeof *d.items, ti_item_cmp);
    return d;
}

static inline void ti_dump_assert_equal(const ti_dump *a, const ti_dump *b) {
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->items[i].sort, b->items[i].sort);
        assert_int_equal(a->items[i].len, b->items[i].len);
        assert_memory_equal(a->items[i].rec, b->items[i].rec, a->items[i].len);
    }
}

static inline void ti_dump_free(ti_dump *d) {
    for (size_t i = 0; i < d->n; i++)
        free(d->items[i].rec);
    free(d->items);
}

#endif
