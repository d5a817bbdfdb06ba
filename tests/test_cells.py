"""The textbook cells of lmcli.cells against references written from their equations:
plain tensor ops, one time step at a time, nothing shared with the modules, at toy sizes
(N, T, D, H of 2 to 6) in float64; values and gradients. The references are shown to
catch a changed formula by breaking the modules' code on purpose."""

from __future__ import annotations

import inspect
import io
import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import lmcli.cells
from lmcli import checkpoint as ckpt
from lmcli.cells import CELL_CLASSES, CoupledLSTM, RecurrentLayer
from lmcli.cli import app
from lmcli.corpus import DataConfig
from lmcli.model import LAYER_CLASSES, RNNLM, ModelConfig, detach_state
from lmcli.train import RunRequest, TrainConfig, resume_run, start_run

from conftest import POEM_LINES, corpus_file, stop_after, weights

N, T, D, H, V = 3, 5, 4, 6, 5
sigma, tanh = torch.sigmoid, torch.tanh


def blocks(weight: torch.Tensor, count: int) -> list[torch.Tensor]:
    return [weight[k * H:(k + 1) * H] for k in range(count)]


def reference_relu(x, state, p):
    (h,) = state
    outputs = []
    for t in range(x.shape[1]):
        h = torch.relu(x[:, t] @ p["weight_ih_l0"].T + h @ p["weight_hh_l0"].T + p["bias_l0"])
        outputs.append(h)
    return torch.stack(outputs, 1), (h,)


def reference_peephole(x, state, p):
    h, c = state
    W_i, W_f, W_g, W_o = blocks(p["weight_ih_l0"], 4)
    U_i, U_f, U_g, U_o = blocks(p["weight_hh_l0"], 4)
    b_i, b_f, b_g, b_o = blocks(p["bias_l0"], 4)
    p_i, p_f, p_o = p["weight_peephole_l0"]
    outputs = []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        i = sigma(x_t @ W_i.T + h @ U_i.T + p_i * c + b_i)
        f = sigma(x_t @ W_f.T + h @ U_f.T + p_f * c + b_f)
        g = tanh(x_t @ W_g.T + h @ U_g.T + b_g)
        c = f * c + i * g
        o = sigma(x_t @ W_o.T + h @ U_o.T + p_o * c + b_o)
        h = o * tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), (h, c)


def reference_coupled(x, state, p):
    h, c = state
    W_i, W_g, W_o = blocks(p["weight_ih_l0"], 3)
    U_i, U_g, U_o = blocks(p["weight_hh_l0"], 3)
    b_i, b_g, b_o = blocks(p["bias_l0"], 3)
    outputs = []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        i = sigma(x_t @ W_i.T + h @ U_i.T + b_i)
        f = 1 - i
        g = tanh(x_t @ W_g.T + h @ U_g.T + b_g)
        c = f * c + i * g
        o = sigma(x_t @ W_o.T + h @ U_o.T + b_o)
        h = o * tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), (h, c)


def reference_minimal_gru(x, state, p):
    """The textbook form: one matrix over the concatenation [c_{t-1}, x_t] per gate."""
    (c,) = state
    W_u = torch.cat([blocks(p["weight_hh_l0"], 2)[0], blocks(p["weight_ih_l0"], 2)[0]], 1)
    W_c = torch.cat([blocks(p["weight_hh_l0"], 2)[1], blocks(p["weight_ih_l0"], 2)[1]], 1)
    b_u, b_c = blocks(p["bias_l0"], 2)
    outputs = []
    for t in range(x.shape[1]):
        joined = torch.cat([c, x[:, t]], 1)
        u = sigma(joined @ W_u.T + b_u)
        candidate = tanh(joined @ W_c.T + b_c)
        c = u * candidate + (1 - u) * c
        outputs.append(c)
    return torch.stack(outputs, 1), (c,)


REFERENCES = {"rnn-relu": reference_relu, "lstm-peephole": reference_peephole,
              "lstm-coupled": reference_coupled, "gru-minimal": reference_minimal_gru}
"""The cells checked here; clockwork and attention have their references, with tests of
their own, in test_clockwork.py and test_attention.py."""


def random_layer(cell: str, seed: int = 0) -> RecurrentLayer:
    """A layer in float64 with every parameter drawn at random (the default start hides
    terms: zero peepholes, identity U)."""
    torch.manual_seed(seed)
    layer = CELL_CLASSES[cell](D, H).double()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0, 0.6)
    return layer


