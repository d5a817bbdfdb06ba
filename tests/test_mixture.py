"""score with several models: a column each, or their linear interpolation (weights given
or fitted by EM on dev text)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.mixture import fit_weights, mix_logprobs
from lmcli.recipes import make_request
from lmcli.train import start_run
from conftest import POEM_LINES, english_lines

runner = CliRunner()
SENTENCES = ["the cat sees the moon .", "a dog likes a song .", "the king hears the sea ."]


def test_em_recovers_the_mixture_that_made_the_text() -> None:
    """Tokens drawn from 0.3 * p1 + 0.7 * p2: EM from equal weights finds about 0.3 / 0.7,
    and the dev likelihood never falls from one iteration to the next."""
    rng = np.random.default_rng(0)
    p1, p2 = rng.dirichlet(np.ones(50)), rng.dirichlet(np.ones(50))
    tokens = rng.choice(50, size=40_000, p=0.3 * p1 + 0.7 * p2)
    columns = np.log(np.stack([p1[tokens], p2[tokens]], axis=1))
    fit = fit_weights(columns)
    assert fit.weights == pytest.approx([0.3, 0.7], abs=0.03)
    assert sum(fit.weights) == pytest.approx(1.0)
    likelihoods = [float(mix_logprobs(columns, [w, 1 - w]).sum()) for w in (0.5, 0.4, fit.weights[0])]
    assert likelihoods[0] < likelihoods[2] and likelihoods[1] < likelihoods[2]
    assert fit.dev_perplexity < min(fit.model_perplexities)


def test_mix_is_the_log_of_the_weighted_sum() -> None:
    columns = np.log(np.array([[0.2, 0.5], [0.01, 0.9]]))
    assert mix_logprobs(columns, [0.25, 0.75]).tolist() == pytest.approx(
        [math.log(0.25 * 0.2 + 0.75 * 0.5), math.log(0.25 * 0.01 + 0.75 * 0.9)])
    assert mix_logprobs(columns, [1.0, 0.0]).tolist() == pytest.approx(columns[:, 0].tolist())


@pytest.fixture(scope="module")
def adapted(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model fine-tuned on other lines: the same vocabulary, other weights."""
    root = tmp_path_factory.mktemp("adapted")
    corpus = root / "domain.txt"
    corpus.write_text("\n".join(english_lines(150, seed=9)) + "\n", encoding="utf-8")
    request = make_request([str(corpus)], {"max_steps": 15, "lr": 0.01, "device": "cpu"},
                           out_dir=root / "run", init_from=trained_run)
    start_run(request, root=root / "ck")
    return root / "run"


def cli(*args: str) -> list[dict]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_columns_and_a_given_mix(trained_run: Path, adapted: Path) -> None:
    one = cli("score", "-c", str(trained_run), "--json", "--per-token", *SENTENCES)
    two = cli("score", "-c", str(adapted), "--json", "--per-token", *SENTENCES)
    columns = cli("score", "-c", str(trained_run), "-c", str(adapted), "--json", *SENTENCES)
    assert [c["logprobs"] for c in columns] == [[a["logprob"], b["logprob"]] for a, b in zip(one, two)]
    mixed = cli("score", "-c", str(trained_run), "-c", str(adapted), "--mix", "3,1", "--json", "--per-token",
                *SENTENCES)
    for m, a, b in zip(mixed, one, two):
        assert m["mix_weights"] == [0.75, 0.25]
        by_hand = [math.log(0.75 * math.exp(x["logprob"]) + 0.25 * math.exp(y["logprob"]))
                   for x, y in zip(a["tokens"], b["tokens"])]
        assert [t["logprob"] for t in m["tokens"]] == pytest.approx(by_hand, abs=1e-9)
        assert m["logprob"] == pytest.approx(sum(by_hand), abs=1e-9)
        assert min(a["logprob"], b["logprob"]) - 1e-9 <= m["logprob"] <= max(a["logprob"], b["logprob"]) + 1e-9


def test_tune_mix_fits_on_dev(trained_run: Path, adapted: Path, tmp_path: Path) -> None:
    dev = tmp_path / "dev.txt"
    dev.write_text("\n".join(english_lines(60, seed=9)) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["score", "-c", str(trained_run), "-c", str(adapted), "--tune-mix", str(dev),
                                 "--json", *SENTENCES])
    assert result.exit_code == 0, result.output
    assert "EM iterations" in result.stderr and "--mix" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    weights = records[0]["mix_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0) and all(w >= 0 for w in weights)
    again = cli("score", "-c", str(trained_run), "-c", str(adapted), "--mix", ",".join(map(repr, weights)),
                "--json", *SENTENCES)
    assert [r["logprob"] for r in again] == pytest.approx([r["logprob"] for r in records], abs=1e-9)


def test_what_cannot_be_mixed(trained_run: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "poems.txt"
    corpus.write_text("\n".join(POEM_LINES * 10) + "\n", encoding="utf-8")
    poems = tmp_path / "poems"
    start_run(make_request([str(corpus)], {"level": "char", "max_steps": 3, "hidden_dim": 16, "embed_dim": 8,
                                            "batch_size": 4, "seq_len": 8, "device": "cpu"}, out_dir=poems),
              root=tmp_path / "ck")
    cases = [
        (["-c", str(trained_run), "-c", str(poems), "--mix", "1,1"], 1, "different vocabularies"),
        (["-c", str(trained_run), "--mix", "1"], 2, "two or more"),
        (["-c", str(trained_run), "-c", str(trained_run), "--mix", "1,1,1"], 2, "one per -c"),
        (["-c", str(trained_run), "-c", str(trained_run), "--mix", "1,-1"], 2, "non-negative"),
        (["-c", str(trained_run), "-c", str(trained_run), "--mix", "a,b"], 2, "numbers separated"),
    ]
    for args, code, words in cases:
        result = runner.invoke(app, ["score", *args, "the cat ."])
        assert result.exit_code == code and words in result.stderr, (args, result.output)
