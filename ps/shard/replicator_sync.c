/* replicator_sync.c: a backup's sync (see replicator.h): the images of every chunk and
 * row this shard is primary for and the backup owns, exported at one point of the
 * journal (image_export holds every store still while position() runs; at that moment
 * the target's queue is dropped, since the images cover it, and later changes queue
 * behind the sync), sent in batches of framed image records, the last batch telling the
 * backup which record number the stream resumes with. Copies each image into the batch
 * (a sync is bulk work; the images of a chunk are pinned blocks until then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replicator_internal.h"
#include "util.h"

typedef struct sync_run {
    repl_target *t;
    hashring *ring;    /* the ring the sync is for (a copy) */
    uint32_t self, me; /* this shard's and the target's ring indices */
    uint32_t copies;   /* R */
    uint8_t *buf;      /* the batch being filled */
    size_t len, cap;
    uint32_t count;
    uint64_t resume; /* the stream number after the point */
    uint64_t bytes;  /* image bytes sent */
    char *err;
    size_t err_len;
} sync_run;

/* The target owns the key and this shard is its primary. */
static bool sync_accept(void *arg, uint64_t key) {
    const sync_run *run = arg;
    uint32_t o[HASHRING_MAX_REPLICAS];
    uint32_t got = hashring_owners(run->ring, key, run->copies, o);
    if (got < 2 || o[0] != run->self)
        return false;
    for (uint32_t i = 1; i < got; i++)
        if (o[i] == run->me)
            return true;
    return false;
}

/* With every store held still: the point the images stand for. The queue goes (the
 * images cover it); changes from now on queue behind the sync. */
static uint64_t sync_point(void *arg) {
    sync_run *run = arg;
    replicator *r = run->t->r;
    uint64_t pos = r->opts.position ? r->opts.position(r->opts.position_arg) : 0;
    pthread_mutex_lock(&r->lock);
    repl_target *t = run->t;
    repl_drop_queue_locked(t);
    t->need_sync = false;
    t->syncing = true;
    t->sync_pos = pos;
    run->resume = t->next_num;
    pthread_mutex_unlock(&r->lock);
    return pos;
}

static ps_status flush(sync_run *run, uint64_t resume) {
    rpc_bytes_part part = {run->buf, run->len, NULL, NULL};
    uint64_t applied = 0, inc = 0;
    ps_status st = repl_send(run->t, &part, run->len ? 1 : 0, run->count, 0, true, resume, &applied,
                             &inc, run->err, run->err_len);
    if (st != PS_STATUS_OK)
        return st;
    run->bytes += run->len;
    run->len = 0;
    run->count = 0;
    if (resume) {
        replicator *r = run->t->r;
        pthread_mutex_lock(&r->lock);
        run->t->peer_inc = inc;
        pthread_mutex_unlock(&r->lock);
    }
    return PS_STATUS_OK;
}

/* Appends one framed image record, sending the batch first when it is full. */
static ps_status add_record(sync_run *run, const image_encoded *e) {
    size_t need = REPLICATOR_FRAME_HEAD + e->len;
    replicator *r = run->t->r;
    if (run->len &&
        (run->len + need > r->opts.max_batch_bytes || run->count == REPLICATOR_MAX_BATCH_RECORDS)) {
        ps_status st = flush(run, 0);
        if (st != PS_STATUS_OK)
            return st;
    }
    if (run->len + need > run->cap) {
        size_t cap = run->cap ? run->cap : 1u << 20;
        while (cap < run->len + need)
            cap *= 2;
        uint8_t *grown = realloc(run->buf, cap);
        if (!grown) {
            ps_set_err(run->err, run->err_len, "out of memory for a sync batch of %zu bytes", cap);
            return PS_STATUS_NO_MEMORY;
        }
        run->buf = grown;
        run->cap = cap;
    }
    uint8_t *at = run->buf + run->len;
    uint32_t len = (uint32_t)e->len;
    memset(at, 0, REPLICATOR_FRAME_HEAD);
    at[0] = IMAGE_JOURNAL_TYPE;
    memcpy(at + 4, &len, 4);
    image_encoded_copy(e, at + REPLICATOR_FRAME_HEAD);
    run->len += need;
    run->count++;
    return PS_STATUS_OK;
}

static ps_status sync_chunk(void *arg, const image_chunk *c) {
    sync_run *run = arg;
    image_encoded e;
    ps_status st = image_encode_chunk(c, &e, run->err, run->err_len);
    return st == PS_STATUS_OK ? add_record(run, &e) : st;
}

static ps_status sync_rows(void *arg, const image_rows *rows) {
    sync_run *run = arg;
    image_encoded e;
    ps_status st = image_encode_rows(rows, &e, run->err, run->err_len);
    return st == PS_STATUS_OK ? add_record(run, &e) : st;
}

ps_status repl_sync(repl_target *t, char *err, size_t err_len) {
    replicator *r = t->r;
    sync_run run = {.t = t, .err = err, .err_len = err_len};
    pthread_mutex_lock(&r->lock);
    ps_status st = PS_STATUS_OK;
    uint32_t me = UINT32_MAX;
    if (!r->ring || r->self_index == UINT32_MAX || !hashring_find(r->ring, t->id, &me))
        st = PS_STATUS_FAILED_PRECONDITION; /* no ring with both of us: nothing to hold */
    else if ((st = hashring_clone(r->ring, &run.ring)) == PS_STATUS_OK) {
        run.self = r->self_index;
        run.me = me;
        run.copies = r->replication;
    }
    pthread_mutex_unlock(&r->lock);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s",
                   st == PS_STATUS_NO_MEMORY ? "out of memory copying the ring"
                                             : "not on one ring with it");
        return st;
    }
    image_export_opts eo = {.chunks = r->opts.chunks,
                            .rows = r->opts.rows,
                            .accept = sync_accept,
                            .accept_arg = &run,
                            .position = sync_point,
                            .position_arg = &run,
                            .visit_chunk = sync_chunk,
                            .visit_rows = sync_rows,
                            .arg = &run};
    image_export_info info;
    st = image_export(&eo, &info, err, err_len);
    if (st == PS_STATUS_OK)
        st = flush(&run, run.resume ? run.resume : 1);
    free(run.buf);
    hashring_destroy(run.ring);
    if (st == PS_STATUS_OK) {
        pthread_mutex_lock(&r->lock);
        r->syncs++;
        r->sync_bytes += run.bytes;
        pthread_mutex_unlock(&r->lock);
    }
    return st;
}
