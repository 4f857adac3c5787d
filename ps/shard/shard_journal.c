/* shard_journal.c: where the stores write what they apply: the write-ahead log (when
 * the shard has one) and the replicator (the keys' backups), in that order and under
 * one lock, so the position a change gets (its WAL LSN, or a counter without a log)
 * orders both the log and every backup's queue alike. The push handlers then wait on
 * that position: shard_wait_durable. Under the same lock each request id's keys are
 * checked and remembered (dedup.h): two tries of one request never both apply a key.
 * See handlers.h. */
#include <stdio.h>
#include <stdlib.h>

#include "handlers.h"
#include "journal.h"
#include "util.h"

/* The longest a push waits for its backups when its call has no deadline of its own. */
#define REPLICATION_WAIT_MAX_MS 60000

/* Refuses a change whose request applied some of its keys meanwhile (lock held). A
 * first try is looked up only if another try of its request came (dedup_check). */
static ps_status dedup_claim(shard_ctx *ctx, uint64_t id, size_t n, const uint64_t *keys,
                             bool first_try, char *err, size_t err_len) {
    if (!id || dedup_check(ctx->dedup, id, n, keys, first_try) == 0)
        return PS_STATUS_OK;
    ps_set_err(err, err_len,
               "request %016llx: an earlier try of it applied some of these keys meanwhile; "
               "nothing was applied by this one: send it again",
               (unsigned long long)id);
    return PS_STATUS_FAILED_PRECONDITION;
}

/* The journal's common path (lock held): in a replay only the request is remembered;
 * otherwise dedup, then the log (or a counter), then the request is remembered. *append
 * writes the record. first_try: see dedup_check (a primary's copy counts as one: the
 * primary checked it). */
typedef ps_status (*append_fn)(shard_ctx *ctx, const void *change, uint64_t *ret_pos, char *err,
                               size_t err_len);

static ps_status journal_locked(shard_ctx *ctx, uint64_t id, size_t n, const uint64_t *keys,
                                bool first_try, append_fn append, const void *change,
                                uint64_t *ret_pos, char *err, size_t err_len) {
    if (ctx->replaying) { /* a restart's replay: remember, write nothing */
        if (keys)
            (void)dedup_record(ctx->dedup, id, n, keys, 0);
        *ret_pos = 0;
        return PS_STATUS_OK;
    }
    ps_status st = keys ? dedup_claim(ctx, id, n, keys, first_try, err, err_len) : PS_STATUS_OK;
    if (st != PS_STATUS_OK)
        return st;
    if (ctx->wal)
        st = append(ctx, change, ret_pos, err, err_len);
    else
        *ret_pos = ++ctx->journal_pos;
    if (st == PS_STATUS_OK && keys) /* no memory: only a retry's safety is lost */
        (void)dedup_record(ctx->dedup, id, n, keys, *ret_pos);
    return st;
}

static ps_status append_push(shard_ctx *ctx, const void *change, uint64_t *ret_pos, char *err,
                             size_t err_len) {
    store_journal j = journal_for(ctx->wal);
    return j.push(j.arg, change, ret_pos, err, err_len);
}

static ps_status tee_push(void *arg, const store_push *p, uint64_t *ret_pos, char *err,
                          size_t err_len) {
    shard_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->journal_lock);
    ps_status st =
        journal_locked(ctx, p->request_id, p->n, p->request_id ? p->keys : NULL,
                       p->first_try || p->from_peer, append_push, p, ret_pos, err, err_len);
    if (st == PS_STATUS_OK && ctx->repl && !ctx->replaying)
        replicator_push(ctx->repl, *ret_pos, p);
    pthread_mutex_unlock(&ctx->journal_lock);
    return st;
}

typedef struct delete_change {
    size_t n;
    const uint64_t *keys;
} delete_change;

