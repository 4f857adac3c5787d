/* test_kserve_tables.c: a model with sparse tables served through the KServe handlers
 * (cmocka; an in-process rpc server and client on loopback, no process started): the
 * dense weights come from an in-memory shard, the table rows from a fake served_rows
 * that records what it is asked. ModelInfer with INT64 ids (raw bytes) against a
 * reference computed here; ModelMetadata and ModelConfig showing INT64 inputs; FP32
 * where INT64 is due and ids that do not match the shape refused clearly; a rows
 * source that fails answered UNAVAILABLE; no rows source FAILED_PRECONDITION; a table
 * spec train_config refuses keeps the model from loading. The server serves on after
 * each failure.
 *
 * Before this, such a model could not be registered, loaded or asked at all (its
 * config did not parse, INT64 inputs were refused).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "inference.pb-c.h"
#include "kserve.h"
#include "test_fixtures.h"
#include "util.h"

#define SVC "/inference.GRPCInferenceService/"
#define ITEMS 4

static const char CONFIG[] =
    "{\"name\": \"ctr\", \"max_batch_size\": 8,"
    " \"inputs\": [{\"name\": \"user\", \"datatype\": \"INT64\", \"shape\": [-1, 1]},"
    "              {\"name\": \"items\", \"datatype\": \"INT64\", \"shape\": [-1, 4]}],"
    " \"outputs\": [{\"name\": \"score\", \"datatype\": \"FP32\", \"shape\": [-1, 1]}],"
    " \"tables\": [{\"name\": \"user_emb\", \"dim\": 4, \"seed\": 7,"
    "               \"init\": {\"type\": \"normal\", \"scale\": 0.1}},"
    "              {\"name\": \"item_emb\", \"dim\": 3}],"
    " \"layers\": ["
    "  {\"op\": \"embedding_bag\", \"input\": \"user\", \"output\": \"u\", \"table\": \"user_emb\","
    "   \"mode\": \"sum\"},"
    "  {\"op\": \"embedding_bag\", \"input\": \"items\", \"output\": \"it\","
    "   \"table\": \"item_emb\", \"mode\": \"mean\"},"
    "  {\"op\": \"concat\", \"inputs\": [\"u\", \"it\"], \"output\": \"h\"},"
    "  {\"op\": \"dense\", \"input\": \"h\", \"output\": \"score\", \"weight\": \"fc.weight\","
    "   \"bias\": \"fc.bias\", \"activation\": \"sigmoid\"}]}";

static const float W[7] = {0.5f, -0.25f, 0.75f, 1.0f, -0.5f, 0.3f, 0.9f};
static const float B[1] = {0.1f};

/* ------------------------------------------------------------------ rows --- */

typedef struct fake_rows {
    pthread_mutex_t lock;
    int calls;
    bool fail;
    char model[32];
    table_spec user_spec; /* the spec the user_emb reads carried */
} fake_rows;

static float row_value(const char *table, uint64_t id, size_t c) {
    return (float)cos((double)(id * 5 + c) * 0.41 + (table[0] == 'u' ? 0.2 : 0.9));
}

