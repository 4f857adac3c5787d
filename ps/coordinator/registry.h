/* registry.h: the coordinator's model registry: every registered version of every
 * model (name, version, config.json, tensors and how they are cut into chunks), the
 * generation counter that WatchModels streams, and the validation a model must pass.
 *
 * Why this way: a model entry is kept as the protobuf message it arrived as (a private
 * copy), so listing and streaming it needs no conversion. Validation is a pure
 * function that checks every client-supplied count against a named limit before
 * anything is sized by it, then asks the model-file library whether a replica could
 * load the graph: a model no replica could load is refused here, with a message that
 * says what to fix. Totals are bounded too (versions, bytes), so a listing always fits
 * in one message. No lock: the coordinator's state lock guards the registry.
 */
#ifndef PS_COORDINATOR_REGISTRY_H
#define PS_COORDINATOR_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "model_config.h"
#include "status.h"

#define REGISTRY_NAME_MAX 63                                      /* model name, [A-Za-z0-9._-] */
#define REGISTRY_TENSOR_NAME_MAX MODEL_CONFIG_NAME_MAX            /* tensor name, bytes */
#define REGISTRY_MAX_TENSORS 16384u                               /* tensors in one model */
#define REGISTRY_MAX_CONFIG_BYTES (1u << 20)                      /* config.json text, bytes */
#define REGISTRY_MAX_CHUNK_FLOATS (4u << 20)                      /* floats in one chunk */
#define REGISTRY_MAX_TENSOR_FLOATS ((uint64_t)MODEL_MAX_ELEMENTS) /* what a replica can hold */
#define REGISTRY_MAX_VERSION 0xffffffffull                        /* largest version number */
#define REGISTRY_DEFAULT_MAX_VERSIONS 1024u    /* model versions kept, all models */
#define REGISTRY_DEFAULT_MAX_BYTES (48u << 20) /* their packed size, all together */
#define REGISTRY_MAX_BYTES_LIMIT (60u << 20)   /* below the 64 MiB message limit */
#define REGISTRY_MAX_MARKS 4096u               /* version marks kept (registry_mark_*) */

typedef struct registry_opts {
    size_t max_versions; /* 0 = REGISTRY_DEFAULT_MAX_VERSIONS */
    size_t max_bytes;    /* 0 = REGISTRY_DEFAULT_MAX_BYTES; at most REGISTRY_MAX_BYTES_LIMIT */
} registry_opts;

typedef struct registry registry;

ps_status registry_create(const registry_opts *opts, registry **ret_registry);
void registry_destroy(registry *reg); /* accepts NULL */

/* Checks a model a client sent (or the state file holds): name, tensor count and names,
 * dimensions, dtype, chunking, version, config size, then the graph (the config must
 * parse, name the model, and agree with the tensors' shapes). INVALID_ARGUMENT with a
 * message in err; NO_MEMORY. Version 0 is allowed (the next version is picked). */
ps_status registry_model_validate(const Ps__ModelInfo *model, char *err, size_t err_len);
/* What a new upload's names must be besides: text (ps_text_valid), so that the state
 * file (JSON) can hold them and no name forges a log line. Not asked of what a state
 * file already holds (older builds took control characters). INVALID_ARGUMENT. */
ps_status registry_model_check_text(const Ps__ModelInfo *model, char *err, size_t err_len);

/* A private deep copy of a message (pack + unpack). Free with
 * ps__model_info__free_unpacked(copy, NULL). */
ps_status registry_model_copy(const Ps__ModelInfo *model, Ps__ModelInfo **ret_copy);

/* Stores a validated model copy, taking ownership on OK. Version 0 becomes the model's
 * highest version ever stored + 1 (registry_mark_*: a deleted version's number is never
 * given again, so a replica that still serves a force-deleted version, or a client that
 * asks for it, never meets another model under its number); a version already there is
 * replaced. Moves the generation on.
 * RESOURCE_EXHAUSTED (message in err) when a limit would be passed; nothing changes
 * then and the caller still owns `model`. *ret_version gets the stored version. */
ps_status registry_model_put(registry *reg, Ps__ModelInfo *model, uint64_t *ret_version, char *err,
                             size_t err_len);

/* A stored version (version 0 = the latest of that name); NULL when absent. */
/* Takes a version out of the registry and hands it to the caller (*ret_model: free it
 * with ps__model_info__free_unpacked); the generation moves on. NOT_FOUND when absent. */
ps_status registry_model_take(registry *reg, const char *name, uint64_t version,
                              Ps__ModelInfo **ret_model);

const Ps__ModelInfo *registry_model_find(const registry *reg, const char *name, uint64_t version);

size_t registry_model_count(const registry *reg);
/* Model entries into out[] (room for registry_model_count): every version, or only
 * those replicas serve (the latest N of each name, N from the latest version's
 * config.json version_policy, 1 by default). Returns how many. The pointers belong to
 * the registry. */
size_t registry_models_collect(const registry *reg, bool served_only, const Ps__ModelInfo **out);

/* Increases on every change (WatchModels). */
uint64_t registry_generation(const registry *reg);
void registry_set_generation(registry *reg, uint64_t generation);
/* Bytes the stored entries take packed (what listings cost). */
size_t registry_bytes(const registry *reg);
/* The most versions it keeps (registry_opts.max_versions). */
size_t registry_version_limit(const registry *reg);

/* Version marks: the highest version each model name was ever stored with, which
 * registry_model_put numbers new uploads after. Only the marks above every stored
 * version of their name say something the entries do not (the versions deleted from the
 * top); those are what the state file keeps. At most REGISTRY_MAX_MARKS names are
 * marked: past that the lowest mark is forgotten (its name may then reuse numbers).
 * registry_mark_raise: mark >= version afterwards (INVALID_ARGUMENT for a name that is
 * no model name or version 0 or above REGISTRY_MAX_VERSION; NO_MEMORY).
 * registry_marks_collect: the marks above their name's stored versions, into
 * names[] / versions[] (room for registry_mark_count); returns how many. The names
 * belong to the registry. */
ps_status registry_mark_raise(registry *reg, const char *name, uint64_t version);
uint64_t registry_mark(const registry *reg, const char *name); /* 0: none */
size_t registry_mark_count(const registry *reg);
size_t registry_marks_collect(const registry *reg, const char **names, uint64_t *versions);

#endif
