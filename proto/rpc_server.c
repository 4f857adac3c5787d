/* rpc_server.c: the gRPC core server behind rpc.h.
 *
 The workers share one completion queue (both the calls' bound queue and the
 * notification queue) on which, per worker, a few calls per registered method are
 * requested, plus one request for unregistered methods (answered UNIMPLEMENTED, else
 * such calls would hang until their deadline). On a new call a worker re-arms first,
 * then handles. One shared queue rather than one per thread: with a queue per thread
 * an event often woke a thread other than the one polling (two wake-ups, ~2.5x the
 * round trip on 2 cores); call state is locked, so any worker may take any event.
 *
 * A call context carries its own tags (a call may have several batches in flight)
 * and a pending count; whoever brings the count to zero frees it. The server counts
 * live contexts: queues are shut down only when that count is zero, because starting
 * a batch on a shut-down queue aborts the process.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <grpc/grpc_security.h>

#include "rpc_internal.h"

#define ARMED_PER_METHOD 2 /* calls requested per method per worker */

typedef enum tag_kind {
    TAG_NEW_CALL,  /* a requested call arrived (or the request was cancelled) */
    TAG_UNARY_OPS, /* the one batch of a unary call completed */
    TAG_CLOSE,     /* RECV_CLOSE_ON_SERVER of a stream completed: the client is gone */
    TAG_WRITE,     /* one stream message was sent */
    TAG_FINISH,    /* the status of a stream was sent */
} tag_kind;

typedef struct worker worker;
typedef struct method_entry method_entry;

typedef struct call_tag {
    tag_kind kind;
    struct rpc_ctx *ctx;
} call_tag;

struct rpc_ctx {
    rpc_server *server;
    worker *worker;
    method_entry *method; /* NULL: a call to an unregistered method */

    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* only for unregistered calls */

    call_tag tag_new, tag_ops, tag_close, tag_write, tag_finish;

    /* reply (unary) */
    grpc_byte_buffer *reply;
    grpc_status_code code;
    char *status_details; /* malloc'd or NULL */
    grpc_slice details_slice;
    grpc_metadata_array trailing_md; /* empty; kept for SEND_STATUS */
    int recv_cancelled;

    /* metadata values handed to the handler, freed with the call */
    char **md_copies;
    size_t n_md_copies;

    /* stream state, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending; /* batches in flight + a running stream handler */
    bool initial_md_sent;
    bool write_in_flight;
    bool write_ok;
    bool dead; /* client went away or call cancelled */
    grpc_byte_buffer *write_bb;
    ProtobufCMessage *request; /* for stream and deferred handlers, freed with the call */
    rpc_received *received;    /* the request's raw field views, when the method has one */
    bool deferred;             /* rpc_ctx_defer: answered by rpc_ctx_complete */
    /* a deferred call, under lock: the handler has returned (handle_unary is done with
     * the call); rpc_ctx_complete was called, with this status */
    bool handler_returned, completed;
    ps_status complete_status;
};

struct method_entry {
    rpc_method m;
    void *registered; /* grpc_server_register_method handle */
};

struct worker {
    rpc_server *server;
    grpc_completion_queue *cq; /* the server's one queue */
    pthread_t thread;
    bool started;
};

struct rpc_server {
    rpc_server_opts opts;
    char *listen;
    grpc_server *grpc;
    method_entry *methods;
    size_t n_methods, cap_methods;
    worker *workers;
    int n_workers;
    /* One more worker on a queue of its own, which never runs a handler: it dispatches
     * the methods that run on threads of their own (RPC_METHOD_UNARY_OWN_THREAD), so
     * workers all blocked in handlers cannot keep their calls from starting, and it
     * keeps polling the connections meanwhile (keepalive pings get answered). */
    grpc_completion_queue *side_cq;
    worker side;
    bool started;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool shutting_down;        /* no re-arming; streams see !alive */
    bool cancelling;           /* the grace period is over: every handler sees !alive */
    bool shut_down;            /* rpc_server_shutdown finished */
    int live;                  /* call contexts that exist */
    int streams;               /* stream handlers running (opts.max_streams at most) */
    grpc_completion_queue *cq; /* shared by every worker */
    atomic_bool spinner;       /* a worker is polling the queue without blocking */
    grpc_completion_queue *shutdown_cq;
};

