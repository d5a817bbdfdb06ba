"""The model at toy sizes (N, T, D, H, V of 2 to 6), for every cell, and its AWD-LSTM
regularisers: locked, embedding and weight-drop dropout."""

from __future__ import annotations

import pytest
import torch

from lmcli.errors import UsageError
from lmcli.model import (CELLS, RNNLM, ModelConfig, detach_state, embedding_dropout,
                         locked_dropout, upgrade_state_dict)
from lmcli.output import ALIGN_MIN_ROWS

N, T, D, H, V = 3, 5, 4, 6, 5


def toy(cell: str = "lstm", **kwargs) -> RNNLM:
    torch.manual_seed(0)
    config = {"vocab_size": V, "cell": cell, "layers": 2, "embed_dim": D, "hidden_dim": H,
              "dropout": 0.0, **kwargs}
    return RNNLM(ModelConfig(**config))


def assert_gradients_match_finite_differences(model: RNNLM, tokens: torch.Tensor) -> None:
    """Autograd through the whole model (every parameter tensor) agrees with central
    differences at three randomly chosen entries of each; the model in float64."""
    targets = tokens.roll(-1, 1).reshape(-1)

    def loss() -> torch.Tensor:
        logits, _ = model(tokens)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets)

    model.zero_grad()
    loss().backward()
    generator = torch.Generator().manual_seed(1)
    eps = 1e-6
    for name, param in model.named_parameters():
        for _ in range(3):
            index = int(torch.randint(param.numel(), (1,), generator=generator))
            flat = param.data.view(-1)
            original = flat[index].item()
            with torch.no_grad():
                flat[index] = original + eps
                up = loss().item()
                flat[index] = original - eps
                down = loss().item()
                flat[index] = original
            numeric = (up - down) / (2 * eps)
            analytic = param.grad.view(-1)[index].item()
            assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(numeric), (name, index)


@pytest.mark.parametrize("cell", CELLS)
def test_shapes(cell: str) -> None:
    model = toy(cell)
    tokens = torch.randint(0, V, (N, T))
    logits, state = model(tokens)
    assert logits.shape == (N, T, V)
    assert len(state) == (2 if cell == "lstm" else 1)
    assert all(s.shape == (2, N, H) for s in state)


