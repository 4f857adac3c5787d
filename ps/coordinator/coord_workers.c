/* coord_workers.c: training workers on the coordinator context: register, clock, and
 * the wait behind BSP/SSP (see workers.h for the rules, coord.h for the calls). The
 * model's consistency and staleness come from its latest version's config.json. */
#include <stdio.h>
#include <string.h>

#include "coord_internal.h"
#include "train_config.h"
#include "util.h"

/* Marks silent workers dead and says so (lock held). */
static void expire_locked(coord_ctx *c) {
    uint64_t dead[8];
    size_t n = workers_expire(c->workers, coord_now(c), dead, 8);
    for (size_t i = 0; i < n && i < 8; i++)
        coord_event(c, COORD_EVENT_WARN,
                    "training worker %llu fell silent: declared dead, it holds no one back",
                    (unsigned long long)dead[i]);
    if (n)
        pthread_cond_broadcast(&c->changed);
}

/* The model's consistency policy (lock held): NOT_FOUND for an unknown model. */
static ps_status policy_locked(coord_ctx *c, const char *model, train_consistency *ret_mode,
                               uint32_t *ret_staleness, char *err, size_t err_len) {
    const Ps__ModelInfo *m = registry_model_find(c->models, model, 0);
    if (!m) {
        ps_set_err(err, err_len, "no model %.80s: upload it before training it",
                   model ? model : "");
        return PS_STATUS_NOT_FOUND;
    }
    train_config *cfg = NULL;
    ps_status st = train_config_parse(m->config_json, strlen(m->config_json), &cfg, err, err_len);
    if (st != PS_STATUS_OK) /* checked at registration: only memory can fail here */
        return st;
    *ret_mode = train_config_consistency(cfg);
    *ret_staleness = train_config_staleness(cfg);
    train_config_destroy(cfg);
    return PS_STATUS_OK;
}

ps_status coord_worker_register(coord_ctx *c, const char *model, const char *name,
                                Ps__RegisterWorkerResponse *resp, char *err, size_t err_len) {
    pthread_mutex_lock(&c->lock);
    expire_locked(c);
    train_consistency mode;
    uint32_t staleness;
    ps_status st = policy_locked(c, model, &mode, &staleness, err, err_len);
    if (st == PS_STATUS_OK)
        st = workers_register(c->workers, model, name, coord_now(c), &resp->worker_id, &resp->clock,
                              err, err_len);
    if (st == PS_STATUS_OK) {
        resp->consistency = (char *)train_consistency_name(mode);
        resp->staleness = staleness;
        resp->timeout_ms = (uint32_t)c->worker_timeout_ms;
        coord_event(c, COORD_EVENT_INFO, "training worker %llu (%s) joined model %s at clock %llu",
                    (unsigned long long)resp->worker_id, name && *name ? name : "unnamed", model,
                    (unsigned long long)resp->clock);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

ps_status coord_worker_clock(coord_ctx *c, const Ps__ClockRequest *req, Ps__ClockResponse *resp,
                             char *err, size_t err_len) {
    const char *model = req->model ? req->model : "";
    pthread_mutex_lock(&c->lock);
    expire_locked(c);
    ps_status st;
    if (req->leave) {
        st = workers_leave(c->workers, model, req->worker_id);
        if (st != PS_STATUS_OK)
            ps_set_err(err, err_len, "worker %llu is not a live worker of model %.80s",
                       (unsigned long long)req->worker_id, model);
    } else {
        st = workers_clock(c->workers, model, req->worker_id, req->clock, coord_now(c), err,
                           err_len);
    }
    if (st == PS_STATUS_OK) {
        size_t live = 0;
        uint64_t min = workers_min_clock(c->workers, model, &live);
        resp->min_clock = min == UINT64_MAX ? 0 : min;
        resp->live_workers = (uint32_t)live;
        pthread_cond_broadcast(&c->changed); /* waiters may go on */
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

ps_status coord_worker_wait(coord_ctx *c, const Ps__WaitClockRequest *req, coord_alive_fn alive,
                            void *arg, Ps__ClockResponse *resp, char *err, size_t err_len) {
    const char *model = req->model ? req->model : "";
    pthread_mutex_lock(&c->lock);
    train_consistency mode;
    uint32_t staleness;
    ps_status st = policy_locked(c, model, &mode, &staleness, err, err_len);
    bool parked = false;
    while (st == PS_STATUS_OK) {
        expire_locked(c);
        if ((st = workers_touch(c->workers, model, req->worker_id, coord_now(c), err, err_len)) !=
            PS_STATUS_OK)
            break; /* waiting keeps the waiter alive; a dead one must register again */
        /* a publish fences the model: waits park until it ends, whatever the policy */
        if (!coord_publish_fenced_locked(c, model) &&
            (mode == TRAIN_CONSISTENCY_ASP ||
             workers_ready(c->workers, model, req->clock, staleness)))
            break;
        if (!parked) { /* inside the wait it pushes nothing: a publish may cut */
            workers_park(c->workers, model, req->worker_id, true);
            parked = true;
            pthread_cond_broadcast(&c->changed);
        }
        if (c->stopping) {
            ps_set_err(err, err_len, "the coordinator is shutting down");
            st = PS_STATUS_UNAVAILABLE;
            break;
        }
        pthread_mutex_unlock(&c->lock);
        bool live = alive(arg);
        pthread_mutex_lock(&c->lock);
        if (!live) {
            size_t n = 0;
            uint64_t min = workers_min_clock(c->workers, model, &n);
            ps_set_err(err, err_len,
                       "worker %llu at clock %llu waited for the slowest of %zu workers (clock "
                       "%llu, staleness %u%s) until the deadline",
                       (unsigned long long)req->worker_id, (unsigned long long)req->clock, n,
                       (unsigned long long)min, staleness,
                       coord_publish_fenced_locked(c, model) ? ", a publish running" : "");
            st = PS_STATUS_DEADLINE_EXCEEDED;
            break;
        }
        struct timespec ts = ps_abstime_after_ms(COORD_WATCH_POLL_MS);
        pthread_cond_timedwait(&c->changed, &c->lock, &ts);
    }
    if (parked)
        workers_park(c->workers, model, req->worker_id, false);
    if (st == PS_STATUS_OK) {
        size_t live = 0;
        uint64_t min = workers_min_clock(c->workers, model, &live);
        resp->min_clock = min == UINT64_MAX ? 0 : min;
        resp->live_workers = (uint32_t)live;
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}
