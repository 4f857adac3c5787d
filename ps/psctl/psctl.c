/* psctl.c: psctl, the admin CLI of the parameter-server cluster: main, the command
 * table, option parsing shared by every subcommand, finding and calling the
 * coordinator, and error reporting.
 *
 * Each subcommand lives in its own file (cmd_ring.c, cmd_model.c, cmd_tensor.c) and
 * is a function of (context, argc, argv) returning an exit code. Common options
 * (--coordinator, --json, --timeout-ms, --help) are accepted before the command and
 * after it, so `psctl --json ring list` and `psctl ring list --json` both work.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "psctl.h"
#include "util.h"

const char psctl_common_help[] =
    "common options (before or after the command):\n"
    "  --coordinator HOST:PORT  the coordinator (default: $PS_COORDINATOR, then COORDINATOR=\n"
    "                           in $PS_RUN_DIR/cluster.env, then in ./run/cluster.env)\n"
    "  --json                   print one JSON document on stdout instead of tables\n"
    "  --timeout-ms N           deadline of each coordinator call (default 5000)\n"
    "  -h, --help               this text\n"
    "exit status: 0 success, 1 the operation failed (why on stderr), 2 usage error\n";

static const char main_help[] =
    "usage: psctl [options] COMMAND [ARGS]\n"
    "Administers a parameter-server cluster through its coordinator: ring membership,\n"
    "models, cluster status, where keys live, and pushing/pulling tensors by hand.\n"
    "\n"
    "commands:\n"
    "  ring list                         shards on the ring: epoch, address, weight, alive,\n"
    "                                    keys, and the change in progress\n"
    "  ring add --id ID --addr HOST:PORT [--weight W] [--balanced] [--no-wait]\n"
    "                                    put a shard on the ring, copying its keys to it\n"
    "  ring drain --id ID [--no-wait]    move a shard's keys away, then take it off\n"
    "  ring remove --id ID [--force]     take an empty (or, --force, dead) node out\n"
    "  ring cancel                       cancel the join or drain in progress\n"
    "  model upload DIR [--version N] [--chunk-floats N]\n"
    "                                    push a model directory's weights and register it\n"
    "  model list                        every registered model version\n"
    "  model versions MODEL              the versions of one model\n"
    "  model show MODEL [--version N]    one version's tensors and config\n"
    "  model delete MODEL --version N [--force]\n"
    "                                    delete a version, freeing its chunks\n"
    "  model optimizer MODEL [--tensor T|--table T] [--type KIND] [FIELD=VALUE ...]\n"
    "                                    show or change an optimizer (config.json)\n"
    "  model publish MODEL [--version N] publish a consistent cut to the replicas\n"
    "  status                            epoch, every node with its heartbeat, models\n"
    "  locate MODEL TENSOR [--version N] [--check]\n"
    "                                    each chunk's key and owning shard\n"
    "  push MODEL TENSOR (--add|--assign) (--values V,..|--fill X|--file PATH)\n"
    "                                    push a whole tensor's worth of floats\n"
    "  pull MODEL TENSOR [--version N] [--file PATH]\n"
    "                                    print (or save) a tensor's values\n"
    "\n"
    "`psctl COMMAND --help` describes a command.\n"
    "\n";

/* ================================================================ errors === */

