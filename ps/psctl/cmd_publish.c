/* cmd_publish.c: `psctl model publish MODEL [--version N] [--wait-s S]`: asks the
 * coordinator for a consistent cut of a model version (Publish in coordinator.proto)
 * and shows its phases as they come: fencing (the training workers park between
 * steps), preparing (the replicas build the cut beside the live one), committed (they
 * switch to it at once). */
#include <stdlib.h>
#include <string.h>

#include "model_cmd.h"
#include "psctl.h"
#include "util.h"

#define PUBLISH_DEFAULT_WAIT_S 60

enum { OPT_WAIT = PSCTL_MODEL_OPT_TYPE + 1 };

typedef struct publish_opts {
    psctl_model_opts model;
    int wait_s;
} publish_opts;

static int publish_option(psctl *p, int opt, const char *arg, void *state) {
    publish_opts *o = state;
    if (opt != OPT_WAIT)
        return psctl_model_option(p, opt, arg, &o->model);
    if (!ps_parse_int(arg, 1, 86400, &o->wait_s))
        return psctl_usage(p, "--wait-s wants 1..86400 seconds, got '%s'", arg);
    return PSCTL_EXIT_OK;
}

int psctl_model_publish(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_MODEL_OPT_VERSION},
        {"wait-s", required_argument, NULL, OPT_WAIT},
        {NULL, 0, NULL, 0},
    };
    publish_opts o = {.wait_s = PUBLISH_DEFAULT_WAIT_S};
    int first = 0;
    int rc = psctl_parse(p, &psctl_model_cmds[PSCTL_MODEL_PUBLISH], argc, argv, own, publish_option,
                         &o, &first);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    if (argc - first != 1)
        return psctl_usage(p, argc - first ? "one model at a time" : "which model?");
    if ((rc = psctl_connect(p)) != PSCTL_EXIT_OK)
        return rc;
    Ps__PublishRequest req = PS__PUBLISH_REQUEST__INIT;
    req.model = argv[first];
    req.version = o.model.version;
    rpc_call_opts opts = {.timeout_ms = (int64_t)o.wait_s * 1000};
    rpc_stream *s = NULL;
    ps_status st = rpc_stream_open(p->coord, "/ps.Coordinator/Publish", &req.base,
                                   &ps__publish_progress__descriptor, &opts, &s);
    if (st != PS_STATUS_OK)
        return psctl_fail(p, ps_status_name(st), "cannot call the coordinator %s: %s",
                          p->coordinator, ps_status_str(st));
    json_t *phases = json_array();
    ProtobufCMessage *m = NULL;
    Ps__PublishProgress last = PS__PUBLISH_PROGRESS__INIT;
    bool committed = false;
    while ((st = rpc_stream_next(s, &m)) == PS_STATUS_OK && m) {
        const Ps__PublishProgress *pr = (const Ps__PublishProgress *)m;
        committed = strcmp(pr->phase, "committed") == 0;
        json_array_append_new(phases, json_pack("{s:s, s:I, s:I, s:I}", "phase", pr->phase,
                                                "workers", (json_int_t)pr->workers, "replicas",
                                                (json_int_t)pr->replicas, "elapsed_ms",
                                                (json_int_t)pr->elapsed_ms));
        if (!p->json)
            printf("model %s version %llu publish %llu: %s (%u training workers, %u replicas "
                   "prepared, %llu ms)\n",
                   req.model, (unsigned long long)pr->version, (unsigned long long)pr->publish,
                   pr->phase, pr->workers, pr->replicas, (unsigned long long)pr->elapsed_ms);
        last.version = pr->version;
        last.publish = pr->publish;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (st != PS_STATUS_OK || !committed) {
        rpc_result res = *rpc_stream_result(s);
        rpc_stream_destroy(s);
        json_decref(phases);
        char what[512];
        snprintf(what, sizeof what, "publish model %s: coordinator %s", req.model, p->coordinator);
        return psctl_fail_rpc(p, what, &res);
    }
    rpc_stream_destroy(s);
    if (p->json)
        return psctl_emit_json(p, json_pack("{s:s, s:I, s:I, s:o}", "model", req.model, "version",
                                            (json_int_t)last.version, "publish",
                                            (json_int_t)last.publish, "phases", phases));
    json_decref(phases);
    return PSCTL_EXIT_OK;
}
