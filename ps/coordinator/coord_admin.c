/* coord_admin.c: the admin membership changes on the coordinator context: putting a
 * shard on the ring (AddNode, `psctl ring add`, with hashed positions or, `--balanced`,
 * with tokens the allocator chooses), taking a node out (RemoveNode, `psctl ring
 * remove`) and draining one (RemoveNode with drain, `psctl ring drain`). See coord.h.
 *
 * Both protect data: a shard goes on the ring at once only when the ring's shards all
 * answer that they hold nothing (otherwise its keys are copied to it first: a join,
 * coord_change.c), and a shard leaves at once only when it answers that it holds
 * nothing (or, when it cannot be asked at all, on `force`); `ring drain` moves its
 * keys away first. The answers come from the shards at decision time, never from
 * heartbeats or the state file. */
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashring_alloc.h"
#include "util.h"

/* Balanced tokens for the shard. The lock is held on entry and exit but released while
 * they are chosen (on a copy of the ring: a large ring takes a second or more, which
 * heartbeats must not wait for); UNAVAILABLE when the ring changed meanwhile. A message
 * in err on failure. */
static ps_status choose_tokens(coord_ctx *c, const char *id, uint32_t weight, uint64_t **ret_tokens,
                               uint32_t *ret_n, char *err, size_t err_len) {
    const uint64_t epoch = ring_state_epoch(c->ring);
    hashring *copy = NULL;
    ps_status st = hashring_clone(ring_state_ring(c->ring), &copy);
    if (st == PS_STATUS_OK) {
        pthread_mutex_unlock(&c->lock);
        st = hashring_alloc_tokens(copy, id, weight, ret_tokens, ret_n);
        hashring_destroy(copy);
        pthread_mutex_lock(&c->lock);
    }
    if (st == PS_STATUS_OK && ring_state_epoch(c->ring) != epoch) {
        free(*ret_tokens);
        *ret_tokens = NULL;
        ps_set_err(err, err_len,
                   "the ring changed while tokens were chosen for shard %s; try again", id);
        return PS_STATUS_UNAVAILABLE;
    }
    if (st == PS_STATUS_RESOURCE_EXHAUSTED)
        ps_set_err(err, err_len,
                   "the ring cannot take shard %s: shard weights times --vnodes would pass %u "
                   "ring points; nothing changed",
                   id, HASHRING_MAX_POINTS);
    else if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "cannot choose balanced tokens for shard %s: %s", id,
                   ps_status_str(st));
    return st;
}

/* `ring add` of the shard being drained: keep it (lock held). */
static ps_status cancel_drain_locked(coord_ctx *c, membership_node *n, uint64_t *ret_epoch) {
    char why[COORD_ERR_MAX / 4];
    snprintf(why, sizeof why, "`ring add` of shard %s keeps it on the ring", n->id);
    coord_change_cancel_locked(c, why);
    *ret_epoch = ring_state_epoch(c->ring);
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
}

/* Refuses what AddNode cannot do now (lock held): a member, a full table, a change in
 * progress. A message in err. */
