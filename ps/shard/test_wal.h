/* test_wal.h: helpers shared by the write-ahead log's unit tests (test_wal.c,
 * test_wal_recover.c): temporary directories, records whose type, length and bytes
 * follow from their LSN (so a replay can be checked without keeping copies), a replay
 * collector, and file surgery for torn tails and flipped bits. Header-only, tests only. */
#ifndef PS_SHARD_TEST_WAL_H
#define PS_SHARD_TEST_WAL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal.h"
#include "wal_format.h"

#define TW_PATH 512

/* The record of LSN `lsn` under `seed`: type lsn & 0xff, length up to max_len. */
static inline size_t tw_len(uint64_t seed, uint64_t lsn, size_t max_len) {
    uint64_t z = (seed + lsn) * 0x9e3779b97f4a7c15ull;
    z ^= z >> 29;
    return max_len ? (size_t)(z % (max_len + 1)) : 0;
}

static inline uint8_t tw_byte(uint64_t lsn, size_t j) {
    return (uint8_t)(lsn * 131 + j * 7 + (j >> 8));
}

static inline void tw_fill(uint8_t *p, size_t len, uint64_t lsn) {
    for (size_t j = 0; j < len; j++)
        p[j] = tw_byte(lsn, j);
}

/* Collects a replay and checks each record against tw_len/tw_fill. */
typedef struct tw_replay {
    uint64_t seed;
    size_t max_len;
    uint64_t n, first, last;
    bool in_order;                /* each LSN the previous + 1 */
    bool payload_ok;              /* every type, length and byte as expected */
    ps_status fail_at_lsn_status; /* with fail_at_lsn: the status to return there */
    uint64_t fail_at_lsn;
} tw_replay;

static inline tw_replay tw_replay_make(uint64_t seed, size_t max_len) {
    tw_replay r = {.seed = seed, .max_len = max_len, .in_order = true, .payload_ok = true};
    return r;
}

static inline ps_status tw_replay_fn(void *arg, uint8_t type, uint64_t lsn, const void *payload,
                                     size_t len) {
    tw_replay *r = arg;
    if (r->fail_at_lsn && lsn == r->fail_at_lsn)
        return r->fail_at_lsn_status;
    if (r->n > 0 && lsn != r->last + 1)
        r->in_order = false;
    if (r->n++ == 0)
        r->first = lsn;
    r->last = lsn;
    if (type != (uint8_t)lsn || len != tw_len(r->seed, lsn, r->max_len))
        r->payload_ok = false;
    const uint8_t *p = payload;
    for (size_t j = 0; j < len && r->payload_ok; j++)
        if (p[j] != tw_byte(lsn, j))
            r->payload_ok = false;
    return PS_STATUS_OK;
}

/* Appends the record of the next LSN (which must be `lsn`) per tw_len/tw_fill. */
static inline void tw_append(wal *w, uint64_t seed, size_t max_len, uint64_t lsn) {
    size_t len = tw_len(seed, lsn, max_len);
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    tw_fill(p, len, lsn);
    uint64_t got = 0;
    assert_int_equal(wal_append(w, (uint8_t)lsn, p, len, &got), PS_STATUS_OK);
    assert_int_equal(got, lsn);
    free(p);
}

static inline void tw_tmpdir(char *dir) {
    snprintf(dir, TW_PATH, "/tmp/test_wal_XXXXXX");
    assert_non_null(mkdtemp(dir));
}

/* Removes a flat directory and its files. */
static inline void tw_rmrf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[TW_PATH * 2];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Reads a whole file (malloc'd). A log being written may shrink meanwhile (a finished
 * segment loses the padding of its last direct write): what is there is read. */
static inline uint8_t *tw_read(const char *path, size_t *ret_len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(p);
    size_t got = fread(p, 1, (size_t)n, f);
    assert_true(got <= (size_t)n);
    fclose(f);
    *ret_len = got;
    return p;
}

static inline void tw_write(const char *path, const uint8_t *p, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Copies every file of src into dst (created): what a crash would leave of the files
 * the kernel holds. */
static inline void tw_copy_dir(const char *src, const char *dst) {
    mkdir(dst, 0755);
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *e;
    char a[TW_PATH * 2], b[TW_PATH * 2];
    while ((e = readdir(d)) != NULL) {
        uint64_t lsn;
        if (!wal_format_segment_parse(e->d_name, &lsn))
            continue;
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        size_t len;
        uint8_t *p = tw_read(a, &len);
        tw_write(b, p, len);
        free(p);
    }
    closedir(d);
}

static inline void tw_segment_path(const char *dir, uint64_t first_lsn, char *path) {
    char name[WAL_SEGMENT_NAME_LEN + 1];
    wal_format_segment_name(first_lsn, name);
    snprintf(path, TW_PATH * 2, "%s/%s", dir, name);
}

/* The segments' first LSNs (malloc'd) and their count. */
static inline uint64_t *tw_segments(const char *dir, size_t *ret_n) {
    uint64_t *lsns = NULL;
    assert_int_equal(wal_format_segments_list(dir, &lsns, ret_n), PS_STATUS_OK);
    return lsns;
}

/* Offsets of the records in a segment's bytes (at most max), by walking the headers. */
static inline size_t tw_record_offsets(const uint8_t *p, size_t len, size_t *offs, size_t max) {
    size_t n = 0;
    for (size_t off = 0; off + WAL_RECORD_HEADER_BYTES <= len && n < max;
         off += WAL_RECORD_HEADER_BYTES + wal_format_len_get(p + off))
        offs[n++] = off;
    return n;
}

static inline wal *tw_open(const char *dir, wal_fsync mode, uint64_t segment_bytes, tw_replay *r,
                           wal_recovery *ret_rec) {
    wal_opts o = {.dir = dir,
                  .fsync = mode,
                  .segment_bytes = segment_bytes,
                  .replay = r ? tw_replay_fn : NULL,
                  .replay_arg = r};
    wal *w = NULL;
    char err[512] = "";
    wal_recovery rec;
    ps_status st = wal_open(&o, &rec, &w, err, sizeof err);
    if (st != PS_STATUS_OK)
        fail_msg("wal_open(%s): %s: %s", dir, ps_status_name(st), err);
    if (ret_rec)
        *ret_rec = rec;
    return w;
}

#endif
