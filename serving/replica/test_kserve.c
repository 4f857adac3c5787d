/* test_kserve.c: the KServe v2 handlers through an in-process rpc server and client
 * on loopback (cmocka; no process started; the model comes from an in-memory shard).
 *
 * Old behaviour these tests would have caught (serving/serve/serve.c): a ModelInfer
 * with 100,000 requested outputs or 200,000 empty inputs killed the server with
 * SIGSEGV (stack arrays sized by the counts: test_hostile_counts); NaN outputs were
 * answered with OK (test_nonfinite_is_an_error). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inference.pb-c.h"
#include "kserve.h"
#include "test_fixtures.h"
#include "util.h"

#define NAME "digits_mlp"
#define SVC "/inference.GRPCInferenceService/"

typedef struct fx {
    Ps__ModelInfo *info;
    fixture_store *store;
    fixture_log *log;
    models *m;
    kserve *k;
    rpc_server *server;
    rpc_channel *ch;
    float x[64];
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    f->info = fixture_model_info(NAME, 65536, 1);
    f->store = fixture_store_create();
    fixture_store_put_model(f->store, f->info, 100);
    f->log = fixture_log_create();
    assert_int_equal(models_create(NULL, &f->m), PS_STATUS_OK);
    served_source src = fixture_store_source(f->store);
    char err[256];
    assert_int_equal(models_load(f->m, f->info, &src, err, sizeof err), PS_STATUS_OK);
    kserve_opts ko = {.models = f->m, .logger = fixture_log_logger(f->log)};
    assert_int_equal(kserve_create(&ko, &f->k), PS_STATUS_OK);
    rpc_method methods[KSERVE_METHOD_COUNT];
    assert_int_equal(kserve_methods(f->k, methods, 2), 0);
    size_t n = kserve_methods(f->k, methods, KSERVE_METHOD_COUNT);
    rpc_server_opts so = {.listen = "127.0.0.1:0", .threads = 2};
    int port = 0;
    assert_int_equal(rpc_server_serve(&so, methods, n, &f->server, &port), PS_STATUS_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    assert_int_equal(rpc_channel_create(target, NULL, &f->ch), PS_STATUS_OK);
    for (int i = 0; i < 64; i++)
        f->x[i] = (float)(i % 16);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    rpc_channel_destroy(f->ch);
    rpc_server_destroy(f->server);
    kserve_destroy(f->k);
    models_destroy(f->m);
    fixture_log_destroy(f->log);
    fixture_store_destroy(f->store);
    ps__model_info__free_unpacked(f->info, NULL);
    free(f);
    return 0;
}

/* Calls a method; on failure checks the code and that details contain `words`. */
static ProtobufCMessage *call(fx *f, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_type,
                              const rpc_bytes_field *raw, size_t n_raw, ps_status want,
                              const char *words) {
    return fixture_call(f->ch, method, req, resp_type, raw, n_raw, want, words);
}

/* A valid one-row request; raw gets the input bytes. */
static void infer_request(fx *f, Inference__ModelInferRequest *req,
                          Inference__ModelInferRequest__InferInputTensor *in,
                          Inference__ModelInferRequest__InferInputTensor **ins, int64_t *shape,
                          rpc_bytes_field *raw) {
    inference__model_infer_request__init(req);
    inference__model_infer_request__infer_input_tensor__init(in);
    req->model_name = NAME;
    in->name = "pixels";
    in->datatype = "FP32";
    shape[0] = 1;
    shape[1] = 64;
    in->n_shape = 2;
    in->shape = shape;
    ins[0] = in;
    req->n_inputs = 1;
    req->inputs = ins;
    *raw = (rpc_bytes_field){.field_number = 7, .data = f->x, .len = sizeof f->x};
}

