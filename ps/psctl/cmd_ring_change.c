/* cmd_ring_change.c: `psctl ring add|remove|drain|cancel`: membership changes.
 *
 * `ring add` first asks the shard at the address for its health (its id must match),
 * so a typo does not put an unreachable node on the ring; --no-check skips that. On a
 * ring that holds no data the shard goes on the ring at once; otherwise the coordinator
 * starts a join (the ring's shards copy the keys it will own to it, pushes go to both
 * meanwhile) and psctl waits, one progress line per change, until the coordinator
 * commits it or cancels it (ring_progress.c). `ring drain` is the way out for a shard
 * holding data: its keys go to their next owners, then it leaves the ring. `ring
 * remove` takes out an empty shard, or with --force one that cannot be asked (dead);
 * the coordinator never removes a shard that answers that it holds data. `ring cancel`
 * stops the change in progress (RemoveNode of the joining shard, or AddNode of the
 * draining one marked draining, which the coordinator reads as "keep it").
 */
#include <stdlib.h>
#include <string.h>

#include "ring_cmd.h"
#include "util.h"

const char psctl_ring_add_help[] =
    "usage: psctl ring add --id ID --addr HOST:PORT [--weight W] [--balanced] [--no-check]\n"
    "                      [--no-wait] [--timeout-s S]\n"
    "Puts a shard on the ring (AddNode). On a ring that holds no data it goes on at once.\n"
    "Otherwise the shard joins: the ring's shards copy the keys it will own to it (pushes\n"
    "meanwhile go to both; reads and inference go on as before) and the coordinator\n"
    "switches the ring once every shard has synced. psctl waits for that, printing a line\n"
    "per step (`psctl ring list` shows the same). A change that cannot finish (a shard\n"
    "dies, --ring-change-timeout-ms passes, `psctl ring cancel`) is cancelled: the ring\n"
    "stays as it was and nothing is lost. One change at a time.\n"
    "  --id ID          the shard's id (what it was started with)\n"
    "  --addr HOST:PORT where it serves\n"
    "  --weight W       relative capacity, 1..1000 (default 1)\n"
    "  --balanced       place the shard at tokens the coordinator chooses so that every\n"
    "                   shard owns its weight's share of the keys (ring list: peak/mean\n"
    "                   1.000), instead of at hashed positions (typically 1.03-1.08).\n"
    "                   The shard keeps them through restarts and re-registrations.\n"
    "  --no-check       do not first ask the shard at HOST:PORT for its health and id\n"
    "  --no-wait        return once the join has started\n"
    "  --timeout-s S    stop waiting after S seconds (default 1200; the join goes on)\n"
    "JSON: {\"id\", \"addr\", \"weight\", \"epoch\", \"state\": \"in_ring\"|\"joining\"}\n";

const char psctl_ring_drain_help[] =
    "usage: psctl ring drain --id ID [--no-wait] [--timeout-s S]\n"
    "Moves a shard's keys to their next owners, then takes it off the ring (RemoveNode\n"
    "with drain). Pushes meanwhile go to the old and the new owners; serving and training\n"
    "go on. The shard must be alive and not the last on the ring; once drained it stays\n"
    "known (off the ring) while it runs, and may be stopped. psctl waits as `ring add`\n"
    "does. `ring remove --id ID --drain` is the same.\n"
    "  --id ID          the shard's id\n"
    "  --no-wait        return once the drain has started\n"
    "  --timeout-s S    stop waiting after S seconds (default 1200; the drain goes on)\n"
    "JSON: {\"id\", \"epoch\", \"state\": \"drained\"|\"draining\"}\n";

const char psctl_ring_remove_help[] =
    "usage: psctl ring remove --id ID [--force | --drain]\n"
    "Takes a node out of the cluster (RemoveNode). The coordinator asks the shard how\n"
    "much data it holds and refuses (FAILED_PRECONDITION) when it holds any, since its\n"
    "keys would be lost (`psctl ring drain` moves them away first), or when it cannot be\n"
    "asked. Removing the shard that is joining cancels the join; a dead shard that\n"
    "failover took off the ring is forgotten (with --force any shard off the ring: one\n"
    "still running registers again and waits off the ring).\n"
    "  --id ID          the node's id\n"
    "  --force          remove a shard that cannot be asked (dead or unreachable): with\n"
    "                   --replication 1 its chunks become unreachable. A shard that\n"
    "                   answers that it holds data is never removed. Cancels a ring\n"
    "                   change in progress.\n"
    "  --drain          `psctl ring drain --id ID` (its options apply)\n";

