/* coord_change.c: ring changes that move data, on the coordinator context (see coord.h
 * and Ring.pending in coordinator.proto). A join (`ring add` while the ring holds data)
 * or a drain (`ring drain`) marks its shard joining or draining; the ring is rebuilt
 * with the same members and a pending ring (the members after the change), so the
 * epoch moves on by one and every WatchRing stream receives the pending ring. The
 * shards copy the keys the pending ring gives to new owners and report the pending
 * epoch they finished as synced_epoch in their heartbeats; once every shard of the
 * current ring has, the change is applied and the ring rebuilt: its epoch is the
 * pending epoch and its placement the pending ring's.
 *
 * One change at a time. A change ends without being applied (cancelled, said in an
 * event) on failover, when the joining shard dies, after the timeout, or by hand
 * (`ring remove` of the joining shard, `ring add` of the draining one). Nothing is
 * lost by a cancel: shards drop nothing until the commit. */
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void coord_change_name(const membership_node *n, char *buf, size_t cap) {
    snprintf(buf, cap, "the %s of shard %s at %s", n->joining ? "join" : "drain", n->id, n->addr);
}

ps_status coord_change_refuse_locked(coord_ctx *c, const char *what, char *err, size_t err_len) {
    const membership_node *n = membership_changing(c->members);
    if (!n)
        return PS_STATUS_OK;
    char name[COORD_ERR_MAX / 2];
    coord_change_name(n, name, sizeof name);
    membership_sync s;
    membership_sync_count(c->members, ring_state_pending_epoch(c->ring), &s);
    ps_set_err(err, err_len,
               "%s: a ring change is in progress, %s (pending ring epoch %llu, %zu of %zu shards "
               "synced); one change at a time: wait for it (`psctl ring list` shows it), or "
               "cancel it with `psctl ring cancel`",
               what, name, (unsigned long long)ring_state_pending_epoch(c->ring), s.synced,
               s.shards);
    return PS_STATUS_FAILED_PRECONDITION;
}

ps_status coord_change_start_locked(coord_ctx *c, membership_node *n, bool join, char *err,
                                    size_t err_len) {
    membership_node before = *n;
    if (join) {
        n->joining = true;
        n->in_ring = false;
        n->waiting = false;
    } else {
        n->draining = true;
    }
    ps_status st = coord_ring_rebuild_locked(c, err, err_len);
    if (st != PS_STATUS_OK) {
        n->joining = before.joining;
        n->draining = before.draining;
        n->in_ring = before.in_ring;
        n->waiting = before.waiting;
        return st;
    }
    c->change_started_ms = coord_now(c);
    membership_sync s;
    membership_sync_count(c->members, ring_state_pending_epoch(c->ring), &s);
    if (join)
        coord_event(c, COORD_EVENT_INFO,
                    "ring add %s at %s weight %u, %s: joining: the %zu shards of the ring copy "
                    "the %.2f%% of the keys it will own to it; pending ring epoch %llu commits "
                    "once every shard has synced (current epoch %llu)",
                    n->id, n->addr, n->weight, n->tokens ? "balanced tokens" : "hashed positions",
                    s.shards, 100.0 * ring_state_pending_share(c->ring, n->id),
                    (unsigned long long)ring_state_pending_epoch(c->ring),
                    (unsigned long long)ring_state_epoch(c->ring));
    else
        coord_event(c, COORD_EVENT_INFO,
                    "ring drain %s at %s: draining: its %.2f%% of the keys are copied to their "
                    "next owners; pending ring epoch %llu (without it) commits once every shard "
                    "has synced (current epoch %llu)",
                    n->id, n->addr, 100.0 * ring_state_share(c->ring, n->id),
                    (unsigned long long)ring_state_pending_epoch(c->ring),
                    (unsigned long long)ring_state_epoch(c->ring));
    return PS_STATUS_OK;
}

