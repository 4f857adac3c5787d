/* rpc_bytes.c: messages to and from gRPC byte buffers, with `bytes` fields that travel
 * outside protobuf-c (see rpc_bytes_field and rpc_bytes_pieces in rpc.h).
 *
 * Sending: the packed message is one slice; each raw field is a small slice holding
 * its tag and length, then its data as one slice per part, handed to gRPC without a
 * copy (the part's release runs when gRPC drops it).
 *
 * Receiving: gRPC hands a large message over in many slices (about 64 KiB each on
 * loopback). The top-level fields are walked across the slices without flattening
 * them: every field but the raw one is copied into a small header that protobuf-c
 * unpacks, and each occurrence of the raw field is recorded as the list of slice
 * ranges it covers. Whoever consumes the field copies it once, into its destination.
 * A contiguous view (rpc_ctx_raw, rpc_received_views) is made only when asked for, by
 * copying an occurrence that spans several slices.
 */
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "rpc_internal.h"

/* ------------------------------------------------------------------ encoding --- */

static size_t put_varint(uint8_t *out, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

static void release_noop(void *arg) {
    (void)arg;
}

/* The parts of a field: its own list, or its one data/len as a part. */
static size_t field_parts(const rpc_bytes_field *f, rpc_bytes_part *one,
                          const rpc_bytes_part **ret_parts) {
    if (f->n_parts > 0) {
        *ret_parts = f->parts;
        return f->n_parts;
    }
    *one = (rpc_bytes_part){f->data, f->len, f->release, f->arg};
    *ret_parts = one;
    return 1;
}

/* Releases the parts of extra[i..) from part j of field i on. */
static void release_from(const rpc_bytes_field *extra, size_t n_extra, size_t i, size_t j) {
    for (; i < n_extra; i++, j = 0) {
        rpc_bytes_part one;
        const rpc_bytes_part *parts = NULL;
        size_t n = field_parts(&extra[i], &one, &parts);
        for (; j < n; j++)
            if (parts[j].release)
                parts[j].release(parts[j].arg);
    }
}

grpc_byte_buffer *rpc_encode_packed(const rpc_bytes_part *m) {
    grpc_slice s = grpc_slice_new_with_user_data((void *)m->data, m->len,
                                                 m->release ? m->release : release_noop, m->arg);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s); /* the buffer holds its own reference, or none: released */
    return bb;
}

grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg, const rpc_bytes_field *extra,
                             size_t n_extra) {
    size_t n_slices = 1;
    for (size_t i = 0; i < n_extra; i++)
        n_slices += 1 + (extra[i].n_parts > 0 ? extra[i].n_parts : 1);
    grpc_slice stack_slices[9];
    grpc_slice *slices = n_slices <= 9 ? stack_slices : malloc(n_slices * sizeof *slices);
    size_t used = 0, i = 0, j = 0;
    if (!slices)
        goto fail_release;
    size_t len = msg ? protobuf_c_message_get_packed_size(msg) : 0;
    if (len > 0) {
        uint8_t *buf = malloc(len);
        if (!buf)
            goto fail_release;
        protobuf_c_message_pack(msg, buf);
        slices[used++] = grpc_slice_new(buf, len, free);
    }
    for (i = 0; i < n_extra; i++) {
        rpc_bytes_part one;
        const rpc_bytes_part *parts = NULL;
        size_t n = field_parts(&extra[i], &one, &parts), total = 0;
        for (size_t k = 0; k < n; k++)
            total += parts[k].len;
        uint8_t head[20];
        size_t hl = put_varint(head, ((uint64_t)extra[i].field_number << 3) | 2u);
        hl += put_varint(head + hl, total);
        slices[used++] = grpc_slice_from_copied_buffer((const char *)head, hl);
        for (j = 0; j < n; j++) {
            const rpc_bytes_part *p = &parts[j];
            if (p->len > 0)
                slices[used++] = grpc_slice_new_with_user_data(
                    (void *)p->data, p->len, p->release ? p->release : release_noop, p->arg);
            else if (p->release)
                p->release(p->arg);
        }
        j = 0;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, used);
    for (size_t k = 0; k < used; k++)
        grpc_slice_unref(slices[k]);
    if (slices != stack_slices)
        free(slices);
    return bb;

fail_release:
    /* What was not handed to gRPC goes back to the caller now. */
    for (size_t k = 0; k < used; k++)
        grpc_slice_unref(slices[k]);
    release_from(extra, n_extra, i, j);
    if (slices && slices != stack_slices)
        free(slices);
    return NULL;
}

