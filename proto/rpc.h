/* rpc.h: the project's only door to gRPC.
 *
 * Servers and clients exchange protobuf-c messages; gRPC core (the C API) carries
 * them. Nothing outside proto/ includes a gRPC header: the rest of the project sees
 * handlers that take and give protobuf-c messages, and ps_status values.
 *
 * Server model: N worker threads take events from one shared completion queue; when
 * spin_us > 0 at most one of them polls without blocking (spin-then-block) at a
 * time. Unary handlers run on the worker that took the call. A server-streaming
 * handler runs on a thread of its own (streams live long: subscriptions, ring watches) and
 * writes messages one at a time with rpc_ctx_write, which blocks until the message is
 * sent or the call dies. Calls to methods nobody registered get UNIMPLEMENTED.
 *
 * Shutdown (rpc_server_shutdown, e.g. after SIGTERM): stop accepting, let in-flight
 * calls finish for the grace period, then cancel what is left; streaming handlers see
 * rpc_ctx_alive() turn false at once, so they can end early. Nothing aborts.
 *
 * Status: handlers return a ps_status (and may set a detail message with
 * rpc_ctx_error); the layer maps it to a gRPC status code. PS_STATUS_WRONG_EPOCH
 * travels as ABORTED, which our services use for nothing else.
 */
#ifndef PS_PROTO_RPC_H
#define PS_PROTO_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "bytes.h"
#include "status.h"

#define RPC_DEFAULT_MAX_MESSAGE_BYTES (64u * 1024u * 1024u)
#define RPC_DEFAULT_GRACE_MS 5000
/* Polling a completion queue before blocking (spin-then-block) saves the ~40 us a
 * blocking wake-up costs in a VM, but only when a core is idle: with a client and a
 * server sharing 2 busy cores the spinners take the CPU from the threads doing the
 * work. Measured here (1-float push round trip, shard and client on 2 loaded cores):
 * spinning 200 us on both sides p50/p99 582-591/1345-1515 us; client only 50-81/
 * 323-548; server only 137-202/658-1078; neither 52/197-295. So by default nobody
 * spins; a program on a machine with cores to spare may set spin_us. */
#define RPC_DEFAULT_SPIN_US 0
/* A client waiting for a unary call is another matter: it has nothing else to do, and
 * the one core it takes while the server works on the other is the one it would wake
 * on. Measured here (same push round trip, 2 cores): blocking p50/p99 157-187/298-422 us,
 * polling up to 200 us 61-65/163-236. So channels poll by default, adaptively: a wait
 * polls (for at most RPC_DEFAULT_CLIENT_SPIN_US) only while the channel's recent calls
 * finished within that time, so the transfers of megabytes that take milliseconds
 * never poll. Streams never poll unless spin_us is set. */
#define RPC_DEFAULT_CLIENT_SPIN_US 200
/* A peer that stops reading (a hung or stopped process, a cut network) can hold a call
 * past its deadline: gRPC (1.51) does not always end a call whose message is half
 * written when the deadline passes (seen with a 32 MiB push to a stopped shard: the
 * wait went on until the shard ran again, 1 try in 3). So client channels ping their
 * connection every keepalive while calls are open, and close it when a ping goes
 * unanswered as long again; its calls then fail with UNAVAILABLE. Servers accept pings
 * as often as RPC_MIN_KEEPALIVE_MS / 2 (a client pinging more often is told to go away). */
#define RPC_DEFAULT_KEEPALIVE_MS 10000
#define RPC_MIN_KEEPALIVE_MS 1000
/* Servers ping their clients the same way, less often: a client that vanished without
 * closing its connection (a host that died, a stopped process) otherwise holds its
 * streams, each a stream slot and a thread, until TCP gives up (never, for a stopped
 * process whose kernel still acknowledges). */
#define RPC_DEFAULT_SERVER_KEEPALIVE_MS 20000
#define RPC_DEFAULT_MAX_STREAMS 256 /* concurrent server-streaming calls per server */
#define RPC_DETAILS_MAX 512

/* ===================================================================== common === */

/* The outcome of a call as a client sees it. */
typedef struct rpc_result {
    ps_status status;              /* PS_STATUS_OK or the mapped failure */
    int grpc_code;                 /* the gRPC status code as received (0 = OK) */
    char details[RPC_DETAILS_MAX]; /* the peer's (or transport's) message; "" when none */
} rpc_result;

/* One metadata entry (an HTTP/2 header). Keys are lower-case ASCII. */
typedef struct rpc_metadata {
    const char *key;
    const char *value;
} rpc_metadata;

