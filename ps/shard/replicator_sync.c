/* replicator_sync.c: a backup's sync (see replicator.h): the images of the chunks and
 * rows this shard is primary for that the backup should hold and does not hold yet (it
 * was not their owner on the settled ring, or it is to be sent everything), exported at
 * one point of the journal (image_export holds every store still while position()
 * runs; from that moment changes queue behind the sync), sent in batches of framed
 * image records, the last batch telling the backup which record number the stream
 * resumes with. Changes queued before the point are for keys the backup held, which the
 * images leave out, so nothing lands twice. Each batch carries, after its images, the
 * request ids of the changes they hold (dedup records, sync_dedup.h: exported at the
 * point), so exactly-once survives a failover to the backup, also one in the middle of
 * the sync. Copies each image into the batch (a sync is bulk work; the images of a chunk
 * are pinned blocks until then).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator_internal.h"
#include "sync_dedup.h"
#include "util.h"

typedef struct sync_run {
    repl_target *t;
    hashring *ring, *pending, *settled; /* the rings the sync is for (copies) */
    repl_target **cur_t, **pend_t;      /* by ring index: only `t` is kept (copies) */
    uint32_t self;                      /* this shard's index on ring */
    uint32_t idx_settled;               /* the target's on settled */
    bool full;                          /* send everything it should hold */
    uint64_t pending_epoch;
    uint64_t view;   /* the replicator's view the rings are of */
    uint64_t num;    /* the sync's number (replicator.syncs_begun) */
    uint32_t copies; /* R */
    uint8_t *buf;    /* the batch being filled */
    size_t len, cap;
    uint32_t count;
    uint64_t resume; /* the stream number after the point */
    uint64_t point;  /* the journal position the images stand for */
    uint64_t bytes;  /* image bytes sent */
    uint64_t inc;    /* the backup's incarnation, as the first batch's answer said */
    sync_dedup *sd;  /* the request ids at the point (NULL: no request memory) */
    bool sd_failed;  /* no memory to export them */
    uint8_t *dbuf;   /* the batch's dedup records, framed */
    size_t dlen, dcap;
    uint32_t dcount;
    uint64_t *rkeys; /* a rows image's keys */
    size_t rkeys_cap;
    char *err;
    size_t err_len;
} sync_run;

/* This shard is the key's primary, the target one of the owners its changes go to, and
 * the target does not hold the key already. */
static bool sync_accept(void *arg, uint64_t key) {
    const sync_run *run = arg;
    repl_target *to[2 * HASHRING_MAX_REPLICAS];
    uint32_t got = repl_targets_of(run->ring, run->pending, run->self, run->cur_t, run->pend_t,
                                   run->copies, key, to);
    bool target = false;
    for (uint32_t i = 0; i < got && !target; i++)
        target = to[i] == run->t;
    return target && !repl_held(run->settled, run->idx_settled, run->full, run->copies, key);
}

/* With every store held still: the point the images stand for; changes from now on
 * queue behind the sync. */
static uint64_t sync_point(void *arg) {
    sync_run *run = arg;
    replicator *r = run->t->r;
    uint64_t pos = r->opts.position ? r->opts.position(r->opts.position_arg) : 0;
    /* the request ids the images will hold: copied now, while nothing moves (the
     * request memory's lock is a leaf: it waits on nothing else) */
    if (r->opts.dedup &&
        sync_dedup_export(r->opts.dedup, pos, REPLICATOR_FRAME_HEAD, &run->sd) != PS_STATUS_OK)
        run->sd_failed = true;
    pthread_mutex_lock(&r->lock);
    repl_target *t = run->t;
    t->need_sync = false;
    t->syncing = true;
    t->sync_pos = pos;
    if (run->view != r->view) /* the rings changed since this sync copied them */
        t->redo_full = true;
    repl_left_sync_start_locked(t, run->view); /* what this sync's images carry */
    run->point = pos;
    run->resume = t->head ? t->head->num : t->next_num; /* informative: nothing resets */
    pthread_mutex_unlock(&r->lock);
    return pos;
}

