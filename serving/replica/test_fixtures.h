/* test_fixtures.h: what the replica's unit tests share, so they start no process:
 * registry entries built from a model directory (models/, path from PS_MODELS_DIR),
 * an in-memory shard that serves pulls (with failures on demand), a logger that
 * records what the modules report, and streamed updates built by hand. */
#ifndef PS_SERVING_REPLICA_TEST_FIXTURES_H
#define PS_SERVING_REPLICA_TEST_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "logger.h"
#include "rpc.h"
#include "ps.pb-c.h"
#include "served.h"

/* The registry entry of models/<name> (config.json and version 1's tensors), each
 * tensor cut into chunks of chunk_floats; free with ps__model_info__free_unpacked. */
Ps__ModelInfo *fixture_model_info(const char *name, uint32_t chunk_floats, uint64_t version);
/* The values of a tensor of models/<name>/1 (malloc'd) and their count. */
float *fixture_tensor_values(const char *name, const char *tensor, size_t *ret_count);

/* An in-memory shard. Pulls of a key it does not hold fail NOT_FOUND. */
typedef struct fixture_store fixture_store;
fixture_store *fixture_store_create(void);
void fixture_store_destroy(fixture_store *fs);
void fixture_store_put(fixture_store *fs, uint64_t key, const float *values, uint32_t len,
                       uint64_t version);
bool fixture_store_remove(fixture_store *fs, uint64_t key);
/* Puts every chunk of the model's tensors (values from models/<name>/1) at `version`. */
void fixture_store_put_model(fixture_store *fs, const Ps__ModelInfo *info, uint64_t version);
/* The next n pulls fail with UNAVAILABLE. */
void fixture_store_fail_next(fixture_store *fs, int n);
int fixture_store_pulls(fixture_store *fs); /* pulls asked so far */
served_source fixture_store_source(fixture_store *fs);

/* A logger that keeps the messages it is given (and prints them to stderr when the
 * environment has FIXTURE_LOG_ECHO set, for debugging a test). */
typedef struct fixture_log fixture_log;
fixture_log *fixture_log_create(void);
void fixture_log_destroy(fixture_log *fl);
replica_logger fixture_log_logger(fixture_log *fl);
/* Messages containing `needle`. */
size_t fixture_log_count(fixture_log *fl, const char *needle);

/* A streamed update of `len` floats (values copied into *ret_buf, free it after). */
Ps__Update fixture_update(uint64_t key, Ps__PushOp op, uint64_t version, uint64_t prev_version,
                          const float *values, uint32_t len, uint8_t **ret_buf);

/* Sleeps ms milliseconds (tests that poll with a deadline). */
void fixture_sleep_ms(int ms);

/* Calls a method on ch; fails the test unless it ends with `want` and, when words is not
 * NULL, its details contain them. Returns the response (NULL unless OK; free it). */
ProtobufCMessage *fixture_call(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_type,
                               const rpc_bytes_field *raw, size_t n_raw, ps_status want,
                               const char *words);

#endif
