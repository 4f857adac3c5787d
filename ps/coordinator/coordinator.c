/* coordinator.c: ps-coordinator, the control plane.
 *
 * Holds the cluster's membership (shards and serving replicas), detects dead nodes
 * from missed heartbeats, owns the consistent-hash ring of shards and its epoch, and
 * keeps the model registry. Everything durable lives in one JSON file in the state
 * directory, rewritten atomically on every change (changes are rare), so a restart
 * keeps membership, the epoch and the registry.
 *
 * One mutex guards the state; two generation counters with a condition variable let
 * the streaming RPCs (WatchRing, WatchModels) sleep until something changes.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <pthread.h>

#include "coordinator.pb-c.h"
#include "hashring.h"
#include "log.h"
#include "model_config.h"
#include "ps.pb-c.h"
#include "rpc.h"
#include "util.h"

#define MAX_NODES 256
#define ID_MAX 63

typedef struct node {
    char id[ID_MAX + 1];
    char addr[HASHRING_ADDR_MAX + 1];
    uint32_t weight;
    Ps__NodeRole role;
    bool in_ring;       /* a shard owning ring ranges */
    bool alive;         /* heard from within 3 heartbeat intervals */
    int64_t last_hb_ms; /* monotonic time of the last register/heartbeat; 0 = never */
    uint64_t keys, seq; /* as last reported by a shard */
} node;

typedef struct model_rec {
    Ps__ModelInfo *info; /* unpacked, owned (protobuf_c_message_free_unpacked) */
} model_rec;

typedef struct coord {
    char state_path[4096];
    int heartbeat_ms;
    uint32_t vnodes;

    pthread_mutex_t lock;
    pthread_cond_t changed; /* ring or registry changed, or stopping */
    node nodes[MAX_NODES];
    size_t n_nodes;
    hashring *ring; /* shards with in_ring */
    uint64_t epoch;
    model_rec *models;
    size_t n_models;
    uint64_t model_gen;
    bool stopping;
} coord;

static coord g; /* one coordinator per process */

/* ------------------------------------------------------------------ validation --- */

