/* test_text_unicode.c: the Unicode facts of the WordPiece tokenizer (text_unicode.h):
 * strict UTF-8, the flags of code points the reference treats specially, lower-case +
 * NFD (Hangul by the algorithm, U+0130, no final sigma) and canonical ordering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "text_unicode.h"

static size_t decode(const char *s, size_t len, uint32_t *cp) {
    return text_unicode_utf8_decode((const uint8_t *)s, len, cp);
}

static void test_utf8_strict(void **state) {
    (void)state;
    uint32_t cp = 0;
    assert_int_equal(decode("a", 1, &cp), 1);
    assert_int_equal(cp, 'a');
    assert_int_equal(decode("\xC3\xA9", 2, &cp), 2);
    assert_int_equal(cp, 0xE9);
    assert_int_equal(decode("\xE2\x82\xAC", 3, &cp), 3);
    assert_int_equal(cp, 0x20AC);
    assert_int_equal(decode("\xF4\x8F\xBF\xBF", 4, &cp), 4);
    assert_int_equal(cp, 0x10FFFF);
    assert_int_equal(decode("\0", 1, &cp), 1); /* NUL is valid UTF-8 (dropped later) */
    assert_int_equal(cp, 0);
    static const char *const bad[] = {
        "\x80",             /* a lone continuation byte */
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\x80",     /* overlong */
        "\xF0\x80\x80\x80", /* overlong */
        "\xED\xA0\x80",     /* a surrogate */
        "\xF4\x90\x80\x80", /* over U+10FFFF */
        "\xF5\x80\x80\x80", /* no such lead byte */
        "\xFF",             /* no such lead byte */
        "\xE2\x28\xA1",     /* a bad continuation */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(decode(bad[i], strlen(bad[i]), &cp), 0);
    assert_int_equal(decode("\xE2\x82", 2, &cp), 0); /* truncated */
    assert_int_equal(decode("a", 0, &cp), 0);
    uint8_t buf[4];
    static const uint32_t round[] = {0, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF};
    for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
        size_t n = text_unicode_utf8_encode(round[i], buf);
        assert_int_equal(text_unicode_utf8_decode(buf, n, &cp), n);
        assert_int_equal(cp, round[i]);
    }
}

static void test_flags(void **state) {
    (void)state;
    assert_int_equal(text_unicode_flags('a'), 0);
    assert_int_equal(text_unicode_flags(' '), TEXT_UNICODE_SPACE | TEXT_UNICODE_SPLIT);
    assert_int_equal(text_unicode_flags('\t'), TEXT_UNICODE_SPACE | TEXT_UNICODE_SPLIT);
    assert_int_equal(text_unicode_flags(0x3000), TEXT_UNICODE_SPACE | TEXT_UNICODE_SPLIT);
    assert_int_equal(text_unicode_flags(0x0B), TEXT_UNICODE_DROP | TEXT_UNICODE_SPLIT); /* Cc */
    assert_int_equal(text_unicode_flags(0x2028), TEXT_UNICODE_SPLIT); /* Zl: splits, stays */
    assert_int_equal(text_unicode_flags(0), TEXT_UNICODE_DROP);
    assert_int_equal(text_unicode_flags(0xFFFD), TEXT_UNICODE_DROP);
    assert_int_equal(text_unicode_flags(0x200B), TEXT_UNICODE_DROP); /* Cf */
    assert_int_equal(text_unicode_flags(0xE000), TEXT_UNICODE_DROP); /* Co */
    assert_int_equal(text_unicode_flags(0x378), 0);                  /* unassigned stays */
    assert_int_equal(text_unicode_flags('$'), TEXT_UNICODE_PUNCT);   /* ASCII, though Sc */
    assert_int_equal(text_unicode_flags(0xAB), TEXT_UNICODE_PUNCT);  /* Pi */
    assert_int_equal(text_unicode_flags(0x4E00), TEXT_UNICODE_CJK);
    assert_int_equal(text_unicode_flags(0x2F800), TEXT_UNICODE_CJK);
    assert_int_equal(text_unicode_flags(0x3042), 0); /* hiragana: not split */
    assert_int_equal(text_unicode_flags(0x301), TEXT_UNICODE_MN);
    assert_int_equal(text_unicode_flags(0x110000), 0);
    assert_string_equal(text_unicode_version(), "14.0.0");
}

static void expect_lower_nfd(uint32_t cp, const uint32_t *want, size_t n) {
    uint32_t out[TEXT_UNICODE_MAX_EXPANSION];
    assert_int_equal(text_unicode_lower_nfd(cp, out), n);
    assert_memory_equal(out, want, n * sizeof(uint32_t));
}

static void test_lower_nfd(void **state) {
    (void)state;
    expect_lower_nfd('A', (uint32_t[]){'a'}, 1);
    expect_lower_nfd('a', (uint32_t[]){'a'}, 1);
    expect_lower_nfd(0xC9, (uint32_t[]){'e', 0x301}, 2);  /* É */
    expect_lower_nfd(0x130, (uint32_t[]){'i', 0x307}, 2); /* İ: two code points */
    expect_lower_nfd(0x3A3, (uint32_t[]){0x3C3}, 1);      /* Σ: never final ς */
    expect_lower_nfd(0x212A, (uint32_t[]){'k'}, 1);       /* Kelvin sign */
    expect_lower_nfd(0x1F88, (uint32_t[]){0x3B1, 0x313, 0x345}, 3);
    expect_lower_nfd(0xAC00, (uint32_t[]){0x1100, 0x1161}, 2);         /* Hangul LV */
    expect_lower_nfd(0xD7A3, (uint32_t[]){0x1112, 0x1175, 0x11C2}, 3); /* Hangul LVT */
    assert_int_equal(text_unicode_ccc(0x301), 230);
    assert_int_equal(text_unicode_ccc(0x316), 220);
    assert_int_equal(text_unicode_ccc(0x1D165), 216);
    assert_int_equal(text_unicode_ccc('a'), 0);
}

static void test_reorder(void **state) {
    (void)state;
    uint32_t s[8], scratch[8];
    uint32_t a[] = {'a', 0x301, 0x316, 'b', 0x301, 0x300, 0x1D16D, 0x1D165};
    memcpy(s, a, sizeof(a));
    text_unicode_reorder(s, 8, scratch);
    uint32_t want[] = {'a',     0x316,   0x301, 'b',
                       0x1D165, 0x1D16D, 0x301, 0x300}; /* as Python's NFD */
    assert_memory_equal(s, want, sizeof(want));
    /* a hostile run of 200,000 marks in the worst order sorts in n log n */
    size_t n = 200000;
    uint32_t *big = malloc(n * sizeof(uint32_t)), *tmp = malloc(n * sizeof(uint32_t));
    assert_non_null(big);
    assert_non_null(tmp);
    for (size_t i = 0; i < n; i++)
        big[i] = i < n / 2 ? 0x301 : 0x316;
    text_unicode_reorder(big, n, tmp);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(big[i], i < n / 2 ? 0x316 : 0x301);
    free(tmp);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_strict),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_lower_nfd),
        cmocka_unit_test(test_reorder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
