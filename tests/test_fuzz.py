"""Property tests over what users type: arbitrary Unicode, control characters, very long
lines and the special-token strings themselves. Nothing crashes, the fast and the plain
encoders agree, round trips hold, and every score is a finite log-probability."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmcli.model import RNNLM, ModelConfig
from lmcli.scoring import score_sentences
from lmcli.tokenizers import (EOS, EOS_ID, UNK, UNK_ID, UNICODE_ONLY_SPACES, WHITESPACE, normalize_line,
                              tokenizer_from_state)
from lmcli.vocabulary import build_tokenizer, count_words

CORPUS = ["the moon rises over the sea", "a bird sings in the tree <unk>", "床前明月光 疑是地上霜",
          "naïve café — “quotes” and tabs\there", "emoji 🙂 and combining e\u0301"] * 4
SPECIAL_TEXTS = [EOS, UNK, "<unk>", "<s>", "</s>", f"a {EOS} b", f"{UNK}{EOS}", "\x00", "\u2028", "\ufeff"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode text (lone surrogates included, as a mis-decoded file can hold), control
# characters and the special strings mixed in.
texts = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=80),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=40),
    st.lists(st.sampled_from(SPECIAL_TEXTS + ["the", "moon", "床", " ", "\t"]), max_size=20).map("".join),
)

TOKENIZERS = {level: build_tokenizer(level, ["\n".join(CORPUS) + "\n"],
                                     vocab_size=60 if level in ("bpe", "unigram") else None)
              for level in ("char", "word", "bpe", "unigram")}


def single_line(text: str) -> str:
    return text.replace("\n", " ")


@pytest.mark.parametrize("level", list(TOKENIZERS))
@FUZZ
@given(text=texts)
def test_any_text_encodes_to_valid_ids_and_both_encoders_agree(level: str, text: str) -> None:
    tokenizer = TOKENIZERS[level]
    line = single_line(text)
    normal = tokenizer.normalize(line)
    ids = tokenizer.encode(normal) if normal else []
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert EOS_ID not in ids  # no text, special strings included, ends a sentence early
    fast = tokenizer.encode_lines([line]).tolist()
    assert fast == (ids + [EOS_ID] if normal else [])
    # The tokenizer survives its own serialisation with the same behaviour.
    again = tokenizer_from_state(tokenizer.to_state())
    assert (again.encode(normal) if normal else []) == ids


@pytest.mark.parametrize("level", list(TOKENIZERS))
def test_a_lone_surrogate_is_unknown_text_not_a_crash(level: str) -> None:
    """What Python makes of an undecodable byte in a command-line argument ('\\xff' becomes
    '\\udcff'); sentencepiece takes UTF-8, which has no form for it (hypothesis found it)."""
    tokenizer = TOKENIZERS[level]
    for text in ["\ud800", "the moon \udcff rises"]:
        ids = tokenizer.encode(text)
        assert ids and all(0 <= i < tokenizer.vocab_size for i in ids)
        assert tokenizer.encode_lines([text]).tolist() == ids + [EOS_ID]
    if level in ("bpe", "unigram"):
        assert tokenizer.encode("the moon \udcff rises") == tokenizer.encode("the moon \ufffd rises")


@FUZZ
@given(words=st.lists(st.sampled_from(TOKENIZERS["word"].tokens[2:]), min_size=1, max_size=30))
def test_word_round_trip(words: list[str]) -> None:
    tokenizer = TOKENIZERS["word"]
    text = " ".join(words)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@FUZZ
@given(chars=st.lists(st.sampled_from(TOKENIZERS["char"].tokens[2:]), min_size=1, max_size=60))
def test_char_round_trip(chars: list[str]) -> None:
    tokenizer = TOKENIZERS["char"]
    text = tokenizer.normalize("".join(chars))
    if text:
        assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("level", ["char", "word", "bpe"])
@FUZZ
@given(batch=st.lists(texts, min_size=1, max_size=6))
def test_any_text_scores_to_a_finite_log_probability(level: str, batch: list[str]) -> None:
    tokenizer = TOKENIZERS[level]
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, embed_dim=8, hidden_dim=8,
                              dropout=0.0)).eval()
    lines = [single_line(t) for t in batch]
    scores = list(score_sentences(model, tokenizer, lines, batch_size=4))
    assert len(scores) == len(lines)
    for line, score in zip(lines, scores):
        normal = tokenizer.normalize(line)
        assert score.num_tokens == (len(tokenizer.encode(normal)) if normal else 0) + 1
        assert math.isfinite(score.logprob) and score.logprob < 0
        assert score.oov == sum(1 for i in score.token_ids[:-1] if i == UNK_ID)


def test_a_very_long_line_scores_in_one_piece() -> None:
    """One 200,000-character line: encoded and scored without trouble, as one sentence: a
    token a character and <EOS>, and a perplexity that is its log-probability's."""
    tokenizer = TOKENIZERS["char"]
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=1, embed_dim=8, hidden_dim=8,
                              dropout=0.0)).eval()
    line = ("the moon rises 床前明月光 " * 10_000)[:200_000]
    (score,) = score_sentences(model, tokenizer, [line])
    assert score.num_tokens == len(tokenizer.normalize(line)) + 1
    assert math.isfinite(score.logprob) and score.logprob < 0
    assert score.perplexity == pytest.approx(math.exp(-score.logprob / score.num_tokens), rel=1e-12)


SPACES = [" ", "\t", "\r", "\v", "\f", "\xa0", "\u2028", "\u3000", "\x1c", "\x85", "\x00"]
lines_of_words = st.lists(st.lists(st.sampled_from(["the", "moon", "THE", "Σ", "ΟΔΟΣ", "<unk>", EOS,
                                                    "床", "\x00", *SPACES]), max_size=12).map("".join),
                          max_size=12)


@FUZZ
@given(lines=lines_of_words, lowercase=st.booleans())
def test_word_blocks_encode_and_count_as_line_by_line(lines: list[str], lowercase: bool) -> None:
    """The block encoder and counter (str.split where the text allows it, a regex pass
    otherwise) against the plainest reading: each line normalised, then split on KenLM's
    spaces. Blank lines, Unicode-only spaces, NUL words and final sigmas are in the mix."""
    tokenizer = build_tokenizer("word", ["\n".join(CORPUS) + "\n"], lowercase=lowercase)
    expected: list[int] = []
    words: list[str] = []
    for line in lines:
        text = normalize_line(line, lowercase)
        if text:
            expected += tokenizer.encode(text) + [EOS_ID]
            words += re.findall(r"[^ \t\n\r\v\f]+", text)
    assert tokenizer.encode_lines(lines).tolist() == expected
    counted = count_words(["\n".join(lines) + "\n"], lowercase)
    assert counted == Counter(w for w in words if w not in ("<unk>", "<UNK>", EOS))


def test_the_spaces_split_takes_beyond_kenlms_are_all_listed() -> None:
    """The fast word path is exact only if it knows every space str.split() cuts at."""
    extra = {chr(c) for c in range(0x110000) if chr(c).isspace()} - set(WHITESPACE)
    assert extra == set(UNICODE_ONLY_SPACES)
