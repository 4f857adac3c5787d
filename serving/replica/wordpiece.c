/* wordpiece.c: WordPiece encoding of one text (wordpiece_encode, wordpiece.h): a strict
 * UTF-8 decode that cleans as it goes, then word by word lower-case + NFD, mark
 * removal, punctuation splitting and greedy longest-match-first pieces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_unicode.h"
#include "wordpiece_internal.h"

#define CONT_PREFIX "##"
#define CONT_PREFIX_LEN 2
#define PIECE_MAX_BYTES (CONT_PREFIX_LEN + 4 * WORDPIECE_MAX_WORD_CHARS)

/* The pieces of one encoding so far: at most cap of them are kept. */
typedef struct encoder {
    const wordpiece *wp;
    int64_t *body;  /* the pieces' ids (cap entries) */
    size_t n;       /* pieces kept */
    size_t cap;     /* max_len - 2: room between [CLS] and [SEP] */
    bool truncated; /* a piece did not fit: stop */
} encoder;

static void encoder_push(encoder *e, int64_t id) {
    if (e->n == e->cap)
        e->truncated = true;
    else
        e->body[e->n++] = id;
}

/* Greedy longest-match-first pieces of one word (no whitespace, no punctuation but a
 * single punctuation character, marks removed). */
static void encoder_word(encoder *e, const uint32_t *cps, size_t n) {
    if (n > WORDPIECE_MAX_WORD_CHARS) {
        encoder_push(e, e->wp->unk);
        return;
    }
    char piece[PIECE_MAX_BYTES];
    size_t off[WORDPIECE_MAX_WORD_CHARS + 1];
    int64_t ids[WORDPIECE_MAX_WORD_CHARS];
    memcpy(piece, CONT_PREFIX, CONT_PREFIX_LEN);
    char *bytes = piece + CONT_PREFIX_LEN; /* the word's UTF-8 */
    off[0] = 0;
    for (size_t i = 0; i < n; i++)
        off[i + 1] = off[i] + text_unicode_utf8_encode(cps[i], (uint8_t *)bytes + off[i]);
    size_t n_ids = 0;
    for (size_t start = 0; start < n;) {
        /* A continuation is looked up as "##" + its bytes: the prefix is written over
         * the bytes just before it, which belong to pieces already found (the buffer
         * has room for it before the word's first byte). */
        const char *p = bytes + off[start];
        size_t extra = 0;
        if (start > 0) {
            p -= CONT_PREFIX_LEN;
            extra = CONT_PREFIX_LEN;
            memcpy(bytes + off[start] - CONT_PREFIX_LEN, CONT_PREFIX, CONT_PREFIX_LEN);
        }
        size_t end = n;
        while (end > start &&
               !wordpiece_vocab_find(e->wp, p, off[end] - off[start] + extra, &ids[n_ids]))
            end--;
        if (end == start) {
            encoder_push(e, e->wp->unk);
            return;
        }
        n_ids++;
        start = end;
    }
    for (size_t i = 0; i < n_ids; i++)
        encoder_push(e, ids[i]);
}

/* Lower-cases, decomposes and strips the marks of one whitespace-delimited word,
 * then cuts it at punctuation into the words encoder_word takes. exp and scratch hold
 * n * TEXT_UNICODE_MAX_EXPANSION code points. */
static void encoder_span(encoder *e, const uint32_t *cps, size_t n, uint32_t *exp,
                         uint32_t *scratch) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += text_unicode_lower_nfd(cps[i], exp + m);
    text_unicode_reorder(exp, m, scratch);
    size_t w = 0, word = 0; /* kept code points are compacted in place */
    for (size_t r = 0; r < m && !e->truncated; r++) {
        uint32_t c = exp[r];
        unsigned f = text_unicode_flags(c);
        if (f & TEXT_UNICODE_MN)
            continue;
        if (f & TEXT_UNICODE_PUNCT) {
            if (w > word)
                encoder_word(e, exp + word, w - word);
            encoder_word(e, &c, 1);
            word = w;
        } else {
            exp[w++] = c;
        }
    }
    if (w > word && !e->truncated)
        encoder_word(e, exp + word, w - word);
}

