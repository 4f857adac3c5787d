/* runtime_internal.h: what the runtime's files share: the ps_runtime structure and
 * the loops that run on its threads (runtime_loops.c), for runtime.c, which creates,
 * starts and stops them. Not for use outside ps/runtime. */
#ifndef PS_RUNTIME_INTERNAL_H
#define PS_RUNTIME_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "runtime.h"

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

/* True once ps_runtime_stop began. */
bool rt_stopping(ps_runtime *rt);
/* Sleeps up to ms, waking early on stop; returns false when stopping. */
bool rt_nap(ps_runtime *rt, int ms);
/* The next retry delay after `ms` (doubling up to PS_RUNTIME_BACKOFF_MAX_MS). */
int rt_backoff_next(int ms);
/* GetRing, delivered to the ring hook when newer. res (may be NULL) says why it failed. */
ps_status rt_fetch_ring(ps_runtime *rt, rpc_result *res);
/* One RegisterNode call; sets the heartbeat interval the coordinator asks for. */
ps_status rt_register_once(ps_runtime *rt, rpc_result *res);

/* Thread bodies (arg: the ps_runtime). */
void *rt_heartbeat_main(void *arg);
void *rt_ring_watch_main(void *arg);
void *rt_models_watch_main(void *arg);

#endif
