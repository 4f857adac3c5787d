/* journal.c: push and delete records of the chunk store in the write-ahead log, and
 * their replay (see journal.h). A push record:
 *   u8 format (1), u8 op, u8 flags (1: skip_non_finite, 2: names follow, 4: a request
 *   id, 8: a base version, 16: slots, 32: look up), u8 optimizer
 *   kind, 10 x f32 hyper-parameters (lr, momentum, weight_decay, beta1, beta2, eps,
 *   initial_accumulator, l1, l2, beta), u32 n, (flag 4: u64 request id), (flag 8: u64
 *   base version: the versions the primary gave, base + 1.. in key order), n x u64 keys,
 *   n x u32 lengths, (flag 16: n x u32 slots: a subset of a push, key i's version is
 *   base + slot + 1), names (when flagged: n x (u16 length, bytes)), then the values
 *   (float32).
 * A delete record: u8 format (1), u32 n, n x u64 keys.
 * A rows record: u8 format (1), u8 op, u8 flags (1: skip_non_finite, 2: a request id, 4:
 * look up), u8 optimizer
 * kind, 10 x f32 hyper-parameters, u32 dim, u8 init, u8 table optimizer kind, u16 model length, f32
 * init scale, u64 seed, u16 table length, u16 pad, u32 n, (flags 2: u64 request id), the model and
 * table names, n x u64 ids, then the values (float32).
 * Look up (set only on a copy a backup gets, journal_mark_look_up): the backup applies only
 * the keys the record's request did not apply there before. */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "push_subset.h"
#include "util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal records are little-endian");

#define FORMAT 1
#define PUSH_HEAD 48 /* bytes before the keys */
#define PUSH_LOOK_UP 32
#define ROWS_LOOK_UP 4

void journal_mark_look_up(uint8_t type, uint8_t *payload, size_t len) {
    if (len > 2 && type == JOURNAL_TYPE_PUSH)
        payload[2] |= PUSH_LOOK_UP;
    else if (len > 2 && type == JOURNAL_TYPE_ROWS)
        payload[2] |= ROWS_LOOK_UP;
}

/* Which of the n keys request id applied here already (a copy marked look up; t->dedup):
 * *ret_applied (calloc'd, NULL when none or without memory) and the count. */
static size_t applied_before(const journal_target *t, uint64_t id, size_t n, const uint64_t *keys,
                             bool **ret_applied) {
    *ret_applied = NULL;
    if (!t->dedup || !id || n == 0)
        return 0;
    bool *applied = calloc(n, sizeof *applied);
    size_t done = applied ? dedup_lookup(t->dedup, id, n, keys, applied, NULL) : 0;
    if (done)
        *ret_applied = applied;
    else
        free(applied);
    return done;
}

static void put_f32(uint8_t *p, float v) {
    memcpy(p, &v, 4);
}

static float get_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* Bytes 3..43 of a push or rows record: the optimizer's kind and hyper-parameters
 * (zeros for none). */
static void put_optim(uint8_t *h, const optim_spec *o) {
    h[3] = (uint8_t)(o ? o->kind : OPTIM_NONE);
    if (!o)
        return;
    const float f[10] = {o->lr,    o->momentum, o->weight_decay,        o->beta1,
                         o->beta2, o->eps,      o->initial_accumulator, o->l1,
                         o->l2,    o->beta};
    for (int i = 0; i < 10; i++)
        put_f32(h + 4 + 4 * i, f[i]);
}

static void get_optim(const uint8_t *h, optim_spec *o) {
    memset(o, 0, sizeof *o);
    o->kind = (optim_kind)h[3];
    float *f[10] = {&o->lr,    &o->momentum, &o->weight_decay,        &o->beta1,
                    &o->beta2, &o->eps,      &o->initial_accumulator, &o->l1,
                    &o->l2,    &o->beta};
    for (int i = 0; i < 10; i++)
        *f[i] = get_f32(h + 4 + 4 * i);
}

/* A push record's bytes before its keys: the fixed head, then the request id (flag 4)
 * and the base version (flag 8) when present. */
static size_t push_head_len(uint8_t flags) {
    return PUSH_HEAD + ((flags & 4) ? 8 : 0) + ((flags & 8) ? 8 : 0);
}

/* A push record's bytes per key after its head: the key, its length, and its slot
 * (flag 16: a subset of a push, store_push.slots). */
static size_t push_key_bytes(uint8_t flags) {
    return 12 + ((flags & 16) ? 4 : 0);
}

/* Writes the head (push_head_len bytes) and returns its length. */
static size_t push_head(const store_push *p, uint8_t *h) {
    memset(h, 0, PUSH_HEAD);
    const optim_spec *o = p->optimizer;
    h[0] = FORMAT;
    h[1] = (uint8_t)p->op;
    h[2] = (uint8_t)((p->skip_non_finite ? 1 : 0) | (p->names ? 2 : 0) | (p->request_id ? 4 : 0) |
                     (p->base_version ? 8 : 0) | (p->slots ? 16 : 0));
    put_optim(h, o);
    uint32_t n = (uint32_t)p->n;
    memcpy(h + 44, &n, 4);
    size_t at = PUSH_HEAD;
    if (p->request_id) {
        memcpy(h + at, &p->request_id, 8);
        at += 8;
    }
    if (p->base_version) {
        memcpy(h + at, &p->base_version, 8);
        at += 8;
    }
    return at;
}

