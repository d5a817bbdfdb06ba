"""Data-parallel training under torchrun on CPU (gloo): two processes against one.

Every test launches ``torchrun --standalone --nproc_per_node 2 -m lmcli train ...`` exactly
as a user would, one thread per process, and compares with the single-process command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmcli import checkpoint as ckpt
from lmcli.cli import app
from lmcli.distributed import World

from conftest import child_env, english_lines

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch build has no torch.distributed")

runner = CliRunner()

# A tiny word-level LSTM with every random regulariser off and float32 arithmetic (on a
# CPU with native bf16 mixed precision is on by default, and bf16 rounds the two ways of
# summing apart by 1e-3), so that the only difference between 2 x (batch B/2) and
# 1 x batch B is the order of float32 sums. AR and TAR stay on: their averages must come
# out global too. No closing sentence phase (the word recipe's): resuming with a larger
# --max-steps would move its start, as it moves a cosine schedule.
TINY = ["--level", "word", "--min-freq", "1", "--valid-fraction", "0.1", "--model", "lstm",
        "--layers", "2", "--embed-dim", "12", "--hidden-dim", "16", "--seq-len", "10",
        "--batch-size", "8", "--dropout", "0", "--dropout-input", "0", "--dropout-hidden", "0",
        "--dropout-embed", "0", "--weight-drop", "0", "--optimizer", "sgd", "--lr", "2",
        "--clip", "0.5", "--lr-schedule", "plateau", "--ar", "2", "--tar", "1",
        "--softmax", "full", "--sentence-phase", "0", "--seed", "11", "--device", "cpu", "--no-amp",
        "--no-sample", "--json"]


def corpus(tmp_path: Path, n: int = 400) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(english_lines(n, seed=4)) + "\n", encoding="utf-8")
    return path


def torchrun(*args: object, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node N -m lmcli ARGS`` in the current folder."""
    env = {k: v for k, v in child_env().items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc), "-m", "lmcli", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def single(*args: object):
    """The same command in one process (this one)."""
    return runner.invoke(app, [str(a) for a in args])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path, exact: bool = False) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name, value in first.items():
        if exact:
            assert torch.equal(value, second[name]), name
        else:
            torch.testing.assert_close(second[name], value, rtol=1e-5, atol=1e-6, msg=name)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_lanes_split_the_global_batch() -> None:
    assert [World(r, 4).lanes(8) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert World().lanes(8) == slice(0, 8)


def test_rank_shares_average_to_the_global_batch_mean() -> None:
    """The arithmetic DDP relies on, without processes: sentence batches give the two halves
    different numbers of real targets, yet the mean of the halves' objectives (loss, AR and
    TAR each divided by the rank's share of the global count) is the whole batch's."""
    from lmcli.batches import PAD_TARGET
    from lmcli.model import RNNLM, ModelConfig
    from lmcli.train.step import _TrainStep

    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=20, cell="lstm", layers=2, embed_dim=8, hidden_dim=8,
                              dropout=0.0))
    step = _TrainStep(model, ar=2.0, tar=1.0, sentences=True)
    inputs = torch.randint(0, 20, (4, 7))
    targets = torch.randint(0, 20, (4, 7))
    targets[0, 1:] = PAD_TARGET  # the first half: 1 + 3 real targets, the second 14
    targets[1, 3:] = PAD_TARGET
    whole, whole_loss, _ = step(inputs, None, targets)
    scored = int((targets != PAD_TARGET).sum())
    shares = (scored / 2, scored / 2, int((targets[:, 1:] != PAD_TARGET).sum()) / 2)
    halves = [step(inputs[rows], None, targets[rows], shares) for rows in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close((halves[0][1] + halves[1][1]) / 2, whole_loss)
    torch.testing.assert_close((halves[0][0] + halves[1][0]) / 2, whole)
    assert whole > whole_loss  # AR/TAR took part


def test_the_torchrun_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcli.distributed import env_world, place
    from lmcli.errors import UsageError

    assert env_world() == World()  # not under torchrun: one process, no group
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == World(1, 2, 1)
    assert place(torch.device("cpu"), World(1, 2, 1)) == torch.device("cpu")
    with pytest.raises(UsageError, match="GPU of its LOCAL_RANK"):
        place(torch.device("cuda", 3), World(1, 2, 1))
    if torch.cuda.device_count() < 2:
        with pytest.raises(UsageError, match="lower --nproc_per_node"):
            place(torch.device("cuda"), World(1, 2, 1))
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UsageError, match="bad torchrun environment"):
        env_world()