static bool valid_id(const char *id) {
    if (!id || !*id || strlen(id) > ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static bool valid_addr(const char *addr) {
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    uint64_t port;
    return colon && colon != addr && strlen(addr) <= HASHRING_ADDR_MAX &&
           ps_parse_u64(colon + 1, &port) && port > 0 && port < 65536;
}

static node *find_node(const char *id) {
    for (size_t i = 0; i < g.n_nodes; i++)
        if (strcmp(g.nodes[i].id, id) == 0)
            return &g.nodes[i];
    return NULL;
}

/* ------------------------------------------------------------------ ring --- */

/* Rebuilds the ring from the nodes marked in_ring; bumps the epoch. Lock held. */
static ps_status rebuild_ring(void) {
    hashring *r = NULL;
    ps_status st = hashring_create(g.vnodes, &r);
    if (st != PS_STATUS_OK)
        return st;
    for (size_t i = 0; i < g.n_nodes; i++) {
        if (!g.nodes[i].in_ring)
            continue;
        st = hashring_add(r, g.nodes[i].id, g.nodes[i].addr, g.nodes[i].weight);
        if (st != PS_STATUS_OK) {
            hashring_destroy(r);
            return st;
        }
    }
    g.epoch++;
    hashring_set_epoch(r, g.epoch);
    hashring_destroy(g.ring);
    g.ring = r;
    pthread_cond_broadcast(&g.changed);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ persistence --- */

static json_t *model_to_json(const Ps__ModelInfo *m) {
    json_t *tensors = json_array();
    for (size_t i = 0; i < m->n_tensors; i++) {
        const Ps__TensorInfo *t = m->tensors[i];
        json_t *shape = json_array();
        for (size_t k = 0; k < t->n_shape; k++)
            json_array_append_new(shape, json_integer(t->shape[k]));
        json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name,
                                                 "dtype", t->dtype, "shape", shape, "chunk_floats",
                                                 (json_int_t)t->chunk_floats, "chunks",
                                                 (json_int_t)t->chunks));
    }
    return json_pack("{s:s, s:I, s:s, s:o}", "name", m->name, "version", (json_int_t)m->version,
                     "config_json", m->config_json, "tensors", tensors);
}

/* Writes the state file. Lock held. Failure is logged: the change stands in memory. */
static void save_state(void) {
    json_t *nodes = json_array(), *models = json_array();
    for (size_t i = 0; i < g.n_nodes; i++) {
        const node *n = &g.nodes[i];
        json_array_append_new(nodes,
                              json_pack("{s:s, s:s, s:I, s:s, s:b}", "id", n->id, "addr", n->addr,
                                        "weight", (json_int_t)n->weight, "role",
                                        n->role == PS__NODE_ROLE__ROLE_SHARD ? "shard" : "serve",
                                        "in_ring", n->in_ring));
    }
    for (size_t i = 0; i < g.n_models; i++)
        json_array_append_new(models, model_to_json(g.models[i].info));
    json_t *root =
        json_pack("{s:i, s:I, s:I, s:o, s:o}", "format", 1, "epoch", (json_int_t)g.epoch,
                  "model_generation", (json_int_t)g.model_gen, "nodes", nodes, "models", models);
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    ps_status st =
        text ? ps_write_file_atomic(g.state_path, text, strlen(text)) : PS_STATUS_NO_MEMORY;
    free(text);
    if (st != PS_STATUS_OK)
        PS_ERROR("cannot write state file %s: %s", g.state_path, ps_status_str(st));
}

static Ps__ModelInfo *model_from_json(json_t *jm) {
    const char *name = NULL, *config = NULL;
    json_int_t version = 0;
    json_t *tensors = NULL;
    if (json_unpack(jm, "{s:s, s:I, s:s, s:o}", "name", &name, "version", &version, "config_json",
                    &config, "tensors", &tensors) != 0 ||
        !json_is_array(tensors))
        return NULL;
    Ps__ModelInfo *m = calloc(1, sizeof *m);
    ps__model_info__init(m);
    m->name = strdup(name);
    m->config_json = strdup(config);
    m->version = (uint64_t)version;
    m->n_tensors = json_array_size(tensors);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    for (size_t i = 0; i < m->n_tensors; i++) {
        json_t *jt = json_array_get(tensors, i), *shape = NULL;
        const char *tname = NULL, *dtype = NULL;
        json_int_t cf = 0, chunks = 0;
        Ps__TensorInfo *t = calloc(1, sizeof *t);
        ps__tensor_info__init(t);
        m->tensors[i] = t;
        if (json_unpack(jt, "{s:s, s:s, s:o, s:I, s:I}", "name", &tname, "dtype", &dtype, "shape",
                        &shape, "chunk_floats", &cf, "chunks", &chunks) != 0 ||
            !json_is_array(shape)) {
            t->name = strdup("");
            t->dtype = strdup("");
            protobuf_c_message_free_unpacked(&m->base, NULL);
            return NULL;
        }
        t->name = strdup(tname);
        t->dtype = strdup(dtype);
        t->chunk_floats = (uint32_t)cf;
        t->chunks = (uint32_t)chunks;
        t->n_shape = json_array_size(shape);
        t->shape = calloc(t->n_shape ? t->n_shape : 1, sizeof *t->shape);
        for (size_t k = 0; k < t->n_shape; k++)
            t->shape[k] = json_integer_value(json_array_get(shape, k));
    }
    return m;
}

static ps_status load_state(void) {
    char *text = NULL;
    ps_status st = ps_read_file(g.state_path, &text, NULL);
    if (st == PS_STATUS_NOT_FOUND)
        return PS_STATUS_OK; /* a new cluster */
    if (st != PS_STATUS_OK)
        return st;
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    free(text);
    json_t *nodes = NULL, *models = NULL;
    json_int_t epoch = 0, gen = 0;
    if (!root || json_unpack(root, "{s:I, s:I, s:o, s:o}", "epoch", &epoch, "model_generation",
                             &gen, "nodes", &nodes, "models", &models) != 0) {
        PS_ERROR("state file %s is not valid: %s", g.state_path,
                 root ? "missing fields" : err.text);
        json_decref(root);
        return PS_STATUS_PARSE;
    }
    for (size_t i = 0; i < json_array_size(nodes) && g.n_nodes < MAX_NODES; i++) {
        const char *id = NULL, *addr = NULL, *role = NULL;
        json_int_t weight = 1;
        int in_ring = 0;
        if (json_unpack(json_array_get(nodes, i), "{s:s, s:s, s:I, s:s, s:b}", "id", &id, "addr",
                        &addr, "weight", &weight, "role", &role, "in_ring", &in_ring) != 0)
            continue;
        node *n = &g.nodes[g.n_nodes++];
        memset(n, 0, sizeof *n);
        snprintf(n->id, sizeof n->id, "%s", id);
        snprintf(n->addr, sizeof n->addr, "%s", addr);
        n->weight = weight > 0 ? (uint32_t)weight : 1;
        n->role =
            strcmp(role, "shard") == 0 ? PS__NODE_ROLE__ROLE_SHARD : PS__NODE_ROLE__ROLE_SERVE;
        n->in_ring = in_ring;
    }
    for (size_t i = 0; i < json_array_size(models); i++) {
        Ps__ModelInfo *m = model_from_json(json_array_get(models, i));
        if (!m)
            continue;
        g.models = realloc(g.models, (g.n_models + 1) * sizeof *g.models);
        g.models[g.n_models++].info = m;
    }
    g.model_gen = (uint64_t)gen;
    json_decref(root);
    /* rebuild_ring bumps the epoch: start one below so the restored epoch is kept */
    g.epoch = epoch > 0 ? (uint64_t)epoch - 1 : 0;
    return rebuild_ring();
}

/* ------------------------------------------------------------------ messages --- */

/* Fills a Ring message; strings point into the state (send before unlocking).
 * *ret_nodes and ring.ring.data are malloc'd: free with ring_free. Lock held. */
static void ring_fill(Ps__Ring *ring, Ps__NodeInfo *infos, Ps__NodeInfo **ptrs) {
    ps__ring__init(ring);
    ring->epoch = g.epoch;
    ring->replication = 1;
    size_t len = 0;
    hashring_serialize(g.ring, NULL, 0, &len);
    ring->ring.data = malloc(len);
    if (ring->ring.data && hashring_serialize(g.ring, ring->ring.data, len, &len) == PS_STATUS_OK)
        ring->ring.len = len;
    int64_t now = ps_now_ms();
    for (size_t i = 0; i < g.n_nodes; i++) {
        const node *n = &g.nodes[i];
        ps__node_info__init(&infos[i]);
        infos[i].id = (char *)n->id;
        infos[i].addr = (char *)n->addr;
        infos[i].weight = n->weight;
        infos[i].role = n->role;
        infos[i].alive = n->alive;
        infos[i].in_ring = n->in_ring;
        infos[i].keys = n->keys;
        infos[i].seq = n->seq;
        infos[i].last_heartbeat_ms = n->last_hb_ms ? (uint64_t)(now - n->last_hb_ms) : 0;
        ptrs[i] = &infos[i];
    }
    ring->n_nodes = g.n_nodes;
    ring->nodes = ptrs;
}

/* ------------------------------------------------------------------ handlers --- */

static ps_status h_register(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__RegisterRequest *req = (const Ps__RegisterRequest *)msg;
    const Ps__NodeInfo *in = req->node;
    if (!in || !valid_id(in->id))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "node id must be 1-%d characters of [A-Za-z0-9._-]", ID_MAX);
    if (!valid_addr(in->addr))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "node address '%s' is not HOST:PORT",
                             in->addr);
    pthread_mutex_lock(&g.lock);
    node *n = find_node(in->id);
    bool ring_change = false;
    if (!n) {
        if (g.n_nodes == MAX_NODES) {
            pthread_mutex_unlock(&g.lock);
            return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "cluster is full (%d nodes)",
                                 MAX_NODES);
        }
        n = &g.nodes[g.n_nodes++];
        memset(n, 0, sizeof *n);
        snprintf(n->id, sizeof n->id, "%s", in->id);
        n->role = in->role;
        n->weight = in->weight ? in->weight : 1;
        n->in_ring = in->role == PS__NODE_ROLE__ROLE_SHARD;
        ring_change = n->in_ring;
        PS_INFO("registered new %s %s at %s",
                in->role == PS__NODE_ROLE__ROLE_SHARD ? "shard" : "replica", in->id, in->addr);
    } else if (n->role != in->role) {
        pthread_mutex_unlock(&g.lock);
        return rpc_ctx_error(ctx, PS_STATUS_ALREADY_EXISTS,
                             "id %s is already registered with another role", in->id);
    } else {
        if (strcmp(n->addr, in->addr) != 0 && n->in_ring)
            ring_change = true;
        if (in->weight && in->weight != n->weight && n->in_ring) {
            n->weight = in->weight;
            ring_change = true;
        }
        PS_INFO("%s %s registered again at %s%s",
                n->role == PS__NODE_ROLE__ROLE_SHARD ? "shard" : "replica", n->id, in->addr,
                n->role == PS__NODE_ROLE__ROLE_SHARD && !n->in_ring
                    ? " (removed from the ring: `psctl ring add` puts it back)"
                    : "");
    }
    snprintf(n->addr, sizeof n->addr, "%s", in->addr);
    n->alive = true;
    n->last_hb_ms = ps_now_ms();
    ps_status st = PS_STATUS_OK;
    if (ring_change)
        st = rebuild_ring();
    save_state();
    Ps__RegisterResponse resp = PS__REGISTER_RESPONSE__INIT;
    resp.epoch = g.epoch;
    resp.heartbeat_ms = (uint32_t)g.heartbeat_ms;
    pthread_mutex_unlock(&g.lock);
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(ctx, st, "cannot rebuild the ring: %s", ps_status_str(st));
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_heartbeat(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__HeartbeatRequest *req = (const Ps__HeartbeatRequest *)msg;
    pthread_mutex_lock(&g.lock);
    node *n = find_node(req->id);
    if (!n) {
        pthread_mutex_unlock(&g.lock);
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "unknown node %s: register first", req->id);
    }
    if (!n->alive)
        PS_INFO("node %s is alive again", n->id);
    n->alive = true;
    n->last_hb_ms = ps_now_ms();
    n->keys = req->keys;
    n->seq = req->seq;
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    resp.epoch = g.epoch;
    pthread_mutex_unlock(&g.lock);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status reply_ring_locked(rpc_ctx *ctx, bool stream) {
    Ps__NodeInfo infos[MAX_NODES];
    Ps__NodeInfo *ptrs[MAX_NODES];
    Ps__Ring ring;
    ring_fill(&ring, infos, ptrs);
    ps_status st;
    if (stream) {
        /* pack while locked (strings point into the state), send unlocked */
        size_t len = protobuf_c_message_get_packed_size(&ring.base);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf)
            protobuf_c_message_pack(&ring.base, buf);
        free(ring.ring.data);
        pthread_mutex_unlock(&g.lock);
        if (!buf)
            return PS_STATUS_NO_MEMORY;
        Ps__Ring *copy = ps__ring__unpack(NULL, len, buf);
        free(buf);
        if (!copy)
            return PS_STATUS_INTERNAL;
        st = rpc_ctx_write(ctx, &copy->base);
        ps__ring__free_unpacked(copy, NULL);
    } else {
        st = rpc_ctx_reply(ctx, &ring.base);
        free(ring.ring.data);
        pthread_mutex_unlock(&g.lock);
    }
    return st;
}

