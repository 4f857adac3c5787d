/* replicator_lanes.c: a backup's sender lanes (see replicator.h): each takes the next
 * unsent run of the target's queue, sends it in one Replicate call and pops what the
 * backup applied; lane 0 also runs the target's syncs. A failed call makes every lane
 * wait for the calls out and start again from the first unanswered entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "replicator_internal.h"
#include "util.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000

void repl_drop_queue_locked(repl_target *t) {
    replicator *r = t->r;
    while (t->head) {
        repl_entry *e = t->head;
        t->head = e->next;
        if (e->view == r->view) /* its next sync carries it, under this view */
            repl_left_add_locked(t, e->pos, e->view);
        else if (!repl_owned_nothing_since(t, e->view)) /* an owner, under another view */
            repl_lost_add_locked(r, e->pos, e->pos);
        if (e->in_batch) { /* a call holds it: its lane frees it when it returns */
            e->orphan = true;
            if (t->orphans++ == 0 || e->pos < t->orphan_min_pos)
                t->orphan_min_pos = e->pos;
        } else {
            repl_entry_free(e);
        }
    }
    t->tail = t->send_next = NULL;
    t->queued = t->queued_bytes = 0;
    pthread_cond_broadcast(&t->r->changed);
}

/* Frees the entries at the queue's head the backup has applied and no call holds (lock
 * held). */
static void pop_acked_locked(repl_target *t) {
    while (t->head && t->head->num <= t->acked_num && !t->head->in_batch) {
        repl_entry *e = t->head;
        t->head = e->next;
        if (t->send_next == e)
            t->send_next = e->next;
        t->queued--;
        t->queued_bytes -= e->bytes;
        repl_entry_free(e);
    }
    if (!t->head)
        t->tail = NULL;
}

/* The target lost changes (or may have): it must be sent everything again, and what it
 * has queued goes (lock held). */
void repl_need_sync_locked(repl_target *t, const char *why) {
    t->need_sync = t->full = true;
    snprintf(t->why, sizeof t->why, "%s", why);
    repl_drop_queue_locked(t);
}

ps_status repl_send(repl_target *t, const rpc_bytes_part *parts, size_t n_parts, uint32_t count,
                    uint64_t first, bool sync, uint64_t resume, uint64_t routed_epoch,
                    uint64_t epoch, uint64_t *ret_applied, uint64_t *ret_inc, char *err,
                    size_t err_len) {
    replicator *r = t->r;
    pthread_mutex_lock(&r->lock);
    if (!epoch)
        epoch = r->ring ? hashring_epoch(r->ring) : 0;
    uint64_t to_inc = sync ? 0 : t->peer_inc;
    pthread_mutex_unlock(&r->lock);
    Ps__ReplicateRequest req = PS__REPLICATE_REQUEST__INIT;
    req.from = r->self;
    req.incarnation = r->opts.incarnation;
    req.epoch = epoch;
    req.first = first;
    req.count = count;
    req.to_incarnation = to_inc;
    req.sync = sync;
    req.resume = resume;
    req.routed_epoch = routed_epoch;
    rpc_bytes_field f = {.field_number = 15, .parts = parts, .n_parts = n_parts};
    rpc_call_opts co = {.timeout_ms = r->opts.call_timeout_ms};
    ProtobufCMessage *resp = NULL;
    rpc_result res;
    ps_status st = rpc_call_with_bytes(t->channel, "/ps.ParameterServer/Replicate", &req.base, &f,
                                       1, &ps__replicate_response__descriptor, &co, &resp, &res);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %s", ps_status_str(st), res.details);
        return st;
    }
    const Ps__ReplicateResponse *rr = (const Ps__ReplicateResponse *)resp;
    *ret_applied = rr->applied;
    *ret_inc = rr->incarnation;
    protobuf_c_message_free_unpacked(resp, NULL);
    return PS_STATUS_OK;
}

