/* testsvc_impl.c: handlers of the rpc test service (see testsvc_impl.h). Each one
 * exercises one feature of the layer: Echo (reply, errors, metadata, deadlines, large
 * replies), Count (server streaming, cancellation), Sleep (in-flight calls during
 * shutdown), Stats (what the handlers saw, so tests can check the server side). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#include "testsvc.pb-c.h"
#include "testsvc_impl.h"

static atomic_ulong streams_started, streams_ended_dead, streams_completed, sleeps_interrupted;

static void sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ps_status code_by_name(const char *name) {
    for (int st = 0; st >= PS_STATUS_WRONG_EPOCH; st--)
        if (strcmp(rpc_code_name(rpc_code_from_status((ps_status)st)), name) == 0)
            return (ps_status)st;
    return PS_STATUS_INTERNAL;
}

/* A deferred Echo's answer: after later_ms, from a thread of its own. It reads the
 * request again first: the call keeps it until completed (ASan sees any use after free). */
typedef struct later {
    rpc_ctx *ctx;
    const Pstest__EchoRequest *req;
    char *text; /* a copy of req->text, to compare */
} later;

static void *answer_later(void *arg) {
    later *l = arg;
    sleep_ms(l->req->later_ms);
    ps_status st = PS_STATUS_OK;
    if (strcmp(l->req->text, l->text) != 0)
        st = rpc_ctx_error(l->ctx, PS_STATUS_INTERNAL, "the request changed while deferred");
    else if (l->req->fail_code && *l->req->fail_code)
        st = rpc_ctx_error(l->ctx, code_by_name(l->req->fail_code), "%s", l->req->text);
    rpc_ctx_complete(l->ctx, st);
    free(l->text);
    free(l);
    return NULL;
}

static ps_status echo_later(rpc_ctx *ctx, const Pstest__EchoRequest *req,
                            const Pstest__EchoReply *reply) {
    later *l = calloc(1, sizeof *l);
    if (!l || !(l->text = strdup(req->text))) {
        free(l);
        return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "cannot defer");
    }
    *l = (later){ctx, req, l->text};
    ps_status st = rpc_ctx_reply(ctx, &reply->base);
    if (st != PS_STATUS_OK) {
        free(l->text);
        free(l);
        return st;
    }
    rpc_ctx_defer(ctx); /* before the handing over: the thread may complete at once */
    pthread_t t;
    if (pthread_create(&t, NULL, answer_later, l) == 0) {
        pthread_detach(t);
        return PS_STATUS_OK;
    }
    free(l->text);
    free(l);
    rpc_ctx_complete(ctx, rpc_ctx_error(ctx, PS_STATUS_INTERNAL, "cannot start a thread"));
    return PS_STATUS_OK;
}

static ps_status echo(rpc_ctx *ctx, const ProtobufCMessage *request, void *user) {
    (void)user;
    const Pstest__EchoRequest *req = (const Pstest__EchoRequest *)request;
    if (req->fail_code && *req->fail_code && req->later_ms == 0)
        return rpc_ctx_error(ctx, code_by_name(req->fail_code), "%s", req->text);
    Pstest__EchoReply reply = PSTEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    reply.data = req->data;
    int64_t left = rpc_ctx_deadline_ms(ctx);
    reply.deadline_ms = left == INT64_MAX ? -1 : left;
    uint8_t *big = NULL;
    if (req->reply_bytes > 0) {
        big = malloc(req->reply_bytes);
        if (!big)
            return rpc_ctx_error(ctx, PS_STATUS_RESOURCE_EXHAUSTED, "cannot allocate reply");
        memset(big, 0xab, req->reply_bytes);
        reply.data.data = big;
        reply.data.len = req->reply_bytes;
    }
    if (req->metadata_key && *req->metadata_key) {
        const char *v = rpc_ctx_metadata(ctx, req->metadata_key);
        reply.metadata_present = v != NULL;
        reply.metadata_value = v ? (char *)v : (char *)"";
    }
    ps_status st = req->later_ms ? echo_later(ctx, req, &reply) : rpc_ctx_reply(ctx, &reply.base);
    free(big);
    return st;
}

/* Echo with its `data` field (2) registered as raw: replies with the views
 * concatenated and their count as text, so tests see what the split decoder found. */