/* One Replicate call of the sync (parts: n_parts, count records). */
static ps_status send_call(sync_run *run, const rpc_bytes_part *parts, size_t n_parts,
                           uint32_t count, uint64_t resume) {
    uint64_t applied = 0, inc = 0;
    /* the ring the images are of: a backup holding another refuses them (its keys'
       primaries may differ: an image from a shard that is no longer, or not yet, a key's
       primary would set back what the primary has applied since) */
    uint64_t epoch = run->ring ? hashring_epoch(run->ring) : 0;
    ps_status st = repl_send(run->t, parts, n_parts, count, run->num, true, resume, 0, epoch,
                             &applied, &inc, run->err, run->err_len);
    if (st != PS_STATUS_OK)
        return st;
    replicator *rr = run->t->r;
    pthread_mutex_lock(&rr->lock);
    uint64_t known = run->t->peer_inc;
    pthread_mutex_unlock(&rr->lock);
    /* the backup restarted since this sync began, or (a sync of part of its keys) since
       the stream last reached it: the changes queued for it may or may not be in what it
       kept; sent again, it would apply them twice. Only a sync of everything will do. */
    if (inc && ((run->inc && inc != run->inc) || (!run->full && known && inc != known))) {
        ps_set_err(run->err, run->err_len,
                   "it restarted (incarnation %016llx, was %016llx): syncing it whole",
                   (unsigned long long)inc, (unsigned long long)(run->inc ? run->inc : known));
        return PS_STATUS_FAILED_PRECONDITION;
    }
    run->inc = inc;
    if (resume) {
        replicator *r = run->t->r;
        pthread_mutex_lock(&r->lock);
        run->t->peer_inc = inc;
        pthread_mutex_unlock(&r->lock);
    }
    return PS_STATUS_OK;
}

/* Appends the head of a framed record of `len` payload bytes to buf (*len used of
 * *cap, grown as needed): returns where the payload goes, or NULL (err set). */
static uint8_t *put_frame(sync_run *run, uint8_t **buf, size_t *len, size_t *cap, uint8_t type,
                          size_t payload) {
    size_t need = REPLICATOR_FRAME_HEAD + payload;
    if (!ps_reserve((void **)buf, cap, *len + need, 1, 1u << 16)) {
        ps_set_err(run->err, run->err_len, "out of memory for a sync batch of %zu bytes",
                   *len + need);
        return NULL;
    }
    uint8_t *at = *buf + *len;
    uint32_t len32 = (uint32_t)payload;
    memset(at, 0, REPLICATOR_FRAME_HEAD);
    at[0] = type;
    memcpy(at + 4, &len32, 4);
    *len += need;
    return at + REPLICATOR_FRAME_HEAD;
}

/* Appends one framed dedup record to the batch's (sync_dedup_flush's emit). */
static ps_status frame_dedup(void *arg, uint64_t id, size_t n, const uint64_t *keys) {
    sync_run *run = arg;
    uint8_t *at = put_frame(run, &run->dbuf, &run->dlen, &run->dcap, JOURNAL_TYPE_DEDUP,
                            JOURNAL_DEDUP_HEAD + n * sizeof *keys);
    if (!at)
        return PS_STATUS_NO_MEMORY;
    journal_encode_dedup(id, n, keys, at);
    run->dcount++;
    return PS_STATUS_OK;
}

/* The length of the dedup frames from `at` that fit `records` records and `bytes`
 * bytes (at least one); *ret_count gets their count. */
static size_t dedup_span(const sync_run *run, size_t at, uint32_t records, size_t bytes,
                         uint32_t *ret_count) {
    size_t len = 0;
    uint32_t count = 0;
    while (at + len < run->dlen && count < records) {
        uint32_t flen;
        memcpy(&flen, run->dbuf + at + len + 4, 4);
        size_t need = REPLICATOR_FRAME_HEAD + flen;
        if (count > 0 && len + need > bytes)
            break;
        len += need;
        count++;
    }
    *ret_count = count;
    return len;
}

/* Sends the batch: its images and, after them in the same call, the dedup records of
 * their keys (a backup installs and learns in one call, REPLICATOR_MAX_SYNC_RECORDS).
 * Only records past the call's bytes (more than about 32 MiB of them: a request memory
 * far above its default) follow in the next calls; `resume` goes with the last. */