static ps_status append_delete(shard_ctx *ctx, const void *change, uint64_t *ret_pos, char *err,
                               size_t err_len) {
    const delete_change *d = change;
    store_journal j = journal_for(ctx->wal);
    return j.del(j.arg, d->n, d->keys, ret_pos, err, err_len);
}

static ps_status tee_delete(void *arg, size_t n, const uint64_t *keys, uint64_t *ret_pos, char *err,
                            size_t err_len) {
    shard_ctx *ctx = arg;
    delete_change d = {n, keys};
    pthread_mutex_lock(&ctx->journal_lock);
    ps_status st = journal_locked(ctx, 0, n, NULL, true, append_delete, &d, ret_pos, err, err_len);
    if (st == PS_STATUS_OK && ctx->repl && !ctx->replaying)
        replicator_delete(ctx->repl, *ret_pos, n, keys);
    pthread_mutex_unlock(&ctx->journal_lock);
    return st;
}

static ps_status append_rows(shard_ctx *ctx, const void *change, uint64_t *ret_pos, char *err,
                             size_t err_len) {
    row_journal j = journal_rows_for(ctx->wal);
    return j.push(j.arg, change, ret_pos, err, err_len);
}

static ps_status tee_rows(void *arg, const row_push *p, uint64_t *ret_pos, char *err,
                          size_t err_len) {
    shard_ctx *ctx = arg;
    uint64_t *made = NULL; /* the rows' keys, for dedup, unless the push brings them */
    if (p->request_id && !p->keys) {
        if (!(made = malloc(p->n * sizeof *made + 1))) {
            ps_set_err(err, err_len, "out of memory for %zu rows' keys", p->n);
            return PS_STATUS_NO_MEMORY;
        }
        ps_keys_rows(ps_key_table(p->model, p->table), p->n, p->ids, made);
    }
    const uint64_t *keys = !p->request_id ? NULL : p->keys ? p->keys : made;
    pthread_mutex_lock(&ctx->journal_lock);
    ps_status st = journal_locked(ctx, p->request_id, p->n, keys, p->first_try || p->from_peer,
                                  append_rows, p, ret_pos, err, err_len);
    if (st == PS_STATUS_OK && ctx->repl && !ctx->replaying)
        replicator_rows(ctx->repl, *ret_pos, p);
    pthread_mutex_unlock(&ctx->journal_lock);
    free(made);
    return st;
}

typedef struct rows_remove_change {
    const char *model, *table;
    size_t n;
    const uint64_t *ids;
} rows_remove_change;

static ps_status append_rows_remove(shard_ctx *ctx, const void *change, uint64_t *ret_pos,
                                    char *err, size_t err_len) {
    const rows_remove_change *c = change;
    row_journal j = journal_rows_for(ctx->wal);
    return j.remove(j.arg, c->model, c->table, c->n, c->ids, ret_pos, err, err_len);
}

/* Rows the shard drops (gc.h): logged in order with every other change, never sent to
 * backups (the rows are not this shard's to decide for others). */
static ps_status tee_rows_remove(void *arg, const char *model, const char *table, size_t n,
                                 const uint64_t *ids, uint64_t *ret_pos, char *err,
                                 size_t err_len) {
    shard_ctx *ctx = arg;
    rows_remove_change c = {model, table, n, ids};
    pthread_mutex_lock(&ctx->journal_lock);
    ps_status st =
        journal_locked(ctx, 0, n, NULL, true, append_rows_remove, &c, ret_pos, err, err_len);
    pthread_mutex_unlock(&ctx->journal_lock);
    return st;
}

/* An image_journal_fn (image.h): a backup's installs, in the same order as changes. */
static ps_status tee_image(void *arg, const image_encoded *recs, size_t n, uint64_t *ret_pos,
                           char *err, size_t err_len) {
    shard_ctx *ctx = arg;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&ctx->journal_lock);
    if (ctx->wal)
        st = image_journal_wal(ctx->wal, recs, n, ret_pos, err, err_len);
    else
        *ret_pos = ++ctx->journal_pos;
    pthread_mutex_unlock(&ctx->journal_lock);
    return st;
}

