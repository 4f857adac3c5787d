/* kernels_embed.cu: the CUDA backend's embedding kernels, gather and bag (launchers in
 * cuda_kernels.h; CPU twins in kernels/cpu/cpu_tensor.c).
 *
 * Ids arrive in host memory (ops.h) and were checked by the dispatcher against the
 * table (every id is -1 or a row); the backend copies them to the device before these
 * run (cuda_tensor.c). One thread per output element: consecutive threads read
 * consecutive features of one row, so every row read is coalesced. A bag adds its
 * rows in index order in float and divides once for "mean", exactly as the CPU does.
 */
#include "cuda_device.cuh"

__global__ void gather_kernel(const float *table, size_t dim, const int64_t *index, size_t n,
                              float *y) {
    for (size_t i = ew_first(); i < n * dim; i += ew_step()) {
        const int64_t id = index[i / dim];
        y[i] = id < 0 ? 0.0f : table[(size_t)id * dim + i % dim];
    }
}

__global__ void bag_kernel(const float *table, size_t dim, const int64_t *index, size_t batch,
                           size_t len, kernels_pool pool, float *y) {
    for (size_t i = ew_first(); i < batch * dim; i += ew_step()) {
        const size_t b = i / dim, d = i % dim;
        float acc = 0.0f;
        size_t count = 0;
        for (size_t j = 0; j < len; j++) {
            const int64_t id = index[b * len + j];
            if (id >= 0) {
                acc += table[(size_t)id * dim + d];
                count++;
            }
        }
        y[i] = pool == KERNELS_POOL_MEAN && count > 1 ? acc / (float)count : acc;
    }
}

extern "C" cudaError_t cuda_launch_gather(cudaStream_t stream, const float *table, size_t dim,
                                          const int64_t *index, size_t n, float *y) {
    gather_kernel<<<ew_blocks(n * dim), EW_THREADS, 0, stream>>>(table, dim, index, n, y);
    return cudaGetLastError();
}

extern "C" cudaError_t cuda_launch_bag(cudaStream_t stream, const float *table, size_t dim,
                                       const int64_t *index, size_t batch, size_t len,
                                       kernels_pool pool, float *y) {
    bag_kernel<<<ew_blocks(batch * dim), EW_THREADS, 0, stream>>>(table, dim, index, batch, len,
                                                                  pool, y);
    return cudaGetLastError();
}
