/* bench_hashring.c: benchmark of the consistent-hash ring (a program, not a test).
 *
 * Measures what placement costs on the request path and how well the ring spreads and
 * moves keys, in the layout every benchmark of the project shares (nccl-tests style):
 * a `#` header with every parameter, one fixed-width row per measurement with its
 * target and an ok/MISS column, and a last `RESULT key=value ...` line.
 *
 *   lookup_ns      batched hashring_primary over K random 64-bit keys, the key hash
 *                  (hashring_hash of the 8 key bytes) inside the timed loop: lookups of
 *                  different keys may overlap in the CPU, so this is throughput.
 *   lookup_lat_ns  the same, but each key is derived from the previous key and the
 *                  previous lookup's result, so lookups cannot overlap: latency.
 *   owners3_ns     batched hashring_owners with R = 3, hash included.
 *   peak_to_mean   the busiest node's key count over the mean, over the K keys.
 *   moved_add_x    fraction of keys whose primary changes when an (N+1)th node joins,
 *                  over the ideal 1/(N+1).
 *   moved_remove_x fraction of keys whose primary changes when one node leaves, over
 *                  the ideal 1/N.
 *   moved_between_unchanged  keys that moved between two nodes present both before and
 *                  after a change (add or remove); consistent hashing requires 0.
 *   balance_N_hashed / balance_N_balanced  exact primary peak/mean (hashring_ownership)
 *                  of a ring of N = 4, 10, 32 members of weight 1 grown with hashed
 *                  positions / with balanced tokens (hashring_alloc.h); a note line
 *                  gives r = 2 and r = 3 for both. Not timed.
 *
 * Timings use CLOCK_MONOTONIC, repeat --reps times and keep the best run (the machine
 * is shared and noisy); results are summed into a volatile so no lookup is optimized
 * away. Exit status: 0 when the correctness checks pass (timing targets are reported,
 * not enforced), 1 when a check fails, 2 on bad arguments or setup failures.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_report.h"
#include "hashring.h"
#include "hashring_alloc.h"

/* ------------------------------------------------------------------------------------ */
/* Command line */

typedef struct bench_opts {
    uint32_t nodes;
    uint32_t vnodes;
    uint64_t keys;
    uint64_t seed;
    uint32_t reps;
} bench_opts;

static void usage(FILE *out, const char *prog) {
    fprintf(out,
            "usage: %s [--nodes N] [--vnodes V] [--keys K] [--seed S] [--reps R]\n"
            "\n"
            "Benchmarks the consistent-hash ring: lookup throughput and latency (key hash\n"
            "included), owner lists (R=3), load balance and key movement on add/remove.\n"
            "\n"
            "  --nodes N    ring members, weight 1 each (default 10, at least 2)\n"
            "  --vnodes V   vnodes per weight unit (default 1000)\n"
            "  --keys K     random 64-bit keys per measurement (default 10000000)\n"
            "  --seed S     seed of the key generator (default 1)\n"
            "  --reps R     timing repetitions, the best is kept (default 5)\n"
            "  --help       this text\n"
            "\n"
            "Prints a '#' header, one row per measurement (name, value, unit, target,\n"
            "ok/MISS) and a last line 'RESULT key=value ...'. Exits 1 if a correctness\n"
            "check fails (e.g. a key moved between two unchanged nodes).\n",
            prog);
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
    if (s == NULL || *s == 0 || *s == '-') {
        return false;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || *end != 0 || v < min || v > max) {
        return false;
    }
    *ret = v;
    return true;
}

