/* handlers.c: the ps.Coordinator rpc handlers over a coord_ctx (see handlers.h). */
#include "handlers.h"

#include <stdio.h>
#include <stdlib.h>

#include "coordinator.pb-c.h"

/* A failed operation: its status with its message as the gRPC details. */
static ps_status fail(rpc_ctx *rpc, ps_status st, const char *err) {
    return rpc_ctx_error(rpc, st, "%s", err[0] ? err : ps_status_str(st));
}

static ps_status h_register(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__RegisterResponse resp = PS__REGISTER_RESPONSE__INIT;
    ps_status st =
        coord_node_register(user, ((const Ps__RegisterRequest *)msg)->node, &resp, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static ps_status h_heartbeat(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__HeartbeatResponse resp = PS__HEARTBEAT_RESPONSE__INIT;
    ps_status st =
        coord_node_heartbeat(user, (const Ps__HeartbeatRequest *)msg, &resp, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static ps_status h_add_node(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__MembershipResponse resp = PS__MEMBERSHIP_RESPONSE__INIT;
    const Ps__AddNodeRequest *req = (const Ps__AddNodeRequest *)msg;
    ps_status st = coord_node_add(user, req->node, req->balanced, &resp.epoch, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static ps_status h_remove_node(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    const Ps__RemoveNodeRequest *req = (const Ps__RemoveNodeRequest *)msg;
    char err[COORD_ERR_MAX] = "";
    Ps__MembershipResponse resp = PS__MEMBERSHIP_RESPONSE__INIT;
    ps_status st;
    if (req->drain && req->force) {
        snprintf(err, sizeof err,
                 "drain and force do not go together: drain moves a live shard's keys away, "
                 "force removes one that cannot be asked");
        st = PS_STATUS_INVALID_ARGUMENT;
    } else if (req->drain) {
        st = coord_node_drain(user, req->id, &resp.epoch, err, sizeof err);
    } else {
        st = coord_node_remove(user, req->id, req->force, &resp.epoch, err, sizeof err);
    }
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

/* Replies with a message the coord operation handed out, then frees it. */
static ps_status reply_owned(rpc_ctx *rpc, ps_status st, ProtobufCMessage *msg) {
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(rpc, st, "cannot build the answer: %s", ps_status_str(st));
    st = rpc_ctx_reply(rpc, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    return st;
}

static ps_status h_get_ring(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    Ps__Ring *ring = NULL;
    ps_status st = coord_ring_get(user, &ring);
    return reply_owned(rpc, st, ring ? &ring->base : NULL);
}

static ps_status h_list_models(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    Ps__ListModelsResponse *list = NULL;
    ps_status st = coord_models_list(user, &list);
    return reply_owned(rpc, st, list ? &list->base : NULL);
}

static ps_status h_status(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    Ps__StatusResponse *status = NULL;
    ps_status st = coord_status_get(user, &status);
    return reply_owned(rpc, st, status ? &status->base : NULL);
}

static ps_status h_get_model(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    const Ps__GetModelRequest *req = (const Ps__GetModelRequest *)msg;
    char err[COORD_ERR_MAX] = "";
    Ps__ModelInfo *m = NULL;
    ps_status st = coord_model_get(user, req->name, req->version, &m, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    return reply_owned(rpc, st, &m->base);
}

static ps_status h_register_model(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__RegisterModelResponse resp = PS__REGISTER_MODEL_RESPONSE__INIT;
    ps_status st = coord_model_register(user, ((const Ps__RegisterModelRequest *)msg)->model,
                                        &resp.version, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static ps_status h_delete_model(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    const Ps__DeleteModelRequest *req = (const Ps__DeleteModelRequest *)msg;
    char err[COORD_ERR_MAX] = "";
    Ps__ModelInfo *m = NULL;
    ps_status st =
        coord_model_delete(user, req->name, req->version, req->force, &m, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    st = rpc_ctx_reply(rpc, &m->base);
    ps__model_info__free_unpacked(m, NULL);
    return st;
}

static ps_status h_set_optimizer(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__ModelInfo *m = NULL;
    ps_status st =
        coord_model_set_optimizer(user, (const Ps__SetOptimizerRequest *)msg, &m, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    st = rpc_ctx_reply(rpc, &m->base);
    ps__model_info__free_unpacked(m, NULL);
    return st;
}

static ps_status h_register_worker(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    const Ps__RegisterWorkerRequest *req = (const Ps__RegisterWorkerRequest *)msg;
    char err[COORD_ERR_MAX] = "";
    Ps__RegisterWorkerResponse resp = PS__REGISTER_WORKER_RESPONSE__INIT;
    ps_status st = coord_worker_register(user, req->model, req->name, &resp, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static ps_status h_clock(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__ClockResponse resp = PS__CLOCK_RESPONSE__INIT;
    ps_status st = coord_worker_clock(user, (const Ps__ClockRequest *)msg, &resp, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

/* ----------------------------------------------------------------- watches --- */

static bool call_alive(void *arg) {
    return rpc_ctx_alive(arg);
}

/* Waits that end with a message of their own stop this long before the call's deadline,
 * so the caller gets the message, not the transport's bare DEADLINE_EXCEEDED. */
#define DEADLINE_MARGIN_MS 250

static bool call_alive_with_margin(void *arg) {
    return rpc_ctx_alive(arg) && rpc_ctx_deadline_ms(arg) > DEADLINE_MARGIN_MS;
}

/* How a watch ended, as the call's status. */
static ps_status watch_end(rpc_ctx *rpc, coord_ctx *c, ps_status st) {
    coord_watch_end(c);
    if (st == PS_STATUS_UNAVAILABLE)
        return rpc_ctx_error(rpc, st, "watch ended: the coordinator is shutting down");
    if (st == PS_STATUS_NO_MEMORY)
        return rpc_ctx_error(rpc, st, "watch ended: out of memory");
    return st; /* CANCELLED or a failed write: the call is gone */
}

/* Sends a shared packed message; the reference goes with it (dropped once gRPC has). */
static ps_status write_shared(rpc_ctx *rpc, coord_packed *p) {
    size_t len;
    const uint8_t *data = coord_packed_bytes(p, &len);
    return rpc_ctx_write_packed(rpc, data, len, coord_packed_unref, p);
}

static ps_status h_watch_ring(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    ps_status st = coord_watch_begin(user, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    uint64_t after = ((const Ps__WatchRingRequest *)msg)->after_epoch;
    for (;;) {
        coord_packed *ring = NULL;
        if ((st = coord_ring_wait_packed(user, after, call_alive, rpc, &ring, &after)) !=
            PS_STATUS_OK)
            break;
        st = write_shared(rpc, ring); /* no lock held: a slow reader stalls no one */
        if (st != PS_STATUS_OK)
            break;
    }
    return watch_end(rpc, user, st);
}

static ps_status h_watch_models(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    ps_status st = coord_watch_begin(user, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    uint64_t after = ((const Ps__WatchModelsRequest *)msg)->after_generation;
    for (;;) {
        coord_packed *up = NULL;
        if ((st = coord_models_wait_packed(user, after, call_alive, rpc, &up, &after)) !=
            PS_STATUS_OK)
            break;
        st = write_shared(rpc, up);
        if (st != PS_STATUS_OK)
            break;
    }
    return watch_end(rpc, user, st);
}

/* A stream of one message, so that a long wait holds a stream, not a unary thread. */
static ps_status h_wait_clock(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    ps_status st = coord_watch_begin(user, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    Ps__ClockResponse resp = PS__CLOCK_RESPONSE__INIT;
    st = coord_worker_wait(user, (const Ps__WaitClockRequest *)msg, call_alive_with_margin, rpc,
                           &resp, err, sizeof err);
    coord_watch_end(user);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    return rpc_ctx_write(rpc, &resp.base);
}

static ps_status h_prepared(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    Ps__PreparedResponse resp = PS__PREPARED_RESPONSE__INIT;
    ps_status st = coord_publish_prepared(user, (const Ps__PreparedRequest *)msg, err, sizeof err);
    return st == PS_STATUS_OK ? rpc_ctx_reply(rpc, &resp.base) : fail(rpc, st, err);
}

static bool write_progress(void *arg, const Ps__PublishProgress *progress) {
    return rpc_ctx_write(arg, &progress->base) == PS_STATUS_OK;
}

static ps_status h_publish(rpc_ctx *rpc, const ProtobufCMessage *msg, void *user) {
    char err[COORD_ERR_MAX] = "";
    ps_status st = coord_watch_begin(user, err, sizeof err);
    if (st != PS_STATUS_OK)
        return fail(rpc, st, err);
    st = coord_publish_run(user, (const Ps__PublishRequest *)msg, call_alive_with_margin,
                           write_progress, rpc, err, sizeof err);
    coord_watch_end(user);
    if (st == PS_STATUS_CANCELLED)
        return st; /* the call is gone */
    return st == PS_STATUS_OK ? st : fail(rpc, st, err);
}

/* ----------------------------------------------------------------- the table --- */

/* RegisterNode, AddNode and RemoveNode ask shards what they hold (up to
 * SHARD_PROBE_TIMEOUT_MS each, a hung shard the whole of it), RegisterModel and
 * SetOptimizer check a config of up to a megabyte: they run on threads of their own
 * (RPC_METHOD_UNARY_OWN_THREAD). On the workers, a few clients registering while a ring
 * shard hung held every worker, heartbeats waited seconds, and live nodes were declared
 * dead. */
void handlers_methods(coord_ctx *ctx, rpc_method methods[HANDLERS_METHOD_COUNT]) {
    const rpc_method table[HANDLERS_METHOD_COUNT] = {
        {"/ps.Coordinator/RegisterNode", RPC_METHOD_UNARY_OWN_THREAD,
         &ps__register_request__descriptor, h_register, ctx, 0},
        {"/ps.Coordinator/Heartbeat", RPC_METHOD_UNARY, &ps__heartbeat_request__descriptor,
         h_heartbeat, ctx, 0},
        {"/ps.Coordinator/GetRing", RPC_METHOD_UNARY, &ps__get_ring_request__descriptor, h_get_ring,
         ctx, 0},
        {"/ps.Coordinator/WatchRing", RPC_METHOD_SERVER_STREAM, &ps__watch_ring_request__descriptor,
         h_watch_ring, ctx, 0},
        {"/ps.Coordinator/AddNode", RPC_METHOD_UNARY_OWN_THREAD, &ps__add_node_request__descriptor,
         h_add_node, ctx, 0},
        {"/ps.Coordinator/RemoveNode", RPC_METHOD_UNARY_OWN_THREAD,
         &ps__remove_node_request__descriptor, h_remove_node, ctx, 0},
        {"/ps.Coordinator/RegisterModel", RPC_METHOD_UNARY_OWN_THREAD,
         &ps__register_model_request__descriptor, h_register_model, ctx, 0},
        {"/ps.Coordinator/ListModels", RPC_METHOD_UNARY, &ps__list_models_request__descriptor,
         h_list_models, ctx, 0},
        {"/ps.Coordinator/GetModel", RPC_METHOD_UNARY, &ps__get_model_request__descriptor,
         h_get_model, ctx, 0},
        {"/ps.Coordinator/WatchModels", RPC_METHOD_SERVER_STREAM,
         &ps__watch_models_request__descriptor, h_watch_models, ctx, 0},
        {"/ps.Coordinator/Status", RPC_METHOD_UNARY, &ps__status_request__descriptor, h_status, ctx,
         0},
        {"/ps.Coordinator/DeleteModel", RPC_METHOD_UNARY, &ps__delete_model_request__descriptor,
         h_delete_model, ctx, 0},
        {"/ps.Coordinator/SetOptimizer", RPC_METHOD_UNARY_OWN_THREAD,
         &ps__set_optimizer_request__descriptor, h_set_optimizer, ctx, 0},
        {"/ps.Coordinator/RegisterWorker", RPC_METHOD_UNARY,
         &ps__register_worker_request__descriptor, h_register_worker, ctx, 0},
        {"/ps.Coordinator/Clock", RPC_METHOD_UNARY, &ps__clock_request__descriptor, h_clock, ctx,
         0},
        {"/ps.Coordinator/WaitClock", RPC_METHOD_SERVER_STREAM, &ps__wait_clock_request__descriptor,
         h_wait_clock, ctx, 0},
        {"/ps.Coordinator/Publish", RPC_METHOD_SERVER_STREAM, &ps__publish_request__descriptor,
         h_publish, ctx, 0},
        {"/ps.Coordinator/Prepared", RPC_METHOD_UNARY, &ps__prepared_request__descriptor,
         h_prepared, ctx, 0},
    };
    for (size_t i = 0; i < HANDLERS_METHOD_COUNT; i++)
        methods[i] = table[i];
}
