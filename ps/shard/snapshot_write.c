/* snapshot_write.c: writes a snapshot file (see snapshot.h for the format and the
 * order of the steps): an export streamed through a 1 MiB buffer into a .tmp file, then
 * the request ids remembered up to its LSN; the log waited for up to that LSN; the file
 * fsynced, renamed and the directory fsynced; then older snapshots and the log segments
 * the new one covers go. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "journal.h"
#include "snapshot.h"
#include "snapshot_internal.h"
#include "util.h"
#include "wal_format.h"

typedef struct snap_writer {
    const char *dir;
    const snapshot_requests *requests; /* may be NULL */
    wal *wal;
    int fd;                      /* -1 until visit_begin opens it */
    char tmp[SNAPSHOT_MAX_PATH]; /* the .tmp file */
    uint8_t *buf;                /* SNAPSHOT_BUFFER_BYTES */
    size_t used;                 /* bytes in buf */
    uint64_t off;                /* bytes written before buf */
    uint64_t frames, chunks, rows, tables, request_frames;
    uint8_t head[SNAPSHOT_HEADER_BYTES]; /* the header, as first written */
    XXH3_state_t *hash;
    snapshot_info *info;
    char *err;
    size_t err_len;
} snap_writer;

static ps_status io_fail(snap_writer *w, const char *what, int e) {
    ps_set_err(w->err, w->err_len, "snapshot %s: %s failed: %s", w->tmp, what, strerror(e));
    return PS_STATUS_IO;
}

static ps_status flush(snap_writer *w) {
    int e = wal_format_write_all(w->fd, w->buf, w->used);
    if (e)
        return io_fail(w, "write", e);
    w->off += w->used;
    w->used = 0;
    return PS_STATUS_OK;
}

