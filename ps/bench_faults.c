/* bench_faults.c: what faults and membership changes cost the parameter servers, on
 * clusters it starts itself on loopback (issue 8's benchmark): the failover time from
 * kill -9 of a primary to pushes succeeding again (1 s heartbeats) and the acknowledged
 * pushes lost across the kill; push throughput with R = 2 and --fsync group against
 * R = 1 and --fsync none in the same run; the time and the bytes to add a fourth shard
 * to a ring holding --add-mb MiB (1 GiB by default). scripts/bench/faults runs it;
 * scripts/bench/README.md says how every figure is computed. Exit status 1 when a call
 * failed for good, an acknowledged push was lost or applied twice, pushes never
 * succeeded again after the kill, or data differed after the add. Last line:
 * RESULT failover_ms=... lost=... r2_group_vs_r1_none=... add_node_s=... moved_bytes_x=...
 * (na for a figure not measured).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_faults_cases.h"
#include "bench_ps_cluster.h"
#include "bench_report.h"
#include "flags.h"
#include "util.h"

#define MIB (1024.0 * 1024.0)

/* What the three cases found; a case that failed has ok = false. */
typedef struct bench_faults_figures {
    bench_failover fail;
    bench_throughput tput;
    bench_add_node add;
    bool fail_ok, tput_ok, add_ok;
} bench_faults_figures;

/* Which cases run (--cases). */
typedef struct bench_faults_cases {
    bool failover, throughput, add;
} bench_faults_cases;

/* "%.*f" of v into buf, or "na". */
static const char *fmt_or_na(char *buf, size_t cap, bool measured, int decimals, double v) {
    if (!measured)
        return "na";
    snprintf(buf, cap, "%.*f", decimals, v);
    return buf;
}

static void rows_failover(bench_report *r, const bench_faults_cases *which,
                          const bench_faults_figures *f) {
    const bench_failover *x = &f->fail;
    if (!which->failover)
        bench_report_note(r, "failover: not in --cases, not measured");
    if (!which->failover || !f->fail_ok)
        return;
    bench_report_note(r, "failover: killed %s, primary of %llu of %llu chunks", x->victim,
                      (unsigned long long)x->victim_chunks, (unsigned long long)x->chunks);
    if (x->measured)
        bench_report_row(r, "failover: kill -9 to push ok", x->failover_ms, 0, "ms",
                         BENCH_TARGET_AT_MOST, 2000, NULL);
    bench_report_row(r, "failover: longest ack gap", x->longest_gap_ms, 0, "ms", BENCH_TARGET_NONE,
                     0, NULL);
    bench_report_row(r, "failover: pushes acknowledged", (double)x->acked_pushes, 0, "pushes",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "failover: pushes failed", (double)x->failed_pushes, 0, "pushes",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "failover: acked chunk updates", (double)x->tally.acked, 0, "updates",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "failover: lost (acked - value)", (double)x->tally.lost, 0, "updates",
                     BENCH_TARGET_EQUAL, 0, NULL);
    bench_report_row(r, "failover: applied, not acked", (double)x->tally.unacked, 0, "updates",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "failover: applied twice", (double)x->tally.duplicated, 0, "updates",
                     BENCH_TARGET_EQUAL, 0, NULL);
    bench_report_row(r, "failover: torn chunks", (double)x->tally.torn, 0, "chunks",
                     BENCH_TARGET_EQUAL, 0, NULL);
    if (x->note[0])
        bench_report_note(r, "failover: %s", x->note);
}

static void rows_throughput(bench_report *r, const bench_faults_cases *which,
                            const bench_faults_figures *f) {
    const bench_throughput *x = &f->tput;
    if (!which->throughput)
        bench_report_note(r, "throughput: not in --cases, not measured");
    if (!which->throughput || !f->tput_ok)
        return;
    bench_report_row(r, "push R=2 --fsync group", x->r2_group_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "push R=1 --fsync none", x->r1_none_gbs, 3, "GB/s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "R=2 group / R=1 none",
                     x->r1_none_gbs > 0 ? x->r2_group_gbs / x->r1_none_gbs : 0, 2, "x",
                     BENCH_TARGET_AT_LEAST, 0.5, NULL);
}