/* ---------------------------------------------------------------- call contexts --- */

static rpc_ctx *ctx_new(rpc_server *s, worker *w, method_entry *m) {
    rpc_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->server = s;
    c->worker = w;
    c->method = m;
    grpc_metadata_array_init(&c->request_md);
    grpc_metadata_array_init(&c->trailing_md);
    grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->tag_new = (call_tag){TAG_NEW_CALL, c};
    c->tag_ops = (call_tag){TAG_UNARY_OPS, c};
    c->tag_close = (call_tag){TAG_CLOSE, c};
    c->tag_write = (call_tag){TAG_WRITE, c};
    c->tag_finish = (call_tag){TAG_FINISH, c};
    c->details_slice = grpc_empty_slice();
    pthread_mutex_lock(&s->lock);
    s->live++;
    pthread_mutex_unlock(&s->lock);
    return c;
}

static void ctx_free(rpc_ctx *c) {
    rpc_server *s = c->server;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->request_md);
    grpc_metadata_array_destroy(&c->trailing_md);
    grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
    if (c->write_bb)
        grpc_byte_buffer_destroy(c->write_bb);
    if (c->request)
        protobuf_c_message_free_unpacked(c->request, NULL);
    rpc_received_free(c->received);
    grpc_slice_unref(c->details_slice);
    free(c->status_details);
    for (size_t i = 0; i < c->n_md_copies; i++)
        free(c->md_copies[i]);
    free(c->md_copies);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
    pthread_mutex_lock(&s->lock);
    if (--s->live == 0)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Drops one pending reference; frees the context at zero. */
static void ctx_release(rpc_ctx *c) {
    pthread_mutex_lock(&c->lock);
    int left = --c->pending;
    pthread_mutex_unlock(&c->lock);
    if (left == 0)
        ctx_free(c);
}

/* Requests the next call for `m` (NULL: unregistered) on worker `w`. False when the
 * server is shutting down or the request failed. */
static bool arm(rpc_server *s, worker *w, method_entry *m) {
    pthread_mutex_lock(&s->lock);
    bool stop = s->shutting_down;
    pthread_mutex_unlock(&s->lock);
    if (stop)
        return false;
    rpc_ctx *c = ctx_new(s, w, m);
    if (!c)
        return false;
    c->pending = 1;
    grpc_call_error err;
    if (m) {
        err = grpc_server_request_registered_call(s->grpc, m->registered, &c->call, &c->deadline,
                                                  &c->request_md, &c->payload, w->cq, w->cq,
                                                  &c->tag_new);
    } else {
        err = grpc_server_request_call(s->grpc, &c->call, &c->details, &c->request_md, w->cq, w->cq,
                                       &c->tag_new);
    }
    if (err != GRPC_CALL_OK) {
        ctx_free(c);
        return false;
    }
    return true;
}

static void set_details(rpc_ctx *c, const char *text) {
    free(c->status_details);
    c->status_details = text ? strdup(text) : NULL;
}

/* Fills `op` with SEND_STATUS_FROM_SERVER from the context's code and details. */
static void status_op(rpc_ctx *c, grpc_op *op) {
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.trailing_metadata_count = 0;
    op->data.send_status_from_server.trailing_metadata = NULL;
    op->data.send_status_from_server.status = c->code;
    grpc_slice_unref(c->details_slice);
    c->details_slice =
        c->status_details ? grpc_slice_from_copied_string(c->status_details) : grpc_empty_slice();
    op->data.send_status_from_server.status_details = c->status_details ? &c->details_slice : NULL;
}

