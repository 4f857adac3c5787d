/* row_store.h: every sparse embedding table of one shard, behind the PullRows and
 * PushRows RPCs of proto/ps.proto (read those messages: they are the contract).
 *
 * A table is named by (model, table) and made on first touch with that request's
 * spec; every later request must carry the same spec (dim, init, scale, seed,
 * optimizer kind), else FAILED_PRECONDITION. Rows are made on first touch too (a pull
 * or a push), with table_spec_init_row's deterministic weights, so every process makes
 * the same initial row for an id; they are never deleted (yet).
 *
 * Why it is built this way: the storage of a table (row_table.h: an open-addressing
 * index and rows in slabs, nothing allocated per row) is kept apart from the rules
 * here: validation, locks, the memory quota, and pushes applied all or nothing, with
 * the discipline of the chunk store (store.h). Everything a push needs that does not
 * depend on the table's contents is checked and allocated before its lock is taken:
 * names, spec, lengths, unique ids, finite gradients, and the scratch the results are
 * computed into. Under the table's write lock the push makes its missing rows,
 * computes every row's new weights and state into that scratch, run by run (a run's
 * rows gathered plane by plane, weights then each state slot, so one optimizer_step
 * call covers the run whatever the dim; a run is at most 128 KiB, to stay in cache
 * until checked, and for Adam holds rows of one step count), checks that every result
 * is finite, and only then copies them all in. The store keeps the scratch of recent
 * requests for the next ones (ROW_STORE_SCRATCH_KEEP blocks of at most
 * ROW_STORE_SCRATCH_KEEP_BYTES), outside the quota.
 *
 * Locks: one rwlock per table (pulls share it; a pull that finds absent ids and every
 * push take it exclusively) and one for the list of tables, held only to find or add a
 * table. Tables are never removed, so a table found stays valid.
 *
 * Steps and state: a row's step count is the number of OPTIMIZE pushes it has had
 * (ASSIGN and ADD change the weights only). Until its first step a row holds the
 * default state of the table's optimizer kind (optim_spec_defaults); the first
 * OPTIMIZE push of a row starts from the state of that push's optimizer (e.g. its
 * Adagrad initial_accumulator).
 *
 * Memory: each new row reserves row_table_row_bytes (dim * (1 + slots) * 4 bytes of
 * floats, 8 of step count, 32 of index) from the quota before anything is made; the
 * store releases it all when destroyed.
 */
#ifndef PS_SHARD_ROW_STORE_H
#define PS_SHARD_ROW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quota.h"
#include "bytes.h"
#include "status.h"
#include "train_spec.h"

#define ROW_STORE_DEFAULT_MAX_TABLES 1024u /* (model, table) pairs per shard by default */
#define ROW_STORE_MAX_NAME_BYTES 255u      /* bytes of a model or table name, no NUL */

typedef struct row_store row_store;

typedef struct row_store_opts {
    quota *quota;        /* bytes of rows and state count here (not owned; may be NULL) */
    const char *name;    /* who holds the store, for messages ("shard-1"); NULL = "this shard" */
    uint32_t max_tables; /* distinct (model, table) pairs; 0 = ROW_STORE_DEFAULT_MAX_TABLES */
} row_store_opts;

ps_status row_store_create(const row_store_opts *opts, row_store **ret_store);
void row_store_destroy(row_store *rs); /* accepts NULL; releases every row's bytes */

/* Reads n rows (ids may repeat; n <= SHARD_MAX_KEYS_PER_REQUEST): out gets n * dim
 * floats in request order; state_out (may be NULL) n * slots * dim floats (each row's
 * slots one after the other); steps_out (may be NULL) n step counts. Rows not yet
 * present are made first; *ret_created (may be NULL) = how many. Failures, with err
 * saying why: INVALID_ARGUMENT (a name empty or longer than ROW_STORE_MAX_NAME_BYTES, a
 * bad spec, too many ids), FAILED_PRECONDITION (the table has another spec),
 * RESOURCE_EXHAUSTED (max_tables, the quota, or the rows a table holds at most),
 * NO_MEMORY; no row is made then. */
ps_status row_store_pull(row_store *rs, const char *model, const char *table,
                         const table_spec *spec, size_t n, const uint64_t *ids, float *out,
                         float *state_out, uint64_t *steps_out, uint64_t *ret_created, char *err,
                         size_t err_len);

typedef enum row_op {
    ROW_OP_ASSIGN = 0,   /* the values become the rows' weights (numbered as ps.PushOp) */
    ROW_OP_ADD = 1,      /* the values are added to the weights */
    ROW_OP_OPTIMIZE = 2, /* the values are gradients: one step of the push's optimizer */
} row_op;

