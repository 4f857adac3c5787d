/* repl_handler.c: the backup's side of replication, ps.ParameterServer/Replicate (see
 * replicator.h): checks the batch's framing whole before applying anything (the records
 * walked where gRPC received them: repl_frames.h), applies
 * the records it does not have yet through the journal (journal_apply, marked
 * from_peer so they are journaled here but not sent on), waits until they are durable
 * in this shard's own log, and answers the last record number applied. A batch routed
 * under a ring older than this shard's (routed_epoch) may hold changes to keys this
 * shard is the primary of now (a join committed meanwhile): those go on to the keys'
 * other owners (forward), and the answer waits until they have them. Runs on a
 * thread of its own (RPC_METHOD_UNARY_OWN_THREAD): primaries' push handlers wait on it.
 * A sync's batches carry images (image.h), installed whole and journaled like changes,
 * and the request ids of the changes they hold (JOURNAL_TYPE_DEDUP, remembered), only
 * under the ring epoch they were exported under (FAILED_PRECONDITION otherwise: the
 * primary syncs again), with this shard's ring held still meanwhile, and only while
 * the sync is its sender's newest (its number in `first`) and the call's deadline has
 * not passed (a sync sent again after a timeout must not be overtaken by the first);
 * its last batch (resume > 0) marks its end: the stream's numbers go on as they were
 * (never lowered: a change sent before the sync and applied here is never applied
 * again), from resume on (the records before it the primary dropped are in the images,
 * so the in-order wait must not wait for them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "journal.h"
#include "repl_frames.h"
#include "replicator.h"
#include "shard_limits.h"
#include "util.h"

/* Installs one image record (copied to be 8-byte aligned, as decoding wants). */
static ps_status install_image(shard_ctx *ctx, const uint8_t *payload, size_t n, uint64_t *ret_lsn,
                               char *err, size_t err_len) {
    uint8_t *copy = malloc(n + 8);
    image_record *rec = malloc(sizeof *rec);
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!copy || !rec) {
        ps_set_err(err, err_len, "out of memory for an image of %zu bytes", n);
        goto out;
    }
    memcpy(copy, payload, n);
    if ((st = image_decode(copy, n, rec, err, err_len)) != PS_STATUS_OK)
        goto out;
    image_target target = shard_image_target(ctx);
    st = image_install_record(&target, rec, ret_lsn, err, err_len);
out:
    free(copy);
    free(rec);
    return st;
}

