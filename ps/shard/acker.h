/* acker.h: answers a shard's pushes once what they changed is durable and on every
 * backup, without a thread waiting per push.
 *
 * Why it is built this way: a push handler used to wait for its group commit and its
 * backups' acknowledgements on the rpc worker thread that ran it, and a shard has one
 * worker per core: with --fsync group and R=2 the two workers of a 2-core machine spent
 * their time waiting while the machine idled (30% of the time in bench/faults), and
 * more workers cost sparse pushes a fifth in lock contention. Now a handler sets its
 * reply, defers the call (rpc_ctx_defer) and hands it here with the journal position it
 * waits for; one thread answers the calls in the order they came, each once `wait`
 * (the shard's durability wait) passes or fails for it. Positions grow in that order,
 * and the waits are on the log and on every backup together, so a call rarely waits
 * behind one that is not durable yet when it is. Thread-safe.
 */
#ifndef PS_SHARD_ACKER_H
#define PS_SHARD_ACKER_H

#include <stdbool.h>
#include <stdint.h>

#include "rpc.h"
#include "status.h"

/* Blocks until `pos` is durable (or a failure, set on rc with rpc_ctx_error); its
 * status answers the call. fresh: the change at pos was made by this call (not by an
 * earlier try of its request), as acker_take was told. */
typedef ps_status (*acker_wait_fn)(void *arg, rpc_ctx *rc, uint64_t pos, bool fresh,
                                   const char *what);

typedef struct acker acker;

/* Starts the answering thread. NO_MEMORY (no thread either). */
ps_status acker_create(acker_wait_fn wait, void *arg, acker **ret_acker);
/* Answers every call handed over (waiting as usual), then stops the thread. Accepts
 * NULL. */
void acker_destroy(acker *acker);

/* Defers rc (its reply set) and hands it over: it is answered once wait(arg, rc, pos,
 * fresh, what) returns (`what`, a string that outlives the call). OK: the handler must return
 * at once without touching rc again. NO_MEMORY or FAILED_PRECONDITION (stopping):
 * nothing was done, the caller waits itself. */
ps_status acker_take(acker *acker, rpc_ctx *rc, uint64_t pos, bool fresh, const char *what);

#endif
