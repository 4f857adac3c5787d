/* model_cmd.h: what the parts of `psctl model` share: the subcommand table (list and
 * show are in cmd_model.c, upload in cmd_upload.c), their options and the JSON form
 * of a registry tensor entry. The definitions are in cmd_model.c.
 */
#ifndef PS_PSCTL_MODEL_CMD_H
#define PS_PSCTL_MODEL_CMD_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "psctl.h"

/* The `psctl model` subcommands, indexes into psctl_model_cmds. */
enum {
    PSCTL_MODEL_UPLOAD,
    PSCTL_MODEL_LIST,
    PSCTL_MODEL_SHOW,
    PSCTL_MODEL_VERSIONS,
    PSCTL_MODEL_DELETE,
    PSCTL_MODEL_OPTIMIZER,
    PSCTL_MODEL_PUBLISH,
    PSCTL_MODEL_N_CMDS
};
extern const psctl_cmd psctl_model_cmds[PSCTL_MODEL_N_CMDS];

/* `psctl model upload` (cmd_upload.c) and `psctl model delete` (cmd_delete.c). */
int psctl_model_upload(psctl *p, int argc, char **argv);
int psctl_model_delete(psctl *p, int argc, char **argv);
/* `psctl model optimizer` (cmd_optimizer.c). */
int psctl_model_optimizer(psctl *p, int argc, char **argv);
/* `psctl model publish` (cmd_publish.c). */
int psctl_model_publish(psctl *p, int argc, char **argv);

/* The model commands' own options (getopt_long `val`s). */
enum {
    PSCTL_MODEL_OPT_VERSION = PSCTL_OPT_FIRST_PRIVATE,
    PSCTL_MODEL_OPT_CHUNK_FLOATS,
    PSCTL_MODEL_OPT_FORCE,
    PSCTL_MODEL_OPT_TENSOR,
    PSCTL_MODEL_OPT_TABLE,
    PSCTL_MODEL_OPT_TYPE
};

typedef struct psctl_model_opts {
    uint64_t version; /* 0 = latest / highest */
    int chunk_floats;
    bool force;         /* delete --force */
    const char *tensor; /* optimizer --tensor */
    const char *table;  /* optimizer --table */
    const char *type;   /* optimizer --type */
} psctl_model_opts;

/* Parses `psctl model <which>`'s options (`own`, may be NULL) into *o and its one
 * positional argument (`what`: "model", "model directory") into *ret_arg. Returns
 * PSCTL_EXIT_OK, PSCTL_HELP_SHOWN or PSCTL_EXIT_USAGE (after saying why). */
int psctl_model_parse(psctl *p, int which, int argc, char **argv, const struct option *own,
                      psctl_model_opts *o, const char *what, const char **ret_arg);

/* A psctl_option_fn filling a psctl_model_opts. */
int psctl_model_option(psctl *p, int opt, const char *arg, void *state);

/* A registry tensor entry as JSON: name, dtype, shape, floats, chunk_floats, chunks. */
json_t *psctl_model_tensor_json(const Ps__TensorInfo *t);

#endif