/* One piece of a `bytes` field sent in pieces (rpc_bytes_field.parts). `release` (may
 * be NULL) is called with `arg` once gRPC no longer needs `data`. */
typedef struct rpc_bytes_part {
    const void *data;
    size_t len;
    void (*release)(void *arg);
    void *arg;
} rpc_bytes_part;

/* A `bytes` field that travels as its own slices instead of being copied through
 * protobuf-c (the hot paths: tensor values). It is appended after the packed message
 * as tag + length + data, which is still one valid protobuf message. `release` (may
 * be NULL) is called with `arg` once gRPC no longer needs `data`. With n_parts > 0 the
 * field's bytes are instead the concatenation of `parts`, each sent as it lies (e.g.
 * one per chunk a shard holds, without gathering them into one buffer); data, len and
 * release are then unused, and the parts array itself need only outlive the call that
 * sends it. */
typedef struct rpc_bytes_field {
    uint32_t field_number;
    const void *data;
    size_t len;
    void (*release)(void *arg);
    void *arg;
    const rpc_bytes_part *parts;
    size_t n_parts;
} rpc_bytes_field;

/* Memory lent to gRPC without a copy: each part rpc_loan_part makes counts until gRPC
 * drops it (its release), and rpc_loan_wait blocks until every part made so far has
 * been dropped, so the caller may reuse or free the memory after it. gRPC drops a
 * sent message's slices shortly after the call ends (not always before the call's
 * completion is seen: the write's own completion may run on another thread), and at
 * once when a call fails to start. Thread-safe. */
typedef struct rpc_loan rpc_loan;
ps_status rpc_loan_create(rpc_loan **ret_loan);
rpc_bytes_part rpc_loan_part(rpc_loan *loan, const void *data, size_t len);
void rpc_loan_wait(rpc_loan *loan);
void rpc_loan_destroy(rpc_loan *loan); /* waits first; accepts NULL */

/* One occurrence of a raw bytes field in a received message (the receiving side of
 * rpc_bytes_field): it points into the received payload, not copied through
 * protobuf-c. Valid while the message it came with is (see rpc_ctx_raw and
 * rpc_received). */
typedef ps_bytes rpc_bytes_view; /* bytes.h: a run of bytes */

/* The same occurrence as it lies in the payload, uncopied: gRPC receives a large
 * message in many slices (about 64 KiB each), so the field's bytes are the
 * concatenation of `pieces`. Valid as long as the views are. A consumer copies it
 * once, straight into its destination (rpc_bytes_copy, or a ps_bytes_cursor over
 * the pieces: bytes.h), or hands the pieces on as they are. */
typedef struct rpc_bytes_pieces {
    const rpc_bytes_view *pieces;
    size_t n_pieces;
    size_t len; /* bytes in all */
} rpc_bytes_pieces;

/* Copies bytes [off, off + len) of a field into dst; false when the field is shorter. */
bool rpc_bytes_copy(const rpc_bytes_pieces *field, size_t off, void *dst, size_t len);

/* A cursor at the start of a field's pieces (bytes.h: ps_bytes_next, ps_bytes_take). */
ps_bytes_cursor rpc_bytes_cursor(const rpc_bytes_pieces *field);

/* gRPC status code (0..16) for a ps_status, and back. */
int rpc_code_from_status(ps_status st);
ps_status rpc_status_from_code(int grpc_code);
/* The gRPC name of a code, e.g. "RESOURCE_EXHAUSTED". */
const char *rpc_code_name(int grpc_code);

/* Process-wide tuning for programs that move large messages (see
 * notes on allocator thresholds): keeps glibc from returning gRPC's multi-megabyte
 * receive buffers to the OS after every message, and keeps few malloc arenas (one per
 * 4 CPUs) so memory freed by one thread serves the others. Call once, early in main. */
void rpc_tune_allocator(void);

/* For programs: keeps gRPC initialized until the process exits, so that destroying
 * the last server or channel never runs grpc_shutdown, which can block for about 10 s
 * waiting for connections that are still closing (seen under CPU load). The OS
 * reclaims everything at exit. It first limits malloc arenas as rpc_tune_allocator
 * does, before gRPC starts its threads. Call once, early in main. */
void rpc_process_init(void);

/* Signals: rpc_signals_block() blocks SIGINT and SIGTERM in the calling thread (call
 * it in main before any thread starts, so every thread inherits the mask);
 * rpc_signals_wait() then waits for one of them and returns its number. */
void rpc_signals_block(void);
int rpc_signals_wait(void);

/* ===================================================================== server === */

typedef struct rpc_server rpc_server;
typedef struct rpc_ctx rpc_ctx; /* one call, as its handler sees it */