static void test_infer_and_metadata(void **state) {
    fx *f = *state;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *ins[1];
    int64_t shape[2];
    rpc_bytes_field raw;
    infer_request(f, &req, &in, ins, shape, &raw);
    req.id = "r1";
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)call(
        f, SVC "ModelInfer", &req.base, &inference__model_infer_response__descriptor, &raw, 1,
        PS_STATUS_OK, NULL);
    assert_string_equal(r->id, "r1");
    assert_string_equal(r->model_version, "1");
    assert_int_equal(r->n_outputs, 1);
    assert_int_equal(r->n_raw_output_contents, 1);
    assert_int_equal(r->raw_output_contents[0].len, 40);
    assert_int_equal(r->n_parameters, 1);
    assert_string_equal(r->parameters[0]->key, "param_version");
    assert_int_equal(r->parameters[0]->value->int64_param, 400); /* 4 chunks at version 100 */
    protobuf_c_message_free_unpacked(&r->base, NULL);

    Inference__ModelConfigRequest cr = INFERENCE__MODEL_CONFIG_REQUEST__INIT;
    cr.name = NAME;
    Inference__ModelConfigResponse *c = (Inference__ModelConfigResponse *)call(
        f, SVC "ModelConfig", &cr.base, &inference__model_config_response__descriptor, NULL, 0,
        PS_STATUS_OK, NULL);
    assert_int_equal(c->config->max_batch_size, 64);
    assert_int_equal(c->config->input[0]->dims[0], 64);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = NAME;
    Inference__ModelMetadataResponse *md = (Inference__ModelMetadataResponse *)call(
        f, SVC "ModelMetadata", &mr.base, &inference__model_metadata_response__descriptor, NULL, 0,
        PS_STATUS_OK, NULL);
    assert_string_equal(md->outputs[0]->name, "probabilities");
    protobuf_c_message_free_unpacked(&md->base, NULL);
    Inference__ModelStatisticsRequest sr = INFERENCE__MODEL_STATISTICS_REQUEST__INIT;
    sr.name = NAME;
    Inference__ModelStatisticsResponse *s = (Inference__ModelStatisticsResponse *)call(
        f, SVC "ModelStatistics", &sr.base, &inference__model_statistics_response__descriptor, NULL,
        0, PS_STATUS_OK, NULL);
    assert_int_equal(s->model_stats[0]->inference_stats->success->count, 1);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    Inference__ServerReadyRequest rr = INFERENCE__SERVER_READY_REQUEST__INIT;
    Inference__ServerReadyResponse *ready = (Inference__ServerReadyResponse *)call(
        f, SVC "ServerReady", &rr.base, &inference__server_ready_response__descriptor, NULL, 0,
        PS_STATUS_OK, NULL);
    assert_true(ready->ready);
    protobuf_c_message_free_unpacked(&ready->base, NULL);
}

static void test_hostile_counts(void **state) {
    fx *f = *state;
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *ins[1];
    int64_t shape[2];
    rpc_bytes_field raw;
    infer_request(f, &req, &in, ins, shape, &raw);
    size_t n = 100000;
    Inference__ModelInferRequest__InferRequestedOutputTensor o =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    o.name = "probabilities";
    Inference__ModelInferRequest__InferRequestedOutputTensor **os = calloc(n, sizeof *os);
    for (size_t i = 0; i < n; i++)
        os[i] = &o;
    req.n_outputs = n;
    req.outputs = os;
    call(f, SVC "ModelInfer", &req.base, &inference__model_infer_response__descriptor, &raw, 1,
         PS_STATUS_INVALID_ARGUMENT, "100000 requested outputs");
    free(os);
    req.n_outputs = 0;
    n = 200000;
    Inference__ModelInferRequest__InferInputTensor empty =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor **many = calloc(n, sizeof *many);
    for (size_t i = 0; i < n; i++)
        many[i] = &empty;
    req.n_inputs = n;
    req.inputs = many;
    call(f, SVC "ModelInfer", &req.base, &inference__model_infer_response__descriptor, NULL, 0,
         PS_STATUS_INVALID_ARGUMENT, "200000 inputs");
    free(many);
    char *big = malloc((1 << 20) + 1);
    memset(big, 'n', 1 << 20);
    big[1 << 20] = '\0';
    Inference__ModelReadyRequest rr = INFERENCE__MODEL_READY_REQUEST__INIT;
    rr.name = big;
    call(f, SVC "ModelReady", &rr.base, &inference__model_ready_response__descriptor, NULL, 0,
         PS_STATUS_INVALID_ARGUMENT, "model name");
    Inference__ModelConfigRequest cr = INFERENCE__MODEL_CONFIG_REQUEST__INIT;
    cr.name = NAME;
    cr.version = big;
    call(f, SVC "ModelConfig", &cr.base, &inference__model_config_response__descriptor, NULL, 0,
         PS_STATUS_INVALID_ARGUMENT, "model version");
    free(big);
    /* still serving */
    infer_request(f, &req, &in, ins, shape, &raw);
    ProtobufCMessage *ok =
        call(f, SVC "ModelInfer", &req.base, &inference__model_infer_response__descriptor, &raw, 1,
             PS_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(ok, NULL);
}

static void test_nonfinite_is_an_error(void **state) {
    fx *f = *state;
    uint64_t key = ps_key_dense(NAME, 1, "fc1.weight", 0);
    float *huge = malloc(4096 * sizeof *huge);
    for (int i = 0; i < 4096; i++)
        huge[i] = 3e38f;
    uint8_t *buf = NULL;
    Ps__Update u = fixture_update(key, PS__PUSH_OP__PUSH_ASSIGN, 500, 100, huge, 4096, &buf);
    models_update_apply(f->m, &u);
    free(buf);
    free(huge);
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in, *ins[1];
    int64_t shape[2];
    rpc_bytes_field raw;
    infer_request(f, &req, &in, ins, shape, &raw);
    for (int i = 0; i < 3; i++)
        call(f, SVC "ModelInfer", &req.base, &inference__model_infer_response__descriptor, &raw, 1,
             PS_STATUS_INTERNAL, "model digits_mlp version 1 produced a non-finite value");
    assert_int_equal(fixture_log_count(f->log, "output 'probabilities'"), 1);
}

int main(void) {
    rpc_process_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_infer_and_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_is_an_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
