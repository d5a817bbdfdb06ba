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

import torch
from torch import nn

from lmcli.cells import RecurrentLayer, State
from lmcli.errors import SettingError

SCORES = ("additive", "dot")
DEFAULT_WINDOW = 16


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

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        batch, hidden, window = projected.shape[1], self.hidden_size, self.window
        h, c, memory, filled = state[0], state[1], state[2].reshape(batch, window, hidden), state[3][:, 0]
        keys = self.memory_proj(memory) if self.score == "additive" else memory
        recurrent = self.weight_hh_l0.t()
        slots = torch.arange(window, device=projected.device)
        outputs = []
        for inputs in projected:  # (batch, 4 * hidden)
            i, f, g, o = torch.addmm(inputs, h, recurrent).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            held = slots[None, :] >= window - filled[:, None]  # the newest `filled` slots
            outputs.append(self._attend(h, memory, keys, held))
            memory = torch.cat([memory[:, 1:], h[:, None].to(memory.dtype)], 1)
            new_key = self.memory_proj(h) if self.score == "additive" else h
            keys = torch.cat([keys[:, 1:], new_key[:, None].to(keys.dtype)], 1)
            filled = torch.clamp(filled + 1, max=window)
        return torch.stack(outputs), (h, c, memory.reshape(batch, window * hidden), filled[:, None])

    def _attend(self, h: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, held: torch.Tensor
                ) -> torch.Tensor:
        """o_t from h_t and the held outputs (alpha over held slots only; r = 0 if none)."""
        if self.score == "additive":
            scores = torch.tanh(keys + self.query_proj(h)[:, None]) @ self.score_vector.to(keys.dtype)
        else:
            scores = (keys @ h[:, :, None].to(keys.dtype))[:, :, 0] / math.sqrt(self.hidden_size)
        if scores.dtype in (torch.float16, torch.bfloat16):  # autocast: the softmax in float32
            scores = scores.float()
        scores = scores.masked_fill(~held, float("-inf"))
        top = scores.max(1, keepdim=True).values
        weights = torch.exp(scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
        alpha = weights / weights.sum(1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        read = (alpha[:, :, None].to(memory.dtype) * memory).sum(1)
        return torch.tanh(self.read_proj(read) + self.out_proj(h))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, window={self.window}, score={self.score}"
