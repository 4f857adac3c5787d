/* cmd_model.c: `psctl model upload|list|show`: loading a model directory into the
 * parameter servers (upload, in cmd_upload.c) and reading the coordinator's model
 * registry (list, show). This file also holds what the model commands share (see
 * model_cmd.h): the subcommand table and help, option parsing, a tensor as JSON.
 */
#include <stdlib.h>
#include <string.h>

#include "model_cmd.h"
#include "psctl.h"
#include "util.h"

#define MAX_CHUNK_FLOATS (4u << 20) /* 16 MiB of float32: well under the rpc message limit */

static int model_list(psctl *p, int argc, char **argv);
static int model_versions(psctl *p, int argc, char **argv);
static int model_show(psctl *p, int argc, char **argv);

static const char upload_help[] =
    "usage: psctl model upload DIR [--version N] [--chunk-floats N]\n"
    "Uploads a model directory (DIR/config.json, DIR/<version>/model.safetensors): checks\n"
    "the config and that every parameter tensor its layers use is in the weights file as\n"
    "F32 with the right shape, pushes each tensor to the shards that own its chunks\n"
    "(ASSIGN), then registers the version with the coordinator.\n"
    "  --version N        the version directory to upload (default: the highest number)\n"
    "  --chunk-floats N   floats per chunk, 1..4194304 (default 65536 = 256 KiB)\n"
    "JSON: {\"model\", \"version\", \"file\", \"tensors\": [{\"name\", \"shape\",\n"
    "\"floats\", \"bytes\", \"chunks\", \"chunk_floats\"}], \"floats\", \"bytes\", \"chunks\",\n"
    "\"shards\": [ids], \"epoch\", \"seconds\", \"warnings\": [..]}\n";

static const char list_help[] =
    "usage: psctl model list\n"
    "Every registered version of every model: name, version, tensors, parameters.\n"
    "JSON: {\"models\": [{\"name\", \"version\", \"latest\", \"parameters\",\n"
    "\"tensors\": [{\"name\", \"dtype\", \"shape\", \"chunk_floats\", \"chunks\"}]}]}\n";

static const char versions_help[] =
    "usage: psctl model versions MODEL\n"
    "The registered versions of one model (what model list shows, for that model only).\n"
    "Versions live side by side on the shards, each under keys of its own.\n"
    "JSON: as model list\n";

static const char delete_help[] =
    "usage: psctl model delete MODEL --version N [--force]\n"
    "Deletes one version of a model: the coordinator takes it out of the registry, then\n"
    "its chunks are freed on the shards. Refused (FAILED_PRECONDITION) while a live\n"
    "replica serves that version: register a newer version first (replicas move to it).\n"
    "  --version N   the version to delete (required: there is no default)\n"
    "  --force       delete even while a replica serves it (its answers then fail)\n"
    "JSON: {\"model\", \"version\", \"chunks\", \"freed_chunks\", \"freed_bytes\"}\n";

static const char optimizer_help[] =
    "usage: psctl model optimizer MODEL [--version N] [--tensor T | --table T] [--type KIND]\n"
    "                             [FIELD=VALUE ...]\n"
    "Shows or changes an optimizer in a model version's config.json (its training and\n"
    "tables fields): a dense tensor's own (made from the model's default when it has\n"
    "none), a table's, or the model's default. Training clients read the registry, so\n"
    "their next pushes use the change. With no --type and no FIELD=VALUE, shows it.\n"
    "  --version N   the version (default: the latest)\n"
    "  --tensor T    a dense tensor's optimizer\n"
    "  --table T     a sparse table's optimizer\n"
    "  --type KIND   sgd, adagrad, adam or ftrl: a new optimizer with that kind's defaults\n"
    "  FIELD=VALUE   lr, momentum, weight_decay, beta1, beta2, eps, initial_accumulator,\n"
    "                l1, l2, beta (those the kind uses)\n"
    "JSON: {\"model\", \"version\", \"target\", \"optimizer\"}\n";

