/* text_unicode.c: UTF-8, code point flags, lower-case + NFD and canonical ordering for
 * the WordPiece tokenizer, over the generated tables of text_unicode_tables.c. */
#include "text_unicode.h"

#include <string.h>

#include "text_unicode_internal.h"

/* Hangul syllables decompose by the algorithm of the Unicode standard (section 3.12),
 * so the generated tables leave their 11,172 code points out. */
#define HANGUL_S_BASE 0xAC00u
#define HANGUL_L_BASE 0x1100u
#define HANGUL_V_BASE 0x1161u
#define HANGUL_T_BASE 0x11A7u
#define HANGUL_T_COUNT 28u
#define HANGUL_N_COUNT 588u /* V count 21 x T count 28 */
#define HANGUL_S_COUNT 11172u

size_t text_unicode_utf8_decode(const uint8_t *s, size_t len, uint32_t *ret_cp) {
    if (len == 0)
        return 0;
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *ret_cp = b0;
        return 1;
    }
    size_t n;
    uint32_t cp, min;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2, cp = b0 & 0x1Fu, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3, cp = b0 & 0x0Fu, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4, cp = b0 & 0x07u, min = 0x10000;
    } else {
        return 0; /* a continuation byte, an overlong lead (C0, C1) or F5..FF */
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if (cp < min || cp > TEXT_UNICODE_MAX_CP || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *ret_cp = cp;
    return n;
}

size_t text_unicode_utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

unsigned text_unicode_flags(uint32_t cp) {
    if (cp > TEXT_UNICODE_MAX_CP)
        return 0;
    size_t block = text_unicode_table_stage1[cp >> TEXT_UNICODE_BLOCK_SHIFT];
    return text_unicode_table_stage2[(block << TEXT_UNICODE_BLOCK_SHIFT) +
                                     (cp & ((1u << TEXT_UNICODE_BLOCK_SHIFT) - 1))];
}

/* Index of cp in the ascending keys[0..n), or n when absent. */
static size_t find_sorted(const uint32_t *keys, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && keys[lo] == cp ? lo : n;
}

unsigned text_unicode_ccc(uint32_t cp) {
    size_t i = find_sorted(text_unicode_table_ccc_cp, text_unicode_table_n_ccc, cp);
    return i < text_unicode_table_n_ccc ? text_unicode_table_ccc[i] : 0;
}

size_t text_unicode_lower_nfd(uint32_t cp, uint32_t out[TEXT_UNICODE_MAX_EXPANSION]) {
    if (cp >= HANGUL_S_BASE && cp < HANGUL_S_BASE + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S_BASE;
        out[0] = HANGUL_L_BASE + s / HANGUL_N_COUNT;
        out[1] = HANGUL_V_BASE + (s % HANGUL_N_COUNT) / HANGUL_T_COUNT;
        if (s % HANGUL_T_COUNT == 0)
            return 2;
        out[2] = HANGUL_T_BASE + s % HANGUL_T_COUNT;
        return 3;
    }
    size_t i = find_sorted(text_unicode_table_map_cp, text_unicode_table_n_maps, cp);
    if (i == text_unicode_table_n_maps) {
        out[0] = cp;
        return 1;
    }
    size_t n = text_unicode_table_map_len[i];
    memcpy(out, text_unicode_table_pool + text_unicode_table_map_off[i], n * sizeof(uint32_t));
    return n;
}

/* Stable bottom-up merge sort of a[0..n) by combining class, through tmp (n entries):
 * O(n log n) even for a hostile run of a million marks. */
static void sort_run(uint32_t *a, size_t n, uint32_t *tmp) {
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid || j < hi) {
                int take_left =
                    j >= hi || (i < mid && text_unicode_ccc(a[i]) <= text_unicode_ccc(a[j]));
                tmp[k++] = take_left ? a[i++] : a[j++];
            }
        }
        memcpy(a, tmp, n * sizeof(*a));
    }
}

void text_unicode_reorder(uint32_t *cps, size_t n, uint32_t *scratch) {
    size_t i = 0;
    while (i < n) {
        if (text_unicode_ccc(cps[i]) == 0) {
            i++;
            continue;
        }
        size_t start = i;
        int sorted = 1;
        unsigned prev = 0;
        for (; i < n; i++) {
            unsigned c = text_unicode_ccc(cps[i]);
            if (c == 0)
                break;
            sorted = sorted && c >= prev;
            prev = c;
        }
        if (!sorted)
            sort_run(cps + start, i - start, scratch);
    }
}

const char *text_unicode_version(void) {
    return text_unicode_table_version_str;
}
