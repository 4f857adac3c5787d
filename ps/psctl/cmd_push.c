/* cmd_push.c: `psctl push`: one tensor of a registered model pushed whole, as a
 * training job does (--add or --assign), optionally only some of its chunks.
 *
 * Values are validated before anything is sent: the count must be the tensor's size
 * and every value finite, so a push is either refused whole or sent whole. What each
 * shard then did is reported chunk by chunk.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_list.h"
#include "psctl.h"
#include "tensor_cmd.h"
#include "util.h"

static int push_run(psctl *p, int argc, char **argv);

static const psctl_cmd push_cmd = {
    "push", "push a whole tensor",
    "usage: psctl push MODEL TENSOR (--add | --assign)\n"
    "                  (--values V1,V2,... | --fill X | --file PATH) [--version N]\n"
    "                  [--chunks LIST]\n"
    "Pushes a whole tensor's worth of floats, as a training job does: --assign replaces\n"
    "the values, --add adds them element-wise (a gradient step or a delta).\n"
    "  --values V1,V2,...  exactly as many numbers as the tensor has elements\n"
    "  --fill X            X for every element\n"
    "  --file PATH         raw little-endian float32, exactly 4 bytes per element\n"
    "  --version N         the model version whose registry entry to use (default: latest)\n"
    "  --chunks LIST       push only these chunks (e.g. 0-3,7); the values still cover\n"
    "                      the whole tensor\n"
    "Every value must be finite (NaN and infinities are refused). Each shard applies its\n"
    "part all or nothing; when some shards fail the others still apply theirs, and psctl\n"
    "says which chunks were applied, which were not and which may have been (the call\n"
    "was lost), with the --chunks to retry exactly the ones not applied (exit 1).\n"
    "JSON: {\"model\", \"version\", \"tensor\", \"op\", \"floats\", \"chunks\", \"epoch\",\n"
    "\"applied\", \"not_applied\", \"unknown\" (chunk lists)}\n",
    push_run};

int psctl_cmd_push(psctl *p, int argc, char **argv) {
    return push_run(p, argc, argv);
}

/* Fills dst[count] from the option the user gave. Returns an exit code. */
static int push_values(psctl *p, const psctl_tensor_opts *o, const char *model,
                       const Ps__TensorInfo *t, float *dst, uint64_t count) {
    if (o->fill) {
        float v;
        if (!psctl_tensor_parse_float(o->fill, &v))
            return psctl_usage(p, "--fill wants a number, got '%s'", o->fill);
        if (!isfinite(v))
            return psctl_fail(p, "INVALID_ARGUMENT",
                              "--fill %s is %s: only finite values can be pushed", o->fill,
                              psctl_tensor_nonfinite_name(v));
        for (uint64_t i = 0; i < count; i++)
            dst[i] = v;
        return PSCTL_EXIT_OK;
    }
    if (o->file) {
        char *data = NULL;
        size_t len = 0;
        ps_status st = ps_read_file(o->file, &data, &len);
        if (st != PS_STATUS_OK)
            return psctl_fail(p, ps_status_name(st), "cannot read %s: %s", o->file,
                              st == PS_STATUS_NOT_FOUND ? "no such file" : strerror(errno));
        if (len != count * 4) {
            free(data);
            return psctl_fail(p, "INVALID_ARGUMENT",
                              "%s holds %zu bytes; tensor %s/%s needs %llu float32 values = "
                              "%llu bytes",
                              o->file, len, model, t->name, (unsigned long long)count,
                              (unsigned long long)(count * 4));
        }
        memcpy(dst, data, len);
        free(data);
        for (uint64_t i = 0; i < count; i++)
            if (!isfinite(dst[i]))
                return psctl_fail(p, "INVALID_ARGUMENT",
                                  "value %llu in %s is %s: only finite values can be pushed",
                                  (unsigned long long)i, o->file,
                                  psctl_tensor_nonfinite_name(dst[i]));
        return PSCTL_EXIT_OK;
    }
    /* --values: count first, so a wrong count is reported as such */
    uint64_t n = 1;
    for (const char *c = o->values; *c; c++)
        n += *c == ',';
    if (n != count)
        return psctl_fail(p, "INVALID_ARGUMENT",
                          "--values has %llu numbers; tensor %s/%s has %llu elements",
                          (unsigned long long)n, model, t->name, (unsigned long long)count);
    const char *s = o->values;
    for (uint64_t i = 0; i < count; i++) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char item[64];
        if (len >= sizeof item)
            return psctl_usage(p, "--values item %llu is too long", (unsigned long long)i + 1);
        memcpy(item, s, len);
        item[len] = '\0';
        if (!psctl_tensor_parse_float(item, &dst[i]))
            return psctl_usage(p, "--values item %llu ('%s') is not a number",
                               (unsigned long long)i + 1, item);
        if (!isfinite(dst[i]))
            return psctl_fail(p, "INVALID_ARGUMENT",
                              "--values item %llu ('%s') is %s: only finite values can be pushed",
                              (unsigned long long)i + 1, item, psctl_tensor_nonfinite_name(dst[i]));
        s = comma ? comma + 1 : s + len;
    }
    return PSCTL_EXIT_OK;
}

/* Says what a push did, chunk by chunk when it failed somewhere. Chunks left out by
 * --chunks count as neither applied nor failed. With --json a failure is one document:
 * the error and the chunk lists together. */