static const char publish_help[] =
    "usage: psctl model publish MODEL [--version N] [--wait-s S]\n"
    "Publishes a consistent cut of a model version whose config.json says \"training\":\n"
    "{\"propagation\": \"consistent\"}: the coordinator parks the model's training workers\n"
    "between steps (no push in flight), the replicas serving it pull the whole version\n"
    "beside the one they serve, and when all have it they switch at once; then training\n"
    "goes on. Responses name the publish that computed them. Prints each phase.\n"
    "  --version N   the version (default: the latest)\n"
    "  --wait-s S    give up (nothing changes) after S seconds (default 60)\n"
    "JSON: {\"model\", \"version\", \"publish\", \"phases\": [{\"phase\", \"workers\",\n"
    "\"replicas\", \"elapsed_ms\"}]}\n";

static const char show_help[] =
    "usage: psctl model show MODEL [--version N]\n"
    "One registered model version (default: the latest): its tensors with shapes and\n"
    "chunking, and its config.json.\n"
    "  --version N        the version (default: the latest)\n"
    "JSON: {\"name\", \"version\", \"parameters\", \"tensors\": [..], \"config\": {..}}\n";

const psctl_cmd psctl_model_cmds[PSCTL_MODEL_N_CMDS] = {
    {"upload", "upload a model directory", upload_help, psctl_model_upload},
    {"list", "registered models", list_help, model_list},
    {"show", "one model version", show_help, model_show},
    {"versions", "the versions of one model", versions_help, model_versions},
    {"delete", "delete one model version", delete_help, psctl_model_delete},
    {"optimizer", "show or change an optimizer", optimizer_help, psctl_model_optimizer},
    {"publish", "publish a consistent cut", publish_help, psctl_model_publish},
};

static const char model_help[] =
    "usage: psctl model SUBCOMMAND\n"
    "Models: uploading weights and the coordinator's registry.\n"
    "  upload DIR [--version N] [--chunk-floats N]   push a model directory and register it\n"
    "  list                                          every registered model version\n"
    "  show MODEL [--version N]                      one version's tensors and config\n"
    "  versions MODEL                                the registered versions of a model\n"
    "  delete MODEL --version N [--force]            delete a version, freeing its chunks\n"
    "  optimizer MODEL [--tensor T|--table T] [--type KIND] [FIELD=VALUE ...]\n"
    "                                                show or change an optimizer\n"
    "  publish MODEL [--version N]                   publish a consistent cut to the replicas\n";

int psctl_cmd_model(psctl *p, int argc, char **argv) {
    return psctl_dispatch(p, "model", model_help, psctl_model_cmds, PSCTL_MODEL_N_CMDS, argc, argv);
}

/* ================================================================ options === */

int psctl_model_option(psctl *p, int opt, const char *arg, void *state) {
    psctl_model_opts *o = state;
    switch (opt) {
    case PSCTL_MODEL_OPT_VERSION:
        if (!ps_parse_u64(arg, &o->version) || o->version == 0)
            return psctl_usage(p, "--version wants a positive integer, got '%s'", arg);
        return PSCTL_EXIT_OK;
    case PSCTL_MODEL_OPT_FORCE:
        o->force = true;
        return PSCTL_EXIT_OK;
    case PSCTL_MODEL_OPT_TENSOR:
        o->tensor = arg;
        return PSCTL_EXIT_OK;
    case PSCTL_MODEL_OPT_TABLE:
        o->table = arg;
        return PSCTL_EXIT_OK;
    case PSCTL_MODEL_OPT_TYPE:
        o->type = arg;
        return PSCTL_EXIT_OK;
    case PSCTL_MODEL_OPT_CHUNK_FLOATS:
        if (!ps_parse_int(arg, 1, (int)MAX_CHUNK_FLOATS, &o->chunk_floats))
            return psctl_usage(p, "--chunk-floats wants 1..%u, got '%s'", MAX_CHUNK_FLOATS, arg);
        return PSCTL_EXIT_OK;
    default:
        return psctl_usage(p, "unexpected option");
    }
}

