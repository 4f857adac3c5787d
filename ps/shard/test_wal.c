/* test_wal.c: the write-ahead log at run time: round trips across small segments in
 * every fsync mode, records larger than a buffer, appendv, a crash simulated by copying
 * the files of an open log, full disks and I/O errors (nothing reported durable that
 * is not, and the message says so), segment deletion. Concurrent appenders and group
 * commit's fsync rate are in test_wal_threads.c, recovery from damaged files in
 * test_wal_recover.c. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "test_wal.h"
#include "util.h"

#define SEED 42

static const wal_fsync modes[] = {WAL_FSYNC_ALWAYS, WAL_FSYNC_GROUP, WAL_FSYNC_NONE};

/* Many records of random sizes (some larger than a segment) round trip in each mode,
 * across segments no larger than segment_bytes unless one record fills it alone. */
static void test_round_trip_all_modes(void **state) {
    (void)state;
    for (size_t m = 0; m < 3; m++) {
        char dir[TW_PATH];
        tw_tmpdir(dir);
        const uint64_t seg = 2048, n = 600, max_len = 3000;
        wal_recovery rec;
        wal *w = tw_open(dir, modes[m], seg, NULL, &rec);
        assert_int_equal(rec.records, 0);
        assert_int_equal(rec.last_lsn, 0);
        for (uint64_t lsn = 1; lsn <= n; lsn++) {
            tw_append(w, SEED, max_len, lsn);
            if (lsn % 97 == 0)
                assert_int_equal(wal_wait(w, lsn), PS_STATUS_OK);
        }
        assert_int_equal(wal_wait(w, n), PS_STATUS_OK);
        assert_true(wal_durable_lsn(w) >= n);
        wal_close(w);

        size_t nseg;
        uint64_t *firsts = tw_segments(dir, &nseg);
        assert_true(nseg > 10);
        for (size_t i = 0; i < nseg; i++) {
            char path[TW_PATH * 2];
            tw_segment_path(dir, firsts[i], path);
            struct stat sb;
            assert_int_equal(stat(path, &sb), 0);
            uint64_t records = (i + 1 < nseg ? firsts[i + 1] : n + 1) - firsts[i];
            assert_true((uint64_t)sb.st_size <= seg || records == 1);
        }
        free(firsts);

        tw_replay r = tw_replay_make(SEED, max_len);
        w = tw_open(dir, modes[m], seg, &r, &rec);
        assert_int_equal(r.n, n);
        assert_true(r.in_order && r.payload_ok);
        assert_int_equal(r.first, 1);
        assert_int_equal(rec.records, n);
        assert_int_equal(rec.last_lsn, n);
        assert_int_equal(rec.cut_bytes, 0);
        assert_int_equal(rec.segments, nseg);
        tw_append(w, SEED, max_len, n + 1); /* LSNs continue across restarts */
        wal_close(w);
        r = tw_replay_make(SEED, max_len);
        wal_close(tw_open(dir, modes[m], seg, &r, NULL));
        assert_int_equal(r.n, n + 1);
        tw_rmrf(dir);
    }
}

/* A record larger than the append buffer grows it; records around it keep their order. */
static void test_record_larger_than_buffer(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal_opts o = {.dir = dir, .buffer_bytes = WAL_MIN_BUFFER_BYTES, .segment_bytes = 1 << 20};
    wal *w = NULL;
    assert_int_equal(wal_open(&o, NULL, &w, NULL, 0), PS_STATUS_OK);
    size_t big = 300000;
    uint8_t *p = malloc(big);
    assert_non_null(p);
    for (uint64_t lsn = 1; lsn <= 9; lsn++) {
        size_t len = lsn % 3 == 0 ? big : 10;
        tw_fill(p, len, lsn);
        uint64_t got;
        assert_int_equal(wal_append(w, (uint8_t)lsn, p, len, &got), PS_STATUS_OK);
        assert_int_equal(got, lsn);
    }
    assert_int_equal(wal_wait(w, 9), PS_STATUS_OK);
    wal_close(w);
    free(p);
    /* check each record's length and bytes directly */
    char path[TW_PATH * 2];
    tw_segment_path(dir, 1, path);
    size_t len;
    uint8_t *f = tw_read(path, &len);
    size_t offs[16];
    assert_int_equal(tw_record_offsets(f, len, offs, 16), 9);
    for (size_t i = 0; i < 9; i++) {
        uint64_t lsn = i + 1;
        assert_null(wal_format_record_check(f + offs[i], len - offs[i]));
        assert_int_equal(wal_format_lsn_get(f + offs[i]), lsn);
        assert_int_equal(wal_format_len_get(f + offs[i]), lsn % 3 == 0 ? big : 10);
        assert_int_equal(f[offs[i] + WAL_RECORD_HEADER_BYTES + 5], tw_byte(lsn, 5));
    }
    free(f);
    tw_rmrf(dir);
}

