/* state_store.h: the coordinator's durable state: one JSON file in the state directory
 * (membership, the ring epoch, the model registry), its encoding, its ordered writes,
 * and a loader that refuses a damaged file.
 *
 * The file (format 1 or 2; every field required unless marked optional):
 *   {"format": 1|2, "epoch": E, "model_generation": G,
 *    "nodes":  [{"id", "addr", "weight": 1..1000, "role": "shard"|"serve",
 *                "in_ring": bool, "waiting": bool (optional, default false),
 *                "joining": true, "draining": true (optional, written only when true:
 *                the ring change in progress, coord_change.c; one node at most; a
 *                joining shard is off the ring and not waiting, a draining one on it),
 *                "tokens": "..." (format 2, optional: a shard's explicit ring
 *                positions, 16 lowercase hex digits each, strictly ascending,
 *                1..HASHRING_MAX_POINTS of them)}],
 *    "models": [{"name", "version", "config_json", "tensors": [{"name", "dtype",
 *                "shape": [..], "chunk_floats", "chunks"}]}],
 *    "version_marks": {"name": version, ...} (optional, written only when some model's
 *                highest version was deleted: the number its next upload comes after,
 *                registry.h; older builds ignore it)}
 * Format 2 is written only when some node has tokens (`ring add --balanced`), so a
 * cluster that never used them keeps a file that older coordinators read, and an older
 * coordinator refuses a file with tokens (it would drop them and move keys) instead of
 * loading it. Both formats are read.
 * It is rewritten whole and atomically (temp file, fsync, rename) after every change
 * to membership, the ring or the registry (changes are rare; heartbeats change nothing
 * durable).
 *
 * Why this way: a write (with its fsync) must not happen under the lock that heartbeats
 * take, or a slow disk stalls liveness. So a change encodes a snapshot under the lock
 * (state_store_encode, with a sequence number taken there) and writes it after
 * unlocking (state_store_write). Writes are ordered by that number: a snapshot older
 * than one already written is dropped, so the file never goes back in time.
 *
 * Loading checks everything (types, ranges, ids, duplicates, every model through the
 * registry's validation): a damaged file is refused with a message naming the file,
 * what is wrong and what to do, never half-loaded.
 */
#ifndef PS_COORDINATOR_STATE_STORE_H
#define PS_COORDINATOR_STATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "membership.h"
#include "registry.h"
#include "ring_state.h"
#include "status.h"

#define STATE_STORE_FORMAT 2             /* the newest format: written when tokens exist */
#define STATE_STORE_FORMAT_HASHED 1      /* the oldest read; written while no node has tokens */
#define STATE_STORE_TOKEN_HEX 16         /* hex digits per token in "tokens" */
#define STATE_STORE_PATH_MAX 4096        /* longest state file path, bytes */
#define STATE_STORE_MAX_BYTES (1u << 30) /* largest state file read, bytes */

/* Writes `len` bytes to `path` atomically; the default is ps_write_file_atomic. Tests
 * put a hook here (slow or failing disks). */
typedef ps_status (*state_store_write_fn)(void *arg, const char *path, const void *data,
                                          size_t len);

typedef struct state_store_opts {
    const char *path;           /* the state file (copied) */
    state_store_write_fn write; /* NULL = ps_write_file_atomic */
    void *write_arg;
} state_store_opts;

typedef struct state_store state_store;

ps_status state_store_create(const state_store_opts *opts, state_store **ret_store);
void state_store_destroy(state_store *store); /* accepts NULL */
const char *state_store_path(const state_store *store);

/* Encodes the state as the file's text (malloc'd, free it). Call under the lock that
 * guards the three modules. */
ps_status state_store_encode(const membership *members, const ring_state *ring, const registry *reg,
                             char **ret_text);

/* Writes a snapshot encoded with sequence number `seq` (numbers increase with each
 * snapshot taken). Safe from several threads at once: writes happen one at a time, and
 * a snapshot older than the newest one written is dropped (*ret_written false). IO (or
 * the hook's status) on failure. ret_written may be NULL. */
ps_status state_store_write(state_store *store, uint64_t seq, const char *text, bool *ret_written);

/* Loads the file into empty modules. OK with nothing loaded when the file does not
 * exist (a new cluster); PARSE when it is damaged, IO when it cannot be read, with a
 * message in err saying what is wrong and what to do. Temporary files that writes cut
 * short by a crash left beside it (PATH.tmp.PID) are removed first. On failure the modules may hold
 * part of the file: destroy them. */
ps_status state_store_load(const state_store *store, membership *members, ring_state *ring,
                           registry *reg, char *err, size_t err_len);
/* The same from text already read (what the loader runs on; unit tests call it). */
ps_status state_store_decode(const char *text, size_t len, membership *members, ring_state *ring,
                             registry *reg, char *err, size_t err_len);

#endif
