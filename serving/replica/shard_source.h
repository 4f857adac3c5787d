/* shard_source.h: a served_source that pulls chunks from the shards.
 *
 * It wraps the parameter-server client library (ps/client/psclient.h): the client is
 * created on first use (the coordinator may not be up yet when the replica starts) and
 * its ring is fetched again after a failed pull, so the next pull routes by the
 * current ring. Like the client, a source serves one thread: give every thread that
 * pulls its own.
 */
#ifndef PS_SERVING_REPLICA_SHARD_SOURCE_H
#define PS_SERVING_REPLICA_SHARD_SOURCE_H

#include "served.h"
#include "status.h"

/* How long a replica's reads wait for a failover to move a dead shard's keys to their
 * next owner (ps_client_set_failover_wait) before they fail: its loads are retried by
 * the sync loop, and an inference should not hang on a dead shard. */
#define SERVE_FAILOVER_WAIT_MS 2000

typedef struct shard_source_opts {
    const char *coordinator; /* "host:port" (copied) */
} shard_source_opts;

typedef struct shard_source shard_source;

ps_status shard_source_create(const shard_source_opts *opts, shard_source **ret_source);
void shard_source_destroy(shard_source *src); /* accepts NULL */
/* The served_source view of it (valid while src lives). */
served_source shard_source_get(shard_source *src);

#endif
