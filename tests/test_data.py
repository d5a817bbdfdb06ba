"""Reading, splitting, encoding and batching corpora."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lmcli import data
from lmcli.data import (BpttBatches, DataConfig, HeldOut, TextFiles, chunk_lines, iter_chunks,
                        load_corpus)
from lmcli.errors import LmcliError, UsageError
from lmcli.tokenizers import EOS_ID, UNK_ID

from conftest import english_lines


def read_lines(path: Path, chunk_bytes: int) -> list[str]:
    return [line for chunk in iter_chunks(path, chunk_bytes=chunk_bytes) for line in chunk_lines(chunk)]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_chunks_are_whole_lines_whatever_the_block_size(tmp_path: Path, chunk_bytes: int) -> None:
    lines = ["床前明月光", "", "héllo wörld 💜", "last line without newline"]
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_lines(path, chunk_bytes) == lines


def test_bom_is_dropped_and_gzip_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\nline two\n")
    assert read_lines(path, 4) == ["line one", "line two"]
    packed = tmp_path / "t.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("a b\nc d\n")
    assert read_lines(packed, 3) == ["a b", "c d"]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 1 << 20])
def test_invalid_utf8_names_file_byte_and_line(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "bad.txt"
    good = "first line\nsecond é line\n".encode()
    path.write_bytes(good + b"third \xff line\n")
    with pytest.raises(LmcliError) as info:
        read_lines(path, chunk_bytes)
    message = str(info.value)
    offset = len(good) + len(b"third ")
    assert f"byte {offset}" in message and "(line 3)" in message and "bad.txt" in message
    assert "--encoding" in message and "--errors replace" in message


def test_invalid_bytes_can_be_replaced_or_read_in_another_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("café\n".encode("latin-1"))
    assert [line for c in iter_chunks(path, errors="replace") for line in chunk_lines(c)] == ["caf\ufffd"]
    assert [line for c in iter_chunks(path, encoding="latin-1") for line in chunk_lines(c)] == ["café"]
    with pytest.raises(UsageError):
        list(iter_chunks(path, encoding="no-such-codec"))


def test_missing_file_and_directory_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LmcliError, match="not found"):
        TextFiles.of([tmp_path / "nope.txt"])
    with pytest.raises(LmcliError, match="directory"):
        TextFiles.of([tmp_path])


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


def test_bptt_windows_continue_each_lane() -> None:
    tokens = np.arange(26, dtype=np.uint16)
    batches = BpttBatches(tokens, batch_size=2, seq_len=4)
    assert batches.lanes.tolist() == [list(range(13)), list(range(13, 26))]
    assert len(batches) == 3  # lane length 13: 12 targets, 3 full windows
    inputs, targets = batches.window(0)
    assert inputs.tolist() == [[0, 1, 2, 3], [13, 14, 15, 16]]
    assert targets.tolist() == [[1, 2, 3, 4], [14, 15, 16, 17]]
    second, _ = batches.window(1)
    assert second[:, 0].tolist() == [4, 17]  # window 1 starts where window 0's targets ended
    assert inputs.dtype.is_floating_point is False and str(inputs.dtype) == "torch.int64"


def test_bptt_partial_window_and_too_short_text() -> None:
    tokens = np.arange(11, dtype=np.uint16)
    assert len(BpttBatches(tokens, 1, 4)) == 2
    partial = BpttBatches(tokens, 1, 4, keep_partial=True)
    assert len(partial) == 3 and partial.window(2)[1].tolist() == [[9, 10]]
    with pytest.raises(LmcliError, match="too few"):
        BpttBatches(tokens, 4, 4)


@pytest.mark.parametrize("scan", [3, 1 << 24])
def test_sentences_are_found_between_eos_in_pieces(monkeypatch: pytest.MonkeyPatch, scan: int) -> None:
    """(starts, ends) of every non-empty sentence, found a few tokens at a time or all at
    once: leading, doubled and missing <EOS> and text after the last one included."""
    monkeypatch.setattr(data, "SCAN_TOKENS", scan)
    rng = np.random.default_rng(0)
    streams = [[EOS_ID, 5, 6, EOS_ID, 7, EOS_ID], [5, 6, EOS_ID, EOS_ID, 7, 8, EOS_ID, 9], [EOS_ID], [4, 4],
               rng.choice([EOS_ID, 3, 4, 5], size=500).tolist()]
    for stream in streams:
        expected, start = [], 0
        for i, token in enumerate(stream):
            if token == EOS_ID:
                if i > start:
                    expected.append((start, i))
                start = i + 1
        starts, ends = data.split_sentences(np.array(stream, dtype=np.uint16))
        assert list(zip(starts.tolist(), ends.tolist())) == expected
        assert starts.dtype == ends.dtype == np.int32


def test_sentence_order_is_the_permutation_runs_before_were_trained_with() -> None:
    """The epoch order is shuffled in place in int32 to save memory; it must be exactly
    rng.permutation's (and leave the generator where it did), or a run resumed from an
    older checkpoint would see other batches than it was going to."""
    tokens = np.array([EOS_ID] + [5, 6, EOS_ID, 7, EOS_ID, 8, 9, 9, EOS_ID] * 40, dtype=np.uint16)
    batches = data.SentenceBatches(tokens, batch_size=4, seq_len=5, seed=3)
    for epoch in (0, 1, 7):
        batches.set_epoch(epoch)
        rng = np.random.default_rng([3, epoch])
        order = rng.permutation(len(batches.starts))
        lengths = batches.ends - batches.starts + 1
        pool = data.SentenceBatches.POOL * 4
        for first in range(0, len(order), pool):
            chunk = order[first:first + pool]
            order[first:first + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        expected = order.reshape(-1, 4)[rng.permutation(len(order) // 4)]
        assert batches.batches.tolist() == expected.tolist()
