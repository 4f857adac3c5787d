/* test_image_export.c: unit tests of image export and install (image.h): an export
 * visits exactly what its predicate accepts, with the values, state, steps and versions
 * the stores hold; it shows one point in time while pushes, deletes and new rows go on
 * (copy on write); installs replace chunks and rows whole, count in the quota, refuse
 * bad images whole; a journaled install replays from the log. */
#include "test_image.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "shard_limits.h"
#include "util.h"
#include "wal.h"

static const table_spec *adam_spec(void) {
    static table_spec s;
    s = ti_spec(OPTIM_ADAM, 4);
    return &s;
}

static const table_spec *plain_spec(void) {
    static table_spec s;
    s = ti_spec(OPTIM_NONE, 3);
    return &s;
}

/* 40 chunks (keys 1..40, some named), Adam state on keys 1..5; rows in two tables. */
static void fill(ti_world *w) {
    for (uint64_t k = 1; k <= 40; k++)
        assert_int_equal(ti_push(w, UPDATE_LOG_OP_ASSIGN, k, 10 + (uint32_t)k, (float)k),
                         PS_STATUS_OK);
    for (int rep = 0; rep < 2; rep++)
        for (uint64_t k = 1; k <= 5; k++)
            assert_int_equal(ti_push(w, UPDATE_LOG_OP_OPTIMIZE, k, 10 + (uint32_t)k, 0.5f),
                             PS_STATUS_OK);
    uint64_t key = 7;
    uint32_t len = 17;
    float v[17] = {0};
    const char *names[] = {"m/named#0"};
    store_push p = {.op = UPDATE_LOG_OP_ASSIGN,
                    .n = 1,
                    .keys = &key,
                    .lengths = &len,
                    .values = (const uint8_t *)v,
                    .values_len = sizeof v,
                    .names = names};
    store_batch *b = NULL;
    assert_int_equal(store_batch_prepare(w->store, &p, &b, NULL, 0), PS_STATUS_OK);
    assert_int_equal(store_batch_apply(w->store, b, NULL, NULL, NULL, 0), PS_STATUS_OK);
    store_batch_destroy(b);
    uint64_t ids[200];
    for (int i = 0; i < 200; i++)
        ids[i] = (uint64_t)i * 3;
    assert_int_equal(ti_push_rows(w, "e", adam_spec(), ROW_OP_OPTIMIZE, 200, ids, 0.25f),
                     PS_STATUS_OK);
    assert_int_equal(ti_push_rows(w, "p", plain_spec(), ROW_OP_ASSIGN, 100, ids, 2.0f),
                     PS_STATUS_OK);
}

static bool even(void *arg, uint64_t key) {
    (void)arg;
    return key % 2 == 0;
}

typedef struct seen {
    ti_world *w;
    uint64_t chunks, rows, max_version;
} seen;

static ps_status check_chunk(void *arg, const image_chunk *c) {
    seen *s = arg;
    assert_true(c->key % 2 == 0);
    uint32_t len;
    uint64_t version, seq;
    float *values, *state;
    size_t values_len, state_len;
    store_state_info info;
    assert_int_equal(store_read_state(s->w->store, 1, &c->key, UINT64_MAX, &len, &version, &values,
                                      &values_len, &info, &state, &state_len, &seq, NULL, 0),
                     PS_STATUS_OK);
    assert_int_equal(c->len, len);
    assert_int_equal(c->version, version);
    assert_int_equal(c->kind, info.kind);
    assert_int_equal(c->steps, info.steps);
    assert_memory_equal(c->values, values, values_len);
    if (state_len)
        assert_memory_equal(c->state, state, state_len);
    assert_string_equal(c->name, c->key == 7 ? "m/named#0" : "");
    free(values);
    free(state);
    s->chunks++;
    s->max_version = version > s->max_version ? version : s->max_version;
    return PS_STATUS_OK;
}

