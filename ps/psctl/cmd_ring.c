/* cmd_ring.c: `psctl ring list|add|remove` and `psctl status`: membership as the
 * coordinator sees it.
 *
 * Both read the coordinator's node list (NodeInfo: liveness from heartbeats, keys and
 * sequence numbers as last reported). `ring list` adds each shard's share of the key
 * space, measured on the ring itself (hashring_parse of the Ring message) by looking
 * up evenly spaced hashes, so an operator sees placement balance, not only weights.
 * `ring add` first asks the shard at the address for its health (its id must match),
 * so a typo does not put an unreachable node on the ring; --no-check skips that.
 */
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "psctl.h"
#include "util.h"

#define SHARE_SAMPLES 65536u /* hashes looked up to estimate each shard's share */

/* ================================================================ nodes === */

static const char *role_name(Ps__NodeRole role) {
    return role == PS__NODE_ROLE__ROLE_SHARD ? "shard" : "serve";
}

static json_t *node_json(const Ps__NodeInfo *n) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:b, s:b, s:I, s:I}", "id", n->id, "role",
                          role_name(n->role), "addr", n->addr, "weight", (json_int_t)n->weight,
                          "in_ring", n->in_ring, "alive", n->alive, "keys", (json_int_t)n->keys,
                          "seq", (json_int_t)n->seq);
    /* 0 means the coordinator has not heard from it since it (re)started */
    if (o)
        json_object_set_new(o, "last_heartbeat_ms",
                            n->last_heartbeat_ms || n->alive
                                ? json_integer((json_int_t)n->last_heartbeat_ms)
                                : json_null());
    return o;
}

