/* subscribe.c: the Subscribe handler: streams every applied update after the
 * subscriber's seq, in order, or tells it to resync (see handlers.h, update_log.h).
 *
 * Rules a subscriber relies on (proto/ps.proto):
 * - a resync (seq = the shard's last seq) comes first when the subscriber names an
 *   incarnation other than this shard's, and whenever the log no longer holds the next
 *   update it needs; the stream goes on from that seq;
 * - every Update carries the shard's incarnation;
 * - a stream idle for keepalive_ms gets a keepalive (seq = last seq), so a subscriber
 *   can tell a quiet shard from a stalled stream;
 * - at most max_subscribers streams are open at once; one more is refused with
 *   RESOURCE_EXHAUSTED.
 */
#include "handlers.h"

#include "ps.pb-c.h"
#include "util.h"

/* How often a waiting stream looks whether its call is still alive. */
#define SUBSCRIBE_POLL_MS 100

static bool subscriber_slot_take(shard_ctx *ctx) {
    unsigned cur = atomic_load(&ctx->subscribers);
    while (cur < ctx->max_subscribers) {
        if (atomic_compare_exchange_weak(&ctx->subscribers, &cur, cur + 1))
            return true;
    }
    return false;
}

/* Sends a message without values: a resync or a keepalive at `seq`. */
static ps_status send_marker(shard_ctx *ctx, rpc_ctx *rc, uint64_t seq, bool resync) {
    Ps__Update up = PS__UPDATE__INIT;
    up.seq = seq;
    up.incarnation = ctx->incarnation;
    up.resync = resync;
    up.keepalive = !resync;
    return rpc_ctx_write(rc, &up.base);
}

/* Sends one entry; the rpc layer drops the stream's reference once the bytes are sent,
 * which may be before this returns: nothing here reads the entry after the write. */
static ps_status send_entry(shard_ctx *ctx, rpc_ctx *rc, update_log_entry *e) {
    Ps__Update up = PS__UPDATE__INIT;
    up.seq = e->seq;
    up.key = e->key;
    up.version = e->version;
    up.prev_version = e->prev_version;
    up.op = e->op == UPDATE_LOG_OP_ADD ? PS__PUSH_OP__PUSH_ADD : PS__PUSH_OP__PUSH_ASSIGN;
    up.incarnation = ctx->incarnation;
    rpc_bytes_field vf = {.field_number = 15,
                          .data = e->values,
                          .len = (size_t)e->len * sizeof(float),
                          .release = update_log_entry_unref,
                          .arg = e};
    return rpc_ctx_write_with_bytes(rc, &up.base, &vf, 1);
}

/* Streams until the call ends or the shard stops. */
static ps_status stream_updates(shard_ctx *ctx, rpc_ctx *rc, const Ps__SubscribeRequest *req) {
    uint64_t after = req->from_seq; /* the last seq the subscriber has */
    if (req->incarnation != 0 && req->incarnation != ctx->incarnation) {
        update_log_stats ls;
        update_log_get_stats(ctx->log, &ls);
        if (send_marker(ctx, rc, ls.last_seq, true) != PS_STATUS_OK)
            return PS_STATUS_CANCELLED;
        after = ls.last_seq;
    }
    int64_t last_sent_ms = ps_now_ms();
    while (rpc_ctx_alive(rc)) {
        int64_t idle_ms = ps_now_ms() - last_sent_ms;
        int64_t wait_ms = ctx->keepalive_ms - idle_ms;
        if (wait_ms > SUBSCRIBE_POLL_MS)
            wait_ms = SUBSCRIBE_POLL_MS;
        update_log_entry *e = NULL;
        uint64_t last = 0;
        ps_status st = PS_STATUS_OK;
        switch (update_log_read(ctx->log, after, (int)(wait_ms > 0 ? wait_ms : 0), &e, &last)) {
        case UPDATE_LOG_READ_ENTRY:
            after = e->seq; /* read before the write: the write may free the entry */
            st = send_entry(ctx, rc, e);
            break;
        case UPDATE_LOG_READ_RESYNC:
            st = send_marker(ctx, rc, last, true);
            after = last;
            break;
        case UPDATE_LOG_READ_IDLE:
            if (ps_now_ms() - last_sent_ms < ctx->keepalive_ms)
                continue;
            st = send_marker(ctx, rc, last, false);
            break;
        case UPDATE_LOG_READ_STOPPED:
            return rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE, "shard %s is shutting down", ctx->id);
        }
        if (st != PS_STATUS_OK)
            return PS_STATUS_CANCELLED;
        last_sent_ms = ps_now_ms();
    }
    return PS_STATUS_CANCELLED;
}

ps_status shard_handle_subscribe(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    if (!subscriber_slot_take(ctx))
        return rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED,
                             "shard %s already serves %u Subscribe streams (--max-subscribers "
                             "%u): close one or raise the limit",
                             ctx->id, ctx->max_subscribers, ctx->max_subscribers);
    ps_status st = stream_updates(ctx, rc, (const Ps__SubscribeRequest *)msg);
    atomic_fetch_sub(&ctx->subscribers, 1);
    return st;
}
