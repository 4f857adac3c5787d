/* runtime.c: see runtime.h.
 *
 * Threads: heartbeat (also re-registers and catches missed rings), ring watch, and
 * models watch (only with a models hook). They sleep on one condition variable so
 * ps_runtime_stop wakes them at once, and the open watch streams are kept where stop
 * can cancel them. The ring and models hooks run under `deliver_lock`, so they never
 * overlap. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crash.h"
#include "flags.h"
#include "log.h"
#include "runtime.h"
#include "util.h"

#define RT_DEFAULT_HEARTBEAT_MS 1000
#define RT_CALL_TIMEOUT_MS 3000

struct ps_runtime {
    ps_runtime_opts opts;
    char program[64];
    char id[256];
    char coordinator[256];
    char addr[300];
    int port;
    rpc_server *server;
    rpc_channel *coord;

    pthread_mutex_t lock; /* guards the fields below and the sleeps */
    pthread_cond_t wake;
    bool stopping;
    bool stopped;
    int heartbeat_ms;
    rpc_stream *ring_stream; /* open watches, cancelled by stop */
    rpc_stream *models_stream;

    pthread_mutex_t deliver_lock; /* hooks run under it, one at a time */
    _Atomic uint64_t epoch;       /* newest ring delivered (written under deliver_lock;
                                     read without it, so heartbeats never wait on a hook) */

    atomic_bool connected;
    _Atomic int64_t last_refresh_ms; /* ps_runtime_refresh_ring's last fetch */
    pthread_t heartbeat_thread, ring_thread, models_thread;
    bool have_heartbeat, have_ring, have_models;
};

/* ------------------------------------------------------------- process set-up --- */

void ps_runtime_process_init(const char *program, const char *instance) {
    char who[192];
    ps_log_init(program, instance);
    if (instance && *instance)
        snprintf(who, sizeof who, "%s[%s]", program, instance);
    else
        snprintf(who, sizeof who, "%s", program);
    rpc_signals_block();
    if (ps_crash_install(who) != PS_STATUS_OK)
        PS_WARN("cannot install the crash handler: fatal signals will leave no backtrace");
    rpc_process_init();
    rpc_tune_allocator();
}

void ps_runtime_log_config(const char *config) {
    PS_INFO("configuration: %s", config);
}

