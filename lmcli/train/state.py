"""What a run carries from step to step, and what ``last.pt`` keeps of it for an exact resume."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch


@dataclass
class RunState:
    """Everything that changes as training proceeds; saved for resume."""

    step: int = 0
    epoch: int = 0  # epochs finished
    window: int = 0  # next window inside the current epoch
    phase: str = "stream"  # the batching now: "stream", or "sentences" once the sentence phase began
    tokens_seen: int = 0
    lr: float = 0.0
    best_loss: float | None = None  # best validation loss seen (chooses best.pt)
    plateau_best: float | None = None  # best loss at scheduled validations (drives decay)
    stalls: int = 0
    validated_at: int = -1  # step of the last validation, and its loss
    valid_loss: float | None = None
    scheduled_at: int = -1  # step of the last scheduled validation (plateau logic)
    scheduled_losses: list[float] = field(default_factory=list)  # NT-ASGD's trigger looks back
    averaged_from: int = -1  # NT-ASGD: the step weight averaging began (-1: not yet)
    average_count: int = 0  # steps in the average
    elapsed: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def saved(cls, run: dict[str, Any], batching: str, metrics: list[dict[str, Any]]) -> RunState:
        """The state a checkpoint recorded (older runs lack ``phase``: their batching)."""
        known = {f.name for f in fields(cls)}
        saved = {"phase": batching, **run}
        return cls(**{k: v for k, v in saved.items() if k in known}, metrics=list(metrics))


def capture_rng() -> dict[str, Any]:
    # Only torch draws random numbers during training (dropout).
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") and torch.cuda.is_available():
        states = saved["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
