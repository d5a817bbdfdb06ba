"""Blocks of corpus text through worker processes: in order, few blocks in flight, and
never a wait without end.

Word level splits text and looks each word up in a dict, in Python: one core reads words
far more slowly than the disk delivers text (figures in benchmarks/quality/FINDINGS.md),
so a pass over a large corpus runs in one process per CPU instead. The workers are forked
(instant: a spawned process would first import the program, torch included, which takes
longer than the whole vocabulary pass of a mid-sized corpus); they run only Python and
numpy, never torch, so the fork does not meet torch's thread pools. Where there is no
``fork`` (not Linux), every pass runs in this process. Each worker inherits the shared
state (a tokenizer, a flag) and then gets one block (4 MB of lines, sent as one string)
per task. At most ``2 x workers`` blocks are in flight or waiting their turn, so memory
stays bounded however long the corpus is, and the results come back in input order, so
the ids are those of a serial pass.

A worker starts clean. It is forked with SIGINT and SIGTERM blocked; before it unblocks
them it sets every signal the parent handled in Python back to the default action, ignores
SIGINT (Ctrl-C reaches the whole process group, and the parent decides what it means),
and closes every file descriptor but its own socket, so nothing of the command that
forked it (its open checkpoint and cache files, the other workers' sockets) is live in it.

Nothing is shared between workers: each talks to the parent over a socket of its own, so
a worker that dies cannot leave a lock held that a sibling then waits on forever. Only the
worker holds its end: end of file there means the worker died, and no answer from any
busy worker within ``STALL_SECONDS`` means one is stuck. Either is a :class:`WorkerError`
naming the block. However the pass ends (done, an error, Ctrl-C, the consumer stopping
early), every worker is stopped and reaped within a bounded time, SIGKILL for any that do
not leave when told; and a worker whose parent vanished sees end of file and exits.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any, NamedTuple, TypeVar

from lmcli.errors import LmcliError, UsageError

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this many bytes a pass stays in this process: starting and feeding the workers
# would cost about what they save.
PARALLEL_MIN_BYTES = 48 << 20
MAX_WORKERS = 16
WORKERS_ENV = "LMCLI_WORKERS"  # a count; 1 keeps every pass in this process
# A block takes well under a second; this long without any busy worker answering is a
# worker that will never answer.
STALL_SECONDS = 300.0
EXIT_SECONDS = 5.0  # for idle workers to leave when told, before SIGKILL
_BLOCKED = {signal.SIGINT, signal.SIGTERM}


class WorkerError(LmcliError):
    """A worker process died or stopped answering in the middle of a pass."""


def can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def worker_count(total_bytes: int) -> int:
    """Processes for one pass over ``total_bytes`` of text: ``$LMCLI_WORKERS`` if set, else
    one per CPU this process may use (at most 16), and 1 for a small corpus."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            raise UsageError(f"{WORKERS_ENV} must be a whole number, got {given!r}") from None
    if total_bytes < PARALLEL_MIN_BYTES or not can_fork():
        return 1
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


class _JoinedLines(NamedTuple):
    """A block of lines on its way to a worker, joined by newlines: one string pickles
    much faster than a list of lines (FINDINGS.md), and the worker splits it back."""

    text: str
    count: int  # of lines: no text is either no line or one blank one


def _pack(item: Any) -> Any:
    return _JoinedLines("\n".join(item), len(item)) if isinstance(item, list) else item


def _unpack(item: Any) -> Any:
    if isinstance(item, _JoinedLines):
        return item.text.split("\n") if item.count else []
    return item


class _WorkerTraceback(Exception):
    """The traceback of an error raised in a worker, shown as the cause of that error."""


# ----------------------------------------------------------------------------- transport

_SIZE = struct.Struct("!Q")


def _dumps(message: Any) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _send_bytes(channel: socket.socket, payload: bytes) -> None:
    channel.sendall(_SIZE.pack(len(payload)), socket.MSG_NOSIGNAL)
    channel.sendall(payload, socket.MSG_NOSIGNAL)


def _send(channel: socket.socket, message: Any) -> None:
    _send_bytes(channel, _dumps(message))


def _read_exactly(channel: socket.socket, size: int) -> bytearray:
    # MSG_WAITALL: a 4 MB block arrives in one call that holds no GIL, however small the
    # socket's buffer (a loop of reads would wait for the GIL after each one).
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = channel.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if count == 0:
            raise EOFError("the other end is closed")
        got += count
    return buffer