def test_two_ranks_step_as_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    """One optimiser step, then three (resumed), with 2 ranks x 4 lanes give the weights of
    1 process x 8 lanes; and a checkpoint resumes at the other world size on the same path."""
    text = corpus(tmp_path)
    done = torchrun("train", text, *TINY, "--max-steps", "1", "-o", "ddp")
    assert done.returncode == 0, done.stderr
    result = single("train", text, *TINY, "--max-steps", "1", "-o", "one")
    assert result.exit_code == 0, result.output
    assert_same_weights(Path("one") / ckpt.LAST, Path("ddp") / ckpt.LAST)
    shutil.copytree("ddp", "ddp-then-one")
    shutil.copytree("one", "one-then-ddp")

    done = torchrun("train", "--resume", "-o", "ddp", "--max-steps", "3")
    assert done.returncode == 0, done.stderr
    result = single("train", "--resume", "-o", "one", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert_same_weights(Path("one") / ckpt.LAST, Path("ddp") / ckpt.LAST)
    # Another world size: the checkpoint holds every lane's state, so one process goes on.
    result = single("train", "--resume", "-o", "ddp-then-one", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert_same_weights(Path("ddp") / ckpt.LAST, Path("ddp-then-one") / ckpt.LAST)
    done = torchrun("train", "--resume", "-o", "one-then-ddp", "--max-steps", "3")
    assert done.returncode == 0, done.stderr
    assert_same_weights(Path("one") / ckpt.LAST, Path("one-then-ddp") / ckpt.LAST)
    state = torch.load(Path("ddp") / ckpt.LAST, weights_only=True)["training_state"]
    assert state["run"]["step"] == 3 and state["hidden"][0].shape[1] == 8  # all 8 lanes saved


def test_two_processes_train_and_one_uses_the_checkpoint(tmp_path: Path) -> None:
    """The CI run: 2 gloo processes train a tiny model, the loss falls, rank 0 alone reports
    and writes, and the checkpoint (the single-process format) serves generate and score."""
    text = corpus(tmp_path)
    done = torchrun("train", text, *TINY, "--optimizer", "adam", "--lr", "0.02", "--max-steps", "60",
                    "--eval-every", "20", "-o", "run")
    assert done.returncode == 0, done.stderr
    lines = events(done.stdout)
    assert [e["event"] for e in lines].count("started") == 1  # rank 0 speaks, rank 1 is silent
    assert lines[-1]["event"] == "finished" and lines[-1]["step"] == 60
    assert "2 processes (gloo)" in next(e for e in lines if e["event"] == "started")["device"]
    valid = [(e["step"], e["loss"]) for e in lines if e["event"] == "validated"]
    assert valid[-1][1] < valid[0][1] - 0.5, valid  # (3.0 -> 1.8 when written)
    metrics = [json.loads(line) for line in (Path("run") / ckpt.METRICS).read_text().splitlines()]
    assert [(m["step"], m["loss"]) for m in metrics if m["event"] == "valid"] == valid  # once each
    saved = torch.load(Path("run") / ckpt.BEST, weights_only=True)
    reference = torch.load(weights_only=True, f=_one_step_checkpoint(text))
    assert saved.keys() == reference.keys()

    generated = single("generate", "-c", "run", "-n", "3", "--seed", "1", "--json")
    assert generated.exit_code == 0, generated.output
    samples = events(generated.stdout)
    assert len(samples) == 3 and any(s["text"].strip() for s in samples)
    assert all(s["tokens"][-1] == "<EOS>" and "<UNK>" not in s["tokens"] for s in samples)
    scored = single("score", "-c", "run", "--json", "the cat sees the dog .", "dog the . sees cat the")
    assert scored.exit_code == 0, scored.output
    good, bad = events(scored.stdout)
    assert good["logprob"] > bad["logprob"]  # it learned the word order


def _one_step_checkpoint(text: Path) -> Path:
    """A single-process checkpoint of the same model, for its layout."""
    result = single("train", text, *TINY, "--max-steps", "1", "-o", "reference")
    assert result.exit_code == 0, result.output
    return Path("reference") / ckpt.BEST


def test_resume_at_the_same_world_size_is_exact(tmp_path: Path) -> None:
    """Dropout on: 2 ranks for 12 steps straight == 2 ranks for 5, stopped, then resumed to
    12, bit for bit (each rank's random state and lanes' recurrent state are restored)."""
    text = corpus(tmp_path)
    noisy = [*TINY, "--dropout", "0.3", "--weight-drop", "0.2", "--eval-every", "4"]
    straight = torchrun("train", text, *noisy, "--max-steps", "12", "-o", "straight")
    assert straight.returncode == 0, straight.stderr
    first = torchrun("train", text, *noisy, "--max-steps", "5", "-o", "resumed")
    assert first.returncode == 0, first.stderr
    state = torch.load(Path("resumed") / ckpt.LAST, weights_only=True)["training_state"]
    assert len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    second = torchrun("train", "--resume", "-o", "resumed", "--max-steps", "12")
    assert second.returncode == 0, second.stderr
    assert_same_weights(Path("straight") / ckpt.LAST, Path("resumed") / ckpt.LAST, exact=True)

    def history(run: str) -> list[tuple[int, float]]:
        metrics = torch.load(Path(run) / ckpt.LAST, weights_only=True)["metrics"]
        return [(e["step"], e["loss"]) for e in metrics if e["event"] == "valid"]

    # The same validations, plus the one the stop at step 5 made (which changes nothing).
    assert [h for h in history("resumed") if h[0] != 5] == history("straight")


def test_adaptive_softmax_and_a_sentence_phase_match_one_process(tmp_path: Path) -> None:
    """Tail clusters that get no target in a rank's lanes still take part (DDP would stop
    with unused parameters otherwise); the ranks move to sentences at the same step, and
    sentence batches, whose lanes hold different numbers of real targets, still average
    over the global batch."""
    lines = english_lines(400, seed=4)
    lines[200] = "zebra quokka okapi narwhal axolotl ."  # the last cluster's words: one line
    text = tmp_path / "rare.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = [*TINY, "--softmax", "adaptive", "--cutoffs", "10,24", "--sentence-phase", "0.5",
             "--max-steps", "8"]
    done = torchrun("train", text, *flags, "-o", "ddp")
    assert done.returncode == 0, done.stderr
    result = single("train", text, *flags, "-o", "one")
    assert result.exit_code == 0, result.output
    assert torch.load(Path("ddp") / ckpt.LAST, weights_only=True)["model_config"]["vocab_size"] == 30
    assert_same_weights(Path("one") / ckpt.LAST, Path("ddp") / ckpt.LAST)
    metrics = [json.loads(line) for line in (Path("ddp") / ckpt.METRICS).read_text().splitlines()]
    assert [m["step"] for m in metrics if m["event"] == "phase"] == [4]  # 4 stream steps, 4 on sentences


def test_a_batch_that_does_not_split_is_one_error_line(tmp_path: Path) -> None:
    text = corpus(tmp_path, 50)
    done = torchrun("train", text, *TINY, "--batch-size", "7", "--max-steps", "2", "-o", "odd")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --batch-size 7 does not split evenly among 2 processes; use a "
                      "multiple of 2 (it is the global batch: each process trains batch-size / "
                      "processes lanes)"]
    assert "rank 1" not in done.stderr  # rank 0's error is shown once
    assert not Path("odd").exists()
    # A bad flag, found by every rank before they meet: still shown once.
    done = torchrun("train", text, *TINY, "--lr", "-1", "-o", "odd")
    assert done.returncode != 0
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: --lr must be positive, got -1.0"]


