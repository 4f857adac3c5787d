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

#include "psclient.h"

typedef struct bench_dense {
    double push_gbs; /* best round: value bytes / wall time, 10^9 bytes/s */
    double pull_gbs;
} bench_dense;

/* Pushes (ASSIGN) then pulls a tensor of `floats` floats of model `model` (version 1,
 * tensor "t", chunks of PS_DEFAULT_CHUNK_FLOATS), `reps` rounds, through
 * ps_client_push_tensor / ps_client_pull_tensor; every pulled value is checked. */
ps_status bench_case_dense(ps_client *pc, const char *model, uint64_t floats, int reps,
                           bench_dense *ret, char *err, size_t err_len);

/* One full-tensor ADD of 0.5 to every value of the tensor bench_case_dense made. */
ps_status bench_case_dense_add(ps_client *pc, const char *model, uint64_t floats, char *err,
                               size_t err_len);

/* Optimizer (Adagrad) pushes of n rows of `dim` floats with hashed ids to table
 * model/table through ps_client_push_rows: one push creates the rows, then the best of
 * `reps` timed pushes of all n rows gives *ret_rows_s (rows a second). */
ps_status bench_case_sparse(ps_client *pc, const char *model, uint32_t dim, size_t n, int reps,
                            double *ret_rows_s, char *err, size_t err_len);

typedef struct bench_rtt {
    double push_p50, push_p99; /* one-key, one-float ADD pushes (ps_client_push) */
    double grpc_p50, grpc_p99; /* empty calls (Health) to the same shard: gRPC's own floor */
    double tcp_p50, tcp_p99;   /* 4-byte ping-pong over blocking loopback TCP: the kernel's */
    double tcp_poll_p50, tcp_poll_p99; /* the same with the benchmark's reads polling */
} bench_rtt;

/* Round trips in microseconds, `calls` of each kind (after calls / 10 warm-up calls of
 * each), the kinds taking turns in blocks of 100 so that a spell of load on the shared
 * machine hits each alike: the push is the figure, the other two the floors it is set
 * against in the same run (the raw TCP echo is a forked process, stopped before return).
 * The pushed value is pulled at the end and must equal the number of pushes. */
ps_status bench_case_rtt(ps_client *pc, int calls, bench_rtt *ret, char *err, size_t err_len);

/* Bytes the shards hold (values, optimizer state, rows), summed over the Health of
 * every shard on the ring. */
ps_status bench_case_held_bytes(ps_client *pc, uint64_t *ret_bytes, char *err, size_t err_len);

#endif