/* Sends `count` entries from `first` on (lock NOT held; they are marked in_batch, so
 * they stay), then waits (lock held again on return) until gRPC holds none of their
 * parts. Returns the call's status and in *ret_applied the backup's answer; err says
 * why it failed. */
static ps_status send_batch(repl_target *t, repl_entry *first, uint32_t count,
                            uint64_t *ret_applied, char *err, size_t err_len) {
    replicator *r = t->r;
    size_t n_parts = 0;
    repl_entry *e = first;
    for (uint32_t i = 0; i < count; i++, e = e->next)
        n_parts += 1 + (size_t)e->enc.n_iov;
    rpc_bytes_part *parts = calloc(n_parts + 1, sizeof *parts);
    rpc_loan *loan = NULL; /* the entries' bytes, lent to gRPC */
    if (!parts || rpc_loan_create(&loan) != PS_STATUS_OK) {
        free(parts);
        ps_set_err(err, err_len, "out of memory for a batch of %u records", count);
        pthread_mutex_lock(&r->lock);
        return PS_STATUS_NO_MEMORY;
    }
    size_t k = 0;
    uint64_t routed = UINT64_MAX; /* the oldest ring its entries were routed under */
    e = first;
    for (uint32_t i = 0; i < count; i++, e = e->next) {
        if (e->epoch < routed)
            routed = e->epoch;
        parts[k++] = rpc_loan_part(loan, e->head, REPLICATOR_FRAME_HEAD);
        for (int j = 0; j < e->enc.n_iov; j++)
            parts[k++] = rpc_loan_part(loan, e->enc.iov[j].iov_base, e->enc.iov[j].iov_len);
    }
    uint64_t applied = 0, inc = 0;
    ps_status st = repl_send(t, parts, n_parts, count, first->num, false, 0, routed, 0, &applied,
                             &inc, err, err_len);
    free(parts);
    rpc_loan_destroy(loan); /* once gRPC holds none of the parts */
    pthread_mutex_lock(&r->lock);
    uint64_t last = first->num + count - 1;
    if (st == PS_STATUS_OK && applied < last) {
        ps_set_err(err, err_len, "it answered records up to %llu applied, not %llu",
                   (unsigned long long)applied, (unsigned long long)last);
        st = PS_STATUS_INTERNAL;
    }
    *ret_applied = applied;
    return st;
}

/* A refusal the backup will repeat: it cannot apply what it was sent. */
static bool refused(ps_status st) {
    return st == PS_STATUS_INVALID_ARGUMENT || st == PS_STATUS_NOT_FOUND ||
           st == PS_STATUS_FAILED_PRECONDITION || st == PS_STATUS_PARSE ||
           st == PS_STATUS_INTERNAL || st == PS_STATUS_RESOURCE_EXHAUSTED;
}

/* Lane 0's part: runs the sync the target needs once no call is out (lock held). */
static void lane_sync_locked(repl_target *t, int *backoff) {
    replicator *r = t->r;
    pthread_mutex_unlock(&r->lock);
    char why[200];
    ps_status st = repl_sync(t, why, sizeof why);
    pthread_mutex_lock(&r->lock);
    t->syncing = false;
    repl_left_sync_end_locked(t, st == PS_STATUS_OK);
    if (st == PS_STATUS_OK && t->redo_full) { /* the ring moved under it */
        t->redo_full = false;
        repl_need_sync_locked(t, "the ring changed during a sync: syncing again");
        return;
    }
    if (st == PS_STATUS_OK) {
        t->failing_since = 0;
        *backoff = BACKOFF_MIN_MS;
        pthread_cond_broadcast(&r->changed);
        return;
    }
    /* the changes queued after its point need the images that did not arrive */
    t->redo_full = false;
    repl_need_sync_locked(t, why);
    r->failed_calls++;
    struct timespec ts = ps_abstime_after_ms(*backoff);
    pthread_cond_timedwait(&r->changed, &r->lock, &ts);
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
}

