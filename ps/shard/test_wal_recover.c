/* test_wal_recover.c: the write-ahead log's recovery from damaged files: a torn tail
 * cut at every byte of the last record (header and payload), one flipped bit in the
 * last record (cut), in an earlier record or segment (refused with PARSE naming the
 * file and offset, files untouched), missing or misnamed segments, zero-filled and
 * junk tails, direct writes' padding (after a crash and after a clean close), and a
 * failing replay callback (files untouched). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "test_wal.h"
#include "wal_internal.h" /* WAL_DIRECT_ALIGN */

#define SEED 7
#define MAX_LEN 60
#define SEG 1024
#define N 40

typedef struct damaged {
    char dir[TW_PATH];
    char last_path[TW_PATH * 2]; /* the last segment */
    uint8_t *orig;               /* its bytes */
    size_t orig_len;
    size_t offs[64]; /* its records' offsets */
    size_t count;
} damaged;

/* A closed log of N records over small segments, and its last segment's layout. */
static void damaged_make(damaged *d) {
    tw_tmpdir(d->dir);
    wal *w = tw_open(d->dir, WAL_FSYNC_NONE, SEG, NULL, NULL);
    for (uint64_t lsn = 1; lsn <= N; lsn++)
        tw_append(w, SEED, MAX_LEN, lsn);
    wal_close(w);
    size_t n;
    uint64_t *firsts = tw_segments(d->dir, &n);
    assert_true(n >= 2);
    tw_segment_path(d->dir, firsts[n - 1], d->last_path);
    free(firsts);
    d->orig = tw_read(d->last_path, &d->orig_len);
    d->count = tw_record_offsets(d->orig, d->orig_len, d->offs, 64);
    assert_true(d->count >= 3);
}

/* Puts the last segment back as made and removes any segment started after it. */
static void damaged_restore(damaged *d) {
    size_t n;
    uint64_t *firsts = tw_segments(d->dir, &n);
    char path[TW_PATH * 2];
    for (size_t i = 0; i < n; i++) {
        tw_segment_path(d->dir, firsts[i], path);
        if (strcmp(path, d->last_path) > 0)
            unlink(path);
    }
    free(firsts);
    tw_write(d->last_path, d->orig, d->orig_len);
}

static void damaged_free(damaged *d) {
    free(d->orig);
    tw_rmrf(d->dir);
}

/* Opens expecting PARSE, with `name_of` (a path) and "offset <off>" in the message; the
 * segment at `path` must be unchanged afterwards. */
static void expect_parse(const char *dir, const char *path, size_t off) {
    size_t before_len, after_len;
    uint8_t *before = tw_read(path, &before_len);
    tw_replay r = tw_replay_make(SEED, MAX_LEN);
    wal_opts o = {.dir = dir, .replay = tw_replay_fn, .replay_arg = &r};
    wal *w = NULL;
    char err[512] = "", want[64];
    assert_int_equal(wal_open(&o, NULL, &w, err, sizeof err), PS_STATUS_PARSE);
    assert_null(w);
    assert_int_equal(r.n, 0); /* nothing replayed from a refused log */
    assert_non_null(strstr(err, strrchr(path, '/') + 1));
    snprintf(want, sizeof want, "offset %zu:", off);
    if (!strstr(err, want))
        fail_msg("'%s' not in '%s'", want, err);
    uint8_t *after = tw_read(path, &after_len);
    assert_int_equal(after_len, before_len);
    assert_memory_equal(after, before, before_len);
    free(before);
    free(after);
}

/* Reopening after a cut: the good prefix, the cut reported, appends continue. */
static void expect_cut(damaged *d, uint64_t good_records, size_t cut_offset, size_t cut_bytes) {
    tw_replay r = tw_replay_make(SEED, MAX_LEN);
    wal_recovery rec;
    wal *w = tw_open(d->dir, WAL_FSYNC_NONE, SEG, &r, &rec);
    assert_int_equal(r.n, good_records);
    assert_true(r.in_order && r.payload_ok);
    assert_int_equal(rec.last_lsn, good_records);
    assert_int_equal(rec.cut_bytes, cut_bytes);
    if (cut_bytes) {
        assert_int_equal(rec.cut_offset, cut_offset);
        assert_non_null(strstr(d->last_path, rec.cut_file));
    }
    tw_append(w, SEED, MAX_LEN, good_records + 1);
    wal_close(w);
    r = tw_replay_make(SEED, MAX_LEN);
    wal_close(tw_open(d->dir, WAL_FSYNC_NONE, SEG, &r, &rec));
    assert_int_equal(r.n, good_records + 1);
    assert_int_equal(rec.cut_bytes, 0);
}

