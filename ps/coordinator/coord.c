/* coord.c: the coordinator context: creation (loading the state file, and giving the
 * nodes it lists a dead-after interval to report in), events,
 * snapshots written outside the lock, message copies, waits and watch limits (see
 * coord.h). Operations on nodes are in coord_nodes.c, on models in coord_models.c. */
#include "coord_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard_probe.h"
#include "util.h"

static int64_t default_clock(void *arg) {
    (void)arg;
    return ps_now_ms();
}

/* A restart is no news about the members: each loaded node counts as alive, as if heard
 * from now, so the sweep declares dead only those still silent a full dead-after
 * interval after the restart, one by one, never everyone at once because the
 * coordinator itself was away. (Nodes retry every heartbeat interval, so the live ones
 * are back well within it.) */
static void presume_members_alive(coord_ctx *c) {
    size_t n = membership_node_count(c->members);
    int64_t now = coord_now(c);
    for (size_t i = 0; i < n; i++)
        membership_node_touch(membership_node_at(c->members, i), now);
    if (n > 0)
        coord_event(c, COORD_EVENT_INFO,
                    "%zu nodes from %s count as alive for %d ms (%d heartbeat intervals): those "
                    "that do not report in by then are dead",
                    n, state_store_path(c->store), MEMBERSHIP_DEAD_AFTER_BEATS * c->heartbeat_ms,
                    MEMBERSHIP_DEAD_AFTER_BEATS);
}

/* A change the state file holds goes on, its timeout counted from now (the shards
 * report their progress again in their next heartbeats). */
static void resume_change(coord_ctx *c) {
    const membership_node *n = membership_changing(c->members);
    if (!n)
        return;
    char name[COORD_ERR_MAX / 2];
    coord_change_name(n, name, sizeof name);
    c->change_started_ms = coord_now(c);
    coord_event(
        c, COORD_EVENT_INFO,
        "a ring change from %s goes on: %s, pending ring epoch %llu (current %llu); it "
        "commits once every shard reports it has synced, or is cancelled after %lld ms",
        state_store_path(c->store), name, (unsigned long long)ring_state_pending_epoch(c->ring),
        (unsigned long long)ring_state_epoch(c->ring), (long long)c->ring_change_timeout_ms);
}

ps_status coord_create(const coord_opts *opts, coord_ctx **ret_ctx, char *err, size_t err_len) {
    if (!opts || !opts->state_path || opts->heartbeat_ms <= 0 ||
        opts->max_watchers > COORD_MAX_WATCHERS_LIMIT || opts->ring_change_timeout_ms < 0 ||
        opts->ring_change_timeout_ms > COORD_MAX_RING_CHANGE_TIMEOUT_MS) {
        ps_set_err(err, err_len, "coordinator options out of range");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    coord_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    c->heartbeat_ms = opts->heartbeat_ms;
    c->replication = opts->replication ? opts->replication : COORD_DEFAULT_REPLICATION;
    if (c->replication > COORD_MAX_REPLICATION)
        c->replication = COORD_MAX_REPLICATION;
    c->max_watchers = opts->max_watchers ? opts->max_watchers : COORD_DEFAULT_MAX_WATCHERS;
    c->probe = opts->probe ? opts->probe : shard_probe_keys;
    c->probe_arg = opts->probe_arg;
    c->event = opts->event;
    c->event_arg = opts->event_arg;
    c->clock = opts->clock ? opts->clock : default_clock;
    c->clock_arg = opts->clock_arg;
    c->ring_change_timeout_ms = opts->ring_change_timeout_ms ? opts->ring_change_timeout_ms
                                                             : COORD_DEFAULT_RING_CHANGE_TIMEOUT_MS;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);

    membership_opts mo = {.max_nodes = opts->max_nodes, .heartbeat_ms = opts->heartbeat_ms};
    ring_state_opts ro = {.vnodes = opts->vnodes};
    registry_opts go = {.max_versions = opts->max_versions, .max_bytes = opts->max_registry_bytes};
    state_store_opts so = {
        .path = opts->state_path, .write = opts->write, .write_arg = opts->write_arg};
    ps_status st = membership_create(&mo, &c->members);
    if (st == PS_STATUS_OK)
        st = ring_state_create(&ro, &c->ring);
    if (st == PS_STATUS_OK)
        st = registry_create(&go, &c->models);
    if (st == PS_STATUS_OK)
        st = state_store_create(&so, &c->store);
    workers_opts wo = {.timeout_ms = opts->worker_timeout_ms};
    if (st == PS_STATUS_OK)
        st = workers_create(&wo, &c->workers);
    c->worker_timeout_ms =
        opts->worker_timeout_ms > 0 ? opts->worker_timeout_ms : WORKERS_DEFAULT_TIMEOUT_MS;
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot set up the coordinator's state: %s", ps_status_str(st));
        goto fail_ctx;
    }
    st = state_store_load(c->store, c->members, c->ring, c->models, err, err_len);
    if (st != PS_STATUS_OK)
        goto fail_ctx;
    presume_members_alive(c);
    resume_change(c);
    *ret_ctx = c;
    return PS_STATUS_OK;
