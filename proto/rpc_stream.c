/* rpc_stream.c: server-streaming calls on the client side (see rpc.h). A stream keeps
 * a completion queue of its own for its life: the opening batch (request, close,
 * initial metadata) and the final status are requested at once, then each
 * rpc_stream_next asks for one message and plucks it. */
#include <stdlib.h>
#include <string.h>

#include <grpc/support/time.h>

#include "rpc_internal.h"

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

ps_status rpc_stream_open(rpc_channel *ch, const char *method, const ProtobufCMessage *request,
                          const ProtobufCMessageDescriptor *response_type,
                          const rpc_call_opts *opts, rpc_stream **ret_stream) {
    void *h = rpc_channel_method(ch, method);
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
    rpc_initial_md_op(opts, md_stack, &ops[0]);
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
    rpc_result_from_call(&s->result, s->code, s->details);
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
        rpc_result_local(&s->result, PS_STATUS_PARSE, "malformed stream message from the server");
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