static ps_status check_rows(void *arg, const image_rows *r) {
    seen *s = arg;
    const uint32_t dim = r->spec.dim, slots = optim_spec_slots(r->spec.optimizer);
    float *out = malloc(r->n * dim * 4), *st = malloc(r->n * dim * 4 * (slots + 1));
    uint64_t *steps = malloc(r->n * 8);
    assert_int_equal(row_store_pull(s->w->rows, r->model, r->table, &r->spec, r->n, r->ids, out, st,
                                    steps, NULL, NULL, 0),
                     PS_STATUS_OK);
    for (size_t i = 0; i < r->n; i++)
        assert_true(ps_key_row(r->model, r->table, r->ids[i]) % 2 == 0);
    assert_memory_equal(r->values, out, r->n * dim * 4);
    assert_memory_equal(r->steps, steps, r->n * 8);
    if (slots)
        assert_memory_equal(r->state, st, r->n * dim * 4 * slots);
    free(out);
    free(st);
    free(steps);
    s->rows += r->n;
    return PS_STATUS_OK;
}

static void test_export_visits_what_the_predicate_accepts(void **state) {
    (void)state;
    ti_world w = ti_world_make(0);
    fill(&w);
    seen s = {.w = &w};
    image_export_opts o = {.chunks = w.store,
                           .rows = w.rows,
                           .accept = even,
                           .visit_chunk = check_chunk,
                           .visit_rows = check_rows,
                           .arg = &s};
    image_export_info info;
    assert_int_equal(image_export(&o, &info, NULL, 0), PS_STATUS_OK);
    assert_int_equal(s.chunks, 20);
    assert_int_equal(info.chunks, 20);
    assert_int_equal(info.max_version, s.max_version);
    assert_int_equal(info.tables, 2);
    uint64_t want_rows = 0;
    for (uint64_t i = 0; i < 200; i++)
        want_rows += (ps_key_row("m", "e", i * 3) % 2 == 0) +
                     (i < 100 && ps_key_row("m", "p", i * 3) % 2 == 0);
    assert_int_equal(s.rows, want_rows);
    assert_int_equal(info.rows, want_rows);
    store_stats ss;
    store_get_stats(w.store, &ss);
    assert_int_equal(info.seq, ss.seq);
    ti_world_free(&w);
}

/* A visitor that installs into another world. */
static ps_status install_chunk(void *arg, const image_chunk *c) {
    image_target t = ti_target(arg);
    return image_install_chunks(&t, 1, c, NULL, NULL, 0);
}

static ps_status install_rows(void *arg, const image_rows *r) {
    image_target t = ti_target(arg);
    return image_install_rows(&t, r, NULL, NULL, 0);
}

static void copy_world(ti_world *from, ti_world *to) {
    image_export_opts o = {.chunks = from->store,
                           .rows = from->rows,
                           .visit_chunk = install_chunk,
                           .visit_rows = install_rows,
                           .arg = to};
    assert_int_equal(image_export(&o, NULL, NULL, 0), PS_STATUS_OK);
}

static void test_install_copies_a_store_whole(void **state) {
    (void)state;
    ti_world a = ti_world_make(0), b = ti_world_make(0);
    fill(&a);
    copy_world(&a, &b);
    ti_dump da = ti_dump_take(&a, NULL), db = ti_dump_take(&b, NULL);
    ti_dump_assert_equal(&da, &db);
    assert_int_equal(quota_used(a.quota), quota_used(b.quota));
    uint64_t keys[40], la[40], lb[40];
    uint32_t na[40], nb[40];
    for (int i = 0; i < 40; i++)
        keys[i] = (uint64_t)i + 1;
    store_stat(a.store, 40, keys, na, la);
    store_stat(b.store, 40, keys, nb, lb);
    assert_memory_equal(la, lb, sizeof la); /* versions too */
    store_stats sa, sb;
    store_get_stats(a.store, &sa);
    store_get_stats(b.store, &sb);
    assert_int_equal(sa.bytes, sb.bytes);
    uint64_t ra, rb, ba, bb;
    row_store_totals(a.rows, &ra, &ba);
    row_store_totals(b.rows, &rb, &bb);
    assert_int_equal(ra, rb);
    assert_int_equal(ba, bb);
    /* installing again over the same keys changes nothing */
    copy_world(&a, &b);
    assert_int_equal(quota_used(a.quota), quota_used(b.quota));
    /* a chunk replaced by one of another length and no state */
    uint64_t before = quota_used(b.quota);
    float v[3] = {1, 2, 3};
    image_chunk c = {.key = 1, .version = 9, .len = 3, .name = "", .values = v};
    image_target t = ti_target(&b);
    assert_int_equal(image_install_chunks(&t, 1, &c, NULL, NULL, 0), PS_STATUS_OK);
    assert_int_equal(quota_used(b.quota), before - 11 * 4 * 3 + 3 * 4);
    uint32_t len;
    uint64_t version;
    store_stat(b.store, 1, &c.key, &len, &version);
    assert_int_equal(len, 3);
    assert_int_equal(version, 9);
    ti_dump_free(&da);
    ti_dump_free(&db);
    ti_world_free(&a);
    ti_world_free(&b);
}

