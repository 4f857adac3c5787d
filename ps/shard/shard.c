/* shard.c: ps-shard, a parameter-server shard.
 *
 * Holds the dense chunks (and later sparse rows) whose keys the ring places on it,
 * answers Pull and Push, and streams every applied update to subscribers (serving
 * replicas) in sequence-number order.
 *
 * Placement is checked on every request: a key this shard does not own under the
 * newest ring it knows gets ABORTED ("refresh your ring"), never stale data. A request
 * routed with a newer epoch than the shard knows makes the shard fetch the ring first.
 *
 * State: a hash table of chunks under a reader-writer lock (pulls share it, pushes
 * take it exclusively and validate everything before changing anything), and a
 * bounded log of recent updates whose entries are reference-counted so a stream can
 * send one without copying it. A subscriber that asks for updates older than the log
 * holds is told to resync (pull again).
 *
 * Not yet: durability (WAL, snapshots) and replication to the next owners; both come
 * with later issues.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "coordinator.pb-c.h"
#include "hashring.h"
#include "log.h"
#include "ps.pb-c.h"
#include "psclient.h"
#include "rpc.h"
#include "util.h"

/* ------------------------------------------------------------------ chunk store --- */

typedef struct chunk {
    uint64_t key;
    uint64_t version; /* 1 after the first ASSIGN, +1 per push */
    uint32_t len;     /* floats */
    char *name;       /* "model/tensor#chunk" when the pusher said, else NULL */
    float *data;
} chunk;

typedef struct store {
    pthread_rwlock_t lock;
    chunk **slots; /* open addressing, linear probing; NULL = empty */
    size_t cap;    /* power of two */
    size_t count;
    uint64_t bytes;
    uint64_t seq; /* last applied update */
} store;

static size_t slot_of(const store *s, uint64_t key) {
    return (size_t)(key * 0x9E3779B97F4A7C15ull >> 7) & (s->cap - 1);
}

static chunk *store_get(const store *s, uint64_t key) {
    for (size_t i = slot_of(s, key);; i = (i + 1) & (s->cap - 1)) {
        chunk *c = s->slots[i];
        if (!c)
            return NULL;
        if (c->key == key)
            return c;
    }
}

static ps_status store_grow(store *s) {
    size_t cap = s->cap * 2;
    chunk **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return PS_STATUS_NO_MEMORY;
    chunk **old = s->slots;
    size_t old_cap = s->cap;
    s->slots = slots;
    s->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i])
            continue;
        size_t j = slot_of(s, old[i]->key);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = old[i];
    }
    free(old);
    return PS_STATUS_OK;
}

