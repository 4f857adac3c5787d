/* bench_ps_cases.c: see bench_ps_cases.h. */
#include "bench_ps_cases.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A tensor "t" of `floats` floats cut into default chunks (shape points into *shape). */
static void tensor_info(uint64_t floats, int64_t *shape, Ps__TensorInfo *t) {
    ps__tensor_info__init(t);
    t->name = "t";
    t->dtype = "FP32";
    *shape = (int64_t)floats;
    t->n_shape = 1;
    t->shape = shape;
    t->chunk_floats = PS_DEFAULT_CHUNK_FLOATS;
    t->chunks = (uint32_t)((floats + PS_DEFAULT_CHUNK_FLOATS - 1) / PS_DEFAULT_CHUNK_FLOATS);
}

static double gbs(uint64_t bytes, int64_t us) {
    return us > 0 ? (double)bytes / (double)us / 1e3 : 0;
}

ps_status bench_case_dense(ps_client *pc, const char *model, uint64_t floats, int reps,
                           bench_dense *ret, char *err, size_t err_len) {
    float *src = malloc(floats * 4), *dst = malloc(floats * 4);
    ps_status st = PS_STATUS_OK;
    if (!src || !dst) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)floats);
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (uint64_t i = 0; i < floats; i++)
        src[i] = (float)(i % 1000003) * 0.5f;
    int64_t shape;
    Ps__TensorInfo t;
    tensor_info(floats, &shape, &t);
    bench_dense best = {0, 0};
    for (int r = 0; r < reps && st == PS_STATUS_OK; r++) {
        int64_t t0 = ps_now_us();
        st = ps_client_push_tensor(pc, model, 1, &t, PS__PUSH_OP__PUSH_ASSIGN, src, floats);
        int64_t t1 = ps_now_us();
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "push: %s", ps_client_error(pc));
            break;
        }
        memset(dst, 0, floats * 4);
        int64_t t2 = ps_now_us();
        st = ps_client_pull_tensor(pc, model, 1, &t, dst, floats, NULL);
        int64_t t3 = ps_now_us();
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "pull: %s", ps_client_error(pc));
            break;
        }
        if (memcmp(src, dst, floats * 4) != 0) {
            ps_set_err(err, err_len, "pulled values of %s differ from the pushed ones", model);
            st = PS_STATUS_INTERNAL;
            break;
        }
        double push = gbs(floats * 4, t1 - t0), pull = gbs(floats * 4, t3 - t2);
        best.push_gbs = push > best.push_gbs ? push : best.push_gbs;
        best.pull_gbs = pull > best.pull_gbs ? pull : best.pull_gbs;
    }
    if (st == PS_STATUS_OK)
        *ret = best;
out:
    free(src);
    free(dst);
    return st;
}

ps_status bench_case_dense_add(ps_client *pc, const char *model, uint64_t floats, char *err,
                               size_t err_len) {
    float *delta = malloc(floats * 4);
    if (!delta) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)floats);
        return PS_STATUS_NO_MEMORY;
    }
    for (uint64_t i = 0; i < floats; i++)
        delta[i] = 0.5f;
    int64_t shape;
    Ps__TensorInfo t;
    tensor_info(floats, &shape, &t);
    ps_status st = ps_client_push_tensor(pc, model, 1, &t, PS__PUSH_OP__PUSH_ADD, delta, floats);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "add: %s", ps_client_error(pc));
    free(delta);
    return st;
}

ps_status bench_case_sparse(ps_client *pc, const char *model, uint32_t dim, size_t n, int reps,
                            double *ret_rows_s, char *err, size_t err_len) {
    uint64_t *ids = malloc(n * sizeof *ids);
    float *grad = malloc(n * dim * sizeof *grad);
    ps_status st = PS_STATUS_OK;
    if (!ids || !grad) {
        ps_set_err(err, err_len, "out of memory for %zu rows", n);
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = splitmix64(i); /* hashed ids, as a recommender's feature ids */
    for (size_t i = 0; i < n * dim; i++)
        grad[i] = 0.01f * (float)(i % 7);
    table_spec spec = {.dim = dim, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_ADAGRAD};
    optim_spec adagrad;
    optim_spec_defaults(OPTIM_ADAGRAD, &adagrad);
    ps_table_ref ref = {.model = model, .table = "emb", .spec = &spec};
    double best = 0;
    for (int r = 0; r <= reps && st == PS_STATUS_OK; r++) { /* round 0 creates the rows */
        ps_push_train train = {.optimizer = &adagrad};
        int64_t t0 = ps_now_us();
        st = ps_client_push_rows(pc, &ref, PS__PUSH_OP__PUSH_OPTIMIZE, &train, n, ids, grad, NULL);
        int64_t t1 = ps_now_us();
        if (st != PS_STATUS_OK)
            ps_set_err(err, err_len, "push rows: %s", ps_client_error(pc));
        double rate = t1 > t0 ? (double)n * 1e6 / (double)(t1 - t0) : 0;
        if (r > 0 && rate > best)
            best = rate;
    }
    if (st == PS_STATUS_OK)
        *ret_rows_s = best;
out:
    free(ids);
    free(grad);
    return st;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

ps_status bench_case_small_rtt(ps_client *pc, int calls, double *ret_p50_us, double *ret_p99_us,
                               char *err, size_t err_len) {
    int64_t *us = malloc((size_t)calls * sizeof *us);
    if (!us) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    uint64_t key = ps_key_dense("bench_ps_rtt", 1, "one", 0);
    uint32_t len = 1;
    float one = 1.0f, zero = 0.0f;
    const float *src = &zero;
    ps_status st = ps_client_push(pc, PS__PUSH_OP__PUSH_ASSIGN, 1, &key, &src, &len, NULL, NULL);
    src = &one;
    for (int i = -(calls / 10); i < calls && st == PS_STATUS_OK; i++) {
        int64_t t0 = ps_now_us();
        st = ps_client_push(pc, PS__PUSH_OP__PUSH_ADD, 1, &key, &src, &len, NULL, NULL);
        if (i >= 0)
            us[i] = ps_now_us() - t0;
    }
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "small push: %s", ps_client_error(pc));
    } else {
        qsort(us, (size_t)calls, sizeof *us, cmp_i64);
        *ret_p50_us = (double)us[calls / 2];
        *ret_p99_us = (double)us[(size_t)calls * 99 / 100];
    }
    free(us);
    return st;
}

ps_status bench_case_held_bytes(ps_client *pc, uint64_t *ret_bytes, char *err, size_t err_len) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < ps_client_shard_count(pc); i++) {
        rpc_channel *ch = NULL;
        ps_status st = rpc_channel_create(ps_client_shard_addr(pc, i), NULL, &ch);
        Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_result res = {0};
        rpc_call_opts opts = {.timeout_ms = 5000};
        if (st == PS_STATUS_OK)
            st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base,
                          &ps__health_response__descriptor, &opts, &resp, &res);
        rpc_channel_destroy(ch);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "health of %s: %s", ps_client_shard_addr(pc, i), res.details);
            return st;
        }
        total += ((Ps__HealthResponse *)resp)->bytes;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    *ret_bytes = total;
    return PS_STATUS_OK;
}
