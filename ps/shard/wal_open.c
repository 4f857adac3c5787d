/* wal_open.c: the write-ahead log's life cycle (see wal.h): checking the options,
 * locking the directory, recovery (wal_recover.c), the buffers, resuming the last
 * segment, starting the flusher (wal_flush.c); and closing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "util.h"
#include "wal_internal.h"

/* ------------------------------------------------------------------ open --- */

static ps_status check_opts(const wal_opts *o, char *err, size_t err_len) {
    if (!o || !o->dir || !*o->dir) {
        ps_set_err(err, err_len, "wal: no directory given");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (strlen(o->dir) >= WAL_MAX_PATH) {
        ps_set_err(err, err_len, "wal: directory path longer than %d bytes", WAL_MAX_PATH - 1);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (o->fsync != WAL_FSYNC_GROUP && o->fsync != WAL_FSYNC_ALWAYS && o->fsync != WAL_FSYNC_NONE) {
        ps_set_err(err, err_len, "wal: unknown fsync mode %d", (int)o->fsync);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (o->group_ms > WAL_MAX_GROUP_MS) {
        ps_set_err(err, err_len, "wal: group_ms %u over the limit %u", o->group_ms,
                   WAL_MAX_GROUP_MS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (o->segment_bytes &&
        (o->segment_bytes < WAL_MIN_SEGMENT_BYTES || o->segment_bytes > WAL_MAX_SEGMENT_BYTES)) {
        ps_set_err(err, err_len, "wal: segment_bytes %llu outside [%llu, %llu]",
                   (unsigned long long)o->segment_bytes, WAL_MIN_SEGMENT_BYTES,
                   WAL_MAX_SEGMENT_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (o->buffer_bytes &&
        (o->buffer_bytes < WAL_MIN_BUFFER_BYTES || o->buffer_bytes > WAL_MAX_BUFFER_BYTES)) {
        ps_set_err(err, err_len, "wal: buffer_bytes %u outside [%u, %u]", o->buffer_bytes,
                   WAL_MIN_BUFFER_BYTES, WAL_MAX_BUFFER_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (o->start_lsn > UINT64_MAX / 2) {
        ps_set_err(err, err_len, "wal: start_lsn %llu too large", (unsigned long long)o->start_lsn);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

static ps_status sync_init(wal *w) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return PS_STATUS_INTERNAL;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&w->cv_flusher, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return PS_STATUS_INTERNAL;
    /* the others cannot fail with default attributes on Linux */
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_space, NULL);
    pthread_cond_init(&w->cv_durable, NULL);
    pthread_cond_init(&w->cv_pending, NULL);
    return PS_STATUS_OK;
}

static void sync_destroy(wal *w) {
    pthread_cond_destroy(&w->cv_pending);
    pthread_cond_destroy(&w->cv_durable);
    pthread_cond_destroy(&w->cv_space);
    pthread_cond_destroy(&w->cv_flusher);
    pthread_mutex_destroy(&w->mu);
}

/* Opens (creating it when absent) and locks the directory into w->dir_fd. */
static ps_status dir_open(wal *w, char *err, size_t err_len) {
    if (ps_mkdir_p(w->dir) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "wal: cannot create directory %s: %s", w->dir, strerror(errno));
        return PS_STATUS_IO;
    }
    w->dir_fd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dir_fd < 0) {
        ps_set_err(err, err_len, "wal: cannot open directory %s: %s", w->dir, strerror(errno));
        return PS_STATUS_IO;
    }
    if (flock(w->dir_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(w->dir_fd);
        w->dir_fd = -1;
        ps_set_err(err, err_len, "wal: %s is in use by another log (%s)", w->dir, strerror(e));
        return e == EWOULDBLOCK ? PS_STATUS_FAILED_PRECONDITION : PS_STATUS_IO;
    }
    return PS_STATUS_OK;
}

/* Opens the last segment for appending at its good end, or creates the first. */
static ps_status segment_resume(wal *w, const wal_recover_result *res, char *err, size_t err_len) {
    char name[WAL_SEGMENT_NAME_LEN + 1];
    if (!res->have_segment) {
        char msg[512];
        if (wal_flush_segment_create(w, res->last_lsn + 1, msg, sizeof msg) != 0) {
            if (w->seg_fd >= 0)
                close(w->seg_fd);
            w->seg_fd = -1;
            ps_set_err(err, err_len, "%s", msg);
            return PS_STATUS_IO;
        }
        return PS_STATUS_OK;
    }
    wal_format_segment_name(res->seg_first_lsn, name);
    w->seg_fd = wal_segment_open(w, name, O_WRONLY);
    if (w->seg_fd < 0 || lseek(w->seg_fd, 0, SEEK_END) != (off_t)res->seg_bytes) {
        ps_set_err(err, err_len, "wal: cannot reopen %s/%s for appending: %s", w->dir, name,
                   w->seg_fd < 0 ? strerror(errno) : "its size changed during recovery");
        if (w->seg_fd >= 0)
            close(w->seg_fd);
        w->seg_fd = -1;
        return PS_STATUS_IO;
    }
    w->seg_first_lsn = res->seg_first_lsn;
    w->seg_off = w->seg_synced_off = res->seg_bytes;
    int e = wal_segment_load_tail(w, name);
    if (e) {
        ps_set_err(err, err_len, "wal: cannot read the end of %s/%s: %s", w->dir, name,
                   strerror(e));
        close(w->seg_fd);
        w->seg_fd = -1;
        return PS_STATUS_IO;
    }
    return PS_STATUS_OK;
}

ps_status wal_open(const wal_opts *opts, wal_recovery *ret_rec, wal **ret_wal, char *err,
                   size_t err_len) {
    ps_status st = check_opts(opts, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    if (!ret_wal) {
        ps_set_err(err, err_len, "wal: no place to return the log");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    wal *w = calloc(1, sizeof *w);
    if (!w) {
        ps_set_err(err, err_len, "wal: out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(w->dir, sizeof w->dir, "%s", opts->dir);
    w->dir_fd = w->seg_fd = -1;
    w->mode = opts->fsync;
    w->group_us = (int64_t)(opts->group_ms ? opts->group_ms : WAL_DEFAULT_GROUP_MS) * 1000;
    w->segment_bytes = opts->segment_bytes ? opts->segment_bytes : WAL_DEFAULT_SEGMENT_BYTES;
    w->buffer_bytes = opts->buffer_bytes ? opts->buffer_bytes : WAL_DEFAULT_BUFFER_BYTES;
    st = sync_init(w);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "wal: cannot initialize its locks");
        goto fail_alloc;
    }
    st = dir_open(w, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail_sync;

    wal_recovery rec = {0};
    wal_recover_result res = {0};
    wal_opts o = *opts;
    o.start_lsn = o.start_lsn ? o.start_lsn : 1;
    st = wal_recover(&o, w->dir_fd, &rec, &res, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail_dir;

    for (int i = 0; i < 2; i++) {
        if (!wal_buf_alloc(&w->bufs[i], w->buffer_bytes)) {
            ps_set_err(err, err_len, "wal: out of memory for %zu-byte buffers", w->buffer_bytes);
            st = PS_STATUS_NO_MEMORY;
            goto fail_bufs;
        }
    }
    w->active = &w->bufs[0];
    st = segment_resume(w, &res, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail_bufs;
    wal_buf_align(w->active, w->seg_off);
    w->last_lsn = w->written_lsn = w->durable_lsn = res.last_lsn;
    if (pthread_create(&w->flusher, NULL, wal_flusher_main, w) != 0) {
        ps_set_err(err, err_len, "wal: cannot start the flusher thread");
        st = PS_STATUS_NO_MEMORY;
        goto fail_segment;
    }
    w->flusher_started = true;
    if (ret_rec)
        *ret_rec = rec;
    *ret_wal = w;
    return PS_STATUS_OK;

fail_segment:
    close(w->seg_fd);
fail_bufs:
    wal_buf_free(&w->bufs[0]);
    wal_buf_free(&w->bufs[1]);
fail_dir:
    close(w->dir_fd);
fail_sync:
    sync_destroy(w);
fail_alloc:
    free(w);
    return st;
}

void wal_close(wal *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    pthread_cond_signal(&w->cv_flusher);
    pthread_mutex_unlock(&w->mu);
    if (w->flusher_started)
        pthread_join(w->flusher, NULL);
    /* a clean close leaves the last segment ending at its last record (best effort:
     * recovery takes zeros after it for padding) */
    if (w->seg_fd >= 0 && !w->failed_errno && wal_segment_trim(w) == 0 &&
        w->mode != WAL_FSYNC_NONE && fsync(w->seg_fd) != 0) {
        /* not durable yet: the zeros may come back, which recovery allows */
    }
    if (w->seg_fd >= 0)
        close(w->seg_fd);
    free(w->stage);
    wal_buf_free(&w->bufs[0]);
    wal_buf_free(&w->bufs[1]);
    close(w->dir_fd);
    sync_destroy(w);
    free(w);
}