ps_status shard_journal_remember(void *arg, uint8_t type, uint64_t lsn, const void *payload,
                                 size_t len) {
    (void)lsn;
    shard_ctx *ctx = arg;
    if (type == IMAGE_JOURNAL_TYPE) { /* what it replaced: what was remembered goes */
        char err[200];
        image_target told = {.replaced = shard_images_replaced, .replaced_arg = ctx};
        /* one that does not decode stops nothing: the snapshot holds its values, and the
           request ids it kept say what they hold */
        (void)image_journal_replay(&told, payload, len, err, sizeof err);
        return PS_STATUS_OK;
    }
    uint64_t id = 0, *keys = NULL;
    size_t n = 0;
    if (journal_request_of(type, payload, len, &id, &keys, &n) == PS_STATUS_OK && id)
        (void)dedup_record(ctx->dedup, id, n, keys, 0); /* no memory: a retry's safety only */
    free(keys);
    return PS_STATUS_OK;
}

ps_status shard_journal_dedup(shard_ctx *ctx, const uint8_t *payload, size_t len,
                              uint64_t *ret_lsn) {
    uint64_t id = 0, *keys = NULL;
    size_t n = 0;
    ps_status st = journal_request_of(JOURNAL_TYPE_DEDUP, payload, len, &id, &keys, &n);
    if (st != PS_STATUS_OK)
        return st;
    pthread_mutex_lock(&ctx->journal_lock);
    if (ctx->wal)
        st = wal_append(ctx->wal, JOURNAL_TYPE_DEDUP, payload, len, ret_lsn);
    else
        *ret_lsn = ++ctx->journal_pos;
    if (st == PS_STATUS_OK)
        st = dedup_record(ctx->dedup, id, n, keys, *ret_lsn);
    pthread_mutex_unlock(&ctx->journal_lock);
    free(keys);
    return st;
}

void shard_images_replaced(void *arg, size_t n, const uint64_t *keys) {
    shard_ctx *ctx = arg;
    dedup_forget(ctx->dedup, n, keys);
}

image_target shard_image_target(shard_ctx *ctx) {
    return (image_target){.chunks = ctx->store,
                          .rows = ctx->rows,
                          .journal = tee_image,
                          .journal_arg = ctx,
                          .replaced = shard_images_replaced,
                          .replaced_arg = ctx};
}

void shard_journal_settle(void *arg) {
    shard_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->journal_lock);
    pthread_mutex_unlock(&ctx->journal_lock);
}

uint64_t shard_journal_position(void *arg) {
    shard_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->journal_lock);
    uint64_t pos = ctx->wal ? wal_last_lsn(ctx->wal) : ctx->journal_pos;
    pthread_mutex_unlock(&ctx->journal_lock);
    return pos;
}

void shard_journal_start(shard_ctx *ctx) {
    store_journal j = {.push = tee_push, .del = tee_delete, .arg = ctx};
    store_set_journal(ctx->store, &j);
    row_journal rj = {.push = tee_rows, .remove = tee_rows_remove, .arg = ctx};
    row_store_set_journal(ctx->rows, &rj);
}

void shard_journal_stop(shard_ctx *ctx) {
    store_set_journal(ctx->store, &(store_journal){0});
    row_store_set_journal(ctx->rows, NULL);
}

ps_status shard_wait_logged(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, const char *what) {
    if (!ctx->wal || pos == 0 || wal_wait(ctx->wal, pos) == PS_STATUS_OK)
        return PS_STATUS_OK;
    char why[RPC_DETAILS_MAX / 2] = "an I/O error";
    wal_failed(ctx->wal, why, sizeof why);
    return rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE,
                         "the %s could not be made durable (write-ahead log: %s): not "
                         "acknowledged; this shard refuses writes until it restarts",
                         what, why);
}

