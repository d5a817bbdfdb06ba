"""Word counting and encoding in worker processes give exactly the serial pass's
vocabulary and ids, in order, and a worker's error reaches the caller."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lmcli.data import DataConfig, encode_stream, load_corpus
from lmcli.errors import UsageError
from lmcli.parallel import WORKERS_ENV, map_blocks, worker_count
from lmcli import tokencache
from lmcli.tokencache import TokenCache
from lmcli.tokenizers import build_tokenizer, count_words, encode_block

from conftest import english_lines


def test_blocks_come_back_in_order_and_equal_to_a_serial_pass() -> None:
    lines = english_lines(200)
    tokenizer = build_tokenizer("word", ["\n".join(lines) + "\n"], min_freq=2)
    blocks = [lines[i:i + 7] for i in range(0, len(lines), 7)]  # 29 blocks, more than in flight
    serial = list(map_blocks(encode_block, tokenizer, blocks, workers=1))
    parallel = list(map_blocks(encode_block, tokenizer, iter(blocks), workers=2))
    assert len(parallel) == len(blocks)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    chunks = ["\n".join(block) + "\n" for block in blocks]
    for lowercase in (False, True):
        assert count_words(chunks, lowercase, workers=2) == count_words(chunks, lowercase)


def _received(shared: object, item: object) -> object:
    return item


def test_blocks_of_lines_reach_the_workers_as_they_were_sent() -> None:
    """Lists of lines travel to a worker as one string and are split back there: empty
    blocks, blank lines and lines with other spaces arrive unchanged; other items as
    they are."""
    items = [[], [""], ["a", "", "b \r"], ["\u2028x\t"], "a chunk\n"]
    assert list(map_blocks(_received, None, items, workers=2)) == items


def test_an_error_in_a_worker_reaches_the_caller() -> None:
    with pytest.raises(AttributeError):
        list(map_blocks(encode_block, None, [["a b"], ["c d"]], workers=2))


def test_load_corpus_is_the_same_with_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = english_lines(300)
    paths = []
    for part in range(3):  # each file is read as its own block: three tasks
        paths.append(tmp_path / f"part{part}.txt")
        paths[-1].write_text("\n".join(lines[part * 100:(part + 1) * 100]) + "\n", encoding="utf-8")
    config = DataConfig(level="word", min_freq=2, valid_fraction=0.1, lowercase=True)
    results = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        for cached in (False, True):
            cache = TokenCache(tmp_path / f"cache-{workers}") if cached else None
            results[workers, cached] = load_corpus(paths, config, cache=cache)
    reference = results["1", False]
    for data in results.values():
        assert data.tokenizer.tokens == reference.tokenizer.tokens
        np.testing.assert_array_equal(data.train, reference.train)
        np.testing.assert_array_equal(data.valid, reference.valid)


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count(1000) == 1  # a small corpus stays in this process
    assert 1 <= worker_count(10**10) <= 16
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert worker_count(1000) == 3
    monkeypatch.setenv(WORKERS_ENV, "0")
    assert worker_count(10**10) == 1
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(UsageError, match=WORKERS_ENV):
        worker_count(1000)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_one_pass_word_vocabulary_and_ids_are_the_two_pass_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    """load_corpus learns a word vocabulary and encodes in one pass, numbering words as
    first seen across blocks and renumbering at the end: the tokenizer and ids must be
    exactly those of counting first and encoding after. Several files make several blocks;
    literal <unk>/<EOS> words, a vocabulary cut inside a tie and lowercasing are in it."""
    lines = english_lines(300)
    lines[5] = "The <unk> AND <EOS> the  "
    lines[150] = "   "
    paths = []
    for part in range(3):
        paths.append(tmp_path / f"part{part}.txt")
        paths[-1].write_text("\n".join(lines[part * 100:(part + 1) * 100]) + "\n", encoding="utf-8")
    monkeypatch.setenv(WORKERS_ENV, workers)
    monkeypatch.setattr(tokencache, "RENUMBER_IDS", 1000)  # the file is renumbered in several pieces
    for config in (DataConfig(level="word", min_freq=2, vocab_size=40, valid_fraction=0.1, lowercase=True),
                   DataConfig(level="word", valid_fraction=0.0)):
        for cache in (None, TokenCache(tmp_path / f"cache-{config.lowercase}")):
            data = load_corpus(paths, config, cache=cache)
            held = data.held_out.mask(0, len(lines)) if data.held_out else np.zeros(len(lines), bool)
            train_lines = [line for line, h in zip(lines, held) if not h]
            reference = build_tokenizer("word", ["\n".join(train_lines) + "\n"], vocab_size=config.vocab_size,
                                        min_freq=config.min_freq, lowercase=config.lowercase)
            assert data.tokenizer.tokens == reference.tokens
            assert data.train.tolist() == encode_stream(reference, [train_lines]).tolist()
            if data.held_out:
                valid_lines = [line for line, h in zip(lines, held) if h]
                assert data.valid.tolist() == encode_stream(reference, [valid_lines]).tolist()
            if cache is not None:  # the provisional ids are gone from the entry
                (entry,) = cache.root.glob("tokens-*")
                files = sorted(p.name for p in entry.iterdir())
                assert files == ["meta.json", "train.bin"] + (["valid.bin"] if data.held_out else [])
                shutil.rmtree(entry)
