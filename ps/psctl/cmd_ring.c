/* cmd_ring.c: `psctl ring list|add|remove`: membership as the coordinator sees it.
 *
 * It reads the coordinator's node list (NodeInfo: liveness from heartbeats, keys and
 * sequence numbers as last reported). `ring list` adds each shard's share of the key
 * space and the ring's peak/mean (the busiest shard's share per unit of weight over the
 * mean), measured exactly on the ring itself (hashring_parse of the Ring message,
 * hashring_ownership), so an operator sees placement balance, not only weights, and
 * which shards sit at balanced tokens. `ring add --balanced` has the coordinator
 * choose the shard's tokens so the ring stays balanced (hashring_alloc.h).
 * `ring add` first asks the shard at the address for its health (its id must match),
 * so a typo does not put an unreachable node on the ring; --no-check skips that.
 * Until data moves with membership the coordinator refuses `ring add` while the ring
 * holds data, keeps shards that register then waiting off the ring (shown as such), and
 * refuses `ring remove` of a shard that holds data or cannot be asked (--force for the
 * latter); psctl prints its message, which says why and what to do.
 */
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "psctl.h"
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
    "ring (\"waiting\": registered, but kept off the ring because the ring holds data,\n"
    "which does not move with membership yet), whether it is alive (heard from within 3\n"
    "heartbeats), keys held (as last reported), its share of the key space as primary\n"
    "(measured exactly on the ring) and its placement (\"balanced\": tokens chosen by\n"
    "`ring add --balanced`; \"hashed\": hashed positions). Last, the ring's peak/mean:\n"
    "the busiest shard's share per unit of weight over the mean (1.000 = every shard owns\n"
    "exactly its weight's share), as primary and, with replication R > 1, as any of the R\n"
    "owners of a key.\n"
    "JSON: {\"epoch\", \"replication\", \"peak_mean\", \"peak_mean_replicated\" (R > 1),\n"
    "\"shards\": [{\"id\", \"role\", \"addr\", \"weight\", \"in_ring\", \"waiting\", \"alive\",\n"
    "\"keys\", \"seq\", \"last_heartbeat_ms\", \"share\", \"balanced\"}],\n"
    "\"waiting\": [ids of the shards waiting off the ring]}\n";

static int ring_list(psctl *p, int argc, char **argv);
static int ring_add(psctl *p, int argc, char **argv);
static int ring_remove(psctl *p, int argc, char **argv);

static const char ring_add_help[] =
    "usage: psctl ring add --id ID --addr HOST:PORT [--weight W] [--balanced] [--no-check]\n"
    "Puts a shard on the ring (AddNode); the ring epoch moves on and keys the new shard\n"
    "now owns are routed to it. Shards started with --coordinator register themselves\n"
    "and join while the ring holds no data. Data does not move with membership yet, so\n"
    "the coordinator refuses (FAILED_PRECONDITION, saying how many keys are on how many\n"
    "shards) while the ring holds data: start every shard before uploading models.\n"
    "  --id ID          the shard's id (what it was started with)\n"
    "  --addr HOST:PORT where it serves\n"
    "  --weight W       relative capacity, 1..1000 (default 1)\n"
    "  --balanced       place the shard at tokens the coordinator chooses so that every\n"
    "                   shard owns its weight's share of the keys (ring list: peak/mean\n"
    "                   1.000), instead of at hashed positions (typically 1.03-1.08).\n"
    "                   The shard keeps them through restarts and re-registrations.\n"
    "                   Shards that joined by registering sit at hashed positions: while\n"
    "                   the ring is empty, `ring remove` then `ring add --balanced` each.\n"
    "  --no-check       do not first ask the shard at HOST:PORT for its health and id\n";

static const char ring_remove_help[] =
    "usage: psctl ring remove --id ID [--force]\n"
    "Takes a node out of the cluster (RemoveNode). The coordinator asks the shard how\n"
    "much data it holds and refuses (FAILED_PRECONDITION) when it holds any, since its\n"
    "keys would be lost, or when it cannot be asked.\n"
    "  --id ID          the node's id\n"
    "  --force          remove a shard that cannot be asked (dead or unreachable): its\n"
    "                   chunks become unreachable. A shard that answers that it holds\n"
    "                   data is never removed.\n";

static const psctl_cmd ring_cmds[] = {
    {"list", "shards on the ring", ring_list_help, ring_list},
    {"add", "put a shard on the ring", ring_add_help, ring_add},
    {"remove", "take a node out", ring_remove_help, ring_remove},
};

static const char ring_help[] =
    "usage: psctl ring SUBCOMMAND\n"
    "Ring membership.\n"
    "  list                                  shards, epoch, liveness, keys, share, peak/mean\n"
    "  add --id ID --addr HOST:PORT [--weight W] [--balanced]\n"
    "                                        put a shard on the ring (--balanced: at tokens\n"
    "                                        that keep every shard at its weight's share)\n"
    "  remove --id ID [--force]              take a node out\n";

int psctl_cmd_ring(psctl *p, int argc, char **argv) {
    return psctl_dispatch(p, "ring", ring_help, ring_cmds, sizeof ring_cmds / sizeof ring_cmds[0],
                          argc, argv);
}

static int ring_list(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[0], argc, argv, NULL, NULL, NULL, &first);
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
                                 n->in_ring   ? "yes"
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
        if (n_waiting)
            printf("%zu shard%s WAITING off the ring: the ring holds data, which does not move "
                   "with membership yet (start every shard before uploading models)\n",
                   n_waiting, n_waiting == 1 ? "" : "s");
    }
    free(bal.share);
    hashring_destroy(bal.ring);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ================================================================ ring add === */

