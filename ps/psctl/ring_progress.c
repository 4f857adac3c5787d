/* ring_progress.c: how psctl shows a ring change in progress (ring_cmd.h): which shard
 * joins or drains, the pending epoch, which shards of the ring have synced (copied
 * every key they are primary for to the owners the pending ring gives it), with, asked
 * of each shard, the bytes its replication has queued and sent; and the wait of `ring
 * add` and `ring drain` until the coordinator commits or cancels the change.
 *
 * Bytes left to copy per shard are not known to anyone yet (a sync does not announce
 * its size); the figures shown are the shard's own Health counters: targets still
 * syncing, changes queued for them (bytes) and image bytes its syncs sent so far. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ring_cmd.h"
#include "util.h"

void psctl_ring_change_get(const Ps__Ring *ring, psctl_ring_change *ret) {
    memset(ret, 0, sizeof *ret);
    if (!ring)
        return;
    ret->epoch = ring->epoch;
    ret->pending_epoch = ring->pending_epoch;
    for (size_t i = 0; i < ring->n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        if (n->role != PS__NODE_ROLE__ROLE_SHARD)
            continue;
        if ((n->joining || n->draining) && !ret->node) {
            ret->node = n;
            ret->join = n->joining;
        }
        if (n->in_ring) {
            ret->shards++;
            ret->synced += ring->pending_epoch && n->synced_epoch >= ring->pending_epoch;
        }
    }
    if (!ret->node)
        ret->shards = ret->synced = 0;
}

bool psctl_ring_change_synced(const psctl_ring_change *c, const Ps__NodeInfo *n) {
    return c->node && n->in_ring && c->pending_epoch && n->synced_epoch >= c->pending_epoch;
}

const char *psctl_ring_change_name(const psctl_ring_change *c, char *buf, size_t cap) {
    if (!c->node)
        snprintf(buf, cap, "no ring change");
    else
        snprintf(buf, cap, "the %s of %s (%s)", c->join ? "join" : "drain", c->node->id,
                 c->node->addr);
    return buf;
}

void psctl_ring_change_line(const Ps__Ring *ring, char *buf, size_t cap) {
    psctl_ring_change c;
    psctl_ring_change_get(ring, &c);
    char name[256];
    psctl_ring_change_name(&c, name, sizeof name);
    if (!c.node) {
        snprintf(buf, cap, "%s in progress", name);
        return;
    }
    int used = snprintf(
        buf, cap, "%s: pending ring epoch %llu (now %llu): %zu of %zu shards synced", name,
        (unsigned long long)c.pending_epoch, (unsigned long long)c.epoch, c.synced, c.shards);
    bool first = true;
    for (size_t i = 0; i < ring->n_nodes && used > 0 && (size_t)used < cap; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        if (n->role != PS__NODE_ROLE__ROLE_SHARD || !n->in_ring || psctl_ring_change_synced(&c, n))
            continue;
        used += snprintf(buf + used, cap - (size_t)used, "%s%s%s", first ? ", waiting for " : ", ",
                         n->id, n->alive ? "" : " (DEAD)");
        first = false;
    }
}

/* A shard's replication figures from its Health; false when it did not answer. */
static bool shard_figures(psctl *p, const Ps__NodeInfo *n, Ps__HealthResponse **ret) {
    rpc_result res;
    return n->alive && psctl_shard_health(p, n->addr, ret, &res) == PS_STATUS_OK;
}

json_t *psctl_ring_change_json(psctl *p, const Ps__Ring *ring, bool with_health) {
    psctl_ring_change c;
    psctl_ring_change_get(ring, &c);
    if (!c.node)
        return json_null();
    json_t *per = json_array();
    for (size_t i = 0; per && i < ring->n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        if (n->role != PS__NODE_ROLE__ROLE_SHARD || !n->in_ring)
            continue;
        json_t *o =
            json_pack("{s:s, s:b, s:b, s:I}", "id", n->id, "alive", n->alive, "synced",
                      psctl_ring_change_synced(&c, n), "synced_epoch", (json_int_t)n->synced_epoch);
        Ps__HealthResponse *h = NULL;
        if (o && with_health && shard_figures(p, n, &h)) {
            json_object_set_new(o, "targets", json_integer(h->repl_targets));
            json_object_set_new(o, "syncing", json_integer(h->repl_syncing));
            json_object_set_new(o, "queued_bytes", json_integer((json_int_t)h->repl_queued_bytes));
            json_object_set_new(o, "sync_bytes", json_integer((json_int_t)h->repl_sync_bytes));
            json_object_set_new(o, "chunks_left",
                                json_integer((json_int_t)h->repl_sync_chunks_left));
            json_object_set_new(o, "bytes_left", json_integer((json_int_t)h->repl_sync_bytes_left));
            protobuf_c_message_free_unpacked(&h->base, NULL);
        }
        json_array_append_new(per, o);
    }
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "kind", c.join ? "join" : "drain",
                     "node", c.node->id, "addr", c.node->addr, "epoch", (json_int_t)c.epoch,
                     "pending_epoch", (json_int_t)c.pending_epoch, "synced", (json_int_t)c.synced,
                     "shards", (json_int_t)c.shards, "per_shard", per);
}

