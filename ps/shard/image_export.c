/* image_export.c: export of point-in-time images from both stores, installs, and the
 * write-ahead log record of a journaled install (see image.h). The stores' halves are in
 * store_image.c and row_store_image.c. */
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "image_stores.h"
#include "util.h"
#include "wal.h"

/* ------------------------------------------------------------------ export --- */

typedef struct export_run {
    const image_export_opts *o;
    image_export_info info;
    row_store_pin *rows; /* NULL without a row store */
} export_run;

/* Innermost, with every store held: where they stand. */
static ps_status held_position(void *arg) {
    export_run *x = arg;
    x->info.position = x->o->position ? x->o->position(x->o->position_arg) : 0;
    return PS_STATUS_OK;
}

/* With the chunk store held: hold the row store's tables too. */
static ps_status held_rows(void *arg) {
    export_run *x = arg;
    if (!x->rows)
        return held_position(x);
    return row_store_pin_take(x->rows, held_position, x, &x->info.tables);
}

ps_status image_export(const image_export_opts *o, image_export_info *ret_info, char *err,
                       size_t err_len) {
    export_run x = {.o = o};
    store_pin *chunks = NULL;
    ps_status st = PS_STATUS_OK;
    if (o->rows && (st = row_store_pin_create(o->rows, &x.rows)) != PS_STATUS_OK)
        goto out;
    if (o->chunks) {
        store_pin_info pi;
        st = store_pin_create(o->chunks, o->accept, o->accept_arg, held_rows, &x, &chunks, &pi);
        if (st == PS_STATUS_OK) {
            x.info.seq = pi.seq;
            x.info.max_version = pi.max_version;
            x.info.chunks = pi.chunks;
            x.info.chunk_bytes = pi.bytes;
        }
    } else {
        st = held_rows(&x);
    }
    if (st != PS_STATUS_OK)
        goto out;
    if (o->visit_begin && (st = o->visit_begin(o->arg, &x.info)) != PS_STATUS_OK)
        goto out;
    if (chunks && (st = store_pin_visit(chunks, o->visit_chunk, o->arg)) != PS_STATUS_OK)
        goto out;
    store_pin_destroy(chunks); /* its blocks are released as they were visited */
    chunks = NULL;
    if (x.rows)
        st = row_store_pin_visit(x.rows, o->accept, o->accept_arg, o->visit_rows, o->arg,
                                 &x.info.rows);
out:
    if (st == PS_STATUS_NO_MEMORY)
        ps_set_err(err, err_len, "out of memory exporting images");
    store_pin_destroy(chunks);
    row_store_pin_destroy(x.rows);
    if (ret_info)
        *ret_info = x.info;
    return st;
}

/* ------------------------------------------------------------------ install --- */

/* The keys of n chunk images, or of a rows image's rows (chunks NULL), for
 * t->replaced: NULL (err set) without memory. */
static uint64_t *replaced_keys(size_t n, const image_chunk *chunks, const image_rows *rows,
                               char *err, size_t err_len) {
    uint64_t *keys = malloc(n * sizeof *keys + 1);
    if (!keys)
        ps_set_err(err, err_len, "out of memory for the keys of %zu images", n);
    else if (chunks)
        for (size_t i = 0; i < n; i++)
            keys[i] = chunks[i].key;
    else
        ps_keys_rows(ps_key_table(rows->model, rows->table), n, rows->ids, keys);
    return keys;
}

/* An install's journal when the target is told what it replaced: the target's journal,
 * then (the record written; the store still held, so nothing reads the stores between
 * the two) t->replaced. */
typedef struct journal_then_tell {
    const image_target *t;
    size_t n;
    const uint64_t *keys;
} journal_then_tell;

static ps_status journal_and_tell(void *arg, const image_encoded *recs, size_t n, uint64_t *ret_lsn,
                                  char *err, size_t err_len) {
    const journal_then_tell *j = arg;
    ps_status st = j->t->journal(j->t->journal_arg, recs, n, ret_lsn, err, err_len);
    if (st == PS_STATUS_OK)
        j->t->replaced(j->t->replaced_arg, j->n, j->keys);
    return st;
}

/* Installs (into the target's stores, when it has them) and tells t->replaced. */
static ps_status install(const image_target *t, size_t n, const image_chunk *chunks,
                         const image_rows *rows, uint64_t *ret_lsn, char *err, size_t err_len) {
    uint64_t *keys = NULL;
    if (t->replaced && !(keys = replaced_keys(n, chunks, rows, err, err_len)))
        return PS_STATUS_NO_MEMORY; /* before anything changed */
    journal_then_tell jt = {t, n, keys};
    image_journal_fn journal = t->journal;
    void *journal_arg = t->journal_arg;
    if (keys && journal) {
        journal = journal_and_tell;
        journal_arg = &jt;
    }
    ps_status st = PS_STATUS_OK;
    if (chunks && t->chunks)
        st = store_install(t->chunks, n, chunks, journal, journal_arg, ret_lsn, err, err_len);
    else if (!chunks && t->rows)
        st = row_store_install(t->rows, rows, journal, journal_arg, ret_lsn, err, err_len);
    else if (t->chunks || t->rows || !t->replaced) { /* (no store at all: keys only) */
        ps_set_err(err, err_len, "no %s store to install %s images into", chunks ? "chunk" : "row",
                   chunks ? "chunk" : "rows");
        st = PS_STATUS_FAILED_PRECONDITION;
    }
    if (st == PS_STATUS_OK && keys && !t->journal) /* not journaled (a replay): now */
        t->replaced(t->replaced_arg, n, keys);
    free(keys);
    return st;
}