/* Sends the final batch of a unary call (or of an unregistered one). */
static void unary_finish(rpc_ctx *c) {
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (c->code == GRPC_STATUS_OK && c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    status_op(c, &ops[n++]);
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->recv_cancelled;
    n++;
    c->pending = 1;
    if (grpc_call_start_batch(c->call, ops, n, &c->tag_ops, NULL) != GRPC_CALL_OK)
        ctx_free(c); /* cannot happen with a well-formed batch; never leak the context */
}

/* A reply finished after the deadline is of no use to the client, whose own timer
 * fires at about the same time: answer DEADLINE_EXCEEDED, the same either way. */
static void deadline_override(rpc_ctx *c) {
    if (rpc_ctx_deadline_ms(c) > 0)
        return;
    c->code = GRPC_STATUS_DEADLINE_EXCEEDED;
    set_details(c, "deadline exceeded before the call completed");
}

/* Unpacks the request; a method with a raw field gets its views kept in the call. */
static ProtobufCMessage *decode_request(rpc_ctx *c) {
    const rpc_method *m = &c->method->m;
    if (!m->raw_field)
        return rpc_decode(c->payload, m->request);
    ProtobufCMessage *msg = rpc_decode_split(c->payload, m->request, m->raw_field, &c->received);
    if (msg)
        c->payload = NULL; /* c->received holds it now */
    return msg;
}

static void stream_slot_release(rpc_server *s);

/* The call's status from its handler's outcome (returned, or given to rpc_ctx_complete). */
static void set_outcome(rpc_ctx *c, ps_status st) {
    if (st != PS_STATUS_OK) {
        c->code = (grpc_status_code)rpc_code_from_status(st);
        if (!c->status_details)
            set_details(c, ps_status_str(st));
    } else if (!c->reply) {
        c->code = GRPC_STATUS_INTERNAL;
        set_details(c, "handler returned OK without a reply");
    }
}

/* Answers a deferred call with the status rpc_ctx_complete gave. */
static void finish_deferred(rpc_ctx *c) {
    set_outcome(c, c->complete_status);
    deadline_override(c);
    unary_finish(c);
}

static void handle_unary(rpc_ctx *c) {
    method_entry *m = c->method;
    bool sent = c->payload != NULL;
    ProtobufCMessage *req = sent ? decode_request(c) : NULL;
    c->code = GRPC_STATUS_OK;
    if (!sent) { /* the client half-closed without sending a request */
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        set_details(c, "no request message: a unary call takes exactly one");
    } else if (!req) {
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        char msg[256];
        snprintf(msg, sizeof msg, "malformed request: cannot parse the payload as %s",
                 m->m.request->name);
        set_details(c, msg);
    } else {
        ps_status st = m->m.handler(c, req, m->m.user);
        if (c->deferred && m->m.kind == RPC_METHOD_UNARY) { /* rpc_ctx_complete answers */
            pthread_mutex_lock(&c->lock);
            c->request = req; /* kept, with c->received, until the call ends */
            c->handler_returned = true;
            bool early = c->completed; /* completed before the handler returned */
            pthread_mutex_unlock(&c->lock);
            if (early)
                finish_deferred(c);
            return;
        }
        protobuf_c_message_free_unpacked(req, NULL);
        rpc_received_free(c->received); /* the request's bytes are no longer needed: */
        c->received = NULL;             /* give them back before the reply goes out */
        if (c->payload)
            grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        set_outcome(c, st);
    }
    deadline_override(c);
    if (m->m.kind == RPC_METHOD_UNARY_OWN_THREAD) /* before the call (and c) can end */
        stream_slot_release(c->server);
    unary_finish(c);
}

/* ---------------------------------------------------------------- streams --- */

/* A stream holds a thread for its whole life: their number is bounded, and a call
 * past the bound is refused before anything is allocated for it. */
static bool stream_slot_take(rpc_server *s) {
    pthread_mutex_lock(&s->lock);
    bool ok = s->streams < s->opts.max_streams;
    if (ok)
        s->streams++;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void stream_slot_release(rpc_server *s) {
    pthread_mutex_lock(&s->lock);
    s->streams--;
    pthread_mutex_unlock(&s->lock);
}

static void *stream_thread(void *arg) {
    rpc_ctx *c = arg;
    method_entry *m = c->method;
    ps_status st = m->m.handler(c, c->request, m->m.user);
    stream_slot_release(c->server);

    pthread_mutex_lock(&c->lock);
    while (c->write_in_flight)
        pthread_cond_wait(&c->cond, &c->lock);
    if (st == PS_STATUS_OK) {
        c->code = GRPC_STATUS_OK;
    } else {
        c->code = (grpc_status_code)rpc_code_from_status(st);
        if (!c->status_details)
            set_details(c, ps_status_str(st));
    }
    deadline_override(c);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    status_op(c, &ops[n++]);
    c->pending++; /* the finish batch */
    if (grpc_call_start_batch(c->call, ops, n, &c->tag_finish, NULL) != GRPC_CALL_OK)
        c->pending--;
    int left = --c->pending; /* this handler is done */
    pthread_mutex_unlock(&c->lock);
    if (left == 0)
        ctx_free(c);
    return NULL;
}

static void *unary_thread(void *arg) {
    handle_unary(arg); /* it gives the slot back */
    return NULL;
}

/* A unary call on a thread of its own (RPC_METHOD_UNARY_OWN_THREAD): the thread is
 * counted with the streams; without a slot or a thread the call is answered at once. */
static void handle_unary_own_thread(rpc_ctx *c) {
    if (!stream_slot_take(c->server)) {
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        char msg[256];
        snprintf(msg, sizeof msg,
                 "this server already has %d calls holding threads, its limit: retry later",
                 c->server->opts.max_streams);
        set_details(c, msg);
        unary_finish(c);
        return;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, unary_thread, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        stream_slot_release(c->server);
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        set_details(c, "server cannot start a thread for the call");
        unary_finish(c);
    }
}

static void handle_stream(rpc_ctx *c) {
    method_entry *m = c->method;
    if (!c->payload) {
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        set_details(c, "no request message: a server-streaming call takes exactly one");
        unary_finish(c);
        return;
    }
    if (!stream_slot_take(c->server)) {
        c->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        char msg[256];
        snprintf(msg, sizeof msg,
                 "this server already has %d streams open, its limit: close some or retry later",
                 c->server->opts.max_streams);
        set_details(c, msg);
        unary_finish(c);
        return;
    }
    c->request = decode_request(c);
    if (!c->request) {
        stream_slot_release(c->server);
        c->code = GRPC_STATUS_INVALID_ARGUMENT;
        char msg[256];
        snprintf(msg, sizeof msg, "malformed request: cannot parse the payload as %s",
                 m->m.request->name);
        set_details(c, msg);
        unary_finish(c);
        return;
    }
    /* Send the headers now (a client waiting for them learns the stream is open even
     * when the first message is far off), and watch for the client going away while
     * the handler runs. */
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &c->recv_cancelled;
    c->initial_md_sent = true;
    c->pending = 2; /* the close batch + the handler thread */
    if (grpc_call_start_batch(c->call, ops, 2, &c->tag_close, NULL) != GRPC_CALL_OK) {
        stream_slot_release(c->server);
        ctx_free(c);
        return;
    }
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, stream_thread, c) != 0) {
        /* No thread: answer at once from here. */
        pthread_attr_destroy(&attr);
        stream_slot_release(c->server);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "server cannot start a stream thread", NULL);
        ctx_release(c);
        return;
    }
    pthread_attr_destroy(&attr);
}

