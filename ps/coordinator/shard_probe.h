/* shard_probe.h: asks a shard, over the network, how many keys it holds.
 *
 * Why this way: whether a shard (or the ring) holds data decides whether a node may
 * join and whether a shard may be removed, and only the shard knows it for sure: the
 * figure in its last heartbeat may be old, and after a coordinator restart there is
 * none. So the coordinator asks /ps.ParameterServer/Health at decision time, with a
 * short deadline, and checks that the server at the address is the shard it expects.
 * The function has the signature of coord_probe_fn (coord.h) so tests can put a fake
 * in its place and start no process.
 */
#ifndef PS_COORDINATOR_SHARD_PROBE_H
#define PS_COORDINATOR_SHARD_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SHARD_PROBE_TIMEOUT_MS 2500 /* deadline of one Health call */

/* Asks the shard `id` at `addr` for its key count. OK with *ret_keys set; otherwise the
 * status of the failure (UNAVAILABLE, DEADLINE_EXCEEDED, ...; FAILED_PRECONDITION when
 * another shard answers at that address) with a short reason in err. `arg` is unused. */
ps_status shard_probe_keys(void *arg, const char *id, const char *addr, uint64_t *ret_keys,
                           char *err, size_t err_len);

#endif
