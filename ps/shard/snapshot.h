/* snapshot.h: snapshots of a shard's stores in its data directory, which bound how much
 * of the write-ahead log (wal.h) a restart replays: writing one, taking them in a
 * background thread as the log grows, and recovery (the newest snapshot, then the log
 * records after it).
 *
 * Why it equals the state after exactly the records up to its LSN: a snapshot is an
 * image_export (image.h) whose position is wal_last_lsn, read while the chunk store and
 * every table are write-locked. Every record is appended under one of those locks after
 * its push passed its checks, and the push is applied before that lock is let go; so at
 * that moment every record up to the LSN is applied and none after it is. The export
 * then reads the blocks and slabs pinned at that moment (copy on write), while pushes go
 * on; the file is streamed out a record at a time (memory: one record and a 1 MiB
 * buffer, besides what image.h says an export pins).
 *
 * Files in the data directory, beside the log's segments:
 *   snap-<LSN, 20 digits>.snap   a complete snapshot: the state after records 1..LSN
 *   snap-<LSN>.snap.tmp          one being written (never complete: ignored, and deleted
 *                                by the next snapshot written)
 * A snapshot is written under the .tmp name, fsynced, renamed, and the directory fsynced;
 * only then are older snapshots deleted and wal_drop_before(LSN + 1) frees the segments
 * it covers. Before the rename, the log is waited for until record LSN is durable (per its
 * --fsync mode): the LSN is the last record appended, which the log's flusher may not have
 * written yet, and a snapshot ahead of the log on disk made the next start refuse the
 * directory. So a crash at any point leaves the previous snapshot and the log that follows
 * it, or the new one.
 *
 * Format (little-endian). A 64-byte header:
 *    0  8  magic "PSSNAP01"        8  4  format SNAPSHOT_FORMAT    12  4  reserved, 0
 *   16  8  lsn   24  8  the chunk store's seq   32  8  largest chunk version
 *   40  8  chunks   48  8  wall clock ms when taken
 *   56  8  checksum: XXH3-64 of bytes 0..56
 * then frames, each: u32 magic "PSSF", u32 kind (1: an image record, 2: the end, 3: request
 * ids), u64 len (at most IMAGE_MAX_RECORD_BYTES), u64 checksum (XXH3-64 of bytes 4..16 of the
 * frame then the payload), then len payload bytes (read into an aligned buffer to decode). Image
 * frames hold one record of image.h; request-id frames (format 2 on) one request and keys it
 * applied at or before the LSN, as a JOURNAL_TYPE_DEDUP record (journal_encode_dedup): without
 * them a restart forgot the requests whose log records the snapshot let go, and a retry of one
 * was applied twice. The end frame (32 bytes) holds the counts of frames before it (of both
 * kinds), chunks, rows and tables, and nothing may follow it. A snapshot with no request id
 * is written as format 1 (what builds before them read: a rollback keeps its data); format
 * 1 files are read.
 *
 * Recovery (snapshot_recover): .tmp files are ignored; the snapshot with the largest LSN
 * is loaded, and it must be whole: a bad header, frame, checksum, record, count or a
 * missing end refuses the start with PARSE naming the file and offset. (An older
 * snapshot is not tried: the log it would need was dropped when the newer one was
 * written. An operator who moves the bad file away gets the next older one, and the start
 * is still refused unless the log reaches back to it.) Then the log is opened; records
 * up to the snapshot's LSN are skipped, the others replayed; a log that does not continue
 * from the snapshot (its first record after the LSN + 1, or its last before the LSN)
 * refuses the start (FAILED_PRECONDITION); so does a log that starts after LSN 1 with no
 * snapshot at all. Versions never go backwards: the caller reads the newest snapshot's
 * header first (snapshot_newest) and starts its seqs past its largest version (and past
 * the wall clock) before recovering.
 */
#ifndef PS_SHARD_SNAPSHOT_H
#define PS_SHARD_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "image.h"
#include "status.h"
#include "wal.h"

#define SNAPSHOT_FORMAT 2 /* written with request ids (else 1); 1 and 2 are read */
#define SNAPSHOT_FORMAT_OLDEST 1
#define SNAPSHOT_HEADER_BYTES 64u
#define SNAPSHOT_FRAME_HEAD_BYTES 24u
#define SNAPSHOT_END_BYTES 32u
#define SNAPSHOT_BUFFER_BYTES (1u << 20)          /* the writer's buffer */
#define SNAPSHOT_DEFAULT_LOG_BYTES (256ull << 20) /* --snapshot-log-mb */
#define SNAPSHOT_CHECK_MS 100                     /* how often the thread looks at the log */
#define SNAPSHOT_MAX_PATH 4096
#define SNAPSHOT_MIN_SEGMENT_BYTES (64u << 10) /* the smallest log segment it asks for */

/* What a snapshot holds, from its header and end frame. */
typedef struct snapshot_info {
    char path[SNAPSHOT_MAX_PATH]; /* the file */
    uint32_t format;              /* SNAPSHOT_FORMAT_OLDEST..SNAPSHOT_FORMAT (read ones) */
    uint64_t lsn;                 /* the state after log records 1..lsn */
    uint64_t seq;                 /* the chunk store's seq then */
    uint64_t max_version;         /* the largest chunk version */
    uint64_t chunks, rows, tables;
    uint64_t bytes;     /* the file's size */
    int64_t wall_ms;    /* when it was taken */
    int64_t elapsed_ms; /* how long writing or loading it took */
} snapshot_info;

