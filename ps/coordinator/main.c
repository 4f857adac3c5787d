/* main.c: ps-coordinator, the control plane: its flags, and the wiring of the
 * coordinator's operations (coord.h, served by handlers.h) and its liveness thread to
 * the process runtime (ps/runtime: serving, signals, crash backtraces, the lock that
 * keeps a second coordinator out of its state directory). Everything it decides lives
 * in the coord_ctx operations. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "dirlock.h"
#include "flags.h"
#include "handlers.h"
#include "hashring.h"
#include "log.h"
#include "membership.h"
#include "registry.h"
#include "runtime.h"
#include "util.h"
#include "workers.h"

/* rpc streams beyond --max-watchers: room for the unary methods that run on threads of
 * their own (handlers.c: registrations, ring changes, model uploads), and so that the
 * coordinator's own watcher limit (and message) is the one watchers meet */
#define COORD_STREAM_MARGIN 32

/* Events of the coordinator, as log lines. */
static void log_event(void *arg, coord_event_level level, const char *message) {
    (void)arg;
    ps_log(level == COORD_EVENT_INFO   ? PS_LOG_INFO
           : level == COORD_EVENT_WARN ? PS_LOG_WARN
                                       : PS_LOG_ERROR,
           "%s", message);
}

static void *liveness_thread(void *arg) {
    coord_ctx *c = arg;
    while (coord_liveness_wait(c))
        coord_liveness_sweep(c);
    return NULL;
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:7000", *state_dir = "run/coordinator", *port_file = NULL;
    int threads = 0, heartbeat_ms = 1000, vnodes = HASHRING_DEFAULT_VNODES;
    int replication = COORD_DEFAULT_REPLICATION;
    int max_nodes = MEMBERSHIP_DEFAULT_MAX_NODES, max_watchers = COORD_DEFAULT_MAX_WATCHERS;
    int max_versions = REGISTRY_DEFAULT_MAX_VERSIONS;
    int max_registry_mb = REGISTRY_DEFAULT_MAX_BYTES >> 20;
    int worker_timeout_ms = WORKERS_DEFAULT_TIMEOUT_MS;
    int ring_change_timeout_ms = COORD_DEFAULT_RING_CHANGE_TIMEOUT_MS;
    const ps_flag flags[] = {
        {"listen", PS_FLAG_STRING, &listen, 0, 0, "HOST:PORT", "address to serve on (port 0: any)",
         false},
        {"state-dir", PS_FLAG_STRING, &state_dir, 0, 0, "DIR",
         "where state is kept (STATE_DIR/coordinator.json)", false},
        {"heartbeat-ms", PS_FLAG_INT, &heartbeat_ms, 10, 600000, "N",
         "expected heartbeat interval; 3 missed = dead", false},
        {"replication", PS_FLAG_INT, &replication, 1, COORD_MAX_REPLICATION, "R",
         "copies of every key: a push is acknowledged once the key's R owners (the first R "
         "shards clockwise on the ring) have it",
         false},
        {"vnodes", PS_FLAG_INT, &vnodes, 1, 100000, "N", "virtual nodes per unit of shard weight",
         false},
        {"threads", PS_FLAG_INT, &threads, 0, 1024, "N", "rpc worker threads (0: one per CPU)",
         false},
        {"max-nodes", PS_FLAG_INT, &max_nodes, 1, MEMBERSHIP_MAX_NODES_LIMIT, "N",
         "shards and replicas at most", false},
        {"max-watchers", PS_FLAG_INT, &max_watchers, 1, COORD_MAX_WATCHERS_LIMIT, "N",
         "WatchRing/WatchModels/WaitClock streams open at once", false},
        {"worker-timeout-ms", PS_FLAG_INT, &worker_timeout_ms, 100, 3600000, "N",
         "a training worker silent this long is dead (holds no one back)", false},
        {"ring-change-timeout-ms", PS_FLAG_INT, &ring_change_timeout_ms, 1000,
         COORD_MAX_RING_CHANGE_TIMEOUT_MS, "N",
         "a ring add or drain whose data has not been copied by then is cancelled (the ring "
         "stays as it was)",
         false},
        {"max-versions", PS_FLAG_INT, &max_versions, 1, 1000000, "N",
         "model versions kept in the registry", false},
        {"max-registry-mb", PS_FLAG_INT, &max_registry_mb, 1, REGISTRY_MAX_BYTES_LIMIT >> 20, "N",
         "the registry's size, all versions together, in MiB", false},
        {"port-file", PS_FLAG_STRING, &port_file, 0, 0, "FILE",
         "write the bound port there once serving", false},
    };
    ps_program prog = {
        .name = "ps-coordinator",
        .summary = "The control plane: membership, heartbeats, the ring and its epochs, the model\n"
                   "registry. State survives restarts in STATE_DIR/coordinator.json.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0],
        .id = NULL,
        .coordinator = NULL};
    int fr = ps_runtime_start_program(&prog, argc, argv);
    if (fr != PS_FLAGS_CONTINUE)
        return fr;
    char err[COORD_ERR_MAX];
    if (ps_mkdir_p(state_dir) != PS_STATUS_OK) {
        PS_ERROR("cannot create the state directory %s: %s", state_dir, strerror(errno));
        return 1;
    }
    ps_dirlock *state_lock = NULL; /* one coordinator per state directory */
    if (ps_dirlock_create(state_dir, &state_lock, err, sizeof err) != PS_STATUS_OK) {
        PS_ERROR("cannot start: %s", err);
        return 1;
    }
    char state_path[STATE_STORE_PATH_MAX + 64];
    snprintf(state_path, sizeof state_path, "%s/coordinator.json", state_dir);
    coord_opts co = {.state_path = state_path,
                     .heartbeat_ms = heartbeat_ms,
                     .replication = (uint32_t)replication,
                     .vnodes = (uint32_t)vnodes,
                     .max_nodes = (size_t)max_nodes,
                     .max_watchers = (size_t)max_watchers,
                     .max_versions = (size_t)max_versions,
                     .max_registry_bytes = (size_t)max_registry_mb << 20,
                     .worker_timeout_ms = worker_timeout_ms,
                     .ring_change_timeout_ms = ring_change_timeout_ms,
                     .event = log_event};
    coord_ctx *ctx = NULL;
    ps_runtime *rt = NULL;
    bool live_started = false;
    pthread_t live;
    int rc = 1;
    if (coord_create(&co, &ctx, err, sizeof err) != PS_STATUS_OK) {
        PS_ERROR("cannot start: %s", err);
        goto out;
    }
    ps_runtime_opts ro = {.program = "ps-coordinator"};
    if (ps_runtime_create(&ro, &rt) != PS_STATUS_OK) {
        PS_ERROR("cannot set up the process runtime");
        goto out;
    }
    rpc_method methods[HANDLERS_METHOD_COUNT];
    handlers_methods(ctx, methods);
    rpc_server_opts so = {.listen = listen,
                          .threads = threads,
                          .grace_ms = 2000,
                          .max_streams = max_watchers + COORD_STREAM_MARGIN};
    if (pthread_create(&live, NULL, liveness_thread, ctx) != 0) {
        PS_ERROR("cannot start the liveness thread");
        goto out;
    }
    live_started = true;
    if (ps_runtime_start(rt, &so, methods, HANDLERS_METHOD_COUNT, port_file, err, sizeof err) !=
        PS_STATUS_OK) {
        PS_ERROR("%s", err);
        goto out;
    }
    uint64_t epoch = 0;
    size_t n_nodes = 0, n_models = 0;
    coord_summary(ctx, &epoch, &n_nodes, &n_models);
    PS_INFO("serving on %s; state %s; ring epoch %llu; %zu nodes; %zu model versions",
            ps_runtime_addr(rt), state_path, (unsigned long long)epoch, n_nodes, n_models);
    ps_runtime_wait(rt);
    rc = 0;
out:
    if (ctx)
        coord_stop(ctx); /* watch streams and the liveness thread end */
    ps_runtime_destroy(rt);
    if (live_started)
        pthread_join(live, NULL);
    coord_destroy(ctx);
    ps_dirlock_destroy(state_lock);
    if (rc == 0)
        PS_INFO("stopped");
    return rc;
}