fail_ctx:
    coord_destroy(c);
    return st;
}

void coord_destroy(coord_ctx *c) {
    if (!c)
        return;
    coord_packed_unref(c->ring_packed);
    coord_packed_unref(c->models_packed);
    state_store_destroy(c->store);
    registry_destroy(c->models);
    workers_destroy(c->workers);
    ring_state_destroy(c->ring);
    membership_destroy(c->members);
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

coord_packed *coord_packed_make(const ProtobufCMessage *msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    coord_packed *p = malloc(sizeof *p + (len ? len : 1));
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->len = protobuf_c_message_pack(msg, p->data);
    return p;
}

coord_packed *coord_packed_ref(coord_packed *p) {
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void coord_packed_unref(void *arg) {
    coord_packed *p = arg;
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        free(p);
}

const uint8_t *coord_packed_bytes(const coord_packed *p, size_t *ret_len) {
    *ret_len = p->len;
    return p->data;
}

coord_packed *coord_packed_cache(coord_packed **slot, coord_packed *p) {
    coord_packed_unref(*slot);
    *slot = p;
    return coord_packed_ref(p);
}

ProtobufCMessage *coord_packed_unpack(const ProtobufCMessageDescriptor *desc,
                                      const coord_packed *p) {
    return protobuf_c_message_unpack(desc, NULL, p->len, p->data);
}

void coord_stop(coord_ctx *c) {
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

void coord_summary(coord_ctx *c, uint64_t *ret_epoch, size_t *ret_nodes, size_t *ret_models) {
    pthread_mutex_lock(&c->lock);
    *ret_epoch = ring_state_epoch(c->ring);
    *ret_nodes = membership_node_count(c->members);
    *ret_models = registry_model_count(c->models);
    pthread_mutex_unlock(&c->lock);
}

/* ----------------------------------------------------------------- helpers --- */

void coord_event(coord_ctx *c, coord_event_level level, const char *fmt, ...) {
    if (!c->event)
        return;
    char msg[COORD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->event(c->event_arg, level, msg);
}

int64_t coord_now(coord_ctx *c) {
    return c->clock(c->clock_arg);
}

void coord_snapshot_take_locked(coord_ctx *c, coord_snapshot *ret_snap) {
    ret_snap->text = NULL;
    ret_snap->seq = ++c->snapshot_seq;
    ps_status st = state_store_encode(c->members, c->ring, c->models, &ret_snap->text);
    if (st != PS_STATUS_OK)
        coord_event(c, COORD_EVENT_ERROR,
                    "cannot encode the state for %s: %s; the change stands in memory only",
                    state_store_path(c->store), ps_status_str(st));
}

void coord_snapshot_write(coord_ctx *c, coord_snapshot *snap) {
    if (!snap->text)
        return;
    ps_status st = state_store_write(c->store, snap->seq, snap->text, NULL);
    if (st != PS_STATUS_OK)
        coord_event(c, COORD_EVENT_ERROR,
                    "cannot write state file %s: %s; the change stands in memory only",
                    state_store_path(c->store), ps_status_str(st));
    free(snap->text);
    snap->text = NULL;
}

void coord_unlock_and_persist(coord_ctx *c) {
    coord_snapshot snap;
    coord_snapshot_take_locked(c, &snap);
    pthread_mutex_unlock(&c->lock);
    coord_snapshot_write(c, &snap);
}

ps_status coord_message_pack(const ProtobufCMessage *msg, uint8_t **ret_buf, size_t *ret_len) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return PS_STATUS_NO_MEMORY;
    protobuf_c_message_pack(msg, buf);
    *ret_buf = buf;
    *ret_len = len;
    return PS_STATUS_OK;
}

ps_status coord_message_unpack(const ProtobufCMessageDescriptor *desc, uint8_t *buf, size_t len,
                               ProtobufCMessage **ret_msg) {
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, len, buf);
    free(buf);
    if (!msg)
        return PS_STATUS_NO_MEMORY;
    *ret_msg = msg;
    return PS_STATUS_OK;
}

ps_status coord_ring_fill_locked(coord_ctx *c, Ps__Ring *ring, coord_ring_parts *parts) {
    size_t n = membership_node_count(c->members);
    memset(parts, 0, sizeof *parts);
    ps__ring__init(ring);
    parts->infos = calloc(n ? n : 1, sizeof *parts->infos);
    parts->ptrs = calloc(n ? n : 1, sizeof *parts->ptrs);
    size_t len = 0, pending_len = 0;
    if (!parts->infos || !parts->ptrs ||
        ring_state_serialize(c->ring, &parts->ring_bytes, &len) != PS_STATUS_OK ||
        ring_state_serialize_pending(c->ring, &parts->pending_bytes, &pending_len) !=
            PS_STATUS_OK) {
        coord_ring_fill_free(parts);
        return PS_STATUS_NO_MEMORY;
    }
    ring->epoch = ring_state_epoch(c->ring);
    ring->replication = c->replication;
    ring->ring.data = parts->ring_bytes;
    ring->ring.len = len;
    ring->pending.data = parts->pending_bytes;
    ring->pending.len = pending_len;
    ring->pending_epoch = ring_state_pending_epoch(c->ring);
    int64_t now = coord_now(c);
    for (size_t i = 0; i < n; i++) {
        const membership_node *node = membership_node_at_const(c->members, i);
        Ps__NodeInfo *info = &parts->infos[i];
        ps__node_info__init(info);
        info->id = (char *)node->id;
        info->addr = (char *)node->addr;
        info->weight = node->weight;
        info->role = node->role == MEMBERSHIP_ROLE_SHARD ? PS__NODE_ROLE__ROLE_SHARD
                                                         : PS__NODE_ROLE__ROLE_SERVE;
        info->alive = node->alive;
        info->in_ring = node->in_ring;
        info->waiting = node->waiting;
        info->joining = node->joining;
        info->draining = node->draining;
        info->synced_epoch = node->synced_epoch;
        info->keys = node->keys;
        info->seq = node->seq;
        info->last_heartbeat_ms = node->last_hb_ms ? (uint64_t)(now - node->last_hb_ms) : 0;
        parts->ptrs[i] = info;
    }
    ring->n_nodes = n;
    ring->nodes = parts->ptrs;
    return PS_STATUS_OK;
}

void coord_ring_fill_free(coord_ring_parts *parts) {
    free(parts->infos);
    free(parts->ptrs);
    free(parts->ring_bytes);
    free(parts->pending_bytes);
    memset(parts, 0, sizeof *parts);
}

/* ----------------------------------------------------------------- watches --- */

ps_status coord_wait_locked(coord_ctx *c, uint64_t (*current)(coord_ctx *c), uint64_t after,
                            coord_alive_fn alive, void *arg) {
    while (current(c) <= after && !c->stopping) {
        pthread_mutex_unlock(&c->lock);
        bool live = !alive || alive(arg);
        pthread_mutex_lock(&c->lock);
        if (!live)
            return PS_STATUS_CANCELLED;
        if (current(c) > after)
            break;
        struct timespec ts = ps_abstime_after_ms(COORD_WATCH_POLL_MS);
        pthread_cond_timedwait(&c->changed, &c->lock, &ts);
    }
    return c->stopping ? PS_STATUS_UNAVAILABLE : PS_STATUS_OK;
}

ps_status coord_watch_begin(coord_ctx *c, char *err, size_t err_len) {
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&c->lock);
    if (c->watchers >= c->max_watchers) {
        ps_set_err(err, err_len,
                   "%zu watch streams are open, the limit (--max-watchers): close some, or "
                   "raise the limit",
                   c->watchers);
        st = PS_STATUS_RESOURCE_EXHAUSTED;
    } else {
        c->watchers++;
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

void coord_watch_end(coord_ctx *c) {
    pthread_mutex_lock(&c->lock);
    c->watchers--;
    pthread_mutex_unlock(&c->lock);
}
