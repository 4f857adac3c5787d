/* cuda_kernels.h: the hand-written CUDA kernels of the CUDA backend, as C launchers.
 *
 * The .cu files (nvcc, C++) hold the kernels; everything else of the module is C11
 * and reaches them only through these functions, so the C files never see CUDA C++
 * and the kernels never see the backend's structs. Each launcher queues its kernel on
 * `stream` and returns cudaGetLastError() (a bad launch); a fault while running shows
 * at the stream's next sync. Pointers are device memory unless a comment says
 * otherwise; sizes were checked by the dispatchers (ops.h): every tensor has at most
 * KERNELS_MAX_DIM elements, so indices are computed in size_t and never overflow.
 *
 * Like llm.c's dev/cuda kernels, each has a CPU twin (kernels/cpu) and a check: the
 * op tests (kernels/test_ops_*.c) run them through the backend against double
 * references. Elementwise and per-element kernels use grid-stride loops over a flat
 * index (no gridDim.y limit on batch sizes); row kernels (softmax, layernorm, the
 * attention softmax) give each row one warp, which fits rows of up to a few thousand
 * elements (classes, hidden sizes, keys) without shared memory.
 */
#ifndef PS_KERNELS_CUDA_KERNELS_H
#define PS_KERNELS_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether the module holds code this GPU can run: cudaFuncGetAttributes of a kernel
 * (cudaErrorNoKernelImageForDevice when it was built for other architectures). */
cudaError_t cuda_kernels_probe(void);

/* --- kernels_elementwise.cu ---------------------------------------------------------- */

/* y[n] = act(x[n]); y may equal x. */
cudaError_t cuda_launch_activation(cudaStream_t stream, kernels_activation act, const float *x,
                                   size_t n, float *y);
/* y[n] = a[n] + b[n]; y may equal a or b. */
cudaError_t cuda_launch_add(cudaStream_t stream, const float *a, const float *b, size_t n,
                            float *y);
/* y[r, c] = x[r, c] * scale[c] + shift[c]; scale or shift NULL: 1 or 0. */
cudaError_t cuda_launch_scale(cudaStream_t stream, const float *x, size_t rows, size_t cols,
                              const float *scale, const float *shift, float *y);
/* In place over y[outer, channels, inner]: y = act(y + bias[channel]); bias NULL: none
 * (conv2d's bias and activation after cuDNN). */
cudaError_t cuda_launch_bias_act(cudaStream_t stream, float *y, const float *bias, size_t outer,
                                 size_t channels, size_t inner, kernels_activation act);
/* y[n] = x[n] rounded to BF16 (nearest even); y is __nv_bfloat16[n]. */
cudaError_t cuda_launch_to_bf16(cudaStream_t stream, const float *x, size_t n, void *y);
/* y[rows, ca + cb]: each row a[r, :] then b[r, :]. */
cudaError_t cuda_launch_concat(cudaStream_t stream, const float *a, size_t ca, const float *b,
                               size_t cb, size_t rows, float *y);
/* y = x with axes permuted (ops.h kernels_op_transpose); dims, perm: HOST arrays of
 * ndims <= KERNELS_MAX_NDIM entries, passed to the kernel by value. */
cudaError_t cuda_launch_transpose(cudaStream_t stream, const float *x, const size_t *dims,
                                  size_t ndims, const size_t *perm, float *y);

/* --- kernels_rows.cu ----------------------------------------------------------------- */

/* y[rows, cols] = the softmax of each row (max subtracted); y may equal x. */
cudaError_t cuda_launch_softmax(cudaStream_t stream, const float *x, size_t rows, size_t cols,
                                float *y);
/* PyTorch LayerNorm over each row (biased variance); gamma, beta NULL: 1, 0. */
cudaError_t cuda_launch_layernorm(cudaStream_t stream, const float *x, size_t rows, size_t cols,
                                  const float *gamma, const float *beta, float eps, float *y);
/* In place over scores[samples * queries, keys]: each row's softmax over the keys
 * whose mask[sample * mask_ld + key] is non-zero (mask NULL: all keys); masked keys
 * get 0, and a row of a sample without any token becomes zeros. */
cudaError_t cuda_launch_masked_softmax(cudaStream_t stream, float *scores, size_t samples,
                                       size_t queries, size_t keys, const float *mask,
                                       size_t mask_ld);
/* y[b, :] = sum_t mask[b, t] x[b, t, :] / max(sum_t mask[b, t], 1e-9); mask NULL: 1. */
cudaError_t cuda_launch_mean_pool(cudaStream_t stream, const float *x, size_t batch, size_t seq,
                                  size_t dim, const float *mask, float *y);

/* --- kernels_embed.cu ---------------------------------------------------------------- */

/* y[i, :] = table[index[i], :], zeros for -1; index: DEVICE int64[n], checked. */
cudaError_t cuda_launch_gather(cudaStream_t stream, const float *table, size_t dim,
                               const int64_t *index, size_t n, float *y);
/* y[b, :] = the sum (or mean over non-padding ids) of the rows index[b * len + j];
 * index: DEVICE int64[batch * len], checked. */
cudaError_t cuda_launch_bag(cudaStream_t stream, const float *table, size_t dim,
                            const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                            float *y);

#ifdef __cplusplus
}
#endif

#endif
