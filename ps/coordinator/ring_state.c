/* ring_state.c: the ring built from the members, its epoch, and the join policy (see
 * ring_state.h). */
#include "ring_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ring_state {
    uint32_t vnodes;
    hashring *ring; /* never NULL after create */
    uint64_t epoch;
    hashring *pending; /* the ring after the change in progress (epoch + 1), or NULL */
};

ps_status ring_state_create(const ring_state_opts *opts, ring_state **ret_ring) {
    ring_state *r = calloc(1, sizeof *r);
    if (!r)
        return PS_STATUS_NO_MEMORY;
    r->vnodes = opts && opts->vnodes ? opts->vnodes : HASHRING_DEFAULT_VNODES;
    ps_status st = hashring_create(r->vnodes, &r->ring);
    if (st != PS_STATUS_OK) {
        free(r);
        return st;
    }
    *ret_ring = r;
    return PS_STATUS_OK;
}

void ring_state_destroy(ring_state *r) {
    if (!r)
        return;
    hashring_destroy(r->ring);
    hashring_destroy(r->pending);
    free(r);
}

uint64_t ring_state_epoch(const ring_state *r) {
    return r->epoch;
}

const hashring *ring_state_ring(const ring_state *r) {
    return r->ring;
}

const hashring *ring_state_pending(const ring_state *r) {
    return r->pending;
}

uint64_t ring_state_pending_epoch(const ring_state *r) {
    return r->pending ? hashring_epoch(r->pending) : 0;
}

/* Whether shard n is on the ring built: the current one holds the in_ring shards (a
 * draining one included), the pending one the shards after the change. */
static bool on_ring(const membership_node *n, bool pending) {
    if (n->role != MEMBERSHIP_ROLE_SHARD)
        return false;
    return pending ? (n->in_ring && !n->draining) || n->joining : n->in_ring;
}

/* Builds a ring of the shards on it (current or pending) with `epoch` into *ret_ring. */
static ps_status build_one(const ring_state *r, const membership *m, bool pending, uint64_t epoch,
                           hashring **ret_ring) {
    hashring *next = NULL;
    ps_status st = hashring_create(r->vnodes, &next);
    if (st != PS_STATUS_OK)
        return st;
    for (size_t i = 0; i < membership_node_count(m); i++) {
        const membership_node *n = membership_node_at_const(m, i);
        if (!on_ring(n, pending))
            continue;
        st = hashring_add_tokens(next, n->id, n->addr, n->weight, n->tokens, n->n_tokens);
        if (st != PS_STATUS_OK)
            goto fail_ring;
    }
    hashring_set_epoch(next, epoch);
    *ret_ring = next;
    return PS_STATUS_OK;
fail_ring:
    hashring_destroy(next);
    return st;
}

/* Builds the current ring with `epoch`, and the pending one (epoch + 1) while a shard
 * joins or drains; replaces both on OK, changes nothing on failure. */
static ps_status build(ring_state *r, const membership *m, uint64_t epoch) {
    hashring *next = NULL, *pending = NULL;
    bool changing = false;
    for (size_t i = 0; i < membership_node_count(m) && !changing; i++) {
        const membership_node *n = membership_node_at_const(m, i);
        changing = n->role == MEMBERSHIP_ROLE_SHARD && (n->joining || n->draining);
    }
    ps_status st = build_one(r, m, false, epoch, &next);
    if (st == PS_STATUS_OK && changing && (st = build_one(r, m, true, epoch + 1, &pending)) != 0) {
        hashring_destroy(next);
        return st;
    }
    if (st != PS_STATUS_OK)
        return st;
    hashring_destroy(r->ring);
    hashring_destroy(r->pending);
    r->ring = next;
    r->pending = pending;
    r->epoch = epoch;
    return PS_STATUS_OK;
}

ps_status ring_state_rebuild(ring_state *r, const membership *m) {
    return build(r, m, r->epoch + 1);
}

ps_status ring_state_restore(ring_state *r, const membership *m, uint64_t epoch) {
    return build(r, m, epoch);
}

/* Shard id's primary share on `ring` (0 when absent or out of memory). */
static double share_on(const hashring *ring, const char *id) {
    uint32_t idx;
    double share = 0;
    if (!ring || !hashring_find(ring, id, &idx))
        return 0;
    double *shares = calloc(hashring_node_count(ring), sizeof *shares);
    if (shares && hashring_ownership(ring, 1, shares, NULL) == PS_STATUS_OK)
        share = shares[idx];
    free(shares);
    return share;
}

double ring_state_share(const ring_state *r, const char *id) {
    return share_on(r->ring, id);
}

double ring_state_pending_share(const ring_state *r, const char *id) {
    return share_on(r->pending, id);
}

