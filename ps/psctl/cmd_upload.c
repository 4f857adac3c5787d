/* cmd_upload.c: `psctl model upload`: loading a model directory into the parameter
 * servers and registering the version with the coordinator.
 *
 * Upload validates everything before it pushes anything: config.json through the
 * kernels' config parser (its messages are shown as they are), the weights file
 * through the safetensors reader, then every parameter tensor the config's layers
 * need must be in the file as F32 with the shape the graph needs
 * (model_config_resolve). Tensors in the file that no layer uses draw a warning and
 * are not uploaded. Only then are the tensors pushed (ASSIGN, cut into chunks) and,
 * once every chunk is on its shard, the version registered with the coordinator, so a
 * registered version always has all its data in place.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_cmd.h"
#include "model_config.h"
#include "psctl.h"
#include "safetensors.h"
#include "util.h"

/* The highest all-digits subdirectory name of dir (0 when none). */
static uint64_t highest_version(const char *dir, int *ret_errno) {
    DIR *d = opendir(dir);
    *ret_errno = d ? 0 : errno;
    uint64_t best = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        bool digits = *s != '\0';
        for (const char *c = s; *c; c++)
            digits = digits && isdigit((unsigned char)*c);
        uint64_t v;
        if (!digits || !ps_parse_u64(s, &v) || v <= best)
            continue;
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, s);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            best = v;
    }
    if (d)
        closedir(d);
    return best;
}

/* Everything an upload works on, freed by upload_free. */
typedef struct upload {
    model_config *cfg;
    safetensors *st;
    uint64_t version;           /* the version directory uploaded */
    char file[4096];            /* the weights file */
    size_t n;                   /* parameter tensors */
    Ps__TensorInfo *infos;      /* registry entries, n of them */
    Ps__TensorInfo **info_ptrs; /* n pointers into infos */
    int64_t *shapes;            /* n * MODEL_MAX_DIMS dims backing infos[i].shape */
    const void **data;          /* n pointers to each tensor's bytes in the file */
    json_t *warnings;           /* array of strings */
} upload;

static void upload_free(upload *u) {
    model_config_destroy(u->cfg);
    safetensors_destroy(u->st);
    free(u->infos);
    free(u->info_ptrs);
    free(u->shapes);
    free(u->data);
    json_decref(u->warnings);
}