/* Decodes text into cleaned code points (the reference's first pass): controls
 * dropped, whitespace to ' ', spaces around CJK ideographs. out holds len + 2. */
static ps_status clean_text(const char *text, size_t len, uint32_t *out, size_t *ret_n, char *err,
                            size_t err_len) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = text_unicode_utf8_decode((const uint8_t *)text + i, len - i, &cp);
        if (k == 0) {
            snprintf(err, err_len,
                     "the text is not valid UTF-8 at byte %zu (of %zu): send UTF-8 text", i, len);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        i += k;
        unsigned f = text_unicode_flags(cp);
        if (f & TEXT_UNICODE_DROP)
            continue;
        if (f & TEXT_UNICODE_SPACE) {
            out[n++] = ' ';
        } else if (f & TEXT_UNICODE_CJK) { /* 3 code points from at least 3 bytes */
            out[n++] = ' ';
            out[n++] = cp;
            out[n++] = ' ';
        } else {
            out[n++] = cp;
        }
    }
    *ret_n = n;
    return PS_STATUS_OK;
}

/* Runs the words of cleaned[0..n) through the encoder. */
static ps_status encode_words(encoder *e, const uint32_t *cleaned, size_t n) {
    ps_status st = PS_STATUS_OK;
    uint32_t *exp = NULL, *scratch = NULL;
    size_t room = 0; /* code points exp and scratch hold */
    for (size_t i = 0; i < n && !e->truncated;) {
        if (text_unicode_flags(cleaned[i]) & TEXT_UNICODE_SPLIT) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < n && !(text_unicode_flags(cleaned[i]) & TEXT_UNICODE_SPLIT))
            i++;
        size_t need = (i - start) * TEXT_UNICODE_MAX_EXPANSION;
        if (need > room) {
            free(exp);
            free(scratch);
            exp = malloc(need * sizeof(uint32_t));
            scratch = malloc(need * sizeof(uint32_t));
            room = need;
            if (exp == NULL || scratch == NULL) {
                st = PS_STATUS_NO_MEMORY;
                break;
            }
        }
        encoder_span(e, cleaned + start, i - start, exp, scratch);
    }
    free(scratch);
    free(exp);
    return st;
}

ps_status wordpiece_encode(const wordpiece *wp, const char *text, size_t len, size_t max_len,
                           int64_t *ids_out, int64_t *mask_out, bool *ret_truncated, char *err,
                           size_t err_len) {
    if (wp == NULL || (text == NULL && len > 0)) {
        snprintf(err, err_len, "wordpiece_encode: no tokenizer or no text");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (len > WORDPIECE_MAX_TEXT_BYTES) {
        snprintf(err, err_len,
                 "the text is %zu bytes, more than the tokenizer's limit of %u bytes "
                 "(WORDPIECE_MAX_TEXT_BYTES): send shorter texts",
                 len, WORDPIECE_MAX_TEXT_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (max_len < 2 || max_len > WORDPIECE_MAX_SEQ_LEN) {
        snprintf(err, err_len, "max_len %zu is outside [2, %d]", max_len, WORDPIECE_MAX_SEQ_LEN);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = PS_STATUS_NO_MEMORY;
    encoder e = {.wp = wp, .cap = max_len - 2};
    uint32_t *cleaned = malloc((len + 2) * sizeof(uint32_t));
    e.body = malloc(max_len * sizeof(int64_t));
    if (cleaned == NULL || e.body == NULL)
        goto free_buffers;
    size_t n = 0;
    st = clean_text(text, len, cleaned, &n, err, err_len);
    if (st == PS_STATUS_OK)
        st = encode_words(&e, cleaned, n);
    if (st != PS_STATUS_OK)
        goto free_buffers;
    for (size_t i = 0; i < max_len; i++) {
        int64_t id = i == 0 ? wp->cls : i <= e.n ? e.body[i - 1] : i == e.n + 1 ? wp->sep : wp->pad;
        if (ids_out != NULL)
            ids_out[i] = id;
        if (mask_out != NULL)
            mask_out[i] = i <= e.n + 1 ? 1 : 0;
    }
    if (ret_truncated != NULL)
        *ret_truncated = e.truncated;
free_buffers:
    free(e.body);
    free(cleaned);
    return st;
}
