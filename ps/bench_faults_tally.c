/* bench_faults_tally.c: see bench_faults_tally.h. */
#include "bench_faults_tally.h"

#include <math.h>

/* The chunk's value: its first float, and whether every float equals it and is a
 * whole number >= 0 (a value an integer count of ADDs of 1.0 can make). */
static bool chunk_value(const float *v, uint32_t len, uint64_t *ret_value) {
    float first = v[0];
    bool whole = isfinite(first) && first >= 0 && floorf(first) == first;
    *ret_value = whole ? (uint64_t)first : 0;
    for (uint32_t i = 1; i < len && whole; i++)
        if (v[i] != first)
            return false;
    return whole;
}

ps_status bench_tally_chunks(size_t chunks, const uint64_t *acked, const uint64_t *unknown,
                             const uint32_t *lens, const float *values, bench_tally *ret_tally) {
    bench_tally t = {0};
    size_t offset = 0;
    for (size_t c = 0; c < chunks; c++) {
        if (lens[c] == 0)
            return PS_STATUS_INVALID_ARGUMENT;
        uint64_t value = 0;
        if (!chunk_value(values + offset, lens[c], &value))
            t.torn++;
        offset += lens[c];
        t.acked += acked[c];
        if (value < acked[c]) {
            t.lost += acked[c] - value;
            continue;
        }
        uint64_t extra = value - acked[c];
        t.unacked += extra < unknown[c] ? extra : unknown[c];
        t.duplicated += extra > unknown[c] ? extra - unknown[c] : 0;
    }
    *ret_tally = t;
    return PS_STATUS_OK;
}

bool bench_tally_failover_us(const bench_push_record *records, size_t n, int64_t kill_us,
                             int64_t *ret_us) {
    for (size_t i = 0; i < n; i++) /* records are in call order: the first one wins */
        if (records[i].acked && records[i].start_us >= kill_us) {
            *ret_us = records[i].end_us - kill_us;
            return true;
        }
    return false;
}

size_t bench_tally_acked_after(const bench_push_record *records, size_t n, int64_t kill_us) {
    size_t acked = 0;
    for (size_t i = 0; i < n; i++)
        acked += records[i].acked && records[i].start_us >= kill_us;
    return acked;
}
