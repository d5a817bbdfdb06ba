"""Shared fixtures and helpers: tiny corpora, a tiny trained run, small training runs to
build and read back, a pinned terminal width."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from lmcli.corpus import DataConfig
from lmcli.train import RunRequest, TrainConfig, start_run

# Rich reads these when a console is made: fixed width, no colour codes in captured output.
os.environ["COLUMNS"] = "100"
os.environ["NO_COLOR"] = "1"
os.environ.pop("FORCE_COLOR", None)

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def child_env(**changes: str) -> dict[str, str]:
    """The environment for an lmcli child process: this checkout's package on the path (not
    the one an editable install elsewhere points at), one thread, and ``changes``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **changes}

SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the king", "a child"]
VERBS = ["sees", "likes", "finds", "follows", "hears", "wants"]
OBJECTS = ["the moon", "a river", "the tree", "some bread", "the sea", "a song"]


def sharpen_outputs(model: torch.nn.Module, scale: float) -> None:
    """Untrained output layers give nearly uniform distributions, which hide mistakes:
    scale the output weights (every linear layer of an adaptive softmax too) and draw
    random biases."""
    with torch.no_grad():
        for layer in model.decoder.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(scale)
                if layer.bias is not None:
                    layer.bias.normal_(0, 1.0)


def processes(where: str, number: int) -> list[tuple[int, str]]:
    """(pid, state) of the processes whose parent (``where="ppid"``) or session (``"sid"``)
    is ``number``, zombies included: what a pass or a run leaves behind."""
    column = {"ppid": 1, "sid": 3}[where]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[column]) == number:
                found.append((int(entry.name), fields[0]))
    return found


def english_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
            for _ in range(n)]


POEM_LINES = [
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
]


@pytest.fixture
def english_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "english.txt"
    path.write_text("\n".join(english_lines(300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def poem_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "poems.txt"
    path.write_text("\n".join(POEM_LINES * 20) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so checkpoints/LATEST never leaks between tests."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def tiny_run(root: Path, lines: list[str], level: str, model: dict, **train: object) -> Path:
    """A tiny model trained on ``lines`` into ``root / "run"`` (no dropout unless ``model``
    says; ``train`` overrides TrainConfig fields)."""
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"seq_len": 12, "batch_size": 8, "lr": 0.01, "seed": 3, "device": "cpu", **train}
    request = RunRequest(corpus=[str(corpus)], data=DataConfig(level=level, min_freq=1, valid_fraction=0.1),
                         model={"layers": 1, "dropout": 0.0, **model}, train=TrainConfig(**settings),
                         out_dir=root / "run")
    start_run(request, root=root / "checkpoints")
    return root / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-level LSTM trained for a few seconds, shared by read-only tests."""
    return tiny_run(tmp_path_factory.mktemp("trained"), english_lines(400, seed=1), "word",
                    {"cell": "lstm", "embed_dim": 16, "hidden_dim": 32}, epochs=6)


# ----------------------------------------------------------------- small training runs


def corpus_file(tmp_path: Path, n: int = 200) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(english_lines(n, seed=5)) + "\n", encoding="utf-8")
    return path


def train_request(tmp_path: Path, out: str, cell: str = "lstm", **train: object) -> RunRequest:
    """A 24-step word-level run of a tiny two-layer model on ``corpus_file``, into
    ``tmp_path / out``; ``train`` overrides TrainConfig fields."""
    settings = {"seq_len": 10, "batch_size": 4, "epochs": None, "max_steps": 24, "lr": 0.01,
                "seed": 7, "device": "cpu", "eval_every": 8, **train}
    return RunRequest(
        corpus=[str(corpus_file(tmp_path))],
        data=DataConfig(level="word", min_freq=1, valid_fraction=0.1),
        model={"cell": cell, "layers": 2, "embed_dim": 12, "hidden_dim": 16, "dropout": 0.2},
        train=TrainConfig(**settings), out_dir=tmp_path / out)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def valid_losses(path: Path) -> list[float]:
    """The validation losses a checkpoint's metrics history holds, in order."""
    return [m["loss"] for m in torch.load(path, weights_only=True)["metrics"] if m["event"] == "valid"]


def stop_after(steps: int):
    """A should_stop callback: the trainer asks it before every step."""
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > steps

    return should_stop
