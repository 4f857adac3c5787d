/* test_fixtures.h: a small valid model (the "tiny" MLP of the integration tests) as a
 * ModelInfo message, for the coordinator's unit tests. Header-only: each test program
 * includes it once. */
#ifndef PS_COORDINATOR_TEST_FIXTURES_H
#define PS_COORDINATOR_TEST_FIXTURES_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "coordinator.pb-c.h"

#define TINY_CONFIG_FMT                                                                            \
    "{\"name\": \"%s\", \"max_batch_size\": 8,"                                                    \
    " \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 4]}],"                \
    " \"outputs\": [{\"name\": \"y\", \"datatype\": \"FP32\", \"shape\": [-1, 3]}],"               \
    " \"layers\": [{\"op\": \"dense\", \"input\": \"x\", \"output\": \"h\","                       \
    " \"weight\": \"fc1.weight\", \"bias\": \"fc1.bias\", \"activation\": \"relu\"},"              \
    " {\"op\": \"dense\", \"input\": \"h\", \"output\": \"logits\", \"weight\": \"fc2.weight\","   \
    " \"bias\": \"fc2.bias\"}, {\"op\": \"softmax\", \"input\": \"logits\", \"output\": \"y\"}]}"

/* A model message whose parts live in this struct (no allocation). */
typedef struct tiny_model {
    Ps__ModelInfo info;
    Ps__TensorInfo tensors[4];
    Ps__TensorInfo *ptrs[4];
    int64_t shapes[4][2];
    char name[64];
    char config[1024];
} tiny_model;

/* Fills `m` with model `name` (version `version`, 0 = next), chunks of 64 floats. */
static inline void tiny_model_init(tiny_model *m, const char *name, uint64_t version) {
    static const char *const names[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    static const int64_t dims[4][2] = {{50, 4}, {50, 0}, {3, 50}, {3, 0}};
    memset(m, 0, sizeof *m);
    ps__model_info__init(&m->info);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->config, sizeof m->config, TINY_CONFIG_FMT, name);
    m->info.name = m->name;
    m->info.version = version;
    m->info.config_json = m->config;
    for (int i = 0; i < 4; i++) {
        Ps__TensorInfo *t = &m->tensors[i];
        ps__tensor_info__init(t);
        t->name = (char *)names[i];
        t->dtype = (char *)"FP32";
        m->shapes[i][0] = dims[i][0];
        m->shapes[i][1] = dims[i][1];
        t->shape = m->shapes[i];
        t->n_shape = dims[i][1] ? 2 : 1;
        uint64_t count = (uint64_t)dims[i][0] * (uint64_t)(dims[i][1] ? dims[i][1] : 1);
        t->chunk_floats = 64;
        t->chunks = (uint32_t)((count + 63) / 64);
        m->ptrs[i] = t;
    }
    m->info.tensors = m->ptrs;
    m->info.n_tensors = 4;
}

#endif