/* Reads and checks DIR; fills u. Returns an exit code. */
static int upload_prepare(psctl *p, const char *dir, const psctl_model_opts *o, upload *u) {
    char path[4096], err[1024] = "";
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return psctl_fail(p, "NOT_FOUND", "model directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return psctl_fail(p, "INVALID_ARGUMENT",
                          "%s is not a directory (a model directory holds config.json and "
                          "<version>/model.safetensors)",
                          dir);
    ps_status st = model_config_load(path, &u->cfg, err, sizeof err);
    if (st != PS_STATUS_OK) /* the parser's messages name the file */
        return psctl_fail(p, ps_status_name(st), "%s", err);

    u->version = o->version;
    if (u->version == 0) {
        int e = 0;
        u->version = highest_version(dir, &e);
        if (u->version == 0)
            return psctl_fail(p, "NOT_FOUND",
                              "%s has no version directory (expected %s/1/model.safetensors)%s%s",
                              dir, dir, e ? ": " : "", e ? strerror(e) : "");
    }
    snprintf(path, sizeof path, "%s/%llu", dir, (unsigned long long)u->version);
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return psctl_fail(p, "NOT_FOUND", "%s has no version %llu (no directory %s)", dir,
                          (unsigned long long)u->version, path);
    snprintf(u->file, sizeof u->file, "%s/%llu/model.safetensors", dir,
             (unsigned long long)u->version);
    st = safetensors_open_file(u->file, &u->st, err, sizeof err);
    if (st != PS_STATUS_OK) /* the reader's messages name the file */
        return psctl_fail(p, ps_status_name(st), "%s", err);

    /* every parameter present and F32; then the shapes against the graph */
    u->n = model_config_param_count(u->cfg);
    size_t n_file = safetensors_count(u->st);
    model_tensor_desc *given = calloc(n_file + 1, sizeof *given);
    model_tensor_desc *resolved = calloc(u->n + 1, sizeof *resolved);
    u->infos = calloc(u->n + 1, sizeof *u->infos);
    u->info_ptrs = calloc(u->n + 1, sizeof *u->info_ptrs);
    u->shapes = calloc((u->n + 1) * MODEL_MAX_DIMS, sizeof *u->shapes);
    u->data = calloc(u->n + 1, sizeof *u->data);
    u->warnings = json_array();
    int rc = PSCTL_EXIT_OK;
    if (!given || !resolved || !u->infos || !u->info_ptrs || !u->shapes || !u->data ||
        !u->warnings) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < u->n; i++) {
        model_tensor_desc want;
        safetensors_tensor t;
        model_config_param_at(u->cfg, i, &want);
        if (!safetensors_find(u->st, want.name, &t)) {
            rc = psctl_fail(p, "INVALID_ARGUMENT",
                            "tensor '%s', which the config's layers use, is not in %s", want.name,
                            u->file);
            goto out;
        }
        if (t.dtype != SAFETENSORS_DTYPE_F32) {
            rc = psctl_fail(p, "INVALID_ARGUMENT",
                            "tensor '%s' in %s is %s: only F32 (FP32) weights are supported",
                            want.name, u->file, safetensors_dtype_name(t.dtype));
            goto out;
        }
    }
    size_t n_given = 0;
    for (size_t i = 0; i < n_file; i++) {
        safetensors_tensor t;
        size_t idx;
        safetensors_tensor_at(u->st, i, &t);
        if (!model_config_param_find(u->cfg, t.name, &idx)) {
            char msg[sizeof u->file + 512];
            snprintf(msg, sizeof msg, "tensor '%s' in %s is not used by the config: not uploaded",
                     t.name, u->file);
            psctl_warn(p, "%s", msg);
            json_array_append_new(u->warnings, json_string(msg));
            continue;
        }
        model_tensor_desc *g = &given[n_given++];
        g->name = t.name;
        g->datatype = "FP32";
        g->ndims = t.ndims;
        for (uint32_t k = 0; k < t.ndims && k < MODEL_MAX_DIMS; k++)
            g->dims[k] = (int64_t)t.dims[k];
    }
    st = model_config_resolve(u->cfg, given, n_given, resolved, NULL, err, sizeof err);
    if (st != PS_STATUS_OK) {
        rc = psctl_fail(p, ps_status_name(st), "%s does not fit %s/config.json: %s", u->file, dir,
                        err);
        goto out;
    }

    uint32_t cf = o->chunk_floats ? (uint32_t)o->chunk_floats : PS_DEFAULT_CHUNK_FLOATS;
    for (size_t i = 0; i < u->n; i++) {
        safetensors_tensor t;
        safetensors_find(u->st, resolved[i].name, &t);
        if (t.count == 0) {
            rc = psctl_fail(p, "INVALID_ARGUMENT", "tensor '%s' in %s has no elements", t.name,
                            u->file);
            goto out;
        }
        if ((t.count + cf - 1) / cf > UINT32_MAX) {
            rc = psctl_fail(p, "OUT_OF_RANGE", "tensor '%s' needs over 2^32 chunks of %u floats",
                            t.name, cf);
            goto out;
        }
        Ps__TensorInfo *ti = &u->infos[i];
        ps__tensor_info__init(ti);
        ti->name = (char *)t.name;
        ti->dtype = "FP32";
        ti->n_shape = t.ndims;
        ti->shape = u->shapes + i * MODEL_MAX_DIMS;
        for (uint32_t k = 0; k < t.ndims && k < MODEL_MAX_DIMS; k++)
            ti->shape[k] = (int64_t)t.dims[k];
        ti->chunk_floats = cf;
        ti->chunks = (uint32_t)((t.count + cf - 1) / cf);
        u->info_ptrs[i] = ti;
        u->data[i] = t.data;
    }
