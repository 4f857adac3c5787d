/* nodes.c: how psctl shows cluster members (ring list, status): role names, the JSON
 * of a node, heartbeat ages, the order nodes are listed in. */
#include <stdlib.h>
#include <string.h>

#include "psctl.h"

const char *psctl_role_name(Ps__NodeRole role) {
    return role == PS__NODE_ROLE__ROLE_SHARD ? "shard" : "serve";
}

json_t *psctl_node_json(const Ps__NodeInfo *n) {
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:b, s:b, s:b, s:I, s:I}", "id", n->id, "role",
                  psctl_role_name(n->role), "addr", n->addr, "weight", (json_int_t)n->weight,
                  "in_ring", n->in_ring, "waiting", n->waiting, "alive", n->alive, "keys",
                  (json_int_t)n->keys, "seq", (json_int_t)n->seq);
    if (o && n->role == PS__NODE_ROLE__ROLE_SHARD) { /* a ring change (ring_cmd.h) */
        json_object_set_new(o, "joining", json_boolean(n->joining));
        json_object_set_new(o, "draining", json_boolean(n->draining));
        json_object_set_new(o, "synced_epoch", json_integer((json_int_t)n->synced_epoch));
    }
    /* 0 means the coordinator has not heard from it since it (re)started */
    if (o)
        json_object_set_new(o, "last_heartbeat_ms",
                            n->last_heartbeat_ms || n->alive
                                ? json_integer((json_int_t)n->last_heartbeat_ms)
                                : json_null());
    return o;
}

const char *psctl_heartbeat_age(const Ps__NodeInfo *n, char *buf, size_t cap) {
    if (!n->last_heartbeat_ms && !n->alive)
        return "never";
    if (n->last_heartbeat_ms < 1000)
        snprintf(buf, cap, "%llu ms ago", (unsigned long long)n->last_heartbeat_ms);
    else if (n->last_heartbeat_ms < 10000)
        snprintf(buf, cap, "%.1f s ago", (double)n->last_heartbeat_ms / 1000.0);
    else
        snprintf(buf, cap, "%llu s ago", (unsigned long long)(n->last_heartbeat_ms / 1000));
    return buf;
}

/* Shards first, then replicas; by id in version order (shard-2 before shard-10). */
static int cmp_node(const void *a, const void *b) {
    const Ps__NodeInfo *x = *(Ps__NodeInfo *const *)a, *y = *(Ps__NodeInfo *const *)b;
    if (x->role != y->role)
        return x->role == PS__NODE_ROLE__ROLE_SHARD ? -1 : 1;
    return strverscmp(x->id, y->id);
}

void psctl_nodes_sort(Ps__Ring *ring) {
    if (ring && ring->n_nodes > 1)
        qsort(ring->nodes, ring->n_nodes, sizeof *ring->nodes, cmp_node);
}

int psctl_no_positionals(psctl *p, int argc, char **argv, int first) {
    if (first < argc)
        return psctl_usage(p, "unexpected argument '%s'", argv[first]);
    return PSCTL_EXIT_OK;
}
