/* test_util.c: unit tests of the base layer's file helpers: atomic, durable writes
 * (ps_write_file_atomic) read back whole, replacing what was there, and a clear IO
 * status for a directory that does not exist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

static void test_write_file_atomic(void **state) {
    (void)state;
    char dir[] = "/tmp/test_util.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/state.json", dir);
    assert_int_equal(ps_write_file_atomic(path, "first", 5), PS_STATUS_OK);
    assert_int_equal(ps_write_file_atomic(path, "second!", 7), PS_STATUS_OK); /* replaces */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char buf[16] = "";
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(n, 7);
    assert_memory_equal(buf, "second!", 7);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x", dir);
    assert_int_equal(ps_write_file_atomic(missing, "x", 1), PS_STATUS_IO);
    /* a name without a directory lands in the current one */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(ps_write_file_atomic("here.txt", "ok", 2), PS_STATUS_OK);
    assert_int_equal(access("here.txt", F_OK), 0);
    assert_int_equal(chdir(cwd), 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ps_reserve doubles from the first size until the need fits, keeps what the array
 * held, and leaves a big enough array alone. */
static void test_reserve_grows_by_doubling(void **state) {
    (void)state;
    int *a = NULL;
    size_t cap = 0;
    assert_true(ps_reserve((void **)&a, &cap, 10, sizeof *a, 4));
    assert_int_equal(cap, 16);
    for (int i = 0; i < 10; i++)
        a[i] = i * 3;
    int *before = a;
    assert_true(ps_reserve((void **)&a, &cap, 16, sizeof *a, 4));
    assert_ptr_equal(a, before);
    assert_int_equal(cap, 16);
    assert_true(ps_reserve((void **)&a, &cap, 17, sizeof *a, 4));
    assert_int_equal(cap, 32);
    for (int i = 0; i < 10; i++)
        assert_int_equal(a[i], i * 3);
    free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_file_atomic),
        cmocka_unit_test(test_reserve_grows_by_doubling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