/* One PushRows request. The arrays stay the caller's. */
typedef struct row_push {
    const char *model, *table;
    const table_spec *spec;
    row_op op;
    const optim_spec *optimizer; /* OPTIMIZE only: its kind must be spec->optimizer */
    size_t n;                    /* rows; at most SHARD_MAX_KEYS_PER_REQUEST */
    const uint64_t *ids;         /* n ids, no id twice */
    const uint64_t *keys;        /* NULL, or the n rows' ring keys (ps_key_row_in of the
                                    table's key and each id), when the caller computed
                                    them already: dedup and replication reuse them */
    const uint8_t *values;       /* n * dim little-endian float32, any alignment */
    size_t values_len;           /* bytes at values (or in pieces) */
    const ps_bytes *pieces;      /* or, when n_pieces > 0, the same bytes in pieces, as
                                    gRPC received them (a row may straddle two) */
    size_t n_pieces;
    bool skip_non_finite;    /* OPTIMIZE only: skip (and count) each row whose
                                gradient holds a NaN or infinity instead of refusing
                                the push; ASSIGN and ADD always refuse */
    uint64_t *ret_lsn;       /* with a journal: its record's LSN (may be NULL) */
    bool from_peer;          /* a copy from the rows' primary (replication): the
                                journal writes it but does not send it on... */
    bool forward;            /* ...unless this (see store_push) */
    uint64_t *ret_forwarded; /* as in store_push */
    uint64_t request_id;     /* the client's id of the push (dedup.h); 0: none */
    bool first_try;          /* the client sent none of these rows before under
                                request_id: they are not looked up (dedup_check) */
    uint64_t checked_epoch;  /* as in store_push */
} row_push;

/* Where applied pushes are written, so a restart can replay them (journal.h): called
 * under the table's write lock once the push passed every check, before any row
 * changes; a failure refuses the push (rows it made for it stay, at their initial
 * values: what a pull would have made). Pulls are not journaled: the rows they make are
 * the deterministic initial ones. */
typedef struct row_journal {
    ps_status (*push)(void *arg, const row_push *push, uint64_t *ret_lsn, char *err,
                      size_t err_len);
    /* row_store_remove's, the same way (may be NULL: removals are not written) */
    ps_status (*remove)(void *arg, const char *model, const char *table, size_t n,
                        const uint64_t *ids, uint64_t *ret_lsn, char *err, size_t err_len);
    void *arg;
} row_journal;

/* Starts journaling (after a replay, which must not write); NULL: stops. */
void row_store_set_journal(row_store *rs, const row_journal *journal);

/* Applies a push to every row or to none. *ret_created (may be NULL) gets the rows
 * made, *ret_skipped (may be NULL) the rows skipped for non-finite gradients (neither
 * made nor changed). Failures, err saying why: INVALID_ARGUMENT (as for pulls, and: an
 * unknown op, a bad optimizer or one of another kind than the table's, values_len not n
 * * dim * 4, an id twice, a non-finite value naming its row index and id, a result that
 * would not be finite naming the id), FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
 * NO_MEMORY. On failure no row changes; rows the push made before a result turned out
 * not finite stay, holding their initial values (what a pull would have made). */
ps_status row_store_push(row_store *rs, const row_push *p, uint64_t *ret_created,
                         uint64_t *ret_skipped, char *err, size_t err_len);

/* Drops the rows of ids[0..n) that table model/table holds (a shard collecting the rows
 * a ring change moved away: gc.h): written to the journal first, then removed, their
 * bytes given back to the quota; when removals have left many row numbers free the
 * table is compacted and its spare slabs freed. *ret_removed (may be NULL) gets how
 * many, *ret_lsn (may be NULL) the journal position (0: none). A table that does not
 * exist: nothing, OK. FAILED_PRECONDITION (nothing removed) while an export reads the
 * table: try again later. NO_MEMORY, or the journal's failure (nothing removed). */
ps_status row_store_remove(row_store *rs, const char *model, const char *table, size_t n,
                           const uint64_t *ids, uint64_t *ret_removed, uint64_t *ret_lsn, char *err,
                           size_t err_len);

/* Scans table number `index` (in the order tables were made) for garbage, as
 * row_table_scan does: ids whose row key (ps_key_row_in) `accept` takes, from index slot
 * *slot on, at most max_slots slots and max_ids ids, under the table's read lock.
 * model and table (ROW_STORE_MAX_NAME_BYTES + 1 each) get its names. *ret_done: the
 * table's last slot was looked at. NOT_FOUND: no table has that number. */
ps_status row_store_scan(row_store *rs, uint32_t index, uint64_t *slot, uint64_t max_slots,
                         bool (*accept)(void *arg, uint64_t key), void *accept_arg, uint64_t *ids,
                         size_t max_ids, size_t *ret_n, char *model, char *table, bool *ret_done);

/* One table's figures, for Health and psctl status. */
typedef struct row_table_stats {
    char model[ROW_STORE_MAX_NAME_BYTES + 1];
    char table[ROW_STORE_MAX_NAME_BYTES + 1];
    table_spec spec;
    uint64_t rows;  /* rows held */
    uint64_t bytes; /* bytes charged to the quota for them */
} row_table_stats;

/* Fills out[0..max) with the first tables in the order they were made; returns how many
 * tables the store holds (which may be more than max). */
size_t row_store_stats(row_store *rs, row_table_stats *out, size_t max);

/* Rows and bytes of every table together (each may be NULL). */
void row_store_totals(row_store *rs, uint64_t *ret_rows, uint64_t *ret_bytes);

/* Rows skipped for non-finite gradients since the store was made. */
uint64_t row_store_skipped(row_store *rs);

#endif
