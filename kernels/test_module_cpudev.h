/* test_module_cpudev.h: what the three files of the cpudev test backend share (not
 * shipped; see test_module_cpudev.c for why it exists).
 *
 * cpudev is the CPU backend's ops behind a device-memory contract: it reports device
 * memory, hands out buffers of its own and keeps a registry of them, and each op first
 * checks that every tensor it is given lies inside one registered buffer (index arrays
 * excepted: host memory by contract, ops.h), failing with INTERNAL otherwise. An
 * executor that hands an op a host pointer where device memory is due fails here, as
 * it would on a GPU. Its streams record graphs too (backend.h, "Graphs"), with CUDA's
 * rules made strict: an upload, a download or an op reading host ids while recording
 * fails, so a graph that would replay stale host memory is never made.
 *
 * An op is checked by its wrapper (test_module_cpudev_ops.c), which then issues it as
 * a cpudev_call: run at once, or appended to the stream's recording
 * (test_module_cpudev_graph.c).
 */
#ifndef PS_KERNELS_TEST_MODULE_CPUDEV_H
#define PS_KERNELS_TEST_MODULE_CPUDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Most buffers one cpudev backend holds at once (a guard against leaks in loops). */
#define CPUDEV_MAX_BUFFERS 65536u
/* Most ops one graph records. */
#define CPUDEV_MAX_GRAPH_CALLS 4096u
/* Longest last-error message. */
#define CPUDEV_ERR_LEN 256u

typedef struct cpudev cpudev;
typedef struct cpudev_graph cpudev_graph;

/* A stream (the default stream's exec is the backend context, whose first member is
 * one of these). */
typedef struct cpudev_exec {
    cpudev *d;                       /* the backend */
    cpudev_graph *rec;               /* the recording in progress, or NULL */
    bool rec_failed;                 /* something was refused while recording */
    char last_error[CPUDEV_ERR_LEN]; /* the last refusal ("" none) */
} cpudev_exec;

/* The ops a graph can hold: those that read device memory only. */
typedef enum cpudev_op {
    CPUDEV_DENSE,
    CPUDEV_SOFTMAX,
    CPUDEV_RELU,
    CPUDEV_ADD,
    CPUDEV_SCALE,
    CPUDEV_CONCAT,
    CPUDEV_COPY,
    CPUDEV_ACTIVATION,
    CPUDEV_CONV2D,
    CPUDEV_POOL2D,
    CPUDEV_LAYERNORM,
    CPUDEV_ATTENTION,
    CPUDEV_MEAN_POOL,
    CPUDEV_TRANSPOSE,
    CPUDEV_L2_NORMALIZE,
} cpudev_op;

/* One op with its arguments, as issued (host values copied). */
typedef struct cpudev_call {
    cpudev_op op;
    const float *in[4]; /* its tensor inputs in the iface's order (NULL: absent) */
    float *y;           /* its output */
    size_t n[4];        /* its sizes in the iface's order */
    int mode;           /* activation, pool2d kind */
    float eps;
    kernels_conv2d_shape conv;
    kernels_pool2d_shape pool;
    kernels_attention_shape att;
    size_t dims[KERNELS_MAX_NDIM], perm[KERNELS_MAX_NDIM];
} cpudev_call;

/* True when bytes [p, p + bytes) lie inside one of the backend's buffers (bytes 0: p
 * itself inside); else records "<what> is not cpudev memory" as e's last error. */
bool cpudev_holds(cpudev_exec *e, const char *what, const void *p, size_t bytes);
/* Records a refusal as e's last error (and spoils a recording); returns INTERNAL. */
ps_status cpudev_refuse(cpudev_exec *e, const char *what);
/* The CPU backend's iface, whose ops do the work. */
const kernels_backend_iface *cpudev_cpu(const cpudev *d);

/* test_module_cpudev_ops.c: fills iface's op entries with the checking wrappers. */
void cpudev_ops_fill(const kernels_backend_iface *cpu, kernels_backend_iface *iface);

/* test_module_cpudev_graph.c */
/* Runs a checked call now, or appends it to e's recording. */
ps_status cpudev_issue(cpudev_exec *e, const cpudev_call *c);
/* Fills iface's graph entries. */
void cpudev_graph_fill(kernels_backend_iface *iface);
/* Graphs launched since the module was loaded (tests read it with dlsym). */
uint64_t kernels_cpudev_graph_launches(void);

#endif