/* appendv concatenates its pieces; limits on length and piece count are enforced. */
static void test_appendv_and_limits(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_NONE, 0, NULL, NULL);
    size_t len = tw_len(SEED, 1, 500);
    uint8_t *p = malloc(len + 1);
    tw_fill(p, len, 1);
    struct iovec iov[3] = {{p, len / 3}, {NULL, 0}, {p + len / 3, len - len / 3}};
    uint64_t lsn = 0;
    assert_int_equal(wal_appendv(w, 1, iov, 3, &lsn), PS_STATUS_OK);
    assert_int_equal(lsn, 1);
    /* too long (checked before anything is read), too many pieces, a future LSN */
    struct iovec huge[2] = {{p, WAL_MAX_PAYLOAD_BYTES}, {p, 1}};
    assert_int_equal(wal_appendv(w, 2, huge, 2, &lsn), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wal_append(w, 2, p, (size_t)WAL_MAX_PAYLOAD_BYTES + 1, &lsn),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wal_appendv(w, 2, iov, WAL_MAX_IOVCNT + 1, &lsn), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wal_wait(w, 2), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wal_last_lsn(w), 1);
    assert_int_equal(wal_wait(w, 0), PS_STATUS_OK);
    /* a second log on the same directory is refused */
    wal_opts o = {.dir = dir};
    wal *w2 = NULL;
    char err[256] = "";
    assert_int_equal(wal_open(&o, NULL, &w2, err, sizeof err), PS_STATUS_FAILED_PRECONDITION);
    assert_null(w2);
    assert_non_null(strstr(err, "in use"));
    wal_close(w);
    free(p);
    tw_replay r = tw_replay_make(SEED, 500);
    wal_close(tw_open(dir, WAL_FSYNC_NONE, 0, &r, NULL));
    assert_int_equal(r.n, 1);
    assert_true(r.payload_ok);
    /* bad options */
    wal_opts bad[] = {{.dir = ""},
                      {.dir = dir, .segment_bytes = WAL_MIN_SEGMENT_BYTES - 1},
                      {.dir = dir, .buffer_bytes = WAL_MAX_BUFFER_BYTES + 1},
                      {.dir = dir, .group_ms = WAL_MAX_GROUP_MS + 1},
                      {.dir = dir, .fsync = (wal_fsync)7}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(wal_open(&bad[i], NULL, &w2, NULL, 0), PS_STATUS_INVALID_ARGUMENT);
    tw_rmrf(dir);
}

/* An empty directory starts at start_lsn; the empty segment keeps it across a restart. */
static void test_start_lsn_survives_empty_restart(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal_opts o = {.dir = dir, .start_lsn = 1000};
    wal *w = NULL;
    assert_int_equal(wal_open(&o, NULL, &w, NULL, 0), PS_STATUS_OK);
    assert_int_equal(wal_last_lsn(w), 999);
    wal_close(w);
    o.start_lsn = 5; /* ignored: the directory has a segment */
    assert_int_equal(wal_open(&o, NULL, &w, NULL, 0), PS_STATUS_OK);
    tw_append(w, SEED, 50, 1000);
    wal_close(w);
    tw_rmrf(dir);
}

typedef struct copier {
    wal *w;
    atomic_bool stop;
    uint64_t appended;
} copier;

static void *keep_appending(void *arg) {
    copier *c = arg;
    while (!atomic_load(&c->stop))
        tw_append(c->w, SEED, 200, ++c->appended);
    return NULL;
}

/* A crash: copy the files of an open log while a thread appends; every record waited
 * for before the copy is in the copy, in order, and the copy opens (cutting at most a
 * torn tail). */
static void test_crash_copy_keeps_waited_records(void **state) {
    (void)state;
    for (size_t m = 0; m < 3; m++) {
        char dir[TW_PATH], copy[TW_PATH + 8];
        tw_tmpdir(dir);
        snprintf(copy, sizeof copy, "%s.copy", dir);
        copier c = {.w = tw_open(dir, modes[m], 4096, NULL, NULL)};
        atomic_init(&c.stop, false);
        pthread_t t;
        uint64_t waited = 0;
        for (uint64_t lsn = 1; lsn <= 300; lsn++)
            tw_append(c.w, SEED, 200, lsn);
        c.appended = 300;
        assert_int_equal(wal_wait(c.w, 300), PS_STATUS_OK);
        waited = 300;
        assert_int_equal(pthread_create(&t, NULL, keep_appending, &c), 0);
        tw_copy_dir(dir, copy);
        atomic_store(&c.stop, true);
        pthread_join(t, NULL);
        wal_close(c.w);

        tw_replay r = tw_replay_make(SEED, 200);
        wal_recovery rec;
        wal_close(tw_open(copy, modes[m], 4096, &r, &rec));
        assert_true(r.n >= waited);
        assert_int_equal(r.first, 1);
        assert_true(r.in_order && r.payload_ok);
        assert_int_equal(rec.last_lsn, r.last);
        tw_rmrf(copy);
        tw_rmrf(dir);
    }
}

/* A full disk: the write that fails is never reported durable, nor anything after it;
 * appends are refused; the message says "disk full"; a restart replays exactly the
 * records reported durable. */
