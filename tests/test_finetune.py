"""``train --init-from``: a new run from another model's weights and vocabulary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli.batches import BpttBatches
from lmcli.cli import app
from lmcli.corpus import DataConfig, load_corpus
from lmcli.errors import InputError, SettingError
from lmcli.recipes import make_request
from lmcli.train import Progress, RunRequest, TrainConfig, resume_run, start_run
from lmcli.train.finetune import LR_SCALE
from conftest import corpus_file, stop_after


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word model trained on the general corpus (no dropout: losses compare exactly)."""
    root = tmp_path_factory.mktemp("source")
    request = RunRequest(
        corpus=[str(corpus_file(root))], data=DataConfig(level="word", min_freq=1, valid_fraction=0.1),
        model={"cell": "gru", "layers": 1, "embed_dim": 12, "hidden_dim": 16, "dropout": 0.0},
        train=TrainConfig(seq_len=10, batch_size=4, epochs=None, max_steps=20, lr=0.01, seed=7,
                          device="cpu", amp=False, eval_every=10), out_dir=root / "run")
    start_run(request, root=root / "ck")
    return root / "run"


def in_domain(tmp_path: Path, words: str = "the moon sees a dog .") -> Path:
    """A small corpus in the source's words, plus one word it never saw."""
    rng = random.Random(4)
    vocabulary = words.split()
    lines = ["zebra ."] + [" ".join(rng.choice(vocabulary) for _ in range(6)) for _ in range(120)]
    path = tmp_path / "domain.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_first_step_starts_from_the_source(source: Path, tmp_path: Path) -> None:
    """The run keeps the vocabulary and the settings, scales the rate, and its first
    step's loss is the source model's loss on that first window, computed here."""
    corpus = in_domain(tmp_path)
    request = make_request([str(corpus)], {"max_steps": 3, "eval_every": 3, "device": "cpu", "amp": False},
                           out_dir=tmp_path / "ft", init_from=source)
    origin = ckpt.load(source / ckpt.BEST)
    assert request.train.lr == pytest.approx(0.01 * LR_SCALE)
    assert request.model.cell == "gru" and request.model.hidden_dim == 16
    assert request.train.seq_len == 10 and request.train.batch_size == 4
    events: list = []
    start_run(request, on_event=events.append, root=tmp_path / "ck")
    first = next(e for e in events if isinstance(e, Progress) and e.step == 1)

    data = load_corpus([str(corpus)], request.data, tokenizer=origin.tokenizer)
    inputs, targets = BpttBatches(data.train, 4, 10).window(0)
    model = origin.build_model("cpu").eval()
    with torch.no_grad():
        logits, _ = model(inputs)
        by_hand = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    assert first.loss == pytest.approx(float(by_hand), rel=1e-5)

    tuned = ckpt.load(tmp_path / "ft" / ckpt.BEST)
    assert tuned.tokenizer.tokens == origin.tokenizer.tokens
    record = tuned.payload["provenance"]["init_from"]
    assert record["path"] == str((source / ckpt.BEST).resolve())
    words = int((data.train != 0).sum())  # "zebra" is the one unknown word among them
    assert record["unk_share"] == pytest.approx(1 / words)
    assert tuned.payload["provenance"]["recipe"] is None


def test_fine_tuning_resumes_as_a_run(source: Path, tmp_path: Path) -> None:
    """Stopped and resumed, a fine-tuning run is bit-exact with a straight one, and the
    checkpoint still says where it started."""
    flags = {"max_steps": 6, "eval_every": 3, "device": "cpu", "amp": False}
    straight = start_run(make_request([str(in_domain(tmp_path))], flags, out_dir=tmp_path / "a",
                                      init_from=source), root=tmp_path / "ck")
    start_run(make_request([str(in_domain(tmp_path))], flags, out_dir=tmp_path / "b", init_from=source),
              root=tmp_path / "ck", should_stop=stop_after(4))
    resumed = resume_run(tmp_path / "b", root=tmp_path / "ck")
    for name, value in torch.load(straight.last_path, weights_only=True)["state_dict"].items():
        assert torch.equal(torch.load(resumed.last_path, weights_only=True)["state_dict"][name], value)
    assert ckpt.load(resumed.last_path).payload["provenance"]["init_from"]["step"] == ckpt.load(
        source / ckpt.BEST).step


def test_what_the_weights_fix_cannot_change(source: Path, tmp_path: Path) -> None:
    corpus = [str(in_domain(tmp_path))]
    with pytest.raises(SettingError, match="hidden_dim.*differs"):
        make_request(corpus, {"hidden_dim": 32}, init_from=source)
    with pytest.raises(SettingError, match="level"):
        make_request(corpus, {"level": "char"}, init_from=source)
    with pytest.raises(SettingError, match="recipe"):
        make_request(corpus, {"recipe": "tiny"}, init_from=source)
    with pytest.raises(SettingError, match="corpus"):
        make_request(None, {}, init_from=source)
    # What the weights do not fix may change: dropout, the rate, the lanes.
    request = make_request(corpus, {"dropout": 0.3, "lr": 0.5, "batch_size": 2}, init_from=source)
    assert (request.model.dropout, request.train.lr, request.train.batch_size) == (0.3, 0.5, 2)


def test_a_corpus_the_model_cannot_read_is_refused(source: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("床前明月光 疑是地上霜\n" * 50, encoding="utf-8")
    request = make_request([str(foreign)], {"max_steps": 2, "device": "cpu"}, out_dir=tmp_path / "ft",
                           init_from=source)
    with pytest.raises(InputError, match="100% of the new corpus"):
        start_run(request, root=tmp_path / "ck")
    assert not (tmp_path / "ft" / ckpt.LAST).exists()


def test_command_line(source: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = str(in_domain(tmp_path))
    both = runner.invoke(app, ["train", corpus, "--init-from", str(source), "--resume"])
    assert both.exit_code == 2 and "give one" in both.output
    result = runner.invoke(app, ["train", corpus, "--init-from", str(source), "--max-steps", "2",
                                 "--device", "cpu", "-o", str(tmp_path / "ft"), "--json", "--no-sample"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "warning" and "<UNK>" in e["message"] for e in events)
    assert (tmp_path / "ft" / ckpt.BEST).exists()
