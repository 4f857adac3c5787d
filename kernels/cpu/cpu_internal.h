/* cpu_internal.h: the CPU backend's ops, shared by its files (backend_cpu.c holds the
 * iface table). Each has the iface signature of backend.h; `exec` is the backend's
 * thread pool (cpu_pool.h; NULL: run on the calling thread). Not for other modules.
 */
#ifndef PS_KERNELS_CPU_INTERNAL_H
#define PS_KERNELS_CPU_INTERNAL_H

#include "backend.h"
#include "cpu_pool.h"

/* Least elements in one thread's part of a pool job: below it the job runs on one
 * thread (waking a pool thread costs microseconds). Memory-bound loops (add, scale,
 * copies) get CPU_GRAIN_CHEAP, loops of exp, erf or tanh CPU_GRAIN_MATH. */
#define CPU_GRAIN_CHEAP 32768u
#define CPU_GRAIN_MATH 4096u

/* Least rows in one part of a job over rows of `cols` elements, `grain` elements in a
 * part (at least one row). */
static inline size_t cpu_rows_grain(size_t cols, size_t grain) {
    return cols >= grain ? 1 : grain / cols;
}

/* The CPU backend's iface (a loadable test module wraps it too). */
const kernels_backend_iface *kernels_cpu_iface(void);

/* y[i] = act(y[i]) in place over n elements, on the pool's threads (backend_cpu.c). */
void cpu_act_apply(cpu_pool *pool, float *y, size_t n, kernels_activation act);

/* cpu_image.c */
ps_status cpu_conv2d(void *exec, const kernels_conv2d_shape *shape, const float *x, const float *w,
                     const float *bias, kernels_activation act, float *y);
ps_status cpu_pool2d(void *exec, const kernels_pool2d_shape *shape, kernels_pool2d_kind kind,
                     const float *x, float *y);

/* cpu_seq.c */
ps_status cpu_layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                        const float *beta, float eps, float *y);
ps_status cpu_attention(void *exec, const kernels_attention_shape *shape, const float *q,
                        const float *k, const float *v, const float *mask, float *y);
ps_status cpu_mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                        const float *mask, float *y);
ps_status cpu_l2_normalize(void *exec, const float *x, size_t rows, size_t cols, float eps,
                           float *y);

/* cpu_tensor.c */
ps_status cpu_embedding_gather(void *exec, const float *table, size_t n_rows, size_t dim,
                               const int64_t *index, size_t n, float *y);
ps_status cpu_embedding_bag(void *exec, const float *rows, size_t n_rows, size_t dim,
                            const int64_t *index, size_t batch, size_t len, kernels_pool pool,
                            float *y);
ps_status cpu_concat(void *exec, const float *a, size_t ca, const float *b, size_t cb, size_t rows,
                     float *y);
ps_status cpu_copy(void *exec, const float *x, size_t n, float *y);
ps_status cpu_transpose(void *exec, const float *x, const size_t *dims, size_t ndims,
                        const size_t *perm, float *y);

#endif
