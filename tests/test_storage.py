"""When the disk or the memory runs out: one plain line, what was kept, and a run that
resumes once there is room again. Never "this is a bug"."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import lmcli.checkpoint as ckpt
from lmcli import disk
from lmcli.cli import app
from lmcli.train.resources import check_memory, training_bytes
from lmcli.model import ModelConfig
from lmcli.train import TrainConfig
from conftest import REPO, child_env, corpus_file

runner = CliRunner()
FLAGS = ["--level", "word", "--min-freq", "1", "--hidden-dim", "16", "--embed-dim", "8", "--layers", "1",
         "--batch-size", "4", "--seq-len", "8", "--max-steps", "12", "--eval-every", "4", "--device", "cpu",
         "--no-sample"]


def failing_save(monkeypatch: pytest.MonkeyPatch, after: int, error: BaseException) -> list[int]:
    """torch.save inside lmcli.checkpoint fails from its ``after``-th call on (0: the first)."""
    calls = [0]
    real = torch.save

    def save(obj, handle, *args, **kwargs):  # noqa: ANN001, ANN202
        if not hasattr(handle, "write"):  # not a checkpoint being written
            return real(obj, handle, *args, **kwargs)
        calls[0] += 1
        if calls[0] > after:
            handle.write(b"partial")
            raise error
        return real(obj, handle, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    return calls


def train(tmp_path: Path, *extra: str):
    return runner.invoke(app, ["train", str(corpus_file(tmp_path)), *FLAGS, "-o", str(tmp_path / "run"), *extra])


@pytest.mark.parametrize("after", [0, 3])
def test_a_full_disk_at_a_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """The first save or a later one fails as a full disk does (PyTorch's own error): one
    line naming the disk and the sizes, exit 1, no temporary file, the earlier checkpoints
    load, and the run resumes from them once there is room."""
    failing_save(monkeypatch, after, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 62272 vs 62166"))
    monkeypatch.setattr(disk, "free_bytes", lambda folder: 1000)  # what a full disk reports
    monkeypatch.setattr("lmcli.train.resources.check_room", lambda *args: None)  # past the pre-flight check
    result = train(tmp_path)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "no space left on" in line and "MB needed" in line and "bug" not in line
    assert not list((tmp_path / "run").glob(".*.tmp"))
    if after == 0:
        assert "no checkpoint had been saved yet" in line
        return
    assert "are intact" in line and "--resume" in line
    for name in (ckpt.BEST, ckpt.LAST):
        ckpt.load(tmp_path / "run" / name)  # intact
    monkeypatch.undo()  # space freed
    resumed = runner.invoke(app, ["train", "--resume", "-o", str(tmp_path / "run"), "--no-sample"])
    assert resumed.exit_code == 0, resumed.output
    assert ckpt.load(tmp_path / "run" / ckpt.LAST).step == 12


@pytest.mark.parametrize(("code", "words"), [(errno.EACCES, "no permission to write on"),
                                             (errno.EROFS, "read-only filesystem"),
                                             (errno.EIO, "input/output error on"),
                                             (errno.EDQUOT, "disk quota is exceeded")])
def test_other_write_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    failing_save(monkeypatch, 0, OSError(code, "refused"))
    result = train(tmp_path)
    assert result.exit_code == 1 and words in result.stderr and "bug" not in result.stderr


def test_a_file_size_limit_in_a_real_process(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the checkpoint's bytes (EFBIG), as a quota would."""
    corpus = corpus_file(tmp_path)
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000)); "
            "from lmcli.cli import main; sys.argv = ['lmcli'] + sys.argv[1:]; main()")
    argv = [sys.executable, "-c", code, "train", str(corpus), *FLAGS, "--hidden-dim", "64", "--embed-dim", "64",
            "-o", str(tmp_path / "run")]
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "file size limit is reached on" in done.stderr and "bug" not in done.stderr
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_too_little_room_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda folder: 10_000)
    result = train(tmp_path)
    assert result.exit_code == 1 and "not enough space on" in result.stderr and "--out" in result.stderr
    assert not (tmp_path / "run" / ckpt.LAST).exists()


