"""The token cache: encoded streams on disk as memory maps, reused when nothing that
decides their bytes changed, rebuilt when an entry is damaged, never required."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lmcli.corpus import DataConfig, load_corpus
from lmcli.tokencache import CACHE_DIR_NAME, TokenCache, cache_for_run
from lmcli.train import RunRequest, TrainConfig, start_run


def load(corpus: Path, cache: TokenCache | None, **config) -> tuple:
    events: list[tuple[str, dict]] = []
    data = load_corpus([corpus], DataConfig(**{"level": "word", "valid_fraction": 0.1, **config}),
                       on_event=lambda kind, info: events.append((kind, info)), cache=cache)
    phases = [info["name"] for kind, info in events if kind == "phase"]
    return data, phases


def test_streams_are_memory_maps_equal_to_in_memory_encoding(english_corpus: Path, tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cache")
    plain, _ = load(english_corpus, None)
    first, phases = load(english_corpus, cache)
    assert "building vocabulary and encoding" in phases  # one pass at word level
    assert isinstance(first.train, np.memmap) and isinstance(first.valid, np.memmap)
    assert not first.train.flags.writeable
    np.testing.assert_array_equal(first.train, plain.train)
    np.testing.assert_array_equal(first.valid, plain.valid)
    assert first.train.dtype == plain.train.dtype == np.uint16
    second, phases = load(english_corpus, cache)
    assert phases == ["reading corpus", "encoded before (cached)"]  # no vocabulary or encoding pass
    assert second.tokenizer.tokens == first.tokenizer.tokens
    np.testing.assert_array_equal(second.train, plain.train)


def test_a_changed_setting_or_corpus_gets_its_own_entry(english_corpus: Path, tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cache")
    load(english_corpus, cache)
    _, phases = load(english_corpus, cache, vocab_size=12)
    assert "building vocabulary and encoding" in phases
    _, phases = load(english_corpus, cache, valid_fraction=0.2)
    assert "building vocabulary and encoding" in phases
    with english_corpus.open("a", encoding="utf-8") as handle:
        handle.write("a new line at the end .\n")
    changed, phases = load(english_corpus, cache)
    assert "building vocabulary and encoding" in phases  # one pass at word level
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 4


def test_a_damaged_entry_is_rebuilt(english_corpus: Path, tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cache")
    plain, _ = load(english_corpus, None)
    load(english_corpus, cache)
    (entry,) = (tmp_path / "cache").glob("tokens-*")
    with (entry / "train.bin").open("r+b") as handle:
        handle.truncate(10)  # as a crash or a full disk might leave it
    for vocab in (tmp_path / "cache").glob("vocab-*"):
        vocab.write_bytes(b"not a tokenizer")
    again, phases = load(english_corpus, cache)
    assert "building vocabulary and encoding" in phases  # one pass at word level
    np.testing.assert_array_equal(again.train, plain.train)


def test_old_entries_are_pruned(english_corpus: Path, tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cache", keep=2)
    for size in (10, 11, 12):
        load(english_corpus, cache, vocab_size=size)
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 2


def test_an_unwritable_cache_falls_back_to_memory(english_corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    events: list[tuple[str, dict]] = []
    plain, _ = load(english_corpus, None)
    data = load_corpus([english_corpus], DataConfig(level="word", valid_fraction=0.1),
                       on_event=lambda kind, info: events.append((kind, info)),
                       cache=TokenCache(blocker / "cache"))
    assert any(kind == "warning" and "token cache not written" in info["message"] for kind, info in events)
    np.testing.assert_array_equal(data.train, plain.train)


def test_runs_share_the_cache_next_to_them_and_it_can_be_turned_off(
        english_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_for_run(tmp_path / "runs" / "a").root == (tmp_path / "runs" / CACHE_DIR_NAME).resolve()
    monkeypatch.setenv("LMCLI_TOKEN_CACHE", str(tmp_path / "elsewhere"))
    assert cache_for_run(tmp_path / "a").root == tmp_path / "elsewhere"
    monkeypatch.setenv("LMCLI_TOKEN_CACHE", "off")
    assert cache_for_run(tmp_path / "a") is None
    monkeypatch.delenv("LMCLI_TOKEN_CACHE")

    def train(name: str) -> tuple[float | None, list[str]]:
        """The run's best validation loss and the phases of its corpus reading."""
        request = RunRequest(
            corpus=[str(english_corpus)], data=DataConfig(level="word", valid_fraction=0.1),
            model={"cell": "gru", "layers": 1, "embed_dim": 8, "hidden_dim": 16, "dropout": 0.0},
            train=TrainConfig(seq_len=10, batch_size=4, max_steps=30, epochs=None, lr=0.01, seed=5,
                              device="cpu", eval_every=10),
            out_dir=tmp_path / "runs" / name)
        phases: list[str] = []

        def on_data_event(kind: str, info: dict) -> None:
            if kind == "phase":
                phases.append(str(info["name"]))

        finished = start_run(request, root=tmp_path / "ck", on_data_event=on_data_event)
        return finished.best_valid_loss, phases

    first, phases = train("a")
    assert "encoded before (cached)" not in phases
    entries = list((tmp_path / "runs" / CACHE_DIR_NAME).glob("tokens-*"))
    assert len(entries) == 1
    mtime = os.stat(entries[0] / "train.bin").st_mtime_ns
    second, phases = train("b")
    assert "encoded before (cached)" in phases and second == first  # the same run from the cached streams
    assert os.stat(entries[0] / "train.bin").st_mtime_ns == mtime
