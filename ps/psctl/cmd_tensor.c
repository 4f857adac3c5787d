/* cmd_tensor.c: `psctl locate|push|pull`: one tensor of a registered model, chunk by
 * chunk (where each chunk lives) or as a whole (what a training job pushes and pulls).
 *
 * The registry entry (GetModel) gives the tensor's shape and chunking; chunk keys are
 * ps_key_dense(model, tensor, index) and their owners come from the ring, exactly as
 * the client library and the shards compute them. Values are validated before
 * anything is sent: the count must be the tensor's size and every value finite, so a
 * push is either refused whole or sent whole.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_list.h"
#include "hashring.h"
#include "psctl.h"
#include "util.h"

static int locate_run(psctl *p, int argc, char **argv);
static int push_run(psctl *p, int argc, char **argv);
static int pull_run(psctl *p, int argc, char **argv);

static const psctl_cmd locate_cmd = {
    "locate", "where a tensor's chunks live",
    "usage: psctl locate MODEL TENSOR [--version N] [--check]\n"
    "Each chunk of a tensor, with the registry's chunking: index, key (hex), floats,\n"
    "owning shard and its address (the primary first when the ring keeps replicas).\n"
    "  --version N   the model version whose registry entry to use (default: latest)\n"
    "  --check       also ask each owning shard whether it holds the chunk (its version)\n"
    "JSON: {\"model\", \"version\", \"tensor\", \"shape\", \"chunk_floats\", \"epoch\",\n"
    "\"chunks\": [{\"index\", \"key\", \"floats\", \"shard\", \"addr\", \"owners\": [{\"id\", "
    "\"addr\"}],\n"
    "\"held\" (with --check), \"chunk_version\" or \"error\"}]}\n",
    locate_run};

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

int psctl_cmd_locate(psctl *p, int argc, char **argv) {
    return locate_run(p, argc, argv);
}
int psctl_cmd_push(psctl *p, int argc, char **argv) {
    return push_run(p, argc, argv);
}
int psctl_cmd_pull(psctl *p, int argc, char **argv) {
    return pull_run(p, argc, argv);
}

/* ================================================================ options === */

enum {
    OPT_VERSION = PSCTL_OPT_FIRST_PRIVATE,
    OPT_CHECK,
    OPT_ADD,
    OPT_ASSIGN,
    OPT_VALUES,
    OPT_FILL,
    OPT_FILE,
    OPT_CHUNKS,
};

typedef struct tensor_opts {
    uint64_t version;   /* 0 = latest */
    bool check;         /* locate --check */
    int op;             /* -1 unset, else a Ps__PushOp */
    const char *values; /* --values text */
    const char *fill;   /* --fill text */
    const char *file;   /* --file path */
    int sources;        /* how many of --values/--fill/--file */
    const char *chunks; /* push --chunks list, or NULL */
} tensor_opts;

static int tensor_option(psctl *p, int opt, const char *arg, void *state) {
    tensor_opts *o = state;
    switch (opt) {
    case OPT_VERSION:
        if (!ps_parse_u64(arg, &o->version) || o->version == 0)
            return psctl_usage(p, "--version wants a positive integer, got '%s'", arg);
        return PSCTL_EXIT_OK;
    case OPT_CHECK:
        o->check = true;
        return PSCTL_EXIT_OK;
    case OPT_ADD:
    case OPT_ASSIGN: {
        int op = opt == OPT_ADD ? PS__PUSH_OP__PUSH_ADD : PS__PUSH_OP__PUSH_ASSIGN;
        if (o->op != -1 && o->op != op)
            return psctl_usage(p, "--add and --assign exclude each other");
        o->op = op;
        return PSCTL_EXIT_OK;
    }
    case OPT_VALUES:
        o->values = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case OPT_FILL:
        o->fill = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case OPT_FILE:
        o->file = arg;
        o->sources++;
        return PSCTL_EXIT_OK;
    case OPT_CHUNKS:
        o->chunks = arg;
        return PSCTL_EXIT_OK;
    default:
        return psctl_usage(p, "unexpected option");
    }
}

