"""lmcli plot (terminal and image), coloured per-token scores, shell completion."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmcli import ui
from lmcli.cli import app
from lmcli.curves import read_curves
from lmcli.errors import LmcliError
from conftest import child_env

runner = CliRunner()


def test_curves_read_the_run(trained_run: Path) -> None:
    """Validation points at their steps, tokens read off the training records, perplexity
    as exp(loss), the rate beside the training loss."""
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    train = [r for r in records if r["event"] == "train"]
    by_step = read_curves(trained_run)
    assert by_step.valid.x == [r["step"] for r in valid] and by_step.valid.y == [r["loss"] for r in valid]
    assert by_step.train.x == [r["step"] for r in train] and by_step.lr.y == [r["lr"] for r in train]
    perplexity = read_curves(trained_run, y="perplexity")
    assert perplexity.valid.y == pytest.approx([math.exp(r["loss"]) for r in valid])
    tokens = read_curves(trained_run, x="tokens")
    per_step = train[-1]["tokens"] / train[-1]["step"]  # constant lanes x window in this run
    assert tokens.valid.x == pytest.approx([r["step"] * per_step for r in valid if r["step"] <= train[-1]["step"]]
                                           + [train[-1]["tokens"]] * sum(r["step"] > train[-1]["step"] for r in valid))
    assert read_curves(trained_run, x="time").valid.x == [r["time"] for r in valid]


def test_bad_metrics_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(LmcliError, match="no training metrics"):
        read_curves(tmp_path)
    broken = tmp_path / "metrics.jsonl"
    broken.write_text('{"event": "valid", "step": 1, "time": 0.1, "loss": 2.0}\n{"event": "valid", "st\n')
    with pytest.raises(LmcliError, match="metrics.jsonl:2"):
        read_curves(tmp_path)
    broken.write_text('{"event": "end", "step": 0}\n')
    with pytest.raises(LmcliError, match="no training or validation records"):
        read_curves(tmp_path)


def test_plot_in_the_terminal(trained_run: Path) -> None:
    result = runner.invoke(app, ["plot", str(trained_run), str(trained_run), "--width", "70", "--height", "18"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 18 and all(len(line) <= 72 for line in lines)
    assert "run train" in result.stdout and "run valid" in result.stdout and "learning rate" in result.stdout
    wrong = runner.invoke(app, ["plot", str(trained_run), "--x", "epochs"])
    assert wrong.exit_code == 2 and "--x" in wrong.stderr


def test_plot_to_an_image(trained_run: Path, tmp_path: Path) -> None:
    """A PNG of matplotlib's size, white at the corner and drawn on inside."""
    from PIL import Image

    out = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", str(trained_run), "-o", str(out), "--y", "perplexity"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (800, 450)
        pixels = image.convert("RGB")
        assert pixels.getpixel((2, 2)) == (255, 255, 255)
        colours = {pixels.getpixel((x, y)) for x in range(100, 700, 7) for y in range(60, 380, 7)}
        assert len(colours) > 3  # curves, axes and text, not a blank canvas
    assert runner.invoke(app, ["plot", str(trained_run), "-o", str(tmp_path / "a.jpg")]).exit_code == 2


def test_plot_without_matplotlib_says_what_to_install(trained_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["plot", str(trained_run), "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 1 and "lmcli[plot]" in result.stderr


def test_surprise_colours_run_from_green_to_red() -> None:
    assert ui.surprise_colour(0.0) == "rgb(0,255,0)"
    assert ui.surprise_colour(math.log(10 ** -1.5)) == "rgb(255,255,0)"
    assert ui.surprise_colour(math.log(1e-3)) == ui.surprise_colour(-50.0) == "rgb(255,0,0)"
    greens = [int(ui.surprise_colour(math.log(p)).split(",")[1]) for p in (1.0, 0.3, 0.1, 0.03, 0.01)]
    reds = [int(ui.surprise_colour(math.log(p)).split("(")[1].split(",")[0]) for p in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert reds == sorted(reds) and greens == sorted(greens, reverse=True)


def test_shell_completion() -> None:
    """The installed command offers Typer's completion: its script, and commands completed."""
    # Typer reads the shell off the parent process: run it from bash, as a user would (the
    # second command keeps bash from replacing itself with python).
    script = subprocess.run(["bash", "-c", f'{sys.executable} -m lmcli --show-completion; echo "exit $?"'],
                            capture_output=True, text=True, env=child_env())
    assert script.stdout.rstrip().endswith("exit 0") and "complete -o" in script.stdout, script.stderr
    env = child_env(_LMCLI_COMPLETE="complete_bash", COMP_WORDS="lmcli tr", COMP_CWORD="1")
    done = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'lmcli'; from lmcli.cli import main; main()"],
                          capture_output=True, text=True, env={**env, "COLUMNS": os.environ.get("COLUMNS", "80")})
    assert "train" in done.stdout.split()
