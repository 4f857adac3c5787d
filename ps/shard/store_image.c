/* store_image.c: the chunk store's side of images (image_stores.h): a pin of every
 * accepted chunk at one moment, read without the lock, and installs that replace chunks
 * whole. A pin holds a reference to each chunk's value and state blocks, which no push
 * writes while they are shared (store.h), and a copy of the rest. */
#include <stdlib.h>
#include <string.h>

#include "image_stores.h"
#include "store_internal.h"
#include "store_values.h"
#include "util.h"

/* ------------------------------------------------------------------ pins --- */

typedef struct pinned_chunk {
    uint64_t key, version, steps;
    uint32_t len;
    optim_kind kind;
    char *name;                /* a copy, or NULL for none */
    update_log_values *values; /* one reference each */
    update_log_values *state;  /* NULL without state */
} pinned_chunk;

struct store_pin {
    pinned_chunk *chunks;
    size_t n;    /* pinned */
    size_t next; /* the first not yet visited (and not yet released) */
};

static void pinned_release(pinned_chunk *p) {
    update_log_values_unref(p->values);
    update_log_values_unref(p->state);
    free(p->name);
    memset(p, 0, sizeof *p);
}

void store_pin_destroy(store_pin *pin) {
    if (!pin)
        return;
    for (size_t i = pin->next; i < pin->n; i++)
        pinned_release(&pin->chunks[i]);
    free(pin->chunks);
    free(pin);
}

ps_status store_pin_create(store *s, image_accept_fn accept, void *accept_arg, image_held_fn held,
                           void *held_arg, store_pin **ret_pin, store_pin_info *ret_info) {
    store_pin *pin = calloc(1, sizeof *pin);
    if (!pin)
        return PS_STATUS_NO_MEMORY;
    ps_status st = PS_STATUS_OK;
    uint64_t max_version = 0, bytes = 0;
    pthread_rwlock_wrlock(&s->lock);
    if (held && (st = held(held_arg)) != PS_STATUS_OK)
        goto unlock;
    pin->chunks = malloc((s->count ? s->count : 1) * sizeof *pin->chunks);
    if (!pin->chunks) {
        st = PS_STATUS_NO_MEMORY;
        goto unlock;
    }
    for (size_t i = 0; i < s->cap; i++) {
        const store_chunk *c = s->slots[i];
        if (!c || (accept && !accept(accept_arg, c->key)))
            continue;
        pinned_chunk *p = &pin->chunks[pin->n];
        *p = (pinned_chunk){.key = c->key,
                            .version = c->version,
                            .steps = c->steps,
                            .len = c->len,
                            .kind = c->state_kind,
                            .name = c->name ? strdup(c->name) : NULL};
        if (c->name && !p->name) {
            st = PS_STATUS_NO_MEMORY;
            goto unlock;
        }
        update_log_values_ref(c->values);
        p->values = c->values;
        if (c->state) {
            update_log_values_ref(c->state);
            p->state = c->state;
        }
        max_version = c->version > max_version ? c->version : max_version;
        bytes += image_chunk_bytes(c->len, c->state_kind);
        pin->n++;
    }
    if (ret_info)
        *ret_info = (store_pin_info){
            .seq = s->seq, .max_version = max_version, .chunks = pin->n, .bytes = bytes};
unlock:
    pthread_rwlock_unlock(&s->lock);
    if (st != PS_STATUS_OK) {
        store_pin_destroy(pin);
        return st;
    }
    *ret_pin = pin;
    return PS_STATUS_OK;
}

