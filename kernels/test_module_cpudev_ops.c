/* test_module_cpudev_ops.c: the cpudev test backend's ops (see test_module_cpudev.h):
 * each checks that every tensor it is given lies inside one cpudev buffer, extent
 * included, then issues the CPU backend's op (run now, or recorded into a graph).
 * Index arrays are host memory on every backend (ops.h), so they are not checked, but
 * an op that reads them cannot be recorded. The sizes were checked by the dispatcher,
 * so the extents below cannot overflow. */
#include "test_module_cpudev.h"

#include <string.h>

#define F(n) ((n) * sizeof(float)) /* bytes of n floats */

static ps_status dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                       const float *bias, size_t out, kernels_activation act, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "dense x", x, F(rows * in)) ||
        !cpudev_holds(e, "dense w", w, F(out * in)) ||
        (bias != NULL && !cpudev_holds(e, "dense bias", bias, F(out))) ||
        !cpudev_holds(e, "dense y", y, F(rows * out))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {
        .op = CPUDEV_DENSE, .in = {x, w, bias}, .y = y, .n = {rows, in, out}, .mode = (int)act};
    return cpudev_issue(e, &c);
}

static ps_status softmax(void *exec, const float *x, size_t rows, size_t cols, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "softmax x", x, F(rows * cols)) ||
        !cpudev_holds(e, "softmax y", y, F(rows * cols))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_SOFTMAX, .in = {x}, .y = y, .n = {rows, cols}};
    return cpudev_issue(e, &c);
}

static ps_status relu(void *exec, const float *x, size_t n, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "relu x", x, F(n)) || !cpudev_holds(e, "relu y", y, F(n))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_RELU, .in = {x}, .y = y, .n = {n}};
    return cpudev_issue(e, &c);
}

static ps_status add(void *exec, const float *a, const float *b, size_t n, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "add a", a, F(n)) || !cpudev_holds(e, "add b", b, F(n)) ||
        !cpudev_holds(e, "add y", y, F(n))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_ADD, .in = {a, b}, .y = y, .n = {n}};
    return cpudev_issue(e, &c);
}

static ps_status scale(void *exec, const float *x, size_t rows, size_t cols, const float *sc,
                       const float *shift, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "scale x", x, F(rows * cols)) ||
        (sc != NULL && !cpudev_holds(e, "scale scale", sc, F(cols))) ||
        (shift != NULL && !cpudev_holds(e, "scale shift", shift, F(cols))) ||
        !cpudev_holds(e, "scale y", y, F(rows * cols))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_SCALE, .in = {x, sc, shift}, .y = y, .n = {rows, cols}};
    return cpudev_issue(e, &c);
}

static ps_status concat(void *exec, const float *a, size_t ca, const float *b, size_t cb,
                        size_t rows, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "concat a", a, F(rows * ca)) ||
        !cpudev_holds(e, "concat b", b, F(rows * cb)) ||
        !cpudev_holds(e, "concat y", y, F(rows * (ca + cb)))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_CONCAT, .in = {a, b}, .y = y, .n = {ca, cb, rows}};
    return cpudev_issue(e, &c);
}

static ps_status copy(void *exec, const float *x, size_t n, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "copy x", x, F(n)) || !cpudev_holds(e, "copy y", y, F(n))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_COPY, .in = {x}, .y = y, .n = {n}};
    return cpudev_issue(e, &c);
}

static ps_status activation(void *exec, kernels_activation act, const float *x, size_t n,
                            float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "activation x", x, F(n)) || !cpudev_holds(e, "activation y", y, F(n))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_ACTIVATION, .in = {x}, .y = y, .n = {n}, .mode = (int)act};
    return cpudev_issue(e, &c);
}

