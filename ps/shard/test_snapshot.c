/* test_snapshot.c: unit tests of snapshots (snapshot.h): one written and loaded back
 * holds everything; one taken while another thread pushes, plus the log records after
 * its LSN, rebuilds exactly the live state; every flipped byte, truncation or trailing
 * byte of a snapshot file is refused naming it; a log that no snapshot reaches back to
 * is refused; the thread takes snapshots as the log grows; the request ids a snapshot's
 * log records carried survive it; a snapshot is never ahead of the log on disk. */
#include "test_image.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers.h"
#include "journal.h"
#include "shard_ctx.h"
#include "snapshot.h"
#include "util.h"
#include <xxhash.h>

#define SEGMENT 4096 /* tiny log segments, so snapshots free some */

typedef struct durable {
    char dir[64];
    ti_world w;
    wal *log;
} durable;

static durable durable_make(void) {
    durable d = {0};
    snprintf(d.dir, sizeof d.dir, "/tmp/test_snapshot.XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    d.w = ti_world_make(0);
    wal_opts wo = {.dir = d.dir, .fsync = WAL_FSYNC_NONE, .segment_bytes = SEGMENT};
    assert_int_equal(wal_open(&wo, NULL, &d.log, NULL, 0), PS_STATUS_OK);
    store_journal j = journal_for(d.log);
    store_set_journal(d.w.store, &j);
    row_journal rj = journal_rows_for(d.log);
    row_store_set_journal(d.w.rows, &rj);
    return d;
}

static void durable_free(durable *d) {
    wal_close(d->log);
    ti_world_free(&d->w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    assert_int_equal(system(cmd), 0);
}

static size_t count_files(const char *dir, const char *prefix) {
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(dp));)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(dp);
    return n;
}

/* Pushes of every kind, `round` choosing the values. */
static void work(ti_world *w, int round) {
    static const table_spec adam = {.dim = 4,
                                    .init = TABLE_INIT_NORMAL,
                                    .init_scale = 0.1f,
                                    .seed = 9,
                                    .optimizer = OPTIM_ADAM};
    static const table_spec plain = {.dim = 2, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_NONE};
    uint64_t key = 1 + (uint64_t)(round % 30);
    if (round < 30) /* made in the first rounds */
        assert_int_equal(ti_push(w, UPDATE_LOG_OP_ASSIGN, key, 64, (float)round), PS_STATUS_OK);
    assert_int_equal(ti_push(w, round % 3 ? UPDATE_LOG_OP_ADD : UPDATE_LOG_OP_OPTIMIZE, key, 64,
                             0.01f * (float)(round % 7)),
                     PS_STATUS_OK);
    uint64_t ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = (uint64_t)((round * 16 + i) % 97);
    assert_int_equal(ti_push_rows(w, "adam", &adam, ROW_OP_OPTIMIZE, 16, ids, 0.1f), PS_STATUS_OK);
    assert_int_equal(ti_push_rows(w, "plain", &plain, ROW_OP_ADD, 16, ids, 1.0f), PS_STATUS_OK);
    if (round % 50 == 49) {
        uint64_t gone = 100 + (uint64_t)round;
        assert_int_equal(ti_push(w, UPDATE_LOG_OP_ASSIGN, gone, 8, 1.0f), PS_STATUS_OK);
        store_delete(w->store, 1, &gone, NULL, NULL);
    }
}

static void recover_into(const char *dir, ti_world *w, snapshot_recovery *rec) {
    journal_target jt = {.chunks = w->store, .rows = w->rows};
    snapshot_recover_opts o = {
        .wal = {.dir = dir, .fsync = WAL_FSYNC_NONE, .segment_bytes = SEGMENT},
        .target = ti_target(w),
        .replay = journal_replay,
        .replay_arg = &jt};
    wal *log = NULL;
    char err[512] = "";
    assert_int_equal(snapshot_recover(&o, rec, &log, err, sizeof err), PS_STATUS_OK);
    wal_close(log);
}