/* 0: run; 1: --help shown; -1: bad arguments (reported). */
static int parse_args(int argc, char **argv, bench_opts *o) {
    for (int i = 1; i < argc; i += 2) { /* every option but --help takes a value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, argv[0]);
            return 1;
        } else if (strcmp(a, "--nodes") == 0 && parse_u64(v, 2, HASHRING_MAX_NODES - 1, &x)) {
            o->nodes = (uint32_t)x;
        } else if (strcmp(a, "--vnodes") == 0 && parse_u64(v, 1, HASHRING_MAX_POINTS, &x)) {
            o->vnodes = (uint32_t)x;
        } else if (strcmp(a, "--keys") == 0 && parse_u64(v, 1, UINT64_C(1) << 32, &x)) {
            o->keys = x;
        } else if (strcmp(a, "--seed") == 0 && parse_u64(v, 0, UINT64_MAX, &x)) {
            o->seed = x;
        } else if (strcmp(a, "--reps") == 0 && parse_u64(v, 1, 1000, &x)) {
            o->reps = (uint32_t)x;
        } else {
            fprintf(stderr, "%s: bad argument '%s'%s%s%s (see --help)\n", argv[0], a, v ? " '" : "",
                    v ? v : "", v ? "'" : "");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile uint64_t sink; /* every timed loop's results end here */

static void node_name(uint32_t i, char *id, size_t id_cap, char *addr, size_t addr_cap) {
    snprintf(id, id_cap, "node-%03" PRIu32, i);
    snprintf(addr, addr_cap, "10.0.%" PRIu32 ".%" PRIu32 ":7000", i / 250, i % 250 + 1);
}

/* map[i] = index in `to` of member i of `from`, UINT32_MAX when `to` lacks it. */
static uint32_t *index_map(const hashring *from, const hashring *to) {
    const uint32_t n = hashring_node_count(from);
    uint32_t *map = malloc(((size_t)n + 1) * sizeof(*map));
    if (map == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        hashring_node_info info;
        if (!hashring_node_at(from, i, &info) || !hashring_find(to, info.id, &map[i])) {
            map[i] = UINT32_MAX;
        }
    }
    return map;
}

/* ------------------------------------------------------------------------------------ */
/* Measurements */

/* Grows two rings to `nodes` members, hashed and balanced, and writes their peak/mean
 * for r = 1..3 (index r - 1). */
static ps_status balance_of(uint32_t nodes, uint32_t vnodes, double hashed[3], double balanced[3]) {
    hashring *h = NULL;
    hashring *b = NULL;
    char id[64];
    char addr[64];
    ps_status st = hashring_create(vnodes, &h);
    if (st == PS_STATUS_OK) {
        st = hashring_create(vnodes, &b);
    }
    for (uint32_t i = 0; st == PS_STATUS_OK && i < nodes; i++) {
        node_name(i, id, sizeof(id), addr, sizeof(addr));
        uint64_t *tokens = NULL;
        uint32_t n = 0;
        st = hashring_add(h, id, addr, 1);
        if (st == PS_STATUS_OK) {
            st = hashring_alloc_tokens(b, id, 1, &tokens, &n);
        }
        if (st == PS_STATUS_OK) {
            st = hashring_add_tokens(b, id, addr, 1, tokens, n);
        }
        free(tokens);
    }
    for (uint32_t r = 1; st == PS_STATUS_OK && r <= 3; r++) {
        st = hashring_ownership(h, r, NULL, &hashed[r - 1]);
        if (st == PS_STATUS_OK) {
            st = hashring_ownership(b, r, NULL, &balanced[r - 1]);
        }
    }
    hashring_destroy(h);
    hashring_destroy(b);
    return st;
}

static double time_lookup(const hashring *ring, const uint64_t *keys, uint64_t n) {
    uint64_t sum = 0;
    const double t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        sum += hashring_primary(ring, hashring_hash(&keys[i], sizeof(keys[i])));
    }
    const double t1 = now_ns();
    sink += sum;
    return (t1 - t0) / (double)n;
}

static double time_lookup_latency(const hashring *ring, const uint64_t *keys, uint64_t n) {
    uint64_t k = keys[0];
    uint64_t sum = 0;
    const double t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t owner = hashring_primary(ring, hashring_hash(&k, sizeof(k)));
        sum += owner;
        k = (k ^ keys[i]) + owner; /* the next key needs this lookup's result */
    }
    const double t1 = now_ns();
    sink += sum + k;
    return (t1 - t0) / (double)n;
}

