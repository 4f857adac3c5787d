/* ops_seq.c: dispatchers of the row and sequence ops (see ops.h): activation,
 * softmax, layernorm, attention, mean pooling, L2 normalisation. Checks first, then the
 * backend.
 */
#include "backend_internal.h"

#include <float.h>

ps_status kernels_op_activation(kernels_stream *s, kernels_activation act, const float *x, size_t n,
                                float *y) {
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(n) || !kernels_activation_ok(act)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->activation != NULL) {
        return iface->activation(s->exec, act, x, n, y);
    }
    if (act == KERNELS_ACTIVATION_RELU) {
        return iface->relu(s->exec, x, n, y); /* every backend has relu */
    }
    return PS_STATUS_UNIMPLEMENTED;
}

ps_status kernels_op_softmax(kernels_stream *s, const float *x, size_t rows, size_t cols,
                             float *y) {
    size_t n;
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(rows) || !kernels_size_ok(cols) ||
        !kernels_mul_ok(rows, cols, &n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return kernels_stream_iface(s)->softmax(s->exec, x, rows, cols, y);
}

ps_status kernels_op_layernorm(kernels_stream *s, const float *x, size_t rows, size_t cols,
                               const float *gamma, const float *beta, float eps, float *y) {
    size_t n;
    /* eps > 0 and <= FLT_MAX: also false for NaN and infinity. */
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(rows) || !kernels_size_ok(cols) ||
        !kernels_mul_ok(rows, cols, &n) || !(eps > 0.0f && eps <= FLT_MAX)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->layernorm == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->layernorm(s->exec, x, rows, cols, gamma, beta, eps, y);
}

ps_status kernels_op_attention(kernels_stream *s, const kernels_attention_shape *shape,
                               const float *q, const float *k, const float *v, const float *mask,
                               float *y) {
    if (s == NULL || shape == NULL || q == NULL || k == NULL || v == NULL || y == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_attention_shape c = *shape; /* the backend sees what was checked */
    size_t hidden, extent;
    if (!kernels_size_ok(c.batch) || !kernels_size_ok(c.seq) || !kernels_size_ok(c.heads) ||
        !kernels_size_ok(c.head_dim) || c.seq > KERNELS_ATTENTION_MAX_SEQ ||
        !kernels_mul_ok(c.heads, c.head_dim, &hidden) || c.ld < hidden ||
        !kernels_mul3_ok(c.batch, c.seq, c.ld, &extent)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->attention == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->attention(s->exec, &c, q, k, v, mask, y);
}

ps_status kernels_op_mean_pool(kernels_stream *s, const float *x, size_t batch, size_t seq,
                               size_t dim, const float *mask, float *y) {
    size_t n;
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(batch) || !kernels_size_ok(seq) ||
        !kernels_size_ok(dim) || !kernels_mul3_ok(batch, seq, dim, &n)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->mean_pool == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->mean_pool(s->exec, x, batch, seq, dim, mask, y);
}

ps_status kernels_op_l2_normalize(kernels_stream *s, const float *x, size_t rows, size_t cols,
                                  float eps, float *y) {
    size_t n;
    /* eps > 0 and <= FLT_MAX: also false for NaN and infinity. */
    if (s == NULL || x == NULL || y == NULL || !kernels_size_ok(rows) || !kernels_size_ok(cols) ||
        !kernels_mul_ok(rows, cols, &n) || !(eps > 0.0f && eps <= FLT_MAX)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->l2_normalize == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->l2_normalize(s->exec, x, rows, cols, eps, y);
}
