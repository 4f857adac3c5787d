/* dirlock.h: one process at a time in a directory of durable state.
 *
 * A coordinator's state directory (or a shard's data directory) must have a single
 * writer: two processes on the same files overwrite each other's state, and a restart
 * then loads whichever wrote last. Nothing else stops a second one: gRPC binds with
 * SO_REUSEPORT, so even a second process on the same port starts, and the kernel hands it
 * half the connections. This happens when a supervisor or an operator starts a
 * replacement while the old process still runs (hung, or slow to shut down).
 *
 * Why this way: an exclusive flock(2) on DIR/LOCK, taken without waiting. The kernel
 * drops it when the process ends, however it ends (kill -9 included), so a restart
 * never finds a stale lock and nobody has to clean up; the file stays (empty but for
 * the holder's pid, written for the message the next process prints).
 */
#ifndef PS_RUNTIME_DIRLOCK_H
#define PS_RUNTIME_DIRLOCK_H

#include <stddef.h>

#include "status.h"

#define PS_DIRLOCK_FILE "LOCK" /* the lock file's name inside the directory */

typedef struct ps_dirlock ps_dirlock;

/* Takes `dir` (which must exist) for this process. FAILED_PRECONDITION when another
 * process holds it, IO when the lock file cannot be opened or locked, with a message in
 * err naming the directory (and the holder's pid when known). */
ps_status ps_dirlock_create(const char *dir, ps_dirlock **ret_lock, char *err, size_t err_len);
/* Lets the directory go. Accepts NULL. */
void ps_dirlock_destroy(ps_dirlock *lock);

#endif
