/* wal_segment.c: writing the bytes of the segment the flusher appends to (see
 * wal_internal.h): at its logical end, seg_off, with O_DIRECT in modes ALWAYS and GROUP.
 *
 * Why O_DIRECT: a log that is fsynced every few milliseconds through the page cache
 * paid a copy into the cache and the cache's writeback for every byte, and the disk
 * took the small synced writes slowly: on the development machine 16 MiB writes each
 * followed by a sync went at 264 MB/s buffered against 1.5 GB/s direct, and R=2 pushes
 * with --fsync group spent a quarter of their time waiting on the disk. Direct writes
 * must start and end on WAL_DIRECT_ALIGN boundaries of the file and come from aligned
 * memory. The append buffers are laid out for this (wal_buf_align): the block before a
 * buffer's records is free, and the records start where their file offset falls in a
 * block. So the first write of a buffer goes straight from it: the segment's last
 * partial block as written before (kept in w->tail) put in front of the records, zeros
 * behind them up to the boundary (the bytes there put back after). One copy of each
 * byte less than staging: 3.4% of the shards' time in R=2 pushes. Other writes (after
 * a segment change within a buffer, or from a buffer grown for a big record) go
 * through an aligned staging buffer (WAL_STAGE_BYTES) laid out the same way. The zeros
 * are overwritten by the next write; a segment that is finished or closed is truncated
 * back to its records, and recovery takes zeros after the last record for what they
 * are (wal_recover.c). A file system that refuses O_DIRECT (tmpfs) gets the buffered
 * writes of mode NONE.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wal_internal.h"

/* A buffer's allocation: the free block in front, up to a block's shift, the records,
 * the zeros behind them. */
static size_t buf_mem_bytes(size_t cap) {
    return (cap + 4 * (size_t)WAL_DIRECT_ALIGN - 1) / WAL_DIRECT_ALIGN * WAL_DIRECT_ALIGN;
}

bool wal_buf_alloc(wal_buf *b, size_t cap) {
    uint8_t *mem = aligned_alloc(WAL_DIRECT_ALIGN, buf_mem_bytes(cap));
    if (!mem)
        return false;
    free(b->mem);
    b->mem = b->data = mem;
    b->cap = cap;
    wal_buf_align(b, 0);
    return true;
}

void wal_buf_align(wal_buf *b, uint64_t file_off) {
    b->data = b->mem + WAL_DIRECT_ALIGN + (size_t)(file_off % WAL_DIRECT_ALIGN);
}

void wal_buf_free(wal_buf *b) {
    free(b->mem);
    b->mem = b->data = NULL;
}

int wal_segment_open(wal *w, const char *name, int flags) {
    w->seg_direct = w->seg_padded = false;
    int fd = -1;
    if (w->mode != WAL_FSYNC_NONE) {
        fd = openat(w->dir_fd, name, flags | O_DIRECT | O_CLOEXEC, 0644);
        if (fd >= 0)
            w->seg_direct = true;
        else if (errno != EINVAL) /* EINVAL: no O_DIRECT here; anything else is real */
            return -1;
    }
    if (fd < 0)
        fd = openat(w->dir_fd, name, flags | O_CLOEXEC, 0644);
    return fd;
}

/* One direct write at seg_off of len new bytes that lie at start + tail (tail: seg_off
 * within its block), start being block-aligned memory with room for the padding: the
 * segment's tail block is put in front, zeros behind (the bytes there put back after);
 * then seg_off and the kept tail move on. */
static int direct_at(wal *w, uint8_t *start, size_t len) {
    size_t tail = (size_t)(w->seg_off % WAL_DIRECT_ALIGN), total = tail + len;
    size_t padded = (total + WAL_DIRECT_ALIGN - 1) / WAL_DIRECT_ALIGN * WAL_DIRECT_ALIGN;
    memcpy(start, w->tail, tail);
    memcpy(w->behind, start + total, padded - total); /* records may follow: put back */
    memset(start + total, 0, padded - total);
    int e = wal_format_pwrite_all(w->seg_fd, start, padded, w->seg_off - tail);
    memcpy(start + total, w->behind, padded - total);
    if (e)
        return e;
    size_t next = (size_t)((w->seg_off + len) % WAL_DIRECT_ALIGN);
    memcpy(w->tail, start + total - next, next);
    w->seg_off += len;
    w->seg_padded = true;
    return 0;
}

/* One direct write of data[0..len) (len + the tail fits the stage) through the stage. */
static int direct_piece(wal *w, const uint8_t *data, size_t len) {
    memcpy(w->stage + w->seg_off % WAL_DIRECT_ALIGN, data, len);
    atomic_fetch_add(&w->staged_bytes, len);
    return direct_at(w, w->stage, len);
}

/* Leaves O_DIRECT for the rest of the segment (a file system that takes the flag at
 * open and refuses the writes). */
static int go_buffered(wal *w) {
    int flags = fcntl(w->seg_fd, F_GETFL);
    if (flags < 0 || fcntl(w->seg_fd, F_SETFL, flags & ~O_DIRECT) != 0)
        return errno;
    w->seg_direct = false;
    return 0;
}

int wal_segment_write(wal *w, const void *data, size_t len, size_t *ret_done) {
    const uint8_t *p = data;
    size_t done = 0;
    int e = 0;
    while (done < len && w->seg_direct) {
        if (!w->stage && !(w->stage = aligned_alloc(WAL_DIRECT_ALIGN, WAL_STAGE_BYTES)))
            return ENOMEM;
        size_t piece = len - done;
        if (piece > WAL_STAGE_BYTES - WAL_DIRECT_ALIGN)
            piece = WAL_STAGE_BYTES - WAL_DIRECT_ALIGN;
        e = direct_piece(w, p + done, piece);
        if (e == EINVAL) { /* the file system took O_DIRECT at open but not the write */
            if ((e = go_buffered(w)) != 0)
                break;
            continue;
        }
        if (e)
            break;
        done += piece;
    }
    if (!e && done < len) {
        e = wal_format_pwrite_all(w->seg_fd, p + done, len - done, w->seg_off);
        if (!e) {
            w->seg_off += len - done;
            done = len;
        }
    }
    *ret_done = done;
    return e;
}

int wal_segment_write_buf(wal *w, wal_buf *b, size_t len, size_t *ret_done) {
    uint8_t *start = b->data - w->seg_off % WAL_DIRECT_ALIGN;
    if (!w->seg_direct || (uintptr_t)start % WAL_DIRECT_ALIGN != 0 || len == 0)
        return wal_segment_write(w, b->data, len, ret_done);
    int e = direct_at(w, start, len);
    if (e == EINVAL && (e = go_buffered(w)) == 0) /* as in wal_segment_write */
        return wal_segment_write(w, b->data, len, ret_done);
    *ret_done = e ? 0 : len;
    return e;
}

int wal_segment_trim(wal *w) {
    if (!w->seg_padded || w->seg_fd < 0)
        return 0;
    if (ftruncate(w->seg_fd, (off_t)w->seg_off) != 0)
        return errno;
    w->seg_padded = false;
    return 0;
}

int wal_segment_load_tail(wal *w, const char *name) {
    size_t tail = (size_t)(w->seg_off % WAL_DIRECT_ALIGN);
    if (!w->seg_direct || tail == 0)
        return 0;
    int fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = pread(fd, w->tail, tail, (off_t)(w->seg_off - tail));
    int e = n == (ssize_t)tail ? 0 : n < 0 ? errno : EIO;
    close(fd);
    return e;
}