@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_equals_one_long_pass(cell: str) -> None:
    """Truncated BPTT relies on this: two windows with the state carried across the
    boundary give the same outputs as one pass over the whole sequence."""
    model = toy(cell).eval()
    tokens = torch.randint(0, V, (N, 2 * T))
    whole, _ = model(tokens)
    first, state = model(tokens[:, :T])
    second, _ = model(tokens[:, T:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell: str) -> None:
    """Autograd through the whole model (every parameter tensor) agrees with central
    differences in float64 at randomly chosen entries."""
    assert_gradients_match_finite_differences(toy(cell).double(), torch.randint(0, V, (2, 4)))


def test_lstm_forget_gate_bias_is_one_and_recurrent_blocks_orthogonal() -> None:
    model = toy("lstm")
    for layer in range(2):
        bias = model.rnns[layer].bias_ih_l0 + model.rnns[layer].bias_hh_l0
        assert torch.all(bias[H:2 * H] == 1.0)
        assert torch.all(bias[:H] == 0.0) and torch.all(bias[2 * H:] == 0.0)
        weight = model.rnns[layer].weight_hh_l0.detach()
        for gate in range(4):
            block = weight[gate * H:(gate + 1) * H]
            torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hidden", [D, H])
def test_tied_weights_share_the_embedding(hidden: int) -> None:
    config = ModelConfig(vocab_size=V, cell="gru", layers=1, embed_dim=D, hidden_dim=hidden,
                         dropout=0.0, tie_weights=True)
    model = RNNLM(config)
    assert model.decoder.weight is model.embedding.weight
    assert (model.projection is not None) == (hidden != D)
    untied = RNNLM(ModelConfig(**{**config.to_dict(), "tie_weights": False}))
    assert model.num_parameters() < untied.num_parameters()
    logits, _ = model(torch.zeros((1, 2), dtype=torch.long))
    assert logits.shape == (1, 2, V)


def test_rnn_is_the_tanh_elman_network() -> None:
    """h_t = tanh(U x_t + W h_{t-1} + b), checked by hand for one layer."""
    config = ModelConfig(vocab_size=V, cell="rnn", layers=1, embed_dim=D, hidden_dim=H, dropout=0.0)
    model = RNNLM(config).eval()
    tokens = torch.tensor([[1, 3, 2]])
    _, (h,) = model(tokens)
    rnn = model.rnns[0]
    state = torch.zeros(H)
    for token in tokens[0]:
        x = model.embedding.weight[token]
        state = torch.tanh(rnn.weight_ih_l0 @ x + rnn.bias_ih_l0 + rnn.weight_hh_l0 @ state + rnn.bias_hh_l0)
    torch.testing.assert_close(h[0, 0], state)


def test_output_covers_exactly_the_vocabulary() -> None:
    """No padding or start symbol gets probability: the output layer has vocab_size units,
    and the log-probabilities the scorer reads for the vocab_size ids, each asked for on
    its own, are the softmax over those units alone; over enough positions that the output
    product runs padded to OUTPUT_ALIGN columns."""
    model = toy("lstm")
    tokens = torch.randint(0, V, (N, ALIGN_MIN_ROWS))
    logits, _ = model(tokens)
    assert logits.shape[-1] == V
    with torch.no_grad():
        features, _, _ = model.hidden_features(tokens)
        each = torch.stack([model.target_log_probs(features, torch.full((N, ALIGN_MIN_ROWS), token))
                            for token in range(V)], -1)  # (batch, time, vocab)
        by_hand = torch.log_softmax(features @ model.decoder.weight.T + model.decoder.bias, -1)
    torch.testing.assert_close(each, by_hand)
    torch.testing.assert_close(each.exp().sum(-1), torch.ones(N, ALIGN_MIN_ROWS))


@pytest.mark.parametrize("block_floats", [1, 300 * 40, 1 << 30])
@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_scoring_in_blocks_gives_the_whole_products_numbers(block_floats: int, softmax: str,
                                                            monkeypatch) -> None:
    """target_log_probs takes the output layer a block of rows at a time (one row block,
    several, or the floor of ALIGN_MIN_ROWS rows), skips padding targets (0 there), and
    gives the whole distribution's log-probabilities at the targets either way."""
    import lmcli.model as model_module

    monkeypatch.setattr(model_module, "BLOCK_FLOATS_CPU", block_floats)
    vocab = 40
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=vocab, layers=1, embed_dim=8, hidden_dim=8, dropout=0.0,
                              softmax=softmax, cutoffs=[20] if softmax == "adaptive" else None)).eval()
    tokens = torch.randint(0, vocab, (N, 3 * ALIGN_MIN_ROWS))
    targets = torch.randint(0, vocab, (N, 3 * ALIGN_MIN_ROWS))
    targets[1, 5:] = -1
    with torch.no_grad():
        features, _, _ = model.hidden_features(tokens)
        picked = model.target_log_probs(features, targets)
        whole = (model.decoder.log_probs(features) if softmax == "adaptive"
                 else torch.log_softmax(features @ model.decoder.weight.T + model.decoder.bias, -1))
    expected = whole.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected[1, 5:] = 0.0
    torch.testing.assert_close(picked, expected)


@pytest.mark.parametrize("field,value", [("cell", "transformer"), ("layers", 0), ("hidden_dim", -1),
                                         ("dropout", 1.0), ("embed_dim", 0)])
