/* kserve_model.c: the per-model description handlers: KServe ModelMetadata, and
 * Triton's ModelConfig and ModelStatistics (what tritonclient and perf_analyzer read).
 * Responses are built on the heap from the model's own config, datatypes included
 * (FP32, INT64 for ids and masks, BYTES for a text input). See kserve.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.pb-c.h"
#include "kserve_internal.h"

static ps_status out_of_memory(rpc_ctx *ctx) {
    return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

ps_status kserve_model_metadata(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    const Inference__ModelMetadataRequest *req = (const Inference__ModelMetadataRequest *)msg;
    served *s = NULL;
    ps_status st = kserve_model_find(user, ctx, req->name, req->version, &s);
    if (st != PS_STATUS_OK)
        return st;
    const model_config *cfg = model_get_config(served_model(s));
    size_t ni = model_config_input_count(cfg), no = model_config_output_count(cfg);
    model_config_text_in text;
    const bool has_text = model_config_text_input(cfg, &text);
    int64_t text_shape[2] = {-1, 1};
    Inference__ModelMetadataResponse__TensorMetadata *tm = calloc(ni + no + 2, sizeof *tm);
    Inference__ModelMetadataResponse__TensorMetadata **ptrs = calloc(ni + no + 2, sizeof *ptrs);
    model_tensor_desc *d = calloc(ni + no + 1, sizeof *d);
    if (!tm || !ptrs || !d) {
        st = out_of_memory(ctx);
        goto out;
    }
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
        ptrs[i] = &tm[i];
    }
    if (has_text) { /* after the outputs in the array, after the inputs in the reply */
        memmove(ptrs + ni + 1, ptrs + ni, no * sizeof *ptrs);
        inference__model_metadata_response__tensor_metadata__init(&tm[ni + no]);
        tm[ni + no].name = (char *)text.name;
        tm[ni + no].datatype = "BYTES";
        tm[ni + no].n_shape = 2;
        tm[ni + no].shape = text_shape;
        ptrs[ni] = &tm[ni + no];
        ni++;
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
    resp.inputs = ptrs;
    resp.n_outputs = no;
    resp.outputs = ptrs + ni;
    st = rpc_ctx_reply(ctx, &resp.base);
out:
    free(tm);
    free(ptrs);
    free(d);
    served_release(s);
    return st;
}

/* Triton's form of one tensor: dims without the batch dimension. */
static void config_tensor(const model_tensor_desc *d, size_t skip, int64_t *dims, char **ret_name,
                          size_t *ret_n_dims) {
    *ret_name = (char *)d->name;
    *ret_n_dims = d->ndims - skip;
    memcpy(dims, d->dims + skip, (d->ndims - skip) * sizeof *dims);
}

ps_status kserve_model_config(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    const Inference__ModelConfigRequest *req = (const Inference__ModelConfigRequest *)msg;
    served *s = NULL;
    ps_status st = kserve_model_find(user, ctx, req->name, req->version, &s);
    if (st != PS_STATUS_OK)
        return st;
    const model_config *cfg = model_get_config(served_model(s));
    uint32_t mbs = model_config_max_batch_size(cfg);
    size_t ni = model_config_input_count(cfg), no = model_config_output_count(cfg);
    size_t skip = mbs > 0 ? 1 : 0; /* Triton's dims leave out the batch dimension */
    model_config_text_in text;
    const bool has_text = model_config_text_input(cfg, &text);
    int64_t text_dims[1] = {1};
    Inference__ModelInput *inputs = calloc(ni + 2, sizeof *inputs);
    Inference__ModelInput **in_ptrs = calloc(ni + 2, sizeof *in_ptrs);
    Inference__ModelOutput *outputs = calloc(no + 1, sizeof *outputs);
    Inference__ModelOutput **out_ptrs = calloc(no + 1, sizeof *out_ptrs);
    int64_t *dims = calloc((ni + no + 1) * MODEL_MAX_DIMS, sizeof *dims);
    if (!inputs || !in_ptrs || !outputs || !out_ptrs || !dims) {
        st = out_of_memory(ctx);
        goto out;
    }
    model_tensor_desc d;
    for (size_t i = 0; i < ni; i++) {
        model_config_input_at(cfg, i, &d);
        inference__model_input__init(&inputs[i]);
        inputs[i].data_type = strcmp(d.datatype, "INT64") == 0 ? INFERENCE__DATA_TYPE__TYPE_INT64
                                                               : INFERENCE__DATA_TYPE__TYPE_FP32;
        inputs[i].dims = dims + i * MODEL_MAX_DIMS;
        config_tensor(&d, skip, inputs[i].dims, &inputs[i].name, &inputs[i].n_dims);
        in_ptrs[i] = &inputs[i];
    }
    if (has_text) { /* Triton's TYPE_STRING, one string per sample */
        inference__model_input__init(&inputs[ni]);
        inputs[ni].name = (char *)text.name;
        inputs[ni].data_type = INFERENCE__DATA_TYPE__TYPE_STRING;
        inputs[ni].dims = text_dims;
        inputs[ni].n_dims = 1;
        in_ptrs[ni] = &inputs[ni];
    }
    for (size_t i = 0; i < no; i++) {
        model_config_output_at(cfg, i, &d);
        inference__model_output__init(&outputs[i]);
        outputs[i].data_type = INFERENCE__DATA_TYPE__TYPE_FP32;
        outputs[i].dims = dims + (ni + i) * MODEL_MAX_DIMS;
        config_tensor(&d, skip, outputs[i].dims, &outputs[i].name, &outputs[i].n_dims);
        out_ptrs[i] = &outputs[i];
    }
    Inference__ModelConfig mc = INFERENCE__MODEL_CONFIG__INIT;
    mc.name = (char *)model_config_name(cfg);
    mc.platform = "ps_graph";
    mc.backend = "ps";
    mc.max_batch_size = (int32_t)mbs;
    mc.n_input = ni + (has_text ? 1 : 0);
    mc.input = in_ptrs;
    mc.n_output = no;
    mc.output = out_ptrs;
    Inference__ModelConfigResponse resp = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
    resp.config = &mc;
    st = rpc_ctx_reply(ctx, &resp.base);
out:
    free(inputs);
    free(in_ptrs);
    free(outputs);
    free(out_ptrs);
    free(dims);
    served_release(s);
    return st;
}

ps_status kserve_model_statistics(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user) {
    const Inference__ModelStatisticsRequest *req = (const Inference__ModelStatisticsRequest *)msg;
    served *s = NULL;
    ps_status st = kserve_model_find(user, ctx, req->name, req->version, &s);
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
    ms.name = (char *)served_name(s);
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
