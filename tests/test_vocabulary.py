"""Learning vocabularies: which tokens are kept and in what order, the settings' checks,
and word vocabularies learned in the pass that encodes."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from lmcli.errors import InputError, LmcliError, SettingError, UsageError
from lmcli.tokenizers import EOS, EOS_ID, UNK, UNK_ID
from lmcli.vocabulary import _select_vocabulary, build_tokenizer, learn_words, survey_words

from conftest import english_lines


def build(level: str, lines: list[str], **kwargs) -> object:
    return build_tokenizer(level, ["\n".join(lines) + "\n"], **kwargs)


def test_min_freq_and_vocab_size() -> None:
    lines = ["a a a a b b b c c d"]
    assert build("word", lines, min_freq=2).tokens == [EOS, UNK, "a", "b", "c"]
    assert build("word", lines, vocab_size=4).tokens == [EOS, UNK, "a", "b"]
    with pytest.raises(UsageError):
        build("word", lines, vocab_size=2)
    with pytest.raises(UsageError):
        build("word", lines, min_freq=0)
    with pytest.raises(LmcliError):
        build("word", lines, min_freq=100)


def test_vocabulary_ties_break_by_text_so_ids_are_stable() -> None:
    first = build("char", ["zyx", "xyz"]).tokens
    second = build("char", ["xyz", "zyx"]).tokens
    assert first == second == [EOS, UNK, "x", "y", "z"]


def test_vocabulary_is_most_frequent_first_then_by_text() -> None:
    """The selection (a text sort, then a stable sort by count) against the plain key sort,
    over many ties, non-ASCII text and the specials themselves among the counts."""
    rng = random.Random(0)
    counts = Counter({"".join(rng.choices("abZé🙂", k=rng.randint(1, 4))): rng.randint(1, 5)
                      for _ in range(300)})
    counts.update({EOS: 9, UNK: 2})
    for vocab_size, min_freq in ((None, 1), (50, 1), (None, 3), (7, 2), (3, 1)):
        expected = sorted((t for t in counts if counts[t] >= min_freq and t not in (EOS, UNK)),
                          key=lambda t: (-counts[t], t))
        if vocab_size is not None:
            expected = expected[:vocab_size - 2]
        assert _select_vocabulary(counts, vocab_size, min_freq) == [EOS, UNK, *expected]


def test_settings_are_checked_before_any_text_is_read_and_named_as_settings() -> None:
    never = iter(())  # no text: the checks come first
    for kwargs, template in (({"vocab_size": 2}, "{vocab_size} must be at least 3, got 2"),
                             ({"min_freq": 0}, "{min_freq} must be at least 1, got 0")):
        with pytest.raises(SettingError) as info:
            build_tokenizer("word", never, **kwargs)
        assert info.value.template == template
    with pytest.raises(UsageError, match="unknown level 'phoneme'"):
        build_tokenizer("phoneme", never)


def test_a_min_freq_nothing_reaches_says_to_lower_it() -> None:
    with pytest.raises(InputError) as info:
        build("word", ["a a b"], min_freq=3)
    assert info.value.render(lambda name: f"--{name.replace('_', '-')}") == (
        "the corpus has no tokens to learn a vocabulary from (none is seen 3 times); lower --min-freq")
    with pytest.raises(LmcliError) as info:
        build("word", ["   ", ""])
    assert not isinstance(info.value, InputError)  # no setting would help an empty text


@pytest.mark.parametrize("vocab_size,min_freq,lowercase", [(None, 1, False), (30, 2, True), (5, 1, False)])
def test_learning_words_in_the_encoding_pass_gives_the_two_pass_vocabulary_and_ids(
        vocab_size: int | None, min_freq: int, lowercase: bool) -> None:
    """Blocks numbered as first seen and renumbered at the end: the tokenizer of counting
    first, and the ids of encoding with it after; markers, blank lines, odd spaces in it."""
    lines = english_lines(120)
    lines[3], lines[40], lines[77] = "The <unk> AND <EOS> the  ", "   ", "a\u00a0b The\u3000end"
    blocks = [lines[i:i + 25] for i in range(0, len(lines), 25)]
    kept: list[np.ndarray] = []
    tokenizer, table = learn_words(blocks, kept.append, vocab_size=vocab_size, min_freq=min_freq,
                                   lowercase=lowercase)
    reference = build("word", lines, vocab_size=vocab_size, min_freq=min_freq, lowercase=lowercase)
    assert tokenizer.tokens == reference.tokens
    assert table.dtype == np.uint16 and table[0] == EOS_ID
    ids = np.concatenate([table[block] for block in kept])
    assert ids.tolist() == reference.encode_lines(lines).tolist()
    assert UNK_ID in ids and len(set(ids.tolist())) > 3  # markers read as <UNK>, and more


def test_a_survey_numbers_words_as_first_seen_and_counts_them() -> None:
    block = survey_words(False, ["b a b", "", "c a"])
    assert block.words == ["b", "a", "c"]
    assert block.counts.tolist() == [2, 2, 1]
    assert block.ids.tolist() == [1, 2, 1, 0, 3, 2, 0]  # 0 ends a line; blank lines end none
