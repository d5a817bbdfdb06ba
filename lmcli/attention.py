"""An LSTM layer that attends over its own recent outputs (Daniluk, Rocktäschel, Welbl and
Riedel 2017, "Frustratingly Short Attention Spans in Neural Language Modeling").

At step t the LSTM gives h_t, c_t as usual. Y_t holds its previous K outputs h_{t-K} ..
h_{t-1} (fewer at the start; never h_t or anything later: the attention is causal), and

    additive:  a_j = w . tanh(W_y y_j + W_h h_t)          (Daniluk et al.'s form)
    dot:       a_j = (y_j . h_t) / sqrt(H)
    alpha      = softmax over the j held of a_j
    r_t        = sum_j alpha_j y_j               (0 while nothing is held)
    o_t        = tanh(W_r r_t + W_x h_t)         the layer's output

The recurrence itself runs on h_t (o_t is what the next layer or the output layer reads).
The memory Y and how much of it is filled are part of the state, so attention reaches
across truncated-BPTT windows like the hidden state does.

State: ``(h, c, memory, filled)``: (1, batch, H), (1, batch, H), (1, batch, K*H) with the
newest output last, and (1, batch, 1) the number of outputs held (a float, at most K).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lmcli.errors import SettingError

SCORES = ("additive", "dot")


class AttentionLSTMLayer(nn.Module):
    """One attention-LSTM layer, batch-first like ``nn.LSTM``: (batch, time, input) in,
    (batch, time, hidden) out."""

    def __init__(self, input_dim: int, hidden_dim: int, window: int = 16, score: str = "additive") -> None:
        super().__init__()
        if window < 1:
            raise SettingError(f"{{attn_window}} must be at least 1, got {window}")
        if score not in SCORES:
            raise SettingError(f"{{attn_score}} must be one of {', '.join(SCORES)}, got {score!r}")
        self.hidden_dim, self.window, self.score = hidden_dim, window, score
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_dim, input_dim))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_dim, hidden_dim))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_dim))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_dim))
        self.memory_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_y
        self.query_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_h
        self.score_vector = nn.Parameter(torch.empty(hidden_dim))  # w
        self.read_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_r
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)  # W_x and the output bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        hidden = self.hidden_dim
        for gate in range(4):  # i, f, g, o as in nn.LSTM
            nn.init.xavier_uniform_(self.weight_ih_l0.data[gate * hidden:(gate + 1) * hidden])
            nn.init.orthogonal_(self.weight_hh_l0.data[gate * hidden:(gate + 1) * hidden])
        nn.init.zeros_(self.bias_ih_l0)
        nn.init.zeros_(self.bias_hh_l0)
        nn.init.ones_(self.bias_ih_l0.data[hidden:2 * hidden])  # forget gate: keep by default
        for linear in (self.memory_proj, self.query_proj, self.read_proj, self.out_proj):
            nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(self.out_proj.bias)
        nn.init.uniform_(self.score_vector, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype
                      ) -> tuple[torch.Tensor, ...]:
        def zeros(size: int) -> torch.Tensor:
            return torch.zeros((1, batch_size, size), device=device, dtype=dtype)
        return zeros(self.hidden_dim), zeros(self.hidden_dim), zeros(self.window * self.hidden_dim), zeros(1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        batch, hidden, window = x.shape[0], self.hidden_dim, self.window
        h, c = state[0][0], state[1][0]
        memory = state[2][0].reshape(batch, window, hidden)  # oldest first
        filled = state[3][0, :, 0]
        keys = self.memory_proj(memory) if self.score == "additive" else memory
        gates_in = F.linear(x, self.weight_ih_l0, self.bias_ih_l0 + self.bias_hh_l0)
        slots = torch.arange(window, device=x.device)
        outputs = []
        for t in range(x.shape[1]):
            gates = gates_in[:, t] + h @ self.weight_hh_l0.t()
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            held = slots[None, :] >= window - filled[:, None]  # (batch, window): the newest `filled`
            outputs.append(self._attend(h, memory, keys, held))
            memory = torch.cat([memory[:, 1:], h[:, None]], 1)
            new_key = self.memory_proj(h) if self.score == "additive" else h
            keys = torch.cat([keys[:, 1:], new_key[:, None]], 1)
            filled = torch.clamp(filled + 1, max=window)
        output = torch.stack(outputs, 1) if outputs else x.new_zeros((batch, 0, hidden))
        return output, (h[None], c[None], memory.reshape(1, batch, window * hidden), filled[None, :, None])

    def _attend(self, h: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, held: torch.Tensor
                ) -> torch.Tensor:
        """o_t from h_t and the held outputs (alpha over held slots only; r = 0 if none)."""
        if self.score == "additive":
            scores = torch.tanh(keys + self.query_proj(h)[:, None]) @ self.score_vector
        else:
            scores = (keys @ h[:, :, None])[:, :, 0] / math.sqrt(self.hidden_dim)
        scores = scores.masked_fill(~held, float("-inf"))
        top = scores.max(1, keepdim=True).values
        weights = torch.exp(scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
        alpha = weights / weights.sum(1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        read = (alpha[:, :, None] * memory).sum(1)
        return torch.tanh(self.read_proj(read) + self.out_proj(h))

    def extra_repr(self) -> str:
        return f"hidden={self.hidden_dim}, window={self.window}, score={self.score}"
