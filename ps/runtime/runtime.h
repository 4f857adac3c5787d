/* runtime.h: the life of a server process, shared by ps-coordinator, ps-shard and
 * ps-serve.
 *
 * Every server does the same things around its handlers: set up logging, signals and
 * a crash handler; serve its methods and tell scripts its port; find and register
 * with the coordinator (retrying with backoff while it is not up yet); heartbeat and
 * re-register when the coordinator forgot it; follow the ring and the model registry;
 * say in the log when it loses the coordinator and when it comes back; wait for
 * SIGTERM/SIGINT and stop in order. This module does all of that once. A program's
 * main parses its flags (flags.h), creates its own context, passes hooks, and waits.
 *
 * Losing the coordinator is never fatal once joined: heartbeats go on at their interval
 * and the watches retry with backoff, forever, each retry reaching a coordinator that is
 * back at once (gRPC's own reconnect backoff, which grows to minutes, is lifted before
 * every retry), so nodes are back within a heartbeat interval of a coordinator restart,
 * inside the dead-after interval a restarted coordinator grants them.
 *
 * Hooks run on the runtime's threads and get the decoded coordinator messages. The
 * ring and models hooks run one at a time (never concurrently with each other); the
 * heartbeat hook runs on its own so a long model load never delays a heartbeat:
 *   ring      a ring newer than any delivered before (from the watch stream, or
 *             fetched when a heartbeat shows a newer epoch);
 *   models    the registry (latest version of each model), each time it changes and
 *             again after every reconnection (loading must be idempotent);
 *   heartbeat fills the load figures of a heartbeat (a shard: keys and seq).
 * Any hook may be NULL. A ring hook also runs once, synchronously, inside
 * ps_runtime_join, so a shard knows the ring before it reports itself started.
 */
#ifndef PS_RUNTIME_RUNTIME_H
#define PS_RUNTIME_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "flags.h"
#include "rpc.h"
#include "status.h"

#define PS_RUNTIME_REGISTER_TIMEOUT_MS 30000 /* start-up waits this long for a coordinator */
#define PS_RUNTIME_BACKOFF_MIN_MS 100        /* first retry of a failed registration/watch */
#define PS_RUNTIME_BACKOFF_MAX_MS 2000       /* retries slow down to this */
#define PS_RUNTIME_REFRESH_MIN_MS 100        /* ps_runtime_refresh_ring at most this often */

typedef struct ps_runtime ps_runtime;

typedef struct ps_runtime_hooks {
    void *user; /* passed to every hook */
    void (*ring)(void *user, const Ps__Ring *ring);
    void (*models)(void *user, const Ps__ModelsUpdate *update);
    void (*heartbeat)(void *user, Ps__HeartbeatRequest *req);
} ps_runtime_hooks;

typedef struct ps_runtime_opts {
    const char *program;     /* "ps-shard": names the process in logs */
    const char *id;          /* this node's id; NULL: the process does not register */
    const char *coordinator; /* "host:port"; NULL: none (the coordinator itself) */
    Ps__NodeRole role;       /* how it registers */
    uint32_t weight;         /* ring weight a shard asks for (0 = 1) */
    int register_timeout_ms; /* 0 = PS_RUNTIME_REGISTER_TIMEOUT_MS */
    ps_runtime_hooks hooks;
} ps_runtime_opts;

/* A server program's command line and identity, for ps_runtime_start_program. */
typedef struct ps_program {
    const char *name;    /* "ps-shard" */
    const char *summary; /* what --help says it is */
    const ps_flag *flags;
    size_t n_flags;
    const char *const *id;          /* where the --id flag's value lands; NULL: none */
    const char *const *coordinator; /* where --coordinator's lands; NULL: no coordinator */
    char coordinator_addr[256];     /* out: the coordinator found (ps_flags_coordinator) */
} ps_program;

/* What every server's main does first: parses the flags (printing --help or the usage
 * error), finds the coordinator, sets up the process (ps_runtime_process_init, named by
 * the id) and logs the effective configuration. Returns PS_FLAGS_CONTINUE to go on,
 * else the exit code. */
int ps_runtime_start_program(ps_program *program, int argc, char **argv);

/* Process set-up every program does first, before any thread starts: names the
 * process in the log, blocks SIGINT/SIGTERM for all threads (ps_runtime_wait takes
 * them), installs the crash handler, keeps gRPC initialized until exit and tunes the
 * allocator for large messages. `instance` may be NULL. */
void ps_runtime_process_init(const char *program, const char *instance);

/* Logs the start-up table: one line with the program's effective configuration
 * (flags.h's ps_flags_describe output) and one with where it serves. */
void ps_runtime_log_config(const char *config);

ps_status ps_runtime_create(const ps_runtime_opts *opts, ps_runtime **ret_runtime);

/* Starts the rpc server with `methods` (see rpc_server_serve). The advertised address
 * is then ps_runtime_addr, the bound port ps_runtime_port (programs write it to their
 * --port-file once they have joined, so a script that waits for the file finds them
 * registered). On failure err says why (e.g. the address is taken). */
ps_status ps_runtime_serve(ps_runtime *rt, const rpc_server_opts *server_opts,
                           const rpc_method *methods, size_t n_methods, char *err, size_t err_len);
/* "host:port" others reach this server at ("" before ps_runtime_serve). */
const char *ps_runtime_addr(const ps_runtime *rt);
int ps_runtime_port(const ps_runtime *rt);

/* Registers with the coordinator (retrying with backoff up to the register timeout),
 * fetches the ring (ring hook), and starts the heartbeat, ring-watch and (with a
 * models hook) registry-watch threads. For a process without an id it only starts the
 * watches it has hooks for. On failure err says why. */
ps_status ps_runtime_join(ps_runtime *rt, char *err, size_t err_len);

/* Fetches the ring now and delivers it if newer (a shard asked with a newer epoch
 * than it knows). At most one fetch per PS_RUNTIME_REFRESH_MIN_MS: a client sending
 * made-up epochs cannot turn every request into a coordinator call. Callable from
 * any thread, but not from inside a ring hook. */
void ps_runtime_refresh_ring(ps_runtime *rt);

/* What a server does once its context is ready: ps_runtime_serve, ps_runtime_join, and
 * then the bound port written to port_file (may be NULL), last, so that a script
 * waiting for the file finds the process registered. On failure err says why. */
ps_status ps_runtime_start(ps_runtime *rt, const rpc_server_opts *server_opts,
                           const rpc_method *methods, size_t n_methods, const char *port_file,
                           char *err, size_t err_len);

/* The channel to the coordinator (NULL without one), for the program's own calls. */
rpc_channel *ps_runtime_coordinator(ps_runtime *rt);
/* True while heartbeats reach the coordinator. */
bool ps_runtime_connected(const ps_runtime *rt);

/* Blocks until SIGINT or SIGTERM; logs it and returns the signal number. */
int ps_runtime_wait(ps_runtime *rt);

/* Stops the watches and heartbeats, then the server (in-flight calls get the server's
 * grace period). Idempotent. Hooks are not called after it returns. */
void ps_runtime_stop(ps_runtime *rt);
void ps_runtime_destroy(ps_runtime *rt); /* stops first; accepts NULL */

#endif
