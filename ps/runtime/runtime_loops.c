/* runtime_loops.c: the runtime's threads: heartbeats (which also re-register when the
 * coordinator forgot this node, fetch a ring the watch missed, and log losing and
 * regaining the coordinator once each), and the ring and registry watches, which
 * reconnect with backoff. Every retry after a failure first lifts gRPC's own reconnect
 * backoff (rpc_channel_reconnect_now): it grows to minutes, and would keep a node away
 * from a coordinator that is back for about as long as the outage lasted. The threads
 * sleep on one condition variable so ps_runtime_stop wakes them at once, and keep their
 * open streams where stop can cancel them. The ring and models hooks run under
 * deliver_lock, so they never overlap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "runtime_internal.h"
#include "util.h"

bool rt_stopping(ps_runtime *rt) {
    pthread_mutex_lock(&rt->lock);
    bool s = rt->stopping;
    pthread_mutex_unlock(&rt->lock);
    return s;
}

/* Sleeps up to ms, waking early on stop; returns false when stopping. */
bool rt_nap(ps_runtime *rt, int ms) {
    pthread_mutex_lock(&rt->lock);
    if (!rt->stopping) {
        struct timespec until = ps_abstime_after_ms(ms);
        pthread_cond_timedwait(&rt->wake, &rt->lock, &until);
    }
    bool go_on = !rt->stopping;
    pthread_mutex_unlock(&rt->lock);
    return go_on;
}

int rt_backoff_next(int ms) {
    ms *= 2;
    return ms > PS_RUNTIME_BACKOFF_MAX_MS ? PS_RUNTIME_BACKOFF_MAX_MS : ms;
}

/* Delivers a ring if it is newer than the last one delivered. */
static void rt_deliver_ring(ps_runtime *rt, const Ps__Ring *ring) {
    pthread_mutex_lock(&rt->deliver_lock);
    uint64_t have = atomic_load(&rt->epoch);
    bool newer = ring->epoch > have || have == 0;
    if (newer && !rt_stopping(rt)) {
        atomic_store(&rt->epoch, ring->epoch);
        if (rt->opts.hooks.ring)
            rt->opts.hooks.ring(rt->opts.hooks.user, ring);
    }
    pthread_mutex_unlock(&rt->deliver_lock);
}