static void vreport(const psctl *p, const char *kind, const char *fmt, va_list ap) {
    fprintf(stderr, "psctl%s%s: %s", p->command[0] ? " " : "", p->command, kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int psctl_usage(const psctl *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(p, "", fmt, ap);
    va_end(ap);
    fprintf(stderr, "run 'psctl%s%s --help' for usage\n", p->command[0] ? " " : "", p->command);
    return PSCTL_EXIT_USAGE;
}

void psctl_warn(const psctl *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(p, "warning: ", fmt, ap);
    va_end(ap);
}

int psctl_fail(const psctl *p, const char *code, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "psctl%s%s: %s\n", p->command[0] ? " " : "", p->command, msg);
    if (p->json) {
        json_t *doc = json_pack("{s:{s:s, s:s, s:s}}", "error", "command", p->command, "code",
                                code ? code : "FAILED", "message", msg);
        if (doc) {
            json_dumpf(doc, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
            json_decref(doc);
        }
    }
    return PSCTL_EXIT_FAILED;
}

int psctl_fail_rpc(const psctl *p, const char *what, const rpc_result *res) {
    const char *hint = "";
    if (res->grpc_code == 14 /* UNAVAILABLE */)
        hint = " (is it running? `scripts/cluster status` shows a local cluster)";
    else if (res->grpc_code == 4 /* DEADLINE_EXCEEDED */)
        hint = " (no answer in time; --timeout-ms gives it longer)";
    return psctl_fail(p, rpc_code_name(res->grpc_code), "%s: %s: %s%s", what,
                      rpc_code_name(res->grpc_code),
                      res->details[0] ? res->details : "(no details)", hint);
}

/* ================================================================ options === */

/* Handles a common option; returns an exit code, or -1 for "not a common option". */
static int common_option(psctl *p, int opt, const char *arg) {
    switch (opt) {
    case PSCTL_OPT_JSON:
        p->json = true;
        return PSCTL_EXIT_OK;
    case PSCTL_OPT_COORDINATOR:
        if (!*arg)
            return psctl_usage(p, "--coordinator wants HOST:PORT");
        p->coordinator_flag = arg;
        return PSCTL_EXIT_OK;
    case PSCTL_OPT_TIMEOUT:
        if (!ps_parse_int(arg, 1, 3600000, &p->timeout_ms))
            return psctl_usage(p, "--timeout-ms wants 1..3600000, got '%s'", arg);
        return PSCTL_EXIT_OK;
    default:
        return -1;
    }
}

static const struct option common_longopts[] = {
    {"help", no_argument, NULL, PSCTL_OPT_HELP},
    {"json", no_argument, NULL, PSCTL_OPT_JSON},
    {"coordinator", required_argument, NULL, PSCTL_OPT_COORDINATOR},
    {"timeout-ms", required_argument, NULL, PSCTL_OPT_TIMEOUT},
};
#define N_COMMON (sizeof common_longopts / sizeof common_longopts[0])
#define MAX_LONGOPTS 32

/* The option just rejected by getopt, as the user wrote it. */
static const char *bad_option(char **argv, char *buf, size_t cap) {
    if (optopt > 0 && optopt < 256 && optopt != PSCTL_OPT_HELP) {
        snprintf(buf, cap, "-%c", optopt);
        return buf;
    }
    return argv[optind - 1];
}

/* getopt over argv with `opts`; `stop_at_command` stops at the first positional. */
static int run_getopt(psctl *p, int argc, char **argv, const struct option *opts,
                      bool stop_at_command, psctl_option_fn handle, void *state, bool *ret_help) {
    char buf[8];
    int c;
    optind = 0; /* glibc: full re-initialization, argv[0] is skipped */
    opterr = 0;
    *ret_help = false;
    while ((c = getopt_long(argc, argv, stop_at_command ? "+:h" : ":h", opts, NULL)) != -1) {
        if (c == PSCTL_OPT_HELP) {
            *ret_help = true;
            continue;
        }
        if (c == ':')
            return psctl_usage(p, "option '%s' needs a value", argv[optind - 1]);
        if (c == '?')
            return psctl_usage(p, "unknown option '%s'", bad_option(argv, buf, sizeof buf));
        int rc = common_option(p, c, optarg);
        if (rc == -1)
            rc = handle ? handle(p, c, optarg, state) : psctl_usage(p, "unexpected option");
        if (rc != PSCTL_EXIT_OK)
            return rc;
    }
    return PSCTL_EXIT_OK;
}

int psctl_parse(psctl *p, const psctl_cmd *cmd, int argc, char **argv, const struct option *own,
                psctl_option_fn handle, void *state, int *ret_first) {
    struct option opts[MAX_LONGOPTS + 1];
    size_t n = 0;
    for (size_t i = 0; i < N_COMMON; i++)
        opts[n++] = common_longopts[i];
    for (size_t i = 0; own && own[i].name && n < MAX_LONGOPTS; i++)
        opts[n++] = own[i];
    memset(&opts[n], 0, sizeof opts[n]);
    bool help = false;
    int rc = run_getopt(p, argc, argv, opts, false, handle, state, &help);
    if (help) { /* --help wins over any other problem on the line */
        fputs(cmd->help, stdout);
        fputs("\n", stdout);
        fputs(psctl_common_help, stdout);
        return PSCTL_HELP_SHOWN;
    }
    if (rc != PSCTL_EXIT_OK)
        return rc;
    *ret_first = optind;
    return PSCTL_EXIT_OK;
}

int psctl_dispatch(psctl *p, const char *group, const char *group_help, const psctl_cmd *cmds,
                   size_t n_cmds, int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        bool help = argc >= 2;
        FILE *out = help ? stdout : stderr;
        fputs(group_help, out);
        fputs("\n", out);
        fputs(psctl_common_help, out);
        if (!help)
            fprintf(stderr, "psctl %s: which subcommand?\n", group);
        return help ? PSCTL_EXIT_OK : PSCTL_EXIT_USAGE;
    }
    for (size_t i = 0; i < n_cmds; i++) {
        if (strcmp(argv[1], cmds[i].name) != 0)
            continue;
        snprintf(p->command, sizeof p->command, "%s %s", group, cmds[i].name);
        return cmds[i].run(p, argc - 1, argv + 1);
    }
    snprintf(p->command, sizeof p->command, "%s", group);
    fprintf(stderr, "psctl %s: unknown subcommand '%s'; one of:", group, argv[1]);
    for (size_t i = 0; i < n_cmds; i++)
        fprintf(stderr, " %s", cmds[i].name);
    fprintf(stderr, "\nrun 'psctl %s --help' for usage\n", group);
    return PSCTL_EXIT_USAGE;
}

/* ================================================================ coordinator === */

int psctl_connect(psctl *p) {
    if (p->coord)
        return PSCTL_EXIT_OK;
    ps_status st = PS_STATUS_NOT_FOUND;
    const char *flag = p->coordinator_flag, *env = getenv("PS_COORDINATOR");
    const char *run_dir = getenv("PS_RUN_DIR");
    if ((!flag || !*flag) && (!env || !*env) && run_dir && *run_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cluster.env", run_dir);
        st = ps_env_file_get(path, "COORDINATOR", p->coordinator, sizeof p->coordinator);
    }
    if (st != PS_STATUS_OK)
        st = ps_coordinator_addr(flag, p->coordinator, sizeof p->coordinator);
    if (st == PS_STATUS_NOT_FOUND || (st == PS_STATUS_OK && !p->coordinator[0])) {
        fprintf(stderr,
                "psctl%s%s: no coordinator address: pass --coordinator HOST:PORT, or set "
                "PS_COORDINATOR=HOST:PORT, or run from the directory holding run/cluster.env "
                "(scripts/cluster up writes it; PS_RUN_DIR names another run directory)\n",
                p->command[0] ? " " : "", p->command);
        return PSCTL_EXIT_USAGE;
    }
    if (st != PS_STATUS_OK)
        return psctl_usage(p, "the coordinator address is too long");
    st = rpc_channel_create(p->coordinator, NULL, &p->coord);
    if (st != PS_STATUS_OK)
        return psctl_fail(p, ps_status_name(st),
                          "cannot open a channel to the coordinator at %s: %s", p->coordinator,
                          ps_status_str(st));
    return PSCTL_EXIT_OK;
}

int psctl_coord_call(psctl *p, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_type, ProtobufCMessage **ret_resp,
                     const char *what) {
    int rc = psctl_connect(p);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    rpc_call_opts opts = {.timeout_ms = p->timeout_ms};
    rpc_result res;
    ps_status st = rpc_call(p->coord, method, req, resp_type, &opts, ret_resp, &res);
    if (st != PS_STATUS_OK) {
        char full[512];
        snprintf(full, sizeof full, "%.200s: coordinator %.280s", what, p->coordinator);
        return psctl_fail_rpc(p, full, &res);
    }
    return PSCTL_EXIT_OK;
}

int psctl_client(psctl *p) {
    if (p->client)
        return PSCTL_EXIT_OK;
    int rc = psctl_connect(p);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    char err[1024];
    ps_status st = ps_client_create(p->coordinator, &p->client, err, sizeof err);
    if (st == PS_STATUS_OK)
        return PSCTL_EXIT_OK;
    return psctl_fail(p, ps_status_name(st), "cannot start a client of the cluster: %s", err);
}

int psctl_find_tensor(psctl *p, const char *model, uint64_t version, const char *tensor,
                      Ps__ModelInfo **ret_model, const Ps__TensorInfo **ret_tensor) {
    Ps__GetModelRequest req = PS__GET_MODEL_REQUEST__INIT;
    req.name = (char *)model;
    req.version = version;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "get model %s", model);
    int rc = psctl_coord_call(p, "/ps.Coordinator/GetModel", &req.base, &ps__model_info__descriptor,
                              &resp, what);
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__ModelInfo *m = (Ps__ModelInfo *)resp;
    const Ps__TensorInfo *t = ps_client_find_tensor(m, tensor);
    if (!t) {
        char names[1024] = "";
        size_t used = 0;
        for (size_t i = 0; i < m->n_tensors && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     m->tensors[i]->name);
        rc = psctl_fail(p, "NOT_FOUND", "model %s version %llu has no tensor '%s' (it has: %s)",
                        model, (unsigned long long)m->version, tensor, names);
        ps__model_info__free_unpacked(m, NULL);
        return rc;
    }
    *ret_model = m;
    *ret_tensor = t;
    return PSCTL_EXIT_OK;
}

