/* test_status.c: every status has a distinct name and a description. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "status.h"

static void test_names_distinct(void **state) {
    (void)state;
    for (int a = 0; a >= PS_STATUS_WRONG_EPOCH; a--) {
        assert_string_not_equal(ps_status_name((ps_status)a), "UNKNOWN");
        assert_string_not_equal(ps_status_str((ps_status)a), "unknown status");
        for (int b = a - 1; b >= PS_STATUS_WRONG_EPOCH; b--)
            assert_string_not_equal(ps_status_name((ps_status)a), ps_status_name((ps_status)b));
    }
    assert_string_equal(ps_status_name((ps_status)-999), "UNKNOWN");
    assert_string_equal(ps_status_str(PS_STATUS_INVALID_ARGUMENT), "invalid argument");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_names_distinct)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
