/* bench_faults_failover.c: the failover case of bench_faults (bench_faults_cases.h).
 * A pusher thread ADDs 1.0 to every float of a multi-chunk tensor through its own C
 * client, recording each call's times and each chunk's outcome; the main thread kills
 * the primary of chunk 0 with SIGKILL once the warm-up pushes are acknowledged, and the
 * pusher stops after cfg->after_pushes acknowledged pushes that started after the
 * kill. The values pulled then are tallied against the outcomes (bench_faults_tally.h).
 */
#include "bench_faults_cases.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_ps_cluster.h"
#include "util.h"

#define MODEL "bench_faults"
#define POLL_US 10000
#define WARMUP_TIMEOUT_S 60 /* the warm-up pushes must be acknowledged within this */

/* The pusher thread's state: written by it, read by the main thread after the join
 * (the atomics also while it runs). */
typedef struct pusher {
    ps_client *pc;              /* the thread's own client */
    const Ps__TensorInfo *t;    /* the tensor */
    const float *ones;          /* count floats of 1.0 */
    uint64_t count;             /* floats in the tensor */
    uint64_t *acked;            /* per chunk: outcomes PS_PUSH_APPLIED */
    uint64_t *unknown;          /* per chunk: outcomes PS_PUSH_UNKNOWN */
    uint8_t *outcome;           /* per chunk, the last call's */
    bench_push_record *records; /* one per call, BENCH_FAULTS_MAX_PUSHES at most */
    size_t n_records;
    int after;            /* acknowledged pushes after the kill before it stops */
    int64_t timeout_us;   /* it stops this long after the kill regardless */
    atomic_llong kill_us; /* 0 until the main thread killed the victim */
    atomic_ullong acked_pushes;
    atomic_bool halt;      /* the main thread gives up */
    atomic_bool done;      /* the thread returned */
    uint64_t failed;       /* calls that returned a failure */
    char first_error[256]; /* the first failure's message */
} pusher;

static void *pusher_run(void *arg) {
    pusher *p = arg;
    int after = 0;
    while (!atomic_load(&p->halt) && p->n_records < BENCH_FAULTS_MAX_PUSHES) {
        bench_push_record *r = &p->records[p->n_records++];
        r->start_us = ps_now_us();
        ps_status st = ps_client_push_tensor_report(p->pc, MODEL, 1, p->t, PS__PUSH_OP__PUSH_ADD,
                                                    p->ones, p->count, NULL, p->outcome);
        r->end_us = ps_now_us();
        r->acked = st == PS_STATUS_OK;
        for (uint32_t c = 0; c < p->t->chunks; c++) {
            p->acked[c] += p->outcome[c] == PS_PUSH_APPLIED;
            p->unknown[c] += p->outcome[c] == PS_PUSH_UNKNOWN;
        }
        if (r->acked) {
            atomic_fetch_add(&p->acked_pushes, 1);
        } else if (p->failed++ == 0) {
            snprintf(p->first_error, sizeof p->first_error, "%s", ps_client_error(p->pc));
        }
        int64_t kill_us = atomic_load(&p->kill_us);
        if (kill_us == 0)
            continue;
        after += r->acked && r->start_us >= kill_us;
        if (after >= p->after || r->end_us - kill_us > p->timeout_us)
            break;
    }
    atomic_store(&p->done, true);
    return NULL;
}

/* Waits until the pusher has `n` acknowledged pushes; false when it stopped or the
 * deadline passed first. */
static bool wait_acked(pusher *p, uint64_t n) {
    int64_t until = ps_now_us() + (int64_t)WARMUP_TIMEOUT_S * 1000000;
    while (atomic_load(&p->acked_pushes) < n) {
        if (atomic_load(&p->done) || ps_now_us() > until)
            return false;
        usleep(POLL_US);
    }
    return true;
}

/* The victim: the shard that is primary of chunk 0, with how many chunks it leads. */
static ps_status choose_victim(ps_client *pc, const bench_cluster *cl, uint32_t chunks,
                               bench_failover *f, int *ret_index, char *err, size_t err_len) {
    uint32_t owner = ps_client_owner(pc, ps_key_dense(MODEL, 1, "t", 0));
    snprintf(f->victim, sizeof f->victim, "%s", ps_client_shard_id(pc, owner));
    for (uint32_t c = 0; c < chunks; c++)
        f->victim_chunks += ps_client_owner(pc, ps_key_dense(MODEL, 1, "t", c)) == owner;
    int index = bench_cluster_shard_find(cl, f->victim);
    if (index < 0) {
        ps_set_err(err, err_len, "the primary of chunk 0 is '%s', not a shard this run started",
                   f->victim);
        return PS_STATUS_INTERNAL;
    }
    *ret_index = index;
    return PS_STATUS_OK;
}

/* The pusher's figures into f: failover time, longest gap, counts, a note. */
static void push_figures(const pusher *p, bench_failover *f) {
    int64_t us = 0, last = 0;
    f->measured = bench_tally_failover_us(p->records, p->n_records, atomic_load(&p->kill_us), &us);
    f->failover_ms = (double)us / 1e3;
    for (size_t i = 0; i < p->n_records; i++) {
        if (!p->records[i].acked)
            continue;
        double gap = last ? (double)(p->records[i].end_us - last) / 1e3 : 0;
        f->longest_gap_ms = gap > f->longest_gap_ms ? gap : f->longest_gap_ms;
        last = p->records[i].end_us;
    }
    f->acked_pushes = atomic_load(&p->acked_pushes);
    f->failed_pushes = p->failed;
    if (!f->measured)
        snprintf(f->note, sizeof f->note,
                 "no push started after the kill was acknowledged within %d s (%llu failed; "
                 "first: %s)",
                 (int)(p->timeout_us / 1000000), (unsigned long long)p->failed, p->first_error);
    else if (p->failed)
        snprintf(f->note, sizeof f->note, "%llu pushes failed; the first: %s",
                 (unsigned long long)p->failed, p->first_error);
}

