/* kserve_internal.h: what kserve.c and kserve_model.c share (not for other modules). */
#ifndef PS_SERVING_REPLICA_KSERVE_INTERNAL_H
#define PS_SERVING_REPLICA_KSERVE_INTERNAL_H

#include "kserve.h"
#include "served.h"

struct kserve {
    kserve_opts o;
};

/* The ready model a request names (version "" = newest), with a reference; on failure
 * the call's status is set (INVALID_ARGUMENT, NOT_FOUND) and returned. */
ps_status kserve_model_find(kserve *k, rpc_ctx *ctx, const char *name, const char *version,
                            served **ret_served);

/* Triton's model handlers (kserve_model.c). */
ps_status kserve_model_metadata(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user);
ps_status kserve_model_config(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user);
ps_status kserve_model_statistics(rpc_ctx *ctx, const ProtobufCMessage *msg, void *user);

#endif
