/* wal.h: the shard's write-ahead log: an append-only, checksummed, segmented log of
 * typed records with group commit, and its recovery.
 *
 * Why it is built this way: every push must be durable before it is acknowledged,
 * without one fsync per push and without slowing the pushing thread down. An append
 * only reserves space in an in-memory buffer under a short lock (an LSN and an offset),
 * then copies and checksums the record outside the lock: no malloc, no syscall. One
 * flusher thread swaps the full buffer for the empty one (double buffering), writes it
 * with one write() per segment it touches and fsyncs, so every record appended while
 * the previous fsync ran shares the next one (group commit). Callers that must not
 * acknowledge before the disk has the record call wal_wait.
 *
 * Files (the format is in wal_format.h): a directory of segments named
 * wal-<LSN of the first record, 20 digits>.log, each up to segment_bytes; a record
 * that does not fit starts the next segment (a record larger than segment_bytes has a
 * segment of its own). LSNs are 1, 2, 3... (or from opts.start_lsn in an empty
 * directory), one per record, contiguous across segments and restarts: the last
 * segment is never deleted, and its name keeps the next LSN even when it is empty.
 *
 * Durability modes (what wal_wait waits for):
 *   WAL_FSYNC_ALWAYS  the record is written and fsynced. Never waits on purpose: the
 *                     flusher starts the next fsync as soon as the previous one ends,
 *                     with everything appended meanwhile.
 *   WAL_FSYNC_GROUP   the default: written and fsynced, fsyncs started at most once
 *                     every group_ms (a record appended after a quiet spell is synced
 *                     at once). Between fsyncs the flusher writes without syncing when
 *                     half the buffer is used, so appenders do not stall.
 *   WAL_FSYNC_NONE    written to the kernel (survives kill -9, not a power loss).
 * A finished segment is fsynced when the next one starts, and a new segment's
 * directory entry when it is created (modes ALWAYS and GROUP): one or two fsyncs per
 * segment_bytes beyond the group commits.
 *
 * Recovery (wal_open, before anything else): every segment is checked first, then
 * replayed, so a log that is refused replays nothing. A record is good when its magic,
 * reserved bytes, length (within the file and WAL_MAX_PAYLOAD_BYTES), checksum and LSN
 * (the one after the previous record; the first of a segment the one its name says)
 * all hold. At the first bad record of the LAST segment:
 *   - when no good record (any LSN) starts anywhere after it in that file, it is a torn
 *     tail (a write cut short by a crash): the file is truncated to the last good
 *     record and fsynced, and ret_rec says how many bytes were cut, where;
 *   - when a good record starts after it, it is corruption: PS_STATUS_PARSE, naming
 *     the file and the offset of the bad record.
 * A bad record in an earlier segment, a missing segment (a gap in LSNs), or a good
 * checksum over an unexpected LSN is PS_STATUS_PARSE too. Never replayed, never
 * silently dropped. (After a power loss in mode GROUP, pages written but not yet synced
 * can reach the disk out of order and leave a hole before good records; those records
 * were never reported durable, but the rule above still refuses the log: an operator
 * who accepts that truncates the file at the reported offset.)
 *
 * After a failed write or fsync (a full disk, an I/O error) the log is failed for
 * good: every later append and every wait for an LSN not durable before the failure
 * return PS_STATUS_IO, and wal_failed gives the reason ("disk full" for ENOSPC).
 * Nothing that is not on disk is ever reported durable; the flusher also truncates the
 * current segment back to what was durable (best effort), so a restart replays what
 * was acknowledged. A record whose wait failed may still be replayed after a restart
 * when that truncate failed: its outcome was unknown.
 *
 * Thread-safety: wal_append, wal_appendv, wal_wait, wal_last_lsn, wal_durable_lsn,
 * wal_failed, wal_stats_get and wal_drop_before may be called from any thread at any
 * time between wal_open and wal_close; wal_close when no other call is in progress.
 */
#ifndef PS_SHARD_WAL_H
#define PS_SHARD_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "status.h"

/* Limits and defaults (every one checked by wal_open / wal_append). */
#define WAL_MAX_PAYLOAD_BYTES (256u << 20)      /* one record's payload */
#define WAL_DEFAULT_SEGMENT_BYTES (64ull << 20) /* a segment's size */
#define WAL_MIN_SEGMENT_BYTES 512ull            /* tests use tiny segments */
#define WAL_MAX_SEGMENT_BYTES (4ull << 30)      /* offsets stay well in range */
#define WAL_DEFAULT_BUFFER_BYTES (8u << 20)     /* each of the two buffers */
#define WAL_MIN_BUFFER_BYTES 4096u              /* a larger record grows one */
#define WAL_MAX_BUFFER_BYTES (1u << 30)         /* each of the two buffers */
#define WAL_DEFAULT_GROUP_MS 5u                 /* group commit interval */
#define WAL_MAX_GROUP_MS 10000u                 /* group commit interval */
#define WAL_MAX_IOVCNT 1024                     /* pieces of one wal_appendv */
#define WAL_MAX_PATH 3072                       /* the directory's path */

typedef struct wal wal;

typedef enum wal_fsync {
    WAL_FSYNC_GROUP = 0, /* the default: group commit at most every group_ms */
    WAL_FSYNC_ALWAYS,    /* fsync before reporting durable, batching what arrives meanwhile */
    WAL_FSYNC_NONE,      /* durable = written to the kernel */
} wal_fsync;

