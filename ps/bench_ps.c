/* bench_ps.c: the parameter servers' speed on one machine, against clusters it starts
 * itself on loopback (bench_ps_cluster.h): dense push and pull of a 4 MiB and a 64 MiB
 * tensor, sparse Adagrad pushes of rows of dimension 1 and 16, the round trip of a
 * one-float push (1 shard, 1 client; an empty gRPC call's and a raw TCP echo's round
 * trips measured beside it, turn and turn about), then the dense figures again with 3
 * shards and what those shards hold in memory against the data they keep. scripts/bench/ps runs
 * it with iperf3's loopback TCP figure (--tcp-gbs) so the dense figures can be set
 * against raw TCP measured in the same run. scripts/bench/README.md says how every
 * figure is computed. Last line:
 * RESULT dense_push_gbs=... dense_pull_gbs=... tcp_gbs=... dense_vs_tcp=...
 *        dense4_vs_tcp=... sparse_mrows_s=... sparse16_mrows_s=...
 *        small_rtt_p50_us=... small_rtt_p99_us=... shard_mem_x=...
 */
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_ps_cases.h"
#include "bench_ps_cluster.h"
#include "bench_report.h"
#include "flags.h"
#include "util.h"

#define MIB (1024.0 * 1024.0)

typedef struct bench_cfg {
    char build_dir[512];
    double tcp_gbs;
    int reps, rtt_calls, mem_mb, log_mb;
    uint64_t sparse_rows;
    const char *only; /* comma-separated case names, or NULL: all */
} bench_cfg;

#define CASE_NAMES "dense4,dense64,sparse1,sparse16,rtt,three"

