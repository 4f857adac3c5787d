/* subscriber.h: what one shard's update stream means, message by message.
 *
 * A replica follows each shard's Subscribe stream. This module holds the little state
 * that must survive reconnections (the last sequence number received, to resume from,
 * and the shard incarnation last seen) and says, for each message, whether to apply
 * it and whether everything held from that shard must be pulled again:
 *   - a resync message (the shard's log no longer holds what we missed): re-pull;
 *   - a new incarnation (the shard restarted and lost or reloaded its data): re-pull;
 *   - a keepalive: nothing to apply (it only proves the stream is alive);
 *   - an update: apply it (the version rule of chunk_table.h decides how).
 * Pure functions on a plain struct: the stream I/O is in sync.c.
 */
#ifndef PS_SERVING_REPLICA_SUBSCRIBER_H
#define PS_SERVING_REPLICA_SUBSCRIBER_H

#include <stdbool.h>
#include <stdint.h>

#include "ps.pb-c.h"

typedef struct subscriber_state {
    bool have_base;       /* a starting point was set (subscriber_state_base) */
    uint64_t seq;         /* resume after this sequence number */
    uint64_t incarnation; /* the shard's incarnation last seen; 0 = none */
} subscriber_state;

typedef struct subscriber_verdict {
    bool apply;      /* an update to apply */
    bool repull;     /* re-pull every chunk held from this shard */
    const char *why; /* for the log when repull: "subscribed", "resync", "restarted" */
} subscriber_verdict;

/* What a Health answer says before (re)subscribing. The first one sets the starting
 * point (models pulled afterwards include everything up to it) and says re-pull
 * ("subscribed": chunks held from this shard before its stream started, e.g. from a
 * shard that came back at a new address, may have missed updates); a later one with
 * another non-zero incarnation means the shard restarted ("restarted"). */
subscriber_verdict subscriber_state_base(subscriber_state *st, uint64_t seq, uint64_t incarnation);
/* One message of the stream. */
subscriber_verdict subscriber_state_message(subscriber_state *st, const Ps__Update *u);

#endif
