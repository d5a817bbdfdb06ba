"""Training options beyond the plain loop: the AR/TAR activation penalty, sentence batching
and the closing sentence phase, NT-ASGD, warm-up and cosine schedules, mixed precision, and
the refusal of bad choices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmcli import checkpoint as ckpt
from lmcli.corpus import load_corpus
from lmcli.errors import UsageError
from lmcli.model import Activations
from lmcli.train import Trainer, TrainConfig, activation_penalty, resume_run, start_run

from conftest import stop_after, train_request, valid_losses, weights


def weights_differ(a: Path, b: Path) -> bool:
    """Whether two checkpoints' weights differ anywhere: a setting changed the run."""
    first, second = weights(a), weights(b)
    return any(not torch.equal(value, second[name]) for name, value in first.items())


def parameter_names(path: Path) -> list[str]:
    """The names of a checkpoint's parameters in the model's order, the order of the
    NT-ASGD average in its training state."""
    return [name for name, _ in ckpt.load(path).build_model().named_parameters()]


def test_activation_penalty_is_ar_plus_tar_over_real_positions() -> None:
    raw = torch.randn(2, 4, 3)
    dropped = raw * 2
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    penalty = activation_penalty(Activations(raw, dropped), mask, ar=2.0, tar=1.0)
    ar = torch.stack([dropped[0, t].pow(2).mean() for t in range(3)]
                     + [dropped[1, t].pow(2).mean() for t in range(2)]).mean()
    steps = [(raw[0, t] - raw[0, t - 1]).pow(2).mean() for t in (1, 2)] + [(raw[1, 1] - raw[1, 0]).pow(2).mean()]
    tar = torch.stack(steps).mean()
    assert penalty is not None
    torch.testing.assert_close(penalty, 2.0 * ar + 1.0 * tar)
    assert activation_penalty(Activations(raw, dropped), None, 0.0, 0.0) is None


def test_sentence_batching_trains_and_resumes_exactly(tmp_path: Path) -> None:
    """Sentence batches: the validation loss falls, the run is not the stream-batched one,
    and a run stopped midway resumes to the same weights, bit for bit."""
    settings = {"batching": "sentences", "max_steps": 30}
    straight = start_run(train_request(tmp_path, "straight", **settings), root=tmp_path / "ck")
    losses = valid_losses(straight.last_path)
    assert losses[-1] < losses[0]
    stream = start_run(train_request(tmp_path, "stream", max_steps=30), root=tmp_path / "ck")
    assert weights_differ(straight.last_path, stream.last_path)
    start_run(train_request(tmp_path, "resumed", **settings), root=tmp_path / "ck", should_stop=stop_after(13))
    finished = resume_run(tmp_path / "resumed", root=tmp_path / "ck")
    assert finished.step == straight.step
    for name, value in weights(straight.last_path).items():
        torch.testing.assert_close(weights(finished.last_path)[name], value, rtol=0, atol=0)
    assert valid_losses(finished.last_path) == losses


def phase_steps(path: Path) -> list[int]:
    return [m["step"] for m in torch.load(path, weights_only=True)["metrics"] if m["event"] == "phase"]


@pytest.mark.parametrize("stop_at", [13, 26])
def test_sentence_phase_begins_at_its_share_and_resumes_exactly(tmp_path: Path, stop_at: int) -> None:
    """The last quarter of 30 steps trains on sentences: the switch comes after step 23
    (23/30 is the first share past 3/4), and a run stopped before or inside the phase
    resumes to the same weights, bit for bit."""
    settings = {"sentence_phase": 0.25, "max_steps": 30, "lr_schedule": "cosine"}
    straight = start_run(train_request(tmp_path, "straight", **settings), root=tmp_path / "ck")
    assert phase_steps(straight.last_path) == [23]  # 23 steps taken when it began
    state = torch.load(straight.last_path, weights_only=True)["training_state"]["run"]
    assert state["phase"] == "sentences" and state["step"] == 30
    start_run(train_request(tmp_path, "resumed", **settings), root=tmp_path / "ck", should_stop=stop_after(stop_at))
    finished = resume_run(tmp_path / "resumed", root=tmp_path / "ck")
    assert finished.step == straight.step
    for name, value in weights(straight.last_path).items():
        torch.testing.assert_close(weights(finished.last_path)[name], value, rtol=0, atol=0)
    assert valid_losses(finished.last_path) == valid_losses(straight.last_path)
    assert phase_steps(finished.last_path) == [23]
    # Without the phase the same run ends elsewhere: the phase changed the windows.
    plain = start_run(train_request(tmp_path, "plain", **{**settings, "sentence_phase": 0.0}), root=tmp_path / "ck")
    assert phase_steps(plain.last_path) == []
    assert weights_differ(straight.last_path, plain.last_path)