static ps_status flush(sync_run *run, uint64_t resume) {
    run->dlen = 0;
    run->dcount = 0;
    ps_status st = run->sd ? sync_dedup_flush(run->sd, frame_dedup, run) : PS_STATUS_OK;
    if (st != PS_STATUS_OK)
        return st;
    const size_t max_bytes = 3 * (size_t)run->t->r->opts.max_batch_bytes; /* < 64 MiB */
    size_t at = 0;                                                        /* dedup bytes sent */
    uint32_t dn = 0;
    size_t dlen = dedup_span(run, 0, REPLICATOR_MAX_SYNC_RECORDS - run->count,
                             max_bytes > run->len ? max_bytes - run->len : 0, &dn);
    rpc_bytes_part parts[2];
    size_t n_parts = 0;
    if (run->len)
        parts[n_parts++] = (rpc_bytes_part){run->buf, run->len, NULL, NULL};
    if (dlen)
        parts[n_parts++] = (rpc_bytes_part){run->dbuf, dlen, NULL, NULL};
    at = dlen;
    st = send_call(run, parts, n_parts, run->count + dn, at == run->dlen ? resume : 0);
    while (st == PS_STATUS_OK && at < run->dlen) {
        dlen = dedup_span(run, at, REPLICATOR_MAX_SYNC_RECORDS, max_bytes, &dn);
        rpc_bytes_part more = {run->dbuf + at, dlen, NULL, NULL};
        at += dlen;
        st = send_call(run, &more, 1, dn, at == run->dlen ? resume : 0);
    }
    if (st != PS_STATUS_OK)
        return st;
    run->bytes += run->len;
    run->len = 0;
    run->count = 0;
    return PS_STATUS_OK;
}

/* Appends one framed image record, whose keys are keys[0..n): the batch is sent first
 * when the image and the dedup records of its keys would not fit it. The records are
 * of requests applied at or before the sync's point: a later one's changes are queued
 * behind the sync and remembered as they apply. */
static ps_status add_record(sync_run *run, const image_encoded *e, size_t n, const uint64_t *keys) {
    ps_status st = PS_STATUS_OK;
    size_t add_records = 0, add_bytes = 0, records = 0, bytes = 0;
    if (run->sd) {
        if (sync_dedup_stage(run->sd, n, keys, &add_records, &add_bytes) != PS_STATUS_OK) {
            ps_set_err(run->err, run->err_len, "out of memory for the request ids of a sync");
            return PS_STATUS_NO_MEMORY;
        }
        sync_dedup_pending(run->sd, &records, &bytes);
    }
    const replicator *r = run->t->r;
    size_t need = REPLICATOR_FRAME_HEAD + e->len;
    if (run->len && (run->len + need + bytes + add_bytes > r->opts.max_batch_bytes ||
                     run->count + 1 > REPLICATOR_MAX_BATCH_RECORDS ||
                     run->count + 1 + records + add_records > REPLICATOR_MAX_SYNC_RECORDS)) {
        if ((st = flush(run, 0)) != PS_STATUS_OK)
            return st;
    }
    uint8_t *at = put_frame(run, &run->buf, &run->len, &run->cap, IMAGE_JOURNAL_TYPE, e->len);
    if (!at)
        return PS_STATUS_NO_MEMORY;
    run->count++;
    image_encoded_copy(e, at);
    if (run->sd)
        sync_dedup_commit(run->sd);
    return PS_STATUS_OK;
}