/* Called once per good record, in LSN order, during wal_open; the payload is valid
 * only during the call. A status other than OK stops the replay, and wal_open returns
 * it (nothing on disk has been changed then). */
typedef ps_status (*wal_replay_fn)(void *arg, uint8_t type, uint64_t lsn, const void *payload,
                                   size_t len);

typedef struct wal_opts {
    const char *dir;        /* the log's directory, created when absent (required) */
    wal_fsync fsync;        /* durability mode (default GROUP) */
    uint32_t group_ms;      /* GROUP: least ms between fsync starts; 0 = default 5 */
    uint64_t segment_bytes; /* 0 = WAL_DEFAULT_SEGMENT_BYTES */
    uint32_t buffer_bytes;  /* each of the two append buffers; 0 = default */
    uint64_t start_lsn;     /* the first LSN when the directory holds no segment; 0 = 1 */
    wal_replay_fn replay;   /* may be NULL: the log is checked, not replayed */
    void *replay_arg;
} wal_opts;

/* What recovery found and did (for the caller to log). */
typedef struct wal_recovery {
    uint64_t records;    /* good records found (and replayed, when replay is set) */
    uint64_t first_lsn;  /* LSN of the first replayed record (0 when none) */
    uint64_t last_lsn;   /* LSN of the last good record (next append gets + 1) */
    uint32_t segments;   /* segment files found */
    uint64_t cut_bytes;  /* bytes of a torn tail cut off the last segment (0 = none) */
    uint64_t cut_offset; /* where the last segment was truncated */
    char cut_file[64];   /* the segment's file name, when cut_bytes > 0 */
} wal_recovery;

/* Counters, e.g. for metrics and tests. */
typedef struct wal_stats {
    uint64_t appends;       /* records appended */
    uint64_t append_bytes;  /* their bytes, headers included */
    uint64_t writes;        /* write() calls */
    uint64_t fsyncs;        /* fsync() calls: segments and the directory */
    uint64_t segments;      /* segments created since open */
    uint64_t buffer_stalls; /* appends that waited for a free buffer */
    uint64_t staged_bytes;  /* bytes of direct writes copied through the staging buffer */
} wal_stats;

/* Opens the log in opts->dir (locking it against a second opener), recovers it as the
 * file comment says (calling opts->replay for every good record), and starts the
 * flusher. Appends continue after the last good LSN. On failure nothing is returned,
 * err says why: INVALID_ARGUMENT (bad options), FAILED_PRECONDITION (the directory is
 * open elsewhere), PARSE (corruption: file and offset), IO, NO_MEMORY, or the replay
 * callback's status. ret_rec may be NULL. */
ps_status wal_open(const wal_opts *opts, wal_recovery *ret_rec, wal **ret_wal, char *err,
                   size_t err_len);

/* Flushes what was appended, fsyncs (every mode), stops the flusher, closes the files
 * and frees the log; accepts NULL. A failure here is not reported: call
 * wal_wait(w, wal_last_lsn(w)) first to know. */
void wal_close(wal *w);

/* Appends one record of `type` with a copy of `len` bytes (at most
 * WAL_MAX_PAYLOAD_BYTES, else INVALID_ARGUMENT) and gives its LSN. Does not wait for
 * the disk; blocks only while both buffers are full. IO when the log has failed. */
ps_status wal_append(wal *w, uint8_t type, const void *payload, size_t len, uint64_t *ret_lsn);

/* The same with the payload in `iovcnt` pieces (at most WAL_MAX_IOVCNT), concatenated:
 * a caller's header and a large value buffer go in with one copy, into the log buffer. */
ps_status wal_appendv(wal *w, uint8_t type, const struct iovec *iov, int iovcnt, uint64_t *ret_lsn);

/* Blocks until record `lsn` is durable per the mode: OK; IO when the log failed before
 * (wal_failed says why); INVALID_ARGUMENT for an LSN not appended yet. lsn 0 and LSNs
 * from before this open are durable already. */
ps_status wal_wait(wal *w, uint64_t lsn);

uint64_t wal_last_lsn(wal *w);    /* the last LSN appended (or recovered) */
uint64_t wal_durable_lsn(wal *w); /* every record up to it is durable per the mode */

/* True when a write or fsync failed; the reason (e.g. "wal: write of
 * wal-...log at offset 4096 failed: disk full (No space left on device)") goes to err. */
bool wal_failed(wal *w, char *err, size_t err_len);

void wal_stats_get(wal *w, wal_stats *ret_stats);

/* Deletes the segments whose records all have LSNs below `lsn` (what a snapshot taken
 * at lsn - 1 covers), oldest first, then fsyncs the directory. Never deletes the
 * segment being written. Segments a crash brings back are replayed again: the caller
 * skips records its snapshot already holds. IO when a delete fails. */
ps_status wal_drop_before(wal *w, uint64_t lsn);

/* ------------------------------------------------------------ fault injection --- */

typedef enum wal_fault_op {
    WAL_FAULT_WRITE = 0, /* the flusher's write() calls */
    WAL_FAULT_FSYNC,     /* its fsync() calls (segments and the directory) */
} wal_fault_op;

/* For tests: the nth `op` from now on fails with errno `err` (ENOSPC, EIO, ...); a
 * failing write first writes half its bytes, like a disk that fills up mid-write.
 * nth 0 cancels. */
void wal_fault_fail_io(wal *w, wal_fault_op op, uint32_t nth, int err);

#endif
