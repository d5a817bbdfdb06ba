"""The textbook recurrent cells PyTorch does not ship, each one recurrent layer.

A layer here has the interface of a single-layer ``nn.LSTM(batch_first=True)`` as
:class:`lmcli.model.RNNLM` uses it: ``layer(x, state) -> (output, final_state)`` with x
(batch, time, input), output (batch, time, hidden), and the state a tuple of parts, each
(1, batch, part size); the sizes come from the class (:meth:`RecurrentLayer.state_sizes`),
so a cell may carry more than (h,) or (h, c), and parts of other sizes. The input-to-hidden
and hidden-to-hidden matrices are named as PyTorch names them (``weight_ih_l0``,
``weight_hh_l0``: blocks of ``hidden`` rows, one per gate), so weight-drop swaps
``weight_hh_l0`` for one pass the same way for every cell.

Notation of the docstrings: x_t the layer's input, h_t its output, c_t a cell state; W the
input blocks (``weight_ih_l0``), U the recurrent blocks (``weight_hh_l0``), b the bias
(``bias_l0``), sigma the logistic function, * the elementwise product.

Speed: the input product of the whole window is one matrix product before the loop, so a
step costs one (batch, hidden) x (hidden, gates * hidden) product and the elementwise
gate arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

State = tuple[torch.Tensor, ...]


class RecurrentLayer(nn.Module):
    """One recurrent layer of ``gates`` blocks; subclasses give :meth:`scan` (the time loop
    over the precomputed input products) and, for more state than h, :meth:`state_sizes`."""

    gates: ClassVar[int] = 1
    state_parts: ClassVar[int] = 1  # hidden-sized parts of the state: (h,), (h, c)

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("recurrent cells take (batch, time, features) input")
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gates * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_l0 = nn.Parameter(torch.empty(rows))
        self.add_parameters()
        self.reset_parameters()

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        """What the layer takes from a ModelConfig beyond its sizes, checked (a SettingError
        names what is wrong): nothing, for most cells."""
        return {}

    def add_parameters(self) -> None:
        """Where a cell registers parameters beyond W, U and b (before they are set)."""

    @classmethod
    def state_sizes(cls, hidden_size: int) -> tuple[int, ...]:
        """The size of each part of the carried state: ``state_parts`` of the hidden size."""
        return (hidden_size,) * cls.state_parts

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> State:
        """The state before the first token: zeros, each part (1, batch, part size)."""
        return tuple(torch.zeros((1, batch_size, size), device=device, dtype=dtype)
                     for size in self.state_sizes(self.hidden_size))

    def reset_parameters(self) -> None:
        """Orthogonal recurrent blocks and Xavier input blocks, one per gate (each gate's
        product starts norm-preserving); zero biases."""
        hidden = self.hidden_size
        with torch.no_grad():
            for gate in range(self.gates):
                nn.init.orthogonal_(self.weight_hh_l0[gate * hidden:(gate + 1) * hidden])
                nn.init.xavier_uniform_(self.weight_ih_l0[gate * hidden:(gate + 1) * hidden])
            nn.init.zeros_(self.bias_l0)

    def forward(self, x: torch.Tensor, state: Sequence[torch.Tensor]) -> tuple[torch.Tensor, State]:
        """x (batch, time, input), state parts (1, batch, size) -> output (batch, time,
        hidden) and the final state, each part in the dtype it came in."""
        # (time, batch, gates * hidden): one product for the whole window, time-major so
        # that each step reads a contiguous slice.
        projected = torch.nn.functional.linear(x.transpose(0, 1), self.weight_ih_l0, self.bias_l0)
        output, final = self.scan(projected, tuple(part[0] for part in state))
        return output.transpose(0, 1), tuple(new.unsqueeze(0).to(old.dtype) for new, old in zip(final, state))

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The time loop: projected (time, batch, gates * hidden), state parts (batch,
        size) -> outputs (time, batch, hidden) and the final state parts."""
        raise NotImplementedError


class ReluRNN(RecurrentLayer):
    """``rnn-relu``: h_t = relu(W x_t + U h_{t-1} + b).

    U starts as the identity (IRNN, Le et al. 2015), not orthogonal: with relu and U = I a
    non-negative state is copied forward unchanged until the inputs change it, so the
    gradient through many steps neither vanishes nor explodes at the start of training,
    which lets a plain relu network learn long dependencies; ``identity_init=False`` gives
    the orthogonal start of the other cells.
    """

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = True,
                 identity_init: bool = True) -> None:
        self.identity_init = identity_init
        super().__init__(input_size, hidden_size, batch_first)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.identity_init:
            with torch.no_grad():
                self.weight_hh_l0.copy_(torch.eye(self.hidden_size))

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (h,) = state
        recurrent = self.weight_hh_l0.t()
        outputs = []
        for step in projected:  # (batch, hidden)
            h = torch.relu(torch.addmm(step, h, recurrent))
            outputs.append(h)
        return torch.stack(outputs), (h,)


