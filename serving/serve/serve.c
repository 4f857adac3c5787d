/* serve.c: ps-serve, a serving replica.
 *
 * Registers with the coordinator and heartbeats; watches the model registry and loads
 * every model's latest version as soon as it is uploaded (replica.c pulls its chunks
 * from the shards); subscribes to every shard on the ring and applies the updates it
 * streams, so a pushed change shows in the next response; and answers the KServe v2
 * gRPC inference protocol (plus Triton's ModelConfig and ModelStatistics, which
 * tritonclient and perf_analyzer call).
 *
 * Threads: rpc workers run the inference handlers; one thread watches the registry
 * and loads models; one keeps a subscriber thread per shard; one pulls stale chunks
 * again; one heartbeats. Each thread that pulls has its own ps_client.
 */
#include <getopt.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "coordinator.pb-c.h"
#include "hashring.h"
#include "inference.pb-c.h"
#include "log.h"
#include "psclient.h"
#include "replica.h"
#include "rpc.h"
#include "util.h"

#define MAX_SUBSCRIBERS 256
#define SERVER_NAME "ps-serve"
#define SERVER_VERSION "0.1.0"

typedef struct subscriber {
    char addr[256];
    pthread_t thread;
    atomic_bool wanted; /* still on the ring */
    atomic_bool done;   /* the thread has exited */
    pthread_mutex_t lock;
    rpc_stream *stream; /* the live Subscribe stream, cancelled to stop */
} subscriber;

static struct {
    char id[64];
    char addr[256];
    char coordinator[256];
    replica *rep;
    rpc_channel *coord;
    atomic_bool stopping;
    atomic_bool registered;
    int heartbeat_ms;

    pthread_mutex_t watch_lock;
    rpc_stream *models_stream;

    pthread_mutex_t subs_lock;
    subscriber *subs[MAX_SUBSCRIBERS];
    size_t n_subs;

    pthread_mutex_t fix_lock;
    pthread_cond_t fix_cond;
} g;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void wake_fixer(void) {
    pthread_mutex_lock(&g.fix_lock);
    pthread_cond_signal(&g.fix_cond);
    pthread_mutex_unlock(&g.fix_lock);
}

/* ================================================================= KServe handlers === */

static ps_status h_server_live(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    resp.live = true;
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_server_ready(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
    resp.ready = atomic_load(&g.registered) && replica_ready(g.rep);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_server_metadata(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Inference__ServerMetadataResponse resp = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    char *ext[] = {"statistics"};
    resp.name = SERVER_NAME;
    resp.version = SERVER_VERSION;
    resp.n_extensions = 1;
    resp.extensions = ext;
    return rpc_ctx_reply(ctx, &resp.base);
}

/* Parses a KServe version string ("" = newest). */
static bool parse_version(const char *s, uint64_t *ret) {
    if (!s || !*s) {
        *ret = 0;
        return true;
    }
    return ps_parse_u64(s, ret) && *ret > 0;
}

/* Finds the served model a request names, or fails with NOT_FOUND/INVALID_ARGUMENT. */
static ps_status find_model(rpc_ctx *ctx, const char *name, const char *version, served **ret) {
    uint64_t v = 0;
    if (!parse_version(version, &v))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "model version '%s' is not a positive integer", version);
    served *s = replica_acquire(g.rep, name, v);
    if (!s) {
        char names[512];
        replica_list_names(g.rep, names, sizeof names);
        if (v && (s = replica_acquire(g.rep, name, 0))) {
            uint64_t have = served_version(s);
            served_release(s);
            return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND,
                                 "model '%s' has no version %s ready (serving version %llu)", name,
                                 version, (unsigned long long)have);
        }
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "unknown model '%s' (serving: %s)", name,
                             names);
    }
    *ret = s;
    return PS_STATUS_OK;
}

static ps_status h_model_ready(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Inference__ModelReadyRequest *req = (const Inference__ModelReadyRequest *)msg;
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    uint64_t v = 0;
    if (!parse_version(req->version, &v))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "model version '%s' is not a positive integer", req->version);
    served *s = replica_acquire(g.rep, req->name, v);
    resp.ready = s != NULL;
    served_release(s);
    return rpc_ctx_reply(ctx, &resp.base);
}

