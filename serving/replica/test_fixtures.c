/* test_fixtures.c: see test_fixtures.h. Failures abort the test (cmocka asserts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include <cmocka.h>

#include "safetensors.h"
#include "test_fixtures.h"
#include "util.h"

static void model_path(char *buf, size_t cap, const char *name, const char *rest) {
    const char *root = getenv("PS_MODELS_DIR");
    snprintf(buf, cap, "%s/%s/%s", root ? root : "models", name, rest);
}

static safetensors *open_weights(const char *name) {
    char path[1024], err[256] = "";
    model_path(path, sizeof path, name, "1/model.safetensors");
    safetensors *st = NULL;
    if (safetensors_open_file(path, &st, err, sizeof err) != PS_STATUS_OK)
        fail_msg("%s: %s", path, err);
    return st;
}

Ps__ModelInfo *fixture_model_info(const char *name, uint32_t chunk_floats, uint64_t version) {
    char path[1024];
    model_path(path, sizeof path, name, "config.json");
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(ps_read_file(path, &json, &len), PS_STATUS_OK);
    safetensors *st = open_weights(name);
    size_t n = safetensors_count(st);
    Ps__ModelInfo *info = calloc(1, sizeof *info);
    assert_non_null(info);
    ps__model_info__init(info);
    info->name = strdup(name);
    info->version = version;
    info->config_json = json;
    info->n_tensors = n;
    info->tensors = calloc(n, sizeof *info->tensors);
    assert_non_null(info->tensors);
    for (size_t i = 0; i < n; i++) {
        safetensors_tensor t;
        assert_true(safetensors_tensor_at(st, i, &t));
        Ps__TensorInfo *ti = calloc(1, sizeof *ti);
        assert_non_null(ti);
        ps__tensor_info__init(ti);
        ti->name = strdup(t.name);
        ti->dtype = strdup("FP32");
        ti->n_shape = t.ndims;
        ti->shape = calloc(t.ndims + 1, sizeof *ti->shape);
        for (uint32_t k = 0; k < t.ndims; k++)
            ti->shape[k] = (int64_t)t.dims[k];
        ti->chunk_floats = chunk_floats;
        ti->chunks = (uint32_t)((t.count + chunk_floats - 1) / chunk_floats);
        info->tensors[i] = ti;
    }
    safetensors_destroy(st);
    /* pack and unpack, so the result frees like any received message */
    size_t plen = protobuf_c_message_get_packed_size(&info->base);
    uint8_t *buf = malloc(plen + 1);
    protobuf_c_message_pack(&info->base, buf);
    Ps__ModelInfo *out = ps__model_info__unpack(NULL, plen, buf);
    free(buf);
    for (size_t i = 0; i < n; i++) {
        free(info->tensors[i]->name);
        free(info->tensors[i]->dtype);
        free(info->tensors[i]->shape);
        free(info->tensors[i]);
    }
    free(info->tensors);
    free(info->name);
    free(json);
    free(info);
    assert_non_null(out);
    return out;
}

float *fixture_tensor_values(const char *name, const char *tensor, size_t *ret_count) {
    safetensors *st = open_weights(name);
    safetensors_tensor t;
    assert_true(safetensors_find(st, tensor, &t));
    float *v = malloc(t.count * 4);
    assert_non_null(v);
    memcpy(v, t.data, t.count * 4);
    *ret_count = t.count;
    safetensors_destroy(st);
    return v;
}

/* ------------------------------------------------------------------ store --- */

typedef struct stored {
    uint64_t key, version;
    uint32_t len;
    float *values;
} stored;

struct fixture_store {
    pthread_mutex_t lock;
    stored items[4096];
    size_t n;
    int fail_next, pulls;
};

fixture_store *fixture_store_create(void) {
    fixture_store *fs = calloc(1, sizeof *fs);
    assert_non_null(fs);
    pthread_mutex_init(&fs->lock, NULL);
    return fs;
}

void fixture_store_destroy(fixture_store *fs) {
    for (size_t i = 0; i < fs->n; i++)
        free(fs->items[i].values);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}

static stored *find(fixture_store *fs, uint64_t key) {
    for (size_t i = 0; i < fs->n; i++)
        if (fs->items[i].key == key)
            return &fs->items[i];
    return NULL;
}

void fixture_store_put(fixture_store *fs, uint64_t key, const float *values, uint32_t len,
                       uint64_t version) {
    pthread_mutex_lock(&fs->lock);
    stored *s = find(fs, key);
    if (!s) {
        assert_true(fs->n < sizeof fs->items / sizeof fs->items[0]);
        s = &fs->items[fs->n++];
        *s = (stored){.key = key};
    }
    free(s->values);
    s->values = malloc(len * 4ull + 1);
    assert_non_null(s->values);
    memcpy(s->values, values, len * 4ull);
    s->len = len;
    s->version = version;
    pthread_mutex_unlock(&fs->lock);
}

bool fixture_store_remove(fixture_store *fs, uint64_t key) {
    pthread_mutex_lock(&fs->lock);
    stored *s = find(fs, key);
    if (s) {
        free(s->values);
        *s = fs->items[--fs->n];
        fs->items[fs->n] = (stored){0};
    }
    pthread_mutex_unlock(&fs->lock);
    return s != NULL;
}

