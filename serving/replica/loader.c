/* loader.c: see loader.h. Entries are deep copies of registry entries; the thread
 * loads a private copy of one, so the registry can change while a load runs. */
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "loader.h"
#include "util.h"

typedef struct entry {
    Ps__ModelInfo *info; /* owned (unpacked copy) */
    bool loaded;
    int64_t due_ms;    /* next attempt (monotonic) */
    int delay_ms;      /* last backoff delay; 0 = none yet */
    uint32_t failures; /* in the current streak */
    int64_t first_ms;  /* first attempt of the streak */
} entry;

struct loader {
    loader_opts o;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* registry changed, or stopping */
    entry *entries;
    size_t n;
    bool stopping;
    pthread_t thread;
};

static Ps__ModelInfo *info_copy(const Ps__ModelInfo *in) {
    size_t len = protobuf_c_message_get_packed_size(&in->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(&in->base, buf);
    Ps__ModelInfo *out = ps__model_info__unpack(NULL, len, buf);
    free(buf);
    return out;
}

static void entries_free(entry *e, size_t n) {
    for (size_t i = 0; e && i < n; i++)
        ps__model_info__free_unpacked(e[i].info, NULL);
    free(e);
}

/* The same registry entry: name, version and publish numbers. */
static bool same_entry(const Ps__ModelInfo *a, const Ps__ModelInfo *b) {
    return strcmp(a->name, b->name) == 0 && a->version == b->version &&
           a->published == b->published && a->publishing == b->publishing;
}

/* One attempt at entry `name`/`version` (lock not held): loads a private copy. */
static void attempt(loader *l, Ps__ModelInfo *info) {
    char err[512] = "";
    int64_t t0 = ps_now_ms();
    ps_status st = models_load(l->o.models, info, &l->o.source, err, sizeof err);
    int64_t now = ps_now_ms();
    pthread_mutex_lock(&l->lock);
    entry *e = NULL;
    for (size_t i = 0; i < l->n && !e; i++)
        if (same_entry(l->entries[i].info, info))
            e = &l->entries[i];
    bool report = e && info->publishing && l->o.prepared && (st == PS_STATUS_OK || !e->failures);
    if (st == PS_STATUS_OK) /* the pull's buffers go back to the system, not to an arena */
        malloc_trim(0);
    if (e && st == PS_STATUS_OK) {
        e->loaded = true;
        if (e->failures)
            replica_logger_printf(&l->o.logger, PS_LOG_INFO,
                                  "model %s version %llu loaded in %lld ms, after %u failed "
                                  "attempts over %lld ms",
                                  info->name, (unsigned long long)info->version,
                                  (long long)(now - t0), e->failures,
                                  (long long)(now - e->first_ms));
        else
            replica_logger_printf(&l->o.logger, PS_LOG_INFO,
                                  "model %s version %llu loaded in %lld ms", info->name,
                                  (unsigned long long)info->version, (long long)(now - t0));
        e->failures = 0;
        e->delay_ms = 0;
    } else if (e) {
        int max = l->o.backoff_max_ms;
        e->delay_ms =
            e->delay_ms ? (e->delay_ms > max / 2 ? max : 2 * e->delay_ms) : l->o.backoff_min_ms;
        e->due_ms = now + e->delay_ms;
        if (e->failures++ == 0) { /* once per streak */
            e->first_ms = t0;
            replica_logger_printf(&l->o.logger, PS_LOG_WARN,
                                  "cannot load model %s version %llu: %s (%s); retrying in %d "
                                  "ms, backing off to %d ms (logged again once it loads)",
                                  info->name, (unsigned long long)info->version, err,
                                  ps_status_name(st), e->delay_ms, max);
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (report) /* a cut being published: the coordinator waits for this */
        l->o.prepared(l->o.prepared_arg, info->name, info->version, info->publishing,
                      st == PS_STATUS_OK ? NULL : err);
}

static void *loader_thread(void *arg) {
    loader *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stopping) {
        int64_t now = ps_now_ms(), next = now + 1000;
        entry *due = NULL;
        for (size_t i = 0; i < l->n; i++) {
            entry *e = &l->entries[i];
            if (e->loaded)
                continue;
            if (e->due_ms <= now && (!due || e->due_ms < due->due_ms))
                due = e;
            else if (e->due_ms < next)
                next = e->due_ms;
        }
        if (!due) {
            struct timespec ts = ps_abstime_after_ms(next - now);
            pthread_cond_timedwait(&l->cond, &l->lock, &ts);
            continue;
        }
        Ps__ModelInfo *copy = info_copy(due->info);
        pthread_mutex_unlock(&l->lock);
        bool open = !l->o.gate || l->o.gate(l->o.gate_arg, 100);
        if (copy && open)
            attempt(l, copy);
        ps__model_info__free_unpacked(copy, NULL);
        pthread_mutex_lock(&l->lock);
        if (!copy) { /* out of memory: wait a little before trying again */
            struct timespec ts = ps_abstime_after_ms(l->o.backoff_min_ms);
            pthread_cond_timedwait(&l->cond, &l->lock, &ts);
        }
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

ps_status loader_create(const loader_opts *opts, loader **ret_loader) {
    if (!opts || !opts->models || !opts->source.pull)
        return PS_STATUS_INVALID_ARGUMENT;
    loader *l = calloc(1, sizeof *l);
    if (!l)
        return PS_STATUS_NO_MEMORY;
    l->o = *opts;
    if (l->o.backoff_min_ms <= 0)
        l->o.backoff_min_ms = LOADER_DEFAULT_BACKOFF_MIN_MS;
    if (l->o.backoff_max_ms <= 0)
        l->o.backoff_max_ms = LOADER_DEFAULT_BACKOFF_MAX_MS;
    if (l->o.backoff_max_ms < l->o.backoff_min_ms)
        l->o.backoff_max_ms = l->o.backoff_min_ms;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    if (pthread_create(&l->thread, NULL, loader_thread, l) != 0) {
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    *ret_loader = l;
    return PS_STATUS_OK;
}

void loader_destroy(loader *l) {
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    entries_free(l->entries, l->n);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

ps_status loader_registry_install(loader *l, const Ps__ModelsUpdate *update) {
    size_t n = update->n_models;
    if (n > LOADER_MAX_MODELS)
        return PS_STATUS_RESOURCE_EXHAUSTED;
    entry *fresh = calloc(n + 1, sizeof *fresh);
    const char **names = calloc(n + 1, sizeof *names);
    uint64_t *versions = calloc(n + 1, sizeof *versions);
    ps_status st = PS_STATUS_NO_MEMORY;
    size_t made = 0;
    if (!fresh || !names || !versions)
        goto out;
    for (; made < n; made++) {
        fresh[made].info = info_copy(update->models[made]);
        if (!fresh[made].info)
            goto out;
        names[made] = fresh[made].info->name;
        versions[made] = fresh[made].info->version;
    }
    st = models_expect(l->o.models, n, names, versions);
    if (st != PS_STATUS_OK)
        goto out;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < n; i++) { /* known entries keep their state */
        for (size_t k = 0; k < l->n; k++) {
            entry *old = &l->entries[k];
            if (same_entry(old->info, fresh[i].info)) {
                Ps__ModelInfo *info = fresh[i].info;
                fresh[i] = *old;
                old->info = info; /* freed with the old array */
                break;
            }
        }
    }
    entry *old = l->entries;
    size_t old_n = l->n;
    l->entries = fresh;
    l->n = n;
    fresh = old;
    made = old_n;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
out:
    entries_free(fresh, made);
    free(names);
    free(versions);
    return st;
}

size_t loader_pending(loader *l) {
    pthread_mutex_lock(&l->lock);
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += !l->entries[i].loaded;
    pthread_mutex_unlock(&l->lock);
    return n;
}