/* ------------------------------------------------------------------ decoding --- */

ProtobufCMessage *rpc_decode(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type) {
    grpc_byte_buffer_reader reader;
    if (!bb)
        return protobuf_c_message_unpack(type, NULL, 0, (const uint8_t *)"");
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(type, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return m;
}

/* A position in a list of segments. */
typedef struct seg_cursor {
    const rpc_bytes_view *segs;
    size_t n, i, off;
    uint64_t pos; /* bytes passed since the start */
} seg_cursor;

static bool cur_byte(seg_cursor *c, uint8_t *ret) {
    while (c->i < c->n && c->off == c->segs[c->i].len) {
        c->i++;
        c->off = 0;
    }
    if (c->i == c->n)
        return false;
    *ret = c->segs[c->i].data[c->off++];
    c->pos++;
    return true;
}

static bool cur_varint(seg_cursor *c, uint64_t *ret) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (!cur_byte(c, &b))
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = v;
            return true;
        }
    }
    return false;
}

/* Advances n bytes, giving each contiguous piece to `emit` (may be NULL). */
typedef void (*emit_fn)(void *arg, const uint8_t *p, size_t len);

static bool cur_take(seg_cursor *c, uint64_t n, emit_fn emit, void *arg) {
    while (n > 0) {
        if (c->i == c->n)
            return false;
        size_t here = c->segs[c->i].len - c->off;
        size_t take = here < n ? here : (size_t)n;
        if (take > 0 && emit)
            emit(arg, c->segs[c->i].data + c->off, take);
        c->off += take;
        c->pos += take;
        n -= take;
        if (c->off == c->segs[c->i].len) {
            c->i++;
            c->off = 0;
        }
    }
    return true;
}

typedef struct split_state {
    uint32_t raw_field;
    bool filling;      /* second pass: write header bytes and pieces */
    uint8_t *header;   /* filling */
    size_t header_len; /* bytes of every other field */
    rpc_bytes_view *pieces;
    size_t n_pieces;
    rpc_bytes_pieces *fields;
    size_t n_fields;
} split_state;

static void emit_header(void *arg, const uint8_t *p, size_t len) {
    split_state *st = arg;
    if (st->filling)
        memcpy(st->header + st->header_len, p, len);
    st->header_len += len;
}

static void emit_piece(void *arg, const uint8_t *p, size_t len) {
    split_state *st = arg;
    if (st->filling) {
        st->pieces[st->n_pieces] = (rpc_bytes_view){p, len};
        st->fields[st->n_fields].n_pieces++;
        st->fields[st->n_fields].len += len;
    }
    st->n_pieces++;
}

/* Walks the top-level fields: the raw field's occurrences become pieces, every other
 * field's encoding goes to the header. False on a malformed encoding. */