/* The names as one blob (malloc'd; *ret_len bytes). */
static uint8_t *names_blob(const store_push *p, size_t *ret_len) {
    size_t len = 0;
    for (size_t i = 0; i < p->n; i++)
        len += 2 + strlen(p->names[i]);
    uint8_t *blob = malloc(len + 1), *at = blob;
    for (size_t i = 0; blob && i < p->n; i++) {
        uint16_t l = (uint16_t)strlen(p->names[i]); /* <= SHARD_MAX_NAME_BYTES */
        memcpy(at, &l, 2);
        memcpy(at + 2, p->names[i], l);
        at += 2 + l;
    }
    *ret_len = len;
    return blob;
}

void journal_encoded_free(journal_encoded *e) {
    if (!e)
        return;
    free(e->names);
    free(e->gathered);
    free(e->iov);
    memset(e, 0, sizeof *e);
}

/* Values given as pieces (n_pieces > 0) or as one run: how many runs a record's iov
 * gives them, at most max_pieces (more are gathered into e->gathered first: one run). */
static ps_status values_runs(journal_encoded *e, const ps_bytes *pieces, size_t n_pieces,
                             size_t len, size_t max_pieces, size_t *ret_runs) {
    *ret_runs = n_pieces ? n_pieces : 1;
    if (n_pieces <= max_pieces)
        return PS_STATUS_OK;
    ps_bytes_cursor c = {pieces, n_pieces, 0, 0};
    if (!(e->gathered = malloc(len + 1)))
        return PS_STATUS_NO_MEMORY;
    (void)ps_bytes_take(&c, e->gathered, len); /* the pieces hold len bytes */
    *ret_runs = 1;
    return PS_STATUS_OK;
}

/* Appends the values' iov entries at e->iov[*k]: the pieces, or the one run (values,
 * or what values_runs gathered). */
static void values_iov(journal_encoded *e, int *k, const ps_bytes *pieces, size_t n_pieces,
                       const uint8_t *values, size_t len) {
    if (e->gathered || n_pieces == 0) {
        e->iov[(*k)++] = (struct iovec){e->gathered ? e->gathered : (void *)values, len};
        return;
    }
    for (size_t i = 0; i < n_pieces; i++)
        e->iov[(*k)++] = (struct iovec){(void *)pieces[i].data, pieces[i].len};
}

/* Fills e->iov from what e already holds plus the push's arrays and pieces; values in
 * more than max_pieces pieces are gathered into one buffer first. */
static ps_status encode_push(const store_push *p, size_t max_pieces, journal_encoded *e) {
    memset(e, 0, sizeof *e);
    size_t head_len = push_head(p, e->head);
    size_t names_len = 0, runs = 0;
    if ((p->names && !(e->names = names_blob(p, &names_len))) ||
        values_runs(e, p->pieces, p->n_pieces, p->values_len, max_pieces, &runs) != PS_STATUS_OK ||
        !(e->iov = calloc(5 + runs, sizeof *e->iov))) {
        journal_encoded_free(e);
        return PS_STATUS_NO_MEMORY;
    }
    int k = 0;
    e->iov[k++] = (struct iovec){e->head, head_len};
    e->iov[k++] = (struct iovec){(void *)p->keys, p->n * 8};
    e->iov[k++] = (struct iovec){(void *)p->lengths, p->n * 4};
    if (p->slots)
        e->iov[k++] = (struct iovec){(void *)p->slots, p->n * 4};
    if (e->names)
        e->iov[k++] = (struct iovec){e->names, names_len};
    values_iov(e, &k, p->pieces, p->n_pieces, p->values, p->values_len);
    e->n_iov = k;
    for (int i = 0; i < k; i++)
        e->len += e->iov[i].iov_len;
    return PS_STATUS_OK;
}

ps_status journal_encode_push(const store_push *p, journal_encoded *ret) {
    return encode_push(p, SIZE_MAX, ret);
}

static ps_status journal_push(void *arg, const store_push *p, uint64_t *ret_lsn, char *err,
                              size_t err_len) {
    journal_encoded e;
    ps_status st = encode_push(p, WAL_MAX_IOVCNT - 5, &e);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory writing the push to the write-ahead log");
        return st;
    }
    st = wal_appendv(arg, JOURNAL_TYPE_PUSH, e.iov, e.n_iov, ret_lsn);
    journal_encoded_free(&e);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "the write-ahead log refused the push (%s): nothing was applied",
                   ps_status_str(st));
    return st;
}

ps_status journal_encode_delete(size_t n, const uint64_t *keys, journal_encoded *ret) {
    memset(ret, 0, sizeof *ret);
    if (!(ret->iov = calloc(2, sizeof *ret->iov)))
        return PS_STATUS_NO_MEMORY;
    ret->head[0] = FORMAT;
    uint32_t n32 = (uint32_t)n;
    memcpy(ret->head + 1, &n32, 4);
    ret->iov[0] = (struct iovec){ret->head, 5};
    ret->iov[1] = (struct iovec){(void *)keys, n * 8};
    ret->n_iov = 2;
    ret->len = 5 + n * 8;
    return PS_STATUS_OK;
}

