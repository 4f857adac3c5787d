/* bench_ps_cluster.h: a private cluster for benchmarks: one coordinator and N shards
 * started from a build directory on loopback, each on a free port, in a temporary
 * directory of their own (state, port files, logs, data directories), and stopped
 * again. A benchmark may start more shards later (off the ring: it decides how they
 * join), kill one with SIGKILL, and ask a shard what it holds.
 *
 * Why it is built this way: a benchmark that starts its own processes measures the
 * same thing on every machine (no leftover data, no other clients, known flags) and
 * knows their pids, so it can read each shard's resident memory from /proc or kill the
 * primary of a key. Every process binds port 0 and writes its port into a file, like
 * scripts/cluster does.
 */
#ifndef PS_BENCH_PS_CLUSTER_H
#define PS_BENCH_PS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

#define BENCH_CLUSTER_MAX_SHARDS 8
#define BENCH_CLUSTER_START_MS 30000 /* how long a process may take to serve */

typedef struct bench_cluster bench_cluster;

typedef struct bench_cluster_opts {
    const char *build_dir; /* holds ps/ps-coordinator and ps/ps-shard */
    int shards;            /* 1..BENCH_CLUSTER_MAX_SHARDS, started and on the ring */
    int log_mb;            /* --log-mb of each shard; 0 = the shard's default */
    int replication;       /* the coordinator's --replication; 0 = its default */
    int heartbeat_ms;      /* the coordinator's --heartbeat-ms; 0 = its default */
    bool data_dir;         /* each shard keeps a --data-dir in the cluster's directory */
    const char *fsync;     /* with data_dir: each shard's --fsync; NULL = its default */
} bench_cluster_opts;

/* Starts the processes and waits until every shard is on the coordinator's ring. On
 * failure err says which process did not start (and where its log is) and nothing is
 * left running. */
ps_status bench_cluster_create(const bench_cluster_opts *opts, bench_cluster **ret_cluster,
                               char *err, size_t err_len);
/* SIGTERM to every process still running, waits for them, removes the directory.
 * Accepts NULL. */
void bench_cluster_destroy(bench_cluster *cluster);

/* The build directory the running benchmark came from (the parent of the folder holding
 * it: where its ps-shard and ps-coordinator are), or "build" when it cannot be told. */
void bench_cluster_own_build_dir(char *buf, size_t cap);

/* "127.0.0.1:PORT" of the coordinator. */
const char *bench_cluster_coordinator(const bench_cluster *cluster);

/* Shards started so far (killed ones included), indexed from 0 in start order. */
int bench_cluster_shard_count(const bench_cluster *cluster);
/* Shard i's id ("shard-<i+1>") and "127.0.0.1:PORT". */
const char *bench_cluster_shard_id(const bench_cluster *cluster, int i);
const char *bench_cluster_shard_addr(const bench_cluster *cluster, int i);
/* The index of the shard with this id; -1 when none. */
int bench_cluster_shard_find(const bench_cluster *cluster, const char *id);

/* Starts one more shard with the cluster's flags and waits until it serves; it
 * registers with the coordinator, which decides whether it joins the ring (a ring
 * holding data makes it wait off the ring until an AddNode). *ret_index its index. */
ps_status bench_cluster_shard_start(bench_cluster *cluster, int *ret_index, char *err,
                                    size_t err_len);
/* kill -9 of shard i, reaped before it returns; *ret_killed_us (may be NULL) is
 * ps_now_us() as soon as the signal was sent, before the reaping. INVALID_ARGUMENT for a
 * shard that is not running. */
ps_status bench_cluster_shard_kill(bench_cluster *cluster, int i, int64_t *ret_killed_us);

/* The process id of shard i; 0 when it is not running. */
pid_t bench_cluster_shard_pid(const bench_cluster *cluster, int i);
/* Resident memory (VmRSS) of shard i in bytes; 0 when it cannot be read. */
uint64_t bench_cluster_shard_rss(const bench_cluster *cluster, int i);
/* The value bytes shard i says it holds (its Health `bytes`: chunks it is primary or
 * backup for), and (ret_sync_bytes, may be NULL) the image bytes its syncs have sent
 * since it started (Health repl_sync_bytes: data it moved to other shards). */
ps_status bench_cluster_shard_held(const bench_cluster *cluster, int i, uint64_t *ret_bytes,
                                   uint64_t *ret_sync_bytes, char *err, size_t err_len);

#endif