static const char *heartbeat_age(const Ps__NodeInfo *n, char *buf, size_t cap) {
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

static void sort_nodes(Ps__Ring *ring) {
    if (ring && ring->n_nodes > 1)
        qsort(ring->nodes, ring->n_nodes, sizeof *ring->nodes, cmp_node);
}

/* Fraction of SHARE_SAMPLES evenly spaced hashes each ring member owns (primary),
 * by ring index; NULL when the ring does not parse. Free the result. */
static double *ring_shares(const Ps__Ring *ring, hashring **ret_ring) {
    hashring *r = NULL;
    if (hashring_parse(ring->ring.data, ring->ring.len, &r) != PS_STATUS_OK)
        return NULL;
    uint32_t n = hashring_node_count(r);
    double *share = calloc(n ? n : 1, sizeof *share);
    if (!share) {
        hashring_destroy(r);
        return NULL;
    }
    const uint64_t step = UINT64_MAX / SHARE_SAMPLES;
    for (uint64_t i = 0; n && i < SHARE_SAMPLES; i++) {
        uint32_t owner = hashring_primary(r, i * step + step / 2);
        if (owner < n)
            share[owner] += 1.0 / SHARE_SAMPLES;
    }
    *ret_ring = r;
    return share;
}

/* ================================================================ ring list === */

static const char ring_list_help[] =
    "usage: psctl ring list\n"
    "The ring: its epoch, then every shard: id, address, weight, whether it is on the\n"
    "ring, whether it is alive (heard from within 3 heartbeats), keys held (as last\n"
    "reported) and its share of the key space (measured on the ring).\n"
    "JSON: {\"epoch\", \"replication\", \"shards\": [{\"id\", \"role\", \"addr\", \"weight\",\n"
    "\"in_ring\", \"alive\", \"keys\", \"seq\", \"last_heartbeat_ms\", \"share\"}]}\n";

static int ring_list(psctl *p, int argc, char **argv);
static int ring_add(psctl *p, int argc, char **argv);
static int ring_remove(psctl *p, int argc, char **argv);

static const char ring_add_help[] =
    "usage: psctl ring add --id ID --addr HOST:PORT [--weight W] [--no-check]\n"
    "Puts a shard on the ring (AddNode); the ring epoch moves on and keys the new shard\n"
    "now owns are routed to it. Shards started with --coordinator register themselves;\n"
    "this is for a shard the coordinator does not know yet.\n"
    "  --id ID          the shard's id (what it was started with)\n"
    "  --addr HOST:PORT where it serves\n"
    "  --weight W       relative capacity, 1..1000 (default 1)\n"
    "  --no-check       do not first ask the shard at HOST:PORT for its health and id\n";

static const char ring_remove_help[] =
    "usage: psctl ring remove --id ID\n"
    "Takes a node out of the cluster (RemoveNode). The coordinator refuses to remove a\n"
    "shard that still holds data (FAILED_PRECONDITION), since its keys would be lost.\n"
    "  --id ID          the node's id\n";

static const psctl_cmd ring_cmds[] = {
    {"list", "shards on the ring", ring_list_help, ring_list},
    {"add", "put a shard on the ring", ring_add_help, ring_add},
    {"remove", "take a node out", ring_remove_help, ring_remove},
};

static const char ring_help[] =
    "usage: psctl ring SUBCOMMAND\n"
    "Ring membership.\n"
    "  list                                        shards, epoch, liveness, keys, share\n"
    "  add --id ID --addr HOST:PORT [--weight W]   put a shard on the ring\n"
    "  remove --id ID                              take a node out\n";

int psctl_cmd_ring(psctl *p, int argc, char **argv) {
    return psctl_dispatch(p, "ring", ring_help, ring_cmds, sizeof ring_cmds / sizeof ring_cmds[0],
                          argc, argv);
}

static int no_positionals(psctl *p, int argc, char **argv, int first) {
    if (first < argc)
        return psctl_usage(p, "unexpected argument '%s'", argv[first]);
    return PSCTL_EXIT_OK;
}

static int ring_list(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[0], argc, argv, NULL, NULL, NULL, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor, &resp,
                          "get the ring");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__Ring *ring = (Ps__Ring *)resp;
    sort_nodes(ring);
    hashring *hr = NULL;
    double *share = ring_shares(ring, &hr);
    if (!share)
        psctl_warn(p, "the ring sent by the coordinator does not parse: no shares shown");

    if (p->json) {
        json_t *shards = json_array();
        for (size_t i = 0; i < ring->n_nodes; i++) {
            const Ps__NodeInfo *n = ring->nodes[i];
            if (n->role != PS__NODE_ROLE__ROLE_SHARD)
                continue;
            json_t *o = node_json(n);
            uint32_t idx;
            if (o && share && hashring_find(hr, n->id, &idx))
                json_object_set_new(o, "share", json_real(share[idx]));
            json_array_append_new(shards, o);
        }
        rc = psctl_emit_json(p, json_pack("{s:I, s:I, s:o}", "epoch", (json_int_t)ring->epoch,
                                          "replication", (json_int_t)ring->replication, "shards",
                                          shards));
    } else {
        size_t n_shards = 0, n_alive = 0;
        static const char *const header[] = {"ID",    "ADDRESS", "WEIGHT", "IN_RING",
                                             "ALIVE", "KEYS",    "SHARE"};
        psctl_table *t = psctl_table_create(7, header);
        for (size_t i = 0; i < ring->n_nodes; i++) {
            const Ps__NodeInfo *n = ring->nodes[i];
            if (n->role != PS__NODE_ROLE__ROLE_SHARD)
                continue;
            n_shards++;
            n_alive += n->alive;
            char weight[16], keys[32], pct[16] = "-";
            snprintf(weight, sizeof weight, "%u", n->weight);
            snprintf(keys, sizeof keys, "%llu", (unsigned long long)n->keys);
            uint32_t idx;
            if (share && hashring_find(hr, n->id, &idx))
                snprintf(pct, sizeof pct, "%.1f%%", share[idx] * 100.0);
            const char *row[] = {
                n->id, n->addr, weight, n->in_ring ? "yes" : "no", n->alive ? "yes" : "NO",
                keys,  pct};
            psctl_table_add(t, row);
        }
        printf("ring epoch %llu, replication %u: %zu shards, %zu alive\n",
               (unsigned long long)ring->epoch, ring->replication, n_shards, n_alive);
        if (n_shards)
            psctl_table_print(t, stdout);
        psctl_table_destroy(t);
    }
    free(share);
    hashring_destroy(hr);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ================================================================ ring add === */

enum { OPT_ID = PSCTL_OPT_FIRST_PRIVATE, OPT_ADDR, OPT_WEIGHT, OPT_NO_CHECK };

typedef struct ring_opts {
    const char *id;
    const char *addr;
    int weight;
    bool no_check;
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
    rpc_channel *ch = NULL;
    ps_status st = rpc_channel_create(o->addr, NULL, &ch);
    if (st != PS_STATUS_OK)
        return psctl_fail(p, ps_status_name(st), "cannot open a channel to %s: %s", o->addr,
                          ps_status_str(st));
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = p->timeout_ms};
    st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base, &ps__health_response__descriptor,
                  &opts, &resp, &res);
    rpc_channel_destroy(ch);
    if (st != PS_STATUS_OK)
        return psctl_fail(p, rpc_code_name(res.grpc_code),
                          "no shard answers at %s: %s: %s (start it first, or pass --no-check to "
                          "add it anyway)",
                          o->addr, rpc_code_name(res.grpc_code), res.details);
    const Ps__HealthResponse *h = (const Ps__HealthResponse *)resp;
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
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1};
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[1], argc, argv, own, ring_option, &o, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
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
    printf("shard %s (%s, weight %d) is on the ring: epoch %llu\n", o.id, o.addr, o.weight,
           (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}

/* ================================================================ ring remove === */

static int ring_remove(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"id", required_argument, NULL, OPT_ID},
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1};
    int first = 0;
    int rc = psctl_parse(p, &ring_cmds[2], argc, argv, own, ring_option, &o, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    if (!o.id || !*o.id)
        return psctl_usage(p, "--id ID is required");
    Ps__RemoveNodeRequest req = PS__REMOVE_NODE_REQUEST__INIT;
    req.id = (char *)o.id;
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

/* ================================================================ status === */

static const char status_help[] =
    "usage: psctl status\n"
    "The cluster as the coordinator sees it: ring epoch; every node (shards and serving\n"
    "replicas) with its role, address, liveness, time since its last heartbeat, keys\n"
    "held and last update sequence number; every model with its versions.\n"
    "JSON: {\"coordinator\", \"epoch\", \"replication\", \"nodes\": [{\"id\", \"role\", \"addr\",\n"
    "\"weight\", \"in_ring\", \"alive\", \"keys\", \"seq\", \"last_heartbeat_ms\"}],\n"
    "\"models\": [{\"name\", \"versions\": [..], \"latest\", \"tensors\", \"parameters\"}]}\n";

static int status_run(psctl *p, int argc, char **argv);

static const psctl_cmd status_cmd = {"status", "cluster status", status_help, status_run};

int psctl_cmd_status(psctl *p, int argc, char **argv) {
    return status_run(p, argc, argv);
}

static uint64_t model_parameters(const Ps__ModelInfo *m) {
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        total += ps_tensor_count(m->tensors[i]);
    return total;
}

/* Index of the first model entry named like models[i] (entries of one model are
 * grouped under it). */
static size_t first_of_name(Ps__ModelInfo *const *models, size_t i) {
    for (size_t k = 0; k < i; k++)
        if (strcmp(models[k]->name, models[i]->name) == 0)
            return k;
    return i;
}

static int status_run(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc = psctl_parse(p, &status_cmd, argc, argv, NULL, NULL, NULL, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    Ps__StatusRequest req = PS__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/Status", &req.base, &ps__status_response__descriptor,
                          &resp, "get the cluster status");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    const Ps__StatusResponse *s = (const Ps__StatusResponse *)resp;
    const Ps__Ring *ring = s->ring;
    sort_nodes(s->ring);
    size_t n_nodes = ring ? ring->n_nodes : 0;

    if (p->json) {
        json_t *nodes = json_array(), *models = json_array();
        for (size_t i = 0; i < n_nodes; i++)
            json_array_append_new(nodes, node_json(ring->nodes[i]));
        for (size_t i = 0; i < s->n_models; i++) {
            if (first_of_name(s->models, i) != i)
                continue;
            json_t *versions = json_array();
            const Ps__ModelInfo *latest = s->models[i];
            for (size_t k = i; k < s->n_models; k++) {
                if (strcmp(s->models[k]->name, s->models[i]->name) != 0)
                    continue;
                json_array_append_new(versions, json_integer((json_int_t)s->models[k]->version));
                if (s->models[k]->version > latest->version)
                    latest = s->models[k];
            }
            json_array_append_new(models, json_pack("{s:s, s:o, s:I, s:I, s:I}", "name",
                                                    latest->name, "versions", versions, "latest",
                                                    (json_int_t)latest->version, "tensors",
                                                    (json_int_t)latest->n_tensors, "parameters",
                                                    (json_int_t)model_parameters(latest)));
        }
        rc =
            psctl_emit_json(p, json_pack("{s:s, s:I, s:I, s:o, s:o}", "coordinator", p->coordinator,
                                         "epoch", (json_int_t)(ring ? ring->epoch : 0),
                                         "replication", (json_int_t)(ring ? ring->replication : 0),
                                         "nodes", nodes, "models", models));
        protobuf_c_message_free_unpacked(resp, NULL);
        return rc;
    }

    size_t shards = 0, shards_alive = 0, replicas = 0, replicas_alive = 0;
    for (size_t i = 0; i < n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        bool shard = n->role == PS__NODE_ROLE__ROLE_SHARD;
        shards += shard;
        shards_alive += shard && n->alive;
        replicas += !shard;
        replicas_alive += !shard && n->alive;
    }
    printf("coordinator %s: ring epoch %llu, replication %u\n", p->coordinator,
           (unsigned long long)(ring ? ring->epoch : 0), ring ? ring->replication : 0);
    printf("%zu shards (%zu alive), %zu serving replicas (%zu alive)\n", shards, shards_alive,
           replicas, replicas_alive);
    if (n_nodes) {
        static const char *const header[] = {"ID",   "ROLE", "ADDRESS", "ALIVE", "LAST HEARTBEAT",
                                             "KEYS", "SEQ",  "IN_RING"};
        psctl_table *t = psctl_table_create(8, header);
        for (size_t i = 0; i < n_nodes; i++) {
            const Ps__NodeInfo *n = ring->nodes[i];
            char age[32], keys[32], seq[32];
            snprintf(keys, sizeof keys, "%llu", (unsigned long long)n->keys);
            snprintf(seq, sizeof seq, "%llu", (unsigned long long)n->seq);
            const char *row[] = {n->id,
                                 role_name(n->role),
                                 n->addr,
                                 n->alive ? "yes" : "NO",
                                 heartbeat_age(n, age, sizeof age),
                                 keys,
                                 seq,
                                 n->role == PS__NODE_ROLE__ROLE_SHARD ? (n->in_ring ? "yes" : "no")
                                                                      : "-"};
            psctl_table_add(t, row);
        }
        printf("\n");
        psctl_table_print(t, stdout);
        psctl_table_destroy(t);
    }
    printf("\n");
    if (s->n_models == 0) {
        printf("no models registered\n");
    } else {
        static const char *const header[] = {"MODEL", "VERSIONS", "LATEST", "TENSORS",
                                             "PARAMETERS"};
        psctl_table *t = psctl_table_create(5, header);
        for (size_t i = 0; i < s->n_models; i++) {
            if (first_of_name(s->models, i) != i)
                continue;
            char versions[256] = "", latest_s[32], tensors[32], params[32];
            size_t used = 0;
            const Ps__ModelInfo *latest = s->models[i];
            for (size_t k = i; k < s->n_models; k++) {
                if (strcmp(s->models[k]->name, s->models[i]->name) != 0)
                    continue;
                if (used < sizeof versions)
                    used += (size_t)snprintf(versions + used, sizeof versions - used, "%s%llu",
                                             used ? "," : "",
                                             (unsigned long long)s->models[k]->version);
                if (s->models[k]->version > latest->version)
                    latest = s->models[k];
            }
            snprintf(latest_s, sizeof latest_s, "%llu", (unsigned long long)latest->version);
            snprintf(tensors, sizeof tensors, "%zu", latest->n_tensors);
            snprintf(params, sizeof params, "%llu", (unsigned long long)model_parameters(latest));
            const char *row[] = {latest->name, versions, latest_s, tensors, params};
            psctl_table_add(t, row);
        }
        psctl_table_print(t, stdout);
        psctl_table_destroy(t);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return PSCTL_EXIT_OK;
}
