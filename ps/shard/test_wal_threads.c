/* test_wal_threads.c: the write-ahead log under concurrent appenders (every LSN handed
 * out once, each thread's records replayed in its order, all durable after the waits)
 * and group commit's fsync rate (counted through wal_stats over the window taken). */
#include <pthread.h>

#include "test_wal.h"
#include "util.h"

#define THREADS 4
#define PER_THREAD 10000

typedef struct appender {
    wal *w;
    uint32_t id;
    uint64_t *lsn_of; /* [PER_THREAD]: the LSN each of its records got */
    ps_status st;
} appender;

static void *append_many(void *arg) {
    appender *a = arg;
    for (uint32_t i = 0; i < PER_THREAD; i++) {
        uint32_t payload[2] = {a->id, i};
        ps_status st = wal_append(a->w, (uint8_t)a->id, payload, sizeof payload, &a->lsn_of[i]);
        if (st == PS_STATUS_OK && (i % 500 == 499 || i + 1 == PER_THREAD))
            st = wal_wait(a->w, a->lsn_of[i]);
        if (st != PS_STATUS_OK) {
            a->st = st;
            return NULL;
        }
    }
    return NULL;
}

typedef struct owner_check {
    uint64_t n, last;
    uint32_t next_seq[THREADS];
    bool ok;
} owner_check;

static ps_status check_owner(void *arg, uint8_t type, uint64_t lsn, const void *payload,
                             size_t len) {
    owner_check *c = arg;
    uint32_t v[2];
    if (len != sizeof v || lsn != c->last + 1) {
        c->ok = false;
        return PS_STATUS_OK;
    }
    memcpy(v, payload, sizeof v);
    /* each thread's records come back in the order it appended them, none twice */
    if (v[0] >= THREADS || type != v[0] || v[1] != c->next_seq[v[0]])
        c->ok = false;
    else
        c->next_seq[v[0]]++;
    c->n++;
    c->last = lsn;
    return PS_STATUS_OK;
}

/* 4 threads x 10k appends with waits: every LSN once, each thread's in its order. */
static void test_concurrent_appenders(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal *w = tw_open(dir, WAL_FSYNC_GROUP, 64 * 1024, NULL, NULL);
    appender a[THREADS];
    pthread_t t[THREADS];
    for (uint32_t i = 0; i < THREADS; i++) {
        a[i] = (appender){.w = w, .id = i, .lsn_of = calloc(PER_THREAD, sizeof(uint64_t))};
        assert_non_null(a[i].lsn_of);
        assert_int_equal(pthread_create(&t[i], NULL, append_many, &a[i]), 0);
    }
    uint8_t *seen = calloc(THREADS * PER_THREAD + 1, 1);
    for (uint32_t i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].st, PS_STATUS_OK);
        for (uint32_t k = 0; k < PER_THREAD; k++) {
            uint64_t lsn = a[i].lsn_of[k];
            assert_true(lsn >= 1 && lsn <= THREADS * PER_THREAD);
            assert_int_equal(seen[lsn], 0);
            seen[lsn] = 1;
            assert_true(k == 0 || lsn > a[i].lsn_of[k - 1]);
        }
        free(a[i].lsn_of);
    }
    free(seen);
    assert_int_equal(wal_durable_lsn(w), THREADS * PER_THREAD);
    wal_close(w);
    owner_check c = {.ok = true};
    wal_opts o = {.dir = dir, .segment_bytes = 64 * 1024, .replay = check_owner, .replay_arg = &c};
    assert_int_equal(wal_open(&o, NULL, &w, NULL, 0), PS_STATUS_OK);
    wal_close(w);
    assert_true(c.ok);
    assert_int_equal(c.n, THREADS * PER_THREAD);
    tw_rmrf(dir);
}

/* Group commit: appends spread over a window take at most about one fsync per group_ms
 * of that window (counted, not timed: the bound follows the window actually taken). */
static void test_group_commit_fsync_rate(void **state) {
    (void)state;
    char dir[TW_PATH];
    tw_tmpdir(dir);
    wal_opts o = {.dir = dir, .fsync = WAL_FSYNC_GROUP, .group_ms = 5};
    wal *w = NULL;
    assert_int_equal(wal_open(&o, NULL, &w, NULL, 0), PS_STATUS_OK);
    wal_stats s0, s1;
    wal_stats_get(w, &s0);
    int64_t t0 = ps_now_us();
    uint64_t lsn = 0;
    for (int i = 0; i < 2000; i++) {
        uint8_t p[100] = {0};
        assert_int_equal(wal_append(w, 1, p, sizeof p, &lsn), PS_STATUS_OK);
        if (i % 20 == 19) /* pacing: 2000 appends over about 100 ms */
            usleep(1000);
    }
    assert_int_equal(wal_wait(w, lsn), PS_STATUS_OK);
    int64_t window_ms = (ps_now_us() - t0) / 1000;
    wal_stats_get(w, &s1);
    uint64_t fsyncs = s1.fsyncs - s0.fsyncs;
    print_message("group commit: %llu fsyncs for 2000 appends over %lld ms\n",
                  (unsigned long long)fsyncs, (long long)window_ms);
    assert_true(fsyncs >= 1);
    assert_true(fsyncs <= (uint64_t)(window_ms / 5) + 2);
    wal_close(w);
    tw_rmrf(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_appenders),
        cmocka_unit_test(test_group_commit_fsync_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
