/* sync_shard.c: one shard's subscriber thread: asks the shard where it stands
 * (Health), subscribes from where it stopped, applies what the stream carries, and
 * marks everything held from the shard for a re-pull when the shard restarted, said
 * resync or went silent. See sync.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "subscriber.h"
#include "sync_internal.h"
#include "util.h"

/* The re-pull predicate: keys whose primary owner is this subscriber's shard. */
static bool held_from(uint64_t key, void *arg) {
    const sub *b = arg;
    return sync_owned_by(b->owner, key, b->addr);
}

static void repull(sub *b, const char *why) {
    sync_ctx *s = b->owner;
    size_t n = models_repull_mark(s->o.models, held_from, b);
    if (n == 0) /* nothing held from it (yet) */
        return;
    replica_logger_printf(&s->o.logger, PS_LOG_WARN,
                          "shard %s at %s %s; pulling the %zu chunks held from it again", b->id,
                          b->addr, why, n);
    sync_wake(s, true);
}

static const char *why_text(const char *why) {
    if (why && strcmp(why, "restarted") == 0)
        return "restarted (new incarnation)";
    if (why && strcmp(why, "subscribed") == 0)
        return "is followed from now on (a new subscription)";
    return "said resync (its update log no longer holds what this replica missed)";
}

static ps_status shard_health(rpc_channel *ch, uint64_t *ret_seq, uint64_t *ret_incarnation,
                              rpc_result *res) {
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts opts = {.timeout_ms = SYNC_HEALTH_TIMEOUT_MS};
    ps_status st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base,
                            &ps__health_response__descriptor, &opts, &resp, res);
    if (st == PS_STATUS_OK) {
        *ret_seq = ((Ps__HealthResponse *)resp)->seq;
        *ret_incarnation = ((Ps__HealthResponse *)resp)->incarnation;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

/* Reads one open stream until it ends; applies what it carries. */
static void follow(sub *b, rpc_stream *stream, subscriber_state *st) {
    sync_ctx *s = b->owner;
    ProtobufCMessage *m = NULL;
    while (rpc_stream_next(stream, &m) == PS_STATUS_OK && m) {
        atomic_store(&b->last_ms, ps_now_ms());
        const Ps__Update *u = (const Ps__Update *)m;
        subscriber_verdict v = subscriber_state_message(st, u);
        if (v.repull)
            repull(b, why_text(v.why));
        /* with R copies every owner streams the change: follow the key's primary only
         * (the others number their updates in their own sequence) */
        if (v.apply && (u->keepalive || sync_owned_by(s, u->key, b->addr)))
            models_update_apply(s->o.models, u);
        protobuf_c_message_free_unpacked(m, NULL);
    }
}

static void *sub_thread(void *arg) {
    sub *b = arg;
    sync_ctx *s = b->owner;
    const replica_logger *log = &s->o.logger;
    subscriber_state st = {0};
    bool failing = false; /* in a streak of failures to (re)subscribe: logged once */
    rpc_channel *ch = NULL;
    if (rpc_channel_create(b->addr, NULL, &ch) != PS_STATUS_OK) {
        replica_logger_printf(log, PS_LOG_ERROR, "shard %s: bad address %s", b->id, b->addr);
        atomic_store(&b->settled, true);
        goto done;
    }
    while (sync_sub_running(b)) {
        uint64_t seq = 0, incarnation = 0;
        rpc_result res = {0};
        rpc_stream *stream = NULL;
        Ps__SubscribeRequest req = PS__SUBSCRIBE_REQUEST__INIT;
        ps_status hs = shard_health(ch, &seq, &incarnation, &res);
        if (hs == PS_STATUS_OK) {
            subscriber_verdict v = subscriber_state_base(&st, seq, incarnation);
            if (v.repull)
                repull(b, why_text(v.why));
            req.from_seq = st.seq;
            req.incarnation = st.incarnation;
            hs = rpc_stream_open(ch, "/ps.ParameterServer/Subscribe", &req.base,
                                 &ps__update__descriptor, NULL, &stream);
        }
        if (hs != PS_STATUS_OK) {
            if (!failing)
                replica_logger_printf(log, PS_LOG_WARN,
                                      "shard %s at %s: cannot subscribe (%s %s); "
                                      "retrying every %d ms",
                                      b->id, b->addr, rpc_code_name(res.grpc_code), res.details,
                                      SYNC_RETRY_MS);
            failing = true;
            atomic_store(&b->settled, true);
            sync_wake(s, false);
            sync_nap(s, SYNC_RETRY_MS);
            continue;
        }
        pthread_mutex_lock(&b->lock);
        b->stream = stream;
        if (!sync_sub_running(b))
            rpc_stream_cancel(stream);
        pthread_mutex_unlock(&b->lock);
        atomic_store(&b->last_ms, ps_now_ms());
        atomic_store(&b->subscribed, true);
        atomic_store(&b->settled, true);
        sync_wake(s, false);
        if (failing)
            replica_logger_printf(log, PS_LOG_INFO,
                                  "shard %s at %s: subscribed again from seq %llu", b->id, b->addr,
                                  (unsigned long long)st.seq);
        failing = false;
        follow(b, stream, &st);
        pthread_mutex_lock(&b->lock);
        b->stream = NULL;
        pthread_mutex_unlock(&b->lock);
        atomic_store(&b->subscribed, false);
        const rpc_result *end = rpc_stream_result(stream);
        if (atomic_exchange(&b->stalled, false)) {
            char why[160];
            snprintf(why, sizeof why,
                     "sent nothing, not even a keepalive, for %d ms: resubscribing from seq %llu",
                     s->o.stall_ms, (unsigned long long)st.seq);
            repull(b, why);
        } else if (sync_sub_running(b)) {
            replica_logger_printf(log, PS_LOG_WARN,
                                  "update stream from shard %s at %s ended (%s "
                                  "%s): resubscribing from seq %llu",
                                  b->id, b->addr, end ? rpc_code_name(end->grpc_code) : "?",
                                  end ? end->details : "", (unsigned long long)st.seq);
            failing = true;
        }
        rpc_stream_destroy(stream);
        if (sync_sub_running(b))
            sync_nap(s, SYNC_RETRY_MS / 2);
    }
    rpc_channel_destroy(ch);
done:
    atomic_store(&b->done, true);
    return NULL;
}

void sync_sub_stop(sub *b) {
    atomic_store(&b->wanted, false);
    pthread_mutex_lock(&b->lock);
    if (b->stream)
        rpc_stream_cancel(b->stream);
    pthread_mutex_unlock(&b->lock);
}

void sync_sub_free(sub *b) {
    pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Starts a subscriber for one shard (lock held). */
ps_status sync_sub_start(sync_ctx *s, const Ps__NodeInfo *n) {
    if (s->n_subs == SYNC_MAX_SHARDS)
        return PS_STATUS_RESOURCE_EXHAUSTED;
    sub *b = calloc(1, sizeof *b);
    if (!b)
        return PS_STATUS_NO_MEMORY;
    b->owner = s;
    snprintf(b->id, sizeof b->id, "%s", n->id);
    snprintf(b->addr, sizeof b->addr, "%s", n->addr);
    atomic_init(&b->wanted, true);
    pthread_mutex_init(&b->lock, NULL);
    if (pthread_create(&b->thread, NULL, sub_thread, b) != 0) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    s->subs[s->n_subs++] = b;
    replica_logger_printf(&s->o.logger, PS_LOG_INFO, "subscribing to shard %s at %s", b->id,
                          b->addr);
    return PS_STATUS_OK;
}
