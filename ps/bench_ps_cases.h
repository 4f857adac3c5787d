/* bench_ps_cases.h: the measurements of bench_ps, each through the C client library
 * against a running cluster: dense tensor push and pull, sparse optimizer pushes of
 * rows, the round trip of a one-float push (with an empty gRPC call's and a raw TCP
 * echo's beside it), and what the shards hold.
 *
 * Why it is built this way: each case is a function that takes a connected client and
 * returns figures (no printing), so the program's main only orders the cases and
 * prints one table; a case fails (non-zero exit) only when a call fails or a value
 * comes back wrong, never because the machine was slow.
 */
#ifndef PS_BENCH_PS_CASES_H
#define PS_BENCH_PS_CASES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "psclient.h"

typedef struct bench_dense {
    double push_gbs; /* best round: value bytes / wall time, 10^9 bytes/s */
    double pull_gbs;
    /* Cores kept busy, over all rounds: CPU time of the client (this process) and the
     * shard (its process) over wall time. Below the machine's cores, the transfer waits
     * on something other than the CPU (wake-ups, flow control). 0: not measured. */
    double push_busy, pull_busy;
} bench_dense;

/* Pushes (ASSIGN) then pulls a tensor of `floats` floats of model `model` (version 1,
 * tensor "t", chunks of PS_DEFAULT_CHUNK_FLOATS), `reps` rounds, through
 * ps_client_push_tensor / ps_client_pull_tensor; every pulled value is checked.
 * shard_pid (0: none) is the one shard's process, for push_busy and pull_busy. */
ps_status bench_case_dense(ps_client *pc, const char *model, uint64_t floats, int reps,
                           pid_t shard_pid, bench_dense *ret, char *err, size_t err_len);

/* One full-tensor ADD of 0.5 to every value of the tensor bench_case_dense made. */
ps_status bench_case_dense_add(ps_client *pc, const char *model, uint64_t floats, char *err,
                               size_t err_len);

/* What the sparse case measures: the best push's rows a second, and the CPU time per
 * row that the client (this process, every thread) and the shard (its process) spent
 * over all the timed pushes: rows/s can be no more than cores * 1e9 / their sum. The
 * CPU figures are 0 when the shard's CPU clock cannot be read. */
typedef struct bench_sparse {
    double rows_s;
    double client_ns_row, shard_ns_row;
} bench_sparse;

/* Optimizer (Adagrad) pushes of n rows of `dim` floats with hashed ids to table
 * model/table through ps_client_push_rows: one push creates the rows, then the best of
 * `reps` timed pushes of all n rows. shard_pid (0: unknown) is the shard's process. */
ps_status bench_case_sparse(ps_client *pc, const char *model, uint32_t dim, size_t n, int reps,
                            pid_t shard_pid, bench_sparse *ret, char *err, size_t err_len);

typedef struct bench_rtt {
    double push_p50, push_p99; /* one-key, one-float ADD pushes (ps_client_push) */
    double grpc_p50, grpc_p99; /* empty calls (Health) to the same shard: gRPC's own floor */
    double tcp_p50, tcp_p99;   /* 4-byte ping-pong over blocking loopback TCP: the kernel's */
    double tcp_poll_p50, tcp_poll_p99; /* the same with the benchmark's reads polling */
    /* CPU time the shard spent per push and per empty call (its whole process, every
     * thread, over the timed blocks of that kind): no round trip can take less than
     * the server's share of it. 0 when the shard's CPU clock cannot be read. */
    double push_shard_cpu_us, grpc_shard_cpu_us;
} bench_rtt;

/* Round trips in microseconds, `calls` of each kind (after calls / 10 warm-up calls of
 * each), the kinds taking turns in blocks of 100 so that a spell of load on the shared
 * machine hits each alike: the push is the figure, the other two the floors it is set
 * against in the same run (the raw TCP echo is a forked process, stopped before return).
 * The pushed value is pulled at the end and must equal the number of pushes.
 * shard_pid (0: unknown) is the shard's process, whose CPU clock is read around each
 * block (push_shard_cpu_us, grpc_shard_cpu_us). */
ps_status bench_case_rtt(ps_client *pc, int calls, pid_t shard_pid, bench_rtt *ret, char *err,
                         size_t err_len);

/* Bytes the shards hold (values, optimizer state, rows), summed over the Health of
 * every shard on the ring. */
ps_status bench_case_held_bytes(ps_client *pc, uint64_t *ret_bytes, char *err, size_t err_len);

#endif
