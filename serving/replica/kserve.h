/* kserve.h: the replica's inference API: KServe v2 gRPC (inference.GRPCInferenceService)
 * plus Triton's ModelConfig and ModelStatistics, which tritonclient and perf_analyzer
 * call.
 *
 * The handlers get their state through the rpc_method `user` pointer (a kserve
 * context), never from globals. Every request is checked against named limits
 * (infer_request.h) before anything is sized by it; a bad request gets a status and a
 * message a person can act on, never a crash. An inference whose outputs are not all
 * finite is refused (INTERNAL, naming model, version and output) and logged once per
 * streak. Responses report `param_version`: the sum of the chunk versions the model
 * holds (dense chunks: table rows are read at each call and not counted). Inputs are
 * FP32, or INT64 for the ids of a model's sparse tables (ModelMetadata and ModelConfig
 * say which); outputs are FP32. A model with tables reads its rows from the shards
 * during the call: when they cannot be reached it answers UNAVAILABLE.
 */
#ifndef PS_SERVING_REPLICA_KSERVE_H
#define PS_SERVING_REPLICA_KSERVE_H

#include <stdbool.h>
#include <stddef.h>

#include "logger.h"
#include "models.h"
#include "rpc.h"
#include "status.h"

#define KSERVE_SERVER_NAME "ps-serve"
#define KSERVE_SERVER_VERSION "0.1.0"
#define KSERVE_METHOD_COUNT 8

typedef struct kserve_opts {
    models *models; /* what is served (borrowed) */
    /* ServerReady also needs this (e.g. registered with the coordinator); NULL: no more */
    bool (*ready)(void *arg);
    void *ready_arg;
    replica_logger logger; /* non-finite outputs, once per streak */
} kserve_opts;

typedef struct kserve kserve;

ps_status kserve_create(const kserve_opts *opts, kserve **ret_kserve);
void kserve_destroy(kserve *k); /* accepts NULL; after the server stopped */

/* Writes the methods (user = k) into ret_methods; returns how many (KSERVE_METHOD_COUNT),
 * or 0 when cap is smaller. */
size_t kserve_methods(kserve *k, rpc_method *ret_methods, size_t cap);

#endif
