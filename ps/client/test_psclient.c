/* test_psclient.c: the client library against real processes (a coordinator and
 * shards started from the build directory): whole-tensor push and pull, version
 * counting, clear errors, and re-routing when the ring moved under a client that
 * still holds the old one. Re-routing must re-send only the keys a shard refused,
 * so every key is applied exactly once (version 1 after one ASSIGN). */
#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "psclient.h"
#include "test_cluster.h"
#include "util.h"

static void wait_epoch(ps_client *c, uint64_t epoch) {
    for (int i = 0; i < 500 && ps_client_epoch(c) < epoch; i++) {
        usleep(10000);
        assert_int_equal(ps_client_refresh(c), PS_STATUS_OK);
    }
    assert_true(ps_client_epoch(c) >= epoch);
}

static int setup(void **state) {
    (void)state;
    return cluster_start("test_psclient", 2, NULL);
}

static int teardown(void **state) {
    (void)state;
    return cluster_stop();
}

/* A rows push of several waves (more than CALL_KEYS per shard) from a client whose ring
 * is stale: each wave's refused rows go round again, and every row lands exactly once. */
static void push_rows_on_a_stale_ring(ps_client *stale, ps_client *fresh, uint64_t stale_epoch) {
    assert_int_equal(ps_client_epoch(stale), stale_epoch);
    enum { ROWS = 300000 }; /* about 5 waves on 2 shards, ids of each on every shard */
    uint64_t *ids = malloc(ROWS * sizeof *ids), created = 0;
    float *ones = malloc(ROWS * sizeof *ones), *out = malloc(ROWS * sizeof *out);
    assert_true(ids && ones && out);
    for (size_t i = 0; i < ROWS; i++) {
        ids[i] = i * 2654435761u + 17;
        ones[i] = 1.0f;
    }
    table_spec spec = {.dim = 1, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_NONE};
    ps_table_ref ref = {.model = "reroute", .table = "emb", .spec = &spec};
    assert_int_equal(
        ps_client_push_rows(stale, &ref, PS__PUSH_OP__PUSH_ADD, NULL, ROWS, ids, ones, &created),
        PS_STATUS_OK);
    assert_true(ps_client_epoch(stale) > stale_epoch); /* some rows were refused */
    assert_int_equal(created, ROWS);
    assert_int_equal(ps_client_pull_rows(fresh, &ref, ROWS, ids, out, &created), PS_STATUS_OK);
    assert_int_equal(created, 0);
    for (size_t i = 0; i < ROWS; i++)
        assert_true(out[i] == 1.0f);
    free(ids);
    free(ones);
    free(out);
}

