/* ops.h: the ops every kernels backend runs, with their shapes and conventions.
 *
 * The model executor calls ops only through these dispatchers (kernels_op_*), never a
 * backend directly. Each dispatcher checks every pointer and size first (every size
 * non-zero and every tensor's element count, products included, at most
 * KERNELS_MAX_DIM, computed without overflow), answers INVALID_ARGUMENT for bad
 * arguments, UNIMPLEMENTED when the backend lacks the op, and only then calls the
 * backend (backend.h) with sizes it may trust. An op runs on a stream (backend.h):
 * the call may return before a device backend has finished; kernels_stream_sync or a
 * download waits, and reports a failure found while running.
 *
 * Conventions (the same on every backend; the CPU backend is the reference):
 *   - FP32, row-major, contiguous. "rows x cols" means cols is the fastest axis.
 *   - Tensor pointers (float *) are backend memory (kernels_buffer_alloc; plain host
 *     memory on a host-memory backend). Index arrays (int64_t *) are HOST memory on
 *     every backend: ids come from requests, and the dispatcher checks every entry
 *     before a backend reads a table with them; a device backend copies them itself.
 *   - An output never aliases an input unless the op says so.
 *   - Images are NCHW. Dense weights are [out, in] (PyTorch Linear). Conv weights are
 *     [out_channels, in_channels / groups, kernel_h, kernel_w] (PyTorch Conv2d).
 *   - GELU is PyTorch's default: 0.5 x (1 + erf(x / sqrt 2)) (not the tanh form).
 *   - Masks ([batch, seq], backend memory, FP32) are 1 for a token, 0 for padding
 *     (the tokenizer's attention_mask as floats); attention treats any non-zero as a
 *     token, mean pooling weights each token by its mask value.
 */
#ifndef PS_KERNELS_OPS_H
#define PS_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Largest size of any axis and largest element count of any tensor one op accepts:
 * BLAS (and cuBLAS) take int sizes. Products past it are INVALID_ARGUMENT. */
#define KERNELS_MAX_DIM 2147483647u

/* Most axes a reshape or transpose takes. */
#define KERNELS_MAX_NDIM 8u

/* Longest sequence attention takes: the CPU backend keeps a seq x seq score matrix
 * per (sample, head), 256 MiB at this length. */
#define KERNELS_ATTENTION_MAX_SEQ 8192u

typedef struct kernels_stream kernels_stream;

/* Elementwise function (after dense and conv2d, or alone: kernels_op_activation). */
typedef enum kernels_activation {
    KERNELS_ACTIVATION_NONE = 0, /* y = x */
    KERNELS_ACTIVATION_RELU,     /* y = max(x, 0) */
    KERNELS_ACTIVATION_SIGMOID,  /* y = 1 / (1 + exp(-x)) */
    KERNELS_ACTIVATION_TANH,     /* y = tanh(x) */
    KERNELS_ACTIVATION_GELU,     /* y = 0.5 x (1 + erf(x / sqrt 2)), PyTorch's default */
} kernels_activation;

/* How an embedding bag reduces the rows of one sample. */
typedef enum kernels_pool {
    KERNELS_POOL_SUM = 0, /* y = the sum of the sample's rows */
    KERNELS_POOL_MEAN,    /* y = that sum / the count of rows (not padding); zeros for none */
} kernels_pool;

/* 2-D pooling (PyTorch MaxPool2d / AvgPool2d, ceil_mode=False). */
typedef enum kernels_pool2d_kind {
    KERNELS_POOL2D_MAX = 0,         /* the window's maximum; padding never wins */
    KERNELS_POOL2D_AVG,             /* sum / (kernel_h * kernel_w): count_include_pad=True,
                                     * PyTorch's default (padding counts as zeros) */
    KERNELS_POOL2D_AVG_EXCLUDE_PAD, /* sum / the window's elements inside the image:
                                     * count_include_pad=False */
} kernels_pool2d_kind;

