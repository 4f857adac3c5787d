/* rpc_common.c: status mapping, message encoding and decoding, queue waits, and
 * process helpers (allocator tuning, signals) shared by the rpc server and client. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "rpc_internal.h"

/* ------------------------------------------------------------------ status codes --- */

int rpc_code_from_status(ps_status st) {
    switch (st) {
    case PS_STATUS_OK:
        return GRPC_STATUS_OK;
    case PS_STATUS_CANCELLED:
        return GRPC_STATUS_CANCELLED;
    case PS_STATUS_INVALID_ARGUMENT:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case PS_STATUS_DEADLINE_EXCEEDED:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case PS_STATUS_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case PS_STATUS_ALREADY_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case PS_STATUS_RESOURCE_EXHAUSTED:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case PS_STATUS_FAILED_PRECONDITION:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case PS_STATUS_OUT_OF_RANGE:
        return GRPC_STATUS_OUT_OF_RANGE;
    case PS_STATUS_UNIMPLEMENTED:
        return GRPC_STATUS_UNIMPLEMENTED;
    case PS_STATUS_INTERNAL:
        return GRPC_STATUS_INTERNAL;
    case PS_STATUS_UNAVAILABLE:
        return GRPC_STATUS_UNAVAILABLE;
    case PS_STATUS_NO_MEMORY:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case PS_STATUS_IO:
        return GRPC_STATUS_INTERNAL;
    case PS_STATUS_PARSE:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case PS_STATUS_WRONG_EPOCH:
        return GRPC_STATUS_ABORTED;
    }
    return GRPC_STATUS_UNKNOWN;
}

ps_status rpc_status_from_code(int code) {
    switch (code) {
    case GRPC_STATUS_OK:
        return PS_STATUS_OK;
    case GRPC_STATUS_CANCELLED:
        return PS_STATUS_CANCELLED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return PS_STATUS_INVALID_ARGUMENT;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return PS_STATUS_DEADLINE_EXCEEDED;
    case GRPC_STATUS_NOT_FOUND:
        return PS_STATUS_NOT_FOUND;
    case GRPC_STATUS_ALREADY_EXISTS:
        return PS_STATUS_ALREADY_EXISTS;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return PS_STATUS_RESOURCE_EXHAUSTED;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return PS_STATUS_FAILED_PRECONDITION;
    case GRPC_STATUS_ABORTED:
        return PS_STATUS_WRONG_EPOCH;
    case GRPC_STATUS_OUT_OF_RANGE:
        return PS_STATUS_OUT_OF_RANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return PS_STATUS_UNIMPLEMENTED;
    case GRPC_STATUS_UNAVAILABLE:
        return PS_STATUS_UNAVAILABLE;
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return PS_STATUS_FAILED_PRECONDITION;
    default:
        return PS_STATUS_INTERNAL; /* UNKNOWN, INTERNAL, DATA_LOSS, anything new */
    }
}

const char *rpc_code_name(int code) {
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
        return "UNKNOWN";
    return names[code];
}

/* ------------------------------------------------------------------ library init --- */

static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;
static int library_refs;

void rpc_library_ref(void) {
    pthread_mutex_lock(&library_lock);
    if (library_refs++ == 0)
        grpc_init();
    pthread_mutex_unlock(&library_lock);
}

void rpc_process_init(void) {
    rpc_library_ref(); /* never released */
}

void rpc_library_unref(void) {
    pthread_mutex_lock(&library_lock);
    if (--library_refs == 0)
        grpc_shutdown();
    pthread_mutex_unlock(&library_lock);
}

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

grpc_byte_buffer *rpc_encode(const ProtobufCMessage *msg, const rpc_bytes_field *extra,
                             size_t n_extra) {
    size_t n_slices = 1 + 2 * n_extra, used = 0;
    grpc_slice stack_slices[9];
    grpc_slice *slices = n_slices <= 9 ? stack_slices : malloc(n_slices * sizeof *slices);
    grpc_byte_buffer *bb = NULL;
    size_t i = 0;
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
        const rpc_bytes_field *f = &extra[i];
        uint8_t head[20];
        size_t hl = put_varint(head, ((uint64_t)f->field_number << 3) | 2u);
        hl += put_varint(head + hl, f->len);
        slices[used++] = grpc_slice_from_copied_buffer((const char *)head, hl);
        if (f->len > 0) {
            slices[used++] = grpc_slice_new_with_user_data(
                (void *)f->data, f->len, f->release ? f->release : release_noop, f->arg);
        } else if (f->release) {
            f->release(f->arg);
        }
    }
    bb = grpc_raw_byte_buffer_create(slices, used);
    for (size_t k = 0; k < used; k++)
        grpc_slice_unref(slices[k]);
    if (slices != stack_slices)
        free(slices);
    return bb;

fail_release:
    /* Nothing was handed to gRPC: give the caller's buffers back now. */
    for (size_t k = 0; k < used; k++)
        grpc_slice_unref(slices[k]);
    for (; i < n_extra; i++)
        if (extra[i].release)
            extra[i].release(extra[i].arg);
    if (slices && slices != stack_slices)
        free(slices);
    return NULL;
}

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

/* The payload as one slice: a new reference to its only slice, or a copy. */
static grpc_slice payload_slice(grpc_byte_buffer *bb) {
    if (!bb)
        return grpc_empty_slice();
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1)
        return grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return grpc_empty_slice();
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return all;
}

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = v;
            return true;
        }
    }
    return false;
}

