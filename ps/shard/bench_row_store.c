/* bench_row_store.c: benchmark of the shard's row store (a program, not a test).
 *
 * Measures Adagrad PushRows throughput in the process, no network: a table of dim D
 * already holding --rows rows gets pushes of all of them, --batch rows per push (at
 * most SHARD_MAX_KEYS_PER_REQUEST, a request's limit), gradients prepared beforehand.
 *   dimD_seq       ids 0..rows-1 in the order the rows were made (rows in memory order)
 *   dimD_shuffled  the same ids in a random order (rows all over the slabs)
 * Each figure is rows / wall time of one pass over every row (all the pushes, checks
 * and scratch allocations included), the best of --reps passes (CLOCK_MONOTONIC).
 * Check: every row has had exactly one step per pass, and its weight is finite.
 * Output: the layout of ps/common/bench_report.h. Exit 1 when a push fails or a check
 * does not hold, 2 on bad arguments or setup failures.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_report.h"
#include "row_store.h"
#include "util.h"
#include "shard_limits.h"

typedef struct bench_opts {
    uint64_t rows, batch, reps, seed, dim;
} bench_opts;

static int parse_args(int argc, char **argv, bench_opts *o) {
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s [--rows N] [--batch B] [--reps R] [--seed S] [--dim D]\n"
                   "  --rows N   rows in the table and per pass (default 1048576)\n"
                   "  --batch B  rows per push, at most %u (default %u)\n"
                   "  --reps R   passes timed, the best is kept (default 5)\n"
                   "  --seed S   gradients and shuffle (default 1)\n"
                   "  --dim D    measure dim D only (default: 1, then 16)\n",
                   argv[0], SHARD_MAX_KEYS_PER_REQUEST, SHARD_MAX_KEYS_PER_REQUEST);
            return 1;
        }
        if (!((!strcmp(a, "--rows") && ps_parse_u64_range(v, 1, 1u << 28, &o->rows)) ||
              (!strcmp(a, "--batch") &&
               ps_parse_u64_range(v, 1, SHARD_MAX_KEYS_PER_REQUEST, &o->batch)) ||
              (!strcmp(a, "--reps") && ps_parse_u64_range(v, 1, 1000, &o->reps)) ||
              (!strcmp(a, "--seed") && ps_parse_u64_range(v, 0, UINT64_MAX, &o->seed)) ||
              (!strcmp(a, "--dim") && ps_parse_u64_range(v, 1, TABLE_MAX_DIM, &o->dim)))) {
            fprintf(stderr, "%s: bad argument '%s' (see --help)\n", argv[0], a);
            return -1;
        }
    }
    return 0;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pushes every row once, batch by batch; the wall time or -1 when a push fails. */
static double pass(row_store *rs, const row_push *base, const bench_opts *o, const uint64_t *ids,
                   const float *grads, uint32_t dim) {
    char err[512];
    double t0 = now_s();
    for (uint64_t at = 0; at < o->rows; at += o->batch) {
        row_push p = *base;
        p.n = o->rows - at < o->batch ? o->rows - at : o->batch;
        p.ids = ids + at;
        p.values = (const uint8_t *)(grads + at * dim);
        p.values_len = p.n * dim * sizeof(float);
        if (row_store_push(rs, &p, NULL, NULL, err, sizeof err) != PS_STATUS_OK) {
            fprintf(stderr, "push failed: %s\n", err);
            return -1;
        }
    }
    return now_s() - t0;
}

