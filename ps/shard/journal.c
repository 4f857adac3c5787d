/* journal.c: push and delete records of the chunk store in the write-ahead log, and
 * their replay (see journal.h). A push record:
 *   u8 format (1), u8 op, u8 flags (1: skip_non_finite, 2: names follow), u8 optimizer
 *   kind, 10 x f32 hyper-parameters (lr, momentum, weight_decay, beta1, beta2, eps,
 *   initial_accumulator, l1, l2, beta), u32 n, n x u64 keys, n x u32 lengths, names
 *   (when flagged: n x (u16 length, bytes)), then the values (float32).
 * A delete record: u8 format (1), u32 n, n x u64 keys.
 * A rows record: u8 format (1), u8 op, u8 flags (1: skip_non_finite), u8 optimizer kind,
 *   10 x f32 hyper-parameters, u32 dim, u8 init, u8 table optimizer kind, u16 model
 *   length, f32 init scale, u64 seed, u16 table length, u16 pad, u32 n, the model and
 *   table names, n x u64 ids, then the values (float32). */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "journal records are little-endian");

#define FORMAT 1
#define PUSH_HEAD 48 /* bytes before the keys */

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

static void push_head(const store_push *p, uint8_t *h) {
    memset(h, 0, PUSH_HEAD);
    const optim_spec *o = p->optimizer;
    h[0] = FORMAT;
    h[1] = (uint8_t)p->op;
    h[2] = (uint8_t)((p->skip_non_finite ? 1 : 0) | (p->names ? 2 : 0));
    put_optim(h, o);
    uint32_t n = (uint32_t)p->n;
    memcpy(h + 44, &n, 4);
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

static ps_status journal_push(void *arg, const store_push *p, uint64_t *ret_lsn, char *err,
                              size_t err_len) {
    wal *w = arg;
    uint8_t head[PUSH_HEAD];
    push_head(p, head);
    size_t names_len = 0;
    uint8_t *names = p->names ? names_blob(p, &names_len) : NULL;
    /* values in more pieces than one record takes are gathered first (rare: a push
     * near the message limit, received in many small pieces) */
    uint8_t *gathered = NULL;
    size_t n_pieces = p->n_pieces;
    if (n_pieces > WAL_MAX_IOVCNT - 4 && (gathered = malloc(p->values_len + 1))) {
        size_t off = 0;
        for (size_t i = 0; i < p->n_pieces; i++) {
            memcpy(gathered + off, p->pieces[i].data, p->pieces[i].len);
            off += p->pieces[i].len;
        }
        n_pieces = 0;
    }
    size_t n_iov = 3 + (names ? 1 : 0) + (n_pieces ? n_pieces : 1);
    struct iovec *iov = calloc(n_iov, sizeof *iov);
    if ((p->names && !names) || !iov || n_pieces > WAL_MAX_IOVCNT - 4) {
        free(gathered);
        free(names);
        free(iov);
        ps_set_err(err, err_len, "out of memory writing the push to the write-ahead log");
        return PS_STATUS_NO_MEMORY;
    }
    int k = 0;
    iov[k++] = (struct iovec){head, PUSH_HEAD};
    iov[k++] = (struct iovec){(void *)p->keys, p->n * 8};
    iov[k++] = (struct iovec){(void *)p->lengths, p->n * 4};
    if (names)
        iov[k++] = (struct iovec){names, names_len};
    if (n_pieces) {
        for (size_t i = 0; i < n_pieces; i++)
            iov[k++] = (struct iovec){(void *)p->pieces[i].data, p->pieces[i].len};
    } else {
        iov[k++] = (struct iovec){gathered ? gathered : (void *)p->values, p->values_len};
    }
    ps_status st = wal_appendv(w, JOURNAL_TYPE_PUSH, iov, k, ret_lsn);
    free(gathered);
    free(names);
    free(iov);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "the write-ahead log refused the push (%s): nothing was applied",
                   ps_status_str(st));
    return st;
}

static ps_status journal_delete(void *arg, size_t n, const uint64_t *keys, uint64_t *ret_lsn,
                                char *err, size_t err_len) {
    uint8_t head[8] = {FORMAT};
    uint32_t n32 = (uint32_t)n;
    memcpy(head + 1, &n32, 4);
    struct iovec iov[2] = {{head, 5}, {(void *)keys, n * 8}};
    ps_status st = wal_appendv(arg, JOURNAL_TYPE_DELETE, iov, 2, ret_lsn);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "the write-ahead log refused the delete (%s): nothing was deleted",
                   ps_status_str(st));
    return st;
}

#define ROWS_HEAD 72

