/* test_pstrainer.c: the C training worker (pstrainer.h) against real processes (a
 * coordinator and two shards of the build): tensors by name with the config's
 * optimizer, asynchronous pushes applied in order with timestamps, rows by id with
 * repeated ids summed, clear statuses for unknown tensors and tensors without an
 * optimizer, and a BSP pull that waits for the slowest worker. */
#include <math.h>
#include <string.h>

#include "psclient.h"
#include "pstrainer.h"
#include "test_cluster.h"

#define CONFIG(name, training)                                                                     \
    "{\"name\": \"" name "\", \"max_batch_size\": 4,"                                              \
    " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"                \
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 2]}],"               \
    " \"layers\": [{\"op\": \"dense\", \"input\": \"x\", \"output\": \"y\","                       \
    " \"weight\": \"fc.weight\", \"bias\": \"fc.bias\"}],"                                         \
    " \"tables\": [{\"name\": \"emb\", \"dim\": 4, \"seed\": 3,"                                   \
    " \"init\": {\"type\": \"uniform\", \"scale\": 0.5},"                                          \
    " \"optimizer\": {\"type\": \"adagrad\", \"lr\": 0.1}}],"                                      \
    " \"training\": " training "}"

/* Registers a model with fc.weight [2,3] = 1 and fc.bias [2] = 0 on the shards. */
static void make_model(const char *name, const char *config) {
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    int64_t wshape[] = {2, 3}, bshape[] = {2};
    Ps__TensorInfo w = PS__TENSOR_INFO__INIT, b = PS__TENSOR_INFO__INIT;
    w.name = "fc.weight", w.dtype = "FP32", w.n_shape = 2, w.shape = wshape;
    w.chunk_floats = 4, w.chunks = 2;
    b.name = "fc.bias", b.dtype = "FP32", b.n_shape = 1, b.shape = bshape;
    b.chunk_floats = 4, b.chunks = 1;
    Ps__TensorInfo *tensors[] = {&w, &b};
    Ps__ModelInfo info = PS__MODEL_INFO__INIT;
    info.name = (char *)name;
    info.version = 1;
    info.config_json = (char *)config;
    info.n_tensors = 2;
    info.tensors = tensors;
    float ones[6] = {1, 1, 1, 1, 1, 1}, zeros[2] = {0, 0};
    assert_int_equal(ps_client_push_tensor(c, name, 1, &w, PS__PUSH_OP__PUSH_ASSIGN, ones, 6),
                     PS_STATUS_OK);
    assert_int_equal(ps_client_push_tensor(c, name, 1, &b, PS__PUSH_OP__PUSH_ASSIGN, zeros, 2),
                     PS_STATUS_OK);
    Ps__RegisterModelRequest req = PS__REGISTER_MODEL_REQUEST__INIT;
    req.model = &info;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st = rpc_call(ps_client_coordinator(c), "/ps.Coordinator/RegisterModel", &req.base,
                            &ps__register_model_response__descriptor, NULL, &resp, &res);
    if (st != PS_STATUS_OK)
        fail_msg("register %s: %s", name, res.details);
    protobuf_c_message_free_unpacked(resp, NULL);
    ps_client_destroy(c);
}

static ps_trainer *trainer(const char *model, int64_t wait_ms) {
    ps_trainer_opts o = {.coordinator = coordinator, .model = model, .wait_ms = wait_ms};
    ps_trainer *t = NULL;
    char err[512];
    ps_status st = ps_trainer_create(&o, &t, err, sizeof err);
    if (st != PS_STATUS_OK)
        fail_msg("trainer of %s: %s", model, err);
    return t;
}

static int setup(void **state) {
    (void)state;
    if (cluster_start("test_pstrainer", 2, NULL) != 0)
        return -1;
    make_model("tm", CONFIG("tm", "{\"tensors\": {\"fc.weight\": {\"type\": \"sgd\", "
                                  "\"lr\": 0.5}}}"));
    make_model("tb", CONFIG("tb", "{\"consistency\": \"bsp\", \"optimizer\": {\"type\": "
                                  "\"sgd\"}}"));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return cluster_stop();
}

static void test_tensors_by_name_and_async_order(void **state) {
    (void)state;
    ps_trainer *t = trainer("tm", 0);
    assert_int_equal(ps_trainer_tensor_count(t, "fc.weight"), 6);
    assert_int_equal(ps_trainer_tensor_count(t, "nope"), 0);
    float w[6], g[6] = {1, 1, 1, 1, 1, 1};
    assert_int_equal(ps_trainer_pull(t, "fc.weight", w, 6), PS_STATUS_OK);
    assert_float_equal(w[0], 1.0f, 0);
    assert_int_equal(ps_trainer_push(t, "fc.weight", g, 6), PS_STATUS_OK); /* SGD lr 0.5 */
    assert_int_equal(ps_trainer_pull(t, "fc.weight", w, 6), PS_STATUS_OK);
    assert_float_equal(w[5], 0.5f, 0);
    /* ten pushes in flight; the caller's buffer may change at once (they are copies) */
    uint64_t ts[10];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(ps_trainer_push_async(t, "fc.weight", g, 6, &ts[i]), PS_STATUS_OK);
        g[0] = 1000; /* not seen by the queued push */
        g[0] = 1;
        if (i)
            assert_true(ts[i] > ts[i - 1]);
    }
    assert_int_equal(ps_trainer_wait(t, ts[9]), PS_STATUS_OK);
    assert_int_equal(ps_trainer_wait(t, ts[0]), PS_STATUS_OK); /* done before */
    assert_int_equal(ps_trainer_pull(t, "fc.weight", w, 6), PS_STATUS_OK);
    for (int i = 0; i < 6; i++)
        assert_float_equal(w[i], 0.5f - 10 * 0.5f, 1e-6);
    assert_int_equal(ps_trainer_wait(t, 0), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(ps_trainer_wait(t, 1u << 30), PS_STATUS_INVALID_ARGUMENT);
    ps_trainer_destroy(t);
}

