/* kernels_elementwise.cu: the CUDA backend's elementwise and data-movement kernels:
 * activations, add, scale, conv2d's bias + activation, FP32 -> BF16, concat and
 * transpose (launchers declared in cuda_kernels.h; CPU twins in kernels/cpu).
 *
 * All are memory-bound one-pass loops over a flat index with a grid-stride loop, so
 * one launch covers any size up to KERNELS_MAX_DIM elements. Activations use the
 * precise expf / tanhf / erff (the module is never built with --use_fast_math): GELU is
 * the erf form PyTorch uses by default, which cuBLASLt's GELU epilogue is not
 * documented to be, so dense runs it here after the GEMM (see cuda_dense.c).
 * Transpose computes each output element's source offset from its coordinates (an
 * odometer per element, up to KERNELS_MAX_NDIM divisions): simple and exact, not
 * tiled through shared memory; a tiled 2-D path is the next step if it shows in a
 * profile.
 */
#include <cuda_bf16.h>

#include "cuda_device.cuh"

__global__ void activation_kernel(const float *x, size_t n, kernels_activation act, float *y) {
    for (size_t i = ew_first(); i < n; i += ew_step()) {
        y[i] = act_apply(x[i], act);
    }
}

__global__ void add_kernel(const float *a, const float *b, size_t n, float *y) {
    for (size_t i = ew_first(); i < n; i += ew_step()) {
        y[i] = a[i] + b[i];
    }
}

__global__ void scale_kernel(const float *x, size_t rows, size_t cols, const float *scale,
                             const float *shift, float *y) {
    for (size_t i = ew_first(); i < rows * cols; i += ew_step()) {
        const size_t c = i % cols;
        const float s = scale != NULL ? scale[c] : 1.0f;
        const float t = shift != NULL ? shift[c] : 0.0f;
        y[i] = x[i] * s + t;
    }
}

__global__ void bias_act_kernel(float *y, const float *bias, size_t outer, size_t channels,
                                size_t inner, kernels_activation act) {
    for (size_t i = ew_first(); i < outer * channels * inner; i += ew_step()) {
        const float b = bias != NULL ? bias[(i / inner) % channels] : 0.0f;
        y[i] = act_apply(y[i] + b, act);
    }
}

__global__ void to_bf16_kernel(const float *x, size_t n, __nv_bfloat16 *y) {
    for (size_t i = ew_first(); i < n; i += ew_step()) {
        y[i] = __float2bfloat16_rn(x[i]);
    }
}

__global__ void concat_kernel(const float *a, size_t ca, const float *b, size_t cb, size_t rows,
                              float *y) {
    const size_t width = ca + cb;
    for (size_t i = ew_first(); i < rows * width; i += ew_step()) {
        const size_t r = i / width, c = i % width;
        y[i] = c < ca ? a[r * ca + c] : b[r * cb + (c - ca)];
    }
}

/* Transpose's shape, by value: y's axis i has out_dim[i] elements and steps x by
 * stride[i]. */
struct transpose_shape {
    size_t out_dim[KERNELS_MAX_NDIM];
    size_t stride[KERNELS_MAX_NDIM];
    size_t ndims, total;
};

__global__ void transpose_kernel(const float *x, transpose_shape t, float *y) {
    for (size_t i = ew_first(); i < t.total; i += ew_step()) {
        size_t rest = i, src = 0;
        for (size_t a = t.ndims; a-- > 0;) {
            src += (rest % t.out_dim[a]) * t.stride[a];
            rest /= t.out_dim[a];
        }
        y[i] = x[src];
    }
}

extern "C" cudaError_t cuda_kernels_probe(void) {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, (const void *)add_kernel);
}

extern "C" cudaError_t cuda_launch_activation(cudaStream_t stream, kernels_activation act,
                                              const float *x, size_t n, float *y) {
    activation_kernel<<<ew_blocks(n), EW_THREADS, 0, stream>>>(x, n, act, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_add(cudaStream_t stream, const float *a, const float *b,
                                       size_t n, float *y) {
    add_kernel<<<ew_blocks(n), EW_THREADS, 0, stream>>>(a, b, n, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_scale(cudaStream_t stream, const float *x, size_t rows,
                                         size_t cols, const float *scale, const float *shift,
                                         float *y) {
    scale_kernel<<<ew_blocks(rows * cols), EW_THREADS, 0, stream>>>(x, rows, cols, scale, shift, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_bias_act(cudaStream_t stream, float *y, const float *bias,
                                            size_t outer, size_t channels, size_t inner,
                                            kernels_activation act) {
    bias_act_kernel<<<ew_blocks(outer * channels * inner), EW_THREADS, 0, stream>>>(
        y, bias, outer, channels, inner, act);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_to_bf16(cudaStream_t stream, const float *x, size_t n, void *y) {
    to_bf16_kernel<<<ew_blocks(n), EW_THREADS, 0, stream>>>(x, n, (__nv_bfloat16 *)y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_concat(cudaStream_t stream, const float *a, size_t ca,
                                          const float *b, size_t cb, size_t rows, float *y) {
    concat_kernel<<<ew_blocks(rows * (ca + cb)), EW_THREADS, 0, stream>>>(a, ca, b, cb, rows, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_transpose(cudaStream_t stream, const float *x,
                                             const size_t *dims, size_t ndims, const size_t *perm,
                                             float *y) {
    transpose_shape t = {};
    size_t in_stride[KERNELS_MAX_NDIM];
    in_stride[ndims - 1] = 1;
    for (size_t i = ndims - 1; i > 0; i--) {
        in_stride[i - 1] = in_stride[i] * dims[i];
    }
    t.ndims = ndims;
    t.total = in_stride[0] * dims[0];
    for (size_t i = 0; i < ndims; i++) {
        t.out_dim[i] = dims[perm[i]];
        t.stride[i] = in_stride[perm[i]];
    }
    transpose_kernel<<<ew_blocks(t.total), EW_THREADS, 0, stream>>>(x, t, y);
    return cudaGetLastError();
}
