"""The output layer over the vocabulary: a linear layer whose product runs at an aligned
width, or the adaptive softmax of Grave et al. (2017) for large vocabularies. Either gives
an exact, normalised distribution over exactly the tokens that can occur."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SOFTMAXES = ("full", "adaptive")
# Cluster boundaries for an adaptive softmax, kept while each leaves a real tail behind
# it. The head is small because the most frequent words carry most running text, so most
# tokens never touch a tail; a smaller head trained faster, and to a lower perplexity,
# than a larger one (see benchmarks/quality/FINDINGS.md).
ADAPTIVE_CUTOFFS = (1000, 4000, 20000, 100000)

# The output layer's product runs with its width padded to a multiple of this (zero weight
# rows, -inf bias: a softmax over the result is the same distribution, the extra columns
# get probability 0 and gradient 0). A CPU's float32 sgemm runs much faster on an aligned
# output width, and GPU tensor cores want multiples of 8 (see benchmarks/quality/FINDINGS.md).
OUTPUT_ALIGN = 16
# Fewer rows than this (a token at a time, as generation runs) go unpadded: there the copy
# of the weight would cost about what the product does.
ALIGN_MIN_ROWS = 64
# Logits per block when scoring: on a CPU a block's logits stay in the cache while the
# softmax reads them; a GPU is better served by few large products.
BLOCK_FLOATS_CPU = 1 << 21
BLOCK_FLOATS_GPU = 1 << 25


def aligned_weights(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight and bias padded to an aligned output width (zero rows, -inf
    bias), or the layer's own where the width is aligned already."""
    extra = -layer.out_features % OUTPUT_ALIGN
    if extra == 0:
        return layer.weight, layer.bias
    bias = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
    return F.pad(layer.weight, (0, 0, 0, extra)), F.pad(bias, (0, extra), value=float("-inf"))


def aligned_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for an output layer, maybe with extra columns of -inf on the right:
    (..., in) -> (..., out + pad). Only for what a softmax or a gather at real ids reads."""
    if -layer.out_features % OUTPUT_ALIGN == 0 or x.numel() < ALIGN_MIN_ROWS * x.shape[-1]:
        return layer(x)
    return F.linear(x, *aligned_weights(layer))


def blocked_target_log_probs(layer: nn.Linear, x: torch.Tensor, targets: torch.Tensor,
                             block_floats: int) -> torch.Tensor:
    """``log_softmax(layer(x))`` at ``targets`` (float32), rows (..., in) taken a block at a
    time: each block's logits are reduced while they are still in the cache, instead of
    a whole batch's logits going to memory and back twice. The weight is padded once."""
    weight, bias = aligned_weights(layer) if len(x) >= ALIGN_MIN_ROWS else (layer.weight, layer.bias)
    rows = max(ALIGN_MIN_ROWS, block_floats // weight.shape[0])
    if len(x) <= rows:
        return -F.cross_entropy(F.linear(x, weight, bias).float(), targets, reduction="none")
    return torch.cat([-F.cross_entropy(F.linear(x[first:first + rows], weight, bias).float(),
                                       targets[first:first + rows], reduction="none")
                      for first in range(0, len(x), rows)])


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cluster boundaries for an adaptive softmax over ``vocab_size`` tokens (ids are
    sorted by frequency, most frequent first): 1000, 4000, 20000, 100000 while each leaves
    a tail at least a quarter of its own size behind it. Empty when the vocabulary is too
    small for clusters to pay."""
    return [c for c in ADAPTIVE_CUTOFFS if vocab_size >= c * 5 // 4]


class AdaptiveSoftmax(nn.Module):
    """The output layer of Grave et al. (2017), "Efficient softmax approximation for GPUs".

    Ids below ``cutoffs[0]`` (the frequent ones: ids are sorted by frequency) get a row of
    the head, and each later range [cutoffs[i], cutoffs[i+1]) is one cluster: a head row
    gives the cluster's probability and a small tail (features projected down by
    ``div**(i+1)``) the word's within it. The result is an exact, normalised distribution
    over the whole vocabulary. Training asks only for the targets' log-probabilities,
    which touch a tail only for the rows whose target lies in it: that is where the time
    goes, since most tokens are in the head. Scores and samples use :meth:`log_probs`,
    the full distribution.
    """

    def __init__(self, in_features: int, vocab_size: int, cutoffs: list[int], div: float) -> None:
        super().__init__()
        self.bounds = [0, *cutoffs, vocab_size]
        self.head_size = cutoffs[0]
        self.head = nn.Linear(in_features, cutoffs[0] + len(cutoffs))
        self.tails = nn.ModuleList()
        for i in range(len(cutoffs)):
            width = max(min(8, in_features), int(in_features // div ** (i + 1)))
            self.tails.append(nn.Sequential(nn.Linear(in_features, width, bias=False),
                                            nn.Linear(width, self.bounds[i + 2] - self.bounds[i + 1])))

    def reset_parameters(self) -> None:
        for layer in (self.head, *(tail[1] for tail in self.tails)):
            bound = 1.0 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        for tail in self.tails:
            nn.init.xavier_uniform_(tail[0].weight)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (float32) of every token: x (..., features) -> (..., vocab)."""
        head = F.log_softmax(aligned_linear(self.head, x).float(), dim=-1)
        parts = [head[..., : self.head_size]]
        for i, (down, out) in enumerate(self.tails):
            within = F.log_softmax(aligned_linear(out, down(x)).float(), dim=-1)[..., : out.out_features]
            parts.append(head[..., self.head_size + i: self.head_size + i + 1] + within)
        return torch.cat(parts, dim=-1)

    def target_log_probs(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (float32) of the targets only: x (n, features), targets (n,)
        with ids in [0, vocab) -> (n,)."""
        head = F.log_softmax(aligned_linear(self.head, x).float(), dim=-1)
        result = head.gather(1, targets.clamp(max=self.head_size - 1)[:, None])[:, 0]
        for i, (down, out) in enumerate(self.tails):
            low, high = self.bounds[i + 1], self.bounds[i + 2]
            rows = ((targets >= low) & (targets < high)).nonzero()[:, 0]
            within = F.log_softmax(aligned_linear(out, down(x[rows])).float(), dim=-1)
            picked = within.gather(1, (targets[rows] - low)[:, None])[:, 0]
            result = result.index_put((rows,), head[rows, self.head_size + i] + picked)
        return result
