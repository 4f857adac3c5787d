/* test_cpu_pool.c: unit tests of the CPU backend's thread pool (cmocka): every item of
 * a job runs exactly once, in chunks of at least the grain, on part indices below the
 * thread count; the pool's threads do take part; small jobs and a NULL pool run as one
 * call on the caller; bad options are refused; and several threads running jobs on one
 * pool at once (the busy case: the caller runs its job itself) each get their whole
 * job done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cpu_pool.h"

#define CALLERS 6        /* threads sharing one pool in test_concurrent_callers */
#define JOBS 300         /* jobs each of them runs */
#define MAX_CHUNKS 1024u /* chunks recorded by a job_log */
#define ITEMS 100000u    /* items of the large jobs */

/* What one job saw: how often each item ran, and each chunk's range, part and thread. */
typedef struct job_log {
    unsigned char *hits; /* per item */
    atomic_uint chunks;  /* chunks that ran */
    size_t begin[MAX_CHUNKS], end[MAX_CHUNKS], part[MAX_CHUNKS];
    pthread_t thread[MAX_CHUNKS];
} job_log;

static void log_part(void *arg, size_t begin, size_t end, size_t part) {
    job_log *log = arg;
    const unsigned c = atomic_fetch_add(&log->chunks, 1);
    if (c < MAX_CHUNKS) {
        log->begin[c] = begin, log->end[c] = end, log->part[c] = part;
        log->thread[c] = pthread_self();
    }
    for (size_t i = begin; i < end; i++) {
        log->hits[i]++; /* chunks never overlap: no two threads write one item */
    }
}

static job_log *log_new(size_t n) {
    job_log *log = calloc(1, sizeof(*log));
    assert_non_null(log);
    log->hits = calloc(n, 1);
    assert_non_null(log->hits);
    return log;
}

static void log_free(job_log *log) {
    free(log->hits);
    free(log);
}

/* Every item once, in chunks of at least `grain` items but for the one ending at n, on
 * parts below max_parts; returns how many distinct parts ran. */
static size_t check_log(const job_log *log, size_t n, size_t grain, size_t max_parts) {
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(log->hits[i], 1);
    }
    const unsigned chunks = atomic_load(&log->chunks);
    assert_true(chunks >= 1 && chunks <= MAX_CHUNKS);
    int seen[MAX_CHUNKS] = {0};
    size_t parts = 0;
    for (unsigned c = 0; c < chunks; c++) {
        assert_true(log->end[c] > log->begin[c]);
        assert_true(log->end[c] - log->begin[c] >= grain || log->end[c] == n);
        assert_true(log->part[c] < max_parts);
        parts += !seen[log->part[c]];
        seen[log->part[c]] = 1;
    }
    return parts;
}

static void test_splits_and_small_jobs(void **state) {
    (void)state;
    cpu_pool *pool = NULL;
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 4}, &pool), PS_STATUS_OK);
    assert_int_equal(cpu_pool_threads(pool), 4);
    static const struct {
        size_t n, grain;
        size_t parts; /* most threads it may run on; 1: a single call on the caller */
    } cases[] = {{ITEMS, 1, 4},     {ITEMS, ITEMS / 2, 2}, {7, 1, 4}, {3, 1, 3},
                 {ITEMS, ITEMS, 1}, {10, 100, 1},          {1, 0, 1}, {5, 0, 4},
                 {ITEMS, 7000, 4}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        job_log *log = log_new(cases[c].n);
        cpu_pool_run(pool, cases[c].n, cases[c].grain, log_part, log);
        check_log(log, cases[c].n, cases[c].grain, cases[c].parts);
        if (cases[c].parts == 1) { /* one call, on the caller */
            assert_int_equal(atomic_load(&log->chunks), 1);
            assert_int_equal(log->begin[0], 0);
            assert_int_equal(log->end[0], cases[c].n);
            assert_true(pthread_equal(log->thread[0], pthread_self()));
        }
        log_free(log);
    }
    cpu_pool_destroy(pool);
}

/* A job whose first chunk blocks until another thread has run a chunk: passes only
 * when the pool's threads really take part (a job run on the caller alone would wait
 * forever, so the wait has a deadline). */