static ps_status put(snap_writer *w, const void *data, size_t len) {
    if (len > SNAPSHOT_BUFFER_BYTES - w->used) {
        ps_status st = flush(w);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (len >= SNAPSHOT_BUFFER_BYTES) { /* large values go straight to the file */
        int e = wal_format_write_all(w->fd, data, len);
        if (e)
            return io_fail(w, "write", e);
        w->off += len;
        return PS_STATUS_OK;
    }
    memcpy(w->buf + w->used, data, len);
    w->used += len;
    return PS_STATUS_OK;
}

/* One frame of `kind` around the pieces. */
static ps_status put_frame(snap_writer *w, uint32_t kind, const struct iovec *iov, int n,
                           size_t len) {
    uint8_t head[SNAPSHOT_FRAME_HEAD_BYTES];
    uint32_t magic = SNAPSHOT_FRAME_MAGIC;
    uint64_t len64 = len;
    memcpy(head, &magic, 4);
    memcpy(head + 4, &kind, 4);
    memcpy(head + 8, &len64, 8);
    XXH3_64bits_reset(w->hash);
    XXH3_64bits_update(w->hash, head + 4, 12);
    for (int i = 0; i < n; i++)
        XXH3_64bits_update(w->hash, iov[i].iov_base, iov[i].iov_len);
    uint64_t sum = XXH3_64bits_digest(w->hash);
    memcpy(head + 16, &sum, 8);
    ps_status st = put(w, head, sizeof head);
    for (int i = 0; st == PS_STATUS_OK && i < n; i++)
        st = put(w, iov[i].iov_base, iov[i].iov_len);
    w->frames++;
    return st;
}

static uint64_t position(void *arg) {
    return wal_last_lsn(arg);
}

static ps_status visit_begin(void *arg, const image_export_info *x) {
    snap_writer *w = arg;
    char name[SNAPSHOT_NAME_LEN + 1];
    snapshot_file_name(x->position, name);
    snprintf(w->tmp, sizeof w->tmp, "%s/%s.tmp", w->dir, name);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return io_fail(w, "open", errno);
    w->tables = x->tables;
    int64_t now = ps_wall_ms();
    uint8_t h[SNAPSHOT_HEADER_BYTES] = {0};
    uint32_t format = SNAPSHOT_FORMAT;
    memcpy(h, SNAPSHOT_MAGIC, 8);
    memcpy(h + 8, &format, 4);
    memcpy(h + 16, &x->position, 8);
    memcpy(h + 24, &x->seq, 8);
    memcpy(h + 32, &x->max_version, 8);
    memcpy(h + 40, &x->chunks, 8);
    memcpy(h + 48, &now, 8);
    uint64_t sum = XXH3_64bits(h, 56);
    memcpy(h + 56, &sum, 8);
    memcpy(w->head, h, sizeof h);
    *w->info = (snapshot_info){.lsn = x->position,
                               .seq = x->seq,
                               .max_version = x->max_version,
                               .tables = x->tables,
                               .wall_ms = now};
    return put(w, h, sizeof h);
}

static ps_status visit_chunk(void *arg, const image_chunk *c) {
    snap_writer *w = arg;
    image_encoded e;
    ps_status st = image_encode_chunk(c, &e, w->err, w->err_len);
    if (st == PS_STATUS_OK)
        st = put_frame(w, SNAPSHOT_FRAME_IMAGE, e.iov, e.n_iov, e.len);
    w->chunks++;
    return st;
}

static ps_status visit_rows(void *arg, const image_rows *r) {
    snap_writer *w = arg;
    image_encoded e;
    ps_status st = image_encode_rows(r, &e, w->err, w->err_len);
    if (st == PS_STATUS_OK)
        st = put_frame(w, SNAPSHOT_FRAME_IMAGE, e.iov, e.n_iov, e.len);
    w->rows += r->n;
    return st;
}

static ps_status put_request_frame(void *arg, const uint8_t *payload, size_t len) {
    snap_writer *w = arg;
    struct iovec iov = {(void *)payload, len};
    w->request_frames++;
    return put_frame(w, SNAPSHOT_FRAME_DEDUP, &iov, 1, len);
}

/* A snapshot without request ids is written as format 1, so that a build from before
 * them can still read it (a rollback): the header is rewritten in place. */
static ps_status mark_format_1(snap_writer *w) {
    const uint32_t one = 1;
    memcpy(w->head + 8, &one, 4);
    uint64_t sum = XXH3_64bits(w->head, 56);
    memcpy(w->head + 56, &sum, 8);
    if (pwrite(w->fd, w->head, sizeof w->head, 0) != (ssize_t)sizeof w->head)
        return io_fail(w, "write of the header", errno);
    return PS_STATUS_OK;
}

/* The request ids remembered at or before the snapshot's LSN, a frame each. */
static ps_status put_requests(snap_writer *w) {
    if (!w->requests || !w->requests->dedup)
        return PS_STATUS_OK;
    if (w->requests->settle) /* a record at or before the LSN may not be remembered yet */
        w->requests->settle(w->requests->settle_arg);
    return journal_dedup_records(w->requests->dedup, w->info->lsn, NULL, NULL, put_request_frame, w,
                                 w->err, w->err_len);
}

/* The request ids, the end frame, the flush and fsync, the wait for the log, the rename
 * and the directory's fsync. */
static ps_status finish(snap_writer *w) {
    ps_status st = put_requests(w);
    if (st != PS_STATUS_OK)
        return st;
    uint64_t end[4] = {w->frames, w->chunks, w->rows, w->tables};
    struct iovec iov = {end, sizeof end};
    st = put_frame(w, SNAPSHOT_FRAME_END, &iov, 1, sizeof end);
    if (st == PS_STATUS_OK)
        st = flush(w);
    if (st == PS_STATUS_OK && w->request_frames == 0)
        st = mark_format_1(w);
    if (st == PS_STATUS_OK && fsync(w->fd) != 0)
        st = io_fail(w, "fsync", errno);
    /* the LSN is the last record appended: the log's flusher may not have written it */
    if (st == PS_STATUS_OK && wal_wait(w->wal, w->info->lsn) != PS_STATUS_OK) {
        char why[512] = "";
        (void)wal_failed(w->wal, why, sizeof why);
        ps_set_err(w->err, w->err_len, "snapshot %s: the log did not reach its LSN %llu: %s",
                   w->tmp, (unsigned long long)w->info->lsn, why[0] ? why : "it failed");
        st = PS_STATUS_IO;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0 && st == PS_STATUS_OK)
        st = io_fail(w, "close", errno);
    snprintf(w->info->path, sizeof w->info->path, "%.*s", (int)(strlen(w->tmp) - 4), w->tmp);
    if (st == PS_STATUS_OK && rename(w->tmp, w->info->path) != 0)
        st = io_fail(w, "rename", errno);
    int e = st == PS_STATUS_OK ? snapshot_dir_sync(w->dir) : 0;
    if (e)
        st = io_fail(w, "fsync of the directory", e);
    return st;
}

/* Deletes the snapshots older than lsn, then the log segments it covers. */
static ps_status drop_older(snap_writer *w, uint64_t lsn) {
    uint64_t *lsns = NULL;
    size_t n = 0;
    ps_status st = snapshot_dir_list(w->dir, false, &lsns, &n);
    bool dropped = false;
    for (size_t i = 0; st == PS_STATUS_OK && i < n && lsns[i] < lsn; i++) {
        char name[SNAPSHOT_NAME_LEN + 1], path[SNAPSHOT_MAX_PATH];
        snapshot_file_name(lsns[i], name);
        snprintf(path, sizeof path, "%s/%s", w->dir, name);
        if (unlink(path) != 0 && errno != ENOENT)
            st = io_fail(w, "unlink of an older snapshot", errno);
        dropped = true;
    }
    free(lsns);
    int e = st == PS_STATUS_OK && dropped ? snapshot_dir_sync(w->dir) : 0;
    if (e)
        st = io_fail(w, "fsync of the directory", e);
    if (st == PS_STATUS_OK && (st = wal_drop_before(w->wal, lsn + 1)) != PS_STATUS_OK)
        ps_set_err(w->err, w->err_len,
                   "snapshot at LSN %llu is written, but freeing the log "
                   "segments it covers failed",
                   (unsigned long long)lsn);
    return st;
}

ps_status snapshot_write(const char *dir, store *chunks, row_store *rows,
                         const snapshot_requests *requests, wal *wl, snapshot_info *ret_info,
                         char *err, size_t err_len) {
    snapshot_info info = {0};
    snap_writer w = {.dir = dir,
                     .requests = requests,
                     .wal = wl,
                     .fd = -1,
                     .info = &info,
                     .err = err,
                     .err_len = err_len};
    int64_t t0 = ps_now_ms();
    w.buf = malloc(SNAPSHOT_BUFFER_BYTES);
    w.hash = XXH3_createState();
    if (!w.buf || !w.hash) {
        free(w.buf);
        XXH3_freeState(w.hash);
        ps_set_err(err, err_len, "out of memory for a snapshot's buffer");
        return PS_STATUS_NO_MEMORY;
    }
    uint64_t *stale = NULL; /* .tmp files of a write a crash cut short go first */
    size_t n_stale = 0;
    if (snapshot_dir_list(dir, true, &stale, &n_stale) == PS_STATUS_OK)
        free(stale);
    image_export_opts xo = {.chunks = chunks,
                            .rows = rows,
                            .position = position,
                            .position_arg = wl,
                            .visit_begin = visit_begin,
                            .visit_chunk = visit_chunk,
                            .visit_rows = visit_rows,
                            .arg = &w};
    ps_status st = image_export(&xo, NULL, err, err_len);
    if (st == PS_STATUS_OK)
        st = finish(&w);
    if (w.fd >= 0)
        close(w.fd);
    if (st != PS_STATUS_OK && w.tmp[0])
        unlink(w.tmp);
    if (st == PS_STATUS_OK)
        st = drop_older(&w, info.lsn);
    free(w.buf);
    XXH3_freeState(w.hash);
    if (st != PS_STATUS_OK)
        return st;
    info.chunks = w.chunks;
    info.rows = w.rows;
    info.bytes = w.off;
    info.elapsed_ms = ps_now_ms() - t0;
    if (ret_info)
        *ret_info = info;
    return PS_STATUS_OK;
}
