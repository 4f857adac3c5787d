/* rpc_internal.h: pieces shared by the rpc server and client (proto/ only):
 * message encoding to gRPC byte buffers, decoding, spin-then-block queue waits. */
#ifndef PS_PROTO_RPC_INTERNAL_H
#define PS_PROTO_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include "rpc.h"

/* Packs `msg` (may be NULL: empty message) and appends `extra` byte fields as their own
 * slices. The extras' release callbacks run when gRPC drops the buffer, or at once on
 * failure. NULL on allocation failure. */
grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg, const rpc_bytes_field *extra,
                             size_t n_extra);

/* Unpacks a received buffer as `type`. NULL when malformed (or out of memory). */
ProtobufCMessage *rpc_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type);

/* A received payload held in one piece (the gRPC slice itself when it came as one,
 * else one copy), with the views of one raw field found in it. */
struct rpc_received {
    grpc_slice flat;
    rpc_bytes_view *views;
    size_t n_views;
};

/* Unpacks a received buffer as `type` leaving out every occurrence of the bytes
 * field `raw_field`, which goes to *ret_received as views into the payload.
 * NULL when malformed (or out of memory); *ret_received is then untouched. */
ProtobufCMessage *rpc_decode_split(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type,
                                   uint32_t raw_field, rpc_received **ret_received);

/* Copies a received buffer into one malloc'd block (*ret_len bytes; never NULL on OK). */
ps_status rpc_flatten(grpc_byte_buffer *bb, void **ret_data, size_t *ret_len);

/* Waits on a queue: polls it for up to spin_us, then blocks until `deadline`. With a
 * tag it plucks that tag, else takes the next event. */
grpc_event rpc_cq_wait(grpc_completion_queue *cq, void *tag, gpr_timespec deadline, int spin_us);

/* A deadline `ms` from now on the monotonic clock; infinite for ms <= 0. */
gpr_timespec rpc_deadline_after_ms(int64_t ms);

/* One-time gRPC library init/shutdown, counted. */
void rpc_library_ref(void);
void rpc_library_unref(void);

#endif