typedef struct relay {
    atomic_int others; /* chunks run by a part other than 0 */
    atomic_int timed_out;
} relay;

static void relay_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)end;
    relay *r = arg;
    if (part != 0) {
        atomic_fetch_add(&r->others, 1);
        return;
    }
    if (begin != 0) {
        return;
    }
    struct timespec deadline, now;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 10;
    while (atomic_load(&r->others) == 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
            atomic_store(&r->timed_out, 1);
            return;
        }
        sched_yield();
    }
}

static void test_threads_take_part(void **state) {
    (void)state;
    cpu_pool *pool = NULL;
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 2}, &pool), PS_STATUS_OK);
    relay r = {0};
    cpu_pool_run(pool, 64, 1, relay_part, &r);
    assert_int_equal(atomic_load(&r.timed_out), 0);
    assert_true(atomic_load(&r.others) > 0);
    cpu_pool_destroy(pool);
}

static void test_null_and_single(void **state) {
    (void)state;
    job_log *log = log_new(ITEMS);
    cpu_pool_run(NULL, ITEMS, 1, log_part, log); /* no pool: all on the caller */
    check_log(log, ITEMS, 1, 1);
    assert_int_equal(atomic_load(&log->chunks), 1);
    assert_true(pthread_equal(log->thread[0], pthread_self()));
    log_free(log);
    assert_int_equal(cpu_pool_threads(NULL), 1);

    cpu_pool *pool = NULL;
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 1}, &pool), PS_STATUS_OK);
    log = log_new(ITEMS);
    cpu_pool_run(pool, ITEMS, 1, log_part, log);
    check_log(log, ITEMS, 1, 1);
    assert_int_equal(atomic_load(&log->chunks), 1);
    log_free(log);
    cpu_pool_destroy(pool);
    cpu_pool_destroy(NULL);
}

static void test_bad_options(void **state) {
    (void)state;
    cpu_pool *pool = (cpu_pool *)&pool; /* must stay untouched */
    cpu_pool *const before = pool;
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 0}, &pool),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = CPU_POOL_MAX_THREADS + 1}, &pool),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(cpu_pool_create(NULL, &pool), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 2}, NULL),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(pool, before);
}

typedef struct caller {
    cpu_pool *pool;
    int failures; /* jobs with an item not run exactly once */
} caller;

static void count_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    unsigned char *hits = arg;
    for (size_t i = begin; i < end; i++) {
        hits[i]++;
    }
}

static void *caller_main(void *p) {
    caller *c = p;
    unsigned char *hits = malloc(ITEMS);
    if (hits == NULL) {
        c->failures = JOBS;
        return NULL;
    }
    for (int j = 0; j < JOBS; j++) {
        memset(hits, 0, ITEMS);
        cpu_pool_run(c->pool, ITEMS, 1000, count_part, hits);
        for (size_t i = 0; i < ITEMS; i++) {
            if (hits[i] != 1) {
                c->failures++;
                break;
            }
        }
    }
    free(hits);
    return NULL;
}

static void test_concurrent_callers(void **state) {
    (void)state;
    cpu_pool *pool = NULL;
    assert_int_equal(cpu_pool_create(&(cpu_pool_opts){.threads = 3}, &pool), PS_STATUS_OK);
    caller callers[CALLERS];
    pthread_t tid[CALLERS];
    for (int t = 0; t < CALLERS; t++) {
        callers[t] = (caller){.pool = pool};
        assert_int_equal(pthread_create(&tid[t], NULL, caller_main, &callers[t]), 0);
    }
    for (int t = 0; t < CALLERS; t++) {
        pthread_join(tid[t], NULL);
        assert_int_equal(callers[t].failures, 0);
    }
    job_log *log = log_new(ITEMS); /* the pool still works after the rush */
    cpu_pool_run(pool, ITEMS, 1, log_part, log);
    check_log(log, ITEMS, 1, 3);
    log_free(log);
    cpu_pool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splits_and_small_jobs), cmocka_unit_test(test_threads_take_part),
        cmocka_unit_test(test_null_and_single),       cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
