"""The attention-LSTM layer against Daniluk et al.'s equations, written here apart from the
module: one step at a time, a Python list as the memory, float64."""

from __future__ import annotations

import math

import pytest
import torch

from lmcli.attention import AttentionLSTM
from lmcli.errors import SettingError

H, K = 4, 3


def reference(layer: AttentionLSTM, x: torch.Tensor, score: str) -> torch.Tensor:
    """From a zero state: LSTM h_t, c_t; Y = the previous K h's; a_j = w.tanh(W_y y_j +
    W_h h_t) (or y_j.h_t/sqrt(H)); alpha = softmax(a); r = sum alpha_j y_j (0 if Y is empty);
    o_t = tanh(W_r r + W_x h_t + b)."""
    w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
    bias = layer.bias_l0
    batch = x.shape[0]
    h = torch.zeros(batch, H, dtype=x.dtype)
    c = torch.zeros(batch, H, dtype=x.dtype)
    seen: list[torch.Tensor] = []
    outputs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w_ih.t() + h @ w_hh.t() + bias
        i, f, g, o = (z[:, n * H:(n + 1) * H] for n in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        held = seen[-K:]
        if held:
            if score == "additive":
                a = [torch.tanh(y @ layer.memory_proj.weight.t() + h @ layer.query_proj.weight.t())
                     @ layer.score_vector for y in held]
            else:
                a = [(y * h).sum(1) / math.sqrt(H) for y in held]
            alpha = torch.softmax(torch.stack(a, 1), 1)
            r = sum(alpha[:, j:j + 1] * y for j, y in enumerate(held))
        else:
            r = torch.zeros_like(h)
        out = torch.tanh(r @ layer.read_proj.weight.t() + h @ layer.out_proj.weight.t() + layer.out_proj.bias)
        outputs.append(out)
        seen.append(h)
    return torch.stack(outputs, 1)


def _layer(score: str, seed: int = 0) -> AttentionLSTM:
    torch.manual_seed(seed)
    layer = AttentionLSTM(3, H, window=K, score=score).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("score", ["additive", "dot"])
def test_values_and_gradients_match_the_equations(score: str) -> None:
    layer = _layer(score)
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x, layer.initial_state(2, x.device, x.dtype))
    expected = reference(layer, x, score)
    assert torch.allclose(out, expected, atol=1e-12)
    weights = torch.randn_like(out)
    params = [x, layer.weight_hh_l0, layer.memory_proj.weight, layer.score_vector, layer.read_proj.weight]
    if score == "dot":
        params = [x, layer.weight_hh_l0, layer.read_proj.weight]
    grads = torch.autograd.grad((out * weights).sum(), params)
    grads_ref = torch.autograd.grad((expected * weights).sum(), params)
    for got, want in zip(grads, grads_ref):
        assert torch.allclose(got, want, atol=1e-12)


def test_attention_never_looks_ahead() -> None:
    layer = _layer("additive")
    x = torch.randn(1, 8, 3, dtype=torch.float64)
    before, _ = layer(x, layer.initial_state(1, x.device, x.dtype))
    changed = x.clone()
    changed[:, 5:] += 1.0
    after, _ = layer(changed, layer.initial_state(1, x.device, x.dtype))
    assert torch.equal(before[:, :5], after[:, :5]) and not torch.allclose(before[:, 5:], after[:, 5:])


def test_windows_carry_the_memory() -> None:
    layer = _layer("additive")
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    whole, _ = layer(x, layer.initial_state(2, x.device, x.dtype))
    first, state = layer(x[:, :2], layer.initial_state(2, x.device, x.dtype))
    second, state = layer(x[:, 2:5], state)
    third, _ = layer(x[:, 5:], state)
    assert torch.allclose(torch.cat([first, second, third], 1), whole, atol=1e-12)


def test_the_reference_catches_a_wrong_window() -> None:
    """The comparison fails when the layer's formula changes: here, one slot more."""
    layer = _layer("additive")
    wider = AttentionLSTM(3, H, window=K + 1).double()
    wider.load_state_dict(layer.state_dict())
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    out, _ = wider(x, wider.initial_state(2, x.device, x.dtype))
    assert not torch.allclose(out, reference(layer, x, "additive"), atol=1e-6)


def test_bad_settings_are_setting_errors() -> None:
    with pytest.raises(SettingError):
        AttentionLSTM(3, 4, window=0)
    with pytest.raises(SettingError):
        AttentionLSTM(3, 4, score="cosine")