static ps_status h_get_ring(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    pthread_mutex_lock(&g.lock);
    return reply_ring_locked(ctx, false);
}

/* Waits (lock held) until `counter` exceeds `after`, the call dies, or we stop. */
static bool wait_change(rpc_ctx *ctx, const uint64_t *counter, uint64_t after) {
    while (*counter <= after && !g.stopping) {
        pthread_mutex_unlock(&g.lock);
        bool alive = rpc_ctx_alive(ctx);
        pthread_mutex_lock(&g.lock);
        if (!alive)
            return false;
        if (*counter > after)
            break;
        struct timespec ts = ps_abstime_after_ms(200);
        pthread_cond_timedwait(&g.changed, &g.lock, &ts);
    }
    return !g.stopping;
}

static ps_status h_watch_ring(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    uint64_t after = ((const Ps__WatchRingRequest *)msg)->after_epoch;
    for (;;) {
        pthread_mutex_lock(&g.lock);
        if (!wait_change(ctx, &g.epoch, after)) {
            pthread_mutex_unlock(&g.lock);
            return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE, "watch ended");
        }
        after = g.epoch;
        ps_status st = reply_ring_locked(ctx, true); /* unlocks */
        if (st != PS_STATUS_OK)
            return st;
    }
}

static ps_status h_add_node(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__NodeInfo *in = ((const Ps__AddNodeRequest *)msg)->node;
    if (!in || !valid_id(in->id))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "node id must be 1-%d characters of [A-Za-z0-9._-]", ID_MAX);
    if (!valid_addr(in->addr))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "address '%s' is not HOST:PORT",
                             in->addr);
    if (in->weight > 1000)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "weight %u is over 1000", in->weight);
    pthread_mutex_lock(&g.lock);
    node *n = find_node(in->id);
    if (n && (n->in_ring || n->role != PS__NODE_ROLE__ROLE_SHARD)) {
        pthread_mutex_unlock(&g.lock);
        return rpc_ctx_error(ctx, PS_STATUS_ALREADY_EXISTS, "node %s is already a member", in->id);
    }
    if (!n) {
        if (g.n_nodes == MAX_NODES) {
            pthread_mutex_unlock(&g.lock);
            return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "cluster is full");
        }
        n = &g.nodes[g.n_nodes++];
        memset(n, 0, sizeof *n);
        snprintf(n->id, sizeof n->id, "%s", in->id);
        n->role = PS__NODE_ROLE__ROLE_SHARD;
    }
    snprintf(n->addr, sizeof n->addr, "%s", in->addr);
    n->weight = in->weight ? in->weight : 1;
    n->in_ring = true;
    ps_status st = rebuild_ring();
    save_state();
    Ps__MembershipResponse resp = PS__MEMBERSHIP_RESPONSE__INIT;
    resp.epoch = g.epoch;
    PS_INFO("ring add %s at %s weight %u: epoch %llu", n->id, n->addr, n->weight,
            (unsigned long long)g.epoch);
    pthread_mutex_unlock(&g.lock);
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(ctx, st, "cannot rebuild the ring");
    return rpc_ctx_reply(ctx, &resp.base);
}

