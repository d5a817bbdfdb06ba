"""The Clockwork RNN (Koutník, Greff, Gomez and Schmidhuber 2014), as one recurrent layer.

The hidden state h (size H) is split into g modules of H/g units, module i with period
T_i (ascending: 1, 2, 4, ... by default). At step t (counted from 0, carried in the state)
module i is active when t mod T_i = 0:

    a_t      = W_ih x_t + b_ih + W_hh (M * h_{t-1}) + b_hh    (M: block upper triangular)
    h_t[i]   = tanh(a_t[i])   if t mod T_i = 0
    h_t[i]   = h_{t-1}[i]     otherwise

M keeps block (i, j) of the recurrent matrix only when T_j >= T_i: a module reads itself
and the slower modules, never a faster one, so slow modules hold long-range context while
fast ones follow the input. The step counter is part of the state (kept modulo the
largest period, which every period divides when they are powers of two, and which is
enough in general only for periods that divide it: :func:`check_periods` insists), so it
survives truncated-BPTT windows, checkpoints and resuming.

State: ``(h, step)``, shapes (1, batch, H) and (1, batch, 1) (the step as a float, exact
for counters below 2**24).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmcli.errors import SettingError

DEFAULT_PERIODS = (1, 2, 4, 8, 16, 32, 64, 128)


def check_periods(periods: Sequence[int], hidden_dim: int) -> tuple[int, ...]:
    """Periods ascending, each dividing the largest, and a hidden size they split evenly."""
    periods = tuple(int(p) for p in periods)
    if not periods or any(p < 1 for p in periods) or list(periods) != sorted(periods):
        raise SettingError(f"{{periods}} must be ascending positive integers, got {list(periods)}")
    if any(periods[-1] % p for p in periods):
        raise SettingError(f"{{periods}}: each period must divide the largest ({periods[-1]}), got {list(periods)}")
    if hidden_dim % len(periods):
        raise SettingError(f"{{hidden_dim}} ({hidden_dim}) must split evenly into the {len(periods)} "
                           "clockwork modules of {periods}")
    return periods


class ClockworkLayer(nn.Module):
    """One Clockwork RNN layer with the interface of a batch-first ``nn.RNN``: input (batch,
    time, input), state ``(h, step)``, output (batch, time, hidden)."""

    def __init__(self, input_dim: int, hidden_dim: int, periods: Sequence[int] = DEFAULT_PERIODS) -> None:
        super().__init__()
        self.periods = check_periods(periods, hidden_dim)
        self.hidden_dim = hidden_dim
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_dim, input_dim))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.bias_ih_l0 = nn.Parameter(torch.empty(hidden_dim))
        self.bias_hh_l0 = nn.Parameter(torch.empty(hidden_dim))
        size = hidden_dim // len(self.periods)
        module_period = torch.tensor(self.periods, dtype=torch.float32).repeat_interleave(size)
        # (H,) period of each unit; (H, H) recurrent mask: row unit reads column unit when the
        # column's module is at least as slow.
        self.register_buffer("unit_period", module_period, persistent=False)
        self.register_buffer("mask", (module_period[None, :] >= module_period[:, None]).float(),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight_ih_l0)
        nn.init.orthogonal_(self.weight_hh_l0)
        nn.init.zeros_(self.bias_ih_l0)
        nn.init.zeros_(self.bias_hh_l0)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros((1, batch_size, self.hidden_dim), device=device, dtype=dtype),
                torch.zeros((1, batch_size, 1), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, step = state[0][0], state[1][0, :, 0]  # (batch, H), (batch,)
        recurrent = self.weight_hh_l0 * self.mask.to(self.weight_hh_l0.dtype)
        inputs = torch.nn.functional.linear(x, self.weight_ih_l0, self.bias_ih_l0 + self.bias_hh_l0)
        period = self.unit_period.to(h.dtype)
        largest = float(self.periods[-1])
        outputs = []
        for t in range(x.shape[1]):
            active = torch.remainder(step[:, None], period[None, :]) == 0  # (batch, H)
            new = torch.tanh(inputs[:, t] + h @ recurrent.t())
            h = torch.where(active, new, h)
            outputs.append(h)
            step = torch.remainder(step + 1, largest)
        output = torch.stack(outputs, 1) if outputs else x.new_zeros((x.shape[0], 0, self.hidden_dim))
        return output, (h[None], step[None, :, None])

    def extra_repr(self) -> str:
        return f"hidden={self.hidden_dim}, periods={list(self.periods)}"