static int push_report(psctl *p, ps_status st, const char *op, const char *model, uint64_t version,
                       const Ps__TensorInfo *t, uint64_t count, const uint8_t *only,
                       uint8_t *outcome) {
    enum { SKIPPED = 9 };
    for (uint32_t i = 0; only && i < t->chunks; i++)
        if (!only[i])
            outcome[i] = SKIPPED;
    char applied[512], failed[512], unknown[512], msg[2400];
    uint32_t n_applied =
        chunk_list_format(outcome, t->chunks, PS_PUSH_APPLIED, applied, sizeof applied);
    uint32_t n_failed =
        chunk_list_format(outcome, t->chunks, PS_PUSH_NOT_APPLIED, failed, sizeof failed);
    uint32_t n_unknown =
        chunk_list_format(outcome, t->chunks, PS_PUSH_UNKNOWN, unknown, sizeof unknown);
    if (st == PS_STATUS_OK) {
        if (p->json)
            return psctl_emit_json(
                p, json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "model", model,
                             "version", (json_int_t)version, "tensor", t->name, "op", op, "floats",
                             (json_int_t)count, "chunks", (json_int_t)t->chunks, "epoch",
                             (json_int_t)ps_client_epoch(p->client), "applied", applied,
                             "not_applied", failed, "unknown", unknown));
        printf("pushed %s of %llu floats to %s/%s (version %llu, %u of %u chunk%s, ring epoch "
               "%llu)\n",
               op, (unsigned long long)count, model, t->name, (unsigned long long)version,
               n_applied, t->chunks, t->chunks == 1 ? "" : "s",
               (unsigned long long)ps_client_epoch(p->client));
        return PSCTL_EXIT_OK;
    }
    if (n_applied == 0 && n_unknown == 0)
        snprintf(msg, sizeof msg, "push (%s) to %s/%s: %s; nothing was applied", op, model, t->name,
                 ps_client_error(p->client));
    else
        snprintf(msg, sizeof msg,
                 "push (%s) to %s/%s partly failed: %s\n"
                 "  applied:       %u chunk%s %s\n"
                 "  not applied:   %u chunk%s %s\n"
                 "  maybe applied: %u chunk%s %s (the call was lost; pull to see)\n"
                 "  to push only what was not applied, repeat the command with --chunks %s",
                 op, model, t->name, ps_client_error(p->client), n_applied,
                 n_applied == 1 ? "" : "s", applied, n_failed, n_failed == 1 ? "" : "s", failed,
                 n_unknown, n_unknown == 1 ? "" : "s", unknown, n_failed ? failed : "(none)");
    if (!p->json)
        return psctl_fail(p, ps_status_name(st), "%s", msg);
    fprintf(stderr, "psctl push: %s\n", msg);
    psctl_emit_json(p,
                    json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:s}", "error", "command", "push",
                              "code", ps_status_name(st), "message", msg, "tensor", t->name,
                              "applied", applied, "not_applied", failed, "unknown", unknown));
    return PSCTL_EXIT_FAILED;
}

static int push_run(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_TENSOR_OPT_VERSION},
        {"add", no_argument, NULL, PSCTL_TENSOR_OPT_ADD},
        {"assign", no_argument, NULL, PSCTL_TENSOR_OPT_ASSIGN},
        {"values", required_argument, NULL, PSCTL_TENSOR_OPT_VALUES},
        {"fill", required_argument, NULL, PSCTL_TENSOR_OPT_FILL},
        {"file", required_argument, NULL, PSCTL_TENSOR_OPT_FILE},
        {"chunks", required_argument, NULL, PSCTL_TENSOR_OPT_CHUNKS},
        {NULL, 0, NULL, 0},
    };
    psctl_tensor_opts o = {.op = -1};
    const char *model = NULL, *tensor = NULL;
    int rc = psctl_tensor_parse(p, &push_cmd, argc, argv, own, &o, &model, &tensor);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK)
        return rc;
    if (o.op == -1)
        return psctl_usage(p, "say --add or --assign");
    if (o.sources != 1)
        return psctl_usage(p, "give exactly one of --values, --fill, --file");
    if (o.fill) { /* a syntax error in --fill is a usage error: catch it before any RPC */
        float v;
        if (!psctl_tensor_parse_float(o.fill, &v))
            return psctl_usage(p, "--fill wants a number, got '%s'", o.fill);
    }
    Ps__ModelInfo *m = NULL;
    const Ps__TensorInfo *t = NULL;
    if ((rc = psctl_find_tensor(p, model, o.version, tensor, &m, &t)) != PSCTL_EXIT_OK)
        return rc;
    uint64_t count = ps_tensor_count(t);
    float *values = malloc(count * sizeof *values + 1);
    uint8_t *only = o.chunks ? malloc(t->chunks + 1) : NULL;
    uint8_t *outcome = malloc(t->chunks + 1);
    if (!values || !outcome || (o.chunks && !only)) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory for %llu floats", (unsigned long long)count);
        goto out;
    }
    char err[256];
    if (o.chunks && chunk_list_parse(o.chunks, t->chunks, only, err, sizeof err) != PS_STATUS_OK) {
        rc = psctl_usage(p, "--chunks: %s", err);
        goto out;
    }
    if ((rc = push_values(p, &o, model, t, values, count)) != PSCTL_EXIT_OK)
        goto out;
    if ((rc = psctl_client(p)) != PSCTL_EXIT_OK)
        goto out;
    ps_status st = ps_client_push_tensor_report(p->client, model, m->version, t, (Ps__PushOp)o.op,
                                                values, count, only, outcome);
    const char *op = o.op == PS__PUSH_OP__PUSH_ADD ? "add" : "assign";
    rc = push_report(p, st, op, model, m->version, t, count, only, outcome);
out:
    free(values);
    free(only);
    free(outcome);
    ps__model_info__free_unpacked(m, NULL);
    return rc;
}
