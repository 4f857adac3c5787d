/* test_model_tables.c: unit tests of forward passes over sparse tables (cmocka): a
 * recommender (embedding_bag sum and mean, concat, dense + sigmoid) against a reference
 * computed here in double, with rows from a fake source that records what it is asked;
 * padding, all-padding samples, each distinct id read once per layer, a model without
 * a batch dim, a concat of dense outputs; the errors (no source, a failing source, ids
 * given as floats); model_infer_rows before model_infer reading the rows once.
 *
 * Before this, a config with embedding_bag did not parse and model_input had no ids:
 * the executor could not serve a model with a table at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "test_model_backend.h"

#define ATOL 1e-5
#define RTOL 1e-5
#define MAX_CALLS 16
#define MAX_IDS 256

/* ------------------------------------------------------------------------------------ */
/* A fake rows source */

typedef struct fake_rows {
    int calls;
    char tables[MAX_CALLS][32];       /* the table of each call */
    size_t n[MAX_CALLS];              /* ids asked in each call */
    uint64_t ids[MAX_CALLS][MAX_IDS]; /* and which */
    ps_status fail;                   /* answer this instead of rows (OK: rows) */
} fake_rows;

/* Row `id` of `table`: deterministic, varied, different per table. */
static float row_value(const char *table, uint64_t id, size_t c) {
    return (float)sin((double)(id * 7 + c) * 0.37 + (table[0] == 'u' ? 0.0 : 1.3));
}

static ps_status fake_pull(void *arg, const char *table, uint32_t dim, size_t n,
                           const uint64_t *ids, float *out, char *err, size_t err_len) {
    fake_rows *f = arg;
    assert_true(f->calls < MAX_CALLS && n <= MAX_IDS);
    snprintf(f->tables[f->calls], sizeof(f->tables[0]), "%s", table);
    f->n[f->calls] = n;
    memcpy(f->ids[f->calls], ids, n * sizeof(*ids));
    f->calls++;
    if (f->fail != PS_STATUS_OK) {
        snprintf(err, err_len, "the shards cannot be reached (fake)");
        return f->fail;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < dim; c++) {
            out[i * dim + c] = row_value(table, ids[i], c);
        }
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* The recommender */

#define UDIM 4
#define IDIM 3
#define ITEMS 5

static const char *ctr_config =
    "{'name': 'ctr', 'max_batch_size': 8,"
    " 'inputs': [{'name': 'user', 'datatype': 'INT64', 'shape': [-1, 1]},"
    "            {'name': 'items', 'datatype': 'INT64', 'shape': [-1, 5]}],"
    " 'outputs': [{'name': 'score', 'datatype': 'FP32', 'shape': [-1, 1]}],"
    " 'tables': [{'name': 'user_emb', 'dim': 4}, {'name': 'item_emb', 'dim': 3}],"
    " 'layers': ["
    "  {'op': 'embedding_bag', 'input': 'user', 'output': 'u', 'table': 'user_emb', 'mode': 'sum'},"
    "  {'op': 'embedding_bag', 'input': 'items', 'output': 'it', 'table': 'item_emb',"
    "   'mode': 'mean'},"
    "  {'op': 'concat', 'inputs': ['u', 'it'], 'output': 'h'},"
    "  {'op': 'dense', 'input': 'h', 'output': 'score', 'weight': 'fc.weight', 'bias': 'fc.bias',"
    "   'activation': 'sigmoid'}]}";

static const float fc_w[UDIM + IDIM] = {0.5f, -0.25f, 0.75f, 1.0f, -0.5f, 0.3f, 0.9f};
static const float fc_b = 0.1f;

static model *ctr_model(fake_rows *f) {
    model_config *cfg = test_config_sq(ctr_config);
    const model_tensor_desc params[] = {
        {.name = "fc.weight", .datatype = "FP32", .ndims = 2, .dims = {1, UDIM + IDIM}},
        {.name = "fc.bias", .datatype = "FP32", .ndims = 1, .dims = {1}}};
    model *m = NULL;
    char err[512] = "";
    if (model_create(cfg, params, 2, test_model_backend(), &m, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("create: %s", err);
    }
    model_config_destroy(cfg);
    assert_true(model_has_tables(m));
    assert_int_equal(model_param_write(m, "fc.weight", 0, fc_w, UDIM + IDIM), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "fc.bias", 0, &fc_b, 1), PS_STATUS_OK);
    test_model_sync(m);
    if (f != NULL) {
        model_set_rows(m, fake_pull, f);
    }
    return m;
}

/* The score of each sample, in double: sigmoid(w . [sum(user rows), mean(item rows)] + b). */
static void ctr_reference(const int64_t *user, const int64_t *items, size_t batch, double *want) {
    for (size_t b = 0; b < batch; b++) {
        double h[UDIM + IDIM] = {0};
        if (user[b] >= 0) {
            for (size_t c = 0; c < UDIM; c++) {
                h[c] = row_value("user_emb", (uint64_t)user[b], c);
            }
        }
        size_t count = 0;
        for (size_t j = 0; j < ITEMS; j++) {
            const int64_t id = items[b * ITEMS + j];
            if (id < 0) {
                continue;
            }
            count++;
            for (size_t c = 0; c < IDIM; c++) {
                h[UDIM + c] += row_value("item_emb", (uint64_t)id, c);
            }
        }
        for (size_t c = 0; count > 0 && c < IDIM; c++) {
            h[UDIM + c] /= (double)count;
        }
        double z = fc_b;
        for (size_t c = 0; c < UDIM + IDIM; c++) {
            z += fc_w[c] * h[c];
        }
        want[b] = 1.0 / (1.0 + exp(-z));
    }
}

static void check_scores(const float *got, const double *want, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= ATOL + RTOL * fabs(want[i]))) {
            fail_msg("score %zu: got %.9g, want %.9g", i, (double)got[i], want[i]);
        }
    }
}

