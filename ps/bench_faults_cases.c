/* bench_faults_cases.c: the throughput case of bench_faults and the helpers every case
 * shares (see bench_faults_cases.h). */
#include "bench_faults_cases.h"

#include <stdio.h>
#include <stdlib.h>

#include "bench_ps_cluster.h"
#include "util.h"

void bench_faults_tensor(const char *name, uint64_t floats, int64_t *shape, Ps__TensorInfo *t) {
    ps__tensor_info__init(t);
    t->name = (char *)name;
    t->dtype = "FP32";
    *shape = (int64_t)floats;
    t->n_shape = 1;
    t->shape = shape;
    t->chunk_floats = PS_DEFAULT_CHUNK_FLOATS;
    t->chunks = (uint32_t)((floats + PS_DEFAULT_CHUNK_FLOATS - 1) / PS_DEFAULT_CHUNK_FLOATS);
}

ps_status bench_faults_push_fill(ps_client *pc, const char *model, const Ps__TensorInfo *t,
                                 Ps__PushOp op, float value, float *buf, uint64_t count, char *err,
                                 size_t err_len) {
    for (uint64_t i = 0; i < count; i++)
        buf[i] = value;
    ps_status st = ps_client_push_tensor(pc, model, 1, t, op, buf, count);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "push to %s/%s: %s", model, t->name, ps_client_error(pc));
    return st;
}

/* Every float of buf equals want; else err says where it differs. */
static ps_status check_all(const float *buf, uint64_t count, float want, const char *what,
                           char *err, size_t err_len) {
    for (uint64_t i = 0; i < count; i++)
        if (buf[i] != want) {
            ps_set_err(err, err_len, "%s: float %llu is %g, want %g", what, (unsigned long long)i,
                       (double)buf[i], (double)want);
            return PS_STATUS_INTERNAL;
        }
    return PS_STATUS_OK;
}

/* One cluster of the throughput case and its client. */
typedef struct rate_run {
    int replication;
    const char *fsync;
    char where[64];
    bench_cluster *cl;
    ps_client *pc;
    double best; /* GB/s */
} rate_run;

/* Starts the run's cluster and ASSIGNs the tensor 0. */
static ps_status rate_start(const bench_faults_cfg *cfg, rate_run *run, const Ps__TensorInfo *t,
                            float *buf, char *err, size_t err_len) {
    bench_cluster_opts co = {.build_dir = cfg->build_dir,
                             .shards = 3,
                             .replication = run->replication,
                             .data_dir = true,
                             .fsync = run->fsync};
    ps_status st = bench_cluster_create(&co, &run->cl, err, err_len);
    if (st == PS_STATUS_OK)
        st = ps_client_create(bench_cluster_coordinator(run->cl), &run->pc, err, err_len);
    if (st == PS_STATUS_OK)
        st = bench_faults_push_fill(run->pc, "tput", t, PS__PUSH_OP__PUSH_ASSIGN, 0.0f, buf,
                                    cfg->tput_floats, err, err_len);
    return st;
}

/* One timed ADD of buf (all ones) into the run's cluster; the best rate kept. */
static ps_status rate_add(rate_run *run, int rep, const Ps__TensorInfo *t, const float *buf,
                          uint64_t n, char *err, size_t err_len) {
    int64_t t0 = ps_now_us();
    ps_status st = ps_client_push_tensor(run->pc, "tput", 1, t, PS__PUSH_OP__PUSH_ADD, buf, n);
    int64_t t1 = ps_now_us();
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "ADD %d: %s", rep + 1, ps_client_error(run->pc));
        return st;
    }
    double gbs = t1 > t0 ? (double)(n * sizeof(float)) / (double)(t1 - t0) / 1e3 : 0;
    run->best = gbs > run->best ? gbs : run->best;
    return PS_STATUS_OK;
}

/* Two clusters up at once, R=2 --fsync group and R=1 --fsync none, each with the tensor
 * ASSIGNed 0; then `reps` rounds of one timed ADD of 1 into each, alternating (so a
 * spell of load on this shared machine slows both alike, not one run of them); then
 * each is pulled and checked. The best ADD of each counts. */
ps_status bench_faults_throughput(const bench_faults_cfg *cfg, bench_throughput *ret, char *err,
                                  size_t err_len) {
    rate_run runs[2] = {{.replication = 2, .fsync = "group"}, {.replication = 1, .fsync = "none"}};
    uint64_t n = cfg->tput_floats;
    float *buf = malloc(n * sizeof *buf);
    if (!buf) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)n);
        return PS_STATUS_NO_MEMORY;
    }
    int64_t shape;
    Ps__TensorInfo t;
    bench_faults_tensor("t", n, &shape, &t);
    ps_status st = PS_STATUS_OK;
    int failed = 0; /* the run a failure came from */
    for (int k = 0; k < 2; k++)
        snprintf(runs[k].where, sizeof runs[k].where, "R=%d --fsync %s", runs[k].replication,
                 runs[k].fsync);
    for (int k = 0; k < 2 && st == PS_STATUS_OK; k++)
        if ((st = rate_start(cfg, &runs[k], &t, buf, err, err_len)) != PS_STATUS_OK)
            failed = k;
    for (uint64_t i = 0; i < n; i++)
        buf[i] = 1.0f;
    for (int r = 0; r < cfg->reps && st == PS_STATUS_OK; r++)
        for (int k = 0; k < 2 && st == PS_STATUS_OK; k++)
            if ((st = rate_add(&runs[k], r, &t, buf, n, err, err_len)) != PS_STATUS_OK)
                failed = k;
    for (int k = 0; k < 2 && st == PS_STATUS_OK; k++) {
        failed = k;
        if ((st = ps_client_pull_tensor(runs[k].pc, "tput", 1, &t, buf, n, NULL)) != PS_STATUS_OK)
            ps_set_err(err, err_len, "pull: %s", ps_client_error(runs[k].pc));
        else
            st = check_all(buf, n, (float)cfg->reps, "after the ADDs", err, err_len);
    }
    if (st != PS_STATUS_OK) {
        char inner[BENCH_FAULTS_NOTE_MAX];
        snprintf(inner, sizeof inner, "%s", err);
        ps_set_err(err, err_len, "%s: %s", runs[failed].where, inner);
    } else {
        *ret = (bench_throughput){.r2_group_gbs = runs[0].best, .r1_none_gbs = runs[1].best};
    }
    for (int k = 0; k < 2; k++) {
        ps_client_destroy(runs[k].pc);
        bench_cluster_destroy(runs[k].cl);
    }
    free(buf);
    return st;
}