/* Walks the top-level fields of a message: calls `on_field` with each field's number,
 * its whole encoding [start, end) and, for length-delimited fields, its payload.
 * False on a malformed encoding. */
typedef void (*field_fn)(void *arg, uint32_t number, const uint8_t *start, const uint8_t *end,
                         const uint8_t *payload, size_t payload_len);

static bool walk_fields(const uint8_t *p, const uint8_t *end, field_fn on_field, void *arg) {
    while (p < end) {
        const uint8_t *start = p, *payload = NULL;
        uint64_t tag, v, len = 0;
        if (!get_varint(&p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
            return false;
        switch (tag & 7) {
        case 0:
            if (!get_varint(&p, end, &v))
                return false;
            break;
        case 1:
            if (end - p < 8)
                return false;
            p += 8;
            break;
        case 2:
            if (!get_varint(&p, end, &len) || len > (uint64_t)(end - p))
                return false;
            payload = p;
            p += len;
            break;
        case 5:
            if (end - p < 4)
                return false;
            p += 4;
            break;
        default: /* groups (3, 4) are not used by our protocols; 6, 7 do not exist */
            return false;
        }
        on_field(arg, (uint32_t)(tag >> 3), start, p, payload, (size_t)len);
    }
    return true;
}

typedef struct split_state {
    uint32_t raw_field;
    uint8_t *header; /* NULL on the counting pass */
    size_t header_len;
    rpc_bytes_view *views;
    size_t n_views;
    bool raw_wrong_type; /* the raw field came with a wire type other than bytes */
} split_state;

static void split_field(void *arg, uint32_t number, const uint8_t *start, const uint8_t *end,
                        const uint8_t *payload, size_t payload_len) {
    split_state *st = arg;
    if (number == st->raw_field) {
        if (!payload) {
            st->raw_wrong_type = true;
            return;
        }
        if (st->views)
            st->views[st->n_views] = (rpc_bytes_view){payload, payload_len};
        st->n_views++;
        return;
    }
    if (st->header)
        memcpy(st->header + st->header_len, start, (size_t)(end - start));
    st->header_len += (size_t)(end - start);
}

ProtobufCMessage *rpc_decode_split(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *type,
                                   uint32_t raw_field, rpc_received **ret_received) {
    rpc_received *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->flat = payload_slice(bb);
    const uint8_t *data = GRPC_SLICE_START_PTR(r->flat), *end = data + GRPC_SLICE_LENGTH(r->flat);
    split_state count = {.raw_field = raw_field};
    ProtobufCMessage *m = NULL;
    if (!walk_fields(data, end, split_field, &count) || count.raw_wrong_type)
        goto fail;
    split_state fill = {.raw_field = raw_field};
    fill.header = malloc(count.header_len ? count.header_len : 1);
    fill.views = calloc(count.n_views + 1, sizeof *fill.views);
    if (!fill.header || !fill.views) {
        free(fill.header);
        free(fill.views);
        goto fail;
    }
    walk_fields(data, end, split_field, &fill);
    m = protobuf_c_message_unpack(type, NULL, fill.header_len, fill.header);
    free(fill.header);
    if (!m) {
        free(fill.views);
        goto fail;
    }
    r->views = fill.views;
    r->n_views = fill.n_views;
    *ret_received = r;
    return m;
fail:
    rpc_received_free(r);
    return NULL;
}

size_t rpc_received_views(const rpc_received *r, const rpc_bytes_view **ret_views) {
    *ret_views = r ? r->views : NULL;
    return r ? r->n_views : 0;
}

void rpc_received_free(rpc_received *r) {
    if (!r)
        return;
    grpc_slice_unref(r->flat);
    free(r->views);
    free(r);
}

ps_status rpc_flatten(grpc_byte_buffer *bb, void **ret_data, size_t *ret_len) {
    grpc_byte_buffer_reader reader;
    size_t len = 0;
    grpc_slice all = grpc_empty_slice();
    if (bb) {
        if (!grpc_byte_buffer_reader_init(&reader, bb))
            return PS_STATUS_INTERNAL;
        all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        len = GRPC_SLICE_LENGTH(all);
    }
    void *data = malloc(len ? len : 1);
    if (!data) {
        grpc_slice_unref(all);
        return PS_STATUS_NO_MEMORY;
    }
    if (len)
        memcpy(data, GRPC_SLICE_START_PTR(all), len);
    grpc_slice_unref(all);
    *ret_data = data;
    *ret_len = len;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ waiting --- */

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

grpc_event rpc_cq_wait(grpc_completion_queue *cq, void *tag, gpr_timespec deadline, int spin_us) {
    grpc_event ev;
    if (spin_us > 0) {
        gpr_timespec past = gpr_inf_past(GPR_CLOCK_MONOTONIC);
        int64_t until = now_us() + spin_us;
        do {
            ev = tag ? grpc_completion_queue_pluck(cq, tag, past, NULL)
                     : grpc_completion_queue_next(cq, past, NULL);
            if (ev.type != GRPC_QUEUE_TIMEOUT)
                return ev;
        } while (now_us() < until);
    }
    return tag ? grpc_completion_queue_pluck(cq, tag, deadline, NULL)
               : grpc_completion_queue_next(cq, deadline, NULL);
}

gpr_timespec rpc_deadline_after_ms(int64_t ms) {
    if (ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ------------------------------------------------------------------ process --- */

void rpc_tune_allocator(void) {
    /* gRPC reads messages into multi-megabyte buffers; with glibc's defaults each one is
     * an mmap that is unmapped on free, so every message faults its pages in again. */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
}

void rpc_signals_block(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int rpc_signals_wait(void) {
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}