ps_status image_install_chunks(const image_target *t, size_t n, const image_chunk *chunks,
                               uint64_t *ret_lsn, char *err, size_t err_len) {
    return install(t, n, chunks, NULL, ret_lsn, err, err_len);
}

ps_status image_install_rows(const image_target *t, const image_rows *rows, uint64_t *ret_lsn,
                             char *err, size_t err_len) {
    return install(t, rows->n, NULL, rows, ret_lsn, err, err_len);
}

ps_status image_install_record(const image_target *t, const image_record *r, uint64_t *ret_lsn,
                               char *err, size_t err_len) {
    if (r->kind == IMAGE_KIND_CHUNK)
        return image_install_chunks(t, 1, &r->chunk, ret_lsn, err, err_len);
    return image_install_rows(t, &r->rows, ret_lsn, err, err_len);
}

/* ------------------------------------------------------------------ journal --- */

ps_status image_journal_wal(void *wal_arg, const image_encoded *recs, size_t n, uint64_t *ret_lsn,
                            char *err, size_t err_len) {
    /* u32 count, 4 zero bytes, then per record a u64 length, its pieces and zeros up to
     * a multiple of 8 */
    static const uint8_t zeros[8] = {0};
    size_t n_iov = 1 + n * (2 + IMAGE_MAX_PIECES);
    struct iovec *iov = malloc(n_iov * sizeof *iov);
    uint64_t *lens = malloc((n ? n : 1) * sizeof *lens);
    uint8_t head[8] = {0};
    uint32_t count = (uint32_t)n;
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!iov || !lens || n_iov > WAL_MAX_IOVCNT) {
        ps_set_err(err, err_len, "cannot journal %zu images in one record", n);
        goto out;
    }
    memcpy(head, &count, 4);
    int k = 0;
    iov[k++] = (struct iovec){head, 8};
    for (size_t i = 0; i < n; i++) {
        lens[i] = recs[i].len;
        iov[k++] = (struct iovec){&lens[i], 8};
        for (int j = 0; j < recs[i].n_iov; j++)
            iov[k++] = recs[i].iov[j];
        if (recs[i].len % 8)
            iov[k++] = (struct iovec){(void *)zeros, 8 - recs[i].len % 8};
    }
    st = wal_appendv(wal_arg, IMAGE_JOURNAL_TYPE, iov, k, ret_lsn);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len,
                   "the write-ahead log refused the images (%s): nothing was installed",
                   ps_status_str(st));
out:
    free(iov);
    free(lens);
    return st;
}

/* Installs the records of an aligned payload. */
static ps_status replay_aligned(const image_target *t, const uint8_t *p, size_t len, char *err,
                                size_t err_len) {
    uint32_t count;
    if (len < 8)
        goto bad;
    memcpy(&count, p, 4);
    if (count == 0 || count > IMAGE_MAX_INSTALL_CHUNKS)
        goto bad;
    image_record *recs = malloc(count * sizeof *recs);
    image_chunk *chunks = malloc(count * sizeof *chunks);
    ps_status st = recs && chunks ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    size_t at = 8;
    for (uint32_t i = 0; st == PS_STATUS_OK && i < count; i++) {
        uint64_t rl;
        if (len - at < 8 || (memcpy(&rl, p + at, 8), rl > len - at - 8) ||
            ((rl + 7) & ~(uint64_t)7) > len - at - 8) {
            ps_set_err(err, err_len, "journaled image %u of %u runs past its record", i, count);
            st = PS_STATUS_PARSE;
            break;
        }
        st = image_decode(p + at + 8, rl, &recs[i], err, err_len);
        at += 8 + ((rl + 7) & ~(uint64_t)7); /* the next record is 8-byte aligned */
        if (st == PS_STATUS_OK && recs[i].kind == IMAGE_KIND_ROWS && count != 1)
            st = PS_STATUS_PARSE; /* a rows record is journaled alone */
        chunks[i] = recs[i].chunk;
    }
    if (st == PS_STATUS_OK && at != len)
        st = PS_STATUS_PARSE;
    image_target quiet = {.chunks = t->chunks,
                          .rows = t->rows,
                          .replaced = t->replaced,
                          .replaced_arg = t->replaced_arg};
    if (st == PS_STATUS_OK)
        st = recs[0].kind == IMAGE_KIND_ROWS
                 ? image_install_rows(&quiet, &recs[0].rows, NULL, err, err_len)
                 : image_install_chunks(&quiet, count, chunks, NULL, err, err_len);
    free(recs);
    free(chunks);
    return st;
bad:
    ps_set_err(err, err_len, "journaled images: a record of %zu bytes without a good count", len);
    return PS_STATUS_PARSE;
}

ps_status image_journal_replay(const image_target *t, const void *payload, size_t len, char *err,
                               size_t err_len) {
    if (((uintptr_t)payload & 7) == 0)
        return replay_aligned(t, payload, len, err, err_len);
    uint64_t *copy = malloc(len + 8); /* the log's payloads need not be aligned */
    if (!copy)
        return PS_STATUS_NO_MEMORY;
    memcpy(copy, payload, len);
    ps_status st = replay_aligned(t, (const uint8_t *)copy, len, err, err_len);
    free(copy);
    return st;
}