def compare(cell: str, steps: int, seed: int = 0) -> None:
    """Module and reference from the same random parameters, input and state: outputs,
    final states, and the gradients of one random projection of them with respect to the
    input, the initial state and every parameter."""
    layer = random_layer(cell, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(N, steps, D, dtype=torch.float64, generator=generator, requires_grad=True)
    state = tuple(torch.randn(1, N, size, dtype=torch.float64, generator=generator, requires_grad=True)
                  for size in layer.state_sizes(H))
    output, final = layer(x, state)
    expected, expected_final = REFERENCES[cell](x, tuple(s[0] for s in state), dict(layer.named_parameters()))
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-12)
    assert len(final) == len(expected_final)
    for got, want in zip(final, expected_final):
        torch.testing.assert_close(got[0], want, rtol=1e-10, atol=1e-12)
    probes = [torch.randn(t.shape, dtype=torch.float64, generator=generator) for t in (output, *final)]
    inputs = [x, *state, *layer.parameters()]

    def gradients(out, fin):
        total = sum((probe * value).sum() for probe, value in zip(probes, (out, *fin)))
        return torch.autograd.grad(total, inputs, allow_unused=True)

    got_grads = gradients(output, final)
    want_grads = gradients(expected, tuple(f.unsqueeze(0) for f in expected_final))
    for name, got, want in zip(["x", *[f"state{k}" for k in range(len(state))],
                                *[n for n, _ in layer.named_parameters()]], got_grads, want_grads):
        assert want is not None, name
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("cell", REFERENCES)
def test_one_step_matches_the_equations(cell: str) -> None:
    compare(cell, steps=1)


@pytest.mark.parametrize("cell", REFERENCES)
def test_a_sequence_matches_the_equations(cell: str) -> None:
    compare(cell, steps=T, seed=2)


# A changed formula in the module's step loop: each must make the comparison fail.
MUTATIONS = {
    "rnn-relu": ("torch.relu(", "torch.tanh("),
    "lstm-peephole": ("peep_o * c", "peep_f * c"),
    "lstm-coupled": ("torch.tanh(g) - c", "torch.tanh(g) + c"),
    "gru-minimal": ("c + u * (", "c - u * ("),
}


@pytest.mark.parametrize("cell", REFERENCES)
def test_a_broken_formula_is_caught(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = CELL_CLASSES[cell]
    source = textwrap.dedent(inspect.getsource(cls.scan))
    before, after = MUTATIONS[cell]
    assert source.count(before) == 1, "the mutation no longer applies: update MUTATIONS"
    namespace: dict = {}
    # The module's own code with one change, run in the module's namespace: a real mutant.
    exec(compile(source.replace(before, after), "<mutated>", "exec"), vars(lmcli.cells), namespace)  # noqa: S102
    monkeypatch.setattr(cls, "scan", namespace["scan"])
    with pytest.raises(AssertionError):
        compare(cell, steps=T, seed=2)


@pytest.mark.parametrize("cell", ["lstm-peephole", "lstm-coupled"])
def test_swapped_gates_are_caught(cell: str) -> None:
    """The references tell the gate blocks apart: the module with its first two blocks
    exchanged no longer matches."""
    layer = random_layer(cell)
    with torch.no_grad():
        for weight in (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_l0):
            weight[:2 * H] = torch.cat([weight[H:2 * H], weight[:H]]).clone()
    x = torch.randn(N, T, D, dtype=torch.float64)
    state = layer.initial_state(N, dtype=torch.float64)
    original = random_layer(cell)
    expected, _ = REFERENCES[cell](x, tuple(s[0] for s in state), dict(original.named_parameters()))
    assert not torch.allclose(layer(x, state)[0], expected)


def test_coupled_forget_gate_is_one_minus_input_gate() -> None:
    """With the candidate held at 0 (g's weights and bias zero), one step scales the cell
    state by the forget gate alone: c_1 = (1 - sigma(b_i)) * c_0, for any input."""
    layer = CoupledLSTM(D, H).double()
    with torch.no_grad():
        layer.weight_ih_l0[H:2 * H].zero_()
        layer.weight_hh_l0.zero_()
        layer.weight_ih_l0[:H].zero_()
        layer.bias_l0.normal_()
        layer.bias_l0[H:2 * H].zero_()
    c0 = torch.randn(1, N, H, dtype=torch.float64)
    _, (_, c1) = layer(torch.randn(N, 1, D, dtype=torch.float64), (torch.randn_like(c0), c0))
    input_gate = torch.sigmoid(layer.bias_l0[:H])
    torch.testing.assert_close(c1, (1 - input_gate) * c0)


def test_initial_values() -> None:
    """IRNN's identity recurrence; orthogonal blocks elsewhere; the forget bias 1 (for the
    coupled cell, input bias -1: f = sigma(1) either way)."""
    relu = CELL_CLASSES["rnn-relu"](D, H)
    assert torch.equal(relu.weight_hh_l0, torch.eye(H))
    peephole = CELL_CLASSES["lstm-peephole"](D, H)
    assert torch.all(peephole.bias_l0[H:2 * H] == 1) and torch.all(peephole.weight_peephole_l0 == 0)
    assert torch.all(CoupledLSTM(D, H).bias_l0[:H] == -1)
    gru = CELL_CLASSES["gru-minimal"](D, H)
    for block in blocks(gru.weight_hh_l0.detach(), 2):
        torch.testing.assert_close(block @ block.T, torch.eye(H), atol=1e-5, rtol=0)


# ------------------------------------------------------------------- in the model


def toy(cell: str, **kwargs) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(**{"vocab_size": V, "cell": cell, "layers": 2, "embed_dim": D,
                                "hidden_dim": H, "dropout": 0.0, **kwargs}))