/* Asks a shard how many keys it holds (fresh, not the last heartbeat's figure). */
static ps_status shard_key_count(const char *addr, uint64_t *ret_keys) {
    rpc_channel *ch = NULL;
    ps_status st = rpc_channel_create(addr, NULL, &ch);
    if (st != PS_STATUS_OK)
        return st;
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts opts = {.timeout_ms = 2000};
    st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base, &ps__health_response__descriptor,
                  &opts, &resp, NULL);
    if (st == PS_STATUS_OK) {
        *ret_keys = ((Ps__HealthResponse *)resp)->keys;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_channel_destroy(ch);
    return st;
}

static ps_status h_remove_node(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const char *id = ((const Ps__RemoveNodeRequest *)msg)->id;
    pthread_mutex_lock(&g.lock);
    node *n = find_node(id);
    if (!n || (n->role == PS__NODE_ROLE__ROLE_SHARD && !n->in_ring)) {
        pthread_mutex_unlock(&g.lock);
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "no node %s%s", id, n ? " on the ring" : "");
    }
    char addr[HASHRING_ADDR_MAX + 1];
    snprintf(addr, sizeof addr, "%s", n->addr);
    bool shard = n->role == PS__NODE_ROLE__ROLE_SHARD && n->in_ring;
    bool alive = n->alive;
    uint64_t last_keys = n->keys;
    pthread_mutex_unlock(&g.lock);

    if (shard) {
        uint64_t keys = last_keys;
        ps_status hs = alive ? shard_key_count(addr, &keys) : PS_STATUS_UNAVAILABLE;
        if (hs != PS_STATUS_OK && alive)
            return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE,
                                 "cannot ask shard %s at %s how much data it holds (%s); not "
                                 "removing it",
                                 id, addr, ps_status_str(hs));
        if (keys > 0)
            return rpc_ctx_error(ctx, PS_STATUS_FAILED_PRECONDITION,
                                 "shard %s holds %llu keys; removing it would lose them (moving "
                                 "data off a shard is not supported yet)",
                                 id, (unsigned long long)keys);
    }
    pthread_mutex_lock(&g.lock);
    n = find_node(id);
    if (!n) {
        pthread_mutex_unlock(&g.lock);
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "no node %s", id);
    }
    bool was_in_ring = n->in_ring;
    if (n->role == PS__NODE_ROLE__ROLE_SHARD && n->alive && was_in_ring) {
        /* Still running: keep it known but off the ring, so its next registration or
         * heartbeat does not put it back; `ring add` (AddNode) does that. */
        n->in_ring = false;
    } else {
        size_t idx = (size_t)(n - g.nodes);
        memmove(&g.nodes[idx], &g.nodes[idx + 1], (g.n_nodes - idx - 1) * sizeof g.nodes[0]);
        g.n_nodes--;
    }
    ps_status st = PS_STATUS_OK;
    if (was_in_ring)
        st = rebuild_ring();
    save_state();
    Ps__MembershipResponse resp = PS__MEMBERSHIP_RESPONSE__INIT;
    resp.epoch = g.epoch;
    PS_INFO("removed node %s: epoch %llu", id, (unsigned long long)g.epoch);
    pthread_mutex_unlock(&g.lock);
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(ctx, st, "cannot rebuild the ring");
    return rpc_ctx_reply(ctx, &resp.base);
}

