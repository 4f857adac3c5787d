/* rpc_internal.h: pieces shared by the rpc server and client (proto/ only):
 * message encoding to gRPC byte buffers and decoding (rpc_bytes.c), spin-then-block
 * queue waits (rpc_common.c). */
#ifndef PS_PROTO_RPC_INTERNAL_H
#define PS_PROTO_RPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include "rpc.h"

/* Packs `msg` (may be NULL: empty message) and appends `extra` byte fields as their own
 * slices. The extras' release callbacks run when gRPC drops the buffer, or at once on
 * failure. NULL on allocation failure. */
/* One encoded message lent as it is (a zero-length one too); NULL (its release run) when
 * gRPC cannot take it. */
grpc_byte_buffer *rpc_encode_packed(const rpc_bytes_part *message);
grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg, const rpc_bytes_field *extra,
                             size_t n_extra);

/* Unpacks a received buffer as `type`. NULL when malformed (or out of memory). */
ProtobufCMessage *rpc_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type);

/* A received payload kept as gRPC delivered it (its slices, uncopied), with the
 * occurrences of one raw field found in it (rpc_bytes.c). */
struct rpc_received {
    grpc_byte_buffer *bb;     /* owned: the slices the pieces point into */
    grpc_slice flat;          /* a compressed payload read out in one piece, or empty */
    rpc_bytes_view *pieces;   /* every occurrence's pieces, in order */
    rpc_bytes_pieces *fields; /* n_fields occurrences, each a run of `pieces` */
    size_t n_fields;
    rpc_bytes_view *views; /* made on first use: one contiguous view per occurrence */
    uint8_t **copies;      /* with views: the occurrences copied to be contiguous */
};

/* Unpacks a received buffer as `type` leaving out every occurrence of the bytes
 * field `raw_field`, which goes to *ret_received as pieces of the payload: on success
 * the received structure owns `bb` (rpc_received_free destroys it). NULL when
 * malformed (or out of memory); `bb` is then still the caller's and *ret_received is
 * untouched. */
ProtobufCMessage *rpc_decode_split(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type,
                                   uint32_t raw_field, rpc_received **ret_received);

/* Copies a received buffer into one malloc'd block (*ret_len bytes; never NULL on OK). */
ps_status rpc_flatten(grpc_byte_buffer *bb, void **ret_data, size_t *ret_len);

/* CLOCK_MONOTONIC in microseconds. */
int64_t rpc_now_us(void);
/* Waits on a queue: polls it for up to spin_us, then blocks until `deadline`. With a
 * tag it plucks that tag, else takes the next event. */
grpc_event rpc_cq_wait(grpc_completion_queue *cq, void *tag, gpr_timespec deadline, int spin_us);

/* Appends an integer channel argument: args[(*n)++] = {key, value}. */
void rpc_arg_int(grpc_arg *args, size_t *n, const char *key, int value);
/* A keepalive option as used: 0 gives `dflt`, below RPC_MIN_KEEPALIVE_MS that minimum,
 * <0 stays (no pings). */
int rpc_keepalive_ms(int ms, int dflt);
/* Appends the arguments for keepalive pings every ms (ms > 0; nothing otherwise): ping
 * while calls are open, close the connection when one goes unanswered ms long, and
 * ping on streams that carry no data from this side too. Three at most. */
void rpc_args_keepalive(grpc_arg *args, size_t *n, int ms);

/* A deadline `ms` from now on the monotonic clock; infinite for ms <= 0. */
gpr_timespec rpc_deadline_after_ms(int64_t ms);

/* ------------------------------------------------- client (rpc_client.c) --- */

typedef struct registered_method {
    char *name;
    void *handle;
} registered_method;

struct rpc_channel {
    grpc_channel *grpc;
    char *target;
    rpc_channel_opts opts;
    pthread_mutex_t lock;
    registered_method *methods;
    size_t n_methods, cap_methods;
    /* idle completion queues for unary calls: creating one per call costs more than
     * the call on loopback; a queue goes back here with no event left in it */
    grpc_completion_queue *idle_cqs[16];
    size_t n_idle_cqs;
    int unary_spin_us;             /* a unary wait's polling budget (0: none) */
    _Atomic int64_t unary_wait_us; /* moving average of unary waits, microseconds */
};

/* The registered-call handle for `method`, registering it on first use; NULL when out
 * of memory. */
void *rpc_channel_method(rpc_channel *channel, const char *method);
/* Fills `op` (SEND_INITIAL_METADATA) from call options; md must have room for them. */
void rpc_initial_md_op(const rpc_call_opts *opts, grpc_metadata *md, grpc_op *op);
/* A result (may be NULL) from a local failure, or from what the call received. */
void rpc_result_local(rpc_result *r, ps_status st, const char *details);
void rpc_result_from_call(rpc_result *r, grpc_status_code code, grpc_slice details);

/* CPUs this process may run on (its affinity mask: a container's or taskset's
 * share), at least 1. */
int rpc_cpu_count(void);

/* One-time gRPC library init/shutdown, counted. */
void rpc_library_ref(void);
void rpc_library_unref(void);

#endif