static void test_torn_tail_at_every_offset(void **state) {
    (void)state;
    damaged d;
    damaged_make(&d);
    size_t start = d.offs[d.count - 1];
    for (size_t cut = start; cut < d.orig_len; cut++) {
        tw_write(d.last_path, d.orig, cut);
        expect_cut(&d, N - 1, start, cut - start);
    }
    damaged_free(&d);
}

/* A segment whose only record is torn becomes empty and keeps its name's LSN. */
static void test_torn_only_record_empties_segment(void **state) {
    (void)state;
    char dir[TW_PATH], path[TW_PATH * 2];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_NONE, SEG, NULL, NULL);
    for (uint64_t lsn = 1; lsn <= N; lsn++)
        tw_append(w, SEED, MAX_LEN, lsn);
    uint8_t big[2 * SEG] = {0};
    assert_int_equal(wal_append(w, 9, big, sizeof big, NULL), PS_STATUS_OK); /* alone */
    wal_close(w);
    tw_segment_path(dir, N + 1, path);
    size_t len;
    uint8_t *orig = tw_read(path, &len);
    assert_int_equal(len, WAL_RECORD_HEADER_BYTES + sizeof big);
    for (size_t cut = 0; cut < len; cut += 37) {
        tw_write(path, orig, cut);
        wal_recovery rec;
        w = tw_open(dir, WAL_FSYNC_NONE, SEG, NULL, &rec);
        assert_int_equal(rec.records, N);
        assert_int_equal(rec.cut_bytes, cut);
        assert_int_equal(rec.last_lsn, N);
        assert_int_equal(wal_append(w, 9, big, 10, NULL), PS_STATUS_OK);
        assert_int_equal(wal_last_lsn(w), N + 1);
        wal_close(w);
    }
    free(orig);
    tw_rmrf(dir);
}

/* One flipped bit anywhere in the last record: cut as a torn tail. */
static void test_flipped_bit_in_last_record_is_cut(void **state) {
    (void)state;
    damaged d;
    damaged_make(&d);
    size_t start = d.offs[d.count - 1], size = d.orig_len - start;
    uint8_t *bad = malloc(d.orig_len);
    for (size_t k = 0; k < size; k++) {
        memcpy(bad, d.orig, d.orig_len);
        bad[start + k] ^= (uint8_t)(1u << (k % 8));
        tw_write(d.last_path, bad, d.orig_len);
        expect_cut(&d, N - 1, start, size);
    }
    free(bad);
    damaged_free(&d);
}

/* A flipped bit in a record followed by good ones, or in an earlier segment: refused. */
static void test_flipped_bit_before_good_records_is_refused(void **state) {
    (void)state;
    damaged d;
    damaged_make(&d);
    uint8_t *bad = malloc(d.orig_len);
    size_t victims[] = {0, 1, d.count - 2};
    for (size_t v = 0; v < 3; v++) {
        size_t off = d.offs[victims[v]];
        for (size_t k = 0; k < WAL_RECORD_HEADER_BYTES + 2; k += 5) {
            memcpy(bad, d.orig, d.orig_len);
            bad[off + k] ^= 0x10;
            tw_write(d.last_path, bad, d.orig_len);
            expect_parse(d.dir, d.last_path, off);
        }
    }
    tw_write(d.last_path, d.orig, d.orig_len);
    /* the first segment: even its last record is followed by the next segment */
    char first[TW_PATH * 2];
    tw_segment_path(d.dir, 1, first);
    size_t len, offs[64];
    uint8_t *f = tw_read(first, &len);
    size_t n = tw_record_offsets(f, len, offs, 64);
    f[offs[n - 1] + WAL_RECORD_HEADER_BYTES - 1] ^= 1; /* a reserved byte */
    tw_write(first, f, len);
    expect_parse(d.dir, first, offs[n - 1]);
    free(f);
    free(bad);
    damaged_free(&d);
}

/* A copy of a good record after junk: corruption, not a tear. Zeros after the last
 * record (the padding of a direct write, or a file extended but never written): cut
 * without a word, since they held no record. */
