/* test_chunk_list.c: chunk lists parse strictly and format back compactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chunk_list.h"

static void test_parse_and_format(void **state) {
    (void)state;
    uint8_t f[12];
    char err[128], buf[64];
    assert_int_equal(chunk_list_parse("0-3,7,9-11", 12, f, err, sizeof err), PS_STATUS_OK);
    static const uint8_t want[12] = {1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1};
    assert_memory_equal(f, want, 12);
    assert_int_equal(chunk_list_format(f, 12, 1, buf, sizeof buf), 8);
    assert_string_equal(buf, "0-3,7,9-11");
    assert_int_equal(chunk_list_format(f, 12, 0, buf, sizeof buf), 4);
    assert_string_equal(buf, "4-6,8");
    assert_int_equal(chunk_list_format(f, 12, 2, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    /* overlapping and repeated items are fine */
    assert_int_equal(chunk_list_parse("2,2,1-3", 12, f, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(chunk_list_format(f, 12, 1, buf, sizeof buf), 3);
    assert_string_equal(buf, "1-3");
}

static void test_parse_errors(void **state) {
    (void)state;
    uint8_t f[4] = {9, 9, 9, 9};
    char err[128];
    const char *bad[] = {"",  "a",   "1,",  ",1", "1-", "3-1",
                         "4", "0-4", "1;2", "-1", " 1", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(chunk_list_parse(bad[i], 4, f, err, sizeof err),
                         PS_STATUS_INVALID_ARGUMENT);
        assert_true(strlen(err) > 0);
    }
    /* untouched on failure */
    static const uint8_t nine[4] = {9, 9, 9, 9};
    assert_memory_equal(f, nine, 4);
    assert_int_equal(chunk_list_parse("4", 4, f, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "past the last chunk (3)"));
}

static void test_format_truncates(void **state) {
    (void)state;
    uint8_t f[100];
    for (int i = 0; i < 100; i++)
        f[i] = (uint8_t)(i % 2);
    char buf[16];
    assert_int_equal(chunk_list_format(f, 100, 1, buf, sizeof buf), 50);
    assert_true(strlen(buf) < sizeof buf);
    assert_non_null(strstr(buf, "..."));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_format_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
