/* placement.h: which keys this shard owns, by the newest ring it knows.
 *
 * Why it is built this way: every request that depends on placement is checked here,
 * so a shard never serves or changes a key the ring gives to another shard; a key it
 * does not own gets WRONG_EPOCH (ABORTED on the wire: "refresh the ring"). Rings only
 * move forward: an install with an epoch not newer than the current one is ignored.
 * The ring itself is fetched by the process runtime (main.c today); this module only
 * parses, keeps and answers. Thread-safe: lookups share a read lock.
 */
#ifndef PS_SHARD_PLACEMENT_H
#define PS_SHARD_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct placement placement;

typedef struct placement_opts {
    const char *self_id; /* this shard's id on the ring (copied) */
} placement_opts;

ps_status placement_create(const placement_opts *opts, placement **ret_placement);
void placement_destroy(placement *placement); /* accepts NULL */

typedef struct placement_info {
    uint64_t epoch; /* of the ring held; 0 before the first */
    uint32_t nodes; /* shards on it */
    bool member;    /* this shard is one of them */
} placement_info;

/* Installs a serialized ring (hashring_serialize form) if its epoch is newer than the
 * one held. PARSE when it does not parse. *ret_installed (may be NULL) says whether
 * it replaced the held ring; ret_info (may be NULL) describes the ring held after. */
ps_status placement_ring_install(placement *placement, const void *data, size_t len,
                                 bool *ret_installed, placement_info *ret_info);

void placement_get_info(placement *placement, placement_info *ret_info);

/* Holds the ring still for something that is only right under the ring it checked (a
 * backup installing a sync's images, which only the keys' primary under that same ring
 * may send: replicator.h): placement_ring_install waits until placement_release. First
 * waits until the ring's epoch is at least want_epoch (0: no wait), or deadline_ms
 * (ps_now_ms clock) passes: a sender that learned a ring first need not be refused.
 * *ret_info gets the ring held. Lookups and checks go on meanwhile. Holds may overlap;
 * a holder must not install a ring. */
void placement_hold(placement *placement, uint64_t want_epoch, int64_t deadline_ms,
                    placement_info *ret_info);
void placement_release(placement *placement);

/* The replication factor R of the rings installed from now on (>= 1; 1 until set):
 * placement_check_any accepts the keys this shard is one of the R owners of. */
void placement_set_replication(placement *placement, uint32_t replication);

/* Whether this shard is one of the key's R owners on the ring held (false before a
 * ring, or off it). */
bool placement_owns_any(placement *placement, uint64_t key);

/* OK when this shard is one of the R owners (primary or backup) of every key: reads
 * may go to any owner. Otherwise WRONG_EPOCH, as placement_check. *ret_epoch (may be
 * NULL) gets the epoch of the ring it checked against. */
ps_status placement_check_any(placement *placement, uint64_t request_epoch, size_t n,
                              const uint64_t *keys, uint64_t *ret_epoch, char *err, size_t err_len);

/* OK when this shard is the primary owner of every key under the ring it holds;
 * otherwise WRONG_EPOCH, and err says which key and which epochs (the ring's and
 * request_epoch, the epoch the client routed with). *ret_epoch (may be NULL) gets the
 * epoch of the ring it checked against (a change made under it is routed by the
 * replicator, which compares: replicator_push). */
ps_status placement_check(placement *placement, uint64_t request_epoch, size_t n,
                          const uint64_t *keys, uint64_t *ret_epoch, char *err, size_t err_len);

#endif