/* Whether case `name` runs: all do without --only. */
static bool wanted(const bench_cfg *cfg, const char *name) {
    if (!cfg->only)
        return true;
    size_t len = strlen(name);
    for (const char *p = cfg->only; *p;) {
        size_t n = strcspn(p, ",");
        if (n == len && strncmp(p, name, n) == 0)
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

/* Whether every name in --only is a case. */
static bool only_valid(const char *only) {
    for (const char *p = only; p && *p;) {
        size_t n = strcspn(p, ",");
        bool known = false;
        for (const char *q = CASE_NAMES; *q && !known;) {
            size_t m = strcspn(q, ",");
            known = m == n && strncmp(p, q, n) == 0;
            q += m + (q[m] == ',');
        }
        if (!known)
            return false;
        p += n + (p[n] == ',');
    }
    return true;
}

typedef struct bench_figures {
    bench_dense d4, d64, d4_3, d64_3;
    bench_sparse sparse1, sparse16;
    bench_rtt rtt;
    uint64_t rss, held;
} bench_figures;

/* A dense case's rows on one shard: push and pull, then the cores they kept busy. */
static void dense_rows(bench_report *r, const char *size, const bench_dense *d,
                       const char *push_key, const char *pull_key) {
    char name[64];
    snprintf(name, sizeof name, "1 shard: push %s", size);
    bench_report_row(r, name, d->push_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0, push_key);
    snprintf(name, sizeof name, "1 shard: pull %s", size);
    bench_report_row(r, name, d->pull_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0, pull_key);
    snprintf(name, sizeof name, "  push %s: cores busy", size);
    bench_report_row(r, name, d->push_busy, 2, "cores", BENCH_TARGET_NONE, 0, NULL);
    snprintf(name, sizeof name, "  pull %s: cores busy", size);
    bench_report_row(r, name, d->pull_busy, 2, "cores", BENCH_TARGET_NONE, 0, NULL);
}

/* A sparse case's CPU per row, client and shard, and the rows a second `cpus` cores
 * could do at that CPU cost: the bound the figure is under on this machine. */
static void sparse_cpu_rows(bench_report *r, const char *dim, const bench_sparse *s, int cpus) {
    char name[64];
    const double ns = s->client_ns_row + s->shard_ns_row;
    snprintf(name, sizeof name, "  %s: client CPU per row", dim);
    bench_report_row(r, name, s->client_ns_row, 0, "ns", BENCH_TARGET_NONE, 0, NULL);
    snprintf(name, sizeof name, "  %s: shard CPU per row", dim);
    bench_report_row(r, name, s->shard_ns_row, 0, "ns", BENCH_TARGET_NONE, 0, NULL);
    snprintf(name, sizeof name, "  %s: %d cores allow at most", dim, cpus);
    bench_report_row(r, name, ns > 0 ? cpus * 1e3 / ns : 0, 2, "M rows/s", BENCH_TARGET_NONE, 0,
                     NULL);
}

static int fail(const char *what, const char *err) {
    fprintf(stderr, "bench_ps: %s: %s\n", what, err);
    return 1;
}

/* 1 shard: dense, sparse, small round trip. */
static int run_one_shard(const bench_cfg *cfg, bench_figures *f) {
    char err[1024];
    bench_cluster *cl = NULL;
    ps_client *pc = NULL;
    bench_cluster_opts co = {.build_dir = cfg->build_dir, .shards = 1, .log_mb = cfg->log_mb};
    if (bench_cluster_create(&co, &cl, err, sizeof err) != PS_STATUS_OK)
        return fail("start 1 shard", err);
    int rc = 1;
    const pid_t shard = bench_cluster_shard_pid(cl, 0); /* for its CPU time */
    if (ps_client_create(bench_cluster_coordinator(cl), &pc, err, sizeof err) != PS_STATUS_OK)
        goto out;
    if ((wanted(cfg, "dense4") && bench_case_dense(pc, "d4", 1u << 20, cfg->reps, shard, &f->d4,
                                                   err, sizeof err) != PS_STATUS_OK) ||
        (wanted(cfg, "dense64") && bench_case_dense(pc, "d64", 16u << 20, cfg->reps, shard, &f->d64,
                                                    err, sizeof err) != PS_STATUS_OK) ||
        (wanted(cfg, "sparse1") &&
         bench_case_sparse(pc, "s1", 1, cfg->sparse_rows, cfg->reps, shard, &f->sparse1, err,
                           sizeof err) != PS_STATUS_OK) ||
        (wanted(cfg, "sparse16") &&
         bench_case_sparse(pc, "s16", 16, cfg->sparse_rows, cfg->reps, shard, &f->sparse16, err,
                           sizeof err) != PS_STATUS_OK) ||
        (wanted(cfg, "rtt") &&
         bench_case_rtt(pc, cfg->rtt_calls, shard, &f->rtt, err, sizeof err) != PS_STATUS_OK))
        goto out;
    rc = 0;
out:
    if (rc)
        fail("1 shard", err);
    ps_client_destroy(pc);
    bench_cluster_destroy(cl);
    return rc;
}

/* 3 shards: dense, then a model of mem_mb uploaded and ADDed three times, then memory. */
static int run_three_shards(const bench_cfg *cfg, bench_figures *f) {
    char err[1024];
    bench_cluster *cl = NULL;
    ps_client *pc = NULL;
    bench_cluster_opts co = {.build_dir = cfg->build_dir, .shards = 3, .log_mb = cfg->log_mb};
    if (bench_cluster_create(&co, &cl, err, sizeof err) != PS_STATUS_OK)
        return fail("start 3 shards", err);
    int rc = 1;
    uint64_t mem_floats = (uint64_t)cfg->mem_mb << 18;
    bench_dense ignored;
    if (ps_client_create(bench_cluster_coordinator(cl), &pc, err, sizeof err) != PS_STATUS_OK)
        goto out;
    if (bench_case_dense(pc, "d4", 1u << 20, cfg->reps, 0, &f->d4_3, err, sizeof err) !=
            PS_STATUS_OK ||
        bench_case_dense(pc, "d64", 16u << 20, cfg->reps, 0, &f->d64_3, err, sizeof err) !=
            PS_STATUS_OK)
        goto out;
    if (mem_floats > 0) {
        if (bench_case_dense(pc, "model", mem_floats, 1, 0, &ignored, err, sizeof err) !=
            PS_STATUS_OK)
            goto out;
        for (int i = 0; i < 3; i++)
            if (bench_case_dense_add(pc, "model", mem_floats, err, sizeof err) != PS_STATUS_OK)
                goto out;
    }
    if (bench_case_held_bytes(pc, &f->held, err, sizeof err) != PS_STATUS_OK)
        goto out;
    usleep(1500 * 1000); /* steady state: a heartbeat (1 s) returns freed memory */
    f->rss = 0;
    for (int i = 0; i < 3; i++)
        f->rss += bench_cluster_shard_rss(cl, i);
    rc = 0;
out:
    if (rc)
        fail("3 shards", err);
    ps_client_destroy(pc);
    bench_cluster_destroy(cl);
    return rc;
}

static double ratio(double a, double b) {
    return b > 0 ? a / b : 0;
}

static double min2(double a, double b) {
    return a < b ? a : b;
}

static void report(const bench_cfg *cfg, const bench_figures *f) {
    bench_report *r = NULL;
    if (bench_report_create("bench_ps", "parameter-server speed on loopback, against iperf3", &r) !=
        PS_STATUS_OK)
        return;
    bench_report_param(r, "build_dir", "%s", cfg->build_dir);
    bench_report_param(r, "reps", "%d (the best round is reported)", cfg->reps);
    bench_report_param(r, "dense", "tensors of 4 and 64 MiB, chunks of %u floats, ASSIGN",
                       PS_DEFAULT_CHUNK_FLOATS);
    bench_report_param(r, "sparse_rows", "%llu hashed ids, Adagrad",
                       (unsigned long long)cfg->sparse_rows);
    bench_report_param(r, "rtt_calls", "%d", cfg->rtt_calls);
    bench_report_param(r, "mem_mb", "%d (3 shards: uploaded, then 3 full ADDs)", cfg->mem_mb);
    bench_report_param(r, "log_mb", "%d per shard (0: the shard's default)", cfg->log_mb);
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    bench_report_param(r, "cpus", "%d this benchmark and its shards may use", cpus);
    double tcp = cfg->tcp_gbs, log_bytes = (cfg->log_mb ? cfg->log_mb : 64) * MIB * 3;
    double mem_x = cfg->mem_mb > 0 && f->held ? ((double)f->rss - log_bytes) / (double)f->held : 0;
    dense_rows(r, "4 MiB", &f->d4, NULL, NULL);
    dense_rows(r, "64 MiB", &f->d64, "dense_push_gbs", "dense_pull_gbs");
    bench_report_row(r, "iperf3 loopback TCP", tcp, 3, "GB/s", BENCH_TARGET_NONE, 0, "tcp_gbs");
    bench_report_row(r, "64 MiB min(push, pull) / TCP",
                     ratio(min2(f->d64.push_gbs, f->d64.pull_gbs), tcp), 2, "x",
                     BENCH_TARGET_AT_LEAST, 1.2, "dense_vs_tcp");
    bench_report_row(r, "4 MiB min(push, pull) / TCP",
                     ratio(min2(f->d4.push_gbs, f->d4.pull_gbs), tcp), 2, "x",
                     BENCH_TARGET_AT_LEAST, 1.2, "dense4_vs_tcp");
    bench_report_row(r, "sparse Adagrad push, dim 1", f->sparse1.rows_s / 1e6, 2, "M rows/s",
                     BENCH_TARGET_AT_LEAST, 60, "sparse_mrows_s");
    sparse_cpu_rows(r, "dim 1", &f->sparse1, cpus);
    bench_report_row(r, "sparse Adagrad push, dim 16", f->sparse16.rows_s / 1e6, 2, "M rows/s",
                     BENCH_TARGET_NONE, 0, "sparse16_mrows_s");
    sparse_cpu_rows(r, "dim 16", &f->sparse16, cpus);
    bench_report_row(r, "1-float push round trip p50", f->rtt.push_p50, 0, "us",
                     BENCH_TARGET_AT_MOST, 50, "small_rtt_p50_us");
    bench_report_row(r, "1-float push round trip p99", f->rtt.push_p99, 0, "us",
                     BENCH_TARGET_AT_MOST, 150, "small_rtt_p99_us");
    bench_report_row(r, "  empty gRPC call p50 (same run)", f->rtt.grpc_p50, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  empty gRPC call p99 (same run)", f->rtt.grpc_p99, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  raw TCP echo p50 (same run)", f->rtt.tcp_p50, 0, "us", BENCH_TARGET_NONE,
                     0, NULL);
    bench_report_row(r, "  raw TCP echo p99 (same run)", f->rtt.tcp_p99, 0, "us", BENCH_TARGET_NONE,
                     0, NULL);
    bench_report_row(r, "  raw TCP echo, reads polling, p50", f->rtt.tcp_poll_p50, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  raw TCP echo, reads polling, p99", f->rtt.tcp_poll_p99, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  push p50 / empty gRPC call p50", ratio(f->rtt.push_p50, f->rtt.grpc_p50),
                     2, "x", BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  shard CPU per push (same run)", f->rtt.push_shard_cpu_us, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "  shard CPU per empty gRPC call", f->rtt.grpc_shard_cpu_us, 0, "us",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "3 shards: push 4 MiB", f->d4_3.push_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "3 shards: pull 4 MiB", f->d4_3.pull_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "3 shards: push 64 MiB", f->d64_3.push_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "3 shards: pull 64 MiB", f->d64_3.pull_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "3 shards: RSS", (double)f->rss / MIB, 1, "MiB", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "3 shards: data held", (double)f->held / MIB, 1, "MiB", BENCH_TARGET_NONE,
                     0, NULL);
    bench_report_row(r, "3 shards: log bound", log_bytes / MIB, 1, "MiB", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "(RSS - log bound) / data held", mem_x, 2, "x", BENCH_TARGET_AT_MOST, 1.1,
                     "shard_mem_x");
    if (cfg->mem_mb == 0)
        bench_report_note(r, "--mem-mb 0: no model uploaded, shard_mem_x not measured (0)");
    if (tcp <= 0)
        bench_report_note(r, "no --tcp-gbs: the ratios to TCP are 0 (scripts/bench/ps gives it)");
    bench_report_print(r, stdout);
    bench_report_destroy(r);
}

int main(int argc, char **argv) {
    const char *build = NULL, *tcp = NULL;
    bench_cfg cfg = {.reps = 5, .rtt_calls = 5000, .mem_mb = 256, .sparse_rows = 1u << 20};
    const ps_flag flags[] = {
        {"build-dir", PS_FLAG_STRING, &build, 0, 0, "DIR",
         "the build whose ps/ps-shard and ps/ps-coordinator run (default: this program's)", false},
        {"tcp-gbs", PS_FLAG_STRING, &tcp, 0, 0, "GB/S", "iperf3's loopback figure, for ratios",
         false},
        {"reps", PS_FLAG_INT, &cfg.reps, 1, 1000, "N", "rounds per case; the best counts", false},
        {"sparse-rows", PS_FLAG_U64, &cfg.sparse_rows, 1, 1u << 24, "N", "rows per sparse push",
         false},
        {"rtt-calls", PS_FLAG_INT, &cfg.rtt_calls, 10, 1000000, "N", "small pushes timed", false},
        {"mem-mb", PS_FLAG_INT, &cfg.mem_mb, 0, 4096, "N",
         "MiB of model uploaded to the 3 shards before memory is read", false},
        {"log-mb", PS_FLAG_INT, &cfg.log_mb, 0, 1 << 20, "N",
         "the shards' --log-mb (0: their default, 64)", false},
        {"only", PS_FLAG_STRING, &cfg.only, 0, 0, "CASES",
         "run only these cases (comma-separated, of " CASE_NAMES
         "), to profile one; the others show 0",
         false},
    };
    char err[512];
    ps_flags_result fr =
        ps_flags_parse("bench_ps", "Parameter-server speed against clusters it starts on loopback.",
                       flags, sizeof flags / sizeof flags[0], argc, argv, stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    if (build)
        snprintf(cfg.build_dir, sizeof cfg.build_dir, "%s", build);
    else
        bench_cluster_own_build_dir(cfg.build_dir, sizeof cfg.build_dir);
    cfg.tcp_gbs = tcp ? strtod(tcp, NULL) : 0;
    rpc_process_init();
    rpc_tune_allocator();
    bench_figures f = {0};
    if (!only_valid(cfg.only)) {
        fprintf(stderr, "bench_ps: --only %s: the cases are %s\n", cfg.only, CASE_NAMES);
        return 2;
    }
    bool one = wanted(&cfg, "dense4") || wanted(&cfg, "dense64") || wanted(&cfg, "sparse1") ||
               wanted(&cfg, "sparse16") || wanted(&cfg, "rtt");
    if ((one && run_one_shard(&cfg, &f) != 0) ||
        (wanted(&cfg, "three") && run_three_shards(&cfg, &f) != 0))
        return 1;
    report(&cfg, &f);
    return 0;
}
