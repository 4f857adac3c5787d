/* cuda_device.cuh: device helpers the CUDA backend's .cu files share: launch sizes
 * for grid-stride loops, the activations, and warp reductions. Header-only (inline
 * device functions), included by the .cu files alone.
 */
#ifndef PS_KERNELS_CUDA_DEVICE_CUH
#define PS_KERNELS_CUDA_DEVICE_CUH

#include "cuda_kernels.h"

/* Threads per block of the elementwise kernels, and the most blocks a launch asks for
 * (the grid-stride loop covers the rest). */
#define EW_THREADS 256
#define EW_MAX_BLOCKS 65536

/* Rows per block of the warp-per-row kernels (one warp each). */
#define ROW_WARPS 8
#define WARP 32

static inline unsigned ew_blocks(size_t n) {
    const size_t b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b < 1 ? 1 : b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b);
}

/* Blocks for `rows` rows of the warp-per-row kernels (capped like ew_blocks). */
static inline unsigned row_blocks(size_t rows) {
    const size_t b = (rows + ROW_WARPS - 1) / ROW_WARPS;
    return (unsigned)(b < 1 ? 1 : b > EW_MAX_BLOCKS ? EW_MAX_BLOCKS : b);
}

/* The first flat index of this thread, and the step of a grid-stride loop. */
__device__ __forceinline__ size_t ew_first(void) {
    return (size_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t ew_step(void) {
    return (size_t)gridDim.x * blockDim.x;
}

/* The first row of this warp, and the step over rows (warp-per-row kernels, blocks of
 * ROW_WARPS warps). */
__device__ __forceinline__ size_t row_first(void) {
    return (size_t)blockIdx.x * ROW_WARPS + threadIdx.x / WARP;
}
__device__ __forceinline__ size_t row_step(void) {
    return (size_t)gridDim.x * ROW_WARPS;
}

/* The activation of ops.h (GELU: the erf form). */
__device__ __forceinline__ float act_apply(float v, kernels_activation act) {
    switch (act) {
    case KERNELS_ACTIVATION_RELU:
        return v > 0.0f ? v : 0.0f;
    case KERNELS_ACTIVATION_SIGMOID:
        return 1.0f / (1.0f + expf(-v));
    case KERNELS_ACTIVATION_TANH:
        return tanhf(v);
    case KERNELS_ACTIVATION_GELU:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case KERNELS_ACTIVATION_NONE:
        break;
    }
    return v;
}

/* The sum and the maximum of v over the 32 lanes of a full warp, in every lane. */
__device__ __forceinline__ float warp_sum(float v) {
    for (int off = WARP / 2; off > 0; off /= 2) {
        v += __shfl_xor_sync(0xffffffffu, v, off);
    }
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int off = WARP / 2; off > 0; off /= 2) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    }
    return v;
}

#endif