static void test_write_then_load(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 200; r++)
        work(&d.w, r);
    assert_int_equal(wal_wait(d.log, wal_last_lsn(d.log)), PS_STATUS_OK); /* all written */
    size_t segments = count_files(d.dir, "wal-");
    snapshot_info info;
    char err[512] = "";
    assert_int_equal(
        snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, err, sizeof err),
        PS_STATUS_OK);
    assert_int_equal(info.lsn, wal_last_lsn(d.log));
    assert_int_equal(info.chunks, 30);
    assert_int_equal(info.rows, 97 * 2);
    assert_int_equal(count_files(d.dir, "snap-"), 1);
    assert_true(count_files(d.dir, "wal-") < segments && segments > 4); /* freed */
    ti_world b = ti_world_make(0);
    image_target t = ti_target(&b);
    snapshot_info got;
    assert_int_equal(snapshot_load(info.path, &t, NULL, &got, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(got.lsn, info.lsn);
    assert_int_equal(got.rows, info.rows);
    assert_int_equal(got.max_version, info.max_version);
    ti_dump da = ti_dump_take(&d.w, NULL), db = ti_dump_take(&b, NULL);
    ti_dump_assert_equal(&da, &db);
    assert_int_equal(quota_used(d.w.quota), quota_used(b.quota));
    ti_dump_free(&da);
    ti_dump_free(&db);
    ti_world_free(&b);
    durable_free(&d);
}

typedef struct pusher {
    ti_world *w;
    atomic_bool stop;
    int rounds;
} pusher;

static void *push_main(void *arg) {
    pusher *p = arg;
    for (p->rounds = 0; !atomic_load(&p->stop) || p->rounds < 300; p->rounds++)
        work(p->w, p->rounds);
    return NULL;
}

static void test_a_snapshot_under_pushes_plus_the_log_is_the_live_state(void **state) {
    (void)state;
    durable d = durable_make();
    pusher p = {.w = &d.w};
    atomic_init(&p.stop, false);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, push_main, &p), 0);
    snapshot_info info = {0};
    for (int i = 0; i < 5; i++) { /* each one taken while the pusher runs */
        char err[512] = "";
        assert_int_equal(
            snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, err, sizeof err),
            PS_STATUS_OK);
    }
    atomic_store(&p.stop, true);
    pthread_join(t, NULL);
    assert_true(info.lsn < wal_last_lsn(d.log)); /* records after the last snapshot */
    ti_dump live = ti_dump_take(&d.w, NULL);
    wal_close(d.log);
    d.log = NULL;
    ti_world b = ti_world_make(0);
    snapshot_recovery rec;
    recover_into(d.dir, &b, &rec);
    assert_true(rec.loaded);
    assert_int_equal(rec.snap.lsn, info.lsn);
    assert_true(rec.replayed > 0);
    ti_dump back = ti_dump_take(&b, NULL);
    ti_dump_assert_equal(&live, &back);
    ti_dump_free(&live);
    ti_dump_free(&back);
    ti_world_free(&b);
    durable_free(&d);
}

static ps_status load_copy(const char *path, const uint8_t *data, size_t len, char *err,
                           size_t err_len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return snapshot_load(path, NULL, NULL, NULL, err, err_len);
}

static void test_every_damage_is_refused(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 20; r++)
        work(&d.w, r);
    dedup *req = NULL; /* request-id frames too */
    assert_int_equal(dedup_create(0, &req), PS_STATUS_OK);
    const uint64_t keys[3] = {1, 2, 3};
    assert_int_equal(dedup_record(req, 0xA, 3, keys, 0), PS_STATUS_OK);
    assert_int_equal(dedup_record(req, 0xB, 1, keys, 0), PS_STATUS_OK);
    snapshot_info info;
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, &(snapshot_requests){.dedup = req},
                                    d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    dedup_destroy(req);
    FILE *f = fopen(info.path, "rb");
    assert_non_null(f);
    uint8_t *data = malloc(info.bytes + 8);
    assert_int_equal(fread(data, 1, info.bytes, f), info.bytes);
    fclose(f);
    char copy[128], err[512];
    snprintf(copy, sizeof copy, "%s/damaged.snap", d.dir);
    assert_int_equal(load_copy(copy, data, info.bytes, err, sizeof err), PS_STATUS_OK);
    for (size_t at = 0; at < info.bytes; at += at < 200 ? 1 : 13) {
        data[at] ^= 0x40;
        err[0] = '\0';
        assert_int_equal(load_copy(copy, data, info.bytes, err, sizeof err), PS_STATUS_PARSE);
        assert_non_null(strstr(err, "damaged.snap"));
        data[at] ^= 0x40;
    }
    for (size_t len = 0; len < info.bytes; len += len < 100 ? 1 : 97)
        assert_int_equal(load_copy(copy, data, len, err, sizeof err), PS_STATUS_PARSE);
    memset(data + info.bytes, 0, 8);
    assert_int_equal(load_copy(copy, data, info.bytes + 8, err, sizeof err), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "after the end frame"));
    free(data);
    durable_free(&d);
}