/* A handler returns PS_STATUS_OK after rpc_ctx_reply (unary) or after its writes
 * (streaming), or a failure status, optionally after rpc_ctx_error set details. */
typedef ps_status (*rpc_handler)(rpc_ctx *ctx, const ProtobufCMessage *request, void *user);

typedef enum rpc_method_kind {
    RPC_METHOD_UNARY = 0,
    RPC_METHOD_SERVER_STREAM = 1,
    /* A unary call whose handler runs on a thread of its own, like a stream's (and
     * counted with them against max_streams), not on a worker: for methods that other
     * servers' handlers wait on while they hold their workers (a backup applying what a
     * primary's push handler waits for), so a pool of blocked workers can never starve
     * them. */
    RPC_METHOD_UNARY_OWN_THREAD = 2,
} rpc_method_kind;

typedef struct rpc_method {
    const char *name;                          /* "/package.Service/Method" */
    rpc_method_kind kind;                      /* unary or server streaming */
    const ProtobufCMessageDescriptor *request; /* type the payload is unpacked as */
    rpc_handler handler;
    void *user;         /* passed to the handler */
    uint32_t raw_field; /* 0, or a `bytes` field of the request left out of the unpacked
                           message and given to the handler as views (rpc_ctx_raw): the
                           hot paths' tensor values */
} rpc_method;

typedef struct rpc_server_opts {
    const char *listen;       /* "host:port"; port 0 picks a free one */
    int threads;              /* worker threads; 0 = the CPUs this process may use */
    size_t max_message_bytes; /* receive and send limit; 0 = RPC_DEFAULT_MAX_MESSAGE_BYTES */
    int grace_ms;             /* shutdown grace for in-flight calls; 0 = default, <0 = none */
    int spin_us;      /* poll a queue this long before blocking; 0 = RPC_DEFAULT_SPIN_US (none),
                         <0 = never */
    int max_streams;  /* server-streaming calls open at once (each holds a thread);
                         0 = RPC_DEFAULT_MAX_STREAMS; one more is answered
                         RESOURCE_EXHAUSTED at once */
    int keepalive_ms; /* ping interval and ping timeout per connection (see
                         RPC_DEFAULT_SERVER_KEEPALIVE_MS): 0 = that default, <0 = no pings;
                         at least RPC_MIN_KEEPALIVE_MS */
} rpc_server_opts;

ps_status rpc_server_create(const rpc_server_opts *opts, rpc_server **ret_server);
/* Before rpc_server_start. The method struct is copied; `name` must stay valid for the
 * server's life (string literals do). ALREADY_EXISTS for a duplicate name. */
ps_status rpc_server_add_method(rpc_server *server, const rpc_method *method);
/* Binds, starts the workers; *ret_port (may be NULL) gets the bound port. UNAVAILABLE
 * when the address cannot be bound. */
ps_status rpc_server_start(rpc_server *server, int *ret_port);
/* Create + add every method + start, in one call (what every program does). On
 * failure nothing is left running and *ret_server is untouched. */
ps_status rpc_server_serve(const rpc_server_opts *opts, const rpc_method *methods, size_t n_methods,
                           rpc_server **ret_server, int *ret_port);
/* Graceful stop (see above). Idempotent; returns when every call has ended. */
void rpc_server_shutdown(rpc_server *server);
/* Shuts down if still running, then frees. Accepts NULL. */
void rpc_server_destroy(rpc_server *server);

/* Unary: packs `response` now (the handler may free it right after) and sends it when
 * the handler returns OK. `extra` fields (may be NULL/0) are appended as raw slices. */
ps_status rpc_ctx_reply(rpc_ctx *ctx, const ProtobufCMessage *response);
ps_status rpc_ctx_reply_with_bytes(rpc_ctx *ctx, const ProtobufCMessage *response,
                                   const rpc_bytes_field *extra, size_t n_extra);
/* Deferred answers (RPC_METHOD_UNARY only): a handler that has set its reply but must
 * not answer before something slow happens elsewhere (a group commit, a backup's
 * acknowledgement) calls rpc_ctx_defer before it hands the call to whoever completes
 * it, and returns: its worker thread is free at once (what it returns is ignored), and
 * the call, its request and the request's raw views (rpc_ctx_raw) stay as they are
 * until rpc_ctx_complete, called exactly once, from any thread, even before the handler
 * has returned: OK sends the reply, another status sends that status with the details
 * rpc_ctx_error set (the reply is dropped). After the handing over the handler touches
 * the call no more. The server's shutdown waits for deferred calls to be completed. */
