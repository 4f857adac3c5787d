/* test_module_cpudev.c: the cpudev test backend (libkernels_cpudev.so, not shipped):
 * its buffers, their registry, its streams, and its module entry (see
 * test_module_cpudev.h).
 *
 * Why it exists: no GPU runs here, yet the executor's device path (parameter mirrors,
 * the device arena, input uploads, output downloads, graphs) must be proven. cpudev
 * computes with the CPU ops, so results are the CPU's, but it holds the executor to
 * the device contract: a tensor pointer that is not one of its buffers fails the op
 * with INTERNAL, and a host buffer is never read where a device one is due. Buffers
 * are plain aligned host memory, so the tests can compare results exactly.
 */
#include "test_module_cpudev.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

typedef struct cpudev_buf {
    uintptr_t start; /* first byte */
    size_t bytes;    /* its size as asked for */
} cpudev_buf;

struct cpudev {
    cpudev_exec base;                    /* the default stream (must be first) */
    pthread_mutex_t lock;                /* the registry and the last errors */
    cpudev_buf bufs[CPUDEV_MAX_BUFFERS]; /* [n], any order */
    size_t n;
    const kernels_backend_iface *cpu; /* does the work */
};

bool cpudev_holds(cpudev_exec *e, const char *what, const void *p, size_t bytes) {
    cpudev *d = e->d;
    const uintptr_t a = (uintptr_t)p;
    bool ok = false;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n && !ok; i++) {
        const cpudev_buf *b = &d->bufs[i];
        ok = a >= b->start && a - b->start < b->bytes && bytes <= b->bytes - (a - b->start);
    }
    if (!ok) {
        snprintf(e->last_error, sizeof(e->last_error), "%s (%p, %zu bytes) is not cpudev memory",
                 what, p, bytes);
        e->rec_failed = e->rec != NULL;
    }
    pthread_mutex_unlock(&d->lock);
    return ok;
}

ps_status cpudev_refuse(cpudev_exec *e, const char *what) {
    pthread_mutex_lock(&e->d->lock);
    snprintf(e->last_error, sizeof(e->last_error), "%s", what);
    e->rec_failed = e->rec != NULL;
    pthread_mutex_unlock(&e->d->lock);
    return PS_STATUS_INTERNAL;
}

const kernels_backend_iface *cpudev_cpu(const cpudev *d) {
    return d->cpu;
}

/* ------------------------------------------------------------------------------------ */
/* Buffers */

static ps_status buf_alloc(void *ctx, size_t bytes, void **ret_ptr) {
    cpudev *d = ctx;
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_lock(&d->lock);
    const bool room = d->n < CPUDEV_MAX_BUFFERS;
    if (room) {
        d->bufs[d->n++] = (cpudev_buf){.start = (uintptr_t)p, .bytes = bytes};
    }
    pthread_mutex_unlock(&d->lock);
    if (!room) {
        free(p);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    *ret_ptr = p;
    return PS_STATUS_OK;
}

static void buf_free(void *ctx, void *ptr) {
    cpudev *d = ctx;
    bool found = false;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n && !found; i++) {
        if (d->bufs[i].start == (uintptr_t)ptr) {
            d->bufs[i] = d->bufs[--d->n];
            found = true;
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (found) {
        free(ptr); /* a pointer it never gave is left alone (and leaks show in ASan) */
    }
}

static ps_status buf_upload(void *exec, void *dst, const void *src, size_t bytes) {
    cpudev_exec *e = exec;
    if (e->rec != NULL) { /* a graph would copy from src as it is when replayed */
        return cpudev_refuse(e, "upload while recording a graph");
    }
    if (!cpudev_holds(e, "upload destination", dst, bytes)) {
        return PS_STATUS_INTERNAL;
    }
    memcpy(dst, src, bytes);
    return PS_STATUS_OK;
}

static ps_status buf_download(void *exec, void *dst, const void *src, size_t bytes) {
    cpudev_exec *e = exec;
    if (e->rec != NULL) {
        return cpudev_refuse(e, "download while recording a graph");
    }
    if (!cpudev_holds(e, "download source", src, bytes)) {
        return PS_STATUS_INTERNAL;
    }
    memcpy(dst, src, bytes);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Streams and the module */

static ps_status stream_create(void *ctx, void **ret_exec) {
    cpudev_exec *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    e->d = ctx;
    *ret_exec = e;
    return PS_STATUS_OK;
}

static void stream_destroy(void *ctx, void *exec) {
    (void)ctx;
    free(exec); /* a recording left open is the caller's leak: ASan shows it */
}

static const char *last_error(void *exec) {
    return ((cpudev_exec *)exec)->last_error; /* read after the failure, same thread */
}

static void free_ctx(void *ctx) {
    cpudev *d = ctx;
    if (d == NULL) {
        return;
    }
    pthread_mutex_destroy(&d->lock);
    free(d); /* buffers still registered leak, and ASan says where they came from */
}

ps_status kernels_backend_module_init(uint32_t abi_version, kernels_backend_iface *ret_iface,
                                      void **ret_ctx);

ps_status kernels_backend_module_init(uint32_t abi_version, kernels_backend_iface *ret_iface,
                                      void **ret_ctx) {
    if (abi_version != KERNELS_BACKEND_ABI_VERSION) {
        return PS_STATUS_FAILED_PRECONDITION;
    }
    cpudev *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&d->lock, NULL);
    d->base.d = d;
    d->cpu = kernels_cpu_iface();
    kernels_backend_iface iface;
    memset(&iface, 0, sizeof(iface));
    iface.name = "cpudev";
    iface.free_ctx = free_ctx;
    iface.device_memory = true;
    iface.stream_create = stream_create;
    iface.stream_destroy = stream_destroy;
    iface.buffer_alloc = buf_alloc;
    iface.buffer_free = buf_free;
    iface.buffer_upload = buf_upload;
    iface.buffer_download = buf_download;
    iface.last_error = last_error;
    cpudev_ops_fill(d->cpu, &iface);
    cpudev_graph_fill(&iface);
    *ret_iface = iface;
    *ret_ctx = d;
    return PS_STATUS_OK;
}
