/* safetensors.c: the safetensors reader (see safetensors.h for the contract).
 *
 * Why it is built this way: the header is small and the data may be gigabytes, so a
 * file is mapped, not read, and only the header is parsed (with jansson, rejecting
 * duplicate keys). The parse copies what it needs (names, dtypes, shapes, offsets)
 * out of the JSON into one array of entries, checks each entry alone (dtype, shape,
 * byte count, range), then sorts a second view by offset to check for overlaps, and
 * finally sorts the entries by name for lookups. Nothing is handed out before all of
 * that passed, so a caller never sees half a file.
 */
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* ------------------------------------------------------------------------------------ */
/* Private types */

typedef struct st_entry {
    char *name; /* owned */
    safetensors_dtype dtype;
    uint32_t ndims;
    uint64_t dims[SAFETENSORS_MAX_DIMS];
    uint64_t count; /* product of dims */
    uint64_t begin; /* byte offsets inside the data section */
    uint64_t end;
} st_entry;

typedef struct st_meta {
    char *key;   /* owned */
    char *value; /* owned */
} st_meta;

struct safetensors {
    const unsigned char *base; /* start of the file or buffer */
    size_t len;                /* its length */
    const unsigned char *data; /* start of the data section (base + 8 + header length) */
    size_t data_len;           /* bytes after the header */
    void *map;                 /* the mapping when opened from a file, else NULL */
    size_t map_len;

    size_t count;      /* tensors */
    st_entry *entries; /* [count], sorted by name */
    size_t meta_count;
    st_meta *meta; /* [meta_count], header order */
};

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [SAFETENSORS_DTYPE_BOOL] = {"BOOL", 1},       [SAFETENSORS_DTYPE_U8] = {"U8", 1},
    [SAFETENSORS_DTYPE_I8] = {"I8", 1},           [SAFETENSORS_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [SAFETENSORS_DTYPE_F8_E5M2] = {"F8_E5M2", 1}, [SAFETENSORS_DTYPE_U16] = {"U16", 2},
    [SAFETENSORS_DTYPE_I16] = {"I16", 2},         [SAFETENSORS_DTYPE_F16] = {"F16", 2},
    [SAFETENSORS_DTYPE_BF16] = {"BF16", 2},       [SAFETENSORS_DTYPE_U32] = {"U32", 4},
    [SAFETENSORS_DTYPE_I32] = {"I32", 4},         [SAFETENSORS_DTYPE_F32] = {"F32", 4},
    [SAFETENSORS_DTYPE_U64] = {"U64", 8},         [SAFETENSORS_DTYPE_I64] = {"I64", 8},
    [SAFETENSORS_DTYPE_F64] = {"F64", 8},
};
#define DTYPE_COUNT (sizeof(dtype_table) / sizeof(dtype_table[0]))

const char *safetensors_dtype_name(safetensors_dtype dtype) {
    return (unsigned)dtype < DTYPE_COUNT ? dtype_table[dtype].name : "?";
}

size_t safetensors_dtype_size(safetensors_dtype dtype) {
    return (unsigned)dtype < DTYPE_COUNT ? dtype_table[dtype].size : 0;
}

static bool dtype_parse(const char *s, safetensors_dtype *ret_dtype) {
    for (size_t i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_table[i].name) == 0) {
            *ret_dtype = (safetensors_dtype)i;
            return true;
        }
    }
    return false;
}

static char *dup_str(const char *s) {
    const size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

static void st_free(safetensors *st) {
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->count; i++) {
        free(st->entries[i].name);
    }
    free(st->entries);
    for (size_t i = 0; i < st->meta_count; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->meta);
    if (st->map != NULL) {
        munmap(st->map, st->map_len);
    }
    free(st);
}

void safetensors_destroy(safetensors *st) {
    st_free(st);
}

/* ------------------------------------------------------------------------------------ */
/* Header parsing */

/* Reads a JSON integer that must be >= 0. */
static bool json_u64(const json_t *v, uint64_t *ret) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return false;
    }
    *ret = (uint64_t)json_integer_value(v);
    return true;
}

