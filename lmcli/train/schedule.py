"""The budget of a run and what follows it: when training stops, the learning rate at each
step, decay on plateaus, and NT-ASGD's averaging of the weights."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from lmcli.train.config import TrainConfig
from lmcli.train.state import RunState


class Budget:
    """Epochs, steps and time, whichever ends first. ``epoch_steps`` is an epoch of the
    run's own batching: a closing sentence phase spends the steps the stream epochs would
    have taken."""

    def __init__(self, config: TrainConfig, epoch_steps: int) -> None:
        self.config = config
        limits = []
        if config.epochs is not None:
            limits.append(config.epochs * epoch_steps)
        if config.max_steps is not None:
            limits.append(config.max_steps)
        self.total_steps = min(limits) if limits else None

    def fraction(self, step: int, seconds: float) -> float | None:
        """Share of the budget (steps or the run's time, whichever ends first) done."""
        fraction = None
        if self.total_steps is not None:
            fraction = step / self.total_steps
        if self.config.time_limit is not None:
            fraction = max(fraction or 0.0, min(1.0, seconds / self.config.time_limit))
        return fraction

    def lr(self, run: RunState, seconds: float) -> float:
        """The learning rate for the next step: the plateau-decayed base rate ``run.lr``,
        times the linear warm-up, times the cosine decay over the budget."""
        config, lr = self.config, run.lr
        if config.warmup and run.step < config.warmup:
            lr *= (run.step + 1) / config.warmup
        if config.lr_schedule == "cosine":
            fraction = self.fraction(run.step, seconds) or 0.0
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
        return lr

    def eta(self, step: int, seconds: float, tokens_per_step: int, rate: float) -> float | None:
        """Seconds left: the steps left at this rate, or the time left, whichever is less."""
        eta = None
        if self.total_steps is not None and rate > 0:
            eta = max(0, self.total_steps - step) * tokens_per_step / rate
        if self.config.time_limit is not None:
            left = max(0.0, self.config.time_limit - seconds)
            eta = left if eta is None else min(eta, left)
        return eta

    def sentence_phase_due(self, step: int, seconds: float) -> bool:
        """Whether the last ``sentence_phase`` share of the budget has begun."""
        fraction = self.fraction(step, seconds)
        return fraction is not None and fraction >= 1.0 - self.config.sentence_phase

    def time_is_up(self, seconds: float) -> bool:
        return self.config.time_limit is not None and seconds >= self.config.time_limit


def after_validation(run: RunState, loss: float, config: TrainConfig) -> str | None:
    """The plateau logic of a scheduled validation: count stalls, and decay the base rate
    every ``lr_patience`` of them (plateau schedule, not NT-ASGD). Returns a note, if any."""
    run.scheduled_at = run.step
    run.scheduled_losses.append(loss)
    if run.plateau_best is None or loss < run.plateau_best:
        run.plateau_best = loss
        run.stalls = 0
        return None
    run.stalls += 1
    decays = config.lr_schedule == "plateau" and config.optimizer != "ntasgd"
    if decays and run.stalls % config.lr_patience == 0:
        run.lr *= float(config.lr_decay)
        return f"validation has not improved {run.stalls} times in a row: learning rate now {run.lr:.3g}"
    return None


class Averager:
    """NT-ASGD (Merity et al. 2018): once validation is worse than the best of the checks
    before the last ``nonmono``, SGD turns into averaged SGD: from then on the weights
    used for validation and saved as the model are the mean of the iterates."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.average: list[torch.Tensor] | None = None

    def maybe_start(self, run: RunState, config: TrainConfig) -> str | None:
        losses, nonmono = run.scheduled_losses, config.nonmono
        if config.optimizer != "ntasgd" or self.average is not None or len(losses) <= nonmono:
            return None
        if losses[-1] > min(losses[:-nonmono]):
            self.average = [p.detach().clone() for p in self.params]
            run.averaged_from, run.average_count = run.step, 1
            return f"validation stopped improving: averaging the weights from step {run.step} (NT-ASGD)"
        return None

    def update(self, run: RunState) -> None:
        if self.average is not None:
            run.average_count += 1
            torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 / run.average_count)

    @contextlib.contextmanager
    def weights(self) -> Iterator[None]:
        """The averaged weights in the model for the duration; no-op before averaging."""
        if self.average is None:
            yield
            return
        current = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, current)
