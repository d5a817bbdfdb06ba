"""One run per output folder: a live owner's lock refuses a second run; a stale one (its
process gone, as after kill -9) is taken over; the lock goes when the run ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lmcli.corpus import DataConfig
from lmcli.errors import LmcliError
from lmcli.runlock import LOCK_NAME, RunLock
from lmcli.train import RunRequest, TrainConfig, resume_run, start_run


def request(corpus: Path, out: Path, force: bool = False, steps: int = 4) -> RunRequest:
    return RunRequest(corpus=[str(corpus)], data=DataConfig(level="word", valid_fraction=0.1),
                      model={"cell": "gru", "layers": 1, "embed_dim": 8, "hidden_dim": 8, "dropout": 0.0},
                      train=TrainConfig(seq_len=8, batch_size=4, max_steps=steps, epochs=None, lr=0.01,
                                        seed=1, device="cpu"),
                      out_dir=out, force=force)


def write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                "started": 0}))


@pytest.fixture
def live_pid():
    """A process that is alive for the test (not this one: our own pid never blocks us)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_a_live_owner_refuses_a_second_run_and_nothing_is_touched(
        english_corpus: Path, tmp_path: Path, live_pid: int) -> None:
    out = tmp_path / "run"
    write_lock(out, live_pid)
    with pytest.raises(LmcliError, match=f"in use by another lmcli train \\(pid {live_pid}"):
        start_run(request(english_corpus, out), root=tmp_path / "ck")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the owner's lock stays
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == live_pid
    # --force takes it (the user said so), and the run ends with the folder unlocked.
    start_run(request(english_corpus, out, force=True), root=tmp_path / "ck")
    assert (out / "best.pt").exists() and not (out / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over(english_corpus: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: the lock of a run killed with -9
    out = tmp_path / "run"
    write_lock(out, dead.pid)
    start_run(request(english_corpus, out), root=tmp_path / "ck")
    assert (out / "last.pt").exists() and not (out / LOCK_NAME).exists()


def test_resume_is_refused_while_the_run_lives_and_allowed_after(
        english_corpus: Path, tmp_path: Path, live_pid: int) -> None:
    out = tmp_path / "run"
    start_run(request(english_corpus, out), root=tmp_path / "ck")
    write_lock(out, live_pid)
    with pytest.raises(LmcliError, match="in use"):
        resume_run(out, overrides={"max_steps": 8}, root=tmp_path / "ck")
    (out / LOCK_NAME).unlink()
    finished = resume_run(out, overrides={"max_steps": 8}, root=tmp_path / "ck")
    assert finished.step == 8 and not (out / LOCK_NAME).exists()


def test_another_hosts_lock_counts_as_live_and_a_failed_start_leaves_no_folder(
        english_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    write_lock(out, 1, host="some-other-machine")
    with pytest.raises(LmcliError, match="some-other-machine"):
        start_run(request(english_corpus, out), root=tmp_path / "ck")
    fresh = tmp_path / "fresh"
    with pytest.raises(LmcliError):
        start_run(request(tmp_path / "missing.txt", fresh), root=tmp_path / "ck")
    assert not fresh.exists()  # the lock's folder goes when nothing was written into it


def test_the_lock_is_released_when_training_fails(english_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    lock = RunLock(out)
    with pytest.raises(RuntimeError):
        with lock:
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
            raise RuntimeError("boom")
    assert not (out / LOCK_NAME).exists()