/* Pulls the tensor and tallies it against the pusher's outcomes into f->tally. */
static ps_status tally(ps_client *pc, const pusher *p, float *buf, bench_failover *f, char *err,
                       size_t err_len) {
    uint32_t chunks = p->t->chunks;
    uint32_t *lens = malloc(chunks * sizeof *lens);
    if (!lens) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    for (uint32_t c = 0; c < chunks; c++) {
        uint64_t left = p->count - (uint64_t)c * PS_DEFAULT_CHUNK_FLOATS;
        lens[c] = (uint32_t)(left < PS_DEFAULT_CHUNK_FLOATS ? left : PS_DEFAULT_CHUNK_FLOATS);
    }
    ps_status st = ps_client_pull_tensor(pc, MODEL, 1, p->t, buf, p->count, NULL);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "pull after the kill: %s%s%s", ps_client_error(pc),
                   f->measured ? "" : "; before it, ", f->measured ? "" : f->note);
    else if ((st = bench_tally_chunks(chunks, p->acked, p->unknown, lens, buf, &f->tally)) !=
             PS_STATUS_OK)
        ps_set_err(err, err_len, "cannot tally: %s", ps_status_str(st));
    free(lens);
    return st;
}

ps_status bench_faults_failover(const bench_faults_cfg *cfg, bench_failover *ret, char *err,
                                size_t err_len) {
    bench_cluster_opts co = {.build_dir = cfg->build_dir,
                             .shards = 3,
                             .replication = 2,
                             .heartbeat_ms = cfg->heartbeat_ms,
                             .data_dir = true,
                             .fsync = "group"};
    bench_failover f = {0};
    bench_cluster *cl = NULL;
    ps_client *pc = NULL;
    pusher p = {.count = cfg->fail_floats,
                .after = cfg->after_pushes,
                .timeout_us = (int64_t)cfg->fail_timeout_s * 1000000};
    int64_t shape;
    Ps__TensorInfo t;
    bench_faults_tensor("t", p.count, &shape, &t);
    p.t = &t;
    f.chunks = t.chunks;
    float *buf = malloc(p.count * sizeof *buf);
    p.acked = calloc(t.chunks, sizeof *p.acked);
    p.unknown = calloc(t.chunks, sizeof *p.unknown);
    p.outcome = calloc(t.chunks, 1);
    p.records = malloc(BENCH_FAULTS_MAX_PUSHES * sizeof *p.records);
    float *ones = malloc(p.count * sizeof *ones);
    p.ones = ones;
    pthread_t thread;
    bool started = false;
    int victim = -1;
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!buf || !p.acked || !p.unknown || !p.outcome || !p.records || !ones) {
        ps_set_err(err, err_len, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < p.count; i++)
        ones[i] = 1.0f;
    if ((st = bench_cluster_create(&co, &cl, err, err_len)) != PS_STATUS_OK ||
        (st = ps_client_create(bench_cluster_coordinator(cl), &pc, err, err_len)) != PS_STATUS_OK ||
        (st = ps_client_create(bench_cluster_coordinator(cl), &p.pc, err, err_len)) !=
            PS_STATUS_OK ||
        (st = bench_faults_push_fill(pc, MODEL, &t, PS__PUSH_OP__PUSH_ASSIGN, 0.0f, buf, p.count,
                                     err, err_len)) != PS_STATUS_OK ||
        (st = choose_victim(pc, cl, t.chunks, &f, &victim, err, err_len)) != PS_STATUS_OK)
        goto out;
    if (pthread_create(&thread, NULL, pusher_run, &p) != 0) {
        ps_set_err(err, err_len, "cannot start the pusher thread");
        st = PS_STATUS_INTERNAL;
        goto out;
    }
    started = true;
    if (!wait_acked(&p, (uint64_t)cfg->warmup_pushes)) {
        ps_set_err(err, err_len, "%llu of %d warm-up pushes acknowledged before the kill (%s)",
                   (unsigned long long)atomic_load(&p.acked_pushes), cfg->warmup_pushes,
                   p.failed ? "a push failed" : "too slow");
        st = PS_STATUS_UNAVAILABLE;
        goto out;
    }
    int64_t kill_us = 0;
    if ((st = bench_cluster_shard_kill(cl, victim, &kill_us)) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot kill %s", f.victim);
        goto out;
    }
    atomic_store(&p.kill_us, kill_us);
    pthread_join(thread, NULL);
    started = false;
    push_figures(&p, &f);
    if ((st = tally(pc, &p, buf, &f, err, err_len)) != PS_STATUS_OK)
        goto out;
    *ret = f;
out:
    if (started) {
        atomic_store(&p.halt, true);
        pthread_join(thread, NULL);
    }
    ps_client_destroy(p.pc);
    ps_client_destroy(pc);
    bench_cluster_destroy(cl);
    free(ones);
    free(p.records);
    free(p.outcome);
    free(p.unknown);
    free(p.acked);
    free(buf);
    return st;
}
