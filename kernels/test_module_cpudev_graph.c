/* test_module_cpudev_graph.c: how the cpudev test backend runs an op (see
 * test_module_cpudev.h): at once, or into the stream's recording, which a launch
 * replays in order. A replay checks again that every tensor it names is still in a
 * cpudev buffer (a graph that outlives its buffers fails, as it would crash a GPU).
 * With PS_CPUDEV_NO_GRAPHS=1 in the environment every recording fails at its end, as
 * on a backend that cannot replay what it recorded. */
#include "test_module_cpudev.h"

#include <stdatomic.h>
#include <stdlib.h>

struct cpudev_graph {
    cpudev_call *calls; /* [n] in issue order */
    size_t n, cap;
};

static atomic_uint_fast64_t launches; /* graphs launched, for the tests */

uint64_t kernels_cpudev_graph_launches(void) {
    return (uint64_t)atomic_load(&launches);
}

/* The CPU ops keep no state: they get no context (as in the cpumod test module). */
static ps_status run(const kernels_backend_iface *cpu, const cpudev_call *c) {
    const float *const *in = c->in;
    const size_t *n = c->n;
    switch (c->op) {
    case CPUDEV_DENSE:
        return cpu->dense(NULL, in[0], n[0], n[1], in[1], in[2], n[2], (kernels_activation)c->mode,
                          c->y);
    case CPUDEV_SOFTMAX:
        return cpu->softmax(NULL, in[0], n[0], n[1], c->y);
    case CPUDEV_RELU:
        return cpu->relu(NULL, in[0], n[0], c->y);
    case CPUDEV_ADD:
        return cpu->add(NULL, in[0], in[1], n[0], c->y);
    case CPUDEV_SCALE:
        return cpu->scale(NULL, in[0], n[0], n[1], in[1], in[2], c->y);
    case CPUDEV_CONCAT:
        return cpu->concat(NULL, in[0], n[0], in[1], n[1], n[2], c->y);
    case CPUDEV_COPY:
        if (cpu->copy != NULL) {
            return cpu->copy(NULL, in[0], n[0], c->y);
        }
        for (size_t i = 0; i < n[0]; i++) { /* the CPU's copy is the dispatcher's memmove */
            c->y[i] = in[0][i];
        }
        return PS_STATUS_OK;
    case CPUDEV_ACTIVATION:
        return cpu->activation(NULL, (kernels_activation)c->mode, in[0], n[0], c->y);
    case CPUDEV_CONV2D:
        return cpu->conv2d(NULL, &c->conv, in[0], in[1], in[2], (kernels_activation)c->mode, c->y);
    case CPUDEV_POOL2D:
        return cpu->pool2d(NULL, &c->pool, (kernels_pool2d_kind)c->mode, in[0], c->y);
    case CPUDEV_LAYERNORM:
        return cpu->layernorm(NULL, in[0], n[0], n[1], in[1], in[2], c->eps, c->y);
    case CPUDEV_ATTENTION:
        return cpu->attention(NULL, &c->att, in[0], in[1], in[2], in[3], c->y);
    case CPUDEV_MEAN_POOL:
        return cpu->mean_pool(NULL, in[0], n[0], n[1], n[2], in[1], c->y);
    case CPUDEV_TRANSPOSE:
        return cpu->transpose(NULL, in[0], c->dims, n[0], c->perm, c->y);
    case CPUDEV_L2_NORMALIZE:
        return cpu->l2_normalize(NULL, in[0], n[0], n[1], c->eps, c->y);
    }
    return PS_STATUS_INTERNAL;
}

ps_status cpudev_issue(cpudev_exec *e, const cpudev_call *c) {
    cpudev_graph *g = e->rec;
    if (g == NULL) {
        return run(cpudev_cpu(e->d), c);
    }
    if (g->n == g->cap) {
        const size_t cap = g->cap > 0 ? 2 * g->cap : 16;
        cpudev_call *grown =
            cap <= CPUDEV_MAX_GRAPH_CALLS ? realloc(g->calls, cap * sizeof(*grown)) : NULL;
        if (grown == NULL) {
            return cpudev_refuse(e, "graph too long");
        }
        g->calls = grown;
        g->cap = cap;
    }
    g->calls[g->n++] = *c;
    return PS_STATUS_OK;
}

static void graph_free(void *ctx, void *graph) {
    (void)ctx;
    cpudev_graph *g = graph;
    if (g != NULL) {
        free(g->calls);
        free(g);
    }
}

static ps_status graph_begin(void *exec) {
    cpudev_exec *e = exec;
    if (e->rec != NULL) {
        return cpudev_refuse(e, "graph_begin while recording");
    }
    e->rec = calloc(1, sizeof(*e->rec));
    e->rec_failed = false;
    return e->rec != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

static ps_status graph_end(void *exec, void **ret_graph) {
    cpudev_exec *e = exec;
    cpudev_graph *g = e->rec;
    e->rec = NULL;
    if (g == NULL) {
        return cpudev_refuse(e, "graph_end without graph_begin");
    }
    const char *refuse = getenv("PS_CPUDEV_NO_GRAPHS"); /* tests: a backend that cannot */
    if (refuse != NULL && refuse[0] == '1') {
        e->rec_failed = true;
    }
    if (e->rec_failed) { /* something it holds could not be replayed */
        graph_free(NULL, g);
        return PS_STATUS_INTERNAL;
    }
    *ret_graph = g;
    return PS_STATUS_OK;
}

static ps_status graph_launch(void *exec, void *graph) {
    cpudev_exec *e = exec;
    const cpudev_graph *g = graph;
    if (e->rec != NULL) {
        return cpudev_refuse(e, "graph launched while recording");
    }
    atomic_fetch_add(&launches, 1);
    for (size_t i = 0; i < g->n; i++) {
        const cpudev_call *c = &g->calls[i];
        for (size_t k = 0; k < 4; k++) {
            if (c->in[k] != NULL && !cpudev_holds(e, "a replayed op's input", c->in[k], 0)) {
                return PS_STATUS_INTERNAL;
            }
        }
        if (!cpudev_holds(e, "a replayed op's output", c->y, 0)) {
            return PS_STATUS_INTERNAL;
        }
        ps_status st = run(cpudev_cpu(e->d), c);
        if (st != PS_STATUS_OK) {
            return st;
        }
    }
    return PS_STATUS_OK;
}

void cpudev_graph_fill(kernels_backend_iface *iface) {
    iface->graph_begin = graph_begin;
    iface->graph_end = graph_end;
    iface->graph_launch = graph_launch;
    iface->graph_free = graph_free;
}
