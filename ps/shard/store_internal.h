/* store_internal.h: the chunk store's private layout, shared by store.c (the table,
 * reads, deletes, life cycle), store_prepare.c and store_batch.c (pushes: prepare and
 * apply). Nothing else includes it but test_store_delete.c, for white-box checks of
 * the table. */
#ifndef PS_SHARD_STORE_INTERNAL_H
#define PS_SHARD_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "quota.h"
#include "store.h"
#include "train_spec.h"
#include "update_log.h"

typedef struct store_chunk {
    uint64_t key;
    uint64_t version;          /* seq of the update that last wrote it */
    uint32_t len;              /* floats; never changes once created */
    char *name;                /* "model/tensor#chunk" when a pusher said, else NULL */
    update_log_values *values; /* len floats. Never written while anyone but this chunk
                                  holds it (log entries, Pull replies in flight): a
                                  push then publishes a new block instead */
    update_log_values *state;  /* optimizer state: optim_spec_slots(state_kind) * len floats,
                                  or NULL. Like values, never written once published (a step
                                  publishes a new block), so an export may hold it */
    uint64_t steps;            /* optimizer steps applied */
    optim_kind state_kind;     /* the optimizer that made the state; OPTIM_NONE: none yet */
} store_chunk;

/* Bytes a chunk holds: its values and its optimizer state. */
uint64_t store_chunk_bytes(const store_chunk *c);

struct store {
    pthread_rwlock_t lock;       /* pulls share it; apply takes it exclusively */
    store_chunk **slots;         /* open addressing, linear probing, no tombstones
                                    (deletes shift back); NULL = empty */
    size_t cap;                  /* power of two; count * 2 <= cap */
    size_t count;                /* chunks held */
    uint64_t bytes;              /* bytes held: values and optimizer state */
    quota *quota;                /* shared with the row store (or own_quota) */
    quota *own_quota;            /* made from store_opts.max_bytes when no quota given */
    uint64_t seq;                /* last applied update */
    uint64_t clock;              /* the largest chunk version given or taken: versions are
                                    not seqs, so that a backup keeps its primary's (a
                                    failover never sends a replica's versions back) */
    uint64_t skipped;            /* keys skipped for non-finite gradients */
    update_log *log;             /* not owned */
    char name[80];               /* "shard ID" (or "this shard"), for messages */
    atomic_uint fault_countdown; /* store_fault_fail_alloc: fail when it reaches 0 */
    store_journal journal;       /* where applied pushes and deletes are written */
};

/* The chunk with `key`, or NULL (lock held). */
store_chunk *store_table_get(const store *s, uint64_t key);
/* Inserts into a table with room (lock held; count + 1 fits): never allocates. */
void store_table_put(store *s, store_chunk *c);
/* A slot array of `cap` entries holding every chunk of s (lock held, any mode). */
void store_table_rehash(const store *s, store_chunk **slots, size_t cap);
/* The smallest power-of-two capacity that holds `count` chunks at half load. */
size_t store_table_cap_for(size_t count);

/* A prepared push (store_prepare.c makes it, store_batch.c applies it). */
struct store_batch {
    store_push push;              /* the request's arrays (not owned) */
    update_log_batch *log;        /* an entry per key not skipped; NULL once appended */
    update_log_values **blocks;   /* n: key i's values as pushed (one reference each);
                                     OPTIMIZE: the step's new weights after apply; NULL
                                     for a skipped key or once a chunk took it */
    update_log_values **replaced; /* n: the blocks apply replaced, released by destroy */
    store_chunk **fresh;          /* ASSIGN: new chunks (no values yet) for the keys that
                                     were absent at prepare, else NULL; unused ones freed */
    store_chunk **found;          /* n: the chunk each key had when applied (scratch) */
    char **names;                 /* NULL, or n copies of the names (NULL = none) */
    store_chunk **slots;          /* a bigger table prepared outside the lock, or NULL;
                                     after apply, the replaced table */
    size_t slots_cap;
    update_log_values **state_new; /* OPTIMIZE: n blocks for the new state (NULL for a
                                      skipped key); after apply, the replaced states;
                                      ASSIGN: after apply, the states it dropped */
    bool *skip;                    /* OPTIMIZE with skip_non_finite: keys skipped, or NULL */
    uint64_t skipped;              /* keys skipped */
    uint64_t lsn;                  /* its journal record, once applied (0: none) */
    bool applied;
};

/* Allocation wrappers that honour store_fault_fail_alloc. */
bool store_alloc_fails(store *s);
void *store_malloc(store *s, size_t size);
void *store_calloc(store *s, size_t n, size_t size);

void store_chunk_free(store_chunk *c); /* accepts NULL */

#endif
