/* test_repl_frames.c: a Replicate batch walked in the pieces it arrived in
 * (repl_frames.h), and push records applied from pieces (journal_apply_pieces): the
 * same as from one buffer, whatever the split; bad framing refused before anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "journal.h"
#include "repl_frames.h"
#include "replicator.h"
#include "row_store.h"
#include "store.h"
#include "wal.h"
#include "update_log.h"

#define KEYS 3
#define FLOATS 700
#define MANY 3000

/* A batch: frames of the given types and payloads back to back (malloc'd). */
static uint8_t *batch_of(size_t n, const uint8_t *types, const uint8_t *const *payloads,
                         const size_t *lens, size_t *ret_len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += REPLICATOR_FRAME_HEAD + lens[i];
    uint8_t *b = calloc(total + 1, 1), *at = b;
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        uint32_t l = (uint32_t)lens[i];
        at[0] = types[i];
        memcpy(at + 4, &l, 4);
        if (lens[i])
            memcpy(at + REPLICATOR_FRAME_HEAD, payloads[i], lens[i]);
        at += REPLICATOR_FRAME_HEAD + lens[i];
    }
    *ret_len = total;
    return b;
}

/* bytes[0..len) cut every `step` bytes (malloc'd pieces). */
static ps_bytes *split(const uint8_t *bytes, size_t len, size_t step, size_t *ret_n) {
    size_t n = (len + step - 1) / step;
    ps_bytes *p = calloc(n + 1, sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (ps_bytes){bytes + i * step, len - i * step < step ? len - i * step : step};
    *ret_n = n;
    return p;
}

/* An encoded record in one buffer (malloc'd); frees the encoding. */
static uint8_t *flat_record(journal_encoded *e, size_t *ret_len) {
    uint8_t *rec = malloc(e->len + 1), *at = rec;
    assert_non_null(rec);
    for (int i = 0; i < e->n_iov; i++) {
        memcpy(at, e->iov[i].iov_base, e->iov[i].iov_len);
        at += e->iov[i].iov_len;
    }
    *ret_len = e->len;
    journal_encoded_free(e);
    return rec;
}

/* The push record of KEYS keys of FLOATS floats, names, a request id (malloc'd). */
static uint8_t *push_record(float base, size_t *ret_len) {
    static const uint64_t keys[KEYS] = {11, 22, 33};
    static const uint32_t lengths[KEYS] = {FLOATS, FLOATS, FLOATS};
    static const char *const names[KEYS] = {"m/t#0", "", "m/a-longer-name#2"};
    float *v = malloc(KEYS * FLOATS * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < KEYS * FLOATS; i++)
        v[i] = base + (float)i * 0.25f;
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = KEYS,
                    .keys = keys,
                    .lengths = lengths,
                    .values = (const uint8_t *)v,
                    .values_len = KEYS * FLOATS * sizeof *v,
                    .names = names,
                    .request_id = 77,
                    .base_version = 9};
    journal_encoded e;
    assert_int_equal(journal_encode_push(&p, &e), PS_STATUS_OK);
    uint8_t *rec = flat_record(&e, ret_len);
    free(v);
    return rec;
}

static void test_frames_walk_any_split(void **state) {
    (void)state;
    size_t push_len;
    uint8_t *push = push_record(1.0f, &push_len);
    const uint8_t del[] = {1, 2, 3, 4, 5};
    const uint8_t types[] = {JOURNAL_TYPE_PUSH, JOURNAL_TYPE_DELETE, 9};
    const uint8_t *payloads[] = {push, del, NULL};
    const size_t lens[] = {push_len, sizeof del, 0};
    size_t len;
    uint8_t *batch = batch_of(3, types, payloads, lens, &len);
    const size_t steps[] = {1, 3, 8, 4096, len};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        size_t n;
        ps_bytes *pieces = split(batch, len, steps[s], &n);
        repl_frames *f = NULL;
        char err[256] = "";
        assert_int_equal(repl_frames_create(pieces, n, 3, 1u << 20, &f, err, sizeof err),
                         PS_STATUS_OK);
        repl_frame fr;
        for (size_t i = 0; i < 3; i++) {
            assert_true(repl_frames_next(f, &fr));
            assert_int_equal(fr.type, types[i]);
            assert_int_equal(fr.len, lens[i]);
            size_t at = 0;
            for (size_t k = 0; k < fr.n_pieces; k++) {
                assert_memory_equal(fr.pieces[k].data, payloads[i] + at, fr.pieces[k].len);
                at += fr.pieces[k].len;
            }
            assert_int_equal(at, lens[i]);
            const uint8_t *flat;
            uint8_t *owned;
            assert_int_equal(repl_frame_flat(&fr, &flat, &owned), PS_STATUS_OK);
            if (lens[i])
                assert_memory_equal(flat, payloads[i], lens[i]);
            assert_true((owned != NULL) == (fr.n_pieces > 1)); /* one piece: not copied */
            free(owned);
        }
        assert_false(repl_frames_next(f, &fr));
        repl_frames_destroy(f);
        free(pieces);
    }
    free(batch);
    free(push);
}

