"""``lmcli generate`` with verse options, through the CLI, on small trained models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli import rhyme
from lmcli.cli import app
from lmcli.corpus import DataConfig
from lmcli.train import RunRequest, TrainConfig, start_run

TANG = Path(__file__).resolve().parent.parent / "corpora" / "tang_poems.txt"
runner = CliRunner()


def _train(root: Path, lines: list[str], steps: int, hidden: int = 64) -> Path:
    corpus = root / "poems.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    finished = start_run(RunRequest(
        corpus=[str(corpus)], data=DataConfig(level="char", valid_fraction=0.0),
        model={"cell": "gru", "layers": 1, "embed_dim": 32, "hidden_dim": hidden, "dropout": 0.0},
        train=TrainConfig(seq_len=32, batch_size=8, epochs=None, max_steps=steps, lr=0.01, device="cpu"),
        out_dir=root / "run"), root=root / "ck")
    return finished.best_path.parent


@pytest.fixture(scope="module")
def tang_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = TANG.read_text(encoding="utf-8").splitlines()[:1500]
    return _train(tmp_path_factory.mktemp("tang"), lines, steps=30)


@pytest.fixture(scope="module")
def parrot_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A model that has nearly learned 30 poems by heart: plain sampling copies them."""
    lines = [line for line in TANG.read_text(encoding="utf-8").splitlines()[:800] if len(line) == 24][:30]
    return _train(tmp_path_factory.mktemp("parrot"), lines, steps=60, hidden=128), lines


def _generate(run: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["generate", "-c", str(run), "--json", "--seed", "3", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_issues_command(tang_run: Path) -> None:
    """--form 7x4 --acrostic 春风化雨 --rhyme --best-of 8 -n 3, typed in simplified."""
    samples = _generate(tang_run, "--form", "7x4", "--acrostic", "春风化雨", "--rhyme", "--best-of", "8", "-n", "3")
    assert len(samples) == 3
    book = rhyme.pingshui()
    for sample in samples:
        lines = sample["lines"]
        assert [len(re.sub("[，。]", "", line)) for line in lines] == [7, 7, 7, 7]
        assert [line[0] for line in lines] == list("春风化雨")  # shown as typed
        ends = [lines[i][-2] for i in (0, 1, 3)]
        common = set.intersection(*({g for g in book.groups_of(c) if book.level[g]} for c in ends))
        assert common, lines
        assert sample["text"] == "".join(lines)


def test_plain_text_prints_one_verse_line_a_line(tang_run: Path) -> None:
    result = runner.invoke(app, ["generate", "-c", str(tang_run), "--form", "5x4", "-n", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    blocks = result.stdout.strip("\n").split("\n\n")
    assert len(blocks) == 2 and all(len(block.split("\n")) == 4 for block in blocks)


def test_auto_form_is_one_of_the_corpus_shapes(tang_run: Path) -> None:
    for sample in _generate(tang_run, "--form", "auto", "-n", "30"):
        lengths = {len(re.sub("[，。]", "", line)) for line in sample["lines"]}
        assert (lengths.pop(), len(sample["lines"])) in {(5, 4), (7, 4), (5, 8), (7, 8)} and not lengths


def test_form_list_shows_the_tunes() -> None:
    result = runner.invoke(app, ["generate", "--form", "list"])
    assert result.exit_code == 0
    rows = result.stdout.splitlines()
    assert any(row.startswith("浣溪沙") and "7。*" in row for row in rows) and len(rows) > 150


def test_traditional_output_on_request(tang_run: Path) -> None:
    samples = _generate(tang_run, "--form", "5x4", "--acrostic", "风雨东来", "--script", "traditional")
    assert [line[0] for line in samples[0]["lines"]] == list("風雨東來")


def test_a_constraint_the_vocabulary_cannot_meet_is_one_line_exit_2(tang_run: Path) -> None:
    result = runner.invoke(app, ["generate", "-c", str(tang_run), "--form", "5x4", "--acrostic", "春风化㐀"])
    assert result.exit_code == 2
    assert "㐀" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_form_and_rhyme_are_usage_errors(tang_run: Path) -> None:
    for args in (["--form", "7y4"], ["--form", "5x4", "--rhyme", "cmu"], ["--best-of", "0"]):
        result = runner.invoke(app, ["generate", "-c", str(tang_run), *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1


def test_context_is_read_but_not_printed(tang_run: Path) -> None:
    with_context = _generate(tang_run, "--form", "5x4", "--context", "秋風蕭瑟天氣涼")
    without = _generate(tang_run, "--form", "5x4")
    assert "秋風蕭瑟" not in with_context[0]["text"]
    assert with_context[0]["logprob"] != without[0]["logprob"]  # the state differs


def test_novel_never_copies_where_plain_sampling_does(parrot_run) -> None:
    run, lines = parrot_run
    plain = _generate(run, "-n", "40", "--form", "5x4")
    assert sum(copies(s["text"], lines) for s in plain) >= 30  # the premise: this model copies
    for form in (["--form", "5x4"], []):
        novel = _generate(run, "-n", "40", "--novel", *form)
        assert len(novel) == 40
        for sample in novel:
            assert sample["copied"] == {"length": 0, "text": "", "line": None}
            assert not copies(sample["text"], lines), sample["text"]


def copies(text: str, lines: list[str]) -> bool:
    """Independent of the index: a verse line, or 8 ideographs running, found in ``lines``."""
    body = re.sub("[，。]", "", text)
    training = [re.sub("[，。]", "", line) for line in lines]
    if any(body[i:i + 8] in t for t in training for i in range(len(body) - 7)):
        return True
    verse = re.findall("([^，。]{5,})[，。]", text)
    return any(v in re.findall("([^，。]+)[，。]", line) for v in verse for line in lines)