static void test_a_log_no_snapshot_reaches_is_refused(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 100; r++)
        work(&d.w, r);
    snapshot_info info; /* it waits for the log first, then drops the segments it covers */
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    work(&d.w, 100);
    wal_close(d.log);
    d.log = NULL;
    assert_int_equal(unlink(info.path), 0); /* its log segments are gone already */
    ti_world b = ti_world_make(0);
    journal_target jt = {.chunks = b.store, .rows = b.rows};
    snapshot_recover_opts o = {.wal = {.dir = d.dir, .segment_bytes = SEGMENT},
                               .target = ti_target(&b),
                               .replay = journal_replay,
                               .replay_arg = &jt};
    wal *log = NULL;
    char err[512] = "";
    assert_int_equal(snapshot_recover(&o, NULL, &log, err, sizeof err),
                     PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(err, "no snapshot"));
    assert_null(log);
    ti_world_free(&b);
    durable_free(&d);
}

static void test_the_thread_takes_snapshots_as_the_log_grows(void **state) {
    (void)state;
    durable d = durable_make();
    snapshot_taker *t = NULL;
    snapshot_taker_opts o = {.dir = d.dir,
                             .chunks = d.w.store,
                             .rows = d.w.rows,
                             .wal = d.log,
                             .log_bytes = 32 << 10,
                             .check_ms = 5};
    assert_int_equal(snapshot_taker_create(&o, &t), PS_STATUS_OK);
    snapshot_taker_stats s = {0};
    int64_t deadline = ps_now_ms() + 30000;
    for (int r = 0; s.taken < 3 && ps_now_ms() < deadline; r++) {
        work(&d.w, r);
        snapshot_taker_get_stats(t, &s);
    }
    assert_true(s.taken >= 3);
    assert_int_equal(s.failed, 0);
    work(&d.w, 7);
    assert_int_equal(snapshot_taker_take_now(t, NULL, NULL, 0), PS_STATUS_OK);
    snapshot_taker_get_stats(t, &s);
    assert_int_equal(s.last_lsn, wal_last_lsn(d.log));
    uint64_t taken = s.taken;
    assert_int_equal(snapshot_taker_take_now(t, NULL, NULL, 0), PS_STATUS_OK); /* nothing new */
    snapshot_taker_get_stats(t, &s);
    assert_int_equal(s.taken, taken);
    snapshot_taker_destroy(t);
    durable_free(&d);
}

static void test_a_restart_starts_its_seqs_past_the_snapshot(void **state) {
    (void)state;
    durable d = durable_make(); /* seqs from 1000 */
    for (int r = 0; r < 40; r++)
        work(&d.w, r);
    snapshot_info info;
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    assert_true(info.max_version > 1000);
    shard_ctx *ctx = NULL; /* a shard whose clock is behind those versions */
    shard_ctx_opts o = {.id = "t", .start_seq = 5, .incarnation = 1};
    assert_int_equal(shard_ctx_create(&o, &ctx), PS_STATUS_OK);
    wal_close(d.log);
    d.log = NULL;
    snapshot_recovery rec;
    char err[512] = "";
    assert_int_equal(shard_ctx_open_journal(ctx, d.dir, WAL_FSYNC_NONE, &rec, err, sizeof err),
                     PS_STATUS_OK);
    assert_true(rec.loaded);
    ti_world w = {.log = ctx->log, .quota = ctx->quota, .store = ctx->store, .rows = ctx->rows};
    assert_int_equal(ti_push(&w, UPDATE_LOG_OP_ADD, 1, 64, 1.0f), PS_STATUS_OK);
    uint32_t len;
    uint64_t version;
    uint64_t key = 1;
    store_stat(ctx->store, 1, &key, &len, &version);
    assert_true(version > info.max_version); /* versions never go backwards */
    shard_ctx_destroy(ctx);                  /* a last snapshot */
    assert_int_equal(count_files(d.dir, "snap-"), 1);
    durable_free(&d);
}

/* Before, a snapshot held no request ids: once it let go of the log segments holding a
 * push, a restart forgot that push's request id, and the client's retry of it (its
 * answer lost) was applied a second time. */
/* A journal that remembers a record's request only after it appended it (a backup's
 * dedup record): settle runs before the snapshot reads what is remembered. */
typedef struct late_request {
    dedup *req;
    uint64_t lsn;
} late_request;

static void remember_late(void *arg) {
    late_request *l = arg;
    const uint64_t key = 15;
    assert_int_equal(dedup_record(l->req, 0xD, 1, &key, l->lsn), PS_STATUS_OK);
}