void rpc_ctx_defer(rpc_ctx *ctx);
void rpc_ctx_complete(rpc_ctx *ctx, ps_status status);
/* Sets the status details (printf format) and returns `status`, so a handler can
 * `return rpc_ctx_error(ctx, PS_STATUS_NOT_FOUND, "no model %s", name);` */
ps_status rpc_ctx_error(rpc_ctx *ctx, ps_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Streaming: sends one message; blocks until it is on its way. CANCELLED when the
 * call is dead (client cancelled, deadline passed, server shutting down). */
ps_status rpc_ctx_write(rpc_ctx *ctx, const ProtobufCMessage *message);
ps_status rpc_ctx_write_with_bytes(rpc_ctx *ctx, const ProtobufCMessage *message,
                                   const rpc_bytes_field *extra, size_t n_extra);
/* Streaming: sends len bytes that already are one encoded message, lent without a copy:
 * release(arg) (may be NULL) runs once gRPC drops them, which may be after this returns,
 * and at once when they cannot be handed over. For a message that many streams send
 * alike (a watch's update): each holds a reference, not a copy of its own. */
ps_status rpc_ctx_write_packed(rpc_ctx *ctx, const void *data, size_t len,
                               void (*release)(void *arg), void *arg);
/* False once the call's deadline passed or the server's shutdown grace period ended;
 * for streams also once the client cancelled or went away, or the server began to
 * shut down. (A unary handler runs on the thread that would see the client's cancel,
 * so it learns of that only through the deadline.) Handlers of long calls poll it. */
bool rpc_ctx_alive(rpc_ctx *ctx);
/* Milliseconds left before the call's deadline (<= 0: passed); INT64_MAX if none. */
int64_t rpc_ctx_deadline_ms(const rpc_ctx *ctx);
/* The value of a request metadata key (NUL-terminated copy owned by the call), or
 * NULL when absent. */
const char *rpc_ctx_metadata(rpc_ctx *ctx, const char *key);
const char *rpc_ctx_method(const rpc_ctx *ctx);
/* The occurrences of the method's raw_field in the request, in order (a repeated
 * field gives several); valid until the handler returns. An occurrence that arrived in
 * several slices is copied to be contiguous (on the first call): the hot paths read
 * rpc_ctx_raw_pieces instead. No views (0) when that copy finds no memory. */
size_t rpc_ctx_raw(const rpc_ctx *ctx, const rpc_bytes_view **ret_views);
/* The same occurrences as they lie in the payload, uncopied. */
size_t rpc_ctx_raw_pieces(const rpc_ctx *ctx, const rpc_bytes_pieces **ret_fields);

/* ===================================================================== client === */

typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

typedef struct rpc_channel_opts {
    size_t max_message_bytes; /* 0 = RPC_DEFAULT_MAX_MESSAGE_BYTES */
    bool own_connection;      /* do not share the TCP connection with other channels */
    int spin_us;              /* unary waits poll up to this long while the channel's recent calls
                                 finished within it (streams: always this long); 0 = unary
                                 RPC_DEFAULT_CLIENT_SPIN_US and streams none, <0 = never */
    int keepalive_ms;         /* ping interval and ping timeout while calls are open (see
                                 RPC_DEFAULT_KEEPALIVE_MS): 0 = that default, <0 = no pings;
                                 at least RPC_MIN_KEEPALIVE_MS */
} rpc_channel_opts;

typedef struct rpc_call_opts {
    int64_t timeout_ms;           /* 0 = no deadline */
    bool wait_for_ready;          /* wait for a connection instead of failing fast */
    const rpc_metadata *metadata; /* sent with the request; may be NULL */
    size_t n_metadata;
} rpc_call_opts;

/* A channel to one target ("host:port"). Connects lazily. Thread-safe. */
ps_status rpc_channel_create(const char *target, const rpc_channel_opts *opts,
                             rpc_channel **ret_channel);
void rpc_channel_destroy(rpc_channel *channel); /* accepts NULL */
const char *rpc_channel_target(const rpc_channel *channel);
/* Lets a channel that could not connect try again at its next call. gRPC waits longer
 * and longer between attempts to connect (1 s, growing 1.6 times each time up to 120 s)
 * and fails calls at once meanwhile, so after a long outage a server that is back stays
 * unreached for as long again. A caller that retries on its own schedule (the process
 * runtime, while the coordinator is away) calls this before each retry. */
void rpc_channel_reconnect_now(rpc_channel *channel);

/* Unary call. On OK, *ret_response is a message of `response_type` to free with
 * protobuf_c_message_free_unpacked(msg, NULL). The return value equals
 * ret_result->status; ret_result (may be NULL) gets code and details. opts may be NULL. */
ps_status rpc_call(rpc_channel *channel, const char *method, const ProtobufCMessage *request,
                   const ProtobufCMessageDescriptor *response_type, const rpc_call_opts *opts,
                   ProtobufCMessage **ret_response, rpc_result *ret_result);
/* The same with a request message plus raw byte fields appended (see rpc_bytes_field). */
ps_status rpc_call_with_bytes(rpc_channel *channel, const char *method,
                              const ProtobufCMessage *request, const rpc_bytes_field *extra,
                              size_t n_extra, const ProtobufCMessageDescriptor *response_type,
                              const rpc_call_opts *opts, ProtobufCMessage **ret_response,
                              rpc_result *ret_result);
/* A received message's raw field occurrences (see rpc_call_split): as contiguous
 * views (copied on first use when an occurrence arrived in several slices; 0 when that
 * copy finds no memory), or as the pieces they lie in. */
typedef struct rpc_received rpc_received;
size_t rpc_received_views(const rpc_received *received, const rpc_bytes_view **ret_views);
size_t rpc_received_pieces(const rpc_received *received, const rpc_bytes_pieces **ret_fields);
void rpc_received_free(rpc_received *received); /* accepts NULL */

/* rpc_call_with_bytes whose response's `raw_field` (a bytes field, 0 = none) is not
 * unpacked: its occurrences come as views in *ret_received, valid until
 * rpc_received_free (call it also after freeing the message). */
ps_status rpc_call_split(rpc_channel *channel, const char *method, const ProtobufCMessage *request,
                         const rpc_bytes_field *extra, size_t n_extra,
                         const ProtobufCMessageDescriptor *response_type, uint32_t raw_field,
                         const rpc_call_opts *opts, ProtobufCMessage **ret_response,
                         rpc_received **ret_received, rpc_result *ret_result);

/* Asynchronous unary calls: rpc_call_start sends the request and returns at once, so
 * a caller can have calls to several servers in flight and then collect each with
 * rpc_pending_finish, which waits for it (the blocking calls above are these two in a
 * row). Every started call must be finished exactly once; finishing frees it. */
typedef struct rpc_pending rpc_pending;

/* Starts a call of `request` plus raw byte fields (see rpc_bytes_field; their release
 * callbacks run whatever happens). On failure nothing is in flight, *ret_pending is
 * untouched and ret_result (may be NULL) says why. opts may be NULL. */
ps_status rpc_call_start(rpc_channel *channel, const char *method, const ProtobufCMessage *request,
                         const rpc_bytes_field *extra, size_t n_extra, const rpc_call_opts *opts,
                         rpc_pending **ret_pending, rpc_result *ret_result);
/* Waits for the call, frees it, and decodes its response as `response_type`. With
 * raw_field != 0, that bytes field is left out of the message and its occurrences go
 * to *ret_received (as rpc_call_split; ret_received must then be non-NULL). The
 * return value equals ret_result->status (ret_result may be NULL). */
ps_status rpc_pending_finish(rpc_pending *pending, const ProtobufCMessageDescriptor *response_type,
                             uint32_t raw_field, ProtobufCMessage **ret_response,
                             rpc_received **ret_received, rpc_result *ret_result);

/* Unary call with raw bytes both ways (tests of malformed input, proxies). On OK,
 * *ret_data is malloc'd (free it) and *ret_len its size. */
ps_status rpc_call_raw(rpc_channel *channel, const char *method, const void *data, size_t len,
                       const rpc_call_opts *opts, void **ret_data, size_t *ret_len,
                       rpc_result *ret_result);

/* Server-streaming call: sends `request`, then read replies with rpc_stream_next. */
ps_status rpc_stream_open(rpc_channel *channel, const char *method, const ProtobufCMessage *request,
                          const ProtobufCMessageDescriptor *response_type,
                          const rpc_call_opts *opts, rpc_stream **ret_stream);
/* Next message: OK with *ret_message set (free it as for rpc_call); OK with NULL at a
 * clean end of stream; otherwise the call's failure (see rpc_stream_result). */
ps_status rpc_stream_next(rpc_stream *stream, ProtobufCMessage **ret_message);
/* The final status once rpc_stream_next returned NULL or a failure. */
const rpc_result *rpc_stream_result(const rpc_stream *stream);
/* Cancels the call; safe from any thread while another blocks in rpc_stream_next. */
void rpc_stream_cancel(rpc_stream *stream);
void rpc_stream_destroy(rpc_stream *stream); /* cancels if still open; accepts NULL */

#endif