enum {
    OPT_ID = PSCTL_OPT_FIRST_PRIVATE,
    OPT_ADDR,
    OPT_WEIGHT,
    OPT_NO_CHECK,
    OPT_FORCE,
    OPT_BALANCED
};

typedef struct ring_opts {
    const char *id;
    const char *addr;
    int weight;
    bool no_check;
    bool force;    /* ring remove: even a shard that cannot be asked */
    bool balanced; /* ring add: at tokens the coordinator chooses */
} ring_opts;

static int ring_option(psctl *p, int opt, const char *arg, void *state) {
    ring_opts *o = state;
    switch (opt) {
    case OPT_ID:
        o->id = arg;
        return PSCTL_EXIT_OK;
    case OPT_ADDR:
        o->addr = arg;
        return PSCTL_EXIT_OK;
    case OPT_NO_CHECK:
        o->no_check = true;
        return PSCTL_EXIT_OK;
    case OPT_FORCE:
        o->force = true;
        return PSCTL_EXIT_OK;
    case OPT_BALANCED:
        o->balanced = true;
        return PSCTL_EXIT_OK;
    case OPT_WEIGHT:
        if (!ps_parse_int(arg, 1, 1000, &o->weight))
            return psctl_usage(p, "--weight wants 1..1000, got '%s'", arg);
        return PSCTL_EXIT_OK;
    default:
        return psctl_usage(p, "unexpected option");
    }
}

static bool addr_syntax_ok(const char *addr) {
    const char *colon = strrchr(addr, ':');
    uint64_t port;
    return colon && colon != addr && ps_parse_u64(colon + 1, &port) && port > 0 && port < 65536;
}

/* Asks the shard at o->addr for its health; its id must be o->id. */
static int check_shard(psctl *p, const ring_opts *o) {
    Ps__HealthResponse *h = NULL;
    rpc_result res;
    if (psctl_shard_health(p, o->addr, &h, &res) != PS_STATUS_OK)
        return psctl_fail(p, rpc_code_name(res.grpc_code),
                          "no shard answers at %s: %s: %s (start it first, or pass --no-check to "
                          "add it anyway)",
                          o->addr, rpc_code_name(res.grpc_code), res.details);
    ProtobufCMessage *resp = &h->base;
    int rc = PSCTL_EXIT_OK;
    if (strcmp(h->id, o->id) != 0)
        rc = psctl_fail(p, "FAILED_PRECONDITION",
                        "the shard at %s says its id is '%s', not '%s': not adding it", o->addr,
                        h->id, o->id);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int ring_add(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"id", required_argument, NULL, OPT_ID},
        {"addr", required_argument, NULL, OPT_ADDR},
        {"weight", required_argument, NULL, OPT_WEIGHT},
        {"no-check", no_argument, NULL, OPT_NO_CHECK},
        {"balanced", no_argument, NULL, OPT_BALANCED},
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1};
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[1], argc, argv, own, ring_option, &o, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = psctl_no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    if (!o.id || !*o.id)
        return psctl_usage(p, "--id ID is required");
    if (!o.addr)
        return psctl_usage(p, "--addr HOST:PORT is required");
    if (!addr_syntax_ok(o.addr))
        return psctl_usage(p, "--addr wants HOST:PORT with a port 1..65535, got '%s'", o.addr);
    if ((rc = psctl_connect(p)) != PSCTL_EXIT_OK)
        return rc;
    if (!o.no_check && (rc = check_shard(p, &o)) != PSCTL_EXIT_OK)
        return rc;

    Ps__NodeInfo node = PS__NODE_INFO__INIT;
    node.id = (char *)o.id;
    node.addr = (char *)o.addr;
    node.weight = (uint32_t)o.weight;
    node.role = PS__NODE_ROLE__ROLE_SHARD;
    Ps__AddNodeRequest req = PS__ADD_NODE_REQUEST__INIT;
    req.node = &node;
    req.balanced = o.balanced;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "add shard %s at %s", o.id, o.addr);
    rc = psctl_coord_call(p, "/ps.Coordinator/AddNode", &req.base,
                          &ps__membership_response__descriptor, &resp, what);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    uint64_t epoch = ((Ps__MembershipResponse *)resp)->epoch;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:s, s:i, s:I}", "id", o.id, "addr", o.addr,
                                            "weight", o.weight, "epoch", (json_int_t)epoch));
    printf("shard %s (%s, weight %d) is on the ring at %s: epoch %llu\n", o.id, o.addr, o.weight,
           o.balanced ? "balanced tokens" : "hashed positions", (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}

/* ================================================================ ring remove === */

static int ring_remove(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"id", required_argument, NULL, OPT_ID},
        {"force", no_argument, NULL, OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1};
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[2], argc, argv, own, ring_option, &o, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = psctl_no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    if (!o.id || !*o.id)
        return psctl_usage(p, "--id ID is required");
    Ps__RemoveNodeRequest req = PS__REMOVE_NODE_REQUEST__INIT;
    req.id = (char *)o.id;
    req.force = o.force;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "remove node %s", o.id);
    rc = psctl_coord_call(p, "/ps.Coordinator/RemoveNode", &req.base,
                          &ps__membership_response__descriptor, &resp, what);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    uint64_t epoch = ((Ps__MembershipResponse *)resp)->epoch;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:I}", "id", o.id, "epoch", (json_int_t)epoch));
    printf("node %s removed: ring epoch %llu\n", o.id, (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}
