"""Corpora made ready for training: the held-out split, the vocabulary learned from the
training lines only, the token streams, progress events and the token cache's keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmcli.corpus import DataConfig, HeldOut, load_corpus
from lmcli.errors import LmcliError, SettingError, UsageError
from lmcli.tokencache import TokenCache
from lmcli.tokenizers import EOS_ID, UNK_ID

from conftest import english_lines


@pytest.mark.parametrize("num_lines,fraction", [(1000, 0.05), (100, 0.1), (7, 0.3), (20, 0.01), (2, 0.5)])
def test_held_out_lines_are_contiguous_tails_spread_over_the_corpus(num_lines: int, fraction: float) -> None:
    held = HeldOut.fraction(num_lines, fraction)
    mask = held.mask(0, num_lines)
    assert 1 <= mask.sum() <= num_lines - 1
    assert mask.sum() == min(num_lines - 1, max(1, round(num_lines * fraction)))
    # The same lines, asked for in pieces.
    pieces = np.concatenate([held.mask(s, min(3, num_lines - s)) for s in range(0, num_lines, 3)])
    assert (pieces == mask).all()
    if mask.sum() >= 10:
        assert mask[: num_lines // 2].any() and mask[num_lines // 2:].any()


def test_held_out_lines_are_capped_for_huge_corpora() -> None:
    held = HeldOut.fraction(10_000_000, 0.05)  # 500,000 lines would make validation crawl
    assert held.mask(0, 10_000_000).sum() == 20_000 and len(held.ranges) == 10
    assert HeldOut.fraction(1000, 0.5, cap=7).mask(0, 1000).sum() == 7


def test_held_out_edge_cases() -> None:
    assert not HeldOut.fraction(100, 0.0)
    assert not HeldOut.fraction(1, 0.5)
    with pytest.raises(UsageError):
        HeldOut.fraction(100, 1.0)


def test_an_impossible_fraction_names_the_setting() -> None:
    with pytest.raises(SettingError) as info:
        HeldOut.fraction(100, -0.1)
    assert info.value.template == "{valid_fraction} must be in [0, 1), got -0.1"


def test_load_corpus_learns_vocabulary_from_training_lines_only(tmp_path: Path) -> None:
    lines = english_lines(50)
    lines[-1] = "zebra zebra zebra ."  # the last line is held out with fraction 0.02
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = load_corpus([path], DataConfig(level="word", min_freq=1, valid_fraction=0.02))
    assert "zebra" not in data.tokenizer.tokens
    assert data.valid is not None and (data.valid == UNK_ID).sum() == 3
    assert data.train[0] == EOS_ID and data.valid[0] == EOS_ID
    assert (data.train == EOS_ID).sum() == 49 + 1  # 49 sentences, plus the start
    assert data.train.dtype == np.uint16


def test_load_corpus_with_a_validation_file_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("a b\n\n   \nb a\n", encoding="utf-8")
    valid = tmp_path / "v.txt"
    valid.write_text("a c\n", encoding="utf-8")
    data = load_corpus([path], DataConfig(level="word", valid_file=str(valid)))
    tokens = data.tokenizer.tokens
    assert data.train.tolist() == [EOS_ID, tokens.index("a"), tokens.index("b"), EOS_ID,
                                   tokens.index("b"), tokens.index("a"), EOS_ID]
    assert data.valid.tolist() == [EOS_ID, tokens.index("a"), UNK_ID, EOS_ID]


@pytest.mark.parametrize("content,message", [("", "empty"), ("\n  \n\t\n", "only blank lines")])
def test_empty_corpus_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LmcliError, match=message):
        load_corpus([path], DataConfig(level="char"))


def test_a_validation_file_without_text_is_refused(tmp_path: Path) -> None:
    path, valid = tmp_path / "c.txt", tmp_path / "v.txt"
    path.write_text("a b\n", encoding="utf-8")
    valid.write_text("\n \n", encoding="utf-8")
    with pytest.raises(LmcliError, match="validation file has no text"):
        load_corpus([path], DataConfig(level="char", valid_file=str(valid)))


def phases(events: list[tuple[str, dict]]) -> list[str]:
    return [info["name"] for kind, info in events if kind == "phase"]


@pytest.mark.parametrize("level,learning", [("char", ["building vocabulary", "encoding"]),
                                            ("word", ["building vocabulary and encoding"])])
def test_progress_events_name_each_pass_and_count_its_bytes(tmp_path: Path, level: str,
                                                            learning: list[str]) -> None:
    path = tmp_path / "c.txt"
    path.write_text("\n".join(english_lines(60)) + "\n", encoding="utf-8")
    size = path.stat().st_size
    config = DataConfig(level=level, valid_fraction=0.1)
    for cache, expected in ((None, learning), (TokenCache(tmp_path / "cache"), learning),
                            (TokenCache(tmp_path / "cache"), ["encoded before (cached)"])):
        events: list[tuple[str, dict]] = []
        load_corpus([path], config, cache=cache, on_event=lambda kind, info: events.append((kind, info)))
        assert phases(events) == ["reading corpus", *expected]
        passes = [info["total_bytes"] for kind, info in events if kind == "phase" and info["total_bytes"]]
        assert passes == [size] * len(passes)
        # Each pass counts one reading of the corpus (the held-out lines, read again for
        # the validation stream, are not counted twice).
        assert sum(info["n"] for kind, info in events if kind == "bytes") == size * len(passes)
        assert not [kind for kind, _ in events if kind == "warning"]


def test_cache_entries_keep_their_names(tmp_path: Path) -> None:
    """An entry's name hashes what decides its bytes (the corpus, the split, the settings,
    the tokenizer): a cache written by an earlier version must still be hit, so the names
    are pinned here."""
    path = tmp_path / "c.txt"
    path.write_text("".join(f"line {i} of the text\n" for i in range(40)), encoding="utf-8")
    cache = TokenCache(tmp_path / "cache")
    for level in ("char", "word"):
        load_corpus([path], DataConfig(level=level, valid_fraction=0.1), cache=cache)
    assert sorted(p.name for p in cache.root.iterdir()) == [
        "tokens-249213566258337f95964d66ec5278af", "tokens-f4b253887e75ee833495368da3332bef",
        "vocab-921437ac0502441a23ce8115ba00f2f7.pt", "vocab-ae7c67f29c0f382a79af1e451938c776.pt"]
