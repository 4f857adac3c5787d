/* wal_flush.c: the write-ahead log's flusher thread (see wal.h and wal_internal.h).
 *
 * One round: take the active buffer (the appenders get the other), wait for the copies
 * into it to finish, write its records with one write() per segment they fall in
 * (starting a new segment when the next record does not fit), fsync when the mode says
 * so, then publish the new durable LSN and wake the waiters. Rounds start when data is
 * there and, in mode GROUP, the group interval has passed since the last fsync started
 * (or half a buffer is used: then it writes without syncing). A failed write or fsync
 * fails the log for good and truncates the segment back to what was durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "wal_internal.h"

/* ------------------------------------------------------------------ io --- */

/* The words a person looks for first, then the system's text. */
static void io_message(char *msg, size_t msg_len, int err, const char *fmt, ...) {
    const char *what = err == ENOSPC || err == EDQUOT ? "disk full"
                       : err == EIO                   ? "I/O error"
                       : err == EROFS                 ? "read-only file system"
                                                      : "error";
    char sys[128];
    const char *s = strerror_r(err, sys, sizeof sys);
    char head[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    snprintf(msg, msg_len, "wal: %s failed: %s (%s)", head, what, s);
}

/* Counts down an injected fault: true when this call is the one that fails. */
static bool fault_hits(atomic_uint *countdown) {
    unsigned cur = atomic_load(countdown);
    while (cur > 0 && !atomic_compare_exchange_weak(countdown, &cur, cur - 1)) {
    }
    return cur == 1;
}

/* Appends data[0..len), bytes of buffer b, to the segment (seg_off advances by what was
 * written); from b's start, in place where it can be (wal_segment_write_buf). */
static int io_write(wal *w, wal_buf *b, const uint8_t *data, size_t len) {
    atomic_fetch_add(&w->writes, 1);
    size_t done = 0;
    if (fault_hits(&w->fault_write_countdown)) {
        (void)wal_segment_write(w, data, len / 2, &done); /* the disk filled up mid-way */
        return atomic_load(&w->fault_write_errno);
    }
    if (data == b->data)
        return wal_segment_write_buf(w, b, len, &done);
    return wal_segment_write(w, data, len, &done);
}

static int io_fsync(wal *w, int fd, bool dir) {
    atomic_fetch_add(&w->fsyncs, 1);
    if (fault_hits(&w->fault_fsync_countdown))
        return atomic_load(&w->fault_fsync_errno);
    int rc = dir ? fsync(fd) : fdatasync(fd);
    return rc == 0 ? 0 : errno;
}

/* ------------------------------------------------------------------ segments --- */

int wal_flush_segment_create(wal *w, uint64_t first_lsn, char *msg, size_t msg_len) {
    char name[WAL_SEGMENT_NAME_LEN + 1];
    wal_format_segment_name(first_lsn, name);
    int fd = wal_segment_open(w, name, O_WRONLY | O_CREAT | O_EXCL);
    if (fd < 0) {
        int e = errno;
        io_message(msg, msg_len, e, "creating %s/%s", w->dir, name);
        return e;
    }
    w->seg_fd = fd;
    w->seg_first_lsn = first_lsn;
    w->seg_off = w->seg_synced_off = 0;
    atomic_fetch_add(&w->segments, 1);
    if (w->mode != WAL_FSYNC_NONE) {
        int e = io_fsync(w, w->dir_fd, true);
        if (e) {
            io_message(msg, msg_len, e, "fsync of directory %s", w->dir);
            return e;
        }
    }
    return 0;
}

static int write_run(wal *w, wal_buf *b, size_t start, size_t len, char *msg, size_t msg_len) {
    if (len == 0)
        return 0;
    uint64_t at = w->seg_off;
    int e = io_write(w, b, b->data + start, len);
    if (e) {
        char name[WAL_SEGMENT_NAME_LEN + 1];
        wal_format_segment_name(w->seg_first_lsn, name);
        io_message(msg, msg_len, e, "write of %zu bytes to %s/%s at offset %llu", len, w->dir, name,
                   (unsigned long long)at);
        return e;
    }
    if (w->mode == WAL_FSYNC_NONE)
        w->seg_synced_off = w->seg_off;
    return 0;
}

static int sync_segment(wal *w, char *msg, size_t msg_len) {
    int e = io_fsync(w, w->seg_fd, false);
    if (e) {
        char name[WAL_SEGMENT_NAME_LEN + 1];
        wal_format_segment_name(w->seg_first_lsn, name);
        io_message(msg, msg_len, e, "fsync of %s/%s", w->dir, name);
        return e;
    }
    w->seg_synced_off = w->seg_off;
    return 0;
}

/* Finishes the current segment (its padding cut, synced unless mode NONE) and starts
 * `next_lsn`'s. */
static int rotate(wal *w, uint64_t next_lsn, char *msg, size_t msg_len) {
    int te = wal_segment_trim(w);
    if (te) {
        char name[WAL_SEGMENT_NAME_LEN + 1];
        wal_format_segment_name(w->seg_first_lsn, name);
        io_message(msg, msg_len, te, "truncating %s/%s to its records", w->dir, name);
        return te;
    }
    if (w->mode != WAL_FSYNC_NONE) {
        int e = sync_segment(w, msg, msg_len);
        if (e)
            return e;
    }
    close(w->seg_fd);
    w->seg_fd = -1;
    return wal_flush_segment_create(w, next_lsn, msg, msg_len);
}

/* Writes the records of `b` into the segments. ret_written: the last LSN completely
 * written; ret_synced: the last LSN a segment's final fsync made durable (unchanged
 * when none). 0 or an errno with a message. */
static int write_buffer(wal *w, wal_buf *b, uint64_t *ret_written, uint64_t *ret_synced, char *msg,
                        size_t msg_len) {
    size_t off = 0, run_start = 0;
    uint64_t run_last = 0;
    while (off < b->used) {
        const uint8_t *rec = b->data + off;
        size_t size = WAL_RECORD_HEADER_BYTES + (size_t)wal_format_len_get(rec);
        uint64_t lsn = wal_format_lsn_get(rec);
        size_t run = off - run_start;
        if (w->seg_off + run > 0 && w->seg_off + run + size > w->segment_bytes) {
            int e = write_run(w, b, run_start, run, msg, msg_len);
            if (e)
                return e;
            if (run > 0)
                *ret_written = run_last;
            e = rotate(w, lsn, msg, msg_len);
            if (e)
                return e;
            if (w->mode != WAL_FSYNC_NONE)
                *ret_synced = lsn - 1;
            run_start = off;
        }
        run_last = lsn;
        off += size;
    }
    int e = write_run(w, b, run_start, off - run_start, msg, msg_len);
    if (e)
        return e;
    if (off > run_start)
        *ret_written = run_last;
    return 0;
}

/* ------------------------------------------------------------------ the thread --- */

/* With w->mu held: sleeps until there is something to do; false when nothing is due
 * yet (the caller looks again). */
static bool round_due(wal *w, int64_t now, bool *ret_sync) {
    bool have = w->active->used > 0;
    bool unsynced = w->written_lsn > w->durable_lsn;
    bool due = w->mode != WAL_FSYNC_GROUP || now >= w->next_sync_us;
    bool pressed =
        w->space_waiters > 0 || w->grow_waiters > 0 || w->active->used >= w->active->cap / 2;
    if (w->closing) {
        *ret_sync = true;
        return true;
    }
    if ((have && (due || pressed)) || (unsynced && due)) {
        *ret_sync = w->mode != WAL_FSYNC_NONE && due;
        return true;
    }
    if (!have && !unsynced) {
        w->flusher_idle = true;
        pthread_cond_wait(&w->cv_flusher, &w->mu);
    } else {
        w->flusher_timed = true;
        struct timespec at = {.tv_sec = (time_t)(w->next_sync_us / 1000000),
                              .tv_nsec = (long)(w->next_sync_us % 1000000) * 1000};
        pthread_cond_timedwait(&w->cv_flusher, &w->mu, &at);
    }
    w->flusher_idle = w->flusher_timed = false;
    return false;
}

void *wal_flusher_main(void *arg) {
    wal *w = arg;
    char msg[512];
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->failed_errno) { /* appends are refused: wait for wal_close */
            if (w->closing)
                break;
            w->flusher_idle = true;
            pthread_cond_wait(&w->cv_flusher, &w->mu);
            continue;
        }
        int64_t now = ps_now_us();
        bool sync = false;
        if (!round_due(w, now, &sync))
            continue;
        bool final = w->closing;
        wal_buf *b = NULL;
        if (w->active->used > 0) {
            b = w->active;
            b->flushing = true;
            w->active = b == &w->bufs[0] ? &w->bufs[1] : &w->bufs[0];
            wal_buf_align(w->active, w->seg_off + b->used); /* unless b changes segment */
            pthread_cond_broadcast(&w->cv_space);
            while (b->pending > 0)
                pthread_cond_wait(&w->cv_pending, &w->mu);
        }
        if (sync)
            w->next_sync_us = now + w->group_us;
        uint64_t written = w->written_lsn, synced = 0;
        pthread_mutex_unlock(&w->mu);

        int e = b ? write_buffer(w, b, &written, &synced, msg, sizeof msg) : 0;
        if (!e && sync && w->seg_fd >= 0) {
            e = sync_segment(w, msg, sizeof msg);
            if (!e)
                synced = written;
        }
        if (e && w->seg_fd >= 0) {
            if (ftruncate(w->seg_fd, (off_t)w->seg_synced_off) != 0) {
                /* best effort: recovery cuts what is left as a torn tail */
            }
            w->seg_off = w->seg_synced_off; /* nothing is written after a failure */
            w->seg_padded = false;
        }
        if (b && b->cap > w->buffer_bytes) /* a big record grew it: give the memory back */
            (void)wal_buf_alloc(b, w->buffer_bytes); /* (kept big when that fails) */

        pthread_mutex_lock(&w->mu);
        if (b) {
            b->used = 0;
            b->last_lsn = 0;
            b->flushing = false;
        }
        w->written_lsn = written;
        if (w->mode == WAL_FSYNC_NONE)
            synced = written;
        if (synced > w->durable_lsn)
            w->durable_lsn = synced;
        if (e) {
            w->failed_errno = e;
            snprintf(w->failure, sizeof w->failure, "%s", msg);
        }
        pthread_cond_broadcast(&w->cv_durable);
        pthread_cond_broadcast(&w->cv_space);
        if (final && w->active->used == 0)
            break;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}
