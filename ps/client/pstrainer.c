/* pstrainer.c: a training worker of one model (see pstrainer.h): a queue of operations
 * run in order on the trainer's thread with its own client; the model's registry entry
 * and config.json read again when a second old. The worker's clock is
 * pstrainer_worker.c's. */
#include "pstrainer.h"
#include "pstrainer_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psclient.h"
#include "train_config.h"
#include "util.h"

#define REGISTRY_MAX_AGE_MS 1000

/* ------------------------------------------------------------ thread's side --- */

/* The registry entry and its config.json, read again when a second old. */
static ps_status fresh_info(ps_trainer *t, char *err) {
    int64_t now = ps_now_ms();
    if (t->info && now - t->info_ms < REGISTRY_MAX_AGE_MS)
        return PS_STATUS_OK;
    Ps__ModelInfo *info = NULL;
    ps_status st = ps_client_get_model(t->client, t->model, t->o.version, &info);
    if (t->info && (st == PS_STATUS_UNAVAILABLE || st == PS_STATUS_DEADLINE_EXCEEDED))
        return PS_STATUS_OK; /* the coordinator is away: the entry held still routes; asked
                                again at the next operation */
    if (st != PS_STATUS_OK)
        return pstrainer_fail(err, st, "model %s: %s", t->model, ps_client_error(t->client));
    train_config *tc = NULL;
    char why[200];
    st = train_config_parse(info->config_json, strlen(info->config_json), &tc, why, sizeof why);
    if (st != PS_STATUS_OK) {
        ps__model_info__free_unpacked(info, NULL);
        return pstrainer_fail(err, st, "model %s: config.json: %s", t->model, why);
    }
    pthread_mutex_lock(&t->lock); /* callers read sizes from it */
    Ps__ModelInfo *old_info = t->info;
    train_config *old_training = t->training;
    t->info = info;
    t->training = tc;
    pthread_mutex_unlock(&t->lock);
    if (old_info)
        ps__model_info__free_unpacked(old_info, NULL);
    train_config_destroy(old_training);
    t->info_ms = now;
    return PS_STATUS_OK;
}

static ps_status run_dense(ps_trainer *t, job *j, char *err) {
    const Ps__TensorInfo *ti = ps_client_find_tensor(t->info, j->name);
    if (!ti)
        return pstrainer_fail(err, PS_STATUS_NOT_FOUND, "model %s has no tensor %s", t->model,
                              j->name);
    ps_status st;
    if (j->kind == JOB_PULL) {
        if ((st = pstrainer_worker_wait(t, err)) != PS_STATUS_OK)
            return st;
        st = ps_client_pull_tensor(t->client, t->model, t->info->version, ti, j->dense, j->count,
                                   NULL);
    } else {
        optim_spec opt;
        if (!train_config_optimizer(t->training, j->name, &opt))
            return pstrainer_fail(err, PS_STATUS_FAILED_PRECONDITION,
                                  "model %s has no optimizer for tensor %s (config.json training)",
                                  t->model, j->name);
        ps_push_train train = {.optimizer = &opt,
                               .skip_non_finite = train_config_skip_non_finite(t->training)};
        st = ps_client_push_tensor_optimize(t->client, t->model, t->info->version, ti, &train,
                                            j->dense, j->count);
    }
    return st == PS_STATUS_OK ? st : pstrainer_fail(err, st, "%s", ps_client_error(t->client));
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sums the gradients of repeated ids in place (ids sorted with their rows); returns
 * the distinct count. */
static size_t sum_repeats(uint64_t *ids, float *g, size_t n, uint32_t dim) {
    uint64_t *keyed = malloc((n + 1) * 2 * sizeof *keyed);
    float *out = malloc(((size_t)n * dim + 1) * sizeof *out);
    if (!keyed || !out) {
        free(keyed);
        free(out);
        return SIZE_MAX;
    }
    for (size_t i = 0; i < n; i++) {
        keyed[2 * i] = ids[i];
        keyed[2 * i + 1] = i;
    }
    qsort(keyed, n, 2 * sizeof *keyed, cmp_u64); /* by id (first word) */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const float *src = g + keyed[2 * i + 1] * dim;
        if (m && ids[m - 1] == keyed[2 * i]) {
            for (uint32_t k = 0; k < dim; k++)
                out[(m - 1) * dim + k] += src[k];
        } else {
            ids[m] = keyed[2 * i];
            memcpy(out + (size_t)m * dim, src, dim * sizeof *out);
            m++;
        }
    }
    memcpy(g, out, (size_t)m * dim * sizeof *out);
    free(keyed);
    free(out);
    return m;
}