const char psctl_ring_cancel_help[] =
    "usage: psctl ring cancel\n"
    "Cancels the ring change in progress (`ring list` shows it): a join (the shard stays\n"
    "registered, waiting off the ring) or a drain (the shard stays on the ring). Nothing\n"
    "is lost: the shards drop no key until a change commits.\n"
    "JSON: {\"cancelled\": \"join\"|\"drain\", \"id\", \"epoch\"}\n";

enum {
    OPT_ID = PSCTL_OPT_FIRST_PRIVATE,
    OPT_ADDR,
    OPT_WEIGHT,
    OPT_NO_CHECK,
    OPT_FORCE,
    OPT_BALANCED,
    OPT_DRAIN,
    OPT_NO_WAIT,
    OPT_TIMEOUT_S,
};

typedef struct ring_opts {
    const char *id;
    const char *addr;
    int weight;
    bool no_check;
    bool force;    /* ring remove: even a shard that cannot be asked */
    bool balanced; /* ring add: at tokens the coordinator chooses */
    bool drain;    /* ring remove --drain */
    bool no_wait;  /* ring add, drain: return once started */
    int timeout_s; /* ring add, drain: how long to wait */
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
    case OPT_DRAIN:
        o->drain = true;
        return PSCTL_EXIT_OK;
    case OPT_NO_WAIT:
        o->no_wait = true;
        return PSCTL_EXIT_OK;
    case OPT_WEIGHT:
        if (!ps_parse_int(arg, 1, 1000, &o->weight))
            return psctl_usage(p, "--weight wants 1..1000, got '%s'", arg);
        return PSCTL_EXIT_OK;
    case OPT_TIMEOUT_S:
        if (!ps_parse_int(arg, 1, PSCTL_RING_MAX_WAIT_S, &o->timeout_s))
            return psctl_usage(p, "--timeout-s wants 1..%d seconds, got '%s'",
                               PSCTL_RING_MAX_WAIT_S, arg);
        return PSCTL_EXIT_OK;
    default:
        return psctl_usage(p, "unexpected option");
    }
}

/* Parses a ring subcommand's options; PSCTL_HELP_SHOWN, an exit code, or OK with --id
 * given. */
