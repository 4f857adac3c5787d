/* wordpiece_internal.h: the vocabulary of a WordPiece tokenizer (wordpiece_vocab.c
 * builds it, wordpiece.c reads it). Private to the wordpiece module. */
#ifndef PS_SERVING_REPLICA_WORDPIECE_INTERNAL_H
#define PS_SERVING_REPLICA_WORDPIECE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "wordpiece.h"

struct wordpiece {
    char *blob;                 /* a copy of vocab.txt; tokens point into it */
    size_t n_tokens;            /* lines of vocab.txt */
    uint32_t *tok_off;          /* token i is blob[tok_off[i] .. + tok_len[i]) */
    uint32_t *tok_len;          /* in bytes */
    uint32_t *slots;            /* open-addressing hash table: id + 1, 0 for empty */
    size_t slot_mask;           /* slots - 1 (a power of two, at least twice n_tokens) */
    int64_t unk, cls, sep, pad; /* ids of the special tokens */
};

#endif
