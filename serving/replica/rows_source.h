/* rows_source.h: a served_rows that reads sparse table rows from the shards.
 *
 * A forward pass of a model with tables reads the rows of its ids at inference time
 * (served.h) with ps_client_pull_rows. The client library is not thread-safe, and
 * inference runs on every rpc worker thread, so the source keeps a small pool of
 * clients: a read takes an idle one (creating it on first need: the coordinator may
 * not be up when the replica starts), reads, and puts it back; at most max_clients
 * exist, and a read that finds them all busy waits for one. After a failed read the
 * client fetches the ring again (as shard_source.c does), so the next read routes by
 * the current ring; a client that cannot reach the coordinator is dropped and made
 * anew by a later read.
 *
 * Errors map to what an inference client can act on: a coordinator or shard that
 * cannot be reached (or answers too late) is UNAVAILABLE, with the address and cause
 * in the message; a shard out of room is RESOURCE_EXHAUSTED; a table whose spec
 * conflicts with the one its shard holds is FAILED_PRECONDITION; anything else,
 * INTERNAL (the request was fine, the replica's read was not).
 *
 * No cache: every pass reads its rows. A cache would need invalidating by the rows'
 * updates (PushRows, optimizer steps), and the shards do not stream row updates to
 * replicas yet (Subscribe carries dense chunks only); until they do, a cached row
 * could be stale without bound.
 */
#ifndef PS_SERVING_REPLICA_ROWS_SOURCE_H
#define PS_SERVING_REPLICA_ROWS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "served.h"
#include "status.h"
#include "train_spec.h"

#define ROWS_SOURCE_DEFAULT_CLIENTS 4 /* clients (connections sets) at most, by default */
#define ROWS_SOURCE_MAX_CLIENTS 256   /* the most max_clients may ask for */

typedef struct rows_source_opts {
    const char *coordinator; /* "host:port" (copied) */
    unsigned max_clients;    /* 0 = ROWS_SOURCE_DEFAULT_CLIENTS; at most ROWS_SOURCE_MAX_CLIENTS */
} rows_source_opts;

typedef struct rows_source rows_source;

/* INVALID_ARGUMENT without a coordinator or with max_clients past the limit. */
ps_status rows_source_create(const rows_source_opts *opts, rows_source **ret_source);
void rows_source_destroy(rows_source *src); /* accepts NULL; no read may be running */

/* Reads n rows (ids distinct) of `table` of `model` into out (n * spec->dim floats);
 * errors as above, with err saying why. Any number of threads at once. */
ps_status rows_source_pull(rows_source *src, const char *model, const char *table,
                           const table_spec *spec, size_t n, const uint64_t *ids, float *out,
                           char *err, size_t err_len);

/* The served_rows view of it (valid while src lives). */
served_rows rows_source_get(rows_source *src);

#endif
