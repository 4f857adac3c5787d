/* image.h: images of a shard's data: the complete state of dense chunks (key, name,
 * length, version, values, optimizer kind, steps and state) and of sparse rows (model,
 * table, table spec, id, weights, optimizer state, steps), taken out of the stores
 * (export), turned into self-describing little-endian records and back (encode,
 * decode), and put into the stores (install).
 *
 * What for: a snapshot file (snapshot.h) is a stream of these records; moving the key
 * ranges a new ring gives to another shard, and re-replicating a range to a new backup,
 * send the same records with the same export and install.
 *
 * Export is one point in time. image_export holds every store still for a moment (the
 * chunk store's write lock, the row store's list lock and every table's write lock, in
 * that order), asks the caller's position function where the stores stand (for a
 * snapshot: the write-ahead log's last LSN: every record is appended under one of those
 * locks after its checks and applied before the lock is let go, so the stores hold
 * exactly the records up to that LSN), and pins what it will read:
 *   - chunks: a reference to each accepted chunk's value block and optimizer-state block,
 *     and a copy of its name, key, length, version and steps. Blocks are never written
 *     while shared: a push that finds its chunk's block shared publishes a new block
 *     (store.h), so the pinned blocks keep the values of that moment;
 *   - rows: per table, its row count, its index and its slabs (row_table.h). A push that
 *     would write into a pinned slab first copies it aside for the export (copy on
 *     write, row_table_unshare); new rows go past the pinned count.
 * Then it lets go of every lock and calls the visitor outside them (a table's read
 * lock is taken for a bounded piece of rows at a time), so pushes go on while the
 * images are written out. The accept predicate, called on the chunk key, or on the row's
 * key ps_key_row(model, table, id), picks the keys (e.g. a key range of the ring).
 * Memory besides the stores: the pinned chunks' metadata, one batch of rows
 * (IMAGE_EXPORT_ROWS_BYTES), and the blocks and slabs that pushes replace while the
 * export runs (a chunk's old blocks go once it is visited, a table's copied slabs once
 * the table is done). One export runs at a time per row store (another waits for it).
 * A table without rows has no image (it is made again by the first request naming it).
 *
 * Install replaces a chunk or row whole (values, state, steps, version; a chunk's length
 * and name too), all or nothing per call, reserving the growth from the shard's quota,
 * with the same checks as a decoded record (lengths, finite values, unique ids). It does
 * not append to the update log and does not move the chunk store's seq: a caller that
 * installs versions from elsewhere keeps later seqs past them (a restart starts its seq
 * past the snapshot's largest version). With a journal function, the install is written
 * (IMAGE_JOURNAL_TYPE: the records themselves) under the store's lock, in order with
 * pushes, before anything changes; image_journal_replay applies such a record.
 *
 * Records (little-endian, no padding beyond what is listed; a record's arrays are 8-byte
 * aligned when the record is, so decoded arrays point into the caller's buffer, which
 * must be 8-byte aligned, as malloc's are; a carrier that puts records one after another
 * pads each to a multiple of 8). The checksum is the carrier's (the snapshot file, the
 * message).
 * A chunk record:
 *   off size field
 *     0  1  kind IMAGE_KIND_CHUNK      1  1  format IMAGE_FORMAT
 *     2  1  optimizer kind (OPTIM_*)   3  1  reserved, 0
 *     4  4  len: floats, 1..IMAGE_MAX_CHUNK_FLOATS
 *     8  8  key      16  8  version      24  8  steps (0 without state)
 *    32  4  state floats: optim_spec_slots(kind) * len
 *    36  2  name bytes, 0..IMAGE_MAX_NAME_BYTES        38  2  reserved, 0
 *    40     name, zero-padded to a multiple of 8; values (len f32); state (f32)
 * A rows record (rows of one table):
 *     0  1  kind IMAGE_KIND_ROWS       1  1  format IMAGE_FORMAT
 *     2  1  the table's optimizer kind 3  1  init kind (TABLE_INIT_*)
 *     4  4  dim, 1..TABLE_MAX_DIM      8  8  init seed
 *    16  4  init scale (f32)          20  4  n: rows, 1..IMAGE_MAX_ROWS
 *    24  2  model bytes, 1..ROW_STORE_MAX_NAME_BYTES
 *    26  2  table bytes, 1..ROW_STORE_MAX_NAME_BYTES   28  4  reserved, 0
 *    32     model then table, zero-padded together to a multiple of 8; n ids (u64, no id
 *           twice); n steps (u64); n * dim weights (f32); n * slots * dim state (f32,
 *           each row's slots one after the other)
 * A record is at most IMAGE_MAX_RECORD_BYTES, and its length is exactly what its
 * fields say. Values and state must be finite.
 */
#ifndef PS_SHARD_IMAGE_H
#define PS_SHARD_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "row_store.h"
#include "shard_limits.h"
#include "status.h"
#include "store.h"
#include "train_spec.h"