static void test_junk_and_zero_tails(void **state) {
    (void)state;
    damaged d;
    damaged_make(&d);
    size_t rec0 = d.offs[1] - d.offs[0];
    uint8_t *tail = calloc(d.orig_len + 4096 + rec0, 1);
    memcpy(tail, d.orig, d.orig_len);
    tw_write(d.last_path, tail, d.orig_len + 4096);
    expect_cut(&d, N, d.orig_len, 0);
    damaged_restore(&d);
    tail[d.orig_len + 4095] = 1; /* not all zeros: a tear, said */
    tw_write(d.last_path, tail, d.orig_len + 4096);
    expect_cut(&d, N, d.orig_len, 4096);
    tail[d.orig_len + 4095] = 0;

    damaged_restore(&d);
    memcpy(tail + d.orig_len + 10, d.orig, rec0); /* junk, then a whole good record */
    tw_write(d.last_path, tail, d.orig_len + 10 + rec0);
    expect_parse(d.dir, d.last_path, d.orig_len);
    free(tail);
    damaged_free(&d);
}

/* Whether the file system under dir takes O_DIRECT (tmpfs does not: the log then writes
 * through the page cache, and there is no padding to see). */
static bool direct_io_here(const char *dir) {
    char path[TW_PATH * 2];
    snprintf(path, sizeof path, "%s/probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT, 0644);
    if (fd >= 0)
        close(fd);
    unlink(path);
    return fd >= 0;
}

/* Direct writes (modes ALWAYS and GROUP) of records of every size, over many segments:
 * a log left open, its last block padded with zeros as a crash leaves it, recovers
 * every record and calls nothing torn; after a clean close every segment ends at its
 * last record, and appending goes on where it ended. */
static void test_direct_writes_pad_and_recover(void **state) {
    (void)state;
    char dir[TW_PATH], copy[TW_PATH];
    tw_tmpdir(dir);
    tw_tmpdir(copy);
    const uint64_t n = 3 * N + 7, seg = 5000; /* segments of about 4 blocks */
    wal *w = tw_open(dir, WAL_FSYNC_ALWAYS, seg, NULL, NULL);
    for (uint64_t lsn = 1; lsn <= n; lsn++)
        tw_append(w, SEED, 1500, lsn);
    assert_int_equal(wal_wait(w, n), PS_STATUS_OK);
    size_t count;
    uint64_t *firsts = tw_segments(dir, &count);
    assert_true(count >= 3);
    char last[TW_PATH * 2];
    tw_segment_path(dir, firsts[count - 1], last);
    size_t len;
    uint8_t *bytes = tw_read(last, &len);
    if (direct_io_here(dir))
        assert_int_equal(len % WAL_DIRECT_ALIGN, 0); /* padded while open */
    free(bytes);
    tw_copy_dir(dir, copy); /* what a crash leaves */
    tw_replay r = tw_replay_make(SEED, 1500);
    wal_recovery rec;
    wal_close(tw_open(copy, WAL_FSYNC_ALWAYS, seg, &r, &rec));
    assert_int_equal(r.n, n);
    assert_true(r.in_order && r.payload_ok);
    assert_int_equal(rec.cut_bytes, 0);
    wal_close(w);
    for (size_t i = 0; i < count; i++) { /* closed: no padding anywhere */
        char path[TW_PATH * 2];
        tw_segment_path(dir, firsts[i], path);
        bytes = tw_read(path, &len);
        size_t offs[64], k = tw_record_offsets(bytes, len, offs, 64);
        assert_true(k > 0);
        assert_int_equal(
            offs[k - 1] + WAL_RECORD_HEADER_BYTES + wal_format_len_get(bytes + offs[k - 1]), len);
        free(bytes);
    }
    r = tw_replay_make(SEED, 1500);
    w = tw_open(dir, WAL_FSYNC_GROUP, seg, &r, &rec);
    assert_int_equal(r.n, n);
    tw_append(w, SEED, 1500, n + 1); /* on after the last record's unaligned end */
    assert_int_equal(wal_wait(w, n + 1), PS_STATUS_OK);
    wal_close(w);
    r = tw_replay_make(SEED, 1500);
    wal_close(tw_open(dir, WAL_FSYNC_NONE, seg, &r, &rec));
    assert_int_equal(r.n, n + 1);
    assert_true(r.in_order && r.payload_ok);
    assert_int_equal(rec.cut_bytes, 0);
    free(firsts);
    tw_rmrf(dir);
    tw_rmrf(copy);
}

/* Direct writes go straight from the append buffers (wal_buf_align): while every
 * buffer falls within one segment no byte is staged, also after a reopen at an
 * unaligned end; everything replays. */
static void test_direct_writes_unstaged(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    const uint64_t n = 300;
    bool direct = direct_io_here(dir);
    for (int pass = 0; pass < 2; pass++) {
        tw_replay r = tw_replay_make(SEED, 3000);
        wal *w = tw_open(dir, pass ? WAL_FSYNC_ALWAYS : WAL_FSYNC_GROUP, 0, &r, NULL);
        assert_int_equal(r.n, pass * n);
        for (uint64_t lsn = pass * n + 1; lsn <= (pass + 1) * n; lsn++) {
            tw_append(w, SEED, 3000, lsn);
            if (lsn % 7 == 0) /* many rounds, each ending anywhere in a block */
                assert_int_equal(wal_wait(w, lsn), PS_STATUS_OK);
        }
        assert_int_equal(wal_wait(w, (pass + 1) * n), PS_STATUS_OK);
        wal_stats s;
        wal_stats_get(w, &s);
        assert_true(s.writes > n / 8);
        if (direct)
            assert_int_equal(s.staged_bytes, 0);
        wal_close(w);
    }
    tw_replay r = tw_replay_make(SEED, 3000);
    wal_close(tw_open(dir, WAL_FSYNC_NONE, 0, &r, NULL));
    assert_int_equal(r.n, 2 * n);
    assert_true(r.in_order && r.payload_ok);
    tw_rmrf(dir);
}

/* A missing segment or a segment under another LSN's name: refused. */
static void test_missing_or_misnamed_segment(void **state) {
    (void)state;
    char dir[TW_PATH], a[TW_PATH * 2], b[TW_PATH * 2];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_NONE, SEG, NULL, NULL);
    for (uint64_t lsn = 1; lsn <= 3 * N; lsn++)
        tw_append(w, SEED, MAX_LEN, lsn);
    wal_close(w);
    size_t n;
    uint64_t *firsts = tw_segments(dir, &n);
    assert_true(n >= 3);
    char err[512] = "";
    wal_opts o = {.dir = dir};

    tw_segment_path(dir, firsts[1], a);
    tw_segment_path(dir, firsts[1] + 1000, b);
    assert_int_equal(rename(a, b), 0);
    assert_int_equal(wal_open(&o, NULL, &w, err, sizeof err), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "missing"));
    assert_int_equal(rename(b, a), 0);

    /* the second segment under the first one's name (the first one gone) */
    size_t len;
    tw_segment_path(dir, firsts[0], a);
    tw_segment_path(dir, firsts[1], b);
    uint8_t *first = tw_read(a, &len);
    assert_int_equal(rename(b, a), 0);
    assert_int_equal(wal_open(&o, NULL, &w, err, sizeof err), PS_STATUS_PARSE);
    char want[128];
    snprintf(want, sizeof want, "with LSN %llu where LSN 1 was expected",
             (unsigned long long)firsts[1]);
    if (!strstr(err, want))
        fail_msg("'%s' not in '%s'", want, err);
    assert_int_equal(rename(a, b), 0);
    tw_write(a, first, len);
    free(first);

    assert_int_equal(wal_open(&o, NULL, &w, err, sizeof err), PS_STATUS_OK);
    wal_close(w);
    free(firsts);
    tw_rmrf(dir);
}