@pytest.mark.parametrize("cell", LAYER_CLASSES)
def test_model_state_and_carried_windows(cell: str) -> None:
    """The state has the parts the layer class declares, (layers, batch, size) each; two
    windows with the state carried equal one pass."""
    model = toy(cell).eval()
    tokens = torch.randint(0, V, (N, 2 * T))
    whole, state = model(tokens)
    sizes = LAYER_CLASSES[cell].state_sizes(H)
    assert [s.shape for s in state] == [(2, N, size) for size in sizes]
    first, carried = model(tokens[:, :T])
    second, _ = model(tokens[:, T:], detach_state(carried))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


@pytest.mark.parametrize("cell", LAYER_CLASSES)
def test_regularisers_autocast_and_checkpoint_weights(cell: str) -> None:
    """Weight-drop changes training passes and trains the raw U; tied weights; bf16
    autocast runs and keeps the state's dtype; the weights load back (weights_only)."""
    model = toy(cell, weight_drop=0.5, tie_weights=True, dropout=0.2)
    tokens = torch.randint(V, (N, T))
    first, _ = model(tokens)
    second, _ = model(tokens)
    assert not torch.allclose(first, second)
    first.sum().backward()
    assert model.rnns[0].weight_hh_l0.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(tokens)
    assert torch.isfinite(logits).all() and all(s.dtype == torch.float32 for s in state)
    logits.float().sum().backward()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = toy(cell, tie_weights=True)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(again.eval()(tokens)[0], model.eval()(tokens)[0])
    assert model.flops_per_token() > 0


# ------------------------------------------------------------------ the whole pipeline


def pipeline_request(tmp_path: Path, cell: str, level: str) -> RunRequest:
    tmp_path.mkdir(exist_ok=True)
    if level == "word":
        corpus = corpus_file(tmp_path, 60)
    else:
        corpus = tmp_path / "poems.txt"
        corpus.write_text("\n".join(POEM_LINES * 4) + "\n", encoding="utf-8")
    return RunRequest(
        corpus=[str(corpus)], data=DataConfig(level=level, min_freq=1, valid_fraction=0.1),
        model={"cell": cell, "layers": 2, "embed_dim": 8, "hidden_dim": 12, "dropout": 0.1,
               "weight_drop": 0.2},
        train=TrainConfig(seq_len=8, batch_size=4, epochs=None, max_steps=6, lr=0.01, seed=7,
                          device="cpu", eval_every=3), out_dir=tmp_path / "run")


@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("cell", LAYER_CLASSES)
def test_train_resume_and_use(tmp_path: Path, cell: str, level: str) -> None:
    """lmcli train for a few steps, interrupted and resumed (bit-exact with a straight
    run), then info, eval, score, generate and rerank through the command line."""
    straight = start_run(pipeline_request(tmp_path / "a", cell, level), root=tmp_path / "ck")
    start_run(pipeline_request(tmp_path, cell, level), root=tmp_path / "ck", should_stop=stop_after(4))
    finished = resume_run(tmp_path / "run", root=tmp_path / "ck")
    assert finished.step == straight.step == 6
    for name, value in weights(straight.last_path).items():
        assert torch.equal(weights(finished.last_path)[name], value), name
    run = tmp_path / "run"
    runner = CliRunner()

    def cli(*args: str) -> list[dict]:
        result = runner.invoke(app, [*args, "-c", str(run), "--json"])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    assert cli("info")[0]["model"] == cell
    sentence = "the cat sees the moon ." if level == "word" else POEM_LINES[0]
    text = tmp_path / "test.txt"
    text.write_text(sentence + "\n", encoding="utf-8")
    evaluation, score = cli("eval", str(text))[0], cli("score", sentence)[0]
    assert evaluation["perplexity"] == pytest.approx(score["perplexity"], rel=1e-6)
    assert len(cli("generate", "-n", "2", "--max-tokens", "6", "--seed", "1")) == 2
    nbest = tmp_path / "nbest.jsonl"
    nbest.write_text(json.dumps({"id": "u1", "hyps": [{"text": sentence, "am_score": -1.0},
                                                        {"text": sentence[::-1], "am_score": -1.0}]}) + "\n")
    assert cli("rerank", str(nbest))[0]["id"] == "u1"
    assert torch.load(run / ckpt.BEST, weights_only=True)["model_config"]["cell"] == cell


@pytest.mark.parametrize("cell", LAYER_CLASSES)
def test_train_help_and_model_flag(cell: str) -> None:
    runner = CliRunner()
    assert cell in runner.invoke(app, ["train", "--help"]).stdout
    assert ModelConfig(cell=cell).cell == cell
