/* model_config_text.c: config.json's text input (see model_config.h, "Text input"): an
 * input of datatype "BYTES" and the root's "tokenizer", which says how the replica turns
 * each string into the INT64 inputs the graph reads ("feeds").
 *
 * The text input is kept apart from the graph's inputs (cfg->text_in, not cfg->inputs):
 * the graph and its executor never see it, so every value index, every resolve and
 * every forward pass stays as it was; only the replica's request decoding reads it.
 * The vocabulary is stored as vocab.txt bytes (tokens joined with "\n"), the form the
 * tokenizer is built from, so a token may hold neither "\n" nor "\r".
 */
#include "model_config_internal.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tokens a WordPiece vocabulary must hold (the tokenizer's defaults). */
static const char *const special_tokens[] = {"[UNK]", "[CLS]", "[SEP]", "[PAD]"};

ps_status cfg_parse_text_input(model_config *cfg, json_t *obj, size_t json_index, char *err,
                               size_t err_len) {
    static const char *const keys[] = {"name", "datatype", "shape", NULL};
    char where[64];
    snprintf(where, sizeof(where), "inputs[%zu]", json_index);
    ps_status st = cfg_check_keys(obj, keys, where, err, err_len);
    const char *name = NULL;
    if (st == PS_STATUS_OK) {
        st = cfg_get_name(obj, "name", true, where, &name, err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (cfg->text_in.name != NULL) {
        ps_set_err(err, err_len, "%s (\"%s\"): a model takes at most one BYTES input (also %s)",
                   where, name, cfg->text_in.name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    json_t *shape = json_object_get(obj, "shape");
    if (cfg->max_batch == 0 || !json_is_array(shape) || json_array_size(shape) != 2 ||
        !json_is_integer(json_array_get(shape, 0)) ||
        json_integer_value(json_array_get(shape, 0)) != -1 ||
        !json_is_integer(json_array_get(shape, 1)) ||
        json_integer_value(json_array_get(shape, 1)) != 1) {
        ps_set_err(err, err_len,
                   "%s (\"%s\"): a BYTES (text) input must have shape [-1, 1] (one string per "
                   "sample) in a model with max_batch_size > 0",
                   where, name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    cfg->text_in.name = cfg_dup_str(name);
    cfg->text_in.json_index = json_index;
    return cfg->text_in.name != NULL ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

/* feeds[k] names an INT64 input [-1, max_len]; its index into *ret. */
static ps_status find_feed(const model_config *cfg, json_t *feeds, size_t k, size_t *ret, char *err,
                           size_t err_len) {
    const char *name = json_string_value(json_array_get(feeds, k));
    for (size_t i = 0; name != NULL && i < cfg->n_inputs; i++) {
        const cfg_io *in = &cfg->inputs[i];
        if (strcmp(in->name, name) != 0) {
            continue;
        }
        if (!in->ids || in->ndims != 2 || in->dims[1] != (int64_t)cfg->text_in.max_len) {
            ps_set_err(err, err_len,
                       "tokenizer: feeds[%zu] \"%s\" must be an INT64 input of shape [-1, %u] "
                       "(max_len)",
                       k, name, cfg->text_in.max_len);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        *ret = i;
        return PS_STATUS_OK;
    }
    ps_set_err(err, err_len, "tokenizer: feeds[%zu] must name an INT64 input of the model", k);
    return PS_STATUS_INVALID_ARGUMENT;
}

/* Joins the tokens of "vocab" with "\n" into cfg->text_in.vocab. */
static ps_status read_vocab(model_config *cfg, json_t *vocab, char *err, size_t err_len) {
    const size_t n = json_is_array(vocab) ? json_array_size(vocab) : 0;
    if (n == 0 || n > MODEL_CONFIG_MAX_VOCAB_TOKENS) {
        ps_set_err(err, err_len,
                   "tokenizer: \"vocab\" must be a list of 1 to %u strings (the tokens, id = "
                   "index)",
                   MODEL_CONFIG_MAX_VOCAB_TOKENS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    bool have[sizeof(special_tokens) / sizeof(special_tokens[0])] = {false};
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(vocab, i);
        const char *s = json_string_value(t);
        const size_t len = s != NULL ? json_string_length(t) : 0;
        if (s == NULL || len == 0 || len > MODEL_CONFIG_MAX_TOKEN_BYTES || strlen(s) != len ||
            strpbrk(s, "\n\r") != NULL) {
            ps_set_err(err, err_len,
                       "tokenizer: vocab[%zu] must be a string of 1 to %u bytes without NUL, "
                       "\\n or \\r",
                       i, MODEL_CONFIG_MAX_TOKEN_BYTES);
            return PS_STATUS_INVALID_ARGUMENT;
        }
        for (size_t k = 0; k < sizeof(have) / sizeof(have[0]); k++) {
            have[k] = have[k] || strcmp(s, special_tokens[k]) == 0;
        }
        total += len + 1;
    }
    for (size_t k = 0; k < sizeof(have) / sizeof(have[0]); k++) {
        if (!have[k]) {
            ps_set_err(err, err_len, "tokenizer: \"vocab\" lacks the special token %s",
                       special_tokens[k]);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    char *joined = malloc(total);
    if (joined == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(vocab, i);
        memcpy(joined + at, json_string_value(t), json_string_length(t));
        at += json_string_length(t);
        joined[at++] = i + 1 < n ? '\n' : '\0';
    }
    cfg->text_in.vocab = joined;
    cfg->text_in.vocab_len = total - 1;
    cfg->text_in.vocab_tokens = n;
    return PS_STATUS_OK;
}

ps_status cfg_parse_tokenizer(model_config *cfg, json_t *root, char *err, size_t err_len) {
    static const char *const keys[] = {"type", "vocab", "max_len", "feeds", NULL};
    json_t *tok = json_object_get(root, "tokenizer");
    cfg_text *t = &cfg->text_in;
    if (t->name == NULL) {
        if (tok == NULL) {
            return PS_STATUS_OK;
        }
        ps_set_err(err, err_len, "config: \"tokenizer\" is given but no input has datatype BYTES");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (!json_is_object(tok)) {
        ps_set_err(err, err_len,
                   "inputs[%zu] (\"%s\"): a BYTES input needs a \"tokenizer\" object (type, "
                   "vocab, max_len, feeds)",
                   t->json_index, t->name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    ps_status st = cfg_check_keys(tok, keys, "tokenizer", err, err_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const char *type = json_string_value(json_object_get(tok, "type"));
    if (type == NULL || strcmp(type, "wordpiece") != 0) {
        ps_set_err(err, err_len, "tokenizer: \"type\" must be \"wordpiece\"");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    json_t *ml = json_object_get(tok, "max_len");
    if (!json_is_integer(ml) || json_integer_value(ml) < 2 ||
        json_integer_value(ml) > MODEL_CONFIG_MAX_SEQ) {
        ps_set_err(err, err_len,
                   "tokenizer: \"max_len\" must be an integer from 2 to %d (tokens, [CLS] and "
                   "[SEP] included)",
                   MODEL_CONFIG_MAX_SEQ);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    t->max_len = (uint32_t)json_integer_value(ml);
    json_t *feeds = json_object_get(tok, "feeds");
    if (!json_is_array(feeds) || json_array_size(feeds) != 2) {
        ps_set_err(err, err_len,
                   "tokenizer: \"feeds\" must list two input names: the ids and the mask");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t k = 0; k < 2 && st == PS_STATUS_OK; k++) {
        st = find_feed(cfg, feeds, k, &t->feeds[k], err, err_len);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (t->feeds[0] == t->feeds[1]) {
        ps_set_err(err, err_len, "tokenizer: \"feeds\" names \"%s\" twice",
                   cfg->inputs[t->feeds[0]].name);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < cfg->n_inputs; i++) {
        if (strcmp(cfg->inputs[i].name, t->name) == 0) {
            ps_set_err(err, err_len, "inputs[%zu]: duplicate name \"%s\"", t->json_index, t->name);
            return PS_STATUS_INVALID_ARGUMENT;
        }
    }
    return read_vocab(cfg, json_object_get(tok, "vocab"), err, err_len);
}

bool model_config_text_input(const model_config *cfg, model_config_text_in *ret_text) {
    const cfg_text *t = &cfg->text_in;
    if (t->name == NULL || ret_text == NULL) {
        return false;
    }
    memset(ret_text, 0, sizeof(*ret_text));
    ret_text->name = t->name;
    ret_text->vocab = t->vocab;
    ret_text->vocab_len = t->vocab_len;
    ret_text->vocab_tokens = t->vocab_tokens;
    ret_text->max_len = t->max_len;
    ret_text->ids_input = t->feeds[0];
    ret_text->mask_input = t->feeds[1];
    return true;
}