/* A model's config must parse, carry the model's name, and agree with the tensors'
 * shapes: otherwise no replica could load it, and it is better refused here. */
static ps_status check_graph(const Ps__ModelInfo *in, char *err, size_t err_len) {
    model_config *cfg = NULL;
    ps_status st = model_config_parse(in->config_json, strlen(in->config_json), &cfg, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    model_tensor_desc *given = calloc(in->n_tensors, sizeof *given);
    if (!given) {
        model_config_destroy(cfg);
        snprintf(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    if (strcmp(model_config_name(cfg), in->name) != 0) {
        snprintf(err, err_len, "its config names the model '%s'", model_config_name(cfg));
        st = PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; st == PS_STATUS_OK && i < in->n_tensors; i++) {
        const Ps__TensorInfo *t = in->tensors[i];
        given[i].name = t->name;
        given[i].datatype = t->dtype;
        given[i].ndims = (uint32_t)t->n_shape;
        memcpy(given[i].dims, t->shape, t->n_shape * sizeof(int64_t));
    }
    if (st == PS_STATUS_OK)
        st = model_config_resolve(cfg, given, in->n_tensors, NULL, NULL, err, err_len);
    free(given);
    model_config_destroy(cfg);
    return st;
}

static ps_status h_register_model(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__ModelInfo *in = ((const Ps__RegisterModelRequest *)msg)->model;
    if (!in || !valid_id(in->name))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "model name must be 1-%d characters of [A-Za-z0-9._-]", ID_MAX);
    if (in->n_tensors == 0)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "model %s has no tensors", in->name);
    if (!in->config_json || !*in->config_json)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "model %s has no config", in->name);
    for (size_t i = 0; i < in->n_tensors; i++) {
        const Ps__TensorInfo *t = in->tensors[i];
        uint64_t count = 1;
        if (t->n_shape == 0 || t->n_shape > MODEL_MAX_DIMS)
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "tensor %s has %zu dimensions (1 to %d allowed)", t->name,
                                 t->n_shape, MODEL_MAX_DIMS);
        for (size_t k = 0; k < t->n_shape; k++) {
            if (t->shape[k] <= 0 || __builtin_mul_overflow(count, (uint64_t)t->shape[k], &count) ||
                count > (1ull << 40))
                return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                     "tensor %s has a non-positive or oversized dimension",
                                     t->name);
        }
        if (strcmp(t->dtype, "FP32") != 0)
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "tensor %s: dtype %s is not supported (FP32 only)", t->name,
                                 t->dtype);
        if (t->chunk_floats == 0 || t->chunks != (count + t->chunk_floats - 1) / t->chunk_floats)
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "tensor %s: %u chunks of %u floats do not cover %llu floats",
                                 t->name, t->chunks, t->chunk_floats, (unsigned long long)count);
    }
    char err[512];
    if (check_graph(in, err, sizeof err) != PS_STATUS_OK)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "model %s: %s", in->name, err);
    /* keep a private copy */
    size_t len = protobuf_c_message_get_packed_size(&in->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return PS_STATUS_NO_MEMORY;
    protobuf_c_message_pack(&in->base, buf);
    Ps__ModelInfo *copy = ps__model_info__unpack(NULL, len, buf);
    free(buf);
    if (!copy)
        return PS_STATUS_NO_MEMORY;

    pthread_mutex_lock(&g.lock);
    uint64_t latest = 0;
    size_t same = SIZE_MAX;
    for (size_t i = 0; i < g.n_models; i++) {
        const Ps__ModelInfo *m = g.models[i].info;
        if (strcmp(m->name, copy->name) != 0)
            continue;
        if (m->version > latest)
            latest = m->version;
        if (m->version == copy->version)
            same = i;
    }
    if (copy->version == 0)
        copy->version = latest + 1;
    if (same != SIZE_MAX) { /* re-upload of a version: replace it */
        ps__model_info__free_unpacked(g.models[same].info, NULL);
        g.models[same].info = copy;
    } else {
        model_rec *grown = realloc(g.models, (g.n_models + 1) * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&g.lock);
            ps__model_info__free_unpacked(copy, NULL);
            return PS_STATUS_NO_MEMORY;
        }
        g.models = grown;
        g.models[g.n_models++].info = copy;
    }
    g.model_gen++;
    pthread_cond_broadcast(&g.changed);
    save_state();
    Ps__RegisterModelResponse resp = PS__REGISTER_MODEL_RESPONSE__INIT;
    resp.version = copy->version;
    PS_INFO("model %s version %llu registered (%zu tensors)", copy->name,
            (unsigned long long)copy->version, copy->n_tensors);
    pthread_mutex_unlock(&g.lock);
    return rpc_ctx_reply(ctx, &resp.base);
}

