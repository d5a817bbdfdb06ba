"""What a training run reports as it goes: small event objects with stable names.

The trainer hands each event to a callback (the CLI draws them, or writes them as JSON
lines; tests collect them). With ``--json`` an event is written as ``{"event": NAME, ...}``
with its fields; the names are part of the command's contract:

- ``started``: the run is set up (device, sizes, steps per epoch);
- ``progress``: a few times a second (step, loss, perplexity, tokens/s, ETA);
- ``validated``: a validation (its loss, the best so far, whether it improved);
- ``epoch_ended``: an epoch's summary (training and validation loss);
- ``note``: something the user should know (a learning-rate decay, say);
- ``finished``: why the run stopped, where the best model is, the speed.

Data loading reports through its own callback: ``phase`` (and ``warning``) events, which
``--json`` writes too, and ``bytes`` for progress bars.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Started:
    device: str
    parameters: int
    vocab_size: int
    train_tokens: int
    valid_tokens: int
    steps_per_epoch: int
    total_steps: int | None
    tokens_per_step: int
    resumed_from_step: int
    out_dir: Path
    flops_per_token: float = 0.0  # matrix-multiply FLOPs of one training token


@dataclass
class Progress:
    step: int
    total_steps: int | None
    epoch: int
    loss: float
    perplexity: float
    tokens_per_second: float
    lr: float
    elapsed: float
    eta_seconds: float | None
    fraction: float | None  # share of the budget (steps or time, whichever ends first) done


@dataclass
class Validated:
    step: int
    epoch: int
    loss: float
    perplexity: float
    best_loss: float
    improved: bool
    lr: float


@dataclass
class EpochEnded:
    epoch: int
    train_loss: float
    train_perplexity: float
    valid_loss: float | None
    valid_perplexity: float | None
    seconds: float
    tokens_per_second: float
    lr: float


@dataclass
class Note:
    text: str


@dataclass
class Finished:
    reason: str  # completed | max_steps | time_limit | early_stopping | interrupted
    step: int
    epoch: int
    best_valid_loss: float | None
    best_path: Path
    last_path: Path
    elapsed: float
    tokens_per_second: float
    achieved_flops: float = 0.0  # model FLOP/s over the session
    peak_share: float | None = None  # of the GPU's dense peak at this precision; None on a CPU


Event = Started | Progress | Validated | EpochEnded | Note | Finished

NAMES: dict[type, str] = {Started: "started", Progress: "progress", Validated: "validated",
                          EpochEnded: "epoch_ended", Note: "note", Finished: "finished"}


def name_of(event: Event) -> str:
    return NAMES[type(event)]


def as_record(event: Event) -> dict[str, Any]:
    """``{"event": NAME, **fields}``: what ``--json`` writes for the event."""
    return {"event": name_of(event), **dataclasses.asdict(event)}
