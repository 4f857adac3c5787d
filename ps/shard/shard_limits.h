/* shard_limits.h: every limit ps-shard puts on what a client may ask, by name.
 *
 * Each client-supplied count or size is checked against one of these where the
 * request enters (handlers.c, store.c) before it sizes anything, and a request past a
 * limit gets a status whose message names the limit. Limits that operators tune are
 * flags (see main.c); their defaults are here too.
 */
#ifndef PS_SHARD_LIMITS_H
#define PS_SHARD_LIMITS_H

#include "rpc.h"

/* The largest message the shard receives or sends (gRPC's limit on both sides). */
#define SHARD_MAX_MESSAGE_BYTES RPC_DEFAULT_MAX_MESSAGE_BYTES

/* Keys in one Pull, Push, Stat or Delete request. A 100k-key push must fit; a reply per key is
 * at most ~16 bytes of header, so 256 Ki keys stay far below the message limit. */
#define SHARD_MAX_KEYS_PER_REQUEST (256u * 1024u)

/* Bytes of one key's name ("model/tensor#chunk"), without the NUL. */
#define SHARD_MAX_NAME_BYTES 1024u

/* Room left in a message for everything but the values (keys, lengths, versions). */
#define SHARD_MESSAGE_HEADROOM_BYTES (1024u * 1024u)

/* Value bytes in one push, and the longest chunk: a chunk must always fit in one
 * Pull answer, with its header, under the message limit. */
#define SHARD_MAX_VALUE_BYTES (SHARD_MAX_MESSAGE_BYTES - SHARD_MESSAGE_HEADROOM_BYTES)
#define SHARD_MAX_CHUNK_FLOATS (SHARD_MAX_VALUE_BYTES / 4u)

/* Entries the update log holds at most (besides its byte budget): 8 MiB of pointers. */
#define SHARD_LOG_MAX_ENTRIES (1u << 20)

/* An idle Subscribe stream gets a keepalive Update after this long. */
#define SHARD_KEEPALIVE_MS 1000

/* Flag defaults. */
#define SHARD_DEFAULT_MAX_SUBSCRIBERS 64 /* --max-subscribers */
#define SHARD_MAX_MAX_SUBSCRIBERS 4096   /* the largest --max-subscribers accepted */
#define SHARD_DEFAULT_LOG_MB 64          /* --log-mb: memory kept for the update log */

#endif