/* Takes the next unsent run of the queue for one call (lock held): marks its entries
 * in_batch and returns the first, or NULL when there is nothing to take now. */
static repl_entry *take_batch_locked(repl_target *t, uint32_t *ret_count) {
    if (t->need_sync || t->syncing)
        return NULL; /* lane 0 syncs first; changes after its point follow its images */
    if (t->rewind) {
        if (t->in_flight > 0)
            return NULL; /* the calls out return first */
        t->rewind = false;
        pop_acked_locked(t);
        t->send_next = t->head; /* again from the first unanswered entry */
    }
    repl_entry *first = t->send_next, *e = first;
    uint32_t count = 0;
    uint64_t bytes = 0;
    while (e && count < REPLICATOR_MAX_BATCH_RECORDS &&
           (count == 0 || bytes + e->bytes <= t->r->opts.max_batch_bytes)) {
        e->in_batch = true;
        bytes += e->bytes;
        count++;
        e = e->next;
    }
    t->send_next = e;
    *ret_count = count;
    return first;
}

/* A lane's call came back (lock held): its entries are released (orphans freed), and
 * on success what the backup applied is popped. */
static void batch_done_locked(repl_target *t, repl_entry *first, uint32_t count, ps_status st,
                              uint64_t applied) {
    repl_entry *e = first;
    for (uint32_t i = 0; i < count; i++) {
        repl_entry *next = e->next;
        e->in_batch = false;
        if (e->orphan) {
            t->orphans--;
            repl_entry_free(e);
        }
        e = next;
    }
    t->in_flight--;
    if (st == PS_STATUS_OK) {
        if (applied > t->acked_num)
            t->acked_num = applied;
        t->r->sent_records += count;
        pop_acked_locked(t);
    } else {
        t->rewind = true;
    }
    pthread_cond_broadcast(&t->r->changed);
}

void *repl_lane_main(void *arg) {
    repl_lane *lane = arg;
    repl_target *t = lane->t;
    replicator *r = t->r;
    int backoff = BACKOFF_MIN_MS;
    pthread_mutex_lock(&r->lock);
    while (!t->removed && !r->stopping) {
        if (t->need_sync) {
            if (lane->index == 0 && t->in_flight == 0)
                lane_sync_locked(t, &backoff);
            else
                pthread_cond_wait(&r->changed, &r->lock);
            continue;
        }
        uint32_t count = 0;
        repl_entry *first = take_batch_locked(t, &count);
        if (!first) {
            pthread_cond_wait(&r->changed, &r->lock);
            continue;
        }
        t->in_flight++;
        pthread_mutex_unlock(&r->lock);
        char why[200];
        uint64_t applied = 0;
        ps_status st = send_batch(t, first, count, &applied, why, sizeof why); /* relocks */
        batch_done_locked(t, first, count, st, applied);
        if (st == PS_STATUS_OK) {
            t->failing_since = 0;
            backoff = BACKOFF_MIN_MS;
            continue;
        }
        r->failed_calls++;
        int64_t now = ps_now_ms();
        if (!t->failing_since)
            t->failing_since = now;
        snprintf(t->why, sizeof t->why, "%s", why);
        if (refused(st)) { /* also a backup that restarted (FAILED_PRECONDITION) */
            char msg[256];
            snprintf(msg, sizeof msg, "it refused changes: %s", why);
            repl_need_sync_locked(t, msg);
            continue;
        }
        if (now - t->failing_since >= r->opts.give_up_ms) {
            char msg[256];
            snprintf(msg, sizeof msg, "unreachable for %lld ms: %s",
                     (long long)(now - t->failing_since), why);
            repl_need_sync_locked(t, msg);
            continue;
        }
        struct timespec ts = ps_abstime_after_ms(backoff);
        pthread_cond_timedwait(&r->changed, &r->lock, &ts);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    if (--t->lanes_running == 0)
        repl_drop_queue_locked(t);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}
