"""The adaptive softmax (Grave et al. 2017): an exact distribution over the whole vocabulary,
by hand; the targets-only path used in training agrees with it; configs, training, saving,
sampling and the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli.cli import app
from conftest import sharpen_outputs
from lmcli.corpus import DataConfig, load_corpus
from lmcli.text import TextFiles
from lmcli.errors import UsageError
from lmcli.model import ModelConfig, RNNLM
from lmcli.output import AdaptiveSoftmax, default_cutoffs
from lmcli.sampling import SamplingConfig, generate
from lmcli.scoring import evaluate_file, score_ids
from lmcli.tokenizers import EOS_ID, UNK_ID
from lmcli.train import RunRequest, TrainConfig, start_run

runner = CliRunner()
V = 40


def adaptive_model(seed: int = 0, cutoffs: list[int] | None = None) -> RNNLM:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=V, layers=1, embed_dim=8, hidden_dim=16, dropout=0.0,
                         softmax="adaptive", cutoffs=cutoffs or [6, 20], adaptive_div=2.0)
    model = RNNLM(config).eval()
    sharpen_outputs(model, 6.0)
    return model


def test_log_probs_by_hand_and_normalised() -> None:
    model = adaptive_model()
    decoder = model.decoder
    assert isinstance(decoder, AdaptiveSoftmax)
    x = torch.randn(5, 16)
    logprobs = decoder.log_probs(x).double()
    assert logprobs.shape == (5, V)
    assert torch.allclose(logprobs.exp().sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    # By hand: a head token's probability is its head softmax entry; a token in cluster i is
    # P(cluster i) from the head times its share of the cluster's own softmax.
    head = torch.log_softmax(x @ decoder.head.weight.T + decoder.head.bias, -1)
    assert head.shape == (5, 6 + 2)
    torch.testing.assert_close(logprobs[:, :6].float(), head[:, :6])
    for i, (low, high) in enumerate([(6, 20), (20, V)]):
        projection, output = decoder.tails[i]
        assert projection.out_features == max(8, 16 // 2 ** (i + 1))  # 8 at least
        within = torch.log_softmax((x @ projection.weight.T) @ output.weight.T + output.bias, -1)
        torch.testing.assert_close(logprobs[:, low:high].float(), head[:, 6 + i:7 + i] + within)


def test_targets_only_path_equals_the_full_distribution_and_padding_scores_zero() -> None:
    model = adaptive_model()
    tokens = torch.randint(0, V, (3, 9))
    features, _, _ = model.hidden_features(tokens)
    logits = model.logits(features)
    targets = torch.randint(0, V, (3, 9))
    targets[0, :3] = torch.tensor([0, 19, 39])  # the edges of each cluster
    targets[2, 5:] = -100  # padding
    picked = model.target_log_probs(features, targets)
    expected = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    expected[2, 5:] = 0.0
    torch.testing.assert_close(picked, expected, atol=1e-5, rtol=0)
    # Gradients flow through both paths alike.
    loss_a = -model.target_log_probs(features, targets.clamp(min=0)).sum()
    loss_b = F.cross_entropy(model.logits(features).reshape(-1, V), targets.clamp(min=0).reshape(-1),
                             reduction="sum")
    grad_a = torch.autograd.grad(loss_a, model.decoder.tails[1][1].weight, retain_graph=True)[0]
    grad_b = torch.autograd.grad(loss_b, model.decoder.tails[1][1].weight)[0]
    torch.testing.assert_close(grad_a, grad_b, atol=1e-5, rtol=1e-4)


def test_scores_come_from_the_adaptive_distribution() -> None:
    model = adaptive_model(seed=1)
    ids = [3, 17, 25, 39, 2]
    (scores,) = score_ids(model, [ids])
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID, *ids]]))
    expected = torch.log_softmax(logits[0].double(), -1).gather(1, torch.tensor([*ids, EOS_ID])[:, None])[:, 0]
    assert scores.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("config,message", [
    ({"softmax": "adaptive", "cutoffs": [10], "tie_weights": True}, "needs the full softmax"),
    ({"softmax": "adaptive", "cutoffs": [20, 10]}, "increasing"),
    ({"softmax": "adaptive", "cutoffs": [10, 10]}, "increasing"),
    ({"softmax": "adaptive", "cutoffs": [40]}, "increasing"),
    ({"softmax": "adaptive"}, "too small"),  # 40 tokens: no default cluster pays
    ({"softmax": "adaptive", "cutoffs": [10], "adaptive_div": 0.5}, "adaptive_div must be at least 1"),
    ({"softmax": "sampled"}, "softmax must be one of"),
])
def test_bad_adaptive_configs_are_refused(config: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ModelConfig(vocab_size=V, **config)


def test_auto_softmax_and_default_cutoffs() -> None:
    assert default_cutoffs(1_000) == [] and default_cutoffs(1_250) == [1000]
    assert default_cutoffs(10_001) == [1000, 4000]
    assert default_cutoffs(267_735) == [1000, 4000, 20000, 100000]
    big = ModelConfig(vocab_size=10_001, softmax="auto")
    assert (big.softmax, big.cutoffs) == ("adaptive", [1000, 4000])
    assert ModelConfig(vocab_size=1_000, softmax="auto").softmax == "full"
    assert ModelConfig(vocab_size=10_001, softmax="auto", tie_weights=True).softmax == "full"
    # Round trip through a checkpoint's plain dict: resolved values are stored.
    assert ModelConfig.from_dict(big.to_dict()) == big


ADAPTIVE_DATA = DataConfig(level="word", min_freq=2, valid_fraction=0.1)


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word model with an adaptive softmax, trained; <UNK> frequent in its data."""
    root = tmp_path_factory.mktemp("adaptive")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)]
    lines = [" ".join(rng.choice(words[: 8 + rng.randrange(52)]) for _ in range(7)) + " zz" + str(n)
             for n in range(400)]  # zzN: seen once, <UNK> with --min-freq 2
    (root / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    start_run(RunRequest(
        corpus=[str(root / "c.txt")], data=ADAPTIVE_DATA,
        model={"cell": "lstm", "layers": 1, "embed_dim": 16, "hidden_dim": 32, "dropout": 0.0,
               "softmax": "adaptive", "cutoffs": [8, 30]},
        train=TrainConfig(seq_len=16, batch_size=8, epochs=4, lr=0.01, seed=2, device="cpu"),
        out_dir=root / "run"), root=root / "ck")
    return root / "run"


def test_training_learns_and_the_checkpoint_scores_alike(adaptive_run: Path, tmp_path: Path) -> None:
    """The validation loss falls, and the saved checkpoint, loaded, scores the held-out
    lines to the validation loss training saved with it."""
    history = [json.loads(line) for line in (adaptive_run / "metrics.jsonl").read_text().splitlines()]
    valid = [m["loss"] for m in history if m.get("event") == "valid"]
    assert valid[-1] < valid[0] - 0.3
    loaded = ckpt.load(adaptive_run / "best.pt")
    assert loaded.model_config.softmax == "adaptive" and loaded.model_config.cutoffs == [8, 30]
    assert loaded.tokenizer.encode("w1 w2 w3 zz5")[-1] == UNK_ID
    corpus = adaptive_run.parent / "c.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    held = load_corpus([corpus], ADAPTIVE_DATA).held_out.mask(0, len(lines))
    held_out = tmp_path / "valid.txt"
    held_out.write_text("".join(line + "\n" for line, h in zip(lines, held) if h), encoding="utf-8")
    evaluation = evaluate_file(loaded.build_model(), loaded.tokenizer, TextFiles.of([held_out]))
    assert evaluation.num_sentences == held.sum() == 40
    assert evaluation.cross_entropy == pytest.approx(loaded.payload["valid_loss"], rel=1e-6)


def test_sampling_from_an_adaptive_model_never_emits_unk(adaptive_run: Path) -> None:
    loaded = ckpt.load(adaptive_run / "best.pt")
    model = loaded.build_model()
    with torch.no_grad():  # make <UNK> the favourite everywhere
        model.decoder.head.bias[UNK_ID] += 20.0
    samples = generate(model, loaded.tokenizer, num_samples=20,
                       config=SamplingConfig(temperature=1.5, max_tokens=100, lines=1000), seed=1)
    tokens = [t for s in samples for t in s.token_ids]
    assert len(tokens) == 2000 and UNK_ID not in tokens
    # The reported log-probability is the model's, from the adaptive distribution.
    first = samples[0]
    ids = first.token_ids[:5]
    with torch.no_grad():
        logits, _ = model(torch.tensor([[EOS_ID, *ids[:-1]]]))
    expected = torch.log_softmax(logits[0].double(), -1).gather(1, torch.tensor(ids)[:, None]).sum()
    prefix = generate(model, loaded.tokenizer, num_samples=20,
                      config=SamplingConfig(temperature=1.5, max_tokens=5, lines=1000), seed=1)[0]
    assert prefix.token_ids == ids
    assert prefix.logprob == pytest.approx(expected.item(), abs=1e-4)


def test_cli_flags_and_info(adaptive_run: Path, english_corpus: Path) -> None:
    result = runner.invoke(app, ["info", "-c", str(adaptive_run)])
    assert result.exit_code == 0 and "adaptive softmax (clusters from 8, 30)" in result.stdout
    bad = runner.invoke(app, ["train", str(english_corpus), "--cutoffs", "2k,lots", "--max-steps", "1"])
    assert bad.exit_code == 2 and "--cutoffs wants integers" in bad.stderr
    tied = runner.invoke(app, ["train", str(english_corpus), "--softmax", "adaptive", "--tie-weights",
                               "--max-steps", "1", "-o", "run"])
    assert tied.exit_code == 2 and "needs the full softmax" in tied.stderr
    assert not Path("run").exists()  # refused before anything was written
    # A small vocabulary with an explicit adaptive softmax is refused once it is known.
    small = runner.invoke(app, ["train", str(english_corpus), "--level", "word", "--softmax", "adaptive",
                                "--max-steps", "1", "-o", "run2"])
    assert small.exit_code == 2 and "too small for an adaptive softmax" in small.stderr


def test_flops_per_token_by_hand_and_the_gpu_peak_table() -> None:
    from lmcli.devices import gpu_peak, peak_flops
    from lmcli.train import tail_shares

    torch.manual_seed(0)
    full = RNNLM(ModelConfig(vocab_size=V, layers=1, embed_dim=8, hidden_dim=16))
    lstm = 4 * 16 * (8 + 16)
    assert full.flops_per_token() == 2 * 3 * (lstm + 16 * V)
    assert full.flops_per_token(training=False) == 2 * (lstm + 16 * V)
    adaptive = RNNLM(ModelConfig(vocab_size=V, layers=1, embed_dim=8, hidden_dim=16, softmax="adaptive",
                                 cutoffs=[6, 20], adaptive_div=2.0))
    head, tail0, tail1 = 16 * 8, 16 * 8 + 8 * 14, 16 * 8 + 8 * 20
    assert adaptive.flops_per_token([0.5, 0.25]) == pytest.approx(2 * 3 * (lstm + head + 0.5 * tail0 + 0.25 * tail1))
    assert adaptive.flops_per_token(training=False) == 2 * (lstm + head + tail0 + tail1)
    tokens = np.array([0, 1, 5, 6, 19, 20, 39, 2], dtype=np.uint16)
    assert tail_shares(tokens, adaptive.config) == [2 / 8, 2 / 8]
    assert tail_shares(tokens, full.config) is None
    assert gpu_peak("NVIDIA H100 80GB HBM3", amp=True) == 989.4e12
    assert gpu_peak("NVIDIA H100 PCIe", amp=True) == 756.0e12
    assert gpu_peak("NVIDIA H100 80GB HBM3", amp=False) == 66.9e12
    assert gpu_peak("NVIDIA A100-SXM4-80GB", amp=True) == 312.0e12
    assert gpu_peak("Some Future GPU", amp=True) is None
    assert peak_flops(torch.device("cpu"), amp=True) is None


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_the_training_loss_is_the_mean_over_real_targets(softmax: str) -> None:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=V, layers=1, embed_dim=8, hidden_dim=16, softmax=softmax,
                              cutoffs=[6, 20] if softmax == "adaptive" else None))
    tokens = torch.randint(0, V, (3, 9))
    targets = torch.randint(0, V, (3, 9))
    targets[1, 4:] = -100
    features, _, _ = model.hidden_features(tokens)
    picked = torch.log_softmax(model.logits(features).float(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    real = targets != -100
    expected = -(picked * real).sum() / real.sum()
    torch.testing.assert_close(model.mean_loss(features, targets), expected, atol=1e-5, rtol=1e-5)