static void test_request_ids_survive_a_snapshot(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 50; r++)
        work(&d.w, r);
    dedup *req = NULL, *back = NULL;
    assert_int_equal(dedup_create(0, &req), PS_STATUS_OK);
    const uint64_t lsn = wal_last_lsn(d.log), a_keys[2] = {11, 12}, b_keys[1] = {13},
                   c_keys[1] = {14};
    assert_int_equal(dedup_record(req, 0xA, 2, a_keys, lsn), PS_STATUS_OK);     /* held */
    assert_int_equal(dedup_record(req, 0xC, 1, c_keys, 0), PS_STATUS_OK);       /* a replay's */
    assert_int_equal(dedup_record(req, 0xB, 1, b_keys, lsn + 5), PS_STATUS_OK); /* after it */
    snapshot_info info;
    char err[512] = "";
    late_request late = {req, lsn};
    const snapshot_requests requests = {.dedup = req, .settle = remember_late, .settle_arg = &late};
    assert_int_equal(
        snapshot_write(d.dir, d.w.store, d.w.rows, &requests, d.log, &info, err, sizeof err),
        PS_STATUS_OK);
    assert_int_equal(info.lsn, lsn);
    const uint64_t d_key = 15;
    /* loaded back, and through a recovery */
    for (int via_recover = 0; via_recover < 2; via_recover++) {
        assert_int_equal(dedup_create(0, &back), PS_STATUS_OK);
        if (via_recover) {
            wal_close(d.log);
            d.log = NULL;
            ti_world b = ti_world_make(0);
            journal_target jt = {.chunks = b.store, .rows = b.rows};
            snapshot_recover_opts o = {
                .wal = {.dir = d.dir, .fsync = WAL_FSYNC_NONE, .segment_bytes = SEGMENT},
                .target = ti_target(&b),
                .requests = back,
                .replay = journal_replay,
                .replay_arg = &jt};
            wal *log = NULL;
            assert_int_equal(snapshot_recover(&o, NULL, &log, err, sizeof err), PS_STATUS_OK);
            wal_close(log);
            ti_world_free(&b);
        } else {
            assert_int_equal(snapshot_load(info.path, NULL, back, NULL, err, sizeof err),
                             PS_STATUS_OK);
        }
        assert_int_equal(dedup_lookup(back, 0xA, 2, a_keys, NULL, NULL), 2);
        assert_int_equal(dedup_lookup(back, 0xC, 1, c_keys, NULL, NULL), 1);
        assert_int_equal(dedup_lookup(back, 0xD, 1, &d_key, NULL, NULL), 1); /* settled */
        assert_int_equal(dedup_lookup(back, 0xB, 1, b_keys, NULL, NULL), 0); /* the log's */
        dedup_destroy(back);
    }
    dedup_destroy(req);
    durable_free(&d);
}

/* A snapshot's LSN is the last record appended to the log, which the log's flusher may
 * not have written: before, a snapshot was renamed into place regardless, and a kill
 * right then left a directory whose log ended before the snapshot (the next start
 * refused it). A log that cannot write refuses the snapshot now. */
static void test_a_snapshot_is_never_ahead_of_the_log(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 20; r++)
        work(&d.w, r);
    assert_int_equal(wal_wait(d.log, wal_last_lsn(d.log)), PS_STATUS_OK);
    wal_fault_fail_io(d.log, WAL_FAULT_WRITE, 1, EIO); /* the next write fails */
    /* one record: appended before the flusher can fail (after that, appends fail too) */
    assert_int_equal(ti_push(&d.w, UPDATE_LOG_OP_ADD, 1, 64, 1.0f), PS_STATUS_OK);
    snapshot_info info;
    char err[512] = "";
    assert_int_equal(
        snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, err, sizeof err),
        PS_STATUS_IO);
    assert_non_null(strstr(err, "the log did not reach its LSN"));
    assert_int_equal(count_files(d.dir, "snap-"), 0); /* neither renamed nor left as .tmp */
    durable_free(&d);
}

/* The snapshot's bytes (malloc'd) with its header saying format 1. */
/* The snapshot's bytes (malloc'd). */
static uint8_t *snapshot_bytes(const snapshot_info *info) {
    FILE *f = fopen(info->path, "rb");
    assert_non_null(f);
    uint8_t *data = malloc(info->bytes);
    assert_int_equal(fread(data, 1, info->bytes, f), info->bytes);
    fclose(f);
    return data;
}

static uint8_t *format_1_copy(const snapshot_info *info) {
    uint8_t *data = snapshot_bytes(info);
    const uint32_t one = 1;
    memcpy(data + 8, &one, 4);
    uint64_t sum = XXH3_64bits(data, 56);
    memcpy(data + 56, &sum, 8);
    return data;
}

/* Format 1 files (before request ids) are still read, and a snapshot without request
 * ids is written as one (a rollback to a build from before them reads it); in format 1
 * a request-id frame is refused. */
