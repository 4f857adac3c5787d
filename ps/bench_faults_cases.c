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

/* One fresh cluster: ASSIGN 0, `reps` timed ADDs of 1, pull and check; the best ADD's
 * value bytes per second in *ret_gbs. */
static ps_status push_rate(const bench_faults_cfg *cfg, int replication, const char *fsync,
                           double *ret_gbs, char *err, size_t err_len) {
    bench_cluster_opts co = {.build_dir = cfg->build_dir,
                             .shards = 3,
                             .replication = replication,
                             .data_dir = true,
                             .fsync = fsync};
    bench_cluster *cl = NULL;
    ps_client *pc = NULL;
    uint64_t n = cfg->tput_floats;
    float *buf = malloc(n * sizeof *buf);
    ps_status st = buf ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)n);
        return st;
    }
    char where[64];
    snprintf(where, sizeof where, "R=%d --fsync %s", replication, fsync);
    if ((st = bench_cluster_create(&co, &cl, err, err_len)) != PS_STATUS_OK ||
        (st = ps_client_create(bench_cluster_coordinator(cl), &pc, err, err_len)) != PS_STATUS_OK)
        goto out;
    int64_t shape;
    Ps__TensorInfo t;
    bench_faults_tensor("t", n, &shape, &t);
    if ((st = bench_faults_push_fill(pc, "tput", &t, PS__PUSH_OP__PUSH_ASSIGN, 0.0f, buf, n, err,
                                     err_len)) != PS_STATUS_OK)
        goto out;
    for (uint64_t i = 0; i < n; i++)
        buf[i] = 1.0f;
    double best = 0;
    for (int r = 0; r < cfg->reps; r++) {
        int64_t t0 = ps_now_us();
        st = ps_client_push_tensor(pc, "tput", 1, &t, PS__PUSH_OP__PUSH_ADD, buf, n);
        int64_t t1 = ps_now_us();
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "ADD %d: %s", r + 1, ps_client_error(pc));
            goto out;
        }
        double gbs = t1 > t0 ? (double)(n * sizeof(float)) / (double)(t1 - t0) / 1e3 : 0;
        best = gbs > best ? gbs : best;
    }
    if ((st = ps_client_pull_tensor(pc, "tput", 1, &t, buf, n, NULL)) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "pull: %s", ps_client_error(pc));
        goto out;
    }
    if ((st = check_all(buf, n, (float)cfg->reps, "after the ADDs", err, err_len)) != PS_STATUS_OK)
        goto out;
    *ret_gbs = best;
out:
    if (st != PS_STATUS_OK) {
        char inner[BENCH_FAULTS_NOTE_MAX];
        snprintf(inner, sizeof inner, "%s", err);
        ps_set_err(err, err_len, "%s: %s", where, inner);
    }
    ps_client_destroy(pc);
    bench_cluster_destroy(cl);
    free(buf);
    return st;
}

ps_status bench_faults_throughput(const bench_faults_cfg *cfg, bench_throughput *ret, char *err,
                                  size_t err_len) {
    bench_throughput f = {0};
    ps_status st = push_rate(cfg, 2, "group", &f.r2_group_gbs, err, err_len);
    if (st == PS_STATUS_OK)
        st = push_rate(cfg, 1, "none", &f.r1_none_gbs, err, err_len);
    if (st == PS_STATUS_OK)
        *ret = f;
    return st;
}