static ps_status run_rows(ps_trainer *t, job *j, char *err) {
    train_table tt;
    if (!train_config_table_find(t->training, j->name, &tt))
        return pstrainer_fail(err, PS_STATUS_NOT_FOUND, "model %s declares no table %s", t->model,
                              j->name);
    ps_table_ref ref = {.model = t->model, .table = j->name, .spec = &tt.spec};
    ps_status st;
    if (j->kind == JOB_PULL_ROWS) {
        if ((st = pstrainer_worker_wait(t, err)) != PS_STATUS_OK)
            return st;
        st = ps_client_pull_rows(t->client, &ref, j->count, j->ids, j->dense, NULL);
    } else {
        if (tt.optimizer.kind == OPTIM_NONE)
            return pstrainer_fail(err, PS_STATUS_FAILED_PRECONDITION,
                                  "table %s of model %s has no optimizer (config.json tables)",
                                  j->name, t->model);
        size_t m = sum_repeats(j->ids, j->dense, j->count, tt.spec.dim);
        if (m == SIZE_MAX)
            return pstrainer_fail(err, PS_STATUS_NO_MEMORY, "out of memory");
        ps_push_train train = {.optimizer = &tt.optimizer,
                               .skip_non_finite = train_config_skip_non_finite(t->training)};
        st = ps_client_push_rows(t->client, &ref, PS__PUSH_OP__PUSH_OPTIMIZE, &train, m, j->ids,
                                 j->dense, NULL);
    }
    return st == PS_STATUS_OK ? st : pstrainer_fail(err, st, "%s", ps_client_error(t->client));
}

static ps_status run_job(ps_trainer *t, job *j, char *err) {
    if (j->kind == JOB_CLOCK) {
        if (!t->registered) {
            ps_status st = pstrainer_worker_register(t, err);
            if (st != PS_STATUS_OK)
                return st;
        }
        ps_status st = pstrainer_worker_clock(t, t->clock + 1, err);
        if (st == PS_STATUS_OK)
            t->clock++;
        return st;
    }
    ps_status st = fresh_info(t, err);
    if (st != PS_STATUS_OK)
        return st;
    return j->kind == JOB_PULL || j->kind == JOB_PUSH ? run_dense(t, j, err) : run_rows(t, j, err);
}

static void job_free(job *j) {
    if (j->owned) {
        free(j->dense);
        free(j->ids);
    }
}