static ps_status journal_delete(void *arg, size_t n, const uint64_t *keys, uint64_t *ret_lsn,
                                char *err, size_t err_len) {
    journal_encoded e;
    ps_status st = journal_encode_delete(n, keys, &e);
    if (st == PS_STATUS_OK)
        st = wal_appendv(arg, JOURNAL_TYPE_DELETE, e.iov, e.n_iov, ret_lsn);
    journal_encoded_free(&e);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "the write-ahead log refused the delete (%s): nothing was deleted",
                   ps_status_str(st));
    return st;
}

ps_status journal_encode_rows_remove(const char *model, const char *table, size_t n,
                                     const uint64_t *ids, journal_encoded *ret) {
    memset(ret, 0, sizeof *ret);
    size_t ml = strlen(model), tl = strlen(table);
    if (ml > ROW_STORE_MAX_NAME_BYTES || tl > ROW_STORE_MAX_NAME_BYTES || n > UINT32_MAX)
        return PS_STATUS_INVALID_ARGUMENT;
    if (!(ret->iov = calloc(4, sizeof *ret->iov)))
        return PS_STATUS_NO_MEMORY;
    uint8_t *h = ret->head;
    memset(h, 0, JOURNAL_ROWS_REMOVE_HEAD);
    h[0] = FORMAT;
    uint16_t ml16 = (uint16_t)ml, tl16 = (uint16_t)tl;
    uint32_t n32 = (uint32_t)n;
    memcpy(h + 2, &ml16, 2);
    memcpy(h + 4, &tl16, 2);
    memcpy(h + 8, &n32, 4);
    ret->iov[0] = (struct iovec){h, JOURNAL_ROWS_REMOVE_HEAD};
    ret->iov[1] = (struct iovec){(void *)model, ml};
    ret->iov[2] = (struct iovec){(void *)table, tl};
    ret->iov[3] = (struct iovec){(void *)ids, n * 8};
    ret->n_iov = 4;
    ret->len = JOURNAL_ROWS_REMOVE_HEAD + ml + tl + n * 8;
    return PS_STATUS_OK;
}

/* Replays a rows-remove record (bounds checked against len). */
static ps_status replay_rows_remove(row_store *rs, const uint8_t *p, size_t len, char *err,
                                    size_t err_len) {
    if (len < JOURNAL_ROWS_REMOVE_HEAD || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    uint16_t ml, tl;
    uint32_t n;
    memcpy(&ml, p + 2, 2);
    memcpy(&tl, p + 4, 2);
    memcpy(&n, p + 8, 4);
    if (ml == 0 || tl == 0 || ml > ROW_STORE_MAX_NAME_BYTES || tl > ROW_STORE_MAX_NAME_BYTES ||
        len - JOURNAL_ROWS_REMOVE_HEAD < (size_t)ml + tl ||
        (len - JOURNAL_ROWS_REMOVE_HEAD - ml - tl) != (uint64_t)n * 8)
        return PS_STATUS_PARSE;
    char model[ROW_STORE_MAX_NAME_BYTES + 1], table[ROW_STORE_MAX_NAME_BYTES + 1];
    memcpy(model, p + JOURNAL_ROWS_REMOVE_HEAD, ml);
    model[ml] = '\0';
    memcpy(table, p + JOURNAL_ROWS_REMOVE_HEAD + ml, tl);
    table[tl] = '\0';
    uint64_t *ids = malloc((size_t)n * 8 + 1);
    if (!ids)
        return PS_STATUS_NO_MEMORY;
    memcpy(ids, p + JOURNAL_ROWS_REMOVE_HEAD + ml + tl, (size_t)n * 8);
    ps_status st =
        rs ? row_store_remove(rs, model, table, n, ids, NULL, NULL, err, err_len) : PS_STATUS_OK;
    free(ids);
    return st;
}

#define ROWS_HEAD 72

/* The rows record of p, its values in at most max_pieces pieces (more are gathered into
 * one buffer first). */
static ps_status encode_rows(const row_push *p, size_t max_pieces, journal_encoded *ret) {
    memset(ret, 0, sizeof *ret);
    size_t runs = 0;
    if (values_runs(ret, p->pieces, p->n_pieces, p->values_len, max_pieces, &runs) !=
            PS_STATUS_OK ||
        !(ret->iov = calloc(4 + runs, sizeof *ret->iov))) {
        journal_encoded_free(ret);
        return PS_STATUS_NO_MEMORY;
    }
    uint8_t *head = ret->head;
    head[0] = FORMAT;
    head[1] = (uint8_t)p->op;
    head[2] = (uint8_t)((p->skip_non_finite ? 1 : 0) | (p->request_id ? 2 : 0));
    const optim_spec *o = p->op == ROW_OP_OPTIMIZE ? p->optimizer : NULL;
    put_optim(head, o);
    uint32_t dim = p->spec->dim, n = (uint32_t)p->n;
    uint16_t ml = (uint16_t)strlen(p->model), tl = (uint16_t)strlen(p->table); /* <= 255 */
    memcpy(head + 44, &dim, 4);
    head[48] = (uint8_t)p->spec->init;
    head[49] = (uint8_t)p->spec->optimizer;
    memcpy(head + 50, &ml, 2);
    put_f32(head + 52, p->spec->init_scale);
    memcpy(head + 56, &p->spec->seed, 8);
    memcpy(head + 64, &tl, 2);
    memcpy(head + 68, &n, 4);
    size_t hl = ROWS_HEAD;
    if (p->request_id) {
        memcpy(head + ROWS_HEAD, &p->request_id, 8);
        hl += 8;
    }
    ret->iov[0] = (struct iovec){head, hl};
    ret->iov[1] = (struct iovec){(void *)p->model, ml};
    ret->iov[2] = (struct iovec){(void *)p->table, tl};
    ret->iov[3] = (struct iovec){(void *)p->ids, p->n * 8};
    int k = 4;
    values_iov(ret, &k, p->pieces, p->n_pieces, p->values, p->values_len);
    ret->n_iov = k;
    ret->len = hl + ml + tl + p->n * 8 + p->values_len;
    return PS_STATUS_OK;
}

ps_status journal_encode_rows(const row_push *p, journal_encoded *ret) {
    return encode_rows(p, SIZE_MAX, ret);
}

static ps_status journal_rows(void *arg, const row_push *p, uint64_t *ret_lsn, char *err,
                              size_t err_len) {
    journal_encoded e;
    ps_status st = encode_rows(p, WAL_MAX_IOVCNT - 4, &e);
    if (st == PS_STATUS_OK)
        st = wal_appendv(arg, JOURNAL_TYPE_ROWS, e.iov, e.n_iov, ret_lsn);
    journal_encoded_free(&e);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len,
                   "the write-ahead log refused the rows push (%s): nothing was applied",
                   ps_status_str(st));
    return st;
}