static void test_bad_installs_change_nothing(void **state) {
    (void)state;
    ti_world w = ti_world_make(1000);
    image_target t = ti_target(&w);
    float v[4] = {1, 2, 3, 4}, bad[4] = {1, NAN, 3, 4};
    char err[300];
    image_chunk c[2] = {{.key = 1, .len = 4, .name = "", .values = v},
                        {.key = 1, .len = 4, .name = "", .values = v}};
    assert_int_equal(image_install_chunks(&t, 2, c, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT); /* a key twice */
    c[1].key = 2;
    c[1].values = bad;
    assert_int_equal(image_install_chunks(&t, 2, c, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT); /* a NaN */
    assert_non_null(strstr(err, "NaN"));
    c[1].values = v;
    c[1].len = 300; /* 1200 bytes: past the 1000-byte quota */
    float big[300] = {0};
    c[1].values = big;
    assert_int_equal(image_install_chunks(&t, 2, c, NULL, err, sizeof err),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    c[1].len = 0;
    assert_int_equal(image_install_chunks(&t, 2, c, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(
        image_install_chunks(&t, IMAGE_MAX_INSTALL_CHUNKS + 1, c, NULL, err, sizeof err),
        PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(quota_used(w.quota), 0);
    store_stats ss;
    store_get_stats(w.store, &ss);
    assert_int_equal(ss.keys, 0);
    uint64_t ids[2] = {5, 5}, steps[2] = {0, 0};
    float rv[6] = {0};
    image_rows r = {.model = "m",
                    .table = "p",
                    .spec = *plain_spec(),
                    .n = 2,
                    .ids = ids,
                    .steps = steps,
                    .values = rv};
    assert_int_equal(image_install_rows(&t, &r, NULL, err, sizeof err),
                     PS_STATUS_INVALID_ARGUMENT); /* an id twice */
    ids[1] = 6;
    r.n = IMAGE_MAX_ROWS + 1;
    assert_int_equal(image_install_rows(&t, &r, NULL, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    r.n = 2;
    assert_int_equal(image_install_rows(&t, &r, NULL, err, sizeof err), PS_STATUS_OK);
    r.spec.seed = 99; /* the table exists with another spec */
    assert_int_equal(image_install_rows(&t, &r, NULL, err, sizeof err),
                     PS_STATUS_FAILED_PRECONDITION);
    ti_world_free(&w);
}

/* ------------------------------------------------------------------ point in time --- */

typedef struct busy {
    ti_world *w;
    ti_dump *d;
    int pushed;
} busy;

/* Changes everything an export holds, after its point in time. */
static void churn(ti_world *w) {
    for (uint64_t k = 1; k <= 40; k++)
        if (k != 20) /* deleted below */
            assert_int_equal(ti_push(w, k <= 5 ? UPDATE_LOG_OP_OPTIMIZE : UPDATE_LOG_OP_ADD, k,
                                     10 + (uint32_t)k, 1.0f),
                             PS_STATUS_OK);
    uint64_t gone = 20;
    store_delete(w->store, 1, &gone, NULL, NULL);
    assert_int_equal(ti_push(w, UPDATE_LOG_OP_ASSIGN, 99, 5, 1.0f), PS_STATUS_OK);
    uint64_t ids[300];
    for (int i = 0; i < 300; i++)
        ids[i] = (uint64_t)i * 3; /* 200 existing rows and 100 new ones */
    assert_int_equal(ti_push_rows(w, "e", adam_spec(), ROW_OP_OPTIMIZE, 300, ids, -0.5f),
                     PS_STATUS_OK);
    assert_int_equal(ti_push_rows(w, "p", plain_spec(), ROW_OP_ADD, 300, ids, 1.0f), PS_STATUS_OK);
}

static ps_status churn_then_dump_chunk(void *arg, const image_chunk *c) {
    busy *b = arg;
    if (b->pushed++ == 3)
        churn(b->w); /* midway through the chunks */
    return ti_dump_chunk(b->d, c);
}

static ps_status churn_then_dump_rows(void *arg, const image_rows *r) {
    busy *b = arg;
    churn(b->w); /* between batches too */
    return ti_dump_rows(b->d, r);
}

static ps_status churn_at_begin(void *arg, const image_export_info *info) {
    (void)info;
    churn(((busy *)arg)->w);
    return PS_STATUS_OK;
}

static void test_export_is_one_point_in_time(void **state) {
    (void)state;
    ti_world w = ti_world_make(0);
    fill(&w);
    ti_dump want = ti_dump_take(&w, NULL), got = {0};
    busy b = {.w = &w, .d = &got};
    image_export_opts o = {.chunks = w.store,
                           .rows = w.rows,
                           .visit_begin = churn_at_begin,
                           .visit_chunk = churn_then_dump_chunk,
                           .visit_rows = churn_then_dump_rows,
                           .arg = &b};
    assert_int_equal(image_export(&o, NULL, NULL, 0), PS_STATUS_OK);
    qsort(got.items, got.n, sizeof *got.items, ti_item_cmp);
    ti_dump_assert_equal(&want, &got);
    ti_dump after = ti_dump_take(&w, NULL); /* the pushes did land */
    assert_int_not_equal(after.n, want.n);
    ti_dump_free(&want);
    ti_dump_free(&got);
    ti_dump_free(&after);
    ti_world_free(&w);
}

/* ------------------------------------------------------------------ journal --- */

static ps_status replay_images(void *arg, uint8_t type, uint64_t lsn, const void *payload,
                               size_t len) {
    (void)lsn;
    assert_int_equal(type, IMAGE_JOURNAL_TYPE);
    image_target t = ti_target(arg);
    char err[300] = "";
    ps_status st = image_journal_replay(&t, payload, len, err, sizeof err);
    if (st != PS_STATUS_OK)
        print_error("replay: %s\n", err);
    return st;
}

static ps_status install_journaled_chunk(void *arg, const image_chunk *c) {
    image_target *t = arg;
    uint64_t lsn = 0;
    ps_status st = image_install_chunks(t, 1, c, &lsn, NULL, 0);
    assert_true(lsn > 0);
    return st;
}

static ps_status install_journaled_rows(void *arg, const image_rows *r) {
    return image_install_rows(arg, r, NULL, NULL, 0);
}

static void test_journaled_installs_replay(void **state) {
    (void)state;
    char dir[] = "/tmp/test_image_export.XXXXXX";
    assert_non_null(mkdtemp(dir));
    ti_world a = ti_world_make(0), b = ti_world_make(0), c = ti_world_make(0);
    fill(&a);
    wal *log = NULL;
    wal_opts wo = {.dir = dir, .fsync = WAL_FSYNC_NONE};
    assert_int_equal(wal_open(&wo, NULL, &log, NULL, 0), PS_STATUS_OK);
    image_target t = {
        .chunks = b.store, .rows = b.rows, .journal = image_journal_wal, .journal_arg = log};
    image_export_opts o = {.chunks = a.store,
                           .rows = a.rows,
                           .visit_chunk = install_journaled_chunk,
                           .visit_rows = install_journaled_rows,
                           .arg = &t};
    assert_int_equal(image_export(&o, NULL, NULL, 0), PS_STATUS_OK);
    wal_close(log);
    wo.replay = replay_images;
    wo.replay_arg = &c;
    char err[512] = "";
    assert_int_equal(wal_open(&wo, NULL, &log, err, sizeof err), PS_STATUS_OK);
    wal_close(log);
    ti_dump da = ti_dump_take(&a, NULL), dc = ti_dump_take(&c, NULL);
    ti_dump_assert_equal(&da, &dc);
    ti_dump_free(&da);
    ti_dump_free(&dc);
    ti_world_free(&a);
    ti_world_free(&b);
    ti_world_free(&c);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_visits_what_the_predicate_accepts),
        cmocka_unit_test(test_install_copies_a_store_whole),
        cmocka_unit_test(test_bad_installs_change_nothing),
        cmocka_unit_test(test_export_is_one_point_in_time),
        cmocka_unit_test(test_journaled_installs_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