static void shape_to_string(const int64_t *dims, size_t n, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

static ps_status h_model_metadata(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Inference__ModelMetadataRequest *req = (const Inference__ModelMetadataRequest *)msg;
    served *s = NULL;
    ps_status st = find_model(ctx, req->name, req->version, &s);
    if (st != PS_STATUS_OK)
        return st;
    const model_config *cfg = model_get_config(served_model(s));
    size_t ni = model_config_input_count(cfg), no = model_config_output_count(cfg);
    Inference__ModelMetadataResponse__TensorMetadata tm[ni + no];
    Inference__ModelMetadataResponse__TensorMetadata *in_ptrs[ni + 1], *out_ptrs[no + 1];
    model_tensor_desc d[ni + no];
    for (size_t i = 0; i < ni + no; i++) {
        if (i < ni)
            model_config_input_at(cfg, i, &d[i]);
        else
            model_config_output_at(cfg, i - ni, &d[i]);
        inference__model_metadata_response__tensor_metadata__init(&tm[i]);
        tm[i].name = (char *)d[i].name;
        tm[i].datatype = (char *)d[i].datatype;
        tm[i].n_shape = d[i].ndims;
        tm[i].shape = d[i].dims;
        if (i < ni)
            in_ptrs[i] = &tm[i];
        else
            out_ptrs[i - ni] = &tm[i];
    }
    char version[32];
    snprintf(version, sizeof version, "%llu", (unsigned long long)served_version(s));
    char *versions[] = {version};
    Inference__ModelMetadataResponse resp = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    resp.name = (char *)model_config_name(cfg);
    resp.n_versions = 1;
    resp.versions = versions;
    resp.platform = "ps_graph";
    resp.n_inputs = ni;
    resp.inputs = in_ptrs;
    resp.n_outputs = no;
    resp.outputs = out_ptrs;
    st = rpc_ctx_reply(ctx, &resp.base);
    served_release(s);
    return st;
}

static ps_status h_model_config(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Inference__ModelConfigRequest *req = (const Inference__ModelConfigRequest *)msg;
    served *s = NULL;
    ps_status st = find_model(ctx, req->name, req->version, &s);
    if (st != PS_STATUS_OK)
        return st;
    const model_config *cfg = model_get_config(served_model(s));
    uint32_t mbs = model_config_max_batch_size(cfg);
    size_t ni = model_config_input_count(cfg), no = model_config_output_count(cfg);
    Inference__ModelInput inputs[ni + 1], *in_ptrs[ni + 1];
    Inference__ModelOutput outputs[no + 1], *out_ptrs[no + 1];
    model_tensor_desc d;
    size_t skip = mbs > 0 ? 1 : 0; /* Triton's dims leave out the batch dimension */
    int64_t dims_in[ni + 1][MODEL_MAX_DIMS], dims_out[no + 1][MODEL_MAX_DIMS];
    for (size_t i = 0; i < ni; i++) {
        model_config_input_at(cfg, i, &d);
        inference__model_input__init(&inputs[i]);
        inputs[i].name = (char *)d.name;
        inputs[i].data_type = INFERENCE__DATA_TYPE__TYPE_FP32;
        inputs[i].n_dims = d.ndims - skip;
        memcpy(dims_in[i], d.dims + skip, (d.ndims - skip) * sizeof(int64_t));
        inputs[i].dims = dims_in[i];
        in_ptrs[i] = &inputs[i];
    }
    for (size_t i = 0; i < no; i++) {
        model_config_output_at(cfg, i, &d);
        inference__model_output__init(&outputs[i]);
        outputs[i].name = (char *)d.name;
        outputs[i].data_type = INFERENCE__DATA_TYPE__TYPE_FP32;
        outputs[i].n_dims = d.ndims - skip;
        memcpy(dims_out[i], d.dims + skip, (d.ndims - skip) * sizeof(int64_t));
        outputs[i].dims = dims_out[i];
        out_ptrs[i] = &outputs[i];
    }
    Inference__ModelConfig mc = INFERENCE__MODEL_CONFIG__INIT;
    mc.name = (char *)model_config_name(cfg);
    mc.platform = "ps_graph";
    mc.backend = "ps";
    mc.max_batch_size = (int32_t)mbs;
    mc.n_input = ni;
    mc.input = in_ptrs;
    mc.n_output = no;
    mc.output = out_ptrs;
    Inference__ModelConfigResponse resp = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    resp.config = &mc;
    st = rpc_ctx_reply(ctx, &resp.base);
    served_release(s);
    return st;
}

static ps_status h_model_statistics(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    const Inference__ModelStatisticsRequest *req = (const Inference__ModelStatisticsRequest *)msg;
    served *s = NULL;
    ps_status st = find_model(ctx, req->name, req->version, &s);
    if (st != PS_STATUS_OK)
        return st;
    served_stats ss;
    served_stats_get(s, &ss);
    Inference__StatisticDuration success = INFERENCE__STATISTIC_DURATION__INIT,
                                 fail = INFERENCE__STATISTIC_DURATION__INIT,
                                 queue = INFERENCE__STATISTIC_DURATION__INIT,
                                 cin = INFERENCE__STATISTIC_DURATION__INIT,
                                 cinf = INFERENCE__STATISTIC_DURATION__INIT,
                                 cout = INFERENCE__STATISTIC_DURATION__INIT;
    success.count = ss.success;
    success.ns = ss.success_ns;
    fail.count = ss.fail;
    queue.count = ss.success;
    cin.count = ss.success;
    cinf.count = ss.success;
    cinf.ns = ss.compute_ns;
    cout.count = ss.success;
    Inference__InferStatistics is = INFERENCE__INFER_STATISTICS__INIT;
    is.success = &success;
    is.fail = &fail;
    is.queue = &queue;
    is.compute_input = &cin;
    is.compute_infer = &cinf;
    is.compute_output = &cout;
    char version[32];
    snprintf(version, sizeof version, "%llu", (unsigned long long)served_version(s));
    Inference__ModelStatistics ms = INFERENCE__MODEL_STATISTICS__INIT;
    ms.name = (char *)model_name(served_model(s));
    ms.version = version;
    ms.last_inference = ss.last_inference_ms;
    ms.inference_count = ss.inferences;
    ms.execution_count = ss.executions;
    ms.inference_stats = &is;
    Inference__ModelStatistics *list[] = {&ms};
    Inference__ModelStatisticsResponse resp = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    resp.n_model_stats = 1;
    resp.model_stats = list;
    st = rpc_ctx_reply(ctx, &resp.base);
    served_release(s);
    return st;
}

/* Reads one input tensor's data (typed contents or raw bytes) into *ret_data
 * (malloc'd, count floats), validating everything against the model's input. */
static ps_status read_input(rpc_ctx *ctx, const Inference__ModelInferRequest *req, size_t i,
                            const model_tensor_desc *want, uint32_t mbs, model_input *ret,
                            float **ret_data) {
    const Inference__ModelInferRequest__InferInputTensor *in = req->inputs[i];
    char want_shape[128], got_shape[128];
    shape_to_string(want->dims, want->ndims, want_shape, sizeof want_shape);
    shape_to_string(in->shape, in->n_shape, got_shape, sizeof got_shape);
    if (strcmp(in->datatype, "FP32") != 0)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "input '%s': datatype %s, expected FP32", in->name, in->datatype);
    if (in->n_shape != want->ndims)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "input '%s': shape %s, expected %s",
                             in->name, got_shape, want_shape);
    uint64_t count = 1;
    for (size_t k = 0; k < in->n_shape; k++) {
        bool batch_dim = mbs > 0 && k == 0;
        if (batch_dim) {
            if (in->shape[0] < 1)
                return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                     "input '%s': batch size %lld must be at least 1", in->name,
                                     (long long)in->shape[0]);
            if ((uint64_t)in->shape[0] > mbs)
                return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                     "input '%s': batch size %lld is over the model's "
                                     "max_batch_size %u",
                                     in->name, (long long)in->shape[0], mbs);
        } else if (in->shape[k] != want->dims[k]) {
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "input '%s': shape %s, expected %s", in->name, got_shape,
                                 want_shape);
        }
        count *= (uint64_t)in->shape[k];
    }
    float *data = malloc(count * 4 + 1);
    if (!data)
        return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    const rpc_bytes_view *raws = NULL;
    size_t n_raw = rpc_ctx_raw(ctx, &raws); /* raw_input_contents, not unpacked */
    if (n_raw > 0) {
        const rpc_bytes_view *raw = &raws[i];
        if (in->contents && in->contents->n_fp32_contents) {
            free(data);
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "input '%s' has both typed contents and raw_input_contents",
                                 in->name);
        }
        if (raw->len != count * 4) {
            free(data);
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "input '%s': %zu bytes of raw content, expected %llu (shape %s "
                                 "of FP32)",
                                 in->name, raw->len, (unsigned long long)(count * 4), got_shape);
        }
        memcpy(data, raw->data, raw->len);
    } else {
        size_t have = in->contents ? in->contents->n_fp32_contents : 0;
        if (have != count) {
            free(data);
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "input '%s': %zu fp32_contents values, expected %llu (shape %s)",
                                 in->name, have, (unsigned long long)count, got_shape);
        }
        memcpy(data, in->contents->fp32_contents, count * 4);
    }
    for (uint64_t k = 0; k < count; k++) {
        if (!isfinite(data[k])) {
            free(data);
            return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                 "input '%s': element %llu is not a finite number", in->name,
                                 (unsigned long long)k);
        }
    }
    ret->name = in->name;
    ret->ndims = (uint32_t)in->n_shape;
    for (size_t k = 0; k < in->n_shape; k++)
        ret->dims[k] = in->shape[k];
    ret->data = data;
    *ret_data = data;
    return PS_STATUS_OK;
}