def test_bad_config_is_refused(field: str, value: object) -> None:
    with pytest.raises(UsageError):
        ModelConfig(**{"vocab_size": V, field: value})


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
@pytest.mark.parametrize("amp", [False, True])
def test_output_width_padding_changes_no_number(softmax: str, amp: bool, monkeypatch) -> None:
    """The output product is padded to a multiple of OUTPUT_ALIGN columns (zero rows, -inf
    bias) for speed: losses, gradients and log-probabilities come out as without it."""
    import lmcli.output as output_module

    vocab = 1001  # not a multiple of 16; its adaptive head (1000 - 700 + 1) and tail are not either
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=vocab, layers=1, embed_dim=8, hidden_dim=8, dropout=0.0,
                              softmax=softmax, cutoffs=[700] if softmax == "adaptive" else None))
    tokens = torch.randint(0, vocab, (4, 32))  # 128 rows: above ALIGN_MIN_ROWS
    targets = torch.randint(0, vocab, (4, 32))
    targets[0, -3:] = -100  # padding targets, ignored by the loss, 0 in target_log_probs
    layer = model.decoder.head if softmax == "adaptive" else model.decoder
    assert output_module.aligned_linear(layer, torch.zeros(128, 8)).shape[-1] % output_module.OUTPUT_ALIGN == 0

    def run(align: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        monkeypatch.setattr(output_module, "OUTPUT_ALIGN", align)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            features, _, _ = model.hidden_features(tokens)
            loss = model.mean_loss(features, targets)
        loss.backward()
        with torch.no_grad():
            picked = model.target_log_probs(features.float(), targets)
            full = (model.decoder.log_probs(features.float()) if softmax == "adaptive"
                    else torch.log_softmax(model.logits(features.float()), -1))
        return loss.detach(), picked, full, [p.grad.clone() for p in model.parameters()]

    padded, plain = run(16), run(1)
    torch.testing.assert_close(padded[0], plain[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(padded[1], plain[1], rtol=1e-6, atol=1e-6)
    assert padded[2].shape[-1] == vocab and torch.isfinite(padded[1]).all()
    torch.testing.assert_close(padded[2], plain[2], rtol=1e-6, atol=1e-6)
    assert (padded[1][0, -3:] == 0).all()
    for a, b in zip(padded[3], plain[3]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------ regularisers


def test_locked_dropout_keeps_one_mask_across_time() -> None:
    torch.manual_seed(1)
    x = torch.ones(4, 7, 9)
    dropped = locked_dropout(x, 0.5, training=True)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # same at every step
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert not torch.equal(dropped[0], dropped[1])  # but a mask per sequence
    assert locked_dropout(x, 0.5, training=False) is x


def test_embedding_dropout_drops_whole_words() -> None:
    torch.manual_seed(2)
    weight = torch.randn(50, 4)
    dropped = embedding_dropout(weight, 0.5, training=True)
    zero_rows = (dropped == 0).all(dim=1)
    assert 5 < int(zero_rows.sum()) < 45
    kept = ~zero_rows
    torch.testing.assert_close(dropped[kept], weight[kept] * 2.0)


def test_weight_drop_changes_training_passes_only_and_trains_the_raw_matrix() -> None:
    model = toy(weight_drop=0.5)
    tokens = torch.randint(V, (3, 8))
    before = model.rnns[0].weight_hh_l0.detach().clone()
    model.train()
    first, _ = model(tokens)
    second, _ = model(tokens)
    assert not torch.allclose(first, second)  # a new DropConnect mask per pass
    first.sum().backward()
    assert model.rnns[0].weight_hh_l0.grad is not None
    assert model.rnns[0].weight_hh_l0.grad.abs().sum() > 0
    assert torch.equal(model.rnns[0].weight_hh_l0, before)  # the raw weight is untouched
    model.eval()
    a, _ = model(tokens)
    b, _ = model(tokens)
    assert torch.equal(a, b)
    plain = toy()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.eval()(tokens)[0], a)  # eval uses the full matrix


EVERY_REGULARISER = {"dropout": 0.3, "dropout_input": 0.2, "dropout_hidden": 0.25, "dropout_embed": 0.1,
                     "weight_drop": 0.3, "tie_weights": True}


def test_regularised_model_in_eval_mode_is_the_plain_network_and_gradients_check() -> None:
    """All regularisers on (tied weights with a projection too): eval mode computes what the
    same weights compute without any regulariser, and autograd through it agrees with
    finite differences."""
    model = toy(**EVERY_REGULARISER).double().eval()
    plain = toy(tie_weights=True).double().eval()
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(V, (2, 5))
    torch.testing.assert_close(model(tokens)[0], plain(tokens)[0], rtol=0, atol=0)
    assert_gradients_match_finite_differences(model, tokens)


def test_regularised_model_trains() -> None:
    """All regularisers on: Adam steps in training mode on one batch (each next token
    follows from the current one) halve its loss, measured in eval mode, and every
    parameter moves, the raw hidden-to-hidden matrices under weight drop included."""
    model = toy(**EVERY_REGULARISER)
    tokens = torch.randint(V, (4, 8))
    targets = (tokens + 1) % V

    def loss() -> torch.Tensor:
        logits, _ = model(tokens)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = loss().item()
        model.train()
        return value

    start = {name: value.clone() for name, value in model.state_dict().items()}
    before = eval_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    after = eval_loss()
    assert after < before / 2, (before, after)
    assert [name for name, value in model.state_dict().items() if torch.equal(value, start[name])] == []


def test_old_single_module_checkpoints_still_load() -> None:
    """lmcli 0.1 saved one multi-layer nn.LSTM; its weights give the same numbers now."""
    config = ModelConfig(vocab_size=V, cell="gru", layers=2, embed_dim=D, hidden_dim=H, dropout=0.0)
    torch.manual_seed(3)
    old_rnn = torch.nn.GRU(D, H, num_layers=2, batch_first=True)
    model = RNNLM(config).eval()
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("rnns.")}
    old.update({f"rnn.{name}": value for name, value in old_rnn.state_dict().items()})
    assert "rnns.1.weight_hh_l0" in upgrade_state_dict(old)
    model.load_state_dict(old)
    tokens = torch.randint(V, (2, 6))
    embedded = model.embedding(tokens)
    expected, _ = old_rnn(embedded)
    features, _, _ = model.hidden_features(tokens)
    torch.testing.assert_close(features, expected)