static ps_status ctx_write(rpc_ctx *c, grpc_byte_buffer *bb) {
    if (!bb)
        return PS_STATUS_NO_MEMORY;
    pthread_mutex_lock(&c->lock);
    while (c->write_in_flight && !c->dead)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_lock(&c->server->lock);
    bool stopping = c->server->shutting_down;
    pthread_mutex_unlock(&c->server->lock);
    if (c->dead || stopping) {
        pthread_mutex_unlock(&c->lock);
        grpc_byte_buffer_destroy(bb);
        return PS_STATUS_CANCELLED;
    }
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    c->write_bb = bb;
    c->write_in_flight = true;
    c->pending++;
    if (grpc_call_start_batch(c->call, ops, n, &c->tag_write, NULL) != GRPC_CALL_OK) {
        c->pending--;
        c->write_in_flight = false;
        c->write_bb = NULL;
        c->dead = true;
        pthread_mutex_unlock(&c->lock);
        grpc_byte_buffer_destroy(bb);
        return PS_STATUS_CANCELLED;
    }
    while (c->write_in_flight)
        pthread_cond_wait(&c->cond, &c->lock);
    bool ok = c->write_ok;
    pthread_mutex_unlock(&c->lock);
    return ok ? PS_STATUS_OK : PS_STATUS_CANCELLED;
}