/* Collects model pointers (lock held): every version, or only the latest of each. */
static size_t collect_models(Ps__ModelInfo **out, bool latest_only) {
    size_t n = 0;
    for (size_t i = 0; i < g.n_models; i++) {
        Ps__ModelInfo *m = g.models[i].info;
        if (latest_only) {
            bool newer = false;
            for (size_t k = 0; k < g.n_models; k++)
                if (k != i && strcmp(g.models[k].info->name, m->name) == 0 &&
                    g.models[k].info->version > m->version)
                    newer = true;
            if (newer)
                continue;
        }
        out[n++] = m;
    }
    return n;
}

static ps_status h_list_models(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    pthread_mutex_lock(&g.lock);
    Ps__ModelInfo **list = malloc((g.n_models + 1) * sizeof *list);
    if (!list) {
        pthread_mutex_unlock(&g.lock);
        return PS_STATUS_NO_MEMORY;
    }
    Ps__ListModelsResponse resp = PS__LIST_MODELS_RESPONSE__INIT;
    resp.n_models = collect_models(list, false);
    resp.models = list;
    ps_status st = rpc_ctx_reply(ctx, &resp.base);
    pthread_mutex_unlock(&g.lock);
    free(list);
    return st;
}

static ps_status h_get_model(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__GetModelRequest *req = (const Ps__GetModelRequest *)msg;
    pthread_mutex_lock(&g.lock);
    Ps__ModelInfo *best = NULL;
    for (size_t i = 0; i < g.n_models; i++) {
        Ps__ModelInfo *m = g.models[i].info;
        if (strcmp(m->name, req->name) != 0)
            continue;
        if (req->version ? m->version == req->version : (!best || m->version > best->version))
            best = m;
    }
    ps_status st;
    if (!best)
        st = req->version ? rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "no model %s version %llu",
                                          req->name, (unsigned long long)req->version)
                          : rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "no model %s", req->name);
    else
        st = rpc_ctx_reply(ctx, &best->base);
    pthread_mutex_unlock(&g.lock);
    return st;
}

