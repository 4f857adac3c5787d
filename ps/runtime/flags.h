/* flags.h: command-line flags for every program, from one table.
 *
 * A program declares its flags once, as an array of ps_flag (name, type, where the
 * value goes, range, help). From that table ps_flags_parse parses argv strictly
 * (whole-string numbers within range, required flags present), prints `--help`, and
 * ps_flags_describe renders the effective configuration for the start-up log. The
 * program's usage text, its checks and its start-up table can then never disagree.
 *
 * Also here: finding the coordinator's address (flag, then $PS_COORDINATOR, then
 * run/cluster.env), and the two helpers servers use to tell scripts where they are.
 * These print nothing and exit nothing: they return a status and fill an error text.
 */
#ifndef PS_RUNTIME_FLAGS_H
#define PS_RUNTIME_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define PS_FLAGS_MAX 64 /* flags in one table */

typedef enum ps_flag_type {
    PS_FLAG_STRING = 0, /* value: const char **; kept pointing into argv */
    PS_FLAG_INT = 1,    /* value: int *; within [min, max] */
    PS_FLAG_U64 = 2,    /* value: uint64_t *; within [min, max] (as unsigned) */
    PS_FLAG_BOOL = 3,   /* value: bool *; takes no argument, sets true */
} ps_flag_type;

typedef struct ps_flag {
    const char *name;    /* long name without the dashes, e.g. "listen" */
    ps_flag_type type;   /* how the argument is parsed */
    void *value;         /* where it goes; holds the default before parsing */
    int64_t min, max;    /* range of INT and U64 flags (both 0: no range check) */
    const char *metavar; /* the argument's name in --help, e.g. "HOST:PORT" */
    const char *help;    /* one line; the default is shown after it */
    bool required;       /* parsing fails when the flag is absent */
} ps_flag;

typedef enum ps_flags_result {
    PS_FLAGS_CONTINUE = -1, /* parsed: go on */
    PS_FLAGS_EXIT_OK = 0,   /* --help was printed to `out`: exit 0 */
    PS_FLAGS_EXIT_USAGE = 2 /* a usage error; the message is in err: exit 2 */
} ps_flags_result;

/* Parses argv against `flags` (n of them). --help/-h writes usage to `out` (a FILE *,
 * may be NULL to skip). On a usage error `err` gets "PROG: what was wrong". Positional
 * arguments are refused. */
ps_flags_result ps_flags_parse(const char *prog, const char *summary, const ps_flag *flags,
                               size_t n, int argc, char **argv, void *out, char *err,
                               size_t err_len);

/* Writes the usage text (what --help prints) into buf. */
void ps_flags_usage(const char *prog, const char *summary, const ps_flag *flags, size_t n,
                    char *buf, size_t cap);

/* The effective configuration, "--name value" per flag separated by single spaces, for
 * the start-up log line. */
void ps_flags_describe(const ps_flag *flags, size_t n, char *buf, size_t cap);

/* The coordinator's address without messages: `flag` if non-empty, else
 * $PS_COORDINATOR, else COORDINATOR= in run/cluster.env. NOT_FOUND with none;
 * OUT_OF_RANGE when it does not fit. */
ps_status ps_coordinator_addr(const char *flag, char *buf, size_t cap);

/* The coordinator's address: `flag` if non-empty, else $PS_COORDINATOR, else the
 * COORDINATOR= line of run/cluster.env in the current directory. NOT_FOUND with none
 * (err says how to name one); OUT_OF_RANGE when it does not fit in buf. */
ps_status ps_flags_coordinator(const char *flag, char *buf, size_t cap, char *err, size_t err_len);

/* Reads `key=value` from a KEY=VALUE file (e.g. run/cluster.env); NOT_FOUND if absent. */
ps_status ps_env_file_get(const char *path, const char *key, char *buf, size_t cap);

/* The address a server tells others: the host it listens on (127.0.0.1 for a wildcard
 * or empty host) with the port it got. */
void ps_advertise_addr(const char *listen, int port, char *buf, size_t cap);

/* Writes "<port>\n" to path atomically, for scripts that wait for a server to start. */
ps_status ps_write_port_file(const char *path, int port);

#endif
