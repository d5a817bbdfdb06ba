"""Training curves from a run's ``metrics.jsonl``: what ``lmcli plot`` draws.

A run writes one JSON object a line: ``train`` records (step, tokens, loss, lr, time: the
mean training loss since the last one), ``valid`` records (step, loss, lr, time), ``epoch``
and ``end`` records. Validation records carry no token count; it is read off the training
records around them (tokens grow linearly between two of them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmcli.checkpoint import METRICS
from lmcli.errors import LmcliError

X_AXES = ("step", "tokens", "time")
Y_AXES = ("loss", "perplexity")


@dataclass
class Series:
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


@dataclass
class RunCurves:
    name: str
    train: Series
    valid: Series
    lr: Series


@dataclass
class _Point:
    step: float
    time: float
    tokens: float | None
    loss: float
    lr: float | None


def metrics_file(spec: str | Path) -> Path:
    """A run folder's metrics.jsonl, or the file itself."""
    path = Path(spec)
    path = path / METRICS if path.is_dir() else path
    if not path.is_file():
        raise LmcliError(f"no training metrics at {path} (a run folder from `lmcli train` holds {METRICS})")
    return path


def _read(path: Path) -> tuple[list[_Point], list[_Point]]:
    train, valid = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            event = record.get("event")
            if event not in ("train", "valid"):
                continue  # epoch and end records: the same losses, summed up
            point = _Point(float(record["step"]), float(record["time"]), record.get("tokens"),
                           float(record["loss"]), record.get("lr"))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise LmcliError(f"{path}:{number}: not a metrics record") from None
        (train if event == "train" else valid).append(point)
    return train, valid


def read_curves(spec: str | Path, x: str = "step", y: str = "loss") -> RunCurves:
    """A run's training loss, validation loss and learning rate against ``x`` (step, tokens
    or time in seconds), the losses in nats per token or as perplexity."""
    if x not in X_AXES or y not in Y_AXES:
        raise LmcliError(f"curves go against {', '.join(X_AXES)} and show {', '.join(Y_AXES)}")
    path = metrics_file(spec)
    train, valid = _read(path)
    if not train and not valid:
        raise LmcliError(f"{path} holds no training or validation records yet")
    steps = np.array([0.0] + [p.step for p in train])
    tokens = np.array([0.0] + [float(p.tokens or 0) for p in train])

    def along(p: _Point) -> float:
        if x == "step":
            return p.step
        if x == "time":
            return p.time
        return float(p.tokens) if p.tokens is not None else float(np.interp(p.step, steps, tokens))

    def value(p: _Point) -> float:
        return math.exp(min(p.loss, 700.0)) if y == "perplexity" else p.loss

    name = path.parent.name if path.name == METRICS else path.stem
    lr = Series([along(p) for p in train if p.lr is not None], [float(p.lr) for p in train if p.lr is not None])
    return RunCurves(name, Series([along(p) for p in train], [value(p) for p in train]),
                     Series([along(p) for p in valid], [value(p) for p in valid]), lr)
