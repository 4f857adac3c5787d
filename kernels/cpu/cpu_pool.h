/* cpu_pool.h: the CPU backend's thread pool: runs one op's rows on several threads.
 * Not for other modules.
 *
 * Why: the ops between the GEMMs (GELU, layernorm, softmax, attention's per-head work)
 * were single-threaded, so one core idled while OpenBLAS's own thread spun waiting for
 * the next GEMM. A job is a range of n items; the calling thread and the pool's
 * threads take contiguous chunks of it from a shared counter (about CPU_POOL_CHUNKS
 * per thread, never fewer than `grain` items but for the last) until none is left,
 * then the caller waits for them. Taking chunks rather than one fixed share each keeps
 * the threads finishing together when one of them is slowed (OpenBLAS's spinning
 * thread or another process on its core). The threads are made once, at create, and
 * sleep on a condition variable between jobs (no thread creation per op, no
 * spinning).
 *
 * Threads: any number of threads may call cpu_pool_run at once (ps-serve runs passes
 * concurrently on one backend). The pool runs one job at a time; a caller that finds
 * it busy runs its whole job itself, on its own thread, rather than wait. A job small
 * enough that a part would hold fewer than `grain` items runs on the caller too. A
 * NULL pool runs everything on the caller. A pool's threads do not survive fork(): a
 * child process must not use a pool its parent created.
 */
#ifndef PS_KERNELS_CPU_POOL_H
#define PS_KERNELS_CPU_POOL_H

#include <stddef.h>

#include "status.h"

/* Most threads a pool runs a job on, the caller included. */
#define CPU_POOL_MAX_THREADS 64u
/* Chunks a job is cut into per thread running it. */
#define CPU_POOL_CHUNKS 8u

typedef struct cpu_pool cpu_pool;

typedef struct cpu_pool_opts {
    size_t threads; /* threads that run a job, the caller included: 1 .. CPU_POOL_MAX_THREADS
                     * (1: the pool starts no thread) */
} cpu_pool_opts;

/* Runs items [begin, end) of a job. `part` (< cpu_pool_threads) is the index of the
 * thread running it, unique among the threads running one job: an index for
 * per-thread scratch memory. */
typedef void (*cpu_pool_fn)(void *arg, size_t begin, size_t end, size_t part);

/* INVALID_ARGUMENT for a thread count out of range; NO_MEMORY when memory or a thread
 * could not be had. *ret_pool untouched on failure. */
ps_status cpu_pool_create(const cpu_pool_opts *opts, cpu_pool **ret_pool);
/* Stops and joins the threads. Accepts NULL. No job may be running. */
void cpu_pool_destroy(cpu_pool *pool);

/* Threads a job may run on (the most parts); 1 for a NULL pool. */
size_t cpu_pool_threads(const cpu_pool *pool);

/* Runs fn over items 0 .. n-1, each once, on at most min(cpu_pool_threads, n / grain)
 * threads (grain 0 counts as 1; below 2: one call fn(arg, 0, n, 0) on the caller), in
 * chunks of at least `grain` items but for the last, and returns when every chunk has
 * returned. */
void cpu_pool_run(cpu_pool *pool, size_t n, size_t grain, cpu_pool_fn fn, void *arg);

#endif
