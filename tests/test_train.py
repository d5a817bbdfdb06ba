"""Training: reproducibility, exact resume, validation, budgets, run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError, UsageError
from lmcli.train import (EpochEnded, Finished, Note, Progress, TrainConfig, Validated, resume_run,
                         start_run)

from conftest import english_lines, stop_after, train_request, valid_losses, weights


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_same_seed_same_run(tmp_path: Path, cell: str) -> None:
    first = start_run(train_request(tmp_path, "a", cell), root=tmp_path / "ck")
    second = start_run(train_request(tmp_path, "b", cell), root=tmp_path / "ck")
    assert first.step == second.step == 24
    assert valid_losses(first.last_path) == valid_losses(second.last_path)
    for name, value in weights(first.last_path).items():
        assert torch.equal(value, weights(second.last_path)[name]), name
    other = start_run(train_request(tmp_path, "c", cell, seed=8), root=tmp_path / "ck")
    assert valid_losses(other.last_path) != valid_losses(first.last_path)


@pytest.mark.parametrize("stop_at", [5, 8, 12])
def test_resume_is_exact(tmp_path: Path, stop_at: int) -> None:
    """N steps straight == N/2 steps, stop (as Ctrl-C does), resume to N: the same weights,
    bit for bit, and the same validation history. 8 stops right after a validation."""
    straight = start_run(train_request(tmp_path, "straight"), root=tmp_path / "ck")
    interrupted = start_run(train_request(tmp_path, "resumed"), root=tmp_path / "ck",
                            should_stop=stop_after(stop_at))
    assert interrupted.reason == "interrupted"
    assert interrupted.step == stop_at
    finished = resume_run(tmp_path / "resumed", root=tmp_path / "ck")
    assert finished.reason == "max_steps" and finished.step == straight.step
    for name, value in weights(straight.last_path).items():
        torch.testing.assert_close(weights(finished.last_path)[name], value, rtol=0, atol=0)
    assert valid_losses(finished.last_path) == valid_losses(straight.last_path)


@pytest.mark.parametrize("how", ["interrupt", "max_steps"])
def test_resume_across_an_epoch_boundary_is_exact(tmp_path: Path, how: str) -> None:
    straight = start_run(train_request(tmp_path, "straight", max_steps=None, epochs=2), root=tmp_path / "ck")
    per_epoch = straight.step // 2
    if how == "interrupt":
        start_run(train_request(tmp_path, "resumed", max_steps=None, epochs=2), root=tmp_path / "ck",
                  should_stop=stop_after(per_epoch))
    else:  # a budget that ends exactly on the last window of the epoch
        start_run(train_request(tmp_path, "resumed", max_steps=per_epoch, epochs=2), root=tmp_path / "ck")
    finished = resume_run(tmp_path / "resumed", overrides={"max_steps": None}, root=tmp_path / "ck")
    assert finished.step == straight.step
    for name, value in weights(straight.last_path).items():
        torch.testing.assert_close(weights(finished.last_path)[name], value, rtol=0, atol=0)
    assert valid_losses(finished.last_path) == valid_losses(straight.last_path)


def test_validation_perplexity_falls_and_events_arrive(tmp_path: Path) -> None:
    events: list[object] = []
    finished = start_run(train_request(tmp_path, "run", max_steps=None, epochs=3, eval_every=1000),
                         on_event=events.append, root=tmp_path / "ck")
    assert finished.reason == "completed"
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert epochs[-1].valid_loss < epochs[0].valid_loss
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert isinstance(events[-1], Finished)
    lines = [json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS).read_text().splitlines()]
    assert [entry["event"] for entry in lines if entry["event"] == "epoch"] == ["epoch"] * 3
    assert lines[-1]["event"] == "end"
    best = torch.load(tmp_path / "run" / ckpt.BEST, weights_only=True)
    assert best["valid_loss"] == pytest.approx(min(e.valid_loss for e in epochs))
    assert best["training_state"] is None  # best.pt is for using; last.pt for resuming
    assert torch.load(tmp_path / "run" / ckpt.LAST, weights_only=True)["training_state"] is not None


def test_stalled_validation_decays_lr_then_stops_early(tmp_path: Path) -> None:
    events: list[object] = []
    # A learning rate this large cannot improve validation for long.
    finished = start_run(train_request(tmp_path, "run", max_steps=400, eval_every=2, lr=3.0, patience=4,
                                 lr_patience=2, lr_decay=0.5), on_event=events.append,
                         root=tmp_path / "ck")
    assert finished.reason == "early_stopping"
    assert finished.step < 400
    validations = [e for e in events if isinstance(e, Validated)]
    assert [v.improved for v in validations[-4:]] == [False] * 4
    run = torch.load(finished.last_path, weights_only=True)["training_state"]["run"]
    assert run["stalls"] == 4
    decays = [e for e in events if isinstance(e, Note) and "learning rate now" in e.text]
    assert len(decays) >= 2  # at the 2nd and 4th stall in a row (and maybe earlier runs)
    assert run["lr"] == pytest.approx(3.0 * 0.5 ** len(decays))


def test_time_limit_stops_and_keeps_best(tmp_path: Path) -> None:
    finished = start_run(train_request(tmp_path, "run", max_steps=None, epochs=None, time_limit=1.0),
                         root=tmp_path / "ck")
    assert finished.reason == "time_limit"
    assert finished.best_path.exists() and finished.last_path.exists()


def test_run_folders_are_not_overwritten(tmp_path: Path) -> None:
    start_run(train_request(tmp_path, "run", max_steps=2), root=tmp_path / "ck")
    before = (tmp_path / "run" / ckpt.BEST).read_bytes()
    with pytest.raises(LmcliError, match="already holds a training run"):
        start_run(train_request(tmp_path, "run", max_steps=2), root=tmp_path / "ck")
    assert (tmp_path / "run" / ckpt.BEST).read_bytes() == before
    forced = train_request(tmp_path, "run", max_steps=3)
    forced.force = True
    assert start_run(forced, root=tmp_path / "ck").step == 3


def test_resume_allows_budgets_only_and_checks_the_corpus(tmp_path: Path) -> None:
    start_run(train_request(tmp_path, "run", max_steps=4), root=tmp_path / "ck")
    with pytest.raises(UsageError, match="cannot change"):
        resume_run(tmp_path / "run", overrides={"lr": 0.5}, root=tmp_path / "ck")
    with pytest.raises(LmcliError, match="already reached step 4"):
        resume_run(tmp_path / "run", root=tmp_path / "ck")
    assert resume_run(tmp_path / "run", overrides={"max_steps": 6}, root=tmp_path / "ck").step == 6
    (tmp_path / "corpus.txt").write_text("different text\n", encoding="utf-8")
    with pytest.raises(LmcliError, match="corpus has changed"):
        resume_run(tmp_path / "run", overrides={"max_steps": 8}, root=tmp_path / "ck")
    with pytest.raises(LmcliError, match="nothing to resume"):
        resume_run(tmp_path / "elsewhere", root=tmp_path / "ck")


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("seq_len", -1), ("lr", 0.0),
                                         ("clip", -1.0), ("epochs", 0), ("optimizer", "lbfgs")])
def test_absurd_settings_are_refused_before_reading(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(UsageError):
        start_run(train_request(tmp_path, "run", **{field: value}), root=tmp_path / "ck")
    assert not (tmp_path / "run").exists()


def test_sgd_trains_too(tmp_path: Path) -> None:
    finished = start_run(train_request(tmp_path, "run", optimizer="sgd", lr=1.0, max_steps=16),
                         root=tmp_path / "ck")
    losses = valid_losses(finished.last_path)
    assert losses[-1] < losses[0]


def test_validation_loss_is_what_eval_reports_for_the_same_text(tmp_path: Path) -> None:
    """Validation scores each sentence from an empty context, as `score` and `eval` do, so
    the best checkpoint's validation perplexity is exactly `lmcli eval VALID`'s."""
    from lmcli.text import TextFiles
    from lmcli.scoring import evaluate_file

    valid = tmp_path / "valid.txt"
    valid.write_text("\n".join(english_lines(30, seed=99)) + "\n", encoding="utf-8")
    req = train_request(tmp_path, "run", max_steps=20, eval_every=10)
    req.data = DataConfig(level="word", min_freq=1, valid_file=str(valid))
    finished = start_run(req, root=tmp_path / "ck")
    checkpoint = ckpt.load(finished.best_path)
    result = evaluate_file(checkpoint.build_model(), checkpoint.tokenizer, TextFiles.of([valid]))
    assert result.cross_entropy == pytest.approx(finished.best_valid_loss, rel=1e-6)


def test_early_stopping_defaults_follow_the_schedule() -> None:
    """Plateau decay stops after 5 stalled validations; a cosine schedule runs to its budget
    (its last, low-rate steps are where it gains), unless --patience is given."""
    assert TrainConfig().patience == 5
    assert TrainConfig(lr_schedule="cosine", max_steps=10).patience is None
    assert TrainConfig(lr_schedule="cosine", max_steps=10, patience=3).patience == 3


def test_a_resumed_time_limited_run_goes_on_along_its_clock(tmp_path: Path) -> None:
    """The time limit counts the whole run: resumed, a cosine schedule goes on from where
    the clock stood (not from its peak), and a run whose time is spent is refused."""
    events: list = []
    first = start_run(train_request(tmp_path, "run", max_steps=None, epochs=None, time_limit=1.5,
                                    lr_schedule="cosine", eval_every=10_000), root=tmp_path / "ck")
    assert first.reason == "time_limit"
    with pytest.raises(LmcliError, match="already trained for"):
        resume_run(tmp_path / "run", root=tmp_path / "ck")
    resumed = resume_run(tmp_path / "run", overrides={"time_limit": 3.0}, root=tmp_path / "ck",
                         on_event=events.append)
    assert resumed.reason == "time_limit" and resumed.elapsed >= 3.0
    rates = [e.lr for e in events if isinstance(e, Progress)]
    # Half the budget or more is spent before the resumed session starts: the rate is at
    # most half of the base rate (0.01), where restarting the clock would give nearly all of it.
    assert rates and rates[0] <= 0.0051