static void test_disk_full_fails_log(void **state) {
    (void)state;
    for (size_t m = 0; m < 3; m++) {
        char dir[TW_PATH];
        tw_tmpdir(dir);
        wal *w = tw_open(dir, modes[m], 1 << 20, NULL, NULL);
        wal_fault_fail_io(w, WAL_FAULT_WRITE, 5, ENOSPC);
        uint64_t lsn = 0, durable = 0;
        ps_status st = PS_STATUS_OK;
        while (st == PS_STATUS_OK && lsn < 100) {
            tw_append(w, SEED, 300, ++lsn);
            st = wal_wait(w, lsn);
            if (st == PS_STATUS_OK)
                durable = lsn;
        }
        assert_int_equal(st, PS_STATUS_IO);
        assert_true(wal_durable_lsn(w) < lsn);
        assert_int_equal(wal_durable_lsn(w), durable);
        char err[512] = "";
        assert_true(wal_failed(w, err, sizeof err));
        assert_non_null(strstr(err, "disk full"));
        assert_non_null(strstr(err, "wal-00000000000000000001.log"));
        uint8_t b = 0;
        assert_int_equal(wal_append(w, 1, &b, 1, NULL), PS_STATUS_IO);
        assert_int_equal(wal_wait(w, lsn), PS_STATUS_IO);
        assert_int_equal(wal_wait(w, durable), PS_STATUS_OK);
        wal_close(w);

        tw_replay r = tw_replay_make(SEED, 300);
        wal_recovery rec;
        w = tw_open(dir, modes[m], 1 << 20, &r, &rec);
        assert_int_equal(r.n, durable);
        assert_true(r.in_order && r.payload_ok);
        tw_append(w, SEED, 300, durable + 1);
        wal_close(w);
        tw_rmrf(dir);
    }
}

/* A failed fsync in group mode: records written but not synced are not durable. */
static void test_fsync_error_in_group_mode(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_GROUP, 1 << 20, NULL, NULL);
    tw_append(w, SEED, 100, 1);
    assert_int_equal(wal_wait(w, 1), PS_STATUS_OK);
    wal_fault_fail_io(w, WAL_FAULT_FSYNC, 1, EIO);
    for (uint64_t lsn = 2; lsn <= 50; lsn++)
        tw_append(w, SEED, 100, lsn);
    assert_int_equal(wal_wait(w, 50), PS_STATUS_IO);
    assert_int_equal(wal_durable_lsn(w), 1);
    char err[512] = "";
    assert_true(wal_failed(w, err, sizeof err));
    assert_non_null(strstr(err, "I/O error"));
    assert_non_null(strstr(err, "fsync"));
    wal_close(w);
    tw_replay r = tw_replay_make(SEED, 100);
    wal_close(tw_open(dir, WAL_FSYNC_GROUP, 1 << 20, &r, NULL));
    assert_int_equal(r.n, 1); /* the segment was cut back to what was durable */
    tw_rmrf(dir);
}

/* drop_before deletes whole segments below the LSN, never one holding an LSN >= it,
 * never the last one; LSNs continue after a restart even when only that one is left. */
static void test_drop_before(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_NONE, 1024, NULL, NULL);
    const uint64_t n = 200;
    for (uint64_t lsn = 1; lsn <= n; lsn++)
        tw_append(w, SEED, 120, lsn);
    assert_int_equal(wal_wait(w, n), PS_STATUS_OK);
    size_t before_n;
    uint64_t *before = tw_segments(dir, &before_n);
    assert_true(before_n > 8);
    const uint64_t cut = 101;
    assert_int_equal(wal_drop_before(w, cut), PS_STATUS_OK);
    size_t after_n;
    uint64_t *after = tw_segments(dir, &after_n);
    /* kept: from the segment that holds `cut` on */
    size_t keep_from = 0;
    while (keep_from + 1 < before_n && before[keep_from + 1] <= cut)
        keep_from++;
    assert_int_equal(after_n, before_n - keep_from);
    assert_int_equal(after[0], before[keep_from]);
    assert_true(after[0] <= cut);
    wal_close(w);

    tw_replay r = tw_replay_make(SEED, 120);
    w = tw_open(dir, WAL_FSYNC_NONE, 1024, &r, NULL);
    assert_int_equal(r.first, after[0]);
    assert_int_equal(r.last, n);
    assert_true(r.in_order && r.payload_ok);
    assert_int_equal(wal_drop_before(w, UINT64_MAX), PS_STATUS_OK);
    size_t last_n;
    free(tw_segments(dir, &last_n));
    assert_int_equal(last_n, 1);
    wal_close(w);
    w = tw_open(dir, WAL_FSYNC_NONE, 1024, NULL, NULL);
    tw_append(w, SEED, 120, n + 1);
    wal_close(w);
    free(before);
    free(after);
    tw_rmrf(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_modes),
        cmocka_unit_test(test_record_larger_than_buffer),
        cmocka_unit_test(test_appendv_and_limits),
        cmocka_unit_test(test_start_lsn_survives_empty_restart),
        cmocka_unit_test(test_crash_copy_keeps_waited_records),
        cmocka_unit_test(test_disk_full_fails_log),
        cmocka_unit_test(test_fsync_error_in_group_mode),
        cmocka_unit_test(test_drop_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
