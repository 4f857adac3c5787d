/* safetensors.h: a reader for the safetensors weight format (Hugging Face), our own.
 *
 * The format: an 8-byte little-endian header length N, then N bytes of JSON
 *   {"<tensor>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"<key>": "<string>", ...}}
 * then the data; offsets count from the end of the header. Files are written by tools
 * we do not control, so everything is checked before any tensor is handed out: the
 * header fits in the input, the JSON parses with no duplicate keys, every dtype is
 * known, every shape is a list of non-negative integers, end - begin equals the
 * element count times the dtype size (no overflow), every range lies inside the data,
 * and no two ranges overlap. Any failure is PS_STATUS_PARSE with a message; nothing is
 * read outside the input. Gaps between tensors and bytes after the last one are
 * allowed (ignored).
 *
 * Tensors are listed sorted by name (byte order), whatever order the header had, and
 * found by binary search. A tensor's `data` points into the file mapping or the
 * caller's buffer: it is valid until safetensors_destroy and NOT necessarily aligned
 * for its type (the format does not promise it), so copy it out with memcpy. Values
 * are little-endian; the project only builds for little-endian hosts.
 *
 * A safetensors handle is immutable after open: any number of threads may read it.
 */
#ifndef PS_KERNELS_SAFETENSORS_H
#define PS_KERNELS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SAFETENSORS_MAX_DIMS 8                       /* more dims: PARSE */
#define SAFETENSORS_MAX_HEADER ((uint64_t)100 << 20) /* longer header: PARSE (the spec's limit) */

/* Element types of the format, named as in the header ("F32", "BF16", ...). */
typedef enum safetensors_dtype {
    SAFETENSORS_DTYPE_BOOL = 0,
    SAFETENSORS_DTYPE_U8,
    SAFETENSORS_DTYPE_I8,
    SAFETENSORS_DTYPE_F8_E4M3,
    SAFETENSORS_DTYPE_F8_E5M2,
    SAFETENSORS_DTYPE_U16,
    SAFETENSORS_DTYPE_I16,
    SAFETENSORS_DTYPE_F16,
    SAFETENSORS_DTYPE_BF16,
    SAFETENSORS_DTYPE_U32,
    SAFETENSORS_DTYPE_I32,
    SAFETENSORS_DTYPE_F32,
    SAFETENSORS_DTYPE_U64,
    SAFETENSORS_DTYPE_I64,
    SAFETENSORS_DTYPE_F64,
} safetensors_dtype;

typedef struct safetensors safetensors;

/* One tensor as the file describes it. Strings and data belong to the handle. */
typedef struct safetensors_tensor {
    const char *name; /* NUL-terminated; never empty */
    safetensors_dtype dtype;
    uint32_t ndims; /* 0 for a scalar */
    uint64_t dims[SAFETENSORS_MAX_DIMS];
    uint64_t count;   /* product of dims (1 for a scalar) */
    const void *data; /* little-endian values, possibly unaligned */
    size_t nbytes;    /* count * safetensors_dtype_size(dtype) */
} safetensors_tensor;

/* Maps the file read-only. IO when it cannot be opened, is not a regular file or
 * cannot be mapped; PARSE when it is short, empty or malformed. `err` (may be NULL)
 * gets a message that names the file and says what is wrong. */
ps_status safetensors_open_file(const char *path, safetensors **ret_st, char *err, size_t err_len);
/* Parses a buffer the caller keeps alive and unchanged until safetensors_destroy (no
 * copy is made). */
ps_status safetensors_open_memory(const void *buf, size_t len, safetensors **ret_st, char *err,
                                  size_t err_len);
void safetensors_destroy(safetensors *st); /* accepts NULL; unmaps a file */

size_t safetensors_count(const safetensors *st);
/* Tensor i in name order; false when i is out of range. */
bool safetensors_tensor_at(const safetensors *st, size_t i, safetensors_tensor *ret_tensor);
/* Tensor by exact name; false when absent. */
bool safetensors_find(const safetensors *st, const char *name, safetensors_tensor *ret_tensor);

/* The "__metadata__" string value for key, or NULL when absent. */
const char *safetensors_metadata(const safetensors *st, const char *key);

/* "F32", "BF16", ...; "?" for a value outside the enum. */
const char *safetensors_dtype_name(safetensors_dtype dtype);
/* Bytes per element (1 for BOOL and the F8 types); 0 for a value outside the enum. */
size_t safetensors_dtype_size(safetensors_dtype dtype);

#endif
