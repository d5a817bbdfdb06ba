"""Reading direction: a ``backward`` model reads each line's tokens right to left.

Nothing else changes: lines keep their order, ``<EOS>`` still ends each line and is still
the empty context a line starts from, and the vocabulary is the forward model's. So a
backward model's probability of a sentence is the probability of the whole sentence,
read from its last token to its first and then ``<EOS>``, and it adds to a forward model's
in rescoring (Mikolov et al.'s and Kaldi's bidirectional N-best rescoring).

The model records its direction (``ModelConfig.direction``); text becomes ids in reading
order where it meets the model: the training streams (:func:`reverse_lines`), sentences
scored (:func:`in_reading_order`) and generation's prime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from lmcli.tokenizers import EOS_ID

DIRECTIONS = ("forward", "backward")

T = TypeVar("T")


def reverse_lines(stream: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """A token stream with every line's tokens reversed in place: the ``<EOS>`` markers
    stay where they are (a stream starts with one and ends each line with one). A new
    array, in memory, of the stream's dtype; worked in pieces of about ``chunk`` tokens cut
    at line ends, so the index arithmetic stays small beside the stream."""
    stream = np.asarray(stream)
    out = np.empty_like(stream)
    start = 0
    while start < len(stream):
        size = chunk
        while True:  # cut after the last <EOS> of the piece (a longer piece if it has none)
            stop = min(len(stream), start + size)
            ends = np.flatnonzero(stream[start:stop] == EOS_ID) if stop < len(stream) else None
            if ends is None or len(ends):
                stop = stop if ends is None else start + int(ends[-1]) + 1
                break
            size *= 2
        out[start:stop] = _reverse_piece(stream[start:stop])
        start = stop
    return out


def _reverse_piece(piece: np.ndarray) -> np.ndarray:
    # For each position: the first and last index of its line (ends excluded), so position
    # p of a line [a, b] takes the token at a + b - p; an <EOS> maps to itself.
    ends = np.flatnonzero(piece == EOS_ID)
    index = np.arange(len(piece))
    line = np.searchsorted(ends, index)  # a position's line: the number of <EOS> before it
    first = np.concatenate([[0], ends + 1])[line]
    last = np.concatenate([ends, [len(piece)]])[line] - 1
    return piece[np.where(piece == EOS_ID, index, first + last - index)]


def in_reading_order(ids: Sequence[T], direction: str) -> list[T]:
    """One line's ids (no ``<EOS>``) in the order a model of ``direction`` reads them."""
    return list(ids)[::-1] if direction == "backward" else list(ids)


def in_text_order(values: Sequence[T], direction: str, eos: bool) -> list[T]:
    """Per-token values a model gave in its reading order, put back in the text's order
    (the final ``<EOS>``'s value, with ``eos``, stays last)."""
    if direction != "backward":
        return list(values)
    body = list(values[:-1]) if eos else list(values)
    return body[::-1] + ([values[-1]] if eos and len(values) else [])
