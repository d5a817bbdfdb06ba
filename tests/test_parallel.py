"""Word counting and encoding in worker processes give exactly the serial pass's
vocabulary and ids, in order, and a worker's error reaches the caller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmcli.data import DataConfig, load_corpus
from lmcli.errors import UsageError
from lmcli.parallel import WORKERS_ENV, map_blocks, worker_count
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