/* conv2d: y[N, K, P, Q] = act(conv(x[N, C, H, W], w[K, C/groups, R, S]) + bias[K]), with
 * P = (H + 2 pad_h - dilation_h (R - 1) - 1) / stride_h + 1 (Q likewise): PyTorch
 * Conv2d with zero padding. Every field >= 1 except the paddings (>= 0); groups
 * divides C and K; the dilated kernel fits the padded image. */
typedef struct kernels_conv2d_shape {
    size_t batch;                  /* N */
    size_t in_channels;            /* C */
    size_t in_h, in_w;             /* H, W */
    size_t out_channels;           /* K */
    size_t kernel_h, kernel_w;     /* R, S */
    size_t stride_h, stride_w;     /* steps between windows */
    size_t pad_h, pad_w;           /* zeros added on each side */
    size_t dilation_h, dilation_w; /* steps between kernel taps (1: dense kernel) */
    size_t groups;                 /* channel groups (1: ordinary; C: depthwise) */
} kernels_conv2d_shape;

/* pool2d: y[N, C, P, Q] from x[N, C, H, W], P = (H + 2 pad_h - kernel_h) / stride_h + 1.
 * pad_h <= kernel_h / 2 (PyTorch's rule, so every window holds image elements). */
typedef struct kernels_pool2d_shape {
    size_t batch;              /* N */
    size_t channels;           /* C */
    size_t in_h, in_w;         /* H, W */
    size_t kernel_h, kernel_w; /* window */
    size_t stride_h, stride_w; /* steps between windows (PyTorch's default: the kernel) */
    size_t pad_h, pad_w;       /* padding on each side */
} kernels_pool2d_shape;

/* attention: multi-head self-attention on projected q, k, v (BERT: all-MiniLM-L6-v2
 * has hidden 384 = 12 heads x 32). Token t of sample b is the row
 * q + (b * seq + t) * ld (k, v likewise); head h its columns h*head_dim .. +head_dim.
 * ld lets q, k and v come from one packed projection [batch*seq, 3*hidden] (q = p,
 * k = p + hidden, v = p + 2*hidden, ld = 3*hidden) or from three [.., hidden] tensors
 * (ld = hidden). y[batch, seq, heads*head_dim] (heads side by side, ready for the
 * output projection) = per head softmax(q k^T / sqrt(head_dim)) v, the softmax over
 * the keys whose mask is non-zero (masked keys get weight 0; a sample with no
 * token gets zeros). Padded query rows are computed like the others. */
typedef struct kernels_attention_shape {
    size_t batch;    /* samples */
    size_t seq;      /* tokens per sample, <= KERNELS_ATTENTION_MAX_SEQ */
    size_t heads;    /* attention heads */
    size_t head_dim; /* features per head */
    size_t ld;       /* elements from one token's row to the next, >= heads*head_dim */
} kernels_attention_shape;

/* Output size of a conv2d or pool2d (the checks of its dispatcher; INVALID_ARGUMENT
 * when the shape is not allowed). ret_* untouched on failure. */
ps_status kernels_conv2d_out_size(const kernels_conv2d_shape *shape, size_t *ret_h, size_t *ret_w);
ps_status kernels_pool2d_out_size(const kernels_pool2d_shape *shape, size_t *ret_h, size_t *ret_w);

/* ------------------------------------------------------------------------------------ */
/* Linear algebra and images (ops_image.c) */

/* y[rows, out] = act(x[rows, in] w[out, in]^T + bias[out]); bias NULL: none. */
ps_status kernels_op_dense(kernels_stream *s, const float *x, size_t rows, size_t in,
                           const float *w, const float *bias, size_t out, kernels_activation act,
                           float *y);
/* See kernels_conv2d_shape. bias NULL: none. */
ps_status kernels_op_conv2d(kernels_stream *s, const kernels_conv2d_shape *shape, const float *x,
                            const float *w, const float *bias, kernels_activation act, float *y);
/* See kernels_pool2d_shape. */
ps_status kernels_op_pool2d(kernels_stream *s, const kernels_pool2d_shape *shape,
                            kernels_pool2d_kind kind, const float *x, float *y);

/* ------------------------------------------------------------------------------------ */
/* Rows and sequences (ops_seq.c) */

/* y[n] = act(x[n]); y may equal x. */
ps_status kernels_op_activation(kernels_stream *s, kernels_activation act, const float *x, size_t n,
                                float *y);
