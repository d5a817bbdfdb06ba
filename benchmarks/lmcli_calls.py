"""Running this checkout's ``lmcli`` from a benchmark: a child process with the package on
its path, its output appended to a log, its JSON lines returned."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def call_lmcli(args: list[str], *, log: Path, cwd: Path, threads: int | None = None) -> list[dict[str, Any]]:
    """``python -m lmcli ARGS`` in ``cwd`` (where ``train`` records ./checkpoints/LATEST, so
    not the repository), on ``threads`` threads if given; a failure names the log."""
    argv = [sys.executable, "-m", "lmcli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"{shlex.join(argv)} exited with {done.returncode} (see {log})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
