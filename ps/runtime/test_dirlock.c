/* test_dirlock.c: one holder at a time for a directory (dirlock.h). Two locks taken in
 * this one process conflict as two processes would (flock locks belong to open files),
 * so no process is started.
 *
 * Old behaviour this would have caught: a second ps-coordinator on the same state
 * directory (even on the same port, which gRPC binds with SO_REUSEPORT) started, served
 * half the connections and overwrote the first one's state file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dirlock.h"

static void test_one_holder_at_a_time(void **state) {
    (void)state;
    char dir[] = "/tmp/test_dirlock.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[512] = "";
    ps_dirlock *a = NULL, *b = (ps_dirlock *)0x1;
    assert_int_equal(ps_dirlock_create(dir, &a, err, sizeof err), PS_STATUS_OK);
    assert_non_null(a);
    assert_int_equal(ps_dirlock_create(dir, &b, err, sizeof err), PS_STATUS_FAILED_PRECONDITION);
    assert_ptr_equal(b, (ps_dirlock *)0x1); /* untouched on failure */
    char want[128];
    snprintf(want, sizeof want, "another process (pid %ld) already uses %s", (long)getpid(), dir);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "stop it first"));
    ps_dirlock_destroy(a); /* as when the holder dies: the next one takes it */
    assert_int_equal(ps_dirlock_create(dir, &b, err, sizeof err), PS_STATUS_OK);
    ps_dirlock_destroy(b);
    ps_dirlock_destroy(NULL);
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/%s", dir, PS_DIRLOCK_FILE);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_bad_directories(void **state) {
    (void)state;
    char err[512] = "";
    ps_dirlock *l = (ps_dirlock *)0x1;
    assert_int_equal(ps_dirlock_create("/nonexistent-dir/x", &l, err, sizeof err), PS_STATUS_IO);
    assert_non_null(strstr(err, "cannot open /nonexistent-dir/x/LOCK"));
    assert_int_equal(ps_dirlock_create("", &l, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(ps_dirlock_create(NULL, &l, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_ptr_equal(l, (ps_dirlock *)0x1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_holder_at_a_time),
        cmocka_unit_test(test_bad_directories),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
