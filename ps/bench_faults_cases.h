/* bench_faults_cases.h: the three measurements of bench_faults, each against fresh
 * clusters it starts itself (bench_ps_cluster.h): failover after kill -9 of a primary
 * under a stream of ADDs, push throughput with replication and group fsync against
 * neither, and adding a fourth shard to a ring that holds data.
 *
 * Why it is built this way: each case is a function that takes the configuration and
 * returns figures (no printing), so bench_faults.c only orders the cases and prints one
 * table. A case fails only when a call fails for good or a value comes back wrong,
 * never because the machine was slow; figures it could not measure come back as
 * `measured = false` with a reason in `note`.
 */
#ifndef PS_BENCH_FAULTS_CASES_H
#define PS_BENCH_FAULTS_CASES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_faults_tally.h"
#include "psclient.h"

#define BENCH_FAULTS_MAX_PUSHES (1u << 18)          /* pushes the failover case records at most */
#define BENCH_FAULTS_TENSOR_MAX_FLOATS (1ull << 26) /* one pushed tensor: 256 MiB */
#define BENCH_FAULTS_NOTE_MAX 1024

typedef struct bench_faults_cfg {
    char build_dir[512];  /* holds ps/ps-coordinator and ps/ps-shard */
    int heartbeat_ms;     /* the coordinator's --heartbeat-ms in the failover case */
    uint64_t fail_floats; /* the failover case's tensor */
    int warmup_pushes;    /* acknowledged pushes before the kill */
    int after_pushes;     /* acknowledged pushes started after the kill, then stop */
    int fail_timeout_s;   /* the failover case gives up this long after the kill */
    uint64_t tput_floats; /* the throughput case's tensor */
    int reps;             /* timed pushes per throughput cluster; the best counts */
    int add_mb;           /* MiB of data on the ring before the add (0: skip the case) */
    bool balanced;        /* the added shard takes balanced tokens (AddNode.balanced) */
    int add_timeout_s;    /* the add gives up this long after AddNode */
} bench_faults_cfg;

typedef struct bench_failover {
    bool measured;          /* false: no acknowledged push after the kill in time */
    double failover_ms;     /* kill to the end of the first push started after it that
                               the shards acknowledged */
    double longest_gap_ms;  /* the longest time between two acknowledgements */
    char victim[32];        /* the killed shard's id */
    uint64_t victim_chunks; /* chunks of the tensor whose primary it was */
    uint64_t chunks;        /* chunks of the tensor */
    uint64_t acked_pushes;  /* whole-tensor pushes acknowledged */
    uint64_t failed_pushes; /* pushes that returned a failure */
    bench_tally tally;      /* per chunk, against the pulled values */
    char note[BENCH_FAULTS_NOTE_MAX];
} bench_failover;

typedef struct bench_throughput {
    double r2_group_gbs; /* R = 2, --fsync group: best ADD push, 10^9 value bytes/s */
    double r1_none_gbs;  /* R = 1, --fsync none */
} bench_throughput;

typedef struct bench_add_node {
    bool measured;            /* false: the add was refused or did not commit */
    double add_s;             /* AddNode to the ring holding the new shard */
    uint64_t ring_bytes;      /* bytes the three shards held before (copies included) */
    uint64_t new_shard_bytes; /* bytes the new shard holds once it is on the ring */
    uint64_t after_bytes;     /* bytes the four shards hold then (old copies not yet freed
                                 included) */
    uint64_t moved_bytes;     /* bytes moved: the old shards' sync images for the add */
    double moved_x;           /* moved_bytes over the ideal, ring_bytes / 4 */
    uint64_t checked_floats;  /* floats pulled and compared after the add */
    char note[BENCH_FAULTS_NOTE_MAX];
} bench_add_node;

/* Failover: 3 shards, R = 2, data directories with --fsync group, the coordinator's
 * heartbeat cfg->heartbeat_ms. */
ps_status bench_faults_failover(const bench_faults_cfg *cfg, bench_failover *ret, char *err,
                                size_t err_len);

/* Throughput: two clusters of 3 shards with data directories, R = 2 with --fsync group
 * and R = 1 with --fsync none, up at once; an ASSIGN into each, then cfg->reps rounds
 * of one timed full-tensor ADD into each in turn, checked after. */
ps_status bench_faults_throughput(const bench_faults_cfg *cfg, bench_throughput *ret, char *err,
                                  size_t err_len);

/* Add a node: 3 shards (R: the coordinator's default, data directories, --fsync
 * group) holding cfg->add_mb MiB, then a fourth shard and AddNode. */
ps_status bench_faults_add_node(const bench_faults_cfg *cfg, bench_add_node *ret, char *err,
                                size_t err_len);

/* Shared by the cases: a tensor `name` of `floats` floats in default chunks (shape
 * points into *shape). */
void bench_faults_tensor(const char *name, uint64_t floats, int64_t *shape, Ps__TensorInfo *t);

/* Pushes `value` with `op` to every float of model/1/t (count floats) from a buffer of
 * that many floats; err gets the client's message on failure. */
ps_status bench_faults_push_fill(ps_client *pc, const char *model, const Ps__TensorInfo *t,
                                 Ps__PushOp op, float value, float *buf, uint64_t count, char *err,
                                 size_t err_len);

#endif
