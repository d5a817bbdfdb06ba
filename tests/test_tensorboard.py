"""train --tensorboard writes the run's scalars where TensorBoard reads them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli.cli import app
from conftest import corpus_file

runner = CliRunner()
FLAGS = ["--level", "word", "--min-freq", "1", "--hidden-dim", "16", "--embed-dim", "8", "--layers", "1",
         "--batch-size", "4", "--seq-len", "8", "--max-steps", "12", "--eval-every", "4", "--device", "cpu",
         "--no-sample"]


def test_scalars_are_the_runs(tmp_path: Path) -> None:
    """Validation losses at the steps metrics.jsonl records them, and the training scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(corpus_file(tmp_path)), *FLAGS, "-o", str(run), "--tensorboard"])
    assert result.exit_code == 0, result.output
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_second", "valid/loss", "valid/perplexity"} <= set(
        board.Tags()["scalars"])
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["event"] == "valid"]
    logged = board.Scalars("valid/loss")
    assert [e.step for e in logged] == [r["step"] for r in valid]
    assert [e.value for e in logged] == pytest.approx([r["loss"] for r in valid], rel=1e-6)


def test_without_tensorboard_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    result = runner.invoke(app, ["train", str(corpus_file(tmp_path)), *FLAGS, "-o", str(tmp_path / "run"),
                                 "--tensorboard"])
    assert result.exit_code == 1 and "lmcli[tensorboard]" in result.stderr
    assert not (tmp_path / "run").exists()