#define IMAGE_FORMAT 1
#define IMAGE_KIND_CHUNK 1
#define IMAGE_KIND_ROWS 2

/* Limits a decoder checks (an encoder refuses what would break them). */
#define IMAGE_MAX_NAME_BYTES SHARD_MAX_NAME_BYTES     /* a chunk's name */
#define IMAGE_MAX_CHUNK_FLOATS SHARD_MAX_CHUNK_FLOATS /* a chunk's length */
#define IMAGE_MAX_ROWS (64u * 1024u)                  /* rows in one record */
#define IMAGE_MAX_RECORD_BYTES (256u << 20)           /* one record */
#define IMAGE_CHUNK_HEAD_BYTES 40u
#define IMAGE_ROWS_HEAD_BYTES 32u
#define IMAGE_MAX_PIECES 8 /* iovecs of one encoded record */

/* Export: the rows of one visit, at most (at least one row). */
#define IMAGE_EXPORT_ROWS_BYTES (4u << 20)
/* Install: chunks in one call (one journal record). */
#define IMAGE_MAX_INSTALL_CHUNKS 256u

/* The write-ahead log record type of a journaled install (journal.h's are below it). */
#define IMAGE_JOURNAL_TYPE 16

/* One chunk's complete state. Arrays belong to whoever made the image. */
typedef struct image_chunk {
    uint64_t key;
    uint64_t version;    /* the seq of the update that last wrote it (its shard's) */
    uint32_t len;        /* floats */
    const char *name;    /* NUL-terminated; "" when none */
    const float *values; /* len floats */
    optim_kind kind;     /* the optimizer that made the state; OPTIM_NONE: none */
    uint64_t steps;      /* optimizer steps applied */
    const float *state;  /* optim_spec_slots(kind) * len floats (slot after slot); NULL
                            when kind is OPTIM_NONE */
} image_chunk;

/* Rows of one table. */
typedef struct image_rows {
    const char *model, *table; /* NUL-terminated names */
    table_spec spec;           /* the table's spec */
    size_t n;                  /* rows */
    const uint64_t *ids;       /* n ids, no id twice */
    const uint64_t *steps;     /* n step counts */
    const float *values;       /* n * dim weights */
    const float *state;        /* n * slots * dim (each row's slots one after the other);
                                  NULL when the spec's optimizer keeps none */
} image_rows;

/* A chunk's value and optimizer-state bytes: what progress counts of a move. */
uint64_t image_chunk_bytes(uint32_t len, optim_kind kind);

/* ------------------------------------------------------------------ export --- */

/* What an export found at its point in time. */
typedef struct image_export_info {
    uint64_t position;    /* what the position function answered (0 without one) */
    uint64_t seq;         /* the chunk store's last seq then */
    uint64_t max_version; /* the largest version among the chunks accepted (0: none) */
    uint64_t chunks;      /* chunks accepted */
    uint64_t chunk_bytes; /* their value and optimizer-state bytes (image_chunk_bytes) */
    uint64_t tables;      /* tables then */
    uint64_t rows;        /* rows accepted (counted as visited: final once it returns) */
} image_export_info;

typedef struct image_export_opts {
    store *chunks;   /* may be NULL */
    row_store *rows; /* may be NULL */
    /* Which keys to export (NULL: all). Called with the stores held: keep it cheap and
     * never touch the stores. */
    bool (*accept)(void *arg, uint64_t key);
    void *accept_arg;
    /* Called once with every store held still; what it answers is the point the images
     * stand for. NULL: 0. */
    uint64_t (*position)(void *arg);
    void *position_arg;
    /* The visitor, outside every lock: visit_begin once (info has all but rows), then
     * visit_chunk for each accepted chunk, then visit_rows for each table's accepted rows
     * in batches. A status other than OK stops the export, which returns it. Any may be
     * NULL. */
    ps_status (*visit_begin)(void *arg, const image_export_info *info);
    ps_status (*visit_chunk)(void *arg, const image_chunk *chunk);
    ps_status (*visit_rows)(void *arg, const image_rows *rows);
    void *arg;
} image_export_opts;

/* Exports as the file comment says. NO_MEMORY (err says for what), or the visitor's
 * status. ret_info (may be NULL) gets the figures, also on a visitor's failure. */
ps_status image_export(const image_export_opts *opts, image_export_info *ret_info, char *err,
                       size_t err_len);

/* ------------------------------------------------------------------ records --- */

/* An encoded record as pieces whose concatenation is the record: head holds the fixed
 * fields, names and padding; the other pieces point into the image's arrays. */
typedef struct image_encoded {
    uint8_t head[IMAGE_CHUNK_HEAD_BYTES + IMAGE_MAX_NAME_BYTES + 8];
    struct iovec iov[IMAGE_MAX_PIECES];
    int n_iov;
    size_t len; /* bytes in all */
} image_encoded;

/* INVALID_ARGUMENT (err says which field and limit) for an image a decoder would refuse
 * (finite values are not checked here: install checks them). */
