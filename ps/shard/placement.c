/* placement.c: the ring this shard holds and the ownership check (see placement.h). */
#include "placement.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "util.h"

struct placement {
    pthread_rwlock_t lock;
    pthread_mutex_t hold_lock;    /* an install waits for no hold; a hold for a newer ring */
    pthread_cond_t hold_changed;  /* holds let go, a ring installed */
    uint32_t holds;               /* placement_hold calls not yet released */
    char id[HASHRING_ID_MAX + 1]; /* this shard's id */
    hashring *ring;               /* the newest ring installed; NULL before the first */
    uint32_t self;                /* this shard's index in ring; UINT32_MAX if not a member */
    uint32_t replication;         /* R */
};

ps_status placement_create(const placement_opts *opts, placement **ret_placement) {
    if (!opts || !opts->self_id || !opts->self_id[0] || strlen(opts->self_id) > HASHRING_ID_MAX)
        return PS_STATUS_INVALID_ARGUMENT;
    placement *p = calloc(1, sizeof *p);
    if (!p)
        return PS_STATUS_NO_MEMORY;
    if (pthread_rwlock_init(&p->lock, NULL) != 0) {
        free(p);
        return PS_STATUS_NO_MEMORY;
    }
    if (pthread_mutex_init(&p->hold_lock, NULL) != 0) {
        pthread_rwlock_destroy(&p->lock);
        free(p);
        return PS_STATUS_NO_MEMORY;
    }
    if (pthread_cond_init(&p->hold_changed, NULL) != 0) {
        pthread_mutex_destroy(&p->hold_lock);
        pthread_rwlock_destroy(&p->lock);
        free(p);
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(p->id, sizeof p->id, "%s", opts->self_id);
    p->self = UINT32_MAX;
    p->replication = 1;
    *ret_placement = p;
    return PS_STATUS_OK;
}

void placement_destroy(placement *p) {
    if (!p)
        return;
    hashring_destroy(p->ring);
    pthread_cond_destroy(&p->hold_changed);
    pthread_mutex_destroy(&p->hold_lock);
    pthread_rwlock_destroy(&p->lock);
    free(p);
}

/* (lock held) */
static void info_locked(const placement *p, placement_info *ret_info) {
    ret_info->epoch = p->ring ? hashring_epoch(p->ring) : 0;
    ret_info->nodes = p->ring ? hashring_node_count(p->ring) : 0;
    ret_info->member = p->ring && p->self != UINT32_MAX;
}

ps_status placement_ring_install(placement *p, const void *data, size_t len, bool *ret_installed,
                                 placement_info *ret_info) {
    hashring *r = NULL;
    if (hashring_parse(data, len, &r) != PS_STATUS_OK)
        return PS_STATUS_PARSE;
    bool installed = false;
    pthread_mutex_lock(&p->hold_lock); /* taken before `lock`, as placement_hold does */
    while (p->holds > 0)
        pthread_cond_wait(&p->hold_changed, &p->hold_lock);
    pthread_rwlock_wrlock(&p->lock);
    if (!p->ring || hashring_epoch(r) > hashring_epoch(p->ring)) {
        uint32_t self = UINT32_MAX;
        if (!hashring_find(r, p->id, &self))
            self = UINT32_MAX;
        hashring_destroy(p->ring);
        p->ring = r;
        p->self = self;
        r = NULL;
        installed = true;
    }
    if (ret_info)
        info_locked(p, ret_info);
    pthread_rwlock_unlock(&p->lock);
    if (installed)
        pthread_cond_broadcast(&p->hold_changed); /* holds waiting for a newer ring */
    pthread_mutex_unlock(&p->hold_lock);
    hashring_destroy(r);
    if (ret_installed)
        *ret_installed = installed;
    return PS_STATUS_OK;
}

void placement_get_info(placement *p, placement_info *ret_info) {
    pthread_rwlock_rdlock(&p->lock);
    info_locked(p, ret_info);
    pthread_rwlock_unlock(&p->lock);
}

void placement_hold(placement *p, uint64_t want_epoch, int64_t deadline_ms,
                    placement_info *ret_info) {
    pthread_mutex_lock(&p->hold_lock); /* no install runs while it is held */
    for (;;) {
        placement_get_info(p, ret_info);
        int64_t left = deadline_ms - ps_now_ms();
        if (ret_info->epoch >= want_epoch || left <= 0)
            break;
        struct timespec ts = ps_abstime_after_ms(left);
        pthread_cond_timedwait(&p->hold_changed, &p->hold_lock, &ts);
    }
    p->holds++;
    pthread_mutex_unlock(&p->hold_lock);
}

void placement_release(placement *p) {
    pthread_mutex_lock(&p->hold_lock);
    if (--p->holds == 0)
        pthread_cond_broadcast(&p->hold_changed);
    pthread_mutex_unlock(&p->hold_lock);
}

void placement_set_replication(placement *p, uint32_t replication) {
    pthread_rwlock_wrlock(&p->lock);
    p->replication = replication ? replication : 1;
    pthread_rwlock_unlock(&p->lock);
}

/* This shard is the key's primary, or with `any` one of its owners (lock held). */
static bool owns_locked(const placement *p, uint64_t key, bool any) {
    if (!any || p->replication < 2)
        return hashring_primary(p->ring, key) == p->self;
    uint32_t o[HASHRING_MAX_REPLICAS];
    uint32_t got = hashring_owners(p->ring, key, p->replication, o);
    for (uint32_t i = 0; i < got; i++)
        if (o[i] == p->self)
            return true;
    return false;
}

bool placement_owns_any(placement *p, uint64_t key) {
    pthread_rwlock_rdlock(&p->lock);
    bool owns = p->ring && p->self != UINT32_MAX && owns_locked(p, key, true);
    pthread_rwlock_unlock(&p->lock);
    return owns;
}

static ps_status check(placement *p, bool any, uint64_t request_epoch, size_t n,
                       const uint64_t *keys, uint64_t *ret_epoch, char *err, size_t err_len) {
    ps_status st = PS_STATUS_OK;
    pthread_rwlock_rdlock(&p->lock);
    uint64_t epoch = p->ring ? hashring_epoch(p->ring) : 0;
    if (ret_epoch)
        *ret_epoch = epoch;
    if (!p->ring || p->self == UINT32_MAX) {
        ps_set_err(err, err_len, "shard %s is not on the ring (epoch %llu): refresh the ring",
                   p->id, (unsigned long long)epoch);
        st = PS_STATUS_WRONG_EPOCH;
    }
    for (size_t i = 0; st == PS_STATUS_OK && i < n; i++) {
        if (!owns_locked(p, keys[i], any)) {
            ps_set_err(err, err_len,
                       "key %016llx is not owned by shard %s at ring epoch %llu (request epoch "
                       "%llu): refresh the ring",
                       (unsigned long long)keys[i], p->id, (unsigned long long)epoch,
                       (unsigned long long)request_epoch);
            st = PS_STATUS_WRONG_EPOCH;
        }
    }
    pthread_rwlock_unlock(&p->lock);
    return st;
}

ps_status placement_check(placement *p, uint64_t request_epoch, size_t n, const uint64_t *keys,
                          uint64_t *ret_epoch, char *err, size_t err_len) {
    return check(p, false, request_epoch, n, keys, ret_epoch, err, err_len);
}

ps_status placement_check_any(placement *p, uint64_t request_epoch, size_t n, const uint64_t *keys,
                              uint64_t *ret_epoch, char *err, size_t err_len) {
    return check(p, true, request_epoch, n, keys, ret_epoch, err, err_len);
}