static void *trainer_thread(void *arg) {
    ps_trainer *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (t->n == 0 && !t->stopping) {
            int64_t beat = t->registered ? t->worker_timeout_ms / 3 : 1000;
            struct timespec ts = ps_abstime_after_ms(beat);
            if (pthread_cond_timedwait(&t->changed, &t->lock, &ts) != 0 && t->registered &&
                t->n == 0 && !t->stopping) { /* idle: a heartbeat keeps the worker alive */
                char err[256];
                pthread_mutex_unlock(&t->lock);
                pstrainer_worker_clock(t, t->clock, err);
                pthread_mutex_lock(&t->lock);
            }
        }
        if (t->n == 0)
            break; /* stopping, and the queue is done */
        job j = t->queue[t->head];
        pthread_mutex_unlock(&t->lock);
        char err[256] = "";
        ps_status st = run_job(t, &j, err);
        job_free(&j);
        pthread_mutex_lock(&t->lock);
        t->head = (t->head + 1) % PS_TRAINER_MAX_QUEUE;
        t->n--;
        t->done_ts = j.ts;
        t->status[j.ts % HISTORY] = st;
        snprintf(t->errors[j.ts % HISTORY], sizeof t->errors[0], "%s", err);
        pthread_cond_broadcast(&t->changed);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* ------------------------------------------------------------ callers' side --- */

static ps_status submit(ps_trainer *t, job *j, uint64_t *ret_ts) {
    pthread_mutex_lock(&t->lock);
    while (t->n == PS_TRAINER_MAX_QUEUE && !t->stopping)
        pthread_cond_wait(&t->changed, &t->lock);
    if (t->stopping) {
        pthread_mutex_unlock(&t->lock);
        job_free(j);
        return PS_STATUS_CANCELLED;
    }
    j->ts = ++t->next_ts;
    t->queue[(t->head + t->n) % PS_TRAINER_MAX_QUEUE] = *j;
    t->n++;
    *ret_ts = j->ts;
    pthread_cond_broadcast(&t->changed);
    pthread_mutex_unlock(&t->lock);
    return PS_STATUS_OK;
}

ps_status ps_trainer_wait(ps_trainer *t, uint64_t ts) {
    pthread_mutex_lock(&t->lock);
    if (ts == 0 || ts > t->next_ts) {
        pthread_mutex_unlock(&t->lock);
        snprintf(t->err, sizeof t->err, "no operation %llu was made", (unsigned long long)ts);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    while (t->done_ts < ts)
        pthread_cond_wait(&t->changed, &t->lock);
    /* older than the history: done, its status forgotten (reported when it was new) */
    bool kept = t->done_ts - ts < HISTORY;
    ps_status st = kept ? t->status[ts % HISTORY] : PS_STATUS_OK;
    if (st != PS_STATUS_OK)
        snprintf(t->err, sizeof t->err, "%s", t->errors[ts % HISTORY]);
    pthread_mutex_unlock(&t->lock);
    return st;
}

static ps_status run_sync(ps_trainer *t, job *j) {
    uint64_t ts = 0;
    ps_status st = submit(t, j, &ts);
    return st == PS_STATUS_OK ? ps_trainer_wait(t, ts) : st;
}

static bool name_ok(ps_trainer *t, const char *name) {
    if (name && *name && strlen(name) < sizeof((job *)0)->name)
        return true;
    snprintf(t->err, sizeof t->err, "a tensor or table name of 1-255 bytes is needed");
    return false;
}

ps_status ps_trainer_pull(ps_trainer *t, const char *tensor, float *dst, uint64_t count) {
    if (!name_ok(t, tensor))
        return PS_STATUS_INVALID_ARGUMENT;
    job j = {.kind = JOB_PULL, .dense = dst, .count = count};
    snprintf(j.name, sizeof j.name, "%s", tensor);
    return run_sync(t, &j);
}

static ps_status queue_push(ps_trainer *t, const char *tensor, const float *grad, uint64_t count,
                            uint64_t *ret_ts) {
    if (!name_ok(t, tensor))
        return PS_STATUS_INVALID_ARGUMENT;
    job j = {.kind = JOB_PUSH, .count = count, .owned = true};
    snprintf(j.name, sizeof j.name, "%s", tensor);
    if (count > (SIZE_MAX >> 3) || !(j.dense = malloc(count * sizeof(float) + 1))) {
        snprintf(t->err, sizeof t->err, "out of memory for %llu floats", (unsigned long long)count);
        return PS_STATUS_NO_MEMORY;
    }
    memcpy(j.dense, grad, count * sizeof(float));
    return submit(t, &j, ret_ts);
}

ps_status ps_trainer_push_async(ps_trainer *t, const char *tensor, const float *grad,
                                uint64_t count, uint64_t *ret_ts) {
    return queue_push(t, tensor, grad, count, ret_ts);
}

ps_status ps_trainer_push(ps_trainer *t, const char *tensor, const float *grad, uint64_t count) {
    uint64_t ts = 0;
    ps_status st = queue_push(t, tensor, grad, count, &ts);
    return st == PS_STATUS_OK ? ps_trainer_wait(t, ts) : st;
}

ps_status ps_trainer_pull_rows(ps_trainer *t, const char *table, size_t n, const uint64_t *ids,
                               float *out) {
    if (!name_ok(t, table))
        return PS_STATUS_INVALID_ARGUMENT;
    job j = {.kind = JOB_PULL_ROWS, .dense = out, .count = n, .ids = (uint64_t *)ids};
    snprintf(j.name, sizeof j.name, "%s", table);
    return run_sync(t, &j);
}

ps_status ps_trainer_push_rows_async(ps_trainer *t, const char *table, size_t n,
                                     const uint64_t *ids, const float *grads, uint64_t *ret_ts) {
    uint32_t dim = ps_trainer_table_dim(t, table);
    if (!name_ok(t, table))
        return PS_STATUS_INVALID_ARGUMENT;
    if (dim == 0) {
        snprintf(t->err, sizeof t->err, "model %s declares no table %s", t->model, table);
        return PS_STATUS_NOT_FOUND;
    }
    job j = {.kind = JOB_PUSH_ROWS, .count = n, .owned = true};
    snprintf(j.name, sizeof j.name, "%s", table);
    j.ids = malloc((n + 1) * sizeof *j.ids);
    j.dense = n <= SIZE_MAX / 8 / dim ? malloc((size_t)n * dim * sizeof(float) + 1) : NULL;
    if (!j.ids || !j.dense) {
        job_free(&j);
        snprintf(t->err, sizeof t->err, "out of memory for %zu rows", n);
        return PS_STATUS_NO_MEMORY;
    }
    memcpy(j.ids, ids, n * sizeof *ids);
    memcpy(j.dense, grads, (size_t)n * dim * sizeof(float));
    return submit(t, &j, ret_ts);
}

ps_status ps_trainer_push_rows(ps_trainer *t, const char *table, size_t n, const uint64_t *ids,
                               const float *grads) {
    uint64_t ts = 0;
    ps_status st = ps_trainer_push_rows_async(t, table, n, ids, grads, &ts);
    return st == PS_STATUS_OK ? ps_trainer_wait(t, ts) : st;
}

ps_status ps_trainer_clock(ps_trainer *t, uint64_t *ret_clock) {
    job j = {.kind = JOB_CLOCK};
    ps_status st = run_sync(t, &j); /* in order: after every push queued before */
    if (st == PS_STATUS_OK && ret_clock) {
        pthread_mutex_lock(&t->lock);
        *ret_clock = t->clock;
        pthread_mutex_unlock(&t->lock);
    }
    return st;
}

/* Sizes come from the registry entry the thread keeps (it swaps it under the lock). */
uint64_t ps_trainer_tensor_count(ps_trainer *t, const char *tensor) {
    pthread_mutex_lock(&t->lock);
    const Ps__TensorInfo *ti = t->info ? ps_client_find_tensor(t->info, tensor) : NULL;
    uint64_t n = ti ? ps_tensor_count(ti) : 0;
    pthread_mutex_unlock(&t->lock);
    return n;
}

uint32_t ps_trainer_table_dim(ps_trainer *t, const char *table) {
    pthread_mutex_lock(&t->lock);
    train_table tt;
    uint32_t dim =
        t->training && train_config_table_find(t->training, table, &tt) ? tt.spec.dim : 0;
    pthread_mutex_unlock(&t->lock);
    return dim;
}

const char *ps_trainer_error(const ps_trainer *t) {
    return t->err;
}

ps_status ps_trainer_create(const ps_trainer_opts *opts, ps_trainer **ret, char *err,
                            size_t err_len) {
    if (!opts || !opts->coordinator || !opts->model || !*opts->model) {
        ps_set_err(err, err_len, "a trainer needs a coordinator and a model");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    t->o = *opts;
    if (t->o.wait_ms <= 0)
        t->o.wait_ms = PS_TRAINER_DEFAULT_WAIT_MS;
    t->coordinator = strdup(opts->coordinator);
    t->model = strdup(opts->model);
    t->name = strdup(opts->name ? opts->name : "");
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!t->coordinator || !t->model || !t->name)
        goto fail;
    if ((st = ps_client_create(t->coordinator, &t->client, err, err_len)) != PS_STATUS_OK)
        goto fail;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->changed, NULL);
    char why[256] = "";
    if ((st = fresh_info(t, why)) != PS_STATUS_OK) { /* the model must exist */
        ps_set_err(err, err_len, "%s", why);
        goto fail_sync;
    }
    if (pthread_create(&t->thread, NULL, trainer_thread, t) != 0) {
        ps_set_err(err, err_len, "cannot start the trainer's thread");
        st = PS_STATUS_RESOURCE_EXHAUSTED;
        goto fail_sync;
    }
    *ret = t;
    return PS_STATUS_OK;
fail_sync:
    pthread_cond_destroy(&t->changed);
    pthread_mutex_destroy(&t->lock);
fail:
    if (st == PS_STATUS_NO_MEMORY)
        ps_set_err(err, err_len, "out of memory");
    if (t->info)
        ps__model_info__free_unpacked(t->info, NULL);
    train_config_destroy(t->training);
    ps_client_destroy(t->client);
    free(t->coordinator);
    free(t->model);
    free(t->name);
    free(t);
    return st;
}

void ps_trainer_destroy(ps_trainer *t) {
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true; /* the thread finishes the queue first */
    pthread_cond_broadcast(&t->changed);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    if (t->registered) { /* leave: the others stop waiting for it */
        Ps__ClockRequest req = PS__CLOCK_REQUEST__INIT;
        req.model = t->model;
        req.worker_id = t->worker_id;
        req.leave = true;
        ProtobufCMessage *m = NULL;
        char err[256];
        pstrainer_coord_call(t, "/ps.Coordinator/Clock", &req.base, &ps__clock_response__descriptor,
                             2000, &m, err);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (t->info)
        ps__model_info__free_unpacked(t->info, NULL);
    train_config_destroy(t->training);
    ps_client_destroy(t->client);
    pthread_cond_destroy(&t->changed);
    pthread_mutex_destroy(&t->lock);
    free(t->coordinator);
    free(t->model);
    free(t->name);
    free(t);
}