static void test_rows_by_id(void **state) {
    (void)state;
    ps_trainer *t = trainer("tm", 0);
    assert_int_equal(ps_trainer_table_dim(t, "emb"), 4);
    uint64_t ids[3] = {5, 7, 5};
    float rows[12], after[12];
    assert_int_equal(ps_trainer_pull_rows(t, "emb", 3, ids, rows), PS_STATUS_OK);
    assert_memory_equal(rows, rows + 8, 4 * sizeof(float)); /* the same id, the same row */
    for (int i = 0; i < 12; i++)
        assert_true(fabsf(rows[i]) < 0.5f); /* uniform in [-0.5, 0.5) */
    /* id 5 twice: its gradients are summed into one Adagrad step */
    float g[12] = {1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1};
    assert_int_equal(ps_trainer_push_rows(t, "emb", 3, ids, g), PS_STATUS_OK);
    assert_int_equal(ps_trainer_pull_rows(t, "emb", 3, ids, after), PS_STATUS_OK);
    for (int k = 0; k < 4; k++) { /* acc = g^2, step = lr * g / sqrt(acc) = lr */
        assert_float_equal(after[k], rows[k] - 0.1f, 1e-5);
        assert_float_equal(after[4 + k], rows[4 + k] - 0.1f, 1e-5);
    }
    ps_trainer_destroy(t);
}

static void test_clear_errors(void **state) {
    (void)state;
    ps_trainer *t = trainer("tm", 0);
    float g[2] = {1, 1};
    assert_int_equal(ps_trainer_push(t, "fc.bias", g, 2), PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(ps_trainer_error(t), "no optimizer for tensor fc.bias"));
    uint64_t ts = 0;
    assert_int_equal(ps_trainer_push_async(t, "nope", g, 2, &ts), PS_STATUS_OK);
    assert_int_equal(ps_trainer_wait(t, ts), PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(ps_trainer_error(t), "no tensor nope"));
    assert_int_equal(ps_trainer_push(t, "fc.weight", g, 2), PS_STATUS_INVALID_ARGUMENT);
    uint64_t id = 1;
    assert_int_equal(ps_trainer_push_rows(t, "nope", 1, &id, g), PS_STATUS_NOT_FOUND);
    assert_int_equal(ps_trainer_push(t, "", g, 2), PS_STATUS_INVALID_ARGUMENT);
    ps_trainer_opts o = {.coordinator = coordinator, .model = "no-such-model"};
    ps_trainer *bad = NULL;
    char err[512];
    assert_int_equal(ps_trainer_create(&o, &bad, err, sizeof err), PS_STATUS_NOT_FOUND);
    assert_null(bad);
    ps_trainer_destroy(t);
    ps_trainer_destroy(NULL);
}

static void test_bsp_pull_waits_for_the_slowest(void **state) {
    (void)state;
    ps_trainer *a = trainer("tb", 600), *b = trainer("tb", 0);
    float w[6];
    uint64_t clock = 0;
    assert_int_equal(ps_trainer_pull(a, "fc.weight", w, 6), PS_STATUS_OK); /* registers */
    assert_int_equal(ps_trainer_pull(b, "fc.weight", w, 6), PS_STATUS_OK);
    assert_int_equal(ps_trainer_clock(a, &clock), PS_STATUS_OK);
    assert_int_equal(clock, 1);
    assert_int_equal(ps_trainer_pull(a, "fc.weight", w, 6), PS_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(ps_trainer_clock(b, &clock), PS_STATUS_OK);
    assert_int_equal(ps_trainer_pull(a, "fc.weight", w, 6), PS_STATUS_OK);
    ps_trainer_destroy(b); /* leaves: a runs on alone */
    assert_int_equal(ps_trainer_clock(a, &clock), PS_STATUS_OK);
    assert_int_equal(ps_trainer_pull(a, "fc.weight", w, 6), PS_STATUS_OK);
    ps_trainer_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensors_by_name_and_async_order),
        cmocka_unit_test(test_rows_by_id),
        cmocka_unit_test(test_clear_errors),
        cmocka_unit_test(test_bsp_pull_waits_for_the_slowest),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