/* Parses options and the MODEL TENSOR positionals. */
static int parse_tensor_cmd(psctl *p, const psctl_cmd *cmd, int argc, char **argv,
                            const struct option *own, tensor_opts *o, const char **ret_model,
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
static bool parse_float(const char *s, float *ret) {
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

static const char *nonfinite_name(float v) {
    return isnan(v) ? "NaN" : "infinite";
}

/* ================================================================ locate === */

static int locate_run(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, OPT_VERSION},
        {"check", no_argument, NULL, OPT_CHECK},
        {NULL, 0, NULL, 0},
    };
    tensor_opts o = {.op = -1};
    const char *model = NULL, *tensor = NULL;
    int rc = parse_tensor_cmd(p, &locate_cmd, argc, argv, own, &o, &model, &tensor);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__ModelInfo *m = NULL;
    const Ps__TensorInfo *t = NULL;
    if ((rc = psctl_find_tensor(p, model, o.version, tensor, &m, &t)) != PSCTL_EXIT_OK)
        return rc;
    Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    hashring *ring = NULL;
    rpc_channel **channels = NULL;
    json_t *chunks = NULL;
    psctl_table *table = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor, &resp,
                          "get the ring");
    if (rc != PSCTL_EXIT_OK)
        goto out;
    const Ps__Ring *rmsg = (const Ps__Ring *)resp;
    if (hashring_parse(rmsg->ring.data, rmsg->ring.len, &ring) != PS_STATUS_OK) {
        rc = psctl_fail(p, "INTERNAL", "the ring sent by the coordinator %s does not parse",
                        p->coordinator);
        goto out;
    }
    uint32_t n_nodes = hashring_node_count(ring);
    if (n_nodes == 0) {
        rc = psctl_fail(p, "UNAVAILABLE", "no shards on the ring (epoch %llu)",
                        (unsigned long long)hashring_epoch(ring));
        goto out;
    }
    uint32_t replicas = rmsg->replication ? rmsg->replication : 1;
    channels = calloc(n_nodes, sizeof *channels);
    if (!channels) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory");
        goto out;
    }
    uint64_t count = ps_tensor_count(t);
    char shape[256];
    psctl_shape_str(t->shape, t->n_shape, shape, sizeof shape);
    if (p->json) {
        chunks = json_array();
    } else {
        static const char *const header[] = {"CHUNK", "KEY", "FLOATS", "SHARD", "ADDRESS", "HELD"};
        table = psctl_table_create(o.check ? 6 : 5, header);
    }
    size_t missing = 0;
    for (uint32_t c = 0; c < t->chunks; c++) {
        uint64_t key = ps_key_dense(model, t->name, c);
        uint64_t start = (uint64_t)c * t->chunk_floats;
        uint64_t floats = count - start < t->chunk_floats ? count - start : t->chunk_floats;
        uint32_t owners[HASHRING_MAX_REPLICAS];
        uint32_t n_owners = hashring_owners(ring, key, replicas, owners);
        hashring_node_info primary;
        hashring_node_at(ring, owners[0], &primary);
        char keyhex[24], index[16], nfloats[32], held[128] = "";
        snprintf(keyhex, sizeof keyhex, "%016llx", (unsigned long long)key);
        snprintf(index, sizeof index, "%u", c);
        snprintf(nfloats, sizeof nfloats, "%llu", (unsigned long long)floats);

        json_t *held_json = NULL;
        if (o.check) {
            /* one Pull of this key from its primary, routed with the ring's epoch */
            rpc_channel **ch = &channels[owners[0]];
            ps_status st = *ch ? PS_STATUS_OK : rpc_channel_create(primary.addr, NULL, ch);
            Ps__PullRequest preq = PS__PULL_REQUEST__INIT;
            preq.epoch = hashring_epoch(ring);
            preq.n_keys = 1;
            preq.keys = &key;
            ProtobufCMessage *presp = NULL;
            rpc_result res = {.grpc_code = 13, .details = "cannot open a channel"};
            rpc_call_opts copts = {.timeout_ms = p->timeout_ms};
            if (st == PS_STATUS_OK)
                st = rpc_call(*ch, "/ps.ParameterServer/Pull", &preq.base,
                              &ps__pull_response__descriptor, &copts, &presp, &res);
            const Ps__PullResponse *pr = (const Ps__PullResponse *)presp;
            if (st == PS_STATUS_OK && pr->n_lengths == 1 && pr->lengths[0] == floats) {
                snprintf(held, sizeof held, "yes, version %llu",
                         (unsigned long long)pr->versions[0]);
                held_json = json_pack("{s:b, s:I}", "held", 1, "chunk_version",
                                      (json_int_t)pr->versions[0]);
            } else if (st == PS_STATUS_OK) {
                snprintf(held, sizeof held, "NO: holds %u floats, not %llu",
                         pr->n_lengths ? pr->lengths[0] : 0, (unsigned long long)floats);
                held_json = json_pack("{s:b, s:s}", "held", 0, "error", held);
                missing++;
            } else {
                snprintf(held, sizeof held, "NO: %s: %s", rpc_code_name(res.grpc_code),
                         res.details);
                held_json = json_pack("{s:b, s:s}", "held", 0, "error", held);
                missing++;
            }
            if (presp)
                protobuf_c_message_free_unpacked(presp, NULL);
        }

        if (p->json) {
            json_t *ol = json_array();
            for (uint32_t k = 0; k < n_owners; k++) {
                hashring_node_info info;
                hashring_node_at(ring, owners[k], &info);
                json_array_append_new(ol,
                                      json_pack("{s:s, s:s}", "id", info.id, "addr", info.addr));
            }
            json_t *entry = json_pack("{s:I, s:s, s:I, s:s, s:s, s:o}", "index", (json_int_t)c,
                                      "key", keyhex, "floats", (json_int_t)floats, "shard",
                                      primary.id, "addr", primary.addr, "owners", ol);
            if (entry && held_json)
                json_object_update(entry, held_json);
            json_decref(held_json);
            json_array_append_new(chunks, entry);
        } else {
            char shards[512], addrs[1024];
            size_t su = 0, au = 0;
            shards[0] = addrs[0] = '\0';
            for (uint32_t k = 0; k < n_owners; k++) {
                hashring_node_info info;
                hashring_node_at(ring, owners[k], &info);
                if (su < sizeof shards)
                    su += (size_t)snprintf(shards + su, sizeof shards - su, "%s%s", k ? "," : "",
                                           info.id);
                if (au < sizeof addrs)
                    au += (size_t)snprintf(addrs + au, sizeof addrs - au, "%s%s", k ? "," : "",
                                           info.addr);
            }
            const char *row[] = {index, keyhex, nfloats, shards, addrs, held};
            psctl_table_add(table, row);
        }
    }
    if (p->json) {
        rc = psctl_emit_json(p, json_pack("{s:s, s:I, s:s, s:o, s:I, s:I, s:I, s:o}", "model",
                                          model, "version", (json_int_t)m->version, "tensor",
                                          t->name, "shape", psctl_shape_json(t->shape, t->n_shape),
                                          "floats", (json_int_t)count, "chunk_floats",
                                          (json_int_t)t->chunk_floats, "epoch",
                                          (json_int_t)hashring_epoch(ring), "chunks", chunks));
        chunks = NULL;
    } else {
        printf("model %s version %llu, tensor %s %s: %u chunk%s of up to %u floats; ring epoch "
               "%llu\n",
               model, (unsigned long long)m->version, t->name, shape, t->chunks,
               t->chunks == 1 ? "" : "s", t->chunk_floats,
               (unsigned long long)hashring_epoch(ring));
        psctl_table_print(table, stdout);
    }
    if (o.check && missing > 0 && rc == PSCTL_EXIT_OK)
        rc =
            psctl_fail(p, "DATA_LOSS", "%zu of %u chunks of %s/%s are not where the ring puts them",
                       missing, t->chunks, model, t->name);