ps_status image_encode_chunk(const image_chunk *chunk, image_encoded *ret_encoded, char *err,
                             size_t err_len);
ps_status image_encode_rows(const image_rows *rows, image_encoded *ret_encoded, char *err,
                            size_t err_len);
/* Copies the pieces into dst (encoded->len bytes). */
void image_encoded_copy(const image_encoded *encoded, uint8_t *dst);

/* A decoded record; the arrays point into the decoded buffer, the names are copied. */
typedef struct image_record {
    int kind;          /* IMAGE_KIND_CHUNK or IMAGE_KIND_ROWS */
    image_chunk chunk; /* kind CHUNK (chunk.name points to name) */
    image_rows rows;   /* kind ROWS (rows.model, rows.table point to model, table) */
    char name[IMAGE_MAX_NAME_BYTES + 1];
    char model[ROW_STORE_MAX_NAME_BYTES + 1];
    char table[ROW_STORE_MAX_NAME_BYTES + 1];
} image_record;

/* Decodes the record of exactly `len` bytes at buf (8-byte aligned). PARSE, err naming
 * the field, value and limit, for anything but a well-formed record within the limits:
 * kind, format, reserved bytes, lengths and counts, an optimizer or init kind, a spec,
 * names (no NUL inside), the total length. Values are not checked (install does). */
ps_status image_decode(const uint8_t *buf, size_t len, image_record *ret_record, char *err,
                       size_t err_len);

/* The length of the record starting at buf, read from its head, when at least
 * IMAGE_ROWS_HEAD_BYTES (chunk: IMAGE_CHUNK_HEAD_BYTES) are there: for carriers that
 * concatenate records. PARSE for an unknown kind or a length past the limit. */
ps_status image_record_len(const uint8_t *buf, size_t avail, uint64_t *ret_len);

/* ------------------------------------------------------------------ install --- */

/* Called under the store's (or table's) write lock once an install passed its checks,
 * before anything changes; a failure refuses the install. rec is the encoded records
 * (one per chunk, or one rows record). */
typedef ps_status (*image_journal_fn)(void *arg, const image_encoded *recs, size_t n,
                                      uint64_t *ret_lsn, char *err, size_t err_len);

/* Told the keys whose values an install replaced (rows: their keys, ps_keys_rows). */
typedef void (*image_replaced_fn)(void *arg, size_t n, const uint64_t *keys);

typedef struct image_target {
    store *chunks;
    row_store *rows;
    image_journal_fn journal; /* NULL: not journaled (a restart loading its snapshot) */
    void *journal_arg;
    image_replaced_fn replaced; /* NULL: nobody is told (a snapshot's load) */
    void *replaced_arg;
} image_target;

/* Installs n chunks (at most IMAGE_MAX_INSTALL_CHUNKS, no key twice): each replaces the
 * chunk of its key whole, or makes it. INVALID_ARGUMENT (a bad length, name, state size,
 * a non-finite value, a key twice: err names it), RESOURCE_EXHAUSTED (the quota),
 * NO_MEMORY, or the journal's failure: nothing changed then. *ret_lsn (may be NULL) gets
 * the journal record's LSN (0: none). */
ps_status image_install_chunks(const image_target *target, size_t n, const image_chunk *chunks,
                               uint64_t *ret_lsn, char *err, size_t err_len);

/* Installs rows of one table (made with the spec when absent; FAILED_PRECONDITION when
 * it has another): each replaces its row whole (weights, state, steps), or makes it.
 * INVALID_ARGUMENT (a bad spec, name, count, an id twice, a non-finite value),
 * RESOURCE_EXHAUSTED (the quota, the tables or rows a store holds), NO_MEMORY, or the
 * journal's failure: no row changed then (rows made for it stay at their initial values,
 * as a pull would make them). */
ps_status image_install_rows(const image_target *target, const image_rows *rows, uint64_t *ret_lsn,
                             char *err, size_t err_len);

/* Installs a decoded record (either kind). */
ps_status image_install_record(const image_target *target, const image_record *record,
                               uint64_t *ret_lsn, char *err, size_t err_len);

/* An image_journal_fn that appends one IMAGE_JOURNAL_TYPE record to the write-ahead log
 * given as arg (a wal *): u32 count, 4 zero bytes, then each record as a u64 length, its
 * bytes and zeros up to a multiple of 8 (so every record starts 8-byte aligned). */
ps_status image_journal_wal(void *wal_arg, const image_encoded *recs, size_t n, uint64_t *ret_lsn,
                            char *err, size_t err_len);

/* Applies an IMAGE_JOURNAL_TYPE record's payload (replay) without journaling it again.
 * PARSE for one that does not decode. A target without stores but with `replaced` only
 * tells it the record's keys (a record a snapshot holds already: what it replaced still
 * counts for the request ids replayed around it). */
ps_status image_journal_replay(const image_target *target, const void *payload, size_t len,
                               char *err, size_t err_len);

#endif