static double time_owners3(const hashring *ring, const uint64_t *keys, uint64_t n) {
    uint64_t sum = 0;
    uint32_t owners[3];
    const double t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t got =
            hashring_owners(ring, hashring_hash(&keys[i], sizeof(keys[i])), 3, owners);
        sum += got + owners[0] + owners[1] + owners[2];
    }
    const double t1 = now_ns();
    sink += sum;
    return (t1 - t0) / (double)n;
}

typedef double (*timed_fn)(const hashring *, const uint64_t *, uint64_t);

static double best_of(timed_fn fn, const hashring *ring, const uint64_t *keys, uint64_t n,
                      uint32_t reps) {
    double best = 1e300;
    for (uint32_t r = 0; r < reps; r++) {
        const double t = fn(ring, keys, n);
        best = t < best ? t : best;
    }
    return best;
}

/* Primaries of all keys (uint16: node indices are below HASHRING_MAX_NODES). */
static void primaries(const hashring *ring, const uint64_t *keys, uint64_t n, uint16_t *out) {
    for (uint64_t i = 0; i < n; i++) {
        out[i] = (uint16_t)hashring_primary(ring, hashring_hash(&keys[i], sizeof(keys[i])));
    }
}

/* Counts keys whose primary differs between `before` and `after` (by member id), and
 * among them those that moved between two members present in both rings. */
static void count_moves(const hashring *before, const hashring *after, const uint16_t *pb,
                        const uint16_t *pa, uint64_t n, uint64_t *ret_moved,
                        uint64_t *ret_between) {
    uint32_t *fwd = index_map(before, after);
    uint32_t *back = index_map(after, before);
    uint64_t moved = 0;
    uint64_t between = 0;
    if (fwd == NULL || back == NULL) {
        moved = between = UINT64_MAX;
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t from = fwd[pb[i]]; /* old primary as an index of `after` */
        if (from != pa[i]) {
            moved++;
            /* both ends unchanged: the old primary is still a member and the new one
             * already was */
            if (from != UINT32_MAX && back[pa[i]] != UINT32_MAX) {
                between++;
            }
        }
    }
done:
    free(fwd);
    free(back);
    *ret_moved = moved;
    *ret_between = between;
}

