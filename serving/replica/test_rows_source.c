/* test_rows_source.c: the replica's reads of table rows when the shards cannot be
 * reached (cmocka, no process started: the coordinator address is a closed port).
 * Every read must fail UNAVAILABLE with a message naming the coordinator, from many
 * threads at once through a pool of one client, without a slot leaking (a leak would
 * hang the later reads); bad options are refused. The reads that succeed are covered
 * end to end (tests/e2e/test_serve_tables.py), where real shards answer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "rows_source.h"
#include "rpc.h"

#define THREADS 6
#define READS 3

typedef struct reader {
    rows_source *src;
    int unavailable;
    char err[512];
} reader;

static void *read_rows(void *arg) {
    reader *r = arg;
    const table_spec spec = {.dim = 4, .init = TABLE_INIT_NORMAL, .init_scale = 0.1f, .seed = 1};
    const uint64_t ids[2] = {1, 2};
    float out[8];
    for (int i = 0; i < READS; i++) {
        const served_rows rows = rows_source_get(r->src);
        ps_status st =
            rows.pull(rows.arg, "ctr", "user_emb", &spec, 2, ids, out, r->err, sizeof r->err);
        r->unavailable += st == PS_STATUS_UNAVAILABLE;
    }
    return NULL;
}

static void test_unreachable_is_unavailable(void **state) {
    (void)state;
    rows_source *src = NULL;
    assert_int_equal(rows_source_create(
                         &(rows_source_opts){.coordinator = "127.0.0.1:1", .max_clients = 1}, &src),
                     PS_STATUS_OK);
    reader readers[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        readers[i] = (reader){.src = src};
        assert_int_equal(pthread_create(&threads[i], NULL, read_rows, &readers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(readers[i].unavailable, READS);
        if (!strstr(readers[i].err, "cannot reach the coordinator at 127.0.0.1:1 to find the "
                                    "shards"))
            fail_msg("message: %s", readers[i].err);
    }
    rows_source_destroy(src);
    rows_source_destroy(NULL);
}

static void test_bad_options(void **state) {
    (void)state;
    rows_source *src = NULL;
    assert_int_equal(rows_source_create(NULL, &src), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(rows_source_create(&(rows_source_opts){0}, &src), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(
        rows_source_create(&(rows_source_opts){.coordinator = "127.0.0.1:1",
                                               .max_clients = ROWS_SOURCE_MAX_CLIENTS + 1},
                           &src),
        PS_STATUS_INVALID_ARGUMENT);
    assert_null(src);
}

int main(void) {
    rpc_process_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreachable_is_unavailable),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