static ps_status add_refused_locked(coord_ctx *c, const Ps__NodeInfo *in, char *err,
                                    size_t err_len) {
    membership_node *n = membership_node_find(c->members, in->id);
    if (n && n->joining) {
        ps_set_err(err, err_len,
                   "shard %s is already joining the ring (pending ring epoch %llu): `psctl ring "
                   "list` shows how far it is; `psctl ring cancel` stops it",
                   in->id, (unsigned long long)ring_state_pending_epoch(c->ring));
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (n && (n->role != MEMBERSHIP_ROLE_SHARD || n->in_ring)) {
        ps_set_err(err, err_len, "node %s is already a member%s", in->id,
                   n->role != MEMBERSHIP_ROLE_SHARD ? " (a serving replica)" : " of the ring");
        return PS_STATUS_ALREADY_EXISTS;
    }
    if (!n && membership_node_count(c->members) == membership_node_limit(c->members)) {
        ps_set_err(err, err_len, "the cluster is full (%zu nodes)",
                   membership_node_limit(c->members));
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    char what[COORD_ERR_MAX / 4];
    snprintf(what, sizeof what, "not adding shard %s", in->id);
    return coord_change_refuse_locked(c, what, err, err_len);
}

ps_status coord_node_add(coord_ctx *c, const Ps__NodeInfo *in, bool balanced, uint64_t *ret_epoch,
                         char *err, size_t err_len) {
    ps_status st = coord_node_check(in, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    uint32_t weight = in->weight ? in->weight : 1;
    char why[COORD_ERR_MAX] = "";
    uint64_t *tokens = NULL; /* balanced: the shard's tokens, ours until the node takes them */
    uint32_t n_tokens = 0;
    bool join_now = false; /* the ring holds no data: on the ring at once, nothing to copy */
    pthread_mutex_lock(&c->lock);
    membership_node *draining = membership_node_find(c->members, in->id);
    if (draining && draining->draining)
        return cancel_drain_locked(c, draining, ret_epoch);
    if (in->draining) { /* `ring cancel` of a drain that ended meanwhile: add nothing */
        ps_set_err(err, err_len, "shard %s is not draining: no drain of it to cancel", in->id);
        pthread_mutex_unlock(&c->lock);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    for (int pass = 0; pass < 2; pass++) { /* before and after asking (and choosing) */
        if ((st = add_refused_locked(c, in, err, err_len)) != PS_STATUS_OK)
            goto out_unlock;
        if (pass > 0)
            break;
        ring_verdict v;
        st = coord_ring_check_locked(c, false, &v, why, sizeof why);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "not adding shard %s: %s", in->id, why);
            goto out_unlock;
        }
        join_now = ring_state_join_allowed(&v);
        if (balanced && (st = choose_tokens(c, in->id, weight, &tokens, &n_tokens, err, err_len)) !=
                            PS_STATUS_OK)
            goto out_unlock;
    }
    membership_node *n = membership_node_find(c->members, in->id);
    bool added = !n;
    membership_node before; /* to undo the change if the ring cannot take it; it keeps the
                               tokens the node had until the ring takes the new ones */
    if (n)
        before = *n;
    if (!n && (st = membership_node_add(c->members, in->id, in->addr, MEMBERSHIP_ROLE_SHARD, weight,
                                        &n)) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot add %s: %s", in->id, ps_status_str(st));
        goto out_unlock;
    }
    snprintf(n->addr, sizeof n->addr, "%s", in->addr);
    n->weight = weight;
    n->tokens = tokens; /* not membership_node_tokens_set: `before` still holds the old */
    n->n_tokens = n_tokens;
    if (join_now) {
        n->in_ring = true;
        n->waiting = false;
        st = coord_ring_rebuild_locked(c, err, err_len);
    } else {
        st = coord_change_start_locked(c, n, true, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        if (added) {
            membership_node_remove(c->members, in->id); /* frees the new tokens */
            tokens = NULL;
        } else {
            *n = before; /* the new tokens are ours again: freed below */
        }
        goto out_unlock;
    }
    if (!added)
        free(before.tokens);
    if (join_now)
        coord_event(c, COORD_EVENT_INFO,
                    "ring add %s at %s weight %u, %s: %.2f%% of the keys (the ring holds no "
                    "data): epoch %llu",
                    n->id, n->addr, n->weight, tokens ? "balanced tokens" : "hashed positions",
                    100.0 * ring_state_share(c->ring, n->id),
                    (unsigned long long)ring_state_epoch(c->ring));
    *ret_epoch = ring_state_epoch(c->ring);
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
out_unlock:
    free(tokens);
    pthread_mutex_unlock(&c->lock);
    return st;
}

/* Asks shard `id` at `addr` (no lock held) whether it may leave the ring. */
static ps_status check_leave(coord_ctx *c, const char *id, const char *addr, bool force,
                             bool *ret_forced, char *err, size_t err_len) {
    uint64_t keys = 0;
    char detail[RING_PROBE_DETAIL_MAX] = "";
    ps_status st = c->probe(c->probe_arg, id, addr, &keys, detail, sizeof detail);
    *ret_forced = false;
    if (st == PS_STATUS_OK && keys > 0) {
        ps_set_err(err, err_len,
                   "shard %s holds %llu keys; removing it would lose them, so it is refused even "
                   "with --force: `psctl ring drain --id %s` moves its keys to their next owners, "
                   "then takes it off the ring",
                   id, (unsigned long long)keys, id);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (st != PS_STATUS_OK && !force) {
        ps_set_err(err, err_len,
                   "cannot ask shard %s at %s how much data it holds (%s); not removing it, "
                   "since its keys would become unreachable. If it is gone for good, "
                   "`psctl ring remove --id %s --force` removes it anyway",
                   id, addr, detail[0] ? detail : ps_status_str(st), id);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (st != PS_STATUS_OK) {
        *ret_forced = true;
        snprintf(err, err_len, "%s", detail[0] ? detail : ps_status_str(st));
    }
    return PS_STATUS_OK;
}

/* RemoveNode of a node that is not on the ring (lock held): the joining shard (the join
 * is cancelled), a dead shard off the ring (forgotten), with force any shard off the ring
 * (forgotten: one still running registers again and waits off the ring; a heartbeat the
 * coordinator took late from a killed shard must not make `ring remove --force` of it
 * fail), or NOT_FOUND. */
static ps_status remove_off_ring_locked(coord_ctx *c, membership_node *n, const char *id,
                                        bool force, uint64_t *ret_epoch, char *err,
                                        size_t err_len) {
    if (n && n->joining) {
        char why[COORD_ERR_MAX / 4];
        snprintf(why, sizeof why, "`ring remove` of the joining shard %s", id);
        coord_change_cancel_locked(c, why);
    } else if (n && n->role == MEMBERSHIP_ROLE_SHARD && !n->alive && n->last_hb_ms) {
        coord_event(c, COORD_EVENT_INFO, "forgot shard %s at %s: dead, and off the ring", id,
                    n->addr);
        membership_node_remove(c->members, id);
    } else if (n && n->role == MEMBERSHIP_ROLE_SHARD && force) {
        coord_event(c, COORD_EVENT_INFO, "forgot shard %s at %s by force: off the ring%s", id,
                    n->addr,
                    n->alive ? " (it seemed alive: if it runs, it registers again and waits off "
                               "the ring)"
                             : "");
        membership_node_remove(c->members, id);
    } else {
        ps_set_err(err, err_len, "no node %s%s", id,
                   !n           ? ""
                   : n->waiting ? " on the ring (it is registered, waiting off the ring)"
                                : " on the ring");
        pthread_mutex_unlock(&c->lock);
        return PS_STATUS_NOT_FOUND;
    }
    *ret_epoch = ring_state_epoch(c->ring);
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
}

ps_status coord_node_remove(coord_ctx *c, const char *id, bool force, uint64_t *ret_epoch,
                            char *err, size_t err_len) {
    if (!membership_id_valid(id)) {
        ps_set_err(err, err_len, "a node id of 1-%d characters of [A-Za-z0-9._-] is required",
                   MEMBERSHIP_ID_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&c->lock);
    membership_node *n = membership_node_find(c->members, id);
    if (!n || (n->role == MEMBERSHIP_ROLE_SHARD && !n->in_ring))
        return remove_off_ring_locked(c, n, id, force, ret_epoch, err, err_len);
    bool shard = n->role == MEMBERSHIP_ROLE_SHARD, forced = false;
    char what[COORD_ERR_MAX / 4];
    snprintf(what, sizeof what, "not removing shard %s", id);
    if (shard && !force && (st = coord_change_refuse_locked(c, what, err, err_len)) != 0)
        goto out_unlock;
    char addr[MEMBERSHIP_ADDR_MAX + 1], forced_why[RING_PROBE_DETAIL_MAX] = "";
    snprintf(addr, sizeof addr, "%s", n->addr);
    if (shard) {
        uint64_t epoch = ring_state_epoch(c->ring);
        pthread_mutex_unlock(&c->lock);
        st = check_leave(c, id, addr, force, &forced, err, err_len);
        if (forced)
            snprintf(forced_why, sizeof forced_why, "%s", err);
        pthread_mutex_lock(&c->lock);
        if (st != PS_STATUS_OK)
            goto out_unlock;
        n = membership_node_find(c->members, id);
        if (!n || !n->in_ring || strcmp(n->addr, addr) != 0 || ring_state_epoch(c->ring) != epoch) {
            ps_set_err(err, err_len, "shard %s changed while it was asked; try again", id);
            st = PS_STATUS_UNAVAILABLE;
            goto out_unlock;
        }
    }
    if (shard) {
        char why[COORD_ERR_MAX / 4];
        snprintf(why, sizeof why, "shard %s was removed by force", id);
        coord_change_clear_locked(c, why); /* only a forced removal gets here during one */
        n = membership_node_find(c->members, id);
    }
    if (shard && n->alive) {
        /* Still running: keep it known but off the ring, so its next registration or
         * heartbeat does not put it back; `ring add` does that. */
        n->in_ring = false;
        n->waiting = false;
    } else {
        membership_node_remove(c->members, id);
    }
    if (shard && (st = coord_ring_rebuild_locked(c, err, err_len)) != PS_STATUS_OK)
        goto out_unlock;
    if (forced)
        coord_event(c, COORD_EVENT_WARN,
                    "removed shard %s at %s by force: it could not be asked (%s): epoch %llu", id,
                    addr, forced_why, (unsigned long long)ring_state_epoch(c->ring));
    else
        coord_event(c, COORD_EVENT_INFO, "removed node %s: epoch %llu", id,
                    (unsigned long long)ring_state_epoch(c->ring));
    *ret_epoch = ring_state_epoch(c->ring);
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
out_unlock:
    pthread_mutex_unlock(&c->lock);
    return st;
}

ps_status coord_node_drain(coord_ctx *c, const char *id, uint64_t *ret_epoch, char *err,
                           size_t err_len) {
    if (!membership_id_valid(id)) {
        ps_set_err(err, err_len, "a node id of 1-%d characters of [A-Za-z0-9._-] is required",
                   MEMBERSHIP_ID_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_FAILED_PRECONDITION;
    pthread_mutex_lock(&c->lock);
    membership_node *n = membership_node_find(c->members, id);
    char what[COORD_ERR_MAX / 4];
    snprintf(what, sizeof what, "not draining shard %s", id);
    if (!n || n->role != MEMBERSHIP_ROLE_SHARD || !n->in_ring) {
        ps_set_err(err, err_len, "no shard %s on the ring%s", id,
                   n && n->joining ? " (it is joining: `psctl ring cancel` stops that)" : "");
        st = PS_STATUS_NOT_FOUND;
    } else if (n->draining) {
        ps_set_err(err, err_len,
                   "shard %s is already draining (pending ring epoch %llu): `psctl ring list` "
                   "shows how far it is; `psctl ring cancel` stops it",
                   id, (unsigned long long)ring_state_pending_epoch(c->ring));
    } else if ((st = coord_change_refuse_locked(c, what, err, err_len)) != PS_STATUS_OK) {
        /* err names the change in progress */
    } else if (membership_ring_count(c->members) < 2) {
        ps_set_err(err, err_len,
                   "not draining shard %s: it is the last shard on the ring, so its keys have "
                   "nowhere to go; `psctl ring add` another shard first",
                   id);
        st = PS_STATUS_FAILED_PRECONDITION;
    } else if (!n->alive) {
        ps_set_err(err, err_len,
                   "not draining shard %s: it is dead (no heartbeat for %lld ms), so it cannot "
                   "send its keys away. Start it again, or, with --replication 2 or more, let "
                   "failover take it off the ring (its keys' other owners serve them), or "
                   "`psctl ring remove --id %s --force`",
                   id, (long long)(coord_now(c) - n->last_hb_ms), id);
        st = PS_STATUS_FAILED_PRECONDITION;
    } else {
        st = coord_change_start_locked(c, n, false, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        pthread_mutex_unlock(&c->lock);
        return st;
    }
    *ret_epoch = ring_state_epoch(c->ring);
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
}