static void test_reroute_after_ring_change(void **state) {
    (void)state;
    ps_client *c = NULL, *fresh = NULL, *stale_rows = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    wait_epoch(c, 2);
    assert_int_equal(ps_client_shard_count(c), 2);
    assert_int_equal(ps_client_create(coordinator, &stale_rows, err, sizeof err), PS_STATUS_OK);
    wait_epoch(stale_rows, ps_client_epoch(c));

    /* a third shard joins: `c` keeps its ring of two */
    uint64_t stale_epoch = ps_client_epoch(c);
    start_shard("shard-3");
    assert_int_equal(ps_client_create(coordinator, &fresh, err, sizeof err), PS_STATUS_OK);
    wait_epoch(fresh, stale_epoch + 1);
    assert_int_equal(ps_client_epoch(c), stale_epoch);

    enum { N = 300 };
    uint64_t keys[N], versions[N];
    uint32_t lens[N];
    float vals[N][4], out[N][4];
    const float *src[N];
    float *dst[N];
    size_t moved = 0;
    for (size_t i = 0; i < N; i++) {
        keys[i] = ps_key_dense("reroute", 1, "t", (uint32_t)i);
        lens[i] = 4;
        for (int k = 0; k < 4; k++)
            vals[i][k] = (float)(i * 4 + (size_t)k);
        src[i] = vals[i];
        dst[i] = out[i];
        if (ps_client_owner(fresh, keys[i]) != ps_client_owner(c, keys[i]) ||
            strcmp(ps_client_shard_id(fresh, ps_client_owner(fresh, keys[i])),
                   ps_client_shard_id(c, ps_client_owner(c, keys[i]))) != 0)
            moved++;
    }
    assert_true(moved > 0); /* some keys now belong to shard-3 */

    /* zeros everywhere, through the fresh ring */
    static const float zeros[4] = {0};
    const float *zsrc[N];
    for (size_t i = 0; i < N; i++)
        zsrc[i] = zeros;
    assert_int_equal(
        ps_client_push(fresh, PS__PUSH_OP__PUSH_ASSIGN, N, keys, zsrc, lens, NULL, NULL),
        PS_STATUS_OK);

    /* the stale client ADDs: refused keys are re-routed alone, never applied twice */
    uint64_t pushed[N];
    assert_int_equal(ps_client_push(c, PS__PUSH_OP__PUSH_ADD, N, keys, src, lens, NULL, pushed),
                     PS_STATUS_OK);
    assert_true(ps_client_epoch(c) > stale_epoch); /* it refreshed */

    /* everything reads back once-added, from the owners the fresh ring names, at the
     * versions the push answered (a version is the shard's update seq: never 0) */
    assert_int_equal(ps_client_pull(fresh, N, keys, dst, lens, versions), PS_STATUS_OK);
    for (size_t i = 0; i < N; i++) {
        assert_true(versions[i] > 0);
        assert_true(versions[i] == pushed[i]);
        assert_memory_equal(out[i], vals[i], sizeof vals[i]);
    }
    push_rows_on_a_stale_ring(stale_rows, fresh, stale_epoch);
    ps_client_destroy(stale_rows);
    ps_client_destroy(c);
    ps_client_destroy(fresh);
}

static void test_errors_are_clear(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create("127.0.0.1:1", &c, err, sizeof err), PS_STATUS_UNAVAILABLE);
    assert_non_null(strstr(err, "127.0.0.1:1"));
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);

    /* a key nobody assigned */
    uint64_t key = ps_key_dense("nothing", 1, "here", 0);
    float buf[4];
    float *dst[1] = {buf};
    uint32_t len = 4;
    assert_int_equal(ps_client_pull(c, 1, &key, dst, &len, NULL), PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(ps_client_error(c), "not on shard"));

    /* a length that disagrees with what the shard holds */
    const float vals[4] = {1, 2, 3, 4};
    const float *src[1] = {vals};
    assert_int_equal(ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, 1, &key, src, &len, NULL, NULL),
                     PS_STATUS_OK);
    uint32_t wrong = 3;
    assert_int_equal(ps_client_pull(c, 1, &key, dst, &wrong, NULL), PS_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(ps_client_error(c), "holds 4 floats"));
    assert_int_equal(ps_client_push(c, PS__PUSH_OP__PUSH_ADD, 1, &key, src, &wrong, NULL, NULL),
                     PS_STATUS_INVALID_ARGUMENT);

    /* an unknown model */
    Ps__ModelInfo *m = NULL;
    assert_int_equal(ps_client_get_model(c, "no_such_model", 0, &m), PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(ps_client_error(c), "no_such_model"));
    ps_client_destroy(c);
}

/* Up to SMALL_KEYS keys of tensor `name` (version 1), SMALL_LEN floats each, pushed
 * from `ones` or `zeros` and pulled into `buf`: what the request-id tests push. */
enum { SMALL_KEYS = 64, SMALL_LEN = 5 };
typedef struct small_set {
    int n;
    uint64_t keys[SMALL_KEYS];
    uint32_t lens[SMALL_KEYS];
    float ones[SMALL_LEN], zeros[SMALL_LEN], buf[SMALL_KEYS][SMALL_LEN];
    const float *src[SMALL_KEYS], *zsrc[SMALL_KEYS];
    float *dst[SMALL_KEYS];
} small_set;