ps_status rt_fetch_ring(ps_runtime *rt, rpc_result *res) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    rpc_call_opts opts = {.timeout_ms = RT_CALL_TIMEOUT_MS};
    ps_status st = rpc_call(rt->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &m, res);
    if (st == PS_STATUS_OK) {
        rt_deliver_ring(rt, (const Ps__Ring *)m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

/* One registration attempt. */
ps_status rt_register_once(ps_runtime *rt, rpc_result *res) {
    Ps__NodeInfo node = PS__NODE_INFO__INIT;
    node.id = rt->id;
    node.addr = rt->addr;
    node.weight = rt->opts.weight ? rt->opts.weight : 1;
    node.role = rt->opts.role;
    Ps__RegisterRequest req = PS__REGISTER_REQUEST__INIT;
    req.node = &node;
    ProtobufCMessage *m = NULL;
    rpc_call_opts opts = {.timeout_ms = RT_CALL_TIMEOUT_MS};
    ps_status st = rpc_call(rt->coord, "/ps.Coordinator/RegisterNode", &req.base,
                            &ps__register_response__descriptor, &opts, &m, res);
    if (st != PS_STATUS_OK)
        return st;
    const Ps__RegisterResponse *resp = (const Ps__RegisterResponse *)m;
    pthread_mutex_lock(&rt->lock);
    rt->heartbeat_ms = resp->heartbeat_ms > 0 && resp->heartbeat_ms < 60000
                           ? (int)resp->heartbeat_ms
                           : RT_DEFAULT_HEARTBEAT_MS;
    pthread_mutex_unlock(&rt->lock);
    protobuf_c_message_free_unpacked(m, NULL);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------- threads --- */

void *rt_heartbeat_main(void *arg) {
    ps_runtime *rt = arg;
    bool registered = true;
    int64_t lost_at = 0; /* 0: connected */
    for (;;) {
        pthread_mutex_lock(&rt->lock);
        int every = rt->heartbeat_ms;
        pthread_mutex_unlock(&rt->lock);
        if (!rt_nap(rt, every))
            break;
        rpc_result res = {0};
        ps_status st;
        if (!registered) {
            st = rt_register_once(rt, &res);
            if (st == PS_STATUS_OK) {
                registered = true;
                PS_INFO("registered again with the coordinator at %s as %s", rt->coordinator,
                        rt->addr);
                rt_fetch_ring(rt, NULL);
            }
        } else {
            Ps__HeartbeatRequest req = PS__HEARTBEAT_REQUEST__INIT;
            req.id = rt->id;
            if (rt->opts.hooks.heartbeat) /* not under deliver_lock: see runtime.h */
                rt->opts.hooks.heartbeat(rt->opts.hooks.user, &req);
            ProtobufCMessage *m = NULL;
            rpc_call_opts opts = {.timeout_ms = every};
            st = rpc_call(rt->coord, "/ps.Coordinator/Heartbeat", &req.base,
                          &ps__heartbeat_response__descriptor, &opts, &m, &res);
            if (st == PS_STATUS_OK) {
                uint64_t epoch = ((const Ps__HeartbeatResponse *)m)->epoch;
                protobuf_c_message_free_unpacked(m, NULL);
                if (epoch >
                    atomic_load(&rt->epoch)) /* the watch missed it (e.g. while reconnecting) */
                    rt_fetch_ring(rt, NULL);
            } else if (st == PS_STATUS_NOT_FOUND) {
                PS_WARN("the coordinator at %s does not know this node (did it restart?): "
                        "registering again",
                        rt->coordinator);
                registered = false;
                continue;
            }
        }
        if (st != PS_STATUS_OK && st != PS_STATUS_NOT_FOUND)
            rpc_channel_reconnect_now(rt->coord); /* the next beat reaches it once it is back */
        if (st == PS_STATUS_OK && lost_at) {
            PS_INFO("the coordinator at %s is back after %lld ms", rt->coordinator,
                    (long long)(ps_now_ms() - lost_at));
            lost_at = 0;
            atomic_store(&rt->connected, true);
        } else if (st != PS_STATUS_OK && st != PS_STATUS_NOT_FOUND && !lost_at) {
            PS_WARN("lost the coordinator at %s: %s %s; serving on and retrying every %d ms",
                    rt->coordinator, rpc_code_name(res.grpc_code), res.details, every);
            lost_at = ps_now_ms();
            atomic_store(&rt->connected, false);
        }
    }
    return NULL;
}

/* Runs one watch stream until it ends; returns true when it delivered anything. */
typedef void (*watch_deliver)(ps_runtime *rt, const ProtobufCMessage *m);

static bool watch_once(ps_runtime *rt, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *type, rpc_stream **slot,
                       watch_deliver deliver) {
    rpc_stream *s = NULL;
    rpc_call_opts opts = {.wait_for_ready = true};
    if (rpc_stream_open(rt->coord, method, req, type, &opts, &s) != PS_STATUS_OK)
        return false;
    pthread_mutex_lock(&rt->lock);
    *slot = s;
    if (rt->stopping)
        rpc_stream_cancel(s);
    pthread_mutex_unlock(&rt->lock);
    bool got = false;
    ProtobufCMessage *m = NULL;
    while (!rt_stopping(rt) && rpc_stream_next(s, &m) == PS_STATUS_OK && m) {
        deliver(rt, m);
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
        got = true;
    }
    pthread_mutex_lock(&rt->lock);
    *slot = NULL;
    pthread_mutex_unlock(&rt->lock);
    rpc_stream_destroy(s);
    return got;
}

static void deliver_ring_msg(ps_runtime *rt, const ProtobufCMessage *m) {
    rt_deliver_ring(rt, (const Ps__Ring *)m);
}

static void deliver_models_msg(ps_runtime *rt, const ProtobufCMessage *m) {
    pthread_mutex_lock(&rt->deliver_lock);
    if (!rt_stopping(rt))
        rt->opts.hooks.models(rt->opts.hooks.user, (const Ps__ModelsUpdate *)m);
    pthread_mutex_unlock(&rt->deliver_lock);
}

void *rt_ring_watch_main(void *arg) {
    ps_runtime *rt = arg;
    int wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
    while (!rt_stopping(rt)) {
        Ps__WatchRingRequest req = PS__WATCH_RING_REQUEST__INIT;
        req.after_epoch = atomic_load(&rt->epoch);
        if (watch_once(rt, "/ps.Coordinator/WatchRing", &req.base, &ps__ring__descriptor,
                       &rt->ring_stream, deliver_ring_msg))
            wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
        rpc_channel_reconnect_now(rt->coord);
        if (!rt_nap(rt, wait_ms))
            break;
        wait_ms = rt_backoff_next(wait_ms);
    }
    return NULL;
}

void *rt_models_watch_main(void *arg) {
    ps_runtime *rt = arg;
    int wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
    while (!rt_stopping(rt)) {
        /* from generation 0 each time: a restarted coordinator counts again from 1 */
        Ps__WatchModelsRequest req = PS__WATCH_MODELS_REQUEST__INIT;
        if (watch_once(rt, "/ps.Coordinator/WatchModels", &req.base, &ps__models_update__descriptor,
                       &rt->models_stream, deliver_models_msg))
            wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
        rpc_channel_reconnect_now(rt->coord);
        if (!rt_nap(rt, wait_ms))
            break;
        wait_ms = rt_backoff_next(wait_ms);
    }
    return NULL;
}
