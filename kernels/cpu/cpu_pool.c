/* cpu_pool.c: see cpu_pool.h. A job is published under `mu` with a new generation
 * number; each pool thread that wakes to a generation it has not seen (and whose index
 * is below the job's thread count) takes chunks from the shared counter `next` until
 * none is left, like the caller, and the last one to finish signals `done`.
 * `run_lock` makes jobs one at a time: a caller that cannot take it at once runs its
 * job alone.
 */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct pool_thread {
    cpu_pool *pool; /* the pool it serves */
    size_t index;   /* 1 .. threads - 1: its part index (the caller's is 0) */
    pthread_t tid;
} pool_thread;

struct cpu_pool {
    size_t threads;           /* threads a job runs on, the caller included */
    pool_thread *workers;     /* threads - 1 of them */
    pthread_mutex_t run_lock; /* held by the caller whose job the pool runs */
    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t wake;      /* a new generation, or stop */
    pthread_cond_t done;      /* pending reached 0 */
    uint64_t generation;      /* bumped by each job */
    bool stop;                /* destroy: the threads return */
    cpu_pool_fn fn;           /* the current job */
    void *arg;
    size_t n, chunk;    /* its items, and how many one take gets */
    size_t parts;       /* threads running it, the caller included */
    size_t pending;     /* pool threads of the current job not finished */
    atomic_size_t next; /* first item no thread has taken */
};

/* Takes chunks of the current job until none is left. */
static void pool_take(cpu_pool *pool, cpu_pool_fn fn, void *arg, size_t n, size_t chunk,
                      size_t part) {
    for (;;) {
        const size_t begin = atomic_fetch_add(&pool->next, chunk);
        if (begin >= n) {
            return;
        }
        fn(arg, begin, n - begin < chunk ? n : begin + chunk, part);
    }
}

static void *pool_thread_main(void *p) {
    pool_thread *self = p;
    cpu_pool *pool = self->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->stop && pool->generation == seen) {
            pthread_cond_wait(&pool->wake, &pool->mu);
        }
        if (pool->stop) {
            break;
        }
        seen = pool->generation;
        if (self->index >= pool->parts) {
            continue; /* the job is split in fewer parts */
        }
        const cpu_pool_fn fn = pool->fn;
        void *arg = pool->arg;
        const size_t n = pool->n, chunk = pool->chunk;
        pthread_mutex_unlock(&pool->mu);
        pool_take(pool, fn, arg, n, chunk, self->index);
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) {
            pthread_cond_signal(&pool->done);
        }
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* Stops and joins the first `started` threads. */
static void pool_stop(cpu_pool *pool, size_t started) {
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (size_t i = 0; i < started; i++) {
        pthread_join(pool->workers[i].tid, NULL);
    }
}

ps_status cpu_pool_create(const cpu_pool_opts *opts, cpu_pool **ret_pool) {
    if (opts == NULL || ret_pool == NULL || opts->threads < 1 ||
        opts->threads > CPU_POOL_MAX_THREADS) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    cpu_pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    pool->threads = opts->threads;
    pool->workers = calloc(opts->threads, sizeof(*pool->workers));
    if (pool->workers == NULL) {
        goto err_free;
    }
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    size_t started = 0;
    for (; started + 1 < pool->threads; started++) {
        pool_thread *w = &pool->workers[started];
        w->pool = pool;
        w->index = started + 1;
        if (pthread_create(&w->tid, NULL, pool_thread_main, w) != 0) {
            goto err_stop;
        }
    }
    *ret_pool = pool;
    return PS_STATUS_OK;

err_stop:
    pool_stop(pool, started);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_lock);
err_free:
    free(pool->workers);
    free(pool);
    return PS_STATUS_NO_MEMORY;
}

void cpu_pool_destroy(cpu_pool *pool) {
    if (pool == NULL) {
        return;
    }
    pool_stop(pool, pool->threads - 1);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_lock);
    free(pool->workers);
    free(pool);
}

size_t cpu_pool_threads(const cpu_pool *pool) {
    return pool != NULL ? pool->threads : 1;
}

void cpu_pool_run(cpu_pool *pool, size_t n, size_t grain, cpu_pool_fn fn, void *arg) {
    grain = grain > 0 ? grain : 1;
    size_t parts = n / grain;
    if (pool == NULL || parts < 2 || pool->threads < 2 ||
        pthread_mutex_trylock(&pool->run_lock) != 0) {
        fn(arg, 0, n, 0); /* small, no pool, or the pool is busy: all here */
        return;
    }
    parts = parts < pool->threads ? parts : pool->threads;
    size_t chunk = n / (parts * CPU_POOL_CHUNKS);
    chunk = chunk > grain ? chunk : grain;
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    pool->n = n;
    pool->chunk = chunk;
    pool->parts = parts;
    pool->pending = parts - 1;
    atomic_store(&pool->next, 0);
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);

    pool_take(pool, fn, arg, n, chunk, 0);

    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0) {
        pthread_cond_wait(&pool->done, &pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_unlock(&pool->run_lock);
}
