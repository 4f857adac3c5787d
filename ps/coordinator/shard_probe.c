/* shard_probe.c: a shard's key count from its Health answer (see shard_probe.h). */
#include "shard_probe.h"

#include <string.h>

#include "ps.pb-c.h"
#include "rpc.h"
#include "util.h"

ps_status shard_probe_keys(void *arg, const char *id, const char *addr, uint64_t *ret_keys,
                           char *err, size_t err_len) {
    (void)arg;
    rpc_channel *ch = NULL;
    ps_status st = rpc_channel_create(addr, NULL, &ch);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot open a channel: %s", ps_status_str(st));
        return st;
    }
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = SHARD_PROBE_TIMEOUT_MS};
    st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base, &ps__health_response__descriptor,
                  &opts, &resp, &res);
    rpc_channel_destroy(ch);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %.100s", rpc_code_name(res.grpc_code),
                   res.details[0] ? res.details : "no details");
        return st;
    }
    const Ps__HealthResponse *h = (const Ps__HealthResponse *)resp;
    if (strcmp(h->id, id) != 0) {
        ps_set_err(err, err_len, "the shard there says it is '%.64s'", h->id);
        st = PS_STATUS_FAILED_PRECONDITION;
    } else {
        *ret_keys = h->keys;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}
