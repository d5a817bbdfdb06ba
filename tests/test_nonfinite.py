"""A step whose loss is not finite is skipped (no update, a warning), and a run of them
stops training with a clear error while the checkpoints written before stay whole."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError
from lmcli.model import RNNLM
from lmcli.train import MAX_BAD_STEPS, Note, RunRequest, TrainConfig, start_run


def poison(monkeypatch: pytest.MonkeyPatch, bad_steps: set[int]) -> list[int]:
    """Training steps (counted from 1) in ``bad_steps`` get a NaN loss; validation is untouched."""
    calls: list[int] = []
    original = RNNLM.mean_loss

    def patched(self, features, targets, ignore_index=-100, normalizer=None):
        result = original(self, features, targets, ignore_index, normalizer)
        calls.append(1)
        if len(calls) in bad_steps:
            return result * float("nan")
        return result

    monkeypatch.setattr(RNNLM, "mean_loss", patched)
    return calls


def request(corpus: Path, out: Path, optimizer: str, steps: int, eval_every: int = 100) -> RunRequest:
    return RunRequest(corpus=[str(corpus)], data=DataConfig(level="word", valid_fraction=0.1),
                      model={"cell": "lstm", "layers": 1, "embed_dim": 8, "hidden_dim": 16, "dropout": 0.0},
                      train=TrainConfig(seq_len=8, batch_size=4, max_steps=steps, epochs=None, lr=0.01,
                                        optimizer=optimizer, seed=1, device="cpu", eval_every=eval_every),
                      out_dir=out)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_few_bad_steps_are_skipped_with_a_warning(english_corpus: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, optimizer: str) -> None:
    # The reference: the same run stopped just before the bad steps.
    reference = start_run(request(english_corpus, tmp_path / "before", optimizer, steps=4), root=tmp_path / "ck")
    before = ckpt.load(tmp_path / "before" / "last.pt").payload["state_dict"]
    poison(monkeypatch, {5, 6})
    events: list = []
    stopped = start_run(request(english_corpus, tmp_path / "skip", optimizer, steps=6), root=tmp_path / "ck",
                        on_event=events.append)
    assert stopped.step == 6
    after = ckpt.load(tmp_path / "skip" / "last.pt").payload["state_dict"]
    for key, value in before.items():  # two skipped steps changed no weight
        assert torch.equal(after[key], value), key
    # Reported when progress is shown (every half second) and at the end: one note for
    # both steps, or one each on a slow machine.
    notes = [e.text for e in events if isinstance(e, Note) and "was not finite" in e.text]
    counts = [int(re.match(r"skipped (\d+) steps? whose loss or gradient was not finite", n)[1])
              for n in notes]
    assert sum(counts) == 2, notes
    metrics = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["count"] for m in metrics if m.get("event") == "skipped") == 2
    # Training goes on normally after them: the validation loss falls below the step-4 one.
    monkeypatch.undo()
    poison(monkeypatch, {5, 6})
    finished = start_run(request(english_corpus, tmp_path / "on", optimizer, steps=20), root=tmp_path / "ck")
    assert finished.best_valid_loss < reference.best_valid_loss
    weights = ckpt.load(tmp_path / "on" / "last.pt").payload["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_run_of_bad_steps_stops_training_and_keeps_the_checkpoints(
        english_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, set(range(9, 1000)))
    out = tmp_path / "run"
    with pytest.raises(LmcliError, match=f"not finite for {MAX_BAD_STEPS}|not finite for [0-9]+ steps in a row"):
        start_run(request(english_corpus, out, "adam", steps=200, eval_every=4), root=tmp_path / "ck")
    last = ckpt.load(out / "last.pt")
    # Steps 9-12 were skipped (4 in a row: not yet a divergence), so the step-12 checkpoint
    # holds the weights of step 8; at the step-16 checkpoint the run of 8 stopped it.
    assert last.step == 12
    assert all(torch.isfinite(w).all() for w in last.payload["state_dict"].values())
    assert ckpt.load(out / "best.pt").step <= 8
