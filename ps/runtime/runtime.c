/* runtime.c: see runtime.h. The public side: creating the runtime, serving, joining
 * the cluster (registration with backoff, then the threads of runtime_loops.c), and
 * stopping in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "log.h"
#include "runtime_internal.h"
#include "util.h"

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
    rt_fetch_ring(rt, NULL);
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
            ps_status st = rt_register_once(rt, &res);
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
            rpc_channel_reconnect_now(rt->coord); /* our backoff, not gRPC's growing one */
            if (!rt_nap(rt, wait_ms)) {
                ps_set_err(err, err_len, "stopped before registering");
                return PS_STATUS_CANCELLED;
            }
            wait_ms = rt_backoff_next(wait_ms);
        }
        atomic_store(&rt->connected, true);
        rpc_result res = {0};
        if (rt->opts.hooks.ring && rt_fetch_ring(rt, &res) != PS_STATUS_OK)
            PS_WARN("cannot fetch the ring yet (%s %s); the watch will deliver it",
                    rpc_code_name(res.grpc_code), res.details);
        ps_status st = start_thread(rt, &rt->heartbeat_thread, rt_heartbeat_main,
                                    &rt->have_heartbeat, "heartbeat", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (rt->opts.hooks.ring) {
        ps_status st = start_thread(rt, &rt->ring_thread, rt_ring_watch_main, &rt->have_ring,
                                    "ring watch", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (rt->opts.hooks.models) {
        ps_status st = start_thread(rt, &rt->models_thread, rt_models_watch_main, &rt->have_models,
                                    "registry watch", err, err_len);
        if (st != PS_STATUS_OK)
            return st;
    }
    return PS_STATUS_OK;
}

ps_status ps_runtime_start(ps_runtime *rt, const rpc_server_opts *server_opts,
                           const rpc_method *methods, size_t n_methods, const char *port_file,
                           char *err, size_t err_len) {
    ps_status st = ps_runtime_serve(rt, server_opts, methods, n_methods, err, err_len);
    if (st == PS_STATUS_OK)
        st = ps_runtime_join(rt, err, err_len);
    if (st == PS_STATUS_OK && port_file && *port_file &&
        (st = ps_write_port_file(port_file, rt->port)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "cannot write the port file %s", port_file);
    return st;
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