static ps_status store_insert(store *s, chunk *c) {
    if ((s->count + 1) * 2 > s->cap) {
        ps_status st = store_grow(s);
        if (st != PS_STATUS_OK)
            return st;
    }
    size_t i = slot_of(s, c->key);
    while (s->slots[i])
        i = (i + 1) & (s->cap - 1);
    s->slots[i] = c;
    s->count++;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ update log --- */

typedef struct log_entry {
    atomic_int refs; /* the log holds one; each stream sending it one more */
    uint64_t seq, key, version;
    Ps__PushOp op;
    uint32_t len;
    float values[]; /* what the push carried (new values, or the delta for ADD) */
} log_entry;

static void entry_unref(void *arg) {
    log_entry *e = arg;
    if (atomic_fetch_sub(&e->refs, 1) == 1)
        free(e);
}

typedef struct update_log {
    pthread_mutex_t lock;
    pthread_cond_t grew;
    log_entry **ring; /* circular: entries with seq first_seq .. last_seq */
    size_t cap, head, count;
    uint64_t bytes, max_bytes;
    uint64_t last_seq; /* == store.seq */
    bool stopping;
} update_log;

/* Appends (takes the caller's reference). Lock not held by caller. */
static void log_append(update_log *l, log_entry *e) {
    pthread_mutex_lock(&l->lock);
    while (l->count > 0 && (l->count == l->cap || l->bytes + e->len * 4ull > l->max_bytes)) {
        log_entry *old = l->ring[l->head];
        l->bytes -= old->len * 4ull;
        l->head = (l->head + 1) % l->cap;
        l->count--;
        entry_unref(old);
    }
    l->ring[(l->head + l->count) % l->cap] = e;
    l->count++;
    l->bytes += e->len * 4ull;
    l->last_seq = e->seq;
    pthread_cond_broadcast(&l->grew);
    pthread_mutex_unlock(&l->lock);
}

/* ------------------------------------------------------------------ shard state --- */

typedef struct shard {
    char id[64];
    char addr[256];
    char coordinator[256];
    uint32_t weight;

    store st;
    update_log log;

    pthread_mutex_t ring_lock;
    hashring *ring; /* newest ring known; NULL before the first */
    uint32_t self;  /* this shard's index in ring, UINT32_MAX if not a member */
    rpc_channel *coord;

    atomic_bool stopping;
    int heartbeat_ms;
    pthread_mutex_t watch_lock;
    rpc_stream *watch; /* the live WatchRing stream, cancelled at shutdown */
} shard;

static shard g;

/* Installs a ring from a coordinator message if it is newer. */
static void ring_install(const Ps__Ring *msg) {
    hashring *r = NULL;
    if (hashring_parse(msg->ring.data, msg->ring.len, &r) != PS_STATUS_OK) {
        PS_ERROR("coordinator sent a ring that does not parse (epoch %llu)",
                 (unsigned long long)msg->epoch);
        return;
    }
    pthread_mutex_lock(&g.ring_lock);
    if (!g.ring || hashring_epoch(r) > hashring_epoch(g.ring)) {
        uint32_t self = UINT32_MAX;
        if (!hashring_find(r, g.id, &self))
            self = UINT32_MAX;
        hashring_destroy(g.ring);
        g.ring = r;
        g.self = self;
        r = NULL;
        PS_INFO("ring epoch %llu: %u shards; %s", (unsigned long long)hashring_epoch(g.ring),
                hashring_node_count(g.ring), self == UINT32_MAX ? "not a member" : "member");
    }
    pthread_mutex_unlock(&g.ring_lock);
    hashring_destroy(r);
}

static ps_status ring_fetch(void) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts opts = {.timeout_ms = 3000};
    ps_status st = rpc_call(g.coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &resp, NULL);
    if (st == PS_STATUS_OK) {
        ring_install((Ps__Ring *)resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

/* Checks that every key is ours; refreshes the ring first when the request was
 * routed with a newer epoch than ours. */
static ps_status check_owner(rpc_ctx *ctx, uint64_t epoch, size_t n, const uint64_t *keys) {
    pthread_mutex_lock(&g.ring_lock);
    uint64_t mine = g.ring ? hashring_epoch(g.ring) : 0;
    pthread_mutex_unlock(&g.ring_lock);
    if (epoch > mine)
        ring_fetch();
    pthread_mutex_lock(&g.ring_lock);
    ps_status st = PS_STATUS_OK;
    if (!g.ring || g.self == UINT32_MAX) {
        st = rpc_ctx_error(ctx, PS_STATUS_WRONG_EPOCH,
                           "shard %s is not on the ring (epoch %llu): refresh the ring", g.id,
                           (unsigned long long)(g.ring ? hashring_epoch(g.ring) : 0));
    } else {
        for (size_t i = 0; i < n; i++) {
            if (hashring_primary(g.ring, keys[i]) != g.self) {
                st = rpc_ctx_error(ctx, PS_STATUS_WRONG_EPOCH,
                                   "key %016llx is not owned by shard %s at ring epoch %llu "
                                   "(request epoch %llu): refresh the ring",
                                   (unsigned long long)keys[i], g.id,
                                   (unsigned long long)hashring_epoch(g.ring),
                                   (unsigned long long)epoch);
                break;
            }
        }
    }
    pthread_mutex_unlock(&g.ring_lock);
    return st;
}

/* ------------------------------------------------------------------ handlers --- */

static ps_status h_pull(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__PullRequest *req = (const Ps__PullRequest *)msg;
    ps_status st = check_owner(ctx, req->epoch, req->n_keys, req->keys);
    if (st != PS_STATUS_OK)
        return st;
    uint64_t *versions = calloc(req->n_keys + 1, sizeof *versions);
    uint32_t *lengths = calloc(req->n_keys + 1, sizeof *lengths);
    float *values = NULL;
    if (!versions || !lengths) {
        st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    pthread_rwlock_rdlock(&g.st.lock);
    size_t total = 0;
    for (size_t i = 0; i < req->n_keys; i++) {
        chunk *c = store_get(&g.st, req->keys[i]);
        if (!c) {
            pthread_rwlock_unlock(&g.st.lock);
            st = rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "key %016llx is not on shard %s",
                               (unsigned long long)req->keys[i], g.id);
            goto out;
        }
        total += c->len;
    }
    if (total * 4 > RPC_DEFAULT_MAX_MESSAGE_BYTES - 1024 * 1024) {
        pthread_rwlock_unlock(&g.st.lock);
        st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED,
                           "pull of %zu bytes is over the message limit: pull fewer keys at once",
                           total * 4);
        goto out;
    }
    values = malloc(total * 4 + 1);
    if (!values) {
        pthread_rwlock_unlock(&g.st.lock);
        st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t off = 0;
    for (size_t i = 0; i < req->n_keys; i++) {
        chunk *c = store_get(&g.st, req->keys[i]);
        memcpy(values + off, c->data, c->len * 4ull);
        off += c->len;
        versions[i] = c->version;
        lengths[i] = c->len;
    }
    Ps__PullResponse resp = PS__PULL_RESPONSE__INIT;
    resp.seq = g.st.seq;
    pthread_rwlock_unlock(&g.st.lock);
    resp.n_versions = req->n_keys;
    resp.versions = versions;
    resp.n_lengths = req->n_keys;
    resp.lengths = lengths;
    rpc_bytes_field vf = {
        .field_number = 15, .data = values, .len = total * 4, .release = free, .arg = values};
    values = NULL; /* the reply owns it now */
    st = rpc_ctx_reply_with_bytes(ctx, &resp.base, &vf, 1);
out:
    free(values);
    free(versions);
    free(lengths);
    return st;
}

/* Index of the first NaN or infinity among n little-endian floats at p (any
 * alignment), or n. Blocks are scanned without early exit so the loop vectorizes:
 * this check runs over every pushed value. */
static uint64_t first_non_finite(const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i += 1024) {
        uint64_t m = n - i < 1024 ? n - i : 1024;
        uint32_t any = 0;
        for (uint64_t k = 0; k < m; k++) {
            uint32_t bits;
            memcpy(&bits, p + (i + k) * 4, 4);
            any |= (bits & 0x7f800000u) == 0x7f800000u; /* all-ones exponent */
        }
        if (any) {
            for (uint64_t k = 0; k < m; k++) {
                uint32_t bits;
                memcpy(&bits, p + (i + k) * 4, 4);
                if ((bits & 0x7f800000u) == 0x7f800000u)
                    return i + k;
            }
        }
    }
    return n;
}

static ps_status h_push(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Ps__PushRequest *req = (const Ps__PushRequest *)msg;
    if (req->op != PS__PUSH_OP__PUSH_ASSIGN && req->op != PS__PUSH_OP__PUSH_ADD)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "unknown push op %d", req->op);
    if (req->n_lengths != req->n_keys)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "push has %zu keys but %zu lengths",
                             req->n_keys, req->n_lengths);
    if (req->n_names != 0 && req->n_names != req->n_keys)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "push has %zu keys but %zu names",
                             req->n_keys, req->n_names);
    uint64_t total = 0;
    for (size_t i = 0; i < req->n_keys; i++) {
        if (req->lengths[i] == 0)
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "key %016llx has length 0",
                                 (unsigned long long)req->keys[i]);
        total += req->lengths[i];
    }
    /* the values arrive as a view into the payload, not unpacked (see main) */
    const rpc_bytes_view *vv = NULL;
    size_t n_values = rpc_ctx_raw(ctx, &vv);
    if (n_values > 1)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "push carries its values field %zu times: send it once", n_values);
    const uint8_t *values = n_values ? vv[0].data : NULL;
    size_t values_len = n_values ? vv[0].len : 0;
    if (total * 4 != values_len)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "push carries %zu value bytes but its lengths add up to %llu floats "
                             "(%llu bytes)",
                             values_len, (unsigned long long)total,
                             (unsigned long long)(total * 4));
    /* values may be unaligned inside the message: copy per key below with memcpy */
    uint64_t bad = first_non_finite(values, total);
    if (bad < total) {
        float v;
        memcpy(&v, values + bad * 4, 4);
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "push value %llu is %s: only finite values are accepted",
                             (unsigned long long)bad, isnan(v) ? "NaN" : "infinite");
    }
    ps_status st = check_owner(ctx, req->epoch, req->n_keys, req->keys);
    if (st != PS_STATUS_OK)
        return st;

    uint64_t *versions = calloc(req->n_keys + 1, sizeof *versions);
    log_entry **entries = calloc(req->n_keys + 1, sizeof *entries);
    if (!versions || !entries) {
        free(versions);
        free(entries);
        return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    pthread_rwlock_wrlock(&g.st.lock);
    /* validate all, change nothing yet */
    for (size_t i = 0; i < req->n_keys; i++) {
        chunk *c = store_get(&g.st, req->keys[i]);
        if (req->op == PS__PUSH_OP__PUSH_ADD) {
            if (!c) {
                st = rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND,
                                   "ADD to key %016llx, which is not on shard %s (ASSIGN it first)",
                                   (unsigned long long)req->keys[i], g.id);
                goto unlock;
            }
            if (c->len != req->lengths[i]) {
                st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                   "ADD of %u floats to key %016llx%s%s, which holds %u floats",
                                   req->lengths[i], (unsigned long long)req->keys[i],
                                   c->name ? " " : "", c->name ? c->name : "", c->len);
                goto unlock;
            }
        }
        entries[i] = malloc(sizeof(log_entry) + req->lengths[i] * 4ull);
        if (!entries[i]) {
            st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto unlock;
        }
    }
    /* apply */
    size_t off = 0;
    for (size_t i = 0; i < req->n_keys; i++) {
        uint32_t len = req->lengths[i];
        const uint8_t *src = values + off * 4;
        chunk *c = store_get(&g.st, req->keys[i]);
        if (req->op == PS__PUSH_OP__PUSH_ASSIGN && c && c->len != len) {
            float *grown = realloc(c->data, len * 4ull);
            if (!grown) { /* keep the old chunk untouched; later keys still apply */
                st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                goto unlock;
            }
            g.st.bytes += (uint64_t)len * 4 - (uint64_t)c->len * 4;
            c->data = grown;
            c->len = len;
        }
        if (!c) {
            c = calloc(1, sizeof *c);
            float *data = malloc(len * 4ull);
            if (c) {
                c->key = req->keys[i];
                c->len = len;
                c->data = data;
            }
            if (!c || !data || store_insert(&g.st, c) != PS_STATUS_OK) {
                free(c);
                free(data);
                st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                goto unlock;
            }
            g.st.bytes += len * 4ull;
        }
        if (req->n_names && req->names[i][0] && (!c->name || strcmp(c->name, req->names[i]))) {
            free(c->name);
            c->name = strdup(req->names[i]);
        }
        log_entry *e = entries[i];
        memcpy(e->values, src, len * 4ull);
        if (req->op == PS__PUSH_OP__PUSH_ASSIGN) {
            memcpy(c->data, e->values, len * 4ull);
        } else {
            for (uint32_t k = 0; k < len; k++)
                c->data[k] += e->values[k];
        }
        c->version++;
        versions[i] = c->version;
        atomic_init(&e->refs, 1);
        e->seq = ++g.st.seq;
        e->key = c->key;
        e->version = c->version;
        e->op = req->op;
        e->len = len;
        log_append(&g.log, e);
        entries[i] = NULL;
        off += len;
    }
    Ps__PushResponse resp = PS__PUSH_RESPONSE__INIT;
    resp.n_versions = req->n_keys;
    resp.versions = versions;
    resp.seq = g.st.seq;
    st = rpc_ctx_reply(ctx, &resp.base);
