/* wal_internal.h: the write-ahead log's state, shared by its appenders (wal.c), its
 * life cycle (wal_open.c), its flusher thread (wal_flush.c) and its recovery
 * (wal_recover.c). Not for other modules.
 *
 * Why it is built this way: appenders and the flusher meet only under `mu`, for a few
 * field updates; the bytes are copied and written outside it. Two buffers: appenders
 * fill `active` while the flusher writes the other; a buffer the flusher has taken is
 * written only once every appender that reserved space in it has finished copying
 * (`pending` back to 0). The segment files belong to the flusher alone.
 */
#ifndef PS_SHARD_WAL_INTERNAL_H
#define PS_SHARD_WAL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "wal.h"
#include "wal_format.h"

#define WAL_DIRECT_ALIGN 4096u     /* offsets, lengths and memory of O_DIRECT writes */
#define WAL_STAGE_BYTES (1u << 20) /* a direct write at most (with the tail block) */

/* One append buffer: whole records, back to back, in LSN order. Its memory (wal_buf_*
 * in wal_segment.c) has room for a block before `data` and after `data + cap`, and
 * `data` sits where the file offset it will be written at falls in a block, so a direct
 * write goes straight from it (no staging copy). */
typedef struct wal_buf {
    uint8_t *mem;      /* the allocation, WAL_DIRECT_ALIGN-aligned */
    uint8_t *data;     /* where the records start, inside mem */
    size_t cap;        /* bytes for records (grown for a record larger than it) */
    size_t used;       /* bytes reserved */
    uint64_t last_lsn; /* LSN of the last record reserved in it; 0 when empty */
    uint32_t pending;  /* appenders still copying into it */
    bool flushing;     /* taken by the flusher (not `active`) */
} wal_buf;

struct wal {
    /* fixed at open */
    char dir[WAL_MAX_PATH];
    int dir_fd; /* held open and flock'ed: one wal per directory */
    wal_fsync mode;
    int64_t group_us;
    uint64_t segment_bytes;
    size_t buffer_bytes;

    pthread_mutex_t mu;        /* everything below up to the flusher's own fields */
    pthread_cond_t cv_flusher; /* wakes the flusher (CLOCK_MONOTONIC for timed waits) */
    pthread_cond_t cv_space;   /* an appender waits for room in `active` */
    pthread_cond_t cv_durable; /* wal_wait waits for durable_lsn */
    pthread_cond_t cv_pending; /* the flusher waits for copies into a taken buffer */
    wal_buf bufs[2];
    wal_buf *active;        /* appends go here */
    uint64_t last_lsn;      /* the last LSN handed out */
    uint64_t written_lsn;   /* every record up to it was written to the kernel */
    uint64_t durable_lsn;   /* every record up to it is durable per the mode */
    bool flusher_idle;      /* waiting untimed for data: the next append signals */
    bool flusher_timed;     /* waiting for the group deadline: signal when pressed */
    uint32_t space_waiters; /* appenders waiting for room */
    uint32_t grow_waiters;  /* appenders of records larger than a buffer, waiting */
    bool closing;           /* wal_close: flush, sync and stop */
    int failed_errno;       /* 0, or the errno of the write/fsync that failed */
    char failure[512];      /* the message for wal_failed */
    uint64_t appends, append_bytes, buffer_stalls; /* wal_stats */

    /* counters the flusher updates without the lock */
    atomic_uint_fast64_t writes, fsyncs, segments, staged_bytes;

    /* the flusher's own */
    pthread_t flusher;
    bool flusher_started;
    int seg_fd;                     /* the segment being written */
    uint64_t seg_first_lsn;         /* its name */
    uint64_t seg_off;               /* bytes in it */
    uint64_t seg_synced_off;        /* bytes of it durable per the mode (the cut on failure) */
    bool seg_direct;                /* written with O_DIRECT (wal_segment.c) */
    bool seg_padded;                /* zeros may follow seg_off in the file (direct writes) */
    uint8_t *stage;                 /* direct writes: an aligned WAL_STAGE_BYTES buffer, or NULL */
    uint8_t tail[WAL_DIRECT_ALIGN]; /* direct writes: the segment's last partial block */
    uint8_t behind[WAL_DIRECT_ALIGN]; /* in-place direct writes: the bytes the zeros hide */
    int64_t next_sync_us;             /* GROUP: no fsync starts before this (monotonic us) */

    /* wal_fault_fail_io: countdowns to the failing call and its errno */
    atomic_uint fault_write_countdown, fault_fsync_countdown;
    atomic_int fault_write_errno, fault_fsync_errno;
};

/* wal_segment.c: buffer memory. wal_buf_alloc gives an empty buffer of `cap` bytes
 * (replacing what b had; false when out of memory, b unchanged); wal_buf_align places
 * the empty buffer's records for a write at file offset `file_off`; wal_buf_free. */
bool wal_buf_alloc(wal_buf *b, size_t cap);
void wal_buf_align(wal_buf *b, uint64_t file_off);
void wal_buf_free(wal_buf *b);

/* wal_segment.c: the segment's bytes (the flusher's, and wal_open's before it starts).
 * Opens `name` in the log's directory with `flags` (O_WRONLY, maybe O_CREAT|O_EXCL),
 * with O_DIRECT in modes ALWAYS and GROUP where the file system takes it; the fd or -1
 * (errno set). */
int wal_segment_open(wal *w, const char *name, int flags);
/* Writes data[0..len) at seg_off and advances it; 0 or an errno, *ret_done the bytes
 * that were written (and are counted in seg_off) before a failure. */
int wal_segment_write(wal *w, const void *data, size_t len, size_t *ret_done);
/* The same for the first records of a buffer (data == b->data): a direct write goes
 * from the buffer itself when wal_buf_align placed it for seg_off (the block before
 * `data` and the bytes after the records are overwritten), else as wal_segment_write. */
int wal_segment_write_buf(wal *w, wal_buf *b, size_t len, size_t *ret_done);
/* Truncates the padding a direct write left after seg_off; 0 or an errno. */
int wal_segment_trim(wal *w);
/* After opening an existing segment at seg_off: reads its last partial block for the
 * next direct write; 0 or an errno. */
int wal_segment_load_tail(wal *w, const char *name);

/* wal_flush.c: the flusher thread's body (arg: the wal). */
void *wal_flusher_main(void *arg);
/* Creates segment `first_lsn` and makes it the one written (seg_* fields), fsyncing the
 * directory unless mode NONE. 0, or an errno with a message in msg. */
int wal_flush_segment_create(wal *w, uint64_t first_lsn, char *msg, size_t msg_len);

/* wal_recover.c: what recovery leaves for the appender. */
typedef struct wal_recover_result {
    uint64_t last_lsn;      /* the last good record's LSN (start_lsn - 1 when none) */
    bool have_segment;      /* a segment exists to continue in */
    uint64_t seg_first_lsn; /* the last segment's name */
    uint64_t seg_bytes;     /* its good bytes (after the cut) */
} wal_recover_result;

/* Checks and replays the log in opts->dir (open as dir_fd), cuts a torn tail. */
ps_status wal_recover(const wal_opts *opts, int dir_fd, wal_recovery *ret_rec,
                      wal_recover_result *ret_res, char *err, size_t err_len);

#endif