static ps_status fake_pull(void *arg, const char *model, const char *table, const table_spec *spec,
                           size_t n, const uint64_t *ids, float *out, char *err, size_t err_len) {
    fake_rows *f = arg;
    pthread_mutex_lock(&f->lock);
    f->calls++;
    snprintf(f->model, sizeof f->model, "%s", model);
    if (strcmp(table, "user_emb") == 0)
        f->user_spec = *spec;
    bool fail = f->fail;
    pthread_mutex_unlock(&f->lock);
    if (fail) {
        ps_set_err(err, err_len, "cannot reach the coordinator at 127.0.0.1:1 (fake)");
        return PS_STATUS_UNAVAILABLE;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < spec->dim; c++)
            out[i * spec->dim + c] = row_value(table, ids[i], c);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ fixture --- */

typedef struct fx {
    fake_rows rows;
    fixture_store *store;
    fixture_log *log;
    models *m;
    kserve *k;
    rpc_server *server;
    rpc_channel *ch;
    Ps__TensorInfo t[2], *tp[2];
    int64_t shapes[2][2];
    Ps__ModelInfo info;
} fx;

static void model_info(fx *f, const char *config) {
    const char *names[2] = {"fc.weight", "fc.bias"};
    f->shapes[0][0] = 1;
    f->shapes[0][1] = 7;
    f->shapes[1][0] = 1;
    for (int i = 0; i < 2; i++) {
        ps__tensor_info__init(&f->t[i]);
        f->t[i].name = (char *)names[i];
        f->t[i].dtype = "FP32";
        f->t[i].n_shape = 2 - (size_t)i;
        f->t[i].shape = f->shapes[i];
        f->t[i].chunk_floats = 65536;
        f->t[i].chunks = 1;
        f->tp[i] = &f->t[i];
    }
    ps__model_info__init(&f->info);
    f->info.name = "ctr";
    f->info.version = 1;
    f->info.config_json = (char *)config;
    f->info.n_tensors = 2;
    f->info.tensors = f->tp;
}

static fx *fixture(bool with_rows) {
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->rows.lock, NULL);
    model_info(f, CONFIG);
    f->store = fixture_store_create();
    fixture_store_put(f->store, ps_key_dense("ctr", 1, "fc.weight", 0), W, 7, 100);
    fixture_store_put(f->store, ps_key_dense("ctr", 1, "fc.bias", 0), B, 1, 100);
    f->log = fixture_log_create();
    models_opts mo = {0};
    if (with_rows)
        mo.rows = (served_rows){.pull = fake_pull, .arg = &f->rows};
    assert_int_equal(models_create(&mo, &f->m), PS_STATUS_OK);
    served_source src = fixture_store_source(f->store);
    char err[256] = "";
    if (models_load(f->m, &f->info, &src, err, sizeof err) != PS_STATUS_OK)
        fail_msg("load: %s", err);
    kserve_opts ko = {.models = f->m, .logger = fixture_log_logger(f->log)};
    assert_int_equal(kserve_create(&ko, &f->k), PS_STATUS_OK);
    rpc_method methods[KSERVE_METHOD_COUNT];
    size_t n = kserve_methods(f->k, methods, KSERVE_METHOD_COUNT);
    rpc_server_opts so = {.listen = "127.0.0.1:0", .threads = 2};
    int port = 0;
    assert_int_equal(rpc_server_serve(&so, methods, n, &f->server, &port), PS_STATUS_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    assert_int_equal(rpc_channel_create(target, NULL, &f->ch), PS_STATUS_OK);
    return f;
}

static int setup(void **state) {
    *state = fixture(true);
    return 0;
}

static int setup_no_rows(void **state) {
    *state = fixture(false);
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
    pthread_mutex_destroy(&f->rows.lock);
    free(f);
    return 0;
}

/* Calls a method; checks the status and that details contain `words`. */
static ProtobufCMessage *call(fx *f, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp_type,
                              const rpc_bytes_field *raw, size_t n_raw, ps_status want,
                              const char *words) {
    return fixture_call(f->ch, method, req, resp_type, raw, n_raw, want, words);
}

/* A ModelInfer of `batch` samples: user ids and item ids as raw INT64 bytes. */
typedef struct infer_msg {
    Inference__ModelInferRequest req;
    Inference__ModelInferRequest__InferInputTensor in[2], *ins[2];
    int64_t shape[2][2];
    rpc_bytes_field raw[2];
} infer_msg;

static void infer_msg_init(infer_msg *m, const int64_t *user, const int64_t *items, size_t batch) {
    inference__model_infer_request__init(&m->req);
    m->req.model_name = "ctr";
    const char *names[2] = {"user", "items"};
    const void *data[2] = {user, items};
    const int64_t cols[2] = {1, ITEMS};
    for (int i = 0; i < 2; i++) {
        inference__model_infer_request__infer_input_tensor__init(&m->in[i]);
        m->in[i].name = (char *)names[i];
        m->in[i].datatype = "INT64";
        m->shape[i][0] = (int64_t)batch;
        m->shape[i][1] = cols[i];
        m->in[i].n_shape = 2;
        m->in[i].shape = m->shape[i];
        m->ins[i] = &m->in[i];
        m->raw[i] = (rpc_bytes_field){
            .field_number = 7, .data = data[i], .len = batch * (size_t)cols[i] * 8};
    }
    m->req.n_inputs = 2;
    m->req.inputs = m->ins;
}

static double reference(int64_t user, const int64_t *items) {
    double h[7] = {0};
    for (size_t c = 0; user >= 0 && c < 4; c++)
        h[c] = row_value("user_emb", (uint64_t)user, c);
    size_t count = 0;
    for (size_t j = 0; j < ITEMS; j++) {
        if (items[j] < 0)
            continue;
        count++;
        for (size_t c = 0; c < 3; c++)
            h[4 + c] += row_value("item_emb", (uint64_t)items[j], c);
    }
    for (size_t c = 0; count && c < 3; c++)
        h[4 + c] /= (double)count;
    double z = B[0];
    for (size_t c = 0; c < 7; c++)
        z += W[c] * h[c];
    return 1.0 / (1.0 + exp(-z));
}

static const int64_t USER[3] = {12, 3, -1};
static const int64_t ITEMS3[3 * ITEMS] = {4, 8, -1, 4, /**/ -1, -1, -1, -1, /**/ 9, 1, 2, 3};

/* ------------------------------------------------------------------ tests --- */

static void test_infer_with_ids(void **state) {
    fx *f = *state;
    infer_msg m;
    infer_msg_init(&m, USER, ITEMS3, 3);
    Inference__ModelInferResponse *r = (Inference__ModelInferResponse *)call(
        f, SVC "ModelInfer", &m.req.base, &inference__model_infer_response__descriptor, m.raw, 2,
        PS_STATUS_OK, NULL);
    assert_string_equal(r->model_name, "ctr");
    assert_string_equal(r->model_version, "1");
    assert_int_equal(r->n_outputs, 1);
    assert_string_equal(r->outputs[0]->datatype, "FP32");
    assert_int_equal(r->outputs[0]->shape[0], 3);
    assert_int_equal(r->outputs[0]->shape[1], 1);
    assert_int_equal(r->raw_output_contents[0].len, 12);
    for (size_t b = 0; b < 3; b++) {
        float got;
        memcpy(&got, r->raw_output_contents[0].data + 4 * b, 4);
        const double want = reference(USER[b], ITEMS3 + b * ITEMS);
        if (fabs(got - want) > 1e-5)
            fail_msg("sample %zu: got %.9g, want %.9g", b, (double)got, want);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* one read per table, with the model's name and the table's spec from its config */
    assert_int_equal(f->rows.calls, 2);
    assert_string_equal(f->rows.model, "ctr");
    assert_int_equal(f->rows.user_spec.dim, 4);
    assert_int_equal(f->rows.user_spec.seed, 7);
    assert_int_equal(f->rows.user_spec.init, TABLE_INIT_NORMAL);
    assert_true(f->rows.user_spec.init_scale == 0.1f);
}

static void test_metadata_shows_int64(void **state) {
    fx *f = *state;
    Inference__ModelMetadataRequest mr = INFERENCE__MODEL_METADATA_REQUEST__INIT;
    mr.name = "ctr";
    Inference__ModelMetadataResponse *md = (Inference__ModelMetadataResponse *)call(
        f, SVC "ModelMetadata", &mr.base, &inference__model_metadata_response__descriptor, NULL, 0,
        PS_STATUS_OK, NULL);
    assert_int_equal(md->n_inputs, 2);
    assert_string_equal(md->inputs[0]->datatype, "INT64");
    assert_string_equal(md->inputs[1]->datatype, "INT64");
    assert_int_equal(md->inputs[1]->shape[1], ITEMS);
    assert_string_equal(md->outputs[0]->datatype, "FP32");
    protobuf_c_message_free_unpacked(&md->base, NULL);
    Inference__ModelConfigRequest cr = INFERENCE__MODEL_CONFIG_REQUEST__INIT;
    cr.name = "ctr";
    Inference__ModelConfigResponse *c = (Inference__ModelConfigResponse *)call(
        f, SVC "ModelConfig", &cr.base, &inference__model_config_response__descriptor, NULL, 0,
        PS_STATUS_OK, NULL);
    assert_int_equal(c->config->input[0]->data_type, INFERENCE__DATA_TYPE__TYPE_INT64);
    assert_int_equal(c->config->input[1]->data_type, INFERENCE__DATA_TYPE__TYPE_INT64);
    assert_int_equal(c->config->input[1]->n_dims, 1);
    assert_int_equal(c->config->input[1]->dims[0], ITEMS);
    assert_int_equal(c->config->output[0]->data_type, INFERENCE__DATA_TYPE__TYPE_FP32);
    protobuf_c_message_free_unpacked(&c->base, NULL);
}

static void infer_ok(fx *f) {
    infer_msg m;
    infer_msg_init(&m, USER, ITEMS3, 3);
    ProtobufCMessage *ok =
        call(f, SVC "ModelInfer", &m.req.base, &inference__model_infer_response__descriptor, m.raw,
             2, PS_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(ok, NULL);
}

static void test_bad_requests_and_failing_rows(void **state) {
    fx *f = *state;
    const ps_status bad = PS_STATUS_INVALID_ARGUMENT;
    const ProtobufCMessageDescriptor *d = &inference__model_infer_response__descriptor;
    infer_msg m;
    infer_msg_init(&m, USER, ITEMS3, 3);
    m.in[1].datatype = "FP32"; /* floats where ids are due */
    m.raw[1].len = 3 * ITEMS * 4;
    call(f, SVC "ModelInfer", &m.req.base, d, m.raw, 2, bad,
         "input 'items': datatype FP32, expected INT64");
    infer_msg_init(&m, USER, ITEMS3, 3);
    m.raw[1].len -= 8; /* one id short */
    call(f, SVC "ModelInfer", &m.req.base, d, m.raw, 2, bad,
         "input 'items': 88 bytes of raw content, expected 96 (shape [3,4] of INT64)");
    infer_msg_init(&m, USER, ITEMS3, 3);
    m.shape[1][1] = 3; /* ids per sample not as the model says */
    m.raw[1].len = 3 * 3 * 8;
    call(f, SVC "ModelInfer", &m.req.base, d, m.raw, 2, bad, "shape [3,3], expected [-1,4]");
    infer_msg_init(&m, USER, ITEMS3, 3);
    m.shape[0][0] = m.shape[1][0] = 9;
    call(f, SVC "ModelInfer", &m.req.base, d, m.raw, 2, bad, "max_batch_size 8");
    assert_int_equal(f->rows.calls, 0); /* nothing read for a bad request */
    infer_ok(f);

    pthread_mutex_lock(&f->rows.lock);
    f->rows.fail = true;
    pthread_mutex_unlock(&f->rows.lock);
    infer_msg_init(&m, USER, ITEMS3, 3);
    call(f, SVC "ModelInfer", &m.req.base, d, m.raw, 2, PS_STATUS_UNAVAILABLE,
         "layer \"u\" (embedding_bag of table \"user_emb\", 2 rows): cannot reach the "
         "coordinator at 127.0.0.1:1 (fake)");
    pthread_mutex_lock(&f->rows.lock);
    f->rows.fail = false;
    pthread_mutex_unlock(&f->rows.lock);
    infer_ok(f);
    Inference__ModelStatisticsRequest sr = INFERENCE__MODEL_STATISTICS_REQUEST__INIT;
    sr.name = "ctr";
    Inference__ModelStatisticsResponse *s = (Inference__ModelStatisticsResponse *)call(
        f, SVC "ModelStatistics", &sr.base, &inference__model_statistics_response__descriptor, NULL,
        0, PS_STATUS_OK, NULL);
    assert_int_equal(s->model_stats[0]->inference_stats->success->count, 2);
    protobuf_c_message_free_unpacked(&s->base, NULL);
}

static void test_no_rows_source(void **state) {
    fx *f = *state;
    infer_msg m;
    infer_msg_init(&m, USER, ITEMS3, 3);
    call(f, SVC "ModelInfer", &m.req.base, &inference__model_infer_response__descriptor, m.raw, 2,
         PS_STATUS_FAILED_PRECONDITION, "has no rows source");
}

/* A table spec model_config accepts but train_config refuses: the model never loads. */
static void test_bad_table_spec_not_loaded(void **state) {
    (void)state;
    fx f = {0};
    char *bad = strdup(CONFIG);
    char *normal = strstr(bad, "\"normal\"");
    assert_non_null(normal);
    memcpy(normal + 1, "wobbly", 6);
    model_info(&f, bad);
    models *m = NULL;
    assert_int_equal(models_create(NULL, &m), PS_STATUS_OK);
    fixture_store *store = fixture_store_create();
    served_source src = fixture_store_source(store);
    char err[512] = "";
    assert_int_equal(models_load(m, &f.info, &src, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "model ctr: config.json: tables[0]"));
    assert_int_equal(fixture_store_pulls(store), 0); /* refused before anything was pulled */
    models_destroy(m);
    fixture_store_destroy(store);
    free(bad);
}

int main(void) {
    rpc_process_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_infer_with_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_shows_int64, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_and_failing_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_rows_source, setup_no_rows, teardown),
        cmocka_unit_test(test_bad_table_spec_not_loaded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