static ps_status parse_metadata(safetensors *st, json_t *meta, char *err, size_t err_len) {
    if (!json_is_object(meta)) {
        ps_set_err(err, err_len, "safetensors: \"__metadata__\" must be an object of strings");
        return PS_STATUS_PARSE;
    }
    const size_t n = json_object_size(meta);
    st->meta = calloc(n > 0 ? n : 1, sizeof(*st->meta));
    if (st->meta == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value)) {
            ps_set_err(err, err_len,
                       "safetensors: \"__metadata__\" value for \"%s\" is not a string", key);
            return PS_STATUS_PARSE;
        }
        st_meta *m = &st->meta[st->meta_count];
        m->key = dup_str(key);
        m->value = dup_str(json_string_value(value));
        st->meta_count++;
        if (m->key == NULL || m->value == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    return PS_STATUS_OK;
}

/* Fills e from one header entry and checks it alone. */
static ps_status parse_entry(const safetensors *st, const char *name, json_t *obj, st_entry *e,
                             char *err, size_t err_len) {
    if (name[0] == '\0') {
        ps_set_err(err, err_len, "safetensors: a tensor has an empty name");
        return PS_STATUS_PARSE;
    }
    if (!json_is_object(obj)) {
        ps_set_err(err, err_len, "safetensors: entry \"%s\" is not an object", name);
        return PS_STATUS_PARSE;
    }
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0) {
            ps_set_err(err, err_len,
                       "safetensors: tensor \"%s\" has an unknown field \"%s\" (expected dtype, "
                       "shape, data_offsets)",
                       name, key);
            return PS_STATUS_PARSE;
        }
    }
    json_t *dtype = json_object_get(obj, "dtype");
    json_t *shape = json_object_get(obj, "shape");
    json_t *offsets = json_object_get(obj, "data_offsets");
    if (dtype == NULL || shape == NULL || offsets == NULL) {
        ps_set_err(err, err_len, "safetensors: tensor \"%s\" lacks \"%s\"", name,
                   dtype == NULL   ? "dtype"
                   : shape == NULL ? "shape"
                                   : "data_offsets");
        return PS_STATUS_PARSE;
    }
    if (!json_is_string(dtype) || !dtype_parse(json_string_value(dtype), &e->dtype)) {
        ps_set_err(err, err_len, "safetensors: tensor \"%s\" has an unknown dtype %s%s%s", name,
                   json_is_string(dtype) ? "\"" : "",
                   json_is_string(dtype) ? json_string_value(dtype) : "(not a string)",
                   json_is_string(dtype) ? "\"" : "");
        return PS_STATUS_PARSE;
    }
    if (!json_is_array(shape)) {
        ps_set_err(err, err_len, "safetensors: tensor \"%s\": shape is not a list", name);
        return PS_STATUS_PARSE;
    }
    if (json_array_size(shape) > SAFETENSORS_MAX_DIMS) {
        ps_set_err(err, err_len,
                   "safetensors: tensor \"%s\" has %zu dims; at most %d are supported", name,
                   json_array_size(shape), SAFETENSORS_MAX_DIMS);
        return PS_STATUS_PARSE;
    }
    e->ndims = (uint32_t)json_array_size(shape);
    e->count = 1;
    for (uint32_t d = 0; d < e->ndims; d++) {
        if (!json_u64(json_array_get(shape, d), &e->dims[d])) {
            ps_set_err(err, err_len,
                       "safetensors: tensor \"%s\": shape[%u] is not a non-negative integer", name,
                       d);
            return PS_STATUS_PARSE;
        }
        if (__builtin_mul_overflow(e->count, e->dims[d], &e->count)) {
            ps_set_err(err, err_len, "safetensors: tensor \"%s\": element count overflows", name);
            return PS_STATUS_PARSE;
        }
    }
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        !json_u64(json_array_get(offsets, 0), &e->begin) ||
        !json_u64(json_array_get(offsets, 1), &e->end)) {
        ps_set_err(err, err_len,
                   "safetensors: tensor \"%s\": data_offsets must be [begin, end], two "
                   "non-negative integers",
                   name);
        return PS_STATUS_PARSE;
    }
    if (e->begin > e->end || e->end > st->data_len) {
        ps_set_err(err, err_len,
                   "safetensors: tensor \"%s\": data_offsets [%llu, %llu] are outside the %zu data "
                   "bytes",
                   name, (unsigned long long)e->begin, (unsigned long long)e->end, st->data_len);
        return PS_STATUS_PARSE;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(e->count, (uint64_t)safetensors_dtype_size(e->dtype), &nbytes)) {
        ps_set_err(err, err_len, "safetensors: tensor \"%s\": byte count overflows", name);
        return PS_STATUS_PARSE;
    }
    if (nbytes != e->end - e->begin) {
        ps_set_err(err, err_len,
                   "safetensors: tensor \"%s\": %s with %llu elements needs %llu bytes, but "
                   "data_offsets span %llu",
                   name, safetensors_dtype_name(e->dtype), (unsigned long long)e->count,
                   (unsigned long long)nbytes, (unsigned long long)(e->end - e->begin));
        return PS_STATUS_PARSE;
    }
    e->name = dup_str(name);
    return e->name != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a;
    const st_entry *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

