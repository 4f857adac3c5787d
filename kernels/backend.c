/* backend.c: the backend handle, streams, buffers and the default-stream shorthands
 * (see backend.h). The op dispatchers are in ops_*.c, the module loader in
 * backend_open.c.
 *
 * The dispatchers are the one place that checks arguments, so every backend gets the
 * same errors for the same mistakes and implementations stay free of checks. A
 * host-memory backend may leave the buffer entries NULL: this file then serves them
 * with aligned malloc, free and memcpy, so the CPU backend has nothing to write.
 */
#include "backend_internal.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Alignment of host buffers: a cache line, and what AVX-512 loads like. */
#define HOST_BUFFER_ALIGN 64u

/* ------------------------------------------------------------------------------------ */
/* The handle */

ps_status kernels_backend_create_module(const kernels_backend_iface *iface, void *ctx, void *module,
                                        kernels_backend **ret_backend) {
    ps_status st = PS_STATUS_INVALID_ARGUMENT;
    if (iface == NULL || ret_backend == NULL || iface->name == NULL || iface->dense == NULL ||
        iface->softmax == NULL || iface->relu == NULL || iface->add == NULL) {
        goto fail_free_ctx;
    }
    if (iface->device_memory &&
        (iface->buffer_alloc == NULL || iface->buffer_free == NULL ||
         iface->buffer_upload == NULL || iface->buffer_download == NULL || iface->copy == NULL)) {
        goto fail_free_ctx;
    }
    kernels_backend *backend = calloc(1, sizeof(*backend));
    if (backend == NULL) {
        st = PS_STATUS_NO_MEMORY;
        goto fail_free_ctx;
    }
    backend->iface = *iface;
    backend->ctx = ctx;
    backend->module = module;
    backend->stream.backend = backend;
    backend->stream.exec = ctx;
    *ret_backend = backend;
    return PS_STATUS_OK;

fail_free_ctx:
    if (iface != NULL && iface->free_ctx != NULL) {
        iface->free_ctx(ctx);
    }
    if (module != NULL) {
        dlclose(module);
    }
    return st;
}

ps_status kernels_backend_create(const kernels_backend_iface *iface, void *ctx,
                                 kernels_backend **ret_backend) {
    return kernels_backend_create_module(iface, ctx, NULL, ret_backend);
}

void kernels_backend_destroy(kernels_backend *backend) {
    if (backend == NULL) {
        return;
    }
    if (backend->iface.free_ctx != NULL) {
        backend->iface.free_ctx(backend->ctx);
    }
    void *module = backend->module;
    free(backend);
    if (module != NULL) {
        dlclose(module); /* last: the iface's code lives there */
    }
}

const char *kernels_backend_name(const kernels_backend *backend) {
    return backend != NULL ? backend->iface.name : "(none)";
}

kernels_precision kernels_backend_precision(const kernels_backend *backend) {
    return backend != NULL ? backend->precision : KERNELS_PRECISION_FP32;
}

const char *kernels_precision_name(kernels_precision precision) {
    return precision == KERNELS_PRECISION_BF16 ? "bf16" : "fp32";
}

bool kernels_backend_host_memory(const kernels_backend *backend) {
    return backend != NULL && !backend->iface.device_memory;
}