static bool split_walk(const rpc_bytes_view *segs, size_t n_segs, split_state *st) {
    seg_cursor c = {segs, n_segs, 0, 0, 0};
    for (;;) {
        seg_cursor start = c;
        uint64_t tag, v, len = 0;
        uint8_t b;
        if (!cur_byte(&c, &b))
            return true; /* the end, between fields */
        c = start;
        if (!cur_varint(&c, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
            return false;
        uint32_t wire = (uint32_t)(tag & 7);
        bool raw = (tag >> 3) == st->raw_field;
        if (raw && wire != 2)
            return false; /* the raw field with another wire type */
        if (wire == 0 && !cur_varint(&c, &v))
            return false;
        if ((wire == 1 && !cur_take(&c, 8, NULL, NULL)) ||
            (wire == 5 && !cur_take(&c, 4, NULL, NULL)) || wire == 3 || wire == 4 || wire > 5)
            return false; /* groups (3, 4) are not used by our protocols; 6, 7 do not exist */
        if (wire == 2 && !cur_varint(&c, &len))
            return false;
        if (raw) {
            if (st->filling)
                st->fields[st->n_fields] = (rpc_bytes_pieces){st->pieces + st->n_pieces, 0, 0};
            if (!cur_take(&c, len, emit_piece, st))
                return false;
            st->n_fields++;
            continue;
        }
        if (wire == 2 && !cur_take(&c, len, NULL, NULL))
            return false;
        /* the whole field, tag included, into the header */
        seg_cursor again = start;
        cur_take(&again, c.pos - start.pos, emit_header, st);
    }
}

/* The payload's slices as segments (into *ret_segs, malloc'd), reading a compressed
 * payload out into r->flat first. */
static bool payload_segments(grpc_byte_buffer *bb, rpc_received *r, rpc_bytes_view **ret_segs,
                             size_t *ret_n) {
    const grpc_slice *slices = NULL;
    size_t n = 0;
    if (bb && bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE) {
        slices = bb->data.raw.slice_buffer.slices;
        n = bb->data.raw.slice_buffer.count;
    } else if (bb) {
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, bb))
            return false;
        r->flat = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        slices = &r->flat;
        n = 1;
    }
    rpc_bytes_view *segs = malloc((n + 1) * sizeof *segs);
    if (!segs)
        return false;
    for (size_t i = 0; i < n; i++)
        segs[i] = (rpc_bytes_view){GRPC_SLICE_START_PTR(slices[i]), GRPC_SLICE_LENGTH(slices[i])};
    *ret_segs = segs;
    *ret_n = n;
    return true;
}

ProtobufCMessage *rpc_decode_split(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type,
                                   uint32_t raw_field, rpc_received **ret_received) {
    rpc_received *r = calloc(1, sizeof *r);
    rpc_bytes_view *segs = NULL;
    size_t n_segs = 0;
    ProtobufCMessage *m = NULL;
    if (!r)
        return NULL;
    r->flat = grpc_empty_slice();
    r->bb = bb; /* the slices the pieces point into */
    if (!payload_segments(bb, r, &segs, &n_segs))
        goto fail;
    split_state count = {.raw_field = raw_field};
    if (!split_walk(segs, n_segs, &count))
        goto fail;
    split_state fill = {.raw_field = raw_field, .filling = true};
    fill.header = malloc(count.header_len + 1);
    r->pieces = fill.pieces = malloc((count.n_pieces + 1) * sizeof *fill.pieces);
    r->fields = fill.fields = calloc(count.n_fields + 1, sizeof *fill.fields);
    if (!fill.header || !fill.pieces || !fill.fields) {
        free(fill.header);
        goto fail;
    }
    split_walk(segs, n_segs, &fill);
    m = protobuf_c_message_unpack(type, NULL, fill.header_len, fill.header);
    free(fill.header);
    if (!m)
        goto fail;
    r->n_fields = fill.n_fields;
    free(segs);
    *ret_received = r;
    return m;
fail:
    free(segs);
    r->bb = NULL; /* still the caller's */
    rpc_received_free(r);
    return NULL;
}

size_t rpc_received_pieces(const rpc_received *r, const rpc_bytes_pieces **ret_fields) {
    *ret_fields = r ? r->fields : NULL;
    return r ? r->n_fields : 0;
}