static ps_status journal_rows_remove(void *arg, const char *model, const char *table, size_t n,
                                     const uint64_t *ids, uint64_t *ret_lsn, char *err,
                                     size_t err_len) {
    journal_encoded e;
    ps_status st = journal_encode_rows_remove(model, table, n, ids, &e);
    if (st == PS_STATUS_OK)
        st = wal_appendv(arg, JOURNAL_TYPE_ROWS_REMOVE, e.iov, e.n_iov, ret_lsn);
    journal_encoded_free(&e);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len,
                   "the write-ahead log refused the removal of rows (%s): nothing was removed",
                   ps_status_str(st));
    return st;
}

row_journal journal_rows_for(wal *w) {
    return (row_journal){.push = journal_rows, .remove = journal_rows_remove, .arg = w};
}

store_journal journal_for(wal *w) {
    return (store_journal){.push = journal_push, .del = journal_delete, .arg = w};
}

/* ------------------------------------------------------------------ replay --- */

/* Applies a push record: p[0..len) holds it whole, or (vals != NULL) all but its
 * values, which are the vlen bytes in vals[0..n_vals). */
static ps_status replay_push_parts(const journal_target *t, const uint8_t *p, size_t len,
                                   const ps_bytes *vals, size_t n_vals, size_t vlen, bool from_peer,
                                   uint64_t *ret_lsn, char *err, size_t err_len) {
    uint32_t n;
    size_t hl = len >= 3 ? push_head_len(p[2]) : PUSH_HEAD;
    uint64_t request_id = 0, base_version = 0;
    push_subset rest = {0};
    bool *applied = NULL;
    if (len < hl || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    if (p[2] & 4)
        memcpy(&request_id, p + PUSH_HEAD, 8);
    if (p[2] & 8)
        memcpy(&base_version, p + hl - 8, 8);
    memcpy(&n, p + 44, 4);
    size_t per_key = push_key_bytes(p[2]);
    if ((uint64_t)n * per_key > len - hl)
        return PS_STATUS_PARSE;
    optim_spec o;
    get_optim(p, &o);
    uint64_t *keys = malloc((size_t)n * 8 + 1);
    uint32_t *lengths = malloc((size_t)n * 4 + 1);
    uint32_t *slots = (p[2] & 16) ? malloc((size_t)n * 4 + 1) : NULL;
    char **names = (p[2] & 2) ? calloc((size_t)n + 1, sizeof *names) : NULL;
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!keys || !lengths || ((p[2] & 16) && !slots) || ((p[2] & 2) && !names))
        goto out;
    memcpy(keys, p + hl, (size_t)n * 8);
    memcpy(lengths, p + hl + (size_t)n * 8, (size_t)n * 4);
    if (slots)
        memcpy(slots, p + hl + (size_t)n * 12, (size_t)n * 4);
    size_t at = hl + (size_t)n * per_key;
    st = PS_STATUS_PARSE;
    for (uint32_t i = 0; names && i < n; i++) {
        uint16_t l;
        if (at + 2 > len)
            goto out;
        memcpy(&l, p + at, 2);
        if (at + 2 + l > len || !(names[i] = malloc((size_t)l + 1))) {
            st = names && at + 2 + l <= len ? PS_STATUS_NO_MEMORY : PS_STATUS_PARSE;
            goto out;
        }
        memcpy(names[i], p + at + 2, l);
        names[i][l] = '\0';
        at += 2 + (size_t)l;
    }
    if (vals && at != len)
        goto out; /* the head claimed more or less than it held */
    store_push push = {.op = (update_log_op)p[1],
                       .n = n,
                       .keys = keys,
                       .lengths = lengths,
                       .values = vals ? NULL : p + at,
                       .values_len = vals ? vlen : len - at,
                       .pieces = vals,
                       .n_pieces = vals ? n_vals : 0,
                       .names = (const char *const *)names,
                       .optimizer = &o,
                       .skip_non_finite = p[2] & 1,
                       .from_peer = from_peer,
                       .forward = from_peer && t->forward,
                       .ret_forwarded = t->forwarded,
                       .request_id = request_id,
                       .base_version = from_peer ? base_version : 0,
                       .slots = slots};
    const store_push *apply = &push;
    size_t done =
        from_peer && (p[2] & PUSH_LOOK_UP) ? applied_before(t, request_id, n, keys, &applied) : 0;
    if (done == n && n > 0) { /* every key applied here already */
        st = PS_STATUS_OK;
        goto out;
    }
    if (done) { /* the rest only */
        if ((st = push_subset_skip(&push, applied, &rest)) != PS_STATUS_OK)
            goto out;
        apply = &rest.push;
    }
    store_batch *b = NULL;
    st = store_batch_prepare(t->chunks, apply, &b, err, err_len);
    if (st == PS_STATUS_OK)
        st = store_batch_apply(t->chunks, b, NULL, NULL, err, err_len);
    if (st == PS_STATUS_OK)
        *ret_lsn = store_batch_lsn(b);
    store_batch_destroy(b);
out:
    push_subset_free(&rest);
    free(applied);
    for (uint32_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(keys);
    free(lengths);
    free(slots);
    return st;
}

/* The bytes of a push record before its values (its head, keys, lengths and names),
 * read from the cursor at the record's start; PARSE when the record is shorter. */
static ps_status push_prefix_len(const ps_bytes_cursor *start, size_t len, size_t *ret_prefix) {
    uint8_t h[PUSH_HEAD + 16];
    size_t first = len < sizeof h ? len : sizeof h;
    ps_bytes_cursor c = *start;
    if (!ps_bytes_take(&c, h, first) || first < 3 || len < push_head_len(h[2]))
        return PS_STATUS_PARSE;
    size_t hl = push_head_len(h[2]);
    uint32_t n;
    memcpy(&n, h + 44, 4);
    if ((uint64_t)n * push_key_bytes(h[2]) > len - hl)
        return PS_STATUS_PARSE;
    size_t at = hl + (size_t)n * push_key_bytes(h[2]);
    if (!(h[2] & 2)) {
        *ret_prefix = at;
        return PS_STATUS_OK;
    }
    c = *start;
    if (!ps_bytes_take(&c, NULL, at))
        return PS_STATUS_PARSE;
    for (uint32_t i = 0; i < n; i++) { /* the names: u16 length, bytes */
        uint16_t l;
        if (at + 2 > len || !ps_bytes_take(&c, &l, 2) || at + 2 + l > len ||
            !ps_bytes_take(&c, NULL, l))
            return PS_STATUS_PARSE;
        at += 2 + (size_t)l;
    }
    *ret_prefix = at;
    return PS_STATUS_OK;
}

/* Applies a rows record: p[0..len) holds it whole, or (vals != NULL) all but its
 * values, which are the vlen bytes in vals[0..n_vals). */
static ps_status replay_rows_parts(const journal_target *t, const uint8_t *p, size_t len,
                                   const ps_bytes *vals, size_t n_vals, size_t vlen, bool from_peer,
                                   uint64_t *ret_lsn, char *err, size_t err_len) {
    size_t hl = ROWS_HEAD + ((len >= 3 && (p[2] & 2)) ? 8 : 0);
    uint64_t request_id = 0;
    if (len < hl || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    if (hl > ROWS_HEAD)
        memcpy(&request_id, p + ROWS_HEAD, 8);
    uint32_t dim, n;
    uint16_t ml, tl;
    memcpy(&dim, p + 44, 4);
    memcpy(&ml, p + 50, 2);
    memcpy(&tl, p + 64, 2);
    memcpy(&n, p + 68, 4);
    size_t at = hl + (size_t)ml + tl;
    if (ml > 255 || tl > 255 || at + (uint64_t)n * 8 > len)
        return PS_STATUS_PARSE;
    char model[256], table[256];
    memcpy(model, p + hl, ml);
    model[ml] = '\0';
    memcpy(table, p + hl + ml, tl);
    table[tl] = '\0';
    table_spec spec = {.dim = dim, .init = (table_init_kind)p[48], .optimizer = (optim_kind)p[49]};
    spec.init_scale = get_f32(p + 52);
    memcpy(&spec.seed, p + 56, 8);
    optim_spec o;
    get_optim(p, &o);
    uint64_t *ids = malloc((size_t)n * 8 + 1);
    if (!ids)
        return PS_STATUS_NO_MEMORY;
    memcpy(ids, p + at, (size_t)n * 8);
    at += (size_t)n * 8;
    if (vals && at != len) {
        free(ids);
        return PS_STATUS_PARSE; /* the head claimed more or less than it held */
    }
    row_push push = {.model = model,
                     .table = table,
                     .spec = &spec,
                     .op = (row_op)p[1],
                     .optimizer = &o,
                     .n = n,
                     .ids = ids,
                     .values = vals ? NULL : p + at,
                     .values_len = vals ? vlen : len - at,
                     .pieces = vals,
                     .n_pieces = vals ? n_vals : 0,
                     .skip_non_finite = p[2] & 1,
                     .from_peer = from_peer,
                     .forward = from_peer && t->forward,
                     .ret_forwarded = t->forwarded,
                     .request_id = request_id,
                     .ret_lsn = ret_lsn};
    ps_status st = PS_STATUS_OK;
    row_subset rest = {0};
    const row_push *apply = &push;
    bool *applied = NULL;
    uint64_t *keys = NULL;
    if (from_peer && (p[2] & ROWS_LOOK_UP) && request_id && t->dedup && n > 0 &&
        push.values_len == (size_t)n * dim * 4) { /* (a wrong length: the store refuses) */
        if (!(keys = malloc((size_t)n * 8))) {
            st = PS_STATUS_NO_MEMORY;
            goto out;
        }
        ps_keys_rows(ps_key_table(model, table), n, ids, keys);
        size_t done = applied_before(t, request_id, n, keys, &applied);
        if (done == n) /* every row applied here already */
            goto out;
        if (done) {
            if ((st = row_subset_make(&push, applied, &rest)) != PS_STATUS_OK)
                goto out;
            rest.push.ret_lsn = ret_lsn;
            apply = &rest.push;
        }
    }
    st = row_store_push(t->rows, apply, NULL, NULL, err, err_len);
out:
    row_subset_free(&rest);
    free(applied);
    free(keys);
    free(ids);
    return st;
}

/* The bytes of a rows record before its values (head, names, ids), read from the
 * cursor at the record's start; PARSE when the record is shorter. */
static ps_status rows_prefix_len(const ps_bytes_cursor *start, size_t len, size_t *ret_prefix) {
    uint8_t h[ROWS_HEAD + 8];
    size_t first = len < sizeof h ? len : sizeof h;
    ps_bytes_cursor c = *start;
    if (!ps_bytes_take(&c, h, first) || first < ROWS_HEAD)
        return PS_STATUS_PARSE;
    uint16_t ml, tl;
    uint32_t n;
    memcpy(&ml, h + 50, 2);
    memcpy(&tl, h + 64, 2);
    memcpy(&n, h + 68, 4);
    uint64_t prefix = ROWS_HEAD + ((h[2] & 2) ? 8 : 0) + (uint64_t)ml + tl + (uint64_t)n * 8;
    if (prefix > len)
        return PS_STATUS_PARSE;
    *ret_prefix = (size_t)prefix;
    return PS_STATUS_OK;
}

typedef ps_status (*prefix_len_fn)(const ps_bytes_cursor *start, size_t len, size_t *ret_prefix);

/* A record in pieces whose values follow a prefix of prefix_len(...) bytes: the prefix
 * copied into *ret_head (*ret_prefix bytes), the values left where they are, as the
 * runs *ret_vals (*ret_n of them). Both malloc'd (free them, also on failure). */
static ps_status split_pieces(prefix_len_fn prefix_len, const ps_bytes *pieces, size_t n_pieces,
                              size_t len, uint8_t **ret_head, size_t *ret_prefix,
                              ps_bytes **ret_vals, size_t *ret_n) {
    ps_bytes_cursor c = {pieces, n_pieces, 0, 0};
    ps_status st = prefix_len(&c, len, ret_prefix);
    if (st != PS_STATUS_OK)
        return st;
    *ret_head = malloc(*ret_prefix + 1);
    *ret_vals = calloc(n_pieces + 1, sizeof **ret_vals);
    if (!*ret_head || !*ret_vals)
        return PS_STATUS_NO_MEMORY;
    (void)ps_bytes_take(&c, *ret_head, *ret_prefix); /* within len: checked */
    const uint8_t *run = NULL;
    for (size_t got; (got = ps_bytes_next(&c, SIZE_MAX, &run)) > 0;)
        (*ret_vals)[(*ret_n)++] = (ps_bytes){run, got};
    return PS_STATUS_OK;
}

size_t journal_encode_dedup(uint64_t id, size_t n, const uint64_t *keys, uint8_t *out) {
    uint32_t n32 = (uint32_t)n;
    memset(out, 0, JOURNAL_DEDUP_HEAD);
    out[0] = FORMAT;
    memcpy(out + 4, &n32, 4);
    memcpy(out + 8, &id, 8);
    memcpy(out + JOURNAL_DEDUP_HEAD, keys, n * 8);
    return JOURNAL_DEDUP_HEAD + n * 8;
}

ps_status journal_dedup_records(dedup *requests, uint64_t max_pos,
                                bool (*accept)(void *accept_arg, uint64_t key), void *accept_arg,
                                ps_status (*emit)(void *arg, const uint8_t *payload, size_t len),
                                void *arg, char *err, size_t err_len) {
    dedup_entry *ents = NULL;
    size_t n = 0;
    if (dedup_export(requests, max_pos, &ents, &n) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory exporting the request ids");
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = PS_STATUS_OK;
    uint64_t *keys = NULL; /* the accepted keys of one request */
    uint8_t *rec = NULL;   /* one record */
    size_t keys_cap = 0, rec_cap = 0;
    for (size_t i = 0; i < n && st == PS_STATUS_OK; i++) {
        if (!ps_reserve((void **)&keys, &keys_cap, ents[i].n, sizeof *keys, 64)) {
            ps_set_err(err, err_len, "out of memory for %zu keys", ents[i].n);
            st = PS_STATUS_NO_MEMORY;
            break;
        }
        size_t m = 0;
        for (size_t j = 0; j < ents[i].n; j++)
            if (!accept || accept(accept_arg, ents[i].keys[j]))
                keys[m++] = ents[i].keys[j];
        for (size_t at = 0; at < m && st == PS_STATUS_OK; at += JOURNAL_DEDUP_MAX_KEYS) {
            size_t k = m - at < JOURNAL_DEDUP_MAX_KEYS ? m - at : JOURNAL_DEDUP_MAX_KEYS;
            if (!ps_reserve((void **)&rec, &rec_cap, JOURNAL_DEDUP_HEAD + k * 8, 1, 4096)) {
                ps_set_err(err, err_len, "out of memory for a record of %zu request keys", k);
                st = PS_STATUS_NO_MEMORY;
                break;
            }
            st = emit(arg, rec, journal_encode_dedup(ents[i].id, k, keys + at, rec));
        }
    }
    free(rec);
    free(keys);
    free(ents);
    return st;
}

/* A dedup record's id and keys (malloc'd into *ret_keys). PARSE, NO_MEMORY. */
static ps_status decode_dedup(const uint8_t *p, size_t len, uint64_t *ret_id, uint64_t **ret_keys,
                              size_t *ret_n) {
    uint32_t n;
    if (len < JOURNAL_DEDUP_HEAD || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    memcpy(&n, p + 4, 4);
    if (n > JOURNAL_DEDUP_MAX_KEYS || (uint64_t)n * 8 != len - JOURNAL_DEDUP_HEAD)
        return PS_STATUS_PARSE;
    if (!(*ret_keys = malloc((size_t)n * 8 + 1)))
        return PS_STATUS_NO_MEMORY;
    memcpy(ret_id, p + 8, 8);
    memcpy(*ret_keys, p + JOURNAL_DEDUP_HEAD, (size_t)n * 8);
    *ret_n = n;
    return PS_STATUS_OK;
}

/* One record whose len bytes lie in one run at p: the stores' reason for a refusal in
 * err. */
static ps_status apply_flat(const journal_target *t, uint8_t type, const uint8_t *p, size_t len,
                            bool from_peer, uint64_t *ret_lsn, char *err, size_t err_len) {
    if (type == JOURNAL_TYPE_PUSH)
        return replay_push_parts(t, p, len, NULL, 0, 0, from_peer, ret_lsn, err, err_len);
    if (type == JOURNAL_TYPE_ROWS)
        return replay_rows_parts(t, p, len, NULL, 0, 0, from_peer, ret_lsn, err, err_len);
    if (type == JOURNAL_TYPE_ROWS_REMOVE) /* a shard's own collection: never from a peer */
        return from_peer ? PS_STATUS_PARSE : replay_rows_remove(t->rows, p, len, err, err_len);
    if (type == JOURNAL_TYPE_DEDUP && from_peer) /* a sync's come as images (repl_handler) */
        return PS_STATUS_PARSE;
    if (type == JOURNAL_TYPE_DEDUP) { /* a replay's: remember it (a live one: shard_journal.c) */
        uint64_t id = 0, *keys = NULL;
        size_t n = 0;
        ps_status st = decode_dedup(p, len, &id, &keys, &n);
        if (st == PS_STATUS_OK && t->dedup)
            (void)dedup_record(t->dedup, id, n, keys, 0); /* no memory: a retry's safety only */
        free(keys);
        return st;
    }
    if (type != JOURNAL_TYPE_DELETE || len < 5 || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    uint32_t n;
    memcpy(&n, p + 1, 4);
    if ((uint64_t)n * 8 != len - 5)
        return PS_STATUS_PARSE;
    uint64_t *keys = malloc((size_t)n * 8 + 1);
    if (!keys)
        return PS_STATUS_NO_MEMORY;
    memcpy(keys, p + 5, (size_t)n * 8);
    ps_status st = PS_STATUS_OK;
    if (from_peer) {
        st = store_delete_journaled(t->chunks, n, keys, NULL, NULL, ret_lsn, err, err_len);
    } else {
        store_delete(t->chunks, n, keys, NULL, NULL);
    }
    free(keys);
    return st;
}

ps_status journal_apply_pieces(const journal_target *t, uint8_t type, const ps_bytes *pieces,
                               size_t n_pieces, size_t len, bool from_peer, uint64_t *ret_lsn) {
    uint64_t lsn_scratch = 0;
    if (!ret_lsn)
        ret_lsn = &lsn_scratch;
    *ret_lsn = 0;
    char scratch[256]; /* the stores' reason goes to the target's buffer, else here */
    char *err = t->err && t->err_len ? t->err : scratch;
    size_t err_len = err == scratch ? sizeof scratch : t->err_len;
    err[0] = '\0';
    if (n_pieces <= 1)
        return apply_flat(t, type, n_pieces ? pieces[0].data : NULL, len, from_peer, ret_lsn, err,
                          err_len);
    if (type == JOURNAL_TYPE_PUSH || type == JOURNAL_TYPE_ROWS) { /* values where they lie */
        bool push = type == JOURNAL_TYPE_PUSH;
        uint8_t *head = NULL;
        ps_bytes *vals = NULL;
        size_t prefix = 0, n = 0;
        ps_status st = split_pieces(push ? push_prefix_len : rows_prefix_len, pieces, n_pieces, len,
                                    &head, &prefix, &vals, &n);
        if (st == PS_STATUS_OK)
            st = push ? replay_push_parts(t, head, prefix, vals, n, len - prefix, from_peer,
                                          ret_lsn, err, err_len)
                      : replay_rows_parts(t, head, prefix, vals, n, len - prefix, from_peer,
                                          ret_lsn, err, err_len);
        free(head);
        free(vals);
        return st;
    }
    uint8_t *flat = malloc(len + 1);
    ps_bytes_cursor c = {pieces, n_pieces, 0, 0};
    if (!flat)
        return PS_STATUS_NO_MEMORY;
    ps_status st = ps_bytes_take(&c, flat, len)
                       ? apply_flat(t, type, flat, len, from_peer, ret_lsn, err, err_len)
                       : PS_STATUS_PARSE;
    free(flat);
    return st;
}

ps_status journal_apply(const journal_target *t, uint8_t type, const void *payload, size_t len,
                        bool from_peer, uint64_t *ret_lsn) {
    const ps_bytes one = {payload, len};
    return journal_apply_pieces(t, type, &one, 1, len, from_peer, ret_lsn);
}

ps_status journal_request_of(uint8_t type, const void *payload, size_t len, uint64_t *ret_id,
                             uint64_t **ret_keys, size_t *ret_n) {
    const uint8_t *p = payload;
    *ret_id = 0;
    *ret_keys = NULL;
    *ret_n = 0;
    uint32_t n = 0;
    if (type == JOURNAL_TYPE_DEDUP)
        return decode_dedup(p, len, ret_id, ret_keys, ret_n);
    if (type == JOURNAL_TYPE_PUSH && len >= PUSH_HEAD + 8 && p[0] == FORMAT && (p[2] & 4)) {
        size_t hl = push_head_len(p[2]);
        memcpy(&n, p + 44, 4);
        if (len < hl || (uint64_t)n * 12 > len - hl)
            return PS_STATUS_PARSE;
        if (!(*ret_keys = malloc((size_t)n * 8 + 1)))
            return PS_STATUS_NO_MEMORY;
        memcpy(ret_id, p + PUSH_HEAD, 8);
        memcpy(*ret_keys, p + hl, (size_t)n * 8);
    } else if (type == JOURNAL_TYPE_ROWS && len >= ROWS_HEAD + 8 && p[0] == FORMAT && (p[2] & 2)) {
        uint16_t ml, tl;
        memcpy(&ml, p + 50, 2);
        memcpy(&tl, p + 64, 2);
        memcpy(&n, p + 68, 4);
        size_t at = ROWS_HEAD + 8 + (size_t)ml + tl;
        if (ml > 255 || tl > 255 || at + (uint64_t)n * 8 > len)
            return PS_STATUS_PARSE;
        char model[256], table[256];
        memcpy(model, p + ROWS_HEAD + 8, ml);
        model[ml] = '\0';
        memcpy(table, p + ROWS_HEAD + 8 + ml, tl);
        table[tl] = '\0';
        if (!(*ret_keys = malloc((size_t)n * 8 + 1)))
            return PS_STATUS_NO_MEMORY;
        memcpy(ret_id, p + ROWS_HEAD, 8);
        uint64_t tk = ps_key_table(model, table);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t id;
            memcpy(&id, p + at + (size_t)i * 8, 8);
            (*ret_keys)[i] = ps_key_row_in(tk, id);
        }
    }
    *ret_n = n;
    return PS_STATUS_OK;
}

ps_status journal_replay(void *arg, uint8_t type, uint64_t lsn, const void *payload, size_t len) {
    (void)lsn;
    return journal_apply(arg, type, payload, len, false, NULL);
}