static void test_frames_refuse_bad_framing(void **state) {
    (void)state;
    const uint8_t body[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const uint8_t types[] = {JOURNAL_TYPE_DELETE};
    const uint8_t *payloads[] = {body};
    const size_t lens[] = {sizeof body};
    size_t len;
    uint8_t *batch = batch_of(1, types, payloads, lens, &len);
    struct {
        size_t len;
        uint32_t count;
        size_t max_frame;
        const char *says;
    } cases[] = {
        {len, 2, 64, "record 2 of 2 is cut short"},    {5, 1, 64, "record 1 of 1 is cut short"},
        {len - 1, 1, 64, "more than were sent"},       {len, 1, 4, "more than a record may hold"},
        {len, 0, 64, "18 bytes follow the 0 records"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t n;
        ps_bytes *pieces = split(batch, cases[c].len, 3, &n);
        repl_frames *f = NULL;
        char err[256] = "";
        assert_int_equal(
            repl_frames_create(pieces, n, cases[c].count, cases[c].max_frame, &f, err, sizeof err),
            PS_STATUS_INVALID_ARGUMENT);
        assert_null(f);
        if (!strstr(err, cases[c].says))
            fail_msg("case %zu: '%s' does not say '%s'", c, err, cases[c].says);
        free(pieces);
    }
    free(batch);
}

/* Reads key's FLOATS values from s into out. */
static void read_key(store *s, uint64_t key, float *out) {
    uint32_t l;
    uint64_t v;
    float *vals = NULL;
    size_t vl;
    char err[256];
    assert_int_equal(store_read(s, 1, &key, UINT64_MAX, &l, &v, &vals, &vl, NULL, err, sizeof err),
                     PS_STATUS_OK);
    assert_int_equal(l, FLOATS);
    memcpy(out, vals, FLOATS * sizeof *out);
    free(vals);
}

static void test_push_applied_from_pieces_as_from_one_buffer(void **state) {
    (void)state;
    size_t len;
    uint8_t *rec = push_record(-3.0f, &len);
    update_log *flat_log, *log;
    store *flat, *st;
    assert_int_equal(update_log_create(&(update_log_opts){.start_seq = 1}, &flat_log),
                     PS_STATUS_OK);
    assert_int_equal(store_create(&(store_opts){.log = flat_log}, &flat), PS_STATUS_OK);
    journal_target ft = {.chunks = flat};
    assert_int_equal(journal_apply(&ft, JOURNAL_TYPE_PUSH, rec, len, true, NULL), PS_STATUS_OK);
    const size_t steps[] = {1, 5, 50, 4096};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        assert_int_equal(update_log_create(&(update_log_opts){.start_seq = 1}, &log), PS_STATUS_OK);
        assert_int_equal(store_create(&(store_opts){.log = log}, &st), PS_STATUS_OK);
        journal_target t = {.chunks = st};
        size_t n;
        ps_bytes *pieces = split(rec, len, steps[s], &n);
        assert_int_equal(journal_apply_pieces(&t, JOURNAL_TYPE_PUSH, pieces, n, len, true, NULL),
                         PS_STATUS_OK);
        const uint64_t keys[KEYS] = {11, 22, 33};
        for (size_t k = 0; k < KEYS; k++) {
            float a[FLOATS], b[FLOATS];
            read_key(flat, keys[k], a);
            read_key(st, keys[k], b);
            assert_memory_equal(a, b, sizeof a);
            assert_true(b[FLOATS - 1] == -3.0f + (float)((k + 1) * FLOATS - 1) * 0.25f);
        }
        /* a record cut anywhere in its head, names or values is refused, nothing applied */
        const size_t cuts[] = {10, 60, 100, len - 4};
        for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
            size_t m = 0;
            while (m < n && (size_t)(pieces[m].data - rec) < cuts[c])
                m++;
            pieces[m - 1].len = cuts[c] - (size_t)(pieces[m - 1].data - rec);
            store *empty;
            assert_int_equal(store_create(&(store_opts){.log = log}, &empty), PS_STATUS_OK);
            journal_target et = {.chunks = empty};
            ps_status got =
                journal_apply_pieces(&et, JOURNAL_TYPE_PUSH, pieces, m, cuts[c], true, NULL);
            if (got != PS_STATUS_PARSE && got != PS_STATUS_INVALID_ARGUMENT)
                fail_msg("cut at %zu of %zu (pieces of %zu): %s", cuts[c], len, steps[s],
                         ps_status_name(got));
            uint64_t key = 11, ver;
            uint32_t l;
            float *vals = NULL;
            size_t vl;
            char err[256];
            assert_int_equal(
                store_read(empty, 1, &key, UINT64_MAX, &l, &ver, &vals, &vl, NULL, err, sizeof err),
                PS_STATUS_NOT_FOUND);
            store_destroy(empty);
            free(pieces);
            pieces = split(rec, len, steps[s], &n);
        }
        free(pieces);
        store_destroy(st);
        update_log_destroy(log);
    }
    store_destroy(flat);
    update_log_destroy(flat_log);
    free(rec);
}

