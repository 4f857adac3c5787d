/* kernels_rows.cu: the CUDA backend's row kernels: softmax, layernorm, the masked
 * softmax of attention, and masked mean pooling (launchers in cuda_kernels.h; CPU
 * twins in kernels/cpu/backend_cpu.c and cpu_seq.c).
 *
 * A row is one warp's: its lanes stride over the row and combine with shuffles, so no
 * shared memory and no __syncthreads. That suits the rows these ops see (classes,
 * hidden sizes of 384 to 4096, up to KERNELS_ATTENTION_MAX_SEQ keys); a row is read two
 * or three times, from L1/L2 after the first. Softmax subtracts the row maximum before
 * expf (no overflow); layernorm takes the mean first and then the squared deviations
 * (two passes, no cancellation), as the CPU reference does in double. Mean pooling is
 * one thread per output element walking the sequence (reads coalesced across the
 * feature axis).
 */
#include <math.h>

#include "cuda_device.cuh"

__global__ void softmax_kernel(const float *x, size_t rows, size_t cols, float *y) {
    const unsigned lane = threadIdx.x % WARP;
    for (size_t r = row_first(); r < rows; r += row_step()) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (size_t c = lane; c < cols; c += WARP) {
            m = fmaxf(m, xr[c]);
        }
        m = warp_max(m);
        float s = 0.0f;
        for (size_t c = lane; c < cols; c += WARP) {
            s += expf(xr[c] - m);
        }
        const float inv = 1.0f / warp_sum(s);
        for (size_t c = lane; c < cols; c += WARP) {
            yr[c] = expf(xr[c] - m) * inv;
        }
    }
}

__global__ void layernorm_kernel(const float *x, size_t rows, size_t cols, const float *gamma,
                                 const float *beta, float eps, float *y) {
    const unsigned lane = threadIdx.x % WARP;
    for (size_t r = row_first(); r < rows; r += row_step()) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float s = 0.0f;
        for (size_t c = lane; c < cols; c += WARP) {
            s += xr[c];
        }
        const float mean = warp_sum(s) / (float)cols;
        float q = 0.0f;
        for (size_t c = lane; c < cols; c += WARP) {
            const float d = xr[c] - mean;
            q += d * d;
        }
        const float inv = 1.0f / sqrtf(warp_sum(q) / (float)cols + eps);
        for (size_t c = lane; c < cols; c += WARP) {
            const float g = gamma != NULL ? gamma[c] : 1.0f;
            const float b = beta != NULL ? beta[c] : 0.0f;
            yr[c] = (xr[c] - mean) * inv * g + b;
        }
    }
}

__global__ void masked_softmax_kernel(float *scores, size_t rows, size_t queries, size_t keys,
                                      const float *mask, size_t mask_ld) {
    const unsigned lane = threadIdx.x % WARP;
    for (size_t r = row_first(); r < rows; r += row_step()) {
        float *row = scores + r * keys;
        const float *mr = mask != NULL ? mask + (r / queries) * mask_ld : NULL;
        float m = -INFINITY, live = 0.0f;
        for (size_t c = lane; c < keys; c += WARP) {
            if (mr == NULL || mr[c] != 0.0f) {
                m = fmaxf(m, row[c]);
                live += 1.0f;
            }
        }
        m = warp_max(m);
        if (warp_sum(live) == 0.0f) { /* a sample without tokens: zeros */
            for (size_t c = lane; c < keys; c += WARP) {
                row[c] = 0.0f;
            }
            continue;
        }
        float s = 0.0f;
        for (size_t c = lane; c < keys; c += WARP) {
            s += mr == NULL || mr[c] != 0.0f ? expf(row[c] - m) : 0.0f;
        }
        const float inv = 1.0f / warp_sum(s);
        for (size_t c = lane; c < keys; c += WARP) {
            row[c] = mr == NULL || mr[c] != 0.0f ? expf(row[c] - m) * inv : 0.0f;
        }
    }
}

__global__ void mean_pool_kernel(const float *x, size_t batch, size_t seq, size_t dim,
                                 const float *mask, float *y) {
    for (size_t i = ew_first(); i < batch * dim; i += ew_step()) {
        const size_t b = i / dim, d = i % dim;
        float acc = 0.0f, weight = 0.0f;
        for (size_t t = 0; t < seq; t++) {
            const float m = mask != NULL ? mask[b * seq + t] : 1.0f;
            weight += m;
            if (m != 0.0f) {
                acc += m * x[(b * seq + t) * dim + d];
            }
        }
        y[i] = acc * (1.0f / fmaxf(weight, 1e-9f));
    }
}

extern "C" cudaError_t cuda_launch_softmax(cudaStream_t stream, const float *x, size_t rows,
                                           size_t cols, float *y) {
    softmax_kernel<<<row_blocks(rows), ROW_WARPS * WARP, 0, stream>>>(x, rows, cols, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_layernorm(cudaStream_t stream, const float *x, size_t rows,
                                             size_t cols, const float *gamma, const float *beta,
                                             float eps, float *y) {
    layernorm_kernel<<<row_blocks(rows), ROW_WARPS * WARP, 0, stream>>>(x, rows, cols, gamma, beta,
                                                                        eps, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_masked_softmax(cudaStream_t stream, float *scores,
                                                  size_t samples, size_t queries, size_t keys,
                                                  const float *mask, size_t mask_ld) {
    const size_t rows = samples * queries;
    masked_softmax_kernel<<<row_blocks(rows), ROW_WARPS * WARP, 0, stream>>>(scores, rows, queries,
                                                                             keys, mask, mask_ld);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_mean_pool(cudaStream_t stream, const float *x, size_t batch,
                                             size_t seq, size_t dim, const float *mask, float *y) {
    mean_pool_kernel<<<ew_blocks(batch * dim), EW_THREADS, 0, stream>>>(x, batch, seq, dim, mask,
                                                                        y);
    return cudaGetLastError();
}