def test_a_model_beyond_the_memory_is_refused_before_allocation(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(corpus_file(tmp_path)), "--hidden-dim", "200000", "--embed-dim",
                                 "200000", "--device", "cpu", "-o", str(tmp_path / "run")])
    assert result.exit_code == 1 and "of memory" in result.stderr and "--hidden-dim" in result.stderr
    assert "bug" not in result.stderr and not (tmp_path / "run").exists()
    config = ModelConfig(vocab_size=1000, hidden_dim=200_000, embed_dim=200_000)
    with pytest.raises(Exception, match="GB of memory"):
        check_memory(config, TrainConfig(device="cpu"), torch.device("cpu"))
    small = training_bytes(ModelConfig(vocab_size=1000, hidden_dim=64, embed_dim=32), TrainConfig())
    assert 0 < small < training_bytes(ModelConfig(vocab_size=1000, hidden_dim=128, embed_dim=32), TrainConfig())


def test_running_out_of_memory_mid_run_saves_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcli.train import trainer as trainer_module

    real = trainer_module.Trainer._epoch
    calls = [0]

    def epoch(self):  # noqa: ANN001, ANN202
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 640000000000 bytes. Error code 12 (Cannot allocate memory)")
        return real(self)

    monkeypatch.setattr(trainer_module.Trainer, "_epoch", epoch)
    result = train(tmp_path, "--epochs", "3", "--max-steps", "1000")
    assert result.exit_code == 1, result.output
    assert "ran out of memory at step" in result.stderr and "--batch-size" in result.stderr
    assert "last.pt" in result.stderr and "bug" not in result.stderr
    assert ckpt.load(tmp_path / "run" / ckpt.LAST).step > 0


def test_a_corpus_that_changes_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcli import corpus as corpus_module

    path = corpus_file(tmp_path)
    real = corpus_module.CorpusBuilder._build

    def growing(self, tokenizer):  # noqa: ANN001, ANN202
        data = real(self, tokenizer)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("a line written meanwhile .\n")
        return data

    monkeypatch.setattr(corpus_module.CorpusBuilder, "_build", growing)
    result = runner.invoke(app, ["train", str(path), *FLAGS, "-o", str(tmp_path / "run")])
    assert result.exit_code == 1 and "changed while it was read" in result.stderr


def test_read_failures_are_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_run: Path) -> None:
    """An I/O error from the operating system while a command runs is the environment's."""
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "x.txt"))

    monkeypatch.setattr("lmcli.cli.use.score_sentences", broken)
    result = runner.invoke(app, ["score", "-c", str(trained_run), "the cat"])
    assert result.exit_code == 1 and "input/output error: " in result.stderr and "x.txt" in result.stderr
    assert "bug" not in result.stderr and REPO.exists()


@pytest.mark.parametrize(("code", "words"), [(errno.EACCES, "permission denied: "),
                                             (errno.EIO, "input/output error: ")])
def test_a_corpus_that_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
                                      words: str) -> None:
    """No permission to read the text (a test as root cannot chmod it away), or the device
    failing mid-read: one line naming the file."""
    from lmcli import text as text_module

    path = corpus_file(tmp_path)

    def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(text_module, "iter_chunks", refused)
    result = runner.invoke(app, ["train", str(path), *FLAGS, "-o", str(tmp_path / "run")])
    assert result.exit_code == 1 and words in result.stderr and str(path) in result.stderr
    assert "bug" not in result.stderr


def test_a_copy_index_the_disk_refuses_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run goes on without novelty.npz (only generate --novel needs it), saying so."""
    from lmcli.novelty import NoveltyIndex

    def refused(self, path):  # noqa: ANN001, ANN202
        raise disk.StorageError(f"no space left on / writing {Path(path).name} (about 9.9 MB needed, 1.0 MB free)",
                                Path(path), 10_000_000)

    monkeypatch.setattr(NoveltyIndex, "save", refused)
    result = train(tmp_path)
    assert result.exit_code == 0, result.output
    assert "copy index is left out" in result.stderr and "novelty.npz" in result.stderr
    assert (tmp_path / "run" / ckpt.BEST).exists() and not (tmp_path / "run" / "novelty.npz").exists()
