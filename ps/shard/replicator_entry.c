/* replicator_entry.c: builds the framed journal record one backup gets of a change:
 * the whole change when the backup owns every key of it, else the subset of its keys
 * (push_subset.h: the values sliced out of the request as it lies, not copied; rows'
 * values, small, are gathered). See replicator.h. */
#include <stdlib.h>
#include <string.h>

#include "replicator_internal.h"
#include "util.h"

void repl_entry_free(repl_entry *e) {
    if (!e)
        return;
    journal_encoded_free(&e->enc);
    push_subset_free(&e->subset);
    free(e->keys);
    free(e->values);
    free(e);
}

/* The frame head: type, three zero bytes, the payload's length. */
static repl_entry *entry_finish(repl_entry *e, uint8_t type) {
    uint32_t len = (uint32_t)e->enc.len;
    e->head[0] = type;
    memcpy(e->head + 4, &len, 4);
    e->bytes = REPLICATOR_FRAME_HEAD + e->enc.len;
    return e;
}

repl_entry *repl_entry_push(const store_push *p, const uint32_t *idx, size_t m) {
    repl_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    const store_push *sub = p;
    if (idx) {
        if (push_subset_make(p, idx, m, &e->subset) != PS_STATUS_OK)
            goto fail;
        sub = &e->subset.push;
    }
    if (journal_encode_push(sub, &e->enc) != PS_STATUS_OK)
        goto fail;
    return entry_finish(e, JOURNAL_TYPE_PUSH);
fail:
    repl_entry_free(e);
    return NULL;
}

repl_entry *repl_entry_rows(const row_push *p, const uint32_t *idx, size_t m) {
    repl_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    row_push sub = *p;
    if (idx) {
        size_t row_bytes = (size_t)p->spec->dim * 4;
        e->keys = malloc(m * sizeof *e->keys + 1); /* the ids */
        e->values = malloc(m * row_bytes + 1);
        if (!e->keys || !e->values)
            goto fail;
        ps_bytes one;
        ps_bytes_cursor cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
        size_t at = 0; /* the row the cursor is at */
        for (size_t j = 0; j < m; j++) {
            if (idx[j] < at) { /* behind: from the start again */
                cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
                at = 0;
            }
            e->keys[j] = p->ids[idx[j]];
            (void)ps_bytes_take(&cur, NULL, (idx[j] - at) * row_bytes);
            (void)ps_bytes_take(&cur, e->values + j * row_bytes, row_bytes);
            at = idx[j] + 1;
        }
        sub.n = m;
        sub.ids = e->keys;
        sub.values = e->values;
        sub.values_len = m * row_bytes;
        sub.pieces = NULL;
        sub.n_pieces = 0;
    }
    if (journal_encode_rows(&sub, &e->enc) != PS_STATUS_OK)
        goto fail;
    return entry_finish(e, JOURNAL_TYPE_ROWS);
fail:
    repl_entry_free(e);
    return NULL;
}

repl_entry *repl_entry_delete(const uint64_t *keys, size_t n, const uint32_t *idx, size_t m) {
    repl_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    /* copied always: a delete's keys may be a peer's copy's, freed once applied (a
       shard that is the keys' primary now sends deletes on as it applies them) */
    size_t k = idx ? m : n;
    if (!(e->keys = malloc(k * sizeof *e->keys + 1)))
        goto fail;
    for (size_t j = 0; j < k; j++)
        e->keys[j] = idx ? keys[idx[j]] : keys[j];
    if (journal_encode_delete(k, e->keys, &e->enc) != PS_STATUS_OK)
        goto fail;
    return entry_finish(e, JOURNAL_TYPE_DELETE);
fail:
    repl_entry_free(e);
    return NULL;
}

repl_entry *repl_entry_forwarded(repl_entry *e, uint8_t type) {
    if (!e)
        return NULL;
    uint8_t *bytes = malloc(e->enc.len + 1);
    struct iovec *one = malloc(sizeof *one);
    if (!bytes || !one) {
        free(bytes);
        free(one);
        repl_entry_free(e);
        return NULL;
    }
    size_t at = 0;
    for (int i = 0; i < e->enc.n_iov; i++) {
        memcpy(bytes + at, e->enc.iov[i].iov_base, e->enc.iov[i].iov_len);
        at += e->enc.iov[i].iov_len;
    }
    journal_mark_look_up(type, bytes, at);
    journal_encoded_free(&e->enc); /* what it pointed into goes too */
    push_subset_free(&e->subset);
    free(e->keys);
    free(e->values);
    e->keys = NULL;
    *one = (struct iovec){bytes, at};
    e->values = bytes; /* owned from now on */
    e->enc.iov = one;
    e->enc.n_iov = 1;
    e->enc.len = at;
    return e;
}