static void rows_add(bench_report *r, const bench_faults_cases *which,
                     const bench_faults_figures *f) {
    const bench_add_node *x = &f->add;
    if (!which->add)
        bench_report_note(r, "add: not in --cases, not measured");
    if (!which->add || !f->add_ok)
        return;
    bench_report_row(r, "add: bytes on 3 shards", (double)x->ring_bytes / MIB, 1, "MiB",
                     BENCH_TARGET_NONE, 0, NULL);
    if (!x->measured) {
        bench_report_note(r, "add: not measured: %s", x->note);
        return;
    }
    bench_report_row(r, "add: AddNode to ring holds it", x->add_s, 2, "s", BENCH_TARGET_NONE, 0,
                     NULL);
    bench_report_row(r, "add: new shard holds", (double)x->new_shard_bytes / MIB, 1, "MiB",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "add: ideal (bytes on 3 / 4)", (double)x->ring_bytes / 4 / MIB, 1, "MiB",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "add: bytes on 4 shards after", (double)x->after_bytes / MIB, 1, "MiB",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "add: moved (sync images sent)", (double)x->moved_bytes / MIB, 1, "MiB",
                     BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(r, "add: moved / ideal", x->moved_x, 2, "x", BENCH_TARGET_AT_MOST, 1.1, NULL);
    bench_report_row(r, "add: floats checked after", (double)x->checked_floats, 0, "floats",
                     BENCH_TARGET_NONE, 0, NULL);
    if (x->note[0])
        bench_report_note(r, "add: %s", x->note);
    bench_report_note(r, "add: moved = the growth of the old shards' Health repl_sync_bytes "
                         "over the add (image bytes their syncs sent)");
}

/* The report, then the RESULT line in the order with "na" where a figure was
 * not measured (bench_report's own RESULT line, empty here, is left out). */
static void report(const bench_faults_cfg *cfg, const bench_faults_cases *which,
                   const bench_faults_figures *f) {
    bench_report *r = NULL;
    if (bench_report_create("bench_faults", "failover, replication cost and adding a node", &r) !=
        PS_STATUS_OK)
        return;
    bench_report_param(r, "build_dir", "%s", cfg->build_dir);
    bench_report_param(r, "failover", "3 shards, R=2, --data-dir, --fsync group, heartbeat %d ms",
                       cfg->heartbeat_ms);
    bench_report_param(r, "fail_tensor", "%llu floats (%llu chunks), ADD 1.0 per push",
                       (unsigned long long)cfg->fail_floats,
                       (unsigned long long)((cfg->fail_floats + PS_DEFAULT_CHUNK_FLOATS - 1) /
                                            PS_DEFAULT_CHUNK_FLOATS));
    bench_report_param(r, "warmup/after", "%d acknowledged pushes before the kill, %d after",
                       cfg->warmup_pushes, cfg->after_pushes);
    bench_report_param(r, "throughput",
                       "3 shards each, --data-dir, %.0f MiB tensor, best of %d ADDs (interleaved)",
                       (double)cfg->tput_floats * 4 / MIB, cfg->reps);
    bench_report_param(r, "add_mb", "%d MiB on 3 shards (R: the coordinator's default), %s tokens",
                       cfg->add_mb, cfg->balanced ? "balanced" : "hashed");
    rows_failover(r, which, f);
    rows_throughput(r, which, f);
    rows_add(r, which, f);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem) {
        bench_report_print(r, mem);
        fclose(mem);
        char *last = len > 0 ? strstr(text, "\nRESULT") : NULL;
        if (last)
            last[1] = '\0';
        fputs(text, stdout);
        free(text);
    }
    bench_report_destroy(r);
    char a[32], b[32], c[32], d[32], e[32];
    const bench_throughput *t = &f->tput;
    printf("RESULT failover_ms=%s lost=%s r2_group_vs_r1_none=%s add_node_s=%s moved_bytes_x=%s\n",
           fmt_or_na(a, sizeof a, which->failover && f->fail_ok && f->fail.measured, 0,
                     f->fail.failover_ms),
           fmt_or_na(b, sizeof b, which->failover && f->fail_ok, 0, (double)f->fail.tally.lost),
           fmt_or_na(c, sizeof c, which->throughput && f->tput_ok && t->r1_none_gbs > 0, 2,
                     t->r1_none_gbs > 0 ? t->r2_group_gbs / t->r1_none_gbs : 0),
           fmt_or_na(d, sizeof d, which->add && f->add_ok && f->add.measured, 2, f->add.add_s),
           fmt_or_na(e, sizeof e, which->add && f->add_ok && f->add.measured, 2, f->add.moved_x));
    fflush(stdout);
}

/* Parses --cases ("failover,throughput,add" or any of them); false on an unknown name. */
static bool parse_cases(const char *list, bench_faults_cases *ret) {
    bench_faults_cases w = {0};
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "failover") == 0)
            w.failover = true;
        else if (strcmp(tok, "throughput") == 0)
            w.throughput = true;
        else if (strcmp(tok, "add") == 0)
            w.add = true;
        else
            return false;
    }
    *ret = w;
    return true;
}

/* Runs the chosen cases (each even when one before it failed) and reports; the exit
 * status. */