/* A replay callback that fails: its status, and the files (torn tail included) kept. */
static void test_replay_failure_changes_nothing(void **state) {
    (void)state;
    damaged d;
    damaged_make(&d);
    size_t torn = d.orig_len - 3;
    tw_write(d.last_path, d.orig, torn);
    tw_replay r = tw_replay_make(SEED, MAX_LEN);
    r.fail_at_lsn = 5;
    r.fail_at_lsn_status = PS_STATUS_NO_MEMORY;
    wal_opts o = {.dir = d.dir, .replay = tw_replay_fn, .replay_arg = &r};
    wal *w = NULL;
    char err[512] = "";
    assert_int_equal(wal_open(&o, NULL, &w, err, sizeof err), PS_STATUS_NO_MEMORY);
    assert_non_null(strstr(err, "LSN 5"));
    struct stat sb;
    assert_int_equal(stat(d.last_path, &sb), 0);
    assert_int_equal((size_t)sb.st_size, torn);
    expect_cut(&d, N - 1, d.offs[d.count - 1], torn - d.offs[d.count - 1]);
    damaged_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torn_tail_at_every_offset),
        cmocka_unit_test(test_torn_only_record_empties_segment),
        cmocka_unit_test(test_flipped_bit_in_last_record_is_cut),
        cmocka_unit_test(test_flipped_bit_before_good_records_is_refused),
        cmocka_unit_test(test_junk_and_zero_tails),
        cmocka_unit_test(test_direct_writes_pad_and_recover),
        cmocka_unit_test(test_direct_writes_unstaged),
        cmocka_unit_test(test_missing_or_misnamed_segment),
        cmocka_unit_test(test_replay_failure_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