/* ================================================================ main === */

typedef struct top_cmd {
    const char *name;
    int (*run)(psctl *p, int argc, char **argv);
} top_cmd;

static const top_cmd top_cmds[] = {
    {"ring", psctl_cmd_ring},     {"model", psctl_cmd_model}, {"status", psctl_cmd_status},
    {"locate", psctl_cmd_locate}, {"push", psctl_cmd_push},   {"pull", psctl_cmd_pull},
};

int main(int argc, char **argv) {
    psctl p = {.timeout_ms = PSCTL_DEFAULT_TIMEOUT_MS};
    rpc_process_init(); /* exit without waiting in grpc_shutdown */
    int rc;
    bool help = false;
    rc = run_getopt(
        &p, argc, argv,
        (const struct option[]){
            common_longopts[0], common_longopts[1], common_longopts[2], common_longopts[3], {0}},
        true, NULL, NULL, &help);
    int first = optind;
    if (help || (rc == PSCTL_EXIT_OK && first < argc && strcmp(argv[first], "help") == 0)) {
        fputs(main_help, stdout);
        fputs(psctl_common_help, stdout);
        return PSCTL_EXIT_OK;
    }
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (first >= argc) {
        fputs(main_help, stderr);
        fputs(psctl_common_help, stderr);
        fprintf(stderr, "psctl: which command?\n");
        return PSCTL_EXIT_USAGE;
    }
    const char *name = argv[first];
    rc = -1;
    for (size_t i = 0; i < sizeof top_cmds / sizeof top_cmds[0]; i++) {
        if (strcmp(name, top_cmds[i].name) == 0) {
            snprintf(p.command, sizeof p.command, "%s", name);
            rc = top_cmds[i].run(&p, argc - first, argv + first);
            break;
        }
    }
    if (rc == -1) {
        fprintf(stderr,
                "psctl: unknown command '%s'; one of: ring, model, status, locate, push, pull\n"
                "run 'psctl --help' for usage\n",
                name);
        rc = PSCTL_EXIT_USAGE;
    }
    ps_client_destroy(p.client);
    rpc_channel_destroy(p.coord);
    fflush(stdout);
    if (ferror(stdout) && rc == PSCTL_EXIT_OK) {
        fprintf(stderr, "psctl: cannot write the output\n");
        rc = PSCTL_EXIT_FAILED;
    }
    return rc;
}
