"""Rescoring with several models, character error rates, and output for Kaldi."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli import rerank as rr
from lmcli.cli import app
from lmcli.nbest import read_refs
from lmcli.tuning import char_errors, word_errors
from conftest import POEM_LINES, english_lines, tiny_run
from test_rerank import synthetic_nbest, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def backward_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny backward word model on the same kind of text as ``trained_run``."""
    return tiny_run(tmp_path_factory.mktemp("backward"), english_lines(400, seed=1), "word",
                    {"cell": "lstm", "direction": "backward", "embed_dim": 16, "hidden_dim": 32}, epochs=6)


@pytest.fixture(scope="module")
def poem_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("poems"), POEM_LINES * 20, "char",
                    {"cell": "gru", "embed_dim": 16, "hidden_dim": 32}, seq_len=16, batch_size=4, epochs=None,
                    max_steps=60)


def cli(*args: str, input: str | None = None) -> list[dict]:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_two_models_give_two_columns(trained_run: Path, backward_run: Path, tmp_path: Path) -> None:
    """Each hypothesis carries both models' scores (each what `score` gives with that
    model) and its total weighs them as asked."""
    nbest = write_jsonl(tmp_path / "n.jsonl", synthetic_nbest(6, 31))
    ranked = cli("rerank", str(nbest), "-c", str(trained_run), "-c", str(backward_run),
                 "--lm-weight", "0.6", "--lm-weight", "0.3", "--bonus", "0.2")
    texts = [h["text"] for h in ranked[0]["hyps"]]
    forward = [r["logprob"] for r in cli("score", "-c", str(trained_run), "--json", *texts)]
    backward = [r["logprob"] for r in cli("score", "-c", str(backward_run), "--json", *texts)]
    assert [h["lm_logprobs"][0] for h in ranked[0]["hyps"]] == pytest.approx(forward, abs=1e-9)
    assert [h["lm_logprobs"][1] for h in ranked[0]["hyps"]] == pytest.approx(backward, abs=1e-9)
    assert forward != pytest.approx(backward, abs=1e-3)
    for record in ranked:
        for h in record["hyps"]:
            expected = h["am_score"] + 0.6 * h["lm_logprobs"][0] + 0.3 * h["lm_logprobs"][1] + 0.2 * len(
                h["text"].split())
            assert h["total"] == pytest.approx(expected)
    miscount = runner.invoke(app, ["rerank", str(nbest), "-c", str(trained_run), "-c", str(backward_run),
                                   "--lm-weight", "0.5"])
    assert miscount.exit_code == 2 and "once per -c" in miscount.stderr


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_tuning_is_never_worse_than_the_start(trained_run: Path, backward_run: Path, seed: int) -> None:
    """On dev, the tuned weights' error rate is at most the untuned start's (every LM
    weight 1, no bonus), for one model and for two; noisy acoustic scores make the start
    far from the best."""
    dev = rr.read_nbest(rr.NbestSource("-"), stdin=[json.dumps(r) for r in synthetic_nbest(30, seed)])
    models = [rr.LanguageModel(ckpt.load(run / ckpt.BEST).build_model(), ckpt.load(run / ckpt.BEST).tokenizer)
              for run in (trained_run, backward_run)]
    rr.attach_lm_scores(dev, models)
    two = rr.tune(dev)
    assert len(two.weights.lm_weights) == 2
    assert two.error_after <= two.error_start
    assert two.error_after == pytest.approx(rr.error_report(dev, two.weights).rescored["wer"])
    for utterance in dev:
        for hyp in utterance.hyps:
            hyp.lm_logprobs = hyp.lm_logprobs[:1]
    one = rr.tune(dev)
    assert one.error_after <= one.error_start
    assert two.error_after <= one.error_after + 1e-12 or two.points > one.points  # a richer search


def test_character_errors() -> None:
    assert char_errors("床前明月光", "床前明月光") == 0
    assert char_errors("床前明月光", "床前月光") == 1
    assert char_errors("床前明月光", "窗前明月光啊") == 2
    assert char_errors("a b", "ab") == 0  # whitespace does not count
    assert char_errors("", "春眠") == 2


