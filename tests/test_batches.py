"""Batches: truncated-BPTT windows over lanes of a token stream, and windows of whole
sentences from a zero state, shuffled reproducibly each epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmcli import batches as batching
from lmcli.batches import PAD_TARGET, BpttBatches, SentenceBatches, split_sentences
from lmcli.errors import InputError, LmcliError
from lmcli.tokenizers import EOS_ID


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
    monkeypatch.setattr(batching, "SCAN_TOKENS", scan)
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
        starts, ends = split_sentences(np.array(stream, dtype=np.uint16))
        assert list(zip(starts.tolist(), ends.tolist())) == expected
        assert starts.dtype == ends.dtype == np.int32


def test_sentence_order_is_the_permutation_runs_before_were_trained_with() -> None:
    """The epoch order is shuffled in place in int32 to save memory; it must be exactly
    rng.permutation's (and leave the generator where it did), or a run resumed from an
    older checkpoint would see other batches than it was going to."""
    tokens = np.array([EOS_ID] + [5, 6, EOS_ID, 7, EOS_ID, 8, 9, 9, EOS_ID] * 40, dtype=np.uint16)
    batches = SentenceBatches(tokens, batch_size=4, seq_len=5, seed=3)
    for epoch in (0, 1, 7):
        batches.set_epoch(epoch)
        rng = np.random.default_rng([3, epoch])
        order = rng.permutation(len(batches.starts))
        lengths = batches.ends - batches.starts + 1
        pool = SentenceBatches.POOL * 4
        for first in range(0, len(order), pool):
            chunk = order[first:first + pool]
            order[first:first + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        expected = order.reshape(-1, 4)[rng.permutation(len(order) // 4)]
        assert batches.batches.tolist() == expected.tolist()


def stream_of(sentences: list[list[int]]) -> np.ndarray:
    return np.array([0] + [t for s in sentences for t in s + [0]], dtype=np.int32)  # as encode_stream


def test_sentence_batches_cover_every_sentence_once_from_the_start() -> None:
    rng = np.random.default_rng(0)
    sentences = [list(rng.integers(2, 9, size=int(rng.integers(1, 12)))) for _ in range(40)]
    batches = SentenceBatches(stream_of(sentences), batch_size=4, seq_len=5, seed=3)
    seen = []
    row_tokens: dict[int, list[int]] = {}
    for index in range(len(batches)):
        inputs, targets = batches.window(index)
        if batches.starts_fresh(index):
            for row in row_tokens.values():
                seen.append(row)
            row_tokens = {r: [] for r in range(inputs.shape[0])}
            assert torch.all(inputs[:, 0] == 0)  # every sentence starts from the <EOS> context
        for r in range(inputs.shape[0]):
            real = targets[r][targets[r] != PAD_TARGET].tolist()
            row_tokens[r].extend(real)
        # inputs are the targets shifted right by one, within a sentence
    seen.extend(row_tokens.values())
    assert sorted(map(tuple, seen)) == sorted(tuple(s + [0]) for s in sentences)
    assert batches.num_targets == sum(len(s) + 1 for s in sentences)
    first = [batches.window(i)[1].tolist() for i in range(len(batches))]
    batches.set_epoch(1)
    second = [batches.window(i)[1].tolist() for i in range(len(batches))]
    assert first != second  # reshuffled each epoch...
    batches.set_epoch(0)
    assert first == [batches.window(i)[1].tolist() for i in range(len(batches))]  # ...reproducibly


def test_sentence_batches_inputs_are_targets_shifted() -> None:
    batches = SentenceBatches(stream_of([[5, 6, 7], [8]]), batch_size=2, seq_len=10, seed=0)
    inputs, targets = batches.window(0)
    for row in range(2):
        real = targets[row] != PAD_TARGET
        n = int(real.sum())
        assert inputs[row, 0] == 0
        assert torch.equal(inputs[row, 1:n], targets[row, :n - 1])


def as_flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def test_too_little_text_for_a_batch_names_the_settings_that_would_fit_it() -> None:
    tokens = np.arange(11, dtype=np.uint16)
    for make, advice in ((lambda: BpttBatches(tokens, 8, 4), "use a smaller --batch-size or a longer corpus"),
                         (lambda: BpttBatches(tokens, 1, 20), "use a smaller --batch-size or --seq-len"),
                         (lambda: SentenceBatches(tokens, 4, 4, seed=0), "use a smaller --batch-size or a longer corpus")):
        with pytest.raises(InputError) as info:
            make()
        assert info.value.render(as_flag).endswith(advice)
        assert "--" not in str(info.value)  # the library itself names settings, not flags
        assert info.value.exit_code == LmcliError.exit_code
