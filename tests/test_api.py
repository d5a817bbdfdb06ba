"""The Python API gives exactly what the commands print, prints nothing, and can be
shared by threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lmcli
from lmcli.cli import app
from conftest import child_env
from test_rerank import synthetic_nbest, write_jsonl

runner = CliRunner()
SENTENCES = ["the cat sees the moon .", "moon the sees cat the .", "a dog likes a song ."]


def cli(*args: str) -> list[dict]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_score_is_what_score_prints(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lm = lmcli.load(trained_run)
    records = lm.score(SENTENCES, records=True, per_token=True)
    assert records == cli("score", "-c", str(trained_run), "--json", "--per-token", *SENTENCES)
    assert lm.score(SENTENCES) == [r["logprob"] for r in records]
    assert lm.score(SENTENCES[0]) == [records[0]["logprob"]]
    assert lm.score(SENTENCES[0], eos=False, records=True) == cli(
        "score", "-c", str(trained_run), "--json", "--no-eos", SENTENCES[0])
    pairs = lm.logprobs(SENTENCES[0])
    assert [t for t, _ in pairs] == ["the", "cat", "sees", "the", "moon", ".", "<EOS>"]
    assert sum(lp for _, lp in pairs) == pytest.approx(records[0]["logprob"], abs=1e-9)
    assert capsys.readouterr() == ("", "")


def test_generate_and_rerank_are_what_the_commands_print(trained_run: Path, tmp_path: Path) -> None:
    lm = lmcli.load(trained_run)
    samples = lm.generate(3, prime="the cat", seed=5, temperature=0.7, records=True)
    assert samples == cli("generate", "-c", str(trained_run), "-n", "3", "--prime", "the cat", "--seed", "5",
                          "--temperature", "0.7", "--json")
    assert lm.generate(3, prime="the cat", seed=5, temperature=0.7) == [s["text"] for s in samples]
    records = synthetic_nbest(5, 71)
    nbest = write_jsonl(tmp_path / "n.jsonl", records)
    assert lm.rerank(records, lm_weight=0.8, bonus=0.1) == cli(
        "rerank", str(nbest), "-c", str(trained_run), "--lm-weight", "0.8", "--bonus", "0.1")


def test_threads_share_a_model(trained_run: Path) -> None:
    lm = lmcli.load(trained_run)
    expected = lm.score(SENTENCES * 20)
    results: list[list[float]] = [[] for _ in range(6)]

    def work(slot: int) -> None:
        results[slot] = lm.score(SENTENCES * 20)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r == expected for r in results)


def test_bad_input_raises_the_one_line_error(tmp_path: Path, trained_run: Path) -> None:
    with pytest.raises(lmcli.LmcliError, match="not found"):
        lmcli.load(tmp_path / "nowhere")
    lm = lmcli.load(trained_run)
    with pytest.raises(lmcli.LmcliError, match="am_score"):
        lm.rerank([{"id": "u1", "hyps": [{"text": "a cat"}]}])
    with pytest.raises(lmcli.LmcliError, match="no utterances"):
        lm.rerank([])


def test_import_lmcli_stays_light() -> None:
    """``import lmcli`` loads neither torch nor the API until one is used."""
    code = "import sys, lmcli; print('torch' in sys.modules, 'lmcli.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    assert out.stdout.split() == ["False", "False"], out.stderr
