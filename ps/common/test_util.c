/* test_util.c: unit tests of the base layer's helpers: atomic, durable writes
 * (ps_write_file_atomic) read back whole, replacing what was there, and a clear IO
 * status for a directory that does not exist; growable arrays; which names are text. */
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

/* Before, names were checked for length only: a tensor name of bytes ff fe fd fc was
 * registered, and the coordinator could never write its state again. */
static void test_text_valid(void **state) {
    (void)state;
    const char *good[] = {
        "",         "fc1.weight",   "caf\xc3\xa9",      "\xe2\x82\xac", "\xf0\x9f\x98\x80",
        "\xc2\xa0", "\xed\x9f\xbf", "\xf4\x8f\xbf\xbf", "\xee\x80\x80"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!ps_text_valid(good[i], strlen(good[i])))
            fail_msg("good[%zu] refused", i);
    const char *bad[] = {
        "\xff\xfe\xfd\xfc", /* not UTF-8 at all */
        "a\nb",             /* newline: a forged log line */
        "\x01",
        "\x7f",             /* controls */
        "\xc2\x85",         /* C1 control (NEL) */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong '/' */
        "\xf0\x80\x80\xaf", /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xf5\x80\x80\x80", /* lead byte past f4 */
        "\x80",             /* a lone continuation byte */
        "\xe2\x82",         /* cut short */
        "\xe2\x28\xa1",     /* second byte not a continuation */
        "\xf0\x9f\x98\x28", /* last byte not a continuation */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (ps_text_valid(bad[i], strlen(bad[i])))
            fail_msg("bad[%zu] accepted", i);
    /* a NUL inside the length counts as a control character */
    assert_false(ps_text_valid("a\0b", 3));
    /* the length bounds the check: a cut sequence is refused, a whole one not */
    assert_false(ps_text_valid("\xe2\x82\xac", 2));
    assert_true(ps_text_valid("x\xe2\x82\xac", 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_file_atomic),
        cmocka_unit_test(test_reserve_grows_by_doubling),
        cmocka_unit_test(test_text_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
