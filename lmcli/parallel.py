"""Blocks of corpus text through worker processes: in order, with few blocks in flight.

Word level splits text and looks each word up in a dict, in Python: learning a vocabulary
and encoding in one pass runs at about 27 MB/s a core on a small vocabulary and 12 on a
large one, so a pass over a large corpus runs in one process per CPU instead. On Linux the
workers are forked (instant: a fork server or a spawned process would first import the
program, torch included, which took longer than a 60 MB corpus's whole vocabulary pass);
they run only Python and numpy, never torch, so the fork does not meet torch's thread
pools. Elsewhere they are spawned. Each gets the shared state (a tokenizer, a flag) once,
and then one block (4 MB of lines, sent as one string) per task. At most ``2 x workers``
blocks are in flight, so memory stays bounded however long the corpus is; the results
come back in input order, so the ids are the same as a serial pass's.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this many bytes a pass stays in this process: starting and feeding the workers
# would cost about what they save.
PARALLEL_MIN_BYTES = 48 << 20
MAX_WORKERS = 16
WORKERS_ENV = "LMCLI_WORKERS"  # a count; 1 keeps every pass in this process

_task: tuple[Callable[[Any, Any], Any], Any] | None = None


def worker_count(total_bytes: int) -> int:
    """Processes for one pass over ``total_bytes`` of text: ``$LMCLI_WORKERS`` if set, else
    one per CPU this process may use (at most 16), and 1 for a small corpus."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            from lmcli.errors import UsageError

            raise UsageError(f"{WORKERS_ENV} must be a whole number, got {given!r}") from None
    if total_bytes < PARALLEL_MIN_BYTES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _start(fn: Callable[[Any, Any], Any], shared: Any) -> None:
    global _task
    _task = (fn, shared)


class _JoinedLines(NamedTuple):
    """A block of lines on its way to a worker, joined by newlines: one string pickles
    about 6x faster than a list of 45,000 lines, and the worker splits it back."""

    text: str
    count: int  # of lines: no text is either no line or one blank one


def _pack(item: Any) -> Any:
    return _JoinedLines("\n".join(item), len(item)) if isinstance(item, list) else item


def _run(item: Any) -> Any:
    assert _task is not None
    fn, shared = _task
    if isinstance(item, _JoinedLines):
        item = item.text.split("\n") if item.count else []
    return fn(shared, item)


def map_blocks(fn: Callable[[Any, Item], Result], shared: Any, items: Iterable[Item],
               workers: int) -> Iterator[Result]:
    """``fn(shared, item)`` for each item, in order; in ``workers`` processes when more
    than one (``fn`` must then be a module-level function and ``shared`` picklable)."""
    if workers <= 1:
        for item in items:
            yield fn(shared, item)
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    # Forked workers inherit every object of this process; frozen, they are never collected
    # there, so no finaliser of this process's garbage (a compiled model's, say) runs in a
    # worker. One that did hung a worker now and then in the test suite.
    gc.freeze()
    try:
        pool = context.Pool(workers, _start, (fn, shared))
    finally:
        gc.unfreeze()
    with pool:
        pending: deque[Any] = deque()
        for item in items:
            pending.append(pool.apply_async(_run, (_pack(item),)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