kernels_stream *kernels_backend_stream(const kernels_backend *backend) {
    /* The handle is never changed after create; the default stream is the one part a
     * caller acts on, and acting on it changes no field of the handle either. */
    return backend != NULL ? (kernels_stream *)&backend->stream : NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Streams */

ps_status kernels_stream_create(const kernels_backend *backend, kernels_stream **ret_stream) {
    if (backend == NULL || ret_stream == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    kernels_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    s->backend = backend;
    s->exec = backend->ctx;
    if (backend->iface.stream_create != NULL) {
        ps_status st = backend->iface.stream_create(backend->ctx, &s->exec);
        if (st != PS_STATUS_OK) {
            free(s);
            return st;
        }
    }
    *ret_stream = s;
    return PS_STATUS_OK;
}

void kernels_stream_destroy(kernels_stream *stream) {
    if (stream == NULL || stream == &stream->backend->stream) {
        return;
    }
    const kernels_backend *be = stream->backend;
    if (be->iface.stream_create != NULL && be->iface.stream_destroy != NULL) {
        be->iface.stream_destroy(be->ctx, stream->exec);
    }
    free(stream);
}

ps_status kernels_stream_sync(kernels_stream *stream) {
    if (stream == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    return iface->stream_sync != NULL ? iface->stream_sync(stream->exec) : PS_STATUS_OK;
}

const char *kernels_stream_last_error(const kernels_stream *stream) {
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    if (iface == NULL || iface->last_error == NULL) {
        return "";
    }
    const char *msg = iface->last_error(stream->exec);
    return msg != NULL ? msg : "";
}

/* ------------------------------------------------------------------------------------ */
/* Graphs */

struct kernels_graph {
    const kernels_backend *backend; /* that recorded it */
    void *impl;                     /* the backend's graph */
};

static bool has_graphs(const kernels_backend_iface *iface) {
    return iface->graph_begin != NULL && iface->graph_end != NULL && iface->graph_launch != NULL &&
           iface->graph_free != NULL;
}

ps_status kernels_stream_capture_begin(kernels_stream *stream) {
    if (stream == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    return has_graphs(iface) ? iface->graph_begin(stream->exec) : PS_STATUS_UNIMPLEMENTED;
}

ps_status kernels_stream_capture_end(kernels_stream *stream, kernels_graph **ret_graph) {
    if (stream == NULL || ret_graph == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    if (!has_graphs(iface)) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    kernels_graph *g = calloc(1, sizeof(*g));
    void *impl = NULL;
    ps_status st = iface->graph_end(stream->exec, &impl); /* ends the recording in any case */
    if (st == PS_STATUS_OK && g == NULL) {
        iface->graph_free(stream->backend->ctx, impl);
        st = PS_STATUS_NO_MEMORY;
    }
    if (st != PS_STATUS_OK) {
        free(g);
        return st;
    }
    g->backend = stream->backend;
    g->impl = impl;
    *ret_graph = g;
    return PS_STATUS_OK;
}

ps_status kernels_graph_launch(kernels_stream *stream, const kernels_graph *graph) {
    if (stream == NULL || graph == NULL || graph->backend != stream->backend) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return kernels_stream_iface(stream)->graph_launch(stream->exec, graph->impl);
}

void kernels_graph_destroy(kernels_graph *graph) {
    if (graph == NULL) {
        return;
    }
    graph->backend->iface.graph_free(graph->backend->ctx, graph->impl);
    free(graph);
}

/* ------------------------------------------------------------------------------------ */
/* Buffers */

ps_status kernels_buffer_alloc(const kernels_backend *backend, size_t bytes, void **ret_ptr) {
    if (backend == NULL || ret_ptr == NULL || bytes == 0 || bytes > KERNELS_MAX_BUFFER_BYTES) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (backend->iface.buffer_alloc != NULL) {
        return backend->iface.buffer_alloc(backend->ctx, bytes, ret_ptr);
    }
    /* aligned_alloc wants a multiple of the alignment; bytes <= 2^40 cannot overflow. */
    const size_t rounded = (bytes + HOST_BUFFER_ALIGN - 1) / HOST_BUFFER_ALIGN * HOST_BUFFER_ALIGN;
    void *p = aligned_alloc(HOST_BUFFER_ALIGN, rounded);
    if (p == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    *ret_ptr = p;
    return PS_STATUS_OK;
}

void kernels_buffer_free(const kernels_backend *backend, void *ptr) {
    if (backend == NULL || ptr == NULL) {
        return;
    }
    if (backend->iface.buffer_free != NULL) {
        backend->iface.buffer_free(backend->ctx, ptr);
    } else {
        free(ptr);
    }
}

ps_status kernels_buffer_upload(kernels_stream *stream, void *dst, const void *src, size_t bytes) {
    if (stream == NULL || dst == NULL || src == NULL || bytes == 0 ||
        bytes > KERNELS_MAX_BUFFER_BYTES) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    if (iface->buffer_upload != NULL) {
        return iface->buffer_upload(stream->exec, dst, src, bytes);
    }
    memcpy(dst, src, bytes);
    return PS_STATUS_OK;
}

ps_status kernels_buffer_download(kernels_stream *stream, void *dst, const void *src,
                                  size_t bytes) {
    if (stream == NULL || dst == NULL || src == NULL || bytes == 0 ||
        bytes > KERNELS_MAX_BUFFER_BYTES) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(stream);
    if (iface->buffer_download != NULL) {
        return iface->buffer_download(stream->exec, dst, src, bytes);
    }
    ps_status st = kernels_stream_sync(stream);
    if (st == PS_STATUS_OK) {
        memcpy(dst, src, bytes);
    }
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* Shorthands on the default stream */

ps_status kernels_backend_dense(const kernels_backend *backend, const float *x, size_t rows,
                                size_t in, const float *w, const float *bias, size_t out,
                                kernels_activation act, float *y) {
    return kernels_op_dense(kernels_backend_stream(backend), x, rows, in, w, bias, out, act, y);
}

ps_status kernels_backend_softmax(const kernels_backend *backend, const float *x, size_t rows,
                                  size_t cols, float *y) {
    return kernels_op_softmax(kernels_backend_stream(backend), x, rows, cols, y);
}

ps_status kernels_backend_relu(const kernels_backend *backend, const float *x, size_t n, float *y) {
    return kernels_op_activation(kernels_backend_stream(backend), KERNELS_ACTIVATION_RELU, x, n, y);
}

ps_status kernels_backend_add(const kernels_backend *backend, const float *a, const float *b,
                              size_t n, float *y) {
    return kernels_op_add(kernels_backend_stream(backend), a, b, n, y);
}

ps_status kernels_backend_scale(const kernels_backend *backend, const float *x, size_t rows,
                                size_t cols, const float *scale, const float *shift, float *y) {
    return kernels_op_scale(kernels_backend_stream(backend), x, rows, cols, scale, shift, y);
}

ps_status kernels_backend_embedding_bag(const kernels_backend *backend, const float *rows,
                                        size_t n_rows, size_t dim, const int64_t *index,
                                        size_t batch, size_t len, kernels_pool pool, float *y) {
    return kernels_op_embedding_bag(kernels_backend_stream(backend), rows, n_rows, dim, index,
                                    batch, len, pool, y);
}

ps_status kernels_backend_concat(const kernels_backend *backend, const float *a, size_t ca,
                                 const float *b, size_t cb, size_t rows, float *y) {
    return kernels_op_concat(kernels_backend_stream(backend), a, ca, b, cb, rows, y);
}