static void test_format_1_is_read(void **state) {
    (void)state;
    durable d = durable_make();
    for (int r = 0; r < 10; r++)
        work(&d.w, r);
    snapshot_info info;
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, NULL, d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    uint32_t format = 0;
    uint8_t *written = snapshot_bytes(&info);
    memcpy(&format, written + 8, 4);
    free(written);
    assert_int_equal(format, 1); /* no request ids: written as format 1 */
    uint8_t *data = format_1_copy(&info);
    char copy[128], err[512] = "";
    snprintf(copy, sizeof copy, "%s/old.snap", d.dir);
    assert_int_equal(load_copy(copy, data, info.bytes, err, sizeof err), PS_STATUS_OK);
    free(data);
    dedup *req = NULL;
    assert_int_equal(dedup_create(0, &req), PS_STATUS_OK);
    const uint64_t key = 5;
    assert_int_equal(dedup_record(req, 0xA, 1, &key, 0), PS_STATUS_OK);
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, &(snapshot_requests){.dedup = req},
                                    d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    data = format_1_copy(&info);
    assert_int_equal(load_copy(copy, data, info.bytes, err, sizeof err), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "bad magic or kind"));
    free(data);
    dedup_destroy(req);
    durable_free(&d);
}

/* A request-id frame whose record lies about its key count (its checksum made right, as a
 * hostile or buggy writer would): refused naming the file, nothing sized by the count. */
static void test_a_forged_request_count_is_refused(void **state) {
    (void)state;
    durable d = durable_make();
    work(&d.w, 0);
    dedup *req = NULL;
    assert_int_equal(dedup_create(0, &req), PS_STATUS_OK);
    const uint64_t keys[3] = {1, 2, 3};
    assert_int_equal(dedup_record(req, 0xA, 3, keys, 0), PS_STATUS_OK);
    snapshot_info info;
    assert_int_equal(snapshot_write(d.dir, d.w.store, d.w.rows, &(snapshot_requests){.dedup = req},
                                    d.log, &info, NULL, 0),
                     PS_STATUS_OK);
    dedup_destroy(req);
    uint8_t *data = snapshot_bytes(&info);
    size_t at = SNAPSHOT_HEADER_BYTES, frame = 0; /* the request-id frame */
    for (uint32_t kind = 0; at + SNAPSHOT_FRAME_HEAD_BYTES <= info.bytes;) {
        uint64_t len;
        memcpy(&kind, data + at + 4, 4);
        memcpy(&len, data + at + 8, 8);
        if (kind == 3) {
            frame = at;
            break;
        }
        at += SNAPSHOT_FRAME_HEAD_BYTES + len;
    }
    assert_true(frame > 0);
    uint64_t len;
    memcpy(&len, data + frame + 8, 8);
    const uint32_t forged[] = {4, 2, UINT32_MAX};
    char copy[128], err[512];
    snprintf(copy, sizeof copy, "%s/forged.snap", d.dir);
    for (size_t i = 0; i < sizeof forged / sizeof *forged; i++) {
        uint8_t *payload = data + frame + SNAPSHOT_FRAME_HEAD_BYTES;
        memcpy(payload + 4, &forged[i], 4); /* the record's key count */
        XXH3_state_t *h = XXH3_createState();
        XXH3_64bits_reset(h);
        XXH3_64bits_update(h, data + frame + 4, 12);
        XXH3_64bits_update(h, payload, len);
        uint64_t sum = XXH3_64bits_digest(h);
        XXH3_freeState(h);
        memcpy(data + frame + 16, &sum, 8);
        err[0] = '\0';
        assert_int_equal(load_copy(copy, data, info.bytes, err, sizeof err), PS_STATUS_PARSE);
        assert_non_null(strstr(err, "a bad request-id record"));
        assert_non_null(strstr(err, "forged.snap"));
    }
    free(data);
    durable_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_then_load),
        cmocka_unit_test(test_a_snapshot_under_pushes_plus_the_log_is_the_live_state),
        cmocka_unit_test(test_every_damage_is_refused),
        cmocka_unit_test(test_a_log_no_snapshot_reaches_is_refused),
        cmocka_unit_test(test_the_thread_takes_snapshots_as_the_log_grows),
        cmocka_unit_test(test_a_restart_starts_its_seqs_past_the_snapshot),
        cmocka_unit_test(test_request_ids_survive_a_snapshot),
        cmocka_unit_test(test_a_snapshot_is_never_ahead_of_the_log),
        cmocka_unit_test(test_format_1_is_read),
        cmocka_unit_test(test_a_forged_request_count_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
