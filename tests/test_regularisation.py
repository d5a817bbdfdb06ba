"""Sentence batching: every sentence once, from the start, inputs the targets shifted."""

from __future__ import annotations

import numpy as np
import torch

from lmcli.data import PAD_TARGET, SentenceBatches


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
