/* repl_frames.h: the records of a Replicate batch as gRPC received them: in pieces
 * (gRPC hands a large message over in slices of about 64 KiB, and a record of a
 * 1 MiB push spans many), walked without copying.
 *
 * Why it is built this way: the backup used to copy a whole batch into one buffer
 * before applying its records, and the store copied every value again into its block:
 * two copies of every replicated byte where one is needed (2.2% of the shards' time in
 * R=2 pushes, plus the page faults of the fresh buffers). Now each record comes as the
 * pieces it spans; the journal applies a push record from them (journal_apply_pieces)
 * and copies only its small head, keys and lengths into one buffer.
 *
 * Frames (replicator.h): u8 type, 3 zero bytes, u32 payload length
 * (REPLICATOR_FRAME_HEAD bytes), the payload. repl_frames_create checks the framing
 * of the whole batch before anything is applied. */
#ifndef PS_SHARD_REPL_FRAMES_H
#define PS_SHARD_REPL_FRAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "store.h"

typedef struct repl_frames repl_frames;

/* One record: its type and the payload's len bytes as the concatenation of pieces
 * (n_pieces >= 1 when len > 0). Valid until the next repl_frames_next. */
typedef struct repl_frame {
    uint8_t type;
    size_t len;
    const ps_bytes *pieces;
    size_t n_pieces;
} repl_frame;

/* Walks the batch in pieces[0..n_pieces) (which must outlive it), `count` records:
 * INVALID_ARGUMENT with err saying which record is cut short, claims more than
 * max_frame bytes or more than were sent, or what follows the last; NO_MEMORY. */
ps_status repl_frames_create(const ps_bytes *pieces, size_t n_pieces, uint32_t count,
                             size_t max_frame, repl_frames **ret_frames, char *err, size_t err_len);
void repl_frames_destroy(repl_frames *frames); /* accepts NULL */

/* The next record; false after the last. */
bool repl_frames_next(repl_frames *frames, repl_frame *ret_frame);

/* The frame's payload in one piece: *ret_data points into the batch when it lies in
 * one piece, else into a copy in *ret_owned (free it; NULL when not copied). */
ps_status repl_frame_flat(const repl_frame *frame, const uint8_t **ret_data, uint8_t **ret_owned);

#endif
