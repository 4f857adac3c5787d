/* coord_nodes.c: membership operations on the coordinator context: register,
 * heartbeat, ring add and remove, ring copies and watches, liveness (see coord.h).
 *
 * Decisions that need the shards' own word (does the ring hold data? does this shard?)
 * release the lock while asking and look at the state again afterwards: if the ring
 * changed meanwhile, they ask again (COORD_JOIN_ATTEMPTS times at most). */
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ----------------------------------------------------------------- checks --- */

ps_status coord_node_check(const Ps__NodeInfo *in, char *err, size_t err_len) {
    if (!in || !membership_id_valid(in->id)) {
        ps_set_err(err, err_len, "a node id of 1-%d characters of [A-Za-z0-9._-] is required",
                   MEMBERSHIP_ID_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!membership_addr_valid(in->addr)) {
        ps_set_err(err, err_len, "node address '%.80s' is not HOST:PORT (at most %d bytes)",
                   in->addr ? in->addr : "", MEMBERSHIP_ADDR_MAX);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (in->weight > MEMBERSHIP_MAX_WEIGHT) {
        ps_set_err(err, err_len, "weight %u is over %d", in->weight, MEMBERSHIP_MAX_WEIGHT);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (in->role != PS__NODE_ROLE__ROLE_SHARD && in->role != PS__NODE_ROLE__ROLE_SERVE) {
        ps_set_err(err, err_len, "role %d is neither ROLE_SHARD nor ROLE_SERVE", (int)in->role);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

membership_role coord_role_of(Ps__NodeRole role) {
    return role == PS__NODE_ROLE__ROLE_SHARD ? MEMBERSHIP_ROLE_SHARD : MEMBERSHIP_ROLE_SERVE;
}

ps_status coord_ring_check_locked(coord_ctx *c, bool stop_early, ring_verdict *ret_verdict,
                                  char *why, size_t why_len) {
    for (int attempt = 0; attempt < COORD_JOIN_ATTEMPTS; attempt++) {
        uint64_t epoch = ring_state_epoch(c->ring);
        ring_probe *probes = NULL;
        size_t n = 0;
        ps_status st = ring_state_probe_list(c->members, &probes, &n);
        if (st != PS_STATUS_OK) {
            ps_set_err(why, why_len, "out of memory");
            return st;
        }
        if (n > 0) {
            pthread_mutex_unlock(&c->lock);
            for (size_t i = 0; i < n; i++) {
                ring_probe *p = &probes[i];
                p->asked = true;
                p->status =
                    c->probe(c->probe_arg, p->id, p->addr, &p->keys, p->detail, sizeof p->detail);
                if (stop_early && (p->status != PS_STATUS_OK || p->keys > 0))
                    break;
            }
            pthread_mutex_lock(&c->lock);
        }
        if (ring_state_epoch(c->ring) == epoch) {
            ring_state_verdict(probes, n, ret_verdict);
            if (!ring_state_join_allowed(ret_verdict))
                ring_state_verdict_explain(ret_verdict, probes, why, why_len);
            free(probes);
            return PS_STATUS_OK;
        }
        free(probes); /* the ring changed while its shards were asked: ask again */
    }
    ps_set_err(why, why_len, "the ring changed %d times while its shards were asked; try again",
               COORD_JOIN_ATTEMPTS);
    return PS_STATUS_UNAVAILABLE;
}

ps_status coord_ring_rebuild_locked(coord_ctx *c, char *err, size_t err_len) {
    ps_status st = ring_state_rebuild(c->ring, c->members);
    if (st == PS_STATUS_RESOURCE_EXHAUSTED)
        ps_set_err(err, err_len,
                   "the ring cannot take it: shard weights times --vnodes would pass %u ring "
                   "points; nothing changed",
                   HASHRING_MAX_POINTS);
    else if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "cannot rebuild the ring: %s", ps_status_str(st));
    else
        pthread_cond_broadcast(&c->changed);
    return st;
}

/* ----------------------------------------------------------------- register --- */

/* Where a registering shard that is not on the ring goes (lock held). */
static void place_off_ring_shard(coord_ctx *c, membership_node *n, bool join, const char *why,
                                 bool *ring_change) {
    if (join) {
        n->in_ring = true;
        n->waiting = false;
        *ring_change = true;
        coord_event(c, COORD_EVENT_INFO, "shard %s at %s joins the ring (the ring holds no data)",
                    n->id, n->addr);
        return;
    }
    if (!n->waiting)
        coord_event(c, COORD_EVENT_WARN,
                    "shard %s at %s waits off the ring: %s. `psctl ring add --id %s --addr %s` "
                    "copies the keys it would own to it, then puts it on the ring",
                    n->id, n->addr, why, n->id, n->addr);
    n->waiting = true;
}

ps_status coord_node_register(coord_ctx *c, const Ps__NodeInfo *in, Ps__RegisterResponse *ret_resp,
                              char *err, size_t err_len) {
    ps_status st = coord_node_check(in, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    membership_role role = coord_role_of(in->role);
    char why[COORD_ERR_MAX] = "";
    bool join = false;
    pthread_mutex_lock(&c->lock);
    membership_node *n = membership_node_find(c->members, in->id);
    if (role == MEMBERSHIP_ROLE_SHARD && (!n || n->waiting)) {
        ring_verdict v;
        st = coord_ring_check_locked(c, true, &v, why, sizeof why);
        if (st == PS_STATUS_NO_MEMORY)
            goto fail_unlock;
        join = st == PS_STATUS_OK && ring_state_join_allowed(&v);
        if (join && membership_changing(c->members)) {
            join = false; /* one change at a time: it waits for `ring add` */
            snprintf(why, sizeof why, "a ring change is in progress");
        }
        n = membership_node_find(c->members, in->id); /* the table may have changed */
    }
    if (n && n->role != role) {
        ps_set_err(err, err_len, "id %s is already registered as a %s", in->id,
                   membership_role_name(n->role));
        st = PS_STATUS_ALREADY_EXISTS;
        goto fail_unlock;
    }
    bool is_new = !n, ring_change = false;
    uint32_t weight = in->weight ? in->weight : 1;
    membership_node before; /* to undo the change if the ring cannot take it */
    if (n)
        before = *n;
    if (is_new) {
        st = membership_node_add(c->members, in->id, in->addr, role, weight, &n);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "cannot register %s: %s (%zu nodes at most)", in->id,
                       st == PS_STATUS_RESOURCE_EXHAUSTED ? "the cluster is full"
                                                          : ps_status_str(st),
                       membership_node_limit(c->members));
            goto fail_unlock;
        }
    }
    if (n->in_ring || n->joining) { /* on the current or the pending ring */
        /* its weight stays the ring's: another weight would move keys at once, with no
         * copy of them to their new owners (a shard restarted without the --weight it
         * was added with must not make its keys unreachable) */
        if (in->weight && in->weight != n->weight)
            coord_event(c, COORD_EVENT_WARN,
                        "shard %s registered with weight %u but the ring holds it at weight %u: "
                        "the ring's weight stands (a weight change moves keys: `psctl ring drain "
                        "--id %s`, then `psctl ring add --id %s --addr %s --weight %u`)",
                        n->id, in->weight, n->weight, n->id, n->id, in->addr, in->weight);
        ring_change = strcmp(n->addr, in->addr) != 0;
    } else if (role == MEMBERSHIP_ROLE_SHARD && (is_new || n->waiting)) {
        snprintf(n->addr, sizeof n->addr, "%s", in->addr);
        n->weight = weight;
        place_off_ring_shard(c, n, join, why, &ring_change);
    }
    snprintf(n->addr, sizeof n->addr, "%s", in->addr);
    int64_t last = n->last_hb_ms;
    membership_node_touch(n, coord_now(c));
    if (is_new)
        coord_event(c, COORD_EVENT_INFO, "registered new %s %s at %s", membership_role_name(role),
                    n->id, n->addr);
    else
        coord_event(c, COORD_EVENT_INFO, "%s %s registered again at %s%s%s",
                    membership_role_name(role), n->id, n->addr,
                    last ? "" : " (first contact since the coordinator started)",
                    role != MEMBERSHIP_ROLE_SHARD || n->in_ring ? ""
                    : n->joining                                ? "; it is joining the ring"
                    : n->waiting                                ? "; it waits off the ring"
                                 : "; it was removed from the ring: `psctl ring add` puts it back");
    if (ring_change && (st = coord_ring_rebuild_locked(c, err, err_len)) != PS_STATUS_OK) {
        if (is_new)
            membership_node_remove(c->members, in->id);
        else
            *n = before;
        goto fail_unlock;
    }
    ret_resp->epoch = ring_state_epoch(c->ring);
    ret_resp->heartbeat_ms = (uint32_t)c->heartbeat_ms;
    coord_unlock_and_persist(c);
    return PS_STATUS_OK;
fail_unlock:
    if (st == PS_STATUS_NO_MEMORY)
        ps_set_err(err, err_len, "out of memory");
    pthread_mutex_unlock(&c->lock);
    return st;
}

ps_status coord_node_heartbeat(coord_ctx *c, const Ps__HeartbeatRequest *req,
                               Ps__HeartbeatResponse *ret_resp, char *err, size_t err_len) {
    if (req->n_serving > MEMBERSHIP_MAX_SERVING) {
        ps_set_err(err, err_len, "a heartbeat reports %zu model versions served (at most %d)",
                   req->n_serving, MEMBERSHIP_MAX_SERVING);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&c->lock);
    membership_node *n = membership_node_find(c->members, req->id);
    if (!n) {
        pthread_mutex_unlock(&c->lock);
        ps_set_err(err, err_len, "unknown node %.80s: register first", req->id ? req->id : "");
        return PS_STATUS_NOT_FOUND;
    }
    int64_t now = coord_now(c), last = n->last_hb_ms;
    if (membership_node_touch(n, now)) {
        if (last)
            coord_event(c, COORD_EVENT_INFO,
                        "node %s (%s at %s) is back: a heartbeat after %lld ms", n->id,
                        membership_role_name(n->role), n->addr, (long long)(now - last));
        else
            coord_event(c, COORD_EVENT_INFO,
                        "node %s (%s at %s) reports in: first heartbeat since the coordinator "
                        "started",
                        n->id, membership_role_name(n->role), n->addr);
    }
    n->keys = req->keys;
    n->seq = req->seq;
    n->synced_epoch = req->synced_epoch;
    n->n_serving = 0;
    for (size_t i = 0; i < req->n_serving && i < MEMBERSHIP_MAX_SERVING; i++)
        if (req->serving[i] && req->serving[i]->name)
            n->serving[n->n_serving++] =
                membership_model_ref(req->serving[i]->name, req->serving[i]->version);
    bool ring_changed = coord_change_settle_locked(c); /* this report may finish a change */
    ret_resp->epoch = ring_state_epoch(c->ring);
    ret_resp->registry_generation = registry_generation(c->models);
    if (ring_changed)
        coord_unlock_and_persist(c);
    else
        pthread_mutex_unlock(&c->lock);
    return PS_STATUS_OK;
}

/* ----------------------------------------------------------------- ring --- */

ps_status coord_ring_get(coord_ctx *c, Ps__Ring **ret_ring) {
    Ps__Ring ring;
    coord_ring_parts parts;
    uint8_t *buf = NULL;
    size_t len = 0;
    pthread_mutex_lock(&c->lock);
    ps_status st = coord_ring_fill_locked(c, &ring, &parts);
    if (st == PS_STATUS_OK) {
        st = coord_message_pack(&ring.base, &buf, &len);
        coord_ring_fill_free(&parts);
    }
    pthread_mutex_unlock(&c->lock);
    if (st != PS_STATUS_OK)
        return st;
    return coord_message_unpack(&ps__ring__descriptor, buf, len, (ProtobufCMessage **)ret_ring);
}

static uint64_t current_epoch(coord_ctx *c) {
    return ring_state_epoch(c->ring);
}

ps_status coord_ring_wait_packed(coord_ctx *c, uint64_t after_epoch, coord_alive_fn alive,
                                 void *arg, coord_packed **ret_packed, uint64_t *ret_epoch) {
    pthread_mutex_lock(&c->lock);
    ps_status st = coord_wait_locked(c, current_epoch, after_epoch, alive, arg);
    const uint64_t epoch = ring_state_epoch(c->ring);
    const int64_t now = coord_now(c);
    if (st == PS_STATUS_OK && c->ring_packed && c->ring_epoch == epoch &&
        now - c->ring_at_ms < COORD_RING_FRESH_MS) {
        *ret_packed = coord_packed_ref(c->ring_packed);
    } else if (st == PS_STATUS_OK) { /* packed once for every watcher that wakes now */
        Ps__Ring ring;
        coord_ring_parts parts;
        coord_packed *p = NULL;
        if ((st = coord_ring_fill_locked(c, &ring, &parts)) == PS_STATUS_OK) {
            p = coord_packed_make(&ring.base);
            coord_ring_fill_free(&parts);
        }
        if (p) {
            *ret_packed = coord_packed_cache(&c->ring_packed, p);
            c->ring_epoch = epoch;
            c->ring_at_ms = now;
        } else {
            st = PS_STATUS_NO_MEMORY;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (st == PS_STATUS_OK)
        *ret_epoch = epoch;
    return st;
}

ps_status coord_ring_wait(coord_ctx *c, uint64_t after_epoch, coord_alive_fn alive, void *arg,
                          Ps__Ring **ret_ring) {
    coord_packed *p = NULL;
    uint64_t epoch;
    ps_status st = coord_ring_wait_packed(c, after_epoch, alive, arg, &p, &epoch);
    if (st != PS_STATUS_OK)
        return st;
    *ret_ring = (Ps__Ring *)coord_packed_unpack(&ps__ring__descriptor, p);
    coord_packed_unref(p);
    return *ret_ring ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

/* ----------------------------------------------------------------- liveness --- */

static void node_died(void *arg, const membership_node *n, int64_t silent_ms) {
    coord_event(arg, COORD_EVENT_WARN,
                "node %s (%s at %s) is dead: no heartbeat for %lld ms (%d intervals of %d ms)%s",
                n->id, membership_role_name(n->role), n->addr, (long long)silent_ms,
                MEMBERSHIP_DEAD_AFTER_BEATS, ((coord_ctx *)arg)->heartbeat_ms,
                !n->in_ring ? ""
                : ((coord_ctx *)arg)->replication < 2
                    ? "; its chunks are unreachable until it comes back"
                    : "");
}

/* Failover (lock held): with R >= 2 every key has another owner, so a shard found dead
 * leaves the ring, and the next owner of each of its keys, which holds every
 * acknowledged change to it, becomes the primary (the shards then copy the keys to
 * their new backups until R copies exist again). A shard not heard from since this
 * coordinator started is not judged, and the last shard stays. True when the ring
 * changed. */
static bool is_lost(const membership_node *n) {
    return n->role == MEMBERSHIP_ROLE_SHARD && n->in_ring && !n->alive && n->last_hb_ms;
}

static bool failover_locked(coord_ctx *c) {
    if (c->replication < 2)
        return false;
    size_t lost = 0, ring = membership_ring_count(c->members);
    for (size_t i = 0; i < membership_node_count(c->members); i++)
        lost += is_lost(membership_node_at(c->members, i));
    if (lost == 0)
        return false;
    if (lost > c->replication - 1 || lost >= ring) { /* more than the copies cover */
        if (!c->failover_refused)
            coord_event(c, COORD_EVENT_WARN,
                        "%zu of the ring's %zu shards are silent at once, more than the %u "
                        "other copies of a key cover: no failover (some keys have no live "
                        "owner; this coordinator may be the one cut off). Bring them back, or "
                        "take them off with `psctl ring remove --force`",
                        lost, ring, c->replication - 1);
        c->failover_refused = true;
        return false;
    }
    c->failover_refused = false;
    char why[COORD_ERR_MAX / 4] = "";
    for (size_t i = 0; i < membership_node_count(c->members) && !why[0]; i++)
        if (is_lost(membership_node_at(c->members, i)))
            snprintf(why, sizeof why, "shard %s died and failover takes it off the ring",
                     membership_node_at(c->members, i)->id);
    coord_change_clear_locked(c, why); /* the copies were planned without this death */
    bool changed = false;
    for (size_t i = 0; i < membership_node_count(c->members); i++) {
        membership_node *n = membership_node_at(c->members, i);
        if (!is_lost(n))
            continue;
        n->in_ring = false;
        changed = true;
        coord_event(c, COORD_EVENT_WARN,
                    "shard %s is dead: taken off the ring; the next owners of its keys (R=%u "
                    "copies) take them over. Once it runs again, `psctl ring add --id %s --addr "
                    "%s` puts it back",
                    n->id, c->replication, n->id, n->addr);
    }
    char err[COORD_ERR_MAX];
    if (changed && coord_ring_rebuild_locked(c, err, sizeof err) != PS_STATUS_OK)
        coord_event(c, COORD_EVENT_WARN, "failover: %s", err);
    return changed;
}

void coord_liveness_sweep(coord_ctx *c) {
    coord_probe_suspects(c); /* outside the lock: it asks shards over the network */
    pthread_mutex_lock(&c->lock);
    membership_liveness_sweep(c->members, coord_now(c), node_died, c);
    bool changed = failover_locked(c);
    changed |= coord_change_settle_locked(c);
    if (changed)
        coord_unlock_and_persist(c);
    else
        pthread_mutex_unlock(&c->lock);
}

bool coord_liveness_wait(coord_ctx *c) {
    pthread_mutex_lock(&c->lock);
    if (!c->stopping) {
        struct timespec ts = ps_abstime_after_ms(c->heartbeat_ms / 2 ? c->heartbeat_ms / 2 : 1);
        pthread_cond_timedwait(&c->changed, &c->lock, &ts);
    }
    bool go_on = !c->stopping;
    pthread_mutex_unlock(&c->lock);
    return go_on;
}