int main(int argc, char **argv) {
    bench_opts o = {.nodes = 10, .vnodes = 1000, .keys = 10000000, .seed = 1, .reps = 5};
    const int pa_rc = parse_args(argc, argv, &o);
    if (pa_rc != 0) {
        return pa_rc > 0 ? 0 : 2;
    }
    if ((uint64_t)(o.nodes + 1) * o.vnodes > HASHRING_MAX_POINTS) {
        fprintf(stderr, "%s: nodes+1 times vnodes exceeds %u points\n", argv[0],
                HASHRING_MAX_POINTS);
        return 2;
    }

    int rc = 2;
    bench_report *rep = NULL;
    hashring *ring = NULL;
    hashring *grown = NULL;
    hashring *shrunk = NULL;
    uint64_t *keys = malloc(o.keys * sizeof(*keys));
    uint16_t *p_base = malloc(o.keys * sizeof(*p_base));
    uint16_t *p_other = malloc(o.keys * sizeof(*p_other));
    uint64_t *counts = calloc(o.nodes, sizeof(*counts));
    if (keys == NULL || p_base == NULL || p_other == NULL || counts == NULL) {
        fprintf(stderr, "%s: out of memory for %" PRIu64 " keys\n", argv[0], o.keys);
        goto out;
    }
    uint64_t rng = o.seed;
    for (uint64_t i = 0; i < o.keys; i++) {
        keys[i] = splitmix64(&rng);
    }

    char id[64];
    char addr[64];
    ps_status st = hashring_create(o.vnodes, &ring);
    for (uint32_t i = 0; st == PS_STATUS_OK && i < o.nodes; i++) {
        node_name(i, id, sizeof(id), addr, sizeof(addr));
        st = hashring_add(ring, id, addr, 1);
    }
    if (st != PS_STATUS_OK) {
        fprintf(stderr, "%s: building the ring: %s\n", argv[0], ps_status_str(st));
        goto out;
    }

    if (bench_report_create("bench_hashring",
                            "consistent-hash ring lookups, balance and key movement",
                            &rep) != PS_STATUS_OK) {
        goto out;
    }
    bench_report_param(rep, "nodes", "%" PRIu32, o.nodes);
    bench_report_param(rep, "vnodes_per_weight", "%" PRIu32, o.vnodes);
    bench_report_param(rep, "points", "%" PRIu64, (uint64_t)o.nodes * o.vnodes);
    bench_report_param(rep, "keys", "%" PRIu64, o.keys);
    bench_report_param(rep, "seed", "%" PRIu64, o.seed);
    bench_report_param(rep, "reps", "%" PRIu32 " (time: best of reps, CLOCK_MONOTONIC)", o.reps);
    bench_report_param(rep, "replicas", "3 (owners3)");
    bench_report_param(rep, "add", "node-%03" PRIu32, o.nodes);
    bench_report_param(rep, "remove", "node-%03" PRIu64, o.seed % o.nodes);

    /* ring rebuild cost: clone + add one node, best of reps */
    double build_ms = 1e300;
    for (uint32_t r = 0; r < o.reps; r++) {
        hashring *tmp = NULL;
        const double t0 = now_ns();
        st = hashring_clone(ring, &tmp);
        if (st == PS_STATUS_OK) {
            node_name(o.nodes, id, sizeof(id), addr, sizeof(addr));
            st = hashring_add(tmp, id, addr, 1);
        }
        const double t1 = now_ns();
        hashring_destroy(tmp);
        if (st != PS_STATUS_OK) {
            fprintf(stderr, "%s: clone + add: %s\n", argv[0], ps_status_str(st));
            goto out;
        }
        build_ms = (t1 - t0) / 1e6 < build_ms ? (t1 - t0) / 1e6 : build_ms;
    }

    const double lookup_ns = best_of(time_lookup, ring, keys, o.keys, o.reps);
    const double lookup_lat_ns = best_of(time_lookup_latency, ring, keys, o.keys, o.reps);
    const double owners3_ns = best_of(time_owners3, ring, keys, o.keys, o.reps);

    /* correctness: owner lists agree with primaries, distinct, in range */
    rc = 1;
    uint64_t check_rng = o.seed ^ UINT64_C(0x5bd1e995);
    for (int i = 0; i < 100000; i++) {
        const uint64_t h = splitmix64(&check_rng);
        uint32_t owners[3];
        const uint32_t want = o.nodes < 3 ? o.nodes : 3;
        if (hashring_owners(ring, h, 3, owners) != want || owners[0] != hashring_primary(ring, h) ||
            owners[0] >= o.nodes || (want > 1 && owners[1] == owners[0]) ||
            (want > 2 && (owners[2] == owners[0] || owners[2] == owners[1]))) {
            fprintf(stderr, "%s: owner list check failed for hash %016" PRIx64 "\n", argv[0], h);
            goto out;
        }
    }

    /* balance */
    primaries(ring, keys, o.keys, p_base);
    for (uint64_t i = 0; i < o.keys; i++) {
        if (p_base[i] >= o.nodes) {
            fprintf(stderr, "%s: primary %u out of range\n", argv[0], (unsigned)p_base[i]);
            goto out;
        }
        counts[p_base[i]]++;
    }
    uint64_t peak = 0;
    for (uint32_t i = 0; i < o.nodes; i++) {
        peak = counts[i] > peak ? counts[i] : peak;
    }
    const double peak_to_mean = (double)peak / ((double)o.keys / o.nodes);

    /* movement on adding node N and on removing node seed % N */
    rc = 2;
    st = hashring_clone(ring, &grown);
    if (st == PS_STATUS_OK) {
        node_name(o.nodes, id, sizeof(id), addr, sizeof(addr));
        st = hashring_add(grown, id, addr, 1);
    }
    if (st == PS_STATUS_OK) {
        st = hashring_clone(ring, &shrunk);
    }
    if (st == PS_STATUS_OK) {
        node_name((uint32_t)(o.seed % o.nodes), id, sizeof(id), addr, sizeof(addr));
        st = hashring_remove(shrunk, id);
    }
    if (st != PS_STATUS_OK) {
        fprintf(stderr, "%s: changing membership: %s\n", argv[0], ps_status_str(st));
        goto out;
    }
    uint64_t moved_add, between_add, moved_remove, between_remove;
    primaries(grown, keys, o.keys, p_other);
    count_moves(ring, grown, p_base, p_other, o.keys, &moved_add, &between_add);
    primaries(shrunk, keys, o.keys, p_other);
    count_moves(ring, shrunk, p_base, p_other, o.keys, &moved_remove, &between_remove);
    if (moved_add == UINT64_MAX || moved_remove == UINT64_MAX) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        goto out;
    }
    const double moved_add_x = ((double)moved_add / o.keys) / (1.0 / (o.nodes + 1));
    const double moved_remove_x = ((double)moved_remove / o.keys) / (1.0 / o.nodes);
    const uint64_t between = between_add + between_remove;

    bench_report_row(rep, "ring_rebuild_ms", build_ms, 3, "ms", BENCH_TARGET_NONE, 0, NULL);
    bench_report_row(rep, "lookup_ns", lookup_ns, 2, "ns", BENCH_TARGET_AT_MOST, 15, "lookup_ns");
    bench_report_row(rep, "lookup_lat_ns", lookup_lat_ns, 2, "ns", BENCH_TARGET_AT_MOST, 25,
                     "lookup_lat_ns");
    bench_report_row(rep, "owners3_ns", owners3_ns, 2, "ns", BENCH_TARGET_AT_MOST, 25,
                     "owners3_ns");
    bench_report_row(rep, "peak_to_mean", peak_to_mean, 4, "x", BENCH_TARGET_AT_MOST, 1.10,
                     "peak_to_mean");
    bench_report_row(rep, "moved_add_x", moved_add_x, 4, "x", BENCH_TARGET_AT_MOST, 1.10,
                     "moved_add_x");
    bench_report_row(rep, "moved_remove_x", moved_remove_x, 4, "x", BENCH_TARGET_AT_MOST, 1.10,
                     "moved_remove_x");
    bench_report_row(rep, "moved_between_unchanged", (double)between, 0, "keys", BENCH_TARGET_EQUAL,
                     0, "moved_between_unchanged");
    static const uint32_t sizes[] = {4, 10, 32};
    char note[256];
    int used = snprintf(note, sizeof(note), "peak/mean r=2,r=3 hashed vs balanced:");
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        double hashed[3], balanced[3];
        char row[48];
        if ((uint64_t)sizes[k] * o.vnodes > HASHRING_MAX_POINTS / 2) {
            continue; /* two such rings at once would not fit */
        }
        if ((st = balance_of(sizes[k], o.vnodes, hashed, balanced)) != PS_STATUS_OK) {
            fprintf(stderr, "%s: balance of %u nodes: %s\n", argv[0], sizes[k], ps_status_str(st));
            rc = 2;
            goto out;
        }
        snprintf(row, sizeof(row), "balance_%u_hashed", sizes[k]);
        bench_report_row(rep, row, hashed[0], 4, "x", BENCH_TARGET_NONE, 0, row);
        snprintf(row, sizeof(row), "balance_%u_balanced", sizes[k]);
        bench_report_row(rep, row, balanced[0], 4, "x", BENCH_TARGET_AT_MOST, 1.02, row);
        if (used > 0 && (size_t)used < sizeof(note)) {
            used += snprintf(note + used, sizeof(note) - (size_t)used,
                             " %u nodes %.3f,%.3f vs %.3f,%.3f;", sizes[k], hashed[1], hashed[2],
                             balanced[1], balanced[2]);
        }
    }
    bench_report_note(rep, "%s", note);
    bench_report_print(rep, stdout);
    if (between != 0) {
        fprintf(stderr, "%s: %" PRIu64 " keys moved between unchanged nodes\n", argv[0], between);
        rc = 1;
        goto out;
    }
    rc = 0;

out:
    bench_report_destroy(rep);
    hashring_destroy(shrunk);
    hashring_destroy(grown);
    hashring_destroy(ring);
    free(counts);
    free(p_other);
    free(p_base);
    free(keys);
    return rc;
}