/* The batch's records, applied in order; then the answer once they are durable. */
static ps_status apply_batch(shard_ctx *ctx, rpc_ctx *rc, const Ps__ReplicateRequest *req,
                             repl_frames *frames) {
    ps_status st;
    if (req->to_incarnation && req->to_incarnation != ctx->incarnation)
        return rpc_ctx_error(rc, PS_STATUS_FAILED_PRECONDITION,
                             "replicate from %s: meant for incarnation %016llx of shard %s, which "
                             "is now %016llx (it restarted): sync it anew",
                             req->from ? req->from : "", (unsigned long long)req->to_incarnation,
                             ctx->id, (unsigned long long)ctx->incarnation);
    repl_stream *stream = NULL;
    uint64_t applied = 0;
    int64_t wait_ms = rpc_ctx_deadline_ms(rc); /* INT64_MAX: the call has no deadline */
    if (wait_ms > REPLICATE_ORDER_WAIT_MS)
        wait_ms = REPLICATE_ORDER_WAIT_MS;
    st = repl_inbox_begin_at(ctx->inbox, req->from, req->incarnation, req->sync ? 0 : req->first,
                             ps_now_ms() + wait_ms, &stream, &applied);
    if (st == PS_STATUS_UNAVAILABLE)
        return rpc_ctx_error(rc, st,
                             "replicate from %s: records %llu to %llu have not arrived before "
                             "record %llu (waited %lld ms): send them first",
                             req->from, (unsigned long long)applied + 1,
                             (unsigned long long)req->first - 1, (unsigned long long)req->first,
                             (long long)wait_ms);
    if (st == PS_STATUS_FAILED_PRECONDITION)
        return rpc_ctx_error(rc, st,
                             "replicate from %s: incarnation %016llx is one it had before a "
                             "restart: a call from its earlier run is not applied",
                             req->from, (unsigned long long)req->incarnation);
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(rc, st, "replicate from '%s': %s", req->from ? req->from : "",
                             ps_status_str(st));
    /* a sync whose sender gave up on it (its deadline passed), or older than one begun
       before it: its images may be older than what the sender sent since */
    if (req->sync && rpc_ctx_deadline_ms(rc) <= 0) {
        repl_inbox_end(ctx->inbox, stream, applied, false);
        return rpc_ctx_error(rc, PS_STATUS_DEADLINE_EXCEEDED,
                             "replicate from %s: sync %llu reached shard %s after its deadline "
                             "(its sender gave up on it): not installed",
                             req->from, (unsigned long long)req->first, ctx->id);
    }
    if (req->sync && !repl_inbox_sync_newest(stream, req->first)) {
        repl_inbox_end(ctx->inbox, stream, applied, false);
        return rpc_ctx_error(rc, PS_STATUS_FAILED_PRECONDITION,
                             "replicate from %s: sync %llu came after a later sync of its "
                             "sender: not installed",
                             req->from, (unsigned long long)req->first);
    }
    /* A sync's images replace whole, so they are right only under the ring they were
       exported under: on another, the sender may no longer (or not yet) be their keys'
       primary, and an image would set back what the primary applied since. The ring is
       held still until they are installed: no push checked under a newer ring applies
       before them. */
    placement_info pi;
    const bool held = req->sync && req->count > 0;
    if (held) { /* a sender that learned a ring first waits for ours to catch up */
        int64_t left = rpc_ctx_deadline_ms(rc);
        placement_hold(
            ctx->placement, req->epoch,
            ps_now_ms() + (left < REPLICATE_ORDER_WAIT_MS ? left : REPLICATE_ORDER_WAIT_MS), &pi);
    } else
        placement_get_info(ctx->placement, &pi);
    if (held && req->epoch != pi.epoch) {
        placement_release(ctx->placement);
        repl_inbox_end(ctx->inbox, stream, applied, false);
        return rpc_ctx_error(rc, PS_STATUS_FAILED_PRECONDITION,
                             "replicate from %s: a sync made under ring epoch %llu, but shard %s "
                             "holds epoch %llu (the keys' primaries may differ): sync again "
                             "under epoch %llu",
                             req->from, (unsigned long long)req->epoch, ctx->id,
                             (unsigned long long)pi.epoch, (unsigned long long)pi.epoch);
    }
    /* changes routed under a ring older than ours: the keys we are primary of now (a
       join committed while they were on their way) go on to their other owners */
    bool forward = !req->sync && ctx->repl && req->routed_epoch && req->routed_epoch < pi.epoch;
    uint64_t sent_on = 0; /* the largest position of a copy that went on */
    journal_target target = {.chunks = ctx->store,
                             .rows = ctx->rows,
                             .dedup = ctx->dedup,
                             .forward = forward,
                             .forwarded = &sent_on};
    uint64_t done = applied, max_lsn = 0;
    repl_frame fr;
    for (uint32_t i = 0; repl_frames_next(frames, &fr); i++) {
        uint8_t type = fr.type;
        uint64_t num = req->first + i, lsn = 0;
        char why[RPC_DETAILS_MAX / 2] = "";
        if (req->sync) { /* images replace whole: a batch sent again changes nothing */
            const uint8_t *payload = NULL;
            uint8_t *owned = NULL;
            st = repl_frame_flat(&fr, &payload, &owned);
            if (st != PS_STATUS_OK)
                snprintf(why, sizeof why, "out of memory for %zu bytes", fr.len);
            else if (type == IMAGE_JOURNAL_TYPE)
                st = install_image(ctx, payload, fr.len, &lsn, why, sizeof why);
            else if (type == JOURNAL_TYPE_DEDUP) /* what the images' changes were */
                snprintf(why, sizeof why, "%s",
                         ps_status_str(st = shard_journal_dedup(ctx, payload, fr.len, &lsn)));
            else
                st = PS_STATUS_INVALID_ARGUMENT;
            free(owned);
        } else if (num <= applied) {
            continue; /* sent again after a lost answer: applied once */
        } else {
            target.err = why; /* the store's reason, e.g. which value is NaN */
            target.err_len = sizeof why;
            st = journal_apply_pieces(&target, type, fr.pieces, fr.n_pieces, fr.len, true, &lsn);
            if (st != PS_STATUS_OK && !why[0])
                snprintf(why, sizeof why, "%s", ps_status_str(st));
        }
        if (st != PS_STATUS_OK) {
            if (held)
                placement_release(ctx->placement);
            repl_inbox_end(ctx->inbox, stream, done, false);
            return rpc_ctx_error(rc,
                                 st == PS_STATUS_PARSE       ? PS_STATUS_INVALID_ARGUMENT
                                 : st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED
                                                             : st,
                                 "replicate from %s: %s %u (type %u) cannot be applied on "
                                 "shard %s: %s",
                                 req->from, req->sync ? "sync record" : "record",
                                 req->sync ? i + 1 : (unsigned)num, type, ctx->id, why);
        }
        if (!req->sync)
            done = num;
        if (lsn > max_lsn)
            max_lsn = lsn;
    }
    /* a sync's last batch: the stream goes on at `resume`; the records before it that
     * this shard lacks were dropped by the primary for the images it just installed */
    if (req->sync && req->resume > 1 && req->resume - 1 > done)
        done = req->resume - 1;
    if (held)
        placement_release(ctx->placement);
    repl_inbox_end(ctx->inbox, stream, done, false);
    if ((st = shard_wait_logged(ctx, rc, max_lsn, "replicated change")) != PS_STATUS_OK)
        return st;
    if (sent_on) { /* what went on is on those owners before the batch counts as applied */
        char why[RPC_DETAILS_MAX / 2] = "";
        int64_t deadline = ps_now_ms() + wait_ms;
        uint64_t upto = sent_on;
        if (replicator_lost(ctx->repl, sent_on)) /* a ring change came first: whole syncs */
            upto = replicator_resync(ctx->repl, sent_on, shard_journal_position(ctx),
                                     "a change a ring change may have kept from it: syncing "
                                     "it whole");
        if (replicator_wait_sent_on(ctx->repl, upto, deadline, why, sizeof why) != PS_STATUS_OK)
            return rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE,
                                 "replicate from %s: applied on shard %s, which is the primary "
                                 "of some of its keys now, but not yet on their other owners "
                                 "(%s)",
                                 req->from, ctx->id, why);
    }
    Ps__ReplicateResponse resp = PS__REPLICATE_RESPONSE__INIT;
    resp.applied = done;
    resp.incarnation = ctx->incarnation;
    return rpc_ctx_reply(rc, &resp.base);
}