void fixture_store_put_model(fixture_store *fs, const Ps__ModelInfo *info, uint64_t version) {
    for (size_t i = 0; i < info->n_tensors; i++) {
        const Ps__TensorInfo *t = info->tensors[i];
        size_t count = 0;
        float *v = fixture_tensor_values(info->name, t->name, &count);
        for (uint32_t c = 0; c < t->chunks; c++) {
            size_t start = (size_t)c * t->chunk_floats;
            size_t len = count - start < t->chunk_floats ? count - start : t->chunk_floats;
            fixture_store_put(fs, ps_key_dense(info->name, info->version, t->name, c), v + start,
                              (uint32_t)len, version);
        }
        free(v);
    }
}

void fixture_store_fail_next(fixture_store *fs, int n) {
    pthread_mutex_lock(&fs->lock);
    fs->fail_next = n;
    pthread_mutex_unlock(&fs->lock);
}

int fixture_store_pulls(fixture_store *fs) {
    pthread_mutex_lock(&fs->lock);
    int n = fs->pulls;
    pthread_mutex_unlock(&fs->lock);
    return n;
}

static ps_status store_pull(void *arg, size_t n, const uint64_t *keys, float *const *dst,
                            const uint32_t *lens, uint64_t *ret_versions, char *err,
                            size_t err_len) {
    fixture_store *fs = arg;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&fs->lock);
    fs->pulls++;
    if (fs->fail_next > 0) {
        fs->fail_next--;
        ps_set_err(err, err_len, "fixture store: failing on purpose");
        st = PS_STATUS_UNAVAILABLE;
    }
    for (size_t i = 0; i < n && st == PS_STATUS_OK; i++) {
        stored *s = find(fs, keys[i]);
        if (!s || s->len != lens[i]) {
            ps_set_err(err, err_len, "fixture store: no chunk %016llx of %u floats",
                       (unsigned long long)keys[i], lens[i]);
            st = PS_STATUS_NOT_FOUND;
        }
    }
    for (size_t i = 0; i < n && st == PS_STATUS_OK; i++) {
        stored *s = find(fs, keys[i]);
        memcpy(dst[i], s->values, s->len * 4ull);
        ret_versions[i] = s->version;
    }
    pthread_mutex_unlock(&fs->lock);
    return st;
}

served_source fixture_store_source(fixture_store *fs) {
    return (served_source){.pull = store_pull, .arg = fs};
}

/* ------------------------------------------------------------------ log --- */

struct fixture_log {
    pthread_mutex_t lock;
    char lines[256][1024];
    size_t n;
};

fixture_log *fixture_log_create(void) {
    fixture_log *fl = calloc(1, sizeof *fl);
    assert_non_null(fl);
    pthread_mutex_init(&fl->lock, NULL);
    return fl;
}

void fixture_log_destroy(fixture_log *fl) {
    pthread_mutex_destroy(&fl->lock);
    free(fl);
}

static void log_fn(void *arg, ps_log_level level, const char *message) {
    (void)level;
    fixture_log *fl = arg;
    if (getenv("FIXTURE_LOG_ECHO"))
        fprintf(stderr, "log: %s\n", message);
    pthread_mutex_lock(&fl->lock);
    if (fl->n < sizeof fl->lines / sizeof fl->lines[0])
        snprintf(fl->lines[fl->n++], sizeof fl->lines[0], "%s", message);
    pthread_mutex_unlock(&fl->lock);
}

replica_logger fixture_log_logger(fixture_log *fl) {
    return (replica_logger){.fn = log_fn, .arg = fl};
}

size_t fixture_log_count(fixture_log *fl, const char *needle) {
    size_t n = 0;
    pthread_mutex_lock(&fl->lock);
    for (size_t i = 0; i < fl->n; i++)
        n += strstr(fl->lines[i], needle) != NULL;
    pthread_mutex_unlock(&fl->lock);
    return n;
}

Ps__Update fixture_update(uint64_t key, Ps__PushOp op, uint64_t version, uint64_t prev_version,
                          const float *values, uint32_t len, uint8_t **ret_buf) {
    Ps__Update u = PS__UPDATE__INIT;
    uint8_t *buf = malloc(len * 4ull + 1);
    assert_non_null(buf);
    memcpy(buf, values, len * 4ull);
    u.key = key;
    u.op = op;
    u.version = version;
    u.prev_version = prev_version;
    u.seq = version;
    u.values.data = buf;
    u.values.len = len * 4ull;
    *ret_buf = buf;
    return u;
}

void fixture_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

ProtobufCMessage *fixture_call(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_type,
                               const rpc_bytes_field *raw, size_t n_raw, ps_status want,
                               const char *words) {
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 20000};
    ps_status st = rpc_call_with_bytes(ch, method, req, raw, n_raw, resp_type, &opts, &resp, &res);
    if (st != want || (words && !strstr(res.details, words)))
        fail_msg("%s: got %s '%s', want %s '%s'", method, ps_status_name(st), res.details,
                 ps_status_name(want), words ? words : "");
    return resp;
}