def chinese_nbest(seed: int, count: int) -> list[dict]:
    """Lines of the poems, each among confusions: one character replaced by another of
    the poems, or two swapped."""
    rng = random.Random(seed)
    lines = [p for poem in POEM_LINES for p in poem.replace("。", "，").split("，") if p]
    alphabet = sorted(set("".join(lines)))
    records = []
    for index in range(count):
        ref = rng.choice(lines)
        hyps = {ref}
        while len(hyps) < 4:
            chars = list(ref)
            i = rng.randrange(len(chars))
            chars[i] = rng.choice(alphabet)
            hyps.add("".join(chars))
        scored = [{"text": t, "am_score": round(-10 + rng.gauss(0, 1.5), 3)} for t in sorted(hyps)]
        records.append({"id": f"zh{seed}-{index}", "hyps": scored, "ref": ref})
    return records


def test_chinese_char_model_reports_cer(poem_run: Path, tmp_path: Path) -> None:
    """A char model and text without spaces: the metric is CER on its own, the bonus is
    per character, and the report file holds both error rates."""
    test = write_jsonl(tmp_path / "zh.jsonl", chinese_nbest(5, 20))
    dev = write_jsonl(tmp_path / "zh-dev.jsonl", chinese_nbest(6, 30))
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["rerank", str(test), "-c", str(poem_run), "--tune", str(dev),
                                 "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "CER rescored" in result.stderr and "WER rescored" in result.stderr
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert summary["metric"] == "cer" and summary["tuned"]["metric"] == "cer"
    assert summary["errors"]["oracle"]["cer"] == 0.0
    assert 0.0 <= summary["errors"]["rescored"]["cer"] <= summary["errors"]["am"]["cer"] + 0.5
    ranked = [json.loads(line) for line in result.stdout.splitlines()]
    weights = summary["weights"]
    for h in ranked[0]["hyps"]:
        assert h["total"] == pytest.approx(h["am_score"] + weights["lm_weights"][0] * h["lm_logprob"]
                                           + weights["bonus"] * len(h["text"]))
    words = runner.invoke(app, ["rerank", str(test), "-c", str(poem_run), "--metric", "wer", "--json"])
    assert json.loads(words.stdout.splitlines()[-1])["summary"]["metric"] == "wer"


def test_kaldi_and_tsv_output(trained_run: Path, tmp_path: Path) -> None:
    """Kaldi text output reads back with the Kaldi reader as each utterance's best
    hypothesis; TSV says the same."""
    nbest = write_jsonl(tmp_path / "n.jsonl", synthetic_nbest(8, 51))
    common = ["rerank", str(nbest), "-c", str(trained_run), "--lm-weight", "0.8"]
    best = {r["id"]: r["best"] for r in cli(*common)}
    kaldi = runner.invoke(app, [*common, "--output-format", "kaldi"])
    assert kaldi.exit_code == 0, kaldi.output
    text = tmp_path / "text"
    text.write_text(kaldi.stdout, encoding="utf-8")
    assert read_refs(text) == best
    tsv = runner.invoke(app, [*common, "--output-format", "tsv"])
    assert dict(line.split("\t") for line in tsv.stdout.splitlines()) == best
    both = runner.invoke(app, [*common, "--output-format", "kaldi", "--json"])
    assert both.exit_code == 2 and "--report" in both.stderr
    wrong = runner.invoke(app, [*common, "--output-format", "ctm"])
    assert wrong.exit_code == 2 and "jsonl, kaldi, tsv" in wrong.stderr


def test_matrix_weighs_every_model(trained_run: Path) -> None:
    """The vectorised choice equals the hypothesis-by-hypothesis total."""
    dev = rr.read_nbest(rr.NbestSource("-"), stdin=[json.dumps(r) for r in synthetic_nbest(10, 61)])
    rng = np.random.default_rng(0)
    for utterance in dev:
        for hyp in utterance.hyps:
            hyp.lm_logprobs = list(rng.normal(-20, 3, size=3))
    weights = rr.Weights([0.4, 1.3, 0.0], -0.7)
    report = rr.error_report(dev, weights)
    chosen = [max(u.hyps, key=lambda h: weights.total(h)) for u in dev]
    errors = sum(word_errors(u.ref or "", h.text) for u, h in zip(dev, chosen))
    assert report.rescored["wer"] == pytest.approx(errors / sum(u.ref_words for u in dev))
