/* backend.c: the backend handle and the op dispatchers (see backend.h).
 *
 * The dispatchers are the one place that checks op arguments, so every backend gets
 * the same errors for the same mistakes and implementations stay free of checks.
 */
#include "backend.h"

#include <stdlib.h>

struct kernels_backend {
    kernels_backend_iface iface; /* copied from the implementation */
    void *ctx;                   /* the implementation's state; owned */
};

ps_status kernels_backend_create(const kernels_backend_iface *iface, void *ctx,
                                 kernels_backend **ret_backend) {
    ps_status st = PS_STATUS_INVALID_ARGUMENT;
    if (iface == NULL || ret_backend == NULL || iface->name == NULL || iface->dense == NULL ||
        iface->softmax == NULL || iface->relu == NULL || iface->add == NULL) {
        goto fail_free_ctx;
    }
    kernels_backend *backend = calloc(1, sizeof(*backend));
    if (backend == NULL) {
        st = PS_STATUS_NO_MEMORY;
        goto fail_free_ctx;
    }
    backend->iface = *iface;
    backend->ctx = ctx;
    *ret_backend = backend;
    return PS_STATUS_OK;

fail_free_ctx:
    if (iface != NULL && iface->free_ctx != NULL) {
        iface->free_ctx(ctx);
    }
    return st;
}

void kernels_backend_destroy(kernels_backend *backend) {
    if (backend == NULL) {
        return;
    }
    if (backend->iface.free_ctx != NULL) {
        backend->iface.free_ctx(backend->ctx);
    }
    free(backend);
}

const char *kernels_backend_name(const kernels_backend *backend) {
    return backend != NULL ? backend->iface.name : "(none)";
}

static int size_ok(size_t n) {
    return n > 0 && n <= KERNELS_MAX_DIM;
}

ps_status kernels_backend_dense(const kernels_backend *backend, const float *x, size_t rows,
                                size_t in, const float *w, const float *bias, size_t out,
                                kernels_activation act, float *y) {
    if (backend == NULL || x == NULL || w == NULL || y == NULL || !size_ok(rows) || !size_ok(in) ||
        !size_ok(out)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    switch (act) {
    case KERNELS_ACTIVATION_NONE:
    case KERNELS_ACTIVATION_RELU:
    case KERNELS_ACTIVATION_SIGMOID:
    case KERNELS_ACTIVATION_TANH:
        break;
    default:
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return backend->iface.dense(backend->ctx, x, rows, in, w, bias, out, act, y);
}

ps_status kernels_backend_softmax(const kernels_backend *backend, const float *x, size_t rows,
                                  size_t cols, float *y) {
    if (backend == NULL || x == NULL || y == NULL || !size_ok(rows) || !size_ok(cols)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return backend->iface.softmax(backend->ctx, x, rows, cols, y);
}

ps_status kernels_backend_relu(const kernels_backend *backend, const float *x, size_t n, float *y) {
    if (backend == NULL || x == NULL || y == NULL || !size_ok(n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return backend->iface.relu(backend->ctx, x, n, y);
}

ps_status kernels_backend_add(const kernels_backend *backend, const float *a, const float *b,
                              size_t n, float *y) {
    if (backend == NULL || a == NULL || b == NULL || y == NULL || !size_ok(n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return backend->iface.add(backend->ctx, a, b, n, y);
}

ps_status kernels_backend_scale(const kernels_backend *backend, const float *x, size_t rows,
                                size_t cols, const float *scale, const float *shift, float *y) {
    if (backend == NULL || x == NULL || y == NULL || !size_ok(rows) || !size_ok(cols)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (backend->iface.scale == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return backend->iface.scale(backend->ctx, x, rows, cols, scale, shift, y);
}

/* n * m within KERNELS_MAX_DIM (each already size_ok). */
static int product_ok(size_t n, size_t m) {
    size_t p;
    return !__builtin_mul_overflow(n, m, &p) && p <= KERNELS_MAX_DIM;
}

ps_status kernels_backend_embedding_bag(const kernels_backend *backend, const float *rows,
                                        size_t n_rows, size_t dim, const int64_t *index,
                                        size_t batch, size_t len, kernels_pool pool, float *y) {
    if (backend == NULL || index == NULL || y == NULL || (rows == NULL && n_rows > 0) ||
        !size_ok(dim) || !size_ok(batch) || !size_ok(len) || !product_ok(batch, len) ||
        n_rows > KERNELS_MAX_DIM || (n_rows > 0 && !product_ok(n_rows, dim)) ||
        !product_ok(batch, dim) || (pool != KERNELS_POOL_SUM && pool != KERNELS_POOL_MEAN)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    /* The executor builds the index itself; a bad entry is a bug there, caught here
     * before any backend reads out of bounds. (Host memory: a device backend will check
     * where the index is built.) */
    for (size_t i = 0; i < batch * len; i++) {
        if (index[i] < -1 || index[i] >= (int64_t)n_rows) {
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    if (backend->iface.embedding_bag == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return backend->iface.embedding_bag(backend->ctx, rows, n_rows, dim, index, batch, len, pool,
                                        y);
}

ps_status kernels_backend_concat(const kernels_backend *backend, const float *a, size_t ca,
                                 const float *b, size_t cb, size_t rows, float *y) {
    if (backend == NULL || a == NULL || b == NULL || y == NULL || !size_ok(ca) || !size_ok(cb) ||
        !size_ok(rows) || ca + cb > KERNELS_MAX_DIM || !product_ok(rows, ca + cb)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (backend->iface.concat == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return backend->iface.concat(backend->ctx, a, ca, b, cb, rows, y);
}
