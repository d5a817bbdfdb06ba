"""The Clockwork RNN (Koutník, Greff, Gomez and Schmidhuber 2014), as one recurrent layer.

The hidden state h (size H) is split into g modules of H/g units, module i with period
T_i (ascending: 1, 2, 4, ... by default). At step t (counted from 0, carried in the state)
module i is active when t mod T_i = 0:

    a_t      = W x_t + b + (M * U) h_{t-1}        (M: block upper triangular)
    h_t[i]   = tanh(a_t[i])   if t mod T_i = 0
    h_t[i]   = h_{t-1}[i]     otherwise

M keeps block (i, j) of U only when T_j >= T_i: a module reads itself and the slower
modules, never a faster one, so slow modules hold long-range context while fast ones
follow the input. The step counter is part of the state, kept modulo the largest period
(which every period must divide, so nothing is lost): it survives truncated-BPTT windows,
checkpoints and resuming.

State: ``(h, step)``, (1, batch, H) and (1, batch, 1); the step is a float, exact far
beyond any period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmcli.cells import RecurrentLayer, State
from lmcli.errors import SettingError

AUTO = "auto"


def parse_periods(text: str, hidden_dim: int) -> tuple[int, ...]:
    """``auto`` (1, 2, 4, ... over as many modules, up to 8, as split the hidden size
    evenly) or a list such as ``1,2,4,8``, checked against the hidden size."""
    if text.strip().lower() == AUTO:
        modules = next(g for g in (8, 4, 2, 1) if hidden_dim % g == 0)
        return tuple(2**i for i in range(modules))
    try:
        periods = [int(part) for part in text.split(",")]
    except ValueError:
        raise SettingError(f"{{periods}} must be auto or integers such as 1,2,4,8, got {text!r}") from None
    return check_periods(periods, hidden_dim)


def check_periods(periods: Sequence[int], hidden_dim: int) -> tuple[int, ...]:
    """Periods ascending, each dividing the largest, and a hidden size they split evenly."""
    periods = tuple(int(p) for p in periods)
    if not periods or any(p < 1 for p in periods) or list(periods) != sorted(set(periods)):
        raise SettingError(f"{{periods}} must be increasing positive integers, got {list(periods)}")
    if any(periods[-1] % p for p in periods):
        raise SettingError(f"{{periods}}: each period must divide the largest ({periods[-1]}), got {list(periods)}")
    if hidden_dim % len(periods):
        raise SettingError(f"{{hidden_dim}} ({hidden_dim}) must split evenly into the {len(periods)} "
                           "clockwork modules of {periods}")
    return periods


class ClockworkRNN(RecurrentLayer):
    """``clockwork``: one Clockwork RNN layer (equations in the module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True,
                 periods: Sequence[int] | str = AUTO) -> None:
        self.periods = (parse_periods(periods, hidden_size) if isinstance(periods, str)
                        else check_periods(periods, hidden_size))
        super().__init__(input_size, hidden_size, batch_first)

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {"periods": parse_periods(config.periods, config.hidden_dim)}

    def add_parameters(self) -> None:
        size = self.hidden_size // len(self.periods)
        unit_period = torch.tensor(self.periods, dtype=torch.float32).repeat_interleave(size)
        # (H,) each unit's period; (H, H) mask: a row unit reads a column unit when the
        # column's module is at least as slow.
        self.register_buffer("unit_period", unit_period, persistent=False)
        self.register_buffer("mask", (unit_period[None, :] >= unit_period[:, None]).float(), persistent=False)

    @classmethod
    def state_sizes(cls, hidden_size: int) -> tuple[int, ...]:
        return (hidden_size, 1)

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, step = state[0], state[1][:, 0]  # (batch, H), (batch,)
        recurrent = (self.weight_hh_l0 * self.mask.to(self.weight_hh_l0.dtype)).t()
        period = self.unit_period.to(step.dtype)
        largest = float(self.periods[-1])
        outputs = []
        for inputs in projected:  # (batch, H)
            active = torch.remainder(step[:, None], period[None, :]) == 0  # (batch, H)
            h = torch.where(active, torch.tanh(torch.addmm(inputs, h, recurrent)), h)
            outputs.append(h)
            step = torch.remainder(step + 1, largest)
        return torch.stack(outputs), (h, step[:, None])

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, periods={list(self.periods)}"