int ps_runtime_start_program(ps_program *pr, int argc, char **argv) {
    char err[512];
    ps_flags_result fr = ps_flags_parse(pr->name, pr->summary, pr->flags, pr->n_flags, argc, argv,
                                        stdout, err, sizeof err);
    if (fr != PS_FLAGS_CONTINUE) {
        if (fr == PS_FLAGS_EXIT_USAGE)
            fprintf(stderr, "%s\n", err);
        return fr;
    }
    if (pr->coordinator &&
        ps_flags_coordinator(*pr->coordinator, pr->coordinator_addr, sizeof pr->coordinator_addr,
                             err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", pr->name, err);
        return PS_FLAGS_EXIT_USAGE;
    }
    ps_runtime_process_init(pr->name, pr->id ? *pr->id : NULL);
    char config[2048];
    ps_flags_describe(pr->flags, pr->n_flags, config, sizeof config);
    ps_runtime_log_config(config);
    return PS_FLAGS_CONTINUE;
}

/* ------------------------------------------------------------- helpers --- */

static bool stopping(ps_runtime *rt) {
    pthread_mutex_lock(&rt->lock);
    bool s = rt->stopping;
    pthread_mutex_unlock(&rt->lock);
    return s;
}

/* Sleeps up to ms, waking early on stop; returns false when stopping. */
static bool nap(ps_runtime *rt, int ms) {
    pthread_mutex_lock(&rt->lock);
    if (!rt->stopping) {
        struct timespec until = ps_abstime_after_ms(ms);
        pthread_cond_timedwait(&rt->wake, &rt->lock, &until);
    }
    bool go_on = !rt->stopping;
    pthread_mutex_unlock(&rt->lock);
    return go_on;
}

static int backoff_next(int ms) {
    ms *= 2;
    return ms > PS_RUNTIME_BACKOFF_MAX_MS ? PS_RUNTIME_BACKOFF_MAX_MS : ms;
}

/* Delivers a ring if it is newer than the last one delivered. */
static void deliver_ring(ps_runtime *rt, const Ps__Ring *ring) {
    pthread_mutex_lock(&rt->deliver_lock);
    uint64_t have = atomic_load(&rt->epoch);
    bool newer = ring->epoch > have || have == 0;
    if (newer && !stopping(rt)) {
        atomic_store(&rt->epoch, ring->epoch);
        if (rt->opts.hooks.ring)
            rt->opts.hooks.ring(rt->opts.hooks.user, ring);
    }
    pthread_mutex_unlock(&rt->deliver_lock);
}

static ps_status fetch_ring(ps_runtime *rt, rpc_result *res) {
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    rpc_call_opts opts = {.timeout_ms = RT_CALL_TIMEOUT_MS};
    ps_status st = rpc_call(rt->coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor,
                            &opts, &m, res);
    if (st == PS_STATUS_OK) {
        deliver_ring(rt, (const Ps__Ring *)m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

/* One registration attempt. */
static ps_status register_once(ps_runtime *rt, rpc_result *res) {
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

static void *heartbeat_main(void *arg) {
    ps_runtime *rt = arg;
    bool registered = true;
    int64_t lost_at = 0; /* 0: connected */
    for (;;) {
        pthread_mutex_lock(&rt->lock);
        int every = rt->heartbeat_ms;
        pthread_mutex_unlock(&rt->lock);
        if (!nap(rt, every))
            break;
        rpc_result res = {0};
        ps_status st;
        if (!registered) {
            st = register_once(rt, &res);
            if (st == PS_STATUS_OK) {
                registered = true;
                PS_INFO("registered again with the coordinator at %s as %s", rt->coordinator,
                        rt->addr);
                fetch_ring(rt, NULL);
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
                    fetch_ring(rt, NULL);
            } else if (st == PS_STATUS_NOT_FOUND) {
                PS_WARN("the coordinator at %s does not know this node (did it restart?): "
                        "registering again",
                        rt->coordinator);
                registered = false;
                continue;
            }
        }
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
    while (!stopping(rt) && rpc_stream_next(s, &m) == PS_STATUS_OK && m) {
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
    deliver_ring(rt, (const Ps__Ring *)m);
}

static void deliver_models_msg(ps_runtime *rt, const ProtobufCMessage *m) {
    pthread_mutex_lock(&rt->deliver_lock);
    if (!stopping(rt))
        rt->opts.hooks.models(rt->opts.hooks.user, (const Ps__ModelsUpdate *)m);
    pthread_mutex_unlock(&rt->deliver_lock);
}

static void *ring_watch_main(void *arg) {
    ps_runtime *rt = arg;
    int wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
    while (!stopping(rt)) {
        Ps__WatchRingRequest req = PS__WATCH_RING_REQUEST__INIT;
        req.after_epoch = atomic_load(&rt->epoch);
        if (watch_once(rt, "/ps.Coordinator/WatchRing", &req.base, &ps__ring__descriptor,
                       &rt->ring_stream, deliver_ring_msg))
            wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
        if (!nap(rt, wait_ms))
            break;
        wait_ms = backoff_next(wait_ms);
    }
    return NULL;
}

static void *models_watch_main(void *arg) {
    ps_runtime *rt = arg;
    int wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
    while (!stopping(rt)) {
        /* from generation 0 each time: a restarted coordinator counts again from 1 */
        Ps__WatchModelsRequest req = PS__WATCH_MODELS_REQUEST__INIT;
        if (watch_once(rt, "/ps.Coordinator/WatchModels", &req.base, &ps__models_update__descriptor,
                       &rt->models_stream, deliver_models_msg))
            wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
        if (!nap(rt, wait_ms))
            break;
        wait_ms = backoff_next(wait_ms);
    }
    return NULL;
}

/* ------------------------------------------------------------- public API --- */

ps_status ps_runtime_create(const ps_runtime_opts *opts, ps_runtime **ret_runtime) {
    if (!opts || !opts->program)
        return PS_STATUS_INVALID_ARGUMENT;
    if (opts->id && (strlen(opts->id) == 0 || strlen(opts->id) >= sizeof((ps_runtime *)0)->id))
        return PS_STATUS_INVALID_ARGUMENT;
    if (opts->coordinator && strlen(opts->coordinator) >= sizeof((ps_runtime *)0)->coordinator)
        return PS_STATUS_INVALID_ARGUMENT;
    ps_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return PS_STATUS_NO_MEMORY;
    rt->opts = *opts;
    snprintf(rt->program, sizeof rt->program, "%s", opts->program);
    snprintf(rt->id, sizeof rt->id, "%s", opts->id ? opts->id : "");
    snprintf(rt->coordinator, sizeof rt->coordinator, "%s",
             opts->coordinator ? opts->coordinator : "");
    rt->opts.program = rt->program;
    rt->opts.id = opts->id ? rt->id : NULL;
    rt->opts.coordinator = opts->coordinator ? rt->coordinator : NULL;
    if (rt->opts.register_timeout_ms <= 0)
        rt->opts.register_timeout_ms = PS_RUNTIME_REGISTER_TIMEOUT_MS;
    rt->heartbeat_ms = RT_DEFAULT_HEARTBEAT_MS;
    pthread_mutex_init(&rt->lock, NULL);
    pthread_cond_init(&rt->wake, NULL);
    pthread_mutex_init(&rt->deliver_lock, NULL);
    atomic_init(&rt->connected, false);
    atomic_init(&rt->last_refresh_ms, INT64_MIN / 2);
    if (rt->opts.coordinator) {
        ps_status st = rpc_channel_create(rt->coordinator, NULL, &rt->coord);
        if (st != PS_STATUS_OK) {
            ps_runtime_destroy(rt);
            return st;
        }
    }
    *ret_runtime = rt;
    return PS_STATUS_OK;
}

ps_status ps_runtime_serve(ps_runtime *rt, const rpc_server_opts *server_opts,
                           const rpc_method *methods, size_t n_methods, char *err, size_t err_len) {
    rpc_server *server = NULL;
    int port = 0;
    ps_status st = rpc_server_serve(server_opts, methods, n_methods, &server, &port);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot serve on %s: %s", server_opts->listen, ps_status_str(st));
        return st;
    }
    rt->server = server;
    rt->port = port;
    ps_advertise_addr(server_opts->listen, port, rt->addr, sizeof rt->addr);
    return PS_STATUS_OK;
}

const char *ps_runtime_addr(const ps_runtime *rt) {
    return rt->addr;
}

int ps_runtime_port(const ps_runtime *rt) {
    return rt->port;
}

void ps_runtime_refresh_ring(ps_runtime *rt) {
    if (!rt->coord)
        return;
    int64_t now = ps_now_ms(), last = atomic_load(&rt->last_refresh_ms);
    if (now - last < PS_RUNTIME_REFRESH_MIN_MS ||
        !atomic_compare_exchange_strong(&rt->last_refresh_ms, &last, now))
        return; /* fetched a moment ago, or another thread is fetching now */
    fetch_ring(rt, NULL);
}

rpc_channel *ps_runtime_coordinator(ps_runtime *rt) {
    return rt->coord;
}

bool ps_runtime_connected(const ps_runtime *rt) {
    return atomic_load(&((ps_runtime *)rt)->connected);
}

static ps_status start_thread(ps_runtime *rt, pthread_t *t, void *(*fn)(void *), bool *started,
                              const char *what, char *err, size_t err_len) {
    if (pthread_create(t, NULL, fn, rt) != 0) {
        ps_set_err(err, err_len, "cannot start the %s thread", what);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    *started = true;
    return PS_STATUS_OK;
}

ps_status ps_runtime_join(ps_runtime *rt, char *err, size_t err_len) {
    if (!rt->coord)
        return PS_STATUS_OK;
    if (rt->opts.id) {
        if (!rt->addr[0]) {
            ps_set_err(err, err_len, "register before serving: no address to announce");
            return PS_STATUS_FAILED_PRECONDITION;
        }
        int64_t give_up = ps_now_ms() + rt->opts.register_timeout_ms;
        int wait_ms = PS_RUNTIME_BACKOFF_MIN_MS;
        bool warned = false;
        for (;;) {
            rpc_result res = {0};
            ps_status st = register_once(rt, &res);
            if (st == PS_STATUS_OK)
                break;
            if (st == PS_STATUS_INVALID_ARGUMENT || st == PS_STATUS_ALREADY_EXISTS ||
                st == PS_STATUS_FAILED_PRECONDITION || ps_now_ms() >= give_up) {
                ps_set_err(err, err_len, "cannot register with the coordinator at %s: %s %s",
                           rt->coordinator, rpc_code_name(res.grpc_code), res.details);
                return st;
            }
            if (!warned)
                PS_WARN("the coordinator at %s does not answer yet (%s %s); retrying for up to "
                        "%d s",
                        rt->coordinator, rpc_code_name(res.grpc_code), res.details,
                        rt->opts.register_timeout_ms / 1000);
            warned = true;
            if (!nap(rt, wait_ms)) {
                ps_set_err(err, err_len, "stopped before registering");
                return PS_STATUS_CANCELLED;
            }
            wait_ms = backoff_next(wait_ms);
        }
        atomic_store(&rt->connected, true);
        rpc_result res = {0};
        if (rt->opts.hooks.ring && fetch_ring(rt, &res) != PS_STATUS_OK)
            PS_WARN("cannot fetch the ring yet (%s %s); the watch will deliver it",
                    rpc_code_name(res.grpc_code), res.details);
        ps_status st = start_thread(rt, &rt->heartbeat_thread, heartbeat_main, &rt->have_heartbeat,
                                    "heartbeat", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (rt->opts.hooks.ring) {
        ps_status st = start_thread(rt, &rt->ring_thread, ring_watch_main, &rt->have_ring,
                                    "ring watch", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (rt->opts.hooks.models) {
        ps_status st = start_thread(rt, &rt->models_thread, models_watch_main, &rt->have_models,
                                    "registry watch", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    return PS_STATUS_OK;
}

int ps_runtime_wait(ps_runtime *rt) {
    (void)rt;
    int sig = rpc_signals_wait();
    PS_INFO("signal %d: shutting down", sig);
    return sig;
}

void ps_runtime_stop(ps_runtime *rt) {
    pthread_mutex_lock(&rt->lock);
    if (rt->stopped) {
        pthread_mutex_unlock(&rt->lock);
        return;
    }
    rt->stopping = true;
    rt->stopped = true;
    pthread_cond_broadcast(&rt->wake);
    if (rt->ring_stream)
        rpc_stream_cancel(rt->ring_stream);
    if (rt->models_stream)
        rpc_stream_cancel(rt->models_stream);
    pthread_mutex_unlock(&rt->lock);
    if (rt->have_heartbeat)
        pthread_join(rt->heartbeat_thread, NULL);
    if (rt->have_ring)
        pthread_join(rt->ring_thread, NULL);
    if (rt->have_models)
        pthread_join(rt->models_thread, NULL);
    rt->have_heartbeat = rt->have_ring = rt->have_models = false;
    rpc_server_destroy(rt->server);
    rt->server = NULL;
}

void ps_runtime_destroy(ps_runtime *rt) {
    if (!rt)
        return;
    ps_runtime_stop(rt);
    rpc_channel_destroy(rt->coord);
    pthread_mutex_destroy(&rt->lock);
    pthread_cond_destroy(&rt->wake);
    pthread_mutex_destroy(&rt->deliver_lock);
    free(rt);
}
