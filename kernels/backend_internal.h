/* backend_internal.h: what the dispatchers (backend.c, backend_open.c, ops_*.c) share:
 * the handle and stream layouts and the size checks. Not for backends or callers.
 */
#ifndef PS_KERNELS_BACKEND_INTERNAL_H
#define PS_KERNELS_BACKEND_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"

struct kernels_stream {
    const kernels_backend *backend; /* the backend it belongs to */
    void *exec;                     /* what the iface's ops get (see backend.h) */
};

struct kernels_backend {
    kernels_backend_iface iface; /* copied from the implementation */
    void *ctx;                   /* the implementation's state; owned */
    void *module;                /* dlopen handle of a loadable backend, or NULL */
    kernels_precision precision; /* what it was opened with (kernels_backend_open) */
    kernels_stream stream;       /* the default stream: exec = ctx */
};

/* The loader's part of kernels_backend_create: the handle also owns a module. */
ps_status kernels_backend_create_module(const kernels_backend_iface *iface, void *ctx, void *module,
                                        kernels_backend **ret_backend);

/* A size an op accepts: 1 .. KERNELS_MAX_DIM. */
static inline bool kernels_size_ok(size_t n) {
    return n > 0 && n <= KERNELS_MAX_DIM;
}

/* *p = a * b when that stays within KERNELS_MAX_DIM (no overflow); false otherwise. */
static inline bool kernels_mul_ok(size_t a, size_t b, size_t *p) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || r > KERNELS_MAX_DIM) {
        return false;
    }
    *p = r;
    return true;
}

/* a * b * c within KERNELS_MAX_DIM, into *p. */
static inline bool kernels_mul3_ok(size_t a, size_t b, size_t c, size_t *p) {
    size_t ab;
    return kernels_mul_ok(a, b, &ab) && kernels_mul_ok(ab, c, p);
}

/* The activations kernels_activation names. */
static inline bool kernels_activation_ok(kernels_activation act) {
    switch (act) {
    case KERNELS_ACTIVATION_NONE:
    case KERNELS_ACTIVATION_RELU:
    case KERNELS_ACTIVATION_SIGMOID:
    case KERNELS_ACTIVATION_TANH:
    case KERNELS_ACTIVATION_GELU:
        return true;
    }
    return false;
}

/* The stream's iface, or NULL for a NULL stream. */
static inline const kernels_backend_iface *kernels_stream_iface(const kernels_stream *s) {
    return s != NULL ? &s->backend->iface : NULL;
}

/* Every entry of index[n] is -1 or < n_rows (host memory). */
bool kernels_index_ok(const int64_t *index, size_t n, size_t n_rows);

#endif
