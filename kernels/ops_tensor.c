/* ops_tensor.c: dispatchers of the table and tensor ops (see ops.h): embedding gather
 * and bag, add, scale, concat, reshape, transpose. Checks first, then the backend.
 */
#include "backend_internal.h"

#include <string.h>

bool kernels_index_ok(const int64_t *index, size_t n, size_t n_rows) {
    for (size_t i = 0; i < n; i++) {
        if (index[i] < -1 || index[i] >= (int64_t)n_rows) {
            return false;
        }
    }
    return true;
}

/* A table [n_rows, dim] an embedding op may read: n_rows may be 0 (then table NULL). */
static bool table_ok(const float *table, size_t n_rows, size_t dim) {
    size_t n;
    return kernels_size_ok(dim) && n_rows <= KERNELS_MAX_DIM && (table != NULL || n_rows == 0) &&
           (n_rows == 0 || kernels_mul_ok(n_rows, dim, &n));
}

ps_status kernels_op_embedding_gather(kernels_stream *s, const float *table, size_t n_rows,
                                      size_t dim, const int64_t *index, size_t n, float *y) {
    size_t total;
    if (s == NULL || index == NULL || y == NULL || !table_ok(table, n_rows, dim) ||
        !kernels_size_ok(n) || !kernels_mul_ok(n, dim, &total)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    /* Ids come from requests: a bad one is refused before any backend reads a row. */
    if (!kernels_index_ok(index, n, n_rows)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->embedding_gather == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->embedding_gather(s->exec, table, n_rows, dim, index, n, y);
}

ps_status kernels_op_embedding_bag(kernels_stream *s, const float *table, size_t n_rows, size_t dim,
                                   const int64_t *index, size_t batch, size_t len,
                                   kernels_pool pool, float *y) {
    size_t ids, total;
    if (s == NULL || index == NULL || y == NULL || !table_ok(table, n_rows, dim) ||
        !kernels_size_ok(batch) || !kernels_size_ok(len) || !kernels_mul_ok(batch, len, &ids) ||
        !kernels_mul_ok(batch, dim, &total) ||
        (pool != KERNELS_POOL_SUM && pool != KERNELS_POOL_MEAN)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!kernels_index_ok(index, ids, n_rows)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->embedding_bag == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->embedding_bag(s->exec, table, n_rows, dim, index, batch, len, pool, y);
}

ps_status kernels_op_add(kernels_stream *s, const float *a, const float *b, size_t n, float *y) {
    if (s == NULL || a == NULL || b == NULL || y == NULL || !kernels_size_ok(n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return kernels_stream_iface(s)->add(s->exec, a, b, n, y);
}

ps_status kernels_op_scale(kernels_stream *s, const float *x, size_t rows, size_t cols,
                           const float *scale, const float *shift, float *y) {
    size_t n;
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(rows) || !kernels_size_ok(cols) ||
        !kernels_mul_ok(rows, cols, &n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->scale == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->scale(s->exec, x, rows, cols, scale, shift, y);
}

ps_status kernels_op_concat(kernels_stream *s, const float *a, size_t ca, const float *b, size_t cb,
                            size_t rows, float *y) {
    size_t n;
    if (s == NULL || a == NULL || b == NULL || y == NULL || !kernels_size_ok(ca) ||
        !kernels_size_ok(cb) || !kernels_size_ok(rows) || ca + cb > KERNELS_MAX_DIM ||
        !kernels_mul_ok(rows, ca + cb, &n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->concat == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->concat(s->exec, a, ca, b, cb, rows, y);
}

/* The element count of dims[ndims] into *ret: false for a bad rank, a zero axis or a
 * count past KERNELS_MAX_DIM. */
static bool dims_count(const size_t *dims, size_t ndims, size_t *ret) {
    if (dims == NULL || ndims == 0 || ndims > KERNELS_MAX_NDIM) {
        return false;
    }
    size_t n = 1;
    for (size_t i = 0; i < ndims; i++) {
        if (!kernels_size_ok(dims[i]) || !kernels_mul_ok(n, dims[i], &n)) {
            return false;
        }
    }
    *ret = n;
    return true;
}

ps_status kernels_op_reshape(kernels_stream *s, const float *x, const size_t *in_dims,
                             size_t in_ndims, const size_t *out_dims, size_t out_ndims, float *y) {
    size_t n_in, n_out;
    if (s == NULL || x == NULL || y == NULL || !dims_count(in_dims, in_ndims, &n_in) ||
        !dims_count(out_dims, out_ndims, &n_out) || n_in != n_out) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (x == y) {
        return PS_STATUS_OK; /* contiguous: only the shape changes */
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->copy != NULL) {
        return iface->copy(s->exec, x, n_in, y);
    }
    memmove(y, x, n_in * sizeof(*y)); /* host memory: create checked that */
    return PS_STATUS_OK;
}

ps_status kernels_op_transpose(kernels_stream *s, const float *x, const size_t *dims, size_t ndims,
                               const size_t *perm, float *y) {
    size_t n;
    if (s == NULL || x == NULL || y == NULL || x == y || perm == NULL ||
        !dims_count(dims, ndims, &n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    /* Copies: the backend sees exactly what was checked. ndims <= KERNELS_MAX_NDIM. */
    size_t d[KERNELS_MAX_NDIM], p[KERNELS_MAX_NDIM];
    unsigned seen = 0;
    for (size_t i = 0; i < ndims; i++) {
        d[i] = dims[i];
        p[i] = perm[i];
        if (p[i] >= ndims || (seen & (1u << p[i])) != 0) {
            return PS_STATUS_INVALID_ARGUMENT;
        }
        seen |= 1u << p[i];
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->transpose == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->transpose(s->exec, x, d, ndims, p, y);
}
