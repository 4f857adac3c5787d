/* bytes.h: bytes that lie in pieces, and a cursor that reads them front to back.
 *
 * Why it is here, in the base layer: gRPC hands a large message over in slices of
 * about 64 KiB, and the parts of the project that consume received bytes without
 * copying them first (the rpc layer's readers, the chunk store's pushes, a backup's
 * replicated records) all walk the same kind of piece list. One type and one cursor
 * serve them all, so pieces pass from the rpc layer to the store as they are. */
#ifndef PS_COMMON_BYTES_H
#define PS_COMMON_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A run of bytes. */
typedef struct ps_bytes {
    const uint8_t *data;
    size_t len;
} ps_bytes;

/* Reads pieces front to back: {pieces, n} to start (an empty piece is skipped). */
typedef struct ps_bytes_cursor {
    const ps_bytes *pieces;
    size_t n;
    size_t i, off; /* the next byte: pieces[i].data[off] */
} ps_bytes_cursor;

/* A cursor over bytes given as pieces (n_pieces > 0) or else as the one run
 * data[0..len), which *one then holds (it must outlive the cursor). */
ps_bytes_cursor ps_bytes_runs(const ps_bytes *pieces, size_t n_pieces, const uint8_t *data,
                              size_t len, ps_bytes *one);
/* The next contiguous run of at most max bytes (*ret_data points into the pieces); its
 * length, 0 at the end. */
size_t ps_bytes_next(ps_bytes_cursor *cursor, size_t max, const uint8_t **ret_data);
/* Copies the next len bytes into dst (NULL: skips them); false when fewer remain (then
 * the cursor is at the end, and dst holds what there was). */
bool ps_bytes_take(ps_bytes_cursor *cursor, void *dst, size_t len);

#endif