static void small_set_init(small_set *s, const char *name, int n) {
    memset(s, 0, sizeof *s);
    s->n = n;
    for (int k = 0; k < SMALL_LEN; k++)
        s->ones[k] = 1.0f;
    for (int i = 0; i < n; i++) {
        s->keys[i] = ps_key_dense(name, 1, "t", (uint32_t)i);
        s->lens[i] = SMALL_LEN;
        s->src[i] = s->ones;
        s->zsrc[i] = s->zeros;
        s->dst[i] = s->buf[i];
    }
}

/* Pulls the set back: every float must be `want`. */
static void small_set_expect(ps_client *c, small_set *s, float want) {
    assert_int_equal(ps_client_pull(c, (size_t)s->n, s->keys, s->dst, s->lens, NULL), PS_STATUS_OK);
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < SMALL_LEN; k++)
            assert_true(s->buf[i][k] == want);
}

/* A write retried with the request id the caller set lands once (every call of it is
 * looked up on the shard); 0 goes back to a fresh id per write. Chunks and rows. */
static void test_a_set_request_id_lands_once(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    static small_set s;
    small_set_init(&s, "rid", 6);
    const size_t n = (size_t)s.n;
    assert_int_equal(
        ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, n, s.keys, s.zsrc, s.lens, NULL, NULL),
        PS_STATUS_OK);
    uint64_t id = ps_client_new_request_id(c);
    assert_true(id != 0 && id != ps_client_new_request_id(c));
    for (int attempt = 0; attempt < 3; attempt++) { /* the same write, three times */
        ps_client_set_request_id(c, id);
        assert_int_equal(
            ps_client_push(c, PS__PUSH_OP__PUSH_ADD, n, s.keys, s.src, s.lens, NULL, NULL),
            PS_STATUS_OK);
    }
    /* part of it again (a retry the ring regrouped), then all of it under another id */
    assert_int_equal(
        ps_client_push(c, PS__PUSH_OP__PUSH_ADD, 2, s.keys + 1, s.src, s.lens, NULL, NULL),
        PS_STATUS_OK);
    ps_client_set_request_id(c, 0);
    assert_int_equal(ps_client_push(c, PS__PUSH_OP__PUSH_ADD, n, s.keys, s.src, s.lens, NULL, NULL),
                     PS_STATUS_OK);
    small_set_expect(c, &s, 2.0f);

    table_spec spec = {.dim = 2, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_SGD};
    optim_spec sgd;
    optim_spec_defaults(OPTIM_SGD, &sgd);
    sgd.lr = 1.0f;
    ps_table_ref ref = {.model = "rid", .table = "emb", .spec = &spec};
    ps_push_train train = {.optimizer = &sgd};
    uint64_t ids[3] = {11, 12, 13};
    float grads[6] = {1, 1, 1, 1, 1, 1}, rows[6];
    id = ps_client_new_request_id(c);
    for (int attempt = 0; attempt < 2; attempt++) {
        ps_client_set_request_id(c, id);
        assert_int_equal(
            ps_client_push_rows(c, &ref, PS__PUSH_OP__PUSH_OPTIMIZE, &train, 3, ids, grads, NULL),
            PS_STATUS_OK);
    }
    ps_client_set_request_id(c, 0);
    assert_int_equal(ps_client_pull_rows(c, &ref, 3, ids, rows, NULL), PS_STATUS_OK);
    for (int k = 0; k < 6; k++)
        assert_true(rows[k] == -1.0f); /* one step of lr 1 from 0, not two */
    ps_client_destroy(c);
}

/* A large push goes to each shard as several calls in flight at once (CALL_FLOATS
 * each); when the ring moved under the client, only the refused calls' keys go again,
 * so every chunk is added exactly once. A large pull goes a window of calls at a time
 * (PULL_WINDOW), also from a client whose ring is stale (pulls are routed again too
 * when an old owner refuses them). */
