"""Stress the parallel word pass: many passes in a row, and signals at random moments.

Part 1 loads a word corpus ``--passes`` times in one process, in worker processes, with
`lmcli train`'s Ctrl-C/SIGTERM handler installed (the state in which forked workers used
to hang), and checks that every pass gives the same ids and leaves no child process.
Part 2 starts `lmcli train` ``--signals`` times and sends SIGTERM (or SIGINT) at a random
moment of its parallel vocabulary-and-encoding pass; each must exit with code 130 within
a few seconds with one line on stderr, and leave no process of its session (zombies
included) and no partial entry in the token cache (a whole one once the pass is over). A
last run then trains on the cache the last signal left.

    python benchmarks/stress_parallel.py                   # 20 passes, 5 signals, 60 MB
    python benchmarks/stress_parallel.py --size-mb 200 --signals 10

Not a test: it takes minutes. It prints one line per pass and per signal, then a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PASS_PHASE = "building vocabulary and encoding"


def processes(where: str, number: int) -> list[str]:
    """Processes whose parent (``where="ppid"``) or session (``"sid"``) is ``number``."""
    column = {"ppid": 1, "sid": 3}[where]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[column]) == number:
                found.append(f"{entry.name} ({fields[0]})")
    return found


def build_corpus(path: Path, size_mb: float) -> None:
    source = (REPO / "corpora" / "kjv_poetry.txt").read_bytes()
    with open(path, "wb") as handle:
        for _ in range(max(1, round(size_mb * 1e6 / len(source)))):
            handle.write(source)


def repeated_passes(path: Path, passes: int) -> bool:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from lmcli.cli import _StopFlag
    from lmcli.corpus import DataConfig, load_corpus
    from lmcli.ui import TrainDisplay

    stop = _StopFlag(TrainDisplay(json_mode=True))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop.handle)
    reference = None
    ok = True
    for number in range(1, passes + 1):
        stop.training = number % 2 == 0  # the handler's two behaviours, in turn
        start = time.perf_counter()
        data = load_corpus([path], DataConfig(level="word", valid_fraction=0.0), cache=None)
        seconds = time.perf_counter() - start
        same = reference is None or np.array_equal(reference, data.train)
        reference = data.train if reference is None else reference
        left = processes("ppid", os.getpid())
        ok &= same and not left
        print(f"pass {number:2d}: {seconds:5.1f} s, {len(data.train):,} ids, "
              f"{'same ids' if same else 'DIFFERENT IDS'}, child processes left: {left or 'none'}",
              flush=True)
    return ok


def signalled_run(path: Path, tmp: Path, rng: random.Random, pass_seconds: float, number: int
                  ) -> bool:
    cache, out = tmp / "cache", tmp / "run"
    shutil.rmtree(cache, ignore_errors=True)  # a cold cache: the vocabulary pass runs
    env = {**os.environ, "PYTHONPATH": str(REPO), "LMCLI_WORKERS": "2", "LMCLI_TOKEN_CACHE": str(cache)}
    command = [sys.executable, "-m", "lmcli", "train", str(path), "--level", "word", "--json",
               "--no-sample", "--max-steps", "1000000", "-o", str(out), "--force"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=tmp, start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event.get("name") == PASS_PHASE:
            break
        if event.get("event") == "started":
            raise SystemExit(f"the run began training without a {PASS_PHASE!r} phase")
    delay = rng.uniform(0.0, 0.9 * pass_seconds)
    time.sleep(delay)
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    process.send_signal(signum)
    sent = time.monotonic()
    try:
        rest, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        print(f"signal {number}: {signum.name} {delay:.1f} s into the pass: NO EXIT IN 60 s", flush=True)
        return False
    took = time.monotonic() - sent
    left = processes("sid", process.pid)
    entries = sorted(p.name for p in cache.glob("tokens-*"))
    whole = [name for name in entries if not name.endswith(".tmp")]
    pass_over = any(json.loads(line).get("event") == "started" for line in rest.splitlines())
    lines = [line for line in stderr.splitlines() if line.strip()]
    # Training already under way (--json) reports its end on stdout alone; an entry may be
    # whole when the signal came after the pass but before training began.
    ok = (process.returncode == 130 and took < 5 and not left and entries == whole
          and (len(lines) == 1 or pass_over and not lines) and (whole or not pass_over))
    print(f"signal {number}: {signum.name} {delay:.1f} s after the pass began "
          f"({'after it ended' if pass_over else 'in it'}): exit {process.returncode} after {took:.2f} s, "
          f"stderr {lines}, processes left: {left or 'none'}, cache entries: {entries or 'none'}",
          flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=60)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--signals", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["LMCLI_WORKERS"] = "2"
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        path = tmp / "corpus.txt"
        build_corpus(path, args.size_mb)
        start = time.perf_counter()
        passes_ok = repeated_passes(path, args.passes)
        pass_seconds = (time.perf_counter() - start) / max(args.passes, 1)
        rng = random.Random(args.seed)
        signals_ok = [signalled_run(path, tmp, rng, pass_seconds, n + 1) for n in range(args.signals)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "LMCLI_TOKEN_CACHE": str(tmp / "cache")}
        final = subprocess.run([sys.executable, "-m", "lmcli", "train", str(path), "--level", "word",
                                "--json", "--no-sample", "--max-steps", "1", "-o", str(tmp / "run"),
                                "--force"], capture_output=True, text=True, env=env, cwd=tmp)
        print(f"then lmcli train --max-steps 1: exit {final.returncode}", flush=True)
    print(f"summary: {args.passes} passes of {args.size_mb:g} MB {'all good' if passes_ok else 'FAILED'}; "
          f"{sum(signals_ok)} of {args.signals} signals handled cleanly; final run exit "
          f"{final.returncode}")
    raise SystemExit(0 if passes_ok and all(signals_ok) and final.returncode == 0 else 1)


if __name__ == "__main__":
    main()
