/* text_unicode.h: the few Unicode facts the replica's WordPiece tokenizer needs
 * (wordpiece.h): strict UTF-8 decoding, one flag byte per code point, lower-casing
 * followed by canonical decomposition, and canonical ordering.
 *
 * Why this way: the tokenizer must decide every code point exactly as the Python
 * reference scripts/models/wordpiece.py does (which matches the Rust tokenizer of
 * all-MiniLM-L6-v2), so the data comes from the same place, Python's unicodedata,
 * turned into compact C tables by scripts/gen_unicode_tables.py (the committed
 * text_unicode_tables.c says which Unicode version) instead of a dependency on ICU,
 * whose version and rules would differ. Pure functions over constant tables: no
 * handle, no allocation, safe from any thread.
 */
#ifndef PS_SERVING_REPLICA_TEXT_UNICODE_H
#define PS_SERVING_REPLICA_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define TEXT_UNICODE_MAX_CP 0x10FFFFu
#define TEXT_UNICODE_MAX_EXPANSION 4 /* code points one code point lower-cases+decomposes to */

/* Flags of a code point (text_unicode_flags), in the reference's terms. */
enum text_unicode_flag {
    TEXT_UNICODE_DROP = 1,   /* removed while cleaning: NUL, U+FFFD, Cc/Cf/Co/Cs but \t\n\r */
    TEXT_UNICODE_SPACE = 2,  /* cleaned to ' ': space, \t, \n, \r and category Zs */
    TEXT_UNICODE_CJK = 4,    /* a CJK ideograph: becomes a word of its own */
    TEXT_UNICODE_SPLIT = 8,  /* separates words (Python's str.isspace) */
    TEXT_UNICODE_PUNCT = 16, /* ASCII !-/ :-@ [-` {-~ or category P*: a word of its own */
    TEXT_UNICODE_MN = 32,    /* category Mn: dropped after decomposition (accents) */
};

/* Decodes the code point at s (len bytes left): strict UTF-8 (no overlong forms, no
 * surrogates, nothing over U+10FFFF). Returns the bytes it takes, 0 when s does not
 * start with a valid, complete sequence (or len is 0). */
size_t text_unicode_utf8_decode(const uint8_t *s, size_t len, uint32_t *ret_cp);

/* Writes cp (<= U+10FFFF, no surrogate) as UTF-8 into out; returns the bytes (1-4). */
size_t text_unicode_utf8_encode(uint32_t cp, uint8_t out[4]);

/* The text_unicode_flag bits of cp (0 for anything over U+10FFFF). */
unsigned text_unicode_flags(uint32_t cp);

/* The canonical combining class of cp (0 for starters). */
unsigned text_unicode_ccc(uint32_t cp);

/* NFD(lower(cp)), the way the reference lower-cases character by character (no final
 * sigma rule) then decomposes: writes 1..TEXT_UNICODE_MAX_EXPANSION code points into
 * out and returns how many. */
size_t text_unicode_lower_nfd(uint32_t cp, uint32_t out[TEXT_UNICODE_MAX_EXPANSION]);

/* Canonical ordering (the last step of NFD): every run of code points whose combining
 * class is not 0 is sorted stably by class, in place. scratch holds n code points. */
void text_unicode_reorder(uint32_t *cps, size_t n, uint32_t *scratch);

/* The Unicode version of the tables, e.g. "14.0.0". */
const char *text_unicode_version(void);

#endif
