/* sync.c: the set of subscriptions (one per shard on the ring), the watch for stalled
 * streams, and the thread that pulls stale chunks again. One shard's subscriber thread
 * is in sync_shard.c; the locks are described in sync_internal.h. See sync.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_internal.h"
#include "util.h"

bool sync_sub_running(const sub *b) {
    return !atomic_load(&b->owner->stopping) && atomic_load(&b->wanted);
}

void sync_wake(sync_ctx *s, bool fix) {
    pthread_mutex_lock(&s->lock);
    s->wake |= fix;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void sync_nap(sync_ctx *s, int ms) {
    pthread_mutex_lock(&s->lock);
    if (!atomic_load(&s->stopping)) {
        struct timespec ts = ps_abstime_after_ms(ms);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
}

bool sync_owned_by(sync_ctx *s, uint64_t key, const char *addr) {
    pthread_mutex_lock(&s->ring_lock);
    hashring_node_info info;
    uint32_t i = hashring_primary(s->ring, key);
    bool mine =
        i != UINT32_MAX && hashring_node_at(s->ring, i, &info) && strcmp(info.addr, addr) == 0;
    pthread_mutex_unlock(&s->ring_lock);
    return mine;
}

/* Cancels streams that carried nothing for stall_ms (the subscriber resubscribes). */
static void watch_stalls(sync_ctx *s) {
    int64_t now = ps_now_ms();
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_subs; i++) {
        sub *b = s->subs[i];
        if (!atomic_load(&b->subscribed) || now - atomic_load(&b->last_ms) <= s->o.stall_ms)
            continue;
        pthread_mutex_lock(&b->lock);
        if (b->stream && !atomic_exchange(&b->stalled, true))
            rpc_stream_cancel(b->stream);
        pthread_mutex_unlock(&b->lock);
    }
    /* reap subscribers that are gone from the ring and have stopped */
    for (size_t i = 0; i < s->n_subs;) {
        sub *b = s->subs[i];
        if (!atomic_load(&b->wanted) && atomic_load(&b->done)) {
            s->subs[i] = s->subs[--s->n_subs];
            sync_sub_free(b);
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *fix_thread(void *arg) {
    sync_ctx *s = arg;
    bool failing = false;
    while (!atomic_load(&s->stopping)) {
        pthread_mutex_lock(&s->lock);
        if (!s->wake && !atomic_load(&s->stopping)) {
            struct timespec ts = ps_abstime_after_ms(s->o.fix_interval_ms);
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        s->wake = false;
        pthread_mutex_unlock(&s->lock);
        if (atomic_load(&s->stopping))
            break;
        watch_stalls(s);
        char err[512] = "";
        size_t left = 0;
        if (models_stale_fix(s->o.models, &s->o.source, &left, err, sizeof err) != PS_STATUS_OK) {
            if (!failing) /* once per streak, not ten times a second */
                replica_logger_printf(&s->o.logger, PS_LOG_WARN,
                                      "pulling stale chunks again "
                                      "failed (serving the last good values meanwhile; "
                                      "retrying): %s",
                                      err);
            failing = true;
        } else if (failing && left == 0) {
            replica_logger_printf(&s->o.logger, PS_LOG_INFO,
                                  "stale chunks pulled again: replica up to date");
            failing = false;
        }
    }
    return NULL;
}

ps_status sync_create(const sync_opts *opts, sync_ctx **ret_sync) {
    if (!opts || !opts->models || !opts->source.pull)
        return PS_STATUS_INVALID_ARGUMENT;
    sync_ctx *s = calloc(1, sizeof *s);
    if (!s)
        return PS_STATUS_NO_MEMORY;
    s->o = *opts;
    if (s->o.stall_ms <= 0)
        s->o.stall_ms = SYNC_DEFAULT_STALL_MS;
    if (s->o.fix_interval_ms <= 0)
        s->o.fix_interval_ms = SYNC_DEFAULT_FIX_MS;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->ring_lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, fix_thread, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->ring_lock);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    *ret_sync = s;
    return PS_STATUS_OK;
}

void sync_destroy(sync_ctx *s) {
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    sync_wake(s, true);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->n_subs; i++)
        sync_sub_stop(s->subs[i]);
    for (size_t i = 0; i < s->n_subs; i++)
        sync_sub_free(s->subs[i]);
    hashring_destroy(s->ring);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->ring_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static bool on_ring(const Ps__Ring *ring, const char *addr) {
    for (size_t k = 0; k < ring->n_nodes; k++)
        if (ring->nodes[k]->in_ring && strcmp(ring->nodes[k]->addr, addr) == 0)
            return true;
    return false;
}

/* Keys whose primary is another shard on the new ring than on the old one. */
typedef struct moved_keys {
    const hashring *old, *now;
} moved_keys;

static const char *primary_addr(const hashring *r, uint64_t key) {
    hashring_node_info info;
    uint32_t i = r ? hashring_primary(r, key) : UINT32_MAX;
    return i != UINT32_MAX && hashring_node_at(r, i, &info) ? info.addr : "";
}

static bool moved(uint64_t key, void *arg) {
    const moved_keys *m = arg;
    return strcmp(primary_addr(m->old, key), primary_addr(m->now, key)) != 0;
}

ps_status sync_ring_install(sync_ctx *s, const Ps__Ring *ring) {
    hashring *placement = NULL;
    if (hashring_parse(ring->ring.data, ring->ring.len, &placement) == PS_STATUS_OK) {
        pthread_mutex_lock(&s->ring_lock);
        hashring *old = s->ring;
        s->ring = placement;
        pthread_mutex_unlock(&s->ring_lock);
        /* chunks whose primary changed (a failover, a ring change): their updates come
         * from the new primary, in its own sequence, from now on, and what came between
         * may have been missed: pull those (only those) again */
        moved_keys m = {old, placement};
        size_t n = old ? models_repull_mark(s->o.models, moved, &m) : 0;
        if (n > 0) {
            replica_logger_printf(&s->o.logger, PS_LOG_INFO,
                                  "ring epoch %llu: %zu chunks have a new primary; pulling them "
                                  "from it",
                                  (unsigned long long)ring->epoch, n);
            sync_wake(s, true);
        }
        hashring_destroy(old);
    }
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_subs; i++)
        if (atomic_load(&s->subs[i]->wanted) && !on_ring(ring, s->subs[i]->addr))
            sync_sub_stop(s->subs[i]);
    for (size_t k = 0; k < ring->n_nodes; k++) {
        const Ps__NodeInfo *n = ring->nodes[k];
        if (!n->in_ring || !n->addr || !*n->addr)
            continue;
        bool have = false;
        for (size_t i = 0; i < s->n_subs && !have; i++)
            have = atomic_load(&s->subs[i]->wanted) && strcmp(s->subs[i]->addr, n->addr) == 0;
        if (!have && st == PS_STATUS_OK)
            st = sync_sub_start(s, n);
    }
    s->have_ring = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* Lock held. */
static bool all_settled(const sync_ctx *s) {
    if (!s->have_ring)
        return false;
    for (size_t i = 0; i < s->n_subs; i++)
        if (atomic_load(&s->subs[i]->wanted) && !atomic_load(&s->subs[i]->settled))
            return false;
    return true;
}

bool sync_ready_wait(sync_ctx *s, int timeout_ms) {
    struct timespec ts = ps_abstime_after_ms(timeout_ms);
    pthread_mutex_lock(&s->lock);
    bool ok = all_settled(s);
    while (!ok && !atomic_load(&s->stopping)) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) != 0)
            break;
        ok = all_settled(s);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}