int psctl_model_parse(psctl *p, int which, int argc, char **argv, const struct option *own,
                      psctl_model_opts *o, const char *what, const char **ret_arg) {
    int first = 0;
    int rc =
        psctl_parse(p, &psctl_model_cmds[which], argc, argv, own, psctl_model_option, o, &first);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (argc - first != 1)
        return argc - first == 0 ? psctl_usage(p, "which %s?", what)
                                 : psctl_usage(p, "one %s at a time", what);
    *ret_arg = argv[first];
    return PSCTL_EXIT_OK;
}

json_t *psctl_model_tensor_json(const Ps__TensorInfo *t) {
    return json_pack("{s:s, s:s, s:o, s:I, s:I, s:I}", "name", t->name, "dtype", t->dtype, "shape",
                     psctl_shape_json(t->shape, t->n_shape), "floats",
                     (json_int_t)ps_tensor_count(t), "chunk_floats", (json_int_t)t->chunk_floats,
                     "chunks", (json_int_t)t->chunks);
}

static uint64_t model_parameters(const Ps__ModelInfo *m) {
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        total += ps_tensor_count(m->tensors[i]);
    return total;
}

/* ================================================================ list === */

static int cmp_model(const void *a, const void *b) {
    const Ps__ModelInfo *x = *(Ps__ModelInfo *const *)a, *y = *(Ps__ModelInfo *const *)b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->version < y->version ? -1 : x->version > y->version;
}

static int print_list(psctl *p, const Ps__ListModelsResponse *l);

/* Lists every registered version, or only those of model `only` (NOT_FOUND when it
 * has none). */
