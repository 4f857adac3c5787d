/* psctl.h: what the parts of psctl (the admin CLI) share: the invocation's context
 * (where the coordinator is, output mode, the open channel and client), the option
 * parsing every subcommand uses, error reporting, and output helpers (aligned text
 * tables for people, one JSON document for scripts).
 *
 * Exit codes, for every command: PSCTL_EXIT_OK (0) on success, PSCTL_EXIT_FAILED (1)
 * when the operation failed (the message on stderr names what failed and, for an RPC,
 * the gRPC code and the peer's details; with --json stdout also gets one document
 * {"error": {...}}), PSCTL_EXIT_USAGE (2) for a command line that cannot be run.
 */
#ifndef PS_PSCTL_PSCTL_H
#define PS_PSCTL_PSCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <getopt.h>
#include <jansson.h>

#include "coordinator.pb-c.h"
#include "psclient.h"
#include "rpc.h"
#include "status.h"

#define PSCTL_EXIT_OK 0
#define PSCTL_EXIT_FAILED 1
#define PSCTL_EXIT_USAGE 2
#define PSCTL_HELP_SHOWN (-1) /* psctl_parse printed --help: the command exits 0 */

#define PSCTL_DEFAULT_TIMEOUT_MS 5000

/* ================================================================ context === */

/* One invocation. Options given before the command and after it land here alike. */
typedef struct psctl {
    const char *coordinator_flag; /* --coordinator, or NULL */
    bool json;                    /* --json: one JSON document on stdout */
    int timeout_ms;               /* deadline of each coordinator call */
    char command[64];             /* "ring list", ... for messages */

    char coordinator[256]; /* resolved address, once psctl_connect ran */
    rpc_channel *coord;    /* to the coordinator; NULL until psctl_connect */
    ps_client *client;     /* ring-aware data client; NULL until psctl_client */
} psctl;

/* ================================================================ options === */

/* Option values (getopt_long `val`s): the common ones every subcommand accepts;
 * subcommands number their own from PSCTL_OPT_FIRST_PRIVATE. */
enum {
    PSCTL_OPT_HELP = 'h',
    PSCTL_OPT_JSON = 1000,
    PSCTL_OPT_COORDINATOR,
    PSCTL_OPT_TIMEOUT,
    PSCTL_OPT_FIRST_PRIVATE,
};

/* The lines of help text describing the common options. */
extern const char psctl_common_help[];

/* A subcommand: `help` is its --help text (usage line first). */
typedef struct psctl_cmd {
    const char *name;                            /* "list", "upload", ... */
    const char *summary;                         /* one line for listings */
    const char *help;                            /* full --help text, common options apart */
    int (*run)(psctl *p, int argc, char **argv); /* argv[0] is the name */
} psctl_cmd;

/* Handles one of a subcommand's own options; returns PSCTL_EXIT_OK, or
 * PSCTL_EXIT_USAGE after psctl_usage said why. */
typedef int (*psctl_option_fn)(psctl *p, int opt, const char *arg, void *state);

/* Parses a subcommand's options with getopt_long: the common ones plus `own` (a
 * table ending with a zero entry; may be NULL), each handled by `handle`. Options may
 * follow positional arguments. *ret_first gets the index in argv of the first
 * positional argument (getopt moves them to the end). Returns PSCTL_EXIT_OK to go on,
 * PSCTL_EXIT_USAGE, or PSCTL_HELP_SHOWN when --help was printed. */
int psctl_parse(psctl *p, const psctl_cmd *cmd, int argc, char **argv, const struct option *own,
                psctl_option_fn handle, void *state, int *ret_first);

/* Runs the subcommand named by argv[1] among `cmds` of a group like "ring" (argv[0]):
 * prints the group's help for --help, a usage error for a missing or unknown name. */
int psctl_dispatch(psctl *p, const char *group, const char *group_help, const psctl_cmd *cmds,
                   size_t n_cmds, int argc, char **argv);

/* ================================================================ errors === */

