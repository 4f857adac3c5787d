/* cmd_optimizer.c: `psctl model optimizer MODEL [--version N] [--tensor T | --table T]
 * [--type KIND] [FIELD=VALUE ...]`: shows an optimizer from a model version's
 * config.json, or asks the coordinator to change it (SetOptimizer: the coordinator
 * edits and checks the config under its lock, so two edits never lose each other).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_cmd.h"
#include "psctl.h"
#include "train_config.h"

/* The optimizer o names (tensor, table or default) in m's config; false when none. */
static bool find_optimizer(const Ps__ModelInfo *m, const psctl_model_opts *o, optim_spec *ret,
                           char *err, size_t err_len) {
    train_config *cfg = NULL;
    if (train_config_parse(m->config_json, strlen(m->config_json), &cfg, err, err_len) !=
        PS_STATUS_OK)
        return false;
    bool found = false;
    train_table t;
    if (o->table && (found = train_config_table_find(cfg, o->table, &t)))
        *ret = t.optimizer;
    else if (!o->table)
        found = train_config_optimizer(cfg, o->tensor ? o->tensor : "", ret);
    train_config_destroy(cfg);
    if (!found)
        snprintf(err, err_len, "%s%s has no optimizer", o->table ? "table " : "",
                 o->table    ? o->table
                 : o->tensor ? o->tensor
                             : "the model");
    return found && ret->kind != OPTIM_NONE;
}

static int print_optimizer(psctl *p, const Ps__ModelInfo *m, const psctl_model_opts *o) {
    optim_spec spec;
    char err[512] = "", text[512];
    const char *target = o->table ? o->table : o->tensor ? o->tensor : "(default)";
    if (!find_optimizer(m, o, &spec, err, sizeof err)) {
        if (p->json)
            return psctl_emit_json(p, json_pack("{s:s, s:I, s:s, s:n}", "model", m->name, "version",
                                                (json_int_t)m->version, "target", target,
                                                "optimizer"));
        printf("model %s version %llu: %s\n", m->name, (unsigned long long)m->version, err);
        return PSCTL_EXIT_OK;
    }
    optim_spec_format(&spec, text, sizeof text);
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:I, s:s, s:s}", "model", m->name, "version",
                                            (json_int_t)m->version, "target", target, "optimizer",
                                            text));
    printf("model %s version %llu %s%s: %s\n", m->name, (unsigned long long)m->version,
           o->table    ? "table "
           : o->tensor ? "tensor "
                       : "",
           target, text);
    return PSCTL_EXIT_OK;
}

/* FIELD=VALUE arguments into the request's arrays (which point into argv and vals). */
static int parse_fields(psctl *p, int n, char **args, Ps__SetOptimizerRequest *req, char **names,
                        double *vals) {
    for (int i = 0; i < n; i++) {
        char *eq = strchr(args[i], '=');
        if (!eq || eq == args[i])
            return psctl_usage(p, "want FIELD=VALUE, got '%s'", args[i]);
        *eq = '\0';
        char *end = NULL;
        errno = 0;
        vals[i] = strtod(eq + 1, &end);
        if (errno || end == eq + 1 || *end || !isfinite(vals[i]))
            return psctl_usage(p, "%s wants a finite number, got '%s'", args[i], eq + 1);
        names[i] = args[i];
    }
    req->n_fields = req->n_values = (size_t)n;
    req->fields = names;
    req->values = vals;
    return PSCTL_EXIT_OK;
}

int psctl_model_optimizer(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_MODEL_OPT_VERSION},
        {"tensor", required_argument, NULL, PSCTL_MODEL_OPT_TENSOR},
        {"table", required_argument, NULL, PSCTL_MODEL_OPT_TABLE},
        {"type", required_argument, NULL, PSCTL_MODEL_OPT_TYPE},
        {NULL, 0, NULL, 0},
    };
    psctl_model_opts o = {0};
    int first = 0;
    int rc = psctl_parse(p, &psctl_model_cmds[PSCTL_MODEL_OPTIMIZER], argc, argv, own,
                         psctl_model_option, &o, &first);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    if (first >= argc)
        return psctl_usage(p, "which model?");
    if (o.tensor && o.table)
        return psctl_usage(p, "name a tensor or a table, not both");
    int n_fields = argc - first - 1;
    if (n_fields > 16)
        return psctl_usage(p, "at most 16 FIELD=VALUE at once");
    if ((rc = psctl_client(p)) != PSCTL_EXIT_OK)
        return rc;
    ProtobufCMessage *resp = NULL;
    if (n_fields == 0 && !o.type) { /* show */
        Ps__GetModelRequest req = PS__GET_MODEL_REQUEST__INIT;
        req.name = argv[first];
        req.version = o.version;
        rc = psctl_coord_call(p, "/ps.Coordinator/GetModel", &req.base, &ps__model_info__descriptor,
                              &resp, "read the model");
    } else {
        Ps__SetOptimizerRequest req = PS__SET_OPTIMIZER_REQUEST__INIT;
        char *names[16];
        double vals[16];
        req.model = argv[first];
        req.version = o.version;
        req.tensor = (char *)(o.tensor ? o.tensor : "");
        req.table = (char *)(o.table ? o.table : "");
        req.type = (char *)(o.type ? o.type : "");
        if ((rc = parse_fields(p, n_fields, argv + first + 1, &req, names, vals)) != PSCTL_EXIT_OK)
            return rc;
        rc = psctl_coord_call(p, "/ps.Coordinator/SetOptimizer", &req.base,
                              &ps__model_info__descriptor, &resp, "change the optimizer");
    }
    if (rc != PSCTL_EXIT_OK)
        return rc;
    rc = print_optimizer(p, (const Ps__ModelInfo *)resp, &o);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
