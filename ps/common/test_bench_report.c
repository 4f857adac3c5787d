/* test_bench_report.c: the benchmark layout: header, rows with targets, notes, and a
 * RESULT line holding exactly the marked rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench_report.h"

static char *render(const bench_report *r, int *ret_misses) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    *ret_misses = bench_report_print(r, f);
    fclose(f);
    return text;
}

static void test_layout(void **state) {
    (void)state;
    bench_report *r = NULL;
    assert_int_equal(bench_report_create("bench_x", "what it measures", &r), PS_STATUS_OK);
    bench_report_param(r, "mb", "%d", 64);
    bench_report_row(r, "push", 1.23456, 3, "GB/s", BENCH_TARGET_AT_LEAST, 1.0, "push_gbps");
    bench_report_row(r, "lat", 20.0, 1, "us", BENCH_TARGET_AT_MOST, 15.0, "lat_us");
    bench_report_row(r, "moved", 0, 0, "keys", BENCH_TARGET_EQUAL, 0, NULL);
    bench_report_note(r, "%d retries", 2);
    int misses = -1;
    char *text = render(r, &misses);
    assert_int_equal(misses, 1);
    assert_non_null(strstr(text, "# bench_x: what it measures\n"));
    assert_non_null(strstr(text, "# mb "));
    assert_non_null(strstr(text, "# name"));
    assert_non_null(strstr(text, "1.235"));
    assert_non_null(strstr(text, ">= 1  ok"));
    assert_non_null(strstr(text, "<= 15  MISS"));
    assert_non_null(strstr(text, "# 2 retries\n"));
    /* the RESULT line is last and holds only marked rows */
    const char *last = strstr(text, "RESULT ");
    assert_non_null(last);
    assert_string_equal(last, "RESULT push_gbps=1.235 lat_us=20.0\n");
    free(text);
    bench_report_destroy(r);
}

static void test_row_limit(void **state) {
    (void)state;
    bench_report *r = NULL;
    assert_int_equal(bench_report_create("b", "", &r), PS_STATUS_OK);
    for (int i = 0; i < BENCH_REPORT_MAX_ROWS + 3; i++)
        bench_report_row(r, "x", i, 0, "", BENCH_TARGET_NONE, 0, NULL);
    int misses = -1;
    char *text = render(r, &misses);
    assert_int_equal(misses, 0);
    assert_non_null(strstr(text, "# 3 row(s) dropped"));
    free(text);
    bench_report_destroy(r);
    bench_report_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_row_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
