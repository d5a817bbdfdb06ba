"""N-best rescoring: a trained LM lowers WER on confusable hypotheses, tuning finds a
positive LM weight, the three input formats agree, and the scores are `score`'s."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli import rerank as rr
from lmcli.cli import app
from lmcli.scoring import score_sentences
from lmcli.tuning import word_errors

from conftest import english_lines

runner = CliRunner()


def confusions(sentence: str, rng: random.Random) -> list[str]:
    """Wrong hypotheses a recogniser could produce: neighbouring words swapped, a word
    dropped, a word repeated."""
    words = sentence.split()
    out = set()
    for _ in range(12):
        w = list(words)
        kind = rng.randrange(3)
        i = rng.randrange(len(w) - 1)
        if kind == 0:
            w[i], w[i + 1] = w[i + 1], w[i]
        elif kind == 1:
            del w[i]
        else:
            w.insert(i, w[i])
        if w != words:
            out.add(" ".join(w))
    return sorted(out)[:4]


def synthetic_nbest(n: int, seed: int) -> list[dict]:
    """Utterances whose acoustic scores are noisy: the recogniser's own 1-best is often one
    of the confusions, which a language model of the grammar can tell apart."""
    rng = random.Random(seed)
    records = []
    for index, ref in enumerate(english_lines(n, seed=seed)):
        texts = [ref] + confusions(ref, rng)
        hyps = [{"text": t, "am_score": round(-20.0 + rng.gauss(0, 1.5), 4)} for t in texts]
        rng.shuffle(hyps)
        records.append({"id": f"utt{seed}_{index:03d}", "hyps": hyps, "ref": ref})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_tsv(path: Path, records: list[dict]) -> tuple[Path, Path]:
    lines = [f"{r['id']}\t{h['am_score']}\t{h['text']}" for r in records for h in r["hyps"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refs = path.with_suffix(".refs")
    refs.write_text("".join(f"{r['id']} {r['ref']}\n" for r in records), encoding="utf-8")
    return path, refs


def write_kaldi(path: Path, records: list[dict]) -> tuple[Path, Path, Path]:
    text, costs = [], []
    for r in records:
        for k, h in enumerate(r["hyps"], start=1):
            text.append(f"{r['id']}-{k} {h['text']}")
            costs.append(f"{r['id']}-{k} {-h['am_score']}")  # Kaldi writes costs
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    scores = path.with_suffix(".scores")
    scores.write_text("\n".join(costs) + "\n", encoding="utf-8")
    refs = path.with_suffix(".refs")
    refs.write_text("".join(f"{r['id']} {r['ref']}\n" for r in records), encoding="utf-8")
    return path, scores, refs


@pytest.fixture(scope="module")
def lm(trained_run: Path) -> ckpt.Checkpoint:
    return ckpt.load(trained_run / ckpt.BEST)


def test_word_errors_are_word_level_levenshtein() -> None:
    assert word_errors("a b c", "a b c") == 0
    assert word_errors("a b c", "a c d") == 2
    assert word_errors("a b c", "a x b c") == 1
    assert word_errors("the cat", "") == 2
    assert word_errors("", "the cat") == 2
    assert word_errors("a  b\tc", "a b c") == 0


def test_lm_lowers_wer_and_tuning_finds_a_positive_weight(lm: ckpt.Checkpoint, tmp_path: Path) -> None:
    model = lm.build_model()
    dev = rr.read_nbest(rr.NbestSource(write_jsonl(tmp_path / "dev.jsonl", synthetic_nbest(60, 11))))
    test = rr.read_nbest(rr.NbestSource(write_jsonl(tmp_path / "test.jsonl", synthetic_nbest(60, 12))))
    stats = rr.attach_lm_scores(dev + test, [rr.LanguageModel(model, lm.tokenizer)])
    assert stats.hypotheses == sum(len(u.hyps) for u in dev + test)
    rr.attach_errors(dev)
    rr.attach_errors(test)
    tuned = rr.tune(dev)
    assert tuned.weights.lm_weights[0] > 0
    assert tuned.error_after <= tuned.error_start
    dev_report = rr.error_report(dev, tuned.weights)
    assert tuned.error_after == pytest.approx(dev_report.rescored["wer"])
    assert tuned.error_after < dev_report.am["wer"]
    report = rr.error_report(test, tuned.weights)
    assert report.am["wer"] > 0.05  # the acoustic 1-best is often wrong...
    assert report.rescored["wer"] < report.am["wer"] / 2  # ...and the LM repairs most of it
    assert report.oracle == {"wer": 0.0, "cer": 0.0}  # every list holds its reference
    acoustic_only = rr.error_report(test, rr.Weights([0.0], 0.0))
    assert acoustic_only.rescored == acoustic_only.am


def test_formats_agree_and_scores_are_scores(trained_run: Path, tmp_path: Path) -> None:
    records = synthetic_nbest(25, 13)
    jsonl = write_jsonl(tmp_path / "n.jsonl", records)
    tsv, tsv_refs = write_tsv(tmp_path / "n.tsv", records)
    kaldi, kaldi_scores, kaldi_refs = write_kaldi(tmp_path / "n.txt", records)
    common = ["-c", str(trained_run), "--lm-weight", "0.7", "--bonus", "0.3"]
    outputs = [
        runner.invoke(app, ["rerank", str(jsonl), *common]),
        runner.invoke(app, ["rerank", str(tsv), "--refs", str(tsv_refs), *common]),
        runner.invoke(app, ["rerank", str(kaldi), "--scores", str(kaldi_scores), "--am-is-cost",
                            "--refs", str(kaldi_refs), *common]),
    ]
    for result in outputs:
        assert result.exit_code == 0, result.output
    assert outputs[0].stdout == outputs[1].stdout == outputs[2].stdout
    assert "WER rescored" in outputs[0].stderr and "WER oracle" in outputs[0].stderr
    ranked = [json.loads(line) for line in outputs[0].stdout.splitlines()]
    assert [r["id"] for r in ranked] == [r["id"] for r in records]
    for record in ranked:
        totals = [h["total"] for h in record["hyps"]]
        assert totals == sorted(totals, reverse=True) and record["best"] == record["hyps"][0]["text"]
        for h in record["hyps"]:
            assert h["total"] == pytest.approx(h["am_score"] + 0.7 * h["lm_logprob"] + 0.3 * len(h["text"].split()))
    # The per-hypothesis lm_logprob is exactly what `lmcli score` gives for the text.
    texts = [h["text"] for h in ranked[0]["hyps"]]
    scored = runner.invoke(app, ["score", "-c", str(trained_run), "--json", *texts])
    logprobs = [json.loads(line)["logprob"] for line in scored.stdout.splitlines()]
    assert [h["lm_logprob"] for h in ranked[0]["hyps"]] == pytest.approx(logprobs, abs=1e-9)


def test_tune_from_the_cli_prints_reusable_weights(trained_run: Path, tmp_path: Path) -> None:
    dev = write_jsonl(tmp_path / "dev.jsonl", synthetic_nbest(40, 21))
    test = write_jsonl(tmp_path / "test.jsonl", synthetic_nbest(20, 22))
    result = runner.invoke(app, ["rerank", str(test), "-c", str(trained_run), "--tune", str(dev)])
    assert result.exit_code == 0, result.output
    assert "tuned on dev" in result.stderr and "--lm-weight" in result.stderr
    assert len(result.stdout.splitlines()) == 20
    conflict = runner.invoke(app, ["rerank", str(test), "-c", str(trained_run), "--tune", str(dev),
                                   "--lm-weight", "2"])
    assert conflict.exit_code == 2 and "--tune" in conflict.stderr


def test_identical_texts_are_scored_once(lm: ckpt.Checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the scorer is given, not only what the counts say; each hypothesis still gets
    its own text's score."""
    utterances = [rr.Utterance("a", [rr.Hypothesis("the cat sees the moon .", -1.0),
                                     rr.Hypothesis("the cat sees the moon .", -2.0)]),
                  rr.Utterance("b", [rr.Hypothesis("the cat sees the moon .", -1.0),
                                     rr.Hypothesis("a dog likes a song .", -1.5)])]
    model = lm.build_model()
    cat, dog = (score.logprob for score in score_sentences(
        model, lm.tokenizer, ["the cat sees the moon .", "a dog likes a song ."]))
    scored: list[str] = []

    def counting(model: object, tokenizer: object, texts: list[str], **options: object):
        scored.extend(texts)
        return score_sentences(model, tokenizer, texts, **options)

    monkeypatch.setattr(rr, "score_sentences", counting)
    stats = rr.attach_lm_scores(utterances, [rr.LanguageModel(model, lm.tokenizer)])
    assert stats.hypotheses == 4 and stats.unique_texts == 2
    assert sorted(scored) == ["a dog likes a song .", "the cat sees the moon ."]
    assert [h.lm_logprobs for u in utterances for h in u.hyps] == [[cat], [cat], [cat], [dog]]


