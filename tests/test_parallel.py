"""Word counting and encoding in worker processes give exactly the serial pass's
vocabulary and ids, in order, and a worker's error reaches the caller. Workers start
clean of the training command's signal handlers and files; a worker that dies or hangs,
Ctrl-C or SIGTERM, and a consumer that stops early all end the pass within a bound, with
no worker process left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lmcli.corpus import DataConfig, encode_stream, load_corpus
from lmcli.errors import UsageError
from lmcli import parallel
from lmcli.parallel import WORKERS_ENV, WorkerError, map_blocks, worker_count
from lmcli import tokencache
from lmcli.tokencache import TokenCache
from lmcli.tokenizers import encode_block
from lmcli.vocabulary import build_tokenizer, count_words

from conftest import english_lines, processes


def test_blocks_come_back_in_order_and_equal_to_a_serial_pass() -> None:
    lines = english_lines(200)
    tokenizer = build_tokenizer("word", ["\n".join(lines) + "\n"], min_freq=2)
    blocks = [lines[i:i + 7] for i in range(0, len(lines), 7)]  # 29 blocks, more than in flight
    serial = list(map_blocks(encode_block, tokenizer, blocks, workers=1))
    parallel = list(map_blocks(encode_block, tokenizer, iter(blocks), workers=2))
    assert len(parallel) == len(blocks)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    chunks = ["\n".join(block) + "\n" for block in blocks]
    for lowercase in (False, True):
        assert count_words(chunks, lowercase, workers=2) == count_words(chunks, lowercase)


def _received(shared: object, item: object) -> object:
    return item


def test_blocks_of_lines_reach_the_workers_as_they_were_sent() -> None:
    """Lists of lines travel to a worker as one string and are split back there: empty
    blocks, blank lines and lines with other spaces arrive unchanged; other items as
    they are."""
    items = [[], [""], ["a", "", "b \r"], ["\u2028x\t"], "a chunk\n"]
    assert list(map_blocks(_received, None, items, workers=2)) == items


def test_an_error_in_a_worker_reaches_the_caller() -> None:
    with pytest.raises(AttributeError):
        list(map_blocks(encode_block, None, [["a b"], ["c d"]], workers=2))


def test_load_corpus_is_the_same_with_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = english_lines(300)
    paths = []
    for part in range(3):  # each file is read as its own block: three tasks
        paths.append(tmp_path / f"part{part}.txt")
        paths[-1].write_text("\n".join(lines[part * 100:(part + 1) * 100]) + "\n", encoding="utf-8")
    config = DataConfig(level="word", min_freq=2, valid_fraction=0.1, lowercase=True)
    results = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        for cached in (False, True):
            cache = TokenCache(tmp_path / f"cache-{workers}") if cached else None
            results[workers, cached] = load_corpus(paths, config, cache=cache)
    reference = results["1", False]
    for data in results.values():
        assert data.tokenizer.tokens == reference.tokenizer.tokens
        np.testing.assert_array_equal(data.train, reference.train)
        np.testing.assert_array_equal(data.valid, reference.valid)


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert worker_count(1000) == 1  # a small corpus stays in this process
    assert 1 <= worker_count(10**10) <= 16
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert worker_count(1000) == 3
    monkeypatch.setenv(WORKERS_ENV, "0")
    assert worker_count(10**10) == 1
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(UsageError, match=WORKERS_ENV):
        worker_count(1000)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_one_pass_word_vocabulary_and_ids_are_the_two_pass_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    """load_corpus learns a word vocabulary and encodes in one pass, numbering words as
    first seen across blocks and renumbering at the end: the tokenizer and ids must be
    exactly those of counting first and encoding after. Several files make several blocks;
    literal <unk>/<EOS> words, a vocabulary cut inside a tie and lowercasing are in it."""
    lines = english_lines(300)
    lines[5] = "The <unk> AND <EOS> the  "
    lines[150] = "   "
    paths = []
    for part in range(3):
        paths.append(tmp_path / f"part{part}.txt")
        paths[-1].write_text("\n".join(lines[part * 100:(part + 1) * 100]) + "\n", encoding="utf-8")
    monkeypatch.setenv(WORKERS_ENV, workers)
    monkeypatch.setattr(tokencache, "RENUMBER_IDS", 1000)  # the file is renumbered in several pieces
    for config in (DataConfig(level="word", min_freq=2, vocab_size=40, valid_fraction=0.1, lowercase=True),
                   DataConfig(level="word", valid_fraction=0.0)):
        for cache in (None, TokenCache(tmp_path / f"cache-{config.lowercase}")):
            data = load_corpus(paths, config, cache=cache)
            held = data.held_out.mask(0, len(lines)) if data.held_out else np.zeros(len(lines), bool)
            train_lines = [line for line, h in zip(lines, held) if not h]
            reference = build_tokenizer("word", ["\n".join(train_lines) + "\n"], vocab_size=config.vocab_size,
                                        min_freq=config.min_freq, lowercase=config.lowercase)
            assert data.tokenizer.tokens == reference.tokens
            assert data.train.tolist() == encode_stream(reference, [train_lines]).tolist()
            if data.held_out:
                valid_lines = [line for line, h in zip(lines, held) if h]
                assert data.valid.tolist() == encode_stream(reference, [valid_lines]).tolist()
            if cache is not None:  # the provisional ids are gone from the entry
                (entry,) = cache.root.glob("tokens-*")
                files = sorted(p.name for p in entry.iterdir())
                assert files == ["meta.json", "train.bin"] + (["valid.bin"] if data.held_out else [])
                shutil.rmtree(entry)


# ----------------------------------------------------------------------------- processes


def children() -> list[tuple[int, str]]:
    return processes("ppid", os.getpid())


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail, rather than hang, when the block takes longer than ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def training_handlers(training: bool) -> Iterator[None]:
    """SIGINT and SIGTERM handled as `lmcli train` handles them (before or during training)."""
    from lmcli.cli import _StopFlag
    from lmcli.ui import TrainDisplay

    stop = _StopFlag(TrainDisplay(json_mode=True))
    stop.training = training
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _state(shared: object, item: object) -> dict:
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines())
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return {"caught": int(status["SigCgt"], 16), "ignored": int(status["SigIgn"], 16),
            "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
            "fds": fds}


def _bit(signum: int) -> int:
    return 1 << (signum - 1)


@pytest.mark.parametrize("training", [False, True])
def test_workers_start_clean_of_the_training_commands_state(tmp_path: Path, training: bool) -> None:
    """Forked from a process with lmcli train's Ctrl-C/SIGTERM handler and an open file
    (a checkpoint being written, say), a worker has the default SIGTERM action, ignores
    SIGINT, and holds no descriptor but the standard three and its socket."""
    with training_handlers(training), open(tmp_path / "best.pt", "wb") as open_file, within(30):
        states = list(map_blocks(_state, None, [[]] * 6, workers=2))
    for state in states:
        assert state["sigterm_default"] and state["sigint_ignored"]
        assert not state["caught"] & (_bit(signal.SIGTERM) | _bit(signal.SIGINT))
        assert state["ignored"] & _bit(signal.SIGINT) and not state["ignored"] & _bit(signal.SIGTERM)
        assert open_file.name not in state["fds"].values()
        others = {fd: target for fd, target in state["fds"].items() if fd > 2}
        assert len(others) == 1 and next(iter(others.values())).startswith("socket:"), others
    assert children() == []


def _fail_on(shared: tuple[str, int], item: int) -> int:
    how, which = shared
    if item == which:
        if how == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)  # stuck
    time.sleep(0.01)
    return item


@pytest.mark.parametrize("training", [False, True])
def test_a_worker_killed_mid_task_is_an_error_not_a_wait(training: bool) -> None:
    with training_handlers(training), within(20), pytest.raises(WorkerError) as caught:
        list(map_blocks(_fail_on, ("die", 4), range(40), workers=2, task="encoding"))
    message = str(caught.value)
    assert "killed by SIGKILL" in message and "while encoding " in message and "block 5" in message
    assert WORKERS_ENV in message
    assert children() == []


def test_a_stuck_worker_is_an_error_not_a_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "STALL_SECONDS", 1.0)
    lines = [[f"line {i}"] for i in range(20)]
    started = time.monotonic()
    with within(20), pytest.raises(WorkerError, match=r"no answer in 1 s while encoding block 3 \(lines 3-3\)"):
        list(map_blocks(_fail_on, ("hang", ["line 2"]), lines, workers=2, task="encoding"))
    assert time.monotonic() - started < 10
    assert children() == []


def _slowly(shared: object, item: int) -> int:
    time.sleep(0.05)
    return item


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_pass_stops_it_and_every_worker(signum: int) -> None:
    """Before training starts, lmcli train's handler turns Ctrl-C or SIGTERM into
    KeyboardInterrupt: the pass ends at once and leaves no worker, not even a zombie."""
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signum))
    started = time.monotonic()
    with training_handlers(False), within(20), pytest.raises(KeyboardInterrupt):
        timer.start()
        list(map_blocks(_slowly, None, range(10_000), workers=2))
    assert time.monotonic() - started < 5
    assert children() == []


def test_a_worker_that_cannot_start_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """fork failing (no memory, no processes left) is one line that says what to do, and
    the workers already started are stopped."""
    forks = iter([os.fork])

    def fork() -> int:
        real = next(forks, None)
        if real is None:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real()

    monkeypatch.setattr(parallel.os, "fork", fork)
    with within(20), pytest.raises(WorkerError, match=f"could not start a worker process .*{WORKERS_ENV}=1"):
        list(map_blocks(_slowly, None, range(10), workers=2))
    assert children() == []


def test_a_consumer_that_stops_early_leaves_no_worker() -> None:
    results = map_blocks(_slowly, None, range(10_000), workers=2)
    assert [next(results) for _ in range(5)] == list(range(5))
    assert len(children()) == 2
    results.close()
    assert children() == []


def test_blocks_larger_than_the_socket_buffers_go_both_ways_at_once() -> None:
    """Several-megabyte blocks and results, two in flight a worker: neither side may wait
    on the other to read (the deadlock of two blocking writers)."""
    blocks = [[f"{i} " + "x" * 1000] * 5000 for i in range(12)]  # 5 MB each
    with within(60):
        assert list(map_blocks(_received, None, blocks, workers=2)) == blocks
    assert children() == []
