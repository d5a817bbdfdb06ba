"""Tokenizers: round trips, special tokens, KenLM splitting, states that travel in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmcli.errors import LmcliError
from lmcli.tokenizers import (EOS, EOS_ID, UNK, UNK_ID, CharTokenizer, WordTokenizer, normalize_line,
                              tokenizer_from_state)
from lmcli.vocabulary import build_tokenizer

CHINESE = "床前明月光，疑是地上霜。"
EMOJI = "I 💜 🐍 and 👩‍👩‍👧 families"
COMBINING = "cafe\u0301 nai\u0308ve Zoe\u0308"  # e + combining acute, i + diaeresis


def build(level: str, lines: list[str], **kwargs) -> object:
    return build_tokenizer(level, ["\n".join(lines) + "\n"], **kwargs)


@pytest.mark.parametrize("text", [CHINESE, EMOJI, COMBINING, "plain ascii, with punctuation!"])
def test_char_round_trip_keeps_every_code_point(text: str) -> None:
    tokenizer = build("char", [text])
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)  # one token per code point, combining marks included
    assert UNK_ID not in ids
    assert tokenizer.decode(ids) == text


def test_char_unknown_and_special_ids() -> None:
    tokenizer = build("char", ["abc"])
    assert tokenizer.tokens[:2] == [EOS, UNK]
    ids = tokenizer.encode("abz")
    assert UNK_ID not in ids[:2] and ids[2] == UNK_ID
    assert tokenizer.decode([*ids, EOS_ID]) == "ab<UNK>\n"


def test_char_encode_lines_matches_encode_and_skips_blank_lines() -> None:
    lines = [CHINESE, "", "   ", EMOJI, "\t" + COMBINING + "  \r"]
    tokenizer = build("char", lines)
    expected = []
    for line in lines:
        text = normalize_line(line, False)
        if text:
            expected += tokenizer.encode(text) + [EOS_ID]
    got = tokenizer.encode_lines(lines)
    assert got.dtype == np.uint16
    assert got.tolist() == expected


@pytest.mark.parametrize("text", [CHINESE, EMOJI, COMBINING])
def test_word_round_trip(text: str) -> None:
    tokenizer = build("word", [text])
    ids = tokenizer.encode(text)
    assert UNK_ID not in ids
    assert tokenizer.decode(ids) == text


def test_word_literal_unk_is_the_unknown_token() -> None:
    tokenizer = build("word", ["the <unk> sat on the <UNK> mat"])
    assert "<unk>" not in tokenizer.tokens and tokenizer.tokens.count(UNK) == 1
    ids = tokenizer.encode("the <unk> sat <UNK>")
    assert ids[1] == UNK_ID and ids[3] == UNK_ID
    assert tokenizer.encode_lines(["<unk> the"]).tolist() == [UNK_ID, tokenizer.encode("the")[0], EOS_ID]


def test_word_splits_like_kenlm_on_ascii_whitespace_only() -> None:
    nbsp, ideographic = "\u00a0", "\u3000"
    line = f"a\tb\x0bc\x0cd  e{nbsp}f g{ideographic}h"
    tokenizer = build("word", [line])
    pieces = tokenizer.pieces(line)
    assert pieces == ["a", "b", "c", "d", f"e{nbsp}f", f"g{ideographic}h"]


def test_lowercase() -> None:
    tokenizer = build("word", ["The Cat"], lowercase=True)
    assert tokenizer.tokens[2:] == ["cat", "the"]
    assert UNK_ID not in tokenizer.encode(tokenizer.normalize("THE cAt"))


@pytest.mark.parametrize("level", ["bpe", "unigram"])
def test_sentencepiece_round_trip_and_ids(level: str) -> None:
    lines = [f"{w} and {v} sing {i} songs" for i, (w, v) in
             enumerate(zip(["birds", "rivers", "children", "kings"] * 30, ["trees", "moons"] * 60))]
    lines += [CHINESE, EMOJI, COMBINING]
    tokenizer = build(level, lines, vocab_size=120)
    assert tokenizer.tokens[:2] == [EOS, UNK]
    assert tokenizer.vocab_size <= 120
    for text in ["birds and moons sing 3 songs", COMBINING, "kings  sing"]:
        ids = tokenizer.encode(text)
        assert EOS_ID not in ids
        assert tokenizer.decode(ids) == text
    ids = tokenizer.encode("birds ⛵")  # a character never seen: <UNK>
    assert UNK_ID in ids
    assert tokenizer.decode(ids).startswith("birds")
    array = tokenizer.encode_lines(["birds sing", "", "kings"])
    assert array.tolist() == tokenizer.encode("birds sing") + [EOS_ID] + tokenizer.encode("kings") + [EOS_ID]


@pytest.mark.parametrize("level", ["char", "word", "bpe", "unigram"])
def test_state_round_trip_through_weights_only_load(level: str, tmp_path) -> None:
    lines = ["the moon is bright", "the sea is wide", "a bird sings"] * 20
    tokenizer = build(level, lines, vocab_size=40 if level in ("bpe", "unigram") else None)
    path = tmp_path / "tok.pt"
    torch.save(tokenizer.to_state(), path)
    restored = tokenizer_from_state(torch.load(path, weights_only=True))
    assert restored.tokens == tokenizer.tokens
    assert restored.level == level
    text = "the bird is wide"
    assert restored.encode(text) == tokenizer.encode(text)


def test_continuation_spacing() -> None:
    word = build("word", ["a b c"])
    assert word.continuation("a", word.encode("b c")) == " b c"
    assert word.continuation("", word.encode("b c")) == "b c"
    char = build("char", ["abc"])
    assert char.continuation("a", char.encode("bc")) == "bc"


def test_damaged_state_is_a_clear_error() -> None:
    with pytest.raises(LmcliError):
        tokenizer_from_state({"level": "word"})
    with pytest.raises(LmcliError):
        tokenizer_from_state({"level": "klingon", "tokens": [], "lowercase": False})
    with pytest.raises(LmcliError):
        CharTokenizer(["a", "b"], False)
    with pytest.raises(LmcliError):
        WordTokenizer([EOS, UNK, "ok"], False).__class__([UNK, EOS], False)


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
def test_surface_pieces_line_up_with_tokens(level: str) -> None:
    tokenizer = build(level, ["birds sing in the trees", "the moon is bright"] * 40,
                      vocab_size=40 if level == "bpe" else None)
    text = "  birds ☃☃ sing "
    ids = tokenizer.encode(tokenizer.normalize(text))
    surface = tokenizer.surface(text)
    assert len(surface) == len(ids)
    unknown = [s for s, i in zip(surface, ids) if i == UNK_ID]
    assert "".join(unknown).strip() in ("☃☃", "☃")
    assert "".join(surface).replace(" ", "") == "birds☃☃sing"
