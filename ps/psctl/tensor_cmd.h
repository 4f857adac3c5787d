/* tensor_cmd.h: what psctl's tensor commands share (locate in cmd_locate.c, push in
 * cmd_push.c, pull in cmd_tensor.c): their option values, the parsing of their
 * options and MODEL TENSOR arguments, and reading floats from flag text. The
 * definitions are in cmd_tensor.c.
 */
#ifndef PS_PSCTL_TENSOR_CMD_H
#define PS_PSCTL_TENSOR_CMD_H

#include <stdbool.h>
#include <stdint.h>

#include "psctl.h"

/* The tensor commands' own options (getopt_long `val`s); each command's table lists
 * the ones it takes. */
enum {
    PSCTL_TENSOR_OPT_VERSION = PSCTL_OPT_FIRST_PRIVATE,
    PSCTL_TENSOR_OPT_CHECK,
    PSCTL_TENSOR_OPT_ADD,
    PSCTL_TENSOR_OPT_ASSIGN,
    PSCTL_TENSOR_OPT_VALUES,
    PSCTL_TENSOR_OPT_FILL,
    PSCTL_TENSOR_OPT_FILE,
    PSCTL_TENSOR_OPT_CHUNKS,
};

/* The options' values; start from {.op = -1}. */
typedef struct psctl_tensor_opts {
    uint64_t version;   /* 0 = latest */
    bool check;         /* locate --check */
    int op;             /* -1 unset, else a Ps__PushOp */
    const char *values; /* --values text */
    const char *fill;   /* --fill text */
    const char *file;   /* --file path */
    int sources;        /* how many of --values/--fill/--file */
    const char *chunks; /* push --chunks list, or NULL */
} psctl_tensor_opts;

/* Parses options (the common ones plus `own`) into *o and the MODEL TENSOR
 * positionals. Returns PSCTL_EXIT_OK, PSCTL_EXIT_USAGE or PSCTL_HELP_SHOWN, as
 * psctl_parse does. */
int psctl_tensor_parse(psctl *p, const psctl_cmd *cmd, int argc, char **argv,
                       const struct option *own, psctl_tensor_opts *o, const char **ret_model,
                       const char **ret_tensor);

/* psctl_tensor_parse, then the registry entry of the model (psctl_find_tensor, at
 * o->version) and its tensor. Returns PSCTL_EXIT_OK with *ret_model (free it with
 * ps__model_info__free_unpacked) and *ret_tensor set, PSCTL_HELP_SHOWN after --help,
 * or an exit code after saying what failed. */
int psctl_tensor_open(psctl *p, const psctl_cmd *cmd, int argc, char **argv,
                      const struct option *own, psctl_tensor_opts *o, Ps__ModelInfo **ret_model,
                      const Ps__TensorInfo **ret_tensor);

/* A float from flag text: the whole string must be a number (NaN and inf parse here,
 * to be refused with the other non-finite values). */
bool psctl_tensor_parse_float(const char *s, float *ret);

/* "NaN" or "infinite", for messages refusing a non-finite value. */
const char *psctl_tensor_nonfinite_name(float v);

#endif