static void test_large_push_in_concurrent_calls_applied_once(void **state) {
    (void)state;
    ps_client *c = NULL, *fresh = NULL, *old = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(ps_client_create(coordinator, &old, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(ps_client_shard_count(c), 2); /* a fresh cluster (second group) */
    uint64_t stale_epoch = ps_client_epoch(c);
    start_shard("shard-3"); /* joins: the ring holds no data yet */
    assert_int_equal(ps_client_create(coordinator, &fresh, err, sizeof err), PS_STATUS_OK);
    wait_epoch(fresh, stale_epoch + 1);

    enum { N = 96, LEN = 64 * 1024 }; /* 24 MiB: about 8 MiB, 8 calls or more, a shard */
    uint64_t keys[N], pushed[N], versions[N];
    uint32_t lens[N];
    const float *src[N], *zsrc[N];
    float *dst[N];
    float *vals = malloc((size_t)N * LEN * sizeof *vals), *out = calloc((size_t)N * LEN, 4),
          *zeros = calloc(LEN, sizeof *zeros);
    assert_true(vals && out && zeros);
    for (size_t i = 0; i < N; i++) {
        keys[i] = ps_key_dense("concurrent", 1, "t", (uint32_t)i);
        lens[i] = LEN;
        for (size_t k = 0; k < LEN; k++)
            vals[i * LEN + k] = (float)(i * 7 + k % 1000);
        src[i] = vals + i * LEN;
        dst[i] = out + i * LEN;
        zsrc[i] = zeros;
    }
    assert_int_equal(
        ps_client_push(fresh, PS__PUSH_OP__PUSH_ASSIGN, N, keys, zsrc, lens, NULL, NULL),
        PS_STATUS_OK);
    assert_int_equal(ps_client_push(c, PS__PUSH_OP__PUSH_ADD, N, keys, src, lens, NULL, pushed),
                     PS_STATUS_OK);
    assert_true(ps_client_epoch(c) > stale_epoch);
    assert_int_equal(ps_client_pull(fresh, N, keys, dst, lens, versions), PS_STATUS_OK);
    for (size_t i = 0; i < N; i++)
        assert_true(versions[i] == pushed[i] && versions[i] > 0);
    assert_memory_equal(out, vals, (size_t)N * LEN * sizeof *vals);
    memset(out, 0, (size_t)N * LEN * sizeof *out);
    assert_int_equal(ps_client_epoch(old), stale_epoch); /* any owner may answer it */
    assert_int_equal(ps_client_pull(old, N, keys, dst, lens, versions), PS_STATUS_OK);
    assert_memory_equal(out, vals, (size_t)N * LEN * sizeof *vals);
    for (size_t i = 0; i < N; i++)
        assert_true(versions[i] == pushed[i]);
    free(vals);
    free(out);
    free(zeros);
    ps_client_destroy(c);
    ps_client_destroy(fresh);
    ps_client_destroy(old);
}

/* More keys for one shard than it takes in one request (SHARD_MAX_KEYS_PER_REQUEST,
 * 256 Ki): the client cuts them into calls of CALL_KEYS. The old client sent each
 * shard all its keys at once and got INVALID_ARGUMENT back. */
static void test_more_keys_than_one_request_holds(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    size_t n = 300000 * (size_t)ps_client_shard_count(c);
    uint64_t *keys = malloc(n * sizeof *keys);
    uint32_t *lens = malloc(n * sizeof *lens);
    assert_true(keys && lens);
    for (size_t i = 0; i < n; i++)
        keys[i] = ps_key_dense("many", 1, "t", (uint32_t)i);
    assert_int_equal(ps_client_stat(c, n, keys, lens, NULL), PS_STATUS_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(lens[i], 0); /* none held, all asked */
    free(keys);
    free(lens);
    ps_client_destroy(c);
}

static int setup_three(void **state) {
    (void)state;
    return cluster_start("test_psclient", 3, NULL); /* R = 2, the coordinator's default */
}

/* With no failover wait a push whose shard died fails at once, some keys landed on the
 * live shards; the caller tries it again with its request id until the failover has
 * moved the dead shard's keys: the client routes each try on a fresh ring (before, it
 * kept the dead shard's ring and every try failed), and every key lands exactly once. */
static void test_a_failed_push_tried_again_with_its_id_after_a_failover(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    static small_set s;
    small_set_init(&s, "failover", 48);
    const size_t n = (size_t)s.n;
    bool on_victim = false;
    for (size_t i = 0; i < n; i++)
        on_victim |= strcmp(ps_client_shard_id(c, ps_client_owner(c, s.keys[i])), "shard-1") == 0;
    assert_true(on_victim);
    assert_int_equal(
        ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, n, s.keys, s.zsrc, s.lens, NULL, NULL),
        PS_STATUS_OK);
    usleep(300 * 1000); /* the backups have their copies */
    cluster_kill(1);    /* shard-1 */
    ps_client_set_failover_wait(c, 0);
    uint64_t id = ps_client_new_request_id(c);
    int failures = 0;
    ps_status st = PS_STATUS_UNAVAILABLE;
    for (int64_t until = ps_now_ms() + 30000; st != PS_STATUS_OK && ps_now_ms() < until;) {
        ps_client_set_request_id(c, id);
        st = ps_client_push(c, PS__PUSH_OP__PUSH_ADD, n, s.keys, s.src, s.lens, NULL, NULL);
        if (st != PS_STATUS_OK) {
            failures++;
            usleep(100 * 1000);
        }
    }
    ps_client_set_request_id(c, 0);
    assert_int_equal(st, PS_STATUS_OK);
    assert_true(failures > 0); /* the dead shard was met */
    small_set_expect(c, &s, 1.0f);
    ps_client_destroy(c);
}

static int setup_one(void **state) {
    (void)state;
    return cluster_start("test_psclient", 1, NULL);
}

/* N keys of tensor `name`, LEN floats each: the values (a pattern) and room to pull
 * them back. */
enum { N_STALL = 128, LEN_STALL = 64 * 1024 }; /* 32 MiB: far more than sockets buffer */
typedef struct stall_set {
    uint64_t keys[N_STALL];
    uint32_t lens[N_STALL];
    const float *src[N_STALL];
    float *dst[N_STALL];
    float *vals, *out;
} stall_set;

static stall_set *stall_set_make(const char *name) {
    stall_set *d = calloc(1, sizeof *d);
    assert_non_null(d);
    d->vals = malloc((size_t)N_STALL * LEN_STALL * sizeof *d->vals);
    d->out = calloc((size_t)N_STALL * LEN_STALL, sizeof *d->out);
    assert_true(d->vals && d->out);
    for (size_t i = 0; i < N_STALL; i++) {
        d->keys[i] = ps_key_dense(name, 1, "t", (uint32_t)i);
        d->lens[i] = LEN_STALL;
        for (size_t k = 0; k < LEN_STALL; k++)
            d->vals[i * LEN_STALL + k] = (float)(i + k % 100);
        d->src[i] = d->vals + i * LEN_STALL;
        d->dst[i] = d->out + i * LEN_STALL;
    }
    return d;
}

static void stall_set_free(stall_set *d) {
    free(d->vals);
    free(d->out);
    free(d);
}

/* Pushes one key (the client connects), stops process `pid` (SIGSTOP), pushes them all,
 * and lets it run again; the second push's status, *ret_took its milliseconds. */
static ps_status push_past_stopped(ps_client *c, pid_t pid, const stall_set *d, int64_t *ret_took) {
    assert_int_equal(
        ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, 1, d->keys, d->src, d->lens, NULL, NULL),
        PS_STATUS_OK);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    int64_t t0 = ps_now_ms();
    ps_status st =
        ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, N_STALL, d->keys, d->src, d->lens, NULL, NULL);
    *ret_took = ps_now_ms() - t0;
    assert_int_equal(kill(pid, SIGCONT), 0);
    return st;
}