/* The request ids a snapshot keeps: what `dedup` remembers at or before its LSN. A
 * journal that appends a record before it remembers the record's request (a backup's
 * dedup records) gives `settle`, which returns once every record appended so far is
 * remembered (the shard: its journal lock taken and let go); NULL: none needed. */
typedef struct snapshot_requests {
    dedup *dedup;
    void (*settle)(void *arg);
    void *settle_arg;
} snapshot_requests;

/* Writes a snapshot of the stores, and of the request ids (requests may be NULL: none),
 * into dir as the file comment says, then deletes older snapshots and frees the log
 * segments it covers. IO (err names the file and what failed, or the log's failure; the
 * .tmp file is removed), NO_MEMORY. ret_info may be NULL. */
ps_status snapshot_write(const char *dir, store *chunks, row_store *rows,
                         const snapshot_requests *requests, wal *w, snapshot_info *ret_info,
                         char *err, size_t err_len);

/* Reads and checks a whole snapshot file, installing each record into target (its
 * journal should be NULL) and each request id into requests (dedup_record at position
 * 0); either may be NULL (both: only check it). PARSE (err names the file and offset),
 * IO, NO_MEMORY, or an install's failure. ret_info may be NULL. */
ps_status snapshot_load(const char *path, const image_target *target, dedup *requests,
                        snapshot_info *ret_info, char *err, size_t err_len);

/* The newest complete snapshot in dir (.tmp files are not): *ret_found false when there
 * is none; otherwise ret_info gets its header (lsn, seq, max_version, chunks, path).
 * PARSE when that file's header is bad; IO. */
ps_status snapshot_newest(const char *dir, bool *ret_found, snapshot_info *ret_info, char *err,
                          size_t err_len);

/* ------------------------------------------------------------------ recovery --- */

typedef struct snapshot_recover_opts {
    wal_opts wal;        /* the log to open (its replay fields are set here) */
    image_target target; /* where the snapshot and the records go (journal NULL) */
    dedup *requests;     /* where the snapshot's request ids go (may be NULL) */
    /* Applies a log record other than an image record (journal_replay). */
    wal_replay_fn replay;
    void *replay_arg;
    /* May be NULL: called instead of replay for each record still in the log that the
     * snapshot already holds (not to be applied), for what a replay remembers besides
     * the stores (e.g. the request ids a record carries). */
    wal_replay_fn skipped;
    void *skipped_arg;
} snapshot_recover_opts;

typedef struct snapshot_recovery {
    bool loaded;        /* a snapshot was loaded */
    snapshot_info snap; /* which (when loaded) */
    wal_recovery wal;   /* what the log's recovery found */
    uint64_t skipped;   /* log records the snapshot already held */
    uint64_t replayed;  /* records replayed after it */
    uint64_t log_bytes; /* their payload bytes (the log since the snapshot) */
} snapshot_recovery;

/* Loads the newest snapshot and replays the log after it; *ret_wal is the open log.
 * On failure nothing is returned and err says why (see the file comment). */
ps_status snapshot_recover(const snapshot_recover_opts *opts, snapshot_recovery *ret_rec,
                           wal **ret_wal, char *err, size_t err_len);

/* ------------------------------------------------------------------ the thread --- */

typedef struct snapshot_taker snapshot_taker;

/* What the thread did, for the program's log (called on the thread). */
typedef void (*snapshot_event_fn)(void *arg, ps_status st, const snapshot_info *info,
                                  const char *err);

typedef struct snapshot_taker_opts {
    const char *dir; /* the data directory (copied) */
    store *chunks;   /* the stores (not owned) */
    row_store *rows;
    snapshot_requests requests; /* request ids kept in each snapshot (dedup NULL: none) */
    wal *wal;                   /* the open log (not owned; outlives the taker) */
    uint64_t log_bytes;         /* take one once the log grew this much since the last; 0 =
                                   SNAPSHOT_DEFAULT_LOG_BYTES */
    uint64_t log_since;         /* log bytes already there since the last snapshot (replayed) */
    uint64_t last_lsn;          /* the LSN the newest snapshot holds (0: none) */
    int check_ms;               /* 0 = SNAPSHOT_CHECK_MS */
    snapshot_event_fn on_event; /* may be NULL */
    void *on_event_arg;
} snapshot_taker_opts;

/* The log segment size for a trigger of log_bytes (0: the default): a quarter of it,
 * within SNAPSHOT_MIN_SEGMENT_BYTES..WAL_DEFAULT_SEGMENT_BYTES, so that a snapshot can
 * free most of the log it covers (the log drops whole segments), and the log on disk
 * stays below about log_bytes plus a segment or two. */
uint64_t snapshot_segment_bytes(uint64_t log_bytes);

/* Starts the thread. NO_MEMORY, INVALID_ARGUMENT. */
ps_status snapshot_taker_create(const snapshot_taker_opts *opts, snapshot_taker **ret_taker);
/* Takes a snapshot now, on the caller's thread, when the log holds records past the last
 * one (clean shutdown: call once nothing pushes any more). The thread's snapshot in
 * progress ends first. */
ps_status snapshot_taker_take_now(snapshot_taker *taker, snapshot_info *ret_info, char *err,
                                  size_t err_len);
/* Stops the thread (waiting for a snapshot in progress). Accepts NULL. */
void snapshot_taker_destroy(snapshot_taker *taker);

typedef struct snapshot_taker_stats {
    uint64_t taken;    /* snapshots written */
    uint64_t failed;   /* attempts that failed */
    uint64_t last_lsn; /* the LSN the newest holds */
} snapshot_taker_stats;

void snapshot_taker_get_stats(snapshot_taker *taker, snapshot_taker_stats *ret_stats);

#endif
