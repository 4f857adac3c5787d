/* workers.c: training workers and their clocks (see workers.h). A flat array: the
 * coordinator sees at most a few thousand workers, and every call is O(workers). */
#include "workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct worker {
    char model[256];
    char name[WORKERS_NAME_MAX + 1];
    uint64_t id;
    uint64_t clock;
    int64_t seen_ms;
    bool parked; /* inside a wait */
} worker;

struct workers {
    int64_t timeout_ms;
    size_t max;
    worker *list; /* live workers */
    size_t n, cap;
    uint64_t next_id;
};

ps_status workers_create(const workers_opts *opts, workers **ret) {
    workers *w = calloc(1, sizeof *w);
    if (!w)
        return PS_STATUS_NO_MEMORY;
    w->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : WORKERS_DEFAULT_TIMEOUT_MS;
    w->max = opts && opts->max_workers ? opts->max_workers : WORKERS_DEFAULT_MAX;
    w->next_id = 1;
    *ret = w;
    return PS_STATUS_OK;
}

void workers_destroy(workers *w) {
    if (!w)
        return;
    free(w->list);
    free(w);
}

static worker *find(const workers *w, const char *model, uint64_t id) {
    for (size_t i = 0; i < w->n; i++)
        if (w->list[i].id == id && strcmp(w->list[i].model, model) == 0)
            return &w->list[i];
    return NULL;
}

uint64_t workers_min_clock(const workers *w, const char *model, size_t *ret_live) {
    uint64_t min = UINT64_MAX;
    size_t live = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->list[i].model, model) != 0)
            continue;
        live++;
        if (w->list[i].clock < min)
            min = w->list[i].clock;
    }
    if (ret_live)
        *ret_live = live;
    return min;
}

ps_status workers_register(workers *w, const char *model, const char *name, int64_t now_ms,
                           uint64_t *ret_id, uint64_t *ret_clock, char *err, size_t err_len) {
    if (!model || !*model || strlen(model) >= sizeof w->list[0].model) {
        ps_set_err(err, err_len, "a worker registers for a model: name one (1-255 bytes)");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (name && !ps_text_valid(name, strlen(name))) { /* a newline could forge a log line */
        ps_set_err(err, err_len, "a worker's name must be text (UTF-8, no control characters)");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (w->n == w->max) {
        ps_set_err(err, err_len, "%zu training workers are registered, the most allowed", w->max);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        worker *list = realloc(w->list, cap * sizeof *list);
        if (!list) {
            ps_set_err(err, err_len, "out of memory");
            return PS_STATUS_NO_MEMORY;
        }
        w->list = list;
        w->cap = cap;
    }
    uint64_t min = workers_min_clock(w, model, NULL);
    worker *k = &w->list[w->n++];
    memset(k, 0, sizeof *k);
    snprintf(k->model, sizeof k->model, "%s", model);
    snprintf(k->name, sizeof k->name, "%s", name ? name : "");
    k->id = w->next_id++;
    k->clock = min == UINT64_MAX ? 0 : min;
    k->seen_ms = now_ms;
    *ret_id = k->id;
    *ret_clock = k->clock;
    return PS_STATUS_OK;
}

static ps_status unknown(const char *model, uint64_t id, char *err, size_t err_len) {
    ps_set_err(err, err_len,
               "worker %llu is not a live worker of model %s (never registered, or silent "
               "too long and declared dead): register again",
               (unsigned long long)id, model);
    return PS_STATUS_NOT_FOUND;
}

ps_status workers_clock(workers *w, const char *model, uint64_t id, uint64_t clock, int64_t now_ms,
                        char *err, size_t err_len) {
    worker *k = find(w, model, id);
    if (!k)
        return unknown(model, id, err, err_len);
    if (clock > WORKERS_MAX_CLOCK) {
        ps_set_err(err, err_len, "worker %llu of model %s: clock %llu is past the largest, %llu",
                   (unsigned long long)id, model, (unsigned long long)clock,
                   (unsigned long long)WORKERS_MAX_CLOCK);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (clock < k->clock) {
        ps_set_err(
            err, err_len, "worker %llu of model %s is at clock %llu: it cannot go back to %llu",
            (unsigned long long)id, model, (unsigned long long)k->clock, (unsigned long long)clock);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    k->clock = clock;
    k->seen_ms = now_ms;
    return PS_STATUS_OK;
}

ps_status workers_touch(workers *w, const char *model, uint64_t id, int64_t now_ms, char *err,
                        size_t err_len) {
    worker *k = find(w, model, id);
    if (!k)
        return unknown(model, id, err, err_len);
    k->seen_ms = now_ms;
    return PS_STATUS_OK;
}

ps_status workers_leave(workers *w, const char *model, uint64_t id) {
    worker *k = find(w, model, id);
    if (!k)
        return PS_STATUS_NOT_FOUND;
    *k = w->list[--w->n];
    return PS_STATUS_OK;
}

size_t workers_expire(workers *w, int64_t now_ms, uint64_t *ret_dead, size_t max) {
    size_t dead = 0;
    for (size_t i = 0; i < w->n;) {
        if (now_ms - w->list[i].seen_ms < w->timeout_ms) {
            i++;
            continue;
        }
        if (ret_dead && dead < max)
            ret_dead[dead] = w->list[i].id;
        dead++;
        w->list[i] = w->list[--w->n];
    }
    return dead;
}

ps_status workers_park(workers *w, const char *model, uint64_t id, bool parked) {
    worker *k = find(w, model, id);
    if (!k)
        return PS_STATUS_NOT_FOUND;
    k->parked = parked;
    return PS_STATUS_OK;
}

bool workers_all_parked(const workers *w, const char *model, size_t *ret_live) {
    size_t live = 0, parked = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->list[i].model, model) != 0)
            continue;
        live++;
        parked += w->list[i].parked;
    }
    if (ret_live)
        *ret_live = live;
    return parked == live;
}

bool workers_ready(const workers *w, const char *model, uint64_t clock, uint64_t staleness) {
    uint64_t min = workers_min_clock(w, model, NULL);
    return min == UINT64_MAX || clock <= staleness || min >= clock - staleness;
}