static ps_status h_watch_models(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    uint64_t after = ((const Ps__WatchModelsRequest *)msg)->after_generation;
    for (;;) {
        pthread_mutex_lock(&g.lock);
        if (!wait_change(ctx, &g.model_gen, after)) {
            pthread_mutex_unlock(&g.lock);
            return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE, "watch ended");
        }
        after = g.model_gen;
        Ps__ModelInfo **list = malloc((g.n_models + 1) * sizeof *list);
        Ps__ModelsUpdate up = PS__MODELS_UPDATE__INIT;
        up.generation = g.model_gen;
        up.n_models = list ? collect_models(list, true) : 0;
        up.models = list;
        size_t len = protobuf_c_message_get_packed_size(&up.base);
        uint8_t *buf = list ? malloc(len ? len : 1) : NULL;
        if (buf)
            protobuf_c_message_pack(&up.base, buf);
        pthread_mutex_unlock(&g.lock);
        free(list);
        if (!buf)
            return PS_STATUS_NO_MEMORY;
        Ps__ModelsUpdate *copy = ps__models_update__unpack(NULL, len, buf);
        free(buf);
        if (!copy)
            return PS_STATUS_INTERNAL;
        ps_status st = rpc_ctx_write(ctx, &copy->base);
        ps__models_update__free_unpacked(copy, NULL);
        if (st != PS_STATUS_OK)
            return st;
    }
}

static ps_status h_status(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    pthread_mutex_lock(&g.lock);
    Ps__NodeInfo infos[MAX_NODES];
    Ps__NodeInfo *ptrs[MAX_NODES];
    Ps__Ring ring;
    ring_fill(&ring, infos, ptrs);
    Ps__ModelInfo **list = malloc((g.n_models + 1) * sizeof *list);
    Ps__StatusResponse resp = PS__STATUS_RESPONSE__INIT;
    resp.ring = &ring;
    resp.n_models = list ? collect_models(list, false) : 0;
    resp.models = list;
    ps_status st = list ? rpc_ctx_reply(ctx, &resp.base) : PS_STATUS_NO_MEMORY;
    pthread_mutex_unlock(&g.lock);
    free(list);
    free(ring.ring.data);
    return st;
}

/* ------------------------------------------------------------------ liveness --- */

static void *liveness_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g.lock);
    while (!g.stopping) {
        int64_t now = ps_now_ms();
        for (size_t i = 0; i < g.n_nodes; i++) {
            node *n = &g.nodes[i];
            if (n->alive && now - n->last_hb_ms > 3 * (int64_t)g.heartbeat_ms) {
                n->alive = false;
                PS_WARN("node %s (%s) missed 3 heartbeats: marked dead", n->id, n->addr);
            }
        }
        /* look again after half an interval */
        struct timespec ts = ps_abstime_after_ms(g.heartbeat_ms / 2);
        pthread_cond_timedwait(&g.changed, &g.lock, &ts);
    }
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

/* ------------------------------------------------------------------ main --- */