/* Rejects two non-empty ranges that share a byte. */
static ps_status check_overlaps(const safetensors *st, char *err, size_t err_len) {
    if (st->count < 2) {
        return PS_STATUS_OK;
    }
    const st_entry **order = malloc(st->count * sizeof(*order));
    if (order == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    size_t n = 0;
    for (size_t i = 0; i < st->count; i++) {
        if (st->entries[i].end > st->entries[i].begin) {
            order[n++] = &st->entries[i];
        }
    }
    qsort(order, n, sizeof(*order), cmp_by_offset);
    ps_status status = PS_STATUS_OK;
    for (size_t i = 1; i < n; i++) {
        if (order[i]->begin < order[i - 1]->end) {
            ps_set_err(err, err_len,
                       "safetensors: tensors \"%s\" [%llu, %llu] and \"%s\" [%llu, %llu] overlap",
                       order[i - 1]->name, (unsigned long long)order[i - 1]->begin,
                       (unsigned long long)order[i - 1]->end, order[i]->name,
                       (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
            status = PS_STATUS_PARSE;
            break;
        }
    }
    free(order);
    return status;
}

/* Parses base[0..len) into st (whose base/len/map are set). */
static ps_status parse(safetensors *st, char *err, size_t err_len) {
    if (st->len < 8) {
        ps_set_err(err, err_len,
                   "safetensors: input is %zu bytes, shorter than the 8-byte header length",
                   st->len);
        return PS_STATUS_PARSE;
    }
    uint64_t header_len;
    memcpy(&header_len, st->base, sizeof(header_len));
    if (header_len > SAFETENSORS_MAX_HEADER) {
        ps_set_err(err, err_len, "safetensors: header length %llu exceeds the %llu-byte limit",
                   (unsigned long long)header_len, (unsigned long long)SAFETENSORS_MAX_HEADER);
        return PS_STATUS_PARSE;
    }
    if (header_len > st->len - 8) {
        ps_set_err(err, err_len,
                   "safetensors: header length %llu runs past the end of the input (%zu bytes "
                   "after the length): truncated file?",
                   (unsigned long long)header_len, st->len - 8);
        return PS_STATUS_PARSE;
    }
    st->data = st->base + 8 + header_len;
    st->data_len = st->len - 8 - (size_t)header_len;

    json_error_t jerr;
    json_t *root =
        json_loadb((const char *)st->base + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        ps_set_err(err, err_len, "safetensors: header is not valid JSON (column %d): %s",
                   jerr.column, jerr.text);
        return PS_STATUS_PARSE;
    }
    ps_status status = PS_STATUS_OK;
    if (!json_is_object(root)) {
        ps_set_err(err, err_len, "safetensors: header is JSON but not an object");
        status = PS_STATUS_PARSE;
        goto out_root;
    }
    const size_t n = json_object_size(root);
    st->entries = calloc(n > 0 ? n : 1, sizeof(*st->entries));
    if (st->entries == NULL) {
        status = PS_STATUS_NO_MEMORY;
        goto out_root;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            /* null is what some writers emit for "no metadata" */
            status = json_is_null(value) ? PS_STATUS_OK : parse_metadata(st, value, err, err_len);
        } else {
            status = parse_entry(st, key, value, &st->entries[st->count], err, err_len);
            if (st->entries[st->count].name != NULL) {
                st->count++;
            }
        }
        if (status != PS_STATUS_OK) {
            goto out_root;
        }
    }
    status = check_overlaps(st, err, err_len);
    if (status != PS_STATUS_OK) {
        goto out_root;
    }
    qsort(st->entries, st->count, sizeof(*st->entries), cmp_by_name);

out_root:
    json_decref(root);
    return status;
}

/* ------------------------------------------------------------------------------------ */
/* Public API */

ps_status safetensors_open_memory(const void *buf, size_t len, safetensors **ret_st, char *err,
                                  size_t err_len) {
    if (ret_st == NULL || (buf == NULL && len > 0)) {
        ps_set_err(err, err_len, "safetensors: no buffer or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    safetensors *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    st->base = buf;
    st->len = len;
    ps_status status = parse(st, err, err_len);
    if (status != PS_STATUS_OK) {
        st_free(st);
        return status;
    }
    *ret_st = st;
    return PS_STATUS_OK;
}

ps_status safetensors_open_file(const char *path, safetensors **ret_st, char *err, size_t err_len) {
    if (path == NULL || ret_st == NULL) {
        ps_set_err(err, err_len, "safetensors: no path or no result pointer");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status status = PS_STATUS_IO;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ps_set_err(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return PS_STATUS_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        ps_set_err(err, err_len, "%s: not a regular file", path);
        goto out_close;
    }
    if (sb.st_size < 8) {
        ps_set_err(err, err_len,
                   "%s: %lld bytes, shorter than the 8-byte safetensors header length", path,
                   (long long)sb.st_size);
        status = PS_STATUS_PARSE;
        goto out_close;
    }
    safetensors *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        status = PS_STATUS_NO_MEMORY;
        goto out_close;
    }
    st->map_len = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        ps_set_err(err, err_len, "%s: cannot map: %s", path, strerror(errno));
        st->map = NULL;
        st_free(st);
        goto out_close;
    }
    st->base = st->map;
    st->len = st->map_len;
    char msg[512] = "";
    status = parse(st, msg, sizeof(msg));
    if (status != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s: %s", path, msg);
        st_free(st);
        goto out_close;
    }
    *ret_st = st;

out_close:
    close(fd);
    return status;
}

size_t safetensors_count(const safetensors *st) {
    return st != NULL ? st->count : 0;
}

static void entry_to_tensor(const safetensors *st, const st_entry *e, safetensors_tensor *t) {
    t->name = e->name;
    t->dtype = e->dtype;
    t->ndims = e->ndims;
    memset(t->dims, 0, sizeof(t->dims));
    memcpy(t->dims, e->dims, e->ndims * sizeof(e->dims[0]));
    t->count = e->count;
    t->data = st->data + e->begin;
    t->nbytes = (size_t)(e->end - e->begin);
}

bool safetensors_tensor_at(const safetensors *st, size_t i, safetensors_tensor *ret_tensor) {
    if (st == NULL || i >= st->count || ret_tensor == NULL) {
        return false;
    }
    entry_to_tensor(st, &st->entries[i], ret_tensor);
    return true;
}

bool safetensors_find(const safetensors *st, const char *name, safetensors_tensor *ret_tensor) {
    if (st == NULL || name == NULL || ret_tensor == NULL) {
        return false;
    }
    size_t lo = 0;
    size_t hi = st->count;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(name, st->entries[mid].name);
        if (c == 0) {
            entry_to_tensor(st, &st->entries[mid], ret_tensor);
            return true;
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return false;
}

const char *safetensors_metadata(const safetensors *st, const char *key) {
    if (st == NULL || key == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < st->meta_count; i++) {
        if (strcmp(st->meta[i].key, key) == 0) {
            return st->meta[i].value;
        }
    }
    return NULL;
}
