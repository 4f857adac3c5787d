/* ops_image.c: dispatchers of dense, conv2d and pool2d (see ops.h): argument and shape
 * checks, then the stream's backend. Shape arithmetic is done with overflow checks
 * before any product is trusted, so a hostile shape gets INVALID_ARGUMENT.
 */
#include "backend_internal.h"

/* The output length of one spatial axis: (in + 2 pad - (dil (k - 1) + 1)) / stride + 1,
 * false when it overflows or the (dilated) kernel does not fit the padded input. */
static bool axis_out(size_t in, size_t pad, size_t kernel, size_t stride, size_t dil, size_t *ret) {
    size_t padded, span, eff;
    if (!kernels_size_ok(in) || !kernels_size_ok(kernel) || !kernels_size_ok(stride) ||
        !kernels_size_ok(dil) || pad > KERNELS_MAX_DIM ||
        __builtin_mul_overflow(pad, (size_t)2, &span) ||
        __builtin_add_overflow(in, span, &padded) ||
        __builtin_mul_overflow(dil, kernel - 1, &eff) || eff >= padded) {
        return false;
    }
    *ret = (padded - eff - 1) / stride + 1;
    return true;
}

ps_status kernels_conv2d_out_size(const kernels_conv2d_shape *shape, size_t *ret_h, size_t *ret_w) {
    if (shape == NULL || ret_h == NULL || ret_w == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_conv2d_shape *c = shape;
    size_t p, q, n_x, n_w, n_y;
    if (!kernels_size_ok(c->batch) || !kernels_size_ok(c->in_channels) ||
        !kernels_size_ok(c->out_channels) || !kernels_size_ok(c->groups) ||
        c->in_channels % c->groups != 0 || c->out_channels % c->groups != 0 ||
        !axis_out(c->in_h, c->pad_h, c->kernel_h, c->stride_h, c->dilation_h, &p) ||
        !axis_out(c->in_w, c->pad_w, c->kernel_w, c->stride_w, c->dilation_w, &q) ||
        !kernels_mul3_ok(c->in_channels, c->in_h, c->in_w, &n_x) ||
        !kernels_mul_ok(n_x, c->batch, &n_x) ||
        !kernels_mul3_ok(c->in_channels / c->groups, c->kernel_h, c->kernel_w, &n_w) ||
        !kernels_mul_ok(n_w, c->out_channels, &n_w) ||
        !kernels_mul3_ok(c->out_channels, p, q, &n_y) || !kernels_mul_ok(n_y, c->batch, &n_y)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_h = p;
    *ret_w = q;
    return PS_STATUS_OK;
}

ps_status kernels_pool2d_out_size(const kernels_pool2d_shape *shape, size_t *ret_h, size_t *ret_w) {
    if (shape == NULL || ret_h == NULL || ret_w == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_pool2d_shape *c = shape;
    size_t p, q, n_x, n_y;
    if (!kernels_size_ok(c->batch) || !kernels_size_ok(c->channels) ||
        !axis_out(c->in_h, c->pad_h, c->kernel_h, c->stride_h, 1, &p) ||
        !axis_out(c->in_w, c->pad_w, c->kernel_w, c->stride_w, 1, &q) ||
        c->pad_h > c->kernel_h / 2 || c->pad_w > c->kernel_w / 2 ||
        !kernels_mul3_ok(c->channels, c->in_h, c->in_w, &n_x) ||
        !kernels_mul_ok(n_x, c->batch, &n_x) || !kernels_mul3_ok(c->channels, p, q, &n_y) ||
        !kernels_mul_ok(n_y, c->batch, &n_y)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_h = p;
    *ret_w = q;
    return PS_STATUS_OK;
}

ps_status kernels_op_dense(kernels_stream *s, const float *x, size_t rows, size_t in,
                           const float *w, const float *bias, size_t out, kernels_activation act,
                           float *y) {
    size_t n;
    if (s == NULL || x == NULL || w == NULL || y == NULL || !kernels_size_ok(rows) ||
        !kernels_size_ok(in) || !kernels_size_ok(out) || !kernels_mul_ok(rows, in, &n) ||
        !kernels_mul_ok(out, in, &n) || !kernels_mul_ok(rows, out, &n) ||
        !kernels_activation_ok(act)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return kernels_stream_iface(s)->dense(s->exec, x, rows, in, w, bias, out, act, y);
}

ps_status kernels_op_conv2d(kernels_stream *s, const kernels_conv2d_shape *shape, const float *x,
                            const float *w, const float *bias, kernels_activation act, float *y) {
    if (s == NULL || shape == NULL || x == NULL || w == NULL || y == NULL ||
        !kernels_activation_ok(act)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_conv2d_shape checked = *shape; /* the backend sees what was checked */
    size_t p, q;
    ps_status st = kernels_conv2d_out_size(&checked, &p, &q);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->conv2d == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->conv2d(s->exec, &checked, x, w, bias, act, y);
}

ps_status kernels_op_pool2d(kernels_stream *s, const kernels_pool2d_shape *shape,
                            kernels_pool2d_kind kind, const float *x, float *y) {
    if (s == NULL || shape == NULL || x == NULL || y == NULL ||
        (kind != KERNELS_POOL2D_MAX && kind != KERNELS_POOL2D_AVG &&
         kind != KERNELS_POOL2D_AVG_EXCLUDE_PAD)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const kernels_pool2d_shape checked = *shape;
    size_t p, q;
    ps_status st = kernels_pool2d_out_size(&checked, &p, &q);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const kernels_backend_iface *iface = kernels_stream_iface(s);
    if (iface->pool2d == NULL) {
        return PS_STATUS_UNIMPLEMENTED;
    }
    return iface->pool2d(s->exec, &checked, kind, x, y);
}
