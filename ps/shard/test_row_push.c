/* test_row_push.c: pushes into the row store (row_store.h): ASSIGN and ADD, OPTIMIZE as
 * exactly one optimizer_step per push (checked against optimizer_step run on a copy,
 * for every kind), duplicate ids, non-finite values refused or skipped, results that
 * would overflow change nothing, concurrent pushes and pulls lose no update, and values
 * that arrive in pieces land whole. */
#include <pthread.h>

#include "journal.h"
#include "test_row_store.h"

static void test_assign_add(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t ids[2] = {7, 8}, created = 9, skipped = 9, steps[2];
    const float a[6] = {1, 2, 3, 4, 5, 6}, d[6] = {0.5f, 0.5f, 0.5f, -1, -1, -1};
    const float sum[6] = {1.5f, 2.5f, 3.5f, 3, 4, 5};
    assert_int_equal(
        push(rs, "t", &SPEC, ROW_OP_ASSIGN, NULL, 2, ids, a, false, &created, &skipped),
        PS_STATUS_OK);
    assert_int_equal(created, 2);
    assert_int_equal(skipped, 0);
    assert_rows(rs, "t", &SPEC, 2, ids, a);
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_ADD, NULL, 2, ids, d, false, &created, NULL),
                     PS_STATUS_OK);
    assert_int_equal(created, 0);
    assert_rows(rs, "t", &SPEC, 2, ids, sum);
    float out[6];
    assert_int_equal(pull(rs, "t", &SPEC, 2, ids, out, NULL, steps, NULL), PS_STATUS_OK);
    assert_true(steps[0] == 0 && steps[1] == 0); /* only optimizer steps count */
    row_store_destroy(rs);
}

/* Three pushes over rows 1..3 (row 1 made by a pull first): after each, every row's
 * weights, state and step equal optimizer_step applied to a copy, once per push. The
 * third push holds rows of different step counts (Adam corrects each by its own). */
static void check_kind(row_store *rs, const char *table, const optim_spec *opt) {
    table_spec spec = {
        .dim = 3, .init = TABLE_INIT_NORMAL, .init_scale = 0.2f, .seed = 9, .optimizer = opt->kind};
    const uint32_t slots = optim_spec_slots(opt->kind);
    float w[3][3], st[3][6], g[9], got[9], got_st[18];
    uint64_t steps[3] = {0, 0, 0}, got_steps[3], one = 1;
    for (int r = 0; r < 3; r++) {
        table_spec_init_row(&spec, (uint64_t)r + 1, w[r]);
        optimizer_state_init(opt, 3, st[r]);
    }
    assert_int_equal(pull(rs, table, &spec, 1, &one, got, NULL, NULL, NULL), PS_STATUS_OK);
    const uint64_t pushes[3][3] = {{1, 2}, {2, 3}, {1, 2, 3}};
    const size_t sizes[3] = {2, 2, 3};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < sizes[k]; i++) {
            int r = (int)pushes[k][i] - 1;
            for (int j = 0; j < 3; j++)
                g[i * 3 + j] = 0.3f * (float)(k + 1) - 0.2f * (float)j + 0.1f * (float)r;
            optimizer_step(opt, 3, w[r], g + i * 3, st[r], ++steps[r], w[r], st[r]);
        }
        assert_int_equal(
            push(rs, table, &spec, ROW_OP_OPTIMIZE, opt, sizes[k], pushes[k], g, false, NULL, NULL),
            PS_STATUS_OK);
        const uint64_t all[3] = {1, 2, 3};
        assert_int_equal(pull(rs, table, &spec, 3, all, got, got_st, got_steps, NULL),
                         PS_STATUS_OK);
        for (int r = 0; r < 3; r++) {
            assert_memory_equal(got + 3 * r, w[r], sizeof w[r]);
            float fresh[6]; /* a row that never stepped holds the kind's default state */
            optim_spec defaults;
            optim_spec_defaults(opt->kind, &defaults);
            optimizer_state_init(&defaults, 3, fresh);
            assert_memory_equal(got_st + 3 * slots * r, steps[r] ? st[r] : fresh,
                                3 * slots * sizeof(float));
            assert_int_equal(got_steps[r], steps[r]);
        }
    }
}