static ps_status h_model_infer(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)user;
    int64_t t0 = ps_now_us();
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)msg;
    served *s = NULL;
    ps_status st = find_model(ctx, req->model_name, req->model_version, &s);
    if (st != PS_STATUS_OK)
        return st;
    const model_config *cfg = model_get_config(served_model(s));
    uint32_t mbs = model_config_max_batch_size(cfg);
    size_t ni = model_config_input_count(cfg), no = model_config_output_count(cfg);
    size_t n_in = req->n_inputs;
    model_input inputs[n_in + 1];
    float *in_data[n_in + 1];
    size_t n_out = req->n_outputs ? req->n_outputs : no;
    model_output outputs[n_out + 1];
    model_tensor_desc out_desc[n_out + 1];
    Inference__ModelInferResponse__InferOutputTensor ot[n_out + 1], *ot_ptrs[n_out + 1];
    rpc_bytes_field raw[n_out + 1];
    size_t n_loaded = 0, n_raw = 0;
    int64_t batch = -1;
    uint64_t param_version = 0;
    char err[512];
    memset(outputs, 0, sizeof outputs);

    const rpc_bytes_view *raws = NULL;
    size_t n_raw_in = rpc_ctx_raw(ctx, &raws);
    if (n_raw_in && n_raw_in != n_in) {
        st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                           "%zu raw_input_contents for %zu inputs: give one per input, in order",
                           n_raw_in, n_in);
        goto out;
    }
    if (n_in != ni) {
        st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                           "model '%s' takes %zu input(s), the request has %zu", req->model_name,
                           ni, n_in);
        goto out;
    }
    for (size_t i = 0; i < n_in; i++) {
        model_tensor_desc want;
        bool found = false;
        for (size_t k = 0; k < ni && !found; k++) {
            model_config_input_at(cfg, k, &want);
            found = strcmp(want.name, req->inputs[i]->name) == 0;
        }
        if (!found) {
            model_config_input_at(cfg, 0, &want);
            char shape[128];
            shape_to_string(want.dims, want.ndims, shape, sizeof shape);
            st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                               "unknown input '%s': model '%s' takes '%s' FP32 %s%s",
                               req->inputs[i]->name, req->model_name, want.name, shape,
                               ni > 1 ? " (and more)" : "");
            goto out;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(req->inputs[k]->name, req->inputs[i]->name) == 0) {
                st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "input '%s' is given twice",
                                   req->inputs[i]->name);
                goto out;
            }
        }
        st = read_input(ctx, req, i, &want, mbs, &inputs[i], &in_data[i]);
        if (st != PS_STATUS_OK)
            goto out;
        n_loaded++;
        if (mbs > 0) {
            if (batch >= 0 && inputs[i].dims[0] != batch) {
                st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                                   "inputs disagree on the batch size (%lld and %lld)",
                                   (long long)batch, (long long)inputs[i].dims[0]);
                goto out;
            }
            batch = inputs[i].dims[0];
        }
    }
    for (size_t i = 0; i < n_out; i++) {
        const char *name = req->n_outputs ? req->outputs[i]->name : NULL;
        bool found = false;
        if (!name) {
            found = model_config_output_at(cfg, i, &out_desc[i]);
        } else {
            for (size_t k = 0; k < no && !found; k++) {
                model_config_output_at(cfg, k, &out_desc[i]);
                found = strcmp(out_desc[i].name, name) == 0;
            }
        }
        if (!found) {
            st = rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                               "unknown output '%s' requested from model '%s'", name ? name : "?",
                               req->model_name);
            goto out;
        }
        uint64_t count = 1;
        for (uint32_t k = 0; k < out_desc[i].ndims; k++)
            count *=
                (uint64_t)(out_desc[i].dims[k] < 0 ? (batch > 0 ? batch : 1) : out_desc[i].dims[k]);
        outputs[i].name = out_desc[i].name;
        outputs[i].capacity = count;
        outputs[i].buffer = malloc(count * 4 + 1);
        if (!outputs[i].buffer) {
            st = rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
    }
    int64_t t1 = ps_now_us();
    st = served_infer(s, inputs, n_in, outputs, n_out, &param_version, err, sizeof err);
    int64_t t2 = ps_now_us();
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(ctx, st, "%s", err);
        goto out;
    }
    char version[32];
    snprintf(version, sizeof version, "%llu", (unsigned long long)served_version(s));
    for (size_t i = 0; i < n_out; i++) {
        inference__model_infer_response__infer_output_tensor__init(&ot[i]);
        ot[i].name = (char *)outputs[i].name;
        ot[i].datatype = "FP32";
        ot[i].n_shape = outputs[i].ndims;
        ot[i].shape = outputs[i].dims;
        ot_ptrs[i] = &ot[i];
        uint64_t count = 1;
        for (uint32_t k = 0; k < outputs[i].ndims; k++)
            count *= (uint64_t)outputs[i].dims[k];
        raw[n_raw++] = (rpc_bytes_field){.field_number = 6,
                                         .data = outputs[i].buffer,
                                         .len = count * 4,
                                         .release = free,
                                         .arg = outputs[i].buffer};
    }
    Inference__InferParameter pv = INFERENCE__INFER_PARAMETER__INIT;
    pv.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pv.int64_param = (int64_t)param_version;
    Inference__ModelInferResponse__ParametersEntry pe =
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    pe.key = "param_version";
    pe.value = &pv;
    Inference__ModelInferResponse__ParametersEntry *pes[] = {&pe};
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.model_name = (char *)model_name(served_model(s));
    resp.model_version = version;
    resp.id = req->id;
    resp.n_parameters = 1;
    resp.parameters = pes;
    resp.n_outputs = n_out;
    resp.outputs = ot_ptrs;
    st = rpc_ctx_reply_with_bytes(ctx, &resp.base, raw, n_raw);
    for (size_t i = 0; i < n_out; i++)
        outputs[i].buffer = NULL; /* released by the reply */
    served_stats_add(s, st == PS_STATUS_OK, batch > 0 ? (uint64_t)batch : 1,
                     (uint64_t)(ps_now_us() - t0) * 1000, (uint64_t)(t2 - t1) * 1000);
    served_release(s);
    for (size_t i = 0; i < n_loaded; i++)
        free(in_data[i]);
    return st;
