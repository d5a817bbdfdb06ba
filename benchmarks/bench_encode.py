"""Corpus encoding: throughput (MB/s) and peak memory on a large file.

Builds a corpus of --size-mb megabytes by repeating a bundled one (Tang poems for char
level, the KJV poetical books for word and subword levels), then, in a fresh process per
level, runs lmcli's whole preparation as `lmcli train` does it (scan + hash, vocabulary,
encoding streamed into the token cache, which training reads as a memory map) and reports
each phase's speed, the id array's size and the peak resident memory against the
process's baseline (Python, torch and numpy loaded). A second fresh process then loads
the same corpus again: the cache is hit, and only the hashing pass is left.

    python benchmarks/bench_encode.py --size-mb 200
    python benchmarks/bench_encode.py --size-mb 200 --levels char word bpe
    python benchmarks/bench_encode.py --levels word --word-types 300000

KJV poetry has 15k word types, so every dict lookup hits a small table; ``--word-types N``
adds a word-level run on a Zipf corpus (p ~ 1/rank) of N types, as large text has.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"char": "tang_poems.txt", "word": "kjv_poetry.txt", "bpe": "kjv_poetry.txt",
           "unigram": "kjv_poetry.txt"}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def descendants() -> list[int]:
    """Pids of this process's children, grandchildren and so on: the encoding workers."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def private_mb(pid: int) -> float:
    """Unique set size: the pages only this process holds. Forked workers share the rest
    with this process, so the sum over workers is the memory they add."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except OSError:
        pass
    return total / 1024


class WorkerMemory:
    """The peak, over time, of the summed memory of this process's descendants."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, sum(private_mb(pid) for pid in descendants()))

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(path: Path, level: str, cache_dir: Path) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    import torch  # noqa: F401  (loaded before the baseline, as in a real run)

    from lmcli.corpus import DataConfig, load_corpus
    from lmcli.parallel import worker_count
    from lmcli.tokencache import TokenCache

    baseline = rss_mb()
    phases: dict[str, float] = {}
    marks: list[tuple[str, float]] = []

    def on_event(kind: str, info: dict) -> None:
        if kind == "phase":
            marks.append((str(info["name"]), time.perf_counter()))

    start = time.perf_counter()
    with WorkerMemory() as workers:
        data = load_corpus([path], DataConfig(level=level, min_freq=2, valid_fraction=0.0,
                                              vocab_size=8000 if level in ("bpe", "unigram") else None),
                           on_event=on_event, cache=TokenCache(cache_dir))
    end = time.perf_counter()
    int(data.train[::1024].astype("int64").sum())  # page the whole map in, as training does
    for (name, t0), (_, t1) in zip(marks, [*marks[1:], ("end", end)]):
        phases[name] = t1 - t0
    size_mb = path.stat().st_size / 1e6
    return {
        "level": level,
        "file_mb": size_mb,
        "tokens": int(len(data.train)),
        "array_mb": data.train.nbytes / 1e6,
        "seconds": end - start,
        "mb_per_s": size_mb / (end - start),
        **{f"{name}_mb_per_s": size_mb / seconds for name, seconds in phases.items()},
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
        "peak_over_baseline_mb": rss_mb() - baseline,
        "workers": (worker_count(int(path.stat().st_size))
                    if level == "word" and "encoded before (cached)" not in phases else 1),
        "workers_peak_mb": workers.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--levels", nargs="+", default=["char", "word"])
    parser.add_argument("--train-steps", type=int, default=0,
                        help="then run `lmcli train` on the file for this many steps (default "
                             "recipe of the level, token cache as lmcli sets it up) and report its "
                             "wall time and peak memory")
    parser.add_argument("--word-types", type=int, default=0,
                        help="also encode a Zipf-distributed word corpus of this many types")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], Path(args.measure[2]))))
        return
    runs = [(level, level) for level in args.levels]
    if args.word_types:
        runs.append((f"word, Zipf {args.word_types:,} types", "word"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, level in runs:
            path = Path(tmp) / f"{len(name)}-{level}.txt"
            if name == level:
                source = (REPO / "corpora" / SOURCES[level]).read_bytes()
                with open(path, "wb") as handle:
                    for _ in range(max(1, round(args.size_mb * 1e6 / len(source)))):
                        handle.write(source)
            else:
                write_zipf(path, args.word_types, args.size_mb)
            cache = Path(tmp) / f"cache-{len(name)}-{level}"
            for run in ("first run", "cached"):
                result = subprocess.run([sys.executable, __file__, "--measure", str(path), level, str(cache)],
                                        capture_output=True, text=True, check=True)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                phases = ", ".join(f"{k[:-9]} {v:.1f} MB/s" for k, v in r.items()
                                   if k.endswith("_mb_per_s") and k != "mb_per_s")
                print(f"{name:>7} ({run}): {r['file_mb']:.0f} MB -> {r['tokens'] / 1e6:.1f}M tokens "
                      f"({r['array_mb']:.0f} MB array) in {r['seconds']:.1f} s = {r['mb_per_s']:.1f} MB/s "
                      f"overall [{phases}]; peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"({r['peak_over_baseline_mb']:.0f} MB over the {r['baseline_rss_mb']:.0f} MB "
                      f"baseline = {r['peak_over_baseline_mb'] / max(r['array_mb'], 1e-9):.2f}x the array)"
                      + (f"; {r['workers']} worker processes, together at most {r['workers_peak_mb']:.0f} MB "
                         "of their own (unique set size)" if r["workers"] > 1 and run == "first run" else ""),
                      flush=True)
                print("summary:", json.dumps({
                    "benchmark": f"encoding {name} ({run})", "reference": None,
                    "mb_per_s": r["mb_per_s"], "peak_over_array": r["peak_over_baseline_mb"] / max(r["array_mb"], 1e-9),
                    "peak_over_baseline_mb": r["peak_over_baseline_mb"], "array_mb": r["array_mb"],
                    "workers": r["workers"], "workers_peak_mb": r["workers_peak_mb"]}), flush=True)
            if args.train_steps:
                train(path, level, args.train_steps, Path(tmp), r["array_mb"])
            path.unlink()


def write_zipf(path: Path, types: int, size_mb: float) -> None:
    """About ``size_mb`` MB of lines of 20 words drawn with p ~ 1/rank over ``types`` word
    types (fixed seed), written a million words at a time."""
    import numpy as np

    ranks = np.arange(1, types + 1)
    p = (1 / ranks) / (1 / ranks).sum()
    names = np.array([f"w{i}" for i in range(types)])
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as handle:
        while handle.tell() < size_mb * 1e6:
            words = names[rng.choice(types, size=1_000_000, p=p)].reshape(-1, 20)
            handle.write("\n".join(" ".join(line) for line in words.tolist()) + "\n")


def train(path: Path, level: str, steps: int, tmp: Path, array_mb: float) -> None:
    """`lmcli train` as a user runs it, from a cold token cache, in a child process whose
    own peak resident memory the kernel reports (wait4)."""
    command = [sys.executable, "-m", "lmcli", "train", str(path), "--level", level, "--min-freq", "2",
               "--max-steps", str(steps), "--eval-every", str(steps), "--no-sample", "--json",
               "-o", str(tmp / f"run-{level}"), "--force"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMCLI_TOKEN_CACHE": str(tmp / f"train-cache-{level}")}
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not any other's
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"lmcli train failed (exit {child.returncode}): {' '.join(command)}")
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    started = next(e for e in events if e["event"] == "started")
    peak_mb = usage.ru_maxrss / 1024
    print(f"{level:>7} (lmcli train, {steps} steps, cold cache): {seconds:.0f} s in all, "
          f"{started['train_tokens'] / 1e6:.0f}M training tokens; peak RSS {peak_mb:,.0f} MB = "
          f"{peak_mb / max(array_mb, 1e-9):.2f}x the {array_mb:,.0f} MB token array", flush=True)
    print("summary:", json.dumps({"benchmark": f"lmcli train on the file, {level}", "reference": None,
                                  "peak_rss_mb": peak_mb, "peak_over_array": peak_mb / max(array_mb, 1e-9),
                                  "array_mb": array_mb, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
