/* cmd_locate.c: `psctl locate`: where each chunk of one tensor of a registered model
 * lives, and with --check whether its owning shard holds it.
 *
 * The registry entry (GetModel) gives the tensor's shape and chunking; chunk keys are
 * ps_key_dense(model, version, tensor, index) and their owners come from the ring, exactly as
 * the client library and the shards compute them.
 */
#include <stdlib.h>

#include "hashring.h"
#include "psctl.h"
#include "tensor_cmd.h"
#include "util.h"

static int locate_run(psctl *p, int argc, char **argv);

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

int psctl_cmd_locate(psctl *p, int argc, char **argv) {
    return locate_run(p, argc, argv);
}

static int locate_run(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_TENSOR_OPT_VERSION},
        {"check", no_argument, NULL, PSCTL_TENSOR_OPT_CHECK},
        {NULL, 0, NULL, 0},
    };
    psctl_tensor_opts o = {.op = -1};
    Ps__ModelInfo *m = NULL;
    const Ps__TensorInfo *t = NULL;
    int rc = psctl_tensor_open(p, &locate_cmd, argc, argv, own, &o, &m, &t);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    const char *model = m->name;
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
        uint64_t key = ps_key_dense(model, m->version, t->name, c);
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