size_t rpc_received_views(const rpc_received *cr, const rpc_bytes_view **ret_views) {
    rpc_received *r = (rpc_received *)cr; /* made once, on first use: logically const */
    *ret_views = NULL;
    if (!r)
        return 0;
    if (!r->views && r->n_fields > 0) {
        rpc_bytes_view *views = calloc(r->n_fields, sizeof *views);
        uint8_t **copies = calloc(r->n_fields, sizeof *copies);
        for (size_t i = 0; views && copies && i < r->n_fields; i++) {
            const rpc_bytes_pieces *f = &r->fields[i];
            if (f->n_pieces <= 1) {
                views[i] = f->n_pieces ? f->pieces[0] : (rpc_bytes_view){(const uint8_t *)"", 0};
                continue;
            }
            if (!(copies[i] = malloc(f->len)))
                break;
            rpc_bytes_copy(f, 0, copies[i], f->len);
            views[i] = (rpc_bytes_view){copies[i], f->len};
        }
        bool ok = views && copies;
        for (size_t i = 0; ok && i < r->n_fields; i++)
            ok = r->fields[i].n_pieces <= 1 || copies[i];
        if (!ok) {
            for (size_t i = 0; copies && i < r->n_fields; i++)
                free(copies[i]);
            free(copies);
            free(views);
            return 0; /* out of memory: no views (callers see the field absent) */
        }
        r->views = views;
        r->copies = copies;
    }
    *ret_views = r->views;
    return r->n_fields;
}

void rpc_received_free(rpc_received *r) {
    if (!r)
        return;
    if (r->bb)
        grpc_byte_buffer_destroy(r->bb);
    grpc_slice_unref(r->flat);
    for (size_t i = 0; r->copies && i < r->n_fields; i++)
        free(r->copies[i]);
    free(r->copies);
    free(r->views);
    free(r->pieces);
    free(r->fields);
    free(r);
}

/* ------------------------------------------------------------------ pieces --- */

bool rpc_bytes_copy(const rpc_bytes_pieces *f, size_t off, void *dst, size_t len) {
    if (off > f->len || len > f->len - off)
        return false;
    uint8_t *out = dst;
    for (size_t i = 0; i < f->n_pieces && len > 0; i++) {
        const rpc_bytes_view *p = &f->pieces[i];
        if (off >= p->len) {
            off -= p->len;
            continue;
        }
        size_t take = p->len - off < len ? p->len - off : len;
        memcpy(out, p->data + off, take);
        out += take;
        len -= take;
        off = 0;
    }
    return true;
}

ps_bytes_cursor rpc_bytes_cursor(const rpc_bytes_pieces *f) {
    return (ps_bytes_cursor){f->pieces, f->n_pieces, 0, 0};
}

/* ------------------------------------------------------------------ loans --- */

struct rpc_loan {
    pthread_mutex_t lock;
    pthread_cond_t dropped;
    size_t out; /* parts gRPC still holds */
};

ps_status rpc_loan_create(rpc_loan **ret) {
    rpc_loan *l = calloc(1, sizeof *l);
    if (!l)
        return PS_STATUS_NO_MEMORY;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->dropped, NULL);
    *ret = l;
    return PS_STATUS_OK;
}

static void loan_release(void *arg) {
    rpc_loan *l = arg;
    pthread_mutex_lock(&l->lock);
    if (--l->out == 0)
        pthread_cond_broadcast(&l->dropped);
    pthread_mutex_unlock(&l->lock);
}

rpc_bytes_part rpc_loan_part(rpc_loan *l, const void *data, size_t len) {
    pthread_mutex_lock(&l->lock);
    l->out++;
    pthread_mutex_unlock(&l->lock);
    return (rpc_bytes_part){data, len, loan_release, l};
}

void rpc_loan_wait(rpc_loan *l) {
    pthread_mutex_lock(&l->lock);
    while (l->out > 0)
        pthread_cond_wait(&l->dropped, &l->lock);
    pthread_mutex_unlock(&l->lock);
}

void rpc_loan_destroy(rpc_loan *l) {
    if (!l)
        return;
    rpc_loan_wait(l);
    pthread_cond_destroy(&l->dropped);
    pthread_mutex_destroy(&l->lock);
    free(l);
}
