/* update_log.h: the shard's bounded log of recent updates, which Subscribe streams
 * read in sequence-number order.
 *
 * Why it is built this way: every applied update (one per key of a push) must reach
 * every subscriber in order, or the subscriber must be told to resync (pull again).
 * Entries are reference-counted so a stream can hand one to the rpc layer without
 * copying its values and without holding the log's lock while it is sent; the log
 * drops its own reference when it evicts the entry, and the last reference frees it.
 * The log is bounded twice: by bytes (entries and their values) and by a count of
 * entries, both fixed at creation, so appending never allocates and never fails (the
 * store appends while it holds its write lock, after the point of no return).
 *
 * Sequence numbers are contiguous: an appended entry's seq is the last seq + 1. A
 * reader that asks for what the log no longer holds (evicted, or from before this
 * log started) gets UPDATE_LOG_READ_RESYNC. Thread-safe.
 */
#ifndef PS_SHARD_UPDATE_LOG_H
#define PS_SHARD_UPDATE_LOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* What an update did (same numbering as ps.PushOp). */
typedef enum update_log_op {
    UPDATE_LOG_OP_ASSIGN = 0, /* the values replaced the chunk (or created it) */
    UPDATE_LOG_OP_ADD = 1,    /* the values were added element-wise */
    /* A push op only, never in the log: the values are gradients for the push's
     * optimizer, and the store logs the step as the ASSIGN of the weights it made. */
    UPDATE_LOG_OP_OPTIMIZE = 2,
} update_log_op;

/* One applied update of one key. Fields are written once, before the entry is
 * appended, and only read afterwards. */
typedef struct update_log_entry {
    atomic_int refs;       /* the log holds one; each stream sending it one more */
    uint64_t seq;          /* the update's sequence number */
    uint64_t key;          /* the chunk's key */
    uint64_t version;      /* the chunk's version after the update (== seq) */
    uint64_t prev_version; /* the chunk's version before (0: the update created it) */
    update_log_op op;      /* ASSIGN or ADD */
    uint32_t len;          /* floats in values */
    float values[];        /* what the push carried: new values, or the delta of an ADD */
} update_log_entry;

typedef struct update_log update_log;

typedef struct update_log_opts {
    uint64_t max_bytes;   /* budget for entries and their values; 0 = 64 MiB */
    uint32_t max_entries; /* most entries held; 0 = SHARD_LOG_MAX_ENTRIES (never more than
                             fit in max_bytes) */
    uint64_t start_seq;   /* the last seq before the first entry (the next is start+1) */
} update_log_opts;

ps_status update_log_create(const update_log_opts *opts, update_log **ret_log);
/* Drops the log's references. Accepts NULL. */
void update_log_destroy(update_log *log);

/* A new entry for `len` floats with one reference (the caller's). */
ps_status update_log_entry_create(uint32_t len, update_log_entry **ret_entry);
void update_log_entry_ref(update_log_entry *entry);
/* Drops a reference (takes void * so it can be an rpc_bytes_field release). Accepts
 * NULL. */
void update_log_entry_unref(void *entry);
/* Bytes an entry counts against the log's budget. */
uint64_t update_log_entry_bytes(uint32_t len);

/* Appends n entries whose seqs are last_seq+1, last_seq+2, ... in order, taking the
 * caller's reference of each, evicting the oldest entries to stay within the bounds
 * (an entry larger than the whole budget is still appended, alone). Never fails. */
void update_log_append(update_log *log, update_log_entry *const *entries, size_t n);

typedef enum update_log_read_kind {
    UPDATE_LOG_READ_ENTRY = 0,  /* *ret_entry is the entry after `after_seq` (a reference) */
    UPDATE_LOG_READ_RESYNC = 1, /* the log cannot continue from after_seq: pull again */
    UPDATE_LOG_READ_IDLE = 2,   /* nothing newer arrived within wait_ms */
    UPDATE_LOG_READ_STOPPED = 3 /* update_log_stop was called */
} update_log_read_kind;

/* The entry with seq after_seq + 1, waiting up to wait_ms for it to be appended.
 * RESYNC when it was evicted or predates the log, or when after_seq is past the last
 * seq. *ret_last_seq (may be NULL) gets the log's last seq in every case. The caller
 * drops the entry's reference with update_log_entry_unref. */
update_log_read_kind update_log_read(update_log *log, uint64_t after_seq, int wait_ms,
                                     update_log_entry **ret_entry, uint64_t *ret_last_seq);

/* Wakes every reader with UPDATE_LOG_READ_STOPPED, now and from then on. */
void update_log_stop(update_log *log);

typedef struct update_log_stats {
    uint64_t last_seq;  /* seq of the last appended entry (start_seq before any) */
    uint64_t first_seq; /* seq of the oldest entry held; last_seq + 1 when empty */
    uint64_t entries;   /* entries held */
    uint64_t bytes;     /* bytes held (update_log_entry_bytes of each) */
} update_log_stats;

void update_log_get_stats(update_log *log, update_log_stats *ret_stats);

#endif