/* ---------------------------------------------------------------- worker loop --- */

static void on_new_call(rpc_ctx *c, bool ok) {
    rpc_server *s = c->server;
    if (!ok) { /* the request was cancelled: the server is shutting down */
        ctx_release(c);
        return;
    }
    arm(s, c->worker, c->method); /* re-arm first, then handle */
    if (!c->method) {
        c->code = GRPC_STATUS_UNIMPLEMENTED;
        char *method = grpc_slice_to_c_string(c->details.method);
        char msg[300];
        snprintf(msg, sizeof msg, "unknown method %s", method);
        gpr_free(method);
        set_details(c, msg);
        unary_finish(c);
        return;
    }
    if (c->method->m.kind == RPC_METHOD_UNARY)
        handle_unary(c);
    else if (c->method->m.kind == RPC_METHOD_UNARY_OWN_THREAD)
        handle_unary_own_thread(c);
    else
        handle_stream(c);
}

static void dispatch(grpc_event ev) {
    call_tag *t = ev.tag;
    rpc_ctx *c = t->ctx;
    switch (t->kind) {
    case TAG_NEW_CALL:
        on_new_call(c, ev.success);
        break;
    case TAG_UNARY_OPS:
        ctx_release(c);
        break;
    case TAG_CLOSE:
        pthread_mutex_lock(&c->lock);
        c->dead = true; /* after RECV_CLOSE nothing more can be sent usefully */
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        ctx_release(c);
        break;
    case TAG_WRITE:
        pthread_mutex_lock(&c->lock);
        c->write_in_flight = false;
        c->write_ok = ev.success;
        if (!ev.success)
            c->dead = true;
        if (c->write_bb) {
            grpc_byte_buffer_destroy(c->write_bb);
            c->write_bb = NULL;
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        ctx_release(c);
        break;
    case TAG_FINISH:
        ctx_release(c);
        break;
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    rpc_server *s = w->server;
    int spin = w == &s->side ? 0 : s->opts.spin_us; /* the side worker only dispatches */
    for (;;) {
        /* At most one worker spins at a time: more spinners than cores would steal the
         * CPU from the threads doing work. The others block at once. */
        grpc_event ev = {.type = GRPC_QUEUE_TIMEOUT};
        if (spin > 0 && !atomic_exchange(&s->spinner, true)) {
            ev = rpc_cq_wait(w->cq, NULL, gpr_inf_past(GPR_CLOCK_MONOTONIC), spin);
            atomic_store(&s->spinner, false);
        }
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(ev);
    }
    return NULL;
}

/* ---------------------------------------------------------------- public API --- */

ps_status rpc_server_create(const rpc_server_opts *opts, rpc_server **ret_server) {
    if (!opts || !opts->listen || !*opts->listen)
        return PS_STATUS_INVALID_ARGUMENT;
    rpc_server *s = calloc(1, sizeof *s);
    if (!s)
        return PS_STATUS_NO_MEMORY;
    s->opts = *opts;
    s->listen = strdup(opts->listen);
    if (!s->listen) {
        free(s);
        return PS_STATUS_NO_MEMORY;
    }
    s->opts.listen = s->listen;
    if (s->opts.threads <= 0)
        s->opts.threads = rpc_cpu_count();
    if (s->opts.max_message_bytes == 0)
        s->opts.max_message_bytes = RPC_DEFAULT_MAX_MESSAGE_BYTES;
    if (s->opts.max_message_bytes > INT32_MAX)
        s->opts.max_message_bytes = INT32_MAX;
    if (s->opts.grace_ms == 0)
        s->opts.grace_ms = RPC_DEFAULT_GRACE_MS;
    if (s->opts.spin_us == 0)
        s->opts.spin_us = RPC_DEFAULT_SPIN_US;
    if (s->opts.max_streams <= 0)
        s->opts.max_streams = RPC_DEFAULT_MAX_STREAMS;
    s->opts.keepalive_ms = rpc_keepalive_ms(s->opts.keepalive_ms, RPC_DEFAULT_SERVER_KEEPALIVE_MS);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    rpc_library_ref();

    grpc_arg args[6];
    size_t n = 0;
    rpc_arg_int(args, &n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)s->opts.max_message_bytes);
    rpc_arg_int(args, &n, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)s->opts.max_message_bytes);
    /* our clients' keepalive pings (RPC_DEFAULT_KEEPALIVE_MS) */
    rpc_arg_int(args, &n, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                RPC_MIN_KEEPALIVE_MS / 2);
    rpc_args_keepalive(args, &n, s->opts.keepalive_ms); /* and ours */
    grpc_channel_args chargs = {n, args};
    s->grpc = grpc_server_create(&chargs, NULL);
    if (!s->grpc) {
        rpc_server_destroy(s);
        return PS_STATUS_INTERNAL;
    }
    *ret_server = s;
    return PS_STATUS_OK;
}

