/* rpc_client.c: the gRPC core client behind rpc.h: channels and unary calls
 * (streams are in rpc_stream.c).
 *
 * A channel is one gRPC channel to one target; methods are registered on it once
 * (gRPC wants the method string to outlive the channel, so the channel keeps copies).
 * A unary call is one batch of six ops on a completion queue of its own (taken from
 * the channel's idle queues), started by rpc_call_start and plucked by tag in
 * rpc_pending_finish (polling first for spin_us when set: see RPC_DEFAULT_SPIN_US).
 * The blocking calls are start + finish.
 */
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <grpc/grpc_security.h>

#include "rpc_internal.h"

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
    ch->unary_spin_us = ch->opts.spin_us == 0  ? RPC_DEFAULT_CLIENT_SPIN_US
                        : ch->opts.spin_us < 0 ? 0
                                               : ch->opts.spin_us;
    if (ch->opts.spin_us == 0)
        ch->opts.spin_us = RPC_DEFAULT_SPIN_US;
    ch->target = strdup(target);
    if (!ch->target) {
        free(ch);
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&ch->lock, NULL);
    rpc_library_ref();

    ch->opts.keepalive_ms = rpc_keepalive_ms(ch->opts.keepalive_ms, RPC_DEFAULT_KEEPALIVE_MS);

    grpc_arg args[7];
    size_t n = 0;
    rpc_arg_int(args, &n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)ch->opts.max_message_bytes);
    rpc_arg_int(args, &n, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)ch->opts.max_message_bytes);
    if (ch->opts.own_connection)
        rpc_arg_int(args, &n, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    rpc_args_keepalive(args, &n, ch->opts.keepalive_ms); /* Subscribe streams too */
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

void rpc_channel_reconnect_now(rpc_channel *ch) {
    grpc_channel_reset_connect_backoff(ch->grpc);
}

void *rpc_channel_method(rpc_channel *ch, const char *method) {
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

void rpc_result_local(rpc_result *r, ps_status st, const char *details) {
    if (!r)
        return;
    r->status = st;
    r->grpc_code = rpc_code_from_status(st);
    result_set(r, r->grpc_code, details, strlen(details));
    r->status = st; /* keep the local status even where the code maps back differently */
}

void rpc_result_from_call(rpc_result *r, grpc_status_code code, grpc_slice details) {
    result_set(r, code, (const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
}

void rpc_initial_md_op(const rpc_call_opts *opts, grpc_metadata *md, grpc_op *op) {
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

#define PENDING_STACK_MD 8 /* metadata entries kept in the call itself */

/* One unary call in flight: its batch of six ops and what they fill. */
struct rpc_pending {
    rpc_channel *channel;
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_byte_buffer *request, *response;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code code;
    grpc_slice details;
    grpc_metadata md_stack[PENDING_STACK_MD];
    grpc_metadata *md; /* md_stack or malloc'd */
};

static void pending_free(rpc_pending *p) {
    grpc_slice_unref(p->details);
    grpc_metadata_array_destroy(&p->initial_md);
    grpc_metadata_array_destroy(&p->trailing_md);
    if (p->request)
        grpc_byte_buffer_destroy(p->request);
    if (p->response)
        grpc_byte_buffer_destroy(p->response);
    if (p->call)
        grpc_call_unref(p->call);
    if (p->cq)
        cq_put(p->channel, p->cq); /* every event was plucked */
    if (p->md != p->md_stack)
        free(p->md);
    free(p);
}

/* Starts one unary call with an encoded request (taken, whatever happens). */
static ps_status pending_start(rpc_channel *ch, const char *method, grpc_byte_buffer *req,
                               const rpc_call_opts *opts, rpc_pending **ret, rpc_result *r) {
    void *h = rpc_channel_method(ch, method);
    size_t n_md = opts ? opts->n_metadata : 0;
    rpc_pending *p = req && h ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        if (req)
            grpc_byte_buffer_destroy(req);
        rpc_result_local(r, PS_STATUS_NO_MEMORY, "out of memory preparing the call");
        return PS_STATUS_NO_MEMORY;
    }
    p->channel = ch;
    p->request = req;
    p->details = grpc_empty_slice();
    grpc_metadata_array_init(&p->initial_md);
    grpc_metadata_array_init(&p->trailing_md);
    p->md = n_md > PENDING_STACK_MD ? malloc(n_md * sizeof *p->md) : p->md_stack;
    if (!p->md) {
        p->md = p->md_stack;
        pending_free(p);
        rpc_result_local(r, PS_STATUS_NO_MEMORY, "out of memory preparing the call");
        return PS_STATUS_NO_MEMORY;
    }
    p->cq = cq_get(ch);
    gpr_timespec deadline = rpc_deadline_after_ms(opts ? opts->timeout_ms : 0);
    p->call = grpc_channel_create_registered_call(ch->grpc, NULL, GRPC_PROPAGATE_DEFAULTS, p->cq, h,
                                                  deadline, NULL);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    rpc_initial_md_op(opts, p->md, &ops[0]);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &p->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &p->response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &p->trailing_md;
    ops[5].data.recv_status_on_client.status = &p->code;
    ops[5].data.recv_status_on_client.status_details = &p->details;
    if (grpc_call_start_batch(p->call, ops, 6, p, NULL) != GRPC_CALL_OK) {
        pending_free(p); /* nothing to pluck: the batch never started */
        rpc_result_local(r, PS_STATUS_INTERNAL, "could not start the call");
        return PS_STATUS_INTERNAL;
    }
    *ret = p;
    return PS_STATUS_OK;
}

/* Waits for the call and frees it; on OK *ret_bb (may be NULL) gets the response. Polls
 * first while the channel's waits have been short (RPC_DEFAULT_CLIENT_SPIN_US). */
static ps_status pending_wait(rpc_pending *p, grpc_byte_buffer **ret_bb, rpc_result *r) {
    rpc_channel *ch = p->channel;
    int64_t t0 = rpc_now_us(), avg = atomic_load(&ch->unary_wait_us);
    int spin = avg < 2 * (int64_t)ch->unary_spin_us ? ch->unary_spin_us : 0;
    rpc_cq_wait(p->cq, p, gpr_inf_future(GPR_CLOCK_MONOTONIC), spin);
    int64_t took = rpc_now_us() - t0; /* a racing update may be lost: it is an estimate */
    atomic_store(&ch->unary_wait_us, avg + (took - avg) / 8);
    rpc_result_from_call(r, p->code, p->details);
    ps_status st = rpc_status_from_code(p->code);
    if (st == PS_STATUS_OK) {
        *ret_bb = p->response;
        p->response = NULL;
    }
    pending_free(p);
    return st;
}

ps_status rpc_call_start(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                         const rpc_bytes_field *extra, size_t n_extra, const rpc_call_opts *opts,
                         rpc_pending **ret_pending, rpc_result *ret_result) {
    return pending_start(ch, method, rpc_encode(request, extra, n_extra), opts, ret_pending,
                         ret_result);
}

ps_status rpc_pending_finish(rpc_pending *p, const ProtobufCMessageDescriptor *response_type,
                             uint32_t raw_field, ProtobufCMessage **ret_response,
                             rpc_received **ret_received, rpc_result *ret_result) {
    grpc_byte_buffer *bb = NULL;
    ps_status st = pending_wait(p, &bb, ret_result);
    if (st != PS_STATUS_OK)
        return st;
    rpc_received *received = NULL;
    ProtobufCMessage *m = raw_field ? rpc_decode_split(bb, response_type, raw_field, &received)
                                    : rpc_decode(bb, response_type);
    if (bb && (!raw_field || !m)) /* on success a split decode keeps the buffer */
        grpc_byte_buffer_destroy(bb);
    if (!m) {
        rpc_result_local(ret_result, PS_STATUS_PARSE, "malformed response from the server");
        return PS_STATUS_PARSE;
    }
    *ret_response = m;
    if (raw_field)
        *ret_received = received;
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
    rpc_pending *p = NULL;
    ps_status st = rpc_call_start(ch, method, request, extra, n_extra, opts, &p, ret_result);
    return st != PS_STATUS_OK
               ? st
               : rpc_pending_finish(p, response_type, 0, ret_response, NULL, ret_result);
}

ps_status rpc_call_split(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                         const rpc_bytes_field *extra, size_t n_extra,
                         const ProtobufCMessageDescriptor *response_type, uint32_t raw_field,
                         const rpc_call_opts *opts, ProtobufCMessage **ret_response,
                         rpc_received **ret_received, rpc_result *ret_result) {
    rpc_pending *p = NULL;
    ps_status st = rpc_call_start(ch, method, request, extra, n_extra, opts, &p, ret_result);
    return st != PS_STATUS_OK ? st
                              : rpc_pending_finish(p, response_type, raw_field, ret_response,
                                                   ret_received, ret_result);
}

ps_status rpc_call_raw(rpc_channel *ch, const char *method, const void *data, size_t len,
                       const rpc_call_opts *opts, void **ret_data, size_t *ret_len,
                       rpc_result *ret_result) {
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    rpc_pending *p = NULL;
    grpc_byte_buffer *bb = NULL;
    ps_status st = pending_start(ch, method, req, opts, &p, ret_result);
    if (st == PS_STATUS_OK)
        st = pending_wait(p, &bb, ret_result);
    if (st != PS_STATUS_OK)
        return st;
    st = rpc_flatten(bb, ret_data, ret_len);
    if (bb)
        grpc_byte_buffer_destroy(bb);
    if (st != PS_STATUS_OK)
        rpc_result_local(ret_result, st, "out of memory reading the response");
    return st;
}
