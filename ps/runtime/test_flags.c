/* test_flags.c: the flag table parser (types, ranges, required flags, --help, errors)
 * and finding the coordinator's address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "flags.h"

typedef struct cfg {
    const char *id, *listen;
    int threads;
    uint64_t max_bytes;
    bool verbose;
} cfg;

static size_t table(cfg *c, ps_flag *f) {
    ps_flag t[] = {
        {"id", PS_FLAG_STRING, &c->id, 0, 0, "ID", "this node's name", true},
        {"listen", PS_FLAG_STRING, &c->listen, 0, 0, "HOST:PORT", "address to serve on", false},
        {"threads", PS_FLAG_INT, &c->threads, 1, 64, "N", "worker threads", false},
        {"max-bytes", PS_FLAG_U64, &c->max_bytes, 1, INT64_MAX, "BYTES", "memory quota", false},
        {"verbose", PS_FLAG_BOOL, &c->verbose, 0, 0, NULL, "say more", false},
    };
    memcpy(f, t, sizeof t);
    return sizeof t / sizeof t[0];
}

static ps_flags_result parse(cfg *c, char *err, size_t err_len, int argc, ...) {
    char *argv[16] = {"prog"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    ps_flag f[8];
    size_t n = table(c, f);
    return ps_flags_parse("prog", "A test program.", f, n, argc, argv, NULL, err, err_len);
}

static void test_parse_all_types(void **state) {
    (void)state;
    cfg c = {.listen = "127.0.0.1:0", .threads = 2, .max_bytes = 100};
    char err[256] = "";
    assert_int_equal(parse(&c, err, sizeof err, 9, "--id", "n1", "--threads", "8", "--max-bytes",
                           "18446744073709551", "--verbose", "--listen=0.0.0.0:5"),
                     PS_FLAGS_CONTINUE);
    assert_string_equal(c.id, "n1");
    assert_string_equal(c.listen, "0.0.0.0:5");
    assert_int_equal(c.threads, 8);
    assert_true(c.max_bytes == 18446744073709551ull);
    assert_true(c.verbose);
}

static void test_defaults_kept(void **state) {
    (void)state;
    cfg c = {.listen = "127.0.0.1:0", .threads = 2, .max_bytes = 100};
    char err[256] = "";
    assert_int_equal(parse(&c, err, sizeof err, 3, "--id", "n1"), PS_FLAGS_CONTINUE);
    assert_string_equal(c.listen, "127.0.0.1:0");
    assert_int_equal(c.threads, 2);
    assert_false(c.verbose);
}

static void test_errors(void **state) {
    (void)state;
    cfg c = {.threads = 2};
    char err[256];
    assert_int_equal(parse(&c, err, sizeof err, 1), PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "--id is required"));
    assert_int_equal(parse(&c, err, sizeof err, 3, "--id", ""), PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "--id is required"));
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--threads", "65"),
                     PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "--threads wants a whole number in 1..64, got '65'"));
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--threads", "4x"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--max-bytes", "-1"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--max-bytes", "0"),
                     PS_FLAGS_EXIT_USAGE);
    /* digits only: strtoull would take a sign or leading spaces */
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--max-bytes", "+5"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--max-bytes", " 5"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--threads", " 5"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--threads", "+5"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 5, "--id", "a", "--threads", "-"),
                     PS_FLAGS_EXIT_USAGE);
    assert_int_equal(parse(&c, err, sizeof err, 4, "--id", "a", "--bogus"), PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "unknown option --bogus"));
    assert_int_equal(parse(&c, err, sizeof err, 4, "--id", "a", "extra"), PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "unexpected argument 'extra'"));
    assert_int_equal(parse(&c, err, sizeof err, 2, "--threads"), PS_FLAGS_EXIT_USAGE);
    assert_non_null(strstr(err, "wants a value"));
}

static void test_help_and_describe(void **state) {
    (void)state;
    cfg c = {.listen = "127.0.0.1:0", .threads = 2, .max_bytes = 100};
    char err[256];
    assert_int_equal(parse(&c, err, sizeof err, 2, "--help"), PS_FLAGS_EXIT_OK);
    assert_int_equal(parse(&c, err, sizeof err, 2, "-h"), PS_FLAGS_EXIT_OK);
    ps_flag f[8];
    size_t n = table(&c, f);
    char text[4096];
    ps_flags_usage("prog", "A test program.", f, n, text, sizeof text);
    assert_non_null(strstr(text, "usage: prog [options]\nA test program."));
    assert_non_null(strstr(text, "--id ID"));
    assert_non_null(strstr(text, "(required)"));
    assert_non_null(strstr(text, "--threads N"));
    assert_non_null(strstr(text, "(default 2) [1..64]"));
    assert_non_null(strstr(text, "--help"));
    c.id = "n1";
    ps_flags_describe(f, n, text, sizeof text);
    assert_string_equal(text, "--id n1 --listen 127.0.0.1:0 --threads 2 --max-bytes 100 "
                              "--verbose false");
    /* a small buffer truncates and stays terminated */
    char tiny[8];
    ps_flags_describe(f, n, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), 7);
}

static void test_coordinator_address(void **state) {
    (void)state;
    char buf[64], err[256];
    unsetenv("PS_COORDINATOR");
    assert_int_equal(ps_flags_coordinator("10.0.0.1:7000", buf, sizeof buf, err, sizeof err),
                     PS_STATUS_OK);
    assert_string_equal(buf, "10.0.0.1:7000");
    setenv("PS_COORDINATOR", "10.0.0.2:7000", 1);
    assert_int_equal(ps_flags_coordinator(NULL, buf, sizeof buf, err, sizeof err), PS_STATUS_OK);
    assert_string_equal(buf, "10.0.0.2:7000");
    assert_int_equal(ps_flags_coordinator("", buf, sizeof buf, err, sizeof err), PS_STATUS_OK);
    assert_string_equal(buf, "10.0.0.2:7000");
    char small[4];
    assert_int_equal(ps_flags_coordinator(NULL, small, sizeof small, err, sizeof err),
                     PS_STATUS_OUT_OF_RANGE);
    unsetenv("PS_COORDINATOR");
    /* run in an empty directory: no run/cluster.env */
    char dir[] = "/tmp/ps_flags_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(ps_flags_coordinator(NULL, buf, sizeof buf, err, sizeof err),
                     PS_STATUS_NOT_FOUND);
    assert_non_null(strstr(err, "--coordinator HOST:PORT"));
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_all_types),
        cmocka_unit_test(test_defaults_kept),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_help_and_describe),
        cmocka_unit_test(test_coordinator_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