/* y[rows, cols] = softmax of each row (max subtracted first); y may equal x. */
ps_status kernels_op_softmax(kernels_stream *s, const float *x, size_t rows, size_t cols, float *y);
/* y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta over each row (PyTorch
 * LayerNorm over the last axis: biased variance). gamma, beta [cols] may be NULL (1 and
 * 0). eps finite and > 0. y may equal x. */
ps_status kernels_op_layernorm(kernels_stream *s, const float *x, size_t rows, size_t cols,
                               const float *gamma, const float *beta, float eps, float *y);
/* See kernels_attention_shape. mask [batch, seq] or NULL (no padding). */
ps_status kernels_op_attention(kernels_stream *s, const kernels_attention_shape *shape,
                               const float *q, const float *k, const float *v, const float *mask,
                               float *y);
/* y[b, :] = sum_t mask[b, t] x[b, t, :] / max(sum_t mask[b, t], 1e-9) from x[batch, seq,
 * dim] (sentence-transformers' mean pooling: all padding gives zeros). mask NULL: the
 * plain mean over the tokens. */
ps_status kernels_op_mean_pool(kernels_stream *s, const float *x, size_t batch, size_t seq,
                               size_t dim, const float *mask, float *y);
/* y[r, :] = x[r, :] / max(||x[r, :]||_2, eps) for each row (torch.nn.functional.normalize
 * over the last axis; sentence embeddings use eps 1e-12). eps finite and > 0. y may equal
 * x. Optional in a backend: the CUDA backend has none yet (UNIMPLEMENTED). */
ps_status kernels_op_l2_normalize(kernels_stream *s, const float *x, size_t rows, size_t cols,
                                  float eps, float *y);

/* ------------------------------------------------------------------------------------ */
/* Tables and tensors (ops_tensor.c) */

/* y[i, :] = table[index[i], :] for i < n; index -1: a row of zeros. Every entry is -1 or
 * < n_rows; n_rows may be 0 (table NULL: all padding). */
ps_status kernels_op_embedding_gather(kernels_stream *s, const float *table, size_t n_rows,
                                      size_t dim, const int64_t *index, size_t n, float *y);
/* For each of `batch` samples, its `len` ids index[b * len + j] pick rows of table
 * [n_rows, dim] (-1: padding); y[b, :] = their sum or mean (zeros when all padding). */
ps_status kernels_op_embedding_bag(kernels_stream *s, const float *table, size_t n_rows, size_t dim,
                                   const int64_t *index, size_t batch, size_t len,
                                   kernels_pool pool, float *y);
/* y[n] = a[n] + b[n]; y may equal a or b. */
ps_status kernels_op_add(kernels_stream *s, const float *a, const float *b, size_t n, float *y);
/* y[r, c] = x[r, c] * scale[c] + shift[c]; scale or shift NULL: 1 or 0; y may equal x. */
ps_status kernels_op_scale(kernels_stream *s, const float *x, size_t rows, size_t cols,
                           const float *scale, const float *shift, float *y);
/* y[rows, ca + cb]: each row a[r, :] then b[r, :]. Concatenation along any axis is this
 * with rows = the product of the axes before it (NCHW channels: rows = N, ca = Ca*H*W). */
ps_status kernels_op_concat(kernels_stream *s, const float *a, size_t ca, const float *b, size_t cb,
                            size_t rows, float *y);
/* A reshape moves no data: the dispatcher checks that in_dims and out_dims hold the
 * same element count and copies x to y when they differ (nothing when y == x). */
ps_status kernels_op_reshape(kernels_stream *s, const float *x, const size_t *in_dims,
                             size_t in_ndims, const size_t *out_dims, size_t out_ndims, float *y);
/* y = x with its axes permuted: y's axis i is x's axis perm[i] (numpy / torch.permute),
 * so y's dims are dims[perm[0]], ... . perm is a permutation of 0..ndims-1. */
ps_status kernels_op_transpose(kernels_stream *s, const float *x, const size_t *dims, size_t ndims,
                               const size_t *perm, float *y);

#endif
