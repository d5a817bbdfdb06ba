"""A KenLM model as one more column in score and rerank."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from lmcli.ngram import KenLM, is_ngram_file

runner = CliRunner()

# A bigram model written by hand; every probability below is read off it.
ARPA = """
\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.30103
-0.69897\t</s>\t0
-0.39794\tcat\t-0.1
-0.52288\tdog\t0

\\2-grams:
-0.2\t<s> cat
-0.4\tcat </s>
-0.3\t<s> dog
-0.15\tdog </s>

\\end\\
"""


@pytest.fixture
def arpa(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.arpa"
    path.write_text(ARPA.lstrip(), encoding="utf-8")
    return path


def test_a_kenlm_file_is_told_apart(arpa: Path, tmp_path: Path) -> None:
    assert is_ngram_file(arpa)
    assert not is_ngram_file(tmp_path / "missing.arpa")
    assert not is_ngram_file(tmp_path)


def test_kenlm_scores_in_natural_logs(arpa: Path) -> None:
    pytest.importorskip("kenlm", reason="the optional kenlm module reads n-gram models")
    (cat, dog_cat) = KenLM(arpa).scores(["cat", "dog cat"], per_token=True)
    ln10 = math.log(10)
    assert cat.token_logprobs == pytest.approx([-0.2 * ln10, -0.4 * ln10])
    assert cat.logprob == pytest.approx(-0.6 * ln10) and cat.num_tokens == 2 and cat.oov == 0
    # dog cat: p(dog|<s>), then p(cat|dog) backs off to b(dog) p(cat), then p(</s>|cat).
    assert dog_cat.logprob == pytest.approx((-0.3 + (0 - 0.39794) - 0.4) * ln10)
    (unknown,) = KenLM(arpa).scores(["zebra"])
    assert unknown.oov == 1 and unknown.unk_logprob == pytest.approx((-1.0 - 0.30103) * ln10)


def test_a_kenlm_column_in_rerank_and_score(arpa: Path, trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("kenlm", reason="the optional kenlm module reads n-gram models")
    nbest = tmp_path / "n.jsonl"
    nbest.write_text(json.dumps({"id": "u", "hyps": [{"text": "cat", "am_score": -1.0},
                                                     {"text": "dog cat", "am_score": -0.5}]}) + "\n")
    result = runner.invoke(app, ["rerank", str(nbest), "-c", str(trained_run), "-c", str(arpa),
                                 "--lm-weight", "1", "--lm-weight", "0.5"])
    assert result.exit_code == 0, result.output
    hyps = {h["text"]: h for h in json.loads(result.stdout)["hyps"]}
    assert hyps["cat"]["lm_logprobs"][1] == pytest.approx(-0.6 * math.log(10))
    scored = runner.invoke(app, ["score", "-c", str(arpa), "--json", "cat"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["logprobs"] == pytest.approx([-0.6 * math.log(10)])
    mixed = runner.invoke(app, ["score", "-c", str(trained_run), "-c", str(arpa), "--mix", "1,1", "cat"])
    assert mixed.exit_code == 1 and "not an lmcli model" in mixed.stderr


def test_without_kenlm_the_error_says_what_to_install(arpa: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "kenlm", None)  # as if it were not installed
    result = runner.invoke(app, ["score", "-c", str(arpa), "cat"])
    assert result.exit_code == 1 and "pip install kenlm" in result.stderr
