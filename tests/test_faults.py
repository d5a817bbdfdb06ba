"""Faults a user can cause or suffer, on a real `lmcli train` process: Ctrl-C and SIGTERM
save a resumable checkpoint and exit cleanly; kill -9 at any moment, saves included,
leaves the checkpoints loadable."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import child_env, english_lines, processes
from lmcli import checkpoint as ckpt

def train_process(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmcli", "train", str(corpus), "--json", "--no-sample", "--level", "word",
         "--model", "gru", "--layers", "1", "--embed-dim", "8", "--hidden-dim", "16", "--seq-len", "8",
         "--batch-size", "4", "--optimizer", "adam", "--epochs", "100000", "-o", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=out.parent)


def wait_for_step(process: subprocess.Popen, step: int, timeout: float = 60.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("event") == "progress" and events[-1]["step"] >= step:
            return events
        assert time.monotonic() < deadline, "training did not get going"
    raise AssertionError(f"the process ended early: {process.wait()} {process.stderr.read()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_cleanly(
        english_corpus: Path, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    process = train_process(english_corpus, out, "--eval-every", "100000")
    wait_for_step(process, 30)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    finished = [json.loads(line) for line in stdout.splitlines() if '"finished"' in line]
    assert finished and finished[-1]["reason"] == "interrupted"
    last = ckpt.load(out / "last.pt")
    assert last.step == finished[-1]["step"] >= 30 and last.training_state is not None
    assert not (out / ".lock").exists()
    # And it resumes from there.
    resumed = subprocess.run([sys.executable, "-m", "lmcli", "train", "--resume", "-o", str(out), "--json",
                              "--no-sample", "--max-steps", str(last.step + 10)],
                             capture_output=True, text=True, cwd=tmp_path,
                             env=child_env())
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load(out / "last.pt").step == last.step + 10


def test_kill_9_at_any_moment_leaves_loadable_checkpoints(english_corpus: Path, tmp_path: Path) -> None:
    """Saves every 2 steps, killed at random moments: whatever is on disk always loads, and
    the next run takes the folder over (its lock is stale)."""
    rng = random.Random(7)
    out = tmp_path / "run"
    process = train_process(english_corpus, out, "--eval-every", "2", "--patience", "1000000")
    wait_for_step(process, 4)
    steps = []
    for round_ in range(4):
        time.sleep(rng.uniform(0.05, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        for name in ("last.pt", "best.pt"):
            loaded = ckpt.load(out / name)  # never half-written
            assert all(torch.isfinite(t).all() for t in loaded.payload["state_dict"].values())
        steps.append(ckpt.load(out / "last.pt").step)
        assert (out / ".lock").exists()  # left behind by the killed run
        # --resume, no --force: the killed run's lock is stale and is taken over.
        process = subprocess.Popen(
            [sys.executable, "-m", "lmcli", "train", "--resume", "-o", str(out), "--json", "--no-sample"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env=child_env())
        wait_for_step(process, steps[-1] + 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert steps == sorted(steps) and steps[0] >= 2  # each run went on from the last


SLOW_SURVEY = """
import sys, time
from pathlib import Path
from lmcli import cli, vocabulary
survey, started = vocabulary.survey_words, Path(sys.argv[1])
def slowly(lowercase, lines):
    started.touch()
    time.sleep(0.2)
    return survey(lowercase, lines)
vocabulary.survey_words = slowly
sys.argv = ["lmcli", *sys.argv[2:]]
cli.main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_parallel_word_pass_exits_at_once(tmp_path: Path, signum: int) -> None:
    """Ctrl-C or SIGTERM while worker processes read the corpus: exit 130 in a few seconds
    with one line, no process of the run left, nothing half-written in the token cache;
    the next run builds the cache entry and the one after reuses it."""
    paths = []
    for part in range(12):  # a file is a block at least: 12 tasks of 0.2 s on 2 workers
        paths.append(tmp_path / f"part{part}.txt")
        paths[-1].write_text("\n".join(english_lines(50, seed=part)) + "\n", encoding="utf-8")
    cache, out, started = tmp_path / "cache", tmp_path / "run", tmp_path / "started"
    env = child_env(LMCLI_WORKERS="2", LMCLI_TOKEN_CACHE=str(cache))
    command = ["train", *map(str, paths), "--level", "word", "--json", "--no-sample", "--layers", "1",
               "--embed-dim", "8", "--hidden-dim", "8", "--max-steps", "1", "-o", str(out)]
    process = subprocess.Popen([sys.executable, "-c", SLOW_SURVEY, str(started), *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signum)
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert process.returncode == 130, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["error: interrupted"]
    assert processes("sid", process.pid) == []
    assert not [p.name for p in cache.glob("tokens-*")]  # no entry, whole or partial
    assert not out.exists()
    phases = []
    for run in range(2):
        again = subprocess.run([sys.executable, "-m", "lmcli", *command, "--force"], capture_output=True,
                               text=True, env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        (entry,) = cache.glob("tokens-*")
        assert not entry.name.endswith(".tmp")
        events = [json.loads(line) for line in again.stdout.splitlines()]
        phases.append([e["name"] for e in events if e["event"] == "phase"])
    assert "building vocabulary and encoding" in phases[0] and "encoded before (cached)" not in phases[0]
    assert "encoded before (cached)" in phases[1] and "building vocabulary and encoding" not in phases[1]