unlock:
    pthread_rwlock_unlock(&g.st.lock);
    for (size_t i = 0; i < req->n_keys; i++)
        free(entries[i]);
    free(entries);
    free(versions);
    return st;
}

static ps_status h_subscribe(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    uint64_t next = ((const Ps__SubscribeRequest *)msg)->from_seq + 1; /* first seq to send */
    update_log *l = &g.log;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        while (next > l->last_seq && !l->stopping) {
            pthread_mutex_unlock(&l->lock);
            if (!rpc_ctx_alive(ctx))
                return PS_STATUS_CANCELLED;
            pthread_mutex_lock(&l->lock);
            if (next <= l->last_seq)
                break;
            struct timespec ts = ps_abstime_after_ms(100);
            pthread_cond_timedwait(&l->grew, &l->lock, &ts);
        }
        if (l->stopping) {
            pthread_mutex_unlock(&l->lock);
            return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE, "shard %s is shutting down", g.id);
        }
        uint64_t first = l->count ? l->ring[l->head]->seq : l->last_seq + 1;
        Ps__Update up = PS__UPDATE__INIT;
        if (next < first) {
            /* the log no longer holds what the subscriber needs */
            up.resync = true;
            up.seq = l->last_seq;
            next = l->last_seq + 1;
            pthread_mutex_unlock(&l->lock);
            if (rpc_ctx_write(ctx, &up.base) != PS_STATUS_OK)
                return PS_STATUS_CANCELLED;
            continue;
        }
        log_entry *e = l->ring[(l->head + (next - first)) % l->cap];
        atomic_fetch_add(&e->refs, 1);
        pthread_mutex_unlock(&l->lock);
        up.seq = e->seq;
        up.key = e->key;
        up.version = e->version;
        up.op = e->op;
        rpc_bytes_field vf = {.field_number = 15,
                              .data = e->values,
                              .len = e->len * 4ull,
                              .release = entry_unref,
                              .arg = e};
        if (rpc_ctx_write_with_bytes(ctx, &up.base, &vf, 1) != PS_STATUS_OK)
            return PS_STATUS_CANCELLED;
        next = e->seq + 1;
    }
}