void psctl_ring_change_print(psctl *p, const Ps__Ring *ring, bool with_health) {
    psctl_ring_change c;
    psctl_ring_change_get(ring, &c);
    if (!c.node)
        return;
    char line[1024];
    psctl_ring_change_line(ring, line, sizeof line);
    printf("\nRING CHANGE: %s\n", line);
    static const char *const header[] = {"SHARD",           "ALIVE",     "SYNCED",
                                         "TARGETS SYNCING", "QUEUED",    "SYNC BYTES SENT",
                                         "CHUNKS LEFT",     "BYTES LEFT"};
    psctl_table *t = psctl_table_create(8, header);
    for (size_t i = 0; i < ring->n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        if (n->role != PS__NODE_ROLE__ROLE_SHARD || !n->in_ring)
            continue;
        char targets[32] = "-", queued[32] = "-", sent[32] = "-", left[32] = "-",
             bytes_left[32] = "-";
        Ps__HealthResponse *h = NULL;
        if (with_health && shard_figures(p, n, &h)) {
            snprintf(targets, sizeof targets, "%u of %u", h->repl_syncing, h->repl_targets);
            psctl_bytes_str(h->repl_queued_bytes, queued, sizeof queued);
            psctl_bytes_str(h->repl_sync_bytes, sent, sizeof sent);
            snprintf(left, sizeof left, "%llu", (unsigned long long)h->repl_sync_chunks_left);
            psctl_bytes_str(h->repl_sync_bytes_left, bytes_left, sizeof bytes_left);
            protobuf_c_message_free_unpacked(&h->base, NULL);
        }
        const char *row[] = {n->id,
                             n->alive ? "yes" : "NO",
                             psctl_ring_change_synced(&c, n) ? "yes" : "no",
                             targets,
                             queued,
                             sent,
                             left,
                             bytes_left};
        psctl_table_add(t, row);
    }
    psctl_table_print(t, stdout);
    psctl_table_destroy(t);
    printf("it commits once every shard has synced; `psctl ring cancel` stops it\n");
}

/* ================================================================ waiting === */

typedef enum wait_state { WAIT_GOING, WAIT_COMMITTED, WAIT_CANCELLED } wait_state;

/* Where the change of shard `id` stands in `ring`. */
static wait_state change_state(const Ps__Ring *ring, const char *id, bool join) {
    const Ps__NodeInfo *n = NULL;
    for (size_t i = 0; i < ring->n_nodes && !n; i++)
        if (strcmp(ring->nodes[i]->id, id) == 0)
            n = ring->nodes[i];
    if (join)
        return n && n->joining ? WAIT_GOING : n && n->in_ring ? WAIT_COMMITTED : WAIT_CANCELLED;
    return n && n->draining ? WAIT_GOING : n && n->in_ring ? WAIT_CANCELLED : WAIT_COMMITTED;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

int psctl_ring_change_wait(psctl *p, const char *id, bool join, int timeout_s,
                           uint64_t *ret_epoch) {
    int rc = psctl_connect(p);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    FILE *out = p->json ? stderr : stdout; /* --json: stdout keeps one document */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char last[1024] = "", line[1024], failure[1024] = "";
    const char *what = join ? "join" : "drain";
    for (;;) {
        Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_call_opts opts = {.timeout_ms = p->timeout_ms};
        rpc_result res;
        if (rpc_call(p->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor, &opts,
                     &resp, &res) != PS_STATUS_OK) {
            if (!failure[0])
                psctl_warn(p, "cannot get the ring from %s (%s: %s); trying again", p->coordinator,
                           rpc_code_name(res.grpc_code), res.details);
            snprintf(failure, sizeof failure, "%s: %.900s", rpc_code_name(res.grpc_code),
                     res.details);
        } else {
            failure[0] = '\0';
            Ps__Ring *ring = (Ps__Ring *)resp;
            wait_state st = change_state(ring, id, join);
            uint64_t epoch = ring->epoch;
            if (st == WAIT_GOING) {
                psctl_ring_change_line(ring, line, sizeof line);
                if (strcmp(line, last) != 0) {
                    fprintf(out, "%5.1f s  %s\n", seconds_since(&t0), line);
                    fflush(out);
                    snprintf(last, sizeof last, "%s", line);
                }
            }
            protobuf_c_message_free_unpacked(resp, NULL);
            if (st == WAIT_COMMITTED) {
                *ret_epoch = epoch;
                return PSCTL_EXIT_OK;
            }
            if (st == WAIT_CANCELLED)
                return psctl_fail(
                    p, "ABORTED",
                    "the %s of shard %s was cancelled after %.1f s: the coordinator's log says "
                    "why (a shard died and failover took it off the ring, the joining shard "
                    "died, it passed --ring-change-timeout-ms, or `psctl ring cancel`). Nothing "
                    "moved for good: run it again to retry",
                    what, id, seconds_since(&t0));
        }
        if (seconds_since(&t0) > timeout_s)
            return psctl_fail(p, "DEADLINE_EXCEEDED",
                              "the %s of shard %s did not finish within %d s (%s); it goes on: "
                              "`psctl ring list` shows it, `psctl ring cancel` stops it",
                              what, id, timeout_s, failure[0] ? failure : last);
        struct timespec nap = {.tv_sec = 0, .tv_nsec = PSCTL_RING_POLL_MS * 1000000L};
        nanosleep(&nap, NULL);
    }
}
