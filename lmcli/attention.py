"""An LSTM layer that attends over its own recent outputs (Daniluk, Rocktäschel, Welbl and
Riedel 2017, "Frustratingly Short Attention Spans in Neural Language Modeling").

At step t the LSTM gives h_t, c_t as ``nn.LSTM`` does (blocks i, f, g, o). Y_t holds its
previous K outputs h_{t-K} .. h_{t-1} (fewer at the start; never h_t or anything later:
the attention is causal), and

    additive:  a_j = w . tanh(W_y y_j + W_h h_t)          (Daniluk et al.'s form)
    dot:       a_j = (y_j . h_t) / sqrt(H)
    alpha      = softmax over the j held of a_j
    r_t        = sum_j alpha_j y_j               (0 while nothing is held)
    o_t        = tanh(W_r r_t + W_x h_t + b_o)   the layer's output

The recurrence runs on h_t; o_t is what the next layer or the output layer reads. The
memory Y and how much of it is filled are part of the state, so attention reaches across
truncated-BPTT windows as the hidden state does.

State: ``(h, c, memory, filled)``: (1, batch, H), (1, batch, H), (1, batch, K*H) with the
newest output last, and (1, batch, 1) the number of outputs held (at most K).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lmcli.cells import RecurrentLayer, State
from lmcli.errors import SettingError

SCORES = ("additive", "dot")
DEFAULT_WINDOW = 16


class _Windows(torch.autograd.Function):
    """``sequence.unfold(0, window, 1)[:time]`` as (time, batch, window, hidden): step t's
    window of entries t .. t+window-1. The same view forward; the backward adds the window
    offsets' slices in place, where unfold's generic backward is many times slower."""

    @staticmethod
    def forward(ctx: Any, sequence: torch.Tensor, time: int, window: int) -> torch.Tensor:
        ctx.window, ctx.length = window, sequence.shape[0]
        return sequence.unfold(0, window, 1)[:time].permute(0, 1, 3, 2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        time = grad.shape[0]
        summed = grad.new_zeros((ctx.length, grad.shape[1], grad.shape[3]))
        for offset in range(ctx.window):
            summed[offset:offset + time] += grad[:, :, offset]
        return summed, None, None


class AttentionLSTM(RecurrentLayer):
    """``attention``: one attention-LSTM layer (equations in the module docstring)."""

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True,
                 window: int = DEFAULT_WINDOW, score: str = "additive") -> None:
        if window < 1:
            raise SettingError(f"{{attn_window}} must be at least 1, got {window}")
        if score not in SCORES:
            raise SettingError(f"{{attn_score}} must be one of {', '.join(SCORES)}, got {score!r}")
        self.window, self.score = window, score
        super().__init__(input_size, hidden_size, batch_first)

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {"window": config.attn_window, "score": config.attn_score}

    def add_parameters(self) -> None:
        hidden = self.hidden_size
        self.memory_proj = nn.Linear(hidden, hidden, bias=False)  # W_y
        self.query_proj = nn.Linear(hidden, hidden, bias=False)  # W_h
        self.score_vector = nn.Parameter(torch.empty(hidden))  # w
        self.read_proj = nn.Linear(hidden, hidden, bias=False)  # W_r
        self.out_proj = nn.Linear(hidden, hidden)  # W_x, b_o

    def reset_parameters(self) -> None:
        super().reset_parameters()
        hidden = self.hidden_size
        with torch.no_grad():
            self.bias_l0[hidden:2 * hidden] = 1.0  # forget gate: keep memory by default
            for linear in (self.memory_proj, self.query_proj, self.read_proj, self.out_proj):
                nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(self.out_proj.bias)
            nn.init.uniform_(self.score_vector, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    @classmethod
    def state_sizes(cls, hidden_size: int, window: int = DEFAULT_WINDOW) -> tuple[int, ...]:
        return (hidden_size, hidden_size, window * hidden_size, 1)

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> State:
        return tuple(torch.zeros((1, batch_size, size), device=device, dtype=dtype)
                     for size in self.state_sizes(self.hidden_size, self.window))

    def forward(self, x: torch.Tensor, state: Sequence[torch.Tensor]) -> tuple[torch.Tensor, State]:
        """The LSTM part is exactly ``nn.LSTM``'s, so it runs in PyTorch's fused kernel;
        the attention, which never feeds back into it, then reads every step's window at
        once. Shapes as :meth:`RecurrentLayer.forward`."""
        h, c, memory, filled = state
        batch, hidden, window = x.shape[0], self.hidden_size, self.window
        weights = (self.weight_ih_l0, self.weight_hh_l0, self.bias_l0, torch.zeros_like(self.bias_l0))
        steps, h_n, c_n = torch.lstm(x.transpose(0, 1), (h.to(x.dtype), c.to(x.dtype)), weights,
                                     True, 1, 0.0, self.training, False, False)  # (time, batch, hidden)
        # Memory then this window's outputs: step t reads entries t .. t+K-1 of it.
        sequence = torch.cat([memory[0].reshape(batch, window, hidden).transpose(0, 1).to(steps.dtype), steps])
        outputs = self._attend(steps, sequence, filled[0, :, 0])
        kept = sequence[-window:].transpose(0, 1).reshape(1, batch, window * hidden)
        held = torch.clamp(filled + steps.shape[0], max=window)
        final = (h_n, c_n, kept, held)
        return outputs.transpose(0, 1), tuple(new.to(old.dtype) for new, old in zip(final, state))

    def _attend(self, steps: torch.Tensor, sequence: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        """o_t for every step: alpha over the held entries of its window only (r = 0 if none)."""
        time, window = steps.shape[0], self.window
        values = _Windows.apply(sequence, time, window)  # (time, batch, K, hidden)
        if self.score == "additive":
            keys = _Windows.apply(self.memory_proj(sequence), time, window)
            scores = torch.tanh(keys + self.query_proj(steps)[:, :, None]) @ self.score_vector.to(keys.dtype)
        else:
            scores = (values @ steps[..., None].to(values.dtype))[..., 0] / math.sqrt(self.hidden_size)
        if scores.dtype in (torch.float16, torch.bfloat16):  # autocast: the softmax in float32
            scores = scores.float()
        position = torch.arange(time, device=steps.device)[:, None] + torch.arange(window, device=steps.device)
        held = position[:, None, :] >= window - filled[None, :, None]  # (time, batch, K)
        scores = scores.masked_fill(~held, float("-inf"))
        top = scores.max(-1, keepdim=True).values
        weights = torch.exp(scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
        alpha = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        read = (alpha[..., None, :].to(values.dtype) @ values)[..., 0, :]  # (time, batch, hidden)
        return torch.tanh(self.read_proj(read) + self.out_proj(steps))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, window={self.window}, score={self.score}"
