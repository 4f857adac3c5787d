/* bench_faults_tally.h: the arithmetic behind bench_faults' failover figures, apart
 * from any process or network: how many acknowledged ADDs are missing from the values
 * pulled after a kill (lost), how many landed without an acknowledgement, whether any
 * landed twice or tore a chunk, and how long pushes took to succeed again.
 *
 * Why it is built this way: the figures decide whether replication kept its promise
 * (lost = 0), so they are computed by small pure functions that a unit test can feed
 * with made-up counts (test_bench_faults_tally.c) instead of trusting a benchmark run
 * to exercise every case. Counts are per chunk because a push that fails part-way
 * leaves some chunks applied and others not (ps_client_push_tensor_report).
 */
#ifndef PS_BENCH_FAULTS_TALLY_H
#define PS_BENCH_FAULTS_TALLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* What the values of a tensor say about the ADDs of 1.0 pushed to it, each chunk
 * starting at 0. Counts are chunk updates (one push of the whole tensor makes one per
 * chunk), summed over the chunks. */
typedef struct bench_tally {
    uint64_t acked;      /* chunk updates the shards acknowledged */
    uint64_t lost;       /* acknowledged but not in the value: sum of max(0, acked - value) */
    uint64_t unacked;    /* in the value without an acknowledgement, within the calls whose
                            outcome was unknown: sum of min(max(0, value - acked), unknown) */
    uint64_t duplicated; /* in the value more often than sent: sum of max(0, value - acked -
                            unknown); a request applied twice */
    uint64_t torn;       /* chunks whose floats differ from each other or are not whole
                            numbers >= 0 (their lost/unacked counts use the first float) */
} bench_tally;

/* Tallies `chunks` chunks: acked[c] and unknown[c] count the pushes whose outcome for
 * chunk c was PS_PUSH_APPLIED and PS_PUSH_UNKNOWN; the chunk's floats are
 * values[offset[c] .. offset[c] + lens[c]) where offsets run consecutively from 0.
 * INVALID_ARGUMENT for an empty chunk. */
ps_status bench_tally_chunks(size_t chunks, const uint64_t *acked, const uint64_t *unknown,
                             const uint32_t *lens, const float *values, bench_tally *ret_tally);

/* One push of the pusher thread, as the clock saw it. */
typedef struct bench_push_record {
    int64_t start_us; /* ps_now_us() before the call */
    int64_t end_us;   /* after it returned */
    bool acked;       /* it returned OK: every chunk applied */
} bench_push_record;

/* The failover time: from kill_us to the end of the first acknowledged push that
 * started at or after kill_us (a push started earlier may have been acknowledged by
 * the victim before it died). false when there is none. */
bool bench_tally_failover_us(const bench_push_record *records, size_t n, int64_t kill_us,
                             int64_t *ret_us);

/* Acknowledged pushes among records that started at or after kill_us. */
size_t bench_tally_acked_after(const bench_push_record *records, size_t n, int64_t kill_us);

#endif
