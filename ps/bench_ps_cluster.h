/* bench_ps_cluster.h: a private cluster for benchmarks: one coordinator and N shards
 * started from a build directory on loopback, each on a free port, in a temporary
 * directory of their own (state, port files, logs), and stopped again.
 *
 * Why it is built this way: a benchmark that starts its own processes measures the
 * same thing on every machine (no leftover data, no other clients, known flags) and
 * knows their pids, so it can read each shard's resident memory from /proc. Every
 * process binds port 0 and writes its port into a file, like scripts/cluster does.
 */
#ifndef PS_BENCH_PS_CLUSTER_H
#define PS_BENCH_PS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define BENCH_CLUSTER_MAX_SHARDS 8
#define BENCH_CLUSTER_START_MS 30000 /* how long a process may take to serve */

typedef struct bench_cluster bench_cluster;

typedef struct bench_cluster_opts {
    const char *build_dir; /* holds ps/ps-coordinator and ps/ps-shard */
    int shards;            /* 1..BENCH_CLUSTER_MAX_SHARDS */
    int log_mb;            /* --log-mb of each shard; 0 = the shard's default */
} bench_cluster_opts;

/* Starts the processes and waits until every shard is on the coordinator's ring. On
 * failure err says which process did not start (and where its log is) and nothing is
 * left running. */
ps_status bench_cluster_create(const bench_cluster_opts *opts, bench_cluster **ret_cluster,
                               char *err, size_t err_len);
/* SIGTERM to every process, waits for them, removes the directory. Accepts NULL. */
void bench_cluster_destroy(bench_cluster *cluster);

/* "127.0.0.1:PORT" of the coordinator. */
const char *bench_cluster_coordinator(const bench_cluster *cluster);
/* Resident memory (VmRSS) of shard i in bytes; 0 when it cannot be read. */
uint64_t bench_cluster_shard_rss(const bench_cluster *cluster, int i);

#endif