static ps_status echo_raw(rpc_ctx *ctx, const ProtobufCMessage *request, void *user) {
    (void)user;
    const Pstest__EchoRequest *req = (const Pstest__EchoRequest *)request;
    const rpc_bytes_view *views = NULL;
    size_t n = rpc_ctx_raw(ctx, &views), total = 0;
    if (req->data.len != 0)
        return rpc_ctx_error(ctx, PS_STATUS_INTERNAL, "the raw field was also unpacked");
    for (size_t i = 0; i < n; i++)
        total += views[i].len;
    uint8_t *all = malloc(total + 1);
    if (!all)
        return PS_STATUS_NO_MEMORY;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(all + off, views[i].data, views[i].len);
        off += views[i].len;
    }
    char text[32];
    snprintf(text, sizeof text, "%zu", n);
    Pstest__EchoReply reply = PSTEST__ECHO_REPLY__INIT;
    reply.text = text;
    reply.data.data = all;
    reply.data.len = total;
    ps_status st = rpc_ctx_reply(ctx, &reply.base);
    free(all);
    return st;
}

static ps_status count(rpc_ctx *ctx, const ProtobufCMessage *request, void *user) {
    (void)user;
    const Pstest__CountRequest *req = (const Pstest__CountRequest *)request;
    atomic_fetch_add(&streams_started, 1);
    for (uint32_t t = 0; t < req->first_delay_ms; t += 5) {
        if (!rpc_ctx_alive(ctx)) {
            atomic_fetch_add(&streams_ended_dead, 1);
            return PS_STATUS_CANCELLED;
        }
        sleep_ms(5);
    }
    for (uint32_t i = 0; req->count == 0 || i < req->count; i++) {
        Pstest__CountReply reply = PSTEST__COUNT_REPLY__INIT;
        reply.index = i;
        if (rpc_ctx_write(ctx, &reply.base) != PS_STATUS_OK) {
            atomic_fetch_add(&streams_ended_dead, 1);
            return PS_STATUS_CANCELLED;
        }
        /* Sleep in small steps so cancellation is noticed quickly. */
        for (uint32_t t = 0; t < req->interval_ms; t += 5) {
            if (!rpc_ctx_alive(ctx)) {
                atomic_fetch_add(&streams_ended_dead, 1);
                return rpc_ctx_error(ctx, PS_STATUS_UNAVAILABLE, "stream ended by the server");
            }
            sleep_ms(req->interval_ms - t < 5 ? req->interval_ms - t : 5);
        }
    }
    atomic_fetch_add(&streams_completed, 1);
    return PS_STATUS_OK;
}

static ps_status sleep_handler(rpc_ctx *ctx, const ProtobufCMessage *request, void *user) {
    (void)user;
    const Pstest__SleepRequest *req = (const Pstest__SleepRequest *)request;
    Pstest__SleepReply reply = PSTEST__SLEEP_REPLY__INIT;
    uint32_t t = 0;
    while (t < req->ms) {
        if (!rpc_ctx_alive(ctx)) {
            reply.interrupted = true;
            atomic_fetch_add(&sleeps_interrupted, 1);
            break;
        }
        uint32_t step = req->ms - t < 5 ? req->ms - t : 5;
        sleep_ms(step);
        t += step;
    }
    reply.slept_ms = t;
    return rpc_ctx_reply(ctx, &reply.base);
}

static ps_status stats(rpc_ctx *ctx, const ProtobufCMessage *request, void *user) {
    (void)request;
    (void)user;
    Pstest__StatsReply reply = PSTEST__STATS_REPLY__INIT;
    reply.streams_started = atomic_load(&streams_started);
    reply.streams_ended_dead = atomic_load(&streams_ended_dead);
    reply.streams_completed = atomic_load(&streams_completed);
    reply.sleeps_interrupted = atomic_load(&sleeps_interrupted);
    return rpc_ctx_reply(ctx, &reply.base);
}

ps_status testsvc_register(rpc_server *server) {
    const rpc_method methods[] = {
        {"/pstest.Test/Echo", RPC_METHOD_UNARY, &pstest__echo_request__descriptor, echo, NULL, 0},
        {"/pstest.Test/Count", RPC_METHOD_SERVER_STREAM, &pstest__count_request__descriptor, count,
         NULL, 0},
        {"/pstest.Test/Sleep", RPC_METHOD_UNARY, &pstest__sleep_request__descriptor, sleep_handler,
         NULL, 0},
        {"/pstest.Test/EchoRaw", RPC_METHOD_UNARY, &pstest__echo_request__descriptor, echo_raw,
         NULL, 2},
        {"/pstest.Test/Stats", RPC_METHOD_UNARY, &pstest__stats_request__descriptor, stats, NULL,
         0},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        ps_status st = rpc_server_add_method(server, &methods[i]);
        if (st != PS_STATUS_OK)
            return st;
    }
    return PS_STATUS_OK;
}
