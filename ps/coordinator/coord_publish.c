/* coord_publish.c: consistent propagation's cut (psctl model publish; see Publish in
 * coordinator.proto and coord.h): fence the model's training workers until none is
 * pushing, have every live replica serving the version build the cut, commit, release.
 *
 * One publish per model at a time. Its state lives in the context (c->publishes) only
 * while it runs; what it leaves is the registry entry's `published` number. The steps
 * wait on the context's condition variable with the lock released, so heartbeats,
 * clocks and Prepared calls go on meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_internal.h"
#include "train_config.h"
#include "util.h"

static coord_publish *find_locked(coord_ctx *c, const char *model) {
    for (size_t i = 0; i < COORD_MAX_PUBLISHES; i++)
        if (c->publishes[i].active && strcmp(c->publishes[i].model, model) == 0)
            return &c->publishes[i];
    return NULL;
}

bool coord_publish_fenced_locked(coord_ctx *c, const char *model) {
    return find_locked(c, model) != NULL;
}

/* Replaces the registry entry's publish numbers (lock held). */
static ps_status mark_locked(coord_ctx *c, const char *model, uint64_t version, uint64_t published,
                             uint64_t publishing) {
    const Ps__ModelInfo *m = registry_model_find(c->models, model, version);
    Ps__ModelInfo *copy = NULL;
    if (!m)
        return PS_STATUS_NOT_FOUND; /* deleted meanwhile */
    ps_status st = registry_model_copy(m, &copy);
    if (st != PS_STATUS_OK)
        return st;
    copy->published = published;
    copy->publishing = publishing;
    uint64_t v = 0;
    char err[256];
    st = registry_model_put(c->models, copy, &v, err, sizeof err);
    if (st != PS_STATUS_OK)
        ps__model_info__free_unpacked(copy, NULL);
    pthread_cond_broadcast(&c->changed);
    return st;
}