static ps_status h_health(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Ps__HealthResponse resp = PS__HEALTH_RESPONSE__INIT;
    resp.id = g.id;
    pthread_mutex_lock(&g.ring_lock);
    resp.epoch = g.ring ? hashring_epoch(g.ring) : 0;
    pthread_mutex_unlock(&g.ring_lock);
    pthread_rwlock_rdlock(&g.st.lock);
    resp.keys = g.st.count;
    resp.bytes = g.st.bytes;
    resp.seq = g.st.seq;
    pthread_rwlock_unlock(&g.st.lock);
    return rpc_ctx_reply(ctx, &resp.base);
}

/* ------------------------------------------------------------------ coordinator --- */

static ps_status do_register(void) {
    rpc_result res;
    ps_status st = ps_register_node(g.coord, g.id, g.addr, g.weight, PS__NODE_ROLE__ROLE_SHARD,
                                    &g.heartbeat_ms, &res);
    if (st != PS_STATUS_OK) {
        PS_WARN("register with coordinator %s failed: %s %s", g.coordinator,
                rpc_code_name(res.grpc_code), res.details);
        return st;
    }
    return ring_fetch();
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *heartbeat_thread(void *arg) {
    (void)arg;
    bool registered = true;
    while (!atomic_load(&g.stopping)) {
        sleep_ms(g.heartbeat_ms);
        if (atomic_load(&g.stopping))
            break;
        if (!registered) {
            registered = do_register() == PS_STATUS_OK;
            continue;
        }
        Ps__HeartbeatRequest req = PS__HEARTBEAT_REQUEST__INIT;
        req.id = g.id;
        pthread_rwlock_rdlock(&g.st.lock);
        req.keys = g.st.count;
        req.seq = g.st.seq;
        pthread_rwlock_unlock(&g.st.lock);
        ProtobufCMessage *resp = NULL;
        rpc_call_opts opts = {.timeout_ms = g.heartbeat_ms};
        ps_status st = rpc_call(g.coord, "/ps.Coordinator/Heartbeat", &req.base,
                                &ps__heartbeat_response__descriptor, &opts, &resp, NULL);
        if (st == PS_STATUS_NOT_FOUND) {
            registered = false; /* the coordinator forgot us: register again */
        } else if (st == PS_STATUS_OK) {
            uint64_t epoch = ((Ps__HeartbeatResponse *)resp)->epoch;
            pthread_mutex_lock(&g.ring_lock);
            bool stale = !g.ring || hashring_epoch(g.ring) < epoch;
            pthread_mutex_unlock(&g.ring_lock);
            if (stale) /* the watch missed it (e.g. reconnecting): fetch now */
                ring_fetch();
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    return NULL;
}

static void *ring_watch_thread(void *arg) {
    (void)arg;
    while (!atomic_load(&g.stopping)) {
        Ps__WatchRingRequest req = PS__WATCH_RING_REQUEST__INIT;
        pthread_mutex_lock(&g.ring_lock);
        req.after_epoch = g.ring ? hashring_epoch(g.ring) : 0;
        pthread_mutex_unlock(&g.ring_lock);
        rpc_stream *s = NULL;
        rpc_call_opts opts = {.wait_for_ready = true};
        if (rpc_stream_open(g.coord, "/ps.Coordinator/WatchRing", &req.base, &ps__ring__descriptor,
                            &opts, &s) == PS_STATUS_OK) {
            pthread_mutex_lock(&g.watch_lock);
            g.watch = s;
            if (atomic_load(&g.stopping))
                rpc_stream_cancel(s);
            pthread_mutex_unlock(&g.watch_lock);
            ProtobufCMessage *m = NULL;
            while (!atomic_load(&g.stopping) && rpc_stream_next(s, &m) == PS_STATUS_OK && m) {
                ring_install((Ps__Ring *)m);
                protobuf_c_message_free_unpacked(m, NULL);
            }
            pthread_mutex_lock(&g.watch_lock);
            g.watch = NULL;
            pthread_mutex_unlock(&g.watch_lock);
            rpc_stream_destroy(s);
        }
        if (!atomic_load(&g.stopping))
            sleep_ms(200);
    }
    return NULL;
}

/* ------------------------------------------------------------------ main --- */

static void usage(FILE *out) {
    fprintf(out,
            "usage: ps-shard --id ID [options]\n"
            "A parameter-server shard: holds the chunks the ring places on it, answers\n"
            "Pull/Push, streams applied updates to subscribers.\n\n"
            "  --id ID                 this shard's unique name (required)\n"
            "  --listen HOST:PORT      address to serve on (default 127.0.0.1:0, a free port)\n"
            "  --coordinator HOST:PORT the coordinator (default: $PS_COORDINATOR, then\n"
            "                          COORDINATOR= in run/cluster.env)\n"
            "  --weight N              relative capacity on the ring (default 1)\n"
            "  --log-mb N              memory kept for the update log (default 64)\n"
            "  --threads N             rpc worker threads (default: number of CPUs)\n"
            "  --port-file FILE        write the bound port there once serving\n"
            "  -h, --help              this text\n");
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:0", *coord_flag = NULL, *port_file = NULL, *id = NULL;
    int threads = 0, weight = 1, log_mb = 64;
    static const struct option longopts[] = {
        {"id", required_argument, NULL, 'i'},
        {"listen", required_argument, NULL, 'l'},
        {"coordinator", required_argument, NULL, 'c'},
        {"weight", required_argument, NULL, 'w'},
        {"log-mb", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 't'},
        {"port-file", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            id = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'c':
            coord_flag = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'w':
            if (!ps_flag_int("ps-shard", "weight", optarg, 1, 1000, &weight))
                return 2;
            break;
        case 'm':
            if (!ps_flag_int("ps-shard", "log-mb", optarg, 1, 1 << 20, &log_mb))
                return 2;
            break;
        case 't':
            if (!ps_flag_int("ps-shard", "threads", optarg, 1, 1024, &threads))
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
    if (!id || !*id || strlen(id) >= sizeof g.id) {
        fprintf(stderr, "ps-shard: --id is required (at most %zu characters)\n", sizeof g.id - 1);
        usage(stderr);
        return 2;
    }
    if (!ps_flag_coordinator("ps-shard", coord_flag, g.coordinator, sizeof g.coordinator))
        return 2;
    snprintf(g.id, sizeof g.id, "%s", id);
    g.weight = (uint32_t)weight;
    ps_log_init("ps-shard", g.id);
    rpc_signals_block();
    rpc_process_init();
    rpc_tune_allocator();

    pthread_rwlock_init(&g.st.lock, NULL);
    g.st.cap = 1024;
    g.st.slots = calloc(g.st.cap, sizeof *g.st.slots);
    pthread_mutex_init(&g.log.lock, NULL);
    pthread_cond_init(&g.log.grew, NULL);
    g.log.cap = 1 << 16;
    g.log.ring = calloc(g.log.cap, sizeof *g.log.ring);
    g.log.max_bytes = (uint64_t)log_mb << 20;
    pthread_mutex_init(&g.ring_lock, NULL);
    pthread_mutex_init(&g.watch_lock, NULL);
    g.self = UINT32_MAX;
    if (!g.st.slots || !g.log.ring) {
        PS_ERROR("out of memory");
        return 1;
    }

    const rpc_method methods[] = {
        {"/ps.ParameterServer/Pull", RPC_METHOD_UNARY, &ps__pull_request__descriptor, h_pull, NULL,
         0},
        {"/ps.ParameterServer/Push", RPC_METHOD_UNARY, &ps__push_request__descriptor, h_push, NULL,
         15},
        {"/ps.ParameterServer/Subscribe", RPC_METHOD_SERVER_STREAM,
         &ps__subscribe_request__descriptor, h_subscribe, NULL, 0},
        {"/ps.ParameterServer/Health", RPC_METHOD_UNARY, &ps__health_request__descriptor, h_health,
         NULL, 0},
    };
    rpc_server_opts opts = {.listen = listen, .threads = threads, .grace_ms = 2000};
    rpc_server *server = NULL;
    int port = 0;
    ps_status st =
        rpc_server_serve(&opts, methods, sizeof methods / sizeof methods[0], &server, &port);
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot serve on %s: %s", listen, ps_status_str(st));
        return 1;
    }
    ps_advertise_addr(listen, port, g.addr, sizeof g.addr);

    if (rpc_channel_create(g.coordinator, NULL, &g.coord) != PS_STATUS_OK) {
        PS_ERROR("bad coordinator address %s", g.coordinator);
        rpc_server_destroy(server);
        return 1;
    }
    g.heartbeat_ms = 1000;
    for (int tries = 0; do_register() != PS_STATUS_OK; tries++) {
        if (tries == 30) {
            PS_ERROR("cannot register with the coordinator at %s; giving up", g.coordinator);
            rpc_server_destroy(server);
            rpc_channel_destroy(g.coord);
            return 1;
        }
        sleep_ms(500);
    }
    pthread_t hb, watch;
    pthread_create(&hb, NULL, heartbeat_thread, NULL);
    pthread_create(&watch, NULL, ring_watch_thread, NULL);
    PS_INFO("serving on %s; coordinator %s; weight %u; update log %d MiB", g.addr, g.coordinator,
            g.weight, log_mb);
    if (port_file && ps_write_port_file(port_file, port) != PS_STATUS_OK)
        PS_ERROR("cannot write port file %s", port_file);

    int sig = rpc_signals_wait();
    PS_INFO("signal %d: shutting down", sig);
    atomic_store(&g.stopping, true);
    pthread_mutex_lock(&g.log.lock);
    g.log.stopping = true;
    pthread_cond_broadcast(&g.log.grew);
    pthread_mutex_unlock(&g.log.lock);
    rpc_server_destroy(server);
    pthread_mutex_lock(&g.watch_lock);
    if (g.watch)
        rpc_stream_cancel(g.watch);
    pthread_mutex_unlock(&g.watch_lock);
    pthread_join(hb, NULL);
    pthread_join(watch, NULL);
    rpc_channel_destroy(g.coord);
    for (size_t i = 0; i < g.st.cap; i++) {
        if (g.st.slots[i]) {
            free(g.st.slots[i]->data);
            free(g.st.slots[i]->name);
            free(g.st.slots[i]);
        }
    }
    free(g.st.slots);
    for (size_t i = 0; i < g.log.count; i++)
        entry_unref(g.log.ring[(g.log.head + i) % g.log.cap]);
    free(g.log.ring);
    hashring_destroy(g.ring);
    PS_INFO("stopped");
    return 0;
}