/* hashring_serialize of `ring` into a malloc'd buffer. */
static ps_status serialize(const hashring *ring, uint8_t **ret_buf, size_t *ret_len) {
    size_t len = 0;
    hashring_serialize(ring, NULL, 0, &len);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return PS_STATUS_NO_MEMORY;
    ps_status st = hashring_serialize(ring, buf, len, &len);
    if (st != PS_STATUS_OK) {
        free(buf);
        return st;
    }
    *ret_buf = buf;
    *ret_len = len;
    return PS_STATUS_OK;
}

ps_status ring_state_serialize(const ring_state *r, uint8_t **ret_buf, size_t *ret_len) {
    return serialize(r->ring, ret_buf, ret_len);
}

ps_status ring_state_serialize_pending(const ring_state *r, uint8_t **ret_buf, size_t *ret_len) {
    if (!r->pending) {
        *ret_buf = NULL;
        *ret_len = 0;
        return PS_STATUS_OK;
    }
    return serialize(r->pending, ret_buf, ret_len);
}

/* ----------------------------------------------------------------- join policy --- */

ps_status ring_state_probe_list(const membership *m, ring_probe **ret_probes, size_t *ret_n) {
    size_t n = membership_ring_count(m);
    ring_probe *probes = NULL;
    if (n > 0) {
        probes = calloc(n, sizeof *probes);
        if (!probes)
            return PS_STATUS_NO_MEMORY;
    }
    size_t k = 0;
    for (size_t i = 0; i < membership_node_count(m) && k < n; i++) {
        const membership_node *node = membership_node_at_const(m, i);
        if (node->role != MEMBERSHIP_ROLE_SHARD || !node->in_ring)
            continue;
        snprintf(probes[k].id, sizeof probes[k].id, "%s", node->id);
        snprintf(probes[k].addr, sizeof probes[k].addr, "%s", node->addr);
        probes[k].status = PS_STATUS_UNAVAILABLE;
        k++;
    }
    *ret_probes = probes;
    *ret_n = k;
    return PS_STATUS_OK;
}

void ring_state_verdict(const ring_probe *p, size_t n, ring_verdict *ret) {
    ring_verdict v = {.members = n, .first_unreachable = SIZE_MAX, .first_holding = SIZE_MAX};
    for (size_t i = 0; i < n; i++) {
        if (!p[i].asked)
            continue;
        v.asked++;
        if (p[i].status != PS_STATUS_OK) {
            v.unreachable++;
            if (v.first_unreachable == SIZE_MAX)
                v.first_unreachable = i;
        } else if (p[i].keys > 0) {
            if (v.first_holding == SIZE_MAX)
                v.first_holding = i;
            v.holding++;
            v.keys += p[i].keys;
        }
    }
    *ret = v;
}

bool ring_state_join_allowed(const ring_verdict *v) {
    return v->asked == v->members && v->holding == 0 && v->unreachable == 0;
}

void ring_state_verdict_explain(const ring_verdict *v, const ring_probe *p, char *buf, size_t cap) {
    if (!buf || cap == 0)
        return;
    int used = 0;
    if (v->asked < v->members && v->first_holding != SIZE_MAX) { /* stopped early */
        const ring_probe *h = &p[v->first_holding];
        used = snprintf(buf, cap, "shard %s on the ring holds %llu keys", h->id,
                        (unsigned long long)h->keys);
    } else if (v->holding > 0 || (v->unreachable == 0 && v->asked == v->members)) {
        used = snprintf(buf, cap, "the ring holds %llu keys on %zu of %zu shards",
                        (unsigned long long)v->keys, v->holding, v->members);
    }
    if (used < 0 || (size_t)used >= cap)
        return;
    if (v->first_unreachable == SIZE_MAX && used == 0)
        snprintf(buf, cap, "not every shard on the ring was asked");
    if (v->first_unreachable != SIZE_MAX) {
        const ring_probe *u = &p[v->first_unreachable];
        snprintf(buf + used, cap - (size_t)used,
                 "%sshard %s at %s could not be asked (%s) and counts as holding data%s",
                 used ? "; " : "", u->id, u->addr, u->detail[0] ? u->detail : "no answer",
                 v->unreachable > 1 ? ", as do the others that could not be asked" : "");
    }
}

double ring_state_join_share(const membership *m, uint32_t weight) {
    uint64_t total = 0;
    for (size_t i = 0; i < membership_node_count(m); i++) {
        const membership_node *n = membership_node_at_const(m, i);
        if (n->role == MEMBERSHIP_ROLE_SHARD && n->in_ring)
            total += n->weight;
    }
    return (double)weight / (double)(total + weight);
}
