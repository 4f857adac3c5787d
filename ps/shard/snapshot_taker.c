/* snapshot_taker.c: the thread that takes a snapshot each time the write-ahead log grew
 * by log_bytes since the last one, and the snapshot of a clean shutdown (see
 * snapshot.h). One snapshot is written at a time (run_lock). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot.h"
#include "util.h"

struct snapshot_taker {
    char *dir;
    store *chunks;
    row_store *rows;
    snapshot_requests requests;
    wal *wal;
    uint64_t log_bytes; /* the growth that triggers one */
    int check_ms;
    snapshot_event_fn on_event;
    void *on_event_arg;
    pthread_mutex_t lock; /* guards stop */
    pthread_cond_t cond;  /* signalled by destroy */
    bool stop;
    pthread_mutex_t run_lock; /* held while a snapshot is written; guards what follows */
    uint64_t base;            /* the log's append_bytes when the last one started */
    uint64_t carry;           /* log bytes from before this process (replayed) */
    pthread_t thread;
    _Atomic uint64_t taken, failed, last_lsn;
};

static uint64_t appended(snapshot_taker *t) {
    wal_stats ws;
    wal_stats_get(t->wal, &ws);
    return ws.append_bytes;
}

/* Takes one when the log holds records past the last (run_lock held). */
static ps_status take_locked(snapshot_taker *t, snapshot_info *ret_info, char *err,
                             size_t err_len) {
    if (wal_last_lsn(t->wal) == atomic_load(&t->last_lsn))
        return PS_STATUS_OK; /* nothing new since the last */
    uint64_t start = appended(t);
    snapshot_info info;
    ps_status st =
        snapshot_write(t->dir, t->chunks, t->rows, &t->requests, t->wal, &info, err, err_len);
    t->base = start; /* after a failure too: the next try waits for as much log again */
    t->carry = 0;
    if (st == PS_STATUS_OK) {
        atomic_store(&t->last_lsn, info.lsn);
        atomic_fetch_add(&t->taken, 1);
        if (ret_info)
            *ret_info = info;
    } else {
        atomic_fetch_add(&t->failed, 1);
    }
    if (t->on_event)
        t->on_event(t->on_event_arg, st, st == PS_STATUS_OK ? &info : NULL, err);
    return st;
}

static void *taker_main(void *arg) {
    snapshot_taker *t = arg;
    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        struct timespec at = ps_abstime_after_ms(t->check_ms);
        pthread_cond_timedwait(&t->cond, &t->lock, &at);
        if (t->stop)
            break;
        pthread_mutex_unlock(&t->lock);
        pthread_mutex_lock(&t->run_lock);
        if (appended(t) - t->base + t->carry >= t->log_bytes) {
            char err[512] = "";
            take_locked(t, NULL, err, sizeof err);
        }
        pthread_mutex_unlock(&t->run_lock);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

uint64_t snapshot_segment_bytes(uint64_t log_bytes) {
    uint64_t seg = (log_bytes ? log_bytes : SNAPSHOT_DEFAULT_LOG_BYTES) / 4;
    return seg < SNAPSHOT_MIN_SEGMENT_BYTES  ? SNAPSHOT_MIN_SEGMENT_BYTES
           : seg > WAL_DEFAULT_SEGMENT_BYTES ? WAL_DEFAULT_SEGMENT_BYTES
                                             : seg;
}

ps_status snapshot_taker_create(const snapshot_taker_opts *o, snapshot_taker **ret_taker) {
    if (!o || !o->dir || !o->wal)
        return PS_STATUS_INVALID_ARGUMENT;
    snapshot_taker *t = calloc(1, sizeof *t);
    if (!t)
        return PS_STATUS_NO_MEMORY;
    *t = (snapshot_taker){.chunks = o->chunks,
                          .rows = o->rows,
                          .requests = o->requests,
                          .wal = o->wal,
                          .log_bytes = o->log_bytes ? o->log_bytes : SNAPSHOT_DEFAULT_LOG_BYTES,
                          .check_ms = o->check_ms > 0 ? o->check_ms : SNAPSHOT_CHECK_MS,
                          .on_event = o->on_event,
                          .on_event_arg = o->on_event_arg,
                          .carry = o->log_since};
    atomic_init(&t->taken, 0);
    atomic_init(&t->failed, 0);
    atomic_init(&t->last_lsn, o->last_lsn);
    t->base = appended(t);
    if (!(t->dir = strdup(o->dir)))
        goto fail_dir;
    if (pthread_mutex_init(&t->lock, NULL) != 0)
        goto fail_lock;
    if (pthread_cond_init(&t->cond, NULL) != 0)
        goto fail_cond;
    if (pthread_mutex_init(&t->run_lock, NULL) != 0)
        goto fail_run_lock;
    if (pthread_create(&t->thread, NULL, taker_main, t) != 0)
        goto fail_thread;
    *ret_taker = t;
    return PS_STATUS_OK;
fail_thread:
    pthread_mutex_destroy(&t->run_lock);
fail_run_lock:
    pthread_cond_destroy(&t->cond);
fail_cond:
    pthread_mutex_destroy(&t->lock);
fail_lock:
    free(t->dir);
fail_dir:
    free(t);
    return PS_STATUS_NO_MEMORY;
}

ps_status snapshot_taker_take_now(snapshot_taker *t, snapshot_info *ret_info, char *err,
                                  size_t err_len) {
    pthread_mutex_lock(&t->run_lock);
    ps_status st = take_locked(t, ret_info, err, err_len);
    pthread_mutex_unlock(&t->run_lock);
    return st;
}

void snapshot_taker_destroy(snapshot_taker *t) {
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->run_lock);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t->dir);
    free(t);
}

void snapshot_taker_get_stats(snapshot_taker *t, snapshot_taker_stats *ret_stats) {
    ret_stats->taken = atomic_load(&t->taken);
    ret_stats->failed = atomic_load(&t->failed);
    ret_stats->last_lsn = atomic_load(&t->last_lsn);
}
