/* journal.h: what the chunk store writes to the shard's write-ahead log (wal.h), and
 * how a restart replays it: a record per push (its op, optimizer, flags, keys,
 * lengths, names and values, as received) and per delete (its keys).
 *
 * Why it is built this way: the store appends a push's record under its write lock,
 * after the push passed every check and before it changes anything, so records are in
 * the order pushes were applied, and a push the log refuses (a full disk) is refused
 * whole. The handler then waits until the record is durable before it answers, so an
 * acknowledged push is on disk. Replay runs each record through the same prepare and
 * apply as a live push (an optimizer step over the same state and gradient gives the
 * same result), with new sequence numbers: the restarted shard's sequence starts at the
 * wall clock, past every version it gave before, and it has a new incarnation, so
 * replicas re-pull what they hold. Sparse rows: a record per PushRows (model, table,
 * spec, op, optimizer, ids, values); pulls are not written (the rows they make are the
 * deterministic initial ones).
 *
 * Record payloads are little-endian; this code assumes a little-endian host (checked at
 * compile time).
 */
#ifndef PS_SHARD_JOURNAL_H
#define PS_SHARD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "dedup.h"
#include "row_store.h"
#include "store.h"
#include "wal.h"

#define JOURNAL_TYPE_PUSH 1
#define JOURNAL_TYPE_DELETE 2
#define JOURNAL_TYPE_ROWS 3
/* A request id and the keys it applied, with no change: what a backup synced with
 * images must remember of the changes the images hold (dedup.h), so that a retry
 * after a failover applies them once. Payload: u8 format, 3 zero bytes, u32 n, u64
 * id, n u64 keys. */
#define JOURNAL_TYPE_DEDUP 4
#define JOURNAL_DEDUP_HEAD 16
/* Keys one dedup record carries at most (a backup refuses more). */
#define JOURNAL_DEDUP_MAX_KEYS (1u << 22)

/* Rows a shard dropped (row_store_remove: rows a ring change moved away), so a restart
 * does not bring them back. Payload: u8 format, u8 0, u16 model length, u16 table
 * length, u16 0, u32 n, the model and table names, n u64 ids. */
#define JOURNAL_TYPE_ROWS_REMOVE 5
#define JOURNAL_ROWS_REMOVE_HEAD 12

/* What a replay writes into. */
typedef struct journal_target {
    store *chunks;
    row_store *rows;
    dedup *dedup;        /* where dedup records go (NULL: nowhere); what a copy marked look up
                            (journal_mark_look_up) applied already is looked up there */
    bool forward;        /* copies from a peer routed under an older ring: sent on by the keys'
                            primary now (store_push.forward) */
    uint64_t *forwarded; /* with forward: the largest position of a copy sent on (may be
                            NULL) */
    char *err;           /* why a store refused a record (which value is NaN, ...); may be NULL */
    size_t err_len;
} journal_target;

/* Marks an encoded push or rows record (its payload's first len bytes, at least its
 * head, in place) "look up": a backup applies only the keys its request did not apply
 * there before. For the copies a shard sends on of changes it got from the keys'
 * earlier primary (the old primary made them and may get them back), and of pushes
 * their clients sent again (a try before may have reached a backup that this one's
 * primary now overwrote, or not). */
void journal_mark_look_up(uint8_t type, uint8_t *payload, size_t len);

/* A dedup record's payload for request id's keys[0..n) into out, which holds
 * JOURNAL_DEDUP_HEAD + 8 n bytes; returns that length. */
size_t journal_encode_dedup(uint64_t id, size_t n, const uint64_t *keys, uint8_t *out);

/* The dedup records of what `requests` remembers at or before max_pos (dedup_export),
 * with only the keys accept(accept_arg, key) takes (accept NULL: all), a record per
 * request (or per JOURNAL_DEDUP_MAX_KEYS of its keys), each given to emit(arg, payload,
 * len), which stops them with a failure. What a snapshot and a backup's sync carry
 * after their images. NO_MEMORY (err set), or emit's failure. */
ps_status journal_dedup_records(dedup *requests, uint64_t max_pos,
                                bool (*accept)(void *accept_arg, uint64_t key), void *accept_arg,
                                ps_status (*emit)(void *arg, const uint8_t *payload, size_t len),
                                void *arg, char *err, size_t err_len);

/* A store_journal (store.h) and a row_journal (row_store.h) that append to w. */
store_journal journal_for(wal *w);
row_journal journal_rows_for(wal *w);

/* A record's bytes as parts (their concatenation), for writing it somewhere other than
 * the log: replication sends the same records to the other owners of the keys. The
 * parts point into the push (valid while it is) and into what this holds. */
typedef struct journal_encoded {
    uint8_t head[80];
    uint8_t *names;    /* malloc'd or NULL */
    uint8_t *gathered; /* malloc'd or NULL */
    struct iovec *iov; /* malloc'd, n_iov entries */
    int n_iov;
    size_t len; /* bytes in all */
} journal_encoded;

ps_status journal_encode_push(const store_push *push, journal_encoded *ret_encoded);
ps_status journal_encode_rows(const row_push *push, journal_encoded *ret_encoded);
ps_status journal_encode_delete(size_t n, const uint64_t *keys, journal_encoded *ret_encoded);
ps_status journal_encode_rows_remove(const char *model, const char *table, size_t n,
                                     const uint64_t *ids, journal_encoded *ret_encoded);
void journal_encoded_free(journal_encoded *encoded); /* accepts NULL; clears it */

/* Applies one record to the target's stores through the same prepare and apply as a
 * live push. from_peer marks a copy received from the keys' primary (replication): it
 * is journaled here (with a journal set) but not sent on. *ret_lsn (may be NULL) gets
 * the LSN of the record this store journaled for it (0 without a journal). A record the
 * stores refuse leaves their reason in target->err ("" for a record that does not
 * parse: the status says it). */
ps_status journal_apply(const journal_target *target, uint8_t type, const void *payload, size_t len,
                        bool from_peer, uint64_t *ret_lsn);
/* The same for a record whose len bytes lie in pieces[0..n_pieces) (as a batch of them
 * arrived: repl_frames.h). A push's values are read where they lie (only its head,
 * keys, lengths and names are copied); other records are copied into one buffer. */
ps_status journal_apply_pieces(const journal_target *target, uint8_t type, const ps_bytes *pieces,
                               size_t n_pieces, size_t len, bool from_peer, uint64_t *ret_lsn);

/* The request id a push or rows record carries, and its keys (rows: their keys,
 * ps_key_row_in), malloc'd into *ret_keys (free it); id 0 and no keys for a record
 * without one (or of another type). PARSE, NO_MEMORY. */
ps_status journal_request_of(uint8_t type, const void *payload, size_t len, uint64_t *ret_id,
                             uint64_t **ret_keys, size_t *ret_n);

/* A wal_replay_fn (wal.h): applies a record to the journal_target given as arg. PARSE for a
 * record that does not decode; the store's status for one it refuses (a replayed push
 * never should be: it passed the same checks when it was logged). */
ps_status journal_replay(void *store_arg, uint8_t type, uint64_t lsn, const void *payload,
                         size_t len);

#endif