static void usage(FILE *out) {
    fprintf(out,
            "usage: ps-coordinator [options]\n"
            "The control plane: membership, heartbeats, the ring and its epochs, the model\n"
            "registry. State survives restarts in STATE_DIR/coordinator.json.\n\n"
            "  --listen HOST:PORT     address to serve on (default 127.0.0.1:7000; port 0 = any)\n"
            "  --state-dir DIR        where state is kept (default run/coordinator)\n"
            "  --heartbeat-ms N       expected heartbeat interval; 3 missed = dead (default 1000)\n"
            "  --vnodes N             virtual nodes per unit of shard weight (default %d)\n"
            "  --threads N            rpc worker threads (default: number of CPUs)\n"
            "  --port-file FILE       write the bound port there once serving\n"
            "  -h, --help             this text\n",
            HASHRING_DEFAULT_VNODES);
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:7000", *state_dir = "run/coordinator", *port_file = NULL;
    int threads = 0, hb = 1000, vnodes = HASHRING_DEFAULT_VNODES;
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 's'},
        {"heartbeat-ms", required_argument, NULL, 'b'},
        {"vnodes", required_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 't'},
        {"port-file", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 's':
            state_dir = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'b':
            if (!ps_flag_int("ps-coordinator", "heartbeat-ms", optarg, 10, 600000, &hb))
                return 2;
            break;
        case 'v':
            if (!ps_flag_int("ps-coordinator", "vnodes", optarg, 1, 100000, &vnodes))
                return 2;
            break;
        case 't':
            if (!ps_flag_int("ps-coordinator", "threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ps-coordinator: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    ps_log_init("ps-coordinator", NULL);
    rpc_signals_block();
    rpc_process_init();

    if (ps_mkdir_p(state_dir) != PS_STATUS_OK) {
        PS_ERROR("cannot create state directory %s: %s", state_dir, strerror(errno));
        return 1;
    }
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.changed, NULL);
    g.heartbeat_ms = hb;
    g.vnodes = (uint32_t)vnodes;
    snprintf(g.state_path, sizeof g.state_path, "%s/coordinator.json", state_dir);
    ps_status st = load_state();
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot load state from %s: %s", g.state_path, ps_status_str(st));
        return 1;
    }

    const rpc_method methods[] = {
        {"/ps.Coordinator/RegisterNode", RPC_METHOD_UNARY, &ps__register_request__descriptor,
         h_register, NULL, 0},
        {"/ps.Coordinator/Heartbeat", RPC_METHOD_UNARY, &ps__heartbeat_request__descriptor,
         h_heartbeat, NULL, 0},
        {"/ps.Coordinator/GetRing", RPC_METHOD_UNARY, &ps__get_ring_request__descriptor, h_get_ring,
         NULL, 0},
        {"/ps.Coordinator/WatchRing", RPC_METHOD_SERVER_STREAM, &ps__watch_ring_request__descriptor,
         h_watch_ring, NULL, 0},
        {"/ps.Coordinator/AddNode", RPC_METHOD_UNARY, &ps__add_node_request__descriptor, h_add_node,
         NULL, 0},
        {"/ps.Coordinator/RemoveNode", RPC_METHOD_UNARY, &ps__remove_node_request__descriptor,
         h_remove_node, NULL, 0},
        {"/ps.Coordinator/RegisterModel", RPC_METHOD_UNARY, &ps__register_model_request__descriptor,
         h_register_model, NULL, 0},
        {"/ps.Coordinator/ListModels", RPC_METHOD_UNARY, &ps__list_models_request__descriptor,
         h_list_models, NULL, 0},
        {"/ps.Coordinator/GetModel", RPC_METHOD_UNARY, &ps__get_model_request__descriptor,
         h_get_model, NULL, 0},
        {"/ps.Coordinator/WatchModels", RPC_METHOD_SERVER_STREAM,
         &ps__watch_models_request__descriptor, h_watch_models, NULL, 0},
        {"/ps.Coordinator/Status", RPC_METHOD_UNARY, &ps__status_request__descriptor, h_status,
         NULL, 0},
    };
    rpc_server_opts opts = {.listen = listen, .threads = threads, .grace_ms = 2000};
    rpc_server *server = NULL;
    int port = 0;
    st = rpc_server_serve(&opts, methods, sizeof methods / sizeof methods[0], &server, &port);
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot serve on %s: %s", listen, ps_status_str(st));
        return 1;
    }
    pthread_t live;
    pthread_create(&live, NULL, liveness_thread, NULL);
    PS_INFO("serving on port %d; state %s; heartbeat %d ms; epoch %llu; %zu nodes; %zu model "
            "versions",
            port, g.state_path, hb, (unsigned long long)g.epoch, g.n_nodes, g.n_models);
    if (port_file && ps_write_port_file(port_file, port) != PS_STATUS_OK)
        PS_ERROR("cannot write port file %s", port_file);
    int sig = rpc_signals_wait();
    PS_INFO("signal %d: shutting down", sig);
    pthread_mutex_lock(&g.lock);
    g.stopping = true;
    pthread_cond_broadcast(&g.changed);
    pthread_mutex_unlock(&g.lock);
    rpc_server_destroy(server);
    pthread_join(live, NULL);
    for (size_t i = 0; i < g.n_models; i++)
        ps__model_info__free_unpacked(g.models[i].info, NULL);
    free(g.models);
    hashring_destroy(g.ring);
    PS_INFO("stopped");
    return 0;
}