ps_status rpc_server_add_method(rpc_server *s, const rpc_method *m) {
    if (!s || !m || !m->name || m->name[0] != '/' || !m->request || !m->handler)
        return PS_STATUS_INVALID_ARGUMENT;
    if (m->kind != RPC_METHOD_UNARY && m->kind != RPC_METHOD_SERVER_STREAM &&
        m->kind != RPC_METHOD_UNARY_OWN_THREAD)
        return PS_STATUS_INVALID_ARGUMENT;
    if (s->started)
        return PS_STATUS_FAILED_PRECONDITION;
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].m.name, m->name) == 0)
            return PS_STATUS_ALREADY_EXISTS;
    if (s->n_methods == s->cap_methods) {
        size_t cap = s->cap_methods ? 2 * s->cap_methods : 16;
        method_entry *grown = realloc(s->methods, cap * sizeof *grown);
        if (!grown)
            return PS_STATUS_NO_MEMORY;
        s->methods = grown;
        s->cap_methods = cap;
    }
    void *h = grpc_server_register_method(s->grpc, m->name, NULL,
                                          GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!h)
        return PS_STATUS_ALREADY_EXISTS;
    s->methods[s->n_methods].m = *m;
    s->methods[s->n_methods].registered = h;
    s->n_methods++;
    return PS_STATUS_OK;
}

ps_status rpc_server_start(rpc_server *s, int *ret_port) {
    if (!s || s->started)
        return PS_STATUS_FAILED_PRECONDITION;
    s->workers = calloc((size_t)s->opts.threads, sizeof *s->workers);
    if (!s->workers)
        return PS_STATUS_NO_MEMORY;
    s->n_workers = s->opts.threads;
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->grpc, s->cq, NULL);
    for (int i = 0; i < s->n_workers; i++) {
        s->workers[i].server = s;
        s->workers[i].cq = s->cq;
    }
    /* The side worker, on every server: it runs no handler, so some thread always
     * polls and keepalive pings (ours and our clients') are answered while every worker
     * runs a long handler; without it a client's pings time out and its calls fail
     * UNAVAILABLE (test_rpc_process). */
    s->side_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->grpc, s->side_cq, NULL);
    s->side = (worker){.server = s, .cq = s->side_cq};
    s->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->grpc, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0)
        return PS_STATUS_UNAVAILABLE; /* destroy cleans up the queues */
    grpc_server_start(s->grpc);
    s->started = true;
    for (int i = -1; i < s->n_workers; i++) {
        worker *w = i < 0 ? &s->side : &s->workers[i];
        for (size_t k = 0; k < s->n_methods; k++) {
            bool own = s->methods[k].m.kind == RPC_METHOD_UNARY_OWN_THREAD;
            for (int j = 0; own == (i < 0) && j < ARMED_PER_METHOD; j++)
                arm(s, w, &s->methods[k]);
        }
        if (i >= 0)
            arm(s, w, NULL);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rpc_server_shutdown(s);
            return PS_STATUS_INTERNAL;
        }
        w->started = true;
    }
    if (ret_port)
        *ret_port = port;
    return PS_STATUS_OK;
}