/* A shard that stops reading in the middle of a push (SIGSTOP here; a hung process or
 * a cut network looks the same to the client) holds the push about as long as the call's
 * deadline: the push fails (DEADLINE_EXCEEDED, or UNAVAILABLE when the connection's
 * keepalive pings found the shard mute first), and once the shard runs again the client
 * works as before. Without the pings gRPC did not end the call at its deadline 1 try in
 * 3: it waited until the shard ran again. */
static void test_push_to_a_stalled_shard_ends_at_its_deadline(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    ps_client_set_failover_wait(c, 0);
    ps_client_set_call_timeout(c, 2000);
    stall_set *d = stall_set_make("stalled");
    int64_t took = 0;
    ps_status st = push_past_stopped(c, procs[1], d, &took);
    /* the deadline, or the keepalive pings (1 s apart) that found the shard mute */
    assert_true(st == PS_STATUS_DEADLINE_EXCEEDED || st == PS_STATUS_UNAVAILABLE);
    assert_true(took < 15000); /* not the 100 s it took before the pings */
    assert_int_equal(
        ps_client_push(c, PS__PUSH_OP__PUSH_ASSIGN, N_STALL, d->keys, d->src, d->lens, NULL, NULL),
        PS_STATUS_OK);
    assert_int_equal(ps_client_pull(c, N_STALL, d->keys, d->dst, d->lens, NULL), PS_STATUS_OK);
    assert_memory_equal(d->out, d->vals, (size_t)N_STALL * LEN_STALL * sizeof *d->vals);
    stall_set_free(d);
    ps_client_destroy(c);
}