/* A rows record (ADD of known values onto rows made on first touch, with a request
 * id) for `n` ids of a dim-5 table (malloc'd). */
#define ROWS_N 40
static const table_spec ROWS_SPEC = {
    .dim = 5, .init = TABLE_INIT_UNIFORM, .init_scale = 0.1f, .seed = 3, .optimizer = OPTIM_NONE};

static uint8_t *rows_record(size_t *ret_len) {
    uint64_t ids[ROWS_N];
    float v[ROWS_N * 5];
    for (size_t i = 0; i < ROWS_N; i++)
        ids[i] = 1000 + i * 7;
    for (size_t i = 0; i < ROWS_N * 5; i++)
        v[i] = (float)i * 0.5f;
    row_push p = {.model = "m",
                  .table = "emb",
                  .spec = &ROWS_SPEC,
                  .op = ROW_OP_ADD,
                  .n = ROWS_N,
                  .ids = ids,
                  .values = (const uint8_t *)v,
                  .values_len = sizeof v,
                  .request_id = 99};
    journal_encoded e;
    assert_int_equal(journal_encode_rows(&p, &e), PS_STATUS_OK);
    uint8_t *rec = flat_record(&e, ret_len);
    return rec;
}

static void read_rows(row_store *rs, float *out) {
    uint64_t ids[ROWS_N];
    for (size_t i = 0; i < ROWS_N; i++)
        ids[i] = 1000 + i * 7;
    char err[256];
    assert_int_equal(row_store_pull(rs, "m", "emb", &ROWS_SPEC, ROWS_N, ids, out, NULL, NULL, NULL,
                                    err, sizeof err),
                     PS_STATUS_OK);
}

static void test_rows_applied_from_pieces_as_from_one_buffer(void **state) {
    (void)state;
    size_t len;
    uint8_t *rec = rows_record(&len);
    row_store *flat;
    assert_int_equal(row_store_create(&(row_store_opts){.name = "flat"}, &flat), PS_STATUS_OK);
    journal_target ft = {.rows = flat};
    assert_int_equal(journal_apply(&ft, JOURNAL_TYPE_ROWS, rec, len, true, NULL), PS_STATUS_OK);
    float want[ROWS_N * 5], got[ROWS_N * 5];
    read_rows(flat, want);
    const size_t steps[] = {1, 3, 64, 1000};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        row_store *rs;
        assert_int_equal(row_store_create(&(row_store_opts){.name = "p"}, &rs), PS_STATUS_OK);
        journal_target t = {.rows = rs};
        size_t n;
        ps_bytes *pieces = split(rec, len, steps[s], &n);
        assert_int_equal(journal_apply_pieces(&t, JOURNAL_TYPE_ROWS, pieces, n, len, true, NULL),
                         PS_STATUS_OK);
        read_rows(rs, got);
        assert_memory_equal(got, want, sizeof got);
        /* cut in its head, names, ids or values: refused */
        const size_t cuts[] = {20, 75, 200, len - 3};
        for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
            size_t m = 0;
            while (m < n && (size_t)(pieces[m].data - rec) < cuts[c])
                m++;
            size_t keep = pieces[m - 1].len;
            pieces[m - 1].len = cuts[c] - (size_t)(pieces[m - 1].data - rec);
            row_store *empty;
            assert_int_equal(row_store_create(&(row_store_opts){.name = "e"}, &empty),
                             PS_STATUS_OK);
            journal_target et = {.rows = empty};
            ps_status st =
                journal_apply_pieces(&et, JOURNAL_TYPE_ROWS, pieces, m, cuts[c], true, NULL);
            if (st != PS_STATUS_PARSE && st != PS_STATUS_INVALID_ARGUMENT)
                fail_msg("rows cut at %zu of %zu (pieces of %zu): %s", cuts[c], len, steps[s],
                         ps_status_name(st));
            uint64_t rows = 1;
            row_store_totals(empty, &rows, NULL);
            assert_int_equal(rows, 0); /* nothing applied, not even a row made */
            row_store_destroy(empty);
            pieces[m - 1].len = keep;
        }
        free(pieces);
        row_store_destroy(rs);
    }
    row_store_destroy(flat);
    free(rec);
}

