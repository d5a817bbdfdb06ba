"""The Clockwork RNN layer against the equations of Koutník et al. 2014, written here apart
from the module: module by module, one step at a time, float64."""

from __future__ import annotations

import pytest
import torch

from lmcli.clockwork import ClockworkRNN, check_periods, parse_periods
from lmcli.errors import SettingError

PERIODS = (1, 2, 4)


def reference(x, h0, step0, w_ih, w_hh, b, periods):
    """Per module i (size k): active when t mod T_i == 0; then
    h[i] = tanh(W_ih[i] x + sum over modules j with T_j >= T_i of W_hh[i, j] h[j] + b[i])."""
    k = h0.shape[1] // len(periods)
    h, outputs = h0.clone(), []
    for s in range(x.shape[1]):
        t = step0 + s
        new = h.clone()
        for i, period in enumerate(periods):
            if t % period:
                continue
            rows = slice(i * k, (i + 1) * k)
            total = x[:, s] @ w_ih[rows].t() + b[rows]
            for j, other in enumerate(periods):
                if other >= period:
                    cols = slice(j * k, (j + 1) * k)
                    total = total + h[:, cols] @ w_hh[rows, cols].t()
            new[:, rows] = torch.tanh(total)
        h = new
        outputs.append(h)
    return torch.stack(outputs, 1)


def _layer(seed: int = 0) -> ClockworkRNN:
    torch.manual_seed(seed)
    layer = ClockworkRNN(3, 6, periods=PERIODS).double()
    with torch.no_grad():
        layer.bias_l0.normal_()
    return layer


@pytest.mark.parametrize("step0", [0, 1, 3])
def test_values_and_gradients_match_the_equations(step0: int) -> None:
    layer = _layer()
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 6, dtype=torch.float64)
    state = (h0[None], torch.full((1, 2, 1), float(step0), dtype=torch.float64))
    out, (h_final, step_final) = layer(x, state)
    expected = reference(x, h0, step0, layer.weight_ih_l0, layer.weight_hh_l0,
                         layer.bias_l0, PERIODS)
    assert torch.allclose(out, expected, atol=1e-12)
    assert torch.equal(h_final[0], out[:, -1]) and float(step_final[0, 0, 0]) == (step0 + 7) % 4
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [x, layer.weight_hh_l0, layer.weight_ih_l0])
    grads_ref = torch.autograd.grad((expected * weights).sum(), [x, layer.weight_hh_l0, layer.weight_ih_l0])
    for got, want in zip(grads, grads_ref):
        assert torch.allclose(got, want, atol=1e-12)


def test_a_module_keeps_its_state_between_its_steps() -> None:
    layer = _layer()
    x = torch.randn(1, 8, 3, dtype=torch.float64)
    out, _ = layer(x, layer.initial_state(1, x.device, x.dtype))
    slowest = out[0, :, 4:6]  # period 4: changes at t = 0 and 4 only
    for t in range(1, 8):
        assert torch.equal(slowest[t], slowest[t - 1]) == (t % 4 != 0)
    middle = out[0, :, 2:4]  # period 2
    assert all(torch.equal(middle[t], middle[t - 1]) for t in (1, 3, 5, 7))


def test_a_fast_module_never_reaches_a_slow_one() -> None:
    """The recurrent matrix's blocks below the diagonal (fast -> slow) are never used."""
    layer = _layer()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    before, _ = layer(x, layer.initial_state(2, x.device, x.dtype))
    with torch.no_grad():
        layer.weight_hh_l0[4:6, 0:4] += 10.0  # module 2 (slowest) reading modules 0 and 1
    after, _ = layer(x, layer.initial_state(2, x.device, x.dtype))
    assert torch.equal(before, after)


def test_windows_carry_the_state_and_the_step() -> None:
    """Two BPTT windows with the state carried give what one long window gives."""
    layer = _layer()
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    whole, _ = layer(x, layer.initial_state(2, x.device, x.dtype))
    first, state = layer(x[:, :3], layer.initial_state(2, x.device, x.dtype))
    second, _ = layer(x[:, 3:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-12)


def test_the_reference_catches_a_wrong_mask() -> None:
    """The comparison above fails when the layer's formula changes: here, a full matrix."""
    layer = _layer()
    layer.mask.fill_(1.0)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    h0 = torch.randn(2, 6, dtype=torch.float64)
    out, _ = layer(x, (h0[None], torch.zeros((1, 2, 1), dtype=torch.float64)))
    expected = reference(x, h0, 0, layer.weight_ih_l0, layer.weight_hh_l0,
                         layer.bias_l0, PERIODS)
    assert not torch.allclose(out, expected, atol=1e-6)


def test_bad_periods_are_setting_errors() -> None:
    for periods, hidden in (((2, 1), 4), ((1, 3, 4), 6), ((1, 2), 5), ((), 4)):
        with pytest.raises(SettingError):
            check_periods(periods, hidden)
    assert check_periods([1, 2, 4], 12) == (1, 2, 4)
    assert parse_periods("auto", 12) == (1, 2, 4, 8) and parse_periods("auto", 6) == (1, 2)
    assert parse_periods("auto", 16) == tuple(2**i for i in range(8))
    with pytest.raises(SettingError):
        parse_periods("1,two", 4)