/* The same with R = 2 and a backup that stops: the primary's Replicate calls to it stall
 * half written, the coordinator takes it off the ring, and the push goes on: the calls
 * to it end (deadline or keepalive), the client sends their keys again on the new ring,
 * and the primary's push handlers, which wait until gRPC gives back the values their
 * replication lent it, are not held until the backup runs again. */
static void test_push_past_a_stalled_backup(void **state) {
    (void)state;
    ps_client *c = NULL;
    char err[512];
    assert_int_equal(ps_client_create(coordinator, &c, err, sizeof err), PS_STATUS_OK);
    ps_client_set_call_timeout(c, 2000);
    stall_set *d = stall_set_make("stalled-backup");
    int64_t took = 0;
    ps_status st = push_past_stopped(c, procs[2], d, &took);
    print_message("the push took %lld ms with a stopped backup\n", (long long)took);
    assert_int_equal(st, PS_STATUS_OK);
    assert_int_equal(ps_client_pull(c, N_STALL, d->keys, d->dst, d->lens, NULL), PS_STATUS_OK);
    assert_memory_equal(d->out, d->vals, (size_t)N_STALL * LEN_STALL * sizeof *d->vals);
    stall_set_free(d);
    ps_client_destroy(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reroute_after_ring_change),
        cmocka_unit_test(test_errors_are_clear),
        cmocka_unit_test(test_a_set_request_id_lands_once),
    };
    /* on a cluster of their own: a shard joins only a ring that holds no data */
    const struct CMUnitTest fresh_cluster[] = {
        cmocka_unit_test(test_large_push_in_concurrent_calls_applied_once),
        cmocka_unit_test(test_more_keys_than_one_request_holds),
    };
    const struct CMUnitTest one_shard[] = {
        cmocka_unit_test(test_push_to_a_stalled_shard_ends_at_its_deadline),
    };
    const struct CMUnitTest stalled_backup[] = {
        cmocka_unit_test(test_push_past_a_stalled_backup),
    };
    const struct CMUnitTest failover[] = {
        cmocka_unit_test(test_a_failed_push_tried_again_with_its_id_after_a_failover),
    };
    int failed = cmocka_run_group_tests(one_shard, setup_one, teardown);
    failed += cmocka_run_group_tests(stalled_backup, setup, teardown);
    failed += cmocka_run_group_tests(failover, setup_three, teardown);
    failed += cmocka_run_group_tests(tests, setup, teardown);
    return failed + cmocka_run_group_tests(fresh_cluster, setup, teardown);
}