static int print_models(psctl *p, const char *only) {
    Ps__ListModelsRequest req = PS__LIST_MODELS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = psctl_coord_call(p, "/ps.Coordinator/ListModels", &req.base,
                              &ps__list_models_response__descriptor, &resp, "list models");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__ListModelsResponse *l = (Ps__ListModelsResponse *)resp;
    if (only) { /* keep that model's entries (the message still owns every entry) */
        size_t kept = 0;
        for (size_t i = 0; i < l->n_models; i++) {
            if (strcmp(l->models[i]->name, only) == 0) {
                Ps__ModelInfo *keep = l->models[i];
                l->models[i] = l->models[kept];
                l->models[kept++] = keep;
            }
        }
        if (kept == 0) {
            protobuf_c_message_free_unpacked(resp, NULL);
            return psctl_fail(p, "NOT_FOUND", "no model '%s' is registered", only);
        }
        qsort(l->models, kept, sizeof *l->models, cmp_model);
        size_t all = l->n_models;
        l->n_models = kept;
        rc = print_list(p, l);
        l->n_models = all; /* so that every entry is freed */
    } else {
        if (l->n_models > 0) /* no models: the list may be NULL, which qsort must not get */
            qsort(l->models, l->n_models, sizeof *l->models, cmp_model);
        rc = print_list(p, l);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int model_list(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc =
        psctl_parse(p, &psctl_model_cmds[PSCTL_MODEL_LIST], argc, argv, NULL, NULL, NULL, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (first < argc)
        return psctl_usage(p, "unexpected argument '%s'", argv[first]);
    return print_models(p, NULL);
}

static int model_versions(psctl *p, int argc, char **argv) {
    psctl_model_opts o = {0};
    const char *name = NULL;
    int rc = psctl_model_parse(p, PSCTL_MODEL_VERSIONS, argc, argv, NULL, &o, "model", &name);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    return print_models(p, name);
}

/* The table (or JSON) of the entries of l, sorted by name then version. */
static int print_list(psctl *p, const Ps__ListModelsResponse *l) {
    int rc = PSCTL_EXIT_OK;
    if (p->json) {
        json_t *models = json_array();
        for (size_t i = 0; i < l->n_models; i++) {
            const Ps__ModelInfo *m = l->models[i];
            bool latest = i + 1 == l->n_models || strcmp(l->models[i + 1]->name, m->name) != 0;
            json_t *tensors = json_array();
            for (size_t k = 0; k < m->n_tensors; k++)
                json_array_append_new(tensors, psctl_model_tensor_json(m->tensors[k]));
            json_array_append_new(models,
                                  json_pack("{s:s, s:I, s:b, s:I, s:o}", "name", m->name, "version",
                                            (json_int_t)m->version, "latest", latest, "parameters",
                                            (json_int_t)model_parameters(m), "tensors", tensors));
        }
        rc = psctl_emit_json(p, json_pack("{s:o}", "models", models));
    } else if (l->n_models == 0) {
        printf("no models registered\n");
    } else {
        static const char *const header[] = {"MODEL", "VERSION", "TENSORS", "PARAMETERS", "SIZE"};
        psctl_table *t = psctl_table_create(5, header);
        for (size_t i = 0; i < l->n_models; i++) {
            const Ps__ModelInfo *m = l->models[i];
            bool latest = i + 1 == l->n_models || strcmp(l->models[i + 1]->name, m->name) != 0;
            char version[48], tensors[32], params[32], size[32];
            snprintf(version, sizeof version, "%llu%s", (unsigned long long)m->version,
                     latest ? " (latest)" : "");
            snprintf(tensors, sizeof tensors, "%zu", m->n_tensors);
            snprintf(params, sizeof params, "%llu", (unsigned long long)model_parameters(m));
            psctl_bytes_str(model_parameters(m) * 4, size, sizeof size);
            const char *row[] = {m->name, version, tensors, params, size};
            psctl_table_add(t, row);
        }
        psctl_table_print(t, stdout);
        psctl_table_destroy(t);
    }
    return rc;
}

/* ================================================================ show === */

static int model_show(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_MODEL_OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    psctl_model_opts o = {0};
    const char *name = NULL;
    int rc = psctl_model_parse(p, PSCTL_MODEL_SHOW, argc, argv, own, &o, "model", &name);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    Ps__GetModelRequest req = PS__GET_MODEL_REQUEST__INIT;
    req.name = (char *)name;
    req.version = o.version;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "get model %s", name);
    rc = psctl_coord_call(p, "/ps.Coordinator/GetModel", &req.base, &ps__model_info__descriptor,
                          &resp, what);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    const Ps__ModelInfo *m = (const Ps__ModelInfo *)resp;
    if (p->json) {
        json_t *tensors = json_array();
        for (size_t k = 0; k < m->n_tensors; k++)
            json_array_append_new(tensors, psctl_model_tensor_json(m->tensors[k]));
        json_t *config = json_loads(m->config_json, 0, NULL);
        rc = psctl_emit_json(p, json_pack("{s:s, s:I, s:I, s:o, s:o}", "name", m->name, "version",
                                          (json_int_t)m->version, "parameters",
                                          (json_int_t)model_parameters(m), "tensors", tensors,
                                          "config", config ? config : json_string(m->config_json)));
    } else {
        printf("model %s version %llu: %zu tensors, %llu parameters\n", m->name,
               (unsigned long long)m->version, m->n_tensors,
               (unsigned long long)model_parameters(m));
        static const char *const header[] = {"TENSOR", "DTYPE",  "SHAPE",
                                             "FLOATS", "CHUNKS", "CHUNK_FLOATS"};
        psctl_table *t = psctl_table_create(6, header);
        for (size_t k = 0; k < m->n_tensors; k++) {
            const Ps__TensorInfo *ti = m->tensors[k];
            char shape[256], floats[32], chunks[32], cf[32];
            psctl_shape_str(ti->shape, ti->n_shape, shape, sizeof shape);
            snprintf(floats, sizeof floats, "%llu", (unsigned long long)ps_tensor_count(ti));
            snprintf(chunks, sizeof chunks, "%u", ti->chunks);
            snprintf(cf, sizeof cf, "%u", ti->chunk_floats);
            const char *row[] = {ti->name, ti->dtype, shape, floats, chunks, cf};
            psctl_table_add(t, row);
        }
        psctl_table_print(t, stdout);
        psctl_table_destroy(t);
        printf("\nconfig.json:\n%s\n", m->config_json);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
