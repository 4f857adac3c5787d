/* wal.c: the write-ahead log's append path and queries (see wal.h): reserve-then-copy
 * appends into the active buffer, waits on the durable LSN, segment deletion, fault
 * injection. Opening and closing are in wal_open.c, the flusher in wal_flush.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "wal_internal.h"

/* ------------------------------------------------------------------ append --- */

/* Wakes the flusher when it sleeps through something it should act on now. */
static void flusher_nudge(wal *w, bool pressed) {
    if (w->flusher_idle || (pressed && w->flusher_timed)) {
        w->flusher_idle = w->flusher_timed = false;
        pthread_cond_signal(&w->cv_flusher);
    }
}

/* With w->mu held: reserves `rec` bytes in the active buffer (waiting for room), hands
 * out the next LSN. A record larger than a buffer waits for the active one to be empty
 * and grows it; others wait meanwhile, so it cannot starve. */
static ps_status reserve(wal *w, size_t rec, wal_buf **ret_buf, size_t *ret_off,
                         uint64_t *ret_lsn) {
    bool big = rec > w->buffer_bytes, stalled = false;
    if (big)
        w->grow_waiters++;
    ps_status st = PS_STATUS_OK;
    for (;;) {
        wal_buf *b = w->active;
        if (w->failed_errno || w->closing) {
            st = w->failed_errno ? PS_STATUS_IO : PS_STATUS_FAILED_PRECONDITION;
            break;
        }
        if (big && b->used == 0 && b->cap < rec && !wal_buf_alloc(b, rec)) {
            st = PS_STATUS_NO_MEMORY; /* (placed for offset 0: its write is staged) */
            break;
        }
        if ((big || w->grow_waiters == 0) && b->cap - b->used >= rec) {
            *ret_buf = b;
            *ret_off = b->used;
            *ret_lsn = b->last_lsn = ++w->last_lsn;
            b->used += rec;
            b->pending++;
            w->appends++;
            w->append_bytes += rec;
            flusher_nudge(w, b->used >= b->cap / 2);
            break;
        }
        if (!stalled)
            w->buffer_stalls++;
        stalled = true;
        w->space_waiters++;
        flusher_nudge(w, true);
        pthread_cond_wait(&w->cv_space, &w->mu);
        w->space_waiters--;
    }
    if (big)
        w->grow_waiters--;
    return st;
}

ps_status wal_appendv(wal *w, uint8_t type, const struct iovec *iov, int iovcnt,
                      uint64_t *ret_lsn) {
    if (!w || iovcnt < 0 || iovcnt > WAL_MAX_IOVCNT || (iovcnt > 0 && !iov))
        return PS_STATUS_INVALID_ARGUMENT;
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > WAL_MAX_PAYLOAD_BYTES - len || (iov[i].iov_len && !iov[i].iov_base))
            return PS_STATUS_INVALID_ARGUMENT;
        len += iov[i].iov_len;
    }
    size_t rec = WAL_RECORD_HEADER_BYTES + len;
    wal_buf *b;
    size_t off;
    uint64_t lsn;
    pthread_mutex_lock(&w->mu);
    ps_status st = reserve(w, rec, &b, &off, &lsn);
    pthread_mutex_unlock(&w->mu);
    if (st != PS_STATUS_OK)
        return st;

    /* the reserved range is ours alone: the flusher writes it only once pending drops */
    uint8_t *dst = b->data + off;
    wal_format_header_put(dst, type, lsn, (uint32_t)len);
    uint8_t *p = dst + WAL_RECORD_HEADER_BYTES;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len)
            memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    wal_format_checksum_put(dst);

    pthread_mutex_lock(&w->mu);
    if (--b->pending == 0 && b->flushing)
        pthread_cond_signal(&w->cv_pending);
    pthread_mutex_unlock(&w->mu);
    if (ret_lsn)
        *ret_lsn = lsn;
    return PS_STATUS_OK;
}

ps_status wal_append(wal *w, uint8_t type, const void *payload, size_t len, uint64_t *ret_lsn) {
    if (len > WAL_MAX_PAYLOAD_BYTES || (len && !payload))
        return PS_STATUS_INVALID_ARGUMENT;
    struct iovec iov = {.iov_base = (void *)payload, .iov_len = len};
    return wal_appendv(w, type, &iov, 1, ret_lsn);
}

/* ------------------------------------------------------------------ waits --- */

ps_status wal_wait(wal *w, uint64_t lsn) {
    pthread_mutex_lock(&w->mu);
    ps_status st = PS_STATUS_OK;
    if (lsn > w->last_lsn) {
        st = PS_STATUS_INVALID_ARGUMENT;
    } else {
        while (w->durable_lsn < lsn && !w->failed_errno)
            pthread_cond_wait(&w->cv_durable, &w->mu);
        if (w->durable_lsn < lsn)
            st = PS_STATUS_IO;
    }
    pthread_mutex_unlock(&w->mu);
    return st;
}

uint64_t wal_last_lsn(wal *w) {
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->last_lsn;
    pthread_mutex_unlock(&w->mu);
    return v;
}

uint64_t wal_durable_lsn(wal *w) {
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->durable_lsn;
    pthread_mutex_unlock(&w->mu);
    return v;
}

bool wal_failed(wal *w, char *err, size_t err_len) {
    pthread_mutex_lock(&w->mu);
    bool failed = w->failed_errno != 0;
    if (failed)
        ps_set_err(err, err_len, "%s", w->failure);
    pthread_mutex_unlock(&w->mu);
    return failed;
}

void wal_stats_get(wal *w, wal_stats *ret_stats) {
    pthread_mutex_lock(&w->mu);
    wal_stats s = {
        .appends = w->appends,
        .append_bytes = w->append_bytes,
        .buffer_stalls = w->buffer_stalls,
    };
    pthread_mutex_unlock(&w->mu);
    s.writes = atomic_load(&w->writes);
    s.fsyncs = atomic_load(&w->fsyncs);
    s.segments = atomic_load(&w->segments);
    s.staged_bytes = atomic_load(&w->staged_bytes);
    *ret_stats = s;
}

/* ------------------------------------------------------------------ segments --- */

ps_status wal_drop_before(wal *w, uint64_t lsn) {
    uint64_t *firsts = NULL;
    size_t n = 0;
    ps_status st = wal_format_segments_list(w->dir, &firsts, &n);
    if (st != PS_STATUS_OK)
        return st;
    size_t dropped = 0;
    /* segment i holds LSNs firsts[i] .. firsts[i + 1] - 1; the last listed one is or was
     * being written and always stays */
    for (size_t i = 0; i + 1 < n && firsts[i + 1] <= lsn; i++) {
        char name[WAL_SEGMENT_NAME_LEN + 1];
        wal_format_segment_name(firsts[i], name);
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT) {
            st = PS_STATUS_IO;
            break;
        }
        dropped++;
    }
    free(firsts);
    if (dropped > 0) {
        atomic_fetch_add(&w->fsyncs, 1);
        if (fsync(w->dir_fd) != 0 && st == PS_STATUS_OK)
            st = PS_STATUS_IO;
    }
    return st;
}

/* ------------------------------------------------------------------ faults --- */

void wal_fault_fail_io(wal *w, wal_fault_op op, uint32_t nth, int err) {
    if (op == WAL_FAULT_WRITE) {
        atomic_store(&w->fault_write_errno, err);
        atomic_store(&w->fault_write_countdown, nth);
    } else {
        atomic_store(&w->fault_fsync_errno, err);
        atomic_store(&w->fault_fsync_countdown, nth);
    }
}
