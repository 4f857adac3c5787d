/* cmd_ring.c: `psctl ring`: the subcommand table and `ring list`, membership as the
 * coordinator sees it (add, remove, drain and cancel are in cmd_ring_change.c).
 *
 * It reads the coordinator's node list (NodeInfo: liveness from heartbeats, keys and
 * sequence numbers as last reported). `ring list` adds each shard's share of the key
 * space and the ring's peak/mean (the busiest shard's share per unit of weight over the
 * mean), measured exactly on the ring itself (hashring_parse of the Ring message,
 * hashring_ownership), so an operator sees placement balance, not only weights, and
 * which shards sit at balanced tokens; and the ring change in progress, if any (a
 * shard joining or draining, the pending epoch, which shards have synced).
 */
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "ring_cmd.h"
#include "util.h"

/* How the ring's keys are shared: per member (by ring index), the share it owns as
 * primary; the ring's peak/mean as primary and over all `replication` owners. */
typedef struct ring_balance {
    hashring *ring;
    double *share;
    double peak_mean;            /* primary */
    double peak_mean_replicated; /* any of the Ring's `replication` owners; 0 when 1 */
} ring_balance;

/* Measures the Ring message's ring; false when it does not parse (or out of memory). */
static bool ring_balance_measure(const Ps__Ring *ring, ring_balance *ret) {
    memset(ret, 0, sizeof *ret);
    if (hashring_parse(ring->ring.data, ring->ring.len, &ret->ring) != PS_STATUS_OK)
        return false;
    uint32_t n = hashring_node_count(ret->ring);
    ret->share = calloc(n ? n : 1, sizeof *ret->share);
    if (ret->share &&
        hashring_ownership(ret->ring, 1, ret->share, &ret->peak_mean) == PS_STATUS_OK &&
        (ring->replication <= 1 || hashring_ownership(ret->ring, ring->replication, NULL,
                                                      &ret->peak_mean_replicated) == PS_STATUS_OK))
        return true;
    free(ret->share);
    hashring_destroy(ret->ring);
    memset(ret, 0, sizeof *ret);
    return false;
}

/* Member `id`'s share and whether it sits at explicit tokens; false when not on it. */
static bool ring_balance_of(const ring_balance *b, const char *id, double *ret_share,
                            bool *ret_tokens) {
    uint32_t idx;
    hashring_node_info info;
    if (!b->ring || !hashring_find(b->ring, id, &idx) || !hashring_node_at(b->ring, idx, &info))
        return false;
    *ret_share = b->share[idx];
    *ret_tokens = info.tokens != NULL;
    return true;
}

/* ================================================================ ring list === */

static const char ring_list_help[] =
    "usage: psctl ring list\n"
    "The ring: its epoch, then every shard: id, address, weight, whether it is on the\n"
    "ring (\"waiting\": registered after data was uploaded, off the ring until `ring add`;\n"
    "\"JOINING\"/\"DRAINING\": a ring change in progress), whether it is alive (heard from within "
    "3\n"
    "heartbeats), keys held (as last reported), its share of the key space as primary\n"
    "(measured exactly on the ring) and its placement (\"balanced\": tokens chosen by\n"
    "`ring add --balanced`; \"hashed\": hashed positions). Last, the ring's peak/mean:\n"
    "the busiest shard's share per unit of weight over the mean (1.000 = every shard owns\n"
    "exactly its weight's share), as primary and, with replication R > 1, as any of the R\n"
    "owners of a key.\n"
    "JSON: {\"epoch\", \"replication\", \"peak_mean\", \"peak_mean_replicated\" (R > 1),\n"
    "\"shards\": [{\"id\", \"role\", \"addr\", \"weight\", \"in_ring\", \"waiting\", \"alive\",\n"
    "\"keys\", \"seq\", \"last_heartbeat_ms\", \"joining\", \"draining\", \"synced_epoch\",\n"
    "\"share\", \"balanced\"}], \"waiting\": [ids of the shards waiting off the ring],\n"
    "\"change\": the ring change in progress (see `psctl status --help`) or null}\n";

static int ring_list(psctl *p, int argc, char **argv);

const psctl_cmd psctl_ring_cmds[PSCTL_RING_N_CMDS] = {
    [PSCTL_RING_LIST] = {"list", "shards on the ring", ring_list_help, ring_list},
    [PSCTL_RING_ADD] = {"add", "put a shard on the ring (moving its keys to it)",
                        psctl_ring_add_help, psctl_ring_add},
    [PSCTL_RING_REMOVE] = {"remove", "take a node out", psctl_ring_remove_help, psctl_ring_remove},
    [PSCTL_RING_DRAIN] = {"drain", "move a shard's keys away, then take it off",
                          psctl_ring_drain_help, psctl_ring_drain},
    [PSCTL_RING_CANCEL] = {"cancel", "cancel the ring change in progress", psctl_ring_cancel_help,
                           psctl_ring_cancel},
};