ps_status shard_handle_replicate(rpc_ctx *rc, const ProtobufCMessage *msg, void *user) {
    shard_ctx *ctx = user;
    const Ps__ReplicateRequest *req = (const Ps__ReplicateRequest *)msg;
    const uint32_t most = req->sync ? REPLICATOR_MAX_SYNC_RECORDS : REPLICATOR_MAX_BATCH_RECORDS;
    if (req->count > most)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "replicate: %u records in one %s, at most %u", req->count,
                             req->sync ? "sync call" : "call", most);
    if ((!req->sync && req->first == 0) || req->first > UINT64_MAX - req->count)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "replicate: record numbers start at 1 and must not wrap");
    const rpc_bytes_pieces *vf = NULL;
    size_t n_fields = rpc_ctx_raw_pieces(rc, &vf);
    if (n_fields > 1)
        return rpc_ctx_error(rc, PS_STATUS_INVALID_ARGUMENT,
                             "replicate carries its records field %zu times: send it once",
                             n_fields);
    size_t n_pieces = n_fields ? vf[0].n_pieces : 0;
    const ps_bytes *pieces = n_fields ? vf[0].pieces : NULL; /* as they arrived */
    repl_frames *frames = NULL;
    char err[RPC_DETAILS_MAX];
    ps_status st = repl_frames_create(pieces, n_pieces, req->count, REPLICATOR_MAX_FRAME_BYTES,
                                      &frames, err, sizeof err);
    if (st == PS_STATUS_OK)
        st = apply_batch(ctx, rc, req, frames);
    else
        st = rpc_ctx_error(rc, st == PS_STATUS_NO_MEMORY ? PS_STATUS_RESOURCE_EXHAUSTED : st, "%s",
                           err);
    repl_frames_destroy(frames);
    return st;
}
