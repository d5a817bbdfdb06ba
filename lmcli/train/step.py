"""One optimisation step of truncated BPTT, and the running mean of its losses.

The step is forward (features, loss, AR/TAR) through a module of its own, backward with
an optional fp16 loss scaler, gradient-norm clipping, and an update that is skipped, on
the device, when the loss or the gradient is not finite. Losses stay on the device and
are read back only when an event is due, so there is no host sync per step on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmcli.batches import PAD_TARGET
from lmcli.devices import amp_dtype, autocast
from lmcli.distributed import World
from lmcli.errors import LmcliError, escape
from lmcli.model import RNNLM, Activations, ModelConfig, State
from lmcli.train.config import TrainConfig

MAX_BAD_STEPS = 5  # non-finite losses in a row before a run is declared diverged


def activation_penalty(activations: Activations, mask: torch.Tensor | None, ar: float, tar: float,
                       counts: tuple[float, float] | None = None) -> torch.Tensor | None:
    """AR and TAR (Merity et al. 2017) over the positions that are not padding.
    mask: (batch, time) bool or None (no padding). ``counts``: what to divide the masked
    AR and TAR sums by instead of this batch's own counts (a data-parallel rank's share of
    the global batch's, so that the ranks' average is the global mean)."""
    if ar == 0.0 and tar == 0.0:
        return None

    def mean(values: torch.Tensor, keep: torch.Tensor | None, count: float | None) -> torch.Tensor:
        # A masked mean by multiplication: boolean indexing would sync with the GPU.
        if keep is None:
            return values.mean()
        keep = keep.to(values.dtype)
        return (values * keep).sum() / (keep.sum().clamp_min(1.0) if count is None else max(count, 1e-9))

    ar_count, tar_count = counts if counts is not None else (None, None)
    penalty = torch.zeros((), device=activations.raw.device)
    if ar:
        size = activations.dropped.float().pow(2).mean(-1)  # (batch, time)
        penalty = penalty + ar * mean(size, mask, ar_count)
    if tar and activations.raw.shape[1] > 1:
        step = (activations.raw[:, 1:] - activations.raw[:, :-1]).float().pow(2).mean(-1)
        penalty = penalty + tar * mean(step, None if mask is None else mask[:, 1:], tar_count)
    return penalty


class _TrainStep(nn.Module):
    """A training forward pass (features, loss, AR/TAR) as a module of its own, so that
    DistributedDataParallel can wrap it: DDP prepares its gradient all-reduce in the
    forward of the module it wraps, and the language model's own forward returns logits."""

    def __init__(self, model: RNNLM, ar: float, tar: float, sentences: bool) -> None:
        super().__init__()
        self.model = model
        self.ar, self.tar, self.sentences = ar, tar, sentences

    def forward(self, inputs: torch.Tensor, state: State, targets: torch.Tensor,
                shares: tuple[float, float, float] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """``shares``: under DDP, this rank's share (global count / world size) of the
        scored targets, and of the positions AR and TAR count; each sum divided by its
        share makes DDP's average over the ranks the global batch's mean."""
        features, new_state, activations = self.model.hidden_features(inputs, state)
        normalizer = shares[0] if shares is not None else None
        loss = self.model.mean_loss(features, targets, PAD_TARGET, normalizer)  # padding left out
        penalty = activation_penalty(activations, targets != PAD_TARGET if self.sentences else None,
                                     self.ar, self.tar, shares[1:] if shares is not None else None)
        return (loss if penalty is None else loss + penalty), loss, new_state


def compile_step(module: nn.Module) -> Callable[..., Any]:
    """``module`` through torch.compile, for the ``compile`` setting. Dynamo leaves the
    recurrent kernels to PyTorch (cuDNN, oneDNN): it does not trace RNN modules, so the
    layers run as one opaque call (:meth:`RNNLM._run_layers`; a graph break inside their
    loop would make it skip the whole forward pass). It fuses what surrounds them:
    embedding and locked dropout, the output layer's bias and softmax, the loss, AR/TAR.
    Shapes are static (a stream run has two window lengths at most), so each compiles
    once. A compiler that cannot run here is one clear error at the first step."""
    from torch._dynamo.exc import TorchDynamoException  # imported only when compiling

    # Marked here, not with a decorator in model.py: the decorator imports Dynamo, which
    # costs every lmcli command most of a second of start-up.
    for model in module.modules():
        if isinstance(model, RNNLM):
            model._run_layers = torch.compiler.disable(model._run_layers)  # type: ignore[method-assign]
    compiled = torch.compile(module, dynamic=False)

    def step(*args: Any) -> Any:
        try:
            return compiled(*args)
        except TorchDynamoException as error:
            cause = getattr(error, "inner_exception", None) or error
            lines = str(cause).strip().splitlines()
            reason = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
            raise LmcliError(template="{compile}: " f"torch.compile failed here ({escape(reason)}); "
                             "train without {compile}") from error

    return step


def make_optimizer(model: RNNLM, config: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # The fused kernels do the whole update in one pass over memory, several times faster
    # than the loop over parameters on a CPU.
    fused = params[0].device.type in ("cpu", "cuda")
    if config.optimizer in ("sgd", "ntasgd"):
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


class Optimisation:
    """The model's optimizer, loss scaler and training forward pass (wrapped for DDP under
    torchrun, compiled when asked): :meth:`step` is one update."""

    def __init__(self, model: RNNLM, config: TrainConfig, device: torch.device, amp: bool,
                 world: World) -> None:
        self.device, self.amp, self.world = device, amp, world
        self.clip = config.clip
        self.optimizer = make_optimizer(model, config)
        use_scaler = amp and device.type == "cuda" and amp_dtype(device) == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.forward = _TrainStep(model, float(config.ar), float(config.tar),
                                  config.batching == "sentences")
        # The weights start equal on every rank: DDP broadcasts rank 0's when it wraps. (The
        # model has no buffers, so DDP has none to keep in sync.)
        wrapped: nn.Module = (DistributedDataParallel(
            self.forward, device_ids=[device.index] if device.type == "cuda" else None)
            if world.distributed else self.forward)
        self.run_forward = compile_step(wrapped) if config.compile else wrapped

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, inputs: torch.Tensor, hidden: State, targets: torch.Tensor,
             shares: tuple[float, float, float] | None) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Forward, backward, clip and update: (loss, whether it was finite, next state)."""
        with autocast(self.device, self.amp):
            objective, loss, hidden = self.run_forward(inputs, hidden, targets, shares)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        finite = torch.isfinite(objective.detach())
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            finite = finite & torch.isfinite(norm)
        finite = self.world.all_true(finite)  # every rank skips, or none
        self._skip_unless(finite)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, finite, hidden

    def _skip_unless(self, finite: torch.Tensor) -> None:
        """Make the coming update a no-op when ``finite`` is false. The fused optimizers
        take the flag as a tensor (``found_inf``, as GradScaler passes it) and skip on the
        device, so no host sync is needed; others are asked on the host. With fp16 loss
        scaling the scaler already skips steps with non-finite gradients."""
        if self.scaler.is_enabled():
            return
        if self.optimizer.defaults.get("fused"):
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        elif not bool(finite):
            for group in self.optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # no gradient: the optimizer leaves the weight alone


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copies from pinned memory, so they overlap with queued GPU work."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


@dataclass
class Mark:
    time: float
    total: float
    steps: float  # finite steps so far
    tokens: int


class LossMeter:
    """Sums step losses on the device. A mean is read back (one host sync) only when an
    event is due, never per step. A step whose loss or gradient was not finite was skipped
    (no update): it is left out of the mean and counted, and the longest run of such steps
    in a row is tracked, all on the device."""

    def __init__(self, device: torch.device, tokens: Callable[[], int]) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.good = torch.zeros((), dtype=torch.float64, device=device)  # finite steps
        self.streak = torch.zeros((), dtype=torch.float64, device=device)  # bad steps in a row now
        self.longest = torch.zeros((), dtype=torch.float64, device=device)  # ... at most so far
        self.steps = 0
        self.skipped = 0  # as of the last read
        self._tokens = tokens
        self._read = (0, 0.0, 0.0)  # (steps, total, good) at the last read: no sync when nothing changed

    def add(self, loss: torch.Tensor, finite: torch.Tensor) -> None:
        ok = finite.to(self.total.dtype)
        self.total += torch.where(finite, loss.detach().to(self.total.dtype), 0.0)
        self.good += ok
        self.streak.add_(1.0).mul_(1.0 - ok)
        torch.maximum(self.longest, self.streak, out=self.longest)
        self.steps += 1

    def value(self) -> tuple[float, float]:
        """(sum of finite losses, number of finite steps) so far."""
        if self._read[0] != self.steps:
            total, good, longest = torch.stack([self.total, self.good, self.longest]).tolist()
            self.skipped = self.steps - int(good)
            if longest >= MAX_BAD_STEPS:
                raise LmcliError(template=f"training diverged: the loss was not finite for {int(longest)} "
                                 f"steps in a row (by step {self.steps} of this session); lower "
                                 "{lr} or {clip}. Checkpoints written before are kept")
            self._read = (self.steps, total, good)
        return self._read[1], self._read[2]

    def mark(self) -> Mark:
        total, good = self.value()
        return Mark(time.perf_counter(), total, good, self._tokens())

    def since(self, mark: Mark) -> tuple[float, float, int]:
        """(mean loss over the finite steps, seconds, finite steps) since ``mark``."""
        total, good = self.value()
        steps = int(good - mark.steps)
        mean = (total - mark.total) / steps if steps else float("nan")
        return mean, time.perf_counter() - mark.time, steps


def tail_shares(tokens: np.ndarray, config: ModelConfig, sample: int = 1 << 21) -> list[float] | None:
    """For an adaptive softmax: the share of training targets in each tail cluster, from
    the first ``sample`` tokens (a FLOP count needs no more precision than that)."""
    if config.softmax != "adaptive" or not config.cutoffs:
        return None
    head = np.asarray(tokens[:sample])
    bounds = [*config.cutoffs, config.vocab_size]
    counts = np.histogram(head, bins=bounds)[0] if len(head) else np.zeros(len(config.cutoffs))
    return [float(c) / max(len(head), 1) for c in counts]