static void set_inputs(model_input in[2], const int64_t *user, const int64_t *items, size_t batch) {
    in[0] = (model_input){.name = "user", .ndims = 2, .dims = {(int64_t)batch, 1}, .ids = user};
    in[1] =
        (model_input){.name = "items", .ndims = 2, .dims = {(int64_t)batch, ITEMS}, .ids = items};
}

/* Batch 4: padding, repeated ids within and across samples, a sample whose items are
 * all padding (its mean is zeros), a padding user. */
static const int64_t user4[] = {3, 9, 3, -1};
static const int64_t items4[] = {1, 2, -1, 2,  7,  /**/ -1, -1, -1, -1, -1,
                                 7, 1, 1,  40, -1, /**/ 5,  -1, 6,  -1, 1};

static void test_recommender_matches_reference(void **state) {
    (void)state;
    fake_rows f = {0};
    model *m = ctr_model(&f);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    model_input in[2];
    set_inputs(in, user4, items4, 4);
    float score[8];
    model_output out = {.name = "score", .buffer = score, .capacity = 8};
    char err[512] = "";
    if (model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("infer: %s", err);
    }
    double want[4];
    ctr_reference(user4, items4, 4, want);
    check_scores(score, want, 4);
    assert_int_equal(out.ndims, 2);
    assert_int_equal(out.dims[0], 4);
    assert_int_equal(out.dims[1], 1);

    /* one read per bag layer, each distinct id once, padding never */
    assert_int_equal(f.calls, 2);
    assert_string_equal(f.tables[0], "user_emb");
    assert_int_equal(f.n[0], 2); /* 3, 9 */
    assert_string_equal(f.tables[1], "item_emb");
    assert_int_equal(f.n[1], 6); /* 1, 2, 7, 40, 5, 6 */
    const uint64_t items_seen[] = {1, 2, 7, 40, 5, 6};
    assert_memory_equal(f.ids[1], items_seen, sizeof(items_seen));

    /* batch 1 through a scratch workspace (ws NULL) */
    f.calls = 0;
    set_inputs(in, user4 + 2, items4 + 2 * ITEMS, 1);
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    check_scores(score, want + 2, 1);
    assert_int_equal(f.calls, 2);
    model_workspace_destroy(ws);
    model_destroy(m);
}

