/* image_stores.h: the stores' side of image.h: how the chunk store (store_image.c) and
 * the row store (row_store_image.c) pin their data for an export and install images.
 * Only image.c and the stores' tests call these; everything else uses image.h.
 *
 * Why it is built this way: a point-in-time export must hold both stores at once (see
 * image.h), yet neither store may know the other. So each pin takes its store's locks
 * and, while holding them, calls a `held` function the caller gives: image.c nests the
 * row store's pin inside the chunk store's, and reads the position innermost, with
 * every lock held. A pin then lets go of its locks and is read without them.
 */
#ifndef PS_SHARD_IMAGE_STORES_H
#define PS_SHARD_IMAGE_STORES_H

#include "image.h"

typedef bool (*image_accept_fn)(void *arg, uint64_t key);
typedef ps_status (*image_held_fn)(void *arg);

/* ------------------------------------------------------------------ chunks --- */

typedef struct store_pin store_pin;

/* What a chunk pin saw. */
typedef struct store_pin_info {
    uint64_t seq;         /* the store's last seq */
    uint64_t max_version; /* the largest version among the chunks pinned (0: none) */
    uint64_t chunks;      /* chunks pinned */
    uint64_t bytes;       /* their value and optimizer-state bytes */
} store_pin_info;

/* Takes the store's write lock, calls held(held_arg) (NULL: none; a failure pins
 * nothing and is returned), pins every chunk `accept` (NULL: all) takes, and lets go.
 * NO_MEMORY: nothing pinned. */
ps_status store_pin_create(store *s, image_accept_fn accept, void *accept_arg, image_held_fn held,
                           void *held_arg, store_pin **ret_pin, store_pin_info *ret_info);
/* Calls fn on each pinned chunk in turn, without any lock, releasing each chunk's blocks
 * once it was visited; stops at the first status other than OK and returns it. */
ps_status store_pin_visit(store_pin *pin, ps_status (*fn)(void *arg, const image_chunk *chunk),
                          void *arg);
void store_pin_destroy(store_pin *pin); /* accepts NULL */

/* image_install_chunks (image.h) on the chunk store. */
ps_status store_install(store *s, size_t n, const image_chunk *chunks, image_journal_fn journal,
                        void *journal_arg, uint64_t *ret_lsn, char *err, size_t err_len);

/* ------------------------------------------------------------------ rows --- */

typedef struct row_store_pin row_store_pin;

/* Waits for any other export of this row store to end (call it before taking any
 * other store's lock) and makes an empty pin; the next export waits until it is
 * destroyed, by the same thread. NO_MEMORY. */
ps_status row_store_pin_create(row_store *rs, row_store_pin **ret_pin);
/* Takes the list lock and every table's write lock, calls held(held_arg) (NULL: none; a
 * failure pins nothing and is returned), pins every table (row_table_pin) and lets go.
 * *ret_tables (may be NULL) gets the tables pinned. NO_MEMORY: nothing pinned. Once. */
ps_status row_store_pin_take(row_store_pin *pin, image_held_fn held, void *held_arg,
                             uint64_t *ret_tables);
/* Calls fn with the pinned rows `accept` (NULL: all) takes on their key
 * (ps_key_row(model, table, id)), table after table, in batches of at most
 * IMAGE_EXPORT_ROWS_BYTES; each table is unpinned once done. Stops at the first
 * failure (fn's, or NO_MEMORY) and returns it. *ret_rows gets the rows visited. */
ps_status row_store_pin_visit(row_store_pin *pin, image_accept_fn accept, void *accept_arg,
                              ps_status (*fn)(void *arg, const image_rows *rows), void *arg,
                              uint64_t *ret_rows);
/* Unpins what is still pinned and lets the next export run. Accepts NULL. */
void row_store_pin_destroy(row_store_pin *pin);

/* image_install_rows (image.h) on the row store. */
ps_status row_store_install(row_store *rs, const image_rows *rows, image_journal_fn journal,
                            void *journal_arg, uint64_t *ret_lsn, char *err, size_t err_len);

#endif
