/* coord_admin.c: the admin membership changes on the coordinator context: putting a
 * shard on the ring (AddNode, `psctl ring add`, with hashed positions or, `--balanced`,
 * with tokens the allocator chooses) and taking a node out (RemoveNode, `psctl ring
 * remove`). See coord.h.
 *
 * Both protect data until it can move with membership: a shard joins only a ring whose
 * shards all answer that they hold nothing, and a shard leaves only when it answers
 * that it holds nothing (or, when it cannot be asked at all, on `force`). The answers
 * come from the shards at decision time, never from heartbeats or the state file. */
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

ps_status coord_node_add(coord_ctx *c, const Ps__NodeInfo *in, bool balanced, uint64_t *ret_epoch,
                         char *err, size_t err_len) {
    ps_status st = coord_node_check(in, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    uint32_t weight = in->weight ? in->weight : 1;
    char why[COORD_ERR_MAX] = "";
    uint64_t *tokens = NULL; /* balanced: the shard's tokens, ours until the node takes them */
    uint32_t n_tokens = 0;
    pthread_mutex_lock(&c->lock);
    for (int pass = 0; pass < 2; pass++) { /* before and after asking (and choosing) */
        membership_node *n = membership_node_find(c->members, in->id);
        if (n && (n->role != MEMBERSHIP_ROLE_SHARD || n->in_ring)) {
            ps_set_err(err, err_len, "node %s is already a member%s", in->id,
                       n->role != MEMBERSHIP_ROLE_SHARD ? " (a serving replica)" : " of the ring");
            st = PS_STATUS_ALREADY_EXISTS;
            goto out_unlock;
        }
        if (!n && membership_node_count(c->members) == membership_node_limit(c->members)) {
            ps_set_err(err, err_len, "the cluster is full (%zu nodes)",
                       membership_node_limit(c->members));
            st = PS_STATUS_RESOURCE_EXHAUSTED;
            goto out_unlock;
        }
        if (pass > 0)
            break;
        ring_verdict v;
        st = coord_ring_check_locked(c, false, &v, why, sizeof why);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "not adding shard %s: %s", in->id, why);
            goto out_unlock;
        }
        if (!ring_state_join_allowed(&v)) {
            membership_node *known = membership_node_find(c->members, in->id);
            ps_set_err(err, err_len,
                       "not adding shard %s: %s. Data does not move with membership yet: the "
                       "~%.0f%% of the keys it would own would become unreachable. Start every "
                       "shard before uploading models%s",
                       in->id, why, 100.0 * ring_state_join_share(c->members, weight),
                       known && known->waiting ? "; it stays registered, waiting off the ring"
                                               : "");
            st = PS_STATUS_FAILED_PRECONDITION;
            goto out_unlock;
        }
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
    n->in_ring = true;
    n->waiting = false;
    n->tokens = tokens; /* not membership_node_tokens_set: `before` still holds the old */
    n->n_tokens = n_tokens;
    if ((st = coord_ring_rebuild_locked(c, err, err_len)) != PS_STATUS_OK) {
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
    const double share = ring_state_share(c->ring, n->id);
    coord_event(c, COORD_EVENT_INFO,
                "ring add %s at %s weight %u, %s: %.2f%% of the keys: epoch %llu", n->id, n->addr,
                n->weight, tokens ? "balanced tokens" : "hashed positions", 100.0 * share,
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
                   "shard %s holds %llu keys; removing it would lose them (data does not move "
                   "with membership yet), so it is refused even with --force",
                   id, (unsigned long long)keys);
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
    if (!n || (n->role == MEMBERSHIP_ROLE_SHARD && !n->in_ring)) {
        ps_set_err(err, err_len, "no node %s%s", id,
                   !n           ? ""
                   : n->waiting ? " on the ring (it is registered, waiting off the ring)"
                                : " on the ring");
        st = PS_STATUS_NOT_FOUND;
        goto out_unlock;
    }
    bool shard = n->role == MEMBERSHIP_ROLE_SHARD, forced = false;
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