/* A batch of padding only reads nothing (and needs no source at all). */
static void test_all_padding(void **state) {
    (void)state;
    model *m = ctr_model(NULL);
    const int64_t user[] = {-1, -7};
    const int64_t items[2 * ITEMS] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    model_input in[2];
    set_inputs(in, user, items, 2);
    float score[2];
    model_output out = {.name = "score", .buffer = score, .capacity = 2};
    char err[512] = "";
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    const double want = 1.0 / (1.0 + exp(-(double)fc_b)); /* h is all zeros */
    check_scores(score, (const double[]){want, want}, 2);
    model_destroy(m);
}

static void test_errors(void **state) {
    (void)state;
    char err[512] = "";
    model_input in[2];
    float score[4];
    model_output out = {.name = "score", .buffer = score, .capacity = 4};
    set_inputs(in, user4, items4, 4);

    /* no rows source */
    model *m = ctr_model(NULL);
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "layer \"u\" reads table \"user_emb\", but model ctr has no rows "
                                "source"));
    model_destroy(m);

    /* a source that fails: its status and message, named by layer and table */
    fake_rows f = {.fail = PS_STATUS_UNAVAILABLE};
    m = ctr_model(&f);
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_UNAVAILABLE);
    assert_non_null(strstr(err, "layer \"u\" (embedding_bag of table \"user_emb\", 2 rows): the "
                                "shards cannot be reached (fake)"));
    f.fail = PS_STATUS_OK;

    /* ids given as floats, floats given as ids */
    const float as_floats[4] = {3, 9, 3, 1};
    in[0].ids = NULL;
    in[0].data = as_floats;
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "input \"user\" has no data; it is INT64, so give its ids"));
    in[0].ids = user4;
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    in[1].dims[1] = 4; /* the shape must match */
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(
        strstr(err, "input \"items\": shape [4, 4] does not match the model's [-1, 5]"));
    in[1].dims[1] = ITEMS;
    in[1].dims[0] = in[0].dims[0] = 9; /* max_batch_size 8 */
    assert_int_equal(model_infer(m, NULL, in, 2, &out, 1, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "batch size 9 is outside 1..8"));
    model_destroy(m);
}

/* model_infer_rows reads the rows (outside whatever lock guards the dense parameters);
 * the model_infer after it on the same workspace and inputs does not read again. */
