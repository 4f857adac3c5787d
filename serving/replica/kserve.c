/* kserve.c: the server-level KServe v2 handlers (live, ready, metadata), ModelReady and
 * ModelInfer, and the method table. See kserve.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.pb-c.h"
#include "infer_request.h"
#include "kserve_internal.h"
#include "util.h"

/* raw_input_contents (request) and raw_output_contents (response) field numbers */
#define KSERVE_RAW_INPUT_FIELD 7
#define KSERVE_RAW_OUTPUT_FIELD 6

ps_status kserve_create(const kserve_opts *opts, kserve **ret_kserve) {
    if (!opts || !opts->models)
        return PS_STATUS_INVALID_ARGUMENT;
    kserve *k = calloc(1, sizeof *k);
    if (!k)
        return PS_STATUS_NO_MEMORY;
    k->o = *opts;
    *ret_kserve = k;
    return PS_STATUS_OK;
}

void kserve_destroy(kserve *k) {
    free(k);
}

/* Parses a KServe version string ("" = newest, 0). */
static bool parse_version(const char *s, uint64_t *ret) {
    if (!s || !*s) {
        *ret = 0;
        return true;
    }
    return ps_parse_u64(s, ret) && *ret > 0;
}

ps_status kserve_model_find(kserve *k, rpc_ctx *ctx, const char *name, const char *version,
                            served **ret_served) {
    char err[256];
    uint64_t v = 0;
    if (infer_request_check_model_ref(name, version, err, sizeof err) != PS_STATUS_OK)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "%s", err);
    if (!parse_version(version, &v))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "model version '%s' is not a positive integer", version);
    served *s = models_acquire(k->o.models, name, v);
    if (s) {
        *ret_served = s;
        return PS_STATUS_OK;
    }
    if (v && (s = models_acquire(k->o.models, name, 0))) {
        uint64_t have = served_version(s);
        served_release(s);
        return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND,
                             "model '%s' has no version %s ready (serving version %llu)", name,
                             version, (unsigned long long)have);
    }
    char names[256];
    models_names_list(k->o.models, names, sizeof names);
    return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "unknown model '%s' (serving: %s)", name, names);
}

static ps_status h_server_live(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    resp.live = true;
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_server_ready(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    kserve *k = user;
    Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
    resp.ready = (!k->o.ready || k->o.ready(k->o.ready_arg)) && models_ready(k->o.models);
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_server_metadata(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    (void)user;
    Inference__ServerMetadataResponse resp = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    char *ext[] = {"statistics"};
    resp.name = KSERVE_SERVER_NAME;
    resp.version = KSERVE_SERVER_VERSION;
    resp.n_extensions = 1;
    resp.extensions = ext;
    return rpc_ctx_reply(ctx, &resp.base);
}

static ps_status h_model_ready(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    kserve *k = user;
    const Inference__ModelReadyRequest *req = (const Inference__ModelReadyRequest *)msg;
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    char err[256];
    uint64_t v = 0;
    if (infer_request_check_model_ref(req->name, req->version, err, sizeof err) != PS_STATUS_OK)
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT, "%s", err);
    if (!parse_version(req->version, &v))
        return rpc_ctx_error(ctx, PS_STATUS_INVALID_ARGUMENT,
                             "model version '%s' is not a positive integer", req->version);
    served *s = models_acquire(k->o.models, req->name, v);
    resp.ready = s != NULL;
    served_release(s);
    return rpc_ctx_reply(ctx, &resp.base);
}

/* Sends the outputs of a finished pass; their buffers go to the rpc layer. */
static ps_status reply_outputs(rpc_ctx *ctx, const served *s,
                               const Inference__ModelInferRequest *req, infer_request *ir,
                               uint64_t param_version) {
    size_t n_out = 0;
    model_output *outputs = infer_request_outputs(ir, &n_out);
    Inference__ModelInferResponse__InferOutputTensor *ot = calloc(n_out + 1, sizeof *ot);
    Inference__ModelInferResponse__InferOutputTensor **ot_ptrs = calloc(n_out + 1, sizeof *ot_ptrs);
    rpc_bytes_field *raw = calloc(n_out + 1, sizeof *raw);
    ps_status st = PS_STATUS_RESOURCE_EXHAUSTED;
    if (!ot || !ot_ptrs || !raw) {
        st = rpc_ctx_error(ctx, st, "out of memory");
        goto out;
    }
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
        float *buf = infer_request_output_take(ir, i);
        raw[i] = (rpc_bytes_field){.field_number = KSERVE_RAW_OUTPUT_FIELD,
                                   .data = buf,
                                   .len = count * 4,
                                   .release = free,
                                   .arg = buf};
    }
    char version[32];
    snprintf(version, sizeof version, "%llu", (unsigned long long)served_version(s));
    Inference__InferParameter pv = INFERENCE__INFER_PARAMETER__INIT;
    pv.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pv.int64_param = (int64_t)param_version;
    Inference__ModelInferResponse__ParametersEntry pe =
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    pe.key = "param_version";
    pe.value = &pv;
    /* consistent propagation: the published cut that computed the answer */
    Inference__InferParameter pub = INFERENCE__INFER_PARAMETER__INIT;
    pub.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    pub.int64_param = (int64_t)served_publish(s);
    Inference__ModelInferResponse__ParametersEntry pp =
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    pp.key = "publish";
    pp.value = &pub;
    Inference__ModelInferResponse__ParametersEntry *pes[] = {&pe, &pp};
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.model_name = (char *)served_name(s);
    resp.model_version = version;
    resp.id = req->id;
    resp.n_parameters = served_frozen(s) ? 2 : 1;
    resp.parameters = pes;
    resp.n_outputs = n_out;
    resp.outputs = ot_ptrs;
    st = rpc_ctx_reply_with_bytes(ctx, &resp.base, raw, n_out); /* takes the buffers */
out:
    free(ot);
    free(ot_ptrs);
    free(raw);
    return st;
}

