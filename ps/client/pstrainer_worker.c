/* pstrainer_worker.c: the trainer as a training worker on the coordinator
 * (RegisterWorker, Clock, WaitClock; see pstrainer.h "Clock"). Runs on the trainer's
 * thread only. */
#include <stdarg.h>
#include <stdio.h>

#include "pstrainer_internal.h"

ps_status pstrainer_fail(char *err, ps_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, 256, fmt, ap);
    va_end(ap);
    return st;
}

ps_status pstrainer_coord_call(ps_trainer *t, const char *method, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *type, int64_t timeout_ms,
                               ProtobufCMessage **ret, char *err) {
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = timeout_ms};
    ps_status st = rpc_call(ps_client_coordinator(t->client), method, req, type, &opts, ret, &res);
    return st == PS_STATUS_OK ? st : pstrainer_fail(err, st, "%s: %s", method, res.details);
}

ps_status pstrainer_worker_register(ps_trainer *t, char *err) {
    Ps__RegisterWorkerRequest req = PS__REGISTER_WORKER_REQUEST__INIT;
    req.model = t->model;
    req.name = t->name;
    ProtobufCMessage *m = NULL;
    ps_status st = pstrainer_coord_call(t, "/ps.Coordinator/RegisterWorker", &req.base,
                                        &ps__register_worker_response__descriptor, 5000, &m, err);
    if (st != PS_STATUS_OK)
        return st;
    const Ps__RegisterWorkerResponse *r = (const Ps__RegisterWorkerResponse *)m;
    uint64_t ahead = t->registered && t->clock > r->clock ? t->clock : 0;
    t->worker_id = r->worker_id;
    t->clock = r->clock;
    t->worker_timeout_ms = r->timeout_ms ? r->timeout_ms : 10000;
    snprintf(t->consistency, sizeof t->consistency, "%s", r->consistency);
    t->registered = true;
    t->waited_valid = false;
    protobuf_c_message_free_unpacked(m, NULL);
    if (ahead) { /* registered again after being declared dead: keep our clock */
        Ps__ClockRequest c = PS__CLOCK_REQUEST__INIT;
        c.model = t->model;
        c.worker_id = t->worker_id;
        c.clock = ahead;
        st = pstrainer_coord_call(t, "/ps.Coordinator/Clock", &c.base,
                                  &ps__clock_response__descriptor, 5000, &m, err);
        if (st == PS_STATUS_OK) {
            protobuf_c_message_free_unpacked(m, NULL);
            t->clock = ahead;
        }
    }
    return st;
}

/* Sends clock `c` (the same clock: a heartbeat); registers again once when the
 * coordinator no longer knows the worker. */
ps_status pstrainer_worker_clock(ps_trainer *t, uint64_t c, char *err) {
    for (int attempt = 0;; attempt++) {
        Ps__ClockRequest req = PS__CLOCK_REQUEST__INIT;
        req.model = t->model;
        req.worker_id = t->worker_id;
        req.clock = c;
        ProtobufCMessage *m = NULL;
        ps_status st = pstrainer_coord_call(t, "/ps.Coordinator/Clock", &req.base,
                                            &ps__clock_response__descriptor, 5000, &m, err);
        protobuf_c_message_free_unpacked(m, NULL);
        if (st != PS_STATUS_NOT_FOUND || attempt > 0)
            return st;
        if ((st = pstrainer_worker_register(t, err)) != PS_STATUS_OK)
            return st;
    }
}

/* Before a pull: a registered worker (or one of a bsp/ssp or consistent model) waits
 * until the model lets it read. */
ps_status pstrainer_worker_wait(ps_trainer *t, char *err) {
    if (!t->registered) {
        bool needs = train_config_consistency(t->training) != TRAIN_CONSISTENCY_ASP ||
                     train_config_propagation(t->training) == TRAIN_PROPAGATION_CONSISTENT;
        if (!needs)
            return PS_STATUS_OK;
        ps_status st = pstrainer_worker_register(t, err);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (t->waited_valid && t->waited == t->clock)
        return PS_STATUS_OK;
    Ps__WaitClockRequest req = PS__WAIT_CLOCK_REQUEST__INIT;
    req.model = t->model;
    req.worker_id = t->worker_id;
    req.clock = t->clock;
    rpc_call_opts opts = {.timeout_ms = t->o.wait_ms};
    rpc_stream *s = NULL;
    ps_status st = rpc_stream_open(ps_client_coordinator(t->client), "/ps.Coordinator/WaitClock",
                                   &req.base, &ps__clock_response__descriptor, &opts, &s);
    ProtobufCMessage *m = NULL;
    if (st == PS_STATUS_OK)
        st = rpc_stream_next(s, &m);
    if (st == PS_STATUS_OK && !m)
        st = PS_STATUS_UNAVAILABLE;
    if (st != PS_STATUS_OK)
        pstrainer_fail(err, st, "wait for the other workers of %s at clock %llu: %s", t->model,
                       (unsigned long long)t->clock, s ? rpc_stream_result(s)->details : "");
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_stream_destroy(s);
    if (st == PS_STATUS_NOT_FOUND && (st = pstrainer_worker_register(t, err)) == PS_STATUS_OK)
        return pstrainer_worker_wait(t, err);
    if (st == PS_STATUS_OK) {
        t->waited = t->clock;
        t->waited_valid = true;
    }
    return st;
}
