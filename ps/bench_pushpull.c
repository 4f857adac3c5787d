/* bench_pushpull.c: parameter-server throughput against a running cluster.
 *
 * Pushes (ASSIGN) and pulls a dense tensor of --mb MiB cut into 256 KiB chunks through
 * the client library, the way a training job or a replica's initial load does, and
 * reports the best of --reps rounds in GB/s (10^9 bytes of float values a second),
 * plus a check that every pulled value equals what was pushed. Last line:
 * `RESULT push_gbps=... pull_gbps=... mb=...`. A benchmark, not a test: the exit
 * status is non-zero only when a call fails or a value comes back wrong.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psclient.h"
#include "util.h"

static void usage(FILE *out) {
    fprintf(out, "usage: bench_pushpull [options]\n"
                 "Against a running cluster (scripts/cluster up):\n"
                 "  --coordinator HOST:PORT  (default: $PS_COORDINATOR, then run/cluster.env)\n"
                 "  --mb N                   tensor size in MiB (default 64)\n"
                 "  --reps N                 rounds; the best is reported (default 5)\n"
                 "  -h, --help\n");
}

int main(int argc, char **argv) {
    const char *coord_flag = NULL;
    int mb = 64, reps = 5;
    static const struct option longopts[] = {
        {"coordinator", required_argument, NULL, 'c'},
        {"mb", required_argument, NULL, 'm'},
        {"reps", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            coord_flag = optarg;
            break;
        case 'm':
            if (!ps_flag_int("bench_pushpull", "mb", optarg, 1, 4096, &mb))
                return 2;
            break;
        case 'r':
            if (!ps_flag_int("bench_pushpull", "reps", optarg, 1, 1000, &reps))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char coord[256], err[512];
    if (ps_coordinator_addr(coord_flag, coord, sizeof coord) != PS_STATUS_OK) {
        fprintf(stderr, "bench_pushpull: no coordinator (run scripts/cluster up first)\n");
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
        keys[i] = ps_key_dense("bench_pushpull", "t", i);
        lens[i] =
            (uint32_t)(floats - (uint64_t)i * chunk < chunk ? floats - (uint64_t)i * chunk : chunk);
        sp[i] = src + (uint64_t)i * chunk;
        dp[i] = dst + (uint64_t)i * chunk;
    }
    /* a batch of up to 16 MiB per call, as the tensor helpers send */
    const uint32_t per_call = (16u << 20) / 4 / chunk;
    double best_push = 0, best_pull = 0;
    printf("# bench_pushpull: %d MiB in %u chunks of %u floats, %u chunks per call, %u shards\n",
           mb, n, chunk, per_call, ps_client_shard_count(pc));
    printf("%-6s %12s %12s\n", "round", "push_GB/s", "pull_GB/s");
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
        printf("%-6d %12.3f %12.3f\n", r, push, pull);
        if (push > best_push)
            best_push = push;
        if (pull > best_pull)
            best_pull = pull;
    }
    printf("RESULT push_gbps=%.3f pull_gbps=%.3f mb=%d\n", best_push, best_pull, mb);
    ps_client_destroy(pc);
    free(src);
    free(dst);
    free(keys);
    free(lens);
    free(sp);
    free(dp);
    return 0;
}