static void test_optimize(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    optim_spec sgd, adagrad, adam, ftrl;
    optim_spec_defaults(OPTIM_SGD, &sgd);
    sgd.momentum = 0.9f;
    optim_spec_defaults(OPTIM_ADAGRAD, &adagrad);
    adagrad.initial_accumulator = 0.1f; /* the first step starts from it, not the default */
    adagrad.weight_decay = 0.01f;
    optim_spec_defaults(OPTIM_ADAM, &adam);
    optim_spec_defaults(OPTIM_FTRL, &ftrl);
    ftrl.l1 = 0.01f;
    check_kind(rs, "sgd", &sgd);
    check_kind(rs, "adagrad", &adagrad);
    check_kind(rs, "adam", &adam);
    check_kind(rs, "ftrl", &ftrl);
    row_store_destroy(rs);
}

static void test_duplicate_ids(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t ids[3] = {5, 9, 5};
    float vals[9] = {0};
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_ASSIGN, NULL, 3, ids, vals, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "row id 5 appears more than once"));
    assert_int_equal(row_store_stats(rs, NULL, 0), 0); /* nothing made, not even the table */
    row_store_destroy(rs);
}

static void test_non_finite(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    uint64_t ids[3] = {1, 2, 3}, created = 0, skipped = 0, steps[3];
    float before[9], out[9], vals[9];
    assert_int_equal(pull(rs, "t", &SPEC, 3, ids, before, NULL, NULL, NULL), PS_STATUS_OK);
    for (int i = 0; i < 9; i++)
        vals[i] = 0.25f;
    vals[4] = __builtin_nanf("");
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_ADD, NULL, 3, ids, vals, true, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT); /* ADD never skips */
    assert_non_null(strstr(err, "row index 1 (id 2)"));
    optim_spec opt;
    optim_spec_defaults(OPTIM_ADAGRAD, &opt);
    vals[4] = __builtin_inff();
    assert_int_equal(push(rs, "t", &SPEC, ROW_OP_OPTIMIZE, &opt, 3, ids, vals, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_rows(rs, "t", &SPEC, 3, ids, before);
    uint64_t some[3] = {1, 2, 4}; /* row 2 skipped, row 4 new */
    assert_int_equal(
        push(rs, "t", &SPEC, ROW_OP_OPTIMIZE, &opt, 3, some, vals, true, &created, &skipped),
        PS_STATUS_OK);
    assert_int_equal(skipped, 1);
    assert_int_equal(created, 1);
    assert_int_equal(row_store_skipped(rs), 1);
    assert_int_equal(pull(rs, "t", &SPEC, 3, ids, out, NULL, steps, NULL), PS_STATUS_OK);
    assert_memory_equal(out + 3, before + 3, 3 * sizeof(float)); /* row 2 untouched */
    assert_true(steps[0] == 1 && steps[1] == 0 && steps[2] == 0);
    assert_int_equal(rows_of(rs), 4);
    row_store_destroy(rs);
}

/* Values in pieces as gRPC hands them over (cut mid-row and mid-float, an empty
 * piece): the same rows as from one buffer; a NaN in a later piece is found with its
 * row; the journal's record holds the values whole. */
static void test_values_in_pieces(void **state) {
    (void)state;
    row_store *a = make_store(NULL, 0), *b = make_store(NULL, 0);
    uint64_t ids[4] = {9, 8, 7, 6};
    float vals[12];
    for (int i = 0; i < 12; i++)
        vals[i] = 0.5f * (float)i - 2;
    assert_int_equal(push(a, "t", &SPEC, ROW_OP_ASSIGN, NULL, 4, ids, vals, false, NULL, NULL),
                     PS_STATUS_OK);
    const uint8_t *raw = (const uint8_t *)vals;
    ps_bytes pieces[4] = {{raw, 7}, {raw + 7, 0}, {raw + 7, 21}, {raw + 28, 20}};
    row_push p = {.model = "m",
                  .table = "t",
                  .spec = &SPEC,
                  .op = ROW_OP_ASSIGN,
                  .n = 4,
                  .ids = ids,
                  .values_len = sizeof vals,
                  .pieces = pieces,
                  .n_pieces = 4};
    assert_int_equal(row_store_push(b, &p, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    float out_a[12], out_b[12];
    assert_int_equal(pull(a, "t", &SPEC, 4, ids, out_a, NULL, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(pull(b, "t", &SPEC, 4, ids, out_b, NULL, NULL, NULL), PS_STATUS_OK);
    assert_memory_equal(out_a, out_b, sizeof out_a);
    assert_memory_equal(out_b, vals, sizeof vals);
    journal_encoded e;
    assert_int_equal(journal_encode_rows(&p, &e), PS_STATUS_OK);
    size_t at = 0, tail = 0;
    for (int i = 0; i < e.n_iov; i++)
        at += e.iov[i].iov_len;
    assert_int_equal(at, e.len);
    for (int i = e.n_iov - 4; i < e.n_iov; i++) /* the last four: the values, uncopied */
        tail += e.iov[i].iov_len;
    assert_int_equal(tail, sizeof vals);
    assert_ptr_equal(e.iov[e.n_iov - 1].iov_base, raw + 28);
    journal_encoded_free(&e);
    vals[10] = __builtin_nanf(""); /* in the last piece */
    p.op = ROW_OP_ADD;
    assert_int_equal(row_store_push(b, &p, NULL, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "row index 3 (id 6)"));
    pieces[3].len = 19; /* a byte short */
    assert_int_equal(row_store_push(b, &p, NULL, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(pull(b, "t", &SPEC, 4, ids, out_b, NULL, NULL, NULL), PS_STATUS_OK);
    assert_memory_equal(out_a, out_b, sizeof out_a); /* neither changed a row */
    row_store_destroy(a);
    row_store_destroy(b);
}

/* Pushes large enough to be computed in many runs (row_push.c computes at most 128 KiB
 * of floats at once): every row still gets exactly its one step, Adam's rows of
 * different step counts side by side included; and a row that would overflow in the
 * last run leaves the rows of every earlier run unchanged. */
static void test_optimize_many(void **state) {
    (void)state;
    enum { N = 20000, DIM = 3 };
    row_store *rs = make_store(NULL, 0);
    uint64_t *ids = malloc(N * sizeof *ids), *steps = malloc(N * sizeof *steps);
    uint64_t *push_ids = malloc(N * sizeof *push_ids);
    float *w = malloc(N * DIM * sizeof *w), *st = malloc(2 * N * DIM * sizeof *st);
    float *g = malloc(N * DIM * sizeof *g), *got = malloc(N * DIM * sizeof *got);
    float *got_st = malloc(2 * N * DIM * sizeof *got_st);
    assert_true(ids && steps && push_ids && w && st && g && got && got_st);
    optim_spec opts[2];
    optim_spec_defaults(OPTIM_ADAGRAD, &opts[0]);
    optim_spec_defaults(OPTIM_ADAM, &opts[1]);
    for (int k = 0; k < 2; k++) {
        const optim_spec *opt = &opts[k];
        table_spec spec = {.dim = DIM,
                           .init = TABLE_INIT_UNIFORM,
                           .init_scale = 0.5f,
                           .seed = 4,
                           .optimizer = opt->kind};
        const char *table = k ? "adam" : "adagrad";
        const size_t slots = optim_spec_slots(opt->kind);
        for (size_t i = 0; i < N; i++) {
            ids[i] = i * 31 + 7;
            steps[i] = 0;
            table_spec_init_row(&spec, ids[i], w + i * DIM);
            optimizer_state_init(opt, DIM, st + i * slots * DIM);
        }
        for (int round = 0; round < 2; round++) {
            /* round 0 steps every third row; round 1 every row */
            size_t n = 0;
            for (size_t i = 0; i < N; i++) {
                if (round == 0 && i % 3)
                    continue;
                for (int j = 0; j < DIM; j++)
                    g[n * DIM + j] = 0.01f * (float)((i + (size_t)j + (size_t)round) % 17) - 0.08f;
                push_ids[n] = ids[i];
                optimizer_step(opt, DIM, w + i * DIM, g + n * DIM, st + i * slots * DIM, ++steps[i],
                               w + i * DIM, st + i * slots * DIM);
                n++;
            }
            assert_int_equal(
                push(rs, table, &spec, ROW_OP_OPTIMIZE, opt, n, push_ids, g, false, NULL, NULL),
                PS_STATUS_OK);
        }
        assert_int_equal(pull(rs, table, &spec, N, ids, got, got_st, NULL, NULL), PS_STATUS_OK);
        assert_memory_equal(got, w, N * DIM * sizeof *w);
        assert_memory_equal(got_st, st, N * slots * DIM * sizeof *st);
    }
    /* the last row overflows: the rows of every earlier run keep their values */
    table_spec spec = {.dim = DIM,
                       .init = TABLE_INIT_UNIFORM,
                       .init_scale = 0.5f,
                       .seed = 4,
                       .optimizer = OPTIM_ADAGRAD};
    for (size_t i = 0; i < N * DIM; i++)
        g[i] = 0.5f;
    g[N * DIM - 1] = 1e20f;
    assert_int_equal(
        push(rs, "adagrad", &spec, ROW_OP_OPTIMIZE, &opts[0], N, ids, g, false, NULL, NULL),
        PS_STATUS_INVALID_ARGUMENT);
    char want[64];
    snprintf(want, sizeof want, "row id %llu of table", (unsigned long long)ids[N - 1]);
    assert_non_null(strstr(err, want));
    assert_int_equal(pull(rs, "adagrad", &spec, N, ids, w, st, steps, NULL), PS_STATUS_OK);
    assert_int_equal(pull(rs, "adagrad", &spec, N, ids, got, NULL, NULL, NULL), PS_STATUS_OK);
    assert_memory_equal(got, w, N * DIM * sizeof *w);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(steps[i], i % 3 ? 1 : 2);
    free(ids);
    free(steps);
    free(push_ids);
    free(w);
    free(st);
    free(g);
    free(got);
    free(got_st);
    row_store_destroy(rs);
}

/* A result that would overflow (ADD of 3e38 onto 3e38; an Adagrad accumulator past
 * FLT_MAX) changes no row of the push; rows the push made stay with initial values. */
static void test_overflow(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    table_spec one = {.dim = 1,
                      .init = TABLE_INIT_UNIFORM,
                      .init_scale = 1,
                      .seed = 1,
                      .optimizer = OPTIM_ADAGRAD};
    uint64_t ids[3] = {1, 2, 3}, created = 77, steps[3];
    const float a[2] = {1, 3e38f}, d[3] = {1, 3e38f, 0};
    assert_int_equal(push(rs, "t", &one, ROW_OP_ASSIGN, NULL, 2, ids, a, false, NULL, NULL),
                     PS_STATUS_OK);
    assert_int_equal(push(rs, "t", &one, ROW_OP_ADD, NULL, 3, ids, d, false, &created, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "row id 2 of table m/t would not be finite"));
    assert_int_equal(created, 77);
    float want[3];
    table_spec_init_row(&one, 3, &want[2]);
    want[0] = 1;
    want[1] = 3e38f;
    assert_rows(rs, "t", &one, 3, ids, want);
    optim_spec opt;
    optim_spec_defaults(OPTIM_ADAGRAD, &opt);
    const float g[2] = {1, 1e20f}; /* 1e20 squared overflows the accumulator */
    assert_int_equal(push(rs, "t", &one, ROW_OP_OPTIMIZE, &opt, 2, ids, g, false, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    float out[3], st[3];
    assert_int_equal(pull(rs, "t", &one, 3, ids, out, st, steps, NULL), PS_STATUS_OK);
    assert_memory_equal(out, want, sizeof want);
    assert_true(steps[0] == 0 && steps[1] == 0 && st[0] == 0.0f);
    row_store_destroy(rs);
}

#define THREADS 4
#define ADDS 300
#define HOT 2048 /* rows every push adds to: long enough pushes for threads to overlap */

typedef struct worker {
    row_store *rs;
    int index;
    int failures;
} worker;

static const table_spec ZEROS = {.dim = 2, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_SGD};

/* An ADD of n rows of ZEROS (2 floats each, in v) to table m/table. */
static ps_status add_zeros(row_store *rs, const char *table, size_t n, const uint64_t *ids,
                           const float *v, char *e, size_t e_len) {
    row_push p = {.model = "m",
                  .table = table,
                  .spec = &ZEROS,
                  .op = ROW_OP_ADD,
                  .n = n,
                  .ids = ids,
                  .values = (const uint8_t *)v,
                  .values_len = 2 * n * sizeof *v};
    return row_store_push(rs, &p, NULL, NULL, e, e_len);
}

/* ADDs 1 to rows 0..HOT-1 ADDS times, and between adds pulls them (each row's two floats
 * must agree: no torn row) and pulls rows of its own that do not exist yet. */
static void *work(void *arg) {
    worker *wk = arg;
    uint64_t *ids = malloc(HOT * sizeof *ids), fresh[2];
    float *ones = malloc(2 * HOT * sizeof *ones), *out = malloc(2 * HOT * sizeof *out);
    char e[256];
    if (!ids || !ones || !out) {
        wk->failures++;
        goto done;
    }
    for (int i = 0; i < HOT; i++) {
        ids[i] = (uint64_t)i;
        ones[2 * i] = ones[2 * i + 1] = 1;
    }
    for (int k = 0; k < ADDS; k++) {
        wk->failures += add_zeros(wk->rs, "c", HOT, ids, ones, e, sizeof e) != PS_STATUS_OK;
        wk->failures += row_store_pull(wk->rs, "m", "c", &ZEROS, HOT, ids, out, NULL, NULL, NULL, e,
                                       sizeof e) != PS_STATUS_OK;
        for (int i = 0; i < HOT; i++)
            wk->failures += out[2 * i] != out[2 * i + 1] || out[2 * i] < 1;
        fresh[0] = HOT + (uint64_t)(wk->index * ADDS + k) * 2;
        fresh[1] = fresh[0] + 1;
        wk->failures += row_store_pull(wk->rs, "m", "c", &ZEROS, 2, fresh, out, NULL, NULL, NULL, e,
                                       sizeof e) != PS_STATUS_OK;
    }
done:
    free(ids);
    free(ones);
    free(out);
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    pthread_t th[THREADS];
    worker wk[THREADS];
    for (int i = 0; i < THREADS; i++) {
        wk[i] = (worker){.rs = rs, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, work, &wk[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(wk[i].failures, 0);
    }
    uint64_t ids[8] = {0, 1, 2, 3, 4, HOT / 2, HOT - 2, HOT - 1};
    float want[16];
    for (int i = 0; i < 16; i++)
        want[i] = THREADS * ADDS; /* no update lost */
    assert_rows(rs, "c", &ZEROS, 8, ids, want);
    assert_int_equal(rows_of(rs), HOT + 2 * THREADS * ADDS);
    row_store_destroy(rs);
}

/* A push looks its rows up under the table's read lock and applies them under the
 * write lock: rows removed in between (their numbers then taken by new rows) must not
 * receive its values, and rows another push made in between must be found, not made
 * twice. One thread ADDs 1 to ids [0, RACE_IDS); another removes them again and again;
 * two more make new rows (ids from RACE_IDS on, the same block in the same round) by
 * ADDs of 1000 each, which take the numbers the removals leave. A row of the first ids
 * never reaches 1000 and a new row holds exactly 2000: a push written into a row it no
 * longer owns, or a row made twice, breaks one. */
#define RACE_IDS 512
#define RACE_ROUNDS 1000

typedef struct racer {
    row_store *rs;
    int role; /* 0 adds 1 to the first ids, 1 removes them, 2 and 3 make new rows */
    int failures;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    uint64_t ids[RACE_IDS];
    float v[2 * RACE_IDS];
    char e[256];
    for (int k = 0; k < RACE_ROUNDS; k++) {
        for (int i = 0; i < RACE_IDS; i++) {
            ids[i] = r->role >= 2 ? RACE_IDS + (uint64_t)k * RACE_IDS + (uint64_t)i : (uint64_t)i;
            v[2 * i] = v[2 * i + 1] = r->role >= 2 ? 1000.0f : 1.0f;
        }
        if (r->role == 1) {
            r->failures += row_store_remove(r->rs, "m", "race", RACE_IDS, ids, NULL, NULL, e,
                                            sizeof e) != PS_STATUS_OK;
            continue;
        }
        r->failures += add_zeros(r->rs, "race", RACE_IDS, ids, v, e, sizeof e) != PS_STATUS_OK;
    }
    return NULL;
}

static void test_push_against_removal(void **state) {
    (void)state;
    row_store *rs = make_store(NULL, 0);
    pthread_t th[4];
    racer rc[4];
    for (int i = 0; i < 4; i++) {
        rc[i] = (racer){.rs = rs, .role = i};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rc[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(rc[i].failures, 0);
    }
    enum { ALL = RACE_IDS * (RACE_ROUNDS + 1), PART = 64 * 1024 };
    uint64_t *ids = malloc(PART * sizeof *ids);
    float *out = malloc(2 * PART * sizeof *out);
    assert_true(ids && out);
    for (size_t first = 0; first < ALL; first += PART) { /* pulls of at most PART rows */
        size_t n = ALL - first < PART ? ALL - first : PART;
        for (size_t i = 0; i < n; i++)
            ids[i] = first + i;
        assert_int_equal(
            row_store_pull(rs, "m", "race", &ZEROS, n, ids, out, NULL, NULL, NULL, err, sizeof err),
            PS_STATUS_OK);
        for (size_t i = 0; i < 2 * n; i++) {
            if (ids[i / 2] < RACE_IDS)
                assert_true(out[i] >= 0 && out[i] <= RACE_ROUNDS);
            else
                assert_true(out[i] == 2000.0f);
        }
    }
    const uint64_t made = RACE_IDS * RACE_ROUNDS; /* new rows, each made once */
    assert_true(rows_of(rs) >= made && rows_of(rs) <= made + RACE_IDS);
    free(ids);
    free(out);
    row_store_destroy(rs);
}

/* ADD and OPTIMIZE pushes of finite values are read where they lie, run after run:
 * values in pieces cut mid-row and mid-float, half of them unaligned, over more than
 * one run (ROW_PUSH_RUN_FLOATS), give the same rows and state as one aligned buffer. */
static void test_values_read_in_place(void **state) {
    (void)state;
    enum { N = 20000, DIM = 3, TOTAL = N * DIM * 4 }; /* 60000 floats: two runs */
    const table_spec spec = {.dim = DIM,
                             .init = TABLE_INIT_NORMAL,
                             .init_scale = 0.2f,
                             .seed = 5,
                             .optimizer = OPTIM_ADAGRAD};
    optim_spec opt;
    optim_spec_defaults(OPTIM_ADAGRAD, &opt);
    row_store *a = make_store(NULL, 0), *b = make_store(NULL, 0);
    uint64_t *ids = malloc(N * sizeof *ids);
    float *g = malloc(TOTAL);
    uint8_t *shifted = malloc(TOTAL + 1); /* the same values a byte off alignment */
    assert_true(ids && g && shifted);
    for (size_t i = 0; i < N; i++) {
        ids[i] = i * 7919 + 1;
        for (size_t j = 0; j < DIM; j++)
            g[i * DIM + j] = 0.001f * (float)((i * 31 + j * 17) % 2001) - 1.0f;
    }
    memcpy(shifted + 1, g, TOTAL);
    ps_bytes pieces[64];
    const size_t sizes[4] = {4093, 16384, 40000, 3};
    size_t np = 0;
    for (size_t at = 0; at < TOTAL; np++) {
        size_t len = TOTAL - at < sizes[np % 4] ? TOTAL - at : sizes[np % 4];
        pieces[np] = (ps_bytes){np % 2 ? shifted + 1 + at : (const uint8_t *)g + at, len};
        at += len;
    }
    assert_true(np <= 64);
    const row_op ops[3] = {ROW_OP_OPTIMIZE, ROW_OP_ADD, ROW_OP_OPTIMIZE};
    for (int k = 0; k < 3; k++) {
        const optim_spec *o = ops[k] == ROW_OP_OPTIMIZE ? &opt : NULL;
        assert_int_equal(push(a, "t", &spec, ops[k], o, N, ids, g, false, NULL, NULL),
                         PS_STATUS_OK);
        row_push p = {.model = "m",
                      .table = "t",
                      .spec = &spec,
                      .op = ops[k],
                      .optimizer = o,
                      .n = N,
                      .ids = ids,
                      .values_len = TOTAL,
                      .pieces = pieces,
                      .n_pieces = np};
        assert_int_equal(row_store_push(b, &p, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    }
    float *wa = malloc(TOTAL), *wb = malloc(TOTAL), *sa = malloc(TOTAL), *sb = malloc(TOTAL);
    assert_true(wa && wb && sa && sb);
    assert_int_equal(pull(a, "t", &spec, N, ids, wa, sa, NULL, NULL), PS_STATUS_OK);
    assert_int_equal(pull(b, "t", &spec, N, ids, wb, sb, NULL, NULL), PS_STATUS_OK);
    assert_memory_equal(wa, wb, TOTAL);
    assert_memory_equal(sa, sb, TOTAL); /* Adagrad: one state float per weight */
    free(wa);
    free(wb);
    free(sa);
    free(sb);
    free(ids);
    free(g);
    free(shifted);
    row_store_destroy(a);
    row_store_destroy(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assign_add),           cmocka_unit_test(test_optimize),
        cmocka_unit_test(test_duplicate_ids),        cmocka_unit_test(test_non_finite),
        cmocka_unit_test(test_optimize_many),        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_concurrent),           cmocka_unit_test(test_values_in_pieces),
        cmocka_unit_test(test_values_read_in_place), cmocka_unit_test(test_push_against_removal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