static ps_status journal_rows(void *arg, const row_push *p, uint64_t *ret_lsn, char *err,
                              size_t err_len) {
    uint8_t head[ROWS_HEAD] = {FORMAT, (uint8_t)p->op, (uint8_t)(p->skip_non_finite ? 1 : 0)};
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
    struct iovec iov[5] = {{head, ROWS_HEAD},
                           {(void *)p->model, ml},
                           {(void *)p->table, tl},
                           {(void *)p->ids, p->n * 8},
                           {(void *)p->values, p->values_len}};
    ps_status st = wal_appendv(arg, JOURNAL_TYPE_ROWS, iov, 5, ret_lsn);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len,
                   "the write-ahead log refused the rows push (%s): nothing was applied",
                   ps_status_str(st));
    return st;
}

row_journal journal_rows_for(wal *w) {
    return (row_journal){.push = journal_rows, .arg = w};
}

store_journal journal_for(wal *w) {
    return (store_journal){.push = journal_push, .del = journal_delete, .arg = w};
}

/* ------------------------------------------------------------------ replay --- */

static ps_status replay_push(store *s, const uint8_t *p, size_t len) {
    uint32_t n;
    if (len < PUSH_HEAD || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    memcpy(&n, p + 44, 4);
    if ((uint64_t)n * 12 > len - PUSH_HEAD)
        return PS_STATUS_PARSE;
    optim_spec o;
    get_optim(p, &o);
    uint64_t *keys = malloc((size_t)n * 8 + 1);
    uint32_t *lengths = malloc((size_t)n * 4 + 1);
    char **names = (p[2] & 2) ? calloc((size_t)n + 1, sizeof *names) : NULL;
    ps_status st = PS_STATUS_NO_MEMORY;
    if (!keys || !lengths || ((p[2] & 2) && !names))
        goto out;
    memcpy(keys, p + PUSH_HEAD, (size_t)n * 8);
    memcpy(lengths, p + PUSH_HEAD + (size_t)n * 8, (size_t)n * 4);
    size_t at = PUSH_HEAD + (size_t)n * 12;
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
    store_push push = {.op = (update_log_op)p[1],
                       .n = n,
                       .keys = keys,
                       .lengths = lengths,
                       .values = p + at,
                       .values_len = len - at,
                       .names = (const char *const *)names,
                       .optimizer = &o,
                       .skip_non_finite = p[2] & 1};
    store_batch *b = NULL;
    char err[256];
    st = store_batch_prepare(s, &push, &b, err, sizeof err);
    if (st == PS_STATUS_OK)
        st = store_batch_apply(s, b, NULL, NULL, err, sizeof err);
    store_batch_destroy(b);
out:
    for (uint32_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(keys);
    free(lengths);
    return st;
}

static ps_status replay_rows(row_store *rs, const uint8_t *p, size_t len) {
    if (len < ROWS_HEAD || p[0] != FORMAT)
        return PS_STATUS_PARSE;
    uint32_t dim, n;
    uint16_t ml, tl;
    memcpy(&dim, p + 44, 4);
    memcpy(&ml, p + 50, 2);
    memcpy(&tl, p + 64, 2);
    memcpy(&n, p + 68, 4);
    size_t at = ROWS_HEAD + (size_t)ml + tl;
    if (ml > 255 || tl > 255 || at + (uint64_t)n * 8 > len)
        return PS_STATUS_PARSE;
    char model[256], table[256];
    memcpy(model, p + ROWS_HEAD, ml);
    model[ml] = '\0';
    memcpy(table, p + ROWS_HEAD + ml, tl);
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
    row_push push = {.model = model,
                     .table = table,
                     .spec = &spec,
                     .op = (row_op)p[1],
                     .optimizer = &o,
                     .n = n,
                     .ids = ids,
                     .values = p + at,
                     .values_len = len - at,
                     .skip_non_finite = p[2] & 1};
    char err[256];
    ps_status st = row_store_push(rs, &push, NULL, NULL, err, sizeof err);
    free(ids);
    return st;
}

ps_status journal_replay(void *arg, uint8_t type, uint64_t lsn, const void *payload, size_t len) {
    (void)lsn;
    const journal_target *t = arg;
    store *s = t->chunks;
    const uint8_t *p = payload;
    if (type == JOURNAL_TYPE_PUSH)
        return replay_push(s, p, len);
    if (type == JOURNAL_TYPE_ROWS)
        return replay_rows(t->rows, p, len);
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
    store_delete(s, n, keys, NULL, NULL);
    free(keys);
    return PS_STATUS_OK;
}
