/* row_store_internal.h: the row store's private layout, shared by row_store.c (tables,
 * row making, pulls, figures) and row_push.c (pushes). Nothing else includes it. */
#ifndef PS_SHARD_ROW_STORE_INTERNAL_H
#define PS_SHARD_ROW_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "row_store.h"
#include "row_table.h"

/* Scratch blocks kept for reuse between requests, and the largest kept: memory a shard
 * holds beside its rows, outside the quota (at most their product). */
#define ROW_STORE_SCRATCH_KEEP 2
#define ROW_STORE_SCRATCH_KEEP_BYTES (64u << 20)

/* One (model, table): never removed while the store lives. */
typedef struct row_store_table {
    pthread_rwlock_t lock; /* pulls, and pushes finding their rows, share it; row making
                              and pushes applying take it exclusively */
    row_table *rows;       /* the storage; its spec never changes */
    char model[ROW_STORE_MAX_NAME_BYTES + 1];
    char table[ROW_STORE_MAX_NAME_BYTES + 1];
} row_store_table;

struct row_store {
    pthread_rwlock_t lock;    /* guards tables and ntables (held briefly) */
    row_store_table **tables; /* max_tables entries, the first ntables used, in order made */
    uint32_t ntables;
    uint32_t max_tables;
    quota *quota;                                 /* not owned; may be NULL */
    uint64_t salt;                                /* every table's hash salt (row_table_hash) */
    _Atomic uint64_t skipped;                     /* rows skipped for non-finite gradients */
    pthread_mutex_t scratch_lock;                 /* guards the kept scratch blocks */
    void *scratch[ROW_STORE_SCRATCH_KEEP];        /* blocks kept for the next requests */
    size_t scratch_bytes[ROW_STORE_SCRATCH_KEEP]; /* their sizes (0: none kept) */
    char name[80];                                /* "shard-1" or "this shard", for messages */
    row_journal journal;                          /* set before serving; read-only after */
    pthread_mutex_t export_lock;                  /* held by the one export running
                                                     (row_store_pin_create to _destroy) */
};

/* A 64-byte aligned block of at least `bytes` for one request's scratch: a kept one
 * when one is big enough (its pages are already mapped, so a million-row push does not
 * fault in tens of megabytes again), else a new one; NULL when out of memory. */
void *row_store_scratch_take(row_store *rs, size_t bytes, size_t *ret_bytes);
/* Gives a block back: kept while fewer than ROW_STORE_SCRATCH_KEEP are and it is at most
 * ROW_STORE_SCRATCH_KEEP_BYTES, else freed. Accepts NULL. */
void row_store_scratch_give(row_store *rs, void *mem, size_t bytes);

/* The checks every request gets: names, spec, n <= SHARD_MAX_KEYS_PER_REQUEST. */
ps_status row_store_check_request(const char *model, const char *table, const table_spec *spec,
                                  size_t n, char *err, size_t err_len);

/* The table (model, table), made with `spec` if absent; FAILED_PRECONDITION when it
 * has another spec, RESOURCE_EXHAUSTED past max_tables, NO_MEMORY. */
ps_status row_store_table_get(row_store *rs, const char *model, const char *table,
                              const table_spec *spec, row_store_table **ret_table, char *err,
                              size_t err_len);

/* With e's write lock held: makes the rows of the ids whose rows[i] is ROW_TABLE_NONE
 * (`missing` of them; repeats allowed unless ids_unique), filling rows[i], after
 * reserving their bytes from the quota. RESOURCE_EXHAUSTED (quota, rows per table) or
 * NO_MEMORY: nothing made. *ret_made = rows made. */
ps_status row_store_make_rows(row_store *rs, row_store_table *e, size_t n, const uint64_t *ids,
                              const uint64_t *hashes, uint32_t *rows, size_t missing,
                              bool ids_unique, uint64_t *ret_made, char *err, size_t err_len);

#endif
