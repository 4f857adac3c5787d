/* cuda_ops.c: the CUDA backend's ops that are hand-written kernels (cuda_kernels.h):
 * activations, add, scale, softmax, layernorm, mean pooling, embedding gather and bag,
 * concat and transpose. Each queues its kernel on the exec's stream and turns a bad
 * launch into a status with a message.
 *
 * The embedding ops get their ids in HOST memory (ops.h: they come from requests and
 * were checked by the dispatcher); they are copied into stream-ordered scratch, read
 * by the kernel and freed behind it on the same stream, so the caller may reuse its
 * array as soon as the op returns (cuda_copy_from_host).
 */
#include "cuda_internal.h"

#include "cuda_kernels.h"

static ps_status launched(cuda_exec *e, cudaError_t rc, const char *what) {
    return cuda_check_rt(e, rc, what);
}

ps_status cuda_activation(void *exec, kernels_activation act, const float *x, size_t n, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_activation(e->stream, act, x, n, y), "activation kernel");
}

ps_status cuda_relu(void *exec, const float *x, size_t n, float *y) {
    return cuda_activation(exec, KERNELS_ACTIVATION_RELU, x, n, y);
}

ps_status cuda_add(void *exec, const float *a, const float *b, size_t n, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_add(e->stream, a, b, n, y), "add kernel");
}

ps_status cuda_scale(void *exec, const float *x, size_t rows, size_t cols, const float *scale,
                     const float *shift, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_scale(e->stream, x, rows, cols, scale, shift, y),
                    "scale kernel");
}

ps_status cuda_softmax(void *exec, const float *x, size_t rows, size_t cols, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_softmax(e->stream, x, rows, cols, y), "softmax kernel");
}

ps_status cuda_layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                         const float *beta, float eps, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_layernorm(e->stream, x, rows, cols, gamma, beta, eps, y),
                    "layernorm kernel");
}

ps_status cuda_mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                         const float *mask, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_mean_pool(e->stream, x, batch, seq, dim, mask, y),
                    "mean_pool kernel");
}

ps_status cuda_concat(void *exec, const float *a, size_t ca, const float *b, size_t cb, size_t rows,
                      float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_concat(e->stream, a, ca, b, cb, rows, y), "concat kernel");
}

ps_status cuda_transpose(void *exec, const float *x, const size_t *dims, size_t ndims,
                         const size_t *perm, float *y) {
    cuda_exec *e = exec;
    return launched(e, cuda_launch_transpose(e->stream, x, dims, ndims, perm, y),
                    "transpose kernel");
}

/* Host ids[n] into new stream-ordered device memory (*ret_dev, freed with
 * cudaFreeAsync on the same stream). */
static ps_status ids_to_device(cuda_exec *e, const int64_t *ids, size_t n, int64_t **ret_dev) {
    void *dev = NULL;
    const size_t bytes = n * sizeof(*ids);
    ps_status st =
        cuda_check_rt(e, cudaMallocAsync(&dev, bytes, e->stream), "cudaMallocAsync (ids)");
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cuda_copy_from_host(e, dev, ids, bytes);
    if (st != PS_STATUS_OK) {
        (void)cudaFreeAsync(dev, e->stream);
        (void)cudaGetLastError();
        return st;
    }
    *ret_dev = dev;
    return PS_STATUS_OK;
}

/* Launch result rc, then frees the ids behind the kernel: the first failure. */
static ps_status ids_done(cuda_exec *e, cudaError_t rc, const char *what, int64_t *dev) {
    ps_status st = launched(e, rc, what);
    ps_status fst = cuda_check_rt(e, cudaFreeAsync(dev, e->stream), "cudaFreeAsync (ids)");
    return st != PS_STATUS_OK ? st : fst;
}

ps_status cuda_embedding_gather(void *exec, const float *table, size_t n_rows, size_t dim,
                                const int64_t *index, size_t n, float *y) {
    cuda_exec *e = exec;
    (void)n_rows; /* every id was checked against it */
    int64_t *dev = NULL;
    ps_status st = ids_to_device(e, index, n, &dev);
    if (st != PS_STATUS_OK) {
        return st;
    }
    return ids_done(e, cuda_launch_gather(e->stream, table, dim, dev, n, y), "gather kernel", dev);
}

ps_status cuda_embedding_bag(void *exec, const float *table, size_t n_rows, size_t dim,
                             const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                             float *y) {
    cuda_exec *e = exec;
    (void)n_rows;
    int64_t *dev = NULL;
    ps_status st = ids_to_device(e, index, batch * len, &dev);
    if (st != PS_STATUS_OK) {
        return st;
    }
    return ids_done(e, cuda_launch_bag(e->stream, table, dim, dev, batch, len, pool, y),
                    "bag kernel", dev);
}