out:
    for (uint32_t i = 0; channels && i < hashring_node_count(ring); i++)
        rpc_channel_destroy(channels[i]);
    free(channels);
    json_decref(chunks);
    psctl_table_destroy(table);
    hashring_destroy(ring);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    ps__model_info__free_unpacked(m, NULL);
    return rc;
}

/* ================================================================ push === */

/* Fills dst[count] from the option the user gave. Returns an exit code. */
static int push_values(psctl *p, const tensor_opts *o, const char *model, const Ps__TensorInfo *t,
                       float *dst, uint64_t count) {
    if (o->fill) {
        float v;
        if (!parse_float(o->fill, &v))
            return psctl_usage(p, "--fill wants a number, got '%s'", o->fill);
        if (!isfinite(v))
            return psctl_fail(p, "INVALID_ARGUMENT",
                              "--fill %s is %s: only finite values can be pushed", o->fill,
                              nonfinite_name(v));
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
                                  (unsigned long long)i, o->file, nonfinite_name(dst[i]));
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
        if (!parse_float(item, &dst[i]))
            return psctl_usage(p, "--values item %llu ('%s') is not a number",
                               (unsigned long long)i + 1, item);
        if (!isfinite(dst[i]))
            return psctl_fail(p, "INVALID_ARGUMENT",
                              "--values item %llu ('%s') is %s: only finite values can be pushed",
                              (unsigned long long)i + 1, item, nonfinite_name(dst[i]));
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
        {"version", required_argument, NULL, OPT_VERSION},
        {"add", no_argument, NULL, OPT_ADD},
        {"assign", no_argument, NULL, OPT_ASSIGN},
        {"values", required_argument, NULL, OPT_VALUES},
        {"fill", required_argument, NULL, OPT_FILL},
        {"file", required_argument, NULL, OPT_FILE},
        {"chunks", required_argument, NULL, OPT_CHUNKS},
        {NULL, 0, NULL, 0},
    };
    tensor_opts o = {.op = -1};
    const char *model = NULL, *tensor = NULL;
    int rc = parse_tensor_cmd(p, &push_cmd, argc, argv, own, &o, &model, &tensor);
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
        if (!parse_float(o.fill, &v))
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
    ps_status st = ps_client_push_tensor_report(p->client, model, t, (Ps__PushOp)o.op, values,
                                                count, only, outcome);
    const char *op = o.op == PS__PUSH_OP__PUSH_ADD ? "add" : "assign";
    rc = push_report(p, st, op, model, m->version, t, count, only, outcome);
out:
    free(values);
    free(only);
    free(outcome);
    ps__model_info__free_unpacked(m, NULL);
    return rc;
}

/* ================================================================ pull === */

static int pull_run(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, OPT_VERSION},
        {"file", required_argument, NULL, OPT_FILE},
        {"chunks", required_argument, NULL, OPT_CHUNKS},
        {NULL, 0, NULL, 0},
    };
    tensor_opts o = {.op = -1};
    const char *model = NULL, *tensor = NULL;
    int rc = parse_tensor_cmd(p, &pull_cmd, argc, argv, own, &o, &model, &tensor);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK)
        return rc;
    Ps__ModelInfo *m = NULL;
    const Ps__TensorInfo *t = NULL;
    if ((rc = psctl_find_tensor(p, model, o.version, tensor, &m, &t)) != PSCTL_EXIT_OK)
        return rc;
    uint64_t count = ps_tensor_count(t), vsum = 0;
    float *values = malloc(count * sizeof *values + 1);
    if (!values) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory for %llu floats", (unsigned long long)count);
        goto out;
    }
    if ((rc = psctl_client(p)) != PSCTL_EXIT_OK)
        goto out;
    ps_status st = ps_client_pull_tensor(p->client, model, t, values, count, &vsum);
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