static int parse(psctl *p, int cmd, int argc, char **argv, const struct option *own, ring_opts *o) {
    int first = 0;
    int rc = psctl_parse(p, &psctl_ring_cmds[cmd], argc, argv, own, ring_option, o, &first);
    if (rc != PSCTL_EXIT_OK || (rc = psctl_no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    if (cmd != PSCTL_RING_CANCEL && (!o->id || !*o->id))
        return psctl_usage(p, "--id ID is required");
    return PSCTL_EXIT_OK;
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

/* GetRing; the caller frees *ret_ring with protobuf_c_message_free_unpacked. */
static int get_ring(psctl *p, Ps__Ring **ret_ring) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    return psctl_coord_call(p, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            (ProtobufCMessage **)ret_ring, "get the ring");
}

static const Ps__NodeInfo *find_node(const Ps__Ring *ring, const char *id) {
    for (size_t i = 0; i < ring->n_nodes; i++)
        if (strcmp(ring->nodes[i]->id, id) == 0)
            return ring->nodes[i];
    return NULL;
}

/* After AddNode or a drain started: reports a change under way, or waits for it. */
static int follow(psctl *p, const ring_opts *o, bool join, uint64_t epoch) {
    Ps__Ring *ring = NULL;
    int rc = get_ring(p, &ring);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    const Ps__NodeInfo *n = find_node(ring, o->id);
    bool going = n && (join ? n->joining : n->draining);
    bool done_now = join ? n && n->in_ring : !n || !n->in_ring;
    if (!going && !done_now) { /* cancelled before this look */
        protobuf_c_message_free_unpacked(&ring->base, NULL);
        return psctl_fail(p, "ABORTED",
                          "the %s of shard %s was cancelled at once: the coordinator's log says "
                          "why",
                          join ? "join" : "drain", o->id);
    }
    char line[1024];
    psctl_ring_change_line(ring, line, sizeof line);
    protobuf_c_message_free_unpacked(&ring->base, NULL);
    const char *done = join ? "in_ring" : "drained", *started = join ? "joining" : "draining";
    if (going && o->no_wait) {
        if (!p->json)
            printf("%s started: %s\n`psctl ring list` shows how far it is; `psctl ring "
                   "cancel` stops it\n",
                   join ? "join" : "drain", line);
    } else if (going) {
        if (!p->json)
            printf("%s of shard %s started: the shards copy its keys; waiting (at most %d s)\n",
                   join ? "join" : "drain", o->id, o->timeout_s);
        if ((rc = psctl_ring_change_wait(p, o->id, join, o->timeout_s, &epoch)) != PSCTL_EXIT_OK)
            return rc;
        going = false;
    }
    if (p->json && join)
        return psctl_emit_json(p, json_pack("{s:s, s:s, s:i, s:I, s:s}", "id", o->id, "addr",
                                            o->addr, "weight", o->weight, "epoch",
                                            (json_int_t)epoch, "state", going ? started : done));
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:I, s:s}", "id", o->id, "epoch",
                                            (json_int_t)epoch, "state", going ? started : done));
    if (!going && join)
        printf("shard %s (%s, weight %d) is on the ring at %s: epoch %llu\n", o->id, o->addr,
               o->weight, o->balanced ? "balanced tokens" : "hashed positions",
               (unsigned long long)epoch);
    else if (!going)
        printf("shard %s drained: its keys are on their next owners and it is off the ring: "
               "epoch %llu\n",
               o->id, (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}

/* RemoveNode; *ret_epoch gets the epoch after it. */
static int remove_node(psctl *p, const char *id, bool force, bool drain, uint64_t *ret_epoch) {
    Ps__RemoveNodeRequest req = PS__REMOVE_NODE_REQUEST__INIT;
    req.id = (char *)id;
    req.force = force;
    req.drain = drain;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "%s %s", drain ? "drain shard" : "remove node", id);
    int rc = psctl_coord_call(p, "/ps.Coordinator/RemoveNode", &req.base,
                              &ps__membership_response__descriptor, &resp, what);
    if (rc == PSCTL_EXIT_OK) {
        *ret_epoch = ((Ps__MembershipResponse *)resp)->epoch;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rc;
}

static const struct option wait_options[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"no-wait", no_argument, NULL, OPT_NO_WAIT},
    {"timeout-s", required_argument, NULL, OPT_TIMEOUT_S},
    {NULL, 0, NULL, 0},
};

int psctl_ring_add(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"id", required_argument, NULL, OPT_ID},
        {"addr", required_argument, NULL, OPT_ADDR},
        {"weight", required_argument, NULL, OPT_WEIGHT},
        {"no-check", no_argument, NULL, OPT_NO_CHECK},
        {"balanced", no_argument, NULL, OPT_BALANCED},
        {"no-wait", no_argument, NULL, OPT_NO_WAIT},
        {"timeout-s", required_argument, NULL, OPT_TIMEOUT_S},
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1, .timeout_s = PSCTL_RING_DEFAULT_WAIT_S};
    int rc = parse(p, PSCTL_RING_ADD, argc, argv, own, &o);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
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
    return follow(p, &o, true, epoch);
}

int psctl_ring_drain(psctl *p, int argc, char **argv) {
    ring_opts o = {.weight = 1, .timeout_s = PSCTL_RING_DEFAULT_WAIT_S};
    int rc = parse(p, PSCTL_RING_DRAIN, argc, argv, wait_options, &o);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    uint64_t epoch = 0;
    if ((rc = remove_node(p, o.id, false, true, &epoch)) != PSCTL_EXIT_OK)
        return rc;
    return follow(p, &o, false, epoch);
}