ps_status store_pin_visit(store_pin *pin, ps_status (*fn)(void *arg, const image_chunk *chunk),
                          void *arg) {
    for (; pin->next < pin->n; pin->next++) {
        pinned_chunk *p = &pin->chunks[pin->next];
        image_chunk c = {.key = p->key,
                         .version = p->version,
                         .len = p->len,
                         .name = p->name ? p->name : "",
                         .values = p->values->data,
                         .kind = p->kind,
                         .steps = p->steps,
                         .state = p->state ? p->state->data : NULL};
        ps_status st = fn ? fn(arg, &c) : PS_STATUS_OK;
        if (st != PS_STATUS_OK)
            return st;
        pinned_release(p);
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ install --- */

/* What one chunk's install brings, made before the lock. */
typedef struct install_part {
    update_log_values *values, *state; /* new blocks (one reference), or what was replaced */
    char *name;                        /* new name (NULL: none), or the replaced one */
    store_chunk *fresh;                /* a chunk for a key that turns out absent */
} install_part;

static void parts_free(install_part *parts, size_t n) {
    for (size_t i = 0; parts && i < n; i++) {
        update_log_values_unref(parts[i].values);
        update_log_values_unref(parts[i].state);
        free(parts[i].name);
        free(parts[i].fresh);
    }
    free(parts);
}

/* The checks of one chunk (a decoder's, plus finite values). */
static ps_status check_chunk(const image_chunk *c, size_t i, char *err, size_t err_len) {
    if (c->len == 0 || c->len > IMAGE_MAX_CHUNK_FLOATS || !c->values || !c->name ||
        strlen(c->name) > IMAGE_MAX_NAME_BYTES || (unsigned)c->kind > OPTIM_FTRL ||
        (c->kind != OPTIM_NONE && !c->state)) {
        ps_set_err(err, err_len,
                   "chunk image %zu (key %016llx): bad length %u (1..%u), name or optimizer "
                   "state",
                   i, (unsigned long long)c->key, c->len, IMAGE_MAX_CHUNK_FLOATS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint64_t sf = (uint64_t)c->len * optim_spec_slots(c->kind);
    if (store_values_first_non_finite(c->values, c->len) < c->len ||
        (sf && store_values_first_non_finite(c->state, (size_t)sf) < sf)) {
        ps_set_err(err, err_len, "chunk image %zu (key %016llx) holds a NaN or an infinity", i,
                   (unsigned long long)c->key);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

/* Blocks, names and chunks for every image, and their journal records. */
static ps_status install_prepare(store *s, size_t n, const image_chunk *chunks, bool encode,
                                 install_part *parts, image_encoded *recs, char *err,
                                 size_t err_len) {
    for (size_t i = 0; i < n; i++) {
        const image_chunk *c = &chunks[i];
        ps_status st = check_chunk(c, i, err, err_len);
        for (size_t j = 0; st == PS_STATUS_OK && j < i; j++) {
            if (chunks[j].key == c->key) {
                ps_set_err(err, err_len, "key %016llx is installed twice (images %zu and %zu)",
                           (unsigned long long)c->key, j, i);
                st = PS_STATUS_INVALID_ARGUMENT;
            }
        }
        if (st == PS_STATUS_OK && encode)
            st = image_encode_chunk(c, &recs[i], err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        uint32_t sf = c->len * optim_spec_slots(c->kind);
        install_part *p = &parts[i];
        if (store_alloc_fails(s) || update_log_values_create(c->len, &p->values) != PS_STATUS_OK ||
            (sf &&
             (store_alloc_fails(s) || update_log_values_create(sf, &p->state) != PS_STATUS_OK)) ||
            (c->name[0] && !(p->name = store_malloc(s, strlen(c->name) + 1))) ||
            !(p->fresh = store_calloc(s, 1, sizeof *p->fresh))) {
            ps_set_err(err, err_len, "out of memory for the images of %zu chunks", n);
            return PS_STATUS_NO_MEMORY;
        }
        memcpy(p->values->data, c->values, (size_t)c->len * sizeof(float));
        if (sf)
            memcpy(p->state->data, c->state, (size_t)sf * sizeof(float));
        if (p->name)
            strcpy(p->name, c->name);
    }
    return PS_STATUS_OK;
}

/* Grows the table for `count` chunks (write lock held). */
static ps_status table_reserve(store *s, size_t count) {
    size_t want = store_table_cap_for(count);
    if (want <= s->cap)
        return PS_STATUS_OK;
    store_chunk **slots = store_calloc(s, want, sizeof *slots);
    if (!slots)
        return PS_STATUS_NO_MEMORY;
    store_table_rehash(s, slots, want);
    free(s->slots);
    s->slots = slots;
    s->cap = want;
    return PS_STATUS_OK;
}

/* Checks the quota and the table, then journals (write lock held; nothing changed on
 * failure but a larger table). */
static ps_status install_check_locked(store *s, size_t n, const image_chunk *chunks,
                                      const image_encoded *recs, image_journal_fn journal,
                                      void *journal_arg, uint64_t *ret_lsn, char *err,
                                      size_t err_len) {
    uint64_t old_bytes = 0, new_bytes = 0;
    size_t absent = 0;
    for (size_t i = 0; i < n; i++) {
        const store_chunk *c = store_table_get(s, chunks[i].key);
        old_bytes += c ? store_chunk_bytes(c) : 0;
        absent += c == NULL;
        new_bytes +=
            (uint64_t)chunks[i].len * sizeof(float) * (1 + optim_spec_slots(chunks[i].kind));
    }
    if (new_bytes > old_bytes && !quota_reserve(s->quota, new_bytes - old_bytes)) {
        ps_set_err(err, err_len,
                   "the shard holds %llu of its %llu bytes (--max-bytes) and these chunk images "
                   "would add %llu: nothing was installed",
                   (unsigned long long)quota_used(s->quota),
                   (unsigned long long)quota_max(s->quota),
                   (unsigned long long)(new_bytes - old_bytes));
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    ps_status st = table_reserve(s, s->count + absent);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "out of memory growing the table to %zu chunks",
                   s->count + absent);
    if (st == PS_STATUS_OK && journal &&
        (st = journal(journal_arg, recs, n, ret_lsn, err, err_len)) != PS_STATUS_OK)
        st = PS_STATUS_IO;
    if (st != PS_STATUS_OK && new_bytes > old_bytes)
        quota_release(s->quota, new_bytes - old_bytes);
    if (st == PS_STATUS_OK && old_bytes > new_bytes)
        quota_release(s->quota, old_bytes - new_bytes);
    if (st == PS_STATUS_OK)
        s->bytes = s->bytes + new_bytes - old_bytes;
    return st;
}

/* Publishes image i (write lock held; cannot fail): what it replaces goes into parts[i]. */
static void install_one(store *s, const image_chunk *img, install_part *p) {
    store_chunk *c = store_table_get(s, img->key);
    if (!c) {
        c = p->fresh;
        p->fresh = NULL;
        c->key = img->key;
        store_table_put(s, c);
    }
    update_log_values *values = c->values, *state = c->state;
    char *name = c->name;
    c->values = p->values;
    c->state = p->state;
    c->name = p->name;
    p->values = values;
    p->state = state;
    p->name = name;
    c->len = img->len;
    c->version = img->version;
    if (img->version > s->clock) /* versions taken from elsewhere: never give one again */
        s->clock = img->version;
    c->steps = img->steps;
    c->state_kind = img->kind;
}

ps_status store_install(store *s, size_t n, const image_chunk *chunks, image_journal_fn journal,
                        void *journal_arg, uint64_t *ret_lsn, char *err, size_t err_len) {
    if (n > IMAGE_MAX_INSTALL_CHUNKS) {
        ps_set_err(err, err_len, "%zu chunk images in one install, more than %u", n,
                   IMAGE_MAX_INSTALL_CHUNKS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    install_part *parts = store_calloc(s, n ? n : 1, sizeof *parts);
    image_encoded *recs = journal ? store_calloc(s, n ? n : 1, sizeof *recs) : NULL;
    if (!parts || (journal && !recs)) {
        free(parts);
        free(recs);
        ps_set_err(err, err_len, "out of memory for the images of %zu chunks", n);
        return PS_STATUS_NO_MEMORY;
    }
    uint64_t lsn = 0;
    ps_status st = install_prepare(s, n, chunks, journal != NULL, parts, recs, err, err_len);
    if (st == PS_STATUS_OK) {
        pthread_rwlock_wrlock(&s->lock);
        st = install_check_locked(s, n, chunks, recs, journal, journal_arg, &lsn, err, err_len);
        for (size_t i = 0; st == PS_STATUS_OK && i < n; i++)
            install_one(s, &chunks[i], &parts[i]);
        pthread_rwlock_unlock(&s->lock);
    }
    parts_free(parts, n); /* what was replaced, or everything on failure */
    free(recs);
    if (st == PS_STATUS_OK && ret_lsn)
        *ret_lsn = lsn;
    return st;
}
