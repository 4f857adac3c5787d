/* psclient.c: see psclient.h. The client itself: the ring it keeps and the channels to
 * the coordinator and the shards, and the routing loop: every operation keeps the set
 * of key indices not yet done; each round groups them by owner under the current
 * ring and sends one call per shard; keys a shard refuses because the ring moved stay
 * pending, the ring is fetched again and the next round routes them anew. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psclient_internal.h"
#include "util.h"

ps_status psclient_fail(ps_client *c, ps_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return st;
}

static void drop_shards(ps_client *c) {
    for (uint32_t i = 0; i < c->n_shards; i++)
        rpc_channel_destroy(c->shards[i]);
    free(c->shards);
    c->shards = NULL;
    c->n_shards = 0;
}

ps_status ps_client_refresh(ps_client *c) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    ps_status st = rpc_call(c->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &resp, &res);
    if (st != PS_STATUS_OK)
        return psclient_fail(c, st, "cannot get the ring from the coordinator at %s: %s %s",
                             c->coordinator, rpc_code_name(res.grpc_code), res.details);
    Ps__Ring *ring = (Ps__Ring *)resp;
    hashring *r = NULL;
    st = hashring_parse(ring->ring.data, ring->ring.len, &r);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (st != PS_STATUS_OK)
        return psclient_fail(c, st, "the coordinator sent a ring that does not parse");
    drop_shards(c);
    hashring_destroy(c->ring);
    c->ring = r;
    c->n_shards = hashring_node_count(r);
    c->shards = calloc(c->n_shards ? c->n_shards : 1, sizeof *c->shards);
    if (!c->shards)
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    c->err[0] = '\0';
    return PS_STATUS_OK;
}

ps_status ps_client_create(const char *coordinator, ps_client **ret_client, char *err,
                           size_t err_len) {
    ps_client *c = calloc(1, sizeof *c);
    if (!c) {
        if (err)
            snprintf(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(c->coordinator, sizeof c->coordinator, "%s", coordinator);
    ps_status st = rpc_channel_create(coordinator, NULL, &c->coord);
    if (st != PS_STATUS_OK)
        psclient_fail(c, st, "bad coordinator address '%s'", coordinator);
    else
        st = ps_client_refresh(c);
    if (st != PS_STATUS_OK) {
        if (err)
            snprintf(err, err_len, "%s", c->err);
        ps_client_destroy(c);
        return st;
    }
    *ret_client = c;
    return PS_STATUS_OK;
}

void ps_client_destroy(ps_client *c) {
    if (!c)
        return;
    drop_shards(c);
    hashring_destroy(c->ring);
    rpc_channel_destroy(c->coord);
    free(c);
}

const char *ps_client_error(const ps_client *c) {
    return c->err;
}

rpc_channel *ps_client_coordinator(ps_client *c) {
    return c->coord;
}

uint64_t ps_client_epoch(const ps_client *c) {
    return c->ring ? hashring_epoch(c->ring) : 0;
}

uint32_t ps_client_shard_count(const ps_client *c) {
    return c->n_shards;
}

const char *ps_client_shard_id(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.id : "";
}

const char *ps_client_shard_addr(const ps_client *c, uint32_t index) {
    hashring_node_info info;
    return hashring_node_at(c->ring, index, &info) ? info.addr : "";
}

uint32_t ps_client_owner(const ps_client *c, uint64_t key) {
    return hashring_primary(c->ring, key);
}

rpc_channel *psclient_shard_channel(ps_client *c, uint32_t index) {
    if (!c->shards[index] &&
        rpc_channel_create(ps_client_shard_addr(c, index), NULL, &c->shards[index]) != PS_STATUS_OK)
        return NULL;
    return c->shards[index];
}

/* ------------------------------------------------------------------ routing --- */

ps_status psclient_route(ps_client *c, size_t n, const uint64_t *keys, shard_call call, void *arg,
                         bool keep_going) {
    char first_err[sizeof c->err];
    first_err[0] = '\0';
    size_t *pending = malloc((n + 1) * sizeof *pending);
    size_t *group = malloc((n + 1) * sizeof *group);
    size_t *retry = malloc((n + 1) * sizeof *retry);
    uint32_t *owner = malloc((n + 1) * sizeof *owner);
    ps_status st = PS_STATUS_OK;
    if (!pending || !group || !retry || !owner) {
        st = psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    size_t n_pending = n;
    for (size_t i = 0; i < n; i++)
        pending[i] = i;
    for (int round = 0; n_pending > 0; round++) {
        if (round == MAX_ROUNDS) {
            st = psclient_fail(c, PS_STATUS_UNAVAILABLE,
                               "the ring kept moving: %zu keys still unplaced after %d tries",
                               n_pending, MAX_ROUNDS);
            goto out;
        }
        if (c->n_shards == 0) {
            st = psclient_fail(c, PS_STATUS_UNAVAILABLE, "no shards on the ring (epoch %llu)",
                               (unsigned long long)ps_client_epoch(c));
            goto out;
        }
        for (size_t i = 0; i < n_pending; i++)
            owner[i] = hashring_primary(c->ring, keys[pending[i]]);
        size_t kept = 0;
        bool moved = false;
        for (uint32_t s = 0; s < c->n_shards; s++) {
            size_t m = 0;
            for (size_t i = 0; i < n_pending; i++)
                if (owner[i] == s)
                    group[m++] = pending[i];
            if (m == 0)
                continue;
            ps_status cs = call(c, s, group, m, arg);
            if (cs == PS_STATUS_WRONG_EPOCH) {
                memcpy(retry + kept, group, m * sizeof *group);
                kept += m;
                moved = true;
            } else if (cs != PS_STATUS_OK) {
                if (st == PS_STATUS_OK) { /* the first failure is the one reported */
                    st = cs;
                    memcpy(first_err, c->err, sizeof first_err);
                }
                if (!keep_going)
                    goto out;
            }
        }
        memcpy(pending, retry, kept * sizeof *retry);
        n_pending = kept;
        if (moved) {
            ps_status rs = ps_client_refresh(c);
            if (rs != PS_STATUS_OK) {
                st = st == PS_STATUS_OK ? rs : st;
                goto out;
            }
        }
    }
out:
    if (first_err[0])
        memcpy(c->err, first_err, sizeof first_err);
    free(pending);
    free(group);
    free(retry);
    free(owner);
    return st;
}

ps_status psclient_call_failed(ps_client *c, uint32_t s, const char *what, ps_status st,
                               const rpc_result *res) {
    if (st == PS_STATUS_WRONG_EPOCH)
        return st;
    return psclient_fail(c, st, "%s on shard %s (%s): %s: %s", what, ps_client_shard_id(c, s),
                         ps_client_shard_addr(c, s), rpc_code_name(res->grpc_code), res->details);
}