static const char ring_help[] =
    "usage: psctl ring SUBCOMMAND\n"
    "Ring membership. A shard added to a ring that holds data joins once the keys it will\n"
    "own are copied to it; a drained shard leaves once its keys are on their next owners.\n"
    "Serving and training go on meanwhile. One change at a time.\n"
    "  list                                  shards, epoch, liveness, keys, share, peak/mean,\n"
    "                                        the change in progress\n"
    "  add --id ID --addr HOST:PORT [--weight W] [--balanced] [--no-wait]\n"
    "                                        put a shard on the ring (--balanced: at tokens\n"
    "                                        that keep every shard at its weight's share)\n"
    "  drain --id ID [--no-wait]             move a shard's keys away, then take it off\n"
    "  remove --id ID [--force]              take an empty (or, --force, dead) node out\n"
    "  cancel                                cancel the join or drain in progress\n";

int psctl_cmd_ring(psctl *p, int argc, char **argv) {
    return psctl_dispatch(p, "ring", ring_help, psctl_ring_cmds, PSCTL_RING_N_CMDS, argc, argv);
}

static int ring_list(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc =
        psctl_parse(p, &psctl_ring_cmds[PSCTL_RING_LIST], argc, argv, NULL, NULL, NULL, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = psctl_no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor, &resp,
                          "get the ring");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__Ring *ring = (Ps__Ring *)resp;
    psctl_nodes_sort(ring);
    ring_balance bal;
    bool measured = ring_balance_measure(ring, &bal);
    if (!measured)
        psctl_warn(p, "the ring sent by the coordinator does not parse: no shares shown");
    double share;
    bool tokens;

    if (p->json) {
        json_t *shards = json_array(), *waiting = json_array();
        for (size_t i = 0; i < ring->n_nodes; i++) {
            const Ps__NodeInfo *n = ring->nodes[i];
            if (n->role != PS__NODE_ROLE__ROLE_SHARD)
                continue;
            json_t *o = psctl_node_json(n);
            if (o && ring_balance_of(&bal, n->id, &share, &tokens)) {
                json_object_set_new(o, "share", json_real(share));
                json_object_set_new(o, "balanced", json_boolean(tokens));
            }
            json_array_append_new(shards, o);
            if (n->waiting)
                json_array_append_new(waiting, json_string(n->id));
        }
        json_t *doc =
            json_pack("{s:I, s:I, s:o, s:o}", "epoch", (json_int_t)ring->epoch, "replication",
                      (json_int_t)ring->replication, "shards", shards, "waiting", waiting);
        if (doc && measured) {
            json_object_set_new(doc, "peak_mean", json_real(bal.peak_mean));
            if (ring->replication > 1)
                json_object_set_new(doc, "peak_mean_replicated",
                                    json_real(bal.peak_mean_replicated));
        }
        if (doc)
            json_object_set_new(doc, "change", psctl_ring_change_json(p, ring, false));
        rc = psctl_emit_json(p, doc);
    } else {
        size_t n_shards = 0, n_alive = 0, n_waiting = 0;
        static const char *const header[] = {"ID",    "ADDRESS", "WEIGHT", "IN_RING",
                                             "ALIVE", "KEYS",    "SHARE",  "PLACEMENT"};
        psctl_table *t = psctl_table_create(8, header);
        for (size_t i = 0; i < ring->n_nodes; i++) {
            const Ps__NodeInfo *n = ring->nodes[i];
            if (n->role != PS__NODE_ROLE__ROLE_SHARD)
                continue;
            n_shards++;
            n_alive += n->alive;
            n_waiting += n->waiting;
            char weight[16], keys[32], pct[16] = "-";
            const char *placement = "-";
            snprintf(weight, sizeof weight, "%u", n->weight);
            snprintf(keys, sizeof keys, "%llu", (unsigned long long)n->keys);
            if (ring_balance_of(&bal, n->id, &share, &tokens)) {
                snprintf(pct, sizeof pct, "%.2f%%", share * 100.0);
                placement = tokens ? "balanced" : "hashed";
            }
            const char *row[] = {n->id,
                                 n->addr,
                                 weight,
                                 n->draining  ? "DRAINING"
                                 : n->in_ring ? "yes"
                                 : n->joining ? "JOINING"
                                 : n->waiting ? "WAITING"
                                              : "no",
                                 n->alive ? "yes" : "NO",
                                 keys,
                                 pct,
                                 placement};
            psctl_table_add(t, row);
        }
        printf("ring epoch %llu, replication %u: %zu shards, %zu alive\n",
               (unsigned long long)ring->epoch, ring->replication, n_shards, n_alive);
        if (n_shards)
            psctl_table_print(t, stdout);
        psctl_table_destroy(t);
        if (measured && hashring_node_count(bal.ring) > 0) {
            printf("ownership peak/mean %.3f as primary", bal.peak_mean);
            if (ring->replication > 1)
                printf(", %.3f as any of %u owners", bal.peak_mean_replicated, ring->replication);
            printf(" (1.000: every shard owns exactly its weight's share)\n");
        }
        psctl_ring_change change;
        psctl_ring_change_get(ring, &change);
        if (change.node) {
            char line[1024];
            psctl_ring_change_line(ring, line, sizeof line);
            printf("RING CHANGE: %s\n", line);
        }
        if (n_waiting)
            printf("%zu shard%s WAITING off the ring (registered after data was uploaded): "
                   "`psctl ring add --id ID --addr HOST:PORT` copies the keys it would own to it, "
                   "then puts it on the ring\n",
                   n_waiting, n_waiting == 1 ? "" : "s");
    }
    free(bal.share);
    hashring_destroy(bal.ring);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
