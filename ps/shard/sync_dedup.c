/* sync_dedup.c: see sync_dedup.h. The export's (key, request) pairs of the accepted keys,
 * sorted by key, answer "which requests applied to this image's keys" by binary search;
 * a batch keeps its (request, key) pairs and counts its distinct requests with a stamp
 * per request, so the cost of an image's records is known before the image joins. */
#include "sync_dedup.h"

#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "util.h"

typedef struct sync_pair {
    uint64_t key;
    uint64_t ent; /* index into ents */
} sync_pair;

struct sync_dedup {
    dedup_entry *ents;
    size_t n_ents;
    sync_pair *refs; /* the accepted keys of every entry, sorted by key */
    size_t n_refs;
    /* the batch: pairs[0..n_pairs) in it, pairs[n_pairs..n_pairs + n_staged) staged */
    sync_pair *pairs;
    size_t n_pairs, n_staged, cap_pairs;
    uint32_t *in_batch; /* per entry: the batch number it was last counted in */
    uint32_t *staged;   /* per entry: the stage number it was last counted in */
    uint32_t batch, stage;
    size_t records, bytes, frame_head;
    uint64_t *keys; /* flush scratch: one request's keys */
    size_t cap_keys;
};

ps_status sync_dedup_export(dedup *requests, uint64_t point, size_t frame_head, sync_dedup **ret) {
    sync_dedup *sd = calloc(1, sizeof *sd);
    if (!sd)
        return PS_STATUS_NO_MEMORY;
    sd->batch = sd->stage = 1;
    sd->frame_head = frame_head;
    if (dedup_export(requests, point, &sd->ents, &sd->n_ents) != PS_STATUS_OK ||
        !(sd->in_batch = calloc(sd->n_ents + 1, sizeof *sd->in_batch)) ||
        !(sd->staged = calloc(sd->n_ents + 1, sizeof *sd->staged))) {
        sync_dedup_destroy(sd);
        return PS_STATUS_NO_MEMORY;
    }
    *ret = sd;
    return PS_STATUS_OK;
}

void sync_dedup_destroy(sync_dedup *sd) {
    if (!sd)
        return;
    free(sd->ents);
    free(sd->refs);
    free(sd->pairs);
    free(sd->in_batch);
    free(sd->staged);
    free(sd->keys);
    free(sd);
}

static int by_key(const void *a, const void *b) {
    const sync_pair *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->ent < y->ent ? -1 : x->ent > y->ent;
}

static int by_ent(const void *a, const void *b) {
    const sync_pair *x = a, *y = b;
    if (x->ent != y->ent)
        return x->ent < y->ent ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

ps_status sync_dedup_index(sync_dedup *sd, bool (*accept)(void *arg, uint64_t key), void *arg) {
    size_t total = 0;
    for (size_t i = 0; i < sd->n_ents; i++)
        total += sd->ents[i].n;
    free(sd->refs);
    if (!(sd->refs = malloc(total * sizeof *sd->refs + 1)))
        return PS_STATUS_NO_MEMORY;
    size_t m = 0;
    for (size_t i = 0; i < sd->n_ents; i++)
        for (size_t j = 0; j < sd->ents[i].n; j++)
            if (!accept || accept(arg, sd->ents[i].keys[j]))
                sd->refs[m++] = (sync_pair){.key = sd->ents[i].keys[j], .ent = i};
    if (m)
        qsort(sd->refs, m, sizeof *sd->refs, by_key);
    sd->n_refs = m;
    return PS_STATUS_OK;
}

/* The first ref whose key is not below `key`. */
static size_t lower_bound(const sync_dedup *sd, uint64_t key) {
    size_t lo = 0, hi = sd->n_refs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sd->refs[mid].key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

ps_status sync_dedup_stage(sync_dedup *sd, size_t n, const uint64_t *keys, size_t *ret_records,
                           size_t *ret_bytes) {
    sd->n_staged = 0;
    sd->stage++;
    size_t records = 0, bytes = 0;
    for (size_t i = 0; i < n && sd->n_refs; i++) {
        for (size_t j = lower_bound(sd, keys[i]); j < sd->n_refs && sd->refs[j].key == keys[i];
             j++) {
            size_t at = sd->n_pairs + sd->n_staged;
            if (!ps_reserve((void **)&sd->pairs, &sd->cap_pairs, at + 1, sizeof *sd->pairs, 256))
                return PS_STATUS_NO_MEMORY;
            sd->pairs[at] = sd->refs[j];
            sd->n_staged++;
            size_t e = sd->refs[j].ent;
            bytes += sizeof(uint64_t);
            if (sd->in_batch[e] != sd->batch && sd->staged[e] != sd->stage) {
                sd->staged[e] = sd->stage; /* a record more, counted once */
                records++;
                bytes += sd->frame_head + JOURNAL_DEDUP_HEAD;
            }
        }
    }
    *ret_records = records;
    *ret_bytes = bytes;
    return PS_STATUS_OK;
}

void sync_dedup_commit(sync_dedup *sd) {
    for (size_t i = sd->n_pairs; i < sd->n_pairs + sd->n_staged; i++) {
        size_t e = sd->pairs[i].ent;
        sd->bytes += sizeof(uint64_t);
        if (sd->in_batch[e] != sd->batch) {
            sd->in_batch[e] = sd->batch;
            sd->records++;
            sd->bytes += sd->frame_head + JOURNAL_DEDUP_HEAD;
        }
    }
    sd->n_pairs += sd->n_staged;
    sd->n_staged = 0;
}

void sync_dedup_pending(const sync_dedup *sd, size_t *ret_records, size_t *ret_bytes) {
    *ret_records = sd->records;
    *ret_bytes = sd->bytes;
}

ps_status sync_dedup_flush(sync_dedup *sd,
                           ps_status (*emit)(void *arg, uint64_t id, size_t n,
                                             const uint64_t *keys),
                           void *arg) {
    ps_status st = PS_STATUS_OK;
    if (sd->n_pairs) /* (pairs may be NULL: nothing ever staged) */
        qsort(sd->pairs, sd->n_pairs, sizeof *sd->pairs, by_ent);
    for (size_t a = 0, b; a < sd->n_pairs && st == PS_STATUS_OK; a = b) {
        for (b = a + 1; b < sd->n_pairs && sd->pairs[b].ent == sd->pairs[a].ent; b++)
            ;
        if (!ps_reserve((void **)&sd->keys, &sd->cap_keys, b - a, sizeof *sd->keys, 256))
            return PS_STATUS_NO_MEMORY;
        for (size_t i = a; i < b; i++)
            sd->keys[i - a] = sd->pairs[i].key;
        const uint64_t id = sd->ents[sd->pairs[a].ent].id;
        for (size_t at = 0; at < b - a && st == PS_STATUS_OK; at += JOURNAL_DEDUP_MAX_KEYS) {
            size_t k = b - a - at < JOURNAL_DEDUP_MAX_KEYS ? b - a - at : JOURNAL_DEDUP_MAX_KEYS;
            st = emit(arg, id, k, sd->keys + at);
        }
    }
    /* the staged pairs (an image not in the batch yet) start the next one */
    if (sd->n_staged)
        memmove(sd->pairs, sd->pairs + sd->n_pairs, sd->n_staged * sizeof *sd->pairs);
    sd->n_pairs = 0;
    sd->batch++;
    sd->records = sd->bytes = 0;
    return st;
}