static ps_status conv2d(void *exec, const kernels_conv2d_shape *s, const float *x, const float *w,
                        const float *bias, kernels_activation act, float *y) {
    cpudev_exec *e = exec;
    size_t p = 0, q = 0;
    if (kernels_conv2d_out_size(s, &p, &q) != PS_STATUS_OK) {
        return PS_STATUS_INTERNAL; /* the dispatcher checked it */
    }
    const size_t wn = s->out_channels * (s->in_channels / s->groups) * s->kernel_h * s->kernel_w;
    if (!cpudev_holds(e, "conv2d x", x, F(s->batch * s->in_channels * s->in_h * s->in_w)) ||
        !cpudev_holds(e, "conv2d w", w, F(wn)) ||
        (bias != NULL && !cpudev_holds(e, "conv2d bias", bias, F(s->out_channels))) ||
        !cpudev_holds(e, "conv2d y", y, F(s->batch * s->out_channels * p * q))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {
        .op = CPUDEV_CONV2D, .in = {x, w, bias}, .y = y, .conv = *s, .mode = (int)act};
    return cpudev_issue(e, &c);
}

static ps_status pool2d(void *exec, const kernels_pool2d_shape *s, kernels_pool2d_kind kind,
                        const float *x, float *y) {
    cpudev_exec *e = exec;
    size_t p = 0, q = 0;
    if (kernels_pool2d_out_size(s, &p, &q) != PS_STATUS_OK) {
        return PS_STATUS_INTERNAL;
    }
    if (!cpudev_holds(e, "pool2d x", x, F(s->batch * s->channels * s->in_h * s->in_w)) ||
        !cpudev_holds(e, "pool2d y", y, F(s->batch * s->channels * p * q))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_POOL2D, .in = {x}, .y = y, .pool = *s, .mode = (int)kind};
    return cpudev_issue(e, &c);
}

static ps_status layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                           const float *beta, float eps, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "layernorm x", x, F(rows * cols)) ||
        (gamma != NULL && !cpudev_holds(e, "layernorm gamma", gamma, F(cols))) ||
        (beta != NULL && !cpudev_holds(e, "layernorm beta", beta, F(cols))) ||
        !cpudev_holds(e, "layernorm y", y, F(rows * cols))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {
        .op = CPUDEV_LAYERNORM, .in = {x, gamma, beta}, .y = y, .n = {rows, cols}, .eps = eps};
    return cpudev_issue(e, &c);
}

static ps_status attention(void *exec, const kernels_attention_shape *s, const float *q,
                           const float *k, const float *v, const float *mask, float *y) {
    cpudev_exec *e = exec;
    const size_t hidden = s->heads * s->head_dim;
    const size_t extent = (s->batch * s->seq - 1) * s->ld + hidden; /* last token's row */
    if (!cpudev_holds(e, "attention q", q, F(extent)) ||
        !cpudev_holds(e, "attention k", k, F(extent)) ||
        !cpudev_holds(e, "attention v", v, F(extent)) ||
        (mask != NULL && !cpudev_holds(e, "attention mask", mask, F(s->batch * s->seq))) ||
        !cpudev_holds(e, "attention y", y, F(s->batch * s->seq * hidden))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_ATTENTION, .in = {q, k, v, mask}, .y = y, .att = *s};
    return cpudev_issue(e, &c);
}

static ps_status mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                           const float *mask, float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "mean_pool x", x, F(batch * seq * dim)) ||
        (mask != NULL && !cpudev_holds(e, "mean_pool mask", mask, F(batch * seq))) ||
        !cpudev_holds(e, "mean_pool y", y, F(batch * dim))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {.op = CPUDEV_MEAN_POOL, .in = {x, mask}, .y = y, .n = {batch, seq, dim}};
    return cpudev_issue(e, &c);
}

