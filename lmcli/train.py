"""Training: truncated BPTT with the state carried across windows, validation, learning-rate
decay on plateaus, early stopping, checkpoints and exact resume.

Validation scores every held-out sentence from an empty context, exactly as ``lmcli score``
and ``lmcli eval`` do, so the validation perplexity shown is the one ``lmcli eval`` gives
for the same text, and the best checkpoint is the best at the job users load it for.
(Carrying the state into validation text cut into parallel lanes would start most lanes
mid-sentence from a zero state, a situation training never shows the model; its loss can
then be wildly off and make early stopping and learning-rate decay act on noise.)

:func:`start_run` and :func:`resume_run` report progress through a callback of small event
objects (the CLI draws them with rich; tests collect them); nothing here prints. The hot loop keeps losses on the
device and reads them back only when an event is due (a few times a second), so there
is no host sync per step on a GPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lmcli import checkpoint as ckpt
from lmcli import distributed
from lmcli.distributed import SINGLE, SYNC_EVERY, World
from lmcli.batches import PAD_TARGET, BpttBatches, SentenceBatches
from lmcli.corpus import CorpusData, DataConfig, DataEvent, load_corpus
from lmcli.devices import (amp_dtype, autocast, cpu_has_bf16, describe, native_bf16, peak_flops,
                           resolve_device)
from lmcli.errors import LmcliError, UsageError
from lmcli.model import RNNLM, Activations, ModelConfig, State, detach_state
from lmcli.runlock import RunLock
from lmcli.scoring import sentence_loss_sums
from lmcli.tokencache import cache_for_run

OPTIMIZERS = ("adam", "adamw", "sgd", "ntasgd")
SCHEDULES = ("plateau", "cosine")
BATCHING = ("stream", "sentences")
# Per optimizer: learning rate, clip, plateau decay, weight decay (AWD-LSTM's for NT-ASGD).
OPTIMIZER_DEFAULTS = {
    "adam": (2e-3, 1.0, 0.5, 0.0),
    "adamw": (2e-3, 1.0, 0.5, 0.01),
    "sgd": (20.0, 0.25, 0.25, 0.0),
    "ntasgd": (30.0, 0.25, 0.25, 1.2e-6),
}
LOG_EVERY = 100  # steps between "train" lines in metrics.jsonl


@dataclass
class TrainConfig:
    """How to train. ``None`` in lr / clip / lr_decay means the optimizer's default."""

    seq_len: int = 64
    batch_size: int = 32
    epochs: int | None = 10
    max_steps: int | None = None
    time_limit: float | None = None  # seconds
    optimizer: str = "adam"
    lr: float | None = None
    clip: float | None = None
    weight_decay: float | None = None
    lr_decay: float | None = None
    lr_schedule: str = "plateau"  # plateau: decay on stalls; cosine: to zero over the budget
    warmup: int = 0  # steps of linear learning-rate warm-up
    ar: float = 0.0  # activation regularisation: ar * mean(h_t^2), last layer, after dropout
    tar: float = 0.0  # temporal AR: tar * mean((h_t - h_{t-1})^2), before dropout
    nonmono: int = 5  # NT-ASGD: average once validation is worse than `nonmono` checks ago
    batching: str = "stream"  # stream: state carried across windows; sentences: zero state each
    # Share of the budget, at its end, that stream batching spends on whole sentences from
    # the empty context instead (what score, eval and rerank see); 0: none.
    sentence_phase: float = 0.0
    # Validations in a row without improvement before stopping. None: 5 with plateau decay;
    # off with cosine decay, whose late low-rate steps are where the gains are (a 30-minute
    # run stopped at minute 21 at rate 4.3 of 20, validation noisy at that rate).
    patience: int | None = None
    lr_patience: int = 2  # ... before multiplying the learning rate by lr_decay
    eval_every: int | None = None  # steps; None: four times an epoch (at most every 2000)
    seed: int = 1234
    device: str = "auto"
    amp: bool | None = None  # None: on where bf16 is native (recent GPUs, AVX512-BF16 CPUs)
    # The training forward pass through torch.compile (TorchInductor). Off by default: on
    # a 2-core CPU it trained no faster (0.85-0.97x eager in fp32 over three runs, 0.91x
    # in bf16 before the layers were made opaque; bench_train.py --compile) and waited
    # 2-7 s for the compiler; on a GPU it is unmeasured.
    compile: bool = False

    # Settings that may change when a run is resumed (budgets and how to run).
    RESUMABLE = ("epochs", "max_steps", "time_limit", "patience", "lr_patience", "eval_every",
                 "device", "amp", "compile")

    def resolved(self) -> TrainConfig:
        """A copy with the optimizer defaults filled in, checked."""
        for name, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("lr-schedule", self.lr_schedule, SCHEDULES),
                                     ("batching", self.batching, BATCHING)):
            if value not in choices:
                raise UsageError(f"unknown --{name} {value!r}; choose one of {', '.join(choices)}")
        defaults = OPTIMIZER_DEFAULTS[self.optimizer]
        config = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        config.lr = defaults[0] if self.lr is None else self.lr
        config.clip = defaults[1] if self.clip is None else self.clip
        config.lr_decay = defaults[2] if self.lr_decay is None else self.lr_decay
        config.weight_decay = defaults[3] if self.weight_decay is None else self.weight_decay
        if self.patience is None and self.lr_schedule == "plateau":
            config.patience = 5
        checks = [
            (config.seq_len >= 1, f"--seq-len must be at least 1, got {config.seq_len}"),
            (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
            (config.epochs is None or config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
            (config.max_steps is None or config.max_steps >= 1,
             f"--max-steps must be at least 1, got {config.max_steps}"),
            (config.time_limit is None or config.time_limit > 0,
             f"--time-limit must be positive, got {config.time_limit}"),
            (config.lr > 0 and math.isfinite(config.lr), f"--lr must be positive, got {config.lr}"),
            (config.clip >= 0, f"--clip must be >= 0 (0 turns clipping off), got {config.clip}"),
            (config.weight_decay >= 0, f"--weight-decay must be >= 0, got {config.weight_decay}"),
            (0 < config.lr_decay <= 1, f"--lr-decay must be in (0, 1], got {config.lr_decay}"),
            (config.patience is None or config.patience >= 1,
             f"--patience must be at least 1, got {config.patience}"),
            (config.lr_patience >= 1, f"--lr-patience must be at least 1, got {config.lr_patience}"),
            (config.eval_every is None or config.eval_every >= 1,
             f"--eval-every must be at least 1, got {config.eval_every}"),
            (config.warmup >= 0, f"--warmup must be >= 0, got {config.warmup}"),
            (config.ar >= 0 and config.tar >= 0, "--ar and --tar must be >= 0"),
            (config.nonmono >= 1, f"--nonmono must be at least 1, got {config.nonmono}"),
            (0.0 <= config.sentence_phase < 1.0,
             f"--sentence-phase must be in [0, 1), got {config.sentence_phase}"),
            (config.lr_schedule != "cosine" or config.epochs is not None or config.max_steps is not None
             or config.time_limit is not None,
             "--lr-schedule cosine needs a budget to decay over: --epochs, --max-steps or --time-limit"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ----------------------------------------------------------------------------- events


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


@dataclass
class RunState:
    """Everything that changes as training proceeds; saved for --resume."""

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


# ----------------------------------------------------------------------------- helpers


def tail_shares(tokens: np.ndarray, config: ModelConfig, sample: int = 1 << 21) -> list[float] | None:
    """For an adaptive softmax: the share of training targets in each tail cluster, from
    the first ``sample`` tokens (a FLOP count needs no more precision than that)."""
    if config.softmax != "adaptive" or not config.cutoffs:
        return None
    head = np.asarray(tokens[:sample])
    bounds = [*config.cutoffs, config.vocab_size]
    counts = np.histogram(head, bins=bounds)[0] if len(head) else np.zeros(len(config.cutoffs))
    return [float(c) / max(len(head), 1) for c in counts]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-GPU copies from pinned memory, so they overlap with queued GPU work."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


@dataclass
class _Mark:
    time: float
    total: float
    steps: float  # finite steps so far
    tokens: int


MAX_BAD_STEPS = 5  # non-finite losses in a row before a run is declared diverged


class _LossMeter:
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
                raise LmcliError(f"training diverged: the loss was not finite for {int(longest)} steps "
                                 f"in a row (by step {self.steps} of this session); lower --lr or "
                                 "--clip. Checkpoints written before are kept")
            self._read = (self.steps, total, good)
        return self._read[1], self._read[2]

    def mark(self) -> _Mark:
        total, good = self.value()
        return _Mark(time.perf_counter(), total, good, self._tokens())

    def since(self, mark: _Mark) -> tuple[float, float, int]:
        """(mean loss over the finite steps, seconds, finite steps) since ``mark``."""
        total, good = self.value()
        steps = int(good - mark.steps)
        mean = (total - mark.total) / steps if steps else float("nan")
        return mean, time.perf_counter() - mark.time, steps


def _capture_rng() -> dict[str, Any]:
    # Only torch draws random numbers during training (dropout).
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def _restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") and torch.cuda.is_available():
        states = saved["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_optimizer(model: RNNLM, config: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # The fused kernels do the whole update in one pass over memory: on a CPU, Adam's step
    # for a 10M-parameter model drops from ~40 ms to ~6 ms (measured with torch 2.13).
    fused = params[0].device.type in ("cpu", "cuda")
    if config.optimizer in ("sgd", "ntasgd"):
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


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


# ----------------------------------------------------------------------------- training


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
    """``module`` through torch.compile, for ``--compile``. Dynamo leaves the recurrent
    kernels to PyTorch (cuDNN, oneDNN): it does not trace RNN modules, so the layers run as
    one opaque call (:meth:`RNNLM._run_layers`; a break inside their loop made it skip the
    whole forward pass, and only the loss compiled). It fuses what surrounds them:
    embedding and locked dropout, the output layer's bias and softmax, the loss, AR/TAR.
    Shapes are static (a stream run has two window lengths at most, the last window of an
    epoch being shorter), so each compiles once. A compiler that cannot run here (no C++
    toolchain, an unsupported platform) is one clear error at the first step rather than a
    traceback."""
    from torch._dynamo.exc import TorchDynamoException  # imported only when compiling

    compiled = torch.compile(module, dynamic=False)

    def step(*args: Any) -> Any:
        try:
            return compiled(*args)
        except TorchDynamoException as error:
            cause = getattr(error, "inner_exception", None) or error
            lines = str(cause).strip().splitlines()
            reason = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
            raise LmcliError(f"--compile: torch.compile failed here ({reason}); "
                             "train without --compile") from error

    return step


class Trainer:
    """One training run over prepared data; :func:`start_run` and :func:`resume_run` set it up.

    Under torchrun (``world`` of several processes) each rank trains its share of the
    batch lanes through DistributedDataParallel; see :mod:`lmcli.distributed`."""

    def __init__(self, data: CorpusData, model_config: ModelConfig, config: TrainConfig,
                 out_dir: Path, data_config: dict[str, Any], *,
                 on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 resume_from: ckpt.Checkpoint | None = None, world: World = SINGLE) -> None:
        self.world = world
        self.data = data
        self.config = config.resolved()
        self.model_config = model_config.validate()
        self.data_config = data_config
        self.out_dir = Path(out_dir)
        # Events come from rank 0 alone: the others train in silence.
        self.emit = (on_event if world.main else None) or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = distributed.place(resolve_device(self.config.device), world)
        check_world(self.config, world)
        self.amp = native_bf16(self.device) if self.config.amp is None else self.config.amp
        if self.config.amp and self.device.type == "cpu" and not cpu_has_bf16():
            self.emit(Note("--amp: this CPU has no native bf16 arithmetic; mixed precision may "
                           "be slower than fp32 here"))

        _seed_everything(self.config.seed)
        self.model = RNNLM(self.model_config).to(self.device)
        if world.rank:
            _seed_everything(self.config.seed + world.rank)  # own dropout masks per rank
        self.optimizer = _make_optimizer(self.model, self.config)
        use_scaler = self.amp and self.device.type == "cuda" and amp_dtype(self.device) == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        # The window layouts by phase: the run's batching, and for a sentence phase at the
        # end of a stream run the sentences too (laid out now, so that a corpus too small
        # for it is known before training starts).
        self.layouts: dict[str, BpttBatches | SentenceBatches] = {}
        if self.config.batching == "stream":
            self.layouts["stream"] = BpttBatches(data.train, self.config.batch_size, self.config.seq_len)
        if self.config.batching == "sentences" or self.config.sentence_phase:
            try:
                self.layouts["sentences"] = SentenceBatches(data.train, self.config.batch_size,
                                                            self.config.seq_len, self.config.seed)
            except LmcliError as error:
                if self.config.batching == "sentences":
                    raise
                self.emit(Note(f"no sentence phase: {error}"))
        self.lanes = world.lanes(self.config.batch_size)  # this rank's rows of every window
        step = self.train_step = _TrainStep(self.model, float(self.config.ar), float(self.config.tar),
                                            self.config.batching == "sentences")
        # The weights start equal on every rank: DDP broadcasts rank 0's when it wraps. (The
        # model has no buffers, so DDP has none to keep in sync.)
        self.step_module: nn.Module = (DistributedDataParallel(
            step, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if world.distributed else step)
        self.forward_step = compile_step(self.step_module) if self.config.compile else self.step_module
        self.run = RunState(lr=float(self.config.lr), phase=self.config.batching)
        self.hidden: State | None = None
        self.average: list[torch.Tensor] | None = None  # NT-ASGD's running mean of the weights
        self._session_start = time.perf_counter()
        self._agreed = (0.0, False)  # (session seconds, stop requested) as all ranks last agreed
        if resume_from is not None:
            self._restore(resume_from)

    # -- bookkeeping ------------------------------------------------------------------

    @property
    def batches(self) -> BpttBatches | SentenceBatches:
        """The window layout of the phase the run is in."""
        return self.layouts[self.run.phase]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    @property
    def in_sentence_phase(self) -> bool:
        """Whether a stream run has moved on to its closing sentence phase."""
        return self.config.batching == "stream" and self.run.phase == "sentences"

    @property
    def eval_every(self) -> int:
        if self.config.eval_every is not None:
            return self.config.eval_every
        return max(1, min(2000, math.ceil(self.steps_per_epoch / 4)))

    @property
    def total_steps(self) -> int | None:
        limits = []
        if self.config.epochs is not None:
            # Epochs of the run's own batching: a closing sentence phase spends the steps
            # the stream epochs would have taken.
            limits.append(self.config.epochs * len(self.layouts[self.config.batching]))
        if self.config.max_steps is not None:
            limits.append(self.config.max_steps)
        return min(limits) if limits else None

    def _set_lr(self, lr: float) -> None:
        """The rate the optimizer uses for the next step (``run.lr`` is the base rate)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def _lr_now(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _record(self, entry: dict[str, Any]) -> None:
        entry = {"time": round(self.run.elapsed, 3),
                 **{k: None if isinstance(v, float) and not math.isfinite(v) else v
                    for k, v in entry.items()}}
        self.run.metrics.append(entry)
        if self.world.main:
            with open(self.out_dir / ckpt.METRICS, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    def _provenance(self) -> dict[str, Any]:
        return {**self.data.provenance(), "device": describe(self.device)}

    def _payload(self, valid_loss: float | None, training_state: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        return ckpt.make_payload(
            model=self.model, tokenizer=self.data.tokenizer, model_config=self.model_config,
            data_config=self.data_config, train_config=self.config.to_dict(),
            step=self.run.step, epoch=self.run.epoch, tokens_seen=self.run.tokens_seen,
            metrics=self.run.metrics, valid_loss=valid_loss, provenance=self._provenance(),
            training_state=training_state)

    def save_last(self) -> None:
        """The resumable checkpoint, written by rank 0; every rank must call it (the state
        of all batch lanes and every rank's random state are gathered)."""
        world = self.world
        hidden = ([world.gather_lanes(h) for h in self.hidden] if self.hidden is not None else None)
        rngs = world.gather_objects(_capture_rng()) if world.distributed else None
        if not world.main:
            return
        run = asdict(self.run)
        run.pop("metrics")
        training_state = {
            "run": run,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "hidden": hidden,
            "average": self.average,
            "rng": _capture_rng(),
            "rng_ranks": rngs,  # one per rank under torchrun (None: one process)
        }
        ckpt.save(self._payload(self.run.best_loss, training_state), self.out_dir / ckpt.LAST)

    def save_best(self, valid_loss: float | None) -> None:
        if self.world.main:
            ckpt.save(self._payload(valid_loss), self.out_dir / ckpt.BEST)

    def _restore(self, checkpoint: ckpt.Checkpoint) -> None:
        state = checkpoint.training_state
        if state is None:
            raise LmcliError(f"{checkpoint.path} holds no training state to resume from")
        self.model.load_state_dict(checkpoint.payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        known = {f.name for f in fields(RunState)}
        saved = {"phase": self.config.batching, **state["run"]}  # older runs: their batching
        self.run = RunState(**{k: v for k, v in saved.items() if k in known},
                            metrics=list(checkpoint.payload.get("metrics", [])))
        if self.run.phase not in self.layouts:
            raise LmcliError(f"{checkpoint.path} stopped in its sentence phase, but the corpus "
                             "has too few sentences for one batch")
        self.train_step.sentences = self.run.phase == "sentences"
        self._set_lr(self.run.lr)
        # metrics.jsonl may hold lines written after this checkpoint (a crash): rewrite it
        # from the checkpoint's own history so it never shows a step twice.
        lines = "".join(json.dumps(entry) + "\n" for entry in self.run.metrics)
        if self.world.main:
            ckpt.atomic_write(self.out_dir / ckpt.METRICS, lambda handle: handle.write(lines.encode()))
        if state.get("average") is not None:
            self.average = [a.to(self.device) for a in state["average"]]
        hidden = state.get("hidden")  # every lane's, whatever the world size that saved it
        self.hidden = (tuple(h[:, self.lanes].contiguous().to(self.device) for h in hidden)
                       if hidden is not None else None)
        # Random state: each rank's own when the world size is the one that saved; a
        # different world size keeps rank 0's and seeds the others afresh (dropout masks
        # then differ from an unchanged run; nothing else does).
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == self.world.size:
            _restore_rng(ranks[self.world.rank])
        elif self.world.main:
            _restore_rng(state["rng"])
        else:
            _seed_everything(self.config.seed + self.world.rank + 7919 * self.run.step)

    # -- the loop ---------------------------------------------------------------------

    def validate(self, scheduled: bool) -> float | None:
        """Validation loss, best checkpoint and (when ``scheduled``) the plateau logic.
        Unscheduled validations (at a time limit, say) never change the schedule, so that a
        run stopped and resumed follows the same path as one left alone. The loss at a step
        is computed once, however many times it is asked for."""
        run = self.run
        if self.data.valid is None:
            return None
        if run.validated_at == run.step and run.valid_loss is not None:
            loss = run.valid_loss
        else:
            with self.averaged_weights():
                total, count = sentence_loss_sums(self.model, self.data.valid,
                                                  batch_size=max(64, self.config.batch_size),
                                                  part=(self.world.rank, self.world.size))
                total, count = self.world.all_sum([total, count], self.device)
                loss = total / max(count, 1)
                if not math.isfinite(loss):
                    raise LmcliError(f"training diverged at step {run.step} (validation loss is "
                                     f"{loss}); lower --lr or --clip. Checkpoints written before are kept")
                run.validated_at, run.valid_loss = run.step, loss
                improved = run.best_loss is None or loss < run.best_loss
                if improved:
                    run.best_loss = loss
                    self.save_best(loss)
            self._record({"event": "valid", "step": run.step, "epoch": run.epoch, "loss": loss,
                          "perplexity": _perplexity(loss), "lr": self._lr_now, "improved": improved})
            self.emit(Validated(run.step, run.epoch, loss, _perplexity(loss),
                                float(run.best_loss), improved, self._lr_now))
        if scheduled and run.scheduled_at != run.step:
            run.scheduled_at = run.step
            run.scheduled_losses.append(loss)
            if run.plateau_best is None or loss < run.plateau_best:
                run.plateau_best = loss
                run.stalls = 0
            else:
                run.stalls += 1
                decays = self.config.lr_schedule == "plateau" and self.config.optimizer != "ntasgd"
                if decays and run.stalls % self.config.lr_patience == 0:
                    run.lr *= float(self.config.lr_decay)
                    self.emit(Note(f"validation has not improved {run.stalls} times in a row: "
                                   f"learning rate now {run.lr:.3g}"))
            self._maybe_start_averaging()
        return loss

    def _maybe_start_averaging(self) -> None:
        """NT-ASGD (Merity et al. 2018): once validation is worse than the best of the checks
        before the last ``nonmono``, SGD turns into averaged SGD: from then on the weights
        used for validation and saved as the model are the mean of the iterates."""
        run, nonmono = self.run, self.config.nonmono
        losses = run.scheduled_losses
        if self.config.optimizer != "ntasgd" or self.average is not None or len(losses) <= nonmono:
            return
        if losses[-1] > min(losses[:-nonmono]):
            self.average = [p.detach().clone() for p in self.model.parameters()]
            run.averaged_from, run.average_count = run.step, 1
            self.emit(Note(f"validation stopped improving: averaging the weights from step {run.step} (NT-ASGD)"))

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (NT-ASGD); no-op otherwise."""
        if self.average is None:
            yield
            return
        params = list(self.model.parameters())
        current = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, current)

    def _skip_unless(self, finite: torch.Tensor) -> None:
        """Make the coming optimizer step a no-op when ``finite`` is false. The fused
        optimizers take the flag as a tensor (``found_inf``, as GradScaler passes it) and
        skip on the device, so no host sync is needed; others are asked on the host. With
        fp16 loss scaling the scaler already skips steps with non-finite gradients."""
        if self.scaler.is_enabled():
            return
        if self.optimizer.defaults.get("fused"):
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        elif not bool(finite):
            for group in self.optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # no gradient: the optimizer leaves the weight alone

    def fit(self) -> Finished:
        """Train until a budget or early stopping ends the run; checkpoints on the way."""
        config, run, model = self.config, self.run, self.model
        flops_per_token = model.flops_per_token(tail_shares(self.data.train, self.model_config))
        where = describe(self.device) + (f", {self.world.describe()}" if self.world.distributed else "")
        self.emit(Started(where, model.num_parameters(), self.model_config.vocab_size,
                          len(self.data.train), len(self.data.valid) if self.data.valid is not None else 0,
                          self.steps_per_epoch, self.total_steps, self.batches.tokens_per_window,
                          run.step, self.out_dir, flops_per_token))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        meter = _LossMeter(self.device, lambda: run.tokens_seen)
        session_start = self._session_start = time.perf_counter()
        elapsed_before, tokens_before = run.elapsed, run.tokens_seen
        shown = logged = epoch_mark = meter.mark()
        skipped_reported = 0

        def report_skipped() -> None:
            nonlocal skipped_reported
            meter.value()  # reads the count (and raises if the run has diverged)
            if meter.skipped > skipped_reported:
                count = meter.skipped - skipped_reported
                self._record({"event": "skipped", "step": run.step, "count": count})
                self.emit(Note(f"skipped {count} step{'s' if count > 1 else ''} whose loss or gradient "
                               f"was not finite, by step {run.step} (no update; the state restarts)"))
                skipped_reported = meter.skipped

        def session_seconds() -> float:
            return time.perf_counter() - session_start

        world = self.world
        self._agreed = (0.0, False)

        reason = "completed"
        while self._more_epochs():
            sentences = run.phase == "sentences"
            if isinstance(self.batches, SentenceBatches):
                self.batches.set_epoch(run.epoch)
            if self.hidden is None or run.window == 0:
                self.hidden = model.initial_state(self.lanes.stop - self.lanes.start, self.device)
            stop_reason = None
            for window in range(run.window, self.steps_per_epoch):
                if world.distributed and (run.step % SYNC_EVERY == 0 or window == run.window):
                    self._agree(session_seconds())
                if self._stop_requested():
                    stop_reason = "interrupted"
                    break
                if self._sentence_phase_due(self._seconds(session_seconds)):
                    stop_reason = "sentence_phase"
                    break
                inputs, targets = self.batches.window(window)
                # Counted on the host before the copy: no device sync. The global batch's
                # count, so that tokens_seen and rates mean the same at any world size.
                scored = int((targets != PAD_TARGET).sum()) if sentences else targets.numel()
                shares = None
                if world.distributed:
                    # AR counts the scored positions; TAR those after the first of a window.
                    tar_count = int((targets[:, 1:] != PAD_TARGET).sum()) if sentences else 0
                    shares = (max(scored, 1) / world.size, scored / world.size, tar_count / world.size)
                    inputs, targets = inputs[self.lanes].contiguous(), targets[self.lanes].contiguous()
                inputs, targets = to_device(inputs, self.device), to_device(targets, self.device)
                if sentences and self.batches.starts_fresh(window):
                    self.hidden = model.initial_state(inputs.shape[0], self.device)
                self._set_lr(self._scheduled_lr(self._seconds(session_seconds)))
                with autocast(self.device, self.amp):
                    objective, loss, hidden = self.forward_step(inputs, self.hidden, targets, shares)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(objective).backward()
                finite = torch.isfinite(objective.detach())
                if config.clip:
                    self.scaler.unscale_(self.optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(params, config.clip)
                    finite = finite & torch.isfinite(norm)
                finite = world.all_true(finite)  # every rank skips, or none
                self._skip_unless(finite)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.average is not None:
                    run.average_count += 1
                    torch._foreach_lerp_(self.average, [p.detach() for p in params], 1.0 / run.average_count)
                # A skipped step's state is not finite either: the lanes start afresh.
                self.hidden = tuple(torch.where(finite, h, torch.zeros_like(h)) for h in detach_state(hidden))
                meter.add(loss, finite)
                run.step += 1
                run.window = window + 1
                run.tokens_seen += scored
                run.elapsed = elapsed_before + session_seconds()

                if world.main and (time.perf_counter() - shown.time >= 0.5 or run.step == 1):
                    loss_now, seconds, steps = meter.since(shown)
                    rate = (run.tokens_seen - shown.tokens) / max(seconds, 1e-9)
                    report_skipped()
                    self.emit(self._progress(loss_now, rate, session_seconds()))
                    shown = meter.mark()
                if run.step % LOG_EVERY == 0:
                    loss_now = self._global_loss(meter.since(logged)[0])
                    self._record({"event": "train", "step": run.step, "epoch": run.epoch,
                                  "loss": loss_now, "lr": self._lr_now, "tokens": run.tokens_seen})
                    logged = meter.mark()
                # Validation points are counted within the epoch, so that the last one before
                # the epoch's end is never a few steps before the end-of-epoch validation.
                if run.window % self.eval_every == 0 and run.window < self.steps_per_epoch:
                    report_skipped()  # a diverged run stops here, before it saves
                    self._checkpoint_point(scheduled=True)
                    if config.patience is not None and run.stalls >= config.patience:
                        stop_reason = "early_stopping"
                        break
                if config.max_steps is not None and run.step >= config.max_steps:
                    stop_reason = "max_steps"
                    break
                if config.time_limit is not None and self._seconds(session_seconds) >= config.time_limit:
                    stop_reason = "time_limit"
                    break
                if self.in_sentence_phase and run.step >= (self.total_steps or math.inf):
                    stop_reason = "steps_spent"  # the epochs' steps, in the sentence phase
                    break
            if stop_reason == "sentence_phase":
                self._begin_sentence_phase()
                continue
            if stop_reason is not None:
                reason = stop_reason
                break
            # End of an epoch: summary, scheduled validation, next epoch from the start.
            train_loss, seconds, _ = meter.since(epoch_mark)
            train_loss = self._global_loss(train_loss)
            tokens = run.tokens_seen - epoch_mark.tokens
            run.epoch += 1
            run.window = 0
            self.hidden = None
            report_skipped()
            valid_loss = self._checkpoint_point(scheduled=True)
            self._record({"event": "epoch", "step": run.step, "epoch": run.epoch,
                          "train_loss": train_loss, "valid_loss": valid_loss,
                          "seconds": seconds, "lr": self._lr_now})
            self.emit(EpochEnded(run.epoch, train_loss, _perplexity(train_loss), valid_loss,
                                 None if valid_loss is None else _perplexity(valid_loss),
                                 seconds, tokens / max(seconds, 1e-9), self._lr_now))
            epoch_mark = meter.mark()
            if config.patience is not None and run.stalls >= config.patience:
                reason = "early_stopping"
                break

        run.elapsed = elapsed_before + session_seconds()
        report_skipped()
        if reason == "interrupted":
            self.save_last()  # no validation: a resumed run follows the uninterrupted path
        elif reason in ("max_steps", "time_limit", "steps_spent"):
            self._checkpoint_point(scheduled=False)
        reason = "completed" if reason == "steps_spent" else reason
        if not (self.out_dir / ckpt.BEST).exists():
            with self.averaged_weights():
                self.save_best(run.best_loss)
        self._record({"event": "end", "reason": reason, "step": run.step,
                      "best_valid_loss": run.best_loss})
        rate = (run.tokens_seen - tokens_before) / max(session_seconds(), 1e-9)
        peak = peak_flops(self.device, self.amp)
        peak = peak * world.size if peak else None  # every rank's device
        finished = Finished(reason, run.step, run.epoch, run.best_loss, self.out_dir / ckpt.BEST,
                            self.out_dir / ckpt.LAST, run.elapsed, rate, rate * flops_per_token,
                            rate * flops_per_token / peak if peak else None)
        self.emit(finished)
        return finished

    def _more_epochs(self) -> bool:
        """Whether another epoch begins. In a closing sentence phase the budget is the
        step count (``total_steps``), checked at every step instead."""
        if self.in_sentence_phase or self.config.epochs is None:
            return True
        return self.run.epoch < self.config.epochs

    def _sentence_phase_due(self, session_seconds: float) -> bool:
        """Whether a stream run should now move on to whole sentences: the last
        ``sentence_phase`` share of its budget (steps or time) has begun."""
        if self.run.phase != "stream" or "sentences" not in self.layouts:
            return False
        fraction = self.budget_fraction(session_seconds)
        return fraction is not None and fraction >= 1.0 - self.config.sentence_phase

    def _begin_sentence_phase(self) -> None:
        """From here on, windows of whole sentences from the empty context, each batch from
        a zero state: the model learns to start a sentence with no history, as ``score``,
        ``eval`` and ``rerank`` ask of it. The epoch count goes on; windows restart."""
        run = self.run
        run.phase, run.window = "sentences", 0
        self.hidden = None
        self.train_step.sentences = True
        self._record({"event": "phase", "step": run.step, "epoch": run.epoch, "phase": "sentences"})
        self.emit(Note(f"step {run.step:,}: the last {self.config.sentence_phase:.0%} of the budget "
                       "trains on whole sentences from an empty context, as score sees them"))

    def _agree(self, seconds: float) -> None:
        """Agree with the other ranks on the session clock (the slowest rank's) and on a
        stop request (anyone's): decisions taken from them then match on every rank."""
        seconds_max, stop = self.world.all_max([seconds, float(self.should_stop())], self.device)
        self._agreed = (seconds_max, stop > 0)

    def _global_loss(self, loss: float) -> float:
        """The global batch's mean training loss from this rank's (every rank must call it).
        A rank's step loss is its sum over its targets divided by (global count / world
        size), so the ranks' mean is the global mean, padding left out. The progress display
        shows rank 0's alone, to stay free of collectives."""
        if not self.world.distributed:
            return loss
        return self.world.all_sum([loss], self.device)[0] / self.world.size

    def _seconds(self, session_seconds: Callable[[], float]) -> float:
        """The session clock for decisions (time limit, time-driven learning rate): live in
        one process, the last agreed reading under torchrun."""
        return self._agreed[0] if self.world.distributed else session_seconds()

    def _stop_requested(self) -> bool:
        return self._agreed[1] if self.world.distributed else self.should_stop()

    def _progress(self, loss: float, rate: float, session_seconds: float) -> Progress:
        run, config = self.run, self.config
        eta = None
        total = self.total_steps
        if total is not None and rate > 0:
            eta = max(0, total - run.step) * self.batches.tokens_per_window / rate
        if config.time_limit is not None:
            left = max(0.0, config.time_limit - session_seconds)
            eta = left if eta is None else min(eta, left)
        return Progress(run.step, total, run.epoch, loss, _perplexity(loss), rate, self._lr_now,
                        run.elapsed, eta, self.budget_fraction(session_seconds))

    def budget_fraction(self, session_seconds: float) -> float | None:
        """Share of the budget (steps or this session's time, whichever ends first) done."""
        fraction = None
        total = self.total_steps
        if total is not None:
            fraction = self.run.step / total
        if self.config.time_limit is not None:
            fraction = max(fraction or 0.0, min(1.0, session_seconds / self.config.time_limit))
        return fraction

    def _scheduled_lr(self, session_seconds: float) -> float:
        """The learning rate for the next step: the plateau-decayed base rate ``run.lr``,
        times the linear warm-up, times the cosine decay over the budget."""
        config, run = self.config, self.run
        lr = run.lr
        if config.warmup and run.step < config.warmup:
            lr *= (run.step + 1) / config.warmup
        if config.lr_schedule == "cosine":
            fraction = self.budget_fraction(session_seconds) or 0.0
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
        return lr

    def _checkpoint_point(self, scheduled: bool) -> float | None:
        """Validate (if there is validation data) and save the resumable checkpoint."""
        loss = self.validate(scheduled)
        self.save_last()
        return loss


def write_config_json(out_dir: Path, model_config: ModelConfig, config: TrainConfig,
                      data_config: dict[str, Any], data: CorpusData, recipe: str | None = None) -> None:
    """A readable copy of the resolved configuration next to the checkpoints."""
    text = json.dumps({"model": model_config.to_dict(), "train": config.resolved().to_dict(),
                       "data": data_config, "corpus": data.provenance(),
                       "recipe": recipe}, indent=2,
                      ensure_ascii=False)
    ckpt.atomic_write(out_dir / ckpt.CONFIG, lambda handle: handle.write(text.encode() + b"\n"))


# ----------------------------------------------------------------------------- runs


@dataclass
class RunRequest:
    """A new training run: the corpus, how to read it, the model and the training."""

    corpus: list[str]
    data: DataConfig
    model: dict[str, Any]  # ModelConfig fields except vocab_size
    train: TrainConfig
    out_dir: Path
    force: bool = False
    recipe: str | None = None  # the recipe the settings came from (shown and recorded)


def check_run_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse to start over another run's checkpoints unless ``force``; touches nothing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LmcliError(f"--out {out_dir} is a file, not a folder")
    if ((out_dir / ckpt.LAST).exists() or (out_dir / ckpt.BEST).exists()) and not force:
        raise LmcliError(f"{out_dir} already holds a training run; use --resume to continue "
                         "it, --force to start over, or another --out")


def check_world(config: TrainConfig, world: World) -> None:
    """The global batch must split evenly into the ranks' lanes."""
    if config.batch_size % world.size:
        raise UsageError(f"--batch-size {config.batch_size} does not split evenly among {world.size} "
                         f"processes; use a multiple of {world.size} (it is the global batch: "
                         "each process trains batch-size / processes lanes)")


@contextlib.contextmanager
def _world_for(device_spec: str | None) -> Iterator[World]:
    """The process group torchrun describes, joined for the block (one process: SINGLE)."""
    device = distributed.place(resolve_device(device_spec or "auto"), distributed.env_world())
    world = distributed.join(device)
    ended = False
    try:
        yield world
        ended = True
    finally:
        if world.distributed:
            distributed.leave(together=ended)


@contextlib.contextmanager
def _main_lock(out_dir: Path, world: World, force: bool = False) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the block; a refusal stops every rank."""
    lock = RunLock(out_dir, force=force)

    def acquire() -> None:
        if out_dir.exists() and not out_dir.is_dir():
            raise LmcliError(f"--out {out_dir} is a file, not a folder")
        lock.acquire()

    world.main_first(acquire, others=lambda: None)
    failed = True
    try:
        yield
        failed = False
    finally:
        if world.main:
            lock.release(remove_dir_if_empty=failed)


def _clear_run_dir(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (ckpt.BEST, ckpt.LAST, ckpt.METRICS, ckpt.CONFIG):
        (out_dir / name).unlink(missing_ok=True)


def start_run(request: RunRequest, *, on_event: Callable[[Event], None] | None = None,
              on_data_event: DataEvent | None = None,
              should_stop: Callable[[], bool] | None = None,
              root: Path = ckpt.DEFAULT_ROOT) -> Finished:
    """Train a new model. Everything is checked before the corpus is read, and the run
    folder is only touched once the corpus has been read and encoded.

    Under torchrun every rank calls this: rank 0 checks, locks, reads the corpus (filling
    the token cache) and writes the run folder; the others then read the cached tokens.
    """
    with _world_for(request.train.device) as world:
        # The default folder name holds the time: rank 0's is the run's.
        out_dir = world.from_main(Path(request.out_dir))
        with _main_lock(out_dir, world, request.force):
            # Events are the trainer's to silence; reading the corpus happens before it.
            return _start_run(request, out_dir, on_event, on_data_event if world.main else None,
                              should_stop, root, world)


def _start_run(request: RunRequest, out_dir: Path, on_event: Callable[[Event], None] | None,
               on_data_event: DataEvent | None, should_stop: Callable[[], bool] | None,
               root: Path, world: World = SINGLE) -> Finished:
    train_config = request.train.resolved()

    def check_and_load() -> CorpusData:
        check_run_dir(out_dir, force=request.force)
        check_world(train_config, world)
        # Checked before the corpus is read, against a vocabulary as large as any (the
        # real size is checked once it is known).
        ModelConfig(vocab_size=1 << 30, **request.model).validate()
        resolve_device(train_config.device)
        return load_corpus(request.corpus, request.data, on_event=on_data_event,
                           cache=cache_for_run(out_dir))

    data = world.main_first(check_and_load, others=lambda: load_corpus(
        request.corpus, request.data, cache=cache_for_run(out_dir)))
    model_config = ModelConfig(vocab_size=data.tokenizer.vocab_size, **request.model).validate()
    if world.main:
        _clear_run_dir(out_dir)
    trainer = Trainer(data, model_config, train_config, out_dir, request.data.to_dict(),
                      on_event=on_event, should_stop=should_stop, world=world)
    if world.main:
        write_config_json(out_dir, model_config, train_config, request.data.to_dict(), data, request.recipe)
        ckpt.record_latest(out_dir, root)
    return trainer.fit()


def resume_run(out_dir: Path, *, corpus: list[str] | None = None,
               overrides: dict[str, Any] | None = None,
               on_event: Callable[[Event], None] | None = None,
               on_data_event: DataEvent | None = None,
               should_stop: Callable[[], bool] | None = None,
               root: Path = ckpt.DEFAULT_ROOT) -> Finished:
    """Continue a run from its ``last.pt``: same tokenizer, same data position, same random
    state. Only budgets and the device (``TrainConfig.RESUMABLE``) may change."""
    out_dir = Path(out_dir)

    def something_to_resume() -> None:
        if not (out_dir / ckpt.LAST).is_file():
            raise LmcliError(f"nothing to resume in {out_dir} (no {ckpt.LAST})")

    with _world_for((overrides or {}).get("device")) as world:
        world.main_first(something_to_resume, others=lambda: None)
        with _main_lock(out_dir, world):
            return _resume_run(out_dir, corpus, overrides, on_event,
                               on_data_event if world.main else None, should_stop, root, world)


def _resume_run(out_dir: Path, corpus: list[str] | None, overrides: dict[str, Any] | None,
                on_event: Callable[[Event], None] | None, on_data_event: DataEvent | None,
                should_stop: Callable[[], bool] | None, root: Path, world: World = SINGLE) -> Finished:
    def load_last() -> ckpt.Checkpoint:
        if not (out_dir / ckpt.LAST).is_file():  # another machine's disk (multi-node)
            raise LmcliError(f"rank {world.rank}: {out_dir / ckpt.LAST} is not readable here; "
                             "multi-node runs need the run folder on a shared filesystem")
        return ckpt.load(out_dir / ckpt.LAST)

    def prepare() -> tuple[ckpt.Checkpoint, TrainConfig, DataConfig, CorpusData]:
        checkpoint = load_last()
        payload = checkpoint.payload
        state = checkpoint.training_state
        if state is None:
            raise LmcliError(f"{checkpoint.path} holds no training state to resume from")
        saved = TrainConfig.from_dict(payload["train_config"])
        for key, value in (overrides or {}).items():
            if key not in TrainConfig.RESUMABLE:
                raise UsageError(f"--{key.replace('_', '-')} cannot change when resuming; only "
                                 + ", ".join("--" + k.replace("_", "-") for k in TrainConfig.RESUMABLE))
            setattr(saved, key, value)
        train_config = saved.resolved()
        resolve_device(train_config.device)
        check_world(train_config, world)
        epoch, step = int(state["run"].get("epoch", 0)), int(state["run"].get("step", 0))
        if train_config.epochs is not None and epoch >= train_config.epochs:
            raise LmcliError(f"the run in {out_dir} already finished its {train_config.epochs} "
                             "epochs; pass a larger --epochs (or --max-steps / --time-limit) to go on")
        if train_config.max_steps is not None and step >= train_config.max_steps:
            raise LmcliError(f"the run in {out_dir} already reached step {step}; pass a larger "
                             "--max-steps to go on")
        provenance = payload.get("provenance", {})
        paths = corpus or provenance.get("corpus") or []
        data_config = DataConfig.from_dict(payload["data_config"])
        data = load_corpus(paths, data_config, tokenizer=checkpoint.tokenizer, on_event=on_data_event,
                           cache=cache_for_run(out_dir))
        if provenance.get("corpus_sha256") and data.scan.sha256 != provenance["corpus_sha256"]:
            raise LmcliError("the corpus has changed since this run started (its sha256 differs); "
                             "resume with the same text, or start a new run")
        return checkpoint, train_config, data_config, data

    checkpoint, train_config, data_config, data = world.main_first(prepare)
    trainer = Trainer(data, checkpoint.model_config, train_config, out_dir, data_config.to_dict(),
                      on_event=on_event, should_stop=should_stop, resume_from=checkpoint, world=world)
    if world.main:
        ckpt.record_latest(out_dir, root)
    return trainer.fit()
