/* wordpiece.h: BERT's WordPiece tokenizer (uncased), the replica's preprocessing of raw
 * text for text encoders such as all-MiniLM-L6-v2: UTF-8 text in, the model's INT64
 * input_ids and attention_mask out.
 *
 * It computes exactly what the Python reference scripts/models/wordpiece.py computes
 * (which matches the Rust tokenizer sentence-transformers runs; that file documents
 * the rules and where they differ from BERT's original Python tokenizer):
 *   clean:  drop NUL, U+FFFD and controls (Cc, Cf, Co, Cs but \t \n \r; unassigned code
 *           points stay), whitespace (\t \n \r, Zs) becomes ' ', CJK ideographs get
 *           spaces around them;
 *   words:  split on whitespace (str.isspace), lower-case character by character,
 *           decompose (NFD), drop the marks (Mn), cut every punctuation character
 *           into a word of its own;
 *   pieces: a word of more than WORDPIECE_MAX_WORD_CHARS code points is [UNK];
 *           otherwise greedy longest-match-first ("##" for continuations), [UNK] as a
 *           whole when some part is not in the vocabulary;
 *   encode: [CLS] pieces [SEP] truncated to max_len (keeping [SEP]), [PAD] after,
 *           mask 1 for each real token, 0 for padding.
 * The Unicode data comes from text_unicode.h (generated tables, no ICU).
 *
 * Why this way: the vocabulary travels with the model as vocab.txt bytes (one token a
 * line, id = line number), so the tokenizer is built from bytes; it is immutable once
 * built, so any number of request threads may encode with one handle. Every text is
 * client input: invalid UTF-8 and texts over WORDPIECE_MAX_TEXT_BYTES are refused with
 * INVALID_ARGUMENT and a message naming the byte offset or the limit; embedded NUL
 * bytes are dropped like the reference drops "\0" (the length, not a terminator,
 * delimits the text); work stops once max_len is filled.
 */
#ifndef PS_SERVING_REPLICA_WORDPIECE_H
#define PS_SERVING_REPLICA_WORDPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define WORDPIECE_MAX_WORD_CHARS 100          /* longer words are [UNK] (BERT's rule) */
#define WORDPIECE_MAX_TEXT_BYTES (1u << 20)   /* a longer text is refused */
#define WORDPIECE_MAX_SEQ_LEN 8192            /* max_len of one encoding */
#define WORDPIECE_MAX_VOCAB_BYTES (64u << 20) /* a vocab.txt */
#define WORDPIECE_MAX_VOCAB_TOKENS (1u << 20) /* lines of a vocab.txt */

typedef struct wordpiece_opts {
    const char *unk; /* the unknown token; NULL: "[UNK]" */
    const char *cls; /* first token; NULL: "[CLS]" */
    const char *sep; /* last token; NULL: "[SEP]" */
    const char *pad; /* padding; NULL: "[PAD]" */
} wordpiece_opts;

typedef struct wordpiece wordpiece;

/* Builds a tokenizer from the bytes of a vocab.txt (copied): one token a line ("\n" or
 * "\r\n"), id = line number from 0, the first of duplicate tokens wins. The vocabulary
 * must be UTF-8 and hold the four special tokens. opts may be NULL. */
ps_status wordpiece_create(const wordpiece_opts *opts, const char *vocab, size_t vocab_len,
                           wordpiece **ret_wp, char *err, size_t err_len);
/* The same from a file. */
ps_status wordpiece_create_from_file(const wordpiece_opts *opts, const char *path,
                                     wordpiece **ret_wp, char *err, size_t err_len);
void wordpiece_destroy(wordpiece *wp); /* accepts NULL */

/* Tokens in the vocabulary (lines of vocab.txt). */
size_t wordpiece_vocab_size(const wordpiece *wp);
/* The id of the token token[0..len), false when it is not in the vocabulary. */
bool wordpiece_vocab_find(const wordpiece *wp, const char *token, size_t len, int64_t *ret_id);

/* Encodes text[0..len) (UTF-8; NULL when len is 0) into ids_out[max_len] and
 * mask_out[max_len] (either may be NULL), 2 <= max_len <= WORDPIECE_MAX_SEQ_LEN.
 * ret_truncated (may be NULL): whether pieces were cut to fit max_len. Outputs are
 * untouched on failure. Thread-safe: wp is only read. */
ps_status wordpiece_encode(const wordpiece *wp, const char *text, size_t len, size_t max_len,
                           int64_t *ids_out, int64_t *mask_out, bool *ret_truncated, char *err,
                           size_t err_len);

#endif