/* A usage error: "psctl CMD: message" and a hint to run --help; returns PSCTL_EXIT_USAGE. */
int psctl_usage(const psctl *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A failed operation: "psctl CMD: message" on stderr; with --json, also
 * {"error": {"command", "code", "message"}} on stdout. `code` is a gRPC/status name
 * such as "NOT_FOUND" (may be NULL). Returns PSCTL_EXIT_FAILED. */
int psctl_fail(const psctl *p, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A failed RPC: "<what>: <CODE>: <details>". Returns PSCTL_EXIT_FAILED. */
int psctl_fail_rpc(const psctl *p, const char *what, const rpc_result *res);

/* A warning on stderr (never on stdout, so --json output stays one document). */
void psctl_warn(const psctl *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ================================================================ coordinator === */

/* Resolves the coordinator address (--coordinator, $PS_COORDINATOR,
 * $PS_RUN_DIR/cluster.env, run/cluster.env) and opens the channel. Returns an exit
 * code (USAGE when no address is configured, saying how to give one). */
int psctl_connect(psctl *p);

/* psctl_connect, then a ring-aware data client. Returns an exit code. */
int psctl_client(psctl *p);

/* A unary call to the coordinator with the invocation's deadline. On failure prints
 * "<what>: coordinator ADDR: CODE: details" and returns PSCTL_EXIT_FAILED. */
int psctl_coord_call(psctl *p, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_type, ProtobufCMessage **ret_resp,
                     const char *what);

/* GetModel (version 0 = latest) and the named tensor in it. Prints the failure (a
 * NOT_FOUND that lists the model's tensors for an unknown tensor). On success the
 * caller frees *ret_model with ps__model_info__free_unpacked. */
int psctl_find_tensor(psctl *p, const char *model, uint64_t version, const char *tensor,
                      Ps__ModelInfo **ret_model, const Ps__TensorInfo **ret_tensor);

/* ================================================================ output === */

/* Prints `doc` (consumed) as one JSON document and a newline on stdout. A NULL doc
 * (an allocation failed while building it) is reported as a failure. */
int psctl_emit_json(const psctl *p, json_t *doc);

/* A text table: add the header, then rows of strings; print pads columns. */
typedef struct psctl_table psctl_table;
psctl_table *psctl_table_create(size_t n_cols, const char *const *header);
/* Appends a row of n_cols strings (copied). */
void psctl_table_add(psctl_table *t, const char *const *cells);
void psctl_table_print(const psctl_table *t, FILE *out);
void psctl_table_destroy(psctl_table *t);

/* Formats a shape as "[a, b]" into buf. */
const char *psctl_shape_str(const int64_t *dims, size_t n, char *buf, size_t cap);
/* Formats a byte count as "1.5 MiB". */
const char *psctl_bytes_str(uint64_t bytes, char *buf, size_t cap);
/* A JSON array of integers from a shape. */
json_t *psctl_shape_json(const int64_t *dims, size_t n);

/* ================================================================ nodes === */

/* "shard" or "serve". */
const char *psctl_role_name(Ps__NodeRole role);
/* A node as JSON: id, role, addr, weight, in_ring, waiting, alive, keys, seq,
 * last_heartbeat_ms (null when never heard from since the coordinator started); a
 * shard also joining, draining, synced_epoch (a ring change, ring_cmd.h). */
json_t *psctl_node_json(const Ps__NodeInfo *n);
/* "120 ms ago", "3.2 s ago", "never". */
const char *psctl_heartbeat_age(const Ps__NodeInfo *n, char *buf, size_t cap);
/* Shards first, then replicas; ids in version order (shard-2 before shard-10). */
void psctl_nodes_sort(Ps__Ring *ring);
/* Asks the shard at addr for its Health (*ret_health: free with
 * protobuf_c_message_free_unpacked); on failure res says why. */
ps_status psctl_shard_health(psctl *p, const char *addr, Ps__HealthResponse **ret_health,
                             rpc_result *res);

/* The sparse tables of every live shard on the ring, from their Health (status): a
 * table per (model, table) with rows and bytes in all and rows per shard. Prints them,
 * or with json, returns a JSON array (NULL on no memory). */
void psctl_tables_print(psctl *p, const Ps__Ring *ring);
json_t *psctl_tables_json(psctl *p, const Ps__Ring *ring);

/* A usage error when a command that takes none got positional arguments. */
int psctl_no_positionals(psctl *p, int argc, char **argv, int first);

/* ================================================================ commands === */

int psctl_cmd_ring(psctl *p, int argc, char **argv);
int psctl_cmd_status(psctl *p, int argc, char **argv);
int psctl_cmd_model(psctl *p, int argc, char **argv);
int psctl_cmd_locate(psctl *p, int argc, char **argv);
int psctl_cmd_push(psctl *p, int argc, char **argv);
int psctl_cmd_pull(psctl *p, int argc, char **argv);

#endif