ps_status rpc_server_serve(const rpc_server_opts *opts, const rpc_method *methods, size_t n_methods,
                           rpc_server **ret_server, int *ret_port) {
    rpc_server *s = NULL;
    ps_status st = rpc_server_create(opts, &s);
    for (size_t i = 0; st == PS_STATUS_OK && i < n_methods; i++)
        st = rpc_server_add_method(s, &methods[i]);
    if (st == PS_STATUS_OK)
        st = rpc_server_start(s, ret_port);
    if (st != PS_STATUS_OK) {
        rpc_server_destroy(s);
        return st;
    }
    *ret_server = s;
    return PS_STATUS_OK;
}

void rpc_server_shutdown(rpc_server *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->shut_down || !s->started) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    s->shutting_down = true;
    pthread_mutex_unlock(&s->lock);

    /* Stop accepting; wait for in-flight calls up to the grace period; then cancel. */
    grpc_server_shutdown_and_notify(s->grpc, s->shutdown_cq, s);
    gpr_timespec grace = s->opts.grace_ms > 0 ? rpc_deadline_after_ms(s->opts.grace_ms)
                                              : gpr_inf_past(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_pluck(s->shutdown_cq, s, grace, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        pthread_mutex_lock(&s->lock);
        s->cancelling = true;
        pthread_mutex_unlock(&s->lock);
        grpc_server_cancel_all_calls(s->grpc);
        grpc_completion_queue_pluck(s->shutdown_cq, s, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    /* The shutdown tag does not mean every handler is done: wait for the contexts. */
    pthread_mutex_lock(&s->lock);
    while (s->live > 0)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);

    grpc_completion_queue_shutdown(s->cq);
    if (s->side_cq)
        grpc_completion_queue_shutdown(s->side_cq);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].started)
            pthread_join(s->workers[i].thread, NULL);
    if (s->side.started)
        pthread_join(s->side.thread, NULL);
    pthread_mutex_lock(&s->lock);
    s->shut_down = true;
    pthread_mutex_unlock(&s->lock);
}

/* Drains and destroys a queue that no thread is polling. */
static void drain_destroy(grpc_completion_queue *cq) {
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(cq);
}

