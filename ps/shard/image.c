/* image.c: the encoding of chunk and rows images into records and their decoding, with
 * every length and count checked against the limits of image.h (which gives the layout).
 * Export and install are in image_export.c. */
#include "image.h"

#include <string.h>

#include "util.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "image records are little-endian");

static size_t pad8(size_t n) {
    return (n + 7) & ~(size_t)7;
}

static void put_u16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, 2);
}
static void put_u32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4);
}
static void put_u64(uint8_t *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static uint16_t get_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ------------------------------------------------------------------ encode --- */

static void add_piece(image_encoded *e, const void *data, size_t len) {
    if (len == 0)
        return;
    e->iov[e->n_iov++] = (struct iovec){(void *)data, len};
    e->len += len;
}

uint64_t image_chunk_bytes(uint32_t len, optim_kind kind) {
    return (uint64_t)len * (1 + optim_spec_slots(kind)) * sizeof(float);
}

/* Bytes of a chunk record (0 when past the limits). */
static uint64_t chunk_record_bytes(uint32_t len, optim_kind kind, size_t name_len) {
    uint64_t floats = (uint64_t)len * (1 + optim_spec_slots(kind));
    return IMAGE_CHUNK_HEAD_BYTES + pad8(name_len) + floats * sizeof(float);
}

ps_status image_encode_chunk(const image_chunk *c, image_encoded *e, char *err, size_t err_len) {
    size_t name_len = c->name ? strnlen(c->name, IMAGE_MAX_NAME_BYTES + 1) : 0;
    if (c->len == 0 || c->len > IMAGE_MAX_CHUNK_FLOATS || name_len > IMAGE_MAX_NAME_BYTES ||
        (unsigned)c->kind > OPTIM_FTRL || !c->values || (c->kind != OPTIM_NONE && !c->state)) {
        ps_set_err(err, err_len,
                   "chunk %016llx cannot be imaged: length %u (1..%u), name of %zu bytes (at "
                   "most %u), optimizer kind %d, state %s",
                   (unsigned long long)c->key, c->len, IMAGE_MAX_CHUNK_FLOATS, name_len,
                   IMAGE_MAX_NAME_BYTES, (int)c->kind, c->state ? "given" : "missing");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint32_t sf = c->len * optim_spec_slots(c->kind);
    uint8_t *h = e->head;
    memset(h, 0, IMAGE_CHUNK_HEAD_BYTES + pad8(name_len));
    h[0] = IMAGE_KIND_CHUNK;
    h[1] = IMAGE_FORMAT;
    h[2] = (uint8_t)c->kind;
    put_u32(h + 4, c->len);
    put_u64(h + 8, c->key);
    put_u64(h + 16, c->version);
    put_u64(h + 24, c->steps);
    put_u32(h + 32, sf);
    put_u16(h + 36, (uint16_t)name_len);
    memcpy(h + IMAGE_CHUNK_HEAD_BYTES, c->name ? c->name : "", name_len);
    e->n_iov = 0;
    e->len = 0;
    add_piece(e, h, IMAGE_CHUNK_HEAD_BYTES + pad8(name_len));
    add_piece(e, c->values, (size_t)c->len * sizeof(float));
    add_piece(e, c->state, (size_t)sf * sizeof(float));
    return PS_STATUS_OK;
}

/* Bytes of a rows record's arrays: n * (16 + dim * (1 + slots) * 4). */
static uint64_t rows_array_bytes(uint64_t n, uint32_t dim, optim_kind kind) {
    return n * (16 + (uint64_t)dim * (1 + optim_spec_slots(kind)) * sizeof(float));
}

ps_status image_encode_rows(const image_rows *r, image_encoded *e, char *err, size_t err_len) {
    size_t ml = r->model ? strnlen(r->model, ROW_STORE_MAX_NAME_BYTES + 1) : 0;
    size_t tl = r->table ? strnlen(r->table, ROW_STORE_MAX_NAME_BYTES + 1) : 0;
    char why[200] = "";
    if (ml == 0 || ml > ROW_STORE_MAX_NAME_BYTES || tl == 0 || tl > ROW_STORE_MAX_NAME_BYTES ||
        r->n == 0 || r->n > IMAGE_MAX_ROWS ||
        table_spec_check(&r->spec, why, sizeof why) != PS_STATUS_OK ||
        IMAGE_ROWS_HEAD_BYTES + pad8(ml + tl) +
                rows_array_bytes(r->n, r->spec.dim, r->spec.optimizer) >
            IMAGE_MAX_RECORD_BYTES) {
        ps_set_err(err, err_len,
                   "rows cannot be imaged: names of %zu and %zu bytes (1..%u), %zu rows "
                   "(1..%u, at most %u bytes a record), spec: %s",
                   ml, tl, ROW_STORE_MAX_NAME_BYTES, r->n, IMAGE_MAX_ROWS, IMAGE_MAX_RECORD_BYTES,
                   why[0] ? why : "good");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const uint32_t slots = optim_spec_slots(r->spec.optimizer);
    uint8_t *h = e->head;
    memset(h, 0, IMAGE_ROWS_HEAD_BYTES + pad8(ml + tl));
    h[0] = IMAGE_KIND_ROWS;
    h[1] = IMAGE_FORMAT;
    h[2] = (uint8_t)r->spec.optimizer;
    h[3] = (uint8_t)r->spec.init;
    put_u32(h + 4, r->spec.dim);
    put_u64(h + 8, r->spec.seed);
    memcpy(h + 16, &r->spec.init_scale, 4);
    put_u32(h + 20, (uint32_t)r->n);
    put_u16(h + 24, (uint16_t)ml);
    put_u16(h + 26, (uint16_t)tl);
    memcpy(h + IMAGE_ROWS_HEAD_BYTES, r->model, ml);
    memcpy(h + IMAGE_ROWS_HEAD_BYTES + ml, r->table, tl);
    e->n_iov = 0;
    e->len = 0;
    add_piece(e, h, IMAGE_ROWS_HEAD_BYTES + pad8(ml + tl));
    add_piece(e, r->ids, r->n * sizeof(uint64_t));
    add_piece(e, r->steps, r->n * sizeof(uint64_t));
    add_piece(e, r->values, r->n * r->spec.dim * sizeof(float));
    if (slots)
        add_piece(e, r->state, r->n * slots * r->spec.dim * sizeof(float));
    return PS_STATUS_OK;
}

void image_encoded_copy(const image_encoded *e, uint8_t *dst) {
    for (int i = 0; i < e->n_iov; i++) {
        memcpy(dst, e->iov[i].iov_base, e->iov[i].iov_len);
        dst += e->iov[i].iov_len;
    }
}

/* ------------------------------------------------------------------ decode --- */

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* The record's length from its head: 0 with err set when it is not a known record. */
static uint64_t head_len(const uint8_t *b, size_t avail, char *err, size_t err_len) {
    if (avail < 8 ||
        avail < (b[0] == IMAGE_KIND_ROWS ? IMAGE_ROWS_HEAD_BYTES : IMAGE_CHUNK_HEAD_BYTES)) {
        ps_set_err(err, err_len, "image record of %zu bytes is shorter than its head", avail);
        return 0;
    }
    if (b[1] != IMAGE_FORMAT || (b[0] != IMAGE_KIND_CHUNK && b[0] != IMAGE_KIND_ROWS)) {
        ps_set_err(err, err_len,
                   "image record of kind %u format %u: this build reads kinds %d "
                   "and %d of format %d",
                   b[0], b[1], IMAGE_KIND_CHUNK, IMAGE_KIND_ROWS, IMAGE_FORMAT);
        return 0;
    }
    if (b[2] > OPTIM_FTRL) {
        ps_set_err(err, err_len, "image record: unknown optimizer kind %u", b[2]);
        return 0;
    }
    uint64_t total;
    if (b[0] == IMAGE_KIND_CHUNK) {
        uint32_t len = get_u32(b + 4);
        uint16_t name_len = get_u16(b + 36);
        if (len == 0 || len > IMAGE_MAX_CHUNK_FLOATS || name_len > IMAGE_MAX_NAME_BYTES) {
            ps_set_err(err, err_len,
                       "chunk image: length %u (1..%u), name of %u bytes (at most "
                       "%u)",
                       len, IMAGE_MAX_CHUNK_FLOATS, name_len, IMAGE_MAX_NAME_BYTES);
            return 0;
        }
        total = chunk_record_bytes(len, (optim_kind)b[2], name_len);
    } else {
        uint32_t dim = get_u32(b + 4), n = get_u32(b + 20);
        uint16_t ml = get_u16(b + 24), tl = get_u16(b + 26);
        if (dim == 0 || dim > TABLE_MAX_DIM || n == 0 || n > IMAGE_MAX_ROWS || ml == 0 ||
            ml > ROW_STORE_MAX_NAME_BYTES || tl == 0 || tl > ROW_STORE_MAX_NAME_BYTES) {
            ps_set_err(err, err_len,
                       "rows image: dim %u (1..%u), %u rows (1..%u), names of %u "
                       "and %u bytes (1..%u)",
                       dim, TABLE_MAX_DIM, n, IMAGE_MAX_ROWS, ml, tl, ROW_STORE_MAX_NAME_BYTES);
            return 0;
        }
        total = IMAGE_ROWS_HEAD_BYTES + pad8((size_t)ml + tl) +
                rows_array_bytes(n, dim, (optim_kind)b[2]);
    }
    if (total > IMAGE_MAX_RECORD_BYTES) {
        ps_set_err(err, err_len, "image record of %llu bytes: at most %u",
                   (unsigned long long)total, IMAGE_MAX_RECORD_BYTES);
        return 0;
    }
    return total;
}

ps_status image_record_len(const uint8_t *buf, size_t avail, uint64_t *ret_len) {
    uint64_t len = head_len(buf, avail, NULL, 0);
    if (!len)
        return PS_STATUS_PARSE;
    *ret_len = len;
    return PS_STATUS_OK;
}

static ps_status decode_chunk(const uint8_t *b, image_record *r, char *err, size_t err_len) {
    uint32_t len = get_u32(b + 4), sf = get_u32(b + 32);
    uint16_t name_len = get_u16(b + 36);
    optim_kind kind = (optim_kind)b[2];
    if (b[3] != 0 || get_u16(b + 38) != 0 || (uint64_t)len * optim_spec_slots(kind) != sf) {
        ps_set_err(err, err_len,
                   "chunk image %016llx: reserved bytes set, or %u state floats "
                   "where %s over %u floats keeps %llu",
                   (unsigned long long)get_u64(b + 8), sf, optim_kind_name(kind), len,
                   (unsigned long long)len * optim_spec_slots(kind));
        return PS_STATUS_PARSE;
    }
    const uint8_t *name = b + IMAGE_CHUNK_HEAD_BYTES;
    if (memchr(name, 0, name_len) || !all_zero(name + name_len, pad8(name_len) - name_len)) {
        ps_set_err(err, err_len, "chunk image %016llx: a NUL inside its name, or padding set",
                   (unsigned long long)get_u64(b + 8));
        return PS_STATUS_PARSE;
    }
    memcpy(r->name, name, name_len);
    r->name[name_len] = '\0';
    const float *values = (const float *)(const void *)(name + pad8(name_len));
    r->chunk = (image_chunk){.key = get_u64(b + 8),
                             .version = get_u64(b + 16),
                             .len = len,
                             .name = r->name,
                             .values = values,
                             .kind = kind,
                             .steps = get_u64(b + 24),
                             .state = sf ? values + len : NULL};
    return PS_STATUS_OK;
}

static ps_status decode_rows(const uint8_t *b, image_record *r, char *err, size_t err_len) {
    table_spec spec = {.dim = get_u32(b + 4),
                       .init = (table_init_kind)b[3],
                       .seed = get_u64(b + 8),
                       .optimizer = (optim_kind)b[2]};
    memcpy(&spec.init_scale, b + 16, 4);
    uint32_t n = get_u32(b + 20);
    uint16_t ml = get_u16(b + 24), tl = get_u16(b + 26);
    char why[200] = "";
    if (get_u32(b + 28) != 0 || table_spec_check(&spec, why, sizeof why) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "rows image: reserved bytes set, or a bad spec: %s", why);
        return PS_STATUS_PARSE;
    }
    const uint8_t *names = b + IMAGE_ROWS_HEAD_BYTES;
    if (memchr(names, 0, (size_t)ml + tl) || !all_zero(names + ml + tl, pad8(ml + tl) - ml - tl)) {
        ps_set_err(err, err_len, "rows image: a NUL inside a name, or padding set");
        return PS_STATUS_PARSE;
    }
    memcpy(r->model, names, ml);
    r->model[ml] = '\0';
    memcpy(r->table, names + ml, tl);
    r->table[tl] = '\0';
    const uint64_t *ids = (const uint64_t *)(const void *)(names + pad8((size_t)ml + tl));
    const float *values = (const float *)(const void *)(ids + 2 * (size_t)n);
    r->rows = (image_rows){.model = r->model,
                           .table = r->table,
                           .spec = spec,
                           .n = n,
                           .ids = ids,
                           .steps = ids + n,
                           .values = values,
                           .state = optim_spec_slots(spec.optimizer) ? values + (size_t)n * spec.dim
                                                                     : NULL};
    return PS_STATUS_OK;
}

ps_status image_decode(const uint8_t *buf, size_t len, image_record *r, char *err, size_t err_len) {
    if (((uintptr_t)buf & 7) != 0) {
        ps_set_err(err, err_len, "image record at an address not 8-byte aligned");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint64_t want = head_len(buf, len, err, err_len);
    if (!want)
        return PS_STATUS_PARSE;
    if (want != len) {
        ps_set_err(err, err_len, "image record of %zu bytes where its fields make %llu", len,
                   (unsigned long long)want);
        return PS_STATUS_PARSE;
    }
    memset(r, 0, sizeof *r);
    r->kind = buf[0];
    return buf[0] == IMAGE_KIND_CHUNK ? decode_chunk(buf, r, err, err_len)
                                      : decode_rows(buf, r, err, err_len);
}