def _receive(channel: socket.socket) -> Any:
    (size,) = _SIZE.unpack(_read_exactly(channel, _SIZE.size))
    return pickle.loads(_read_exactly(channel, size))


# ----------------------------------------------------------------------------- worker side


def _start_clean(keep: int) -> None:
    """A forked worker's first act: no handler of the parent's, no descriptor of its."""
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)


def _take_tasks(channel: socket.socket, inbox: queue.SimpleQueue) -> None:
    """Read tasks as they come, so that the parent never waits on a busy worker to take
    its next block."""
    try:
        while (task := _receive(channel)) is not None:
            inbox.put(task)
    except Exception:  # EOFError, OSError: the parent is gone
        pass
    inbox.put(None)


def _give_results(channel: socket.socket, outbox: queue.SimpleQueue) -> None:
    """Send results as they come, so that the worker goes on to its next block while the
    parent is busy with an earlier one and has not yet taken this."""
    try:
        while (reply := outbox.get()) is not None:
            _send_bytes(channel, reply)
    except OSError:  # the parent is gone
        pass


def _portable(error: Exception) -> tuple[Exception, str]:
    trace = traceback.format_exc()
    try:
        pickle.dumps(error)
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return error, trace


def _serve(fn: Callable[[Any, Any], Any], shared: Any, channel: socket.socket) -> None:
    """A worker's whole life: tasks in, ``(index, result, error)`` out, until told to stop.
    Its socket is read and written by threads of their own: neither the parent nor the
    worker ever waits on the other to read before it can go on."""
    _start_clean(channel.fileno())
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_take_tasks, args=(channel, inbox), daemon=True).start()
    sender = threading.Thread(target=_give_results, args=(channel, outbox), daemon=True)
    sender.start()
    while (task := inbox.get()) is not None:
        index, item = task
        try:
            reply = _dumps((index, fn(shared, _unpack(item)), None))
        except Exception as error:  # raised, or a result that does not pickle
            reply = _dumps((index, None, _portable(error)))
        outbox.put(reply)
    outbox.put(None)
    sender.join()



# ----------------------------------------------------------------------------- parent side