def test_sentence_phase_spends_the_epochs_steps_and_validates_at_the_end(tmp_path: Path) -> None:
    settings = {"sentence_phase": 0.5, "max_steps": None, "epochs": 2, "eval_every": 1000}
    with_phase = start_run(train_request(tmp_path, "phase", **settings), root=tmp_path / "ck")
    without = start_run(train_request(tmp_path, "plain", **{**settings, "sentence_phase": 0.0}), root=tmp_path / "ck")
    assert with_phase.reason == without.reason == "completed"
    assert with_phase.step == without.step  # two stream epochs' worth of steps
    assert phase_steps(with_phase.last_path) == [without.step // 2]  # at the end of epoch 1
    metrics = torch.load(with_phase.last_path, weights_only=True)["metrics"]
    valid_steps = [m["step"] for m in metrics if m["event"] == "valid"]
    assert valid_steps[-1] == with_phase.step  # the final weights were validated
    assert (tmp_path / "phase" / "best.pt").exists()


def test_sentence_phase_is_skipped_with_a_note_when_sentences_are_too_few(tmp_path: Path) -> None:
    """Three long lines fill the stream windows of 4 lanes but not one batch of 4 sentences."""
    req = train_request(tmp_path, "run", sentence_phase=0.5, max_steps=12)
    Path(req.corpus[0]).write_text(("the cat sat on the mat and then " * 12 + "\n") * 3, encoding="utf-8")
    notes: list[str] = []
    finished = start_run(req, root=tmp_path / "ck", on_event=lambda e: notes.append(getattr(e, "text", "")))
    assert finished.step == 12
    assert any(n.startswith("no sentence phase: the text has 2 sentences") for n in notes), notes
    assert phase_steps(finished.last_path) == []


NTASGD = {"optimizer": "ntasgd", "lr": 5.0, "nonmono": 1, "eval_every": 4, "max_steps": 24,
          "patience": 100}


def test_ntasgd_averages_after_validation_stalls_and_resumes_exactly(tmp_path: Path) -> None:
    """A huge rate soon makes validation worse; averaging starts, best.pt holds the average
    at its step (not that step's iterate), and an interrupted run resumes to the same
    weights."""
    notes: list[str] = []
    straight = start_run(train_request(tmp_path, "straight", **NTASGD), root=tmp_path / "ck",
                         on_event=lambda e: notes.append(getattr(e, "text", "")))
    assert any("averaging the weights" in n for n in notes)
    state = torch.load(straight.last_path, weights_only=True)["training_state"]
    assert state["run"]["averaged_from"] > 0 and state["average"] is not None
    best = torch.load(straight.best_path, weights_only=True)
    assert best["step"] > state["run"]["averaged_from"]  # validated best while averaging
    # The same run stopped at best.pt's step holds that step's average and iterate.
    until_best = start_run(train_request(tmp_path, "until-best", **{**NTASGD, "max_steps": best["step"]}),
                           root=tmp_path / "ck")
    average = torch.load(until_best.last_path, weights_only=True)["training_state"]["average"]
    for name, value in zip(parameter_names(straight.best_path), average, strict=True):
        assert torch.equal(best["state_dict"][name], value), name
    assert weights_differ(straight.best_path, until_best.last_path)
    start_run(train_request(tmp_path, "resumed", **NTASGD), root=tmp_path / "ck", should_stop=stop_after(17))
    finished = resume_run(tmp_path / "resumed", root=tmp_path / "ck")
    resumed_state = torch.load(finished.last_path, weights_only=True)["training_state"]
    for a, b in zip(resumed_state["average"], state["average"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert valid_losses(finished.last_path) == valid_losses(straight.last_path)


def test_average_is_the_mean_of_the_iterates(tmp_path: Path) -> None:
    """The weights after each step from the one averaging began at, taken from the same run
    stopped at each of those steps: their mean is the average at the end."""
    finished = start_run(train_request(tmp_path, "run", **NTASGD), root=tmp_path / "ck")
    state = torch.load(finished.last_path, weights_only=True)["training_state"]
    count = state["run"]["average_count"]
    begun = state["run"]["averaged_from"]
    assert 0 < begun < 24 and count == 24 - begun + 1
    iterates = []
    for step in range(begun, 24):
        stopped = start_run(train_request(tmp_path, f"until-{step}", **{**NTASGD, "max_steps": step}),
                            root=tmp_path / "ck")
        iterates.append(weights(stopped.last_path))
    iterates.append(weights(finished.last_path))
    assert len(iterates) == count
    for name, average in zip(parameter_names(finished.last_path), state["average"], strict=True):
        mean = torch.stack([iterate[name] for iterate in iterates]).mean(0)
        torch.testing.assert_close(average, mean, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(average, iterates[-1][name])  # averaging did something


def test_cosine_schedule_with_warmup(tmp_path: Path) -> None:
    seen: list[float] = []
    settings = {"optimizer": "adamw", "lr_schedule": "cosine", "warmup": 4, "max_steps": 20,
                "lr": 0.01, "eval_every": 100}
    req = train_request(tmp_path, "run", **settings)
    data = load_corpus(req.corpus, req.data)
    trainer = Trainer(data, req.model.for_vocabulary(data.tokenizer.vocab_size), req.train,
                      tmp_path / "run", req.data.to_dict())
    (tmp_path / "run").mkdir()
    for step in range(20):
        trainer.run.step = step
        seen.append(trainer.budget.lr(trainer.run, 0.0))
    # A linear ramp over the first 4 steps, times the cosine over all 20 (half way: half).
    assert seen == pytest.approx([0.01 * min(1.0, (s + 1) / 4) * 0.5 * (1 + math.cos(math.pi * s / 20))
                                  for s in range(20)])
    assert seen[10] == pytest.approx(0.01 * 0.5)


@pytest.mark.parametrize("field,value", [("optimizer", "lion"), ("lr_schedule", "linear"),
                                         ("batching", "documents"), ("warmup", -1), ("ar", -0.5),
                                         ("sentence_phase", 1.0), ("sentence_phase", -0.1),
                                         ("sentence_phase", float("nan"))])
def test_bad_training_choices_are_refused(field: str, value: object) -> None:
    with pytest.raises(UsageError):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_cosine_needs_a_budget() -> None:
    with pytest.raises(UsageError, match="budget"):
        TrainConfig(lr_schedule="cosine", epochs=None)


def test_mixed_precision_on_cpu_trains_and_saves_fp32(tmp_path: Path) -> None:
    """--amp on a CPU: bf16 products (the run ends elsewhere than in float32), fp32
    weights; the loss still falls."""
    finished = start_run(train_request(tmp_path, "amp", amp=True, max_steps=40, lr=0.02), root=tmp_path / "ck")
    losses = valid_losses(finished.last_path)
    assert all(v.dtype == torch.float32 for v in weights(finished.last_path).values())
    assert losses[-1] < losses[0]
    float32 = start_run(train_request(tmp_path, "fp32", amp=False, max_steps=40, lr=0.02), root=tmp_path / "ck")
    assert weights_differ(finished.last_path, float32.last_path)