out:
    free(given);
    free(resolved);
    return rc;
}

int psctl_model_upload(psctl *p, int argc, char **argv) {
    static const struct option own[] = {
        {"version", required_argument, NULL, PSCTL_MODEL_OPT_VERSION},
        {"chunk-floats", required_argument, NULL, PSCTL_MODEL_OPT_CHUNK_FLOATS},
        {NULL, 0, NULL, 0},
    };
    psctl_model_opts o = {0};
    const char *dir = NULL;
    int rc = psctl_model_parse(p, PSCTL_MODEL_UPLOAD, argc, argv, own, &o, "model directory", &dir);
    if (rc != PSCTL_EXIT_OK)
        return rc == PSCTL_HELP_SHOWN ? PSCTL_EXIT_OK : rc;
    int64_t t0 = ps_now_us();
    upload u = {0};
    float *buf = NULL;
    bool *used = NULL;
    rc = upload_prepare(p, dir, &o, &u);
    if (rc != PSCTL_EXIT_OK || (rc = psctl_client(p)) != PSCTL_EXIT_OK)
        goto out;
    const char *model = model_config_name(u.cfg);

    /* push every tensor (copied out: the file's bytes need not be aligned) */
    uint64_t floats = 0, chunks = 0, biggest = 0;
    for (size_t i = 0; i < u.n; i++)
        if (ps_tensor_count(&u.infos[i]) > biggest)
            biggest = ps_tensor_count(&u.infos[i]);
    buf = malloc(biggest * sizeof *buf + 1);
    if (!buf) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory for a tensor of %llu floats",
                        (unsigned long long)biggest);
        goto out;
    }
    for (size_t i = 0; i < u.n; i++) {
        const Ps__TensorInfo *ti = &u.infos[i];
        uint64_t count = ps_tensor_count(ti);
        memcpy(buf, u.data[i], count * sizeof *buf);
        for (uint64_t k = 0; k < count; k++) {
            if (!isfinite(buf[k])) {
                rc = psctl_fail(p, "INVALID_ARGUMENT",
                                "tensor '%s' in %s holds %s at index %llu: weights must be finite",
                                ti->name, u.file, isnan(buf[k]) ? "NaN" : "an infinity",
                                (unsigned long long)k);
                goto out;
            }
        }
        ps_status st = ps_client_push_tensor(p->client, model, u.version, ti,
                                             PS__PUSH_OP__PUSH_ASSIGN, buf, count);
        if (st != PS_STATUS_OK) {
            rc = psctl_fail(p, ps_status_name(st),
                            "push tensor %s/%s: %s (version %llu is not registered; chunks pushed "
                            "so far stay on their shards)",
                            model, ti->name, ps_client_error(p->client),
                            (unsigned long long)u.version);
            goto out;
        }
        floats += count;
        chunks += ti->chunks;
    }

    /* which shards now hold the model (under the ring the pushes ended with) */
    uint32_t n_shards = ps_client_shard_count(p->client);
    used = calloc(n_shards + 1, sizeof *used);
    if (!used) {
        rc = psctl_fail(p, "NO_MEMORY", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < u.n; i++)
        for (uint32_t c = 0; c < u.infos[i].chunks; c++) {
            uint32_t s =
                ps_client_owner(p->client, ps_key_dense(model, u.version, u.infos[i].name, c));
            if (s < n_shards)
                used[s] = true;
        }

    Ps__ModelInfo mi = PS__MODEL_INFO__INIT;
    mi.name = (char *)model;
    mi.version = u.version;
    mi.config_json = (char *)model_config_text(u.cfg, NULL);
    mi.n_tensors = u.n;
    mi.tensors = u.info_ptrs;
    Ps__RegisterModelRequest req = PS__REGISTER_MODEL_REQUEST__INIT;
    req.model = &mi;
    ProtobufCMessage *resp = NULL;
    char what[512];
    snprintf(what, sizeof what, "register model %s version %llu (its tensors are pushed)", model,
             (unsigned long long)u.version);
    rc = psctl_coord_call(p, "/ps.Coordinator/RegisterModel", &req.base,
                          &ps__register_model_response__descriptor, &resp, what);
    if (rc != PSCTL_EXIT_OK)
        goto out;
    uint64_t version = ((Ps__RegisterModelResponse *)resp)->version;
    protobuf_c_message_free_unpacked(resp, NULL);
    double seconds = (double)(ps_now_us() - t0) / 1e6;

    if (p->json) {
        json_t *tensors = json_array(), *shards = json_array();
        for (size_t i = 0; i < u.n; i++) {
            json_t *t = psctl_model_tensor_json(&u.infos[i]);
            if (t)
                json_object_set_new(t, "bytes",
                                    json_integer((json_int_t)(ps_tensor_count(&u.infos[i]) * 4)));
            json_array_append_new(tensors, t);
        }
        for (uint32_t s = 0; s < n_shards; s++)
            if (used[s])
                json_array_append_new(shards, json_string(ps_client_shard_id(p->client, s)));
        rc = psctl_emit_json(p, json_pack("{s:s, s:I, s:s, s:o, s:I, s:I, s:I, s:o, s:I, s:f, s:O}",
                                          "model", model, "version", (json_int_t)version, "file",
                                          u.file, "tensors", tensors, "floats", (json_int_t)floats,
                                          "bytes", (json_int_t)(floats * 4), "chunks",
                                          (json_int_t)chunks, "shards", shards, "epoch",
                                          (json_int_t)ps_client_epoch(p->client), "seconds",
                                          seconds, "warnings", u.warnings));
        goto out;
    }
    printf("uploaded model %s version %llu from %s\n", model, (unsigned long long)version, u.file);
    static const char *const header[] = {"TENSOR", "SHAPE", "FLOATS", "BYTES", "CHUNKS"};
    psctl_table *t = psctl_table_create(5, header);
    for (size_t i = 0; i < u.n; i++) {
        const Ps__TensorInfo *ti = &u.infos[i];
        char shape[256], count[32], bytes[32], nchunks[32];
        psctl_shape_str(ti->shape, ti->n_shape, shape, sizeof shape);
        snprintf(count, sizeof count, "%llu", (unsigned long long)ps_tensor_count(ti));
        psctl_bytes_str(ps_tensor_count(ti) * 4, bytes, sizeof bytes);
        snprintf(nchunks, sizeof nchunks, "%u", ti->chunks);
        const char *row[] = {ti->name, shape, count, bytes, nchunks};
        psctl_table_add(t, row);
    }
    psctl_table_print(t, stdout);
    psctl_table_destroy(t);
    char total[32];
    size_t n_used = 0;
    for (uint32_t s = 0; s < n_shards; s++)
        n_used += used[s];
    printf("%zu tensors, %llu floats (%s), %llu chunk(s) of up to %u floats on %zu shard(s) (", u.n,
           (unsigned long long)floats, psctl_bytes_str(floats * 4, total, sizeof total),
           (unsigned long long)chunks, u.n ? u.infos[0].chunk_floats : 0, n_used);
    for (uint32_t s = 0, k = 0; s < n_shards; s++)
        if (used[s])
            printf("%s%s", k++ ? ", " : "", ps_client_shard_id(p->client, s));
    printf("), ring epoch %llu, %.2f s\n", (unsigned long long)ps_client_epoch(p->client), seconds);
out:
    free(buf);
    free(used);
    upload_free(&u);
    return rc;
}