void rpc_server_destroy(rpc_server *s) {
    if (!s)
        return;
    rpc_server_shutdown(s);
    if (s->grpc && !s->started && s->workers) {
        /* start failed before the server ran: queues were registered, never polled */
        grpc_server_shutdown_and_notify(s->grpc, s->shutdown_cq, s);
        grpc_completion_queue_pluck(s->shutdown_cq, s, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    if (s->grpc)
        grpc_server_destroy(s->grpc);
    if (s->cq) {
        if (s->started) /* shut down and drained by the workers */
            grpc_completion_queue_destroy(s->cq);
        else
            drain_destroy(s->cq);
    }
    if (s->side_cq) {
        if (s->started)
            grpc_completion_queue_destroy(s->side_cq);
        else
            drain_destroy(s->side_cq);
    }
    if (s->shutdown_cq) { /* a pluck queue whose only event was plucked */
        grpc_completion_queue_shutdown(s->shutdown_cq);
        grpc_completion_queue_destroy(s->shutdown_cq);
    }
    free(s->workers);
    free(s->methods);
    free(s->listen);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
    rpc_library_unref();
}

/* ---------------------------------------------------------------- handler API --- */

ps_status rpc_ctx_reply(rpc_ctx *c, const ProtobufCMessage *response) {
    return rpc_ctx_reply_with_bytes(c, response, NULL, 0);
}

ps_status rpc_ctx_reply_with_bytes(rpc_ctx *c, const ProtobufCMessage *response,
                                   const rpc_bytes_field *extra, size_t n_extra) {
    if (c->reply) {
        grpc_byte_buffer_destroy(c->reply);
        c->reply = NULL;
    }
    c->reply = rpc_encode(response, extra, n_extra);
    return c->reply ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

void rpc_ctx_defer(rpc_ctx *c) {
    c->deferred = true;
}

void rpc_ctx_complete(rpc_ctx *c, ps_status st) {
    pthread_mutex_lock(&c->lock);
    c->completed = true;
    c->complete_status = st;
    bool now = c->handler_returned; /* else handle_unary answers when the handler returns */
    pthread_mutex_unlock(&c->lock);
    if (now)
        finish_deferred(c);
}

ps_status rpc_ctx_error(rpc_ctx *c, ps_status status, const char *fmt, ...) {
    char buf[RPC_DETAILS_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    set_details(c, buf);
    return status;
}

ps_status rpc_ctx_write(rpc_ctx *c, const ProtobufCMessage *message) {
    return ctx_write(c, rpc_encode(message, NULL, 0));
}

ps_status rpc_ctx_write_with_bytes(rpc_ctx *c, const ProtobufCMessage *message,
                                   const rpc_bytes_field *extra, size_t n_extra) {
    return ctx_write(c, rpc_encode(message, extra, n_extra));
}

ps_status rpc_ctx_write_packed(rpc_ctx *c, const void *data, size_t len, void (*release)(void *arg),
                               void *arg) {
    rpc_bytes_part part = {.data = data, .len = len, .release = release, .arg = arg};
    return ctx_write(c, rpc_encode_packed(&part));
}

bool rpc_ctx_alive(rpc_ctx *c) {
    pthread_mutex_lock(&c->server->lock);
    bool stopping = c->server->shutting_down, cancelling = c->server->cancelling;
    pthread_mutex_unlock(&c->server->lock);
    if (cancelling || (stopping && c->method && c->method->m.kind == RPC_METHOD_SERVER_STREAM))
        return false;
    pthread_mutex_lock(&c->lock);
    bool dead = c->dead;
    pthread_mutex_unlock(&c->lock);
    return !dead && rpc_ctx_deadline_ms(c) > 0;
}

int64_t rpc_ctx_deadline_ms(const rpc_ctx *c) {
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec now = gpr_now(c->deadline.clock_type);
    gpr_timespec left = gpr_time_sub(c->deadline, now);
    return gpr_time_to_millis(left);
}

const char *rpc_ctx_metadata(rpc_ctx *c, const char *key) {
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *md = &c->request_md.metadata[i];
        if (GRPC_SLICE_LENGTH(md->key) != klen ||
            memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) != 0)
            continue;
        size_t vlen = GRPC_SLICE_LENGTH(md->value);
        char *copy = malloc(vlen + 1);
        char **grown = realloc(c->md_copies, (c->n_md_copies + 1) * sizeof *grown);
        if (!copy || !grown) {
            free(copy);
            if (grown)
                c->md_copies = grown;
            return NULL;
        }
        c->md_copies = grown;
        memcpy(copy, GRPC_SLICE_START_PTR(md->value), vlen);
        copy[vlen] = '\0';
        c->md_copies[c->n_md_copies++] = copy;
        return copy;
    }
    return NULL;
}

size_t rpc_ctx_raw(const rpc_ctx *c, const rpc_bytes_view **ret_views) {
    return rpc_received_views(c->received, ret_views);
}

size_t rpc_ctx_raw_pieces(const rpc_ctx *c, const rpc_bytes_pieces **ret_fields) {
    return rpc_received_pieces(c->received, ret_fields);
}

const char *rpc_ctx_method(const rpc_ctx *c) {
    return c->method ? c->method->m.name : "";
}
