/* cmd_delete.c: `psctl model delete MODEL --version N [--force]`.
 *
 * Order matters: the coordinator first takes the version out of the registry, which it
 * refuses while a live replica serves that version (unless --force), and answers the
 * removed entry; only then are its chunks freed on the shards (keys
 * ps_key_dense(model, version, tensor, i), in batches, through the client library,
 * which goes on past a failing shard). Freeing is idempotent on the shards. When a
 * shard cannot be reached its chunks stay behind, unused, and the message says how
 * many.
 */
#include <stdlib.h>
#include <string.h>

#include "model_cmd.h"
#include "psctl.h"
#include "util.h"

#define DELETE_BATCH 65536u /* keys per ps_client_delete call */

/* Frees every chunk of the removed entry m; *ret_failed tells whether any batch failed
 * (its message is the client's error). */
static int free_chunks(psctl *p, const Ps__ModelInfo *m, ps_delete_counts *ret_freed,
                       uint64_t *ret_chunks, bool *ret_failed) {
    uint64_t *keys = malloc(DELETE_BATCH * sizeof *keys);
    if (!keys)
        return psctl_fail(p, "NO_MEMORY", "out of memory");
    ps_delete_counts total = {0};
    uint64_t chunks = 0;
    bool failed = false;
    char first_err[512] = "";
    for (size_t t = 0; t < m->n_tensors; t++) {
        const Ps__TensorInfo *ti = m->tensors[t];
        for (uint32_t first = 0; first < ti->chunks; first += DELETE_BATCH) {
            uint32_t n = ti->chunks - first < DELETE_BATCH ? ti->chunks - first : DELETE_BATCH;
            for (uint32_t i = 0; i < n; i++)
                keys[i] = ps_key_dense(m->name, m->version, ti->name, first + i);
            ps_delete_counts got = {0};
            if (ps_client_delete(p->client, n, keys, &got) != PS_STATUS_OK && !failed) {
                failed = true;
                snprintf(first_err, sizeof first_err, "%s", ps_client_error(p->client));
            }
            total.chunks += got.chunks;
            total.bytes += got.bytes;
            chunks += n;
        }
    }
    free(keys);
    if (failed)
        psctl_warn(p, "%s", first_err);
    *ret_freed = total;
    *ret_chunks = chunks;
    *ret_failed = failed;
    return PSCTL_EXIT_OK;
}

int psctl_model_delete(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_MODEL_OPT_VERSION},
        {"force", no_argument, NULL, PSCTL_MODEL_OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    psctl_model_opts o = {0};
    const char *name = NULL;
    int rc = psctl_model_parse(p, PSCTL_MODEL_DELETE, argc, argv, own, &o, "model", &name);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    if (o.version == 0)
        return psctl_usage(p, "say which version with --version N (there is no default)");
    if ((rc = psctl_client(p)) != PSCTL_EXIT_OK)
        return rc;
    Ps__DeleteModelRequest req = PS__DELETE_MODEL_REQUEST__INIT;
    req.name = (char *)name;
    req.version = o.version;
    req.force = o.force;
    ProtobufCMessage *resp = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/DeleteModel", &req.base, &ps__model_info__descriptor,
                          &resp, "delete the model version");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    const Ps__ModelInfo *m = (const Ps__ModelInfo *)resp;
    ps_delete_counts freed = {0};
    uint64_t chunks = 0;
    bool failed = false;
    rc = free_chunks(p, m, &freed, &chunks, &failed);
    if (rc == PSCTL_EXIT_OK && failed)
        rc = psctl_fail(p, "UNAVAILABLE",
                        "model %s version %llu is out of the registry, but not every chunk could "
                        "be freed: %llu chunks freed; the others stay on their shards, unused",
                        m->name, (unsigned long long)m->version, (unsigned long long)freed.chunks);
    else if (rc == PSCTL_EXIT_OK && p->json)
        rc = psctl_emit_json(p, json_pack("{s:s, s:I, s:I, s:I, s:I}", "model", m->name, "version",
                                          (json_int_t)m->version, "chunks", (json_int_t)chunks,
                                          "freed_chunks", (json_int_t)freed.chunks, "freed_bytes",
                                          (json_int_t)freed.bytes));
    else if (rc == PSCTL_EXIT_OK) {
        char bytes[32];
        printf("deleted model %s version %llu: freed %llu of its %llu chunks (%s) on the shards\n",
               m->name, (unsigned long long)m->version, (unsigned long long)freed.chunks,
               (unsigned long long)chunks, psctl_bytes_str(freed.bytes, bytes, sizeof bytes));
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