bool coord_change_clear_locked(coord_ctx *c, const char *why) {
    membership_node *n = membership_changing(c->members);
    if (!n)
        return false;
    char name[COORD_ERR_MAX / 2], id[MEMBERSHIP_ID_MAX + 1], addr[MEMBERSHIP_ADDR_MAX + 1];
    coord_change_name(n, name, sizeof name);
    snprintf(id, sizeof id, "%s", n->id);
    snprintf(addr, sizeof addr, "%s", n->addr);
    bool join = n->joining;
    uint64_t pending = ring_state_pending_epoch(c->ring);
    n->joining = false;
    n->draining = false;
    if (join && !n->last_hb_ms)
        membership_node_remove(c->members, id); /* added by hand, never heard from */
    else if (join)
        n->waiting = true; /* registered, off the ring, until the next `ring add` */
    coord_event(c, COORD_EVENT_WARN,
                "ring change cancelled: %s (pending ring epoch %llu): %s. Nothing moved for good: "
                "the ring stays as it was; repeat `psctl ring %s --id %s%s%s` to try again",
                name, (unsigned long long)pending, why, join ? "add" : "drain", id,
                join ? " --addr " : "", join ? addr : "");
    return true;
}

void coord_change_cancel_locked(coord_ctx *c, const char *why) {
    char err[COORD_ERR_MAX];
    if (coord_change_clear_locked(c, why) && coord_ring_rebuild_locked(c, err, sizeof err) != 0)
        coord_event(c, COORD_EVENT_ERROR, "ring change cancelled, but %s", err);
}

/* Applies the change: the joining shard goes on the ring, the draining one off (kept as
 * a known node while alive, like `ring remove`); the ring rebuilt takes the pending
 * epoch. False (and nothing changed) when the ring cannot be rebuilt. */
static bool commit_locked(coord_ctx *c, membership_node *n) {
    membership_node before = *n;
    char id[MEMBERSHIP_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", n->id);
    const bool join = n->joining;
    const int64_t took = coord_now(c) - c->change_started_ms;
    n->joining = false;
    n->draining = false;
    n->in_ring = join;
    n->waiting = false;
    if (ring_state_rebuild(c->ring, c->members) != PS_STATUS_OK) {
        *n = before;
        coord_event(c, COORD_EVENT_ERROR,
                    "cannot commit the ring change of shard %s: out of memory; it stays pending",
                    id);
        return false;
    }
    if (!join && !n->alive) /* off the ring already: the ring stays the same without it */
        membership_node_remove(c->members, id);
    pthread_cond_broadcast(&c->changed);
    if (join)
        coord_event(c, COORD_EVENT_INFO,
                    "ring add %s committed: every shard synced in %lld ms; it owns %.2f%% of the "
                    "keys: epoch %llu",
                    id, (long long)took, 100.0 * ring_state_share(c->ring, id),
                    (unsigned long long)ring_state_epoch(c->ring));
    else
        coord_event(c, COORD_EVENT_INFO,
                    "ring drain %s committed: its keys are on their next owners (synced in %lld "
                    "ms); it is off the ring: epoch %llu",
                    id, (long long)took, (unsigned long long)ring_state_epoch(c->ring));
    return true;
}

bool coord_change_settle_locked(coord_ctx *c) {
    membership_node *n = membership_changing(c->members);
    if (!n)
        return false;
    char why[COORD_ERR_MAX / 2];
    const int64_t now = coord_now(c);
    if (n->joining && n->last_hb_ms && !n->alive) {
        snprintf(why, sizeof why, "the joining shard %s is dead (no heartbeat for %lld ms)", n->id,
                 (long long)(now - n->last_hb_ms));
        coord_change_cancel_locked(c, why);
        return true;
    }
    if (now - c->change_started_ms > c->ring_change_timeout_ms) {
        membership_sync s;
        membership_sync_count(c->members, ring_state_pending_epoch(c->ring), &s);
        snprintf(why, sizeof why,
                 "not committed within %lld ms (--ring-change-timeout-ms): %zu of %zu shards "
                 "synced%s%s%s",
                 (long long)c->ring_change_timeout_ms, s.synced, s.shards,
                 s.first_behind ? ", not shard " : "", s.first_behind ? s.first_behind->id : "",
                 s.first_behind && !s.first_behind->alive ? " (dead)" : "");
        coord_change_cancel_locked(c, why);
        return true;
    }
    membership_sync s;
    membership_sync_count(c->members, ring_state_pending_epoch(c->ring), &s);
    if (s.synced < s.shards)
        return false;
    return commit_locked(c, n);
}
