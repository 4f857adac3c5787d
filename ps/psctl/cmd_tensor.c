/* cmd_tensor.c: `psctl pull`, and what the tensor commands (locate, push, pull) share:
 * parsing their options and MODEL TENSOR arguments, and floats from flag text (see
 * tensor_cmd.h). locate is in cmd_locate.c, push in cmd_push.c.
 *
 * pull reads the registry entry (GetModel) for the tensor's shape and chunking and
 * pulls every chunk from the shard the ring says owns it.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "psctl.h"
#include "tensor_cmd.h"
#include "util.h"

static int pull_run(psctl *p, int argc, char **argv);

static const psctl_cmd pull_cmd = {
    "pull", "print a tensor's values",
    "usage: psctl pull MODEL TENSOR [--version N] [--file PATH]\n"
    "Pulls a whole tensor from the shards that own its chunks and prints its values\n"
    "(flat index, then 8 values a line), or writes them to a file.\n"
    "  --version N   the model version whose registry entry to use (default: latest)\n"
    "  --file PATH   write raw little-endian float32 to PATH instead of printing\n"
    "JSON: {\"model\", \"version\", \"tensor\", \"shape\", \"floats\", \"version_sum\",\n"
    "\"values\": [..]} (no \"values\" with --file)\n",
    pull_run};

int psctl_cmd_pull(psctl *p, int argc, char **argv) {
    return pull_run(p, argc, argv);
}

/* ================================================================ options === */

static int tensor_option(psctl *p, int opt, const char *arg, void *state) {
    psctl_tensor_opts *o = state;
    switch (opt) {
    case PSCTL_TENSOR_OPT_VERSION:
        if (!ps_parse_u64(arg, &o->version) || o->version == 0)
            return psctl_usage(p, "--version wants a positive integer, got '%s'", arg);
        return PSCTL_EXIT_OK;
    case PSCTL_TENSOR_OPT_CHECK:
        o->check = true;
        return PSCTL_EXIT_OK;
    case PSCTL_TENSOR_OPT_ADD:
    case PSCTL_TENSOR_OPT_ASSIGN: {
        int op = opt == PSCTL_TENSOR_OPT_ADD ? PS__PUSH_OP__PUSH_ADD : PS__PUSH_OP__PUSH_ASSIGN;
        if (o->op != -1 && o->op != op)
            return psctl_usage(p, "--add and --assign exclude each other");
        o->op = op;
        return PSCTL_EXIT_OK;
    }
    case PSCTL_TENSOR_OPT_VALUES:
        o->values = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case PSCTL_TENSOR_OPT_FILL:
        o->fill = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case PSCTL_TENSOR_OPT_FILE:
        o->file = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case PSCTL_TENSOR_OPT_CHUNKS:
        o->chunks = arg;
        return PSCTL_EXIT_OK;
    default:
        return psctl_usage(p, "unexpected option");
    }
}

/* Parses options and the MODEL TENSOR positionals. */
int psctl_tensor_parse(psctl *p, const psctl_cmd *cmd, int argc, char **argv,
                       const struct option *own, psctl_tensor_opts *o, const char **ret_model,
                       const char **ret_tensor) {
    int first = 0;
    int rc = psctl_parse(p, cmd, argc, argv, own, tensor_option, o, &first);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (argc - first < 2)
        return psctl_usage(p, "wants MODEL TENSOR");
    if (argc - first > 2)
        return psctl_usage(p, "unexpected argument '%s'", argv[first + 2]);
    *ret_model = argv[first];
    *ret_tensor = argv[first + 1];
    return PSCTL_EXIT_OK;
}

/* A float from flag text: the whole string must be a number (NaN and inf parse here,
 * to be refused with the other non-finite values). */
bool psctl_tensor_parse_float(const char *s, float *ret) {
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return false;
    char *end = NULL;
    errno = 0;
    float v = strtof(s, &end);
    while (end && (*end == ' ' || *end == '\t'))
        end++;
    if (end == s || *end || (errno == ERANGE && isfinite(v) && v != 0))
        return false;
    *ret = v;
    return true;
}

const char *psctl_tensor_nonfinite_name(float v) {
    return isnan(v) ? "NaN" : "infinite";
}

int psctl_tensor_open(psctl *p, const psctl_cmd *cmd, int argc, char **argv,
                      const struct option *own, psctl_tensor_opts *o, Ps__ModelInfo **ret_model,
                      const Ps__TensorInfo **ret_tensor) {
    const char *model = NULL, *tensor = NULL;
    int rc = psctl_tensor_parse(p, cmd, argc, argv, own, o, &model, &tensor);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    return psctl_find_tensor(p, model, o->version, tensor, ret_model, ret_tensor);
}

/* ================================================================ pull === */

static int pull_run(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_TENSOR_OPT_VERSION},
        {"file", required_argument, NULL, PSCTL_TENSOR_OPT_FILE},
        {NULL, 0, NULL, 0},
    };
    psctl_tensor_opts o = {.op = -1};
    Ps__ModelInfo *m = NULL;
    const Ps__TensorInfo *t = NULL;
    int rc = psctl_tensor_open(p, &pull_cmd, argc, argv, own, &o, &m, &t);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    const char *model = m->name;
    uint64_t count = ps_tensor_count(t), vsum = 0;
    float *values = malloc(count * sizeof *values + 1);
    if (!values) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory for %llu floats", (unsigned long long)count);
        goto out;
    }
    if ((rc = psctl_client(p)) != PSCTL_EXIT_OK)
        goto out;
    ps_status st = ps_client_pull_tensor(p->client, model, m->version, t, values, count, &vsum);
    if (st != PS_STATUS_OK) {
        rc = psctl_fail(p, ps_status_name(st), "pull %s/%s: %s", model, t->name,
                        ps_client_error(p->client));
        goto out;
    }
    if (o.file) {
        st = ps_write_file_atomic(o.file, values, count * sizeof *values);
        if (st != PS_STATUS_OK) {
            rc = psctl_fail(p, ps_status_name(st), "cannot write %s: %s", o.file, strerror(errno));
            goto out;
        }
    }
    char shape[256];
    psctl_shape_str(t->shape, t->n_shape, shape, sizeof shape);
    if (p->json) {
        json_t *doc = json_pack("{s:s, s:I, s:s, s:o, s:I, s:I}", "model", model, "version",
                                (json_int_t)m->version, "tensor", t->name, "shape",
                                psctl_shape_json(t->shape, t->n_shape), "floats", (json_int_t)count,
                                "version_sum", (json_int_t)vsum);
        if (doc && o.file) {
            json_object_set_new(doc, "file", json_string(o.file));
        } else if (doc) {
            json_t *a = json_array();
            for (uint64_t i = 0; a && i < count; i++)
                json_array_append_new(a, isfinite(values[i]) ? json_real(values[i]) : json_null());
            json_object_set_new(doc, "values", a);
        }
        rc = psctl_emit_json(p, doc);
    } else {
        printf("%s/%s version %llu, shape %s, %llu floats, chunk versions sum %llu\n", model,
               t->name, (unsigned long long)m->version, shape, (unsigned long long)count,
               (unsigned long long)vsum);
        if (o.file) {
            printf("written to %s (raw little-endian float32)\n", o.file);
        } else {
            for (uint64_t i = 0; i < count; i++) {
                if (i % 8 == 0)
                    printf("%s%8llu:", i ? "\n" : "", (unsigned long long)i);
                printf(" %.9g", (double)values[i]);
            }
            printf("\n");
        }
    }
out:
    free(values);
    ps__model_info__free_unpacked(m, NULL);
    return rc;
}