/* The export's figures, before any image: the chunks this sync sends (progress). */
static ps_status sync_begin(void *arg, const image_export_info *info) {
    sync_run *run = arg;
    replicator *r = run->t->r;
    if (run->sd_failed ||
        (run->sd && sync_dedup_index(run->sd, sync_accept, run) != PS_STATUS_OK)) {
        ps_set_err(run->err, run->err_len, "out of memory for the request ids of a sync");
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_lock(&r->lock);
    run->t->sync_total = info->chunks;
    run->t->sync_done = 0;
    run->t->sync_bytes_total = info->chunk_bytes;
    run->t->sync_bytes_done = 0;
    pthread_mutex_unlock(&r->lock);
    return PS_STATUS_OK;
}

static ps_status sync_chunk(void *arg, const image_chunk *c) {
    sync_run *run = arg;
    replicator *r = run->t->r;
    pthread_mutex_lock(&r->lock);
    if (run->t->sync_done < run->t->sync_total)
        run->t->sync_done++;
    uint64_t b = image_chunk_bytes(c->len, c->kind),
             rest = run->t->sync_bytes_total - run->t->sync_bytes_done;
    run->t->sync_bytes_done += b < rest ? b : rest;
    pthread_mutex_unlock(&r->lock);
    image_encoded e;
    ps_status st = image_encode_chunk(c, &e, run->err, run->err_len);
    return st == PS_STATUS_OK ? add_record(run, &e, 1, &c->key) : st;
}

static ps_status sync_rows(void *arg, const image_rows *rows) {
    sync_run *run = arg;
    image_encoded e;
    ps_status st = image_encode_rows(rows, &e, run->err, run->err_len);
    if (st != PS_STATUS_OK)
        return st;
    if (run->sd) { /* the keys an install forgets: ps_keys_rows of the table's */
        if (!ps_reserve((void **)&run->rkeys, &run->rkeys_cap, rows->n, sizeof *run->rkeys, 64)) {
            ps_set_err(run->err, run->err_len, "out of memory for the keys of %zu rows", rows->n);
            return PS_STATUS_NO_MEMORY;
        }
        ps_keys_rows(ps_key_table(rows->model, rows->table), rows->n, rows->ids, run->rkeys);
    }
    return add_record(run, &e, rows->n, run->rkeys);
}

/* Copies what the sync needs of the replicator's view (lock held): the rings, and the
 * target maps with only this target kept. FAILED_PRECONDITION: not on the ring (primary
 * of nothing: the sync sends no image). */
static ps_status run_snapshot_locked(replicator *r, sync_run *run) {
    run->full = run->t->full;
    run->num = ++r->syncs_begun;
    run->pending_epoch = r->pending_epoch;
    run->view = r->view;
    if (!r->ring || r->self_cur == UINT32_MAX)
        return PS_STATUS_FAILED_PRECONDITION;
    run->self = r->self_cur;
    run->copies = r->replication;
    run->idx_settled = run->t->idx_settled;
    if (hashring_clone(r->ring, &run->ring) != PS_STATUS_OK ||
        (r->pending && hashring_clone(r->pending, &run->pending) != PS_STATUS_OK) ||
        (r->settled && hashring_clone(r->settled, &run->settled) != PS_STATUS_OK) ||
        !(run->cur_t = calloc(r->n_cur + 1, sizeof *run->cur_t)) ||
        !(run->pend_t = calloc(r->n_pend + 1, sizeof *run->pend_t)))
        return PS_STATUS_NO_MEMORY;
    for (uint32_t i = 0; i < r->n_cur; i++)
        run->cur_t[i] = r->cur_t[i] == run->t ? run->t : NULL;
    for (uint32_t i = 0; i < r->n_pend; i++)
        run->pend_t[i] = r->pend_t[i] == run->t ? run->t : NULL;
    return PS_STATUS_OK;
}

static void run_free(sync_run *run) {
    hashring_destroy(run->ring);
    hashring_destroy(run->pending);
    hashring_destroy(run->settled);
    free(run->cur_t);
    free(run->pend_t);
    free(run->buf);
    free(run->dbuf);
    free(run->rkeys);
    sync_dedup_destroy(run->sd);
}

ps_status repl_sync(repl_target *t, char *err, size_t err_len) {
    replicator *r = t->r;
    sync_run run = {.t = t, .err = err, .err_len = err_len};
    pthread_mutex_lock(&r->lock);
    ps_status st = run_snapshot_locked(r, &run);
    pthread_mutex_unlock(&r->lock);
    if (st == PS_STATUS_NO_MEMORY) {
        ps_set_err(err, err_len, "out of memory copying the rings for a sync");
        run_free(&run);
        return st;
    }
    if (st == PS_STATUS_OK) {
        image_export_opts eo = {.chunks = r->opts.chunks,
                                .rows = r->opts.rows,
                                .accept = sync_accept,
                                .accept_arg = &run,
                                .position = sync_point,
                                .position_arg = &run,
                                .visit_begin = sync_begin,
                                .visit_chunk = sync_chunk,
                                .visit_rows = sync_rows,
                                .arg = &run};
        image_export_info info;
        st = image_export(&eo, &info, err, err_len);
    } else { /* primary of nothing: no image, only the point */
        sync_point(&run);
        st = PS_STATUS_OK;
    }
    if (st == PS_STATUS_OK)
        st = flush(&run, run.resume ? run.resume : 1);
    run_free(&run);
    pthread_mutex_lock(&r->lock);
    t->sync_total = t->sync_done = 0; /* nothing left: done, or to start again */
    t->sync_bytes_total = t->sync_bytes_done = 0;
    pthread_mutex_unlock(&r->lock);
    if (st == PS_STATUS_OK) {
        pthread_mutex_lock(&r->lock);
        r->syncs++;
        r->sync_bytes += run.bytes;
        if (!t->need_sync) /* nothing was lost meanwhile */
            t->full = false;
        t->synced_for = run.pending_epoch;
        pthread_mutex_unlock(&r->lock);
    }
    return st;
}