/* Makes the table, times seq and shuffled passes; false when something failed. */
static bool run_dim(bench_report *rep, const bench_opts *o, uint32_t dim, const uint64_t *seq,
                    const uint64_t *shuffled) {
    bool ok = false;
    row_store *rs = NULL;
    row_store_opts ropts = {.name = "bench"};
    float *grads = malloc(o->rows * dim * sizeof(float));
    float *out = malloc(o->batch * dim * sizeof(float));
    uint64_t *steps = malloc(o->batch * sizeof(uint64_t));
    if (!grads || !out || !steps || row_store_create(&ropts, &rs) != PS_STATUS_OK)
        goto done;
    uint64_t rng = o->seed;
    for (uint64_t i = 0; i < o->rows * dim; i++)
        grads[i] = (float)((splitmix64(&rng) >> 40) / 16777216.0 - 0.5);
    table_spec spec = {.dim = dim,
                       .init = TABLE_INIT_UNIFORM,
                       .init_scale = 0.01f,
                       .seed = 7,
                       .optimizer = OPTIM_ADAGRAD};
    optim_spec adagrad;
    optim_spec_defaults(OPTIM_ADAGRAD, &adagrad);
    char err[512];
    for (uint64_t at = 0; at < o->rows; at += o->batch) { /* make every row */
        size_t n = o->rows - at < o->batch ? o->rows - at : o->batch;
        if (row_store_pull(rs, "bench", "emb", &spec, n, seq + at, out, NULL, NULL, NULL, err,
                           sizeof err) != PS_STATUS_OK) {
            fprintf(stderr, "pull failed: %s\n", err);
            goto done;
        }
    }
    row_push base = {.model = "bench",
                     .table = "emb",
                     .spec = &spec,
                     .op = ROW_OP_OPTIMIZE,
                     .optimizer = &adagrad};
    const uint64_t *orders[2] = {seq, shuffled};
    const char *names[2] = {"seq", "shuffled"};
    for (int k = 0; k < 2; k++) {
        double best = 1e300;
        for (uint64_t r = 0; r < o->reps; r++) {
            double t = pass(rs, &base, o, orders[k], grads, dim);
            if (t < 0)
                goto done;
            best = t < best ? t : best;
        }
        char row[64], key[64];
        snprintf(row, sizeof row, "dim%u_%s", dim, names[k]);
        snprintf(key, sizeof key, "dim%u_%s_mrows_s", dim, names[k]);
        bench_report_row(rep, row, (double)o->rows / best / 1e6, 2, "Mrows/s",
                         dim == 1 ? BENCH_TARGET_AT_LEAST : BENCH_TARGET_NONE, 60, key);
    }
    size_t n = o->rows < o->batch ? o->rows : o->batch; /* check the first rows */
    if (row_store_pull(rs, "bench", "emb", &spec, n, seq, out, NULL, steps, NULL, err,
                       sizeof err) != PS_STATUS_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (steps[i] != 2 * o->reps || !isfinite(out[i * dim])) {
            fprintf(stderr, "row %zu has %" PRIu64 " steps, want %" PRIu64 "\n", i, steps[i],
                    2 * o->reps);
            goto done;
        }
    }
    ok = true;
done:
    row_store_destroy(rs);
    free(grads);
    free(out);
    free(steps);
    return ok;
}

int main(int argc, char **argv) {
    bench_opts o = {.rows = 1u << 20, .batch = SHARD_MAX_KEYS_PER_REQUEST, .reps = 5, .seed = 1};
    int prc = parse_args(argc, argv, &o);
    if (prc)
        return prc > 0 ? 0 : 2;
    uint64_t *seq = malloc(o.rows * sizeof *seq), *shuffled = malloc(o.rows * sizeof *shuffled);
    bench_report *rep = NULL;
    if (!seq || !shuffled ||
        bench_report_create("bench_row_store", "Adagrad row pushes into a full table, in process",
                            &rep) != PS_STATUS_OK) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 2;
    }
    uint64_t rng = o.seed;
    for (uint64_t i = 0; i < o.rows; i++)
        seq[i] = shuffled[i] = i;
    for (uint64_t i = o.rows - 1; i > 0; i--) { /* Fisher-Yates */
        uint64_t j = splitmix64(&rng) % (i + 1), t = shuffled[i];
        shuffled[i] = shuffled[j];
        shuffled[j] = t;
    }
    bench_report_param(rep, "rows", "%" PRIu64, o.rows);
    bench_report_param(rep, "batch", "%" PRIu64 " rows per push", o.batch);
    bench_report_param(rep, "reps", "%" PRIu64 " (best pass kept)", o.reps);
    bench_report_param(rep, "optimizer", "adagrad (defaults), init uniform 0.01");
    bool ok = o.dim ? run_dim(rep, &o, (uint32_t)o.dim, seq, shuffled)
                    : run_dim(rep, &o, 1, seq, shuffled) && run_dim(rep, &o, 16, seq, shuffled);
    int rc = ok ? 0 : 1;
    bench_report_print(rep, stdout);
    bench_report_destroy(rep);
    free(seq);
    free(shuffled);
    return rc;
}