int psctl_ring_remove(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"id", required_argument, NULL, OPT_ID},
        {"force", no_argument, NULL, OPT_FORCE},
        {"drain", no_argument, NULL, OPT_DRAIN},
        {"no-wait", no_argument, NULL, OPT_NO_WAIT},
        {"timeout-s", required_argument, NULL, OPT_TIMEOUT_S},
        {NULL, 0, NULL, 0},
    };
    ring_opts o = {.weight = 1, .timeout_s = PSCTL_RING_DEFAULT_WAIT_S};
    int rc = parse(p, PSCTL_RING_REMOVE, argc, argv, own, &o);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    if (o.drain && o.force)
        return psctl_usage(p, "--drain and --force do not go together: drain moves a live "
                              "shard's keys away, force removes one that cannot be asked");
    uint64_t epoch = 0;
    if (o.drain) {
        if ((rc = remove_node(p, o.id, false, true, &epoch)) != PSCTL_EXIT_OK)
            return rc;
        return follow(p, &o, false, epoch);
    }
    Ps__Ring *ring = NULL; /* was it joining? then the remove cancels the join */
    if ((rc = get_ring(p, &ring)) != PSCTL_EXIT_OK)
        return rc;
    const Ps__NodeInfo *n = find_node(ring, o.id);
    bool joining = n && n->joining;
    protobuf_c_message_free_unpacked(&ring->base, NULL);
    if ((rc = remove_node(p, o.id, o.force, false, &epoch)) != PSCTL_EXIT_OK)
        return rc;
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:I, s:b}", "id", o.id, "epoch",
                                            (json_int_t)epoch, "join_cancelled", joining));
    if (joining)
        printf("the join of shard %s is cancelled: it stays registered, off the ring: ring epoch "
               "%llu\n",
               o.id, (unsigned long long)epoch);
    else
        printf("node %s removed: ring epoch %llu\n", o.id, (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}

int psctl_ring_cancel(psctl *p, int argc, char **argv) {
    ring_opts o = {.weight = 1};
    int rc = parse(p, PSCTL_RING_CANCEL, argc, argv, NULL, &o);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    Ps__Ring *ring = NULL;
    if ((rc = get_ring(p, &ring)) != PSCTL_EXIT_OK)
        return rc;
    psctl_ring_change c;
    psctl_ring_change_get(ring, &c);
    char id[256] = "", addr[256] = "";
    if (c.node) {
        snprintf(id, sizeof id, "%s", c.node->id);
        snprintf(addr, sizeof addr, "%s", c.node->addr);
    }
    bool join = c.join;
    protobuf_c_message_free_unpacked(&ring->base, NULL);
    if (!id[0])
        return psctl_fail(p, "NOT_FOUND", "no ring change is in progress: nothing to cancel");
    uint64_t epoch = 0;
    if (join) {
        rc = remove_node(p, id, false, false, &epoch);
    } else {
        Ps__NodeInfo node = PS__NODE_INFO__INIT; /* draining set: only "keep it" */
        node.id = id;
        node.addr = addr;
        node.role = PS__NODE_ROLE__ROLE_SHARD;
        node.draining = true;
        Ps__AddNodeRequest req = PS__ADD_NODE_REQUEST__INIT;
        req.node = &node;
        ProtobufCMessage *resp = NULL;
        char what[512];
        snprintf(what, sizeof what, "cancel the drain of shard %s", id);
        rc = psctl_coord_call(p, "/ps.Coordinator/AddNode", &req.base,
                              &ps__membership_response__descriptor, &resp, what);
        if (rc == PSCTL_EXIT_OK) {
            epoch = ((Ps__MembershipResponse *)resp)->epoch;
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:s, s:I}", "cancelled", join ? "join" : "drain",
                                            "id", id, "epoch", (json_int_t)epoch));
    printf("the %s of shard %s is cancelled (%s): ring epoch %llu\n", join ? "join" : "drain", id,
           join ? "it stays off the ring" : "it stays on the ring", (unsigned long long)epoch);
    return PSCTL_EXIT_OK;
}