class _Worker:
    """One forked worker as the parent sees it: its pid, its socket, its blocks."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.in_flight: deque[int] = deque()  # block numbers, in the order sent
        self.status: int | None = None  # from waitpid, once reaped
        self.channel, self.theirs = socket.socketpair()

    def fork(self, fn: Callable[[Any, Any], Any], shared: Any) -> None:
        # A Python signal handler may run at any bytecode in this thread even with the
        # signals blocked here (another thread can take them), but never inside the fork;
        # blocking them gives the child a moment to drop the parent's handlers first.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        try:
            # Frozen, the parent's objects are not scanned by a worker's collections (pages
            # stay shared) and none of its uncollected garbage is finalised in a worker.
            gc.freeze()
            with warnings.catch_warnings():  # 3.12+ warns of forking with threads; the
                warnings.simplefilter("ignore", DeprecationWarning)  # child takes no lock
                try:
                    pid = os.fork()
                except OSError as error:  # out of memory or of processes
                    raise WorkerError(f"could not start a worker process ({error.strerror}); "
                                      f"set {WORKERS_ENV}=1 to work in this process alone") from None
            if pid == 0:
                code = 1
                try:
                    _serve(fn, shared, self.theirs)
                    code = 0
                finally:
                    os._exit(code)
            self.pid = pid
        finally:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.theirs.close()

    def kill(self) -> None:
        if self.pid is not None and self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self, deadline: float) -> bool:
        """Wait until ``deadline`` (time.monotonic) for the process to end; True once it has."""
        while self.pid is not None and self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already (SIGCHLD ignored, say)
                pid, status = self.pid, 0
            if pid:
                self.status = status
            elif time.monotonic() >= deadline:
                return False
            else:
                time.sleep(0.005)
        return True

    def how_it_ended(self) -> str:
        self.reap(time.monotonic() + 1.0)
        if self.status is None:
            return "closed its end of the socket"
        if os.WIFSIGNALED(self.status):
            name = signal.Signals(os.WTERMSIG(self.status)).name
            hint = " (sent by the system when memory runs out, or by a user)" if name == "SIGKILL" else ""
            return f"was killed by {name}{hint}"
        return f"exited with status {os.WEXITSTATUS(self.status)}"


class _Pool:
    """Forked workers serving one pass; see the module docstring."""

    def __init__(self, fn: Callable[[Any, Any], Any], shared: Any, task: str) -> None:
        self.fn, self.shared, self.task = fn, shared, task
        self.workers: list[_Worker] = []
        self.labels: dict[int, str] = {}  # block number -> how the user can find it
        self.lines_sent = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            self.workers.append(_Worker())  # known before it exists, so it is cleaned up
            self.workers[-1].fork(self.fn, self.shared)

    def map(self, items: Iterable[Any]) -> Iterator[Any]:
        items = iter(items)
        done: dict[int, Any] = {}  # results waiting for their turn
        sent = returned = 0
        more = True
        while True:
            while more and sent - returned < 2 * len(self.workers):
                item = next(items, _END)
                if item is _END:
                    more = False
                else:
                    self._send(sent, item)
                    sent += 1
            if returned in done:
                self.labels.pop(returned)
                yield done.pop(returned)
                returned += 1
            elif not more and returned == sent:
                return
            else:
                self._collect(done, returned)

    def _send(self, index: int, item: Any) -> None:
        worker = min(self.workers, key=lambda w: len(w.in_flight))
        self.labels[index] = self._label(index, item)
        worker.in_flight.append(index)
        try:
            _send(worker.channel, (index, _pack(item)))
        except OSError:  # its end of the socket is closed: it died
            raise self._died(worker) from None

    def _label(self, index: int, item: Any) -> str:
        if not isinstance(item, list):
            return f"block {index + 1}"
        first = self.lines_sent + 1
        self.lines_sent += len(item)
        return f"block {index + 1} (lines {first:,}-{self.lines_sent:,})"

    def _collect(self, done: dict[int, Any], oldest: int) -> None:
        """Take every result that is ready, waiting for one if none is."""
        busy = {worker.channel: worker for worker in self.workers if worker.in_flight}
        ready = wait(list(busy), timeout=STALL_SECONDS)
        if not ready:
            owner = next(w for w in self.workers if oldest in w.in_flight)
            raise WorkerError(f"a worker process (pid {owner.pid}) gave no answer in "
                              f"{STALL_SECONDS:g} s while {self.task} {self.labels[oldest]}; "
                              f"{self._advice()}")
        for channel in ready:
            worker = busy[channel]
            try:
                index, result, error = _receive(channel)
            except (EOFError, OSError):
                raise self._died(worker) from None
            worker.in_flight.remove(index)
            if error is not None:
                exception, trace = error
                raise exception from _WorkerTraceback(trace)
            done[index] = result

    def _died(self, worker: _Worker) -> WorkerError:
        # A result it finished may have died with it, unsent: the block it was on is one
        # of those it held.
        block = " or ".join(self.labels[index] for index in worker.in_flight) or "a block"
        return WorkerError(f"a worker process (pid {worker.pid}) {worker.how_it_ended()} while "
                           f"{self.task} {block}; {self._advice()}")

    @staticmethod
    def _advice() -> str:
        return f"run again, or with {WORKERS_ENV}=1 to work in this process alone"

    def close(self) -> None:
        """The pass is over: the workers leave when told, or are killed after EXIT_SECONDS."""
        for worker in self.workers:
            try:
                _send(worker.channel, None)
            except OSError:
                pass
        self._end(time.monotonic() + EXIT_SECONDS)

    def kill(self) -> None:
        """The pass failed or was interrupted: stop every worker now."""
        for worker in self.workers:
            worker.kill()
        self._end(time.monotonic())

    def _end(self, deadline: float) -> None:
        for worker in self.workers:
            worker.channel.close()
            worker.theirs.close()
        for worker in self.workers:
            if not worker.reap(deadline):
                worker.kill()
        for worker in self.workers:  # SIGKILLed: gone at once unless stuck in the kernel
            worker.reap(time.monotonic() + 2.0)


_END = object()


def map_blocks(fn: Callable[[Any, Item], Result], shared: Any, items: Iterable[Item],
               workers: int, task: str = "working on") -> Iterator[Result]:
    """``fn(shared, item)`` for each item, in order; in ``workers`` forked processes when
    more than one (``fn``'s result and errors must then pickle). ``task`` says what is done
    to a block, for errors: "encoding" gives "... while encoding block 3 (lines ...)"."""
    if workers <= 1 or not can_fork():
        for item in items:
            yield fn(shared, item)
        return
    pool = _Pool(fn, shared, task)
    try:
        pool.start(workers)
        yield from pool.map(items)
    except BaseException:  # an error, Ctrl-C, or the consumer closing this generator
        pool.kill()
        raise
    pool.close()