out:
    if (s)
        served_stats_add(s, false, 0, 0, 0);
    for (size_t i = 0; i < n_loaded; i++)
        free(in_data[i]);
    for (size_t i = 0; i < n_out; i++)
        free(outputs[i].buffer);
    served_release(s);
    return st;
}

/* ================================================================= coordinator === */

static ps_status do_register(void) {
    rpc_result res;
    ps_status st = ps_register_node(g.coord, g.id, g.addr, 1, PS__NODE_ROLE__ROLE_SERVE,
                                    &g.heartbeat_ms, &res);
    if (st != PS_STATUS_OK) {
        PS_WARN("register with coordinator %s failed: %s %s", g.coordinator,
                rpc_code_name(res.grpc_code), res.details);
        return st;
    }
    atomic_store(&g.registered, true);
    return PS_STATUS_OK;
}

static void *heartbeat_thread(void *arg) {
    (void)arg;
    while (!atomic_load(&g.stopping)) {
        sleep_ms(g.heartbeat_ms);
        if (atomic_load(&g.stopping))
            break;
        Ps__HeartbeatRequest req = PS__HEARTBEAT_REQUEST__INIT;
        req.id = g.id;
        ProtobufCMessage *resp = NULL;
        rpc_call_opts opts = {.timeout_ms = g.heartbeat_ms};
        ps_status st = rpc_call(g.coord, "/ps.Coordinator/Heartbeat", &req.base,
                                &ps__heartbeat_response__descriptor, &opts, &resp, NULL);
        if (st == PS_STATUS_NOT_FOUND)
            do_register();
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return NULL;
}

/* Watches the registry; loads each model's latest version. */
static void *models_thread(void *arg) {
    (void)arg;
    ps_client *pc = NULL;
    bool warned = false;
    while (!atomic_load(&g.stopping)) {
        char err[512];
        if (!pc && ps_client_create(g.coordinator, &pc, err, sizeof err) != PS_STATUS_OK) {
            if (!warned) /* once per outage, not every retry */
                PS_WARN("model watch: %s; retrying", err);
            warned = true;
            pc = NULL;
            sleep_ms(500);
            continue;
        }
        warned = false;
        Ps__WatchModelsRequest req = PS__WATCH_MODELS_REQUEST__INIT;
        rpc_stream *s = NULL;
        rpc_call_opts opts = {.wait_for_ready = true};
        if (rpc_stream_open(g.coord, "/ps.Coordinator/WatchModels", &req.base,
                            &ps__models_update__descriptor, &opts, &s) != PS_STATUS_OK) {
            sleep_ms(500);
            continue;
        }
        pthread_mutex_lock(&g.watch_lock);
        g.models_stream = s;
        if (atomic_load(&g.stopping))
            rpc_stream_cancel(s);
        pthread_mutex_unlock(&g.watch_lock);
        ProtobufCMessage *m = NULL;
        while (!atomic_load(&g.stopping) && rpc_stream_next(s, &m) == PS_STATUS_OK && m) {
            Ps__ModelsUpdate *up = (Ps__ModelsUpdate *)m;
            const char *names[up->n_models + 1];
            uint64_t versions[up->n_models + 1];
            for (size_t i = 0; i < up->n_models; i++) {
                names[i] = up->models[i]->name;
                versions[i] = up->models[i]->version;
            }
            replica_expect(g.rep, up->n_models, names, versions);
            ps_client_refresh(pc);
            for (size_t i = 0; i < up->n_models && !atomic_load(&g.stopping); i++) {
                char err[512];
                int64_t t0 = ps_now_ms();
                served *have = replica_acquire(g.rep, names[i], versions[i]);
                if (have) {
                    served_release(have);
                    continue;
                }
                ps_status st = replica_load(g.rep, pc, up->models[i], err, sizeof err);
                if (st == PS_STATUS_OK)
                    PS_INFO("model %s version %llu loaded in %lld ms", names[i],
                            (unsigned long long)versions[i], (long long)(ps_now_ms() - t0));
                else
                    PS_ERROR("cannot load model %s version %llu: %s", names[i],
                             (unsigned long long)versions[i], err);
            }
            protobuf_c_message_free_unpacked(m, NULL);
        }
        pthread_mutex_lock(&g.watch_lock);
        g.models_stream = NULL;
        pthread_mutex_unlock(&g.watch_lock);
        rpc_stream_destroy(s);
        if (!atomic_load(&g.stopping))
            sleep_ms(300); /* then watch again from the start: loading is idempotent */
    }
    ps_client_destroy(pc);
    return NULL;
}

/* ================================================================= subscriptions === */

/* Asks a shard for its last applied sequence number. */
static ps_status shard_seq(rpc_channel *ch, uint64_t *ret_seq) {
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts opts = {.timeout_ms = 2000};
    ps_status st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base,
                            &ps__health_response__descriptor, &opts, &resp, NULL);
    if (st == PS_STATUS_OK) {
        *ret_seq = ((Ps__HealthResponse *)resp)->seq;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

static void *subscriber_thread(void *arg) {
    subscriber *sub = arg;
    rpc_channel *ch = NULL;
    bool have_seq = false;
    uint64_t seq = 0;
    if (rpc_channel_create(sub->addr, NULL, &ch) != PS_STATUS_OK)
        goto done;
    while (!atomic_load(&g.stopping) && atomic_load(&sub->wanted)) {
        uint64_t now_seq = 0;
        if (shard_seq(ch, &now_seq) != PS_STATUS_OK) {
            sleep_ms(200);
            continue;
        }
        if (!have_seq) {
            seq = now_seq; /* models pulled from now on include everything before */
            have_seq = true;
        } else if (now_seq < seq) {
            PS_WARN("shard at %s restarted (seq %llu < %llu): pulling everything again", sub->addr,
                    (unsigned long long)now_seq, (unsigned long long)seq);
            seq = now_seq;
            replica_mark_all_stale(g.rep);
            wake_fixer();
        }
        Ps__SubscribeRequest req = PS__SUBSCRIBE_REQUEST__INIT;
        req.from_seq = seq;
        rpc_stream *s = NULL;
        if (rpc_stream_open(ch, "/ps.ParameterServer/Subscribe", &req.base, &ps__update__descriptor,
                            NULL, &s) != PS_STATUS_OK) {
            sleep_ms(200);
            continue;
        }
        pthread_mutex_lock(&sub->lock);
        sub->stream = s;
        if (atomic_load(&g.stopping) || !atomic_load(&sub->wanted))
            rpc_stream_cancel(s);
        pthread_mutex_unlock(&sub->lock);
        ProtobufCMessage *m = NULL;
        while (rpc_stream_next(s, &m) == PS_STATUS_OK && m) {
            Ps__Update *u = (Ps__Update *)m;
            if (u->resync) {
                PS_WARN("shard at %s: update log overrun, pulling everything again", sub->addr);
                replica_mark_all_stale(g.rep);
                wake_fixer();
            } else {
                replica_apply_update(g.rep, u);
            }
            seq = u->seq;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        pthread_mutex_lock(&sub->lock);
        sub->stream = NULL;
        pthread_mutex_unlock(&sub->lock);
        rpc_stream_destroy(s);
        wake_fixer(); /* anything marked stale meanwhile */
        if (!atomic_load(&g.stopping) && atomic_load(&sub->wanted))
            sleep_ms(100);
    }
    rpc_channel_destroy(ch);
done:
    atomic_store(&sub->done, true);
    return NULL;
}

static void subscriber_stop(subscriber *sub) {
    atomic_store(&sub->wanted, false);
    pthread_mutex_lock(&sub->lock);
    if (sub->stream)
        rpc_stream_cancel(sub->stream);
    pthread_mutex_unlock(&sub->lock);
}

/* Keeps one subscriber per shard on the ring. */
static void *ring_thread(void *arg) {
    (void)arg;
    while (!atomic_load(&g.stopping)) {
        Ps__GetRingRequest req = PS__GET_RING_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_call_opts opts = {.timeout_ms = 2000};
        if (rpc_call(g.coord, "/ps.Coordinator/GetRing", &req.base, &ps__ring__descriptor, &opts,
                     &resp, NULL) == PS_STATUS_OK) {
            Ps__Ring *ring = (Ps__Ring *)resp;
            pthread_mutex_lock(&g.subs_lock);
            for (size_t i = 0; i < g.n_subs; i++) {
                bool on = false;
                for (size_t k = 0; k < ring->n_nodes; k++)
                    on |= ring->nodes[k]->in_ring &&
                          strcmp(ring->nodes[k]->addr, g.subs[i]->addr) == 0;
                if (!on)
                    subscriber_stop(g.subs[i]);
            }
            for (size_t k = 0; k < ring->n_nodes && g.n_subs < MAX_SUBSCRIBERS; k++) {
                const Ps__NodeInfo *n = ring->nodes[k];
                if (!n->in_ring)
                    continue;
                bool have = false;
                for (size_t i = 0; i < g.n_subs; i++)
                    have |=
                        atomic_load(&g.subs[i]->wanted) && strcmp(g.subs[i]->addr, n->addr) == 0;
                if (have)
                    continue;
                subscriber *sub = calloc(1, sizeof *sub);
                if (!sub)
                    break;
                snprintf(sub->addr, sizeof sub->addr, "%s", n->addr);
                atomic_init(&sub->wanted, true);
                pthread_mutex_init(&sub->lock, NULL);
                if (pthread_create(&sub->thread, NULL, subscriber_thread, sub) != 0) {
                    free(sub);
                    break;
                }
                g.subs[g.n_subs++] = sub;
                PS_INFO("subscribed to shard %s at %s", n->id, n->addr);
            }
            /* reap finished subscribers that are no longer wanted */
            for (size_t i = 0; i < g.n_subs;) {
                subscriber *sub = g.subs[i];
                if (!atomic_load(&sub->wanted) && atomic_load(&sub->done)) {
                    pthread_join(sub->thread, NULL);
                    pthread_mutex_destroy(&sub->lock);
                    free(sub);
                    g.subs[i] = g.subs[--g.n_subs];
                } else {
                    i++;
                }
            }
            pthread_mutex_unlock(&g.subs_lock);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        for (int i = 0; i < 10 && !atomic_load(&g.stopping); i++)
            sleep_ms(50);
    }
    return NULL;
}

/* Pulls stale chunks again, when woken or every 100 ms. */
static void *fixer_thread(void *arg) {
    (void)arg;
    ps_client *pc = NULL;
    bool failing = false;
    while (!atomic_load(&g.stopping)) {
        pthread_mutex_lock(&g.fix_lock);
        struct timespec ts = ps_abstime_after_ms(100);
        pthread_cond_timedwait(&g.fix_cond, &g.fix_lock, &ts);
        pthread_mutex_unlock(&g.fix_lock);
        if (atomic_load(&g.stopping))
            break;
        if (!pc && ps_client_create(g.coordinator, &pc, NULL, 0) != PS_STATUS_OK) {
            pc = NULL; /* the model watch logs why; try again next round */
            continue;
        }
        size_t left = 0;
        if (replica_fix_stale(g.rep, pc, &left) != PS_STATUS_OK) {
            if (!failing) /* once per streak of failures, not ten times a second */
                PS_WARN("pulling stale chunks again failed (serving the last good values "
                        "meanwhile; retrying): %s",
                        ps_client_error(pc));
            failing = true;
            ps_client_refresh(pc);
        } else if (failing) {
            PS_INFO("stale chunks pulled again: replica up to date");
            failing = false;
        }
    }
    ps_client_destroy(pc);
    return NULL;
}

/* ================================================================= main === */

static void usage(FILE *out) {
    fprintf(out,
            "usage: ps-serve --id ID [options]\n"
            "A serving replica: loads every registered model from the shards, applies the\n"
            "updates they stream, and answers KServe v2 gRPC inference calls\n"
            "(inference.GRPCInferenceService, with Triton's ModelConfig and ModelStatistics).\n\n"
            "  --id ID                 this replica's unique name (required)\n"
            "  --listen HOST:PORT      address to serve on (default 127.0.0.1:0, a free port)\n"
            "  --coordinator HOST:PORT the coordinator (default: $PS_COORDINATOR, then\n"
            "                          COORDINATOR= in run/cluster.env)\n"
            "  --threads N             rpc worker threads (default: number of CPUs)\n"
            "  --max-message-mb N      largest request or response (default 64)\n"
            "  --port-file FILE        write the bound port there once serving\n"
            "  -h, --help              this text\n");
}

int main(int argc, char **argv) {
    const char *listen = "127.0.0.1:0", *coord_flag = NULL, *port_file = NULL, *id = NULL;
    int threads = 0, max_mb = 64;
    static const struct option longopts[] = {
        {"id", required_argument, NULL, 'i'},
        {"listen", required_argument, NULL, 'l'},
        {"coordinator", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"max-message-mb", required_argument, NULL, 'm'},
        {"port-file", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            id = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'c':
            coord_flag = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 't':
            if (!ps_flag_int("ps-serve", "threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case 'm':
            if (!ps_flag_int("ps-serve", "max-message-mb", optarg, 1, 2047, &max_mb))
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!id || !*id || strlen(id) >= sizeof g.id) {
        fprintf(stderr, "ps-serve: --id is required (at most %zu characters)\n", sizeof g.id - 1);
        usage(stderr);
        return 2;
    }
    if (!ps_flag_coordinator("ps-serve", coord_flag, g.coordinator, sizeof g.coordinator))
        return 2;
    snprintf(g.id, sizeof g.id, "%s", id);
    ps_log_init("ps-serve", g.id);
    rpc_signals_block();
    rpc_process_init();
    rpc_tune_allocator();
    pthread_mutex_init(&g.watch_lock, NULL);
    pthread_mutex_init(&g.subs_lock, NULL);
    pthread_mutex_init(&g.fix_lock, NULL);
    pthread_cond_init(&g.fix_cond, NULL);
    if (replica_create(&g.rep) != PS_STATUS_OK)
        return 1;

#define KSERVE(m) "/inference.GRPCInferenceService/" m
    const rpc_method methods[] = {
        {KSERVE("ServerLive"), RPC_METHOD_UNARY, &inference__server_live_request__descriptor,
         h_server_live, NULL, 0},
        {KSERVE("ServerReady"), RPC_METHOD_UNARY, &inference__server_ready_request__descriptor,
         h_server_ready, NULL, 0},
        {KSERVE("ModelReady"), RPC_METHOD_UNARY, &inference__model_ready_request__descriptor,
         h_model_ready, NULL, 0},
        {KSERVE("ServerMetadata"), RPC_METHOD_UNARY,
         &inference__server_metadata_request__descriptor, h_server_metadata, NULL, 0},
        {KSERVE("ModelMetadata"), RPC_METHOD_UNARY, &inference__model_metadata_request__descriptor,
         h_model_metadata, NULL, 0},
        {KSERVE("ModelInfer"), RPC_METHOD_UNARY, &inference__model_infer_request__descriptor,
         h_model_infer, NULL, 7},
        {KSERVE("ModelConfig"), RPC_METHOD_UNARY, &inference__model_config_request__descriptor,
         h_model_config, NULL, 0},
        {KSERVE("ModelStatistics"), RPC_METHOD_UNARY,
         &inference__model_statistics_request__descriptor, h_model_statistics, NULL, 0},
    };
#undef KSERVE
    rpc_server_opts opts = {.listen = listen,
                            .threads = threads,
                            .grace_ms = 3000,
                            .max_message_bytes = (size_t)max_mb << 20};
    rpc_server *server = NULL;
    int port = 0;
    ps_status st =
        rpc_server_serve(&opts, methods, sizeof methods / sizeof methods[0], &server, &port);
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot serve on %s: %s", listen, ps_status_str(st));
        return 1;
    }
    ps_advertise_addr(listen, port, g.addr, sizeof g.addr);
    if (rpc_channel_create(g.coordinator, NULL, &g.coord) != PS_STATUS_OK) {
        PS_ERROR("bad coordinator address %s", g.coordinator);
        rpc_server_destroy(server);
        return 1;
    }
    g.heartbeat_ms = 1000;
    for (int tries = 0; do_register() != PS_STATUS_OK; tries++) {
        if (tries == 30) {
            PS_ERROR("cannot register with the coordinator at %s; giving up", g.coordinator);
            rpc_server_destroy(server);
            rpc_channel_destroy(g.coord);
            return 1;
        }
        sleep_ms(500);
    }
    pthread_t t_hb, t_models, t_ring, t_fix;
    pthread_create(&t_ring, NULL, ring_thread, NULL);
    pthread_create(&t_hb, NULL, heartbeat_thread, NULL);
    pthread_create(&t_fix, NULL, fixer_thread, NULL);
    sleep_ms(50); /* let the subscribers start before the first models load */
    pthread_create(&t_models, NULL, models_thread, NULL);
    PS_INFO("serving KServe v2 gRPC on %s; coordinator %s", g.addr, g.coordinator);
    if (port_file && ps_write_port_file(port_file, port) != PS_STATUS_OK)
        PS_ERROR("cannot write port file %s", port_file);

    int sig = rpc_signals_wait();
    PS_INFO("signal %d: shutting down", sig);
    atomic_store(&g.stopping, true);
    rpc_server_destroy(server);
    pthread_mutex_lock(&g.watch_lock);
    if (g.models_stream)
        rpc_stream_cancel(g.models_stream);
    pthread_mutex_unlock(&g.watch_lock);
    wake_fixer();
    pthread_join(t_models, NULL);
    pthread_join(t_ring, NULL);
    pthread_join(t_hb, NULL);
    pthread_join(t_fix, NULL);
    for (size_t i = 0; i < g.n_subs; i++) {
        subscriber_stop(g.subs[i]);
        pthread_join(g.subs[i]->thread, NULL);
        pthread_mutex_destroy(&g.subs[i]->lock);
        free(g.subs[i]);
    }
    rpc_channel_destroy(g.coord);
    replica_destroy(g.rep);
    PS_INFO("stopped");
    return 0;
}
