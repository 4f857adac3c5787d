/* cpu_tensor.c: embedding gather and bag, concat, copy and transpose of the CPU backend
 * (see ops.h). Memory movement only.
 *
 * An embedding bag adds its rows in float, in index order, then divides once for
 * "mean" (a bag holds a few dozen rows; float keeps it as fast as the rows are read).
 * Transpose walks y in order (writes stream) and reads x with the stride of y's last
 * axis; the outer axes advance like an odometer.
 */
#include "cpu_internal.h"

#include <string.h>

ps_status cpu_embedding_gather(void *exec, const float *table, size_t n_rows, size_t dim,
                               const int64_t *index, size_t n, float *y) {
    (void)exec;
    (void)n_rows;
    for (size_t i = 0; i < n; i++) {
        if (index[i] < 0) {
            memset(y + i * dim, 0, dim * sizeof(*y)); /* padding */
        } else {
            memcpy(y + i * dim, table + (size_t)index[i] * dim, dim * sizeof(*y));
        }
    }
    return PS_STATUS_OK;
}

ps_status cpu_embedding_bag(void *exec, const float *rows, size_t n_rows, size_t dim,
                            const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                            float *y) {
    (void)exec;
    (void)n_rows;
    for (size_t b = 0; b < batch; b++) {
        float *yb = y + b * dim;
        memset(yb, 0, dim * sizeof(*yb));
        size_t count = 0;
        for (size_t j = 0; j < len; j++) {
            const int64_t r = index[b * len + j];
            if (r < 0) {
                continue; /* padding */
            }
            const float *row = rows + (size_t)r * dim;
            for (size_t c = 0; c < dim; c++) {
                yb[c] += row[c];
            }
            count++;
        }
        if (pool == KERNELS_POOL_MEAN && count > 1) {
            for (size_t c = 0; c < dim; c++) {
                yb[c] /= (float)count;
            }
        }
    }
    return PS_STATUS_OK;
}

ps_status cpu_concat(void *exec, const float *a, size_t ca, const float *b, size_t cb, size_t rows,
                     float *y) {
    (void)exec;
    for (size_t r = 0; r < rows; r++) {
        memcpy(y + r * (ca + cb), a + r * ca, ca * sizeof(*y));
        memcpy(y + r * (ca + cb) + ca, b + r * cb, cb * sizeof(*y));
    }
    return PS_STATUS_OK;
}

ps_status cpu_copy(void *exec, const float *x, size_t n, float *y) {
    (void)exec;
    memmove(y, x, n * sizeof(*y));
    return PS_STATUS_OK;
}

ps_status cpu_transpose(void *exec, const float *x, const size_t *dims, size_t ndims,
                        const size_t *perm, float *y) {
    (void)exec;
    size_t in_stride[KERNELS_MAX_NDIM]; /* ndims <= KERNELS_MAX_NDIM: checked */
    size_t out_dim[KERNELS_MAX_NDIM], stride[KERNELS_MAX_NDIM], idx[KERNELS_MAX_NDIM];
    in_stride[ndims - 1] = 1;
    for (size_t i = ndims - 1; i > 0; i--) {
        in_stride[i - 1] = in_stride[i] * dims[i];
    }
    for (size_t i = 0; i < ndims; i++) {
        out_dim[i] = dims[perm[i]];
        stride[i] = in_stride[perm[i]]; /* x's step along y's axis i */
        idx[i] = 0;
    }
    const size_t inner = out_dim[ndims - 1];
    const size_t step = stride[ndims - 1];
    const size_t total = in_stride[0] * dims[0];
    size_t base = 0; /* x's offset of y's current row */
    for (size_t done = 0; done < total; done += inner) {
        const float *src = x + base;
        float *dst = y + done;
        for (size_t j = 0; j < inner; j++) {
            dst[j] = src[j * step];
        }
        for (size_t a = ndims - 1; a-- > 0;) { /* next row: advance the outer axes */
            base += stride[a];
            if (++idx[a] < out_dim[a]) {
                break;
            }
            base -= stride[a] * out_dim[a];
            idx[a] = 0;
        }
    }
    return PS_STATUS_OK;
}
