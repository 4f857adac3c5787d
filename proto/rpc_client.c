/* rpc_client.c: the gRPC core client behind rpc.h.
 *
 * A channel is one gRPC channel to one target; methods are registered on it once
 * (gRPC wants the method string to outlive the channel, so the channel keeps copies).
 * A unary call is one batch of six ops on a completion queue of its own, plucked by
 * tag with a short spin before blocking (a blocking wait costs tens of microseconds
 * in a VM). A stream keeps its queue for its life.
 */
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <grpc/grpc_security.h>

#include "rpc_internal.h"

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
};

struct rpc_stream {
    rpc_channel *channel;
    grpc_call *call;
    grpc_completion_queue *cq;
    const ProtobufCMessageDescriptor *type;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code code;
    grpc_slice details;
    bool open_pending;         /* the first batch (send + initial metadata) not yet plucked */
    grpc_byte_buffer *request; /* sent by the first batch; destroyed once it completes */
    bool finished;             /* final status received */
    rpc_result result;
};

/* ---------------------------------------------------------------- channels --- */

ps_status rpc_channel_create(const char *target, const rpc_channel_opts *opts,
                             rpc_channel **ret_channel) {
    if (!target || !*target)
        return PS_STATUS_INVALID_ARGUMENT;
    rpc_channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        return PS_STATUS_NO_MEMORY;
    if (opts)
        ch->opts = *opts;
    if (ch->opts.max_message_bytes == 0)
        ch->opts.max_message_bytes = RPC_DEFAULT_MAX_MESSAGE_BYTES;
    if (ch->opts.max_message_bytes > INT32_MAX)
        ch->opts.max_message_bytes = INT32_MAX;
    if (ch->opts.spin_us == 0)
        ch->opts.spin_us = RPC_DEFAULT_SPIN_US;
    ch->target = strdup(target);
    if (!ch->target) {
        free(ch);
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&ch->lock, NULL);
    rpc_library_ref();

    grpc_arg args[3];
    memset(args, 0, sizeof args);
    size_t n = 0;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n++].value.integer = (int)ch->opts.max_message_bytes;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[n++].value.integer = (int)ch->opts.max_message_bytes;
    if (ch->opts.own_connection) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
        args[n++].value.integer = 1;
    }
    grpc_channel_args chargs = {n, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    ch->grpc = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (!ch->grpc) {
        rpc_channel_destroy(ch);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_channel = ch;
    return PS_STATUS_OK;
}

void rpc_channel_destroy(rpc_channel *ch) {
    if (!ch)
        return;
    for (size_t i = 0; i < ch->n_idle_cqs; i++) {
        grpc_completion_queue_shutdown(ch->idle_cqs[i]);
        grpc_completion_queue_destroy(ch->idle_cqs[i]);
    }
    if (ch->grpc)
        grpc_channel_destroy(ch->grpc);
    for (size_t i = 0; i < ch->n_methods; i++)
        free(ch->methods[i].name);
    free(ch->methods);
    free(ch->target);
    pthread_mutex_destroy(&ch->lock);
    free(ch);
    rpc_library_unref();
}

const char *rpc_channel_target(const rpc_channel *ch) {
    return ch->target;
}

/* The registered-call handle for `method`, registering it on first use. */
static void *method_handle(rpc_channel *ch, const char *method) {
    void *h = NULL;
    pthread_mutex_lock(&ch->lock);
    for (size_t i = 0; i < ch->n_methods; i++) {
        if (strcmp(ch->methods[i].name, method) == 0) {
            h = ch->methods[i].handle;
            goto out;
        }
    }
    if (ch->n_methods == ch->cap_methods) {
        size_t cap = ch->cap_methods ? 2 * ch->cap_methods : 8;
        registered_method *grown = realloc(ch->methods, cap * sizeof *grown);
        if (!grown)
            goto out;
        ch->methods = grown;
        ch->cap_methods = cap;
    }
    char *name = strdup(method);
    if (!name)
        goto out;
    h = grpc_channel_register_call(ch->grpc, name, NULL, NULL);
    ch->methods[ch->n_methods++] = (registered_method){name, h};
out:
    pthread_mutex_unlock(&ch->lock);
    return h;
}

/* ---------------------------------------------------------------- results --- */

static void result_set(rpc_result *r, int code, const char *details, size_t len) {
    if (!r)
        return;
    r->grpc_code = code;
    r->status = rpc_status_from_code(code);
    if (len >= sizeof r->details)
        len = sizeof r->details - 1;
    if (details && len)
        memcpy(r->details, details, len);
    r->details[details ? len : 0] = '\0';
}

static void result_local(rpc_result *r, ps_status st, const char *details) {
    if (!r)
        return;
    r->status = st;
    r->grpc_code = rpc_code_from_status(st);
    result_set(r, r->grpc_code, details, strlen(details));
    r->status = st; /* keep the local status even where the code maps back differently */
}

static void result_from_call(rpc_result *r, grpc_status_code code, grpc_slice details) {
    result_set(r, code, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
}

/* Fills ops[0] (SEND_INITIAL_METADATA) from call options; md must have room. */
static void initial_md_op(const rpc_call_opts *opts, grpc_metadata *md, grpc_op *op) {
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    size_t n = opts ? opts->n_metadata : 0;
    for (size_t i = 0; i < n; i++) {
        md[i].key = grpc_slice_from_static_string(opts->metadata[i].key);
        md[i].value = grpc_slice_from_static_string(opts->metadata[i].value);
    }
    op->data.send_initial_metadata.count = n;
    op->data.send_initial_metadata.metadata = n ? md : NULL;
    if (opts && opts->wait_for_ready)
        op->flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                    GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
}

/* ---------------------------------------------------------------- unary --- */

static grpc_completion_queue *cq_get(rpc_channel *ch) {
    grpc_completion_queue *cq = NULL;
    pthread_mutex_lock(&ch->lock);
    if (ch->n_idle_cqs > 0)
        cq = ch->idle_cqs[--ch->n_idle_cqs];
    pthread_mutex_unlock(&ch->lock);
    return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* Returns a queue whose events were all plucked. */
static void cq_put(rpc_channel *ch, grpc_completion_queue *cq) {
    pthread_mutex_lock(&ch->lock);
    if (ch->n_idle_cqs < sizeof ch->idle_cqs / sizeof ch->idle_cqs[0]) {
        ch->idle_cqs[ch->n_idle_cqs++] = cq;
        cq = NULL;
    }
    pthread_mutex_unlock(&ch->lock);
    if (cq) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
    }
}

/* One unary call with an encoded request; on OK *ret_bb holds the response. */
static ps_status unary(rpc_channel *ch, const char *method, grpc_byte_buffer *req,
                       const rpc_call_opts *opts, grpc_byte_buffer **ret_bb, rpc_result *r) {
    ps_status st = PS_STATUS_OK;
    void *h = method_handle(ch, method);
    if (!req || !h) {
        if (req)
            grpc_byte_buffer_destroy(req);
        result_local(r, PS_STATUS_NO_MEMORY, "out of memory preparing the call");
        return PS_STATUS_NO_MEMORY;
    }
    grpc_completion_queue *cq = cq_get(ch);
    gpr_timespec deadline = rpc_deadline_after_ms(opts ? opts->timeout_ms : 0);
    grpc_call *call = grpc_channel_create_registered_call(ch->grpc, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                          cq, h, deadline, NULL);
    grpc_metadata md_stack[8];
    grpc_metadata *md = md_stack;
    size_t n_md = opts ? opts->n_metadata : 0;
    if (n_md > 8 && !(md = malloc(n_md * sizeof *md))) {
        st = PS_STATUS_NO_MEMORY;
        result_local(r, st, "out of memory preparing the call");
        grpc_call_unref(call);
        grpc_byte_buffer_destroy(req);
        goto out_cq;
    }
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_byte_buffer *resp = NULL;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    initial_md_op(opts, md, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;

    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        st = PS_STATUS_INTERNAL;
        result_local(r, st, "could not start the call");
    } else {
        rpc_cq_wait(cq, call, gpr_inf_future(GPR_CLOCK_MONOTONIC), ch->opts.spin_us);
        result_from_call(r, code, details);
        st = rpc_status_from_code(code);
    }
    if (st == PS_STATUS_OK)
        *ret_bb = resp;
    else if (resp)
        grpc_byte_buffer_destroy(resp);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_byte_buffer_destroy(req);
    grpc_call_unref(call);
    if (md != md_stack)
        free(md);
out_cq:
    cq_put(ch, cq); /* every event was plucked */
    return st;
}

static ps_status decode_into(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type,
                             ProtobufCMessage **ret, rpc_result *r) {
    ProtobufCMessage *m = rpc_decode(bb, type);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (!m) {
        result_local(r, PS_STATUS_PARSE, "malformed response from the server");
        return PS_STATUS_PARSE;
    }
    *ret = m;
    return PS_STATUS_OK;
}

ps_status rpc_call(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                   const ProtobufCMessageDescriptor *response_type, const rpc_call_opts *opts,
                   ProtobufCMessage **ret_response, rpc_result *ret_result) {
    return rpc_call_with_bytes(ch, method, request, NULL, 0, response_type, opts, ret_response,
                               ret_result);
}

ps_status rpc_call_with_bytes(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                              const rpc_bytes_field *extra, size_t n_extra,
                              const ProtobufCMessageDescriptor *response_type,
                              const rpc_call_opts *opts, ProtobufCMessage **ret_response,
                              rpc_result *ret_result) {
    grpc_byte_buffer *bb = NULL;
    ps_status st = unary(ch, method, rpc_encode(request, extra, n_extra), opts, &bb, ret_result);
    if (st != PS_STATUS_OK)
        return st;
    return decode_into(bb, response_type, ret_response, ret_result);
}

ps_status rpc_call_split(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                         const rpc_bytes_field *extra, size_t n_extra,
                         const ProtobufCMessageDescriptor *response_type, uint32_t raw_field,
                         const rpc_call_opts *opts, ProtobufCMessage **ret_response,
                         rpc_received **ret_received, rpc_result *ret_result) {
    grpc_byte_buffer *bb = NULL;
    ps_status st = unary(ch, method, rpc_encode(request, extra, n_extra), opts, &bb, ret_result);
    if (st != PS_STATUS_OK)
        return st;
    rpc_received *r = NULL;
    ProtobufCMessage *m = rpc_decode_split(bb, response_type, raw_field, &r);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (!m) {
        result_local(ret_result, PS_STATUS_PARSE, "malformed response from the server");
        return PS_STATUS_PARSE;
    }
    *ret_response = m;
    *ret_received = r;
    return PS_STATUS_OK;
}

ps_status rpc_call_raw(rpc_channel *ch, const char *method, const void *data, size_t len,
                       const rpc_call_opts *opts, void **ret_data, size_t *ret_len,
                       rpc_result *ret_result) {
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *bb = NULL;
    ps_status st = unary(ch, method, req, opts, &bb, ret_result);
    if (st != PS_STATUS_OK)
        return st;
    st = rpc_flatten(bb, ret_data, ret_len);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (st != PS_STATUS_OK)
        result_local(ret_result, st, "out of memory reading the response");
    return st;
}

/* ---------------------------------------------------------------- streams --- */

ps_status rpc_stream_open(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                          const ProtobufCMessageDescriptor *response_type,
                          const rpc_call_opts *opts, rpc_stream **ret_stream) {
    void *h = method_handle(ch, method);
    if (!h)
        return PS_STATUS_NO_MEMORY;
    rpc_stream *s = calloc(1, sizeof *s);
    if (!s)
        return PS_STATUS_NO_MEMORY;
    s->channel = ch;
    s->type = response_type;
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    grpc_byte_buffer *req = rpc_encode(request, NULL, 0);
    grpc_metadata md_stack[8];
    if (!req || (opts && opts->n_metadata > 8)) {
        if (req)
            grpc_byte_buffer_destroy(req);
        grpc_metadata_array_destroy(&s->initial_md);
        grpc_metadata_array_destroy(&s->trailing_md);
        free(s);
        return req ? PS_STATUS_INVALID_ARGUMENT : PS_STATUS_NO_MEMORY;
    }
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = rpc_deadline_after_ms(opts ? opts->timeout_ms : 0);
    s->call = grpc_channel_create_registered_call(ch->grpc, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, h,
                                                  deadline, NULL);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    initial_md_op(opts, md_stack, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    /* Do not wait here: the stream is the caller's at once (so it can be cancelled
     * from another thread); rpc_stream_next collects this batch first. */
    ps_status st = PS_STATUS_OK;
    s->request = req;
    if (grpc_call_start_batch(s->call, ops, 4, s, NULL) != GRPC_CALL_OK)
        st = PS_STATUS_INTERNAL;
    else
        s->open_pending = true;
    /* Ask for the final status now; it completes when the stream ends. */
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[0].data.recv_status_on_client.status = &s->code;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    if (st == PS_STATUS_OK &&
        grpc_call_start_batch(s->call, ops, 1, &s->finished, NULL) != GRPC_CALL_OK)
        st = PS_STATUS_INTERNAL;
    if (st != PS_STATUS_OK) {
        s->finished = true; /* no status batch to wait for */
        rpc_stream_destroy(s);
        return st;
    }
    *ret_stream = s;
    return PS_STATUS_OK;
}

/* Waits for the final status (after the message stream ended or failed). */
/* Collects the opening batch (sends and initial metadata) once. */
static void stream_opened(rpc_stream *s) {
    if (!s->open_pending)
        return;
    rpc_cq_wait(s->cq, s, gpr_inf_future(GPR_CLOCK_MONOTONIC), s->channel->opts.spin_us);
    s->open_pending = false;
    grpc_byte_buffer_destroy(s->request);
    s->request = NULL;
}

static void stream_finish(rpc_stream *s) {
    stream_opened(s);
    if (s->finished)
        return;
    rpc_cq_wait(s->cq, &s->finished, gpr_inf_future(GPR_CLOCK_MONOTONIC), 0);
    s->finished = true;
    result_from_call(&s->result, s->code, s->details);
}

ps_status rpc_stream_next(rpc_stream *s, ProtobufCMessage **ret_message) {
    if (s->finished) {
        if (s->result.status == PS_STATUS_OK)
            *ret_message = NULL;
        return s->result.status;
    }
    stream_opened(s);
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (grpc_call_start_batch(s->call, &op, 1, &bb, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(s->call, NULL);
        stream_finish(s);
        return s->result.status == PS_STATUS_OK ? PS_STATUS_INTERNAL : s->result.status;
    }
    rpc_cq_wait(s->cq, &bb, gpr_inf_future(GPR_CLOCK_MONOTONIC), s->channel->opts.spin_us);
    if (!bb) { /* end of stream: clean or not, the status says */
        stream_finish(s);
        if (s->result.status == PS_STATUS_OK)
            *ret_message = NULL;
        return s->result.status;
    }
    ProtobufCMessage *m = rpc_decode(bb, s->type);
    grpc_byte_buffer_destroy(bb);
    if (!m) {
        grpc_call_cancel(s->call, NULL);
        stream_finish(s);
        result_local(&s->result, PS_STATUS_PARSE, "malformed stream message from the server");
        return PS_STATUS_PARSE;
    }
    *ret_message = m;
    return PS_STATUS_OK;
}

const rpc_result *rpc_stream_result(const rpc_stream *s) {
    return &s->result;
}

void rpc_stream_cancel(rpc_stream *s) {
    if (s && s->call)
        grpc_call_cancel(s->call, NULL);
}

void rpc_stream_destroy(rpc_stream *s) {
    if (!s)
        return;
    if (s->call) {
        if (!s->finished || s->open_pending)
            grpc_call_cancel(s->call, NULL);
        if (!s->finished)
            stream_finish(s);
        else
            stream_opened(s);
        grpc_call_unref(s->call);
    }
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        grpc_completion_queue_destroy(s->cq);
    }
    if (s->request) /* the opening batch never started */
        grpc_byte_buffer_destroy(s->request);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    free(s);
}
