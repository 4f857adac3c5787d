/* bench_pushpull.c: parameter-server throughput against a running cluster.
 *
 * Pushes (ASSIGN) and pulls a dense tensor of --mb MiB cut into 256 KiB chunks through
 * the client library, the way a training job or a replica's initial load does, and
 * reports the best of --reps rounds in GB/s (10^9 bytes of float values a second),
 * plus a check that every pulled value equals what was pushed. Last line:
 * `RESULT push_gbps=... pull_gbps=... mb=...`. A benchmark, not a test: the exit
 * status is non-zero only when a call fails or a value comes back wrong.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_report.h"
#include "flags.h"
#include "psclient.h"
#include "util.h"

#define LISTED_ROUNDS 16 /* rounds with rows of their own */

int main(int argc, char **argv) {
    const char *coord_flag = NULL;
    int mb = 64, reps = 5;
    const ps_flag flags[] = {
        {"coordinator", PS_FLAG_STRING, &coord_flag, 0, 0, "HOST:PORT",
         "the cluster (default: $PS_COORDINATOR, then run/cluster.env)", false},
        {"mb", PS_FLAG_INT, &mb, 1, 4096, "N", "tensor size in MiB", false},
        {"reps", PS_FLAG_INT, &reps, 1, 1000, "N", "rounds; the best is reported", false},
    };
    char coord[256], err[512];
    ps_flags_result fr = ps_flags_parse(
        "bench_pushpull",
        "Push (ASSIGN) and pull throughput of a dense tensor against a running cluster.", flags,
        sizeof flags / sizeof flags[0], argc, argv, stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    if (ps_flags_coordinator(coord_flag, coord, sizeof coord, err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "bench_pushpull: %s (run scripts/cluster up first)\n", err);
        return 2;
    }
    rpc_process_init();
    rpc_tune_allocator();
    ps_client *pc = NULL;
    if (ps_client_create(coord, &pc, err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "bench_pushpull: %s\n", err);
        return 1;
    }
    const uint32_t chunk = PS_DEFAULT_CHUNK_FLOATS;
    uint64_t floats = (uint64_t)mb << 18; /* MiB / 4 bytes */
    uint32_t n = (uint32_t)((floats + chunk - 1) / chunk);
    float *src = malloc(floats * 4), *dst = malloc(floats * 4);
    uint64_t *keys = malloc(n * sizeof *keys);
    uint32_t *lens = malloc(n * sizeof *lens);
    const float **sp = malloc(n * sizeof *sp);
    float **dp = malloc(n * sizeof *dp);
    if (!src || !dst || !keys || !lens || !sp || !dp)
        return 1;
    for (uint64_t i = 0; i < floats; i++)
        src[i] = (float)(i % 1000003) * 0.5f;
    for (uint32_t i = 0; i < n; i++) {
        keys[i] = ps_key_dense("bench_pushpull", 1, "t", i);
        lens[i] =
            (uint32_t)(floats - (uint64_t)i * chunk < chunk ? floats - (uint64_t)i * chunk : chunk);
        sp[i] = src + (uint64_t)i * chunk;
        dp[i] = dst + (uint64_t)i * chunk;
    }
    /* a batch of up to 16 MiB per call, as the tensor helpers send */
    const uint32_t per_call = (16u << 20) / 4 / chunk;
    double best_push = 0, best_pull = 0;
    bench_report *rep = NULL;
    if (bench_report_create("bench_pushpull",
                            "dense push (ASSIGN) and pull through the client library",
                            &rep) != PS_STATUS_OK)
        return 1;
    bench_report_param(rep, "coordinator", "%s", coord);
    bench_report_param(rep, "mb", "%d", mb);
    bench_report_param(rep, "chunks", "%u of %u floats", n, chunk);
    bench_report_param(rep, "chunks_per_call", "%u", per_call);
    bench_report_param(rep, "shards", "%u", ps_client_shard_count(pc));
    bench_report_param(rep, "reps", "%d (the best is the result)", reps);
    for (int r = 0; r < reps; r++) {
        int64_t t0 = ps_now_us();
        for (uint32_t i = 0; i < n; i += per_call) {
            uint32_t m = n - i < per_call ? n - i : per_call;
            if (ps_client_push(pc, PS__PUSH_OP__PUSH_ASSIGN, m, keys + i, sp + i, lens + i, NULL,
                               NULL) != PS_STATUS_OK) {
                fprintf(stderr, "bench_pushpull: push: %s\n", ps_client_error(pc));
                return 1;
            }
        }
        int64_t t1 = ps_now_us();
        memset(dst, 0, floats * 4);
        int64_t t2 = ps_now_us();
        for (uint32_t i = 0; i < n; i += per_call) {
            uint32_t m = n - i < per_call ? n - i : per_call;
            if (ps_client_pull(pc, m, keys + i, dp + i, lens + i, NULL) != PS_STATUS_OK) {
                fprintf(stderr, "bench_pushpull: pull: %s\n", ps_client_error(pc));
                return 1;
            }
        }
        int64_t t3 = ps_now_us();
        if (memcmp(src, dst, floats * 4) != 0) {
            fprintf(stderr, "bench_pushpull: pulled values differ from pushed ones\n");
            return 1;
        }
        double push = (double)floats * 4 / (double)(t1 - t0) / 1e3;
        double pull = (double)floats * 4 / (double)(t3 - t2) / 1e3;
        char name[32];
        if (r < LISTED_ROUNDS) { /* the rows after them would crowd out the results */
            snprintf(name, sizeof name, "push round %d", r + 1);
            bench_report_row(rep, name, push, 3, "GB/s", BENCH_TARGET_NONE, 0, NULL);
            snprintf(name, sizeof name, "pull round %d", r + 1);
            bench_report_row(rep, name, pull, 3, "GB/s", BENCH_TARGET_NONE, 0, NULL);
        }
        if (push > best_push)
            best_push = push;
        if (pull > best_pull)
            best_pull = pull;
    }
    if (reps > LISTED_ROUNDS)
        bench_report_note(rep, "rounds past %d are not listed (the best counts them)",
                          LISTED_ROUNDS);
    bench_report_row(rep, "push (best)", best_push, 3, "GB/s", BENCH_TARGET_NONE, 0, "push_gbps");
    bench_report_row(rep, "pull (best)", best_pull, 3, "GB/s", BENCH_TARGET_NONE, 0, "pull_gbps");
    bench_report_row(rep, "values checked", (double)floats, 0, "floats", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(rep, "mb", mb, 0, "MiB", BENCH_TARGET_NONE, 0, "mb");
    bench_report_print(rep, stdout);
    bench_report_destroy(rep);
    ps_client_destroy(pc);
    free(src);
    free(dst);
    free(keys);
    free(lens);
    free(sp);
    free(dp);
    return 0;
}
