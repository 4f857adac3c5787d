/* replicator.c: the backups' targets and queues and the waits of pushes (see
 * replicator.h; the sender lanes are in replicator_lanes.c). One mutex guards the ring, every queue
 * and every flag; one condition variable tells senders of new entries and waiters of
 * acknowledgements. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "replicator_internal.h"
#include "util.h"

ps_status replicator_create(const replicator_opts *opts, replicator **ret) {
    if (!opts || !opts->self_id || !opts->self_id[0] || strlen(opts->self_id) > HASHRING_ID_MAX ||
        !ret)
        return PS_STATUS_INVALID_ARGUMENT;
    replicator *r = calloc(1, sizeof *r);
    if (!r)
        return PS_STATUS_NO_MEMORY;
    r->opts = *opts;
    snprintf(r->self, sizeof r->self, "%s", opts->self_id);
    r->opts.self_id = r->self;
    if (!r->opts.call_timeout_ms)
        r->opts.call_timeout_ms = REPLICATOR_CALL_TIMEOUT_MS;
    if (!r->opts.give_up_ms)
        r->opts.give_up_ms = REPLICATOR_GIVE_UP_MS;
    if (!r->opts.max_batch_bytes)
        r->opts.max_batch_bytes = REPLICATOR_MAX_BATCH_BYTES;
    r->self_cur = UINT32_MAX;
    r->replication = 1;
    r->next_stream_num = 1;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return PS_STATUS_NO_MEMORY;
    }
    if (pthread_cond_init(&r->changed, NULL) != 0) {
        pthread_mutex_destroy(&r->lock);
        free(r);
        return PS_STATUS_NO_MEMORY;
    }
    *ret = r;
    return PS_STATUS_OK;
}

/* Joins and frees the targets that were removed (lock NOT held). */
static void reap_removed(replicator *r) {
    for (;;) {
        repl_target *gone = NULL;
        pthread_mutex_lock(&r->lock);
        for (repl_target **pp = &r->targets; *pp; pp = &(*pp)->next) {
            if ((*pp)->removed || r->stopping) {
                gone = *pp;
                *pp = gone->next;
                break;
            }
        }
        pthread_mutex_unlock(&r->lock);
        if (!gone)
            return;
        for (uint32_t i = 0; i < gone->n_lanes; i++)
            pthread_join(gone->lanes[i].thread, NULL);
        rpc_channel_destroy(gone->channel);
        free(gone);
    }
}

/* Frees the rings and target maps held (lock held, or no other thread). */
static void free_view(replicator *r) {
    hashring_destroy(r->ring);
    hashring_destroy(r->pending);
    hashring_destroy(r->settled);
    free(r->cur_t);
    free(r->pend_t);
    free(r->live);
}

