"""Keeping samples from copying the training text while they are drawn, by the run's
novelty index (:mod:`lmcli.novelty`): the sampler asks, for the token drawn for each
sample, whether it would complete a copied run or verse line, and draws again without it.
"""

from __future__ import annotations

import numpy as np

from lmcli.novelty import (
    HASH_BASE,
    MIN_LINE_UNITS,
    SEPARATOR,
    UNIT,
    NoveltyIndex,
    member,
)

_GUARDED_LINE = 256  # the longest stretch the guard compares with training lines


class NoveltyGuard:
    """Keeps samples from copying while they are drawn: whether a token chosen for each
    sample would complete a run of ``span`` units, or a verse line, found in the training
    text. The sampler then draws again without it, which draws from the same distribution
    with the copying tokens removed, at the cost of one lookup per sample and step.

    A verse line only counts once it ends, but its end may be forced (a form's mark), so the
    guard refuses the unit that would make the current stretch equal to a training line,
    whether or not the line ends there: conservative, and never a dead end of its own."""

    def __init__(self, index: NoveltyIndex, rows: int) -> None:
        self.index = index
        self._kinds = index._kinds
        self._powers = [pow(HASH_BASE, k, 2**64) for k in range(_GUARDED_LINE + 1)]
        self._line: list[list[int]] = [[] for _ in range(rows)]  # units since <EOS> (or <UNK>)
        self._segment: list[list[int]] = [[] for _ in range(rows)]  # units since a separator

    def _hash(self, units: list[int], then: int) -> int:
        """The index's hash of ``units`` followed by the unit ``then``."""
        powers = self._powers
        total = sum((u + 1) * powers[k] for k, u in enumerate(units))
        return (total + (then + 1) * powers[len(units)]) % 2**64

    def refuses(self, token_ids: list[int]) -> np.ndarray:
        """(rows,) bool: whether each row's token would copy."""
        span = self.index.span
        runs: tuple[list[int], list[int]] = ([], [])  # rows, hashes
        lines: tuple[list[int], list[int]] = ([], [])
        for row, token in enumerate(token_ids):
            if self._kinds[token] != UNIT:
                continue
            line, segment = self._line[row], self._segment[row]
            if len(line) >= span - 1:
                runs[0].append(row)
                runs[1].append(self._hash(line[len(line) - span + 1:], token))
            if MIN_LINE_UNITS - 1 <= len(segment) < _GUARDED_LINE:
                lines[0].append(row)
                lines[1].append(self._hash(segment, token))
        out = np.zeros(len(token_ids), dtype=bool)
        for (rows, hashes), table in ((runs, self.index.runs), (lines, self.index.lines)):
            if rows:
                out[rows] |= member(table, np.asarray(hashes, dtype=np.uint64))
        return out

    def advance(self, token_ids: list[int]) -> None:
        for row, token in enumerate(token_ids):
            kind = self._kinds[token]
            if kind == UNIT:
                self._line[row].append(token)
                self._segment[row].append(token)
            elif kind == SEPARATOR:
                self._segment[row] = []
            else:  # <EOS> or <UNK>: nothing runs across it
                self._line[row], self._segment[row] = [], []

    def feed(self, token_ids: list[int]) -> None:
        """The same tokens (a prime) for every row."""
        for token in token_ids:
            self.advance([token] * len(self._line))