/* Values in more pieces than one log append takes (WAL_MAX_IOVCNT) are gathered into
 * one run for the log: a push and a rows push of one-float pieces, logged and replayed
 * into fresh stores, come back whole. */
static void test_values_in_many_pieces_reach_the_log_whole(void **state) {
    (void)state;
    char dir[] = "/tmp/test_repl_frames_XXXXXX";
    assert_non_null(mkdtemp(dir));
    wal *w = NULL;
    wal_opts wo = {.dir = dir, .fsync = WAL_FSYNC_NONE};
    assert_int_equal(wal_open(&wo, NULL, &w, NULL, 0), PS_STATUS_OK);
    update_log *log;
    store *st;
    row_store *rs;
    assert_int_equal(update_log_create(&(update_log_opts){.start_seq = 1}, &log), PS_STATUS_OK);
    assert_int_equal(store_create(&(store_opts){.log = log}, &st), PS_STATUS_OK);
    assert_int_equal(row_store_create(&(row_store_opts){.name = "r"}, &rs), PS_STATUS_OK);
    store_journal sj = journal_for(w);
    row_journal rj = journal_rows_for(w);
    store_set_journal(st, &sj);
    row_store_set_journal(rs, &rj);
    /* 3000 one-float pieces, beyond WAL_MAX_IOVCNT */
    float v[MANY];
    ps_bytes pieces[MANY];
    for (size_t i = 0; i < MANY; i++) {
        v[i] = (float)i * 0.5f - 7;
        pieces[i] = (ps_bytes){(const uint8_t *)(v + i), sizeof(float)};
    }
    const uint64_t key = 5;
    const uint32_t len = MANY;
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 1,
                    .keys = &key,
                    .lengths = &len,
                    .values_len = sizeof v,
                    .pieces = pieces,
                    .n_pieces = MANY};
    store_batch *b = NULL;
    char err[256];
    assert_int_equal(store_batch_prepare(st, &p, &b, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(st, b, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    store_batch_destroy(b);
    uint64_t ids[MANY / 5];
    for (size_t i = 0; i < MANY / 5; i++)
        ids[i] = 1000 + i * 7;
    row_push rp = {.model = "m",
                   .table = "emb",
                   .spec = &ROWS_SPEC,
                   .op = ROW_OP_ASSIGN,
                   .n = MANY / 5,
                   .ids = ids,
                   .values_len = sizeof v,
                   .pieces = pieces,
                   .n_pieces = MANY};
    assert_int_equal(row_store_push(rs, &rp, NULL, NULL, err, sizeof err), PS_STATUS_OK);
    wal_close(w);

    update_log *log2;
    store *st2;
    row_store *rs2;
    assert_int_equal(update_log_create(&(update_log_opts){.start_seq = 1}, &log2), PS_STATUS_OK);
    assert_int_equal(store_create(&(store_opts){.log = log2}, &st2), PS_STATUS_OK);
    assert_int_equal(row_store_create(&(row_store_opts){.name = "r2"}, &rs2), PS_STATUS_OK);
    journal_target t = {.chunks = st2, .rows = rs2};
    wal_opts ro = {.dir = dir, .fsync = WAL_FSYNC_NONE, .replay = journal_replay, .replay_arg = &t};
    assert_int_equal(wal_open(&ro, NULL, &w, NULL, 0), PS_STATUS_OK);
    wal_close(w);
    uint32_t l;
    uint64_t ver;
    float *vals = NULL;
    size_t vl;
    assert_int_equal(
        store_read(st2, 1, &key, UINT64_MAX, &l, &ver, &vals, &vl, NULL, err, sizeof err),
        PS_STATUS_OK);
    assert_int_equal(vl, sizeof v);
    assert_memory_equal(vals, v, sizeof v);
    free(vals);
    float rows[MANY];
    assert_int_equal(row_store_pull(rs2, "m", "emb", &ROWS_SPEC, MANY / 5, ids, rows, NULL, NULL,
                                    NULL, err, sizeof err),
                     PS_STATUS_OK);
    assert_memory_equal(rows, v, sizeof v);
    row_store_destroy(rs2);
    store_destroy(st2);
    update_log_destroy(log2);
    row_store_destroy(rs);
    store_destroy(st);
    update_log_destroy(log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_walk_any_split),
        cmocka_unit_test(test_frames_refuse_bad_framing),
        cmocka_unit_test(test_push_applied_from_pieces_as_from_one_buffer),
        cmocka_unit_test(test_rows_applied_from_pieces_as_from_one_buffer),
        cmocka_unit_test(test_values_in_many_pieces_reach_the_log_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
