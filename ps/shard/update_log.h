/* update_log.h: the shard's bounded log of recent updates, which Subscribe streams
 * read in sequence-number order, and the reference-counted value blocks that the log
 * and the chunk store share.
 *
 * Why it is built this way: every applied update (one per key of a push) must reach
 * every subscriber in order, or the subscriber must be told to resync (pull again).
 * A push's entries are made together in one allocation (an update_log_batch) and
 * appended in one step under one lock. An entry does not copy its values: it holds a
 * reference to a value block (update_log_values), a float array that nobody writes
 * while others hold it: the very block the store published as the chunk's new values
 * (the store logs every push, ADD included, as what the chunk became). Entries are
 * reference-counted so a stream can hand one to the rpc layer without copying and without holding
 * the log's lock while it is sent; the log drops its own reference when it evicts the entry
 * (releasing its block at once unless a stream still sends it), and the batch's memory goes when
 * its last entry does.
 *
 * Memory bound: entries held count update_log_entry_bytes(len) each (the entry, its
 * block's header and its values, even when the block is also a live chunk's) and
 * stay within max_bytes (--log-mb); besides that the log keeps an index of one
 * pointer per entry it may hold, at most max_bytes / update_log_entry_bytes(1)
 * (about 1/12 of max_bytes). What it keeps alive beyond the chunks is thus at most
 * max_bytes, plus one push's entries whose batch still has a live entry, plus the
 * index. Appending never allocates and never fails (the store appends while it holds
 * its write lock, after the point of no return).
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

/* A reference-counted array of floats: a chunk's values, shared with the log entries
 * (and the Pull replies in flight) that read them. Written only while one reference
 * exists (before it is shared; the store adds in place only into a block that its
 * chunk alone holds); freed by its last reference. */
typedef struct update_log_values {
    atomic_int refs;
    uint32_t len; /* floats */
    uint64_t pad; /* keeps data 16-byte aligned */
    float data[];
} update_log_values;

/* A new block of `len` floats (uninitialized) with one reference, the caller's. */
ps_status update_log_values_create(uint32_t len, update_log_values **ret_values);
void update_log_values_ref(update_log_values *values);
/* Drops a reference (takes void * so it can be an rpc release). Accepts NULL. */
void update_log_values_unref(void *values);

typedef struct update_log_batch update_log_batch;

/* One applied update of one key. Fields are written once, before the entry is
 * appended, and only read afterwards. */
typedef struct update_log_entry {
    atomic_int refs;          /* the log holds one; each stream sending it one more */
    update_log_batch *batch;  /* the batch it was made in */
    uint64_t seq;             /* the update's sequence number */
    uint64_t key;             /* the chunk's key */
    uint64_t version;         /* the chunk's version after the update (== seq) */
    uint64_t prev_version;    /* the chunk's version before (0: the update created it) */
    update_log_op op;         /* ASSIGN or ADD */
    uint32_t len;             /* floats in values */
    const float *values;      /* block->data: the values (an ADD entry: the delta) */
    update_log_values *block; /* one reference, released when the entry's refs reach 0 */
} update_log_entry;

/* n entries made together (zeroed; the caller fills them, setting block/values/len with
 * update_log_entry_set), appended together with update_log_append. */
ps_status update_log_batch_create(size_t n, update_log_batch **ret_batch);
update_log_entry *update_log_batch_entry(update_log_batch *batch, size_t i);
/* For a batch that was not appended: releases every block and frees it. Accepts NULL. */
void update_log_batch_destroy(update_log_batch *batch);

/* Points an entry at `block` (len floats), taking a reference to it. */
void update_log_entry_set(update_log_entry *entry, update_log_values *block);
void update_log_entry_ref(update_log_entry *entry);
/* Drops a reference (takes void * so it can be an rpc_bytes_field release). Accepts
 * NULL. */
void update_log_entry_unref(void *entry);
/* Bytes an entry of `len` floats counts against the log's budget. */
uint64_t update_log_entry_bytes(uint32_t len);

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

/* Appends the first n entries of `batch`, whose seqs are last_seq+1, last_seq+2, ...
 * in order, and takes the batch (entries past n are released unused; the caller
 * keeps no hold on it), evicting the oldest entries to stay within the bounds (an
 * entry larger than the whole budget is still appended, alone). Never fails. */
void update_log_append(update_log *log, update_log_batch *batch, size_t n);

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
