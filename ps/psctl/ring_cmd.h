/* ring_cmd.h: what the parts of `psctl ring` share: the subcommand table (list in
 * cmd_ring.c; add, remove, drain and cancel in cmd_ring_change.c) and the view of a
 * ring change in progress (ring_progress.c), which `ring list`, `status` and the waits
 * of `ring add` and `ring drain` all show the same way.
 *
 * A change that moves data (a shard joins a ring that holds data, or drains) is a
 * pending ring in the coordinator's Ring message (coordinator.proto): the node marked
 * joining or draining, the pending epoch, and per shard the pending epoch it last
 * reported synced. psctl reads only that (and, for bytes, the shards' Health), so what
 * it shows is what the coordinator will decide on.
 */
#ifndef PS_PSCTL_RING_CMD_H
#define PS_PSCTL_RING_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "psctl.h"

#define PSCTL_RING_POLL_MS 250            /* how often a wait asks for the ring */
#define PSCTL_RING_DEFAULT_WAIT_S 1200    /* --timeout-s: past the coordinator's 600 s */
#define PSCTL_RING_MAX_WAIT_S (7 * 86400) /* the largest --timeout-s */

/* The `psctl ring` subcommands, indexes into psctl_ring_cmds. */
enum {
    PSCTL_RING_LIST,
    PSCTL_RING_ADD,
    PSCTL_RING_REMOVE,
    PSCTL_RING_DRAIN,
    PSCTL_RING_CANCEL,
    PSCTL_RING_N_CMDS
};
extern const psctl_cmd psctl_ring_cmds[PSCTL_RING_N_CMDS];

/* cmd_ring_change.c: the subcommands and their --help texts. */
extern const char psctl_ring_add_help[], psctl_ring_remove_help[], psctl_ring_drain_help[],
    psctl_ring_cancel_help[];
int psctl_ring_add(psctl *p, int argc, char **argv);
int psctl_ring_remove(psctl *p, int argc, char **argv);
int psctl_ring_drain(psctl *p, int argc, char **argv);
int psctl_ring_cancel(psctl *p, int argc, char **argv);

/* ================================================================ ring_progress.c === */

/* The change in progress, as a Ring message says it. */
typedef struct psctl_ring_change {
    const Ps__NodeInfo *node; /* the shard joining or draining; NULL: no change */
    bool join;                /* joining (else draining) */
    uint64_t epoch;           /* the current ring's */
    uint64_t pending_epoch;   /* the epoch the ring will have once it commits */
    size_t shards;            /* shards of the current ring (each must sync) */
    size_t synced;            /* of them, synced for pending_epoch */
} psctl_ring_change;

void psctl_ring_change_get(const Ps__Ring *ring, psctl_ring_change *ret_change);
/* Whether shard n of the current ring has synced for the change. */
bool psctl_ring_change_synced(const psctl_ring_change *change, const Ps__NodeInfo *n);
/* "the join of shard-4 (127.0.0.1:7004)" / "the drain of shard-2 (...)". */
const char *psctl_ring_change_name(const psctl_ring_change *change, char *buf, size_t cap);
/* One line: "the join of shard-4 (ADDR): pending ring epoch 12 (now 11): 2 of 3 shards
 * synced, waiting for shard-1". */
void psctl_ring_change_line(const Ps__Ring *ring, char *buf, size_t cap);

/* The change as JSON, null when none: {"kind": "join"|"drain", "node", "addr",
 * "epoch", "pending_epoch", "synced", "shards", "per_shard": [{"id", "alive", "synced",
 * "synced_epoch", and from its Health when it answers: "targets", "syncing",
 * "queued_bytes", "sync_bytes"}]}. Asks the shards (with_health) for their figures. */
json_t *psctl_ring_change_json(psctl *p, const Ps__Ring *ring, bool with_health);
/* The same for people (nothing when none): the line above, then a table per shard. */
void psctl_ring_change_print(psctl *p, const Ps__Ring *ring, bool with_health);

/* Waits for the change of shard `id` (join or drain) to end, polling the ring and
 * printing a line per change of its progress (stderr with --json). Returns
 * PSCTL_EXIT_OK once committed (*ret_epoch: the ring's epoch then), PSCTL_EXIT_FAILED
 * when it was cancelled or timeout_s passed (it goes on then; the message says how to
 * follow or stop it). */
int psctl_ring_change_wait(psctl *p, const char *id, bool join, int timeout_s, uint64_t *ret_epoch);

#endif
