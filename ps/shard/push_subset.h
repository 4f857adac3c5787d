/* push_subset.h: a push narrowed to some of its keys, its values sliced out of the
 * request as they lie (no copy): what one backup gets of a push (replicator), and what
 * is left of a retried push once the keys it already applied are taken out (dedup.h).
 * The subset's arrays are owned by a push_subset; the values stay the push's. The same
 * for a rows push (row_subset), whose rows' values, small, are gathered. */
#ifndef PS_SHARD_PUSH_SUBSET_H
#define PS_SHARD_PUSH_SUBSET_H

#include <stddef.h>
#include <stdint.h>

#include "row_store.h"
#include "status.h"
#include "store.h"

typedef struct push_subset {
    store_push push; /* the narrowed push */
    uint64_t *keys;
    uint32_t *lengths;
    const char **names;
    ps_bytes *pieces;
    uint32_t *slots; /* each key's place in the whole push (its version: store.h) */
} push_subset;

/* The push's keys at idx[0..m) (increasing indices). NO_MEMORY: *ret untouched. */
ps_status push_subset_make(const store_push *push, const uint32_t *idx, size_t m,
                           push_subset *ret_subset);
void push_subset_free(push_subset *subset); /* accepts NULL; clears it */
/* The push's keys whose skip[i] is false (what a retry, or a copy marked look up, has
 * left to apply). NO_MEMORY: *ret untouched. */
ps_status push_subset_skip(const store_push *push, const bool *skip, push_subset *ret_subset);

typedef struct row_subset {
    row_push push; /* the narrowed push (keys NULL: computed again where needed) */
    uint64_t *ids;
    uint8_t *values;
} row_subset;

/* The rows of p whose skip[i] is false, in order (p's values must hold n * dim floats).
 * NO_MEMORY: nothing to free. */
ps_status row_subset_make(const row_push *p, const bool *skip, row_subset *ret_subset);
void row_subset_free(row_subset *subset); /* accepts NULL; clears it */

#endif