class PeepholeLSTM(RecurrentLayer):
    """``lstm-peephole``: the LSTM whose gates also read the cell state through diagonal
    (elementwise) peephole weights p (Gers & Schmidhuber 2000); i and f read c_{t-1}, o
    reads the new c_t. Blocks in PyTorch's order i, f, g, o::

        i_t = sigma(W_i x_t + U_i h_{t-1} + p_i * c_{t-1} + b_i)
        f_t = sigma(W_f x_t + U_f h_{t-1} + p_f * c_{t-1} + b_f)
        g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigma(W_o x_t + U_o h_{t-1} + p_o * c_t + b_o)
        h_t = o_t * tanh(c_t)

    ``weight_peephole_l0`` holds (p_i, p_f, p_o), (3, hidden), zero at the start (the plain
    LSTM); b_f starts at 1 so that memory is kept by default. State (h, c).
    """

    gates = 4

    def add_parameters(self) -> None:
        self.weight_peephole_l0 = nn.Parameter(torch.empty(3, self.hidden_size))

    state_parts = 2  # (h, c)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias_l0[self.hidden_size:2 * self.hidden_size].fill_(1.0)
            self.weight_peephole_l0.zero_()

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        recurrent = self.weight_hh_l0.t()
        peep_i, peep_f, peep_o = self.weight_peephole_l0
        outputs = []
        for step in projected:
            i, f, g, o = torch.addmm(step, h, recurrent).chunk(4, dim=1)
            i = torch.sigmoid(i + peep_i * c)
            f = torch.sigmoid(f + peep_f * c)
            c = f * c + i * torch.tanh(g)
            h = torch.sigmoid(o + peep_o * c) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


class CoupledLSTM(RecurrentLayer):
    """``lstm-coupled`` (CIFG, coupled input and forget gate; Greff et al. 2015): one gate
    decides both what enters and what is forgotten. Blocks i, g, o::

        i_t = sigma(W_i x_t + U_i h_{t-1} + b_i)
        f_t = 1 - i_t
        g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)
        c_t = f_t * c_{t-1} + i_t * g_t
        o_t = sigma(W_o x_t + U_o h_{t-1} + b_o)
        h_t = o_t * tanh(c_t)

    b_i starts at -1, the coupled form of the forget bias 1: f_t = 1 - sigma(b_i) =
    sigma(-b_i) = sigma(1), memory kept by default. State (h, c).
    """

    gates = 3

    state_parts = 2  # (h, c)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.bias_l0[:self.hidden_size].fill_(-1.0)

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        recurrent = self.weight_hh_l0.t()
        outputs = []
        for step in projected:
            i, g, o = torch.addmm(step, h, recurrent).chunk(3, dim=1)
            i = torch.sigmoid(i)
            c = c + i * (torch.tanh(g) - c)  # (1 - i) * c + i * g
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


class MinimalGRU(RecurrentLayer):
    """``gru-minimal``: the simplified GRU taught before the full one, with the update
    gate only and no reset gate; its output is its memory, h_t = c_t. Blocks u, c~, with
    W and U together the matrix over [c_{t-1}, x_t]::

        u_t  = sigma(W_u x_t + U_u c_{t-1} + b_u)
        c~_t = tanh(W_c x_t + U_c c_{t-1} + b_c)
        c_t  = u_t * c~_t + (1 - u_t) * c_{t-1}

    State (c,).
    """

    gates = 2

    def scan(self, projected: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (c,) = state
        recurrent = self.weight_hh_l0.t()
        outputs = []
        for step in projected:
            u, candidate = torch.addmm(step, c, recurrent).chunk(2, dim=1)
            u = torch.sigmoid(u)
            c = c + u * (torch.tanh(candidate) - c)  # u * c~ + (1 - u) * c
            outputs.append(c)
        return torch.stack(outputs), (c,)


CELL_CLASSES: dict[str, type[RecurrentLayer]] = {
    "rnn-relu": ReluRNN,
    "lstm-peephole": PeepholeLSTM,
    "lstm-coupled": CoupledLSTM,
    "gru-minimal": MinimalGRU,
}
"""The cells of this module by their ``--model`` names."""

