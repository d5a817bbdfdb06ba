"""The novelty index: copied runs and verse lines found, and only those; the file written by
training, kept on resume, refused when it does not fit."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import POEM_LINES, english_lines, train_request
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli import novelty
from lmcli.cli import app
from lmcli.corpus import DataConfig, encode_stream, load_corpus
from lmcli.errors import InputError
from lmcli.novelty import INDEX, NoveltyIndex
from lmcli.tokenizers import EOS_ID
from lmcli.train import resume_run, start_run
from lmcli.vocabulary import build_tokenizer

CHAR_LINES = POEM_LINES[:2] + ["一二三四五六七八九十"]


def index_of(level: str, lines: list[str], vocab_size: int | None = None) -> NoveltyIndex:
    tokenizer = build_tokenizer(level, ["\n".join(lines) + "\n"], vocab_size=vocab_size)
    return NoveltyIndex.build(encode_stream(tokenizer, [lines]), tokenizer)


def check(index: NoveltyIndex, *lines: str) -> novelty.Copied:
    """Check a sample of these lines, each ended by <EOS> but the last."""
    ids: list[int] = []
    for i, line in enumerate(lines):
        ids += index.tokenizer.encode(line) + ([EOS_ID] if i < len(lines) - 1 else [])
    return index.check(ids)


def test_spans_by_level() -> None:
    assert [novelty.span_for(level) for level in ("char", "word", "bpe", "unigram")] == [8, 6, 8, 8]


def test_an_eight_character_run_is_found_across_a_comma() -> None:
    index = index_of("char", CHAR_LINES)
    copied = check(index, "我見月光，疑是地上霜舉她")  # no whole verse line in it
    assert (copied.length, copied.text) == (8, "月光，疑是地上霜舉")
    assert copied.found and copied.line is None
    eight = check(index, "前明月光，疑是地上")
    assert (eight.length, eight.text) == (8, "前明月光，疑是地上")


def test_a_seven_character_run_is_not_found() -> None:
    index = index_of("char", CHAR_LINES)
    copied = check(index, "他說二三四五六七八啊")
    assert copied == novelty.Copied(0, "", None) and not copied.found
    assert not check(index, "我見明月光，疑是地上你").found  # 7 units across a comma
    assert check(index, "他說二三四五六七八九啊").length == 8


def test_separators_may_differ_but_lines_may_not_be_crossed() -> None:
    index = index_of("char", CHAR_LINES)
    assert check(index, "明月光。疑是地上霜").text == "明月光。疑是地上霜"  # other punctuation, same run
    # The end of one corpus line and the start of the next are never one run...
    assert check(index, "低頭思故鄉白日依山").length == 0
    assert check(index, "低頭思故鄉。白日依山").length == 0
    # ...and a sample's own <EOS> cuts its runs too.
    assert check(index, "明月光，疑", "是地上霜").length == 0


def test_a_whole_verse_line_is_reported() -> None:
    index = index_of("char", CHAR_LINES)
    copied = check(index, "我說，舉頭望明月。好")
    assert copied.line == "舉頭望明月" and copied.length == 0 and copied.found
    assert check(index, "好好", "白日依山盡").line == "白日依山盡"  # a line ended by the sample's end
    assert check(index, "頭望明月，好").line is None  # 4 units of a line are not a line
    assert check(index, "舉頭望明，好").line is None  # nor is a part of a line
    assert check(index, "一二三四五").line is None  # nor the start of a whole corpus line
    whole = check(index, "一二三四五六七八九十")
    assert whole.line == "一二三四五六七八九十" and whole.length == 10


def test_samples_without_units() -> None:
    index = index_of("char", CHAR_LINES)
    for ids in ([], [EOS_ID, EOS_ID], index.tokenizer.encode("，。")):
        assert index.check(ids) == novelty.Copied(0, "", None)


def test_short_segments_are_not_lines() -> None:
    index = index_of("char", ["君不見，黃河之水天上來。"])
    assert novelty.MIN_LINE_UNITS == 5
    assert check(index, "他，君不見，好").line is None
    assert check(index, "他，黃河之水天上來").line == "黃河之水天上來"


def test_word_level_runs_are_six_words() -> None:
    lines = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h"]
    index = index_of("word", lines)
    copied = check(index, "c quick brown fox jumps over the e")
    assert (copied.length, copied.text) == (6, "quick brown fox jumps over the")
    assert check(index, "c quick brown fox jumps over e").length == 0  # five words
    assert check(index, "g h a b c d").length == 0  # across corpus lines
    assert check(index, "a b c d e f g h").line == "a b c d e f g h"


def test_subword_runs_are_eight_pieces() -> None:
    lines = [f"{a} and {b}" for a, b in zip(english_lines(50, seed=3), english_lines(50, seed=4))]
    index = index_of("bpe", lines, vocab_size=60)
    assert index.span == 8
    copied = check(index, lines[0])
    assert copied.line == lines[0] and copied.length == len(index.tokenizer.encode(lines[0]))


def brute_force(train: list[str], sample: list[str], span: int = 8) -> tuple[int, set[str]]:
    """The longest run and the whole verse lines, by the definition, in plain Python, for
    lines of letters, commas and spaces (the separators)."""
    def units(text: str) -> str:
        return text.replace(",", "").replace(" ", "")

    def verses(line: str) -> list[str]:
        return [units(piece) for piece in [line, *line.replace(",", " ").split()]
                if len(units(piece)) >= novelty.MIN_LINE_UNITS]

    grams = {units(line)[k:k + span] for line in train for k in range(len(units(line)) - span + 1)}
    longest = 0
    for line in map(units, sample):
        run = 0
        for k in range(len(line) - span + 1):
            run = run + 1 if line[k:k + span] in grams else 0
            longest = max(longest, run + span - 1 if run else 0)
    known = {verse for line in train for verse in verses(line)}
    return longest, {verse for line in sample for verse in verses(line) if verse in known}


@pytest.mark.parametrize("seed", range(6))
def test_check_agrees_with_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    def line() -> str:
        return "".join(rng.choice("abcc, ") for _ in range(rng.randint(3, 30))).strip() or "a"
    train = [line() for _ in range(40)]
    sample = [rng.choice(train)[rng.randint(0, 5):] + line() for _ in range(3)] + [line()]
    index = index_of("char", train)
    copied = check(index, *sample)
    longest, verses = brute_force(train, sample)
    assert copied.length == longest
    assert len(copied.text.replace(",", "").replace(" ", "")) == longest
    assert (copied.line is None) == (not verses)
    if copied.line is not None:
        assert copied.line.replace(",", "").replace(" ", "") in verses


def test_hashes_are_the_polynomial_mod_two_to_the_64() -> None:
    ids = np.array([5, 9, 2, 7, 3], dtype=np.int64)
    kinds = np.zeros(10, dtype=np.uint8)
    hash_of = novelty._Units.of(ids, kinds).hasher()
    got = hash_of(np.array([1]), np.array([4]))[0]
    expected = sum((int(i) + 1) * novelty.HASH_BASE ** k for k, i in enumerate(ids[1:4])) % 2**64
    assert int(got) == expected


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = index_of("char", CHAR_LINES)
    index.save(tmp_path / INDEX)
    loaded = NoveltyIndex.load(tmp_path / INDEX, index.tokenizer)
    assert np.array_equal(loaded.runs, index.runs) and np.array_equal(loaded.lines, index.lines)
    assert loaded.span == 8 and len(loaded.runs) > 10
    assert check(loaded, "明月光，疑是地上霜").length == 8
    assert not list(tmp_path.glob(".*.tmp"))


def one_line_error(error: pytest.ExceptionInfo[InputError], *needles: str) -> None:
    text = str(error.value.render(lambda name: f"--{name}"))
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_a_mismatched_tokenizer_is_refused(tmp_path: Path) -> None:
    index_of("char", CHAR_LINES).save(tmp_path / INDEX)
    other = build_tokenizer("char", ["\n".join(CHAR_LINES[:1]) + "\n"])
    with pytest.raises(InputError) as error:
        NoveltyIndex.load(tmp_path / INDEX, other)
    one_line_error(error, "another vocabulary", "--novel")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no hashes", "float hashes"])
def test_a_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    index = index_of("char", CHAR_LINES)
    path = tmp_path / INDEX
    index.save(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x04not an index" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as archive:
            arrays = dict(archive)
        if damage == "no hashes":
            del arrays["runs"]
        else:
            arrays["runs"] = arrays["runs"].astype(np.float64)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    with pytest.raises(InputError) as error:
        NoveltyIndex.load(path, index.tokenizer)
    one_line_error(error, str(path), "not a readable novelty index", "--resume")


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        NoveltyIndex.load(tmp_path / INDEX, index_of("char", CHAR_LINES).tokenizer)
    one_line_error(error, "has no novelty index", "--resume", "--novel")


def test_index_for_checkpoint(tmp_path: Path) -> None:
    assert novelty.index_for_checkpoint(tmp_path / "run" / ckpt.BEST) == tmp_path / "run" / INDEX
    assert novelty.index_for_checkpoint(tmp_path) == tmp_path / INDEX


def test_a_corpus_too_large_is_recorded_not_indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CHAR_LINES) + "\n", encoding="utf-8")
    data = load_corpus([corpus], DataConfig(level="char", valid_fraction=0))
    monkeypatch.setattr(novelty, "MAX_INDEX_TOKENS", len(data.train) - 1)
    path = novelty.write_for_run(tmp_path, data)
    with pytest.raises(InputError) as error:
        NoveltyIndex.load(path, data.tokenizer)
    one_line_error(error, "was not indexed", f"{len(data.train):,} tokens", "--novel")
    assert novelty.describe(path).startswith("not built")


def test_an_index_from_another_corpus_is_rebuilt(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CHAR_LINES) + "\n", encoding="utf-8")
    data = load_corpus([corpus], DataConfig(level="char", valid_fraction=0))
    assert novelty.ensure_for_run(tmp_path, data)  # none there
    assert not novelty.ensure_for_run(tmp_path, data)  # this corpus's: kept
    built = NoveltyIndex.load(tmp_path / INDEX, data.tokenizer)
    NoveltyIndex(data.tokenizer, 8, built.runs[:1], built.lines[:1], corpus_sha256="another").save(
        tmp_path / INDEX)
    assert novelty.ensure_for_run(tmp_path, data)
    assert np.array_equal(NoveltyIndex.load(tmp_path / INDEX, data.tokenizer).runs, built.runs)


def test_training_writes_the_index_and_resuming_keeps_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    start_run(train_request(tmp_path, "run", max_steps=4), root=tmp_path / "ck")
    path = run / INDEX
    checkpoint = ckpt.load(run / ckpt.LAST)
    tokenizer = checkpoint.tokenizer
    index = NoveltyIndex.load(path, tokenizer, corpus_sha256=checkpoint.payload["provenance"]["corpus_sha256"])
    assert index.train_tokens == checkpoint.payload["provenance"]["train_tokens"]
    with pytest.raises(InputError, match="another corpus"):
        NoveltyIndex.load(path, tokenizer, corpus_sha256="0" * 64)
    train_lines = english_lines(200, seed=5)  # conftest.corpus_file's text
    found = [check(index, line) for line in train_lines]
    assert sum(c.length == 6 and c.line == line for c, line in zip(found, train_lines)) >= 150
    assert not check(index, "moon the sees cat the .").found
    stamp = path.stat().st_mtime_ns
    resume_run(run, overrides={"max_steps": 6}, root=tmp_path / "ck")
    assert path.stat().st_mtime_ns == stamp  # built from this corpus already: kept

    path.unlink()  # a run from before the index
    resume_run(run, overrides={"max_steps": 8}, root=tmp_path / "ck")
    assert np.array_equal(NoveltyIndex.load(path, tokenizer).runs, index.runs)


def test_info_shows_the_index(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["info", "-c", str(trained_run)])
    assert result.exit_code == 0, result.output
    assert "novelty index" in result.stdout and "runs of 6 units" in result.stdout
    alone = tmp_path / ckpt.BEST  # a checkpoint copied out of its run folder
    shutil.copy(trained_run / ckpt.BEST, alone)
    summary = json.loads(CliRunner().invoke(app, ["info", "-c", str(alone), "--json"]).stdout)
    assert summary["novelty_index"] == "none"