static void test_rows_first(void **state) {
    (void)state;
    fake_rows f = {0};
    model *m = ctr_model(&f);
    model_workspace *ws = NULL;
    assert_int_equal(model_workspace_create(m, &ws), PS_STATUS_OK);
    model_input in[2];
    set_inputs(in, user4, items4, 4);
    float score[4];
    model_output out = {.name = "score", .buffer = score, .capacity = 4};
    char err[512] = "";
    assert_int_equal(model_infer_rows(m, ws, in, 2, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(f.calls, 2);
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(f.calls, 2);
    double want[4];
    ctr_reference(user4, items4, 4, want);
    check_scores(score, want, 4);
    /* the rows were used once: the next pass reads again */
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(f.calls, 4);
    /* a failed read leaves nothing held */
    f.fail = PS_STATUS_UNAVAILABLE;
    assert_int_equal(model_infer_rows(m, ws, in, 2, err, sizeof(err)), PS_STATUS_UNAVAILABLE);
    assert_int_equal(model_infer(m, ws, in, 2, &out, 1, err, sizeof(err)), PS_STATUS_UNAVAILABLE);
    assert_int_equal(model_infer_rows(NULL, ws, in, 2, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    model_workspace_destroy(ws);
    model_destroy(m);
}

/* No batch dim: ids [L] -> [dim]; a mean over the ids that are not padding. */
static void test_unbatched(void **state) {
    (void)state;
    model_config *cfg = test_config_sq(
        "{'name': 'm', 'inputs': [{'name': 'ids', 'datatype': 'INT64', 'shape': [4]}],"
        " 'outputs': [{'name': 'e', 'datatype': 'FP32', 'shape': [3]}],"
        " 'tables': [{'name': 'item_emb', 'dim': 3}],"
        " 'layers': [{'op': 'embedding_bag', 'input': 'ids', 'output': 'e', 'table': 'item_emb',"
        "             'mode': 'mean'}]}");
    model *m = NULL;
    char err[512] = "";
    assert_int_equal(model_create(cfg, NULL, 0, test_model_backend(), &m, err, sizeof(err)),
                     PS_STATUS_OK);
    model_config_destroy(cfg);
    fake_rows f = {0};
    model_set_rows(m, fake_pull, &f);
    const int64_t ids[4] = {11, -1, 12, 11};
    const model_input in = {.name = "ids", .ndims = 1, .dims = {4}, .ids = ids};
    float e[3];
    model_output out = {.name = "e", .buffer = e, .capacity = 3};
    assert_int_equal(model_infer(m, NULL, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    double want[3];
    for (size_t c = 0; c < 3; c++) {
        want[c] = (2.0 * row_value("item_emb", 11, c) + row_value("item_emb", 12, c)) / 3.0;
    }
    for (size_t c = 0; c < 3; c++) {
        assert_true(fabs(e[c] - want[c]) <= ATOL + RTOL * fabs(want[c]));
    }
    assert_int_equal(f.n[0], 2);
    model_destroy(m);
}

/* concat of two dense outputs, widths from the weights: y = [x Wa^T, x Wb^T]. */
static void test_concat_of_dense(void **state) {
    (void)state;
    model_config *cfg =
        test_config_sq("{'name': 'm', 'max_batch_size': 3,"
                       " 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 2]}],"
                       " 'outputs': [{'name': 'y', 'datatype': 'FP32', 'shape': [-1, 5]}],"
                       " 'layers': [{'op': 'dense', 'input': 'x', 'output': 'a', 'weight': 'wa'},"
                       "  {'op': 'dense', 'input': 'x', 'output': 'b', 'weight': 'wb'},"
                       "  {'op': 'concat', 'inputs': ['a', 'b'], 'output': 'y'}]}");
    const model_tensor_desc params[] = {{.name = "wa", .ndims = 2, .dims = {2, 2}},
                                        {.name = "wb", .ndims = 2, .dims = {3, 2}}};
    model *m = NULL;
    char err[512] = "";
    if (model_create(cfg, params, 2, test_model_backend(), &m, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("create: %s", err);
    }
    model_config_destroy(cfg);
    assert_false(model_has_tables(m));
    const float wa[4] = {1, 2, 3, 4};
    const float wb[6] = {-1, 0, 0, -1, 1, 1};
    assert_int_equal(model_param_write(m, "wa", 0, wa, 4), PS_STATUS_OK);
    assert_int_equal(model_param_write(m, "wb", 0, wb, 6), PS_STATUS_OK);
    test_model_sync(m);
    const float x[4] = {1, 10, -2, 0.5f};
    const model_input in = {.name = "x", .ndims = 2, .dims = {2, 2}, .data = x};
    float y[10];
    model_output out = {.name = "y", .buffer = y, .capacity = 10};
    assert_int_equal(model_infer(m, NULL, &in, 1, &out, 1, err, sizeof(err)), PS_STATUS_OK);
    const float want[10] = {21, 43, -1, -10, 11, /**/ -1, -4, 2, -0.5f, -1.5f};
    assert_memory_equal(y, want, sizeof(want));
    model_destroy(m);
}

int main(int argc, char **argv) {
    test_model_backend_open(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommender_matches_reference),
        cmocka_unit_test(test_all_padding),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_rows_first),
        cmocka_unit_test(test_unbatched),
        cmocka_unit_test(test_concat_of_dense),
    };
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    test_model_backend_close();
    return failed;
}