static ps_status h_model_infer(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    kserve *k = user;
    int64_t t0 = ps_now_us(), t1 = 0, t2 = 0;
    const Inference__ModelInferRequest *req = (const Inference__ModelInferRequest *)msg;
    const rpc_bytes_view *raw = NULL;
    size_t n_raw = rpc_ctx_raw(ctx, &raw);
    char err[512];
    ps_status st = infer_request_check(req, n_raw, err, sizeof err); /* before anything else */
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(ctx, st, "%s", err);
    served *s = NULL;
    st = kserve_model_find(k, ctx, req->model_name, req->model_version, &s);
    if (st != PS_STATUS_OK)
        return st;
    infer_request *ir = NULL;
    infer_request_opts io = {.config = model_get_config(served_model(s)),
                             .request = req,
                             .raw = raw,
                             .n_raw = n_raw,
                             .tokenizer = served_tokenizer(s)};
    st = infer_request_create(&io, &ir, err, sizeof err);
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(ctx, st, "%s", err);
        goto out;
    }
    size_t n_in = 0, n_out = 0;
    const model_input *inputs = infer_request_inputs(ir, &n_in);
    model_output *outputs = infer_request_outputs(ir, &n_out);
    served_infer_report rep = {0};
    t1 = ps_now_us();
    st = served_infer(s, inputs, n_in, outputs, n_out, &rep, err, sizeof err);
    t2 = ps_now_us();
    if (rep.streak_start)
        replica_logger_printf(&k->o.logger, PS_LOG_ERROR, "%s (logged once until it answers again)",
                              err);
    if (rep.streak_end)
        replica_logger_printf(&k->o.logger, PS_LOG_INFO,
                              "model %s version %llu produces finite outputs again", served_name(s),
                              (unsigned long long)served_version(s));
    if (st != PS_STATUS_OK) {
        st = rpc_ctx_error(ctx, st, "%s", err);
        goto out;
    }
    st = reply_outputs(ctx, s, req, ir, rep.param_version);
out:
    served_stats_add(s, st == PS_STATUS_OK, (uint64_t)(ir ? infer_request_batch(ir) : 0),
                     (uint64_t)(ps_now_us() - t0) * 1000,
                     st == PS_STATUS_OK ? (uint64_t)(t2 - t1) * 1000 : 0);
    infer_request_destroy(ir);
    served_release(s);
    return st;
}

size_t kserve_methods(kserve *k, rpc_method *ret_methods, size_t cap) {
#define KSERVE(m) "/inference.GRPCInferenceService/" m
    const rpc_method methods[KSERVE_METHOD_COUNT] = {
        {KSERVE("ServerLive"), RPC_METHOD_UNARY, &inference__server_live_request__descriptor,
         h_server_live, k, 0},
        {KSERVE("ServerReady"), RPC_METHOD_UNARY, &inference__server_ready_request__descriptor,
         h_server_ready, k, 0},
        {KSERVE("ModelReady"), RPC_METHOD_UNARY, &inference__model_ready_request__descriptor,
         h_model_ready, k, 0},
        {KSERVE("ServerMetadata"), RPC_METHOD_UNARY,
         &inference__server_metadata_request__descriptor, h_server_metadata, k, 0},
        {KSERVE("ModelMetadata"), RPC_METHOD_UNARY, &inference__model_metadata_request__descriptor,
         kserve_model_metadata, k, 0},
        {KSERVE("ModelInfer"), RPC_METHOD_UNARY, &inference__model_infer_request__descriptor,
         h_model_infer, k, KSERVE_RAW_INPUT_FIELD},
        {KSERVE("ModelConfig"), RPC_METHOD_UNARY, &inference__model_config_request__descriptor,
         kserve_model_config, k, 0},
        {KSERVE("ModelStatistics"), RPC_METHOD_UNARY,
         &inference__model_statistics_request__descriptor, kserve_model_statistics, k, 0},
    };
#undef KSERVE
    if (cap < KSERVE_METHOD_COUNT)
        return 0;
    memcpy(ret_methods, methods, sizeof methods);
    return KSERVE_METHOD_COUNT;
}
