/* repl_inbox.h: a backup's record of the replication streams it receives: per primary
 * (by shard id), that primary's incarnation and the last stream number applied.
 *
 * Why it is built this way: a primary numbers the records it sends each backup and
 * sends a batch again when an answer was lost, so a backup skips the records it
 * already applied; and it may send it again while the first call is still being
 * applied, so each stream is applied by one call at a time (repl_inbox_begin holds the
 * stream's lock until repl_inbox_end), and in order: a batch waits for the batches
 * before it (repl_inbox_begin_at). A primary that restarted (a new incarnation)
 * starts a new stream; a call from one of its earlier incarnations (still on its way
 * after the restart) is refused, so it cannot take the stream back. Syncs replace
 * their keys whole, so only the newest of a primary's syncs may install: each names
 * its number, and one older than a sync begun before it is refused
 * (repl_inbox_sync_newest). The number of primaries kept is bounded
 * (REPL_INBOX_MAX_PEERS): past it the stream idle longest is forgotten. Thread-safe.
 */
#ifndef PS_SHARD_REPL_INBOX_H
#define PS_SHARD_REPL_INBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define REPL_INBOX_MAX_PEERS 1024u
#define REPL_INBOX_RETIRED 4u /* a primary's earlier incarnations remembered */

typedef struct repl_inbox repl_inbox;
typedef struct repl_stream repl_stream;

ps_status repl_inbox_create(repl_inbox **ret_inbox);
void repl_inbox_destroy(repl_inbox *inbox); /* accepts NULL; no stream may be begun */

/* Takes the stream of (from, incarnation), creating or resetting it, and locks it:
 * *ret_applied gets the last record number it applied (0 for a new stream).
 * INVALID_ARGUMENT for an empty or over-long id; RESOURCE_EXHAUSTED when every kept
 * stream is in use; FAILED_PRECONDITION, nothing locked, for one of the primary's last
 * REPL_INBOX_RETIRED incarnations before its current one (it restarted since). */
ps_status repl_inbox_begin(repl_inbox *inbox, const char *from, uint64_t incarnation,
                           repl_stream **ret_stream, uint64_t *ret_applied);
/* repl_inbox_begin, and then (not for syncs) waits until the stream has applied every
 * record before `first` (a primary keeps several batches in flight; they may arrive out
 * of order, and each must apply after the one before). UNAVAILABLE, with nothing
 * locked and *ret_applied set, when they have not come by deadline_ms (ps_now_ms
 * clock): the primary sends again from its first unanswered record. */
ps_status repl_inbox_begin_at(repl_inbox *inbox, const char *from, uint64_t incarnation,
                              uint64_t first, int64_t deadline_ms, repl_stream **ret_stream,
                              uint64_t *ret_applied);
/* Whether a sync numbered num (0: not numbered) may install on the stream (begun by
 * the caller): false when a sync with a higher number began on it before; else num is
 * the newest from now on. */
bool repl_inbox_sync_newest(repl_stream *stream, uint64_t num);
/* Records the last number applied and unlocks the stream. It never lowers the number,
 * except with reset (a sync: the stream goes on from there). */
void repl_inbox_end(repl_inbox *inbox, repl_stream *stream, uint64_t applied, bool reset);

#endif