def bad(tmp_path: Path, name: str, content: str, *extra: str):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return runner.invoke(app, ["rerank", str(path), *extra])


def test_bad_nbest_input_names_the_line(trained_run: Path, tmp_path: Path) -> None:
    c = ["-c", str(trained_run)]
    good = json.dumps({"id": "u1", "hyps": [{"text": "a dog", "am_score": -1}]})
    result = bad(tmp_path, "a.jsonl", good + "\n{not json\n", *c)
    assert result.exit_code == 1 and "a.jsonl:2" in result.stderr and "Traceback" not in result.output
    missing = json.dumps({"id": "u2", "hyps": [{"text": "a cat"}]})
    result = bad(tmp_path, "b.jsonl", good + "\n" + missing + "\n", *c)
    assert result.exit_code == 1 and "b.jsonl:2" in result.stderr and "am_score" in result.stderr
    skipped = bad(tmp_path, "b2.jsonl", good + "\n" + missing + "\n", *c, "--skip-bad")
    assert skipped.exit_code == 0 and "skipped" in skipped.stderr
    assert [json.loads(x)["id"] for x in skipped.stdout.splitlines()] == ["u1"]
    empty = json.dumps({"id": "u3", "hyps": []})
    result = bad(tmp_path, "c.jsonl", good + "\n" + empty + "\n", *c)
    assert result.exit_code == 1 and "no hypotheses" in result.stderr
    result = bad(tmp_path, "d.tsv", "u1\t-1.0\ta dog\nu1 -2.0 a cat\n", *c)
    assert result.exit_code == 1 and "d.tsv:2" in result.stderr
    result = bad(tmp_path, "e.tsv", "u1\tloud\ta dog\n", *c)
    assert result.exit_code == 1 and "e.tsv:1" in result.stderr and "number" in result.stderr
    scores = tmp_path / "s.txt"
    scores.write_text("u1-1 3.5\n", encoding="utf-8")
    result = bad(tmp_path, "f.txt", "u1-1 a dog\nu1-2 a cat\n", *c, "--scores", str(scores))
    assert result.exit_code == 1 and "f.txt:2" in result.stderr and "no score" in result.stderr
    result = bad(tmp_path, "g.txt", "u1 a dog\n", *c, "--scores", str(scores))
    assert result.exit_code == 1 and "UTTID-1" in result.stderr
    result = bad(tmp_path, "h.txt", "", *c)
    assert result.exit_code == 1 and "empty" in result.stderr
    result = bad(tmp_path, "i.txt", "just words here\n", *c)
    assert result.exit_code == 2 and "--format" in result.stderr


def test_stdin_input(trained_run: Path) -> None:
    lines = "u1\t-1.0\tthe cat sees the moon .\nu1\t-0.5\tthe sees cat the moon .\n"
    result = runner.invoke(app, ["rerank", "-", "-c", str(trained_run)], input=lines)
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert record["best"] == "the cat sees the moon ."