void replicator_destroy(replicator *r) {
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    reap_removed(r);
    free_view(r);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static repl_target *find_target_locked(replicator *r, const char *id) {
    for (repl_target *t = r->targets; t; t = t->next)
        if (!t->removed && strcmp(t->id, id) == 0)
            return t;
    return NULL;
}

/* A new target for a ring member (lock held); its sender starts at once. */
static repl_target *target_start_locked(replicator *r, const hashring_node_info *node) {
    repl_target *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->r = r;
    snprintf(t->id, sizeof t->id, "%s", node->id);
    snprintf(t->addr, sizeof t->addr, "%s", node->addr);
    t->next_num = r->next_stream_num; /* past every number sent: see replicator */
    t->need_sync = t->full = true;    /* it learns what it must hold, we its incarnation */
    snprintf(t->why, sizeof t->why, "its first sync has not finished");
    /* a backup that stops reading is found by keepalive pings (rpc.h) */
    rpc_channel_opts opts = {.keepalive_ms = r->opts.call_timeout_ms};
    if (rpc_channel_create(t->addr, &opts, &t->channel) != PS_STATUS_OK) {
        free(t);
        return NULL;
    }
    for (uint32_t i = 0; i < REPLICATOR_LANES; i++) {
        t->lanes[i] = (repl_lane){.t = t, .index = i};
        if (pthread_create(&t->lanes[i].thread, NULL, repl_lane_main, &t->lanes[i]) != 0)
            break;
        t->n_lanes++;
        t->lanes_running++; /* the lanes wait for the lock we hold */
    }
    if (t->n_lanes == 0) {
        rpc_channel_destroy(t->channel);
        free(t);
        return NULL;
    }
    t->next = r->targets;
    r->targets = t;
    return t;
}

void replicator_set_stores(replicator *r, store *chunks, row_store *rows) {
    pthread_mutex_lock(&r->lock);
    r->opts.chunks = chunks;
    r->opts.rows = rows;
    pthread_mutex_unlock(&r->lock);
}

/* Targets for the members of ring (lock held): existing ones kept (unless they moved),
 * new ones started, each placed in *ret_by (by ring index, NULL for self) and marked
 * with `mark`. NO_MEMORY: some member has no target (its changes are lost to it until
 * the next ring: a later sync repairs it). */
static ps_status targets_for_locked(replicator *r, const hashring *ring, uint32_t mark,
                                    repl_target ***ret_by) {
    uint32_t n = ring ? hashring_node_count(ring) : 0;
    repl_target **by = calloc(n + 1, sizeof *by);
    if (!by)
        return PS_STATUS_NO_MEMORY;
    ps_status st = PS_STATUS_OK;
    for (uint32_t i = 0; i < n; i++) {
        hashring_node_info node;
        if (!hashring_node_at(ring, i, &node) || strcmp(node.id, r->self) == 0)
            continue;
        repl_target *t = find_target_locked(r, node.id);
        if (t && strcmp(t->addr, node.addr) != 0) { /* it moved (a restart elsewhere) */
            t->removed = t->moved = true;
            t = NULL;
        }
        if (!t && !(t = target_start_locked(r, &node)))
            st = PS_STATUS_NO_MEMORY;
        if (t)
            t->slot = mark;
        by[i] = t;
    }
    *ret_by = by;
    return st;
}

ps_status replicator_set_ring(replicator *r, const void *data, size_t len, const void *pending,
                              size_t pending_len, uint64_t pending_epoch, uint32_t replication) {
    hashring *ring = NULL, *pend = NULL;
    if (hashring_parse(data, len, &ring) != PS_STATUS_OK)
        return PS_STATUS_PARSE;
    if (pending_len && hashring_parse(pending, pending_len, &pend) != PS_STATUS_OK) {
        hashring_destroy(ring);
        return PS_STATUS_PARSE;
    }
    if (!pend)
        pending_epoch = 0;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&r->lock);
    if (r->ring &&
        (hashring_epoch(ring) < hashring_epoch(r->ring) ||
         (hashring_epoch(ring) == hashring_epoch(r->ring) && pending_epoch == r->pending_epoch))) {
        pthread_mutex_unlock(&r->lock);
        hashring_destroy(ring);
        hashring_destroy(pend);
        return PS_STATUS_OK; /* not newer */
    }
    /* The settled ring: after a commit (the ring is the pending ring every shard copied
     * for), the ring itself; otherwise the one held until now (a failover keeps the
     * copies its survivors hold). */
    hashring *settled = NULL;
    bool commit = r->pending_epoch && hashring_epoch(ring) == r->pending_epoch;
    const hashring *from = commit ? ring : r->ring;
    if (from && hashring_clone(from, &settled) != PS_STATUS_OK)
        settled = NULL; /* no memory: every target is sent everything */
    repl_target **cur_t = NULL, **pend_t = NULL, **live = NULL;
    for (repl_target *t = r->targets; t; t = t->next)
        t->slot = UINT32_MAX; /* not live until a ring names it */
    st = targets_for_locked(r, ring, 0, &cur_t);
    if (st == PS_STATUS_OK && pend)
        st = targets_for_locked(r, pend, 0, &pend_t);
    uint32_t n_live = 0;
    for (repl_target *t = r->targets; t; t = t->next)
        n_live += !t->removed && t->slot != UINT32_MAX;
    if (st == PS_STATUS_OK && !(live = calloc(n_live + 1, sizeof *live)))
        st = PS_STATUS_NO_MEMORY;
    if (st != PS_STATUS_OK) { /* keep the ring held; targets started stay for the next */
        pthread_mutex_unlock(&r->lock);
        free(cur_t);
        free(pend_t);
        hashring_destroy(ring);
        hashring_destroy(pend);
        hashring_destroy(settled);
        reap_removed(r);
        return st;
    }
    /* a change that ends without its commit (cancelled, or a failover meanwhile): targets
     * that were its future owners may hold queued changes to keys the new settled ring
     * does not give them, which a sync's images would repeat: send everything again */
    bool abandoned = r->pending_epoch && !commit;
    n_live = 0;
    r->view++;
    for (repl_target *t = r->targets; t; t = t->next) {
        if (!t->removed && t->slot == UINT32_MAX) { /* on neither ring: it stops */
            t->removed = true;
            t->removed_view = r->view;
        }
        repl_left_view_changed_locked(t);
        if (t->removed)
            continue;
        t->slot = n_live;
        live[n_live++] = t;
        if (!settled || !hashring_find(settled, t->id, &t->idx_settled))
            t->idx_settled = UINT32_MAX;
        if (t->syncing) /* its sync's images are for the old rings */
            t->redo_full = true;
        else if (abandoned)
            repl_need_sync_locked(t, "a ring change ended without its commit: syncing anew");
        else if (!t->need_sync) { /* its share of the keys may have grown */
            t->need_sync = true;
            snprintf(t->why, sizeof t->why, "the ring changed: a sync has not finished");
        }
    }
    free_view(r);
    r->ring = ring;
    r->pending = pend;
    r->pending_epoch = pending_epoch;
    r->settled = settled;
    r->cur_t = cur_t;
    r->n_cur = hashring_node_count(ring);
    r->pend_t = pend_t;
    r->n_pend = pend ? hashring_node_count(pend) : 0;
    r->live = live;
    r->n_live = n_live;
    if (!hashring_find(ring, r->self, &r->self_cur))
        r->self_cur = UINT32_MAX;
    r->replication = replication ? replication : 1;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
    reap_removed(r);
    return PS_STATUS_OK;
}