/* Checks the model may be published and starts the fence (lock held). */
static ps_status begin_locked(coord_ctx *c, const Ps__PublishRequest *req, coord_publish **ret,
                              char *err, size_t err_len) {
    const char *model = req->model ? req->model : "";
    const Ps__ModelInfo *m = registry_model_find(c->models, model, req->version);
    if (!m) {
        ps_set_err(err, err_len, "no model %.80s version %llu", model,
                   (unsigned long long)req->version);
        return PS_STATUS_NOT_FOUND;
    }
    train_config *cfg = NULL;
    ps_status st = train_config_parse(m->config_json, strlen(m->config_json), &cfg, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    train_propagation prop = train_config_propagation(cfg);
    train_config_destroy(cfg);
    if (prop != TRAIN_PROPAGATION_CONSISTENT) {
        ps_set_err(err, err_len,
                   "model %s propagates by streaming: replicas apply every update as it comes; "
                   "set \"training\": {\"propagation\": \"consistent\"} in its config.json to "
                   "publish cuts",
                   model);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (find_locked(c, model)) {
        ps_set_err(err, err_len, "model %s is being published already: wait for that one", model);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    coord_publish *p = NULL;
    for (size_t i = 0; i < COORD_MAX_PUBLISHES && !p; i++)
        if (!c->publishes[i].active)
            p = &c->publishes[i];
    if (!p) {
        ps_set_err(err, err_len, "%d publishes are running: wait for one to end",
                   COORD_MAX_PUBLISHES);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    memset(p, 0, sizeof *p);
    p->active = true;
    snprintf(p->model, sizeof p->model, "%s", model);
    p->version = m->version;
    p->number = m->published + 1;
    p->started_ms = coord_now(c);
    pthread_cond_broadcast(&c->changed); /* waits see the fence */
    *ret = p;
    return PS_STATUS_OK;
}

static void end_locked(coord_ctx *c, coord_publish *p) {
    free(p->expected);
    free(p->prepared);
    memset(p, 0, sizeof *p);
    pthread_cond_broadcast(&c->changed); /* parked workers go on */
}

static void fill(coord_ctx *c, const coord_publish *p, const char *phase,
                 Ps__PublishProgress *out) {
    ps__publish_progress__init(out);
    out->phase = (char *)phase;
    out->version = p->version;
    out->publish = p->number;
    out->workers = p->workers;
    for (size_t i = 0; i < p->n_expected; i++)
        out->replicas += p->prepared[i];
    out->elapsed_ms = (uint64_t)(coord_now(c) - p->started_ms);
}

/* The live replicas serving the version (lock held): they must prepare the cut. */
static ps_status expect_replicas_locked(coord_ctx *c, coord_publish *p) {
    uint64_t ref = membership_model_ref(p->model, p->version);
    size_t n = membership_node_count(c->members);
    p->expected = calloc(n + 1, sizeof *p->expected);
    p->prepared = calloc(n + 1, sizeof *p->prepared);
    if (!p->expected || !p->prepared)
        return PS_STATUS_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        const membership_node *node = membership_node_at_const(c->members, i);
        for (uint32_t k = 0; node->alive && k < node->n_serving; k++) {
            if (node->serving[k] == ref) {
                snprintf(p->expected[p->n_expected++], sizeof p->expected[0], "%s", node->id);
                break;
            }
        }
    }
    return PS_STATUS_OK;
}

/* True once every expected replica that is still alive has prepared (lock held). */
static bool all_prepared_locked(coord_ctx *c, const coord_publish *p) {
    for (size_t i = 0; i < p->n_expected; i++) {
        if (p->prepared[i])
            continue;
        const membership_node *n = membership_node_find(c->members, p->expected[i]);
        if (n && n->alive)
            return false; /* a dead replica is not waited for: it reloads when back */
    }
    return true;
}

/* Waits (lock held) until done(c, p) or the call dies or the coordinator stops. */
static ps_status await_locked(coord_ctx *c, coord_publish *p,
                              bool (*done)(coord_ctx *, coord_publish *), coord_alive_fn alive,
                              void *arg, const char *what, char *err, size_t err_len) {
    for (;;) {
        if (p->error[0]) {
            ps_set_err(err, err_len, "publish %llu of model %s failed: %s",
                       (unsigned long long)p->number, p->model, p->error);
            return PS_STATUS_FAILED_PRECONDITION;
        }
        if (done(c, p))
            return PS_STATUS_OK;
        if (c->stopping) {
            ps_set_err(err, err_len, "the coordinator is shutting down");
            return PS_STATUS_UNAVAILABLE;
        }
        pthread_mutex_unlock(&c->lock);
        bool live = alive(arg);
        pthread_mutex_lock(&c->lock);
        if (!live) {
            ps_set_err(err, err_len,
                       "publish %llu of model %s: the deadline passed while waiting for %s; "
                       "nothing changed",
                       (unsigned long long)p->number, p->model, what);
            return PS_STATUS_DEADLINE_EXCEEDED;
        }
        struct timespec ts = ps_abstime_after_ms(COORD_WATCH_POLL_MS / 4);
        pthread_cond_timedwait(&c->changed, &c->lock, &ts);
    }
}

static bool workers_parked(coord_ctx *c, coord_publish *p) {
    size_t live = 0;
    uint64_t dead[1];
    workers_expire(c->workers, coord_now(c), dead, 0);
    bool all = workers_all_parked(c->workers, p->model, &live);
    p->workers = (uint32_t)live;
    return all;
}

static bool replicas_prepared(coord_ctx *c, coord_publish *p) {
    return all_prepared_locked(c, p);
}

/* Sends a progress message with the lock released; false when the call is gone. */
static bool report(coord_ctx *c, coord_publish *p, const char *phase, coord_publish_fn progress,
                   void *arg) {
    Ps__PublishProgress msg;
    fill(c, p, phase, &msg);
    pthread_mutex_unlock(&c->lock);
    bool ok = progress(arg, &msg);
    pthread_mutex_lock(&c->lock);
    return ok;
}

ps_status coord_publish_run(coord_ctx *c, const Ps__PublishRequest *req, coord_alive_fn alive,
                            coord_publish_fn progress, void *arg, char *err, size_t err_len) {
    coord_publish *p = NULL;
    pthread_mutex_lock(&c->lock);
    ps_status st = begin_locked(c, req, &p, err, err_len);
    if (st != PS_STATUS_OK) {
        pthread_mutex_unlock(&c->lock);
        return st;
    }
    coord_event(c, COORD_EVENT_INFO, "model %s version %llu: publish %llu: fencing its workers",
                p->model, (unsigned long long)p->version, (unsigned long long)p->number);
    bool marked = false;
    if (!report(c, p, "fencing", progress, arg))
        st = PS_STATUS_CANCELLED;
    if (st == PS_STATUS_OK)
        st = await_locked(c, p, workers_parked, alive, arg, "the training workers to park", err,
                          err_len);
    if (st == PS_STATUS_OK && (st = expect_replicas_locked(c, p)) == PS_STATUS_OK &&
        (st = mark_locked(c, p->model, p->version, p->number - 1, p->number)) == PS_STATUS_OK)
        marked = true;
    if (st == PS_STATUS_OK && !report(c, p, "preparing", progress, arg))
        st = PS_STATUS_CANCELLED;
    if (st == PS_STATUS_OK)
        st = await_locked(c, p, replicas_prepared, alive, arg, "the replicas to build the cut", err,
                          err_len);
    if (st == PS_STATUS_OK)
        st = mark_locked(c, p->model, p->version, p->number, 0);
    if (st != PS_STATUS_OK) {
        if (marked) /* replicas drop what they built */
            mark_locked(c, p->model, p->version, p->number - 1, 0);
        if (st == PS_STATUS_NO_MEMORY || st == PS_STATUS_NOT_FOUND)
            ps_set_err(err, err_len, "publish of model %s ended: %s", p->model,
                       st == PS_STATUS_NOT_FOUND ? "the version was deleted" : "out of memory");
        coord_event(c, COORD_EVENT_WARN, "model %s: publish %llu abandoned: %s", p->model,
                    (unsigned long long)p->number, err);
        end_locked(c, p);
        coord_unlock_and_persist(c);
        return st;
    }
    Ps__PublishProgress done;
    fill(c, p, "committed", &done);
    coord_event(c, COORD_EVENT_INFO,
                "model %s version %llu: publish %llu committed (%u workers paused, %u replicas, "
                "%llu ms)",
                p->model, (unsigned long long)p->version, (unsigned long long)p->number,
                done.workers, done.replicas, (unsigned long long)done.elapsed_ms);
    end_locked(c, p);
    coord_unlock_and_persist(c);
    return progress(arg, &done) ? PS_STATUS_OK : PS_STATUS_CANCELLED;
}

ps_status coord_publish_prepared(coord_ctx *c, const Ps__PreparedRequest *req, char *err,
                                 size_t err_len) {
    const char *model = req->model ? req->model : "", *node = req->node_id ? req->node_id : "";
    pthread_mutex_lock(&c->lock);
    coord_publish *p = find_locked(c, model);
    ps_status st = PS_STATUS_OK;
    if (!p || p->version != req->version || p->number != req->publish) {
        ps_set_err(err, err_len, "no publish %llu of model %.80s version %llu is being prepared",
                   (unsigned long long)req->publish, model, (unsigned long long)req->version);
        st = PS_STATUS_NOT_FOUND;
    } else {
        bool known = false;
        for (size_t i = 0; i < p->n_expected; i++) {
            if (strcmp(p->expected[i], node) != 0)
                continue;
            known = true;
            if (req->error && req->error[0])
                snprintf(p->error, sizeof p->error, "replica %s could not build it: %.200s", node,
                         req->error);
            else
                p->prepared[i] = true;
        }
        if (!known) { /* not waited for (it began serving later): fine, nothing to do */
        }
        pthread_cond_broadcast(&c->changed);
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}