static ps_status transpose(void *exec, const float *x, const size_t *dims, size_t ndims,
                           const size_t *perm, float *y) {
    cpudev_exec *e = exec;
    size_t n = 1;
    for (size_t i = 0; i < ndims; i++) {
        n *= dims[i];
    }
    if (!cpudev_holds(e, "transpose x", x, F(n)) || !cpudev_holds(e, "transpose y", y, F(n))) {
        return PS_STATUS_INTERNAL;
    }
    cpudev_call c = {.op = CPUDEV_TRANSPOSE, .in = {x}, .y = y, .n = {ndims}};
    memcpy(c.dims, dims, ndims * sizeof(*dims)); /* ndims <= KERNELS_MAX_NDIM: checked */
    memcpy(c.perm, perm, ndims * sizeof(*perm));
    return cpudev_issue(e, &c);
}

static ps_status l2_normalize(void *exec, const float *x, size_t rows, size_t cols, float eps,
                              float *y) {
    cpudev_exec *e = exec;
    if (!cpudev_holds(e, "l2_normalize x", x, F(rows * cols)) ||
        !cpudev_holds(e, "l2_normalize y", y, F(rows * cols))) {
        return PS_STATUS_INTERNAL;
    }
    const cpudev_call c = {
        .op = CPUDEV_L2_NORMALIZE, .in = {x}, .y = y, .n = {rows, cols}, .eps = eps};
    return cpudev_issue(e, &c);
}

/* The ops that read host ids: run at once, never recorded (a replay would read the
 * ids as they were when recorded). */

static ps_status embedding_bag(void *exec, const float *rows, size_t n_rows, size_t dim,
                               const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                               float *y) {
    cpudev_exec *e = exec;
    if (e->rec != NULL) {
        return cpudev_refuse(e, "embedding_bag (host ids) while recording a graph");
    }
    if ((n_rows > 0 && !cpudev_holds(e, "embedding_bag rows", rows, F(n_rows * dim))) ||
        !cpudev_holds(e, "embedding_bag y", y, F(batch * dim))) {
        return PS_STATUS_INTERNAL;
    }
    return cpudev_cpu(e->d)->embedding_bag(NULL, rows, n_rows, dim, index, batch, len, pool, y);
}

static ps_status embedding_gather(void *exec, const float *table, size_t n_rows, size_t dim,
                                  const int64_t *index, size_t n, float *y) {
    cpudev_exec *e = exec;
    if (e->rec != NULL) {
        return cpudev_refuse(e, "embedding_gather (host ids) while recording a graph");
    }
    if ((n_rows > 0 && !cpudev_holds(e, "embedding_gather table", table, F(n_rows * dim))) ||
        !cpudev_holds(e, "embedding_gather y", y, F(n * dim))) {
        return PS_STATUS_INTERNAL;
    }
    return cpudev_cpu(e->d)->embedding_gather(NULL, table, n_rows, dim, index, n, y);
}

void cpudev_ops_fill(const kernels_backend_iface *cpu, kernels_backend_iface *iface) {
    /* required ops, and copy (required of a device backend) */
    iface->dense = dense;
    iface->softmax = softmax;
    iface->relu = relu;
    iface->add = add;
    iface->copy = copy;
    /* optional ops: those the CPU backend has */
    iface->scale = cpu->scale != NULL ? scale : NULL;
    iface->embedding_bag = cpu->embedding_bag != NULL ? embedding_bag : NULL;
    iface->concat = cpu->concat != NULL ? concat : NULL;
    iface->activation = cpu->activation != NULL ? activation : NULL;
    iface->conv2d = cpu->conv2d != NULL ? conv2d : NULL;
    iface->pool2d = cpu->pool2d != NULL ? pool2d : NULL;
    iface->layernorm = cpu->layernorm != NULL ? layernorm : NULL;
    iface->attention = cpu->attention != NULL ? attention : NULL;
    iface->mean_pool = cpu->mean_pool != NULL ? mean_pool : NULL;
    iface->embedding_gather = cpu->embedding_gather != NULL ? embedding_gather : NULL;
    iface->transpose = cpu->transpose != NULL ? transpose : NULL;
    iface->l2_normalize = cpu->l2_normalize != NULL ? l2_normalize : NULL;
}
