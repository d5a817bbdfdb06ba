"""Batches for training: truncated-BPTT windows over a token stream, and windows of whole
sentences started from a zero state, as ``score`` sees them.

A token stream (see :mod:`lmcli.corpus`) is the concatenation of its sentences, each
followed by ``<EOS>``, and starts with an ``<EOS>``: the implicit start context.
"""

from __future__ import annotations

import numpy as np
import torch

from lmcli.errors import InputError, UsageError
from lmcli.tokenizers import EOS_ID

PAD_TARGET = -100  # a target that is padding: cross_entropy's ignore_index, never scored


class BpttBatches:
    """Truncated-BPTT windows over a token stream laid out as ``batch_size`` parallel lanes.

    The stream is cut into ``batch_size`` contiguous lanes (the tail that does not divide
    evenly is dropped); window ``i`` holds inputs ``lanes[:, i*T : i*T+T]`` and targets
    shifted by one. Consecutive windows continue each lane, so the hidden state carried
    from window ``i`` is the right context for window ``i + 1``::

        stream  a b c d e f g h i j k l m n o p q r s t u v w x
        lanes   a b c d e f g h i j k l     (batch_size = 2)
                m n o p q r s t u v w x
        T = 4   window 0: inputs [a b c d] [m n o p], targets [b c d e] [n o p q]
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, *,
                 keep_partial: bool = False) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UsageError("batch size and sequence length must be at least 1")
        lane_len = len(tokens) // batch_size
        if lane_len < 2:
            raise InputError(f"the text has {len(tokens)} tokens: too few for {batch_size} batch lanes",
                             "use a smaller {batch_size} or a longer corpus")
        self.lanes = tokens[: batch_size * lane_len].reshape(batch_size, lane_len)
        self.batch_size = batch_size
        self.seq_len = seq_len
        full, rest = divmod(lane_len - 1, seq_len)
        if full == 0 and not keep_partial:
            raise InputError(f"the text has {len(tokens)} tokens: too few for one batch of "
                             f"{batch_size} x {seq_len + 1}", "use a smaller {batch_size} or {seq_len}")
        self.num_windows = full + (1 if keep_partial and rest else 0)

    def __len__(self) -> int:
        return self.num_windows

    @property
    def tokens_per_window(self) -> int:
        return self.batch_size * self.seq_len

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, time) int64."""
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.lanes.shape[1] - 1)
        block = torch.from_numpy(np.ascontiguousarray(self.lanes[:, start: stop + 1])).long()
        return block[:, :-1], block[:, 1:]


SCAN_TOKENS = 1 << 24  # tokens looked at a time for sentence ends


def split_sentences(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the non-empty sentences of a token stream; ``ends`` index each
    sentence's <EOS>. The stream's leading <EOS> (the start context) is no sentence, nor
    is text after the last <EOS>."""
    # Found a piece at a time, and as int32 where the stream allows: a comparison over the
    # whole stream would take a byte per token, and a large corpus has hundreds of millions.
    index = np.int32 if len(tokens) < np.iinfo(np.int32).max else np.int64
    ends = np.concatenate([np.zeros(0, dtype=index)] + [
        (np.flatnonzero(tokens[first:first + SCAN_TOKENS] == EOS_ID) + first).astype(index)
        for first in range(0, len(tokens), SCAN_TOKENS)])
    starts = np.zeros_like(ends)
    starts[1:] = ends[:-1] + 1
    keep = starts < ends
    if keep[1:].all():  # only the stream's leading <EOS> is an empty sentence: no copies
        return (starts, ends) if keep[:1].all() else (starts[1:], ends[1:])
    return starts[keep], ends[keep]


class SentenceBatches:
    """Windows of whole sentences, each started from a zero state, as ``score`` sees them.

    Every epoch the sentences are shuffled (a fixed order per seed and epoch, so a resumed
    run continues exactly), then sorted by length within pools of 50 batches so that a
    batch holds sentences of similar length (little padding), and the batches shuffled
    again. A batch is ``batch_size`` sentences, padded; inputs begin with <EOS> (the
    implicit start) and targets end with each sentence's <EOS>; padding targets are
    ``PAD_TARGET`` and never count. A batch longer than ``seq_len`` is cut into several
    windows with the state carried between them (truncated BPTT inside long sentences).
    """

    POOL = 50

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UsageError("batch size and sequence length must be at least 1")
        self.tokens = tokens
        self.starts, self.ends = split_sentences(tokens)
        if len(self.starts) < batch_size:
            raise InputError(f"the text has {len(self.starts)} sentences: too few for one batch "
                             f"of {batch_size}", "use a smaller {batch_size} or a longer corpus")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.epoch = -1
        self._cached_key: tuple[int, int] | None = None
        self._cached: tuple[np.ndarray, np.ndarray] | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Lay out the windows of ``epoch``: the same for the same seed and epoch."""
        if epoch == self.epoch:
            return
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        # rng.permutation(n) in place and in the index dtype (int32 nearly always): the same
        # order and generator state, and half the memory (10M sentences take 40 MB).
        order = np.arange(len(self.starts), dtype=self.starts.dtype)
        rng.shuffle(order)
        order = order[: len(order) // self.batch_size * self.batch_size]  # whole batches only
        lengths = self.ends - self.starts + 1  # tokens scored per sentence, <EOS> included
        pool = self.POOL * self.batch_size
        for first in range(0, len(order), pool):
            chunk = order[first:first + pool]
            order[first:first + pool] = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches = order.reshape(-1, self.batch_size)
        self.batches = batches = batches[rng.permutation(len(batches))]
        del order  # before the next array of the same size
        batch_lengths = lengths[batches]
        pieces = -(-batch_lengths.max(axis=1) // self.seq_len)  # windows per batch
        self.first_window = np.concatenate([[0], np.cumsum(pieces, dtype=np.int64)])
        self.num_targets = int(batch_lengths.sum(dtype=np.int64))

    def __len__(self) -> int:
        return int(self.first_window[-1])

    @property
    def tokens_per_window(self) -> int:
        """Average scored tokens per window (for rates and estimates)."""
        return max(1, self.num_targets // max(len(self), 1))

    def starts_fresh(self, index: int) -> bool:
        """Whether window ``index`` begins new sentences (zero state)."""
        batch = int(np.searchsorted(self.first_window, index, side="right") - 1)
        return int(self.first_window[batch]) == index

    def window(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, time) int64; padding targets are PAD_TARGET."""
        batch = int(np.searchsorted(self.first_window, index, side="right") - 1)
        piece = index - int(self.first_window[batch])
        inputs, targets = self._padded(batch)
        cut = slice(piece * self.seq_len, (piece + 1) * self.seq_len)
        return (torch.from_numpy(np.ascontiguousarray(inputs[:, cut])),
                torch.from_numpy(np.ascontiguousarray(targets[:, cut])))

    def _padded(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole padded batch, built once for all of its windows."""
        key = (self.epoch, batch)
        if self._cached_key != key or self._cached is None:
            rows = self.batches[batch]
            lengths = self.ends[rows] - self.starts[rows] + 1
            width = int(lengths.max())
            inputs = np.full((len(rows), width), EOS_ID, dtype=np.int64)
            targets = np.full((len(rows), width), PAD_TARGET, dtype=np.int64)
            for row, (start, length) in enumerate(zip(self.starts[rows], lengths)):
                sentence = self.tokens[start:start + length]  # ends with <EOS>
                inputs[row, 1:length] = sentence[:-1]
                targets[row, :length] = sentence
            self._cached_key, self._cached = key, (inputs, targets)
        return self._cached