uint64_t replicator_synced_epoch(replicator *r) {
    pthread_mutex_lock(&r->lock);
    uint64_t e = r->pending_epoch;
    for (uint32_t i = 0; e && i < r->n_live; i++) {
        const repl_target *t = r->live[i];
        if (t->need_sync || t->syncing || t->synced_for != e)
            e = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

/* Appends an entry to a target's queue (lock held); a target behind drops it. */
static void enqueue_locked(repl_target *t, repl_entry *e, uint64_t pos) {
    if (!e) {
        repl_need_sync_locked(t, "out of memory queueing a change");
        repl_left_add_locked(t, pos, t->r->view);
        return;
    }
    e->pos = pos;
    e->view = t->r->view;
    e->epoch = t->r->ring ? hashring_epoch(t->r->ring) : 0;
    e->num = t->next_num++;
    if (t->next_num > t->r->next_stream_num)
        t->r->next_stream_num = t->next_num;
    if (t->tail)
        t->tail->next = e;
    else
        t->head = e;
    t->tail = e;
    if (!t->send_next)
        t->send_next = e;
    t->queued++;
    t->queued_bytes += e->bytes;
}

typedef repl_entry *(*entry_fn)(const void *change, const uint32_t *idx, size_t m);

static repl_entry *push_entry(const void *c, const uint32_t *idx, size_t m) {
    return repl_entry_push(c, idx, m);
}

static repl_entry *rows_entry(const void *c, const uint32_t *idx, size_t m) {
    return repl_entry_rows(c, idx, m);
}

/* A copy from a peer sent on: its bytes copied (the change's memory goes with the
 * backup's call that brought it) and marked forwarded. */
static repl_entry *push_forwarded(const void *c, const uint32_t *idx, size_t m) {
    return repl_entry_forwarded(repl_entry_push(c, idx, m), JOURNAL_TYPE_PUSH);
}

static repl_entry *rows_forwarded(const void *c, const uint32_t *idx, size_t m) {
    return repl_entry_forwarded(repl_entry_rows(c, idx, m), JOURNAL_TYPE_ROWS);
}

typedef struct delete_change {
    const uint64_t *keys;
    size_t n;
} delete_change;

static repl_entry *delete_entry(const void *c, const uint32_t *idx, size_t m) {
    const delete_change *d = c;
    return repl_entry_delete(d->keys, d->n, idx, m);
}

/* How a change is routed (route_locked). */
typedef struct route_how {
    entry_fn make;
    uint8_t type;           /* its journal record's */
    bool look_up;           /* mark the entries: journal_mark_look_up */
    uint64_t checked_epoch; /* store_push.checked_epoch (0: none) */
} route_how;

/* Whether the change a shard checked it was the primary of under checked_epoch may
 * have been accepted under a ring this replicator has left (lock held): the ring
 * changed between the check and now, and this shard is not the primary of some key on
 * the ring it routes with. Its keys' primary now never gets it from here (nor, made
 * after its export, through a sync): the push must not be acknowledged. */
static bool moved_since_check(const replicator *r, uint64_t checked_epoch, const uint64_t *keys,
                              size_t n) {
    if (!checked_epoch || (r->ring && hashring_epoch(r->ring) == checked_epoch))
        return false;
    if (!r->ring || r->self_cur == UINT32_MAX)
        return true;
    for (size_t i = 0; i < n; i++)
        if (hashring_primary(r->ring, keys[i]) != r->self_cur)
            return true;
    return false;
}

/* Groups the change's keys by target and queues each target its entry (lock held). A
 * target waiting for its sync gets only the keys it held: the sync's images carry the
 * others (it was left them). True when some target got an entry or was left one. First,
 * a change whose keys moved since it was checked is lost (moved_since_check). */
static bool route_locked(replicator *r, uint64_t pos, const uint64_t *keys, size_t n,
                         const void *change, const route_how *how) {
    if (moved_since_check(r, how->checked_epoch, keys, n))
        repl_lost_add_locked(r, pos, pos);
    if (!r->ring || r->self_cur == UINT32_MAX || n == 0 || r->n_live == 0)
        return false;
    bool routed = false; /* some target got an entry or was left it */
    entry_fn make = how->make;
    /* a key's targets: its R - 1 backups and the pending ring's R owners at most */
    const uint32_t per_key =
        2 * (r->replication < HASHRING_MAX_REPLICAS ? r->replication : HASHRING_MAX_REPLICAS);
    uint32_t *own = malloc(n * per_key * sizeof *own + 1);
    uint32_t *count = calloc(r->n_live + 1, sizeof *count);
    uint32_t *idx = malloc(n * sizeof *idx + 1);
    if (!own || !count || !idx) { /* every backup: synced whole, which carries it */
        for (uint32_t i = 0; i < r->n_live; i++) {
            repl_need_sync_locked(r->live[i], "out of memory routing a change");
            repl_left_add_locked(r->live[i], pos, r->view);
        }
        routed = true;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        repl_target *to[2 * HASHRING_MAX_REPLICAS];
        uint32_t got = repl_targets_of(r->ring, r->pending, r->self_cur, r->cur_t, r->pend_t,
                                       r->replication, keys[i], to);
        uint32_t k = 0;
        for (uint32_t j = 0; j < got; j++) {
            repl_target *t = to[j];
            routed = true;
            if (t->need_sync && !t->syncing &&
                !repl_held(r->settled, t->idx_settled, t->full, r->replication, keys[i])) {
                repl_left_add_locked(t, pos, r->view); /* its sync's images carry it */
                continue;
            }
            own[i * per_key + k++] = t->slot;
            count[t->slot]++;
        }
        if (k < per_key)
            own[i * per_key + k] = UINT32_MAX;
    }
    for (uint32_t slot = 0; slot < r->n_live; slot++) {
        if (!count[slot])
            continue;
        size_t m = 0;
        if (count[slot] < n) {
            for (size_t i = 0; i < n; i++)
                for (uint32_t b = 0; b < per_key && own[i * per_key + b] != UINT32_MAX; b++)
                    if (own[i * per_key + b] == slot) {
                        idx[m++] = (uint32_t)i;
                        break;
                    }
        }
        repl_entry *e = make(change, count[slot] < n ? idx : NULL, m);
        if (e && how->look_up)
            journal_mark_look_up(how->type, e->enc.head, sizeof e->enc.head);
        enqueue_locked(r->live[slot], e, pos);
    }
    pthread_cond_broadcast(&r->changed);
out:
    free(own);
    free(count);
    free(idx);
    return routed;
}

/* A copy from a peer sent on: where the position goes for the backup's wait. */
static void note_sent_on(uint64_t *ret_forwarded, uint64_t pos) {
    if (ret_forwarded && pos > *ret_forwarded)
        *ret_forwarded = pos;
}

void replicator_push(replicator *r, uint64_t pos, const store_push *p) {
    if (p->from_peer && (!p->forward || !p->request_id)) /* (no id: see forward) */
        return;
    pthread_mutex_lock(&r->lock);
    route_how how = {.make = p->from_peer ? push_forwarded : push_entry,
                     .type = JOURNAL_TYPE_PUSH,
                     .look_up = !p->from_peer && p->request_id && !p->first_try,
                     .checked_epoch = p->checked_epoch};
    if (route_locked(r, pos, p->keys, p->n, p, &how) && p->from_peer)
        note_sent_on(p->ret_forwarded, pos);
    pthread_mutex_unlock(&r->lock);
}

void replicator_rows(replicator *r, uint64_t pos, const row_push *p) {
    if ((p->from_peer && (!p->forward || !p->request_id)) || p->n == 0)
        return;
    uint64_t *made = NULL; /* the rows' keys, unless the push brings them */
    pthread_mutex_lock(&r->lock);
    bool ring_moved = p->checked_epoch && (!r->ring || hashring_epoch(r->ring) != p->checked_epoch);
    if (r->n_live == 0 && !ring_moved) { /* no backup to route to: no keys to compute */
    } else if (!p->keys && !(made = malloc(p->n * sizeof *made))) {
        for (uint32_t i = 0; i < r->n_live; i++) { /* synced whole, which carries it */
            repl_need_sync_locked(r->live[i], "out of memory routing a rows change");
            repl_left_add_locked(r->live[i], pos, r->view);
        }
        if (ring_moved) /* unknown whether its rows moved: not acknowledged */
            repl_lost_add_locked(r, pos, pos);
        if (p->from_peer)
            note_sent_on(p->ret_forwarded, pos);
    } else {
        if (made)
            ps_keys_rows(ps_key_table(p->model, p->table), p->n, p->ids, made);
        route_how how = {.make = p->from_peer ? rows_forwarded : rows_entry,
                         .type = JOURNAL_TYPE_ROWS,
                         .look_up = !p->from_peer && p->request_id && !p->first_try,
                         .checked_epoch = p->checked_epoch};
        if (route_locked(r, pos, p->keys ? p->keys : made, p->n, p, &how) && p->from_peer)
            note_sent_on(p->ret_forwarded, pos);
    }
    pthread_mutex_unlock(&r->lock);
    free(made);
}

void replicator_delete(replicator *r, uint64_t pos, size_t n, const uint64_t *keys) {
    delete_change d = {keys, n};
    pthread_mutex_lock(&r->lock);
    route_how how = {.make = delete_entry, .type = JOURNAL_TYPE_DELETE};
    route_locked(r, pos, keys, n, &d, &how);
    pthread_mutex_unlock(&r->lock);
}

/* Some queue still holds an entry at or before pos (lock held). */
static repl_target *holding_locked(replicator *r, uint64_t pos) {
    for (repl_target *t = r->targets; t; t = t->next)
        if ((t->head && t->head->pos <= pos) || (t->orphans > 0 && t->orphan_min_pos <= pos))
            return t;
    return NULL;
}

/* A backup that lacks some change up to pos (lock held), or NULL. */
static repl_target *lagging_locked(replicator *r, uint64_t pos) {
    for (uint32_t i = 0; i < r->n_live; i++) {
        repl_target *t = r->live[i];
        if ((t->need_sync && !t->syncing) || (t->syncing && t->sync_pos >= pos) ||
            (t->head && t->head->pos <= pos))
            return t;
    }
    return NULL;
}

/* replicator_wait, and without its wait for entries that reference the caller's
 * memory (holding: false; for changes whose entries own their bytes). */
static ps_status wait_for(replicator *r, uint64_t pos, bool holding, int64_t deadline_ms, char *err,
                          size_t err_len) {
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&r->lock);
    while (holding && holding_locked(r, pos)) /* the entries point into the caller's request */
        pthread_cond_wait(&r->changed, &r->lock);
    for (;;) {
        repl_target *t = lagging_locked(r, pos);
        if (!t)
            break;
        if (deadline_ms <= 0 || ps_now_ms() >= deadline_ms) {
            ps_set_err(err, err_len, "shard %s (a backup) lacks it: %s", t->id,
                       t->need_sync || t->syncing ? t->why : "it has not acknowledged it yet");
            st = PS_STATUS_UNAVAILABLE;
            break;
        }
        struct timespec ts = ps_abstime_after_ms(deadline_ms - ps_now_ms());
        pthread_cond_timedwait(&r->changed, &r->lock, &ts);
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

ps_status replicator_wait(replicator *r, uint64_t pos, int64_t deadline_ms, char *err,
                          size_t err_len) {
    return wait_for(r, pos, true, deadline_ms, err, err_len);
}

ps_status replicator_wait_sent_on(replicator *r, uint64_t pos, int64_t deadline_ms, char *err,
                                  size_t err_len) {
    return wait_for(r, pos, false, deadline_ms, err, err_len);
}

bool replicator_done(replicator *r, uint64_t pos, bool fresh) {
    pthread_mutex_lock(&r->lock);
    bool done = !holding_locked(r, pos) && !lagging_locked(r, pos) &&
                !(repl_lost_locked(r, pos) && (fresh || pos > r->resync_pos));
    pthread_mutex_unlock(&r->lock);
    return done;
}

uint64_t replicator_resync(replicator *r, uint64_t pos, uint64_t now, const char *why) {
    pthread_mutex_lock(&r->lock);
    if (pos > r->resync_pos) { /* no whole sync begun since it was made: one now */
        for (uint32_t i = 0; i < r->n_live; i++)
            repl_need_sync_locked(r->live[i], why);
        r->resync_pos = now;
        pthread_cond_broadcast(&r->changed);
    }
    uint64_t upto = r->resync_pos;
    pthread_mutex_unlock(&r->lock);
    return upto;
}

bool replicator_moved(replicator *r, uint64_t checked_epoch, size_t n, const uint64_t *keys) {
    pthread_mutex_lock(&r->lock);
    bool moved = moved_since_check(r, checked_epoch, keys, n);
    pthread_mutex_unlock(&r->lock);
    return moved;
}

void replicator_get_stats(replicator *r, replicator_stats *ret) {
    memset(ret, 0, sizeof *ret);
    pthread_mutex_lock(&r->lock);
    for (uint32_t i = 0; i < r->n_live; i++) {
        repl_target *t = r->live[i];
        ret->backups++;
        ret->behind += t->need_sync || t->syncing;
        ret->sync_chunks_left += t->sync_total - t->sync_done;
        ret->sync_bytes_left += t->sync_bytes_total - t->sync_bytes_done;
        ret->queued += t->queued;
        ret->queued_bytes += t->queued_bytes;
    }
    ret->sent_records = r->sent_records;
    ret->failed_calls = r->failed_calls;
    ret->syncs = r->syncs;
    ret->sync_bytes = r->sync_bytes;
    pthread_mutex_unlock(&r->lock);
}

uint32_t repl_targets_of(const hashring *cur, const hashring *pend, uint32_t self,
                         repl_target *const *cur_t, repl_target *const *pend_t,
                         uint32_t replication, uint64_t key, repl_target **out) {
    uint32_t o[HASHRING_MAX_REPLICAS], n = 0;
    uint32_t got = hashring_owners(cur, key, replication, o);
    if (got == 0 || o[0] != self)
        return 0;
    for (uint32_t i = 1; i < got; i++)
        if (cur_t[o[i]])
            out[n++] = cur_t[o[i]];
    if (!pend)
        return n;
    got = hashring_owners(pend, key, replication, o);
    for (uint32_t i = 0; i < got; i++) {
        repl_target *t = pend_t[o[i]];
        bool seen = !t;
        for (uint32_t j = 0; j < n && !seen; j++)
            seen = out[j] == t;
        if (!seen)
            out[n++] = t;
    }
    return n;
}

bool repl_held(const hashring *settled, uint32_t idx_settled, bool full, uint32_t replication,
               uint64_t key) {
    if (full || !settled || idx_settled == UINT32_MAX)
        return false;
    uint32_t o[HASHRING_MAX_REPLICAS];
    uint32_t got = hashring_owners(settled, key, replication, o);
    for (uint32_t i = 0; i < got; i++)
        if (o[i] == idx_settled)
            return true;
    return false;
}
