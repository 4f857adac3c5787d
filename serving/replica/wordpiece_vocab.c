/* wordpiece_vocab.c: a WordPiece tokenizer's vocabulary: vocab.txt bytes parsed into
 * tokens (id = line number) and an open-addressing hash table from token to id;
 * wordpiece_create and friends (wordpiece.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_unicode.h"
#include "wordpiece_internal.h"

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

bool wordpiece_vocab_find(const wordpiece *wp, const char *token, size_t len, int64_t *ret_id) {
    for (size_t i = hash_bytes(token, len) & wp->slot_mask;; i = (i + 1) & wp->slot_mask) {
        uint32_t s = wp->slots[i];
        if (s == 0)
            return false;
        uint32_t id = s - 1;
        if (wp->tok_len[id] == len && memcmp(wp->blob + wp->tok_off[id], token, len) == 0) {
            *ret_id = id;
            return true;
        }
    }
}

size_t wordpiece_vocab_size(const wordpiece *wp) {
    return wp->n_tokens;
}

void wordpiece_destroy(wordpiece *wp) {
    if (wp == NULL)
        return;
    free(wp->slots);
    free(wp->tok_len);
    free(wp->tok_off);
    free(wp->blob);
    free(wp);
}

/* Checks the vocabulary is UTF-8 and counts its lines. */
static ps_status vocab_scan(const char *v, size_t len, size_t *ret_lines, char *err,
                            size_t err_len) {
    size_t lines = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = text_unicode_utf8_decode((const uint8_t *)v + i, len - i, &cp);
        if (n == 0) {
            snprintf(err, err_len, "the vocabulary is not valid UTF-8 at byte %zu", i);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        if (cp == '\n' || i + n == len)
            lines++;
        i += n;
    }
    if (lines > WORDPIECE_MAX_VOCAB_TOKENS) {
        snprintf(err, err_len, "the vocabulary has %zu tokens, more than the limit %u", lines,
                 WORDPIECE_MAX_VOCAB_TOKENS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    *ret_lines = lines;
    return PS_STATUS_OK;
}

static ps_status special_id(wordpiece *wp, const char *name, const char *dflt, int64_t *ret_id,
                            char *err, size_t err_len) {
    const char *t = name != NULL ? name : dflt;
    if (!wordpiece_vocab_find(wp, t, strlen(t), ret_id)) {
        snprintf(err, err_len, "the vocabulary has no %.64s token", t);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    return PS_STATUS_OK;
}

ps_status wordpiece_create(const wordpiece_opts *opts, const char *vocab, size_t vocab_len,
                           wordpiece **ret_wp, char *err, size_t err_len) {
    static const wordpiece_opts defaults = {0};
    if (opts == NULL)
        opts = &defaults;
    if (vocab == NULL && vocab_len > 0) {
        snprintf(err, err_len, "wordpiece_create: no vocabulary bytes");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (vocab_len > WORDPIECE_MAX_VOCAB_BYTES) {
        snprintf(err, err_len, "the vocabulary is %zu bytes, more than the limit %u", vocab_len,
                 WORDPIECE_MAX_VOCAB_BYTES);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    size_t lines = 0;
    ps_status st = vocab_scan(vocab, vocab_len, &lines, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    size_t n_slots = 16;
    while (n_slots < 2 * lines)
        n_slots *= 2;
    st = PS_STATUS_NO_MEMORY;
    wordpiece *wp = calloc(1, sizeof(*wp));
    if (wp == NULL)
        return st;
    wp->blob = malloc(vocab_len + 1);
    wp->tok_off = calloc(lines + 1, sizeof(uint32_t));
    wp->tok_len = calloc(lines + 1, sizeof(uint32_t));
    wp->slots = calloc(n_slots, sizeof(uint32_t));
    if (wp->blob == NULL || wp->tok_off == NULL || wp->tok_len == NULL || wp->slots == NULL)
        goto fail_wp;
    if (vocab_len > 0)
        memcpy(wp->blob, vocab, vocab_len);
    wp->slot_mask = n_slots - 1;
    size_t start = 0;
    for (size_t i = 0; i <= vocab_len && wp->n_tokens < lines; i++) {
        if (i < vocab_len && wp->blob[i] != '\n')
            continue;
        size_t end = i > start && wp->blob[i - 1] == '\r' ? i - 1 : i;
        uint32_t id = (uint32_t)wp->n_tokens++;
        wp->tok_off[id] = (uint32_t)start;
        wp->tok_len[id] = (uint32_t)(end - start);
        int64_t existing;
        if (!wordpiece_vocab_find(wp, wp->blob + start, end - start, &existing)) {
            size_t s = hash_bytes(wp->blob + start, end - start) & wp->slot_mask;
            while (wp->slots[s] != 0)
                s = (s + 1) & wp->slot_mask;
            wp->slots[s] = id + 1;
        }
        start = i + 1;
    }
    if ((st = special_id(wp, opts->unk, "[UNK]", &wp->unk, err, err_len)) != PS_STATUS_OK ||
        (st = special_id(wp, opts->cls, "[CLS]", &wp->cls, err, err_len)) != PS_STATUS_OK ||
        (st = special_id(wp, opts->sep, "[SEP]", &wp->sep, err, err_len)) != PS_STATUS_OK ||
        (st = special_id(wp, opts->pad, "[PAD]", &wp->pad, err, err_len)) != PS_STATUS_OK)
        goto fail_wp;
    *ret_wp = wp;
    return PS_STATUS_OK;

fail_wp:
    wordpiece_destroy(wp);
    return st;
}

ps_status wordpiece_create_from_file(const wordpiece_opts *opts, const char *path,
                                     wordpiece **ret_wp, char *err, size_t err_len) {
    ps_status st = PS_STATUS_IO;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, err_len, "cannot open %.200s: %s", path, strerror(errno));
        return st;
    }
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        snprintf(err, err_len, "cannot read %.200s: not a regular file", path);
        goto close_file;
    }
    if ((unsigned long)size > WORDPIECE_MAX_VOCAB_BYTES) {
        snprintf(err, err_len, "%.200s is %ld bytes, more than the vocabulary limit %u", path, size,
                 WORDPIECE_MAX_VOCAB_BYTES);
        st = PS_STATUS_INVALID_ARGUMENT;
        goto close_file;
    }
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        st = PS_STATUS_NO_MEMORY;
        goto close_file;
    }
    size_t n = fread(buf, 1, (size_t)size, f);
    if (ferror(f) || n != (size_t)size) {
        snprintf(err, err_len, "cannot read %.200s", path);
        goto free_buf;
    }
    st = wordpiece_create(opts, buf, n, ret_wp, err, err_len);
free_buf:
    free(buf);
close_file:
    fclose(f);
    return st;
}