POISON = '''
import os, sys
from lmcli.model import RNNLM
if os.environ["RANK"] == "1":  # rank 1 alone gets a NaN loss at its steps 3 and 4
    original, calls = RNNLM.mean_loss, []
    def patched(self, *args, **kwargs):
        calls.append(1)
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if len(calls) in (3, 4) else loss
    RNNLM.mean_loss = patched
from lmcli.cli import main
sys.argv[0] = "lmcli"
main()
'''


def test_a_step_bad_on_one_rank_is_skipped_on_all(tmp_path: Path) -> None:
    """Without clipping nothing else would tell rank 0 that rank 1's loss was NaN: the
    ranks agree on the skip, the weights stay finite and the note comes once."""
    script = tmp_path / "poisoned_lmcli.py"
    script.write_text(POISON, encoding="utf-8")
    env = {k: v for k, v in child_env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), "train", corpus(tmp_path), *TINY,
                           "--clip", "0", "--lr", "0.5", "--max-steps", "8", "-o", "poisoned"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    notes = [e["text"] for e in events(done.stdout) if e["event"] == "note"]
    assert len(notes) == 1 and notes[0].startswith("skipped 2 steps"), notes
    saved = weights(Path("poisoned") / ckpt.LAST)
    assert all(torch.isfinite(value).all() for value in saved.values())


@pytest.mark.parametrize("cell", ["clockwork", "attention"])
def test_cells_with_more_state_train_under_ddp(tmp_path: Path, cell: str) -> None:
    """lmcli's own cells whose state holds more than h and c (clockwork's step counter,
    attention's memory of outputs): 2 ranks step as one process does, and a checkpoint
    written by 2 ranks resumes in one."""
    text = corpus(tmp_path)
    flags = [a if a != "lstm" else cell for a in TINY]
    done = torchrun("train", text, *flags, "--max-steps", "2", "-o", "ddp")
    assert done.returncode == 0, done.stderr
    result = single("train", text, *flags, "--max-steps", "2", "-o", "one")
    assert result.exit_code == 0, result.output
    assert_same_weights(Path("one") / ckpt.LAST, Path("ddp") / ckpt.LAST)
    result = single("train", "--resume", "-o", "ddp", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    result = single("train", "--resume", "-o", "one", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert_same_weights(Path("one") / ckpt.LAST, Path("ddp") / ckpt.LAST)