ps_status shard_wait_durable(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, bool fresh,
                             const char *what) {
    if (pos == 0)
        return PS_STATUS_OK;
    ps_status st = PS_STATUS_OK;
    char why[RPC_DETAILS_MAX / 2] = "";
    if (ctx->repl) { /* first: it returns only once nothing references the request */
        int64_t left = rpc_ctx_deadline_ms(rc); /* INT64_MAX: the call has no deadline */
        if (left > REPLICATION_WAIT_MAX_MS)
            left = REPLICATION_WAIT_MAX_MS;
        int64_t deadline = left > 0 ? ps_now_ms() + left : 0;
        st = replicator_wait(ctx->repl, pos, deadline, why, sizeof why);
        if (st == PS_STATUS_OK && replicator_lost(ctx->repl, pos)) {
            if (fresh) { /* its keys' primary now may lack it: the client sends it there */
                snprintf(why, sizeof why,
                         "a ring change came before a new owner of some of its keys had it; "
                         "send it again (with its request id) to their primary now");
                st = PS_STATUS_UNAVAILABLE;
            } else { /* an earlier try's change, still ours (the handler checked): the
                        backups are synced whole, which carries it */
                uint64_t upto = replicator_resync(
                    ctx->repl, pos, shard_journal_position(ctx),
                    "a change a ring change may have kept from it: syncing it whole");
                st = replicator_wait(ctx->repl, upto, deadline, why, sizeof why);
            }
        }
    }
    ps_status logged = shard_wait_logged(ctx, rc, pos, what);
    if (logged != PS_STATUS_OK)
        return logged;
    if (st != PS_STATUS_OK)
        return rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE,
                             "the %s is applied on shard %s but not on every owner of its keys "
                             "(%s): not acknowledged",
                             what, ctx->id, why);
    return PS_STATUS_OK;
}

ps_status shard_ack_wait(void *arg, rpc_ctx *rc, uint64_t pos, bool fresh, const char *what) {
    return shard_wait_durable(arg, rc, pos, fresh, what);
}

ps_status shard_answer_durable(shard_ctx *ctx, rpc_ctx *rc, uint64_t pos, bool fresh,
                               const char *what) {
    if (pos == 0 || ((!ctx->wal || wal_durable_lsn(ctx->wal) >= pos) &&
                     (!ctx->repl || replicator_done(ctx->repl, pos, fresh))))
        return PS_STATUS_OK; /* durable already (no log, no backups): answer now */
    if (ctx->acker && acker_take(ctx->acker, rc, pos, fresh, what) == PS_STATUS_OK)
        return PS_STATUS_OK; /* answered by the acker: rc is not ours any more */
    return shard_wait_durable(ctx, rc, pos, fresh, what);
}

ps_status shard_dedup_push(shard_ctx *ctx, rpc_ctx *rc, const store_push *push, push_subset *rest,
                           size_t *ret_done, uint64_t *ret_pos) {
    *ret_done = 0;
    *ret_pos = 0;
    if (!push->request_id || push->n == 0 || push->first_try) /* the journal checks those */
        return PS_STATUS_OK;
    bool *applied = calloc(push->n + 1, sizeof *applied);
    ps_status st = PS_STATUS_OK;
    if (!applied) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys", push->n);
        goto out;
    }
    size_t done = dedup_lookup(ctx->dedup, push->request_id, push->n, push->keys, applied, ret_pos);
    if (done > 0 && ctx->repl &&
        replicator_moved(ctx->repl, push->checked_epoch, push->n, push->keys)) {
        st = rpc_ctx_error(rc, PS_STATUS_UNAVAILABLE,
                           "request %016llx: the ring changed while it was checked here; send "
                           "it again to the keys' primary now",
                           (unsigned long long)push->request_id);
        goto out;
    }
    if (done > 0 && done < push->n && push_subset_skip(push, applied, rest) != PS_STATUS_OK) {
        st = rpc_ctx_error(rc, PS_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu keys",
                           push->n - done);
        goto out;
    }
    *ret_done = done;
out:
    free(applied);
    return st;
}