static int run(const bench_faults_cfg *cfg, const bench_faults_cases *which) {
    bench_faults_figures f = {0};
    char err[1024];
    if (which->failover &&
        !(f.fail_ok = bench_faults_failover(cfg, &f.fail, err, sizeof err) == PS_STATUS_OK))
        fprintf(stderr, "bench_faults: failover: %s\n", err);
    if (which->throughput &&
        !(f.tput_ok = bench_faults_throughput(cfg, &f.tput, err, sizeof err) == PS_STATUS_OK))
        fprintf(stderr, "bench_faults: throughput: %s\n", err);
    if (which->add &&
        !(f.add_ok = bench_faults_add_node(cfg, &f.add, err, sizeof err) == PS_STATUS_OK))
        fprintf(stderr, "bench_faults: add a node: %s\n", err);
    if (which->add && f.add_ok && !f.add.measured)
        fprintf(stderr, "bench_faults: add a node: not measured: %s\n", f.add.note);
    report(cfg, which, &f);
    const bench_tally *t = &f.fail.tally;
    bool wrong =
        which->failover && (!f.fail_ok || !f.fail.measured || t->lost || t->duplicated || t->torn);
    wrong = wrong || (which->throughput && !f.tput_ok) || (which->add && !f.add_ok);
    return wrong ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *build = NULL, *cases = "failover,throughput,add";
    int fail_chunks = 12, tput_mb = 64;
    bool hashed = false;
    bench_faults_cfg cfg = {.heartbeat_ms = 1000,
                            .warmup_pushes = 20,
                            .after_pushes = 20,
                            .fail_timeout_s = 60,
                            .reps = 5,
                            .add_mb = 1024,
                            .add_timeout_s = 300};
    const ps_flag flags[] = {
        {"build-dir", PS_FLAG_STRING, &build, 0, 0, "DIR",
         "the build whose ps/ps-shard and ps/ps-coordinator run (default: this program's)", false},
        {"heartbeat-ms", PS_FLAG_INT, &cfg.heartbeat_ms, 10, 600000, "N",
         "the coordinator's --heartbeat-ms in the failover case", false},
        {"fail-chunks", PS_FLAG_INT, &fail_chunks, 2, 1024, "N",
         "chunks (64 Ki floats each) of the tensor the failover case ADDs to", false},
        {"warmup", PS_FLAG_INT, &cfg.warmup_pushes, 1, 100000, "N",
         "acknowledged pushes before the kill", false},
        {"after", PS_FLAG_INT, &cfg.after_pushes, 1, 100000, "N",
         "acknowledged pushes started after the kill before the pusher stops", false},
        {"fail-timeout-s", PS_FLAG_INT, &cfg.fail_timeout_s, 1, 3600, "S",
         "the pusher stops this long after the kill regardless", false},
        {"tput-mb", PS_FLAG_INT, &tput_mb, 1, (int)(BENCH_FAULTS_TENSOR_MAX_FLOATS >> 18), "N",
         "MiB of the tensor the throughput case pushes", false},
        {"reps", PS_FLAG_INT, &cfg.reps, 1, 1000, "N", "timed ADDs per throughput cluster", false},
        {"cases", PS_FLAG_STRING, &cases, 0, 0, "LIST",
         "the cases to run, comma-separated: failover,throughput,add", false},
        {"add-mb", PS_FLAG_INT, &cfg.add_mb, 1, 65536, "N",
         "MiB on the 3 shards before the fourth is added", false},
        {"hashed", PS_FLAG_BOOL, &hashed, 0, 0, NULL,
         "the fourth shard takes hashed positions (plain psctl ring add) instead of balanced "
         "tokens (psctl ring add --balanced)",
         false},
        {"add-timeout-s", PS_FLAG_INT, &cfg.add_timeout_s, 1, 36000, "S",
         "how long an accepted AddNode may take to put the shard on the ring", false},
    };
    char err[512];
    ps_flags_result fr = ps_flags_parse(
        "bench_faults", "Failover, replication cost and adding a node, on clusters it starts.",
        flags, sizeof flags / sizeof flags[0], argc, argv, stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    bench_faults_cases which;
    if (!parse_cases(cases, &which)) {
        fprintf(stderr, "bench_faults: --cases wants failover, throughput and/or add, got '%s'\n",
                cases);
        return PS_FLAGS_EXIT_USAGE;
    }
    if (build)
        snprintf(cfg.build_dir, sizeof cfg.build_dir, "%s", build);
    else
        bench_cluster_own_build_dir(cfg.build_dir, sizeof cfg.build_dir);
    cfg.balanced = !hashed;
    cfg.fail_floats = (uint64_t)fail_chunks * PS_DEFAULT_CHUNK_FLOATS;
    cfg.tput_floats = (uint64_t)tput_mb << 18;
    rpc_process_init();
    rpc_tune_allocator();
    return run(&cfg, &which);
}
