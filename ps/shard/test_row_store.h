/* test_row_store.h: helpers shared by the row store's unit tests (test_row_store.c:
 * tables, pulls, limits; test_row_push.c: pushes): a store, one-call pulls and pushes
 * that keep the failure's message in `err`, and row checks. Header-only, tests only. */
#ifndef PS_SHARD_TEST_ROW_STORE_H
#define PS_SHARD_TEST_ROW_STORE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "optimizer.h"
#include "row_store.h"
#include "shard_limits.h"

static char err[1024]; /* the last failure's message (each test program has its own) */

static const table_spec SPEC = {.dim = 3,
                                .init = TABLE_INIT_UNIFORM,
                                .init_scale = 0.1f,
                                .seed = 5,
                                .optimizer = OPTIM_ADAGRAD};
#define SPEC_ROW_BYTES (3 * 2 * 4 + 8 + 32) /* floats and state, step, index */

static inline row_store *make_store(quota *q, uint32_t max_tables) {
    row_store_opts opts = {.quota = q, .name = "shard-t", .max_tables = max_tables};
    row_store *rs = NULL;
    assert_int_equal(row_store_create(&opts, &rs), PS_STATUS_OK);
    return rs;
}

static inline ps_status pull(row_store *rs, const char *table, const table_spec *spec, size_t n,
                             const uint64_t *ids, float *out, float *st, uint64_t *steps,
                             uint64_t *created) {
    err[0] = 0;
    return row_store_pull(rs, "m", table, spec, n, ids, out, st, steps, created, err, sizeof err);
}

static inline ps_status push(row_store *rs, const char *table, const table_spec *spec, row_op op,
                             const optim_spec *opt, size_t n, const uint64_t *ids,
                             const float *vals, bool skip, uint64_t *created, uint64_t *skipped) {
    row_push p = {.model = "m",
                  .table = table,
                  .spec = spec,
                  .op = op,
                  .optimizer = opt,
                  .n = n,
                  .ids = ids,
                  .values = (const uint8_t *)vals,
                  .values_len = n * (spec ? spec->dim : 0) * sizeof(float),
                  .skip_non_finite = skip};
    err[0] = 0;
    return row_store_push(rs, &p, created, skipped, err, sizeof err);
}

static inline uint64_t rows_of(row_store *rs) {
    uint64_t rows;
    row_store_totals(rs, &rows, NULL);
    return rows;
}

static inline void assert_rows(row_store *rs, const char *table, const table_spec *spec, size_t n,
                               const uint64_t *ids, const float *want) {
    float *got = malloc(n * spec->dim * sizeof *got + 1);
    assert_non_null(got);
    assert_int_equal(pull(rs, table, spec, n, ids, got, NULL, NULL, NULL), PS_STATUS_OK);
    assert_memory_equal(got, want, n * spec->dim * sizeof *got);
    free(got);
}

#endif
